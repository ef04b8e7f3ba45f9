//! Property test: one damaged byte, or one cut file, anywhere in a synced log directory.
//!
//! Every entry of the log below was synced, so every one counts as acknowledged. Opening
//! the damaged copy must then end one of two ways:
//!
//! - it opens, and every entry it holds equals the one written, from the first index on.
//!   It holds all of them, except when the damage sits in the last segment: there,
//!   recovery may cut a torn tail, exactly at the damaged record and only when no whole
//!   record follows it. The log opened takes an append and reopens with it;
//! - or it is refused with an error that names the damaged file.
//!
//! Never a panic, never an entry that differs from the one written, never a silent loss of
//! entries before the damage or in an earlier segment.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use storage::{record_len, Log, LogConfig, SEGMENT_HEADER_BYTES, SEGMENT_SUFFIX};

const ENTRIES: u64 = 240;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 10,
        payload_bytes_max: 1024,
        ..LogConfig::default()
    }
}

/// Lengths vary (0 to 299 bytes), so records have different sizes and padding.
fn payload(index: u64) -> Vec<u8> {
    let len = (index * 37 % 300) as usize;
    (0..len).map(|j| (index * 13 + j as u64) as u8).collect()
}

fn term(index: u64) -> u64 {
    1 + index / 40
}

/// A segment file of the original log and the records it holds.
struct Segment {
    name: String,
    first: u64,
    /// (byte offset, index) of each record, in order.
    records: Vec<(u64, u64)>,
    /// Byte offset just past the last record.
    end: u64,
}

/// The original, undamaged log directory: each file's name and bytes, and the layout of
/// its segments.
struct Original {
    files: Vec<(String, Vec<u8>)>,
    segments: Vec<Segment>,
}

fn original() -> &'static Original {
    static ORIGINAL: OnceLock<Original> = OnceLock::new();
    ORIGINAL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config()).unwrap();
        for i in 1..=ENTRIES {
            log.append_entry(term(i), i, &payload(i)).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap().to_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect();
        files.sort();
        let mut firsts: Vec<(u64, String)> = files
            .iter()
            .filter_map(|(name, _)| {
                let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
                Some((stem.parse().unwrap(), name.clone()))
            })
            .collect();
        firsts.sort();
        assert!(firsts.len() >= 4, "the test needs several segments");
        let mut segments = Vec::new();
        for (k, (first, name)) in firsts.iter().enumerate() {
            let next = firsts.get(k + 1).map_or(ENTRIES + 1, |(f, _)| *f);
            let mut at = SEGMENT_HEADER_BYTES as u64;
            let mut records = Vec::new();
            for index in *first..next {
                records.push((at, index));
                at += record_len(payload(index).len()) as u64;
            }
            segments.push(Segment {
                name: name.clone(),
                first: *first,
                records,
                end: at,
            });
        }
        Original { files, segments }
    })
}

#[derive(Debug, Clone)]
enum Damage {
    /// XOR one byte of file `file` (an index into the sorted file list, modulo its length)
    /// at `at` (modulo the file's length) with `mask`.
    Flip { file: usize, at: u64, mask: u8 },
    /// Cut file `file` to `len` bytes (modulo its length).
    Cut { file: usize, len: u64 },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<usize>(), any::<u64>(), 1u8..=255)
            .prop_map(|(file, at, mask)| Damage::Flip { file, at, mask }),
        1 => (any::<usize>(), any::<u64>()).prop_map(|(file, len)| Damage::Cut { file, len }),
    ]
}

/// Copies the original into `dir`, applies `damage`, and returns the damaged file's name
/// and the byte offset from which its content is no longer the original's.
fn damage_copy(dir: &Path, damage: &Damage) -> (String, u64) {
    let orig = original();
    let file = match damage {
        Damage::Flip { file, .. } | Damage::Cut { file, .. } => file % orig.files.len(),
    };
    let mut from = 0;
    for (k, (name, bytes)) in orig.files.iter().enumerate() {
        let mut bytes = bytes.clone();
        if k == file {
            let len = bytes.len() as u64;
            match *damage {
                Damage::Flip { at, mask, .. } if len > 0 => {
                    from = at % len;
                    bytes[from as usize] ^= mask;
                }
                Damage::Cut { len: cut, .. } if len > 0 => {
                    from = cut % len;
                    bytes.truncate(from as usize);
                }
                _ => from = 0,
            }
        }
        std::fs::write(dir.join(name), &bytes).unwrap();
    }
    (orig.files[file].0.clone(), from)
}

