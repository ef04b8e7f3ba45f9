//! A replica that lost its data rejoins (`RecoveredState::rejoining`): it learns every
//! other voter's term before it takes part in anything, moves above the highest, and
//! neither votes nor campaigns until it durably holds a committed entry of its leader's
//! term.

mod raft_common;

use engine::raft::*;
use raft_common::*;

fn wiped() -> RecoveredState {
    RecoveredState {
        rejoining: true,
        ..RecoveredState::default()
    }
}

/// Replica 1 of `1..=3` rejoining after a wipe, with the start's queries checked, and
/// the nonce they carry.
fn rejoiner() -> (Replica, u64) {
    let mut r = Replica::new(config(1, 3), wiped(), 7).expect("valid config");
    let mut out = Vec::new();
    r.start(&mut out);
    let nonce = match &out[..] {
        [Action::Send(Message {
            body: MessageBody::TermQuery { nonce },
            ..
        }), ..] => *nonce,
        other => panic!("no term query first: {other:?}"),
    };
    assert_eq!(
        out,
        vec![
            send(1, 2, 0, MessageBody::TermQuery { nonce }),
            send(1, 3, 0, MessageBody::TermQuery { nonce }),
        ]
    );
    assert!(r.rejoining() && r.status().rejoining);
    (r, nonce)
}

fn reply(nonce: u64) -> MessageBody {
    MessageBody::TermReply { nonce }
}

fn vote(last_index: Index, last_term: Term) -> MessageBody {
    MessageBody::Vote {
        last_index,
        last_term,
        transfer: false,
    }
}

#[test]
fn a_voter_answers_a_term_query_without_adopting_or_comparing_terms() {
    let mut r = follower_of(config(2, 3), 4, 3, &[1, 4]);
    // The asker's term is older and newer than ours in turn: neither matters.
    for asker_term in [0, 9] {
        let out = step_ok(
            &mut r,
            &msg(1, 2, asker_term, MessageBody::TermQuery { nonce: 5 }),
        );
        assert_eq!(out, vec![send(2, 1, 4, reply(5))]);
        assert_eq!((r.term(), r.leader()), (4, Some(3)));
    }
    // A stray reply (this replica is not rejoining) changes nothing either.
    assert_eq!(step_ok(&mut r, &msg(1, 2, 9, reply(5))), vec![]);
    assert_eq!(r.term(), 4);
}

#[test]
fn until_every_voter_answered_it_takes_part_in_nothing() {
    let (mut r, nonce) = rejoiner();
    // A deposed leader of an old term: acknowledging it could let it commit again.
    let ae = append_entries(0, 0, 0, metas(&[1]));
    assert_eq!(
        step(&mut r, &msg(2, 1, 1, ae)),
        (Err(StepError::Rejoining), vec![])
    );
    assert_eq!(
        step(&mut r, &msg(2, 1, 1, heartbeat(0, 0))),
        (Err(StepError::Rejoining), vec![])
    );
    assert_eq!(
        step(&mut r, &msg(2, 1, 5, vote(0, 0))),
        (Err(StepError::Rejoining), vec![])
    );
    // It answers another replica that lost its data with the term it has now.
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 5, MessageBody::TermQuery { nonce: 3 })),
        vec![send(1, 2, 0, reply(3))]
    );
    assert_eq!(r.term(), 0);
    // An answer to an earlier rejoin (another nonce) does not count.
    assert_eq!(step_ok(&mut r, &msg(3, 1, 9, reply(nonce ^ 1))), vec![]);
    // One answer is not enough; the silent voter is asked again after a timeout.
    assert_eq!(r.status().rejoin_awaiting, vec![2, 3]);
    assert_eq!(step_ok(&mut r, &msg(2, 1, 5, reply(nonce))), vec![]);
    assert_eq!(r.term(), 0);
    assert_eq!(
        r.status().rejoin_awaiting,
        vec![3],
        "the status names who is missing"
    );
    let out = tick_n(&mut r, ELECTION_TICKS);
    assert_eq!(out, vec![send(1, 3, 0, MessageBody::TermQuery { nonce })]);
    assert!(r.rejoining());
}

