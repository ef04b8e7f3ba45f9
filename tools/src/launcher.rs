//! Starts and stops a cluster of real `raftd` processes on loopback, for `raftbench local`
//! and the integration tests.
//!
//! Ports are leased for the cluster's lifetime (see [`PortLease`]), data lives in a
//! temporary directory removed on drop, every child is stopped (SIGTERM, then SIGKILL after
//! a bound) when the cluster is dropped. A node that finds its port taken by a foreign
//! socket at start makes the launcher start the whole cluster again on other ports.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engine::client::{Client, SyncClient};
use engine::node::identity::Begin;
use engine::node::ShardReport;
use engine::tuning::{LocalCluster as LocalTuning, Member};

use crate::raftd::EXIT_ADDRESS_IN_USE;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
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
        /// The exit code, when the process exited rather than being killed by a signal.
        code: Option<i32>,
        tail: String,
    },
    #[error("client: {0}")]
    Client(#[from] engine::client::ClientError),
    #[error("{0}")]
    Other(String),
}

/// First id of the clients this launcher creates.
pub const CLIENT_ID_BASE: u64 = 1 << 48;

/// The client id (above [`CLIENT_ID_BASE`]) the launcher checks a new cluster with.
const READINESS_CLIENT: u64 = u32::MAX as u64 - 1;

/// Bound on a new cluster's start (process start, log recovery, listening), for a loaded
/// 2-core host.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts tried before a taken port is reported as an error.
const START_ATTEMPTS: u32 = 3;

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
    ports: PortLease,
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

/// Loopback ports held for one cluster until dropped.
///
/// A port the kernel picks for `bind(0)` comes from its ephemeral range, the same range it
/// gives outgoing connections: released and handed to a node, it can be taken by any
/// connection made meanwhile, by this process or another (a node restarting later is
/// exposed the same way). So the lease takes ports outside the ephemeral range, which
/// only an explicit `bind` can take, and holds an advisory lock per port, a file under
/// the temporary directory, so that concurrent launchers (parallel tests, two raftbench
/// runs) never pick the same one. Each port is checked free by binding it before use.
/// Ports are still chosen at run time, at a random place in that range, never fixed.
/// Dropping the lease removes its lock files.
#[derive(Debug)]
pub struct PortLease {
    locks: Vec<PortLock>,
}

/// A port and its locked file; the file is removed (while still locked) when dropped.
#[derive(Debug)]
struct PortLock {
    port: u16,
    path: PathBuf,
    _lock: Flock<File>,
}

