//! Shared code for the binaries.
