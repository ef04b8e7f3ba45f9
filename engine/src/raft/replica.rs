//! [`Replica`]: one member of a Raft group as a deterministic state machine.

use std::collections::{BTreeMap, VecDeque};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::log::LogMeta;
use super::progress::{Progress, ProgressState};
use super::types::*;

/// A ReadIndex request waiting for its heartbeat round (`seq`) to be acknowledged.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    ctx: u64,
    index: Index,
    seq: u64,
}

/// A replica that lost its data on its way back.
///
/// Losing the data loses two things. The vote: the replica may have voted for a
/// candidate in some term, and voting again in that term could elect a second leader.
/// And acknowledged entries: an entry committed with this replica's acknowledgement may
/// now be on a minority only, and this replica's vote could elect a leader without it.
///
/// So first every other voter is asked for its current term. With `F` the highest, the
/// replica moves to term `F + 1` with a vote for itself. A candidate persists its term
/// before it asks for votes, so every term in which this replica can have voted for
/// another replica is at most `F`; in a later term it can only have voted for itself,
/// and no other replica voted for it there (or that replica's term would be above `F`),
/// so it led no term that its new votes could give a second leader. The term above `F`
/// also deposes the current leader (its next message is answered with the newer term):
/// every leader the replica follows from then on is of a term above any in which its
/// former self acknowledged entries, so it tracks the replica afresh, and no
/// acknowledgement of the lost log still in flight counts for anything.
///
/// Until every answer is in, it takes part in nothing else: with its term unknown, its
/// acknowledgements could let a deposed leader of an older term commit or serve reads.
///
/// Replicas that lost their data together answer each other's queries with the terms
/// they have now, which say nothing of what they knew before. That is safe while the
/// replicas that kept their data are a majority: a candidate that another one voted for
/// and that lost its data too either never led that term (and never will: its campaign
/// died with its data), or led it with the votes of a majority, which includes a replica
/// that kept its data and so answers a term at least as high. (With no such majority no
/// leader can be elected again: rejoining replicas do not vote.)
///
/// Then it neither votes nor campaigns until its log, durably, holds an entry of the
/// current leader's term at or below that leader's commit index, verified to match the
/// leader's log. Every entry committed before the data was lost is of an earlier term, so
/// the leader holds it before its first entry of its own term, and so does the log then.
#[derive(Clone, Debug)]
struct Rejoin {
    /// The terms the other voters reported so far; `None` once all of them answered and
    /// the highest was adopted.
    terms: Option<BTreeMap<ReplicaId, Term>>,
    /// Ticks since the last round of queries.
    elapsed: u32,
    /// This rejoin's queries carry it, and only answers that echo it count.
    nonce: u64,
    /// A commit index the current leader announced (with its term), which the log is to
    /// reach.
    announced: Option<(Term, Index)>,
    /// A committed entry of a leader's term that the log holds, matching that leader's:
    /// the rejoin is over once it is durable.
    target: Option<Index>,
}

/// One replica of a Raft group. See the [module docs](super) for how to drive it.
#[derive(Debug)]
pub struct Replica {
    config: Config,
    rng: SmallRng,

    // Persistent state (mirrored to the driver through PersistHardState).
    term: Term,
    vote: Option<ReplicaId>,
    log: LogMeta,

    // Volatile state.
    role: Role,
    leader: Option<ReplicaId>,
    commit: Index,
    /// Everything up to here is durable in the local log.
    persisted_index: Index,

    /// Ticks since the last election-timer reset (heard from a leader, granted a vote,
    /// campaigned) or, for a leader, since the last check-quorum round.
    election_elapsed: u32,
    /// The current randomized election timeout.
    election_timeout: u32,
    heartbeat_elapsed: u32,
    /// Ticks since this replica last heard from the preferred leader (not the leader).
    preferred_silence: u32,

    /// Candidate / pre-candidate: the answers received in this round.
    votes: BTreeMap<ReplicaId, bool>,

    /// Leader: one entry per other voter.
    progress: Vec<Progress>,
    transfer_target: Option<ReplicaId>,
    transfer_elapsed: u32,
    read_seq: u64,
    pending_reads: VecDeque<PendingRead>,
    /// Reads that arrived before an entry of this term committed.
    reads_waiting_for_commit: Vec<u64>,

    /// Follower: the prefix of the local log verified to match the current leader's.
    leader_match: Index,
    /// Follower: the highest index acknowledged to the current leader.
    acked_index: Index,
    /// Leader: scratch space for the commit computation (one slot per voter).
    matched_scratch: Vec<Index>,
    /// Set while rejoining after a loss of data.
    rejoin: Option<Rejoin>,
}

