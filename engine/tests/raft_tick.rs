//! `Replica::tick`: election timeouts, heartbeats, check-quorum and transfer expiry.

mod raft_common;

use engine::raft::*;
use raft_common::*;

#[test]
fn nothing_happens_before_the_election_timeout() {
    let mut r = fresh(1, 3);
    assert_eq!(tick_n(&mut r, ELECTION_TICKS - 1), vec![]);
    assert_eq!(r.role(), Role::Follower);
}

#[test]
fn election_timeout_starts_a_pre_vote_without_changing_the_term() {
    let mut r = fresh(1, 3);
    tick_n(&mut r, ELECTION_TICKS - 1);
    let pre_vote = MessageBody::PreVote {
        last_index: 0,
        last_term: 0,
    };
    assert_eq!(
        tick(&mut r),
        vec![
            role_changed(Role::PreCandidate, 0, None),
            send(1, 2, 1, pre_vote.clone()),
            send(1, 3, 1, pre_vote),
        ]
    );
    assert_eq!(r.term(), 0);
    assert_eq!(r.hard_state().vote, None);
}

#[test]
fn pre_vote_carries_the_last_log_position() {
    let mut r = replica(config(2, 3), recovered(3, Some(1), &[1, 1, 3]));
    tick_n(&mut r, ELECTION_TICKS - 1);
    let pre_vote = MessageBody::PreVote {
        last_index: 3,
        last_term: 3,
    };
    assert_eq!(
        tick(&mut r),
        vec![
            role_changed(Role::PreCandidate, 3, None),
            send(2, 1, 4, pre_vote.clone()),
            send(2, 3, 4, pre_vote),
        ]
    );
}

#[test]
fn without_pre_vote_the_timeout_campaigns_and_persists_before_sending_votes() {
    let mut cfg = config(1, 3);
    cfg.pre_vote = false;
    let mut r = replica(cfg, RecoveredState::default());
    tick_n(&mut r, ELECTION_TICKS - 1);
    let vote = MessageBody::Vote {
        last_index: 0,
        last_term: 0,
        transfer: false,
    };
    assert_eq!(
        tick(&mut r),
        vec![
            hard(1, Some(1), 0),
            role_changed(Role::Candidate, 1, None),
            send(1, 2, 1, vote.clone()),
            send(1, 3, 1, vote),
        ]
    );
    assert_eq!(r.role(), Role::Candidate);
}

#[test]
fn a_candidate_that_times_out_campaigns_again_in_the_next_term() {
    let mut cfg = config(1, 3);
    cfg.pre_vote = false;
    let mut r = replica(cfg, RecoveredState::default());
    tick_n(&mut r, ELECTION_TICKS);
    assert_eq!(r.term(), 1);
    tick_n(&mut r, ELECTION_TICKS - 1);
    let out = tick(&mut r);
    assert_eq!(out[0], hard(2, Some(1), 0));
    assert_eq!(out[1], role_changed(Role::Candidate, 2, None));
    assert_eq!(out.len(), 4);
}

#[test]
fn single_voter_elects_itself_on_the_first_timeout() {
    let mut r = fresh(1, 1);
    tick_n(&mut r, ELECTION_TICKS - 1);
    assert_eq!(
        tick(&mut r),
        vec![
            role_changed(Role::PreCandidate, 0, None),
            hard(1, Some(1), 0),
            role_changed(Role::Candidate, 1, None),
            role_changed(Role::Leader, 1, Some(1)),
            Action::AppendProposal {
                term: 1,
                first_index: 1,
                count: 1,
            },
            Action::Sync,
        ]
    );
}

#[test]
fn a_follower_that_hears_from_its_leader_does_not_campaign() {
    let mut r = follower_of(config(2, 3), 1, 1, &[]);
    for _ in 0..5 {
        assert_eq!(tick_n(&mut r, ELECTION_TICKS - 1), vec![]);
        step_ok(&mut r, &msg(1, 2, 1, heartbeat(0, 0)));
    }
    assert_eq!(r.role(), Role::Follower);
}

#[test]
fn leader_sends_heartbeats_every_interval() {
    let mut r = stable_leader(3);
    assert_eq!(tick(&mut r), vec![]);
    let hb = heartbeat(1, 0);
    assert_eq!(
        tick(&mut r),
        vec![send(1, 2, 1, hb.clone()), send(1, 3, 1, hb.clone())]
    );
    assert_eq!(tick(&mut r), vec![]);
    assert_eq!(
        tick(&mut r),
        vec![send(1, 2, 1, hb.clone()), send(1, 3, 1, hb)]
    );
}

#[test]
fn check_quorum_steps_down_after_a_silent_election_timeout() {
    let mut r = stable_leader(3);
    // The first round still sees the acknowledgements of the no-op.
    let out = tick_n(&mut r, 2 * ELECTION_TICKS - 1);
    assert!(out.iter().all(|a| matches!(a, Action::Send(_))));
    assert_eq!(r.role(), Role::Leader);
    let hb = heartbeat(1, 0);
    assert_eq!(
        tick(&mut r),
        vec![
            send(1, 2, 1, hb.clone()),
            send(1, 3, 1, hb),
            role_changed(Role::Follower, 1, None),
        ]
    );
    assert_eq!(r.term(), 1);
    assert_eq!(r.leader(), None);
}

#[test]
fn check_quorum_keeps_a_leader_that_hears_from_a_majority() {
    let mut r = stable_leader(3);
    for _ in 0..10 {
        tick_n(&mut r, ELECTION_TICKS - 1);
        let resp = MessageBody::HeartbeatResponse { read_seq: 0 };
        step_ok(&mut r, &msg(2, 1, 1, resp));
    }
    assert_eq!(r.role(), Role::Leader);
}

#[test]
fn without_check_quorum_a_silent_leader_keeps_leading() {
    let mut cfg = config(1, 3);
    cfg.check_quorum = false;
    let mut r = stable_leader_with(cfg);
    let out = tick_n(&mut r, 10 * ELECTION_TICKS);
    assert!(out.iter().all(|a| matches!(a, Action::Send(_))));
    assert_eq!(r.role(), Role::Leader);
}

#[test]
fn leadership_transfer_is_abandoned_after_an_election_timeout() {
    let mut r = stable_leader(3);
    let mut out = Vec::new();
    r.transfer_leader(2, &mut out).unwrap();
    assert_eq!(out, vec![send(1, 2, 1, MessageBody::TimeoutNow)]);
    tick_n(&mut r, ELECTION_TICKS - 1);
    assert_eq!(r.status().transfer_target, Some(2));
    assert_eq!(
        propose(&mut r, &[LEN]).0,
        Err(ProposeError::TransferInProgress)
    );
    // The expiring tick emits only its heartbeats; proposals are taken again after it.
    let hb = heartbeat(1, 0);
    assert_eq!(
        tick(&mut r),
        vec![send(1, 2, 1, hb.clone()), send(1, 3, 1, hb)]
    );
    assert_eq!(r.status().transfer_target, None);
    assert_eq!(propose(&mut r, &[LEN]).0, Ok((1, 2)));
}
