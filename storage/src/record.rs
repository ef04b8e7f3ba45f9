//! The on-disk (and on-wire) log record format: a fixed 32-byte header followed by the
//! payload, zero-padded to a multiple of 8 bytes. See the crate docs for the layout.
//!
//! Records are encoded once, by the leader, straight into the mapped segment; the same
//! bytes travel in AppendEntries and are appended verbatim by followers after
//! [`RecordRun::validate`] has checked them in place.

use std::mem::{offset_of, size_of};

use crate::error::RecordError;

/// Identifies a log record: `b"RLOG"` read as a little-endian u32.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"RLOG");
/// Version of the record format this crate writes and accepts.
pub const RECORD_VERSION: u16 = 1;
/// Size of the fixed record header in bytes.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Records (and therefore payloads) are padded to this alignment.
pub const RECORD_ALIGN_BYTES: usize = 8;
/// Largest payload the format can describe. Logs impose a smaller, configured limit.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = u32::MAX as usize - RECORD_ALIGN_BYTES;

/// The record header as laid out on disk (all fields little-endian).
///
/// This struct documents and pins the layout; encoding and decoding go through explicit
/// little-endian byte accessors so no unaligned or endian-dependent reads happen.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// [`RECORD_MAGIC`].
    pub magic: u32,
    /// [`RECORD_VERSION`].
    pub version: u16,
    /// Reserved, must be zero.
    pub flags: u16,
    /// Payload length in bytes, excluding padding.
    pub payload_len: u32,
    /// CRC32C over the header with this field zeroed, followed by the unpadded payload.
    pub crc: u32,
    /// Raft term of the entry.
    pub term: u64,
    /// Raft index of the entry.
    pub index: u64,
}

const _: () = assert!(size_of::<RecordHeader>() == RECORD_HEADER_BYTES);
const _: () = assert!(offset_of!(RecordHeader, magic) == 0);
const _: () = assert!(offset_of!(RecordHeader, version) == 4);
const _: () = assert!(offset_of!(RecordHeader, flags) == 6);
const _: () = assert!(offset_of!(RecordHeader, payload_len) == 8);
const _: () = assert!(offset_of!(RecordHeader, crc) == 12);
const _: () = assert!(offset_of!(RecordHeader, term) == 16);
const _: () = assert!(offset_of!(RecordHeader, index) == 24);
const _: () = assert!(RECORD_HEADER_BYTES % RECORD_ALIGN_BYTES == 0);

const CRC_OFFSET: usize = offset_of!(RecordHeader, crc);

impl RecordHeader {
    /// Decodes the header at the start of `bytes` without validating it.
    ///
    /// Panics if `bytes` is shorter than [`RECORD_HEADER_BYTES`] (callers check first).
    #[inline]
    pub fn decode(bytes: &[u8]) -> RecordHeader {
        assert!(bytes.len() >= RECORD_HEADER_BYTES);
        RecordHeader {
            magic: u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")),
            version: u16::from_le_bytes(bytes[4..6].try_into().expect("2 bytes")),
            flags: u16::from_le_bytes(bytes[6..8].try_into().expect("2 bytes")),
            payload_len: u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")),
            crc: u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")),
            term: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
            index: u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes")),
        }
    }

    /// Encodes the header into the first [`RECORD_HEADER_BYTES`] of `out`.
    #[inline]
    pub fn encode(&self, out: &mut [u8]) {
        assert!(out.len() >= RECORD_HEADER_BYTES);
        out[0..4].copy_from_slice(&self.magic.to_le_bytes());
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        out[6..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..12].copy_from_slice(&self.payload_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.crc.to_le_bytes());
        out[16..24].copy_from_slice(&self.term.to_le_bytes());
        out[24..32].copy_from_slice(&self.index.to_le_bytes());
    }

    /// Total bytes the record occupies: header, payload and padding.
    #[inline]
    pub fn record_len(&self) -> usize {
        record_len(self.payload_len as usize)
    }
}

/// Bytes a record with a `payload_len`-byte payload occupies, padding included.
#[inline]
pub const fn record_len(payload_len: usize) -> usize {
    RECORD_HEADER_BYTES + padded_len(payload_len)
}

