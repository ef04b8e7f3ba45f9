//! raftd: runs one node of a cluster from its tuning files.
//!
//! ```text
//! raftd --cluster tuning/cluster.toml --host tuning/host.toml --init   # first start only
//! raftd --cluster tuning/cluster.toml --host tuning/host.toml
//! raftd --local tuning/local.toml --node 2      # one node of a local-cluster file
//! ```
//!
//! SIGTERM or SIGINT start a graceful stop (see [`tools::raftd`]).

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "raftd", about = "Run one node of a Raft replication cluster")]
struct Cli {
    #[command(flatten)]
    args: tools::raftd::Args,
}

fn main() -> ExitCode {
    tools::raftd::main_with(Cli::parse().args)
}
