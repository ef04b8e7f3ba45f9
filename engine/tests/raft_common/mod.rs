//! Builders shared by the `raft_*` handler tests: replicas in a known role and state,
//! messages, and the actions they are expected to emit.
//!
//! Every helper is deterministic: the election timeout range is one tick wide unless a
//! test widens it, so "the tick that fires the election" is always tick 10.

#![allow(dead_code)]

use engine::raft::*;

/// Payload length of every entry the helpers build (so byte windows are easy to count).
pub const LEN: u32 = 100;
/// The election timeout every helper replica draws (range `[10, 11)`).
pub const ELECTION_TICKS: u32 = 10;

/// A configuration for replica `id` in the group `1..=voters`, with a fixed election
/// timeout of [`ELECTION_TICKS`].
pub fn config(id: ReplicaId, voters: u64) -> Config {
    let mut c = Config::new(id, (1..=voters).collect());
    c.election_timeout_ticks_min = ELECTION_TICKS;
    c.election_timeout_ticks_max = ELECTION_TICKS + 1;
    c
}

/// Entry metadata of the given terms, each [`LEN`] bytes long.
pub fn metas(terms: &[Term]) -> Vec<EntryMeta> {
    terms
        .iter()
        .map(|&term| EntryMeta { term, len: LEN })
        .collect()
}

/// The no-op a new leader appends.
pub fn noop(term: Term) -> EntryMeta {
    EntryMeta { term, len: 0 }
}

/// Durable state with a log of the given entry terms.
pub fn recovered(term: Term, vote: Option<ReplicaId>, log_terms: &[Term]) -> RecoveredState {
    RecoveredState {
        hard_state: HardState {
            term,
            vote,
            commit: 0,
        },
        first_index_prev: 0,
        first_term_prev: 0,
        entries: metas(log_terms),
        rejoining: false,
    }
}

/// A started replica (the start actions are dropped).
pub fn replica(config: Config, recovered: RecoveredState) -> Replica {
    let mut r = Replica::new(config, recovered, 7).expect("valid config");
    let mut out = Vec::new();
    r.start(&mut out);
    r
}

/// A started follower of a fresh group with an empty log.
pub fn fresh(id: ReplicaId, voters: u64) -> Replica {
    replica(config(id, voters), RecoveredState::default())
}

/// A follower at `term` that already follows `leader` (it got a heartbeat), with a
/// durable log of `log_terms`.
pub fn follower_of(cfg: Config, term: Term, leader: ReplicaId, log_terms: &[Term]) -> Replica {
    let id = cfg.id;
    let mut r = replica(cfg, recovered(term, None, log_terms));
    let hb = msg(
        leader,
        id,
        term,
        MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    );
    step_ok(&mut r, &hb);
    assert_eq!(r.leader(), Some(leader));
    assert_eq!(r.role(), Role::Follower);
    r
}

/// Ticks `r` `n` times and returns everything it emitted.
pub fn tick_n(r: &mut Replica, n: u32) -> Vec<Action> {
    let mut out = Vec::new();
    for _ in 0..n {
        r.tick(&mut out);
    }
    out
}

/// Ticks `r` once and returns what it emitted.
pub fn tick(r: &mut Replica) -> Vec<Action> {
    tick_n(r, 1)
}

/// Steps one message and returns the result and the actions.
pub fn step(r: &mut Replica, m: &Message) -> (Result<(), StepError>, Vec<Action>) {
    let mut out = Vec::new();
    let res = r.step(m, &mut out);
    (res, out)
}

/// Steps one message that must be accepted and returns the actions.
pub fn step_ok(r: &mut Replica, m: &Message) -> Vec<Action> {
    let (res, out) = step(r, m);
    assert_eq!(res, Ok(()), "step {m:?}");
    out
}

pub fn persisted(r: &mut Replica, index: Index, term: Term) -> Vec<Action> {
    let mut out = Vec::new();
    r.on_persisted(index, term, &mut out);
    out
}

