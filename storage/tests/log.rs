//! Log behaviour: appends, runs, group commit, truncation, compaction, reset, readers.

use std::time::{Duration, Instant};

use storage::{encode_record, record_len, Log, LogConfig, Position, RecordRun, StorageError};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 10,
        payload_bytes_max: 2048,
        ..LogConfig::default()
    }
}

fn payload(index: u64) -> Vec<u8> {
    (0..(index % 300) as usize)
        .map(|j| (index as usize + j) as u8)
        .collect()
}

fn files_with_extension(dir: &std::path::Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == ext)
        })
        .count()
}

fn fill(log: &mut Log, from: u64, to: u64, term: u64) {
    for i in from..=to {
        log.append_entry(term, i, &payload(i)).unwrap();
    }
}

#[test]
fn appends_read_back_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(
        (log.first_index(), log.last()),
        (1, Position { index: 0, term: 0 })
    );
    fill(&mut log, 1, 300, 2);
    fill(&mut log, 301, 500, 3);
    assert_eq!(
        log.sync().unwrap(),
        Position {
            index: 500,
            term: 3
        }
    );
    for i in [1, 150, 300, 301, 500] {
        assert_eq!(log.read_entry(i).unwrap().payload, &payload(i)[..]);
    }
    assert_eq!(log.term_of(300).unwrap(), 2);
    assert_eq!(log.term_of(301).unwrap(), 3);
    assert_eq!(log.term_of(0).unwrap(), 0);
    assert!(matches!(
        log.term_of(501),
        Err(StorageError::Unavailable { .. })
    ));
    // Reading a range returns whole records within one segment; looping covers it all.
    let mut next = 1;
    let mut runs = 0;
    while next <= 500 {
        let run = log.read_run(next..=500, 4096).unwrap();
        assert!(run.bytes().len() <= 4096 || run.len() == 1);
        let again = RecordRun::validate(run.bytes()).unwrap();
        assert_eq!(again, run);
        for e in run.iter() {
            assert_eq!((e.index, e.payload), (next, &payload(next)[..]));
            next += 1;
        }
        runs += 1;
    }
    assert!(runs > 10);
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(
        log.last(),
        Position {
            index: 500,
            term: 3
        }
    );
    let metas: Vec<_> = log.iter_meta().collect();
    assert_eq!(metas.len(), 500);
    assert!(metas
        .iter()
        .all(|m| m.payload_len as usize == payload(m.index).len()));
    assert_eq!(metas[299].term, 2);
    assert_eq!(metas[300].term, 3);
}

#[test]
fn append_checks_continuity_term_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    fill(&mut log, 1, 3, 5);
    assert!(matches!(
        log.append_entry(5, 5, b"x"),
        Err(StorageError::IndexGap {
            expected: 4,
            found: 5
        })
    ));
    assert!(matches!(
        log.append_entry(4, 4, b"x"),
        Err(StorageError::TermRegression { .. })
    ));
    assert!(matches!(
        log.append_entry(5, 4, &vec![0; 2049]),
        Err(StorageError::PayloadTooLarge { .. })
    ));
    assert_eq!(log.last_index(), 3);
}

#[test]
fn follower_appends_leader_runs_verbatim() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = Log::open(leader_dir.path(), config()).unwrap();
    let mut follower = Log::open(follower_dir.path(), config()).unwrap();
    fill(&mut leader, 1, 400, 1);
    let mut next = 1;
    while next <= 400 {
        let sent = leader.read_run(next..=400, 3000).unwrap();
        let wire = sent.bytes().to_vec(); // what arrives in the AppendEntries buffer
        let received = RecordRun::validate(&wire).unwrap();
        follower.append_run(&received).unwrap();
        next = received.last().unwrap().0 + 1;
    }
    follower.sync().unwrap();
    for i in 1..=400 {
        assert_eq!(
            follower.read_entry(i).unwrap(),
            leader.read_entry(i).unwrap()
        );
    }
    // A run that does not continue the log is refused without writing anything.
    let mut buf = vec![0u8; record_len(3)];
    encode_record(&mut buf, 1, 402, b"abc");
    let run = RecordRun::validate(&buf).unwrap();
    assert!(matches!(
        follower.append_run(&run),
        Err(StorageError::IndexGap { .. })
    ));
    assert_eq!(follower.last_index(), 400);
    // One run bigger than a segment is split across segments.
    let big: Vec<u8> = (401..=480)
        .flat_map(|i| {
            let mut b = vec![0u8; record_len(400)];
            encode_record(&mut b, 2, i, &[i as u8; 400]);
            b
        })
        .collect();
    follower
        .append_run(&RecordRun::validate(&big).unwrap())
        .unwrap();
    assert_eq!(
        follower.last(),
        Position {
            index: 480,
            term: 2
        }
    );
    drop(follower);
    let follower = Log::open(follower_dir.path(), config()).unwrap();
    assert_eq!(
        follower.read_entry(470).unwrap().payload,
        &[470u32 as u8; 400][..]
    );
}

