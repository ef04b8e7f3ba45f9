//! The segmented, memory-mapped Raft log: append, group-commit sync, truncate, compact,
//! read in place, and recovery on open.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use io_uring::squeue;

use crate::error::StorageError;
use crate::reader::LogReader;
use crate::record::{
    encode_record_with, record_len, Entry, RecordHeader, RecordRun, RECORD_HEADER_BYTES,
};
use crate::recovery::scan_segment;
use crate::segment::{prepare_zeroed, DirLock, Segment, SegmentWriter, SpareSegment};
use crate::segment_header::{SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::slot_file::{SlotFile, SlotKind, SLOT_PAYLOAD_BYTES};
use crate::sync_ring::{fdatasync_entry, SyncRing};

mod cut;
pub(crate) mod open;
mod sync;

pub use sync::PendingSync;
use sync::{InflightSync, LazyRing};

const META_FILE: &str = "log.meta";
const LOCK_FILE: &str = "LOCK";
/// File name ending of a log segment (`NNNNNNNNNNNNNNNNNNNN.seg`, named by its first index).
pub const SEGMENT_SUFFIX: &str = ".seg";
const SPARE_SUFFIX: &str = ".spare";
/// The next segment's file, zero-filled ahead of use by the preparer thread, and its
/// name while being written.
const PREPARED_FILE: &str = "next-segment.prepared";
const PREPARING_FILE: &str = "next-segment.prepared.tmp";
const PAGE_BYTES: usize = 4096;
/// Most bytes [`Log::append_entries`] stages before it writes them out: large batches
/// go out in several writes rather than through one segment-sized buffer.
const STAGE_BYTES: usize = 256 << 10;

/// Makes `stage` at least `len` bytes long. It only grows, so its bytes are zeroed once
/// rather than before every record: a record's encoding writes all of its bytes.
fn grow_stage(stage: &mut Vec<u8>, len: usize) {
    if stage.len() < len {
        stage.resize(len, 0);
    }
}

/// Log settings. Segment size may change between restarts; existing segments keep the
/// size they were created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Size each segment file is preallocated to. Multiple of 4096, below 4 GiB.
    pub segment_bytes: usize,
    /// Largest payload accepted by appends.
    pub payload_bytes_max: usize,
    /// Compacted segment files kept for reuse by later segments. Reusing a file whose
    /// pages are already allocated and cached avoids a page-cache fill per page on
    /// append and extent conversion on sync. 0 deletes compacted segments.
    pub spare_segments_max: usize,
    /// Whether the owner makes appends durable with syncs (group commit). Decides how
    /// the next segment is prepared ahead of use: zero-filled and synced for a synced log
    /// (its syncs then never convert unwritten extents), only allocated for one that is
    /// never synced.
    pub synced: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
            payload_bytes_max: 1 << 20,
            spare_segments_max: 2,
            synced: true,
        }
    }
}

impl LogConfig {
    fn validate(&self) -> Result<(), StorageError> {
        if self.segment_bytes % PAGE_BYTES != 0 || self.segment_bytes > u32::MAX as usize {
            return Err(StorageError::Config(format!(
                "segment_bytes {} must be a multiple of {PAGE_BYTES} below 4 GiB",
                self.segment_bytes
            )));
        }
        let need = SEGMENT_HEADER_BYTES + record_len(self.payload_bytes_max);
        if self.segment_bytes < need {
            return Err(StorageError::Config(format!(
                "segment_bytes {} cannot hold one record of payload_bytes_max {} ({need} bytes)",
                self.segment_bytes, self.payload_bytes_max
            )));
        }
        Ok(())
    }
}

/// A log position: (index, term). Index `first_index - 1` names the entry before the
/// log (its term is remembered across compaction); an empty fresh log is at (0, 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Position {
    /// Raft index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
}

/// Metadata of one entry, for rebuilding in-memory indexes after open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// Raft index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// Payload length in bytes.
    pub payload_len: u32,
}

/// State shared with [`LogReader`]s.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Mapped segments in index order. Changed only on roll, truncate, compact, reset.
    pub(crate) segments: RwLock<Vec<Arc<Segment>>>,
    /// Highest index readers may read; published with Release after the segments'
    /// frozen watermarks cover it.
    pub(crate) readable: AtomicU64,
}

/// Writer-side state of one segment.
#[derive(Debug)]
struct SegState {
    w: SegmentWriter,
    first_index: u64,
    /// Offset of each record, `offsets[i]` holds index `first_index + i`.
    offsets: Vec<u32>,
    /// End of the last record: where the next one goes.
    tail: usize,
    /// Written since the last begun sync.
    dirty: bool,
}

