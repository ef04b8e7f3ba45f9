//! `Replica::step` with Vote and VoteResponse: who gets a vote, and that the vote is
//! durable before the answer leaves.

mod raft_common;

use engine::raft::*;
use raft_common::*;

fn vote(last_index: Index, last_term: Term, transfer: bool) -> MessageBody {
    MessageBody::Vote {
        last_index,
        last_term,
        transfer,
    }
}

fn vote_response(granted: bool) -> MessageBody {
    MessageBody::VoteResponse { granted }
}

#[test]
fn grants_a_vote_and_persists_it_before_answering() {
    let mut r = fresh(1, 3);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, vote(0, 0, false))),
        vec![
            hard(1, None, 0),
            role_changed(Role::Follower, 1, None),
            hard(1, Some(2), 0),
            send(1, 2, 1, vote_response(true)),
        ]
    );
    assert_eq!(
        r.hard_state(),
        HardState {
            term: 1,
            vote: Some(2),
            commit: 0
        }
    );
}

#[test]
fn denies_a_candidate_with_a_shorter_log_of_the_same_last_term() {
    let mut r = replica(config(1, 3), recovered(1, None, &[1, 1]));
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 2, vote(1, 1, false))),
        vec![
            hard(2, None, 0),
            role_changed(Role::Follower, 2, None),
            send(1, 2, 2, vote_response(false)),
        ]
    );
    assert_eq!(r.hard_state().vote, None);
}

#[test]
fn denies_a_candidate_with_an_older_last_term_however_long() {
    let mut r = replica(config(1, 3), recovered(2, None, &[1, 2]));
    let out = step_ok(&mut r, &msg(2, 1, 3, vote(50, 1, false)));
    assert_eq!(out.last(), Some(&send(1, 2, 3, vote_response(false))));
}

#[test]
fn grants_a_candidate_with_a_newer_last_term_even_if_shorter() {
    let mut r = replica(config(1, 3), recovered(2, None, &[1, 1, 1, 1]));
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 3, vote(2, 2, false))),
        vec![
            hard(3, None, 0),
            role_changed(Role::Follower, 3, None),
            hard(3, Some(2), 0),
            send(1, 2, 3, vote_response(true)),
        ]
    );
}

#[test]
fn denies_a_second_candidate_in_the_same_term_but_repeats_a_granted_vote() {
    let mut r = replica(config(1, 3), recovered(1, Some(3), &[]));
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, vote(0, 0, false))),
        vec![send(1, 2, 1, vote_response(false))]
    );
    // A retransmitted request from the candidate we voted for gets the same answer.
    assert_eq!(
        step_ok(&mut r, &msg(3, 1, 1, vote(0, 0, false))),
        vec![hard(1, Some(3), 0), send(1, 3, 1, vote_response(true))]
    );
}

#[test]
fn denies_a_vote_while_following_a_leader_of_the_same_term() {
    let mut cfg = config(1, 3);
    cfg.check_quorum = false;
    let mut r = follower_of(cfg, 1, 3, &[]);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, vote(5, 1, false))),
        vec![send(1, 2, 1, vote_response(false))]
    );
}

#[test]
fn leader_lease_ignores_a_disruptive_candidate() {
    let mut r = follower_of(config(1, 3), 1, 3, &[1]);
    tick_n(&mut r, ELECTION_TICKS - 1);
    let (res, out) = step(&mut r, &msg(2, 1, 2, vote(1, 1, false)));
    assert_eq!(res, Err(StepError::LeaderLease));
    assert_eq!(out, vec![]);
    assert_eq!(r.term(), 1);
    assert_eq!(r.leader(), Some(3));
}

#[test]
fn without_check_quorum_there_is_no_lease() {
    let mut cfg = config(1, 3);
    cfg.check_quorum = false;
    let mut r = follower_of(cfg, 1, 3, &[1]);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 2, vote(1, 1, false))),
        vec![
            hard(2, None, 0),
            role_changed(Role::Follower, 2, None),
            hard(2, Some(2), 0),
            send(1, 2, 2, vote_response(true)),
        ]
    );
}

#[test]
fn the_transfer_flag_bypasses_the_lease() {
    let mut r = follower_of(config(1, 3), 1, 3, &[1]);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 2, vote(1, 1, true))),
        vec![
            hard(2, None, 0),
            role_changed(Role::Follower, 2, None),
            hard(2, Some(2), 0),
            send(1, 2, 2, vote_response(true)),
        ]
    );
}

#[test]
fn a_leader_steps_down_for_a_transfer_campaign_and_votes_for_it() {
    let mut r = stable_leader(3);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 2, vote(1, 1, true))),
        vec![
            hard(2, None, 1),
            role_changed(Role::Follower, 2, None),
            hard(2, Some(2), 1),
            send(1, 2, 2, vote_response(true)),
        ]
    );
}

#[test]
fn a_candidate_becomes_leader_on_a_majority_and_appends_a_no_op() {
    let mut cfg = config(1, 3);
    cfg.pre_vote = false;
    let mut r = replica(cfg, recovered(0, None, &[]));
    tick_n(&mut r, ELECTION_TICKS);
    assert_eq!(r.role(), Role::Candidate);
    let ae = append_entries(0, 0, 0, vec![noop(1)]);
    assert_eq!(
        step_ok(&mut r, &msg(3, 1, 1, vote_response(true))),
        vec![
            role_changed(Role::Leader, 1, Some(1)),
            Action::AppendProposal {
                term: 1,
                first_index: 1,
                count: 1,
            },
            Action::Sync,
            send(1, 2, 1, ae.clone()),
            send(1, 3, 1, ae),
        ]
    );
    // A late vote changes nothing.
    assert_eq!(step_ok(&mut r, &msg(2, 1, 1, vote_response(true))), vec![]);
}

#[test]
fn a_candidate_rejected_by_a_majority_returns_to_follower() {
    let mut cfg = config(1, 5);
    cfg.pre_vote = false;
    let mut r = replica(cfg, recovered(0, None, &[]));
    tick_n(&mut r, ELECTION_TICKS);
    for from in [2, 3] {
        assert_eq!(
            step_ok(&mut r, &msg(from, 1, 1, vote_response(false))),
            vec![]
        );
    }
    assert_eq!(
        step_ok(&mut r, &msg(4, 1, 1, vote_response(false))),
        vec![role_changed(Role::Follower, 1, None)]
    );
    assert_eq!(r.hard_state().vote, Some(1));
}

#[test]
fn a_vote_response_of_a_newer_term_ends_the_candidacy() {
    let mut cfg = config(1, 3);
    cfg.pre_vote = false;
    let mut r = replica(cfg, recovered(0, None, &[]));
    tick_n(&mut r, ELECTION_TICKS);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 4, vote_response(false))),
        vec![hard(4, None, 0), role_changed(Role::Follower, 4, None)]
    );
}
