//! The 32-byte header at the start of every segment file. It records the segment's first
//! index and its preallocated capacity, so recovery can tell a truncated file or a
//! renamed file from a torn tail.

use std::mem::{offset_of, size_of};

const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"RSEG");
const SEGMENT_VERSION: u16 = 1;
/// Size of the segment header; records start right after it.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Flag: the file was recycled from a compacted segment, so bytes after the last record
/// may be stale records of its previous life (all with indexes below `first_index`).
pub(crate) const SEGMENT_FLAG_RECYCLED: u16 = 1;

/// Segment header layout (little-endian), pinned below.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub magic: u32,
    pub version: u16,
    pub flags: u16,
    pub crc: u32,
    pub reserved: u32,
    pub first_index: u64,
    pub capacity: u64,
}
const _: () = assert!(size_of::<SegmentHeader>() == SEGMENT_HEADER_BYTES);
const _: () = assert!(offset_of!(SegmentHeader, crc) == 8);
const _: () = assert!(offset_of!(SegmentHeader, first_index) == 16);
const _: () = assert!(offset_of!(SegmentHeader, capacity) == 24);

impl SegmentHeader {
    pub(crate) fn new(first_index: u64, capacity: u64, recycled: bool) -> Self {
        SegmentHeader {
            magic: SEGMENT_MAGIC,
            version: SEGMENT_VERSION,
            flags: if recycled { SEGMENT_FLAG_RECYCLED } else { 0 },
            crc: 0,
            reserved: 0,
            first_index,
            capacity,
        }
    }

    fn raw(&self, crc: u32) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&crc.to_le_bytes());
        b[12..16].copy_from_slice(&self.reserved.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_index.to_le_bytes());
        b[24..32].copy_from_slice(&self.capacity.to_le_bytes());
        b
    }

    pub(crate) fn encode(&self, out: &mut [u8]) {
        let crc = crc32c::crc32c(&self.raw(0));
        out[..SEGMENT_HEADER_BYTES].copy_from_slice(&self.raw(crc));
    }

    pub(crate) fn recycled(&self) -> bool {
        self.flags & SEGMENT_FLAG_RECYCLED != 0
    }

    /// Decodes and checks the header; the error says what is wrong.
    pub(crate) fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < SEGMENT_HEADER_BYTES {
            return Err(format!(
                "file of {} bytes is shorter than the segment header",
                b.len()
            ));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
        let h = SegmentHeader {
            magic: u32_at(0),
            version: u16::from_le_bytes(b[4..6].try_into().expect("2")),
            flags: u16::from_le_bytes(b[6..8].try_into().expect("2")),
            crc: u32_at(8),
            reserved: u32_at(12),
            first_index: u64_at(16),
            capacity: u64_at(24),
        };
        if h.magic != SEGMENT_MAGIC {
            return Err(format!("bad segment magic {:#010x}", h.magic));
        }
        let computed = crc32c::crc32c(&h.raw(0));
        if computed != h.crc {
            return Err(format!(
                "segment header checksum mismatch (stored {:#010x}, computed {computed:#010x})",
                h.crc
            ));
        }
        if h.version != SEGMENT_VERSION || h.flags & !SEGMENT_FLAG_RECYCLED != 0 || h.reserved != 0
        {
            return Err(format!(
                "unsupported segment version {} / flags {}",
                h.version, h.flags
            ));
        }
        Ok(h)
    }
}
