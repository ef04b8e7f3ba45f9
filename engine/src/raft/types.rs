//! The vocabulary of the Raft core: identifiers, configuration, persisted state, messages,
//! and the actions the core asks its driver to perform.
//!
//! The core never performs IO. Every event method of [`crate::raft::Replica`] appends
//! [`Action`]s to a caller-owned `Vec<Action>`; the driver executes them **in order**.
//! The ordering is part of the contract:
//!
//! * [`Action::PersistHardState`] must be durable before the driver executes any later
//!   action of the same batch (a vote or a new term must never be visible to a peer
//!   before it survives a crash).
//! * [`Action::Append`] / [`Action::AppendProposal`] / [`Action::Truncate`] change the
//!   local log in the order given; they need not be durable before later actions run.
//!   The driver reports durability back with
//!   [`crate::raft::Replica::on_persisted`]; acknowledgements to the leader are emitted
//!   only after that report.
//! * [`Action::Send`] may be batched by the driver, but messages to one peer keep their
//!   order where the transport allows.

use std::fmt;

/// A replica's identity inside one Raft group (node id in the cluster file).
pub type ReplicaId = u64;
/// A Raft term.
pub type Term = u64;
/// A log index; the first entry has index 1, index 0 is the empty log's sentinel.
pub type Index = u64;

/// Messages of a higher term are refused as corrupt: an honest group gains about one term
/// per election and never gets near it, and the headroom keeps `term + 1` from
/// overflowing in a replica that adopted a forged term.
pub const TERM_MAX: Term = u64::MAX >> 1;

/// Static configuration of one replica. All durations are in ticks: the driver turns
/// wall time into ticks, the core never reads a clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This replica.
    pub id: ReplicaId,
    /// Every voting member of the group, including `id`, without duplicates.
    pub voters: Vec<ReplicaId>,
    /// Election timeouts are drawn uniformly from `[min, max)`.
    pub election_timeout_ticks_min: u32,
    /// Exclusive upper bound; must be greater than `election_timeout_ticks_min`.
    pub election_timeout_ticks_max: u32,
    /// A leader sends a heartbeat to an idle follower this often.
    pub heartbeat_interval_ticks: u32,
    /// Run a pre-vote round before incrementing the term.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority within an election timeout steps down.
    pub check_quorum: bool,
    /// The replica that should lead whenever it is healthy and caught up.
    pub preferred_leader: Option<ReplicaId>,
    /// Fixed-leader mode (tests and benchmarks): this replica leads, nobody campaigns.
    /// The fixed leader counts itself in every quorum, so it always holds every committed
    /// entry and may take leadership again after a restart without an election.
    pub fixed_leader: Option<ReplicaId>,
    /// Maximum AppendEntries messages in flight to one follower.
    pub inflight_msgs_max: u32,
    /// Maximum payload bytes in flight to one follower.
    pub inflight_bytes_max: u64,
    /// Maximum entries in one AppendEntries.
    pub batch_entries_max: u32,
    /// Maximum payload bytes in one AppendEntries (a single larger entry still goes alone).
    pub batch_bytes_max: u64,
    /// Maximum entries accepted but not yet committed on the leader; proposals beyond it
    /// are refused with [`ProposeError::Backpressure`].
    pub uncommitted_entries_max: u64,
}

impl Config {
    /// A configuration with the usual defaults for `id` in the group `voters`.
    pub fn new(id: ReplicaId, voters: Vec<ReplicaId>) -> Self {
        Config {
            id,
            voters,
            election_timeout_ticks_min: 10,
            election_timeout_ticks_max: 20,
            heartbeat_interval_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            preferred_leader: None,
            fixed_leader: None,
            inflight_msgs_max: 64,
            inflight_bytes_max: 8 << 20,
            batch_entries_max: 256,
            batch_bytes_max: 1 << 20,
            uncommitted_entries_max: 1 << 20,
        }
    }

