//! The Raft protocol core: a pure state machine with no IO, no clock and no threads.
//!
//! Events go in through [`Replica`]'s methods (`tick`, `step`, `propose`,
//! `on_persisted`, `read_index`, `transfer_leader`); actions come out in a caller-owned
//! `Vec<Action>` which the driver executes in order (see [`types`] for the contract).

mod log;
mod progress;
mod replica;
mod types;

pub use replica::Replica;
pub use types::*;
