//! The applier loop: pop the newest commit index of each shard, read the entries between the
//! last applied index and it, apply each exactly once in order, publish the watermark, send
//! leader results back. Idles by spinning, spinning then parking, or parking, as tuned.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::link::ApplierLink;
use super::machine::{Applied, ApplyResult, ApplyRole, EntrySource, StateMachine};
use crate::placement::Placement;
use crate::spsc::{Doorbell, Full};
use crate::tuning::IdleStrategy;

/// Entries the applier has the machine prefetch ([`StateMachine::prefetch`]) before it
/// applies them: enough lookups to overlap their cache misses, few enough that what they
/// bring in (a few cache lines each) stays in the core's L1/L2 until applied.
pub const PREFETCH_AHEAD: u64 = 128;

/// PAUSE instructions per idle pass of a spinning applier. Re-reading every shard's commit
/// index line in a tight loop pulls that line away from the shard on each of its pushes
/// (halving the shard's publish rate in the SPSC bench); pausing about a microsecond between
/// passes lets commits batch up at a latency cost well below a wake-up's.
pub const SPIN_IDLE_PAUSES: u32 = 128;

/// Why the applier stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum ApplierError {
    /// The entry source failed to read committed entries: a storage fault.
    #[error("shard {shard}: reading committed entries {first}..={last} failed: {source}")]
    Read {
        shard: usize,
        first: u64,
        last: u64,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The entry source broke its contract (skipped, repeated or reordered an index, or a
    /// term went backwards): the log is corrupt or the reader is buggy.
    #[error("shard {shard}: entry source gave a bad entry at index {index}: {reason}")]
    BadEntry {
        shard: usize,
        index: u64,
        reason: &'static str,
    },
    /// The applier thread panicked (a broken invariant in a state machine or here).
    #[error("applier thread panicked")]
    Panicked,
}

/// How the applier runs. Built from the host tuning file.
#[derive(Debug, Clone)]
pub struct ApplierConfig {
    /// What to do when no shard has work.
    pub idle: IdleStrategy,
    /// Longest park before re-checking the rings; a safety net, wake-ups come from the
    /// doorbell.
    pub park_timeout: Duration,
    /// Most entries applied for one shard before looking at the next, so a follower catching
    /// up on one shard does not starve the others. Also bounds the pending results.
    pub batch_entries_max: usize,
    /// Where the applier thread runs, if anywhere in particular.
    pub placement: Option<Placement>,
}

impl Default for ApplierConfig {
    fn default() -> Self {
        Self {
            idle: IdleStrategy::Wait,
            park_timeout: Duration::from_millis(100),
            batch_entries_max: 1024,
            placement: None,
        }
    }
}

/// The applier's state for one shard: its link, state machine and entry source.
pub struct ShardApplier<S, E> {
    shard: usize,
    link: ApplierLink,
    machine: S,
    source: E,
    /// Newest commit index known, never below `applied`.
    commit: u64,
    /// Newest value popped from the ring (the publisher sends strictly increasing values,
    /// possibly at or below a restored `applied`).
    popped: u64,
    /// Last index applied; equals `machine.applied_index()` between batches.
    applied: u64,
    /// Term of the last applied entry; log terms never decrease.
    applied_term: u64,
    /// Leader results waiting for room in the result ring; bounded by one batch because no
    /// new batch starts while any are waiting.
    results: VecDeque<Applied>,
    /// Results discarded because the shard end was gone or the applier was draining.
    results_dropped: u64,
}

impl<S, E> fmt::Debug for ShardApplier<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardApplier")
            .field("shard", &self.shard)
            .field("commit", &self.commit)
            .field("applied", &self.applied)
            .field("results_pending", &self.results.len())
            .field("results_dropped", &self.results_dropped)
            .finish()
    }
}

impl<S: StateMachine, E: EntrySource> ShardApplier<S, E> {
    /// Starts applying shard `shard` after `machine.applied_index()` (0 for a fresh machine,
    /// the snapshot index after a restore).
    pub fn new(shard: usize, link: ApplierLink, machine: S, source: E) -> Self {
        let applied = machine.applied_index();
        link.shared.applied.store(applied, Ordering::Release);
        Self {
            shard,
            link,
            machine,
            source,
            commit: applied,
            popped: 0,
            applied,
            applied_term: 0,
            results: VecDeque::new(),
            results_dropped: 0,
        }
    }

    /// The state machine (for reads on the applier thread and for tests).
    pub fn machine(&self) -> &S {
        &self.machine
    }

    /// Last index applied.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Results discarded because nobody could receive them.
    pub fn results_dropped(&self) -> u64 {
        self.results_dropped
    }