    /// Checks the values the core relies on; the driver rejects a bad config at start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.voters.contains(&self.id) {
            return Err(ConfigError::SelfNotVoter(self.id));
        }
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(ConfigError::DuplicateVoter);
        }
        if self.election_timeout_ticks_min == 0
            || self.election_timeout_ticks_min >= self.election_timeout_ticks_max
        {
            return Err(ConfigError::ElectionTimeout);
        }
        if self.heartbeat_interval_ticks == 0
            || self.heartbeat_interval_ticks >= self.election_timeout_ticks_min
        {
            return Err(ConfigError::HeartbeatInterval);
        }
        for (name, v) in [
            ("inflight_msgs_max", u64::from(self.inflight_msgs_max)),
            ("inflight_bytes_max", self.inflight_bytes_max),
            ("batch_entries_max", u64::from(self.batch_entries_max)),
            ("batch_bytes_max", self.batch_bytes_max),
            ("uncommitted_entries_max", self.uncommitted_entries_max),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, who) in [
            ("preferred_leader", self.preferred_leader),
            ("fixed_leader", self.fixed_leader),
        ] {
            if let Some(who) = who {
                if !self.voters.contains(&who) {
                    return Err(ConfigError::NotAVoter(name, who));
                }
            }
        }
        Ok(())
    }

    /// Votes needed for a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// Why a [`Config`] was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("replica {0} is not in its own voter list")]
    SelfNotVoter(ReplicaId),
    #[error("the voter list names a replica twice")]
    DuplicateVoter,
    #[error("election timeout needs 0 < min < max ticks")]
    ElectionTimeout,
    #[error("heartbeat interval must be at least 1 tick and below the election timeout")]
    HeartbeatInterval,
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("{0} names replica {1}, which is not a voter")]
    NotAVoter(&'static str, ReplicaId),
    /// Rejoining needs another voter that kept the data; a fixed leader takes office
    /// without an election, so it must never start without its log.
    #[error("replica {0} cannot rejoin: {1}")]
    CannotRejoin(ReplicaId, &'static str),
}

/// Term, vote and commit index: what must survive a crash besides the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<ReplicaId>,
    pub commit: Index,
}

/// What the driver recovered from disk when (re)starting a replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredState {
    pub hard_state: HardState,
    /// Index of the entry before `entries[0]` (0 for a log that starts at 1; after
    /// compaction, the last compacted index).
    pub first_index_prev: Index,
    /// Term of the entry at `first_index_prev` (0 when `first_index_prev == 0`).
    pub first_term_prev: Term,
    /// Term and payload length of each durable entry, in index order from
    /// `first_index_prev + 1`. Only entries that are durable on disk belong here.
    pub entries: Vec<EntryMeta>,
    /// The replica lost its data and is rejoining (the driver keeps this durable until
    /// [`Action::RejoinComplete`]): it asks every other voter for its term first, and
    /// neither votes nor campaigns until its log holds everything the leader has
    /// committed. See [`crate::raft::Replica`]'s rejoin notes.
    pub rejoining: bool,
}

/// What the core keeps of each log entry: enough to match logs and to size batches. The
/// payload bytes stay in the driver's log and travel without re-encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub term: Term,
    pub len: u32,
}

/// Role of a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        };
        f.write_str(s)
    }
}

/// A message between replicas of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: ReplicaId,
    pub to: ReplicaId,
    /// The sender's term; for [`MessageBody::PreVote`] the term the sender would campaign
    /// in (its current term plus one), which it has not adopted.
    pub term: Term,
    pub body: MessageBody,
}

/// The kinds of messages. AppendEntries carries only entry metadata (term and payload
/// length): the driver attaches the record bytes for
/// `prev_index + 1 ..= prev_index + entries.len()` from its log when sending, and on
/// receipt rebuilds `entries` from the record headers it validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    Vote {
        last_index: Index,
        last_term: Term,
        /// Set when campaigning because of TimeoutNow: voters ignore their leader lease.
        transfer: bool,
    },
    VoteResponse {
        granted: bool,
    },
    AppendEntries {
        prev_index: Index,
        prev_term: Term,
        commit: Index,
        entries: Vec<EntryMeta>,
    },
    AppendResponse {
        /// The follower's last index known to match the leader's log and be durable
        /// (on success), or the rejected `prev_index` (on reject).
        index: Index,
        /// `Some` when the follower rejected `prev_index`.
        reject: Option<RejectHint>,
    },
    Heartbeat {
        commit: Index,
        /// Sequence number of the leader's ReadIndex round (0 when none is pending).
        read_seq: u64,
    },
    HeartbeatResponse {
        read_seq: u64,
    },
    TimeoutNow,
    /// A rejoining replica asks for the receiver's current term. Outside the term rules:
    /// the receiver neither adopts nor compares the message's term. `nonce` is drawn for
    /// this rejoin (from the replica's seed: a driver seeds each start differently), so
    /// an answer to an earlier rejoin of the same replica, still in flight, is not taken
    /// for one to this rejoin.
    TermQuery {
        nonce: u64,
    },
    /// Answer to [`MessageBody::TermQuery`], echoing its nonce; the message's term is the
    /// sender's current term. Outside the term rules too.
    TermReply {
        nonce: u64,
    },
}

