//! The host file: settings of one node's process that may differ between machines and
//! restarts (cores, idle strategy, io_uring and buffer sizes, data directory).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::cluster::ClusterConfig;
use super::error::{Problems, Reason};
use super::topology::CpuSet;
use crate::applier::ApplierConfig;
use crate::spsc;

/// io_uring's limit on submission queue entries (`IORING_MAX_ENTRIES`).
pub const SQ_ENTRIES_MAX: u64 = 32_768;
/// io_uring's limit on completion queue entries (`IORING_MAX_CQ_ENTRIES`).
pub const CQ_ENTRIES_MAX: u64 = 2 * SQ_ENTRIES_MAX;
/// Provided-buffer rings hold at most this many buffers.
pub const PROVIDED_BUFFERS_MAX: u64 = 32_768;
/// Log segments are mapped in whole pages.
pub const PAGE_BYTES: u64 = 4096;

/// What a thread does when it has no work. In TOML: `[idle] strategy = "spin"` |
/// `"wait"` | `"spin-then-wait"` with `spin_us = N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "IdleTable")]
pub enum IdleStrategy {
    /// Busy-poll: lowest latency, owns its core. For isolated bare-metal cores only.
    Spin,
    /// Busy-poll for `spin_us` after the last work, then wait: low latency under load,
    /// gives the core back when idle.
    SpinThenWait { spin_us: u64 },
    /// Wait immediately (park / block in the ring): shares cores politely; for VMs.
    Wait,
}

/// The `[idle]` table as written. serde's internally tagged enums ignore
/// `deny_unknown_fields` for unit variants (`spin_us` next to `strategy = "spin"` would pass
/// silently), so the table is read flat and converted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdleTable {
    strategy: IdleKind,
    #[serde(default)]
    spin_us: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum IdleKind {
    Spin,
    SpinThenWait,
    Wait,
}

impl TryFrom<IdleTable> for IdleStrategy {
    type Error = String;

    fn try_from(table: IdleTable) -> Result<Self, String> {
        match (table.strategy, table.spin_us) {
            (IdleKind::Spin, None) => Ok(Self::Spin),
            (IdleKind::Wait, None) => Ok(Self::Wait),
            (IdleKind::SpinThenWait, Some(spin_us)) => Ok(Self::SpinThenWait { spin_us }),
            (IdleKind::SpinThenWait, None) => {
                Err("strategy \"spin-then-wait\" needs spin_us".to_owned())
            }
            (IdleKind::Spin | IdleKind::Wait, Some(_)) => {
                Err("spin_us is only valid with strategy \"spin-then-wait\"".to_owned())
            }
        }
    }
}

/// The host file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Which member of the cluster this process is.
    pub node_id: u64,
    /// Log segments and hard state live here.
    pub data_dir: PathBuf,
    pub cores: Cores,
    pub idle: IdleStrategy,
    pub io_uring: IoUring,
    pub storage: Storage,
    pub client: Client,
    pub applier: Applier,
}

/// Core assignment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cores {
    /// One core per shard, in shard order.
    pub shards: Vec<usize>,
    pub applier: usize,
    /// Allow several of this node's threads (and, in a local-cluster file, other nodes'
    /// threads) on one core. Only with idle strategy `wait`: two spinning threads on one core
    /// starve each other. For small VMs (3 nodes on 2 vCPUs). The threads are then not
    /// pinned one per core but free to run on any of the cores listed here.
    #[serde(default)]
    pub shared_cores: bool,
}

/// io_uring sizing, per shard ring.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoUring {
    pub sq_entries: u32,
    pub cq_entries: u32,
    /// Kernel-side submission polling (saves syscalls, costs a core).
    pub sqpoll: bool,
    /// Core for the SQPOLL kernel thread; only with `sqpoll = true`.
    #[serde(default)]
    pub sqpoll_cpu: Option<usize>,
    /// Fixed-file table size: peer and client sockets plus log segments.
    pub registered_files: u32,
    /// Buffers in the provided-buffer ring that multishot receives read into (a power of
    /// two); 0 turns the ring off: each connection then receives into its own buffer, one
    /// receive SQE per read.
    pub provided_buffers: u32,
    pub provided_buffer_bytes: u32,
    /// Sends of at least this many bytes use zero-copy (SEND_ZC); absent: never.
    #[serde(default)]
    pub zero_copy_send_bytes_min: Option<u32>,
}

/// Log storage.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    pub segment_bytes: u64,
}

/// Client connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// Requests queued per shard before clients are pushed back (a ring: power of two).
    pub queue_depth: u32,
}

