//! Bounded lock-free single-producer single-consumer ring, and the shard-side
//! [`CommitPublisher`] that hands commit indexes to the applier without ever dropping one.
//!
//! Why a hand-rolled ring: the shard thread must never block and never allocate on the hot
//! path, and a std channel pays for multi-producer generality (a CAS per send, a linked
//! block list). Here the producer owns `tail`, the consumer owns `head`, each on its own
//! cache line, and each side keeps a *cached* copy of the other side's index so the shared
//! line is only read when the ring looks full (producer) or empty (consumer).
//!
//! Memory ordering: the producer writes the slot, then stores `tail` with `Release`; the
//! consumer loads `tail` with `Acquire` before reading the slot (so the slot write happens
//! before the read). Symmetrically the consumer stores `head` with `Release` after moving the
//! value out, and the producer loads `head` with `Acquire` before overwriting that slot.
//!
//! This file is one of the three places `unsafe` may live (with the io_uring driver and the
//! mmap segment). Every block states why it is sound.

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{Thread, ThreadId};
use std::time::Duration;

use crossbeam_utils::CachePadded;

/// Largest capacity accepted: keeps `tail - head` arithmetic far from wrapping ambiguity and
/// the slot array at a size that is allocated once at start-up.
pub const CAPACITY_MAX: usize = 1 << 24;

/// State shared by the two handles. Allocated once; never resized.
struct Shared<T> {
    /// Next position the consumer reads. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next position the producer writes. Written only by the producer.
    tail: CachePadded<AtomicUsize>,
    /// Set when the producer handle is dropped, so the consumer can tell "empty for now"
    /// from "empty forever".
    producer_closed: CachePadded<AtomicBool>,
    /// Set when the consumer handle is dropped, so the producer can stop waiting for space.
    consumer_closed: AtomicBool,
    /// `capacity - 1`; capacity is a power of two so a position maps to a slot with a mask.
    mask: usize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: `Shared` is only reachable through one `Producer` and one `Consumer`. A slot is
// written only by the producer while it lies in `[tail, head + capacity)` (free), and read
// only by the consumer while it lies in `[head, tail)` (full); the Release/Acquire pairs on
// `head`/`tail` order those accesses, so no slot is ever accessed by both threads at once.
// Values of `T` move between threads, hence `T: Send`.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; moving the whole structure moves `T` values, which requires `T: Send`.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Shared<T> {
    fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Pointer to the slot for `position`.
    fn slot(&self, position: usize) -> *mut MaybeUninit<T> {
        self.slots[position & self.mask].get()
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both handles are gone (this is the last `Arc`), so plain reads are exact.
        let head = *self.head.get_mut();
        let tail = *self.tail.get_mut();
        assert!(tail.wrapping_sub(head) <= self.capacity());
        let mut position = head;
        while position != tail {
            // SAFETY: positions in `[head, tail)` hold values the producer published and the
            // consumer never moved out; we have exclusive access (`&mut self`), and each
            // position is dropped exactly once because `position` advances by one.
            unsafe { (*self.slot(position)).assume_init_drop() };
            position = position.wrapping_add(1);
        }
    }
}

/// Error of [`Producer::push`]: the ring is full; the value is handed back, never dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full<T>(pub T);

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("spsc ring is full")
    }
}

impl<T: fmt::Debug> std::error::Error for Full<T> {}

/// Creates a ring holding up to `capacity` values and returns its two ends.
///
/// # Panics
/// If `capacity` is zero, not a power of two, or above [`CAPACITY_MAX`]: ring sizes come
/// from validated tuning, so a bad one here is a bug.
pub fn channel<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    assert!(capacity > 0, "spsc capacity must be positive");
    assert!(
        capacity.is_power_of_two(),
        "spsc capacity {capacity} is not a power of two"
    );
    assert!(
        capacity <= CAPACITY_MAX,
        "spsc capacity {capacity} above {CAPACITY_MAX}"
    );
    let slots: Box<[UnsafeCell<MaybeUninit<T>>]> = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    assert_eq!(slots.len(), capacity);
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        producer_closed: CachePadded::new(AtomicBool::new(false)),
        consumer_closed: AtomicBool::new(false),
        mask: capacity - 1,
        slots,
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: 0,
        head_cached: 0,
    };
    let consumer = Consumer {
        shared,
        head: 0,
        tail_cached: 0,
    };
    (producer, consumer)
}