#[test]
fn truncated_suffix_never_reappears() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    fill(&mut log, 1, 400, 1);
    log.sync().unwrap();
    log.truncate_after(150).unwrap();
    assert_eq!(
        log.last(),
        Position {
            index: 150,
            term: 1
        }
    );
    assert_eq!(log.durable().index, 150);
    // New entries of a higher term, shorter than the old ones, then no sync ("crash").
    for i in 151..=160 {
        log.append_entry(2, i, b"new").unwrap();
    }
    drop(log);
    let mut log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(
        log.last(),
        Position {
            index: 160,
            term: 2
        }
    );
    assert_eq!(log.read_entry(160).unwrap().payload, b"new");
    // Truncate everything, then reopen: empty log, appends restart at the first index.
    log.truncate_after(0).unwrap();
    drop(log);
    let mut log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.last(), Position { index: 0, term: 0 });
    log.append_entry(3, 1, b"again").unwrap();
    assert_eq!(log.sync().unwrap().index, 1);
}

#[test]
fn compaction_keeps_term_before_first_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    fill(&mut log, 1, 200, 1);
    fill(&mut log, 201, 400, 2);
    log.sync().unwrap();
    let first = log.compact_before(250).unwrap();
    assert!(first > 1 && first <= 250, "first {first}");
    assert_eq!(log.first_index(), first);
    let prev_term = if first - 1 <= 200 { 1 } else { 2 };
    assert_eq!(log.term_of(first - 1).unwrap(), prev_term);
    assert!(matches!(
        log.term_of(first - 2),
        Err(StorageError::Compacted { .. })
    ));
    assert!(matches!(
        log.read_entry(first - 1),
        Err(StorageError::Compacted { .. })
    ));
    drop(log);
    let mut log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.first_index(), first);
    assert_eq!(log.term_of(first - 1).unwrap(), prev_term);
    assert_eq!(log.last_index(), 400);
    // Reset after a snapshot: the log restarts after it.
    log.reset(1000, 7).unwrap();
    assert_eq!(
        (log.first_index(), log.last()),
        (
            1001,
            Position {
                index: 1000,
                term: 7
            }
        )
    );
    log.append_entry(7, 1001, b"after snapshot").unwrap();
    log.sync().unwrap();
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.term_of(1000).unwrap(), 7);
    assert_eq!(log.read_entry(1001).unwrap().payload, b"after snapshot");
}

#[test]
fn group_commit_reports_durable_only_through_completed_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    fill(&mut log, 1, 10, 1);
    let a = log.begin_sync().unwrap().expect("dirty");
    assert_eq!(a.up_to().index, 10);
    assert!(log.begin_sync().unwrap().is_none(), "nothing new to sync");
    fill(&mut log, 11, 300, 1); // rolls into new segments
    let b = log.begin_sync().unwrap().expect("dirty");
    assert_eq!(b.up_to().index, 300);
    assert!(!b.entries().is_empty());
    // b completes first: durable cannot pass a, which is still in flight.
    let ok_b = vec![0; b.entries().len()];
    assert_eq!(log.complete_sync(b, &ok_b).unwrap().index, 0);
    let ok_a = vec![0; a.entries().len()];
    assert_eq!(log.complete_sync(a, &ok_a).unwrap().index, 300);
}

#[test]
fn failed_fdatasync_fails_the_log_and_reports_nothing_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    fill(&mut log, 1, 10, 1);
    log.sync().unwrap();
    fill(&mut log, 11, 20, 1);
    let p = log.begin_sync().unwrap().unwrap();
    let mut results = vec![0; p.entries().len()];
    results[0] = -libc::EIO;
    let err = log.complete_sync(p, &results).unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    assert!(log.is_failed());
    assert_eq!(log.durable().index, 10);
    assert!(matches!(
        log.append_entry(1, 21, b"x"),
        Err(StorageError::Failed { .. })
    ));
    assert!(matches!(log.sync(), Err(StorageError::Failed { .. })));
    assert!(matches!(
        log.truncate_after(5),
        Err(StorageError::Failed { .. })
    ));
}

