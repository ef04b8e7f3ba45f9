//! `Replica::propose`: who accepts proposals, and what an accepted one emits.

mod raft_common;

use engine::raft::*;
use raft_common::*;

#[test]
fn a_leader_appends_syncs_and_replicates_a_proposal() {
    let mut r = stable_leader(3);
    let (res, out) = propose(&mut r, &[10, 20]);
    assert_eq!(res, Ok((1, 2)));
    let entries = vec![
        EntryMeta { term: 1, len: 10 },
        EntryMeta { term: 1, len: 20 },
    ];
    assert_eq!(
        out,
        vec![
            Action::AppendProposal {
                term: 1,
                first_index: 2,
                count: 2,
            },
            Action::Sync,
            send(1, 2, 1, append_entries(1, 1, 1, entries.clone())),
            send(1, 3, 1, append_entries(1, 1, 1, entries)),
        ]
    );
    assert_eq!(r.last_index(), 3);
    assert_eq!(r.entry_at(3), Some(EntryMeta { term: 1, len: 20 }));
}

#[test]
fn a_follower_refuses_with_the_leader_hint() {
    let mut r = follower_of(config(2, 3), 1, 1, &[]);
    let (res, out) = propose(&mut r, &[LEN]);
    assert_eq!(res, Err(ProposeError::NotLeader { leader: Some(1) }));
    assert_eq!(out, vec![]);
    let mut r = fresh(2, 3);
    assert_eq!(
        propose(&mut r, &[LEN]).0,
        Err(ProposeError::NotLeader { leader: None })
    );
}

#[test]
fn a_candidate_refuses() {
    let mut cfg = config(1, 3);
    cfg.pre_vote = false;
    let mut r = replica(cfg, RecoveredState::default());
    tick_n(&mut r, ELECTION_TICKS);
    assert_eq!(
        propose(&mut r, &[LEN]),
        (Err(ProposeError::NotLeader { leader: None }), vec![])
    );
}

#[test]
fn a_leader_refuses_during_a_transfer() {
    let mut r = stable_leader(3);
    r.transfer_leader(2, &mut Vec::new()).unwrap();
    assert_eq!(
        propose(&mut r, &[LEN]),
        (Err(ProposeError::TransferInProgress), vec![])
    );
    assert_eq!(r.last_index(), 1);
}

#[test]
fn a_leader_pushes_back_beyond_the_uncommitted_limit() {
    let mut cfg = config(1, 3);
    cfg.uncommitted_entries_max = 4;
    let mut r = stable_leader_with(cfg);
    assert_eq!(propose(&mut r, &[LEN; 3]).0, Ok((1, 2)));
    assert_eq!(
        propose(&mut r, &[LEN; 2]),
        (Err(ProposeError::Backpressure), vec![])
    );
    assert_eq!(propose(&mut r, &[LEN]).0, Ok((1, 5)));
    assert_eq!(
        propose(&mut r, &[LEN]),
        (Err(ProposeError::Backpressure), vec![])
    );
    // Commit makes room again.
    persisted(&mut r, 5, 1);
    step_ok(&mut r, &msg(2, 1, 1, ack(5)));
    assert_eq!(r.commit(), 5);
    assert_eq!(propose(&mut r, &[LEN; 4]).0, Ok((1, 6)));
}

#[test]
fn an_empty_batch_is_refused() {
    let mut r = stable_leader(3);
    assert_eq!(propose(&mut r, &[]), (Err(ProposeError::Empty), vec![]));
}

#[test]
fn a_single_voter_commits_once_its_own_copy_is_durable() {
    let mut r = elect(config(1, 1), RecoveredState::default());
    assert_eq!(
        persisted(&mut r, 1, 1),
        vec![Action::Apply { first: 1, last: 1 }]
    );
    let (res, out) = propose(&mut r, &[LEN; 2]);
    assert_eq!(res, Ok((1, 2)));
    assert_eq!(
        out,
        vec![
            Action::AppendProposal {
                term: 1,
                first_index: 2,
                count: 2,
            },
            Action::Sync,
        ]
    );
    assert_eq!(
        persisted(&mut r, 3, 1),
        vec![Action::Apply { first: 2, last: 3 }]
    );
}