/// The writing end. `Send` (it may move to the shard thread once) but not `Clone`: a second
/// producer would break the single-writer rule that makes the ring lock-free.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Our own copy of `shared.tail` (only we write it, so it is always exact).
    tail: usize,
    /// Last `shared.head` we loaded; the consumer only moves it forward, so it is a lower
    /// bound on free space and we reload it only when the ring looks full.
    head_cached: usize,
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.shared.capacity())
            .field("tail", &self.tail)
            .field("head_cached", &self.head_cached)
            .finish()
    }
}

impl<T: Send> Producer<T> {
    /// Appends `value`, or hands it back in [`Full`] when the consumer is `capacity` behind.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), Full<T>> {
        let capacity = self.shared.capacity();
        if self.tail.wrapping_sub(self.head_cached) == capacity {
            // Pairs with the consumer's Release store of `head`: once we see the new head,
            // the consumer has finished moving the value out of every slot before it.
            self.head_cached = self.shared.head.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_cached) == capacity {
                return Err(Full(value));
            }
        }
        assert!(self.tail.wrapping_sub(self.head_cached) < capacity);
        // SAFETY: the slot at `tail` is free: `tail - head < capacity`, so the consumer has
        // moved its previous value out (its Release on `head`, our Acquire above or earlier)
        // and will not read it until we publish `tail + 1` below.
        unsafe { (*self.shared.slot(self.tail)).write(value) };
        self.tail = self.tail.wrapping_add(1);
        // Release: the slot write above happens-before the consumer's Acquire load of tail.
        self.shared.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Number of values the ring can hold.
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// Values currently queued (exact for the producer up to concurrent pops, which only
    /// make it smaller).
    pub fn len(&self) -> usize {
        let head = self.shared.head.load(Ordering::Acquire);
        self.tail.wrapping_sub(head)
    }

    /// Whether the consumer has taken everything pushed so far.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the consumer end was dropped: pushing still works but nobody will read.
    pub fn is_consumer_closed(&self) -> bool {
        self.shared.consumer_closed.load(Ordering::Acquire)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Release: everything we published is visible to a consumer that sees `closed`.
        self.shared.producer_closed.store(true, Ordering::Release);
    }
}

/// The reading end. `Send` but not `Clone`, for the same reason as [`Producer`].
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Our own copy of `shared.head` (only we write it).
    head: usize,
    /// Last `shared.tail` we loaded; only grows, so values below it are ready to read.
    tail_cached: usize,
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.shared.capacity())
            .field("head", &self.head)
            .field("tail_cached", &self.tail_cached)
            .finish()
    }
}

impl<T: Send> Consumer<T> {
    /// Takes the oldest value, or `None` when the ring is empty right now.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.tail_cached && !self.refresh_tail() {
            return None;
        }
        assert!(self.tail_cached.wrapping_sub(self.head) <= self.shared.capacity());
        // SAFETY: `head < tail_cached`, and `tail_cached` came from an Acquire load of the
        // producer's Release store, so the slot at `head` holds an initialised value that the
        // producer will not touch until we publish `head + 1`. We move it out exactly once.
        let value = unsafe { (*self.shared.slot(self.head)).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        // Release: our read of the slot happens-before the producer reuses it.
        self.shared.head.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Moves every value that is ready into `sink`, publishing the new head once at the end
    /// (one shared-line write per batch instead of per value). Returns how many were taken.
    #[inline]
    pub fn pop_batch(&mut self, mut sink: impl FnMut(T)) -> usize {
        self.refresh_tail();
        let ready = self.tail_cached.wrapping_sub(self.head);
        assert!(ready <= self.shared.capacity());
        for _ in 0..ready {
            // SAFETY: same argument as `pop`: every position in `[head, tail_cached)` was
            // published by the producer (Acquire in `refresh_tail`) and is read once here.
            let value = unsafe { (*self.shared.slot(self.head)).assume_init_read() };
            self.head = self.head.wrapping_add(1);
            sink(value);
        }
        if ready > 0 {
            self.shared.head.store(self.head, Ordering::Release);
        }
        ready
    }

    /// The oldest value without taking it.
    pub fn peek(&mut self) -> Option<&T> {
        if self.head == self.tail_cached && !self.refresh_tail() {
            return None;
        }
        // SAFETY: as in `pop`, the slot at `head` is initialised and owned by the consumer
        // side; the shared borrow ends before any `&mut self` call can move it out.
        Some(unsafe { (*self.shared.slot(self.head)).assume_init_ref() })
    }

    /// Whether nothing is ready, loading the producer's index afresh (used before sleeping,
    /// where a stale cached index would miss a wake-up).
    pub fn is_empty(&mut self) -> bool {
        self.head == self.tail_cached && !self.refresh_tail()
    }

    /// Values ready to pop right now.
    pub fn len(&mut self) -> usize {
        self.refresh_tail();
        self.tail_cached.wrapping_sub(self.head)
    }

    /// Number of values the ring can hold.
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// Whether the producer was dropped. Values it pushed before may still be queued: check
    /// `is_empty` after this returns true to know the stream is over.
    pub fn is_producer_closed(&self) -> bool {
        self.shared.producer_closed.load(Ordering::Acquire)
    }

    /// Reloads the producer's tail; returns whether anything is ready.
    #[inline]
    fn refresh_tail(&mut self) -> bool {
        // Pairs with the producer's Release store of `tail`.
        self.tail_cached = self.shared.tail.load(Ordering::Acquire);
        self.head != self.tail_cached
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.shared.consumer_closed.store(true, Ordering::Release);
    }
}