pub fn propose(
    r: &mut Replica,
    lens: &[u32],
) -> (Result<(Term, Index), ProposeError>, Vec<Action>) {
    let mut out = Vec::new();
    let res = r.propose(lens, &mut out);
    (res, out)
}

pub fn msg(from: ReplicaId, to: ReplicaId, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

pub fn send(from: ReplicaId, to: ReplicaId, term: Term, body: MessageBody) -> Action {
    Action::Send(msg(from, to, term, body))
}

pub fn append_entries(
    prev_index: Index,
    prev_term: Term,
    commit: Index,
    entries: Vec<EntryMeta>,
) -> MessageBody {
    MessageBody::AppendEntries {
        prev_index,
        prev_term,
        commit,
        entries,
    }
}

pub fn ack(index: Index) -> MessageBody {
    MessageBody::AppendResponse {
        index,
        reject: None,
    }
}

pub fn reject(
    index: Index,
    last_index: Index,
    conflict_term: Term,
    conflict_first_index: Index,
) -> MessageBody {
    MessageBody::AppendResponse {
        index,
        reject: Some(RejectHint {
            last_index,
            conflict_term,
            conflict_first_index,
        }),
    }
}

pub fn heartbeat(commit: Index, read_seq: u64) -> MessageBody {
    MessageBody::Heartbeat { commit, read_seq }
}

pub fn hard(term: Term, vote: Option<ReplicaId>, commit: Index) -> Action {
    Action::PersistHardState(HardState { term, vote, commit })
}

pub fn role_changed(role: Role, term: Term, leader: Option<ReplicaId>) -> Action {
    Action::RoleChanged { role, term, leader }
}

/// Makes `cfg.id` leader of `term + 1` from the recovered state by winning an election
/// (through a pre-vote round when configured). Returns the leader with its no-op
/// appended (not yet durable) and every follower in Probe with the no-op in flight.
pub fn elect(cfg: Config, recovered: RecoveredState) -> Replica {
    let id = cfg.id;
    let peers: Vec<ReplicaId> = cfg.voters.iter().copied().filter(|&v| v != id).collect();
    let mut r = replica(cfg, recovered);
    let mut ticks = 0;
    while r.role() == Role::Follower {
        tick(&mut r);
        ticks += 1;
        assert!(ticks <= 100, "no election after {ticks} ticks");
    }
    for &peer in &peers {
        if r.role() != Role::PreCandidate {
            break;
        }
        let granted = MessageBody::PreVoteResponse { granted: true };
        let m = msg(peer, id, r.term() + 1, granted);
        step_ok(&mut r, &m);
    }
    for &peer in &peers {
        if r.role() != Role::Candidate {
            break;
        }
        let granted = MessageBody::VoteResponse { granted: true };
        let m = msg(peer, id, r.term(), granted);
        step_ok(&mut r, &m);
    }
    assert_eq!(r.role(), Role::Leader);
    r
}

/// Leader 1 of a fresh group `1..=voters` in term 1, no-op at index 1 not yet durable.
pub fn new_leader(voters: u64) -> Replica {
    elect(config(1, voters), RecoveredState::default())
}

/// Leader 1 of term 1 whose no-op is durable, acknowledged by every follower and
/// committed: every follower is in Replicate with nothing in flight.
pub fn stable_leader_with(cfg: Config) -> Replica {
    let (id, voters) = (cfg.id, cfg.voters.clone());
    let mut r = elect(cfg, RecoveredState::default());
    let (last, term) = (r.last_index(), r.term());
    persisted(&mut r, last, term);
    for v in voters.into_iter().filter(|&v| v != id) {
        step_ok(&mut r, &msg(v, id, term, ack(last)));
    }
    assert_eq!(r.commit(), last);
    r
}

/// [`stable_leader_with`] with the helper config.
pub fn stable_leader(voters: u64) -> Replica {
    stable_leader_with(config(1, voters))
}

/// The progress the leader keeps of follower `id`.
pub fn progress(r: &Replica, id: ReplicaId) -> ProgressStatus {
    r.status()
        .progress
        .into_iter()
        .find(|p| p.id == id)
        .expect("follower has progress")
}