    /// One turn for this shard: flush results, pop commits, apply up to `batch_max` entries.
    /// Returns whether anything moved. With `draining`, results that do not fit are dropped
    /// so that applying never waits on a shard that is shutting down.
    fn step(&mut self, batch_max: usize, draining: bool) -> Result<bool, ApplierError> {
        assert!(batch_max > 0);
        let mut progress = self.flush_results(draining);
        let mut newest = self.popped;
        let popped = self.link.commits.pop_batch(|commit| {
            // The publisher sends strictly increasing indexes; anything else is a bug there.
            assert!(commit > newest, "commit {commit} not above {newest}");
            newest = commit;
        });
        self.popped = newest;
        self.commit = self.commit.max(newest);
        progress |= popped > 0;
        if !self.results.is_empty() || self.applied == self.commit {
            return Ok(progress);
        }
        assert!(self.applied < self.commit);
        let batch = u64::try_from(batch_max).unwrap_or(u64::MAX);
        let first = self.applied + 1;
        let last = self.commit.min(self.applied.saturating_add(batch));
        let outcome = self.apply_range(first, last);
        // Publish what was applied even when the source failed part-way: those entries are
        // applied, and readers of the watermark must not wait for them.
        // Release: the state machine's writes happen-before a reader that sees the index.
        self.link
            .shared
            .applied
            .store(self.applied, Ordering::Release);
        self.link.shared.wake_shard();
        outcome?;
        assert_eq!(self.applied, last);
        assert_eq!(self.machine.applied_index(), last);
        assert!(self.results.len() <= batch_max);
        self.flush_results(draining);
        Ok(true)
    }

    /// Applies `first..=last`, checking the source keeps its contract.
    fn apply_range(&mut self, first: u64, last: u64) -> Result<(), ApplierError> {
        assert!(first <= last);
        assert_eq!(first, self.applied + 1);
        // Acquire: pairs with `ShardLink::became_leader`; stored before the term's entries
        // were appended, hence before the commit we popped was published.
        let led_term = self.link.shared.led_term.load(Ordering::Acquire);
        let shard = self.shard;
        let source = &mut self.source;
        let results = &mut self.results;
        let mut next = first;
        let mut term_floor = self.applied_term;
        let mut bad: Option<ApplierError> = None;
        let mut visited = Ok(());
        self.machine.with_batch(&mut |machine| {
            // Chunks of PREFETCH_AHEAD entries: the machine first looks up what a chunk
            // will touch (independent lookups overlap their cache misses), then applies it.
            let mut from = first;
            while from <= last {
                let to = last.min(from + PREFETCH_AHEAD - 1);
                source.peek(from, to, &mut |payload| machine.prefetch(payload));
                visited = source.visit(from, to, &mut |index, term, payload| {
                    if bad.is_some() {
                        return;
                    }
                    let reason = if index != next {
                        Some("index out of order")
                    } else if index > to {
                        Some("index past the requested range")
                    } else if term < term_floor {
                        Some("term went backwards")
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        bad = Some(ApplierError::BadEntry {
                            shard,
                            index,
                            reason,
                        });
                        return;
                    }
                    let role = if term == led_term {
                        ApplyRole::Leader
                    } else {
                        ApplyRole::Follower
                    };
                    let result = machine.apply(role, index, term, payload);
                    assert_eq!(machine.applied_index(), index, "state machine lost count");
                    // Only what a waiting client can use goes back: a rejection, or reply
                    // bytes. An empty `Done` (or a no-op) tells the shard nothing the commit
                    // did not.
                    let for_client = match &result {
                        ApplyResult::NoOp => false,
                        ApplyResult::Done(reply) => !reply.is_empty(),
                        ApplyResult::Rejected(_) => true,
                    };
                    if role == ApplyRole::Leader && for_client {
                        results.push_back(Applied {
                            index,
                            term,
                            result,
                        });
                    }
                    term_floor = term;
                    next = index + 1;
                });
                if visited.is_err() || bad.is_some() || next != to + 1 {
                    break;
                }
                from = to + 1;
            }
        });
        // Whatever was applied is applied, even if the source failed afterwards.
        self.applied = next - 1;
        self.applied_term = term_floor;
        if let Err(source) = visited {
            return Err(ApplierError::Read {
                shard,
                first,
                last,
                source: Box::new(source),
            });
        }
        if let Some(error) = bad {
            return Err(error);
        }
        if next != last + 1 {
            return Err(ApplierError::BadEntry {
                shard,
                index: next,
                reason: "entry source returned fewer entries than asked",
            });
        }
        Ok(())
    }

    /// Pushes waiting results in order; returns whether any left the queue.
    fn flush_results(&mut self, draining: bool) -> bool {
        let before = self.results.len();
        if self.link.results.is_consumer_closed() {
            self.drop_results();
            return before > 0;
        }
        while let Some(applied) = self.results.pop_front() {
            if let Err(Full(applied)) = self.link.results.push(applied) {
                self.results.push_front(applied);
                break;
            }
        }
        if draining {
            self.drop_results();
        }
        self.results.len() < before
    }

    fn drop_results(&mut self) {
        let dropped = u64::try_from(self.results.len()).unwrap_or(u64::MAX);
        if dropped > 0 {
            tracing::warn!(
                shard = self.shard,
                dropped,
                "applier dropped results nobody can receive"
            );
        }
        self.results_dropped = self.results_dropped.saturating_add(dropped);
        self.results.clear();
    }

