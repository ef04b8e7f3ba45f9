//! What one seed simulates: cluster size, the core's configuration flags, fault rates and
//! per-replica tick rates, all drawn from the seed's RNG.

use std::fmt;

use rand::rngs::SmallRng;
use rand::Rng;

use super::network::NetFaults;
use crate::raft::{Config, ReplicaId};

/// The parameters of one simulated run.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub replicas: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub preferred_leader: Option<ReplicaId>,
    pub fixed_leader: Option<ReplicaId>,
    pub election_timeout_ticks_min: u32,
    pub election_timeout_ticks_max: u32,
    pub heartbeat_interval_ticks: u32,
    pub inflight_msgs_max: u32,
    pub batch_entries_max: u32,
    pub batch_bytes_max: u64,
    pub uncommitted_entries_max: u64,
    /// Probability that replica `i` ticks on a global tick (clock skew).
    pub tick_probability: Vec<f64>,
    pub net: NetFaults,
    /// Per global tick during the fault phase.
    pub crash_probability: f64,
    pub partition_probability: f64,
    pub propose_probability: f64,
    pub read_probability: f64,
    pub transfer_probability: f64,
    /// Per replica and tick: the driver syncs on its own schedule.
    pub background_sync_probability: f64,
    pub sync_delay_ticks_max: u64,
    /// Ticks of the fault phase.
    pub fault_ticks: u64,
    /// Chance that a crash also wipes the replica's disk, so it comes back rejoining
    /// (at most one replica rejoins at a time; none in fixed-leader mode, which cannot
    /// rejoin).
    pub wipe_probability: f64,
}

impl Scenario {
    /// Draw a scenario; `fault_ticks_max` bounds the fault phase.
    pub fn generate(rng: &mut SmallRng, fault_ticks_max: u64) -> Self {
        let replicas = if rng.gen_bool(0.5) { 3 } else { 5 };
        let pick = |rng: &mut SmallRng| rng.gen_range(1..=replicas as ReplicaId);
        let fixed_leader = if rng.gen_bool(0.15) {
            Some(pick(rng))
        } else {
            None
        };
        let preferred_leader = if fixed_leader.is_none() && rng.gen_bool(0.25) {
            Some(pick(rng))
        } else {
            None
        };
        let election_timeout_ticks_min = rng.gen_range(10..=20);
        let election_timeout_ticks_max = election_timeout_ticks_min + rng.gen_range(5..=15);
        let heartbeat_interval_ticks = rng.gen_range(1..=3);
        // Fault intensity varies from calm to hostile across seeds.
        let hostile = rng.gen_range(0.2..1.0f64);
        // At least one tick: a message sent while delivering is never delivered in the same
        // delivery round.
        let delay_ticks_min = rng.gen_range(1..=2);
        let net = NetFaults {
            drop: rng.gen_range(0.0..0.2) * hostile,
            duplicate: rng.gen_range(0.0..0.1) * hostile,
            reorder: rng.gen_range(0.0..0.1) * hostile,
            delay_ticks_min,
            delay_ticks_max: delay_ticks_min + rng.gen_range(0..=6),
        };
        let tick_probability = (0..replicas).map(|_| rng.gen_range(0.7..=1.0)).collect();
        let fault_ticks = rng.gen_range(fault_ticks_max / 2..=fault_ticks_max.max(1));
        Scenario {
            replicas,
            pre_vote: rng.gen_bool(0.5),
            check_quorum: rng.gen_bool(0.5),
            preferred_leader,
            fixed_leader,
            election_timeout_ticks_min,
            election_timeout_ticks_max,
            heartbeat_interval_ticks,
            inflight_msgs_max: rng.gen_range(1..=16),
            batch_entries_max: [1, 4, 64, 256][rng.gen_range(0..4)],
            batch_bytes_max: [1_000, 64 << 10, 1 << 20][rng.gen_range(0..3)],
            uncommitted_entries_max: if rng.gen_bool(0.3) { 32 } else { 1 << 20 },
            tick_probability,
            net,
            crash_probability: rng.gen_range(0.0..0.01) * hostile,
            partition_probability: rng.gen_range(0.0..0.01) * hostile,
            propose_probability: rng.gen_range(0.05..0.5),
            read_probability: rng.gen_range(0.0..0.1),
            transfer_probability: rng.gen_range(0.0..0.004),
            background_sync_probability: rng.gen_range(0.0..0.1),
            sync_delay_ticks_max: rng.gen_range(1..=8),
            fault_ticks,
            wipe_probability: if rng.gen_bool(0.5) {
                rng.gen_range(0.05..0.5)
            } else {
                0.0
            },
        }
    }

    /// The core's configuration for replica `id`.
    pub fn config(&self, id: ReplicaId) -> Config {
        let mut config = Config::new(id, (1..=self.replicas as ReplicaId).collect());
        config.election_timeout_ticks_min = self.election_timeout_ticks_min;
        config.election_timeout_ticks_max = self.election_timeout_ticks_max;
        config.heartbeat_interval_ticks = self.heartbeat_interval_ticks;
        config.pre_vote = self.pre_vote;
        config.check_quorum = self.check_quorum;
        config.preferred_leader = self.preferred_leader;
        config.fixed_leader = self.fixed_leader;
        config.inflight_msgs_max = self.inflight_msgs_max;
        config.inflight_bytes_max = self.batch_bytes_max * u64::from(self.inflight_msgs_max);
        config.batch_entries_max = self.batch_entries_max;
        config.batch_bytes_max = self.batch_bytes_max;
        config.uncommitted_entries_max = self.uncommitted_entries_max;
        config
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} replicas, pre_vote={}, check_quorum={}, preferred={:?}, fixed={:?}, \
             election={}..{}, heartbeat={}, inflight={}, batch={}/{}B, uncommitted_max={}, \
             ticks={:.2?}, drop={:.3}, dup={:.3}, reorder={:.3}, delay={}..={}, \
             crash={:.4}, partition={:.4}, fault_ticks={}, wipe={:.2}",
            self.replicas,
            self.pre_vote,
            self.check_quorum,
            self.preferred_leader,
            self.fixed_leader,
            self.election_timeout_ticks_min,
            self.election_timeout_ticks_max,
            self.heartbeat_interval_ticks,
            self.inflight_msgs_max,
            self.batch_entries_max,
            self.batch_bytes_max,
            self.uncommitted_entries_max,
            self.tick_probability,
            self.net.drop,
            self.net.duplicate,
            self.net.reorder,
            self.net.delay_ticks_min,
            self.net.delay_ticks_max,
            self.crash_probability,
            self.partition_probability,
            self.fault_ticks,
            self.wipe_probability,
        )
    }
}
