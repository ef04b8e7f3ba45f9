//! A small private io_uring used by the blocking conveniences (`Log::sync`) when the
//! log is used standalone. The shard runtime instead submits the SQEs from
//! [`crate::PendingSync::entries`] on its own ring.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types, IoUring};

/// Depth of the private ring; more fds than this are synced in several rounds.
const SYNC_RING_ENTRIES: u32 = 16;

/// Builds the `fdatasync` SQE for `fd`, tagged with `user_data`.
pub(crate) fn fdatasync_entry(fd: RawFd, user_data: u64) -> squeue::Entry {
    opcode::Fsync::new(types::Fd(fd))
        .flags(types::FsyncFlags::DATASYNC)
        .build()
        .user_data(user_data)
}

/// A private ring that only ever carries `fdatasync` operations.
pub(crate) struct SyncRing {
    ring: IoUring,
}

impl std::fmt::Debug for SyncRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncRing").finish_non_exhaustive()
    }
}

impl SyncRing {
    pub(crate) fn new() -> io::Result<SyncRing> {
        Ok(SyncRing {
            ring: IoUring::new(SYNC_RING_ENTRIES)?,
        })
    }

    /// `fdatasync`s every fd concurrently and waits for all of them. Returns each
    /// operation's result (0 or `-errno`) in the order of `fds`. The caller keeps the
    /// fds open for the duration of the call (they are borrowed from live files).
    pub(crate) fn fdatasync_all(&mut self, fds: &[RawFd]) -> io::Result<Vec<i32>> {
        let mut results = vec![i32::MIN; fds.len()];
        for (chunk_no, chunk) in fds.chunks(SYNC_RING_ENTRIES as usize).enumerate() {
            let base = chunk_no * SYNC_RING_ENTRIES as usize;
            for (i, &fd) in chunk.iter().enumerate() {
                let entry = fdatasync_entry(fd, (base + i) as u64);
                // SAFETY: an fsync SQE references no memory buffers, only a file
                // descriptor, which the caller keeps open until this function returns;
                // we wait for every completion below before returning. The queue has
                // room: the ring is empty between calls and a chunk is at most its depth.
                unsafe { self.ring.submission().push(&entry) }
                    .expect("sync ring has room for one chunk");
            }
            let mut done = 0;
            while done < chunk.len() {
                match self.ring.submit_and_wait(chunk.len() - done) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Operations already submitted may still be in flight; drain them
                        // so none outlives the fds the caller lent us.
                        self.drain(chunk.len() - done, &mut results);
                        return Err(e);
                    }
                }
                for cqe in self.ring.completion() {
                    let slot = cqe.user_data() as usize;
                    assert!(slot < results.len());
                    assert_eq!(results[slot], i32::MIN, "duplicate completion");
                    results[slot] = cqe.result();
                    done += 1;
                }
            }
        }
        assert!(results.iter().all(|&r| r != i32::MIN));
        Ok(results)
    }

    /// Waits (bounded by `outstanding` completions) for in-flight operations after a
    /// submit error, discarding their results.
    fn drain(&mut self, mut outstanding: usize, results: &mut [i32]) {
        let mut attempts = 0;
        while outstanding > 0 && attempts < 1000 {
            attempts += 1;
            let _ = self.ring.submit_and_wait(1);
            for cqe in self.ring.completion() {
                if let Some(r) = results.get_mut(cqe.user_data() as usize) {
                    *r = cqe.result();
                }
                outstanding = outstanding.saturating_sub(1);
            }
        }
    }
}