    /// Whether new commits are waiting (fresh load: used right before parking).
    fn has_commits(&mut self) -> bool {
        !self.link.commits.is_empty()
    }
}

/// The applier: owns every shard's state machine and runs on its own thread.
pub struct Applier<S, E> {
    config: ApplierConfig,
    doorbell: Arc<Doorbell>,
    shards: Vec<ShardApplier<S, E>>,
}

impl<S, E> fmt::Debug for Applier<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Applier")
            .field("config", &self.config)
            .field("shards", &self.shards)
            .finish()
    }
}

impl<S: StateMachine + 'static, E: EntrySource + 'static> Applier<S, E> {
    /// `doorbell` must be the one given to every shard's [`link`](super::link) when the idle
    /// strategy parks; otherwise a parked applier only wakes on `park_timeout`.
    ///
    /// # Panics
    /// If `batch_entries_max` is zero or `shards` is empty.
    pub fn new(
        config: ApplierConfig,
        doorbell: Arc<Doorbell>,
        shards: Vec<ShardApplier<S, E>>,
    ) -> Self {
        assert!(config.batch_entries_max > 0);
        assert!(!shards.is_empty());
        Self {
            config,
            doorbell,
            shards,
        }
    }

    /// One pass over every shard; returns whether any made progress. Exposed so tests can
    /// drive the applier deterministically without a thread.
    pub fn poll(&mut self) -> Result<bool, ApplierError> {
        self.poll_inner(false)
    }

    fn poll_inner(&mut self, draining: bool) -> Result<bool, ApplierError> {
        let batch_max = self.config.batch_entries_max;
        let mut progress = false;
        for shard in &mut self.shards {
            progress |= shard.step(batch_max, draining)?;
        }
        Ok(progress)
    }

    /// The per-shard states.
    pub fn shards(&self) -> &[ShardApplier<S, E>] {
        &self.shards
    }

    /// Runs until `stop` is set, then drains: applies every commit published before the stop
    /// was observed, and returns the state machines in shard order.
    pub fn run(mut self, stop: &AtomicBool) -> Result<Vec<S>, ApplierError> {
        let mut idle_since: Option<Instant> = None;
        loop {
            if self.poll_inner(false)? {
                idle_since = None;
                continue;
            }
            // Acquire: pairs with `ApplierHandle::stop`; commits published before the stop
            // request are visible to the drain below.
            if stop.load(Ordering::Acquire) {
                break;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            match self.config.idle {
                IdleStrategy::Spin => spin_pause(),
                IdleStrategy::SpinThenWait { spin_us } => {
                    if since.elapsed() < Duration::from_micros(spin_us) {
                        spin_pause();
                    } else {
                        self.park(stop);
                    }
                }
                IdleStrategy::Wait => self.park(stop),
            }
        }
        while self.poll_inner(true)? {}
        for shard in &mut self.shards {
            assert!(shard.has_commits() || shard.applied == shard.commit);
            assert!(shard.results.is_empty());
        }
        Ok(self.shards.into_iter().map(|shard| shard.machine).collect())
    }

    fn park(&mut self, stop: &AtomicBool) {
        let shards = &mut self.shards;
        self.doorbell.sleep(self.config.park_timeout, || {
            stop.load(Ordering::Acquire) || shards.iter_mut().any(ShardApplier::has_commits)
        });
    }

    /// Starts the applier on its own thread, placed as `config.placement` says (a failure
    /// to place it is logged, not fatal, so the same binary runs where affinity is
    /// restricted).
    pub fn spawn(self) -> std::io::Result<ApplierHandle<S>> {
        let stop = Arc::new(AtomicBool::new(false));
        let doorbell = Arc::clone(&self.doorbell);
        let thread_stop = Arc::clone(&stop);
        let placement = self.config.placement.clone();
        let thread = std::thread::Builder::new()
            .name("applier".into())
            .spawn(move || {
                if let Some(placement) = placement {
                    placement.apply("applier");
                }
                self.run(&thread_stop)
            })?;
        Ok(ApplierHandle {
            thread,
            stop,
            doorbell,
        })
    }
}

fn spin_pause() {
    for _ in 0..SPIN_IDLE_PAUSES {
        std::hint::spin_loop();
    }
}

/// Handle to a running applier thread.
pub struct ApplierHandle<S> {
    thread: JoinHandle<Result<Vec<S>, ApplierError>>,
    stop: Arc<AtomicBool>,
    doorbell: Arc<Doorbell>,
}

impl<S> fmt::Debug for ApplierHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApplierHandle")
            .field("finished", &self.thread.is_finished())
            .field("stop", &self.stop.load(Ordering::Relaxed))
            .finish()
    }
}

impl<S> ApplierHandle<S> {
    /// Whether the thread has exited (only before `stop` if it failed).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Asks the applier to stop, waits until it has applied every commit published before
    /// this call (shards should flush their publishers first), and returns the state
    /// machines in shard order.
    pub fn stop(self) -> Result<Vec<S>, ApplierError> {
        self.stop.store(true, Ordering::Release);
        self.doorbell.ring();
        self.thread.join().map_err(|_| ApplierError::Panicked)?
    }
}