impl SegState {
    fn count(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// Index of the last record, `first_index - 1` if empty.
    fn last_index(&self) -> u64 {
        self.first_index + self.count() - 1
    }

    fn offset_of(&self, index: u64) -> usize {
        assert!(index >= self.first_index && index <= self.last_index());
        self.offsets[(index - self.first_index) as usize] as usize
    }

    fn end_of(&self, index: u64) -> usize {
        if index == self.last_index() {
            self.tail
        } else {
            self.offset_of(index + 1)
        }
    }
}

/// The replicated log of one Raft group. See the crate docs for the contracts.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    lock: Arc<DirLock>,
    dir_file: Arc<File>,
    meta: SlotFile,
    segs: Vec<SegState>,
    shared: Arc<Shared>,
    first_index: u64,
    prev_term: u64,
    last: Position,
    /// (first index, term) of each run of equal terms, ascending.
    term_runs: Vec<(u64, u64)>,
    durable: Position,
    /// Position covered by the latest begun sync.
    sync_begun: Position,
    inflight: VecDeque<InflightSync>,
    next_sync_seq: u64,
    /// Bumped by truncate and reset: syncs begun before describe a different suffix.
    epoch: u64,
    dir_dirty: bool,
    /// Compacted segment files ready for reuse (all of `config.segment_bytes`).
    spares: Vec<Spare>,
    readable: u64,
    failed: Option<String>,
    ring: LazyRing,
    /// The thread preparing the next segment's file, if one is running.
    preparing: Option<JoinHandle<Result<SpareSegment, StorageError>>>,
    /// A finished [`PREPARED_FILE`] (all of `config.segment_bytes`, all zeros), for the
    /// next roll that finds no spare: mapped if this process prepared it.
    prepared: Option<Spare>,
    /// Where appends to a segment written through its file encode records before
    /// writing them: reused, and never shortened (see [`grow_stage`]), so at most about
    /// `STAGE_BYTES`, or one record if larger.
    stage: Vec<u8>,
}

/// A compacted segment file kept for reuse, still mapped when possible.
#[derive(Debug)]
enum Spare {
    Mapped(SpareSegment),
    File(PathBuf),
}

impl Spare {
    fn path(&self) -> &Path {
        match self {
            Spare::Mapped(s) => s.path(),
            Spare::File(p) => p,
        }
    }

    /// Renames the file to `path` and makes it the writer of a segment starting at
    /// `first`, keeping its mapping when it has one.
    fn take_over(
        self,
        path: &Path,
        first: u64,
        lock: &Arc<DirLock>,
    ) -> Result<SegmentWriter, (&'static str, io::Error)> {
        std::fs::rename(self.path(), path).map_err(|e| ("rename", e))?;
        match self {
            Spare::Mapped(spare) => Ok(SegmentWriter::reuse(spare, path, first)),
            Spare::File(_) => SegmentWriter::open(path, first, lock),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // The preparer writes in the directory: finish before the lock goes. Its file
        // stays for the next open.
        self.take_prepared(true);
    }
}

fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}{SEGMENT_SUFFIX}"))
}

impl Log {
    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> LogConfig {
        self.config
    }

    /// First index present in the log (`last_index() + 1` when empty).
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// Last index present (`first_index() - 1` when empty).
    pub fn last_index(&self) -> u64 {
        self.last.index
    }

    /// Term of the last entry (the compaction point's term when empty).
    pub fn last_term(&self) -> u64 {
        self.last.term
    }

    /// (index, term) of the last entry.
    pub fn last(&self) -> Position {
        self.last
    }

    /// Highest position known durable: every entry up to it survives a power loss.
    pub fn durable(&self) -> Position {
        self.durable
    }

    /// True once an IO error put the log in the failed state.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Term of `index`, for `first_index() - 1 <= index <= last_index()`.
    pub fn term_of(&self, index: u64) -> Result<u64, StorageError> {
        if index + 1 < self.first_index {
            return Err(StorageError::Compacted {
                index,
                first_index: self.first_index,
            });
        }
        if index > self.last.index {
            return Err(StorageError::Unavailable {
                index,
                last_index: self.last.index,
            });
        }
        Ok(self.term_at(index))
    }

