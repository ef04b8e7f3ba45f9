//! Shared code for the binaries.
pub mod cpu;
pub mod launcher;
pub mod load;
pub mod raftd;
