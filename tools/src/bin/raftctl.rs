//! raftctl: administer a cluster and inspect its files.
//!
//! ```text
//! raftctl check-tuning FILE...                    validate tuning files as raftd does
//! raftctl status --tuning FILE [--shard S]        per node: role, term, commit, applied, lag
//! raftctl transfer-leader --tuning FILE --to N    move leadership of a shard (--shard) to node N
//! raftctl inspect-log DIR                         verify a log's checksums, print ranges
//! ```
//!
//! `status` and `transfer-leader` take the cluster's addresses from a cluster file
//! (`--cluster`) or a local-cluster file (`--local`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use engine::client::{Client, ClientError};
use engine::tuning::{self, ClusterConfig, TuningSet};

#[derive(Debug, Parser)]
#[command(name = "raftctl", about = "Administer a Raft replication cluster")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, clap::Args)]
struct Target {
    /// A cluster file or a local-cluster file naming the members.
    #[arg(long = "tuning", alias = "cluster", alias = "local")]
    tuning: PathBuf,
    /// How long to wait for answers, in milliseconds.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    timeout_ms: u64,
    /// Which shard (Raft group) to address.
    #[arg(long, default_value_t = 0)]
    shard: u32,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Validate tuning files (cluster, host or local-cluster) as raftd does at start.
    CheckTuning {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Per node: role, term, commit, applied, and (leader) each follower's match and lag.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print one JSON object per node instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask the shard's current leader to hand leadership to node `to`.
    TransferLeader {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        to: u64,
    },
    /// Verify every record's checksum in a log directory and print its index/term ranges.
    InspectLog { dir: PathBuf },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Cmd::CheckTuning { files } => check_tuning(&files),
        Cmd::Status { target, json } => status(&target, json),
        Cmd::TransferLeader { target, to } => transfer(&target, to),
        Cmd::InspectLog { dir } => inspect(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftctl: {e}");
            ExitCode::from(1)
        }
    }
}

fn check_tuning(files: &[PathBuf]) -> Result<(), String> {
    let set: TuningSet = tuning::validate_files(files).map_err(|e| e.to_string())?;
    println!(
        "ok: cluster {} with {} members, {} shard(s); {} host file(s) valid",
        set.cluster.cluster_id,
        set.cluster.members.len(),
        set.cluster.shards.count,
        set.hosts.len()
    );
    Ok(())
}

fn load_cluster(path: &PathBuf) -> Result<ClusterConfig, String> {
    let set = tuning::validate_files_with(&[path], None).map_err(|e| e.to_string())?;
    Ok(set.cluster)
}

fn connect(target: &Target, to: Option<u64>) -> Result<(Client, Vec<u64>), String> {
    let cluster = load_cluster(&target.tuning)?;
    let shards = cluster.shards.count;
    if target.shard >= shards {
        return Err(format!(
            "--shard {}: {} has {shards} shard(s), numbered 0 to {}",
            target.shard,
            target.tuning.display(),
            shards.saturating_sub(1)
        ));
    }
    let ids: Vec<u64> = cluster.members.iter().map(|m| m.node_id).collect();
    if let Some(to) = to.filter(|to| !ids.contains(to)) {
        return Err(format!(
            "--to {to}: not a member of {} (members: {ids:?})",
            target.tuning.display()
        ));
    }
    // Client ids live above node ids: the transport tells connections apart by them.
    let client_id = u64::from(std::process::id()) | 1 << 40;
    let mut client = Client::connect_cluster(&cluster, client_id).map_err(|e| e.to_string())?;
    client.set_shard(target.shard);
    client
        .wait_connected(Duration::from_millis(target.timeout_ms))
        .map_err(|e| e.to_string())?;
    Ok((client, ids))
}

