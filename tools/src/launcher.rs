//! Starts and stops a cluster of real `raftd` processes on loopback, for `raftbench local`
//! and the integration tests.
//!
//! Ports are chosen by the kernel (bind to port 0, read it back, release it), data lives in
//! a temporary directory removed on drop, every child is stopped (SIGTERM, then SIGKILL
//! after a bound) when the cluster is dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engine::client::Client;
use engine::node::ShardReport;
use engine::tuning::LocalCluster as LocalTuning;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Why the launcher failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("tuning: {0}")]
    Tuning(String),
    #[error("node {node} exited early ({status}); its log ends with:\n{tail}")]
    Exited {
        node: u64,
        status: String,
        tail: String,
    },
    #[error("client: {0}")]
    Client(#[from] engine::client::ClientError),
    #[error("{0}")]
    Other(String),
}

/// First id of the clients this launcher creates.
pub const CLIENT_ID_BASE: u64 = 1 << 48;

/// One raftd child.
#[derive(Debug)]
struct Node {
    id: u64,
    child: Option<Child>,
    log_path: PathBuf,
}

/// A running local cluster.
#[derive(Debug)]
pub struct Cluster {
    raftd: PathBuf,
    /// Arguments before raftd's own (e.g. `raftd` when raftbench runs nodes itself).
    prefix: Vec<String>,
    tuning_path: PathBuf,
    ports: Vec<u16>,
    data: tempfile::TempDir,
    nodes: Vec<Node>,
    pub tuning: LocalTuning,
}

/// The finished node's last status line (JSON on stdout) and exit code.
#[derive(Debug, Clone)]
pub struct Exit {
    pub node: u64,
    pub success: bool,
    pub reports: Vec<ShardReport>,
}

/// Free loopback ports, reserved long enough to read them back.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

impl Cluster {
    /// Writes `tuning_text` (a local-cluster file) with fresh ports and a temporary data
    /// root, and starts every node with `raftd`.
    pub fn start(raftd: &Path, tuning_text: &str) -> Result<Cluster, LaunchError> {
        Self::start_with(raftd, &[], tuning_text)
    }

    /// As [`Cluster::start`], running `program prefix.. <raftd arguments>` for each node.
    pub fn start_with(
        program: &Path,
        prefix: &[&str],
        tuning_text: &str,
    ) -> Result<Cluster, LaunchError> {
        let parsed = LocalTuning::parse("local cluster", tuning_text, None)
            .map_err(|e| LaunchError::Tuning(e.to_string()))?;
        let n = parsed.cluster.members.len();
        let ports = free_ports(2 * n)?;
        let pairs: Vec<(u16, u16)> = (0..n).map(|i| (ports[2 * i], ports[2 * i + 1])).collect();
        let data = tempfile::Builder::new().prefix("raft-local-").tempdir()?;
        let tuning = parsed
            .with_ports(&pairs)
            .map_err(|e| LaunchError::Tuning(e.to_string()))?
            .with_data_root(data.path());
        let tuning_path = data.path().join("local.toml");
        std::fs::write(&tuning_path, tuning_text)?;
        let mut cluster = Cluster {
            raftd: program.to_path_buf(),
            prefix: prefix.iter().map(|p| (*p).to_owned()).collect(),
            tuning_path,
            ports: ports.clone(),
            data,
            nodes: Vec::new(),
            tuning,
        };
        let ids: Vec<u64> = cluster
            .tuning
            .cluster
            .members
            .iter()
            .map(|m| m.node_id)
            .collect();
        for id in ids {
            let log_path = cluster.data.path().join(format!("raftd-{id}.log"));
            cluster.nodes.push(Node {
                id,
                child: None,
                log_path,
            });
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut Node, LaunchError> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| LaunchError::Other(format!("no node {id}")))
    }

    fn spawn(&mut self, id: u64) -> Result<(), LaunchError> {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let raftd = self.raftd.clone();
        let prefix = self.prefix.clone();
        let tuning_path = self.tuning_path.clone();
        let data_root = self.data.path().to_path_buf();
        let node = self.node_mut(id)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)?;
        let child = Command::new(raftd)
            .args(prefix)
            .arg("--local")
            .arg(tuning_path)
            .arg("--node")
            .arg(id.to_string())
            .arg("--ports")
            .arg(ports.join(","))
            .arg("--data-root")
            .arg(data_root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        Ok(())
    }

