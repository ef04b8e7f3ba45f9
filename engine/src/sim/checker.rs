//! One checker per invariant. The cluster calls them after every step with the replica
//! that moved; each keeps the cross-replica history it needs so that the per-step cost is
//! proportional to what changed, not to the length of the logs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::storage::{Entry, SimStorage};
use crate::raft::{HardState, Index, ReplicaId, Term};

/// A broken invariant: which one, and the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub details: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.details)
    }
}

pub const ELECTION_SAFETY: &str = "election safety";
pub const LOG_MATCHING: &str = "log matching";
pub const LEADER_COMPLETENESS: &str = "leader completeness";
pub const STATE_MACHINE_SAFETY: &str = "state-machine safety";
pub const COMMIT_MONOTONIC: &str = "commit never decreases";
pub const DURABILITY: &str = "durability";
pub const HARD_STATE_FIRST: &str = "hard state durable before send";
pub const VOTE_STABILITY: &str = "one vote per term";
pub const LINEARIZABLE_READ: &str = "linearizable read";
pub const DRIVER_CONTRACT: &str = "action contract";
pub const CORE_PANIC: &str = "core invariant (panic)";
pub const LIVENESS: &str = "liveness";
pub const CLIENT_ANSWERS: &str = "client answers";

fn violation<T>(invariant: &'static str, details: String) -> Result<T, Violation> {
    Err(Violation { invariant, details })
}

/// What every entry at (index, term) is, across all replicas and all time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntryRecord {
    entry: Entry,
    prev_term: Term,
    first_holder: ReplicaId,
}

/// Cross-replica history the checkers compare against.
#[derive(Debug, Default)]
pub struct History {
    /// The leader of each term, once seen.
    leaders: BTreeMap<Term, ReplicaId>,
    /// Log matching, inductively: an (index, term) pair always names the same entry with
    /// the same term before it; then equal (index, term) implies equal prefixes.
    entries: HashMap<(Index, Term), EntryRecord>,
    /// The committed sequence: the longest commit any replica ever reached, entry by entry.
    chosen: Vec<Entry>,
}

impl History {
    pub fn chosen(&self) -> &[Entry] {
        &self.chosen
    }

    /// Highest index known committed anywhere.
    pub fn chosen_len(&self) -> Index {
        self.chosen.len() as Index
    }

    /// Number of terms that had a leader.
    pub fn leader_terms(&self) -> usize {
        self.leaders.len()
    }

    /// Election safety: at most one leader per term, over the whole history.
    pub fn check_election_safety(&mut self, id: ReplicaId, term: Term) -> Result<(), Violation> {
        let first = *self.leaders.entry(term).or_insert(id);
        if first != id {
            return violation(
                ELECTION_SAFETY,
                format!("term {term} has two leaders: r{first} and r{id}"),
            );
        }
        Ok(())
    }

    /// Log matching: record entry `index` of replica `id`'s log (whose entry at
    /// `index - 1` has `prev_term`), or check it against what that slot held elsewhere.
    pub fn check_log_matching(
        &mut self,
        id: ReplicaId,
        index: Index,
        entry: Entry,
        prev_term: Term,
    ) -> Result<(), Violation> {
        let record = EntryRecord {
            entry,
            prev_term,
            first_holder: id,
        };
        let seen = *self.entries.entry((index, entry.term)).or_insert(record);
        if seen.entry != entry || seen.prev_term != prev_term {
            return violation(
                LOG_MATCHING,
                format!(
                    "r{id} holds {entry:?} at index {index} after term {prev_term}; r{} held \
                     {:?} there after term {}",
                    seen.first_holder, seen.entry, seen.prev_term
                ),
            );
        }
        Ok(())
    }

    /// Leader completeness: a leader's log holds every committed entry from `from` on.
    pub fn check_leader_completeness(
        &self,
        id: ReplicaId,
        term: Term,
        log: &[Entry],
        from: Index,
    ) -> Result<(), Violation> {
        let from = from.max(1) as usize;
        for i in from..=self.chosen.len() {
            let want = self.chosen[i - 1];
            if log.get(i - 1) != Some(&want) {
                return violation(
                    LEADER_COMPLETENESS,
                    format!(
                        "r{id}, leader of term {term}, has {:?} at committed index {i}, which \
                         holds {want:?}",
                        log.get(i - 1)
                    ),
                );
            }
        }
        Ok(())
    }

    /// State-machine safety at commit: replica `id` commits `entry` at `index`. Extends the
    /// committed sequence when `index` is new; returns whether it did.
    pub fn check_commit(
        &mut self,
        id: ReplicaId,
        index: Index,
        entry: Option<Entry>,
    ) -> Result<bool, Violation> {
        let Some(entry) = entry else {
            return violation(
                STATE_MACHINE_SAFETY,
                format!("r{id} commits index {index} beyond its log"),
            );
        };
        let i = index as usize;
        if i <= self.chosen.len() {
            if self.chosen[i - 1] != entry {
                return violation(
                    STATE_MACHINE_SAFETY,
                    format!(
                        "r{id} commits {entry:?} at index {index}, where {:?} was committed",
                        self.chosen[i - 1]
                    ),
                );
            }
            return Ok(false);
        }
        if i != self.chosen.len() + 1 {
            return violation(
                STATE_MACHINE_SAFETY,
                format!("r{id} commits index {index} past the committed sequence's end"),
            );
        }
        self.chosen.push(entry);
        Ok(true)
    }

