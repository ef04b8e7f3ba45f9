//! Damaged logs: what recovery truncates (a torn tail) and what it refuses to open
//! (everything that could hide acknowledged entries), with errors naming file, offset
//! and index.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use storage::{record_len, Log, LogConfig, StorageError, SEGMENT_HEADER_BYTES};

const PAYLOAD: usize = 100;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 10,
        payload_bytes_max: 1024,
        ..LogConfig::default()
    }
}

fn payload(index: u64) -> Vec<u8> {
    vec![index as u8; PAYLOAD]
}

/// Builds a synced log of `n` entries (several segments) and returns the segment paths.
fn build(dir: &Path, n: u64) -> Vec<PathBuf> {
    let mut log = Log::open(dir, config()).unwrap();
    for i in 1..=n {
        log.append_entry(1 + i / 50, i, &payload(i)).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    segments(dir)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Byte offset of the `k`-th record (0-based) in a segment of fixed-size records.
fn record_offset(k: u64) -> u64 {
    (SEGMENT_HEADER_BYTES + k as usize * record_len(PAYLOAD)) as u64
}

fn flip(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x04], offset).unwrap();
}

fn expect_corrupt(dir: &Path) -> (PathBuf, u64, u64, String) {
    match Log::open(dir, config()) {
        Err(StorageError::Corrupt {
            path,
            offset,
            index,
            reason,
        }) => {
            let err = StorageError::Corrupt {
                path: path.clone(),
                offset,
                index,
                reason: reason.clone(),
            };
            let text = err.to_string();
            assert!(text.contains(path.to_str().unwrap()) && text.contains(&offset.to_string()));
            (path, offset, index, reason)
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(log) => panic!(
            "expected Corrupt, log opened with last index {}",
            log.last_index()
        ),
    }
}

fn first_index_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

#[test]
fn bit_flip_in_an_earlier_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let segs = build(dir.path(), 400);
    assert!(segs.len() >= 3, "test needs several segments");
    let victim = &segs[1];
    let first = first_index_of(victim);
    flip(victim, record_offset(3) + 40); // payload byte of the 4th record
    let (path, offset, index, reason) = expect_corrupt(dir.path());
    assert_eq!(&path, victim);
    assert_eq!(offset, record_offset(3));
    assert_eq!(index, first + 3);
    assert!(reason.contains("checksum"), "{reason}");
}

#[test]
fn bit_flip_in_the_last_segment_with_valid_records_after_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let segs = build(dir.path(), 400);
    let last = segs.last().unwrap();
    let first = first_index_of(last);
    flip(last, record_offset(1) + 26); // header byte (index field) of the 2nd record
    let (path, offset, index, reason) = expect_corrupt(dir.path());
    assert_eq!(&path, last);
    assert_eq!((offset, index), (record_offset(1), first + 1));
    assert!(reason.contains("follows"), "{reason}");
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let segs = build(dir.path(), 400);
    let last = segs.last().unwrap();
    let first = first_index_of(last);
    let n_in_last = 400 - first + 1;
    // Tear the last record: keep its header, damage its payload (as a crash mid-write).
    flip(last, record_offset(n_in_last - 1) + 60);
    // And leave half a header of a record that was never completed after it.
    let f = OpenOptions::new().write(true).open(last).unwrap();
    f.write_all_at(&[0xee; 20], record_offset(n_in_last))
        .unwrap();
    drop(f);
    let mut log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.last_index(), 399);
    assert_eq!(log.durable().index, 399);
    log.append_entry(log.last_term(), 400, b"new").unwrap();
    log.sync().unwrap();
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.last_index(), 400);
    assert_eq!(log.read_entry(400).unwrap().payload, b"new");
    assert_eq!(log.read_entry(399).unwrap().payload, &payload(399)[..]);
}

#[test]
fn missing_middle_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let segs = build(dir.path(), 400);
    assert!(segs.len() >= 3);
    let gone_first = first_index_of(&segs[1]);
    std::fs::remove_file(&segs[1]).unwrap();
    let (path, offset, index, reason) = expect_corrupt(dir.path());
    assert_eq!(path, segs[2]);
    assert_eq!((offset, index), (0, gone_first));
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn truncated_segment_file_refuses_to_open() {
    for which in [0usize, 1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let segs = build(dir.path(), 400);
        let victim = if which == 2 {
            segs.last().unwrap()
        } else {
            &segs[which]
        };
        let f = OpenOptions::new().write(true).open(victim).unwrap();
        f.set_len(record_offset(2) + 10).unwrap();
        drop(f);
        let (path, offset, _index, reason) = expect_corrupt(dir.path());
        assert_eq!(&path, victim, "segment {which}");
        assert_eq!(offset, record_offset(2) + 10);
        assert!(reason.contains("truncated"), "{reason}");
    }
}

#[test]
fn zeroed_record_before_valid_ones_is_not_mistaken_for_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let segs = build(dir.path(), 400);
    let last = segs.last().unwrap();
    let first = first_index_of(last);
    let f = OpenOptions::new().write(true).open(last).unwrap();
    f.write_all_at(&vec![0u8; record_len(PAYLOAD)], record_offset(0))
        .unwrap();
    drop(f);
    let (path, offset, index, _) = expect_corrupt(dir.path());
    assert_eq!((&path, offset, index), (last, record_offset(0), first));
}

#[test]
fn missing_meta_with_segments_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 10);
    std::fs::remove_file(dir.path().join("log.meta")).unwrap();
    let (path, ..) = expect_corrupt(dir.path());
    assert!(path.ends_with("log.meta"));
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let reader = log.reader();
    drop(log);
    // A live reader still holds the mappings, so the directory stays locked.
    assert!(matches!(
        Log::open(dir.path(), config()),
        Err(StorageError::Locked { .. })
    ));
    drop(reader);
    Log::open(dir.path(), config()).unwrap();
}
