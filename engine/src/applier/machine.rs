//! Contracts between the applier and the two things it connects: the log it reads
//! ([`EntrySource`]) and the application it drives ([`StateMachine`]).

use std::error::Error;

/// Whether this node led the term of the entry being applied.
///
/// A database executes a command on the leader, where a client waits for the result, and
/// replays it on followers, where nobody does: the role lets it skip building a reply that
/// would be thrown away. It must never change the resulting *state*: replicas compare
/// [`StateMachine::state_hash`] after applying the same entries, whatever their roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApplyRole {
    /// This node was leader for the entry's term, so a client may be waiting on it here.
    Leader,
    /// Another node led that term; the entry is replayed.
    Follower,
}

/// A deterministic refusal to execute a command: a malformed payload, or a command the
/// application rejects. Every replica produces the same refusal for the same entry, and the
/// state is unchanged by it, so refusing is safe where panicking would take the node down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rejection {
    /// Stable, application-defined code that is sent to the client.
    pub code: u16,
    /// Human-readable reason, static so producing a rejection never allocates.
    pub reason: &'static str,
}

/// What applying one entry produced.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ApplyResult {
    /// The entry had an empty payload: the no-op a Raft leader appends at the start of its
    /// term to commit entries of earlier terms (Raft paper section 5.4.2).
    NoOp,
    /// The command was executed. The bytes are the reply for the waiting client; a state
    /// machine returns an empty (non-allocating) vector on followers.
    Done(Vec<u8>),
    /// The command was refused; the state is unchanged.
    Rejected(Rejection),
}

/// The result of one entry applied in the [`ApplyRole::Leader`] role, sent back to the
/// shard so it can answer the client that proposed `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Log index of the entry.
    pub index: u64,
    /// Term of the entry; the shard checks it against the term it proposed in.
    pub term: u64,
    /// What the state machine returned.
    pub result: ApplyResult,
}

/// The application that committed entries drive.
///
/// Contract, relied on by the applier and checked by its assertions:
/// * `apply` is called for every index exactly once, in increasing order without gaps,
///   starting at `applied_index() + 1`.
/// * After `apply(.., index, ..)` returns, `applied_index()` returns `index`.
/// * `apply` is deterministic in `(index, term, payload)` as far as the state is concerned;
///   `role` may only change the reply. A malformed payload yields
///   [`ApplyResult::Rejected`], never a panic.
/// * An empty payload is a no-op and yields [`ApplyResult::NoOp`].
pub trait StateMachine: Send {
    /// Executes (leader) or replays (follower) the command in `payload` at `index`.
    fn apply(&mut self, role: ApplyRole, index: u64, term: u64, payload: &[u8]) -> ApplyResult;

    /// A hash of the state that is equal on replicas that applied the same entries; used to
    /// check convergence at the end of tests and benchmarks.
    fn state_hash(&self) -> u64;

    /// The last index applied (0 when nothing has been); the applier resumes after it.
    fn applied_index(&self) -> u64;

    /// Reads the state that applying `payload` will touch, without changing anything. The
    /// applier calls it for a run of upcoming entries before it applies them: lookups of
    /// independent entries then overlap their cache misses, where applying one entry at a
    /// time waits for each miss in turn (a state larger than the cache misses on nearly
    /// every entry). A hint only: the outcome of [`apply`](Self::apply) must not depend on
    /// it. Default: nothing.
    fn prefetch(&self, payload: &[u8]) {
        let _ = payload;
    }

    /// Runs `batch`, which makes a run of the calls above, on the machine to make them on.
    /// The applier wraps every run of committed entries it applies in one call, so a
    /// machine shared with readers can take its lock once per run instead of once per
    /// call: a lock's atomic read-modify-write waits for every store before it, so one per
    /// entry would serialise the cache misses that applying a large state takes.
    /// Default: the machine itself, with nothing around it.
    fn with_batch(&mut self, batch: &mut dyn FnMut(&mut dyn StateMachine))
    where
        Self: Sized,
    {
        batch(self)
    }
}

/// Read access to committed log entries. The storage crate implements it over the
/// memory-mapped log; tests implement it over a vector.
///
/// Contract: `visit(first, last, f)` calls `f(index, term, payload)` for every index in
/// `first..=last`, in increasing order, each exactly once, and returns `Ok` only if it did.
/// Every index asked for is committed, so it is durable: a failure to read it is a storage
/// fault, which stops the applier rather than guess.
pub trait EntrySource: Send {
    /// Why an entry could not be read (corrupt record, compacted away, IO error...).
    type Error: Error + Send + Sync + 'static;

    /// Visits the entries `first..=last` in order. `payload` borrows from the source (the
    /// mmap), so applying does not copy the command.
    fn visit(
        &mut self,
        first: u64,
        last: u64,
        f: &mut dyn FnMut(u64, u64, &[u8]),
    ) -> Result<(), Self::Error>;

    /// Calls `f(payload)` for entries of `first..=last` in order, without consuming them:
    /// the next [`visit`](Self::visit) still starts where it would have. Best effort, for
    /// [`StateMachine::prefetch`]: it may stop early or see nothing (a read error is left
    /// for `visit` to report). Default: nothing.
    fn peek(&mut self, first: u64, last: u64, f: &mut dyn FnMut(&[u8])) {
        let _ = (first, last, f);
    }
}