/// `len` rounded up to [`RECORD_ALIGN_BYTES`].
#[inline]
pub const fn padded_len(len: usize) -> usize {
    (len + RECORD_ALIGN_BYTES - 1) & !(RECORD_ALIGN_BYTES - 1)
}

/// CRC32C of a record whose header and payload are contiguous in `record`.
#[inline]
fn record_crc_contiguous(record: &[u8], payload_len: usize) -> u32 {
    assert!(record.len() >= RECORD_HEADER_BYTES + payload_len);
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header.copy_from_slice(&record[..RECORD_HEADER_BYTES]);
    header[CRC_OFFSET..CRC_OFFSET + 4].fill(0);
    let crc = crc32c::crc32c(&header);
    crc32c::crc32c_append(
        crc,
        &record[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload_len],
    )
}

/// Encodes one record into the start of `buf` and returns the bytes written
/// (`record_len(payload.len())`). Padding bytes are written as zeros.
///
/// Panics if `buf` is too small, `term` or `index` is zero, or the payload is larger
/// than [`RECORD_PAYLOAD_BYTES_MAX`]: these are caller bugs, not input errors.
pub fn encode_record(buf: &mut [u8], term: u64, index: u64, payload: &[u8]) -> usize {
    let len = record_len(payload.len());
    assert!(
        buf.len() >= len,
        "encode_record: buffer {} < record {}",
        buf.len(),
        len
    );
    encode_record_with(&mut buf[..len], term, index, payload.len(), |out| {
        out.copy_from_slice(payload)
    });
    len
}

/// Encodes one record into `buf` (exactly `record_len(payload_len)` bytes), letting
/// `fill` write the payload in place, so a payload can be produced straight into its
/// final location (for example a mapped log segment).
///
/// The header is first written with a zero CRC and the real CRC is stored last, so a
/// record interrupted half-way by a crash fails its checksum (and is a torn tail).
pub fn encode_record_with(
    buf: &mut [u8],
    term: u64,
    index: u64,
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) {
    assert!(term > 0, "record term must be >= 1");
    assert!(index > 0, "record index must be >= 1");
    assert!(payload_len <= RECORD_PAYLOAD_BYTES_MAX);
    assert_eq!(buf.len(), record_len(payload_len));
    let h = RecordHeader {
        magic: RECORD_MAGIC,
        version: RECORD_VERSION,
        flags: 0,
        payload_len: payload_len as u32,
        crc: 0,
        term,
        index,
    };
    h.encode(buf);
    let end = RECORD_HEADER_BYTES + payload_len;
    fill(&mut buf[RECORD_HEADER_BYTES..end]);
    buf[end..].fill(0);
    // One pass over the contiguous header (crc field zero) and payload.
    let crc = crc32c::crc32c(&buf[..end]);
    buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// One entry read in place: no bytes are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Raft index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// The payload, without padding.
    pub payload: &'a [u8],
}

/// Why checking one record in isolation failed (used by validation and recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordFault {
    Truncated { needed: usize, available: usize },
    BadMagic { found: u32 },
    BadVersion { found: u16 },
    BadFlags { found: u16 },
    ZeroTermOrIndex,
    Checksum { stored: u32, computed: u32 },
    NonZeroPadding,
}

/// Checks the record at the start of `bytes` (magic, version, flags, length, checksum,
/// padding) and returns its header. Does not check index/term continuity.
#[inline]
pub(crate) fn check_record(bytes: &[u8]) -> Result<RecordHeader, RecordFault> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(RecordFault::Truncated {
            needed: RECORD_HEADER_BYTES,
            available: bytes.len(),
        });
    }
    let h = RecordHeader::decode(bytes);
    if h.magic != RECORD_MAGIC {
        return Err(RecordFault::BadMagic { found: h.magic });
    }
    if h.version != RECORD_VERSION {
        return Err(RecordFault::BadVersion { found: h.version });
    }
    if h.flags != 0 {
        return Err(RecordFault::BadFlags { found: h.flags });
    }
    if h.term == 0 || h.index == 0 {
        return Err(RecordFault::ZeroTermOrIndex);
    }
    let payload_len = h.payload_len as usize;
    if payload_len > RECORD_PAYLOAD_BYTES_MAX || bytes.len() < h.record_len() {
        return Err(RecordFault::Truncated {
            needed: h.record_len(),
            available: bytes.len(),
        });
    }
    let computed = record_crc_contiguous(bytes, payload_len);
    if computed != h.crc {
        return Err(RecordFault::Checksum {
            stored: h.crc,
            computed,
        });
    }
    let padding = &bytes[RECORD_HEADER_BYTES + payload_len..h.record_len()];
    if padding.iter().any(|&b| b != 0) {
        return Err(RecordFault::NonZeroPadding);
    }
    Ok(h)
}