/// Wakes one sleeping consumer thread that reads from one or more rings (the applier reads
/// one commit ring per shard). Producers call [`Doorbell::ring`] after publishing; the
/// consumer calls [`Doorbell::sleep`] when it found every ring empty.
///
/// Lost wake-ups are impossible: the sleeper sets `sleeping` then re-checks its rings, the
/// producer publishes then reads `sleeping`, and both sides put a `SeqCst` fence between their
/// store and their load (the Dekker pattern), so at least one of them sees the other.
/// `Thread::unpark` also leaves a token when the target is not parked yet.
pub struct Doorbell {
    sleeping: CachePadded<AtomicBool>,
    sleeper: OnceLock<Thread>,
}

impl fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doorbell")
            .field("sleeping", &self.sleeping.load(Ordering::Relaxed))
            .field("sleeper", &self.sleeper.get().map(Thread::id))
            .finish()
    }
}

impl Doorbell {
    /// A doorbell with no sleeper yet; the first thread to [`sleep`](Self::sleep) owns it.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            sleeping: CachePadded::new(AtomicBool::new(false)),
            sleeper: OnceLock::new(),
        })
    }

    /// Called by a producer after it published: wakes the sleeper if it is (about to be)
    /// parked. Costs one fence and one load when nobody sleeps.
    #[inline]
    pub fn ring(&self) {
        fence(Ordering::SeqCst);
        // Acquire: pairs with the Release in `sleep`, so the registered thread is visible.
        if self.sleeping.load(Ordering::Acquire) {
            if let Some(thread) = self.sleeper.get() {
                thread.unpark();
            }
        }
    }

    /// Parks the calling thread for at most `timeout` unless `has_work` reports work after
    /// the sleeping flag is raised. Returns whether it actually parked.
    ///
    /// # Panics
    /// If called from two different threads: a doorbell has exactly one sleeper.
    pub fn sleep(&self, timeout: Duration, has_work: impl FnOnce() -> bool) -> bool {
        let me = std::thread::current();
        let owner: ThreadId = self.sleeper.get_or_init(|| me.clone()).id();
        assert_eq!(owner, me.id(), "a doorbell has a single sleeping thread");
        // Release: publishes the registration above to a producer that sees `true`.
        self.sleeping.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        let parked = if has_work() {
            false
        } else {
            std::thread::park_timeout(timeout);
            true
        };
        self.sleeping.store(false, Ordering::Relaxed);
        parked
    }
}

/// What [`CommitPublisher::publish`] did with a commit index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// The newest commit index is in the ring; nothing is pending.
    Sent,
    /// The ring was full: the newest index is kept and goes out on the next call or flush.
    Pending,
    /// The index was not newer than one already offered; nothing to do.
    Unchanged,
}

/// Shard-side sender of commit indexes. Never drops work: when the ring is full it keeps the
/// newest index pending and sends it on the next [`publish`](Self::publish) or
/// [`flush`](Self::flush). Commit indexes only grow and the applier applies everything up to
/// the index it receives, so replacing a pending index by a newer one loses nothing.
///
/// Every index that reaches the ring is strictly greater than the one before it.
#[derive(Debug)]
pub struct CommitPublisher {
    producer: Producer<u64>,
    /// Rung after each successful push when the consumer may park (not with a spinning one),
    /// or by [`wake`](Self::wake) once wake-ups are deferred.
    doorbell: Option<Arc<Doorbell>>,
    deferred: bool,
    /// `sent` when the doorbell was last rung: pushes since then are owed a ring.
    rung_at: u64,
    /// Newest index offered by the caller and not yet in the ring.
    pending: Option<u64>,
    /// Newest index offered by the caller (in the ring or pending).
    offered: u64,
    /// Newest index pushed into the ring.
    sent: u64,
}

