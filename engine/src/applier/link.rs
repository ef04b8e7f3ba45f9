//! The two ends connecting one shard thread to the applier thread: commit indexes one way,
//! results and the applied watermark the other. Everything is bounded and allocated here,
//! at start-up.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::machine::Applied;
use crate::spsc::{self, CommitPublisher, Consumer, Doorbell, Producer, Publish};

/// Per-shard state both threads read; each field on its own cache line because they are
/// written by different threads at different rates.
#[derive(Debug, Default)]
pub(crate) struct ShardShared {
    /// Highest index applied to the shard's state machine. Written (Release) only by the
    /// applier after the state machine returned.
    pub(crate) applied: CachePadded<AtomicU64>,
    /// Latest term in which this node became leader of the shard (0: never). Written
    /// (Release) by the shard *before* it appends the term's first entry, read by the
    /// applier after it popped a commit covering that entry, so the applier always sees it.
    pub(crate) led_term: CachePadded<AtomicU64>,
    /// Set by a shard that sleeps in its ring while clients wait for the applier; the
    /// applier clears it and writes one byte to `waker` after advancing `applied`.
    wake_wanted: CachePadded<AtomicBool>,
    /// The applier's end of the shard's wake-up socket, if the shard asked for one.
    waker: OnceLock<UnixStream>,
}

impl ShardShared {
    /// Called by the applier after publishing a new applied index.
    pub(crate) fn wake_shard(&self) {
        // Pairs with the fence in `ShardLink::request_wake`: either the shard sees the new
        // applied index, or this load sees its request.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.wake_wanted.load(Ordering::Relaxed)
            && self.wake_wanted.swap(false, Ordering::AcqRel)
        {
            if let Some(mut waker) = self.waker.get() {
                // Non-blocking: at most one byte is outstanding per request, and a full
                // socket already means the shard will wake.
                let _ = waker.write(&[1]);
            }
        }
    }
}

/// Creates the link for one shard: a commit ring of `commit_ring_entries` and a result ring
/// of `result_ring_entries` (both powers of two, from tuning). `doorbell` wakes a parked
/// applier; pass `None` when the applier spins and never parks.
pub fn link(
    commit_ring_entries: usize,
    result_ring_entries: usize,
    doorbell: Option<Arc<Doorbell>>,
) -> (ShardLink, ApplierLink) {
    let (commit_tx, commit_rx) = spsc::channel::<u64>(commit_ring_entries);
    let (result_tx, result_rx) = spsc::channel::<Applied>(result_ring_entries);
    let shared = Arc::new(ShardShared::default());
    let shard = ShardLink {
        commits: CommitPublisher::new(commit_tx, doorbell),
        results: result_rx,
        shared: Arc::clone(&shared),
    };
    let applier = ApplierLink {
        commits: commit_rx,
        results: result_tx,
        shared,
    };
    (shard, applier)
}

/// The shard thread's end.
#[derive(Debug)]
pub struct ShardLink {
    commits: CommitPublisher,
    results: Consumer<Applied>,
    shared: Arc<ShardShared>,
}

impl ShardLink {
    /// Hands the shard's commit index to the applier; never blocks, never drops (see
    /// [`CommitPublisher`]). Call again or [`flush`](Self::flush) on the next loop turn
    /// when it returns [`Publish::Pending`].
    pub fn publish_commit(&mut self, commit: u64) -> Publish {
        self.commits.publish(commit)
    }

    /// Retries a pending commit index; true when nothing is pending.
    pub fn flush(&mut self) -> bool {
        self.commits.flush()
    }

    /// Commits handed over no longer wake a parked applier by themselves: the shard calls
    /// [`wake_applier`](Self::wake_applier) when it chooses (see
    /// [`CommitPublisher::defer_wakes`]).
    pub fn defer_applier_wakes(&mut self) {
        self.commits.defer_wakes();
    }

    /// Wakes the applier if commits were handed over since it was last woken.
    pub fn wake_applier(&mut self) {
        self.commits.wake();
    }

    /// Entries committed since the applier was last woken (0 when it owes no wake-up).
    pub fn unwoken_entries(&self) -> u64 {
        self.commits.unrung_entries()
    }

    /// Flushes for at most `timeout`; for shutdown, before the applier is stopped.
    pub fn flush_for(&mut self, timeout: Duration) -> bool {
        self.commits.flush_for(timeout)
    }

    /// Records that this node became leader in `term`. Must be called before the term's
    /// first entry (the no-op) is appended, so the applier applies that term's entries in
    /// the [`Leader`](super::ApplyRole::Leader) role.
    ///
    /// # Panics
    /// If `term` is not above the last term recorded: a node leads each term at most once.
    pub fn became_leader(&self, term: u64) {
        let previous = self.shared.led_term.load(Ordering::Relaxed);
        assert!(term > previous, "led term {term} not above {previous}");
        self.shared.led_term.store(term, Ordering::Release);
    }

    /// Creates the socket the applier uses to wake this shard (see
    /// [`ShardLink::request_wake`]) and returns the shard's end, to be polled for
    /// readability on the shard's ring. Call once, before the applier starts.
    pub fn wake_socket(&self) -> std::io::Result<UnixStream> {
        let (shard_end, applier_end) = UnixStream::pair()?;
        shard_end.set_nonblocking(true)?;
        applier_end.set_nonblocking(true)?;
        self.shared
            .waker
            .set(applier_end)
            .map_err(|_| std::io::Error::other("wake socket already created"))?;
        Ok(shard_end)
    }

    /// Asks the applier to write to the wake socket after it next advances the applied
    /// index. Returns false when that index has already moved past `seen` (no need to
    /// sleep). Release/Acquire on the flag pairs with the applier's store of `applied`.
    pub fn request_wake(&self, seen: u64) -> bool {
        self.shared.wake_wanted.store(true, Ordering::Release);
        // Re-check after raising the flag: an advance between the caller's read and the
        // flag would otherwise be missed until the next timeout. The fence pairs with the
        // one in the applier's `wake_shard`.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.applied_index() == seen
    }

    /// Takes the next leader-role result, in index order.
    pub fn pop_result(&mut self) -> Option<Applied> {
        self.results.pop()
    }

    /// Highest index applied so far.
    pub fn applied_index(&self) -> u64 {
        self.shared.applied.load(Ordering::Acquire)
    }

    /// A cloneable reader of the applied watermark, for client connections.
    pub fn watermark(&self) -> AppliedWatermark {
        AppliedWatermark {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The commit publisher, for its counters (`sent`, `pending`, `offered`).
    pub fn commits(&self) -> &CommitPublisher {
        &self.commits
    }
}

/// Read-only view of one shard's applied index.
#[derive(Debug, Clone)]
pub struct AppliedWatermark {
    shared: Arc<ShardShared>,
}

impl AppliedWatermark {
    /// Highest index applied so far. Acquire: whatever the applier did before publishing
    /// (the state machine's writes) is visible after reading it.
    pub fn get(&self) -> u64 {
        self.shared.applied.load(Ordering::Acquire)
    }
}

/// The applier thread's end; goes into [`ShardApplier::new`](super::ShardApplier::new).
#[derive(Debug)]
pub struct ApplierLink {
    pub(crate) commits: Consumer<u64>,
    pub(crate) results: Producer<Applied>,
    pub(crate) shared: Arc<ShardShared>,
}

impl ApplierLink {
    /// A reader of the same watermark the shard sees.
    pub fn watermark(&self) -> AppliedWatermark {
        AppliedWatermark {
            shared: Arc::clone(&self.shared),
        }
    }
}
