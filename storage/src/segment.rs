//! One memory-mapped, preallocated segment file, and the few OS calls around it.
//!
//! This module and `sync_ring` are the only places with `unsafe`. The soundness
//! argument for sharing a mapping between the writing shard thread and reading threads:
//!
//! - A [`Segment`] (shared via `Arc`) owns the file and the mapping; the mapping lives
//!   until the last `Arc` is dropped, so a reader never sees it unmapped, even after the
//!   log compacted or deleted the file.
//! - Exactly one [`SegmentWriter`] exists per `Segment` (it is created together with
//!   the mapping and is not `Clone`). Every write goes through `&mut SegmentWriter`, so
//!   the writer never holds a shared slice of its own mapping while writing. Writes go
//!   through the mapping or through the file (`pwrite`, which changes the page-cache
//!   pages the mapping shows); see [`SegmentWriter::through_map`].
//! - `frozen` is a byte watermark published by the writer with `Release`: bytes below it
//!   never change again while the mapping exists ([`SegmentWriter::write_at`] asserts the
//!   write starts at or above it and `frozen` only grows). Other threads may only read
//!   below it ([`Segment::read_frozen`] asserts so, after an `Acquire` load).
//! - The log directory is locked (`flock`) for as long as any `Segment` of it is alive,
//!   so no second mapping in this or another cooperating process writes the same bytes.
//!   Modification of the files by foreign processes is outside this contract, as with
//!   any mapping.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use memmap2::{Advice, MmapRaw};

/// A mapped segment file, shared between the writer and readers.
#[derive(Debug)]
pub(crate) struct Segment {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    first_index: u64,
    /// Bytes `[0, frozen)` never change again; readers may read them.
    frozen: AtomicUsize,
    /// Keeps the directory lock alive while this mapping exists.
    _lock: Arc<DirLock>,
}

/// The unique writing handle of a [`Segment`].
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    seg: Arc<Segment>,
    /// Writes go through the mapping (a recycled segment: its pages are allocated,
    /// cached and mapped) rather than through the file (`pwrite`, for fresh pages).
    through_map: bool,
}

impl Segment {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn first_index(&self) -> u64 {
        self.first_index
    }

    pub(crate) fn capacity(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Bytes below this offset are immutable and readable from any thread.
    pub(crate) fn frozen(&self) -> usize {
        self.frozen.load(Ordering::Acquire)
    }

    /// Reads published bytes. Panics if `range` reaches past the frozen watermark.
    pub(crate) fn read_frozen(&self, range: Range<usize>) -> &[u8] {
        let frozen = self.frozen();
        assert!(range.start <= range.end);
        assert!(
            range.end <= frozen,
            "read {range:?} past frozen {frozen} in {}",
            self.path.display()
        );
        assert!(frozen <= self.map.len());
        // SAFETY: the range lies inside the mapping (end <= frozen <= len), which is alive
        // for as long as `self` is. Bytes below `frozen` are never written again (the
        // writer asserts every write starts at or above `frozen`, and `frozen` only
        // grows), and the Acquire load above pairs with the writer's Release store in
        // `freeze`, so these bytes are fully written and stay unchanged for the lifetime
        // of the returned borrow.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(range.start), range.end - range.start)
        }
    }
}

impl SegmentWriter {
    /// Creates `path` (which must not exist), preallocates `capacity` bytes with
    /// `fallocate` so appends cannot hit a full disk, and maps it.
    pub(crate) fn create(
        path: &Path,
        first_index: u64,
        capacity: usize,
        lock: &Arc<DirLock>,
    ) -> Result<SegmentWriter, (&'static str, io::Error)> {
        assert!(capacity > 0);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map_err(|e| ("create", e))?;
        if let Err(e) = fallocate(&file, capacity as u64) {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(("fallocate", e));
        }
        Self::map(path, file, first_index, lock).map_err(|e| ("mmap", e))
    }