    /// State-machine safety at apply: every applied sequence is a prefix of one sequence.
    pub fn check_apply(&self, id: ReplicaId, index: Index, entry: Entry) -> Result<(), Violation> {
        let i = index as usize;
        if i == 0 || self.chosen.get(i - 1) != Some(&entry) {
            return violation(
                STATE_MACHINE_SAFETY,
                format!(
                    "r{id} applies {entry:?} at index {index}; committed sequence holds {:?}",
                    self.chosen.get(i.wrapping_sub(1))
                ),
            );
        }
        Ok(())
    }

    /// Durability: committed entries `from..=chosen_len` are each on a majority of the
    /// replicas' durable logs (crashed replicas included: their disks survive). A replica
    /// rejoining after a wipe counts as holding them: its loss is the fault being
    /// survived, and it may not vote until it holds them again, which this check verifies
    /// from the moment its rejoin completes.
    pub fn check_committed_durable(
        &self,
        storages: &[&SimStorage],
        from: Index,
    ) -> Result<(), Violation> {
        let quorum = storages.len() / 2 + 1;
        for i in from.max(1) as usize..=self.chosen.len() {
            let want = self.chosen[i - 1];
            let holders = storages
                .iter()
                .filter(|s| s.rejoining() || s.durable().get(i - 1) == Some(&want))
                .count();
            if holders < quorum {
                let logs: Vec<_> = storages
                    .iter()
                    .enumerate()
                    .map(|(r, s)| format!("r{}:{:?}", r + 1, s.durable().get(i - 1)))
                    .collect();
                return violation(
                    DURABILITY,
                    format!(
                        "committed {want:?} at index {i} is durable on {holders} of {} \
                         replicas, quorum {quorum}: {}",
                        storages.len(),
                        logs.join(" ")
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Commit index never decreases within one incarnation of a replica.
pub fn check_commit_monotonic(id: ReplicaId, before: Index, now: Index) -> Result<(), Violation> {
    if now < before {
        return violation(
            COMMIT_MONOTONIC,
            format!("r{id} commit went from {before} to {now}"),
        );
    }
    Ok(())
}

/// A replica never votes twice in a term and its durable term never goes back.
pub fn check_vote_stability(
    id: ReplicaId,
    before: HardState,
    after: HardState,
) -> Result<(), Violation> {
    if after.term < before.term {
        return violation(
            VOTE_STABILITY,
            format!(
                "r{id} persisted term {} after term {}",
                after.term, before.term
            ),
        );
    }
    if after.term == before.term && before.vote.is_some() && after.vote != before.vote {
        return violation(
            VOTE_STABILITY,
            format!(
                "r{id} changed its vote in term {} from {:?} to {:?}",
                after.term, before.vote, after.vote
            ),
        );
    }
    Ok(())
}

/// A follower acknowledges only entries that are durable and match its log.
pub fn check_ack_durable(
    id: ReplicaId,
    to: ReplicaId,
    index: Index,
    durable_match: usize,
) -> Result<(), Violation> {
    if index > durable_match as Index {
        return violation(
            DURABILITY,
            format!(
                "r{id} acknowledges index {index} to r{to}, but only {durable_match} entries \
                 are durable"
            ),
        );
    }
    Ok(())
}

/// A ReadIndex answer covers every write committed before the read was issued.
pub fn check_read(
    id: ReplicaId,
    ctx: u64,
    issued_commit: Index,
    index: Index,
) -> Result<(), Violation> {
    if index < issued_commit {
        return violation(
            LINEARIZABLE_READ,
            format!(
                "r{id} serves read {ctx} at index {index}, but index {issued_commit} was \
                 committed when it was issued"
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(term: Term, pid: u64) -> Entry {
        Entry { term, len: 0, pid }
    }

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut h = History::default();
        h.check_election_safety(1, 3).unwrap();
        h.check_election_safety(1, 3).unwrap();
        h.check_election_safety(2, 4).unwrap();
        assert_eq!(
            h.check_election_safety(2, 3).unwrap_err().invariant,
            ELECTION_SAFETY
        );
    }

    #[test]
    fn differing_entries_at_one_index_and_term_are_caught() {
        let mut h = History::default();
        h.check_log_matching(1, 1, e(1, 1), 0).unwrap();
        h.check_log_matching(2, 1, e(1, 1), 0).unwrap();
        let err = h.check_log_matching(3, 1, e(1, 2), 0).unwrap_err();
        assert_eq!(err.invariant, LOG_MATCHING);
        let err = h
            .check_log_matching(3, 2, e(2, 2), 1)
            .and_then(|()| h.check_log_matching(1, 2, e(2, 2), 2));
        assert_eq!(err.unwrap_err().invariant, LOG_MATCHING);
    }

    #[test]
    fn committed_sequence_is_unique() {
        let mut h = History::default();
        assert!(h.check_commit(1, 1, Some(e(1, 1))).unwrap());
        assert!(!h.check_commit(2, 1, Some(e(1, 1))).unwrap());
        assert!(h.check_commit(2, 1, Some(e(1, 2))).is_err());
        assert!(h.check_commit(2, 2, None).is_err());
        h.check_apply(3, 1, e(1, 1)).unwrap();
        assert!(h.check_apply(3, 2, e(1, 3)).is_err());
        assert!(h.check_leader_completeness(3, 2, &[e(1, 1)], 1).is_ok());
        assert!(h.check_leader_completeness(3, 2, &[], 1).is_err());
    }

    #[test]
    fn vote_changes_within_a_term_are_caught() {
        let hs = |term, vote| HardState {
            term,
            vote,
            commit: 0,
        };
        check_vote_stability(1, hs(1, None), hs(1, Some(2))).unwrap();
        check_vote_stability(1, hs(1, Some(2)), hs(2, Some(3))).unwrap();
        assert!(check_vote_stability(1, hs(1, Some(2)), hs(1, Some(3))).is_err());
        assert!(check_vote_stability(1, hs(2, None), hs(1, None)).is_err());
    }
}
