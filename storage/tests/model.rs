//! Property test: random appends, syncs, truncations, compactions and reopens against a
//! simple in-memory model of the log.

use proptest::prelude::*;
use storage::{Log, LogConfig, Position};

#[derive(Debug, Clone)]
enum Op {
    Append { n: u64, term_bump: bool, len: usize },
    Sync,
    Truncate { back: u64 },
    Compact { back: u64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1u64..24, prop::bool::weighted(0.2), 0usize..700)
            .prop_map(|(n, term_bump, len)| Op::Append { n, term_bump, len }),
        2 => Just(Op::Sync),
        2 => (0u64..40).prop_map(|back| Op::Truncate { back }),
        1 => (0u64..60).prop_map(|back| Op::Compact { back }),
        1 => Just(Op::Reopen),
    ]
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 10,
        payload_bytes_max: 1024,
        ..LogConfig::default()
    }
}

fn payload(index: u64, term: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (index * 31 + term * 7 + j as u64) as u8)
        .collect()
}

/// The model: entries from `first` on, and the term before `first`.
struct Model {
    first: u64,
    prev_term: u64,
    entries: Vec<(u64, Vec<u8>)>,
}

impl Model {
    fn last(&self) -> Position {
        match self.entries.last() {
            Some((term, _)) => Position {
                index: self.first + self.entries.len() as u64 - 1,
                term: *term,
            },
            None => Position {
                index: self.first - 1,
                term: self.prev_term,
            },
        }
    }
}

fn check(log: &Log, model: &Model) {
    assert_eq!(log.first_index(), model.first);
    assert_eq!(log.last(), model.last());
    assert_eq!(log.term_of(model.first - 1).unwrap(), model.prev_term);
    for (k, (term, bytes)) in model.entries.iter().enumerate() {
        let index = model.first + k as u64;
        let e = log.read_entry(index).unwrap();
        assert_eq!((e.term, e.payload), (*term, &bytes[..]), "entry {index}");
    }
    let metas: Vec<_> = log.iter_meta().map(|m| (m.index, m.term)).collect();
    let expect: Vec<_> = model
        .entries
        .iter()
        .enumerate()
        .map(|(k, (t, _))| (model.first + k as u64, *t))
        .collect();
    assert_eq!(metas, expect);
}

proptest! {
    // 24 cases by default (a few seconds); STORAGE_PROPTEST_CASES=1000 for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("STORAGE_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config()).unwrap();
        let mut model = Model { first: 1, prev_term: 0, entries: Vec::new() };
        for op in ops {
            match op {
                Op::Append { n, term_bump, len } => {
                    let last = model.last();
                    let term = last.term.max(1) + u64::from(term_bump);
                    let batch: Vec<Vec<u8>> = (last.index + 1..=last.index + n)
                        .map(|index| payload(index, term, (len + index as usize) % 700))
                        .collect();
                    if n % 2 == 0 {
                        let end = log.append_entries(term, last.index + 1, batch.iter().map(|p| &p[..]));
                        assert_eq!(end.unwrap(), last.index + n);
                    } else {
                        for (k, p) in batch.iter().enumerate() {
                            log.append_entry(term, last.index + 1 + k as u64, p).unwrap();
                        }
                    }
                    model.entries.extend(batch.into_iter().map(|p| (term, p)));
                }
                Op::Sync => {
                    assert_eq!(log.sync().unwrap(), model.last());
                }
                Op::Truncate { back } => {
                    let last = model.last().index;
                    let to = last.saturating_sub(back).max(model.first - 1);
                    log.truncate_after(to).unwrap();
                    model.entries.truncate((to + 1 - model.first) as usize);
                    if to < last {
                        assert_eq!(log.durable(), model.last(), "truncation syncs");
                    }
                }
                Op::Compact { back } => {
                    let before = model.last().index.saturating_sub(back).max(model.first);
                    let new_first = log.compact_before(before).unwrap();
                    assert!(new_first >= model.first && new_first <= before);
                    let drop_n = (new_first - model.first) as usize;
                    if drop_n > 0 {
                        model.prev_term = model.entries[drop_n - 1].0;
                        model.entries.drain(..drop_n);
                        model.first = new_first;
                    }
                }
                Op::Reopen => {
                    drop(log);
                    log = Log::open(dir.path(), config()).unwrap();
                    assert_eq!(log.durable(), model.last());
                }
            }
            check(&log, &model);
        }
        drop(log);
        let log = Log::open(dir.path(), config()).unwrap();
        check(&log, &model);
    }
}