impl Replica {
    /// Builds a replica from its configuration and what the driver recovered from disk.
    /// `seed` seeds the election jitter, so a run is reproducible. Call [`Replica::start`]
    /// next.
    pub fn new(config: Config, recovered: RecoveredState, seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        let RecoveredState {
            hard_state,
            first_index_prev,
            first_term_prev,
            entries,
            rejoining,
        } = recovered;
        if rejoining {
            if config.voters.len() < 2 {
                return Err(ConfigError::CannotRejoin(config.id, "it is the only voter"));
            }
            if config.fixed_leader.is_some() {
                // The fixed leader takes office without an election, and a follower's
                // term above the leader's would depose it for good.
                return Err(ConfigError::CannotRejoin(
                    config.id,
                    "the group runs in fixed-leader mode",
                ));
            }
        }
        let log = LogMeta::new(first_index_prev, first_term_prev, entries);
        if let Some(vote) = hard_state.vote {
            if !config.voters.contains(&vote) {
                return Err(ConfigError::NotAVoter("persisted vote", vote));
            }
        }
        // Only durable entries are recovered, and the commit index may have been saved
        // ahead of the local log (it is learned from the leader), so clamp it.
        let commit = hard_state
            .commit
            .min(log.last_index())
            .max(first_index_prev);
        let persisted_index = log.last_index();
        let mut rng = SmallRng::seed_from_u64(seed);
        let rejoin = rejoining.then(|| Rejoin {
            terms: Some(BTreeMap::new()),
            elapsed: 0,
            nonce: rng.gen(),
            announced: None,
            target: None,
        });
        let mut replica = Replica {
            rng,
            term: hard_state.term,
            vote: hard_state.vote,
            log,
            role: Role::Follower,
            leader: None,
            commit,
            persisted_index,
            election_elapsed: 0,
            election_timeout: config.election_timeout_ticks_max,
            heartbeat_elapsed: 0,
            preferred_silence: 0,
            votes: BTreeMap::new(),
            progress: Vec::new(),
            transfer_target: None,
            transfer_elapsed: 0,
            read_seq: 0,
            pending_reads: VecDeque::new(),
            reads_waiting_for_commit: Vec::new(),
            leader_match: 0,
            acked_index: 0,
            matched_scratch: Vec::with_capacity(config.voters.len()),
            rejoin,
            config,
        };
        replica.reset_election_timeout();
        Ok(replica)
    }

    /// Starts the replica: replays what was committed before the restart and, in
    /// fixed-leader mode, makes the fixed leader take office.
    pub fn start(&mut self, out: &mut Vec<Action>) {
        self.query_terms(out);
        if self.commit >= self.log.first_index() {
            out.push(Action::Apply {
                first: self.log.first_index(),
                last: self.commit,
            });
        }
        match self.config.fixed_leader {
            Some(fixed) if fixed == self.config.id => {
                // Take office directly in a new term: one durable write of term and
                // vote, and no transient follower role for the driver to report.
                self.term += 1;
                self.vote = Some(self.config.id);
                self.persist_hard_state(out);
                self.become_leader(out);
            }
            Some(fixed) => self.leader = Some(fixed),
            None => {}
        }
        self.check_invariants();
    }

    // ----- accessors -----

