//! `Replica::transfer_leader` and TimeoutNow: the leader hands over to a caught-up
//! target, which campaigns at once with the transfer flag.

mod raft_common;

use engine::raft::*;
use raft_common::*;

fn transfer(r: &mut Replica, to: ReplicaId) -> (Result<(), AdminError>, Vec<Action>) {
    let mut out = Vec::new();
    let res = r.transfer_leader(to, &mut out);
    (res, out)
}

#[test]
fn a_caught_up_target_gets_timeout_now_at_once() {
    let mut r = stable_leader(3);
    assert_eq!(
        transfer(&mut r, 2),
        (Ok(()), vec![send(1, 2, 1, MessageBody::TimeoutNow)])
    );
    assert_eq!(r.status().transfer_target, Some(2));
}

#[test]
fn a_lagging_target_gets_timeout_now_once_it_catches_up() {
    let mut r = stable_leader(3);
    propose(&mut r, &[LEN; 2]).0.unwrap();
    // The entries are already in flight: nothing more to send yet.
    assert_eq!(transfer(&mut r, 2), (Ok(()), vec![]));
    assert_eq!(step_ok(&mut r, &msg(2, 1, 1, ack(2))), vec![]);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, ack(3))),
        vec![send(1, 2, 1, MessageBody::TimeoutNow)]
    );
}

#[test]
fn a_probing_target_is_sent_the_missing_entries() {
    let mut r = stable_leader(3);
    propose(&mut r, &[LEN]).0.unwrap();
    // Follower 2 lost entry 2: its rejection puts it back in probe.
    step_ok(&mut r, &msg(2, 1, 1, reject(2, 1, 0, 2)));
    step_ok(
        &mut r,
        &msg(2, 1, 1, MessageBody::HeartbeatResponse { read_seq: 0 }),
    );
    assert!(!progress(&r, 2).replicating);
    // The probe is outstanding; the transfer waits for its answer.
    assert_eq!(transfer(&mut r, 2), (Ok(()), vec![]));
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, ack(2))),
        vec![send(1, 2, 1, MessageBody::TimeoutNow)]
    );
}

#[test]
fn proposals_are_refused_while_a_transfer_is_pending() {
    let mut r = stable_leader(3);
    transfer(&mut r, 3).0.unwrap();
    assert_eq!(
        propose(&mut r, &[LEN]).0,
        Err(ProposeError::TransferInProgress)
    );
    // Reads still work.
    let mut out = Vec::new();
    assert_eq!(r.read_index(1, &mut out), Ok(()));
}

#[test]
fn the_target_campaigns_at_once_with_the_transfer_flag() {
    // Pre-vote is on, but a transfer campaign skips it.
    let mut r = follower_of(config(2, 3), 1, 1, &[1]);
    assert_eq!(
        step_ok(&mut r, &msg(1, 2, 1, MessageBody::TimeoutNow)),
        vec![
            hard(2, Some(2), 0),
            role_changed(Role::Candidate, 2, None),
            send(
                2,
                1,
                2,
                MessageBody::Vote {
                    last_index: 1,
                    last_term: 1,
                    transfer: true,
                }
            ),
            send(
                2,
                3,
                2,
                MessageBody::Vote {
                    last_index: 1,
                    last_term: 1,
                    transfer: true,
                }
            ),
        ]
    );
}

#[test]
fn timeout_now_from_a_replica_that_is_not_our_leader_is_refused() {
    let mut r = follower_of(config(2, 3), 1, 1, &[]);
    let (res, out) = step(&mut r, &msg(3, 2, 1, MessageBody::TimeoutNow));
    assert_eq!(res, Err(StepError::UnexpectedForRole(Role::Follower)));
    assert_eq!(out, vec![]);
    let mut r = stable_leader(3);
    let (res, _) = step(&mut r, &msg(2, 1, 1, MessageBody::TimeoutNow));
    assert_eq!(res, Err(StepError::UnexpectedForRole(Role::Leader)));
}

#[test]
fn bad_transfer_requests_are_typed_errors() {
    let mut r = stable_leader(3);
    assert_eq!(
        transfer(&mut r, 1),
        (Err(AdminError::TransferToSelf), vec![])
    );
    assert_eq!(
        transfer(&mut r, 9),
        (Err(AdminError::UnknownReplica(9)), vec![])
    );
    let mut f = follower_of(config(2, 3), 1, 1, &[]);
    assert_eq!(
        transfer(&mut f, 3),
        (Err(AdminError::NotLeader { leader: Some(1) }), vec![])
    );
    assert_eq!(r.status().transfer_target, None);
}
