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

/// A follower's side: when to send its applied index to the leader. Due when the
/// applier moved an eighth of the allowed lag, or the leader or term changed; and, once
/// caught up with the commit index, at most once per `quiet` (a tick), which keeps the
/// leader counting this replica as live (a report every `stale_after` would do).
///
/// A hold never waits for `quiet`: the leader holds while its view of this replica is
/// more than the allowed lag behind, and catching up from there moves the applier by
/// more than an eighth of it. Reporting every catch-up instead sent one message per
/// request under light load, and woke the leader once more per follower.
#[derive(Debug)]
pub(crate) struct ReportCadence {
    limit: u64,
    quiet: Duration,
    /// Applied index, leader and term of the last report sent, and when.
    last: (u64, Option<u64>, u64),
    at: Option<Instant>,
}

impl ReportCadence {
    pub(crate) fn new(limit: u64, quiet: Duration) -> Self {
        Self {
            limit,
            quiet,
            last: (0, None, 0),
            at: None,
        }
    }

    /// Whether a report of `applied` to `leader` in `term` is due, the commit index being
    /// `commit`.
    pub(crate) fn due(
        &self,
        leader: u64,
        term: u64,
        applied: u64,
        commit: u64,
        now: Instant,
    ) -> bool {
        let (last, to, in_term) = self.last;
        let moved = applied.saturating_sub(last);
        let quiet_since = self
            .at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.quiet);
        to != Some(leader)
            || in_term != term
            || moved >= (self.limit / 8).max(1)
            || (moved > 0 && applied >= commit && quiet_since)
    }

    /// Records a report sent.
    pub(crate) fn sent(&mut self, leader: u64, term: u64, applied: u64, now: Instant) {
        self.last = (applied, Some(leader), term);
        self.at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    #[test]
    fn caught_up_reports_go_at_most_once_per_quiet_period() {
        let t = Instant::now();
        let mut c = ReportCadence::new(100, TICK);
        assert!(c.due(1, 1, 0, 0, t), "first report to a new leader");
        c.sent(1, 1, 0, t);
        assert!(!c.due(1, 1, 0, 0, t + TICK), "nothing moved");
        // One entry applied, caught up: only once the quiet period has passed.
        assert!(!c.due(1, 1, 1, 1, t + Duration::from_millis(1)));
        assert!(c.due(1, 1, 1, 1, t + TICK));
        c.sent(1, 1, 1, t + TICK);
        // Not caught up and moved less than an eighth of the limit: not due.
        assert!(!c.due(1, 1, 5, 50, t + 3 * TICK));
        // An eighth of the limit: due at once.
        assert!(c.due(1, 1, 13, 50, t + TICK + Duration::from_millis(1)));
        // A new leader or term: due at once.
        assert!(c.due(2, 1, 1, 1, t + TICK));
        assert!(c.due(1, 2, 1, 1, t + TICK));
    }

    #[test]
    fn a_held_leader_hears_of_the_catch_up_without_waiting_for_the_quiet_period() {
        let t = Instant::now();
        let mut g = gate();
        let mut c = ReportCadence::new(100, TICK);
        c.sent(1, 1, 1_000, t);
        g.on_report(2, 1_000, 1_000, t);
        // The leader committed 150 more; its view of the follower holds writes.
        assert!(g.holds_writes(1_150, 1_150, t));
        // The follower applies them all within a millisecond: the report is due at once
        // and releases the hold.
        let soon = t + Duration::from_millis(1);
        assert!(c.due(1, 1, 1_150, 1_150, soon));
        c.sent(1, 1, 1_150, soon);
        g.on_report(2, 1_150, 1_150, soon);
        assert!(!g.holds_writes(1_150, 1_150, soon));
    }

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