#[test]
fn it_moves_above_the_highest_term_with_a_vote_for_itself() {
    let (mut r, nonce) = rejoiner();
    step_ok(&mut r, &msg(3, 1, 7, reply(nonce)));
    let out = step_ok(&mut r, &msg(2, 1, 5, reply(nonce)));
    assert_eq!(
        out,
        vec![
            hard(8, None, 0),
            role_changed(Role::Follower, 8, None),
            hard(8, Some(1), 0),
        ]
    );
    assert_eq!(r.hard_state().vote, Some(1));
    assert!(r.rejoining(), "not caught up yet");
    assert!(
        r.status().rejoin_awaiting.is_empty(),
        "no term awaited any more"
    );
}

/// Two of five replicas that lost their data at once answer each other's queries (with
/// the terms they have now), so both get past them once the three that kept their data
/// answered too.
#[test]
fn two_of_five_that_lost_their_data_together_answer_each_other() {
    let start = |id: ReplicaId| {
        let mut r = Replica::new(config(id, 5), wiped(), id).expect("valid config");
        let mut out = Vec::new();
        r.start(&mut out);
        let nonce = match out.first() {
            Some(Action::Send(Message {
                body: MessageBody::TermQuery { nonce },
                ..
            })) => *nonce,
            other => panic!("no term query first: {other:?}"),
        };
        (r, nonce)
    };
    let (mut a, nonce_a) = start(1);
    let (mut b, nonce_b) = start(2);
    // Each answers the other's query.
    let to_b = step_ok(
        &mut a,
        &msg(2, 1, 0, MessageBody::TermQuery { nonce: nonce_b }),
    );
    assert_eq!(to_b, vec![send(1, 2, 0, reply(nonce_b))]);
    let to_a = step_ok(
        &mut b,
        &msg(1, 2, 0, MessageBody::TermQuery { nonce: nonce_a }),
    );
    assert_eq!(to_a, vec![send(2, 1, 0, reply(nonce_a))]);
    step_ok(&mut a, &msg(2, 1, 0, reply(nonce_a)));
    step_ok(&mut b, &msg(1, 2, 0, reply(nonce_b)));
    // Then the three that kept their data, the highest at term 6.
    for (r, nonce) in [(&mut a, nonce_a), (&mut b, nonce_b)] {
        let id = r.id();
        step_ok(r, &msg(3, id, 4, reply(nonce)));
        step_ok(r, &msg(4, id, 6, reply(nonce)));
        assert_eq!(r.term(), 0, "one voter has not answered");
        step_ok(r, &msg(5, id, 5, reply(nonce)));
        assert_eq!((r.term(), r.hard_state().vote), (7, Some(id)));
        assert!(r.rejoining(), "not caught up yet: no votes");
    }
}

/// A rejoiner past its queries, at term 8, following leader 2 of term 9 whose log is
/// `[1, 1, 9]` with everything committed.
fn caught_up_to_queries() -> Replica {
    let (mut r, nonce) = rejoiner();
    step_ok(&mut r, &msg(2, 1, 7, reply(nonce)));
    step_ok(&mut r, &msg(3, 1, 7, reply(nonce)));
    assert_eq!(r.term(), 8);
    r
}

#[test]
fn it_neither_votes_nor_campaigns_until_caught_up() {
    let mut r = caught_up_to_queries();
    // Pre-vote and vote for term 9 from a candidate with a long log: refused.
    let pre = MessageBody::PreVote {
        last_index: 9,
        last_term: 8,
    };
    let out = step_ok(&mut r, &msg(2, 1, 9, pre));
    assert_eq!(
        out,
        vec![send(
            1,
            2,
            8,
            MessageBody::PreVoteResponse { granted: false }
        )]
    );
    let out = step_ok(&mut r, &msg(2, 1, 9, vote(9, 8)));
    assert!(
        out.contains(&send(1, 2, 9, MessageBody::VoteResponse { granted: false })),
        "{out:?}"
    );
    assert_eq!(r.hard_state().vote, None, "term 9 has no vote from it");
    // No campaign however long it waits, and no leadership handed to it.
    let out = tick_n(&mut r, 10 * ELECTION_TICKS);
    assert!(
        out.iter()
            .all(|a| !matches!(a, Action::RoleChanged { .. } | Action::Send(_))),
        "{out:?}"
    );
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(
        step(&mut r, &msg(2, 1, 9, MessageBody::TimeoutNow)).0,
        Err(StepError::Rejoining)
    );
}