    pub fn id(&self) -> ReplicaId {
        self.config.id
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn leader(&self) -> Option<ReplicaId> {
        self.leader
    }
    pub fn commit(&self) -> Index {
        self.commit
    }
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }
    pub fn persisted_index(&self) -> Index {
        self.persisted_index
    }
    /// Term of the entry at `index`, if the core knows it.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term_at(index)
    }
    /// Term and payload length of the entry at `index`.
    pub fn entry_at(&self, index: Index) -> Option<EntryMeta> {
        self.log.meta_at(index)
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit.min(self.persisted_index),
        }
    }

    /// A copy of the replica's state for status reports.
    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.commit,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            persisted_index: self.persisted_index,
            transfer_target: self.transfer_target,
            progress: self.progress.iter().map(Progress::status).collect(),
            rejoining: self.rejoin.is_some(),
            rejoin_awaiting: self.rejoin_awaiting(),
        }
    }

    /// Whether the replica is rejoining after a loss of data (not voting yet).
    pub fn rejoining(&self) -> bool {
        self.rejoin.is_some()
    }

    /// Rejoining and still asking for terms: the voters that have not answered yet, in
    /// the configuration's order (empty otherwise).
    pub fn rejoin_awaiting(&self) -> Vec<ReplicaId> {
        match self.rejoin.as_ref().and_then(|r| r.terms.as_ref()) {
            Some(terms) => self
                .peers()
                .into_iter()
                .filter(|p| !terms.contains_key(p))
                .collect(),
            None => Vec::new(),
        }
    }

    // ----- events -----

    /// Advances logical time by one tick.
    pub fn tick(&mut self, out: &mut Vec<Action>) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        self.preferred_silence = self.preferred_silence.saturating_add(1);
        if let Some(rejoin) = &mut self.rejoin {
            rejoin.elapsed = rejoin.elapsed.saturating_add(1);
            if rejoin.elapsed >= self.config.election_timeout_ticks_min {
                self.query_terms(out);
            }
        }
        if self.role == Role::Leader {
            self.tick_leader(out);
        } else {
            self.tick_election(out);
        }
        self.check_invariants();
    }

    /// Handles a message from a peer. An `Err` means the message was ignored (or answered
    /// only to tell a stale sender the newer term); the reason is for logs and counters.
    pub fn step(&mut self, msg: &Message, out: &mut Vec<Action>) -> Result<(), StepError> {
        if msg.to != self.config.id {
            return Err(StepError::WrongDestination(msg.to));
        }
        if msg.from == self.config.id || !self.config.voters.contains(&msg.from) {
            return Err(StepError::UnknownReplica(msg.from));
        }
        if msg.term > TERM_MAX {
            return Err(StepError::TermTooLarge(msg.term));
        }
        // Only the preferred replica's leadership holds the others back: its vote requests
        // must not, or a preferred replica with a stale log that keeps campaigning would
        // keep the replicas that could win waiting forever.
        let from_leading = matches!(
            msg.body,
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. }
        );
        if from_leading && Some(msg.from) == self.config.preferred_leader {
            self.preferred_silence = 0;
        }
        let result = match msg.body {
            // Outside the term rules: the asker has not adopted its message's term, and
            // the answer's term is only information. A replica still asking answers too
            // (see [`Rejoin`] on replicas that lost their data together).
            MessageBody::TermQuery { nonce } => {
                self.send(msg.from, MessageBody::TermReply { nonce }, out);
                Ok(())
            }
            MessageBody::TermReply { nonce } => {
                self.on_term_reply(msg, nonce, out);
                Ok(())
            }
            // Until it knows the cluster's terms, a rejoining replica's own term may be
            // older than a deposed leader's, and its acknowledgements would let that
            // leader commit (or serve reads) again: it takes part in nothing.
            _ if self.rejoin.as_ref().is_some_and(|r| r.terms.is_some()) => {
                Err(StepError::Rejoining)
            }
            _ => self.step_checked(msg, out),
        };
        self.check_invariants();
        result
    }

    fn step_checked(&mut self, msg: &Message, out: &mut Vec<Action>) -> Result<(), StepError> {
        if msg.term > self.term {
            match msg.body {
                // A pre-vote never changes terms: the sender has not adopted `msg.term`.
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::Vote {
                    transfer: false, ..
                } if self.in_leader_lease() => {
                    // Check-quorum lease: while we hear from a leader, a disruptive
                    // candidate must not depose it.
                    return Err(StepError::LeaderLease);
                }
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::TimeoutNow => {
                    self.become_follower(msg.term, Some(msg.from), out);
                }
                MessageBody::AppendResponse { .. } | MessageBody::HeartbeatResponse { .. } => {
                    // An answer from a newer term (a stale leader's, or one sent to tell it
                    // the term): adopting the term is all it asks, so it was not ignored.
                    self.become_follower(msg.term, None, out);
                    return Ok(());
                }
                _ => self.become_follower(msg.term, None, out),
            }
        } else if msg.term < self.term {
            return self.step_stale(msg, out);
        }

        match &msg.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => {
                self.on_pre_vote(msg, *last_index, *last_term, out);
                Ok(())
            }
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => {
                self.on_vote(msg, *last_index, *last_term, out);
                Ok(())
            }
            MessageBody::PreVoteResponse { granted } => {
                self.on_pre_vote_response(msg, *granted, out);
                Ok(())
            }
            MessageBody::VoteResponse { granted } => {
                self.on_vote_response(msg, *granted, out);
                Ok(())
            }
            MessageBody::AppendEntries {
                prev_index,
                prev_term,
                commit,
                entries,
            } => self.on_append_entries(msg, *prev_index, *prev_term, *commit, entries, out),
            MessageBody::AppendResponse { index, reject } => {
                self.on_append_response(msg, *index, *reject, out)
            }
            MessageBody::Heartbeat { commit, read_seq } => {
                self.on_heartbeat(msg, *commit, *read_seq, out)
            }
            MessageBody::HeartbeatResponse { read_seq } => {
                self.on_heartbeat_response(msg, *read_seq, out)
            }
            MessageBody::TimeoutNow => self.on_timeout_now(msg, out),
            MessageBody::TermQuery { .. } | MessageBody::TermReply { .. } => {
                unreachable!("handled in step")
            }
        }
    }

    /// A message from an older term. Tell leaders and pre-candidates about the newer
    /// term so a stale leader steps down and a pre-candidate stops; ignore the rest.
    fn step_stale(&mut self, msg: &Message, out: &mut Vec<Action>) -> Result<(), StepError> {
        let reply = match msg.body {
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } => {
                Some(MessageBody::HeartbeatResponse { read_seq: 0 })
            }
            MessageBody::PreVote { .. } => Some(MessageBody::PreVoteResponse { granted: false }),
            _ => None,
        };
        if let Some(body) = reply {
            self.send(msg.from, body, out);
        }
        Err(StepError::StaleTerm {
            msg: msg.term,
            current: self.term,
        })
    }

    /// Leader: accepts a batch of `lens.len()` payloads as the next entries of the
    /// current term and returns `(term, first_index)`. The driver writes the payloads as
    /// records when it executes the emitted [`Action::AppendProposal`].
    pub fn propose(
        &mut self,
        lens: &[u32],
        out: &mut Vec<Action>,
    ) -> Result<(Term, Index), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer_target.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if lens.is_empty() {
            return Err(ProposeError::Empty);
        }
        let uncommitted = self.log.last_index() - self.commit;
        if uncommitted + lens.len() as u64 > self.config.uncommitted_entries_max {
            return Err(ProposeError::Backpressure);
        }
        let first = self.append_local(lens, out);
        self.broadcast_append(out);
        self.check_invariants();
        Ok((self.term, first))
    }

    /// The driver's log made every entry up to `index` durable, and the entry at `index`
    /// has `term`. A report about an entry that has since been truncated is ignored.
    pub fn on_persisted(&mut self, index: Index, term: Term, out: &mut Vec<Action>) {
        if index <= self.persisted_index || self.log.term_at(index) != Some(term) {
            return;
        }
        self.persisted_index = index;
        match self.role {
            Role::Leader => self.maybe_commit(out),
            _ => self.send_ack(out),
        }
        self.maybe_finish_rejoin(out);
        self.check_invariants();
    }

    /// Starts a linearizable read. `ctx` comes back in [`Action::ReadReady`] with the
    /// index the state machine must have applied before serving it.
    pub fn read_index(&mut self, ctx: u64, out: &mut Vec<Action>) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if !self.committed_in_term() {
            // The commit index is only known to be current once an entry of this term
            // has committed (Raft thesis 6.4).
            self.reads_waiting_for_commit.push(ctx);
            return Ok(());
        }
        self.start_read(ctx, out);
        Ok(())
    }

    /// Leader: hands leadership to `to` (TimeoutNow once it is caught up). Proposals are
    /// refused until the transfer completes or is abandoned after an election timeout.
    pub fn transfer_leader(
        &mut self,
        to: ReplicaId,
        out: &mut Vec<Action>,
    ) -> Result<(), AdminError> {
        if self.config.fixed_leader.is_some() {
            return Err(AdminError::FixedLeader);
        }
        if self.role != Role::Leader {
            return Err(AdminError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.config.id {
            return Err(AdminError::TransferToSelf);
        }
        if !self.config.voters.contains(&to) {
            return Err(AdminError::UnknownReplica(to));
        }
        self.transfer_target = Some(to);
        self.transfer_elapsed = 0;
        let last = self.log.last_index();
        let pr = self.progress_mut(to).expect("voter has progress");
        if pr.match_index == last {
            self.send(to, MessageBody::TimeoutNow, out);
        } else {
            self.send_append(to, out);
        }
        self.check_invariants();
        Ok(())
    }

    // ----- election -----

    fn tick_election(&mut self, out: &mut Vec<Action>) {
        if self.config.fixed_leader.is_some() || self.rejoin.is_some() {
            return;
        }
        if self.election_elapsed >= self.election_timeout {
            self.election_elapsed = 0;
            if self.config.pre_vote {
                self.campaign_pre_vote(out);
            } else {
                self.campaign(false, out);
            }
        }
    }

    /// Draws the next election timeout. The preferred leader draws from the lower half of
    /// the range and the others, while they hear from it, from the upper half, so it
    /// campaigns first; silence from it for a full timeout restores the whole range.
    fn reset_election_timeout(&mut self) {
        let min = self.config.election_timeout_ticks_min;
        let max = self.config.election_timeout_ticks_max;
        let mid = min + (max - min) / 2;
        let (lo, hi) = match self.config.preferred_leader {
            Some(p) if p == self.config.id => (min, mid.max(min + 1)),
            Some(_) if self.preferred_silence < max && mid < max => (mid, max),
            _ => (min, max),
        };
        self.election_timeout = self.rng.gen_range(lo..hi);
    }

    /// Whether a leader was heard from within the minimum election timeout (check-quorum
    /// lease): votes for disruptive candidates are refused meanwhile.
    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.config.election_timeout_ticks_min
    }

    fn campaign_pre_vote(&mut self, out: &mut Vec<Action>) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_timeout();
        out.push(Action::RoleChanged {
            role: self.role,
            term: self.term,
            leader: None,
        });
        if self.votes_granted() >= self.config.quorum() {
            self.campaign(false, out);
            return;
        }
        let body = MessageBody::PreVote {
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
        };
        for to in self.peers() {
            self.send_with_term(to, self.term + 1, body.clone(), out);
        }
    }

    fn campaign(&mut self, transfer: bool, out: &mut Vec<Action>) {
        assert!(self.role != Role::Leader, "a leader does not campaign");
        self.term += 1;
        self.vote = Some(self.config.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.leader_match = 0;
        self.acked_index = 0;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.election_elapsed = 0;
        self.reset_election_timeout();
        // Term and vote are durable before any Vote request leaves.
        self.persist_hard_state(out);
        out.push(Action::RoleChanged {
            role: self.role,
            term: self.term,
            leader: None,
        });
        if self.votes_granted() >= self.config.quorum() {
            self.become_leader(out);
            return;
        }
        let body = MessageBody::Vote {
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            transfer,
        };
        for to in self.peers() {
            self.send(to, body.clone(), out);
        }
    }

    /// Whether a candidate's log is at least as up to date as ours (Raft §5.4.1).
    fn log_ok(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.log.last_term(), self.log.last_index())
    }

    fn on_pre_vote(
        &mut self,
        msg: &Message,
        last_index: Index,
        last_term: Term,
        out: &mut Vec<Action>,
    ) {
        // `msg.term >= self.term` here. A pre-vote for our own term or older can never
        // win, and while a leader is live we keep it.
        let granted = msg.term > self.term
            && self.rejoin.is_none()
            && self.log_ok(last_index, last_term)
            && !self.in_leader_lease()
            && (self.leader.is_none() || self.election_elapsed >= self.election_timeout);
        let term = if granted { msg.term } else { self.term };
        self.send_with_term(
            msg.from,
            term,
            MessageBody::PreVoteResponse { granted },
            out,
        );
    }

    fn on_vote(
        &mut self,
        msg: &Message,
        last_index: Index,
        last_term: Term,
        out: &mut Vec<Action>,
    ) {
        // `msg.term == self.term` here (a higher term was adopted above).
        let can_vote = self.vote.is_none_or(|v| v == msg.from)
            && (self.leader.is_none() || self.leader == Some(msg.from))
            && self.rejoin.is_none();
        let granted = can_vote && self.log_ok(last_index, last_term);
        if granted {
            self.vote = Some(msg.from);
            self.election_elapsed = 0;
            self.reset_election_timeout();
            // The vote must be durable before the candidate can count it.
            self.persist_hard_state(out);
        }
        self.send(msg.from, MessageBody::VoteResponse { granted }, out);
    }

    fn on_pre_vote_response(&mut self, msg: &Message, granted: bool, out: &mut Vec<Action>) {
        if self.role != Role::PreCandidate || msg.term != self.term + 1 && granted {
            return;
        }
        self.votes.insert(msg.from, granted);
        if self.votes_granted() >= self.config.quorum() {
            self.campaign(false, out);
        } else if self.votes_rejected() >= self.config.quorum() {
            self.become_follower(self.term, None, out);
        }
    }

    fn on_vote_response(&mut self, msg: &Message, granted: bool, out: &mut Vec<Action>) {
        if self.role != Role::Candidate {
            return;
        }
        self.votes.insert(msg.from, granted);
        if self.votes_granted() >= self.config.quorum() {
            self.become_leader(out);
        } else if self.votes_rejected() >= self.config.quorum() {
            self.become_follower(self.term, None, out);
        }
    }

    fn on_timeout_now(&mut self, msg: &Message, out: &mut Vec<Action>) -> Result<(), StepError> {
        if self.role == Role::Leader || self.config.fixed_leader.is_some() {
            return Err(StepError::UnexpectedForRole(self.role));
        }
        if self.leader.is_some() && self.leader != Some(msg.from) {
            return Err(StepError::UnexpectedForRole(self.role));
        }
        if self.rejoin.is_some() {
            return Err(StepError::Rejoining);
        }
        self.campaign(true, out);
        Ok(())
    }

    // ----- rejoining after a loss of data -----

    /// Asks every voter that has not answered yet for its term (while rejoining).
    fn query_terms(&mut self, out: &mut Vec<Action>) {
        let ask = self.rejoin_awaiting();
        let Some(rejoin) = &mut self.rejoin else {
            return;
        };
        rejoin.elapsed = 0;
        let nonce = rejoin.nonce;
        for to in ask {
            self.send(to, MessageBody::TermQuery { nonce }, out);
        }
    }

    fn on_term_reply(&mut self, msg: &Message, nonce: u64, out: &mut Vec<Action>) {
        let voters = self.config.voters.len();
        let Some(rejoin) = self.rejoin.as_mut().filter(|r| r.nonce == nonce) else {
            return;
        };
        let Some(terms) = rejoin.terms.as_mut() else {
            return;
        };
        terms.insert(msg.from, msg.term);
        if terms.len() + 1 < voters {
            return;
        }
        let highest = terms.values().copied().max().unwrap_or(0).max(self.term);
        self.rejoin.as_mut().expect("rejoining").terms = None;
        // `highest <= TERM_MAX` (checked in `step`), so this cannot overflow.
        self.become_follower(highest + 1, None, out);
        self.vote = Some(self.config.id);
        self.persist_hard_state(out);
    }

    /// The current leader's commit index arrived with its AppendEntries or heartbeat: if
    /// the log holds that entry, of the leader's term and verified to match the leader's
    /// log, it is the rejoin's target.
    fn note_leader_commit(&mut self, leader_commit: Index, out: &mut Vec<Action>) {
        let term = self.term;
        let Some(rejoin) = &mut self.rejoin else {
            return;
        };
        if rejoin.target.is_some() {
            return;
        }
        // Hold on to one announced commit index until the log reaches it: one that kept
        // moving up with the leader's commit could stay ahead of a lagging log for good.
        // One reached that is not of this leader's term gives way to the newest.
        let of_term = |log: &LogMeta, c: Index| c > 0 && log.term_at(c) == Some(term);
        let mut announced = match rejoin.announced {
            Some((t, c)) if t == term => c,
            _ => leader_commit,
        };
        if announced <= self.leader_match && !of_term(&self.log, announced) {
            announced = leader_commit;
        }
        rejoin.announced = Some((term, announced));
        if announced <= self.leader_match && of_term(&self.log, announced) {
            rejoin.target = Some(announced);
            self.maybe_finish_rejoin(out);
        }
    }

    fn maybe_finish_rejoin(&mut self, out: &mut Vec<Action>) {
        let Some(rejoin) = &self.rejoin else { return };
        if let (None, Some(target)) = (&rejoin.terms, rejoin.target) {
            if self.persisted_index >= target {
                self.rejoin = None;
                out.push(Action::RejoinComplete { index: target });
            }
        }
    }

    fn votes_granted(&self) -> usize {
        self.votes.values().filter(|&&g| g).count()
    }

    fn votes_rejected(&self) -> usize {
        self.votes.values().filter(|&&g| !g).count()
    }

    // ----- role changes -----

    /// Becomes a follower of `term`; a new term clears the vote (and persists that).
    fn become_follower(&mut self, term: Term, leader: Option<ReplicaId>, out: &mut Vec<Action>) {
        assert!(term >= self.term, "term must not decrease");
        let was = (self.role, self.leader, self.term);
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.leader_match = 0;
            self.acked_index = 0;
            self.persist_hard_state(out);
        }
        if self.role == Role::Leader {
            self.step_down_cleanup(leader, out);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.election_elapsed = 0;
        self.reset_election_timeout();
        if was != (self.role, self.leader, self.term) {
            out.push(Action::RoleChanged {
                role: self.role,
                term: self.term,
                leader: self.leader,
            });
        }
    }

    fn step_down_cleanup(&mut self, leader: Option<ReplicaId>, out: &mut Vec<Action>) {
        self.progress.clear();
        self.transfer_target = None;
        for read in self.pending_reads.drain(..) {
            out.push(Action::ReadFailed {
                ctx: read.ctx,
                leader,
            });
        }
        for ctx in self.reads_waiting_for_commit.drain(..) {
            out.push(Action::ReadFailed { ctx, leader });
        }
    }

    fn become_leader(&mut self, out: &mut Vec<Action>) {
        assert_eq!(self.vote, Some(self.config.id), "a leader voted for itself");
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.transfer_target = None;
        self.read_seq = 0;
        let last = self.log.last_index();
        self.progress = self
            .peers()
            .into_iter()
            .map(|id| Progress::new(id, last))
            .collect();
        out.push(Action::RoleChanged {
            role: self.role,
            term: self.term,
            leader: self.leader,
        });
        // The no-op commits every earlier entry by the current-term rule (Figure 8).
        self.append_local(&[0], out);
        self.broadcast_append(out);
    }

    // ----- leader -----

    fn tick_leader(&mut self, out: &mut Vec<Action>) {
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat(out);
        }
        if self.transfer_target.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_timeout_ticks_min {
                // The target did not take over in time: take proposals again.
                self.transfer_target = None;
            }
        }
        if self.election_elapsed >= self.config.election_timeout_ticks_min {
            self.election_elapsed = 0;
            if self.config.check_quorum && self.config.fixed_leader.is_none() {
                let active = 1 + self.progress.iter().filter(|p| p.recent_active).count();
                if active < self.config.quorum() {
                    self.become_follower(self.term, None, out);
                    return;
                }
            }
            for pr in &mut self.progress {
                pr.recent_active = false;
            }
        }
        self.maybe_hand_over(out);
    }

    /// Appends entries of the current term locally; returns the first new index.
    fn append_local(&mut self, lens: &[u32], out: &mut Vec<Action>) -> Index {
        let first = self.log.last_index() + 1;
        self.log.append_term(self.term, lens);
        out.push(Action::AppendProposal {
            term: self.term,
            first_index: first,
            count: lens.len() as u64,
        });
        out.push(Action::Sync);
        first
    }

    fn broadcast_append(&mut self, out: &mut Vec<Action>) {
        for i in 0..self.progress.len() {
            let id = self.progress[i].id;
            self.send_append(id, out);
        }
        // A single-voter group commits on its own persistence alone.
        self.maybe_commit(out);
    }

    fn broadcast_heartbeat(&mut self, out: &mut Vec<Action>) {
        for i in 0..self.progress.len() {
            let id = self.progress[i].id;
            self.send_heartbeat(id, out);
        }
    }

    /// The commit index a heartbeat carries is bounded by what `to` acknowledged in this
    /// term: the follower may then commit it without an AppendEntries to verify its log
    /// (a follower restarted on a complete log learns the last commit of an idle group).
    fn send_heartbeat(&mut self, to: ReplicaId, out: &mut Vec<Action>) {
        let matched = self.progress_ref(to).map_or(0, |p| p.match_index);
        let body = MessageBody::Heartbeat {
            commit: self.commit.min(matched),
            read_seq: self.read_seq,
        };
        self.send(to, body, out);
    }

    /// Sends as much as the window allows to `to`: one message in Probe, a pipeline of
    /// batches in Replicate.
    fn send_append(&mut self, to: ReplicaId, out: &mut Vec<Action>) {
        loop {
            let last = self.log.last_index();
            let (msgs_max, bytes_max) = (
                self.config.inflight_msgs_max,
                self.config.inflight_bytes_max,
            );
            let pr = self.progress_ref(to).expect("sending to a known follower");
            if !pr.can_send(msgs_max, bytes_max) {
                return;
            }
            let replicating = pr.state == ProgressState::Replicate;
            if replicating && pr.next_index > last {
                return;
            }
            let next = pr.next_index;
            let prev_index = next - 1;
            let prev_term = self
                .log
                .term_at(prev_index)
                .expect("no compaction below a follower's next index");
            let entries = self
                .log
                .batch(
                    next,
                    self.config.batch_entries_max,
                    self.config.batch_bytes_max,
                )
                .to_vec();
            let bytes: u64 = entries.iter().map(|e| u64::from(e.len)).sum();
            let sent_last = prev_index + entries.len() as Index;
            let body = MessageBody::AppendEntries {
                prev_index,
                prev_term,
                commit: self.commit,
                entries,
            };
            self.send(to, body, out);
            let pr = self.progress_mut(to).expect("known follower");
            pr.sent(sent_last, bytes);
            if !replicating {
                return;
            }
        }
    }

    /// An empty AppendEntries at the follower's next index: it either confirms the
    /// pipeline (the follower acks once durable) or is rejected and starts a probe. This
    /// recovers from lost messages in Replicate without growing the window.
    fn send_empty_append(&mut self, to: ReplicaId, out: &mut Vec<Action>) {
        let pr = self.progress_ref(to).expect("known follower");
        let prev_index = pr.next_index - 1;
        let prev_term = self
            .log
            .term_at(prev_index)
            .expect("next is within the log");
        let body = MessageBody::AppendEntries {
            prev_index,
            prev_term,
            commit: self.commit,
            entries: Vec::new(),
        };
        self.send(to, body, out);
    }

    fn on_append_response(
        &mut self,
        msg: &Message,
        index: Index,
        reject: Option<RejectHint>,
        out: &mut Vec<Action>,
    ) -> Result<(), StepError> {
        if self.role != Role::Leader {
            return Err(StepError::UnexpectedForRole(self.role));
        }
        let last = self.log.last_index();
        if index > last {
            return Err(StepError::IndexBeyondLog { index, last });
        }
        let from = msg.from;
        let pr = self.progress_mut(from).expect("voter has progress");
        pr.recent_active = true;
        match reject {
            None => {
                if pr.acked(index) {
                    self.maybe_commit(out);
                }
                if self.transfer_target == Some(from) {
                    let pr = self.progress_ref(from).expect("voter has progress");
                    if pr.match_index == self.log.last_index() {
                        self.send(from, MessageBody::TimeoutNow, out);
                    }
                }
                self.send_append(from, out);
                self.maybe_hand_over(out);
            }
            Some(hint) => {
                let stale = match pr.state {
                    ProgressState::Replicate => index <= pr.match_index,
                    ProgressState::Probe => index + 1 != pr.next_index,
                };
                if stale {
                    return Ok(());
                }
                let next = self.next_from_hint(index, hint);
                let pr = self.progress_mut(from).expect("voter has progress");
                let next = next.max(pr.match_index + 1);
                pr.become_probe(next);
                self.send_append(from, out);
            }
        }
        Ok(())
    }

    /// Fast backtracking: skip the whole conflicting term in one round trip.
    fn next_from_hint(&self, rejected: Index, hint: RejectHint) -> Index {
        let next = if hint.conflict_term == 0 {
            hint.conflict_first_index
        } else {
            match self.log.last_index_of_term(hint.conflict_term) {
                Some(last_of_term) => last_of_term + 1,
                None => hint.conflict_first_index,
            }
        };
        // The hint is peer input: saturate rather than trust it to be in range.
        next.min(rejected)
            .min(hint.last_index.saturating_add(1))
            .max(1)
    }

    fn on_heartbeat_response(
        &mut self,
        msg: &Message,
        read_seq: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), StepError> {
        if self.role != Role::Leader {
            return Err(StepError::UnexpectedForRole(self.role));
        }
        let last = self.log.last_index();
        let pr = self.progress_mut(msg.from).expect("voter has progress");
        pr.recent_active = true;
        pr.read_seq_acked = pr.read_seq_acked.max(read_seq);
        let behind = pr.match_index < last;
        match pr.state {
            ProgressState::Probe => {
                pr.probe_sent = false;
                self.send_append(msg.from, out);
            }
            ProgressState::Replicate if behind => self.send_empty_append(msg.from, out),
            ProgressState::Replicate => {}
        }
        self.advance_reads(out);
        Ok(())
    }

    /// Commits the highest current-term index that a quorum holds durably.
    fn maybe_commit(&mut self, out: &mut Vec<Action>) {
        if self.role != Role::Leader {
            return;
        }
        // The scratch list is reused: this runs for every acknowledgement.
        let mut matched = std::mem::take(&mut self.matched_scratch);
        matched.clear();
        matched.extend(self.progress.iter().map(|p| p.match_index));
        matched.push(self.persisted_index);
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let mut candidate = matched[self.config.quorum() - 1];
        self.matched_scratch = matched;
        if self.config.fixed_leader.is_some() {
            // The fixed leader must hold every committed entry to lead again after a
            // restart without an election.
            candidate = candidate.min(self.persisted_index);
        }
        if candidate <= self.commit || self.log.term_at(candidate) != Some(self.term) {
            return;
        }
        let had_committed_in_term = self.committed_in_term();
        self.advance_commit(candidate, out);
        if !had_committed_in_term {
            for ctx in std::mem::take(&mut self.reads_waiting_for_commit) {
                self.start_read(ctx, out);
            }
        }
    }

    fn committed_in_term(&self) -> bool {
        self.log.term_at(self.commit) == Some(self.term)
    }

    fn advance_commit(&mut self, index: Index, out: &mut Vec<Action>) {
        assert!(index > self.commit, "commit must advance");
        assert!(index <= self.log.last_index(), "commit beyond the log");
        let first = self.commit + 1;
        self.commit = index;
        out.push(Action::Apply { first, last: index });
    }

    fn start_read(&mut self, ctx: u64, out: &mut Vec<Action>) {
        self.read_seq += 1;
        self.pending_reads.push_back(PendingRead {
            ctx,
            index: self.commit,
            seq: self.read_seq,
        });
        self.broadcast_heartbeat(out);
        self.advance_reads(out);
    }

    /// Releases every read whose heartbeat round a quorum has answered.
    fn advance_reads(&mut self, out: &mut Vec<Action>) {
        while let Some(read) = self.pending_reads.front().copied() {
            let acks = 1 + self
                .progress
                .iter()
                .filter(|p| p.read_seq_acked >= read.seq)
                .count();
            if acks < self.config.quorum() {
                return;
            }
            self.pending_reads.pop_front();
            out.push(Action::ReadReady {
                ctx: read.ctx,
                index: read.index,
            });
        }
    }

    /// Hands leadership to the preferred replica once it is caught up.
    fn maybe_hand_over(&mut self, out: &mut Vec<Action>) {
        let Some(preferred) = self.config.preferred_leader else {
            return;
        };
        if preferred == self.config.id
            || self.transfer_target.is_some()
            || self.config.fixed_leader.is_some()
            || !self.committed_in_term()
        {
            return;
        }
        let last = self.log.last_index();
        let caught_up = self
            .progress_ref(preferred)
            .is_some_and(|p| p.match_index == last && p.recent_active);
        if caught_up {
            let _ = self.transfer_leader(preferred, out);
        }
    }

    // ----- follower -----

    fn on_append_entries(
        &mut self,
        msg: &Message,
        prev_index: Index,
        prev_term: Term,
        leader_commit: Index,
        entries: &[EntryMeta],
        out: &mut Vec<Action>,
    ) -> Result<(), StepError> {
        if self.role == Role::Leader {
            // Two leaders in one term would be a safety bug; a forged message is bad input.
            return Err(StepError::UnexpectedForRole(self.role));
        }
        let mut prev_entry_term = prev_term;
        for e in entries {
            if e.term < prev_entry_term || e.term > msg.term {
                return Err(StepError::MalformedEntries);
            }
            prev_entry_term = e.term;
        }
        self.accept_leader(msg.from, out);

        if self.log.term_at(prev_index) != Some(prev_term) {
            if prev_index < self.commit {
                // Below our commit the logs must match; the leader's entry is committed.
                return Err(StepError::MalformedEntries);
            }
            let last_index = self.log.last_index();
            let hint = if prev_index > last_index {
                RejectHint {
                    last_index,
                    conflict_term: 0,
                    conflict_first_index: last_index + 1,
                }
            } else {
                let conflict_term = self.log.term_at(prev_index).unwrap_or(0);
                let conflict_first_index = if prev_index >= self.log.first_index() {
                    self.log.term_first_index(prev_index)
                } else {
                    prev_index
                };
                RejectHint {
                    last_index,
                    conflict_term,
                    conflict_first_index: conflict_first_index.max(self.commit + 1),
                }
            };
            let body = MessageBody::AppendResponse {
                index: prev_index,
                reject: Some(hint),
            };
            self.send(msg.from, body, out);
            return Ok(());
        }

        let msg_last = prev_index + entries.len() as Index;
        let conflict = entries.iter().enumerate().find_map(|(i, e)| {
            let index = prev_index + 1 + i as Index;
            (self.log.term_at(index) != Some(e.term)).then_some(index)
        });
        if let Some(first_new) = conflict {
            if first_new <= self.log.last_index() {
                if first_new <= self.commit {
                    return Err(StepError::MalformedEntries);
                }
                self.log.truncate_after(first_new - 1);
                self.persisted_index = self.persisted_index.min(first_new - 1);
                self.leader_match = self.leader_match.min(first_new - 1);
                self.acked_index = self.acked_index.min(first_new - 1);
                out.push(Action::Truncate {
                    index: first_new - 1,
                });
            }
            let offset = (first_new - prev_index - 1) as usize;
            self.log.append(&entries[offset..]);
            out.push(Action::Append {
                first_index: first_new,
                last_index: msg_last,
            });
            out.push(Action::Sync);
        }
        self.leader_match = self.leader_match.max(msg_last);
        let commit = leader_commit.min(msg_last);
        if commit > self.commit {
            self.advance_commit(commit, out);
        }
        if msg_last <= self.persisted_index {
            // Everything in the message is already durable: answer now (a duplicate or a
            // probe, maybe after a lost answer).
            self.acked_index = self.acked_index.max(msg_last);
            let body = MessageBody::AppendResponse {
                index: msg_last,
                reject: None,
            };
            self.send(msg.from, body, out);
        } else if conflict.is_none() {
            // Present but not yet durable: the pending sync's report will answer.
            out.push(Action::Sync);
        }
        self.note_leader_commit(leader_commit, out);
        Ok(())
    }

    fn on_heartbeat(
        &mut self,
        msg: &Message,
        leader_commit: Index,
        read_seq: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), StepError> {
        if self.role == Role::Leader {
            return Err(StepError::UnexpectedForRole(self.role));
        }
        self.accept_leader(msg.from, out);
        // The leader announces no more than this replica acknowledged to it in this term
        // (`send_heartbeat`), a prefix its log holds, matching, since then.
        let known = leader_commit.min(self.log.last_index());
        self.leader_match = self.leader_match.max(known);
        let commit = leader_commit.min(self.leader_match);
        if commit > self.commit {
            self.advance_commit(commit, out);
        }
        self.send(msg.from, MessageBody::HeartbeatResponse { read_seq }, out);
        self.note_leader_commit(leader_commit, out);
        Ok(())
    }

    /// A message from the leader of the current term: follow it and reset the timer.
    fn accept_leader(&mut self, leader: ReplicaId, out: &mut Vec<Action>) {
        if self.role != Role::Follower || self.leader != Some(leader) {
            self.become_follower(self.term, Some(leader), out);
        }
        self.election_elapsed = 0;
    }

    /// Acknowledges to the leader what is both verified to match its log and durable.
    fn send_ack(&mut self, out: &mut Vec<Action>) {
        let Some(leader) = self.leader else { return };
        let ack = self.leader_match.min(self.persisted_index);
        if ack > self.acked_index {
            self.acked_index = ack;
            let body = MessageBody::AppendResponse {
                index: ack,
                reject: None,
            };
            self.send(leader, body, out);
        }
    }

    // ----- helpers -----

    fn peers(&self) -> Vec<ReplicaId> {
        self.config
            .voters
            .iter()
            .copied()
            .filter(|&v| v != self.config.id)
            .collect()
    }

    fn progress_ref(&self, id: ReplicaId) -> Option<&Progress> {
        self.progress.iter().find(|p| p.id == id)
    }

    fn progress_mut(&mut self, id: ReplicaId) -> Option<&mut Progress> {
        self.progress.iter_mut().find(|p| p.id == id)
    }

    fn persist_hard_state(&mut self, out: &mut Vec<Action>) {
        out.push(Action::PersistHardState(self.hard_state()));
    }

    fn send(&self, to: ReplicaId, body: MessageBody, out: &mut Vec<Action>) {
        self.send_with_term(to, self.term, body, out);
    }

    fn send_with_term(&self, to: ReplicaId, term: Term, body: MessageBody, out: &mut Vec<Action>) {
        out.push(Action::Send(Message {
            from: self.config.id,
            to,
            term,
            body,
        }));
    }

    /// Panics with context when an internal invariant is broken: that is a bug, never
    /// bad input.
    pub fn check_invariants(&self) {
        let id = self.config.id;
        self.log.check();
        let last = self.log.last_index();
        assert!(
            self.commit <= last,
            "replica {id}: commit {} beyond last index {last}",
            self.commit
        );
        assert!(
            self.persisted_index <= last,
            "replica {id}: persisted {} beyond last index {last}",
            self.persisted_index
        );
        assert!(
            self.log.last_term() <= self.term,
            "replica {id}: log term {} ahead of current term {}",
            self.log.last_term(),
            self.term
        );
        match self.role {
            Role::Leader => {
                assert_eq!(
                    self.leader,
                    Some(id),
                    "replica {id}: leader must lead itself"
                );
                assert_eq!(self.vote, Some(id), "replica {id}: leader voted for itself");
                assert_eq!(
                    self.progress.len(),
                    self.config.voters.len() - 1,
                    "replica {id}: progress per follower"
                );
                for pr in &self.progress {
                    pr.check(last);
                }
            }
            Role::Candidate => {
                assert_eq!(
                    self.vote,
                    Some(id),
                    "replica {id}: candidate voted for itself"
                );
                assert!(
                    self.progress.is_empty(),
                    "replica {id}: candidate has no followers"
                );
            }
            Role::Follower | Role::PreCandidate => {
                assert!(
                    self.progress.is_empty(),
                    "replica {id}: only leaders track progress"
                );
                assert!(
                    self.leader != Some(id),
                    "replica {id}: follower cannot lead"
                );
            }
        }
        if self.rejoin.is_some() {
            assert_eq!(
                self.role,
                Role::Follower,
                "replica {id}: a rejoining replica neither campaigns nor leads"
            );
            assert!(
                self.vote.is_none_or(|v| v == id),
                "replica {id}: a rejoining replica votes for no other"
            );
        }
        if self.role != Role::Leader {
            assert!(
                self.pending_reads.is_empty(),
                "replica {id}: reads only on a leader"
            );
            assert!(
                self.transfer_target.is_none(),
                "replica {id}: transfer only on a leader"
            );
        }
    }
}
