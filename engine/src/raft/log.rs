//! The core's in-memory view of the log: term and payload length of every entry, plus
//! the runs of equal terms for fast conflict hints. Payload bytes never live here.

use super::types::{EntryMeta, Index, Term};

/// Term and length of each entry after `prev_index`, and where each term starts.
#[derive(Clone, Debug)]
pub(crate) struct LogMeta {
    /// Index of the entry before `entries[0]` (the compaction boundary).
    prev_index: Index,
    /// Term of the entry at `prev_index`.
    prev_term: Term,
    entries: Vec<EntryMeta>,
    /// `(term, first index)` of every run of equal terms in `entries`, ascending.
    runs: Vec<(Term, Index)>,
}

impl LogMeta {
    pub(crate) fn new(prev_index: Index, prev_term: Term, entries: Vec<EntryMeta>) -> Self {
        assert!(
            prev_index > 0 || prev_term == 0,
            "empty log sentinel has term 0"
        );
        let mut log = LogMeta {
            prev_index,
            prev_term,
            entries: Vec::with_capacity(entries.len()),
            runs: Vec::new(),
        };
        log.append(&entries);
        log
    }

    pub(crate) fn last_index(&self) -> Index {
        self.prev_index + self.entries.len() as Index
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.prev_term, |e| e.term)
    }

    /// Index of the first entry the core still knows about.
    pub(crate) fn first_index(&self) -> Index {
        self.prev_index + 1
    }

    /// Term of the entry at `index`, or `None` when it is not in the log (beyond the end or
    /// below the compaction boundary).
    pub(crate) fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.prev_index {
            return Some(self.prev_term);
        }
        self.meta_at(index).map(|e| e.term)
    }

    pub(crate) fn meta_at(&self, index: Index) -> Option<EntryMeta> {
        if index <= self.prev_index {
            return None;
        }
        let offset = usize::try_from(index - self.prev_index - 1).ok()?;
        self.entries.get(offset).copied()
    }

    /// Entries `first..` up to `count_max` entries and `bytes_max` payload bytes; always
    /// at least one entry when `first` is in the log, so an oversized entry still moves.
    pub(crate) fn batch(&self, first: Index, count_max: u32, bytes_max: u64) -> &[EntryMeta] {
        assert!(
            first > self.prev_index,
            "batch below the compaction boundary"
        );
        let start = (first - self.prev_index - 1) as usize;
        if start >= self.entries.len() {
            return &[];
        }
        let rest = &self.entries[start..];
        let mut bytes = 0u64;
        let mut n = 0usize;
        for e in rest.iter().take(count_max as usize) {
            if n > 0 && bytes + u64::from(e.len) > bytes_max {
                break;
            }
            bytes += u64::from(e.len);
            n += 1;
        }
        &rest[..n]
    }

    /// First index of the run of `term` that contains `index` (for reject hints).
    pub(crate) fn term_first_index(&self, index: Index) -> Index {
        assert!(index > self.prev_index && index <= self.last_index());
        let pos = self.runs.partition_point(|&(_, first)| first <= index);
        assert!(pos > 0, "every logged index lies in a run");
        let (term, first) = self.runs[pos - 1];
        assert_eq!(Some(term), self.term_at(index));
        first
    }

    /// Last index holding `term`, if any entry has exactly that term.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<Index> {
        let pos = self.runs.partition_point(|&(t, _)| t <= term);
        if pos == 0 || self.runs[pos - 1].0 != term {
            return (term == self.prev_term && self.prev_index > 0 && self.entries.is_empty())
                .then_some(self.prev_index);
        }
        let end = self
            .runs
            .get(pos)
            .map_or(self.last_index() + 1, |&(_, f)| f);
        Some(end - 1)
    }

    pub(crate) fn append(&mut self, new: &[EntryMeta]) {
        let mut last_term = self.last_term();
        let mut run_term = self.runs.last().map(|&(t, _)| t);
        let mut index = self.last_index();
        for e in new {
            index += 1;
            assert!(e.term >= last_term, "log terms must not decrease");
            if run_term != Some(e.term) {
                self.runs.push((e.term, index));
                run_term = Some(e.term);
            }
            last_term = e.term;
        }
        self.entries.extend_from_slice(new);
    }

    /// Appends `lens.len()` entries of `term` (a leader's proposal) without building an
    /// intermediate list.
    pub(crate) fn append_term(&mut self, term: Term, lens: &[u32]) {
        assert!(term >= self.last_term(), "log terms must not decrease");
        if !lens.is_empty() && self.runs.last().is_none_or(|&(t, _)| t != term) {
            self.runs.push((term, self.last_index() + 1));
        }
        self.entries
            .extend(lens.iter().map(|&len| EntryMeta { term, len }));
    }

    /// Removes every entry after `index`.
    pub(crate) fn truncate_after(&mut self, index: Index) {
        assert!(
            index >= self.prev_index,
            "truncate below the compaction boundary"
        );
        let keep = (index - self.prev_index) as usize;
        self.entries.truncate(keep);
        while self.runs.last().is_some_and(|&(_, first)| first > index) {
            self.runs.pop();
        }
    }

    /// Checks the structure; panics with context when broken. Runs after every event, so
    /// it costs O(terms in the log), not O(entries): it checks the run table and the
    /// entries at each run boundary (`append` checks every entry as it arrives).
    pub(crate) fn check(&self) {
        let Some(&(first_term, first_index)) = self.runs.first() else {
            assert!(self.entries.is_empty(), "entries without a term run");
            return;
        };
        assert_eq!(first_index, self.prev_index + 1, "first run starts the log");
        assert!(
            first_term >= self.prev_term,
            "first entry older than boundary"
        );
        for pair in self.runs.windows(2) {
            let ((t0, i0), (t1, i1)) = (pair[0], pair[1]);
            assert!(t0 < t1 && i0 < i1, "term runs not ascending: {pair:?}");
        }
        let last = self.last_index();
        for &(term, first) in &self.runs {
            assert!(
                first <= last,
                "run of term {term} starts at {first}, beyond {last}"
            );
            assert_eq!(
                self.term_at(first),
                Some(term),
                "run table out of sync at {first}"
            );
        }
    }

    /// Checks every entry against the run table (O(entries): for unit tests).
    #[cfg(test)]
    fn check_full(&self) {
        self.check();
        let mut expected_runs = 0usize;
        let mut prev: Option<Term> = None;
        for (i, e) in self.entries.iter().enumerate() {
            if prev != Some(e.term) {
                let first = self.prev_index + 1 + i as Index;
                assert_eq!(
                    self.runs.get(expected_runs),
                    Some(&(e.term, first)),
                    "term run table out of sync at index {first}"
                );
                expected_runs += 1;
            }
            if let Some(p) = prev {
                assert!(p <= e.term, "terms decrease at offset {i}");
            }
            prev = Some(e.term);
        }
        assert_eq!(expected_runs, self.runs.len(), "stale term runs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metas(terms: &[Term]) -> Vec<EntryMeta> {
        terms
            .iter()
            .map(|&term| EntryMeta { term, len: 10 })
            .collect()
    }

    #[test]
    fn runs_follow_appends_and_truncation() {
        let mut log = LogMeta::new(0, 0, metas(&[1, 1, 2, 2, 2, 5]));
        log.check_full();
        assert_eq!(log.last_index(), 6);
        assert_eq!(log.term_first_index(5), 3);
        assert_eq!(log.term_first_index(2), 1);
        assert_eq!(log.last_index_of_term(2), Some(5));
        assert_eq!(log.last_index_of_term(3), None);
        assert_eq!(log.last_index_of_term(5), Some(6));
        log.truncate_after(4);
        log.check_full();
        assert_eq!(log.last_index_of_term(2), Some(4));
        assert_eq!(log.last_index_of_term(5), None);
        log.append(&metas(&[3]));
        log.check_full();
        assert_eq!(log.term_at(5), Some(3));
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(6), None);
    }

    #[test]
    fn batch_respects_limits_but_moves_oversized_entries() {
        let mut entries = metas(&[1, 1, 1, 1]);
        entries[1].len = 1000;
        let log = LogMeta::new(0, 0, entries);
        assert_eq!(log.batch(1, 10, 100).len(), 1);
        assert_eq!(log.batch(2, 10, 100).len(), 1);
        assert_eq!(log.batch(3, 10, 100).len(), 2);
        assert_eq!(log.batch(1, 10, 10_000).len(), 4);
        assert_eq!(log.batch(1, 2, 10_000).len(), 2);
        assert!(log.batch(5, 10, 10).is_empty());
    }

    #[test]
    fn append_term_matches_append() {
        let mut a = LogMeta::new(3, 2, metas(&[2, 3]));
        let mut b = a.clone();
        a.append(&metas(&[3, 3, 4]));
        b.append_term(3, &[10, 10]);
        b.append_term(4, &[10]);
        b.append_term(4, &[]);
        a.check_full();
        b.check_full();
        assert_eq!(a.entries, b.entries);
        assert_eq!(a.runs, b.runs);
        let mut c = LogMeta::new(3, 2, Vec::new());
        c.append_term(2, &[10]);
        c.check_full();
        assert_eq!(c.runs, vec![(2, 4)]);
    }
}