/// A follower's hint for fast backtracking after rejecting an AppendEntries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectHint {
    /// The follower's last index.
    pub last_index: Index,
    /// Term of the follower's entry at the rejected `prev_index` (0 if it has none).
    pub conflict_term: Term,
    /// First index the follower holds with `conflict_term` (or `last_index + 1` when it
    /// has no entry at `prev_index`).
    pub conflict_first_index: Index,
}

/// What the core asks its driver to do. See the module docs for the ordering contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Persist term, vote and commit; durable before any later action runs.
    PersistHardState(HardState),
    /// Leader: write the proposal just accepted by [`crate::raft::Replica::propose`] as
    /// entries `first_index..first_index + count`, all of `term`. The driver encodes the
    /// proposal's payloads as log records (once: the same bytes later go to followers).
    AppendProposal {
        term: Term,
        first_index: Index,
        count: u64,
    },
    /// Follower: remove every local entry after `index` (a conflicting suffix). Always
    /// emitted before the [`Action::Append`] that replaces it.
    Truncate { index: Index },
    /// Follower: append entries `first_index..=last_index` of the AppendEntries message
    /// that was just stepped (a suffix of its records; the prefix was already present).
    Append {
        first_index: Index,
        last_index: Index,
    },
    /// Ask the log to make everything appended so far durable (group commit); the driver
    /// answers with [`crate::raft::Replica::on_persisted`]. The driver may also sync on
    /// its own schedule; this is the core saying someone is waiting.
    Sync,
    /// Send a message. For AppendEntries the driver attaches the record bytes.
    Send(Message),
    /// The commit index advanced; entries `first..=last` may be applied, in order.
    Apply { first: Index, last: Index },
    /// The ReadIndex request `ctx` may be served once the state machine has applied
    /// `index`.
    ReadReady { ctx: u64, index: Index },
    /// The ReadIndex request `ctx` cannot be served here (leadership lost).
    ReadFailed { ctx: u64, leader: Option<ReplicaId> },
    /// Leadership changed (for client redirects and metrics).
    RoleChanged {
        role: Role,
        term: Term,
        leader: Option<ReplicaId>,
    },
    /// The rejoin is over: the log is durable through `index`, a committed entry of the
    /// current leader's term, so it holds every entry committed before the data was lost.
    /// The driver clears its durable rejoin mark; from now on the replica votes again.
    RejoinComplete { index: Index },
}

/// Why a proposal was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<ReplicaId> },
    #[error("leadership transfer in progress")]
    TransferInProgress,
    #[error("too many uncommitted entries")]
    Backpressure,
    #[error("empty proposal batch")]
    Empty,
}

/// Why a message was ignored. Ignoring is always safe; the reason is for counters and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("message from unknown replica {0}")]
    UnknownReplica(ReplicaId),
    #[error("message addressed to replica {0}, not to this replica")]
    WrongDestination(ReplicaId),
    #[error("message of stale term {msg} (current term {current})")]
    StaleTerm { msg: Term, current: Term },
    #[error("response index {index} is beyond the leader's last index {last}")]
    IndexBeyondLog { index: Index, last: Index },
    #[error("vote request ignored: a live leader holds the check-quorum lease")]
    LeaderLease,
    #[error("unexpected message kind for role {0}")]
    UnexpectedForRole(Role),
    #[error("entry terms in AppendEntries are not monotonic or exceed the message term")]
    MalformedEntries,
    #[error("message term {0} is above TERM_MAX (corrupt or forged)")]
    TermTooLarge(Term),
    #[error("rejoining after a loss of data: no votes and no campaigns yet")]
    Rejoining,
}

/// Why an admin request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<ReplicaId> },
    #[error("replica {0} is not a voter")]
    UnknownReplica(ReplicaId),
    #[error("leadership transfer to self")]
    TransferToSelf,
    #[error("fixed-leader mode: leadership does not move")]
    FixedLeader,
}

/// Replication progress of one follower, as the leader sees it (for status and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressStatus {
    pub id: ReplicaId,
    pub match_index: Index,
    pub next_index: Index,
    pub replicating: bool,
    pub inflight_msgs: u32,
    pub inflight_bytes: u64,
    pub recently_active: bool,
}

/// A snapshot of a replica's state for status reports and invariant checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: ReplicaId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<ReplicaId>,
    pub leader: Option<ReplicaId>,
    pub commit: Index,
    pub last_index: Index,
    pub last_term: Term,
    pub persisted_index: Index,
    pub transfer_target: Option<ReplicaId>,
    pub progress: Vec<ProgressStatus>,
    /// Rejoining after a loss of data: not voting yet.
    pub rejoining: bool,
    /// Rejoining and still asking for terms: the voters that have not answered (empty
    /// otherwise). The rejoin waits for every one of them.
    pub rejoin_awaiting: Vec<ReplicaId>,
}
