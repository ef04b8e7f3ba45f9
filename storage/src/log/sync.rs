//! Group commit: `fdatasync` SQEs for the caller's ring, their completion, and the
//! blocking forms on a private ring.

use super::*;

/// A group-commit sync that was begun: the `fdatasync` SQEs covering everything
/// appended before [`Log::begin_sync`], and the position they make durable.
///
/// Submit every entry of [`PendingSync::entries`] (retagging `user_data` as the ring
/// driver requires), collect each CQE result, and hand them, in the order of
/// `entries()`, to [`Log::complete_sync`]. Keep this value alive until all completions
/// arrived: it holds the files open. Every begun sync must be completed, or the
/// durable position stops advancing.
#[derive(Debug)]
pub struct PendingSync {
    entries: Vec<squeue::Entry>,
    fds: Vec<RawFd>,
    paths: Vec<PathBuf>,
    _segments: Vec<Arc<Segment>>,
    _dir: Option<Arc<File>>,
    up_to: Position,
    seq: u64,
    log_id: usize,
}

impl PendingSync {
    /// The `fdatasync` SQEs to submit; `user_data` is the entry's position in this slice.
    pub fn entries(&self) -> &[squeue::Entry] {
        &self.entries
    }

    /// The file descriptors to `fdatasync`, in the order of [`PendingSync::entries`], for
    /// ring drivers that build their own operation. They stay open while `self` lives.
    pub fn fds(&self) -> &[RawFd] {
        &self.fds
    }

    /// Everything up to this position is durable once all entries completed with 0
    /// (and every earlier begun sync completed too).
    pub fn up_to(&self) -> Position {
        self.up_to
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct InflightSync {
    seq: u64,
    epoch: u64,
    up_to: Position,
    done: bool,
}

/// The private ring, created on first use; plain `fdatasync(2)` if io_uring is unavailable.
#[derive(Debug, Default)]
pub(super) struct LazyRing {
    ring: Option<SyncRing>,
    tried: bool,
}

impl LazyRing {
    /// fdatasyncs `files` concurrently and returns each result (0 or `-errno`).
    pub(super) fn fdatasync(&mut self, files: &[&File]) -> io::Result<Vec<i32>> {
        if !self.tried {
            self.tried = true;
            match SyncRing::new() {
                Ok(r) => self.ring = Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring unavailable, syncing with fdatasync(2)")
                }
            }
        }
        match self.ring.as_mut() {
            Some(ring) => {
                let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
                ring.fdatasync_all(&fds)
            }
            None => Ok(files
                .iter()
                .map(|f| match f.sync_data() {
                    Ok(()) => 0,
                    Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
                })
                .collect()),
        }
    }
}

impl Log {
    /// Begins a group commit covering everything appended so far. Returns `None` if
    /// everything appended is already covered by an earlier begun sync.
    pub fn begin_sync(&mut self) -> Result<Option<PendingSync>, StorageError> {
        self.writable()?;
        self.prepare_ahead();
        let any_dirty = self.segs.iter().any(|s| s.dirty);
        if !any_dirty && !self.dir_dirty && self.sync_begun == self.last {
            return Ok(None);
        }
        let mut fds = Vec::new();
        let mut paths = Vec::new();
        let mut segments = Vec::new();
        for s in self.segs.iter_mut().filter(|s| s.dirty) {
            s.dirty = false;
            fds.push(s.w.segment().fd());
            paths.push(s.w.segment().path().to_path_buf());
            segments.push(Arc::clone(s.w.segment()));
        }
        let dir = if self.dir_dirty {
            self.dir_dirty = false;
            fds.push(self.dir_file.as_raw_fd());
            paths.push(self.dir.clone());
            Some(Arc::clone(&self.dir_file))
        } else {
            None
        };
        let entries = fds
            .iter()
            .enumerate()
            .map(|(i, &fd)| fdatasync_entry(fd, i as u64))
            .collect();
        let seq = self.next_sync_seq;
        self.next_sync_seq += 1;
        self.sync_begun = self.last;
        self.inflight.push_back(InflightSync {
            seq,
            epoch: self.epoch,
            up_to: self.last,
            done: false,
        });
        Ok(Some(PendingSync {
            entries,
            fds,
            paths,
            _segments: segments,
            _dir: dir,
            up_to: self.last,
            seq,
            log_id: Arc::as_ptr(&self.shared) as usize,
        }))
    }

