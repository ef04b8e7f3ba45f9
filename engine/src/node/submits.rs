//! Accepted writes waiting for their answer, and the rules that answer them.
//!
//! The shard and the simulator both keep their pending writes here, so the simulator
//! checks the rules the node runs: an `Ok` only for entries committed as proposed, a
//! "not written" only for entries that cannot be committed, and an answer for every
//! accepted write once the group makes progress again.

use std::collections::VecDeque;

use crate::raft::{Index, Term};

/// What became of an accepted write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Committed in the term it was proposed in: its entries are the ones proposed.
    Committed,
    /// Its last index was committed with an entry of another term: a later leader
    /// replaced it, so it will never be applied.
    Replaced,
    /// A new leader's entries overwrote it in this replica's log, but another replica may
    /// still hold it and a later leader may yet commit it.
    Unknown,
}

#[derive(Debug)]
struct Pending<T> {
    token: T,
    term: Term,
    last_index: Index,
}

/// Writes this replica proposed as leader, oldest (lowest index) first. A replica that
/// stepped down keeps them: each is answered once the commit index passes it or its
/// entries leave the log.
#[derive(Debug)]
pub(crate) struct Submits<T> {
    pending: VecDeque<Pending<T>>,
}

impl<T> Default for Submits<T> {
    fn default() -> Self {
        Self {
            pending: VecDeque::new(),
        }
    }
}

impl<T> Submits<T> {
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A write proposed in `term` whose entries end at `last_index`. Proposals come in
    /// index order, and stay in it as long as every truncation is passed to
    /// [`Submits::truncated`]: a replica proposes again only past its log's end.
    pub(crate) fn push(&mut self, token: T, term: Term, last_index: Index) {
        self.pending.push_back(Pending {
            token,
            term,
            last_index,
        });
    }

    /// The log was cut after `index` (a new leader's entries conflict with it): every
    /// write with an entry past `index` is [`Outcome::Unknown`]. Answering them now
    /// matters: the commit index may not reach them until unrelated writes come, and a
    /// lone client waiting on one would wait for good.
    pub(crate) fn truncated(&mut self, index: Index, mut answer: impl FnMut(T, Outcome, Index)) {
        while self.pending.back().is_some_and(|p| p.last_index > index) {
            let p = self.pending.pop_back().expect("back exists");
            answer(p.token, Outcome::Unknown, p.last_index);
        }
    }

    /// Answers every write up to `commit`; `term_at` gives the term of a log index.
    /// Returns whether any was answered.
    pub(crate) fn committed(
        &mut self,
        commit: Index,
        term_at: impl Fn(Index) -> Option<Term>,
        mut answer: impl FnMut(T, Outcome, Index),
    ) -> bool {
        let mut answered = false;
        while self.pending.front().is_some_and(|p| p.last_index <= commit) {
            let p = self.pending.pop_front().expect("front exists");
            // Only the leader of a term makes entries of that term, once per index: an
            // entry of the write's term at its last index is the write's own (and so are
            // the ones before it, by log matching).
            let outcome = if term_at(p.last_index) == Some(p.term) {
                Outcome::Committed
            } else {
                Outcome::Replaced
            };
            answer(p.token, outcome, p.last_index);
            answered = true;
        }
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(run: impl FnOnce(&mut Vec<(u32, Outcome, Index)>)) -> Vec<(u32, Outcome, Index)> {
        let mut out = Vec::new();
        run(&mut out);
        out
    }

    #[test]
    fn a_write_is_answered_once_the_commit_index_passes_its_last_entry() {
        let mut s = Submits::default();
        s.push(1, 2, 5);
        s.push(2, 2, 8);
        let term_at = |_| Some(2);
        let got = answers(|out| {
            assert!(s.committed(7, term_at, |t, o, i| out.push((t, o, i))));
        });
        assert_eq!(got, vec![(1, Outcome::Committed, 5)]);
        assert_eq!(s.len(), 1, "write 2 waits for index 8");
        let got = answers(|out| {
            assert!(s.committed(8, term_at, |t, o, i| out.push((t, o, i))));
        });
        assert_eq!(got, vec![(2, Outcome::Committed, 8)]);
        assert!(s.is_empty());
        assert!(!s.committed(9, term_at, |_, _, _| unreachable!("nothing pending")));
    }

    #[test]
    fn an_entry_of_another_term_at_the_last_index_means_the_write_was_replaced() {
        let mut s = Submits::default();
        s.push(1, 2, 5);
        let got = answers(|out| {
            s.committed(
                6,
                |i| Some(if i == 5 { 3 } else { 2 }),
                |t, o, i| {
                    out.push((t, o, i));
                },
            );
        });
        assert_eq!(got, vec![(1, Outcome::Replaced, 5)]);
    }

    #[test]
    fn a_truncation_answers_only_the_writes_with_entries_past_the_cut() {
        let mut s = Submits::default();
        s.push(1, 2, 5);
        s.push(2, 2, 7);
        s.push(3, 2, 9);
        let got = answers(|out| s.truncated(6, |t, o, i| out.push((t, o, i))));
        // Write 2's entries are 6..=7: one of them is gone.
        assert_eq!(
            got,
            vec![(3, Outcome::Unknown, 9), (2, Outcome::Unknown, 7)]
        );
        assert_eq!(s.len(), 1);
        let got = answers(|out| {
            s.committed(5, |_| Some(2), |t, o, i| out.push((t, o, i)));
        });
        assert_eq!(got, vec![(1, Outcome::Committed, 5)]);
    }
}
