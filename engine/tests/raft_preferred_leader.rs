//! `Config::preferred_leader`: the preferred replica campaigns first, and a leader hands
//! over to it once it is caught up.

mod raft_common;

use engine::raft::*;
use raft_common::*;

/// Ticks until the replica starts a pre-vote; returns how many ticks that took.
fn ticks_to_campaign(r: &mut Replica) -> u32 {
    for n in 1..=100 {
        if !tick(r).is_empty() {
            assert_eq!(r.role(), Role::PreCandidate);
            return n;
        }
    }
    panic!("replica {} never campaigned", r.id());
}

fn preferred_config(id: ReplicaId) -> Config {
    // The default [10, 20) range: the preferred replica draws from [10, 15).
    let mut c = Config::new(id, vec![1, 2, 3]);
    c.preferred_leader = Some(3);
    c
}

#[test]
fn the_preferred_replica_always_times_out_before_the_others() {
    let mut preferred_max = 0;
    let mut others_min = u32::MAX;
    for seed in 0..200 {
        for id in 1..=3 {
            let mut r =
                Replica::new(preferred_config(id), RecoveredState::default(), seed).unwrap();
            r.start(&mut Vec::new());
            // The first timeout, and the one drawn after hearing from a leader.
            let first = ticks_to_campaign(&mut r);
            let hb = msg(3, id, 1, heartbeat(0, 0));
            let hb = if id == 3 {
                msg(1, 3, 1, heartbeat(0, 0))
            } else {
                hb
            };
            step_ok(&mut r, &hb);
            let second = ticks_to_campaign(&mut r);
            for n in [first, second] {
                if id == 3 {
                    preferred_max = preferred_max.max(n);
                } else {
                    others_min = others_min.min(n);
                }
            }
        }
    }
    assert!(
        preferred_max < others_min,
        "preferred {preferred_max} vs others {others_min}"
    );
    assert_eq!((preferred_max, others_min), (14, 15));
}

#[test]
fn others_use_the_whole_range_once_the_preferred_replica_is_silent() {
    // Replica 1 never hears from 3. Its first two timeouts are drawn while the silence is
    // shorter than an election timeout; the third after it, from the whole range.
    let (mut early, mut third_min) = (u32::MAX, u32::MAX);
    for seed in 0..100 {
        let mut r = Replica::new(preferred_config(1), RecoveredState::default(), seed).unwrap();
        r.start(&mut Vec::new());
        early = early.min(ticks_to_campaign(&mut r));
        early = early.min(ticks_to_campaign(&mut r));
        third_min = third_min.min(ticks_to_campaign(&mut r));
    }
    assert_eq!(early, 15);
    assert!(third_min < 15, "earliest third timeout {third_min}");
}

#[test]
fn a_leader_hands_over_to_the_preferred_replica_once_it_is_caught_up() {
    let mut r = elect(preferred_config(1), RecoveredState::default());
    let term = r.term();
    persisted(&mut r, 1, term);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, term, ack(1))),
        vec![Action::Apply { first: 1, last: 1 }]
    );
    assert_eq!(
        step_ok(&mut r, &msg(3, 1, term, ack(1))),
        vec![send(1, 3, term, MessageBody::TimeoutNow)]
    );
    assert_eq!(r.status().transfer_target, Some(3));
}

#[test]
fn no_hand_over_before_the_preferred_replica_catches_up() {
    let mut r = elect(preferred_config(1), RecoveredState::default());
    let term = r.term();
    persisted(&mut r, 1, term);
    step_ok(&mut r, &msg(2, 1, term, ack(1)));
    let out = tick_n(&mut r, 9);
    assert!(out.iter().all(|a| matches!(
        a,
        Action::Send(Message {
            body: MessageBody::Heartbeat { .. },
            ..
        })
    )));
    assert_eq!(r.status().transfer_target, None);
}

#[test]
fn no_hand_over_before_an_entry_of_the_term_commits() {
    let mut r = elect(preferred_config(1), RecoveredState::default());
    let term = r.term();
    // Replica 3 holds the no-op, but the leader's own copy is not durable: no commit yet.
    assert_eq!(step_ok(&mut r, &msg(3, 1, term, ack(1))), vec![]);
    assert_eq!(r.status().transfer_target, None);
    // The commit comes with the leader's durability; the next tick hands over.
    assert_eq!(
        persisted(&mut r, 1, term),
        vec![Action::Apply { first: 1, last: 1 }]
    );
    assert_eq!(
        tick(&mut r),
        vec![send(1, 3, term, MessageBody::TimeoutNow)]
    );
}

#[test]
fn the_preferred_leader_keeps_leadership() {
    let mut r = elect(preferred_config(3), RecoveredState::default());
    let term = r.term();
    persisted(&mut r, 1, term);
    step_ok(&mut r, &msg(1, 3, term, ack(1)));
    step_ok(&mut r, &msg(2, 3, term, ack(1)));
    tick_n(&mut r, 9);
    assert_eq!(r.status().transfer_target, None);
    assert_eq!(r.role(), Role::Leader);
}