#[test]
fn it_votes_again_once_a_committed_entry_of_its_leaders_term_is_durable() {
    let mut r = caught_up_to_queries();
    // Leader 2 of term 9 sends its log; the announced commit (3) is the leader's no-op.
    let ae = append_entries(
        0,
        0,
        3,
        vec![
            EntryMeta { term: 1, len: LEN },
            EntryMeta { term: 1, len: LEN },
            noop(9),
        ],
    );
    let out = step_ok(&mut r, &msg(2, 1, 9, ae));
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::RejoinComplete { .. })),
        "not durable yet: {out:?}"
    );
    assert!(r.rejoining());
    let out = persisted(&mut r, 2, 1);
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::RejoinComplete { .. })));
    let out = persisted(&mut r, 3, 9);
    assert_eq!(out.last(), Some(&Action::RejoinComplete { index: 3 }));
    assert!(!r.rejoining() && !r.status().rejoining);
    // A candidate of a later term now gets its vote (a transfer's, past the lease).
    let transfer = MessageBody::Vote {
        last_index: 3,
        last_term: 9,
        transfer: true,
    };
    let out = step_ok(&mut r, &msg(3, 1, 10, transfer));
    assert!(
        out.contains(&send(1, 3, 10, MessageBody::VoteResponse { granted: true })),
        "{out:?}"
    );
}

#[test]
fn a_commit_of_an_older_term_is_not_enough() {
    let mut r = caught_up_to_queries();
    // Leader 2 of term 9 has not committed its own no-op yet: its commit (2) is of term 1.
    let entries = vec![
        EntryMeta { term: 1, len: LEN },
        EntryMeta { term: 1, len: LEN },
        noop(9),
    ];
    step_ok(&mut r, &msg(2, 1, 9, append_entries(0, 0, 2, entries)));
    persisted(&mut r, 3, 9);
    assert!(r.rejoining(), "entry 2 is of term 1");
    // The next heartbeat announces the no-op committed.
    let out = step_ok(&mut r, &msg(2, 1, 9, heartbeat(3, 0)));
    assert_eq!(out.last(), Some(&Action::RejoinComplete { index: 3 }));
}

#[test]
fn a_lagging_rejoiner_chases_one_announced_commit_not_a_moving_one() {
    let mut r = caught_up_to_queries();
    let e = |term| EntryMeta { term, len: LEN };
    // Leader 2 of term 9 announces commit 4 while the rejoiner holds only up to 2.
    step_ok(
        &mut r,
        &msg(2, 1, 9, append_entries(0, 0, 4, vec![noop(9), e(9)])),
    );
    persisted(&mut r, 2, 9);
    // Its commit keeps moving ahead of what each message carries.
    step_ok(
        &mut r,
        &msg(2, 1, 9, append_entries(2, 9, 6, vec![e(9), e(9)])),
    );
    let out = persisted(&mut r, 4, 9);
    assert_eq!(out.last(), Some(&Action::RejoinComplete { index: 4 }));
}

#[test]
fn a_lone_voter_or_a_fixed_leader_group_cannot_rejoin() {
    assert_eq!(
        Replica::new(config(1, 1), wiped(), 7).err(),
        Some(ConfigError::CannotRejoin(1, "it is the only voter"))
    );
    let mut fixed = config(2, 3);
    fixed.fixed_leader = Some(1);
    assert!(matches!(
        Replica::new(fixed, wiped(), 7),
        Err(ConfigError::CannotRejoin(2, _))
    ));
}
