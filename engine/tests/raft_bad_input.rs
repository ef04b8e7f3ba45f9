//! Bad input to `Replica::step` and the other handlers: typed errors, never a panic, and
//! the invariants hold whatever arrives.

mod raft_common;

use engine::raft::*;
use proptest::prelude::*;
use raft_common::*;

#[test]
fn a_message_from_an_unknown_replica_or_from_itself_is_refused() {
    let mut r = fresh(1, 3);
    assert_eq!(
        step(&mut r, &msg(9, 1, 1, heartbeat(0, 0))),
        (Err(StepError::UnknownReplica(9)), vec![])
    );
    assert_eq!(
        step(&mut r, &msg(1, 1, 1, heartbeat(0, 0))),
        (Err(StepError::UnknownReplica(1)), vec![])
    );
    assert_eq!(r.term(), 0);
}

#[test]
fn a_message_for_another_replica_is_refused() {
    let mut r = fresh(1, 3);
    assert_eq!(
        step(&mut r, &msg(2, 3, 5, heartbeat(0, 0))),
        (Err(StepError::WrongDestination(3)), vec![])
    );
    assert_eq!(r.term(), 0);
}

#[test]
fn a_stale_leader_is_told_the_newer_term_and_steps_down_on_it() {
    let mut old_leader = stable_leader(3);
    let mut newer = follower_of(config(2, 3), 2, 3, &[1]);
    let ae = msg(1, 2, 1, append_entries(1, 1, 1, vec![]));
    let (res, out) = step(&mut newer, &ae);
    assert_eq!(res, Err(StepError::StaleTerm { msg: 1, current: 2 }));
    let answer = msg(2, 1, 2, MessageBody::HeartbeatResponse { read_seq: 0 });
    assert_eq!(out, vec![Action::Send(answer.clone())]);
    assert_eq!(
        step_ok(&mut old_leader, &answer),
        vec![hard(2, None, 1), role_changed(Role::Follower, 2, None)]
    );
}

#[test]
fn a_term_beyond_term_max_is_refused_as_corrupt() {
    let mut r = fresh(1, 3);
    for term in [TERM_MAX + 1, u64::MAX] {
        assert_eq!(
            step(&mut r, &msg(2, 1, term, MessageBody::TimeoutNow)),
            (Err(StepError::TermTooLarge(term)), vec![])
        );
    }
    // TERM_MAX itself is a term like any other, and leaves room to campaign.
    step_ok(&mut r, &msg(2, 1, TERM_MAX, MessageBody::TimeoutNow));
    assert_eq!(r.term(), TERM_MAX + 1);
    tick_n(&mut r, 3 * ELECTION_TICKS);
}

#[test]
fn stale_responses_and_requests_are_ignored_without_an_answer() {
    let mut r = replica(config(1, 3), recovered(4, None, &[]));
    for body in [
        MessageBody::VoteResponse { granted: true },
        MessageBody::Vote {
            last_index: 9,
            last_term: 3,
            transfer: true,
        },
        ack(0),
        MessageBody::TimeoutNow,
    ] {
        assert_eq!(
            step(&mut r, &msg(2, 1, 3, body)),
            (Err(StepError::StaleTerm { msg: 3, current: 4 }), vec![])
        );
    }
}

#[test]
fn entries_with_decreasing_terms_are_malformed() {
    let mut r = follower_of(config(1, 3), 3, 2, &[]);
    let ae = append_entries(0, 0, 0, metas(&[2, 1]));
    assert_eq!(
        step(&mut r, &msg(2, 1, 3, ae)),
        (Err(StepError::MalformedEntries), vec![])
    );
    let ae = append_entries(0, 2, 0, metas(&[1]));
    assert_eq!(
        step(&mut r, &msg(2, 1, 3, ae)),
        (Err(StepError::MalformedEntries), vec![])
    );
    assert_eq!(r.last_index(), 0);
}

#[test]
fn entries_newer_than_the_message_term_are_malformed() {
    let mut r = follower_of(config(1, 3), 3, 2, &[]);
    let ae = append_entries(0, 0, 0, metas(&[3, 4]));
    assert_eq!(
        step(&mut r, &msg(2, 1, 3, ae)),
        (Err(StepError::MalformedEntries), vec![])
    );
}