    /// Opens and maps an existing segment file.
    pub(crate) fn open(
        path: &Path,
        first_index: u64,
        lock: &Arc<DirLock>,
    ) -> Result<SegmentWriter, (&'static str, io::Error)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| ("open", e))?;
        let len = file.metadata().map_err(|e| ("stat", e))?.len();
        if len == 0 {
            return Err((
                "mmap",
                io::Error::new(io::ErrorKind::InvalidData, "segment file is empty"),
            ));
        }
        Self::map(path, file, first_index, lock).map_err(|e| ("mmap", e))
    }

    fn map(
        path: &Path,
        file: File,
        first_index: u64,
        lock: &Arc<DirLock>,
    ) -> io::Result<SegmentWriter> {
        let map = MmapRaw::map_raw(&file)?;
        Ok(SegmentWriter {
            seg: Arc::new(Segment {
                path: path.to_path_buf(),
                file,
                map,
                first_index,
                frozen: AtomicUsize::new(0),
                _lock: Arc::clone(lock),
            }),
            through_map: false,
        })
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// Hints the kernel that the mapping is about to be read front to back.
    pub(crate) fn advise_sequential(&self) {
        // Only a hint; failure changes nothing observable.
        let _ = self.seg.map.advise(Advice::Sequential);
    }

    /// The whole mapping, for the writer's own reads (recovery, serving reads).
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is alive as long as `self.seg`. The only code that changes
        // its bytes is `write_at` and `map_buf` (through the file or the mapping), which
        // need `&mut self` and so cannot run while this borrow of `self` lives. Other
        // threads only read (below `frozen`), so there is no concurrent mutation of any
        // byte in the returned slice.
        unsafe { std::slice::from_raw_parts(self.seg.map.as_ptr(), self.seg.map.len()) }
    }

    /// Whether writes go through the mapping ([`map_buf`](Self::map_buf) may be used):
    /// true for a recycled segment, whose pages are allocated, cached and mapped, so a
    /// copy into them is all a write costs. A fresh segment is written through the file:
    /// a write through a shared mapping faults each fresh page in twice over (a read of
    /// the unwritten extent, zero-filled, then a write fault that dirties it), where
    /// `pwrite` allocates, fills and dirties page-cache pages in one pass. In a scratch
    /// program filling 16 MiB segments (CPU time, 64 segments per run), `pwrite` in 16 KiB
    /// writes into a sparse file took 6.0-6.2 ms per segment against 12.3-13.2 ms for
    /// `fallocate`, `MADV_POPULATE_WRITE` and a copy in the runs alternated with it, and
    /// into an `fallocate`d file 5.2-5.5 ms (the sparse file 5.9-6.1 ms alongside). Into
    /// resident, mapped pages the copy is the cheaper one: writing recycled segments with
    /// `pwrite` too made the storage bench's append 2.4x slower (`cargo bench -p benches
    /// --bench storage`).
    pub(crate) fn through_map(&self) -> bool {
        self.through_map
    }

    /// Writes `bytes` at `offset`, which must lie at or above the frozen watermark (bytes
    /// readers may see are never modified): copied into the mapping or written with
    /// `pwrite` (see [`through_map`](Self::through_map)). Either way the mapping shows
    /// them as soon as this returns: both are views of the same page-cache pages.
    pub(crate) fn write_at(&mut self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.through_map {
            self.map_buf(offset, bytes.len()).copy_from_slice(bytes);
            return Ok(());
        }
        self.check_writable(offset, bytes.len());
        self.seg.file.write_all_at(bytes, offset as u64)
    }