/// The SPSC hand-off between shards and the applier.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applier {
    pub commit_ring_entries: u32,
    pub result_ring_entries: u32,
    /// Most entries the applier applies per batch. Also how many committed entries wake a
    /// parked applier at once; fewer wait for the shard's next tick, unless a client waits
    /// on the applier (a read, writes held for the appliers, a graceful stop).
    pub batch_entries_max: u32,
    /// Longest park before re-checking the rings (a safety net for missed wake-ups).
    pub park_timeout_ms: u64,
}

impl HostConfig {
    /// The applier's runtime configuration.
    pub fn applier_config(&self) -> ApplierConfig {
        ApplierConfig {
            idle: self.idle,
            park_timeout: Duration::from_millis(self.applier.park_timeout_ms),
            batch_entries_max: self.applier.batch_entries_max as usize,
            placement: Some(self.placement(self.cores.applier)),
        }
    }

    /// Every (core, thread description) this host pins.
    pub fn pinned_threads(&self) -> Vec<(usize, String)> {
        let mut threads: Vec<(usize, String)> = self
            .cores
            .shards
            .iter()
            .enumerate()
            .map(|(shard, &core)| (core, format!("node {} shard {shard}", self.node_id)))
            .collect();
        threads.push((self.cores.applier, format!("node {} applier", self.node_id)));
        if let (true, Some(core)) = (self.io_uring.sqpoll, self.io_uring.sqpoll_cpu) {
            threads.push((core, format!("node {} sqpoll", self.node_id)));
        }
        threads
    }

    /// Where a thread listed on `core` runs: pinned to it on dedicated cores; with
    /// `shared_cores`, anywhere among all of this host's listed cores (see
    /// [`crate::placement`]).
    pub fn placement(&self, core: usize) -> crate::placement::Placement {
        use crate::placement::Placement;
        if !self.cores.shared_cores {
            return Placement::Core(core);
        }
        let mut cores: Vec<usize> = self.cores.shards.clone();
        cores.push(self.cores.applier);
        cores.sort_unstable();
        cores.dedup();
        Placement::Among(cores)
    }

    /// Whether this host may put several threads on one core.
    pub fn may_share_cores(&self) -> bool {
        self.cores.shared_cores && self.idle == IdleStrategy::Wait
    }

    /// Rules about this file alone; paths prefixed by `at`.
    pub(crate) fn validate(&self, at: &str, problems: &mut Problems) {
        let key = |name: &str| format!("{at}{name}");
        problems.at_least(self.node_id, 1, key("node_id"));
        problems.check(
            !self.data_dir.as_os_str().is_empty(),
            key("data_dir"),
            || Reason::BadValue("empty path".to_owned()),
        );
        problems.check(!self.cores.shards.is_empty(), key("cores.shards"), || {
            Reason::OutOfRange("at least one shard core is needed".to_owned())
        });
        problems.check(
            !self.cores.shared_cores || self.idle == IdleStrategy::Wait,
            key("cores.shared_cores"),
            || {
                Reason::CoreConflict(
                    "shared_cores = true needs idle strategy \"wait\": spinning threads \
                     sharing a core starve each other"
                        .to_owned(),
                )
            },
        );
        if let IdleStrategy::SpinThenWait { spin_us } = self.idle {
            problems.at_least(spin_us, 1, key("idle.spin_us"));
            problems.at_most(spin_us, 1_000_000, key("idle.spin_us"));
        }
        let io = &self.io_uring;
        let sq = u64::from(io.sq_entries);
        let cq = u64::from(io.cq_entries);
        problems.ring_size(sq, SQ_ENTRIES_MAX, &key("io_uring.sq_entries"));
        problems.ring_size(cq, CQ_ENTRIES_MAX, &key("io_uring.cq_entries"));
        problems.check(cq >= sq, key("io_uring.cq_entries"), || {
            Reason::OutOfRange(format!(
                "{cq} is below sq_entries {sq}: completions would overflow"
            ))
        });
        problems.check(
            io.sqpoll || io.sqpoll_cpu.is_none(),
            key("io_uring.sqpoll_cpu"),
            || Reason::Mismatch("sqpoll_cpu is set but sqpoll = false".to_owned()),
        );
        problems.at_least(
            u64::from(io.registered_files),
            1,
            key("io_uring.registered_files"),
        );
        if io.provided_buffers > 0 {
            problems.ring_size(
                u64::from(io.provided_buffers),
                PROVIDED_BUFFERS_MAX,
                &key("io_uring.provided_buffers"),
            );
        }
        let buffer = u64::from(io.provided_buffer_bytes);
        problems.at_least(buffer, 256, key("io_uring.provided_buffer_bytes"));
        problems.at_most(buffer, 16 << 20, key("io_uring.provided_buffer_bytes"));
        let segment = self.storage.segment_bytes;
        problems.at_least(segment, 1 << 20, key("storage.segment_bytes"));
        problems.check(
            segment % PAGE_BYTES == 0,
            key("storage.segment_bytes"),
            || {
                Reason::OutOfRange(format!(
                    "{segment} is not a multiple of the {PAGE_BYTES}-byte page"
                ))
            },
        );
        problems.ring_size(
            u64::from(self.client.queue_depth),
            1 << 20,
            &key("client.queue_depth"),
        );
        let rings = spsc::CAPACITY_MAX as u64;
        problems.ring_size(
            u64::from(self.applier.commit_ring_entries),
            rings,
            &key("applier.commit_ring_entries"),
        );
        problems.ring_size(
            u64::from(self.applier.result_ring_entries),
            rings,
            &key("applier.result_ring_entries"),
        );
        problems.at_least(
            u64::from(self.applier.batch_entries_max),
            1,
            key("applier.batch_entries_max"),
        );
        problems.at_least(
            self.applier.park_timeout_ms,
            1,
            key("applier.park_timeout_ms"),
        );
        problems.at_most(
            self.applier.park_timeout_ms,
            10_000,
            key("applier.park_timeout_ms"),
        );
        self.validate_core_sharing(at, problems);
    }

