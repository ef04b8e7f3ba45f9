//! `Replica::on_persisted`: durability reports turn into acknowledgements (followers)
//! and commits (leaders), never ahead of the disk.

mod raft_common;

use engine::raft::*;
use raft_common::*;

/// Follower 1 of leader 2 in term 1 that received entries 1..=3, none durable yet.
fn follower_with_pending_entries() -> Replica {
    let mut r = follower_of(config(1, 3), 1, 2, &[]);
    let ae = append_entries(0, 0, 0, metas(&[1, 1, 1]));
    step_ok(&mut r, &msg(2, 1, 1, ae));
    r
}

#[test]
fn a_follower_acknowledges_the_durable_prefix() {
    let mut r = follower_with_pending_entries();
    assert_eq!(persisted(&mut r, 2, 1), vec![send(1, 2, 1, ack(2))]);
    assert_eq!(r.persisted_index(), 2);
    assert_eq!(persisted(&mut r, 3, 1), vec![send(1, 2, 1, ack(3))]);
}

#[test]
fn a_report_that_does_not_advance_is_ignored() {
    let mut r = follower_with_pending_entries();
    persisted(&mut r, 3, 1);
    assert_eq!(persisted(&mut r, 3, 1), vec![]);
    assert_eq!(persisted(&mut r, 1, 1), vec![]);
    assert_eq!(r.persisted_index(), 3);
}

#[test]
fn a_report_beyond_the_log_or_of_another_term_is_ignored() {
    let mut r = follower_with_pending_entries();
    assert_eq!(persisted(&mut r, 4, 1), vec![]);
    assert_eq!(persisted(&mut r, 3, 2), vec![]);
    assert_eq!(r.persisted_index(), 0);
}

#[test]
fn a_follower_acknowledges_only_what_matches_the_current_leader() {
    // Entries 1..=3 recovered from disk but only 1..=2 verified by leader 2 of term 2.
    let mut r = replica(config(1, 3), recovered(1, None, &[1, 1, 1]));
    let mut out = Vec::new();
    let ae = append_entries(1, 1, 0, metas(&[2]));
    r.step(&msg(2, 1, 2, ae), &mut out).unwrap();
    assert_eq!(
        out,
        vec![
            hard(2, None, 0),
            role_changed(Role::Follower, 2, Some(2)),
            Action::Truncate { index: 1 },
            Action::Append {
                first_index: 2,
                last_index: 2,
            },
            Action::Sync,
        ]
    );
    assert_eq!(persisted(&mut r, 2, 2), vec![send(1, 2, 2, ack(2))]);
}

#[test]
fn a_replica_without_a_leader_does_not_acknowledge() {
    let mut r = follower_with_pending_entries();
    // Leader 2 goes quiet: the follower times out and starts a pre-vote.
    tick_n(&mut r, ELECTION_TICKS);
    assert_eq!(r.role(), Role::PreCandidate);
    assert_eq!(persisted(&mut r, 3, 1), vec![]);
    assert_eq!(r.persisted_index(), 3);
}

#[test]
fn a_leader_commits_when_its_own_copy_completes_a_majority() {
    let mut r = stable_leader(3);
    propose(&mut r, &[LEN; 2]).0.unwrap();
    step_ok(&mut r, &msg(2, 1, 1, ack(3)));
    assert_eq!(r.commit(), 1);
    assert_eq!(
        persisted(&mut r, 2, 1),
        vec![Action::Apply { first: 2, last: 2 }]
    );
    assert_eq!(
        persisted(&mut r, 3, 1),
        vec![Action::Apply { first: 3, last: 3 }]
    );
}

#[test]
fn a_leader_does_not_commit_its_durable_entries_alone() {
    let mut r = stable_leader(3);
    propose(&mut r, &[LEN; 2]).0.unwrap();
    assert_eq!(persisted(&mut r, 3, 1), vec![]);
    assert_eq!(r.commit(), 1);
}

#[test]
fn hard_state_never_claims_a_commit_beyond_the_durable_log() {
    let mut r = follower_of(config(1, 3), 1, 2, &[]);
    let ae = append_entries(0, 0, 2, metas(&[1, 1]));
    step_ok(&mut r, &msg(2, 1, 1, ae));
    assert_eq!(r.commit(), 2);
    assert_eq!(r.hard_state().commit, 0);
    persisted(&mut r, 1, 1);
    assert_eq!(r.hard_state().commit, 1);
}
