//! `Replica::read_index`: linearizable reads wait for a commit in the current term and
//! a quorum of heartbeat acknowledgements, and fail when leadership is lost.

mod raft_common;

use engine::raft::*;
use raft_common::*;

fn read(r: &mut Replica, ctx: u64) -> (Result<(), ProposeError>, Vec<Action>) {
    let mut out = Vec::new();
    let res = r.read_index(ctx, &mut out);
    (res, out)
}

fn hb_response(read_seq: u64) -> MessageBody {
    MessageBody::HeartbeatResponse { read_seq }
}

#[test]
fn a_read_waits_for_a_quorum_of_heartbeat_acknowledgements() {
    let mut r = stable_leader(3);
    let hb = heartbeat(1, 1);
    assert_eq!(
        read(&mut r, 7),
        (Ok(()), vec![send(1, 2, 1, hb.clone()), send(1, 3, 1, hb)])
    );
    // An answer to an older round does not count.
    assert_eq!(step_ok(&mut r, &msg(2, 1, 1, hb_response(0))), vec![]);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, hb_response(1))),
        vec![Action::ReadReady { ctx: 7, index: 1 }]
    );
    assert_eq!(step_ok(&mut r, &msg(3, 1, 1, hb_response(1))), vec![]);
}

#[test]
fn reads_need_a_majority_in_a_larger_group_and_complete_in_order() {
    let mut r = stable_leader(5);
    read(&mut r, 1).0.unwrap();
    read(&mut r, 2).0.unwrap();
    assert_eq!(step_ok(&mut r, &msg(2, 1, 1, hb_response(2))), vec![]);
    // The second acknowledgement of round 2 also covers round 1.
    assert_eq!(
        step_ok(&mut r, &msg(4, 1, 1, hb_response(2))),
        vec![
            Action::ReadReady { ctx: 1, index: 1 },
            Action::ReadReady { ctx: 2, index: 1 },
        ]
    );
}

#[test]
fn a_read_waits_for_the_first_commit_of_the_term() {
    let mut r = new_leader(3);
    assert_eq!(read(&mut r, 7), (Ok(()), vec![]));
    persisted(&mut r, 1, 1);
    // Each heartbeat announces the commit as far as that follower acknowledged it.
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, ack(1))),
        vec![
            Action::Apply { first: 1, last: 1 },
            send(1, 2, 1, heartbeat(1, 1)),
            send(1, 3, 1, heartbeat(0, 1)),
        ]
    );
    // Follower 3 is still probing: its answer also resends the probe.
    assert_eq!(
        step_ok(&mut r, &msg(3, 1, 1, hb_response(1))),
        vec![
            send(1, 3, 1, append_entries(0, 0, 1, vec![noop(1)])),
            Action::ReadReady { ctx: 7, index: 1 },
        ]
    );
}

#[test]
fn the_read_index_is_the_commit_when_the_read_arrived() {
    let mut r = stable_leader(3);
    propose(&mut r, &[LEN]).0.unwrap();
    read(&mut r, 7).0.unwrap();
    persisted(&mut r, 2, 1);
    step_ok(&mut r, &msg(2, 1, 1, ack(2)));
    assert_eq!(r.commit(), 2);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, hb_response(1))),
        vec![Action::ReadReady { ctx: 7, index: 1 }]
    );
}

#[test]
fn pending_reads_fail_when_the_leader_steps_down() {
    let mut r = new_leader(3);
    read(&mut r, 5).0.unwrap();
    persisted(&mut r, 1, 1);
    step_ok(&mut r, &msg(2, 1, 1, ack(1)));
    read(&mut r, 6).0.unwrap();
    assert_eq!(r.commit(), 1);
    assert_eq!(
        step_ok(&mut r, &msg(3, 1, 2, heartbeat(1, 0))),
        vec![
            hard(2, None, 1),
            Action::ReadFailed {
                ctx: 5,
                leader: Some(3),
            },
            Action::ReadFailed {
                ctx: 6,
                leader: Some(3),
            },
            role_changed(Role::Follower, 2, Some(3)),
            send(1, 3, 2, hb_response(0)),
        ]
    );
}

#[test]
fn reads_waiting_for_the_first_commit_fail_on_check_quorum_step_down() {
    let mut r = new_leader(3);
    read(&mut r, 5).0.unwrap();
    let out = tick_n(&mut r, 2 * ELECTION_TICKS);
    assert_eq!(
        out[out.len() - 2..],
        [
            Action::ReadFailed {
                ctx: 5,
                leader: None
            },
            role_changed(Role::Follower, 1, None),
        ]
    );
}

#[test]
fn a_single_voter_serves_reads_at_once() {
    let mut r = elect(config(1, 1), RecoveredState::default());
    persisted(&mut r, 1, 1);
    assert_eq!(
        read(&mut r, 9),
        (Ok(()), vec![Action::ReadReady { ctx: 9, index: 1 }])
    );
}

#[test]
fn a_follower_refuses_reads_with_the_leader_hint() {
    let mut r = follower_of(config(2, 3), 1, 1, &[]);
    assert_eq!(
        read(&mut r, 1),
        (Err(ProposeError::NotLeader { leader: Some(1) }), vec![])
    );
}
