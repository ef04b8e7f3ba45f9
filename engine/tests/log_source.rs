//! The applier's entry source over the memory-mapped log.

use engine::applier::EntrySource;
use engine::node::LogSource;
use storage::{Log, LogConfig};

fn payload(index: u64) -> Vec<u8> {
    vec![index as u8; 100 + (index % 50) as usize]
}

/// A log of `count` published entries in small segments, so visits cross segment ends.
fn log(dir: &std::path::Path, count: u64) -> Log {
    let config = LogConfig {
        segment_bytes: 16 << 10,
        payload_bytes_max: 4096,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir, config).unwrap();
    for index in 1..=count {
        log.append_entry(1, index, &payload(index)).unwrap();
    }
    log.publish_readable(count);
    log
}

/// Visits `first..=last` and checks it saw each of them, in order, with its payload.
fn visit_expecting_every_entry(source: &mut LogSource, first: u64, last: u64) {
    let mut next = first;
    source
        .visit(first, last, &mut |index, _, bytes| {
            assert_eq!(index, next);
            assert_eq!(bytes, payload(index));
            next += 1;
        })
        .unwrap();
    assert_eq!(next, last + 1);
}

#[test]
fn a_plain_visit_sees_no_look_ahead_and_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let log = log(dir.path(), 120);
    let mut source = LogSource::new(log.reader());
    for (first, last) in [(1, 50), (51, 51), (52, 120)] {
        visit_expecting_every_entry(&mut source, first, last);
    }
    // Past the published watermark is an error, not a short visit.
    assert!(source.visit(121, 121, &mut |_, _, _| {}).is_err());
}

#[test]
fn a_peek_sees_what_a_visit_will_see_and_leaves_it_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let log = log(dir.path(), 120);
    let mut source = LogSource::new(log.reader());
    // From a fresh source, then from the cursor a visit left, across segment ends.
    for (first, last) in [(1, 50), (51, 120)] {
        let mut peeked = Vec::new();
        source.peek(first, last, &mut |bytes| peeked.push(bytes.to_vec()));
        let expected: Vec<Vec<u8>> = (first..=last).map(payload).collect();
        assert_eq!(peeked, expected);
        visit_expecting_every_entry(&mut source, first, last);
    }
    // Past the published watermark a peek stops short; the visit reports the error.
    let mut peeked = 0;
    source.peek(100, 130, &mut |_| peeked += 1);
    assert_eq!(peeked, 21);
    assert!(source.visit(121, 121, &mut |_, _, _| {}).is_err());
}
