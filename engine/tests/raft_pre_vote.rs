//! `Replica::step` with PreVote and PreVoteResponse: a pre-vote never changes a term,
//! and a pre-candidate campaigns only once a majority would vote for it.

mod raft_common;

use engine::raft::*;
use raft_common::*;

fn pre_vote(last_index: Index, last_term: Term) -> MessageBody {
    MessageBody::PreVote {
        last_index,
        last_term,
    }
}

fn pre_vote_response(granted: bool) -> MessageBody {
    MessageBody::PreVoteResponse { granted }
}

/// Replica 1 of three after its election timeout: a pre-candidate of term `term`.
fn pre_candidate(term: Term, log_terms: &[Term]) -> Replica {
    let mut r = replica(config(1, 3), recovered(term, None, log_terms));
    tick_n(&mut r, ELECTION_TICKS);
    assert_eq!(r.role(), Role::PreCandidate);
    r
}

#[test]
fn grants_a_pre_vote_in_the_proposed_term_without_adopting_it() {
    let mut r = fresh(1, 3);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, pre_vote(0, 0))),
        vec![send(1, 2, 1, pre_vote_response(true))]
    );
    assert_eq!(r.hard_state(), HardState::default());
    assert_eq!(r.role(), Role::Follower);
}

#[test]
fn denies_a_pre_vote_for_a_stale_log_in_the_current_term() {
    let mut r = replica(config(1, 3), recovered(1, None, &[1, 1]));
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 2, pre_vote(1, 1))),
        vec![send(1, 2, 1, pre_vote_response(false))]
    );
    assert_eq!(r.term(), 1);
}

#[test]
fn denies_a_pre_vote_while_a_leader_is_live() {
    let mut r = follower_of(config(1, 3), 1, 3, &[]);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 2, pre_vote(5, 1))),
        vec![send(1, 2, 1, pre_vote_response(false))]
    );
    assert_eq!(r.leader(), Some(3));
}

#[test]
fn a_leader_denies_pre_votes() {
    let mut r = stable_leader(3);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 2, pre_vote(9, 1))),
        vec![send(1, 2, 1, pre_vote_response(false))]
    );
    assert_eq!(r.role(), Role::Leader);
}

#[test]
fn denies_a_pre_vote_for_the_current_term() {
    let mut r = replica(config(1, 3), recovered(2, None, &[]));
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 2, pre_vote(0, 0))),
        vec![send(1, 2, 2, pre_vote_response(false))]
    );
}

#[test]
fn a_majority_of_pre_votes_starts_the_real_campaign() {
    let mut r = pre_candidate(2, &[1, 2]);
    let vote = MessageBody::Vote {
        last_index: 2,
        last_term: 2,
        transfer: false,
    };
    assert_eq!(
        step_ok(&mut r, &msg(3, 1, 3, pre_vote_response(true))),
        vec![
            hard(3, Some(1), 0),
            role_changed(Role::Candidate, 3, None),
            send(1, 2, 3, vote.clone()),
            send(1, 3, 3, vote),
        ]
    );
}

#[test]
fn a_granted_pre_vote_for_another_term_does_not_count() {
    let mut r = pre_candidate(2, &[]);
    assert_eq!(
        step_ok(&mut r, &msg(3, 1, 4, pre_vote_response(true))),
        vec![]
    );
    assert_eq!(r.role(), Role::PreCandidate);
    assert_eq!(r.term(), 2);
}

#[test]
fn a_majority_of_rejections_returns_to_follower_in_the_same_term() {
    let mut r = pre_candidate(2, &[]);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 2, pre_vote_response(false))),
        vec![]
    );
    assert_eq!(
        step_ok(&mut r, &msg(3, 1, 2, pre_vote_response(false))),
        vec![role_changed(Role::Follower, 2, None)]
    );
    assert_eq!(r.term(), 2);
}

#[test]
fn a_rejection_from_a_newer_term_is_adopted() {
    let mut r = pre_candidate(2, &[]);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 7, pre_vote_response(false))),
        vec![hard(7, None, 0), role_changed(Role::Follower, 7, None)]
    );
}

#[test]
fn a_pre_candidate_follows_a_leader_of_its_term() {
    let mut r = pre_candidate(2, &[]);
    let out = step_ok(&mut r, &msg(3, 1, 2, heartbeat(0, 0)));
    assert_eq!(
        out,
        vec![
            role_changed(Role::Follower, 2, Some(3)),
            send(1, 3, 2, MessageBody::HeartbeatResponse { read_seq: 0 }),
        ]
    );
}

#[test]
fn a_pre_vote_of_a_stale_term_is_answered_with_the_current_term() {
    let mut r = replica(config(1, 3), recovered(5, None, &[]));
    let (res, out) = step(&mut r, &msg(2, 1, 3, pre_vote(0, 0)));
    assert_eq!(res, Err(StepError::StaleTerm { msg: 3, current: 5 }));
    assert_eq!(out, vec![send(1, 2, 5, pre_vote_response(false))]);
}