#[test]
fn reader_thread_follows_the_published_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    let reader = log.reader();
    const N: u64 = 3000;
    let applier = std::thread::spawn(move || {
        let mut cursor = reader.cursor(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while cursor.next_index() <= N {
            assert!(
                Instant::now() < deadline,
                "reader stalled at {}",
                cursor.next_index()
            );
            match cursor.next_entry().unwrap() {
                Some(e) => assert_eq!(e.payload, &payload(e.index)[..], "entry {}", e.index),
                None => std::thread::yield_now(),
            }
        }
        cursor.next_index()
    });
    for i in 1..=N {
        log.append_entry(1, i, &payload(i)).unwrap();
        if i % 7 == 0 || i == N {
            log.publish_readable(i);
        }
        if i % 500 == 0 {
            log.sync().unwrap();
        }
    }
    assert_eq!(applier.join().unwrap(), N + 1);
    // Published entries cannot be truncated; compaction keeps readers' mappings alive.
    assert!(matches!(
        log.truncate_after(N - 1),
        Err(StorageError::BadCut { .. })
    ));
    let reader = log.reader();
    let mut cursor = reader.cursor(N - 100).unwrap();
    log.compact_before(N).unwrap();
    let e = cursor.next_entry().unwrap().unwrap();
    assert_eq!((e.index, e.payload), (N - 100, &payload(N - 100)[..]));
    assert!(matches!(
        reader.cursor(1),
        Err(StorageError::Compacted { .. })
    ));
    assert!(matches!(
        reader.cursor(N + 2),
        Err(StorageError::NotReadable { .. })
    ));
}

#[test]
fn compacted_segments_are_recycled_without_stale_entries_reappearing() {
    let dir = tempfile::tempdir().unwrap();
    let spares = |d: &std::path::Path| files_with_extension(d, "spare");
    let mut log = Log::open(dir.path(), config()).unwrap();
    fill(&mut log, 1, 400, 1);
    log.sync().unwrap();
    log.compact_before(401).unwrap();
    assert_eq!(
        spares(dir.path()),
        2,
        "compaction keeps spare_segments_max spares"
    );
    // Short entries of a new term fill the recycled files; old longer records remain
    // behind them as stale bytes.
    for i in 401..=1300 {
        log.append_entry(2, i, b"short").unwrap();
    }
    assert_eq!(spares(dir.path()), 0, "rolls reuse the spares");
    log.truncate_after(1250).unwrap();
    drop(log);
    let mut log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(
        log.last(),
        Position {
            index: 1250,
            term: 2
        }
    );
    for i in log.first_index()..=1250 {
        let want = if i <= 400 {
            payload(i)
        } else {
            b"short".to_vec()
        };
        assert_eq!(log.read_entry(i).unwrap().payload, &want[..], "entry {i}");
    }
    log.append_entry(3, 1251, b"after").unwrap();
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(
        log.last(),
        Position {
            index: 1251,
            term: 3
        }
    );
}

#[test]
fn crash_between_spare_rename_and_header_write_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    fill(&mut log, 1, 400, 1);
    log.compact_before(401).unwrap();
    let last = log.last();
    drop(log);
    // Simulate the crash: a spare renamed to the next segment's name, header not yet
    // rewritten (it still names its previous first index).
    let spare = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "spare"))
        .expect("compaction left a spare");
    let next = dir.path().join(format!("{:020}.seg", last.index + 1));
    std::fs::rename(&spare, &next).unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.last(), last);
    assert!(!next.exists(), "the never-written segment was dropped");
    log.append_entry(1, last.index + 1, b"x").unwrap();
    assert_eq!(log.sync().unwrap().index, last.index + 1);
}

#[test]
fn segments_a_reader_still_maps_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    fill(&mut log, 1, 400, 1);
    log.publish_readable(400);
    let reader = log.reader();
    let mut lagging = reader.cursor(1).unwrap(); // holds the first segment's mapping
    log.compact_before(401).unwrap();
    // Refill well past the dropped segments: reused files get new contents.
    for i in 401..=1300 {
        log.append_entry(2, i, &[0xee; 40]).unwrap();
    }
    // The lagging reader still sees the original entries, unchanged.
    for i in 1..=20 {
        let e = lagging.next_entry().unwrap().unwrap();
        assert_eq!((e.index, e.term, e.payload), (i, 1, &payload(i)[..]));
    }
}

