//! The simulated cluster: replicas running the real core, their fake storage, the fake
//! network, and the driver that executes the core's actions and runs the checkers after
//! every step.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::checker::{self, History, Violation};
use super::network::{Network, Packet};
use super::scenario::Scenario;
use super::storage::{Entry, SimStorage};
use crate::node::submits::Submits;
use crate::raft::{Action, Config, Index, RecoveredState, Replica, ReplicaId, Role, Term};

/// Typical client payload; a few are larger than any batch limit.
const PAYLOAD_BYTES_TYPICAL: u64 = 256;

/// Append a trace line (formatted only when tracing is on).
macro_rules! trace {
    ($cluster:expr, $($arg:tt)*) => {
        if $cluster.trace.is_some() {
            let line = format!("t{} {}", $cluster.now, format_args!($($arg)*));
            if let Some(trace) = $cluster.trace.as_mut() {
                trace.push(line);
            }
        }
    };
}

// After the macro: child modules see it.
mod actions;
mod liveness;

pub use liveness::{APPLY_TICKS_BASE, ELECTION_TICKS_MAX};

/// One simulated replica: the core (absent while crashed) and everything that outlives it.
#[derive(Debug)]
struct Node {
    id: ReplicaId,
    config: Config,
    replica: Option<Replica>,
    storage: SimStorage,
    tick_probability: f64,
    incarnation: u32,
    /// The core's commit index after its last step (this incarnation).
    commit: Index,
    /// Log entries up to here were checked against the committed sequence (this incarnation).
    commit_checked: Index,
    /// Next index the state machine expects (this incarnation; unknown before the first Apply).
    applied_next: Option<Index>,
    /// Pending ReadIndex requests: ctx -> committed index known cluster-wide at issue.
    reads: BTreeMap<u64, Index>,
    restart_at: u64,
    /// Term in which this replica was last seen leading (this incarnation).
    leader_term: Option<Term>,
    /// Proposals it accepted and has not answered, kept by the node's own rules (this
    /// incarnation: a crash closes the clients' connections).
    submits: Submits<SimSubmit>,
}

/// An accepted proposal as its client knows it: where its entries start, and their pids.
#[derive(Debug)]
struct SimSubmit {
    first_index: Index,
    pids: Vec<u64>,
}

/// Why the core is being stepped: what the executed actions may refer to.
enum Cause<'a> {
    Start,
    Tick,
    Persisted,
    Client,
    Message(&'a Packet),
    Propose {
        term: Term,
        first_index: Index,
        items: &'a [(u64, u32)],
    },
}

/// Counters for the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub steps: u64,
    pub crashes: u64,
    /// Crashes that also wiped the disk.
    pub wipes: u64,
    /// Wipes while another replica was rejoining (two at once, in groups of five or more).
    pub wipes_beside_rejoin: u64,
    /// Rejoins begun: wipes of a replica that was not rejoining already (one wiped again
    /// before its rejoin completed goes on with the same rejoin).
    pub rejoins_begun: u64,
    /// Rejoins the core completed.
    pub rejoins: u64,
    pub partitions: u64,
    pub proposals_accepted: u64,
    pub reads_served: u64,
    pub reads_failed: u64,
    /// Accepted proposals answered `Ok`, "replaced" (not written) and "outcome unknown".
    pub answered_ok: u64,
    pub answered_replaced: u64,
    pub answered_unknown: u64,
    pub step_errors: u64,
}

/// A whole simulated cluster for one seed.
#[derive(Debug)]
pub struct Cluster {
    pub scenario: Scenario,
    rng: SmallRng,
    pub now: u64,
    nodes: Vec<Node>,
    pub net: Network,
    pub hist: History,
    pub trace: Option<Vec<String>>,
    pub stats: Stats,
    next_pid: u64,
    next_ctx: u64,
    heal_partitions_at: u64,
    /// Liveness: pid -> bit mask of replicas that applied it.
    tracked: BTreeMap<u64, u64>,
    /// Set when an accepted proposal's AppendProposal was seen.
    proposal_appended: bool,
    out: Vec<Action>,
    /// Checker self-test: a wiped replica restarts as a fresh one instead of rejoining
    /// (its loss still excused by the durability check), so the other checkers must
    /// catch what goes wrong. See [`super::SimOptions::naive_wipes`].
    pub naive_wipes: bool,
    /// Checker self-test: a truncation answers none of the proposals whose entries it
    /// removes. See [`super::SimOptions::silent_truncations`].
    pub silent_truncations: bool,
}