impl RecordFault {
    pub(crate) fn into_error(self, offset: usize, index: u64) -> RecordError {
        match self {
            RecordFault::Truncated { needed, available } => RecordError::Truncated {
                offset,
                index,
                needed,
                available,
            },
            RecordFault::BadMagic { found } => RecordError::BadMagic {
                offset,
                index,
                found,
            },
            RecordFault::BadVersion { found } => RecordError::BadVersion {
                offset,
                index,
                found,
            },
            RecordFault::BadFlags { found } => RecordError::BadFlags {
                offset,
                index,
                found,
            },
            RecordFault::ZeroTermOrIndex => RecordError::ZeroTermOrIndex { offset, index },
            RecordFault::Checksum { stored, computed } => RecordError::Checksum {
                offset,
                index,
                stored,
                computed,
            },
            RecordFault::NonZeroPadding => RecordError::NonZeroPadding { offset, index },
        }
    }
}

/// A validated run of contiguous records in a byte slice, borrowed in place.
///
/// Invariants (checked by [`RecordRun::validate`]): every record has a good header,
/// checksum and zero padding; indexes increase by exactly one; terms never decrease;
/// the records exactly cover the slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRun<'a> {
    bytes: &'a [u8],
    first_index: u64,
    first_term: u64,
    last_index: u64,
    last_term: u64,
}

impl<'a> RecordRun<'a> {
    /// Validates `bytes` as a run of whole records (possibly empty) and returns a view
    /// over it. Errors name the byte offset within `bytes` and the index expected there.
    pub fn validate(bytes: &'a [u8]) -> Result<RecordRun<'a>, RecordError> {
        let mut offset = 0usize;
        let mut first: Option<(u64, u64)> = None;
        let mut last: (u64, u64) = (0, 0);
        while offset < bytes.len() {
            let expected = if first.is_some() { last.0 + 1 } else { 0 };
            let h = check_record(&bytes[offset..]).map_err(|f| f.into_error(offset, expected))?;
            if first.is_some() {
                if h.index != expected {
                    return Err(RecordError::IndexGap {
                        offset,
                        expected,
                        found: h.index,
                    });
                }
                if h.term < last.1 {
                    return Err(RecordError::TermRegression {
                        offset,
                        index: h.index,
                        prev_term: last.1,
                        term: h.term,
                    });
                }
            } else {
                first = Some((h.index, h.term));
            }
            last = (h.index, h.term);
            offset += h.record_len();
        }
        assert_eq!(offset, bytes.len());
        let (first_index, first_term) = first.unwrap_or((0, 0));
        Ok(RecordRun {
            bytes,
            first_index,
            first_term,
            last_index: last.0,
            last_term: last.1,
        })
    }

    /// Builds a run over bytes this crate wrote and already validated (the log's own
    /// mapping). Checks only the cheap invariants.
    pub(crate) fn trusted(bytes: &'a [u8], first: (u64, u64), last: (u64, u64)) -> Self {
        assert!(!bytes.is_empty());
        assert!(first.0 <= last.0);
        assert!(first.1 <= last.1);
        assert_eq!(bytes.len() % RECORD_ALIGN_BYTES, 0);
        RecordRun {
            bytes,
            first_index: first.0,
            first_term: first.1,
            last_index: last.0,
            last_term: last.1,
        }
    }

    /// The run's bytes: whole records, ready to be sent or appended verbatim.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// True if the run holds no records.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Number of records in the run.
    pub fn len(&self) -> u64 {
        if self.is_empty() {
            0
        } else {
            self.last_index - self.first_index + 1
        }
    }

    /// (index, term) of the first record, `None` if empty.
    pub fn first(&self) -> Option<(u64, u64)> {
        (!self.is_empty()).then_some((self.first_index, self.first_term))
    }

    /// (index, term) of the last record, `None` if empty.
    pub fn last(&self) -> Option<(u64, u64)> {
        (!self.is_empty()).then_some((self.last_index, self.last_term))
    }

    /// Iterates the records in place.
    pub fn iter(&self) -> RecordIter<'a> {
        RecordIter { rest: self.bytes }
    }
}

