//! Deterministic cluster simulator for the pure Raft core.
//!
//! One seed drives everything: a [`SmallRng`](rand::rngs::SmallRng) seeded with it picks
//! the scenario (cluster size, the core's flags, fault rates, per-replica tick rates) and
//! every fault and client request, and seeds each replica incarnation. Same seed, same
//! run, bit for bit: there is no clock, no thread and no hash-order dependence.
//!
//! A run has two phases. The fault phase drops, duplicates, delays and reorders messages,
//! partitions the network (symmetric and one-way), crashes replicas (losing the unsynced
//! log tail, keeping a random prefix of it, or in some seeds the whole disk, after which
//! the replica rejoins) and restarts them, while clients propose,
//! read (ReadIndex) and transfer leadership. Then everything heals and the run requires
//! liveness: a leader every replica follows, and every proposal made after healing
//! applied on every replica within a bounded number of ticks.
//!
//! After every step (one event into one replica, and the actions it emitted) the
//! checkers in [`checker`] run: election safety, log matching, leader completeness,
//! state-machine safety, commit monotonicity, durability of acknowledged and committed
//! entries, hard state durable before it is visible, linearizable reads, client answers
//! (a proposal answered `Ok` is committed as proposed, one answered "replaced" never is,
//! by the rules the node answers its clients with), and the core's own
//! `check_invariants`. The liveness check also requires every accepted proposal answered.
//!
//! ```no_run
//! let report = engine::sim::run_seed(7, &engine::sim::SimOptions::default());
//! if let Err(failure) = report {
//!     eprintln!("{failure} -- replay: {}", engine::sim::replay_command(failure.seed));
//! }
//! ```

pub mod checker;
mod cluster;
pub mod network;
pub mod scenario;
pub mod storage;

use std::cell::RefCell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};

pub use checker::Violation;
pub use cluster::{Stats, APPLY_TICKS_BASE, ELECTION_TICKS_MAX};
pub use scenario::Scenario;

use cluster::Cluster;

/// How to run a seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// Upper bound of the fault phase in ticks (each seed draws from `[max/2, max]`).
    pub fault_ticks_max: u64,
    /// Heal after the fault phase and check liveness.
    pub liveness: bool,
    /// Record an event trace (every event, action and fault) in the report or failure.
    pub trace: bool,
    /// A test of the checkers, never of the core: a replica whose disk is wiped restarts
    /// as a fresh one (term 0, no vote, empty log) instead of rejoining. The durability
    /// check still excuses its loss, so election safety, leader completeness and
    /// state-machine safety must catch what the forgotten vote and entries do.
    pub naive_wipes: bool,
    /// A test of the checkers, never of the core: a replica whose log is cut after a
    /// leader change answers none of the proposals whose entries the cut removed (as
    /// nodes did before they answered those "outcome unknown"). Those proposals' clients
    /// would wait until unrelated writes pass them, so the liveness check must fail.
    pub silent_truncations: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            fault_ticks_max: 3_000,
            liveness: true,
            trace: false,
            naive_wipes: false,
            silent_truncations: false,
        }
    }
}

/// What a passing seed did.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub seed: u64,
    pub scenario: String,
    pub ticks: u64,
    pub stats: Stats,
    /// Entries committed (the length of the committed sequence).
    pub committed: u64,
    /// Terms in which some replica led.
    pub leader_terms: usize,
    pub messages_sent: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub trace: Vec<String>,
}

/// A failing seed: the broken invariant, when, and (if traced) how it got there.
#[derive(Clone, Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub tick: u64,
    /// The invariant's name (see the constants in [`checker`]).
    pub invariant: &'static str,
    pub details: String,
    pub scenario: String,
    pub trace: Vec<String>,
}

impl SimFailure {
    /// The command that replays this seed.
    pub fn replay_command(&self) -> String {
        replay_command(self.seed)
    }
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (tick {})",
            self.invariant, self.details, self.tick
        )
    }
}

impl std::error::Error for SimFailure {}

/// The command line that replays `seed`.
pub fn replay_command(seed: u64) -> String {
    format!("cargo run --release -p tools --bin vopr -- --seed {seed}")
}

thread_local! {
    /// Message and location of the last panic on this thread, when the quiet hook is on.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replace the process's panic hook with one that records the message and location of a
/// panic for [`run_seed`]'s failure instead of printing it (for `vopr`, whose failing
/// seeds report their own line).
pub fn install_quiet_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let text = format!("{info}");
        LAST_PANIC.with(|last| *last.borrow_mut() = Some(text));
    }));
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = LAST_PANIC.with(|last| last.borrow_mut().take()) {
        return text;
    }
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Simulate one seed: the fault phase, then (if asked) healing and the liveness check.
/// A panic inside the core (a broken internal invariant) is reported as a failure.
pub fn run_seed(seed: u64, options: &SimOptions) -> Result<SimReport, SimFailure> {
    let mut cluster = Cluster::new(seed, options.fault_ticks_max, options.trace);
    cluster.naive_wipes = options.naive_wipes;
    cluster.silent_truncations = options.silent_truncations;
    let scenario = cluster.scenario.to_string();
    let result = panic::catch_unwind(AssertUnwindSafe(|| cluster.run(options.liveness)));
    let violation = match result {
        Ok(Ok(())) => None,
        Ok(Err(v)) => Some((v.invariant, v.details)),
        Err(payload) => Some((checker::CORE_PANIC, panic_text(payload.as_ref()))),
    };
    let trace = cluster.trace.take().unwrap_or_default();
    match violation {
        Some((invariant, details)) => Err(SimFailure {
            seed,
            tick: cluster.now,
            invariant,
            details,
            scenario,
            trace,
        }),
        None => Ok(SimReport {
            seed,
            scenario,
            ticks: cluster.now,
            stats: cluster.stats,
            committed: cluster.hist.chosen_len(),
            leader_terms: cluster.hist.leader_terms(),
            messages_sent: cluster.net.sent,
            messages_delivered: cluster.net.delivered,
            messages_dropped: cluster.net.dropped,
            trace,
        }),
    }
}
