//! Durable storage of one Raft group: the log record format, a memory-mapped segmented
//! log with group commit over io_uring, crash recovery, and the hard-state file.
//!
//! # Record format
//!
//! Every log entry is one record; records are the unit on disk *and* on the wire (the
//! leader encodes once into its mapping, ships the same bytes in AppendEntries, and the
//! follower appends them verbatim after [`RecordRun::validate`]).
//!
//! ```text
//! offset size field        (all little-endian)
//!  0     4    magic        b"RLOG"
//!  4     2    version      1
//!  6     2    flags        0 (reserved)
//!  8     4    payload_len  bytes of payload, excluding padding
//! 12     4    crc          CRC32C(header with crc = 0, then payload)
//! 16     8    term         >= 1
//! 24     8    index        >= 1
//! 32     ...  payload, then zero padding to a multiple of 8 bytes
//! ```
//!
//! A run of records is valid when every record has a good magic/version/flags, its CRC
//! matches, its padding is zero, indexes increase by one and terms never decrease.
//!
//! # Segments
//!
//! The log lives in a directory: `NNNNNNNNNNNNNNNNNNNN.seg` files named by their first
//! index (20 digits), `log.meta` (first index and the term before it, a two-slot
//! crash-atomic file) and `LOCK` (an exclusive `flock` held while the log or any reader
//! mapping is alive). Each segment is preallocated with `fallocate` to
//! [`LogConfig::segment_bytes`] (so appends cannot fail on a full disk) and starts with a
//! 32-byte segment header (magic `b"RSEG"`, version, flags, CRC, first index, capacity).
//! Records follow back to back; the unused rest is zero.
//! A new log's first segment is zero-filled (written, not just allocated) by
//! [`Log::open`], and once the tail segment is half full a background thread prepares
//! the next one the same way (`next-segment.prepared`, used by the next roll that finds
//! no spare): syncs of a segment whose blocks are written flush only data pages, while
//! on a merely `fallocate`d one each sync also commits unwritten-extent conversions.
//! A log whose owner never syncs ([`LogConfig::synced`] false, e.g. fsync off) has its
//! next segment only allocated and mapped, on the preparer thread.
//!
//! Appends to a fresh segment write through the file (`pwrite`): readers see the same
//! page-cache pages through the mapping, and a fresh page is allocated and filled in one
//! pass instead of faulting in twice. A recycled segment's pages are resident and mapped,
//! so appends to it copy into the mapping.
//!
//! Compaction keeps up to [`LogConfig::spare_segments_max`] dropped segment files as
//! `*.spare`, still mapped, and later segments reuse them (a segment a reader or a
//! pending sync still holds is unlinked instead, so no reader's bytes ever change):
//! their pages are already allocated and cached, so appends take no page-cache fills
//! and syncs no extent conversions. A reused segment's header carries the `recycled`
//! flag; the bytes after its last record may be stale records of its previous life,
//! which all have indexes below the segment's first index and end the recovery scan like
//! zeros. Only compacted segments are reused: truncated or reset ones, whose indexes
//! could come back, are deleted.
//!
//! # Contracts
//!
//! - **Appends** ([`Log::append_entry`], [`Log::append_entry_with`],
//!   [`Log::append_entries`], [`Log::append_run`]) must continue at `last_index() + 1`
//!   with a term no lower than `last_term()`; otherwise a typed error, nothing written.
//! - **Durability / group commit**: [`Log::begin_sync`] returns a [`PendingSync`] with one
//!   `fdatasync` SQE per segment written since the last begun sync (plus the directory
//!   after a segment was created), to be submitted on the caller's io_uring;
//!   [`Log::complete_sync`] takes the CQE results and returns the durable [`Position`].
//!   One sync covers everything appended before it began. Durability advances only
//!   through a prefix of completed syncs, in the order they were begun. [`Log::sync`] is
//!   the blocking form on a private ring. Nothing is reported durable that is not.
//! - **Failure**: an IO error in a mutating operation (including a failed `fdatasync`,
//!   after which the kernel may have dropped the dirty pages) puts the log in a failed
//!   state: further appends and syncs return [`StorageError::Failed`]. Reopen to recover.
//! - **Truncation** ([`Log::truncate_after`]) zeroes the removed records and syncs
//!   before returning, so a removed suffix never reappears after a crash, not even
//!   behind newer records. It refuses to cut below the readable watermark.
//! - **Compaction** ([`Log::compact_before`]) drops whole segments below the index and
//!   records the new first index and `term(first - 1)` durably first. Pass at most the
//!   applied index. [`Log::reset`] restarts the log after a snapshot.
//! - **Recovery** ([`Log::open`]) verifies every record of every segment. In the last
//!   segment, bytes after the last valid record are a torn tail (only unsynced data can
//!   be there) and are zeroed. Anything else (a damaged record with a valid record after
//!   it, a missing, truncated or empty sealed segment, an index gap) refuses to open with
//!   [`StorageError::Corrupt`] naming the file, byte offset and index. A consequence:
//!   after a power loss the kernel may have written back unsynced pages out of order,
//!   leaving a hole before later valid records; that is reported too rather than
//!   guessed about. Recovered data is `fdatasync`ed before `open` returns.
//! - **Readers**: [`Log::reader`] gives a [`LogReader`] for another thread. The writer
//!   publishes a readable watermark ([`Log::publish_readable`], typically the commit
//!   index); readers read entries up to it in place through a [`Cursor`]. Bytes a reader
//!   can see are never modified, and segments stay mapped while a reader holds them.
//! - **Hard state**: [`HardStateFile`] stores term, vote and commit in two checksummed
//!   slots written alternately with a sequence number and `fdatasync`ed before `save`
//!   returns (or via an SQE with [`HardStateFile::begin_save`]). Load takes the newest
//!   valid slot; if neither is valid, [`StorageError::NoValidSlot`] names the file.
//!
//! # Example
//!
//! ```
//! use storage::{Log, LogConfig, RecordRun};
//! let dir = tempfile::tempdir().unwrap();
//! let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
//! log.append_entries(1, 1, [&b"a"[..], b"bc"]).unwrap();
//! assert_eq!(log.sync().unwrap().index, 2);
//! let run = log.read_run(1..=2, usize::MAX).unwrap();
//! // A follower validates received bytes in place and appends them verbatim.
//! let received = RecordRun::validate(run.bytes()).unwrap();
//! assert_eq!(received.iter().map(|e| e.payload).collect::<Vec<_>>(), [&b"a"[..], b"bc"]);
//! ```

mod error;
mod hard_state;
mod inspect;
mod log;
mod reader;
mod record;
mod recovery;
mod segment;
mod segment_header;
mod slot_file;
mod sync_ring;

pub use error::{RecordError, StorageError};
pub use hard_state::{HardState, HardStateFile, PendingHardState};
pub use inspect::{inspect, InspectReport, SegmentSummary};
pub use log::{EntryMeta, Log, LogConfig, PendingSync, Position, SEGMENT_SUFFIX};
pub use reader::{Cursor, LogReader};
pub use record::{
    encode_record, encode_record_with, padded_len, record_len, Entry, RecordHeader, RecordIter,
    RecordRun, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, RECORD_MAGIC, RECORD_PAYLOAD_BYTES_MAX,
    RECORD_VERSION,
};
pub use segment_header::SEGMENT_HEADER_BYTES;

// The log moves to its shard thread; readers are shared with the applier thread.
const _: () = {
    const fn assert_send<T: Send>() {}
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send::<Log>();
    assert_send::<PendingSync>();
    assert_send::<HardStateFile>();
    assert_send_sync::<LogReader>();
    assert_send::<Cursor>();
};