impl<'a> IntoIterator for &RecordRun<'a> {
    type Item = Entry<'a>;
    type IntoIter = RecordIter<'a>;
    fn into_iter(self) -> RecordIter<'a> {
        self.iter()
    }
}

/// Iterator over the entries of a [`RecordRun`], borrowing the payloads in place.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Entry<'a>;

    #[inline]
    fn next(&mut self) -> Option<Entry<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let h = RecordHeader::decode(self.rest);
        let len = h.record_len();
        assert!(
            len <= self.rest.len(),
            "validated run shorter than its record"
        );
        let payload = &self.rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + h.payload_len as usize];
        self.rest = &self.rest[len..];
        Some(Entry {
            index: h.index,
            term: h.term,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_bytes(first: u64, terms: &[u64]) -> Vec<u8> {
        let mut v = Vec::new();
        for (i, &t) in terms.iter().enumerate() {
            let payload = vec![i as u8; i * 3];
            let mut buf = vec![0u8; record_len(payload.len())];
            encode_record(&mut buf, t, first + i as u64, &payload);
            v.extend_from_slice(&buf);
        }
        v
    }

    #[test]
    fn encode_then_validate_round_trips() {
        let bytes = run_bytes(7, &[1, 1, 2, 5]);
        let run = RecordRun::validate(&bytes).unwrap();
        assert_eq!(run.first(), Some((7, 1)));
        assert_eq!(run.last(), Some((10, 5)));
        assert_eq!(run.len(), 4);
        let got: Vec<_> = run
            .iter()
            .map(|e| (e.index, e.term, e.payload.len()))
            .collect();
        assert_eq!(got, vec![(7, 1, 0), (8, 1, 3), (9, 2, 6), (10, 5, 9)]);
        for e in run.iter() {
            assert!(e.payload.iter().all(|&b| b == (e.index - 7) as u8));
        }
    }

    #[test]
    fn empty_run_is_valid_and_empty() {
        let run = RecordRun::validate(&[]).unwrap();
        assert!(run.is_empty());
        assert_eq!(run.first(), None);
        assert_eq!(run.iter().count(), 0);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = run_bytes(1, &[3, 3]);
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                RecordRun::validate(&b).is_err(),
                "flip of bit {bit} undetected"
            );
        }
    }

    #[test]
    fn gaps_regressions_and_truncation_are_rejected() {
        let mut a = run_bytes(1, &[2]);
        a.extend(run_bytes(3, &[2]));
        assert!(matches!(
            RecordRun::validate(&a),
            Err(RecordError::IndexGap {
                expected: 2,
                found: 3,
                ..
            })
        ));
        let mut b = run_bytes(1, &[2]);
        b.extend(run_bytes(2, &[1]));
        assert!(matches!(
            RecordRun::validate(&b),
            Err(RecordError::TermRegression { index: 2, .. })
        ));
        let c = run_bytes(1, &[1, 1, 1]);
        let err = RecordRun::validate(&c[..c.len() - 8]).unwrap_err();
        assert!(
            matches!(err, RecordError::Truncated { index: 3, .. }),
            "{err}"
        );
        assert_eq!(err.offset(), record_len(0) + record_len(3));
    }

    #[test]
    fn non_zero_padding_is_rejected_even_with_good_crc() {
        let mut b = run_bytes(1, &[1, 1]); // second record: 3-byte payload, 5 padding bytes
        let pad_at = record_len(0) + RECORD_HEADER_BYTES + 3;
        b[pad_at] = 1; // the CRC does not cover padding, so only the padding check sees it
        assert!(matches!(
            RecordRun::validate(&b),
            Err(RecordError::NonZeroPadding { index: 2, .. })
        ));
    }
}