    /// Node ids in member order.
    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// A client connected to every node. Client ids live in their own range, above any
    /// node id, because the transport tells connections apart by the id they announce.
    pub fn client(&self, client_id: u64) -> Result<Client, LaunchError> {
        Ok(Client::connect_cluster(
            &self.tuning.cluster,
            CLIENT_ID_BASE + client_id,
        )?)
    }

    /// Fails if any node has exited.
    pub fn check_alive(&mut self) -> Result<(), LaunchError> {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    let tail = tail_of(&node.log_path, 20);
                    return Err(LaunchError::Exited {
                        node: node.id,
                        status: status.to_string(),
                        tail,
                    });
                }
            }
        }
        Ok(())
    }

    /// Waits until one node reports itself leader (and everyone agrees on it); returns it.
    pub fn wait_leader(
        &mut self,
        client: &mut Client,
        timeout: Duration,
    ) -> Result<u64, LaunchError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let mut leaders = Vec::new();
            for id in self.running() {
                if let Ok(r) = client.status(id, Duration::from_millis(500)) {
                    if r.is_leader() {
                        leaders.push(id);
                    }
                }
            }
            if leaders.len() == 1 {
                client.set_leader(Some(leaders[0]));
                return Ok(leaders[0]);
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::Other(format!(
                    "no single leader within {timeout:?} (leaders seen: {leaders:?})"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ids of nodes with a running process.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// Graceful stop of one node (SIGTERM, bounded wait, SIGKILL after it).
    pub fn stop(&mut self, id: u64, timeout: Duration) -> Result<Exit, LaunchError> {
        let node = self.node_mut(id)?;
        let mut child = node
            .child
            .take()
            .ok_or_else(|| LaunchError::Other(format!("node {id} is not running")))?;
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            stdout.read_to_string(&mut out)?;
        }
        let reports = out
            .lines()
            .filter_map(|l| serde_json::from_str::<ShardReport>(l).ok())
            .collect();
        Ok(Exit {
            node: id,
            success: status.success(),
            reports,
        })
    }

    /// Freezes one node with SIGSTOP (`frozen`) or lets it go on with SIGCONT: a replica
    /// that is alive but silent, like one stuck in a long GC pause or a swapped-out host.
    pub fn freeze(&mut self, id: u64, frozen: bool) -> Result<(), LaunchError> {
        let node = self.node_mut(id)?;
        let child = node
            .child
            .as_ref()
            .ok_or_else(|| LaunchError::Other(format!("node {id} is not running")))?;
        let signal = if frozen {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(Pid::from_raw(child.id() as i32), signal)
            .map_err(|e| LaunchError::Other(format!("signal {signal} to node {id}: {e}")))
    }

    /// Kills one node with SIGKILL (no drain).
    pub fn kill(&mut self, id: u64) -> Result<(), LaunchError> {
        let node = self.node_mut(id)?;
        if let Some(mut child) = node.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts a stopped node again on its data directory.
    pub fn restart(&mut self, id: u64) -> Result<(), LaunchError> {
        if self.node_mut(id)?.child.is_some() {
            return Err(LaunchError::Other(format!("node {id} is running")));
        }
        self.spawn(id)
    }

    /// Stops every node gracefully and returns each exit. Leaders of shard 0 go first:
    /// a leader's drain waits for its followers to hold its commit index, so they must
    /// still be running; a follower's drain needs nobody.
    pub fn stop_all(&mut self, timeout: Duration) -> Result<Vec<Exit>, LaunchError> {
        let mut order = self.running();
        if let Ok(mut client) = self.client(u64::from(u32::MAX)) {
            let _ = client.wait_connected(Duration::from_secs(1));
            let leads: Vec<bool> = order
                .iter()
                .map(|&id| {
                    client
                        .status(id, Duration::from_millis(500))
                        .is_ok_and(|r| r.is_leader())
                })
                .collect();
            let mut ranked: Vec<(bool, u64)> = leads.into_iter().zip(order).collect();
            // Stable: leaders first, then member order.
            ranked.sort_by_key(|&(leader, _)| !leader);
            order = ranked.into_iter().map(|(_, id)| id).collect();
        }
        let mut exits = Vec::new();
        for id in order {
            exits.push(self.stop(id, timeout)?);
        }
        Ok(exits)
    }

    /// The stderr log of a node (for failure messages).
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .map_or_else(String::new, |n| tail_of(&n.log_path, lines))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn tail_of(path: &Path, lines: usize) -> String {
    let Ok(file) = std::fs::File::open(path) else {
        return String::new();
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