    /// No two of this host's threads on one core unless sharing is allowed.
    fn validate_core_sharing(&self, at: &str, problems: &mut Problems) {
        if self.may_share_cores() {
            return;
        }
        let mut owners: BTreeMap<usize, String> = BTreeMap::new();
        for (core, thread) in self.pinned_threads() {
            if let Some(owner) = owners.get(&core) {
                let path = if thread.ends_with("applier") {
                    format!("{at}cores.applier")
                } else if thread.ends_with("sqpoll") {
                    format!("{at}io_uring.sqpoll_cpu")
                } else {
                    format!("{at}cores.shards")
                };
                problems.push(
                    path,
                    Reason::CoreConflict(format!(
                        "core {core} is already used by {owner}; sharing needs idle strategy \
                         \"wait\" and cores.shared_cores = true"
                    )),
                );
            } else {
                owners.insert(core, thread);
            }
        }
    }

    /// Rules that relate this host to the cluster file.
    pub(crate) fn validate_against(
        &self,
        cluster: &ClusterConfig,
        at: &str,
        cluster_at: &str,
        problems: &mut Problems,
    ) {
        problems.check(
            cluster.member(self.node_id).is_some(),
            format!("{at}node_id"),
            || Reason::UnknownNode(self.node_id),
        );
        let cores = self.cores.shards.len() as u64;
        let shards = u64::from(cluster.shards.count);
        problems.check(cores == shards, format!("{at}cores.shards"), || {
            Reason::Mismatch(format!(
                "{cores} shard cores for {shards} shards in {cluster_at}shards.count"
            ))
        });
        // One fixed file per peer connection plus at least one log segment.
        let files = cluster.members.len() as u64;
        problems.at_least(
            u64::from(self.io_uring.registered_files),
            files,
            format!("{at}io_uring.registered_files"),
        );
        problems.check(
            self.storage.segment_bytes >= cluster.replication.frame_bytes_max,
            format!("{at}storage.segment_bytes"),
            || {
                Reason::OutOfRange(format!(
                    "a segment of {} bytes cannot hold one frame of {cluster_at}replication.frame_bytes_max {}",
                    self.storage.segment_bytes, cluster.replication.frame_bytes_max
                ))
            },
        );
    }

    /// Every pinned core exists on this machine.
    pub(crate) fn validate_topology(&self, cpus: &CpuSet, at: &str, problems: &mut Problems) {
        let mut check = |core: usize, path: String| {
            problems.check(cpus.contains(core), path, || Reason::NoSuchCore {
                core,
                online: cpus.to_string(),
            });
        };
        for (i, &core) in self.cores.shards.iter().enumerate() {
            check(core, format!("{at}cores.shards[{i}]"));
        }
        check(self.cores.applier, format!("{at}cores.applier"));
        if let Some(core) = self.io_uring.sqpoll_cpu {
            check(core, format!("{at}io_uring.sqpoll_cpu"));
        }
    }
}
