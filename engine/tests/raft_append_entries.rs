//! `Replica::step` with AppendEntries on a follower: what it appends, truncates, syncs,
//! and when it acknowledges.

mod raft_common;

use engine::raft::*;
use raft_common::*;

/// Follower 1 of leader 2 in `term`, with the durable log `log_terms`.
fn follower(term: Term, log_terms: &[Term]) -> Replica {
    follower_of(config(1, 3), term, 2, log_terms)
}

fn ae(term: Term, prev_index: Index, prev_term: Term, commit: Index, terms: &[Term]) -> Message {
    msg(
        2,
        1,
        term,
        append_entries(prev_index, prev_term, commit, metas(terms)),
    )
}

#[test]
fn appends_and_syncs_but_does_not_acknowledge_before_durability() {
    let mut r = fresh(1, 3);
    assert_eq!(
        step_ok(&mut r, &ae(1, 0, 0, 0, &[1, 1])),
        vec![
            hard(1, None, 0),
            role_changed(Role::Follower, 1, Some(2)),
            Action::Append {
                first_index: 1,
                last_index: 2,
            },
            Action::Sync,
        ]
    );
    assert_eq!(r.last_index(), 2);
    assert_eq!(r.persisted_index(), 0);
}

#[test]
fn acknowledges_after_the_entries_are_persisted() {
    let mut r = follower(1, &[]);
    step_ok(&mut r, &ae(1, 0, 0, 0, &[1, 1]));
    assert_eq!(persisted(&mut r, 2, 1), vec![send(1, 2, 1, ack(2))]);
}

#[test]
fn a_conflicting_suffix_is_truncated_then_replaced_then_synced() {
    let mut r = follower(2, &[1, 1, 1]);
    assert_eq!(
        step_ok(&mut r, &ae(2, 1, 1, 1, &[2, 2])),
        vec![
            Action::Truncate { index: 1 },
            Action::Append {
                first_index: 2,
                last_index: 3,
            },
            Action::Sync,
            Action::Apply { first: 1, last: 1 },
        ]
    );
    assert_eq!(r.term_at(2), Some(2));
    assert_eq!(r.persisted_index(), 1);
    // The report of the old entry 3 (term 1) is about a truncated write: ignored.
    assert_eq!(persisted(&mut r, 3, 1), vec![]);
    assert_eq!(persisted(&mut r, 3, 2), vec![send(1, 2, 2, ack(3))]);
}

#[test]
fn only_the_missing_suffix_of_a_partly_present_message_is_appended() {
    let mut r = follower(1, &[1, 1]);
    assert_eq!(
        step_ok(&mut r, &ae(1, 0, 0, 0, &[1, 1, 1, 1])),
        vec![
            Action::Append {
                first_index: 3,
                last_index: 4,
            },
            Action::Sync,
        ]
    );
}

#[test]
fn rejects_a_mismatched_prev_with_the_conflicting_term_and_its_first_index() {
    let mut r = follower(3, &[1, 1, 2, 2, 2]);
    let (res, out) = step(&mut r, &ae(3, 4, 3, 0, &[3]));
    assert_eq!(res, Ok(()));
    assert_eq!(out, vec![send(1, 2, 3, reject(4, 5, 2, 3))]);
    assert_eq!(r.last_index(), 5);
}

#[test]
fn rejects_a_prev_beyond_the_log_with_the_next_missing_index() {
    let mut r = follower(3, &[1, 1, 2, 2, 2]);
    assert_eq!(
        step_ok(&mut r, &ae(3, 8, 3, 0, &[3])),
        vec![send(1, 2, 3, reject(8, 5, 0, 6))]
    );
}

#[test]
fn reject_hint_never_points_into_the_committed_prefix() {
    let mut r = follower(3, &[2, 2, 2, 2]);
    // Learn that entry 2 is committed.
    step_ok(&mut r, &ae(3, 2, 2, 2, &[]));
    assert_eq!(r.commit(), 2);
    assert_eq!(
        step_ok(&mut r, &ae(3, 4, 3, 2, &[])),
        vec![send(1, 2, 3, reject(4, 4, 2, 3))]
    );
}

#[test]
fn a_duplicate_of_durable_entries_is_acknowledged_at_once() {
    let mut r = follower(1, &[1, 1]);
    assert_eq!(
        step_ok(&mut r, &ae(1, 0, 0, 2, &[1, 1])),
        vec![Action::Apply { first: 1, last: 2 }, send(1, 2, 1, ack(2))]
    );
}

#[test]
fn an_empty_probe_at_a_durable_match_is_acknowledged_at_once() {
    let mut r = follower(1, &[1, 1, 1]);
    assert_eq!(
        step_ok(&mut r, &ae(1, 3, 1, 0, &[])),
        vec![send(1, 2, 1, ack(3))]
    );
}

#[test]
fn a_duplicate_of_entries_not_yet_durable_only_asks_for_a_sync() {
    let mut r = follower(1, &[]);
    step_ok(&mut r, &ae(1, 0, 0, 0, &[1, 1]));
    assert_eq!(
        step_ok(&mut r, &ae(1, 0, 0, 0, &[1, 1])),
        vec![Action::Sync]
    );
    // One report answers both messages with a single acknowledgement.
    assert_eq!(persisted(&mut r, 2, 1), vec![send(1, 2, 1, ack(2))]);
    assert_eq!(persisted(&mut r, 2, 1), vec![]);
}

#[test]
fn commit_is_bounded_by_the_last_new_entry() {
    let mut r = follower(1, &[]);
    assert_eq!(
        step_ok(&mut r, &ae(1, 0, 0, 9, &[1, 1])),
        vec![
            Action::Append {
                first_index: 1,
                last_index: 2,
            },
            Action::Sync,
            Action::Apply { first: 1, last: 2 },
        ]
    );
    assert_eq!(r.commit(), 2);
}

#[test]
fn commit_is_bounded_by_the_leader_commit() {
    let mut r = follower(1, &[]);
    step_ok(&mut r, &ae(1, 0, 0, 1, &[1, 1, 1]));
    assert_eq!(r.commit(), 1);
}

#[test]
fn commit_does_not_move_past_a_message_ending_before_unverified_entries() {
    // Entries 3.. may be from a deposed leader: a message covering 1..=2 commits 2 at most.
    let mut r = follower(2, &[1, 1, 1, 1]);
    step_ok(&mut r, &ae(2, 0, 0, 4, &[1, 1]));
    assert_eq!(r.commit(), 2);
}

#[test]
fn a_stale_append_of_an_older_term_gets_the_newer_term() {
    let mut r = follower(3, &[]);
    let (res, out) = step(&mut r, &ae(2, 0, 0, 0, &[2]));
    assert_eq!(res, Err(StepError::StaleTerm { msg: 2, current: 3 }));
    assert_eq!(
        out,
        vec![send(
            1,
            2,
            3,
            MessageBody::HeartbeatResponse { read_seq: 0 }
        )]
    );
    assert_eq!(r.last_index(), 0);
}

#[test]
fn a_candidate_of_the_same_term_yields_to_the_leader() {
    let mut cfg = config(1, 3);
    cfg.pre_vote = false;
    let mut r = replica(cfg, RecoveredState::default());
    tick_n(&mut r, ELECTION_TICKS);
    assert_eq!(r.role(), Role::Candidate);
    assert_eq!(
        step_ok(&mut r, &ae(1, 0, 0, 0, &[1])),
        vec![
            role_changed(Role::Follower, 1, Some(2)),
            Action::Append {
                first_index: 1,
                last_index: 1,
            },
            Action::Sync,
        ]
    );
}