#[test]
fn an_append_that_would_rewrite_committed_entries_is_malformed() {
    let mut r = follower_of(config(1, 3), 2, 2, &[1, 1, 1]);
    step_ok(&mut r, &msg(2, 1, 2, append_entries(3, 1, 3, vec![])));
    assert_eq!(r.commit(), 3);
    // A conflicting entry at a committed index...
    let ae = append_entries(1, 1, 3, metas(&[2]));
    assert_eq!(
        step(&mut r, &msg(2, 1, 2, ae)),
        (Err(StepError::MalformedEntries), vec![])
    );
    // ...and a mismatched prev below the commit.
    let ae = append_entries(2, 2, 3, vec![]);
    assert_eq!(
        step(&mut r, &msg(2, 1, 2, ae)),
        (Err(StepError::MalformedEntries), vec![])
    );
    assert_eq!((r.last_index(), r.term_at(3)), (3, Some(1)));
}

#[test]
fn an_acknowledgement_beyond_the_leaders_log_is_refused() {
    let mut r = stable_leader(3);
    assert_eq!(
        step(&mut r, &msg(3, 1, 1, ack(u64::MAX))),
        (
            Err(StepError::IndexBeyondLog {
                index: u64::MAX,
                last: 1,
            }),
            vec![]
        )
    );
}

#[test]
fn a_reject_hint_with_absurd_values_does_not_overflow() {
    let mut r = stable_leader(3);
    propose(&mut r, &[LEN]).0.unwrap();
    let body = MessageBody::AppendResponse {
        index: 2,
        reject: Some(RejectHint {
            last_index: u64::MAX,
            conflict_term: 0,
            conflict_first_index: u64::MAX,
        }),
    };
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, body)),
        vec![send(1, 2, 1, append_entries(1, 1, 1, metas(&[1])))]
    );
}

#[test]
fn messages_of_the_wrong_kind_for_the_role_are_refused() {
    let mut f = follower_of(config(1, 3), 1, 2, &[]);
    assert_eq!(
        step(&mut f, &msg(2, 1, 1, ack(0))),
        (Err(StepError::UnexpectedForRole(Role::Follower)), vec![])
    );
    assert_eq!(
        step(
            &mut f,
            &msg(2, 1, 1, MessageBody::HeartbeatResponse { read_seq: 1 })
        ),
        (Err(StepError::UnexpectedForRole(Role::Follower)), vec![])
    );
    // Another "leader" of the leader's own term.
    let mut l = stable_leader(3);
    assert_eq!(
        step(&mut l, &msg(2, 1, 1, append_entries(1, 1, 1, vec![]))),
        (Err(StepError::UnexpectedForRole(Role::Leader)), vec![])
    );
    assert_eq!(
        step(&mut l, &msg(2, 1, 1, heartbeat(1, 0))),
        (Err(StepError::UnexpectedForRole(Role::Leader)), vec![])
    );
    assert_eq!(l.role(), Role::Leader);
}

#[test]
fn a_bad_config_is_a_typed_error() {
    let mut c = config(1, 3);
    c.voters = vec![2, 3];
    assert_eq!(
        Replica::new(c, RecoveredState::default(), 1).err(),
        Some(ConfigError::SelfNotVoter(1))
    );
    let mut c = config(1, 3);
    c.heartbeat_interval_ticks = ELECTION_TICKS;
    assert_eq!(
        Replica::new(c, RecoveredState::default(), 1).err(),
        Some(ConfigError::HeartbeatInterval)
    );
    let rec = recovered(1, Some(7), &[]);
    assert_eq!(
        Replica::new(config(1, 3), rec, 1).err(),
        Some(ConfigError::NotAVoter("persisted vote", 7))
    );
}

// ----- random input -----

#[derive(Clone, Debug)]
enum Event {
    Step(Message),
    Tick,
    Propose(Vec<u32>),
    Persisted(Index, Term),
    ReadIndex(u64),
    Transfer(ReplicaId),
}

fn small_index() -> impl Strategy<Value = Index> {
    prop_oneof![8 => 0..12u64, 1 => Just(u64::MAX), 1 => Just(u64::MAX - 1)]
}

fn small_term() -> impl Strategy<Value = Term> {
    prop_oneof![9 => 0..7u64, 1 => Just(u64::MAX)]
}