impl CommitPublisher {
    /// Wraps the producer end of a commit ring. `doorbell` is rung after every push until
    /// [`defer_wakes`](Self::defer_wakes) is called.
    pub fn new(producer: Producer<u64>, doorbell: Option<Arc<Doorbell>>) -> Self {
        Self {
            producer,
            doorbell,
            deferred: false,
            rung_at: 0,
            pending: None,
            offered: 0,
            sent: 0,
        }
    }

    /// From now on a push does not ring the doorbell; the caller rings it with
    /// [`wake`](Self::wake) when it suits it, for example after its own messages left:
    /// waking a parked consumer is a system call and, where threads share cores, one more
    /// thread competing for them. Nothing is lost meanwhile: a consumer that is awake finds
    /// the pushed indexes without a ring. A full ring is still rung at once.
    pub fn defer_wakes(&mut self) {
        self.deferred = true;
    }

    /// Rings the doorbell if indexes were pushed since it was last rung.
    pub fn wake(&mut self) {
        if self.sent != self.rung_at {
            self.ring();
        }
    }

    /// How far the newest pushed index is past the one the doorbell was last rung for (0
    /// when nothing waits for a ring).
    pub fn unrung_entries(&self) -> u64 {
        self.sent - self.rung_at
    }

    fn ring(&mut self) {
        self.rung_at = self.sent;
        if let Some(doorbell) = &self.doorbell {
            doorbell.ring();
        }
    }

    /// Offers the shard's current commit index.
    ///
    /// # Panics
    /// If `commit` is below an index offered before: Raft's commit index never decreases,
    /// so that is a bug in the caller.
    pub fn publish(&mut self, commit: u64) -> Publish {
        assert!(
            commit >= self.offered,
            "commit index went backwards: {commit} < {}",
            self.offered
        );
        if commit == self.offered {
            if self.pending.is_none() {
                return Publish::Unchanged;
            }
            // A repeated offer still retries the pending push: the shard loop relies on
            // repeated calls to make progress.
            return if self.flush() {
                Publish::Sent
            } else {
                Publish::Pending
            };
        }
        self.offered = commit;
        self.pending = Some(commit);
        if self.flush() {
            Publish::Sent
        } else {
            Publish::Pending
        }
    }

    /// Tries to push the pending index; returns true when nothing is pending afterwards.
    pub fn flush(&mut self) -> bool {
        let Some(commit) = self.pending else {
            return true;
        };
        assert!(commit > self.sent);
        assert!(commit == self.offered);
        match self.producer.push(commit) {
            Ok(()) => {
                self.sent = commit;
                self.pending = None;
                if !self.deferred {
                    self.ring();
                }
                true
            }
            Err(Full(_)) => {
                // Wake the consumer even when wake-ups are deferred: a full ring means it
                // has work, even if it somehow missed an earlier ring.
                self.ring();
                false
            }
        }
    }

    /// Flushes until nothing is pending or `timeout` passes (spinning, then yielding).
    /// For shutdown: a shard calls this before the applier is asked to stop.
    pub fn flush_for(&mut self, timeout: Duration) -> bool {
        let start = std::time::Instant::now();
        let mut spins = 0u32;
        loop {
            if self.flush() {
                self.wake();
                return true;
            }
            if self.producer.is_consumer_closed() || start.elapsed() >= timeout {
                return false;
            }
            spins = spins.saturating_add(1);
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// The index waiting for ring space, if any.
    pub fn pending(&self) -> Option<u64> {
        self.pending
    }

    /// The newest index pushed into the ring.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The newest index offered (sent or pending).
    pub fn offered(&self) -> u64 {
        self.offered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_unread_values() {
        let marker = Arc::new(());
        let (mut producer, consumer) = channel::<Arc<()>>(4);
        producer.push(Arc::clone(&marker)).unwrap();
        producer.push(Arc::clone(&marker)).unwrap();
        assert_eq!(Arc::strong_count(&marker), 3);
        drop(producer);
        drop(consumer);
        assert_eq!(Arc::strong_count(&marker), 1);
    }

    #[test]
    fn wraps_around_many_times() {
        let (mut producer, mut consumer) = channel::<u64>(2);
        for value in 0..1000u64 {
            producer.push(value).unwrap();
            assert_eq!(consumer.peek(), Some(&value));
            assert_eq!(consumer.pop(), Some(value));
        }
        assert!(consumer.is_empty());
    }
}
