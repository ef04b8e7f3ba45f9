//! Fake storage of one simulated replica: a log with a durable prefix, a journal of writes
//! not yet known to be durable, asynchronous syncs, and crash recovery that keeps only the
//! durable state plus a prefix of the unsynced writes (what a real disk may have flushed).

use std::collections::VecDeque;

use crate::raft::{EntryMeta, HardState, Index, Term};

/// One log entry as the simulator knows it: the core's metadata plus the identity of the
/// payload (`pid` 0 for entries the core made up on its own, such as a leader's no-op).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub len: u32,
    pub pid: u64,
}

impl Entry {
    /// The part of the entry the core sees after recovery.
    pub fn meta(&self) -> EntryMeta {
        EntryMeta {
            term: self.term,
            len: self.len,
        }
    }
}

/// A write issued to the log file, in issue order.
#[derive(Clone, Copy, Debug)]
enum Write {
    /// Keep the first `n` entries.
    Truncate(usize),
    Append(Entry),
}

/// A sync in flight: when it completes, every write issued before it is durable.
#[derive(Clone, Copy, Debug)]
struct PendingSync {
    complete_at: u64,
    /// Absolute journal position just after the last write it covers.
    journal_end: u64,
    /// Lowest truncation of the volatile log since the sync started (`usize::MAX` if none):
    /// the covered entries at or beyond it are no longer in the volatile log.
    truncated_since: usize,
}

/// What a completed sync made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncDone {
    /// Longest prefix that is durable and still equal to the volatile log.
    pub index: Index,
    pub term: Term,
    /// Lowest index (1-based) of a durable entry that a now-durable truncation removed.
    pub lost_from: Option<Index>,
}

/// Storage of one replica; survives crashes of the replica it belongs to.
#[derive(Clone, Debug, Default)]
pub struct SimStorage {
    /// The log as the running replica sees it (every write applied).
    log: Vec<Entry>,
    /// What is known to be on disk.
    durable: Vec<Entry>,
    /// Length of the common prefix of `durable` and `log` (a lower bound, exact after a sync).
    match_len: usize,
    journal: VecDeque<Write>,
    /// Absolute position of `journal[0]`.
    journal_start: u64,
    syncs: VecDeque<PendingSync>,
    /// Hard state is written synchronously (the core's contract), so it is always durable.
    hard_state: HardState,
    /// The disk was wiped and the replica has not finished rejoining (the driver's
    /// durable rejoin mark).
    rejoining: bool,
}

impl SimStorage {
    /// The volatile log.
    pub fn log(&self) -> &[Entry] {
        &self.log
    }

    /// The durable log.
    pub fn durable(&self) -> &[Entry] {
        &self.durable
    }

    /// Entries `1..=durable_match_len()` are durable and equal to the volatile log.
    pub fn durable_match_len(&self) -> usize {
        self.match_len
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn persist_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Entry at 1-based `index` of the volatile log.
    pub fn entry(&self, index: Index) -> Option<Entry> {
        let i = usize::try_from(index).ok()?;
        if i == 0 {
            return None;
        }
        self.log.get(i - 1).copied()
    }

    /// Term at 1-based `index` of the volatile log; 0 for index 0.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn last_index(&self) -> Index {
        self.log.len() as Index
    }

    pub fn append(&mut self, entry: Entry) {
        self.log.push(entry);
        self.journal.push_back(Write::Append(entry));
    }

    /// Keep the first `keep` entries of the log.
    pub fn truncate(&mut self, keep: usize) {
        if keep >= self.log.len() {
            return;
        }
        self.log.truncate(keep);
        self.match_len = self.match_len.min(keep);
        for sync in &mut self.syncs {
            sync.truncated_since = sync.truncated_since.min(keep);
        }
        self.journal.push_back(Write::Truncate(keep));
    }

    /// Whether there are writes not yet covered by a sync.
    pub fn has_unsynced_writes(&self) -> bool {
        let covered = self
            .syncs
            .back()
            .map_or(self.journal_start, |s| s.journal_end);
        covered < self.journal_start + self.journal.len() as u64
    }

    /// Start a sync of every write issued so far; completes at `now + delay` (syncs
    /// complete in the order they were started).
    pub fn start_sync(&mut self, now: u64, delay: u64) {
        let complete_at = self
            .syncs
            .back()
            .map_or(now + delay, |s| s.complete_at.max(now + delay));
        self.syncs.push_back(PendingSync {
            complete_at,
            journal_end: self.journal_start + self.journal.len() as u64,
            truncated_since: usize::MAX,
        });
    }

