//! The end of a run: heal every fault, then require a settled leader, every new proposal
//! applied on every replica, every accepted proposal answered and every rejoin complete
//! within a bounded number of ticks.

use super::{Cluster, PAYLOAD_BYTES_TYPICAL};
use crate::raft::{Role, Term};
use crate::sim::checker::{self, Violation};
use crate::sim::network::NetFaults;

/// Ticks allowed, after healing, for a settled leader that every replica follows.
pub const ELECTION_TICKS_MAX: u64 = 2_000;
/// Ticks allowed, after the first post-heal proposal, for all of them to be applied
/// everywhere, on top of the time a lagging replica needs to catch up.
pub const APPLY_TICKS_BASE: u64 = 2_000;
/// Proposals made after healing whose application is required.
const LIVENESS_PROPOSALS: usize = 5;

impl Cluster {
    /// End of faults: every replica up, no partitions, a reliable network.
    pub(super) fn heal(&mut self) -> Result<(), Violation> {
        trace!(self, "heal: all replicas up, network reliable");
        self.net.faults = NetFaults::healed();
        self.net.heal_partitions();
        for r in 0..self.nodes.len() {
            if !self.up(r) {
                self.restart(r)?;
            }
        }
        Ok(())
    }

    /// The leader every replica follows, if there is one.
    fn stable_leader(&self) -> Option<usize> {
        let first = self.replica(0);
        let leader = first.leader()?;
        let term = first.term();
        let l = usize::try_from(leader).ok()?.checked_sub(1)?;
        let agreed = (0..self.nodes.len()).all(|r| {
            let replica = self.replica(r);
            replica.leader() == Some(leader) && replica.term() == term
        });
        (agreed && l < self.nodes.len() && self.replica(l).role() == Role::Leader).then_some(l)
    }

    fn roles(&self) -> String {
        let roles: Vec<String> = (0..self.nodes.len())
            .map(|r| {
                let rep = self.replica(r);
                format!(
                    "r{}:{} term {} leader {:?} commit {} last {}",
                    r + 1,
                    rep.role(),
                    rep.term(),
                    rep.leader(),
                    rep.commit(),
                    rep.last_index()
                )
            })
            .collect();
        roles.join(", ")
    }

    /// Ticks to wait for before the leader is considered settled: long enough for an
    /// in-flight transfer to finish or time out and a preferred leader to take over.
    fn settle_ticks(&self) -> u64 {
        let slowest = self
            .scenario
            .tick_probability
            .iter()
            .copied()
            .fold(1.0f64, f64::min);
        (2.0 * f64::from(self.scenario.election_timeout_ticks_max) / slowest) as u64 + 10
    }

    /// Ticks a lagging follower may need per missing entry on the healed network
    /// (a round trip moves at most inflight x batch entries), with 4x slack.
    fn catch_up_ticks_per_entry(&self) -> f64 {
        let s = &self.scenario;
        let slowest = s.tick_probability.iter().copied().fold(1.0f64, f64::min);
        let healed = NetFaults::healed();
        let round_trip = 2 * healed.delay_ticks_max
            + s.sync_delay_ticks_max
            + u64::from(s.heartbeat_interval_ticks)
            + 2;
        let per_msg =
            u64::from(s.batch_entries_max).min((s.batch_bytes_max / PAYLOAD_BYTES_TYPICAL).max(1));
        let per_round_trip = (per_msg * u64::from(s.inflight_msgs_max)) as f64;
        4.0 * round_trip as f64 / slowest / per_round_trip
    }

    /// After healing: within [`ELECTION_TICKS_MAX`], a leader that every replica follows
    /// and that stays put for a settle period; then every proposal made to it applied on
    /// every replica within [`APPLY_TICKS_BASE`] ticks plus the time the most lagging
    /// replica needs to catch up at the configured batch and inflight limits.
    pub(super) fn check_liveness(&mut self) -> Result<(), Violation> {
        let healed_at = self.now;
        let settle = self.settle_ticks();
        let mut settled: Option<(usize, Term, u64)> = None;
        loop {
            let leader = self.stable_leader().filter(|&l| {
                self.nodes[l]
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.status().transfer_target.is_none())
            });
            settled = match (leader, settled) {
                (Some(l), Some((sl, term, since))) if sl == l && self.replica(l).term() == term => {
                    Some((sl, term, since))
                }
                (Some(l), _) => Some((l, self.replica(l).term(), self.now)),
                (None, _) => None,
            };
            if let Some((_, _, since)) = settled {
                if self.now - since >= settle {
                    break;
                }
            }
            if self.now - healed_at >= ELECTION_TICKS_MAX {
                return Err(Violation {
                    invariant: checker::LIVENESS,
                    details: format!(
                        "no settled leader followed by all replicas {ELECTION_TICKS_MAX} ticks \
                         after healing at tick {healed_at}: {}",
                        self.roles()
                    ),
                });
            }
            self.tick_once(false)?;
        }
        let proposing_from = self.now;
        let lag = (0..self.nodes.len())
            .map(|r| self.replica(r).last_index())
            .max()
            .unwrap_or(0)
            - (0..self.nodes.len())
                .map(|r| self.replica(r).commit())
                .min()
                .unwrap_or(0);
        let allowed = APPLY_TICKS_BASE + (lag as f64 * self.catch_up_ticks_per_entry()) as u64;
        trace!(
            self,
            "liveness: proposing, lag {lag} entries, {allowed} ticks allowed"
        );
        let all = (1u64 << self.nodes.len()) - 1;
        let mut proposed = 0;
        loop {
            if proposed < LIVENESS_PROPOSALS {
                if let Some(l) = self.stable_leader() {
                    if let Some(pids) = self.propose(l, 1)? {
                        for pid in pids {
                            self.tracked.insert(pid, 0);
                        }
                        proposed += 1;
                    }
                }
            } else if self.tracked.values().all(|&mask| mask == all)
                && self.nodes.iter().all(|n| !n.storage.rejoining())
                && self.nodes.iter().all(|n| n.submits.is_empty())
            {
                trace!(
                    self,
                    "liveness: all proposals applied everywhere and answered, no rejoin pending"
                );
                return Ok(());
            }
            if self.now - proposing_from >= allowed {
                let missing: Vec<String> = self
                    .tracked
                    .iter()
                    .filter(|(_, &mask)| mask != all)
                    .map(|(pid, mask)| format!("pid {pid} applied on mask {mask:#b}"))
                    .collect();
                let rejoining: Vec<String> = (0..self.nodes.len())
                    .filter(|&r| self.nodes[r].storage.rejoining())
                    .map(|r| format!("r{} rejoining", r + 1))
                    .collect();
                let unanswered: Vec<String> = (0..self.nodes.len())
                    .filter(|&r| !self.nodes[r].submits.is_empty())
                    .map(|r| format!("r{} {}", r + 1, self.nodes[r].submits.len()))
                    .collect();
                return Err(Violation {
                    invariant: checker::LIVENESS,
                    details: format!(
                        "{proposed} of {LIVENESS_PROPOSALS} proposals accepted and not all \
                         applied, or a rejoin not complete ({}), or proposals unanswered \
                         ({}), {allowed} ticks after tick {proposing_from} (lag {lag}): [{}]; \
                         {}",
                        rejoining.join(", "),
                        unanswered.join(", "),
                        missing.join(", "),
                        self.roles()
                    ),
                });
            }
            self.tick_once(false)?;
        }
    }
}