    /// Mutable access to `[offset, offset + len)` of the mapping, which must lie at or
    /// above the frozen watermark. Only for a segment written through its mapping.
    pub(crate) fn map_buf(&mut self, offset: usize, len: usize) -> &mut [u8] {
        assert!(self.through_map, "segment is written through its file");
        self.check_writable(offset, len);
        // SAFETY: the range is inside the live mapping (checked above). No other slice
        // covers it: readers only read below `frozen` <= offset, and the writer's own
        // shared borrows (`bytes`) cannot coexist with this `&mut self` borrow, whose
        // lifetime bounds the returned slice. The file was preallocated with fallocate,
        // so the pages are backed and writing cannot fault with SIGBUS for lack of space.
        unsafe { std::slice::from_raw_parts_mut(self.seg.map.as_mut_ptr().add(offset), len) }
    }

    /// Writes zeros over `[offset, offset + len)`, under the same rule as
    /// [`write_at`](Self::write_at).
    pub(crate) fn zero(&mut self, offset: usize, len: usize) -> io::Result<()> {
        if self.through_map {
            self.map_buf(offset, len).fill(0);
            return Ok(());
        }
        self.check_writable(offset, len);
        let mut at = offset;
        while at < offset + len {
            let n = ZEROS.len().min(offset + len - at);
            self.write_at(at, &ZEROS[..n])?;
            at += n;
        }
        Ok(())
    }

    fn check_writable(&self, offset: usize, len: usize) {
        let frozen = self.seg.frozen.load(Ordering::Relaxed);
        assert!(
            offset >= frozen,
            "write at {offset} below frozen {frozen} in {}",
            self.seg.path.display()
        );
        let end = offset.checked_add(len).expect("write range overflows");
        assert!(end <= self.seg.map.len(), "write past segment end");
    }

    /// Publishes bytes `[0, upto)` as immutable and readable by other threads.
    pub(crate) fn freeze(&self, upto: usize) {
        assert!(upto <= self.seg.map.len());
        let old = self.seg.frozen.load(Ordering::Relaxed);
        assert!(
            upto >= old,
            "frozen watermark may only grow ({old} -> {upto})"
        );
        self.seg.frozen.store(upto, Ordering::Release);
    }

    pub(crate) fn frozen(&self) -> usize {
        self.seg.frozen.load(Ordering::Relaxed)
    }
}

/// A segment file kept mapped for a later segment: one dropped from the log whose
/// mapping nobody else holds (its pages stay allocated and cached: no page-cache fills on
/// reuse), or one prepared ahead of use.
#[derive(Debug)]
pub(crate) struct SpareSegment {
    seg: Segment,
    /// Its pages were written before (a recycled segment), so the segment reusing it is
    /// written through the mapping; false for a freshly prepared file.
    resident: bool,
}

impl SpareSegment {
    pub(crate) fn path(&self) -> &Path {
        &self.seg.path
    }

    /// Records that the file was renamed to `path`.
    pub(crate) fn set_path(&mut self, path: PathBuf) {
        self.seg.path = path;
    }
}

impl SpareSegment {
    /// A file just created or opened, its pages never written by a segment: the segment
    /// reusing it is written through the file.
    fn fresh(w: SegmentWriter) -> SpareSegment {
        let seg = Arc::try_unwrap(w.seg).expect("just created, never shared");
        SpareSegment {
            seg,
            resident: false,
        }
    }

    /// Makes the file of a future segment ahead of use, on a thread other than the log's
    /// writer, renamed to `path` once ready, and maps it. Two ways, for the two ways a
    /// log is used:
    ///
    /// - `synced` (the owner makes appends durable with syncs): zero-filled and synced
    ///   ([`prepare_zeroed`]), so group-commit syncs write data pages only.
    /// - otherwise: only preallocated (`fallocate`). Zero-filling would write every page
    ///   twice for no sync to gain from; appends (`pwrite`) fill fresh pages in one pass.
    pub(crate) fn prepare(
        tmp: &Path,
        path: &Path,
        capacity: usize,
        synced: bool,
        lock: &Arc<DirLock>,
    ) -> Result<SpareSegment, (&'static str, io::Error)> {
        if synced {
            prepare_zeroed(tmp, path, capacity)?;
            // Cached zeros, but not mapped: `pwrite` over them takes no page faults, and
            // none after each sync write-protects the mapping's pages again.
            return Ok(SpareSegment::fresh(SegmentWriter::open(path, 0, lock)?));
        }
        match std::fs::remove_file(tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(("remove", e)),
            _ => {}
        }
        let mut spare = SpareSegment::fresh(SegmentWriter::create(tmp, 0, capacity, lock)?);
        std::fs::rename(tmp, path).map_err(|e| ("rename", e))?;
        spare.set_path(path.to_path_buf());
        Ok(spare)
    }
}

