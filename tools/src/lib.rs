//! Shared code for the binaries.
pub mod launcher;
