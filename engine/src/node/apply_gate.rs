//! The leader's rule that keeps every replica's applier within reach of the commit index.
//!
//! Writes are acknowledged at commit, so nothing else paces clients to the appliers: a
//! leader that kept proposing while a follower's applier fell behind would end a run with
//! that follower holding a fraction of the leader's state, the failure this engine exists
//! to rule out. So followers report their applied index ([`net::wire::RaftBody::Applied`])
//! and the leader holds new writes while any replica that counts has more than `limit`
//! committed entries left to apply.
//!
//! Who counts: the leader itself, and each follower that is *in sync* and heard from
//! within `stale_after` (an election timeout). A silent follower counts as down, so a
//! dead replica never stops writes. A follower is in sync from the moment it is within the
//! limit until it restarts (its applied index goes back: the state machine is in memory
//! and replays) or goes silent; one replaying from far behind therefore does not stall
//! writes, and joins the rule once it has caught up.
//!
//! Pure bookkeeping: time is passed in, nothing is sent.

use std::time::Duration;

use quanta::Instant;

/// A follower's last applied report.
#[derive(Debug, Clone, Copy)]
struct Report {
    node: u64,
    applied: u64,
    at: Instant,
    in_sync: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct ApplyGate {
    limit: u64,
    stale_after: Duration,
    reports: Vec<Report>,
}

impl ApplyGate {
    pub(crate) fn new(limit: u64, stale_after: Duration) -> Self {
        Self {
            limit,
            stale_after,
            reports: Vec::new(),
        }
    }

    /// The allowed apply backlog, in entries.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Follower `node` reported `applied` (in the leader's current term) while the
    /// leader's commit index is `commit`.
    pub(crate) fn on_report(&mut self, node: u64, applied: u64, commit: u64, now: Instant) {
        let within = commit.saturating_sub(applied) <= self.limit;
        match self.reports.iter_mut().find(|r| r.node == node) {
            Some(r) => {
                let restarted = applied < r.applied;
                let was_down = now.saturating_duration_since(r.at) >= self.stale_after;
                r.in_sync = within || (r.in_sync && !restarted && !was_down);
                r.applied = applied;
                r.at = now;
            }
            None => self.reports.push(Report {
                node,
                applied,
                at: now,
                in_sync: within,
            }),
        }
    }

    /// Whether new writes must wait: the leader's own applier (at `own_applied`) or a
    /// follower that counts has more than `limit` entries below `commit` left to apply.
    pub(crate) fn holds_writes(&self, commit: u64, own_applied: u64, now: Instant) -> bool {
        commit.saturating_sub(own_applied) > self.limit
            || self.reports.iter().any(|r| {
                r.in_sync
                    && now.saturating_duration_since(r.at) < self.stale_after
                    && commit.saturating_sub(r.applied) > self.limit
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: Duration = Duration::from_millis(600);

    fn gate() -> ApplyGate {
        ApplyGate::new(100, STALE)
    }

    #[test]
    fn the_leaders_own_applier_counts() {
        let t = Instant::now();
        let g = gate();
        assert!(!g.holds_writes(1_000, 900, t));
        assert!(g.holds_writes(1_000, 899, t));
    }

    #[test]
    fn an_in_sync_follower_that_falls_behind_holds_writes_until_it_catches_up() {
        let t = Instant::now();
        let mut g = gate();
        g.on_report(2, 1_000, 1_000, t);
        assert!(!g.holds_writes(1_100, 1_100, t));
        assert!(g.holds_writes(1_101, 1_101, t), "101 entries behind");
        g.on_report(2, 1_050, 1_101, t + Duration::from_millis(1));
        assert!(!g.holds_writes(1_101, 1_101, t + Duration::from_millis(1)));
    }

    #[test]
    fn a_silent_follower_stops_holding_writes_after_the_stale_time() {
        let t = Instant::now();
        let mut g = gate();
        g.on_report(2, 1_000, 1_000, t);
        assert!(g.holds_writes(5_000, 5_000, t + STALE - Duration::from_millis(1)));
        assert!(!g.holds_writes(5_000, 5_000, t + STALE));
    }

    #[test]
    fn a_follower_back_from_silence_counts_again_only_once_caught_up() {
        let t = Instant::now();
        let mut g = gate();
        g.on_report(2, 1_000, 1_000, t);
        let back = t + STALE + Duration::from_millis(10);
        g.on_report(2, 1_200, 5_000, back);
        assert!(
            !g.holds_writes(5_000, 5_000, back),
            "replaying: not counted"
        );
        g.on_report(2, 4_950, 5_000, back + Duration::from_millis(1));
        assert!(!g.holds_writes(5_000, 5_000, back + Duration::from_millis(1)));
        assert!(
            g.holds_writes(5_051, 5_051, back + Duration::from_millis(2)),
            "in sync again: counted"
        );
    }

    #[test]
    fn a_restarted_follower_replays_without_stalling_writes() {
        let t = Instant::now();
        let mut g = gate();
        g.on_report(2, 1_000, 1_000, t);
        // The process restarted: its in-memory state machine replays from the start.
        let t1 = t + Duration::from_millis(5);
        g.on_report(2, 10, 1_000, t1);
        assert!(!g.holds_writes(1_000, 1_000, t1));
        // Still behind, still not counted, even though its reports are fresh.
        g.on_report(2, 500, 1_500, t1 + Duration::from_millis(5));
        assert!(!g.holds_writes(1_500, 1_500, t1 + Duration::from_millis(5)));
    }

    #[test]
    fn a_first_report_from_far_behind_does_not_count_until_caught_up() {
        let t = Instant::now();
        let mut g = gate();
        g.on_report(3, 0, 10_000, t);
        assert!(!g.holds_writes(10_000, 10_000, t));
        g.on_report(3, 9_950, 10_000, t);
        assert!(g.holds_writes(10_200, 10_200, t));
    }

    #[test]
    fn each_follower_is_judged_on_its_own() {
        let t = Instant::now();
        let mut g = gate();
        g.on_report(2, 1_000, 1_000, t);
        g.on_report(3, 1_000, 1_000, t);
        g.on_report(3, 1_150, 1_150, t);
        assert!(g.holds_writes(1_150, 1_150, t), "node 2 is 150 behind");
        g.on_report(2, 1_100, 1_150, t);
        assert!(!g.holds_writes(1_150, 1_150, t));
    }
}