impl SegmentWriter {
    /// Keeps the mapping for reuse if no reader or pending sync still holds it (as a
    /// recycled segment: written through its mapping when reused).
    pub(crate) fn into_spare(self) -> Option<SpareSegment> {
        Arc::try_unwrap(self.seg).ok().map(|seg| SpareSegment {
            seg,
            resident: true,
        })
    }

    /// Turns a spare (already renamed to `path`) into the writer of a new segment whose
    /// first index is `first_index`. Its old bytes stay until overwritten.
    pub(crate) fn reuse(spare: SpareSegment, path: &Path, first_index: u64) -> SegmentWriter {
        let mut seg = spare.seg;
        // Owning the `Segment` by value means no `Arc` clone and hence no reader borrow
        // of its bytes exists, so the frozen watermark may start over.
        *seg.frozen.get_mut() = 0;
        seg.path = path.to_path_buf();
        seg.first_index = first_index;
        SegmentWriter {
            seg: Arc::new(seg),
            through_map: spare.resident,
        }
    }
}

/// An exclusive `flock` on the log directory's lock file, held while the log or any of
/// its mappings is alive.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock or fails with `WouldBlock` if someone else holds it.
    pub(crate) fn acquire(path: &Path) -> io::Result<DirLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)?;
        // SAFETY: flock only takes a file descriptor, which `file` keeps open for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirLock { _file: file })
    }
}

/// Bytes written per `pwrite` when zero-filling a prepared segment. Small writes leave
/// the page cache holding small folios: with one large folio per megabyte (what a 1 MiB
/// `pwrite` gets on this kernel), every sync of a few appended kilobytes wrote back the
/// whole folio and took 3x as long.
const ZERO_FILL_CHUNK: usize = 16 << 10;
/// What zero-filling writes from.
static ZEROS: [u8; ZERO_FILL_CHUNK] = [0; ZERO_FILL_CHUNK];
/// The zero-fill is synced every this many bytes, so it never has much dirty data for
/// the log's own syncs to queue behind.
const ZERO_FILL_SYNC_BYTES: usize = 4 << 20;

/// Creates a segment-sized file at `tmp`, writes zeros to all of it, makes them durable
/// and renames it to `path`: a spare whose blocks are allocated *and written*, so syncs
/// of a segment reusing it only write data pages (no unwritten-extent conversion to
/// commit in the filesystem journal). Any existing `tmp` is replaced.
pub(crate) fn prepare_zeroed(
    tmp: &Path,
    path: &Path,
    capacity: usize,
) -> Result<(), (&'static str, io::Error)> {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(tmp)
        .map_err(|e| ("create", e))?;
    let mut at = 0;
    while at < capacity {
        let n = ZERO_FILL_CHUNK.min(capacity - at);
        file.write_all_at(&ZEROS[..n], at as u64)
            .map_err(|e| ("zero-fill", e))?;
        at += n;
        if at % ZERO_FILL_SYNC_BYTES == 0 || at == capacity {
            file.sync_data().map_err(|e| ("fdatasync", e))?;
        }
    }
    std::fs::rename(tmp, path).map_err(|e| ("rename", e))
}

/// Allocates `len` bytes of backing store for `file` (extending its size).
fn fallocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
    loop {
        // SAFETY: fallocate only takes a file descriptor (kept open by `file`) and integers.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
