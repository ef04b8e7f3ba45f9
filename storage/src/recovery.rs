//! Recovery scan of one segment's bytes: verifies every record and decides whether what
//! follows the last valid record is a torn tail (allowed only in the last segment, and
//! only if no valid record follows it) or corruption.

use crate::record::{check_record, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, RECORD_MAGIC};
use crate::segment_header::SEGMENT_HEADER_BYTES;

/// What a successful scan of one segment found.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    /// Offset of every valid record, in index order.
    pub offsets: Vec<u32>,
    /// End of the last valid record (where the next append goes).
    pub end: usize,
    /// (index, term) of the last valid record, if any.
    pub last: Option<(u64, u64)>,
    /// End of the last non-zero 8-byte word at or after `end`; `end` if all zero. Bytes
    /// in `[end, dirty_end)` are a torn tail to be zeroed.
    pub dirty_end: usize,
}

/// Where and why a segment is corrupt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ScanFault {
    pub offset: usize,
    pub index: u64,
    pub reason: String,
}

/// Scans the records of a segment whose whole mapping is `bytes` (segment header
/// included). `first_index` is the index the first record must carry, `prev_term` the
/// term of the entry before it. Appends term changes to `term_runs` as (start, term).
///
/// A `recycled` segment may hold stale records of its previous life after its last
/// record; those carry indexes below `first_index` and end the scan like zeros do.
pub(crate) fn scan_segment(
    bytes: &[u8],
    first_index: u64,
    prev_term: u64,
    is_last: bool,
    recycled: bool,
    term_runs: &mut Vec<(u64, u64)>,
) -> Result<ScanOutcome, ScanFault> {
    assert!(bytes.len() >= SEGMENT_HEADER_BYTES);
    assert!(first_index > 0);
    let mut offsets = Vec::with_capacity(bytes.len() / 1024);
    let mut off = SEGMENT_HEADER_BYTES;
    let mut expected = first_index;
    let mut last_term = prev_term;
    let mut last = None;
    let mut stop = None;
    while off + RECORD_HEADER_BYTES <= bytes.len() {
        match check_record(&bytes[off..]) {
            Ok(h) if recycled && h.index < first_index => {
                stop = Some(format!(
                    "stale record of index {} from before recycling",
                    h.index
                ));
                break;
            }
            Ok(h) => {
                if h.index != expected {
                    return Err(ScanFault {
                        offset: off,
                        index: expected,
                        reason: format!("record carries index {}, expected {expected}", h.index),
                    });
                }
                if h.term < last_term {
                    return Err(ScanFault {
                        offset: off,
                        index: expected,
                        reason: format!("term {} below previous term {last_term}", h.term),
                    });
                }
                if term_runs.last().map(|r| r.1) != Some(h.term) {
                    term_runs.push((h.index, h.term));
                }
                offsets.push(u32::try_from(off).expect("segment offsets fit in u32"));
                last = Some((h.index, h.term));
                last_term = h.term;
                expected += 1;
                off += h.record_len();
            }
            Err(fault) => {
                stop = Some(fault.into_error(off, expected).to_string());
                break;
            }
        }
    }
    let end = off;
    let (follower, dirty_end) = search_tail(bytes, end, first_index);
    if let Some(what) = stop {
        if let Some((at, index)) = follower {
            return Err(ScanFault {
                offset: end,
                index: expected,
                reason: format!("{what}; a valid record (index {index}) follows at offset {at}"),
            });
        }
    }
    if !is_last && !recycled && dirty_end > end {
        return Err(ScanFault {
            offset: end,
            index: expected,
            reason: "non-zero bytes after the last record of a sealed (non-last) segment".into(),
        });
    }
    Ok(ScanOutcome {
        offsets,
        end,
        last,
        dirty_end,
    })
}

