//! Typed errors. Expected conditions (bad input, IO failure, corrupt files) are errors;
//! broken invariants inside this crate are panics.

use std::io;
use std::path::PathBuf;

/// A run of records failed validation. `offset` is the byte offset within the slice
/// given to [`crate::RecordRun::validate`]; `index` is the index expected at that offset
/// (0 for the first record of a run, whose index is not known in advance).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The slice ends inside a record.
    #[error("record at offset {offset} (index {index}) truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// Byte offset of the record.
        offset: usize,
        /// Index expected at the offset.
        index: u64,
        /// Bytes the record needs.
        needed: usize,
        /// Bytes left in the slice.
        available: usize,
    },
    /// The magic number is wrong.
    #[error("record at offset {offset} (index {index}): bad magic {found:#010x}")]
    BadMagic {
        /// Byte offset of the record.
        offset: usize,
        /// Index expected at the offset.
        index: u64,
        /// Magic found.
        found: u32,
    },
    /// Unknown format version.
    #[error("record at offset {offset} (index {index}): unsupported version {found}")]
    BadVersion {
        /// Byte offset of the record.
        offset: usize,
        /// Index expected at the offset.
        index: u64,
        /// Version found.
        found: u16,
    },
    /// Reserved flags are set.
    #[error("record at offset {offset} (index {index}): reserved flags {found:#06x} set")]
    BadFlags {
        /// Byte offset of the record.
        offset: usize,
        /// Index expected at the offset.
        index: u64,
        /// Flags found.
        found: u16,
    },
    /// Term or index is zero.
    #[error("record at offset {offset} (index {index}): zero term or index")]
    ZeroTermOrIndex {
        /// Byte offset of the record.
        offset: usize,
        /// Index expected at the offset.
        index: u64,
    },
    /// The checksum does not match.
    #[error("record at offset {offset} (index {index}): checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Byte offset of the record.
        offset: usize,
        /// Index expected at the offset.
        index: u64,
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// Padding bytes after the payload are not zero.
    #[error("record at offset {offset} (index {index}): non-zero padding")]
    NonZeroPadding {
        /// Byte offset of the record.
        offset: usize,
        /// Index expected at the offset.
        index: u64,
    },
    /// Indexes are not contiguous.
    #[error("record at offset {offset}: index {found}, expected {expected}")]
    IndexGap {
        /// Byte offset of the record.
        offset: usize,
        /// Index expected.
        expected: u64,
        /// Index found.
        found: u64,
    },
    /// A record's term is lower than its predecessor's.
    #[error(
        "record at offset {offset} (index {index}): term {term} below previous term {prev_term}"
    )]
    TermRegression {
        /// Byte offset of the record.
        offset: usize,
        /// Index of the record.
        index: u64,
        /// Term of the previous record.
        prev_term: u64,
        /// Term of this record.
        term: u64,
    },
}

impl RecordError {
    /// Byte offset of the offending record within the validated slice.
    pub fn offset(&self) -> usize {
        match *self {
            RecordError::Truncated { offset, .. }
            | RecordError::BadMagic { offset, .. }
            | RecordError::BadVersion { offset, .. }
            | RecordError::BadFlags { offset, .. }
            | RecordError::ZeroTermOrIndex { offset, .. }
            | RecordError::Checksum { offset, .. }
            | RecordError::NonZeroPadding { offset, .. }
            | RecordError::IndexGap { offset, .. }
            | RecordError::TermRegression { offset, .. } => offset,
        }
    }
}

/// Errors of the log and the hard-state file.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An IO operation failed. When this comes from a mutating operation the log is now
    /// in the failed state (see [`StorageError::Failed`]).
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (`"fallocate"`, `"fdatasync"`, ...).
        op: &'static str,
        /// File or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file holds data that cannot be the result of a crash of this code: refuse to
    /// guess. `offset` is the byte offset in `path`, `index` the log index expected there.
    #[error("corrupt log file {path} at byte offset {offset} (index {index}): {reason}")]
    Corrupt {
        /// File concerned.
        path: PathBuf,
        /// Byte offset within the file.
        offset: u64,
        /// Log index expected at that offset (0 when not applicable).
        index: u64,
        /// What is wrong.
        reason: String,
    },
    /// Both slots of a two-slot state file (hard state, log metadata) are invalid.
    #[error("state file {path} has no valid slot: {reason}")]
    NoValidSlot {
        /// File concerned.
        path: PathBuf,
        /// Why each slot was rejected.
        reason: String,
    },
    /// Another `Log` holds the directory lock.
    #[error("log directory {path} is locked by another open log")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An earlier IO error left the log in a state where nothing more may be appended or
    /// reported durable. Reopen the log to recover.
    #[error("log failed earlier and refuses further writes: {reason}")]
    Failed {
        /// The first failure.
        reason: String,
    },
    /// An append did not start right after the last index.
    #[error("append of index {found} but the next index is {expected}")]
    IndexGap {
        /// The next index the log accepts.
        expected: u64,
        /// The index offered.
        found: u64,
    },
    /// An append's term is lower than the last entry's term.
    #[error("append of term {term} below the last term {last_term}")]
    TermRegression {
        /// Term of the last entry.
        last_term: u64,
        /// Term offered.
        term: u64,
    },
    /// The index was compacted away.
    #[error("index {index} is compacted (first index is {first_index})")]
    Compacted {
        /// Index requested.
        index: u64,
        /// First index still in the log.
        first_index: u64,
    },
    /// The index is past the end of the log.
    #[error("index {index} is past the last index {last_index}")]
    Unavailable {
        /// Index requested.
        index: u64,
        /// Last index in the log.
        last_index: u64,
    },
    /// A reader asked for an index the writer has not published yet.
    #[error("index {index} is not readable yet (readable up to {readable})")]
    NotReadable {
        /// Index requested.
        index: u64,
        /// Readable watermark.
        readable: u64,
    },
    /// A payload is larger than the configured maximum.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// Truncating or compacting at this index is not allowed.
    #[error("cannot {op} at index {index}: {reason}")]
    BadCut {
        /// `"truncate"` or `"compact"` or `"reset"`.
        op: &'static str,
        /// The index given.
        index: u64,
        /// Why not.
        reason: String,
    },
    /// The configuration is unusable.
    #[error("invalid log config: {0}")]
    Config(String),
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
