//! The applier: a dedicated thread that applies committed entries to each shard's state
//! machine, exactly once and in index order, on leader and follower alike.
//!
//! Shape (one applier thread, one link per shard):
//!
//! ```text
//!  shard thread                               applier thread
//!  ShardLink::publish_commit(c) ─ commit ring (spsc, coalescing) ─> pop newest commit
//!                                                                  EntrySource::visit(a+1..=c)
//!                                                                  StateMachine::apply(..)
//!  ShardLink::applied_index()  <── applied watermark (AtomicU64, Release) ──┤
//!  ShardLink::pop_result()     <── result ring (spsc, bounded) ─────────────┘ leader replies
//! ```
//!
//! * [`machine`]: the [`StateMachine`] and [`EntrySource`] contracts.
//! * [`link`]: the per-shard pair of ends that connect a shard thread to the applier.
//! * [`worker`]: the applier loop, its idle strategy and graceful stop.

pub mod link;
pub mod machine;
pub mod worker;

pub use link::{link, AppliedWatermark, ApplierLink, ShardLink};
pub use machine::{Applied, ApplyResult, ApplyRole, EntrySource, Rejection, StateMachine};
pub use worker::{
    Applier, ApplierConfig, ApplierError, ApplierHandle, ShardApplier, PREFETCH_AHEAD,
    SPIN_IDLE_PAUSES,
};
