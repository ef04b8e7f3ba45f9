//! A running node: the shard thread (Raft core + log + transport on one io_uring) and the
//! applier thread, built from validated tuning.
//!
//! ```text
//!   raftd ──> node::run(tuning, stop)
//!               ├─ identity::check: the data directory holds this node's state (or --init)
//!               ├─ storage: Log::open + HardStateFile::open  (recovery happens here)
//!               ├─ applier thread, pinned to host.cores.applier
//!               │     SharedKv <- LogSource (mmap) <- commit ring (SPSC) <- shard
//!               └─ shard thread, pinned to host.cores.shards[0]
//!                     Replica (pure) + Transport (peers, clients, fdatasync)
//! ```
//!
//! A stop request drains: new requests get `Busy`, accepted ones are answered, a leader
//! waits (bounded by `drain_timeout`) until every follower it heard from within an
//! election timeout holds its commit index, the log is synced and the applier has
//! applied everything committed.

mod apply_gate;
mod convert;
pub mod identity;
mod machine;
mod port;
mod shard;
mod status;
pub(crate) mod submits;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use net::{PeerConfig, Ring, RingConfig, Transport, TransportConfig};
use storage::{HardStateFile, Log, LogConfig};
use tracing::info;

pub use convert::{from_wire, to_wire, FrameRejected};
pub use machine::{LogSource, SharedKv, SourceError};
use port::Port;
pub use shard::{Shard, ShardSettings};
pub use status::ShardReport;

use crate::applier::{self, Applier, ShardApplier, StateMachine};
use crate::raft::{Config, EntryMeta, HardState, RecoveredState, Replica};
use crate::spsc::Doorbell;
use crate::tuning::NodeTuning;

/// Why a node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("transport: {0}")]
    Transport(#[from] net::TransportError),
    #[error("applier: {0}")]
    Applier(#[from] applier::ApplierError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The data directory is not this node's, or holds no state and `init` was not given
    /// (see [`identity`]).
    #[error("data directory: {0}")]
    DataDir(String),
    #[error("thread {0}: {1}")]
    Thread(&'static str, String),
}

impl NodeError {
    /// True when the node could not start because a listen address was taken.
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, NodeError::Transport(t) if t.is_address_in_use())
    }
}

/// Options that are not tuning: they belong to the launcher.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Bound on a graceful stop's wait for followers.
    pub drain_timeout: Duration,
    /// Seeds election jitter; `None` derives one from the clock and node id.
    pub seed: Option<u64>,
    /// What the operator says about the data directory: it holds this node's state (the
    /// default), or is empty for a new node of a new cluster (`--init`), or is empty
    /// because this node lost its data and rejoins (`--rejoin`). See [`identity`].
    pub begin: identity::Begin,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            drain_timeout: Duration::from_secs(5),
            seed: None,
            begin: identity::Begin::Resume,
        }
    }
}

/// The Raft core's configuration for `shard` of this node, in ticks.
pub fn core_config(tuning: &NodeTuning, shard: u32) -> Result<Config, NodeError> {
    let c = &tuning.cluster;
    let tick = c.raft.tick_interval_ms.max(1);
    let ticks = |ms: u64, what: &str| {
        u32::try_from(ms / tick)
            .ok()
            .filter(|&t| t > 0)
            .ok_or_else(|| {
                NodeError::Config(format!(
                    "{what} of {ms} ms is not a positive number of {tick} ms ticks"
                ))
            })
    };
    let mut config = Config::new(
        tuning.host.node_id,
        c.members.iter().map(|m| m.node_id).collect(),
    );
    config.election_timeout_ticks_min =
        ticks(c.raft.election_timeout_ms_min, "election_timeout_ms_min")?;
    config.election_timeout_ticks_max =
        ticks(c.raft.election_timeout_ms_max, "election_timeout_ms_max")?;
    config.heartbeat_interval_ticks = ticks(c.raft.heartbeat_interval_ms, "heartbeat_interval_ms")?;
    config.pre_vote = c.raft.pre_vote;
    config.check_quorum = c.raft.check_quorum;
    config.fixed_leader = c.raft.fixed_leader;
    config.preferred_leader = c.shards.preferred_leaders.get(shard as usize).copied();
    config.batch_entries_max = c.replication.batch_entries_max;
    config.batch_bytes_max = c.replication.batch_bytes_max;
    config.inflight_msgs_max = c.replication.inflight_messages_max;
    config.inflight_bytes_max = c.replication.inflight_bytes_max;
    config
        .validate()
        .map_err(|e| NodeError::Config(format!("raft settings: {e}")))?;
    Ok(config)
}