fn body() -> impl Strategy<Value = MessageBody> {
    let entries = prop::collection::vec(
        (0..7u64, 0..300u32).prop_map(|(term, len)| EntryMeta { term, len }),
        0..5,
    );
    let hint = (small_index(), small_term(), small_index()).prop_map(|(l, t, f)| RejectHint {
        last_index: l,
        conflict_term: t,
        conflict_first_index: f,
    });
    prop_oneof![
        (small_index(), small_term()).prop_map(|(last_index, last_term)| MessageBody::PreVote {
            last_index,
            last_term
        }),
        any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
        (small_index(), small_term(), any::<bool>()).prop_map(
            |(last_index, last_term, transfer)| {
                MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer,
                }
            }
        ),
        any::<bool>().prop_map(|granted| MessageBody::VoteResponse { granted }),
        (small_index(), small_term(), small_index(), entries).prop_map(
            |(prev_index, prev_term, commit, entries)| MessageBody::AppendEntries {
                prev_index,
                prev_term,
                commit,
                entries,
            }
        ),
        (small_index(), prop::option::of(hint))
            .prop_map(|(index, reject)| MessageBody::AppendResponse { index, reject }),
        (small_index(), 0..4u64)
            .prop_map(|(commit, read_seq)| MessageBody::Heartbeat { commit, read_seq }),
        (0..4u64).prop_map(|read_seq| MessageBody::HeartbeatResponse { read_seq }),
        Just(MessageBody::TimeoutNow),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let message = (
        0..5u64,
        prop_oneof![9 => Just(1u64), 1 => 0..5u64],
        small_term(),
        body(),
    )
        .prop_map(|(from, to, term, body)| msg(from, to, term, body));
    prop_oneof![
        6 => message.prop_map(Event::Step),
        2 => Just(Event::Tick),
        1 => prop::collection::vec(0..300u32, 0..4).prop_map(Event::Propose),
        1 => (small_index(), small_term()).prop_map(|(i, t)| Event::Persisted(i, t)),
        1 => (0..100u64).prop_map(Event::ReadIndex),
        1 => (0..5u64).prop_map(Event::Transfer),
    ]
}

/// Replica 1 of three in the role `role` picks (0 follower with a log, 1 pre-candidate,
/// 2 candidate, 3 leader, 4 fixed leader).
fn replica_in_role(role: u8) -> Replica {
    match role {
        0 => follower_of(config(1, 3), 2, 2, &[1, 1, 2]),
        1 => {
            let mut r = replica(config(1, 3), recovered(2, None, &[1, 2]));
            tick_n(&mut r, ELECTION_TICKS);
            r
        }
        2 => {
            let mut c = config(1, 3);
            c.pre_vote = false;
            let mut r = replica(c, recovered(2, None, &[1, 2]));
            tick_n(&mut r, ELECTION_TICKS);
            r
        }
        3 => {
            let mut r = stable_leader(3);
            propose(&mut r, &[LEN; 3]).0.unwrap();
            r
        }
        _ => {
            let mut c = config(1, 3);
            c.fixed_leader = Some(1);
            replica(c, recovered(1, Some(1), &[1, 1]))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_input_never_panics_and_keeps_the_invariants(
        role in 0..5u8,
        events in prop::collection::vec(event(), 1..40),
    ) {
        let mut r = replica_in_role(role);
        let mut out = Vec::new();
        for ev in events {
            let (term, commit) = (r.term(), r.commit());
            out.clear();
            match ev {
                Event::Step(m) => {
                    let _ = r.step(&m, &mut out);
                }
                Event::Tick => r.tick(&mut out),
                Event::Propose(lens) => {
                    let _ = r.propose(&lens, &mut out);
                }
                Event::Persisted(i, t) => r.on_persisted(i, t, &mut out),
                Event::ReadIndex(ctx) => {
                    let _ = r.read_index(ctx, &mut out);
                }
                Event::Transfer(to) => {
                    let _ = r.transfer_leader(to, &mut out);
                }
            }
            r.check_invariants();
            prop_assert!(r.term() >= term, "term went back");
            prop_assert!(r.commit() >= commit, "commit went back");
            let mut applied = commit;
            for a in &out {
                match a {
                    Action::Apply { first, last } => {
                        prop_assert_eq!(*first, applied + 1, "apply is contiguous");
                        prop_assert!(last >= first);
                        applied = *last;
                    }
                    Action::Send(m) => prop_assert_eq!(m.from, 1),
                    Action::PersistHardState(hs) => prop_assert!(hs.commit <= r.persisted_index()),
                    _ => {}
                }
            }
            prop_assert_eq!(applied, r.commit());
        }
    }
}
