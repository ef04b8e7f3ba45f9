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
fn a_heartbeat_commits_what_the_leader_knows_this_replica_holds() {
    // A follower restarted on a complete log: the leader's heartbeat announces only what
    // it acknowledged in this term, so it commits without waiting for an append.
    let mut r = follower_of(config(1, 3), 2, 2, &[1, 1, 1]);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 2, heartbeat(2, 0))),
        vec![
            Action::Apply { first: 1, last: 2 },
            send(1, 2, 2, MessageBody::HeartbeatResponse { read_seq: 0 }),
        ]
    );
    // Never beyond its own log, whatever the announcement.
    step_ok(&mut r, &msg(2, 1, 2, heartbeat(9, 0)));
    assert_eq!(r.commit(), 3);
}

#[test]
fn a_leader_announces_to_each_follower_only_the_commit_it_acknowledged() {
    let mut r = stable_leader(3);
    propose(&mut r, &[LEN]).0.unwrap();
    persisted(&mut r, 2, 1);
    step_ok(&mut r, &msg(2, 1, 1, ack(2)));
    assert_eq!(r.commit(), 2);
    let out = tick_n(&mut r, 10);
    let commits: Vec<(ReplicaId, Index)> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send(Message {
                to,
                body: MessageBody::Heartbeat { commit, .. },
                ..
            }) => Some((*to, *commit)),
            _ => None,
        })
        .collect();
    assert!(commits.contains(&(2, 2)), "{commits:?}");
    assert!(commits.contains(&(3, 1)), "{commits:?}");
    assert!(
        !commits.iter().any(|&(to, c)| to == 3 && c > 1),
        "{commits:?}"
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
