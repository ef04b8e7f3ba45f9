//! Opens a log whose one segment holds arbitrary bytes, the way recovery meets a damaged
//! disk. The segment header and every record the bytes lay out get correct checksums, so
//! the fuzzer gets past them and explores what recovery checks after: magic, version,
//! flags, lengths, index order, terms, padding, torn tails and what follows them. Must
//! never panic, hang or read out of bounds; a log that opens serves every entry it reports.
//!
//! Run: `cargo +nightly fuzz run log_open` from this directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::{Log, LogConfig, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SEGMENT_SUFFIX};

const SEGMENT_BYTES: usize = 8 << 10;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        payload_bytes_max: 4096,
        spare_segments_max: 0,
        // No syncs: every case would otherwise wait for the disk.
        synced: false,
    }
}

/// A valid segment header for a segment of first index 1 (layout: magic, version, flags,
/// crc, reserved, first index, capacity).
fn segment_header(out: &mut [u8]) {
    out[..SEGMENT_HEADER_BYTES].fill(0);
    out[0..4].copy_from_slice(b"RSEG");
    out[4..6].copy_from_slice(&1u16.to_le_bytes());
    out[16..24].copy_from_slice(&1u64.to_le_bytes());
    out[24..32].copy_from_slice(&(SEGMENT_BYTES as u64).to_le_bytes());
    let crc = crc32c::crc32c(&out[..SEGMENT_HEADER_BYTES]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Rewrites the checksum of every record the bytes lay out back to back (a record's
/// length comes from its own header), stopping at the first that does not fit.
fn fix_record_checksums(seg: &mut [u8]) {
    let mut at = SEGMENT_HEADER_BYTES;
    while at + RECORD_HEADER_BYTES <= seg.len() {
        let r = &mut seg[at..];
        let payload_len = u32::from_le_bytes(r[8..12].try_into().unwrap()) as usize;
        let len = RECORD_HEADER_BYTES + payload_len.div_ceil(8) * 8;
        if len > r.len() {
            return;
        }
        r[12..16].fill(0);
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&r[..RECORD_HEADER_BYTES]),
            &r[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload_len],
        );
        r[12..16].copy_from_slice(&crc.to_le_bytes());
        at += len;
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    // A fresh log writes its metadata (first index 1); then its segment is replaced.
    drop(Log::open(dir.path(), config()).unwrap());
    let mut seg = vec![0u8; SEGMENT_BYTES];
    let body = data.len().min(SEGMENT_BYTES - SEGMENT_HEADER_BYTES);
    seg[SEGMENT_HEADER_BYTES..SEGMENT_HEADER_BYTES + body].copy_from_slice(&data[..body]);
    segment_header(&mut seg);
    fix_record_checksums(&mut seg);
    let name = format!("{:020}{SEGMENT_SUFFIX}", 1);
    std::fs::write(dir.path().join(name), &seg).unwrap();
    if let Ok(log) = Log::open(dir.path(), config()) {
        for index in log.first_index()..=log.last_index() {
            let entry = log.read_entry(index).expect("an entry the log reports");
            assert_eq!(entry.index, index);
        }
    }
});