impl Drop for PortLock {
    fn drop(&mut self) {
        // Unlinked before the lock is released: a launcher that opened the file meanwhile
        // finds, once it has the lock, that the path no longer names its file, and skips
        // the port (see `lock_port`).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Ports tried below the ephemeral range's start (and above its end).
const LEASE_WINDOW: u16 = 16_384;

impl PortLease {
    /// Leases `n` free loopback ports.
    pub fn take(n: usize) -> std::io::Result<PortLease> {
        let (lo, hi) = ephemeral_range();
        let below = lo.saturating_sub(LEASE_WINDOW).max(1024)..lo;
        let above = hi
            .checked_add(1)
            .map(|first| first..=hi.saturating_add(LEASE_WINDOW));
        let candidates: Vec<u16> = below.chain(above.into_iter().flatten()).collect();
        let dir = std::env::temp_dir().join("raft-local-ports");
        std::fs::create_dir_all(&dir)?;
        let start = random_index(candidates.len());
        let mut locks = Vec::with_capacity(n);
        for k in 0..candidates.len() {
            if locks.len() == n {
                break;
            }
            let port = candidates[(start + k) % candidates.len()];
            if let Some(lock) = lock_port(&dir, port)? {
                if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                    locks.push(lock);
                }
            }
        }
        if locks.len() < n {
            return Err(std::io::Error::other(format!(
                "only {} of {n} free loopback ports outside the ephemeral range {lo}-{hi}",
                locks.len()
            )));
        }
        Ok(PortLease { locks })
    }

    /// The leased ports, in the order taken.
    pub fn ports(&self) -> Vec<u16> {
        self.locks.iter().map(|l| l.port).collect()
    }
}

/// The kernel's ephemeral port range (Linux's default when it cannot be read).
fn ephemeral_range() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range");
    let parsed = text.ok().and_then(|t| {
        let mut it = t.split_whitespace().map(str::parse::<u16>);
        match (it.next(), it.next()) {
            (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Some((lo, hi)),
            _ => None,
        }
    });
    parsed.unwrap_or((32_768, 60_999))
}

/// The port's lock file, locked, or `None` when another launcher holds it (or the file
/// belongs to someone who does not let us open it).
fn lock_port(dir: &Path, port: u16) -> std::io::Result<Option<PortLock>> {
    let path = dir.join(format!("{port}.lock"));
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(None),
        Err(e) => return Err(e),
    };
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
        Err((_, e)) => return Err(e.into()),
    };
    // The holder we waited out may have removed the file: a lock on an unlinked file
    // guards nothing, since the next launcher creates a new one.
    let ours = lock.metadata()?.ino();
    match std::fs::metadata(&path) {
        Ok(now) if now.ino() == ours => Ok(Some(PortLock {
            port,
            path,
            _lock: lock,
        })),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A start position that differs between processes and calls: std's `RandomState` is
/// keyed from the OS's entropy per thread and changes with every `new`.
fn random_index(len: usize) -> usize {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(());
    (random % len.max(1) as u64) as usize
}

impl Cluster {
    /// Writes `tuning_text` (a local-cluster file) with fresh ports and a temporary data
    /// root, and starts every node with `raftd`.
    pub fn start(raftd: &Path, tuning_text: &str) -> Result<Cluster, LaunchError> {
        Self::start_with(raftd, &[], tuning_text)
    }

    /// As [`Cluster::start`], running `program prefix.. <raftd arguments>` for each node.
    ///
    /// Returns once every node accepts clients. A node that exits because a port of its
    /// was taken meanwhile by a foreign socket (the lease makes that rare, not impossible)
    /// makes the launcher start the cluster again on fresh ports, a few times at most.
    pub fn start_with(
        program: &Path,
        prefix: &[&str],
        tuning_text: &str,
    ) -> Result<Cluster, LaunchError> {
        let mut attempt = 1;
        loop {
            let mut cluster = Self::spawn_all(program, prefix, tuning_text)?;
            match cluster.wait_accepting(START_TIMEOUT) {
                Ok(()) => return Ok(cluster),
                Err(LaunchError::Exited {
                    code: Some(code), ..
                }) if code == i32::from(EXIT_ADDRESS_IN_USE) && attempt < START_ATTEMPTS => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn_all(
        program: &Path,
        prefix: &[&str],
        tuning_text: &str,
    ) -> Result<Cluster, LaunchError> {
        let parsed = LocalTuning::parse("local cluster", tuning_text, None)
            .map_err(|e| LaunchError::Tuning(e.to_string()))?;
        let n = parsed.cluster.members.len();
        let ports = PortLease::take(2 * n)?;
        let pairs: Vec<(u16, u16)> = ports.ports().chunks(2).map(|p| (p[0], p[1])).collect();
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
            ports,
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
            cluster.spawn(id, Begin::Init)?;
        }
        Ok(cluster)
    }

    /// Waits until a client reaches every node, or a node exits.
    fn wait_accepting(&mut self, timeout: Duration) -> Result<(), LaunchError> {
        let deadline = Instant::now() + timeout;
        let mut client = self.client(READINESS_CLIENT)?;
        loop {
            self.check_alive()?;
            let up = client.wait_connected(Duration::from_millis(20))?;
            if up == self.nodes.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::Other(format!(
                    "only {up} of {} nodes accepted clients within {timeout:?}",
                    self.nodes.len()
                )));
            }
        }
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut Node, LaunchError> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| LaunchError::Other(format!("no node {id}")))
    }

    /// Starts node `id`'s raftd; [`Begin::Init`] on its first start only (a fresh data
    /// directory).
    fn spawn(&mut self, id: u64, begin: Begin) -> Result<(), LaunchError> {
        let ports: Vec<String> = self.ports.ports().iter().map(u16::to_string).collect();
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
            .args(begin.flag())
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

    /// Member `id` as the nodes were started: its peer and client addresses.
    pub fn member(&self, id: u64) -> Option<&Member> {
        self.tuning.cluster.members.iter().find(|m| m.node_id == id)
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> Option<&Path> {
        self.tuning
            .hosts
            .iter()
            .find(|h| h.node_id == id)
            .map(|h| h.data_dir.as_path())
    }

    /// A client connected to every node. Client ids live in their own range, above any
    /// node id, because the transport tells connections apart by the id they announce.
    pub fn client(&self, client_id: u64) -> Result<Client, LaunchError> {
        Ok(Client::connect_cluster(
            &self.tuning.cluster,
            CLIENT_ID_BASE + client_id,
        )?)
    }

    /// A synchronous client (one blocking connection, to the leader), with an id in the
    /// same range as [`Cluster::client`]'s.
    pub fn sync_client(&self, client_id: u64) -> SyncClient {
        SyncClient::for_cluster(&self.tuning.cluster, CLIENT_ID_BASE + client_id)
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
                        code: status.code(),
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
        let pid = child.id();
        kill(Pid::from_raw(pid as i32), signal)
            .map_err(|e| LaunchError::Other(format!("signal {signal} to node {id}: {e}")))?;
        if frozen {
            // A signal only stops a thread when it next runs; on a loaded machine one could
            // still answer a request sent after `kill` returned. Return once every thread
            // is stopped.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !all_threads_stopped(pid) {
                if Instant::now() >= deadline {
                    return Err(LaunchError::Other(format!(
                        "node {id} (pid {pid}) not stopped 10 s after SIGSTOP"
                    )));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
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
        self.start_stopped(id, Begin::Resume)
    }

    /// Starts a stopped node that lost its data on an empty data directory, to rejoin
    /// (`raftd --rejoin`).
    pub fn rejoin(&mut self, id: u64) -> Result<(), LaunchError> {
        self.start_stopped(id, Begin::Rejoin)
    }

    fn start_stopped(&mut self, id: u64, begin: Begin) -> Result<(), LaunchError> {
        if self.node_mut(id)?.child.is_some() {
            return Err(LaunchError::Other(format!("node {id} is running")));
        }
        self.spawn(id, begin)
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

    /// The last `lines` lines of every node's log, each under a heading naming the node:
    /// what a failure message carries, since the logs go with the cluster's directory.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "node {}'s log ends with:\n{}",
                    n.id,
                    tail_of(&n.log_path, lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
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

/// Whether every thread of process `pid` is stopped (state `T` in `/proc/PID/task/*/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses and may hold
            // spaces: take the first field after the last `)`.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "T" || state == "t")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leased_ports_are_outside_the_ephemeral_range_and_never_shared() {
        let (lo, hi) = ephemeral_range();
        let a = PortLease::take(6).expect("lease a");
        let b = PortLease::take(6).expect("lease b");
        for p in a.ports().into_iter().chain(b.ports()) {
            assert!(!(lo..=hi).contains(&p), "{p} is in {lo}-{hi}");
            assert!(p >= 1024, "{p} is privileged");
        }
        let mut all: Vec<u16> = a.ports().into_iter().chain(b.ports()).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 12, "a {:?} b {:?}", a.ports(), b.ports());
        // Held ports stay bindable for their nodes: the lease holds locks, not sockets.
        for p in a.ports() {
            TcpListener::bind(("127.0.0.1", p)).expect("leased port is free");
        }
    }

    #[test]
    fn a_locked_port_is_skipped_and_released_with_its_lease() {
        let dir = std::env::temp_dir().join("raft-local-ports");
        let a = PortLease::take(1).expect("lease");
        let port = a.ports()[0];
        let file = dir.join(format!("{port}.lock"));
        assert!(lock_port(&dir, port).expect("lock file").is_none(), "held");
        drop(a);
        assert!(!file.exists(), "the lease removes its lock file");
        let again = lock_port(&dir, port).expect("lock file");
        assert!(again.is_some(), "released");
        drop(again);
        assert!(!file.exists(), "a lock removes its file");
    }
}