/// The first index whose record is not intact after damage from byte `from` of `name`, and
/// whether `name` is the last segment (`None` when `name` is not a segment).
fn first_damaged(name: &str, from: u64) -> Option<(u64, bool)> {
    let segs = &original().segments;
    let k = segs.iter().position(|s| s.name == name)?;
    let seg = &segs[k];
    let last = k + 1 == segs.len();
    if from < SEGMENT_HEADER_BYTES as u64 {
        return Some((seg.first, last));
    }
    let index = seg
        .records
        .iter()
        .rev()
        .find(|&&(at, _)| at <= from)
        .map(|&(_, index)| index)
        .filter(|_| from < seg.end)
        // Past the last record: the slack after it, no record of this segment damaged.
        .unwrap_or(seg.first + seg.records.len() as u64);
    Some((index, last))
}

fn check_entries(log: &Log, last: u64) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.first_index(), 1);
    for i in 1..=last {
        let e = log
            .read_entry(i)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(e.term, term(i), "term of entry {}", i);
        prop_assert!(e.payload == payload(i).as_slice(), "payload of entry {}", i);
    }
    Ok(())
}

fn run(damage: &Damage) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (name, from) = damage_copy(dir.path(), damage);
    let cut = matches!(damage, Damage::Cut { .. });
    let opened = Log::open(dir.path(), config());
    let mut log = match opened {
        Err(e) => {
            let text = e.to_string();
            prop_assert!(
                text.contains(&name),
                "damage to {} at byte {}: the error does not name the file: {}",
                name,
                from,
                text
            );
            return Ok(());
        }
        Ok(log) => log,
    };
    let last = log.last_index();
    prop_assert!(last <= ENTRIES);
    if last < ENTRIES {
        // Only a torn tail may go: damage in the last segment, cut exactly at the damaged
        // record, and no whole record after it (so the damaged record was the last one,
        // unless the file itself was cut there).
        let allowed = match first_damaged(&name, from) {
            Some((index, true)) => last + 1 == index && (cut || index == ENTRIES),
            _ => false,
        };
        prop_assert!(
            allowed,
            "damage to {} at byte {} ({:?}) opened with entries 1..={} of 1..={}",
            name,
            from,
            damage,
            last,
            ENTRIES
        );
    }
    check_entries(&log, last)?;
    // The recovered log is usable: it takes an append and reopens with it.
    let next = last + 1;
    log.append_entry(term(next).max(log.last_term()), next, &payload(next))
        .map_err(|e| TestCaseError::fail(format!("append after recovery: {e}")))?;
    log.sync()
        .map_err(|e| TestCaseError::fail(format!("sync after recovery: {e}")))?;
    drop(log);
    let log = Log::open(dir.path(), config())
        .map_err(|e| TestCaseError::fail(format!("reopen after recovery: {e}")))?;
    prop_assert_eq!(log.last_index(), next);
    check_entries(&log, last)?;
    prop_assert!(log.read_entry(next).unwrap().payload == payload(next).as_slice());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn one_damaged_byte_or_cut_file_opens_intact_or_is_refused_naming_the_file(d in damage()) {
        run(&d)?;
    }
}

/// Every byte of one middle segment and of the last one, each flipped in turn: the sweep
/// the random cases sample, done exhaustively where records are.
#[test]
fn every_byte_of_a_middle_and_the_last_segment() {
    let orig = original();
    let segs = &orig.segments;
    for seg in [&segs[segs.len() / 2], segs.last().unwrap()] {
        let file = orig
            .files
            .iter()
            .position(|(name, _)| *name == seg.name)
            .unwrap();
        // The header, every record, and a little of the slack after the last one.
        for at in 0..seg.end + 64 {
            let d = Damage::Flip {
                file,
                at,
                mask: 0x10,
            };
            if let Err(e) = run(&d) {
                panic!("{d:?}: {e}");
            }
        }
    }
}