    fn term_at(&self, index: u64) -> u64 {
        assert!(index + 1 >= self.first_index && index <= self.last.index);
        if index + 1 == self.first_index {
            return self.prev_term;
        }
        let at = self.term_runs.partition_point(|r| r.0 <= index);
        assert!(at > 0, "no term run covers index {index}");
        self.term_runs[at - 1].1
    }

    fn check_present(&self, index: u64) -> Result<(), StorageError> {
        if index < self.first_index {
            return Err(StorageError::Compacted {
                index,
                first_index: self.first_index,
            });
        }
        if index > self.last.index {
            return Err(StorageError::Unavailable {
                index,
                last_index: self.last.index,
            });
        }
        Ok(())
    }

    /// Position in `segs` of the segment holding `index` (or where it would go).
    fn seg_for(&self, index: u64) -> usize {
        let at = self.segs.partition_point(|s| s.first_index <= index);
        assert!(at > 0, "index {index} below the first segment");
        at - 1
    }

    fn writable(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(reason) => Err(StorageError::Failed {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records the first IO failure; from now on nothing is appended or reported durable.
    fn fail(&mut self, err: StorageError) -> StorageError {
        tracing::error!(dir = %self.dir.display(), error = %err, "log failed");
        if self.failed.is_none() {
            self.failed = Some(err.to_string());
        }
        err
    }

    fn check_append(&self, term: u64, index: u64, payload_len: usize) -> Result<(), StorageError> {
        self.writable()?;
        if index != self.last.index + 1 {
            return Err(StorageError::IndexGap {
                expected: self.last.index + 1,
                found: index,
            });
        }
        if term < self.last.term || term == 0 {
            return Err(StorageError::TermRegression {
                last_term: self.last.term,
                term,
            });
        }
        if payload_len > self.config.payload_bytes_max {
            return Err(StorageError::PayloadTooLarge {
                len: payload_len,
                max: self.config.payload_bytes_max,
            });
        }
        Ok(())
    }

    /// Prepare-ahead: once the tail segment is half full and neither a spare nor a
    /// prepared file is ready, starts a thread that creates the next segment's file
    /// ([`PREPARED_FILE`]; how, see [`LogConfig::synced`] and [`SpareSegment::prepare`]).
    /// Best effort: a roll that finds no finished preparation creates a segment as before.
    fn prepare_ahead(&mut self) {
        if self.preparing.is_some()
            || self.prepared.is_some()
            || !self.spares.is_empty()
            || self.failed.is_some()
        {
            return;
        }
        let tail = self.segs.last().expect("log always has a tail segment");
        if tail.tail < tail.w.segment().capacity() / 2 {
            return;
        }
        let tmp = self.dir.join(PREPARING_FILE);
        let path = self.dir.join(PREPARED_FILE);
        let capacity = self.config.segment_bytes;
        let synced = self.config.synced;
        let lock = Arc::clone(&self.lock);
        let spawned = std::thread::Builder::new()
            .name("log-prepare".into())
            .spawn(move || {
                SpareSegment::prepare(&tmp, &path, capacity, synced, &lock)
                    .map_err(|(op, e)| StorageError::io(op, &tmp, e))
            });
        match spawned {
            Ok(handle) => self.preparing = Some(handle),
            Err(e) => tracing::warn!(error = %e, "cannot start the segment preparer"),
        }
    }

    /// Takes the prepared file once its thread finished (waiting for it if `wait`).
    fn take_prepared(&mut self, wait: bool) {
        if !wait && !self.preparing.as_ref().is_some_and(|h| h.is_finished()) {
            return;
        }
        let Some(handle) = self.preparing.take() else {
            return;
        };
        match handle.join() {
            Ok(Ok(spare)) => self.prepared = Some(Spare::Mapped(spare)),
            Ok(Err(e)) => tracing::warn!(error = %e, "preparing a spare segment failed"),
            Err(_) => tracing::warn!("the segment preparer panicked"),
        }
    }

    /// Creates the next segment, starting at `last_index() + 1`.
    fn roll(&mut self) -> Result<(), StorageError> {
        self.take_prepared(false);
        let first = self.last.index + 1;
        let path = segment_path(&self.dir, first);
        let capacity = self.config.segment_bytes;
        let made = match self.spares.pop() {
            Some(spare) => spare.take_over(&path, first, &self.lock).map(|w| (w, true)),
            // Holds only zeros: not a recycled segment.
            None => match self.prepared.take() {
                Some(prepared) => prepared
                    .take_over(&path, first, &self.lock)
                    .map(|w| (w, false)),
                None => {
                    SegmentWriter::create(&path, first, capacity, &self.lock).map(|w| (w, false))
                }
            },
        };
        let (mut w, recycled) = match made {
            Ok(made) => made,
            Err((op, e)) => return Err(self.fail(StorageError::io(op, &path, e))),
        };
        assert_eq!(w.segment().capacity(), capacity);
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        SegmentHeader::new(first, capacity as u64, recycled).encode(&mut header);
        if let Err(e) = w.write_at(0, &header) {
            // A segment file without its header would stop the next open: remove it.
            drop(w);
            let _ = std::fs::remove_file(&path);
            return Err(self.fail(StorageError::io("write", &path, e)));
        }
        self.shared
            .segments
            .write()
            .expect("segment table lock poisoned")
            .push(Arc::clone(w.segment()));
        self.segs.push(SegState {
            w,
            first_index: first,
            offsets: Vec::new(),
            tail: SEGMENT_HEADER_BYTES,
            dirty: true,
        });
        self.dir_dirty = true;
        Ok(())
    }

    /// Makes sure the tail segment has `len` free bytes, rolling if needed.
    fn reserve(&mut self, len: usize) -> Result<(), StorageError> {
        let tail = self.segs.last().expect("log always has a tail segment");
        if tail.tail + len <= tail.w.segment().capacity() {
            // A synced log starts its preparer in `begin_sync`; an unsynced one only
            // comes here.
            if !self.config.synced {
                self.prepare_ahead();
            }
            return Ok(());
        }
        assert!(
            tail.count() > 0,
            "record of {len} bytes does not fit an empty segment"
        );
        self.roll()?;
        let tail = self.segs.last().expect("just rolled");
        assert!(tail.tail + len <= tail.w.segment().capacity());
        Ok(())
    }

    fn note_appended(&mut self, index: u64, term: u64) {
        assert_eq!(index, self.last.index + 1);
        assert!(term >= self.last.term);
        if self.term_runs.last().map(|r| r.1) != Some(term) {
            self.term_runs.push((index, term));
        }
        self.last = Position { index, term };
    }

    /// Appends one entry, encoding it straight into the mapping.
    pub fn append_entry(
        &mut self,
        term: u64,
        index: u64,
        payload: &[u8],
    ) -> Result<(), StorageError> {
        self.append_entry_with(term, index, payload.len(), |out| {
            out.copy_from_slice(payload)
        })
    }

    /// Appends one entry whose `payload_len`-byte payload `fill` writes in place (into the
    /// record being encoded, so a payload can be produced without a copy of its own).
    pub fn append_entry_with(
        &mut self,
        term: u64,
        index: u64,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), StorageError> {
        self.check_append(term, index, payload_len)?;
        let len = record_len(payload_len);
        self.reserve(len)?;
        let seg = self.segs.last_mut().expect("tail segment");
        let at = seg.tail;
        if seg.w.through_map() {
            encode_record_with(seg.w.map_buf(at, len), term, index, payload_len, fill);
        } else {
            grow_stage(&mut self.stage, len);
            encode_record_with(&mut self.stage[..len], term, index, payload_len, fill);
            if let Err(e) = seg.w.write_at(at, &self.stage[..len]) {
                let path = seg.w.segment().path().to_path_buf();
                return Err(self.fail(StorageError::io("write", path, e)));
            }
        }
        seg.offsets
            .push(u32::try_from(at).expect("offset fits u32"));
        seg.tail = at + len;
        seg.dirty = true;
        assert_eq!(seg.last_index(), index);
        self.note_appended(index, term);
        Ok(())
    }

    /// Appends a batch of entries of one term starting at `first_index`; returns the last
    /// index appended. Records are encoded in place into a segment written through its
    /// mapping, else into a staging buffer written out in pieces of up to 256 KiB (one
    /// `pwrite` each, never across segments). Stops at the first error (entries before
    /// it stay appended).
    pub fn append_entries<'p>(
        &mut self,
        term: u64,
        first_index: u64,
        payloads: impl IntoIterator<Item = &'p [u8]>,
    ) -> Result<u64, StorageError> {
        // Continuity, term and failure are checked once for the batch.
        self.check_append(term, first_index, 0)?;
        let max = self.config.payload_bytes_max;
        let too_large = |len: usize| StorageError::PayloadTooLarge { len, max };
        let mut payloads = payloads.into_iter().peekable();
        let mut index = first_index;
        let mut stage = std::mem::take(&mut self.stage);
        let result = loop {
            let Some(&next) = payloads.peek() else {
                break Ok(());
            };
            if next.len() > max {
                break Err(too_large(next.len()));
            }
            if let Err(e) = self.reserve(record_len(next.len())) {
                break Err(e);
            }
            // A piece: the records that fit the tail segment's room and the stage.
            let seg = self.segs.last_mut().expect("tail segment");
            let base = seg.tail;
            let room = seg.w.segment().capacity() - base;
            let kept = seg.offsets.len();
            let through_map = seg.w.through_map();
            let mut piece = 0;
            while let Some(&payload) = payloads.peek() {
                let len = record_len(payload.len());
                let full = piece > 0 && piece + len > STAGE_BYTES;
                if payload.len() > max || piece + len > room || full {
                    break;
                }
                let out = if through_map {
                    seg.w.map_buf(base + piece, len)
                } else {
                    grow_stage(&mut stage, piece + len);
                    &mut stage[piece..piece + len]
                };
                encode_record_with(out, term, index, payload.len(), |out| {
                    out.copy_from_slice(payload)
                });
                seg.offsets
                    .push(u32::try_from(base + piece).expect("offset fits u32"));
                piece += len;
                index += 1;
                payloads.next();
            }
            if !through_map {
                if let Err(e) = seg.w.write_at(base, &stage[..piece]) {
                    seg.offsets.truncate(kept);
                    let path = seg.w.segment().path().to_path_buf();
                    break Err(self.fail(StorageError::io("write", path, e)));
                }
            }
            seg.tail = base + piece;
            seg.dirty = true;
            assert_eq!(seg.last_index(), index - 1);
            if self.term_runs.last().map(|r| r.1) != Some(term) {
                self.term_runs.push((first_index, term));
            }
            // Kept current per piece: rolling names the next segment after it.
            self.last = Position {
                index: index - 1,
                term,
            };
        };
        self.stage = stage;
        result.map(|()| index - 1)
    }

    /// Appends a validated run verbatim (a follower appending what the leader sent). The
    /// run must start at `last_index() + 1`: truncate a conflicting suffix first.
    pub fn append_run(&mut self, run: &RecordRun<'_>) -> Result<(), StorageError> {
        let Some((first, first_term)) = run.first() else {
            return Ok(());
        };
        self.check_append(first_term, first, 0)?;
        let bytes = run.bytes();
        // Check sizes up front so a bad run is rejected before anything is written.
        let mut off = 0;
        while off < bytes.len() {
            let h = RecordHeader::decode(&bytes[off..]);
            let plen = h.payload_len as usize;
            if plen > self.config.payload_bytes_max {
                return Err(StorageError::PayloadTooLarge {
                    len: plen,
                    max: self.config.payload_bytes_max,
                });
            }
            off += h.record_len();
        }
        // Copy maximal chunks that fit the tail segment.
        let mut off = 0;
        let mut index = first;
        while off < bytes.len() {
            let h = RecordHeader::decode(&bytes[off..]);
            self.reserve(h.record_len())?;
            let seg = self.segs.last_mut().expect("tail segment");
            let room = seg.w.segment().capacity() - seg.tail;
            let start = off;
            let base = seg.tail;
            let kept = seg.offsets.len();
            let mut terms: Vec<(u64, u64)> = Vec::new();
            while off < bytes.len() {
                let h = RecordHeader::decode(&bytes[off..]);
                let len = h.record_len();
                if off + len - start > room {
                    break;
                }
                assert_eq!(h.index, index, "validated run is contiguous");
                seg.offsets
                    .push(u32::try_from(base + off - start).expect("offset fits u32"));
                if terms.last().map(|t| t.1) != Some(h.term) {
                    terms.push((h.index, h.term));
                }
                index += 1;
                off += len;
            }
            assert!(off > start, "reserve guarantees one record fits");
            if let Err(e) = seg.w.write_at(base, &bytes[start..off]) {
                seg.offsets.truncate(kept);
                let path = seg.w.segment().path().to_path_buf();
                return Err(self.fail(StorageError::io("write", path, e)));
            }
            seg.tail = base + off - start;
            seg.dirty = true;
            let seg_last = seg.last_index();
            for (i, t) in terms {
                if self.term_runs.last().map(|r| r.1) != Some(t) {
                    self.term_runs.push((i, t));
                }
            }
            let term = self.term_runs.last().expect("just pushed").1;
            assert!(term >= self.last.term);
            self.last = Position {
                index: seg_last,
                term,
            };
        }
        assert_eq!(Some((self.last.index, self.last.term)), run.last());
        Ok(())
    }

    /// Reads records `range` as the bytes of whole records, borrowed from the mapping:
    /// the longest prefix of the range that lies in one segment and fits `bytes_max`
    /// (at least one record). Loop from `run.last() + 1` for the rest.
    pub fn read_run(
        &self,
        range: RangeInclusive<u64>,
        bytes_max: usize,
    ) -> Result<RecordRun<'_>, StorageError> {
        let (lo, hi) = (*range.start(), *range.end());
        if lo > hi {
            return Ok(RecordRun::validate(&[]).expect("empty run is valid"));
        }
        self.check_present(lo)?;
        self.check_present(hi)?;
        let seg = &self.segs[self.seg_for(lo)];
        let hi = hi.min(seg.last_index());
        let start = seg.offset_of(lo);
        // Largest k in [lo, hi] whose end stays within bytes_max of start (k >= lo).
        let fits = |k: u64| seg.end_of(k) - start <= bytes_max;
        let (mut ok, mut bad) = (lo, hi + 1);
        if fits(hi) {
            ok = hi;
        } else {
            while bad - ok > 1 {
                let mid = ok + (bad - ok) / 2;
                if fits(mid) {
                    ok = mid;
                } else {
                    bad = mid;
                }
            }
        }
        let bytes = &seg.w.bytes()[start..seg.end_of(ok)];
        Ok(RecordRun::trusted(
            bytes,
            (lo, self.term_at(lo)),
            (ok, self.term_at(ok)),
        ))
    }

    /// Reads one entry in place.
    pub fn read_entry(&self, index: u64) -> Result<Entry<'_>, StorageError> {
        self.check_present(index)?;
        let seg = &self.segs[self.seg_for(index)];
        let at = seg.offset_of(index);
        let bytes = &seg.w.bytes()[at..seg.end_of(index)];
        let h = RecordHeader::decode(bytes);
        assert_eq!(h.index, index);
        Ok(Entry {
            index,
            term: h.term,
            payload: &bytes[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + h.payload_len as usize],
        })
    }