    /// Complete the syncs due at `now`; returns what became durable, if any sync completed.
    pub fn complete_syncs(&mut self, now: u64) -> Option<SyncDone> {
        let mut done = None;
        let mut lost_from: Option<usize> = None;
        while let Some(sync) = self.syncs.front().copied() {
            if sync.complete_at > now {
                break;
            }
            self.syncs.pop_front();
            while self.journal_start < sync.journal_end {
                let write = self.journal.pop_front().expect("journal covers the sync");
                self.journal_start += 1;
                match write {
                    Write::Append(e) => self.durable.push(e),
                    Write::Truncate(keep) => {
                        if keep < self.durable.len() {
                            lost_from = Some(lost_from.map_or(keep, |l| l.min(keep)));
                            self.durable.truncate(keep);
                        }
                    }
                }
            }
            // The durable log is now the volatile log as it was when the sync started;
            // only truncations since then separate the two.
            self.match_len = self.durable.len().min(sync.truncated_since);
            debug_assert!(self.match_len <= self.log.len());
            done = Some(());
        }
        done.map(|()| {
            let index = self.match_len as Index;
            let term = if index == 0 {
                0
            } else {
                self.log[self.match_len - 1].term
            };
            SyncDone {
                index,
                term,
                lost_from: lost_from.map(|l| l as Index + 1),
            }
        })
    }

    /// The replica crashed: the disk keeps its durable state plus the first `kept` of the
    /// writes not yet synced (a real disk may have flushed some of them, in order).
    /// Returns the entries a restart recovers. Pending syncs die with the process.
    pub fn crash(&mut self, kept: usize) -> Vec<Entry> {
        let kept = kept.min(self.journal.len());
        for write in self.journal.iter().take(kept) {
            match *write {
                Write::Append(e) => self.durable.push(e),
                Write::Truncate(keep) => self.durable.truncate(keep),
            }
        }
        self.journal.clear();
        self.journal_start = 0;
        self.syncs.clear();
        self.log = self.durable.clone();
        self.match_len = self.log.len();
        self.log.clone()
    }

    /// Loses everything, as a replaced disk does; the replica comes back rejoining.
    pub fn wipe(&mut self) {
        *self = SimStorage {
            rejoining: true,
            ..SimStorage::default()
        };
    }

    /// Whether the replica is rejoining after a wipe.
    pub fn rejoining(&self) -> bool {
        self.rejoining
    }

    /// The core reported its rejoin complete: the mark goes.
    pub fn finish_rejoin(&mut self) {
        self.rejoining = false;
    }

    /// Number of writes not yet known to be durable.
    pub fn unsynced_writes(&self) -> usize {
        self.journal.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(term: Term, pid: u64) -> Entry {
        Entry { term, len: 1, pid }
    }

    #[test]
    fn sync_covers_writes_issued_before_it() {
        let mut s = SimStorage::default();
        s.append(e(1, 1));
        s.append(e(1, 2));
        s.start_sync(0, 5);
        s.append(e(1, 3));
        assert_eq!(s.complete_syncs(4), None);
        let done = s.complete_syncs(5).unwrap();
        assert_eq!((done.index, done.term, done.lost_from), (2, 1, None));
        assert_eq!(s.durable().len(), 2);
        assert!(s.has_unsynced_writes());
    }

    #[test]
    fn truncation_after_sync_start_limits_the_report() {
        let mut s = SimStorage::default();
        for pid in 1..=3 {
            s.append(e(1, pid));
        }
        s.start_sync(0, 1);
        s.truncate(1);
        s.append(e(2, 9));
        let done = s.complete_syncs(1).unwrap();
        assert_eq!(done.index, 1);
        assert_eq!(s.durable_match_len(), 1);
        s.start_sync(1, 1);
        let done = s.complete_syncs(2).unwrap();
        assert_eq!((done.index, done.term, done.lost_from), (2, 2, Some(2)));
    }

    #[test]
    fn crash_keeps_durable_plus_a_prefix_of_writes() {
        let mut s = SimStorage::default();
        s.append(e(1, 1));
        s.start_sync(0, 0);
        s.complete_syncs(0).unwrap();
        s.append(e(1, 2));
        s.append(e(1, 3));
        let recovered = s.crash(1);
        assert_eq!(recovered, vec![e(1, 1), e(1, 2)]);
        assert_eq!(s.durable_match_len(), 2);
        assert!(!s.has_unsynced_writes());
    }
}