/// The transport of this node, from the cluster and host files.
pub fn transport_config(tuning: &NodeTuning) -> TransportConfig {
    let c = &tuning.cluster;
    let h = &tuning.host;
    let mut t = TransportConfig::new(c.cluster_id, h.node_id, net::Role::Node);
    t.peers = c
        .members
        .iter()
        .map(|m| PeerConfig {
            node_id: m.node_id,
            addr: m.peer_addr,
        })
        .collect();
    t.cluster_key = c.cluster_key();
    t.frame_bytes_max = c.replication.frame_bytes_max as usize;
    // Enough for a full inflight window to each peer plus client replies.
    t.send_queue_bytes_max = (c.replication.inflight_bytes_max as usize)
        .saturating_mul(2)
        .max(t.frame_bytes_max * 4);
    // Records carry their own CRC32C, checked by the receiving engine.
    t.payload_checksum = false;
    t.ring = RingConfig {
        sq_entries: h.io_uring.sq_entries,
        cq_entries: h.io_uring.cq_entries,
        sqpoll: h.io_uring.sqpoll,
        sqpoll_cpu: h.io_uring.sqpoll_cpu.map(|c| c as u32),
        registered_files: h.io_uring.registered_files,
        provided_buffers: h.io_uring.provided_buffers > 0,
        provided_buf_count: u16::try_from(h.io_uring.provided_buffers.max(1)).unwrap_or(u16::MAX),
        provided_buf_bytes: h.io_uring.provided_buffer_bytes,
        send_zc: h.io_uring.zero_copy_send_bytes_min.is_some(),
        send_zc_threshold_bytes: h.io_uring.zero_copy_send_bytes_min.unwrap_or(u32::MAX) as usize,
        ..RingConfig::default()
    };
    // Every in-flight operation must find room in the completion queue (with the
    // provided buffers' multishot completions and some slack), and every connection
    // needs a receive and a send in flight, plus the two accepts and the log's syncs.
    let provided = if t.ring.provided_buffers {
        u32::from(t.ring.provided_buf_count)
    } else {
        0
    };
    t.ring.inflight_ops_max = h.io_uring.cq_entries.saturating_sub(16 + provided).max(8);
    t.conns_max = ((t.ring.inflight_ops_max - 4) / 2).clamp(1, 256);
    t
}

/// Where shard `shard` keeps its log and hard state.
pub fn shard_dir(tuning: &NodeTuning, shard: u32) -> PathBuf {
    tuning.host.data_dir.join(format!("shard-{shard}"))
}

/// Shard `shard`'s log directory.
pub fn shard_log_dir(tuning: &NodeTuning, shard: u32) -> PathBuf {
    shard_dir(tuning, shard).join("log")
}

/// Shard `shard`'s hard state file.
pub fn shard_hard_state_path(tuning: &NodeTuning, shard: u32) -> PathBuf {
    shard_dir(tuning, shard).join("hard_state")
}

/// One shard's recovered storage and core, ready to run.
struct OpenedShard {
    replica: Replica,
    log: Log,
    hard_state: HardStateFile,
}