fn status(target: &Target, json: bool) -> Result<(), String> {
    let (mut client, ids) = connect(target, None)?;
    let timeout = Duration::from_millis(target.timeout_ms);
    if !json {
        println!(
            "{:>5} {:>13} {:>6} {:>7} {:>10} {:>10} {:>10} {:>18}  followers (match/lag)",
            "node", "role", "term", "leader", "commit", "applied", "last", "state hash"
        );
    }
    let mut failures = 0;
    for id in ids {
        // `connect` already waited up to the timeout for every node: one it could not
        // reach is reported at once, so each dead node does not cost another timeout.
        let reply = if client.is_connected(id) {
            client.status(id, timeout)
        } else {
            Err(ClientError::NotConnected(id))
        };
        match reply {
            Ok(r) if json => println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?),
            Ok(r) => {
                let followers: Vec<String> = r
                    .followers
                    .iter()
                    .map(|f| {
                        let m = f.match_index;
                        format!("{}:{m}/{}", f.node_id, r.commit.saturating_sub(m))
                    })
                    .collect();
                let held = if r.writes_held > 0 {
                    format!("  writes held for appliers: {}", r.writes_held)
                } else {
                    String::new()
                };
                let rejoin = rejoin_note(&r);
                println!(
                    "{:>5} {:>13} {:>6} {:>7} {:>10} {:>10} {:>10} {:>18x}  {}{held}{rejoin}",
                    r.node_id,
                    r.role,
                    r.term,
                    r.leader.map_or("-".into(), |l| l.to_string()),
                    r.commit,
                    r.applied,
                    r.last_index,
                    r.state_hash,
                    followers.join(" ")
                );
            }
            Err(e) => {
                failures += 1;
                println!("{id:>5} unreachable: {e}");
            }
        }
    }
    if failures > 0 {
        return Err(format!("{failures} node(s) did not answer"));
    }
    Ok(())
}

/// What a rejoining node waits for, after its status line.
fn rejoin_note(r: &net::wire::ShardStatus) -> String {
    if r.role != "rejoining" {
        return String::new();
    }
    if r.rejoin_awaiting.is_empty() {
        return "  rejoin: catching up with the leader before it votes".into();
    }
    let nodes: Vec<String> = r.rejoin_awaiting.iter().map(u64::to_string).collect();
    format!(
        "  rejoin: waiting for the terms of nodes {}",
        nodes.join(", ")
    )
}

fn transfer(target: &Target, to: u64) -> Result<(), String> {
    let (mut client, ids) = connect(target, Some(to))?;
    let timeout = Duration::from_millis(target.timeout_ms);
    let leader = ids
        .iter()
        .copied()
        .find(|&id| {
            client.is_connected(id) && client.status(id, timeout).is_ok_and(|r| r.is_leader())
        })
        .ok_or("no node reports itself leader")?;
    client
        .transfer_leader(leader, to, timeout)
        .map_err(|e| e.to_string())?;
    println!(
        "leader {leader} is handing shard {} to node {to}",
        target.shard
    );
    Ok(())
}

fn inspect(dir: &PathBuf) -> Result<(), String> {
    let report = storage::inspect(dir).map_err(|e| e.to_string())?;
    if report.segments.is_empty() {
        // An open log always keeps its tail segment, so no segment means no log here.
        let mut logs: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| format!("read_dir {}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path().join("log"))
            .filter(|log| log.is_dir())
            .map(|log| log.display().to_string())
            .collect();
        logs.sort();
        if dir.join("log").is_dir() {
            logs.insert(0, dir.join("log").display().to_string());
        }
        let hint = if logs.is_empty() {
            String::new()
        } else {
            format!("; the logs under it are {}", logs.join(", "))
        };
        return Err(format!(
            "{}: no log segment (*{}) here, so this is not a log directory{hint}",
            dir.display(),
            storage::SEGMENT_SUFFIX
        ));
    }
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rejoin_note;

    fn status(role: &str, awaiting: Vec<u64>) -> net::wire::ShardStatus {
        net::wire::ShardStatus {
            node_id: 1,
            shard: 0,
            role: role.into(),
            term: 1,
            leader: None,
            commit: 0,
            applied: 0,
            last_index: 0,
            persisted_index: 0,
            state_hash: 0,
            followers: Vec::new(),
            append_msgs_sent: 0,
            append_entries_sent: 0,
            writes_held: 0,
            rejoin_awaiting: awaiting,
        }
    }

    #[test]
    fn a_rejoining_node_s_line_says_what_it_waits_for() {
        assert_eq!(rejoin_note(&status("follower", vec![])), "");
        assert_eq!(
            rejoin_note(&status("rejoining", vec![2, 3])),
            "  rejoin: waiting for the terms of nodes 2, 3"
        );
        assert_eq!(
            rejoin_note(&status("rejoining", vec![])),
            "  rejoin: catching up with the leader before it votes"
        );
    }
}