    /// Completes a sync with the CQE results of its entries (0 or `-errno`, in the order
    /// of [`PendingSync::entries`]). Returns the durable position. A failed `fdatasync`
    /// puts the log in the failed state: the kernel may have dropped the dirty pages, so
    /// nothing more is reported durable.
    pub fn complete_sync(
        &mut self,
        pending: PendingSync,
        results: &[i32],
    ) -> Result<Position, StorageError> {
        assert_eq!(
            pending.log_id,
            Arc::as_ptr(&self.shared) as usize,
            "sync of another log"
        );
        assert_eq!(results.len(), pending.entries.len(), "one result per entry");
        let slot = self
            .inflight
            .iter_mut()
            .find(|s| s.seq == pending.seq)
            .expect("completed sync was begun and not completed twice");
        slot.done = true;
        if let Some(i) = results.iter().position(|&r| r < 0) {
            let err = StorageError::io(
                "fdatasync",
                &pending.paths[i],
                io::Error::from_raw_os_error(-results[i]),
            );
            return Err(self.fail(err));
        }
        self.writable()?;
        while let Some(front) = self.inflight.front().copied() {
            if !front.done {
                break;
            }
            self.inflight.pop_front();
            if front.epoch == self.epoch && front.up_to > self.durable {
                self.durable = front.up_to;
            }
        }
        assert!(self.durable.index <= self.last.index);
        Ok(self.durable)
    }

    /// Blocking group commit on a private io_uring: returns once everything appended
    /// before the call is durable (unless syncs begun with [`Log::begin_sync`] are still
    /// outstanding, which hold the durable position back until completed).
    pub fn sync(&mut self) -> Result<Position, StorageError> {
        let Some(pending) = self.begin_sync()? else {
            return Ok(self.durable);
        };
        let mut files: Vec<&File> = pending._segments.iter().map(|s| s.file()).collect();
        files.extend(pending._dir.as_deref());
        assert_eq!(files.len(), pending.fds.len());
        let results = match self.ring.fdatasync(&files) {
            Ok(r) => r,
            Err(e) => return Err(self.fail(StorageError::io("io_uring submit", &self.dir, e))),
        };
        self.complete_sync(pending, &results)
    }

    /// Syncs, blocking, every segment that may hold data not known durable (written
    /// since the last begun sync, or holding entries past the durable index, which
    /// covers syncs still in flight) and the directory, then declares the whole log
    /// durable. Used by open, truncate and reset, which must not proceed on unsynced data.
    pub(super) fn sync_all_blocking(&mut self) -> Result<(), StorageError> {
        self.writable()?;
        let durable = self.durable.index;
        let undurable: Vec<&SegState> = self
            .segs
            .iter()
            .filter(|s| s.dirty || s.count() == 0 || s.last_index() > durable)
            .collect();
        let mut files: Vec<&File> = undurable.iter().map(|s| s.w.segment().file()).collect();
        let mut paths: Vec<PathBuf> = undurable
            .iter()
            .map(|s| s.w.segment().path().to_path_buf())
            .collect();
        files.push(&self.dir_file);
        paths.push(self.dir.clone());
        let results = self.ring.fdatasync(&files);
        drop(files);
        drop(undurable);
        let results = match results {
            Ok(r) => r,
            Err(e) => return Err(self.fail(StorageError::io("io_uring submit", &self.dir, e))),
        };
        if let Some(i) = results.iter().position(|&r| r < 0) {
            let err = StorageError::io(
                "fdatasync",
                &paths[i],
                io::Error::from_raw_os_error(-results[i]),
            );
            return Err(self.fail(err));
        }
        for s in &mut self.segs {
            s.dirty = false;
        }
        self.dir_dirty = false;
        self.durable = self.last;
        self.sync_begun = self.last;
        Ok(())
    }
}