fn open_shard(
    tuning: &NodeTuning,
    shard_id: u32,
    options: &NodeOptions,
) -> Result<OpenedShard, NodeError> {
    let dir = shard_dir(tuning, shard_id);
    std::fs::create_dir_all(&dir).map_err(|e| {
        NodeError::Config(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })?;
    let log_config = LogConfig {
        segment_bytes: tuning.host.storage.segment_bytes as usize,
        payload_bytes_max: tuning.cluster.replication.frame_bytes_max as usize / 2,
        synced: tuning.cluster.durability.fsync,
        ..LogConfig::default()
    };
    let log = Log::open(shard_log_dir(tuning, shard_id), log_config)?;
    let (hard_state, hs) = HardStateFile::open(shard_hard_state_path(tuning, shard_id))?;
    let first = log.first_index();
    let rejoining = identity::rejoin_mark_path(tuning, shard_id).exists();
    let recovered = RecoveredState {
        hard_state: HardState {
            term: hs.term,
            vote: hs.voted_for,
            commit: hs.commit,
        },
        first_index_prev: first - 1,
        first_term_prev: log.term_of(first - 1)?,
        entries: log
            .iter_meta()
            .map(|m| EntryMeta {
                term: m.term,
                len: m.payload_len,
            })
            .collect(),
        rejoining,
    };
    info!(
        node = tuning.host.node_id,
        shard = shard_id,
        first_index = first,
        last_index = log.last_index(),
        term = hs.term,
        rejoining,
        "log recovered"
    );
    let seed = options.seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ tuning.host.node_id.rotate_left(32)
    }) ^ u64::from(shard_id).rotate_left(48);
    let replica = Replica::new(core_config(tuning, shard_id)?, recovered, seed)
        .map_err(|e| NodeError::Config(format!("raft settings: {e}")))?;
    Ok(OpenedShard {
        replica,
        log,
        hard_state,
    })
}

/// The ring of a shard that reaches the network through shard 0: it carries only the
/// log's syncs and the wake-up polls.
fn relay_ring_config() -> RingConfig {
    RingConfig {
        sq_entries: 64,
        cq_entries: 256,
        inflight_ops_max: 128,
        registered_files: 0,
        provided_buffers: false,
        send_zc: false,
        ..RingConfig::default()
    }
}