/// Looks at every 8-byte aligned position from `from` on for a valid record of index
/// `first_index` or above (lower ones are stale records of a recycled segment), and for
/// the last non-zero word. Returns (first such record's (offset, index), dirty end).
fn search_tail(bytes: &[u8], from: usize, first_index: u64) -> (Option<(usize, u64)>, usize) {
    assert_eq!(from % RECORD_ALIGN_BYTES, 0);
    let mut dirty_end = from;
    let mut found = None;
    let tail = &bytes[from.min(bytes.len())..];
    for (i, word) in tail.chunks_exact(RECORD_ALIGN_BYTES).enumerate() {
        let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        if w == 0 {
            continue;
        }
        let at = from + i * RECORD_ALIGN_BYTES;
        dirty_end = at + RECORD_ALIGN_BYTES;
        if found.is_none() && (w as u32) == RECORD_MAGIC {
            match check_record(&bytes[at..]) {
                Ok(h) if h.index >= first_index => found = Some((at, h.index)),
                _ => {}
            }
        }
    }
    let rem = tail.len() % RECORD_ALIGN_BYTES;
    if rem != 0 && tail[tail.len() - rem..].iter().any(|&b| b != 0) {
        dirty_end = bytes.len();
    }
    (found, dirty_end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{encode_record, record_len};

    fn segment(first: u64, n: u64, cap: usize) -> Vec<u8> {
        let mut b = vec![0u8; cap];
        let mut off = SEGMENT_HEADER_BYTES;
        for i in 0..n {
            let p = vec![(first + i) as u8; 40];
            off += encode_record(&mut b[off..], 2, first + i, &p);
        }
        b
    }

    #[test]
    fn clean_segment_scans_fully() {
        let b = segment(5, 10, 4096);
        let mut runs = Vec::new();
        let s = scan_segment(&b, 5, 1, false, false, &mut runs).unwrap();
        assert_eq!(s.offsets.len(), 10);
        assert_eq!(s.last, Some((14, 2)));
        assert_eq!(s.end, SEGMENT_HEADER_BYTES + 10 * record_len(40));
        assert_eq!(s.dirty_end, s.end);
        assert_eq!(runs, vec![(5, 2)]);
    }

    #[test]
    fn torn_tail_only_in_last_segment() {
        let mut b = segment(1, 3, 4096);
        let end = SEGMENT_HEADER_BYTES + 3 * record_len(40);
        b[end..end + 20].fill(0xab); // half-written header
        let s = scan_segment(&b, 1, 0, true, false, &mut Vec::new()).unwrap();
        assert_eq!(s.end, end);
        assert_eq!(s.dirty_end, end + 24);
        let f = scan_segment(&b, 1, 0, false, false, &mut Vec::new()).unwrap_err();
        assert_eq!((f.offset, f.index), (end, 4));
    }

    #[test]
    fn damaged_record_followed_by_valid_one_is_corruption() {
        let mut b = segment(1, 4, 4096);
        let second = SEGMENT_HEADER_BYTES + record_len(40);
        b[second + 40] ^= 0x10;
        let f = scan_segment(&b, 1, 0, true, false, &mut Vec::new()).unwrap_err();
        assert_eq!((f.offset, f.index), (second, 2));
        assert!(f.reason.contains("checksum"), "{}", f.reason);
        // A zeroed record with valid ones after it is corruption too, not a torn tail.
        let mut z = segment(1, 4, 4096);
        z[second..second + record_len(40)].fill(0);
        let f = scan_segment(&z, 1, 0, true, false, &mut Vec::new()).unwrap_err();
        assert_eq!(f.index, 2);
    }

    #[test]
    fn stale_records_of_a_recycled_segment_end_the_scan() {
        // Previous life: indexes 1..=20. Recycled for index 100 with 3 new records,
        // shorter than the old ones, so stale records follow the new ones.
        let mut b = segment(1, 20, 8192);
        let mut off = SEGMENT_HEADER_BYTES;
        for i in 100..103 {
            off += encode_record(&mut b[off..], 3, i, b"new");
        }
        let s = scan_segment(&b, 100, 2, false, true, &mut Vec::new()).unwrap();
        assert_eq!((s.offsets.len(), s.last, s.end), (3, Some((102, 3)), off));
        // Not recycled: the same bytes are corruption (non-zero data after the end).
        assert!(scan_segment(&b, 100, 2, false, false, &mut Vec::new()).is_err());
        // A current record after a damaged one is still found among stale ones.
        let second = SEGMENT_HEADER_BYTES + record_len(3);
        b[second + 33] ^= 1;
        let f = scan_segment(&b, 100, 2, true, true, &mut Vec::new()).unwrap_err();
        assert_eq!((f.offset, f.index), (second, 101));
    }
}
