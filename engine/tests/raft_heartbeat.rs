//! `Replica::step` with Heartbeat (follower) and HeartbeatResponse (leader).

mod raft_common;

use engine::raft::*;
use raft_common::*;

#[test]
fn a_follower_answers_with_the_read_round_it_was_given() {
    let mut r = follower_of(config(1, 3), 1, 2, &[]);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, heartbeat(0, 7))),
        vec![send(
            1,
            2,
            1,
            MessageBody::HeartbeatResponse { read_seq: 7 }
        )]
    );
}

#[test]
fn heartbeat_commit_is_bounded_by_the_entries_verified_with_this_leader() {
    // Entries recovered from disk are not known to match the new leader's log.
    let mut r = follower_of(config(1, 3), 2, 2, &[1, 1, 1]);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 2, heartbeat(3, 0))),
        vec![send(
            1,
            2,
            2,
            MessageBody::HeartbeatResponse { read_seq: 0 }
        )]
    );
    assert_eq!(r.commit(), 0);
    // Once an append verified 1..=2, a heartbeat may commit up to 2.
    step_ok(&mut r, &msg(2, 1, 2, append_entries(2, 1, 0, vec![])));
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 2, heartbeat(3, 0))),
        vec![
            Action::Apply { first: 1, last: 2 },
            send(1, 2, 2, MessageBody::HeartbeatResponse { read_seq: 0 }),
        ]
    );
}

#[test]
fn a_leader_probes_a_follower_again_when_it_answers_a_heartbeat() {
    let mut r = new_leader(3);
    // The no-op probe is outstanding: nothing more is sent until the follower answers.
    assert!(!progress(&r, 2).replicating);
    assert_eq!(
        step_ok(
            &mut r,
            &msg(2, 1, 1, MessageBody::HeartbeatResponse { read_seq: 0 })
        ),
        vec![send(1, 2, 1, append_entries(0, 0, 0, vec![noop(1)]))]
    );
}

#[test]
fn a_leader_sends_an_empty_append_to_a_lagging_replicating_follower() {
    let mut r = stable_leader(3);
    propose(&mut r, &[LEN]).0.unwrap();
    assert_eq!(
        step_ok(
            &mut r,
            &msg(2, 1, 1, MessageBody::HeartbeatResponse { read_seq: 0 })
        ),
        vec![send(1, 2, 1, append_entries(2, 1, 1, vec![]))]
    );
    // A follower that holds everything gets nothing.
    step_ok(&mut r, &msg(3, 1, 1, ack(2)));
    assert_eq!(
        step_ok(
            &mut r,
            &msg(3, 1, 1, MessageBody::HeartbeatResponse { read_seq: 0 })
        ),
        vec![]
    );
}

#[test]
fn a_stale_leader_steps_down_on_a_newer_heartbeat_response() {
    let mut r = stable_leader(3);
    let resp = MessageBody::HeartbeatResponse { read_seq: 0 };
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 5, resp)),
        vec![hard(5, None, 1), role_changed(Role::Follower, 5, None)]
    );
}
