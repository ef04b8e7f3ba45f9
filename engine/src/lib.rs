//! The replication engine: the pure Raft core ([`raft`]), its deterministic simulator
//! ([`sim`]), and the runtime pieces that drive it on real hosts.
//!
//! Dependency direction: `engine -> {net, storage}`; neither of those imports `engine`.

pub mod applier;
pub mod client;
pub mod kv;
pub mod node;
pub mod placement;
pub mod raft;
pub mod sim;
pub mod spsc;
pub mod tuning;
