//! `Replica::step` with AppendResponse on a leader: pipelining, batching, backtracking
//! and the commit rule.

mod raft_common;

use engine::raft::*;
use raft_common::*;

fn ae_to(
    to: ReplicaId,
    prev_index: Index,
    prev_term: Term,
    commit: Index,
    terms: &[Term],
) -> Action {
    send(
        1,
        to,
        1,
        append_entries(prev_index, prev_term, commit, metas(terms)),
    )
}

#[test]
fn pipelines_batches_up_to_the_inflight_message_window() {
    let mut cfg = config(1, 3);
    cfg.inflight_msgs_max = 2;
    cfg.batch_entries_max = 2;
    let mut r = stable_leader_with(cfg);
    let (res, out) = propose(&mut r, &[LEN; 6]);
    assert_eq!(res, Ok((1, 2)));
    assert_eq!(
        out,
        vec![
            Action::AppendProposal {
                term: 1,
                first_index: 2,
                count: 6,
            },
            Action::Sync,
            ae_to(2, 1, 1, 1, &[1, 1]),
            ae_to(2, 3, 1, 1, &[1, 1]),
            ae_to(3, 1, 1, 1, &[1, 1]),
            ae_to(3, 3, 1, 1, &[1, 1]),
        ]
    );
    assert_eq!(progress(&r, 2).inflight_msgs, 2);
    // Acknowledging the first batch opens one slot: the next batch goes out.
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, ack(3))),
        vec![ae_to(2, 5, 1, 1, &[1, 1])]
    );
    // Acknowledging everything sent leaves nothing to send.
    assert_eq!(step_ok(&mut r, &msg(2, 1, 1, ack(7))), vec![]);
    let p = progress(&r, 2);
    assert_eq!((p.match_index, p.next_index, p.inflight_msgs), (7, 8, 0));
}

#[test]
fn pipelines_up_to_the_inflight_byte_window() {
    let mut cfg = config(1, 2);
    cfg.batch_entries_max = 1;
    cfg.inflight_bytes_max = 2 * u64::from(LEN) + 1;
    let mut r = stable_leader_with(cfg);
    let (_, out) = propose(&mut r, &[LEN; 5]);
    // A message may start while the window has room; the third overshoots and closes it.
    assert_eq!(
        out[2..],
        [
            ae_to(2, 1, 1, 1, &[1]),
            ae_to(2, 2, 1, 1, &[1]),
            ae_to(2, 3, 1, 1, &[1]),
        ]
    );
    assert_eq!(progress(&r, 2).inflight_bytes, 3 * u64::from(LEN));
    // Each acknowledged message makes room for one more.
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, ack(2))),
        vec![ae_to(2, 4, 1, 1, &[1])]
    );
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, ack(3))),
        vec![ae_to(2, 5, 1, 1, &[1])]
    );
    assert_eq!(step_ok(&mut r, &msg(2, 1, 1, ack(4))), vec![]);
}

#[test]
fn a_full_byte_window_sends_nothing() {
    let mut cfg = config(1, 2);
    cfg.batch_entries_max = 1;
    cfg.inflight_bytes_max = 2 * u64::from(LEN);
    let mut r = stable_leader_with(cfg);
    let (_, out) = propose(&mut r, &[LEN; 5]);
    assert_eq!(out[2..], [ae_to(2, 1, 1, 1, &[1]), ae_to(2, 2, 1, 1, &[1])]);
    assert_eq!(propose(&mut r, &[LEN]).1[2..], []);
}

#[test]
fn batches_are_cut_by_bytes_but_an_oversized_entry_still_goes_alone() {
    let mut cfg = config(1, 2);
    cfg.batch_bytes_max = 2 * u64::from(LEN) + 50;
    let mut r = stable_leader_with(cfg);
    let big = 10 * LEN;
    let (_, out) = propose(&mut r, &[LEN, LEN, LEN, big, LEN]);
    let e = |len| EntryMeta { term: 1, len };
    assert_eq!(
        out[2..],
        [
            send(1, 2, 1, append_entries(1, 1, 1, vec![e(LEN), e(LEN)])),
            send(1, 2, 1, append_entries(3, 1, 1, vec![e(LEN)])),
            send(1, 2, 1, append_entries(4, 1, 1, vec![e(big)])),
            send(1, 2, 1, append_entries(5, 1, 1, vec![e(LEN)])),
        ]
    );
}

#[test]
fn batches_are_cut_by_entry_count() {
    let mut cfg = config(1, 2);
    cfg.batch_entries_max = 3;
    let mut r = stable_leader_with(cfg);
    let (_, out) = propose(&mut r, &[LEN; 7]);
    assert_eq!(
        out[2..],
        [
            ae_to(2, 1, 1, 1, &[1, 1, 1]),
            ae_to(2, 4, 1, 1, &[1, 1, 1]),
            ae_to(2, 7, 1, 1, &[1]),
        ]
    );
}

#[test]
fn a_probed_follower_that_acknowledges_switches_to_replicate_and_gets_the_rest() {
    let mut r = new_leader(3);
    // Appending while the no-op probe is outstanding sends nothing more.
    let (_, out) = propose(&mut r, &[LEN, LEN]);
    assert_eq!(
        out,
        vec![
            Action::AppendProposal {
                term: 1,
                first_index: 2,
                count: 2
            },
            Action::Sync
        ]
    );
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, ack(1))),
        vec![ae_to(2, 1, 1, 0, &[1, 1])]
    );
    assert!(progress(&r, 2).replicating);
}

/// Leader 1 of term 4 elected with the recovered log `log_terms` (no-op at the end).
fn leader_with_log(log_terms: &[Term]) -> Replica {
    elect(config(1, 3), recovered(3, Some(1), log_terms))
}