#[test]
fn segments_are_prepared_ahead_zero_filled_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = dir.path().join("next-segment.prepared");
    let segments = |d: &std::path::Path| files_with_extension(d, "seg");
    let mut log = Log::open(dir.path(), config()).unwrap();
    // A sync with the tail segment past half full starts the preparation; closing the
    // log waits for it, and the file is kept for the next open.
    for i in 1..=25 {
        log.append_entry(1, i, &[7u8; 400]).unwrap(); // 25 x 432 B of 16 KiB
    }
    assert_eq!(segments(dir.path()), 1);
    log.sync().unwrap();
    drop(log);
    let bytes = std::fs::read(&prepared).expect("a prepared segment file");
    assert_eq!(bytes.len(), config().segment_bytes);
    assert!(bytes.iter().all(|&b| b == 0));
    // The next roll takes it; entries in it survive a reopen.
    let mut log = Log::open(dir.path(), config()).unwrap();
    let before = segments(dir.path());
    let mut index = log.last_index() + 1;
    while segments(dir.path()) == before {
        log.append_entry(1, index, &[9u8; 400]).unwrap();
        index += 1;
    }
    assert!(!prepared.exists(), "the roll used the prepared file");
    log.append_entry(1, index, b"last").unwrap();
    log.sync().unwrap();
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.last_index(), index);
    assert_eq!(log.read_entry(index).unwrap().payload, b"last");
    assert_eq!(log.read_entry(index - 1).unwrap().payload, &[9u8; 400][..]);
}

#[test]
fn an_unsynced_log_prepares_mapped_segments_ahead_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = dir.path().join("next-segment.prepared");
    let segments = |d: &std::path::Path| files_with_extension(d, "seg");
    let config = LogConfig {
        synced: false,
        ..config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    let mut index = 1;
    let mut used = 0;
    for _ in 0..5 {
        // Past half of the tail segment, appends alone (no sync) start the preparer.
        // Appends keep going (paced, so the preparer usually finishes before the tail
        // fills): a roll may take a finished preparation between two checks here, and
        // only a later tail's half mark starts the next one.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !prepared.exists() {
            assert!(Instant::now() < deadline, "no segment prepared ahead");
            log.append_entry(1, index, &[index as u8; 400]).unwrap();
            index += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        // Let the preparer thread return after its rename, then roll.
        std::thread::sleep(Duration::from_millis(20));
        let before = segments(dir.path());
        while segments(dir.path()) == before {
            log.append_entry(1, index, &[index as u8; 400]).unwrap();
            index += 1;
        }
        if !prepared.exists() {
            used += 1;
        }
    }
    assert!(used > 0, "no roll used a prepared segment");
    let last = index - 1;
    drop(log);
    // Never synced, but in the page cache: a reopen finds every entry, in order.
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.last_index(), last);
    for i in 1..=last {
        assert_eq!(
            log.read_entry(i).unwrap().payload,
            &[i as u8; 400][..],
            "entry {i}"
        );
    }
}

#[test]
fn a_batch_is_written_in_pieces_across_stage_and_segment_limits() {
    // 1 MiB segments and about 1.6 MB of records per batch: pieces end at the 256 KiB
    // stage limit, at a segment's end, and at a too-large payload; into fresh segments
    // (written through the file) and into a recycled one (through its mapping).
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    log.append_entry(1, 1, b"before").unwrap();
    let body = |i: u64| vec![(i % 251) as u8; 900 + (i % 200) as usize];
    let batch = |from: u64, to: u64| (from..=to).map(body).collect::<Vec<_>>();
    let payloads = batch(2, 1601);
    let last = log
        .append_entries(2, 2, payloads.iter().map(Vec::as_slice))
        .unwrap();
    assert_eq!(last, 1601);
    assert_eq!(files_with_extension(dir.path(), "seg"), 2);
    // The batch stops at a payload above the limit; the ones before it stay appended.
    let mut tail = batch(1602, 1700);
    tail.push(vec![0u8; config.payload_bytes_max + 1]);
    tail.push(body(1702));
    match log.append_entries(2, 1602, tail.iter().map(Vec::as_slice)) {
        Err(StorageError::PayloadTooLarge { len, max }) => {
            assert_eq!((len, max), (2049, 2048));
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert_eq!(
        log.last(),
        Position {
            index: 1700,
            term: 2
        }
    );
    // The first segment becomes a spare; the next batch fills the tail and rolls into it.
    let first_kept = log.compact_before(1700).unwrap();
    assert!(first_kept > 1);
    assert_eq!(files_with_extension(dir.path(), "spare"), 1);
    let more = batch(1701, 3300);
    log.append_entries(3, 1701, more.iter().map(Vec::as_slice))
        .unwrap();
    assert_eq!(
        files_with_extension(dir.path(), "spare"),
        0,
        "the roll reused it"
    );
    let check = |log: &Log| {
        assert_eq!(log.first_index(), first_kept);
        for i in first_kept..=3300 {
            let e = log.read_entry(i).unwrap();
            let term = if i <= 1700 { 2 } else { 3 };
            assert_eq!((e.term, e.payload), (term, &body(i)[..]), "entry {i}");
        }
    };
    check(&log);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(
        log.last(),
        Position {
            index: 3300,
            term: 3
        }
    );
    check(&log);
}