    /// Metadata of every entry in index order, for rebuilding in-memory state.
    pub fn iter_meta(&self) -> impl Iterator<Item = EntryMeta> + '_ {
        self.segs.iter().flat_map(|s| {
            let bytes = s.w.bytes();
            s.offsets.iter().map(move |&o| {
                let h = RecordHeader::decode(&bytes[o as usize..]);
                EntryMeta {
                    index: h.index,
                    term: h.term,
                    payload_len: h.payload_len,
                }
            })
        })
    }

    /// A handle for another thread to read entries up to the readable watermark.
    pub fn reader(&self) -> LogReader {
        LogReader::new(Arc::clone(&self.shared))
    }

    /// The readable watermark.
    pub fn readable_index(&self) -> u64 {
        self.readable
    }

    /// Publishes entries up to `index` to [`LogReader`]s (typically the commit index).
    /// Published entries are never truncated; they may be compacted only once applied.
    pub fn publish_readable(&mut self, index: u64) {
        assert!(index <= self.last.index, "publish past the last index");
        assert!(index >= self.readable, "readable watermark goes backwards");
        if index == self.readable {
            return;
        }
        let from = self.seg_for(self.readable.max(self.first_index));
        for seg in &self.segs[from..] {
            if seg.first_index > index || seg.count() == 0 {
                break;
            }
            let upto = seg.end_of(index.min(seg.last_index()));
            if upto > seg.w.frozen() {
                seg.w.freeze(upto);
            }
        }
        self.readable = index;
        self.shared.readable.store(index, Ordering::Release);
    }

    fn check_invariants(&self) {
        assert!(!self.segs.is_empty());
        assert!(self.last.index + 1 >= self.first_index);
        assert_eq!(self.segs[0].first_index, self.first_index);
        for w in self.segs.windows(2) {
            assert!(w[0].count() > 0, "only the tail segment may be empty");
            assert_eq!(w[0].last_index() + 1, w[1].first_index);
        }
        assert_eq!(
            self.segs.last().expect("tail").last_index(),
            self.last.index
        );
        assert!(self.durable.index <= self.last.index);
        assert!(self.readable <= self.last.index || self.readable + 1 == self.first_index);
        if self.last.index >= self.first_index {
            assert_eq!(self.term_at(self.last.index), self.last.term);
        }
    }
}