#[test]
fn backtracks_past_a_whole_term_the_leader_does_not_have() {
    let mut r = leader_with_log(&[1, 1, 3, 3]);
    // Follower 2 holds [1, 1, 2, 2, 2, 2]: the probe at prev 4 (term 3) is rejected.
    let noop_and_rest = [metas(&[3, 3]), vec![noop(4)]].concat();
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 4, reject(4, 6, 2, 3))),
        vec![send(1, 2, 4, append_entries(2, 1, 0, noop_and_rest))]
    );
}

#[test]
fn backtracks_to_the_end_of_a_conflicting_term_the_leader_also_has() {
    let mut r = leader_with_log(&[1, 1, 2, 3]);
    // Follower 2 holds [1, 1, 2, 2, 2]: its term-2 run matches up to index 3.
    let rest = [metas(&[3]), vec![noop(4)]].concat();
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 4, reject(4, 5, 2, 3))),
        vec![send(1, 2, 4, append_entries(3, 2, 0, rest))]
    );
}

#[test]
fn backtracks_to_the_end_of_a_short_follower_log() {
    let mut r = leader_with_log(&[1, 1, 3, 3]);
    let rest = [metas(&[1, 3, 3]), vec![noop(4)]].concat();
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 4, reject(4, 1, 0, 2))),
        vec![send(1, 2, 4, append_entries(1, 1, 0, rest))]
    );
}

#[test]
fn a_stale_rejection_is_ignored() {
    let mut r = stable_leader(3);
    propose(&mut r, &[LEN; 3]).0.unwrap();
    step_ok(&mut r, &msg(2, 1, 1, ack(3)));
    // Replicate: a rejection at or below the match is from an old message.
    assert_eq!(step_ok(&mut r, &msg(2, 1, 1, reject(3, 3, 1, 1))), vec![]);
    assert!(progress(&r, 2).replicating);
    // Probe: a rejection of anything but the outstanding probe is ignored too.
    let mut r = leader_with_log(&[1, 1, 3, 3]);
    assert_eq!(step_ok(&mut r, &msg(2, 1, 4, reject(2, 1, 0, 2))), vec![]);
    assert_eq!(progress(&r, 2).next_index, 5);
}

#[test]
fn a_stale_acknowledgement_changes_nothing() {
    let mut r = stable_leader(3);
    propose(&mut r, &[LEN; 3]).0.unwrap();
    step_ok(&mut r, &msg(2, 1, 1, ack(4)));
    assert_eq!(step_ok(&mut r, &msg(2, 1, 1, ack(2))), vec![]);
    assert_eq!(progress(&r, 2).match_index, 4);
}

#[test]
fn a_rejection_in_replicate_falls_back_to_probing() {
    let mut r = stable_leader(3);
    propose(&mut r, &[LEN; 3]).0.unwrap();
    // Follower 2 lost the batch: the empty append at next (prev 4) is rejected.
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 1, reject(4, 1, 0, 2))),
        vec![ae_to(2, 1, 1, 1, &[1, 1, 1])]
    );
    let p = progress(&r, 2);
    assert!(!p.replicating);
    assert_eq!((p.next_index, p.inflight_msgs), (2, 0));
}

#[test]
fn figure_8_an_old_term_entry_on_a_majority_is_not_committed_alone() {
    // Leader of term 4 holds an uncommitted term-2 entry at index 2, durable locally.
    let mut r = elect(config(1, 3), recovered(3, Some(1), &[1, 2]));
    assert_eq!(r.term(), 4);
    // Both followers hold index 2 (term 2): a majority, but of an old term.
    for from in [2, 3] {
        assert_eq!(
            step_ok(&mut r, &msg(from, 1, 4, reject(2, 2, 2, 2))).len(),
            1
        );
    }
    for from in [2, 3] {
        step_ok(&mut r, &msg(from, 1, 4, ack(2)));
    }
    assert_eq!(r.commit(), 0);
    // The current-term no-op reaching a majority commits everything before it.
    assert_eq!(persisted(&mut r, 3, 4), vec![]);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 4, ack(3))),
        vec![Action::Apply { first: 1, last: 3 }]
    );
}

#[test]
fn the_leader_counts_itself_only_for_durable_entries() {
    let mut r = stable_leader(3);
    propose(&mut r, &[LEN]).0.unwrap();
    // One follower plus a leader whose copy is not durable is not a majority.
    assert_eq!(step_ok(&mut r, &msg(2, 1, 1, ack(2))), vec![]);
    assert_eq!(r.commit(), 1);
    // Two followers are.
    assert_eq!(
        step_ok(&mut r, &msg(3, 1, 1, ack(2))),
        vec![Action::Apply { first: 2, last: 2 }]
    );
}

#[test]
fn an_acknowledgement_beyond_the_log_is_a_typed_error() {
    let mut r = stable_leader(3);
    let (res, out) = step(&mut r, &msg(2, 1, 1, ack(9)));
    assert_eq!(res, Err(StepError::IndexBeyondLog { index: 9, last: 1 }));
    assert_eq!(out, vec![]);
    let (res, _) = step(&mut r, &msg(2, 1, 1, reject(9, 9, 1, 1)));
    assert_eq!(res, Err(StepError::IndexBeyondLog { index: 9, last: 1 }));
    assert_eq!(progress(&r, 2).match_index, 1);
}

#[test]
fn a_newer_term_in_an_acknowledgement_deposes_the_leader() {
    let mut r = stable_leader(3);
    assert_eq!(
        step_ok(&mut r, &msg(2, 1, 2, ack(1))),
        vec![hard(2, None, 1), role_changed(Role::Follower, 2, None)]
    );
}
