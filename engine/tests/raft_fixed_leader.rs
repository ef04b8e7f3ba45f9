//! `Config::fixed_leader`: the fixed leader takes office on start and nobody campaigns.

mod raft_common;

use engine::raft::*;
use raft_common::*;

fn fixed_config(id: ReplicaId) -> Config {
    let mut c = config(id, 3);
    c.fixed_leader = Some(1);
    c
}

fn start(r: &mut Replica) -> Vec<Action> {
    let mut out = Vec::new();
    r.start(&mut out);
    out
}

#[test]
fn the_fixed_leader_takes_office_on_start_in_the_next_term_with_a_no_op() {
    let mut r = Replica::new(fixed_config(1), recovered(3, Some(1), &[1, 3]), 7).unwrap();
    let ae = append_entries(2, 3, 0, vec![noop(4)]);
    assert_eq!(
        start(&mut r),
        vec![
            hard(4, Some(1), 0),
            role_changed(Role::Leader, 4, Some(1)),
            Action::AppendProposal {
                term: 4,
                first_index: 3,
                count: 1,
            },
            Action::Sync,
            send(1, 2, 4, ae.clone()),
            send(1, 3, 4, ae),
        ]
    );
    assert_eq!(r.role(), Role::Leader);
}

#[test]
fn a_restarted_fixed_leader_replays_its_committed_entries_first() {
    let mut rec = recovered(2, Some(1), &[1, 2, 2]);
    rec.hard_state.commit = 2;
    let mut r = Replica::new(fixed_config(1), rec, 7).unwrap();
    let out = start(&mut r);
    assert_eq!(out[0], Action::Apply { first: 1, last: 2 });
    assert_eq!(out[1], hard(3, Some(1), 2));
}

#[test]
fn followers_know_the_leader_and_never_campaign() {
    let mut r = Replica::new(fixed_config(2), RecoveredState::default(), 7).unwrap();
    assert_eq!(start(&mut r), vec![]);
    assert_eq!(r.leader(), Some(1));
    assert_eq!(tick_n(&mut r, 1000), vec![]);
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(r.term(), 0);
}

#[test]
fn followers_refuse_timeout_now() {
    let mut r = replica(fixed_config(2), RecoveredState::default());
    let (res, out) = step(&mut r, &msg(1, 2, 0, MessageBody::TimeoutNow));
    assert_eq!(res, Err(StepError::UnexpectedForRole(Role::Follower)));
    assert_eq!(out, vec![]);
}

#[test]
fn commit_requires_the_fixed_leaders_own_durable_copy() {
    let mut r = replica(fixed_config(1), RecoveredState::default());
    assert_eq!(r.term(), 1);
    // Both followers hold the no-op: a majority, but not the leader's durable copy.
    assert_eq!(step_ok(&mut r, &msg(2, 1, 1, ack(1))), vec![]);
    assert_eq!(step_ok(&mut r, &msg(3, 1, 1, ack(1))), vec![]);
    assert_eq!(r.commit(), 0);
    assert_eq!(
        persisted(&mut r, 1, 1),
        vec![Action::Apply { first: 1, last: 1 }]
    );
}

#[test]
fn the_leaders_copy_plus_one_follower_commits() {
    let mut r = replica(fixed_config(1), RecoveredState::default());
    persisted(&mut r, 1, 1);
    assert_eq!(
        step_ok(&mut r, &msg(3, 1, 1, ack(1))),
        vec![Action::Apply { first: 1, last: 1 }]
    );
}

#[test]
fn the_fixed_leader_never_steps_down_for_silence() {
    let mut r = replica(fixed_config(1), RecoveredState::default());
    let out = tick_n(&mut r, 100 * ELECTION_TICKS);
    assert!(out.iter().all(|a| matches!(a, Action::Send(_))));
    assert_eq!(r.role(), Role::Leader);
}

#[test]
fn leadership_cannot_be_transferred() {
    let mut r = replica(fixed_config(1), RecoveredState::default());
    let mut out = Vec::new();
    assert_eq!(r.transfer_leader(2, &mut out), Err(AdminError::FixedLeader));
    assert_eq!(out, vec![]);
}

#[test]
fn a_follower_accepts_the_fixed_leaders_first_append() {
    let mut r = replica(fixed_config(2), RecoveredState::default());
    let ae = append_entries(0, 0, 0, vec![noop(1)]);
    assert_eq!(
        step_ok(&mut r, &msg(1, 2, 1, ae)),
        vec![
            hard(1, None, 0),
            role_changed(Role::Follower, 1, Some(1)),
            Action::Append {
                first_index: 1,
                last_index: 1,
            },
            Action::Sync,
        ]
    );
}