/// Runs the node until `stop` is set, then drains and returns each shard's final report.
///
/// Every shard runs on its own thread, pinned to its core from the host file, with its own
/// log, core and io_uring. Shard 0's thread owns the node's transport (one connection per
/// peer node for all shards, and the client listener) and relays other shards' frames.
pub fn run(
    tuning: &NodeTuning,
    stop: &Arc<AtomicBool>,
    options: &NodeOptions,
) -> Result<Vec<ShardReport>, NodeError> {
    let count = tuning.cluster.shards.count;
    assert!(count >= 1, "validated: at least one shard");
    let a = &tuning.host.applier;
    let start = identity::check(tuning, options.begin)?;
    if start == identity::Start::Record && options.begin == identity::Begin::Rejoin {
        // Before any storage: a crash from here on leaves shards that still rejoin.
        for shard_id in 0..count {
            identity::mark_rejoining(tuning, shard_id)?;
        }
        info!(
            node = tuning.host.node_id,
            "rejoining after a loss of data: no votes until caught up"
        );
    }
    let doorbell = Doorbell::new();
    let mut parts = Vec::with_capacity(count as usize);
    let mut appliers = Vec::with_capacity(count as usize);
    for shard_id in 0..count {
        let opened = open_shard(tuning, shard_id, options)?;
        let (shard_link, applier_link) = applier::link(
            a.commit_ring_entries as usize,
            a.result_ring_entries as usize,
            Some(Arc::clone(&doorbell)),
        );
        let kv = SharedKv::new();
        appliers.push(ShardApplier::new(
            shard_id as usize,
            applier_link,
            kv.clone(),
            LogSource::new(opened.log.reader()),
        ));
        parts.push((shard_id, opened, shard_link, kv));
    }
    // Last, once every shard's storage exists: an `--init` cut short before this line
    // leaves shard state without an identity, which the next start adopts.
    if start == identity::Start::Record {
        identity::record(tuning)?;
        info!(node = tuning.host.node_id, dir = %tuning.host.data_dir.display(), "identity recorded");
    }
    let applier = Applier::new(tuning.host.applier_config(), doorbell, appliers)
        .spawn()
        .map_err(|e| NodeError::Thread("applier", e.to_string()))?;

    let member = tuning.member();
    let transport = Transport::bind_with_clients(
        transport_config(tuning),
        member.peer_addr,
        member.client_addr,
    )?;
    let mut ports = Vec::with_capacity(count as usize);
    if count > 1 {
        let (hub_read, hub_write) =
            UnixStream::pair().map_err(|e| NodeError::Thread("relay", e.to_string()))?;
        let mut hubs = Vec::new();
        let mut relays = Vec::new();
        for shard_id in 1..count {
            let ring = Ring::new(&relay_ring_config()).map_err(net::TransportError::from)?;
            let write = hub_write
                .try_clone()
                .map_err(|e| NodeError::Thread("relay", e.to_string()))?;
            let (hub, relay) = port::relay_pair(shard_id, ring, write)
                .map_err(|e| NodeError::Thread("relay", e.to_string()))?;
            hubs.push(hub);
            relays.push(Port::Relay(Box::new(relay)));
        }
        ports.push(Port::net(transport, hubs, Some(hub_read)));
        ports.extend(relays);
    } else {
        ports.push(Port::net(transport, Vec::new(), None));
    }

    // Shard 0 carries everyone's traffic: it stops last, after the others drained.
    let others_running = Arc::new(AtomicUsize::new(count as usize - 1));
    let mut handles = Vec::with_capacity(count as usize);
    for ((shard_id, opened, shard_link, kv), port) in parts.into_iter().zip(ports) {
        let settings = ShardSettings {
            shard: shard_id,
            node_id: tuning.host.node_id,
            tick: Duration::from_millis(tuning.cluster.raft.tick_interval_ms.max(1)),
            idle: tuning.host.idle,
            fsync: tuning.cluster.durability.fsync,
            client_queue_depth: tuning.host.client.queue_depth as usize,
            frame_records_bytes_max: tuning.cluster.replication.frame_bytes_max as usize / 2,
            drain_timeout: options.drain_timeout,
            apply_lag_max: tuning.cluster.replication.apply_lag_entries_max,
            applier_wake_entries: u64::from(tuning.host.applier.batch_entries_max),
            report_stale_after: Duration::from_millis(tuning.cluster.raft.election_timeout_ms_max),
            rejoin_mark: identity::rejoin_mark_path(tuning, shard_id),
            client_addrs: tuning
                .cluster
                .members
                .iter()
                .map(|m| (m.node_id, m.client_addr.to_string()))
                .collect(),
        };
        let placement = tuning
            .host
            .placement(tuning.host.cores.shards[shard_id as usize]);
        let shard = Shard::new(
            settings,
            opened.replica,
            opened.log,
            opened.hard_state,
            shard_link,
            kv,
            port,
        );
        let stop_shard = Arc::clone(stop);
        let others = Arc::clone(&others_running);
        let handle = std::thread::Builder::new()
            .name(format!("shard-{shard_id}"))
            .spawn(move || {
                placement.apply("shard");
                if shard_id == 0 {
                    shard.run(&stop_shard, Some(&others))
                } else {
                    let result = shard.run(&stop_shard, None);
                    others.fetch_sub(1, Ordering::AcqRel);
                    result
                }
            })
            .map_err(|e| NodeError::Thread("shard", e.to_string()))?;
        handles.push(handle);
    }
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(
            handle
                .join()
                .map_err(|_| NodeError::Thread("shard", "panicked".into()))?,
        );
    }
    let machines = applier.stop()?;
    let mut reports = Vec::with_capacity(results.len());
    for (result, kv) in results.into_iter().zip(machines) {
        let mut report = result?;
        // The applier has stopped after applying everything published: report its
        // final state.
        let store = kv.lock();
        report.applied = store.applied_index();
        report.state_hash = store.state_hash();
        reports.push(report);
    }
    Ok(reports)
}
