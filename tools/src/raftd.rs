//! raftd: runs one node of a cluster from its tuning files. The `raftd` binary and
//! `raftbench raftd` (which raftbench's launcher uses, so one build runs everything) both
//! call [`main_with`].
//!
//! ```text
//! raftd --cluster tuning/cluster.toml --host tuning/host.toml --init   # first start only
//! raftd --cluster tuning/cluster.toml --host tuning/host.toml
//! raftd --local tuning/local.toml --node 2      # one node of a local-cluster file
//! raftd --cluster tuning/cluster.toml --host tuning/host.toml --rejoin # after a lost disk
//! ```
//!
//! `--init` formats an empty data directory for a new node of a new cluster; `--rejoin`
//! starts a node that lost its data on an empty directory, and it does not vote until it
//! has caught up. Without either, raftd starts only on a data directory holding this
//! node's state (`engine::node::identity`).
//!
//! SIGTERM or SIGINT start a graceful stop: new requests are refused, accepted ones are
//! answered, followers are given (bounded) time to catch up, the log is synced, and the
//! process exits 0. The final status line is printed as JSON on stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use engine::node::{self, NodeOptions};
use engine::tuning::{self, CpuSet, LocalCluster, NodeTuning};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Cluster file (shared by every node).
    #[arg(long, requires = "host", conflicts_with = "local")]
    pub cluster: Option<PathBuf>,
    /// Host file of this node.
    #[arg(long, requires = "cluster")]
    pub host: Option<PathBuf>,
    /// A local-cluster file describing every node (use with --node).
    #[arg(long, requires = "node")]
    pub local: Option<PathBuf>,
    /// Which node of the local-cluster file to run.
    #[arg(long)]
    pub node: Option<u64>,
    /// With --local: replace the members' ports, `peer1,client1,peer2,client2,...`
    /// (launchers pick free ports at run time).
    #[arg(long, value_delimiter = ',', requires = "local")]
    pub ports: Vec<u16>,
    /// With --local: keep node N's data in DIR/node-N instead of the file's data_dir.
    #[arg(long, requires = "local")]
    pub data_root: Option<PathBuf>,
    /// Longest a graceful stop waits for followers to catch up, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub drain_timeout_ms: u64,
    /// Seed for election jitter (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// First start of a new node of a new cluster: format its empty data directory. Every
    /// later start goes without it, and raftd refuses a data directory that holds no state
    /// unless given it. Never use it to bring back a node that lost its data (use
    /// --rejoin): that node could vote twice in one term and lose acknowledged writes.
    #[arg(long, conflicts_with = "rejoin")]
    pub init: bool,
    /// This node lost its data: start it on an empty data directory to rejoin its
    /// cluster. It first asks every other member for its term (all must be reachable), and
    /// neither votes nor campaigns until it holds everything the leader has committed;
    /// a restart meanwhile keeps it rejoining. Later starts go without the flag.
    #[arg(long)]
    pub rejoin: bool,
}

fn load(args: &Args) -> Result<NodeTuning, String> {
    let cpus = CpuSet::online().map_err(|e| e.to_string())?;
    match (&args.cluster, &args.host, &args.local, args.node) {
        (Some(cluster), Some(host), None, _) => {
            tuning::load_node(cluster, host, Some(&cpus)).map_err(|e| e.to_string())
        }
        (None, None, Some(local), Some(node)) => {
            let text =
                std::fs::read_to_string(local).map_err(|e| format!("{}: {e}", local.display()))?;
            let mut cluster = LocalCluster::parse(&local.display().to_string(), &text, Some(&cpus))
                .map_err(|e| e.to_string())?;
            if !args.ports.is_empty() {
                if args.ports.len() % 2 != 0 {
                    return Err(format!(
                        "--ports needs peer,client pairs; got {} numbers",
                        args.ports.len()
                    ));
                }
                let pairs: Vec<(u16, u16)> = args.ports.chunks(2).map(|p| (p[0], p[1])).collect();
                cluster = cluster.with_ports(&pairs).map_err(|e| e.to_string())?;
            }
            if let Some(root) = &args.data_root {
                cluster = cluster.with_data_root(root);
            }
            cluster
                .node(node)
                .ok_or_else(|| format!("{}: no host entry for node {node}", local.display()))
        }
        _ => Err("give either --cluster and --host, or --local and --node".into()),
    }
}

/// raftd's exit code when a listen address is taken by another socket: a launcher that
/// picked the ports can pick others and start again.
pub const EXIT_ADDRESS_IN_USE: u8 = 3;

/// raftd's exit code when its data directory is not this node's, or holds no state and
/// neither `--init` nor `--rejoin` was given (or holds state and one of them was).
pub const EXIT_DATA_DIR: u8 = 4;

/// Runs one node until SIGTERM/SIGINT; exit code 0 after a clean drain, 2 for bad
/// tuning, [`EXIT_ADDRESS_IN_USE`] when a listen address is taken, [`EXIT_DATA_DIR`] when
/// the data directory is refused, 1 for anything else.
pub fn main_with(args: Args) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: redirected to a file, escape codes would split each
        // `key=value` and make the log hard to search.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let tuning = match load(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("raftd: bad tuning:\n{e}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("raftd: cannot install signal handler: {e}");
            return ExitCode::from(1);
        }
    }
    let options = NodeOptions {
        drain_timeout: Duration::from_millis(args.drain_timeout_ms),
        seed: args.seed,
        begin: match (args.init, args.rejoin) {
            (true, _) => node::identity::Begin::Init,
            (false, true) => node::identity::Begin::Rejoin,
            (false, false) => node::identity::Begin::Resume,
        },
    };
    match node::run(&tuning, &stop, &options) {
        Ok(reports) => {
            for r in reports {
                println!("{}", serde_json::to_string(&r).expect("report serializes"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "node stopped");
            eprintln!("raftd: {e}");
            if e.is_address_in_use() {
                ExitCode::from(EXIT_ADDRESS_IN_USE)
            } else if matches!(e, node::NodeError::DataDir(_)) {
                ExitCode::from(EXIT_DATA_DIR)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