impl Cluster {
    /// Build the cluster of `seed`; nothing runs until [`Cluster::run`].
    pub fn new(seed: u64, fault_ticks_max: u64, trace: bool) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let scenario = Scenario::generate(&mut rng, fault_ticks_max);
        let nodes = (0..scenario.replicas)
            .map(|i| {
                let id = i as ReplicaId + 1;
                Node {
                    id,
                    config: scenario.config(id),
                    replica: None,
                    storage: SimStorage::default(),
                    tick_probability: scenario.tick_probability[i],
                    incarnation: 0,
                    commit: 0,
                    commit_checked: 0,
                    applied_next: None,
                    reads: BTreeMap::new(),
                    restart_at: 0,
                    leader_term: None,
                    submits: Submits::default(),
                }
            })
            .collect();
        let net = Network::new(scenario.replicas, scenario.net);
        Cluster {
            scenario,
            rng,
            now: 0,
            nodes,
            net,
            hist: History::default(),
            trace: trace.then(Vec::new),
            stats: Stats::default(),
            next_pid: 1,
            next_ctx: 1,
            heal_partitions_at: 0,
            tracked: BTreeMap::new(),
            proposal_appended: false,
            out: Vec::new(),
            naive_wipes: false,
            silent_truncations: false,
        }
    }

    /// The fault phase, then (if `liveness`) healing and the liveness checks.
    pub fn run(&mut self, liveness: bool) -> Result<(), Violation> {
        trace!(self, "scenario: {}", self.scenario);
        for r in 0..self.nodes.len() {
            self.restart(r)?;
        }
        while self.now < self.scenario.fault_ticks {
            self.tick_once(true)?;
        }
        if liveness {
            self.heal()?;
            self.check_liveness()?;
        }
        Ok(())
    }

    fn up(&self, r: usize) -> bool {
        self.nodes[r].replica.is_some()
    }

    fn replica(&self, r: usize) -> &Replica {
        self.nodes[r].replica.as_ref().expect("replica is up")
    }

    /// One global tick: faults and client load, deliveries, sync completions, replica ticks.
    fn tick_once(&mut self, faults: bool) -> Result<(), Violation> {
        self.now += 1;
        if faults {
            self.inject_faults()?;
        }
        for r in 0..self.nodes.len() {
            if !self.up(r) && self.nodes[r].restart_at <= self.now {
                self.restart(r)?;
            }
        }
        while let Some((from, to, packet)) = self.net.pop_due(self.now) {
            self.deliver(from, to, packet)?;
        }
        for r in 0..self.nodes.len() {
            if self.up(r) {
                self.complete_syncs(r)?;
            }
        }
        for r in 0..self.nodes.len() {
            if self.up(r)
                && self.nodes[r].storage.has_unsynced_writes()
                && self.rng.gen_bool(self.scenario.background_sync_probability)
            {
                let delay = self.rng.gen_range(0..=self.scenario.sync_delay_ticks_max);
                self.nodes[r].storage.start_sync(self.now, delay);
            }
        }
        for r in 0..self.nodes.len() {
            // The core checks itself at the end of every event method; once more per tick
            // guards against a method that forgets to.
            if let Some(replica) = self.nodes[r].replica.as_ref() {
                replica.check_invariants();
            }
            if self.up(r) && self.rng.gen_bool(self.nodes[r].tick_probability) {
                let mut out = std::mem::take(&mut self.out);
                out.clear();
                self.nodes[r].replica.as_mut().expect("up").tick(&mut out);
                self.finish(r, &Cause::Tick, out)?;
            }
        }
        if faults {
            self.client_load()?;
        }
        Ok(())
    }

    fn inject_faults(&mut self) -> Result<(), Violation> {
        let n = self.nodes.len();
        if self.rng.gen_bool(self.scenario.crash_probability) {
            // Leaders are the interesting victims: crash one a third of the time.
            let leader = (0..n).find(|&r| self.up(r) && self.replica(r).role() == Role::Leader);
            let r = match leader {
                Some(l) if self.rng.gen_bool(0.33) => l,
                _ => self.rng.gen_range(0..n),
            };
            if self.up(r) {
                self.crash(r)?;
            }
        }
        if self.net.partitioned() && self.heal_partitions_at <= self.now {
            trace!(self, "partition healed");
            self.net.heal_partitions();
        }
        if self.rng.gen_bool(self.scenario.partition_probability) {
            self.stats.partitions += 1;
            match self.rng.gen_range(0..3) {
                0 => {
                    let r = self.rng.gen_range(0..n);
                    for o in (0..n).filter(|&o| o != r) {
                        self.net.set_blocked(r, o, true);
                        self.net.set_blocked(o, r, true);
                    }
                    trace!(self, "partition: r{} isolated", r + 1);
                }
                1 => {
                    let side: Vec<bool> = (0..n).map(|_| self.rng.gen_bool(0.5)).collect();
                    for a in 0..n {
                        for b in 0..n {
                            if side[a] != side[b] {
                                self.net.set_blocked(a, b, true);
                            }
                        }
                    }
                    trace!(self, "partition: split {side:?}");
                }
                _ => {
                    for _ in 0..self.rng.gen_range(1..=3) {
                        let a = self.rng.gen_range(0..n);
                        let b = self.rng.gen_range(0..n);
                        if a != b {
                            self.net.set_blocked(a, b, true);
                            trace!(self, "partition: one-way r{} -> r{}", a + 1, b + 1);
                        }
                    }
                }
            }
            self.heal_partitions_at = self.now + self.rng.gen_range(20..400);
        }
        Ok(())
    }

    /// The replica most clients would talk to: usually the leader of the highest term.
    fn pick_target(&mut self) -> Option<usize> {
        let leader = (0..self.nodes.len())
            .filter(|&r| self.up(r) && self.replica(r).role() == Role::Leader)
            .max_by_key(|&r| self.replica(r).term());
        match leader {
            Some(r) if self.rng.gen_bool(0.85) => Some(r),
            _ => {
                let r = self.rng.gen_range(0..self.nodes.len());
                self.up(r).then_some(r)
            }
        }
    }

    fn client_load(&mut self) -> Result<(), Violation> {
        if self.rng.gen_bool(self.scenario.propose_probability) {
            if let Some(r) = self.pick_target() {
                let count = self.rng.gen_range(1..=4);
                self.propose(r, count)?;
            }
        }
        if self.rng.gen_bool(self.scenario.read_probability) {
            if let Some(r) = self.pick_target() {
                self.read(r)?;
            }
        }
        if self.rng.gen_bool(self.scenario.transfer_probability) {
            if let Some(r) = self.pick_target() {
                let to = self.rng.gen_range(1..=self.nodes.len() as ReplicaId);
                let mut out = std::mem::take(&mut self.out);
                out.clear();
                let res = self.nodes[r]
                    .replica
                    .as_mut()
                    .expect("up")
                    .transfer_leader(to, &mut out);
                trace!(self, "r{} transfer_leader({to}) -> {res:?}", r + 1);
                self.finish(r, &Cause::Client, out)?;
            }
        }
        Ok(())
    }

    /// Propose `count` payloads at replica `r`; returns their pids if accepted.
    fn propose(&mut self, r: usize, count: usize) -> Result<Option<Vec<u64>>, Violation> {
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            let len = if self.rng.gen_bool(0.02) {
                self.rng.gen_range(1..=8 * PAYLOAD_BYTES_TYPICAL as u32 * 8)
            } else {
                self.rng.gen_range(1..=PAYLOAD_BYTES_TYPICAL as u32)
            };
            items.push((self.next_pid, len));
            self.next_pid += 1;
        }
        let lens: Vec<u32> = items.iter().map(|&(_, len)| len).collect();
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let res = self.nodes[r]
            .replica
            .as_mut()
            .expect("up")
            .propose(&lens, &mut out);
        trace!(self, "r{} propose {items:?} -> {res:?}", r + 1);
        match res {
            Ok((term, first_index)) => {
                self.stats.proposals_accepted += 1;
                let pids: Vec<u64> = items.iter().map(|&(pid, _)| pid).collect();
                let last_index = first_index + pids.len() as Index - 1;
                let submit = SimSubmit {
                    first_index,
                    pids: pids.clone(),
                };
                self.nodes[r].submits.push(submit, term, last_index);
                self.proposal_appended = false;
                let cause = Cause::Propose {
                    term,
                    first_index,
                    items: &items,
                };
                self.finish(r, &cause, out)?;
                if !self.proposal_appended {
                    return Err(Violation {
                        invariant: checker::DRIVER_CONTRACT,
                        details: format!(
                            "r{} accepted a proposal at ({term}, {first_index}) without \
                             AppendProposal",
                            r + 1
                        ),
                    });
                }
                Ok(Some(pids))
            }
            Err(_) => {
                self.finish(r, &Cause::Client, out)?;
                Ok(None)
            }
        }
    }

    fn read(&mut self, r: usize) -> Result<(), Violation> {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        let issued = self.hist.chosen_len();
        self.nodes[r].reads.insert(ctx, issued);
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let res = self.nodes[r]
            .replica
            .as_mut()
            .expect("up")
            .read_index(ctx, &mut out);
        trace!(
            self,
            "r{} read_index({ctx}) at commit {issued} -> {res:?}",
            r + 1
        );
        if res.is_err() {
            self.nodes[r].reads.remove(&ctx);
        }
        self.finish(r, &Cause::Client, out)
    }

    fn deliver(&mut self, from: usize, to: usize, packet: Packet) -> Result<(), Violation> {
        if !self.up(to) {
            return Ok(());
        }
        trace!(self, "r{} <- r{} {:?}", to + 1, from + 1, packet.msg);
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let res = self.nodes[to]
            .replica
            .as_mut()
            .expect("up")
            .step(&packet.msg, &mut out);
        if let Err(e) = res {
            self.stats.step_errors += 1;
            trace!(self, "r{} ignored: {e}", to + 1);
        }
        self.finish(to, &Cause::Message(&packet), out)
    }

    fn complete_syncs(&mut self, r: usize) -> Result<(), Violation> {
        let Some(done) = self.nodes[r].storage.complete_syncs(self.now) else {
            return Ok(());
        };
        trace!(self, "r{} sync done {done:?}", r + 1);
        if let Some(from) = done.lost_from {
            self.check_durable(from)?;
        }
        if done.index == 0 {
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        self.nodes[r]
            .replica
            .as_mut()
            .expect("up")
            .on_persisted(done.index, done.term, &mut out);
        self.finish(r, &Cause::Persisted, out)
    }

    fn check_durable(&self, from: Index) -> Result<(), Violation> {
        let storages: Vec<&SimStorage> = self.nodes.iter().map(|n| &n.storage).collect();
        self.hist.check_committed_durable(&storages, from)
    }

    fn crash(&mut self, r: usize) -> Result<(), Violation> {
        let unsynced = self.nodes[r].storage.unsynced_writes();
        let kept = if self.rng.gen_bool(0.5) {
            0
        } else {
            self.rng.gen_range(0..=unsynced)
        };
        let downtime = self.rng.gen_range(5..300);
        let drop_packets = self.rng.gen_bool(0.5);
        // Rejoining replicas do not vote, so those that kept their data must remain a
        // quorum to elect the leader they catch up from: at most `n - quorum` rejoin at
        // a time (one of three, two of five), this one included.
        let n = self.nodes.len();
        let others_rejoining = (0..n)
            .filter(|&i| i != r && self.nodes[i].storage.rejoining())
            .count();
        let wipe = self.scenario.wipe_probability > 0.0
            && self.rng.gen_bool(self.scenario.wipe_probability)
            && self.scenario.fixed_leader.is_none()
            && others_rejoining < n - (n / 2 + 1);
        let node = &mut self.nodes[r];
        let recovered = node.storage.crash(kept);
        if wipe {
            if !node.storage.rejoining() {
                self.stats.rejoins_begun += 1;
            }
            node.storage.wipe();
            self.stats.wipes += 1;
            if others_rejoining > 0 {
                self.stats.wipes_beside_rejoin += 1;
            }
            trace!(self, "r{} disk wiped", r + 1);
        }
        let node = &mut self.nodes[r];
        node.replica = None;
        node.reads.clear();
        node.submits = Submits::default();
        node.leader_term = None;
        node.restart_at = self.now + downtime;
        self.stats.crashes += 1;
        if drop_packets {
            self.net.drop_involving(r);
        }
        trace!(
            self,
            "r{} crashed: kept {kept} of {unsynced} unsynced writes, log now {} entries, \
             down for {downtime}",
            r + 1,
            recovered.len()
        );
        self.check_durable(1)
    }

    /// Start (or restart) replica `r` from its durable state.
    fn restart(&mut self, r: usize) -> Result<(), Violation> {
        let seed = self.rng.gen();
        let node = &mut self.nodes[r];
        let recovered = RecoveredState {
            hard_state: node.storage.hard_state(),
            first_index_prev: 0,
            first_term_prev: 0,
            entries: node.storage.log().iter().map(Entry::meta).collect(),
            rejoining: node.storage.rejoining() && !self.naive_wipes,
        };
        let replica =
            Replica::new(node.config.clone(), recovered, seed).map_err(|e| Violation {
                invariant: checker::DRIVER_CONTRACT,
                details: format!("r{} rejected its config: {e}", node.id),
            })?;
        node.commit = replica.commit();
        node.replica = Some(replica);
        node.incarnation += 1;
        node.commit_checked = 0;
        node.applied_next = None;
        node.leader_term = None;
        trace!(
            self,
            "r{} started (incarnation {}) with {:?}, {} entries",
            r + 1,
            self.nodes[r].incarnation,
            self.nodes[r].storage.hard_state(),
            self.nodes[r].storage.last_index()
        );
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        self.nodes[r].replica.as_mut().expect("up").start(&mut out);
        self.finish(r, &Cause::Start, out)
    }

    /// Execute a batch of actions of replica `r`, then run the per-step checkers.
    fn finish(&mut self, r: usize, cause: &Cause, out: Vec<Action>) -> Result<(), Violation> {
        let res = self.execute(r, cause, &out);
        self.out = out;
        res?;
        self.after_step(r)
    }
}
