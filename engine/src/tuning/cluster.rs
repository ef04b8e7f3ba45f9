//! The cluster file: settings every node must share (members, shards, Raft timings, batch
//! limits, durability). A node whose cluster file differs from its peers' is misconfigured.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::Deserialize;

use super::error::{Problems, Reason};

/// Largest frame the engine accepts; frames are buffered whole.
pub const FRAME_BYTES_MAX: u64 = 1 << 30;
/// Most shards per cluster; each is a pinned thread with its own ring.
pub const SHARDS_MAX: u64 = 1024;

/// The cluster file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Identifies the cluster on the wire, so nodes of two clusters never talk.
    pub cluster_id: u64,
    /// Every voting member.
    pub members: Vec<Member>,
    pub shards: Shards,
    pub raft: RaftSettings,
    pub replication: Replication,
    pub durability: Durability,
    /// Shared key authenticating peer frames, hex-encoded (16 to 64 bytes). Absent: frames
    /// are not authenticated (trusted networks, tests).
    #[serde(default)]
    pub cluster_key_hex: Option<String>,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Non-zero id; 0 means "no node" in the protocol.
    pub node_id: u64,
    /// Where peers connect for Raft traffic.
    pub peer_addr: SocketAddr,
    /// Where clients connect.
    pub client_addr: SocketAddr,
}

/// Sharding: one Raft group per shard.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shards {
    pub count: u32,
    /// Per shard, the node that campaigns first and to which leadership is handed back.
    pub preferred_leaders: Vec<u64>,
}

/// Raft timings, in milliseconds of wall time; the core counts ticks of `tick_interval_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSettings {
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    pub heartbeat_interval_ms: u64,
    pub tick_interval_ms: u64,
    /// Pre-vote: a partitioned node cannot inflate terms and depose a healthy leader.
    pub pre_vote: bool,
    /// A leader without a quorum of recent contact steps down.
    pub check_quorum: bool,
    /// Tests and benchmarks: only this node may lead; elections are disabled.
    #[serde(default)]
    pub fixed_leader: Option<u64>,
}

/// Replication flow control.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replication {
    pub batch_entries_max: u32,
    pub batch_bytes_max: u64,
    /// Unacknowledged AppendEntries per peer.
    pub inflight_messages_max: u32,
    pub inflight_bytes_max: u64,
    pub frame_bytes_max: u64,
    /// Most committed entries any live replica (the leader included) may have left to
    /// apply, whether its log or its applier lags: beyond it the leader holds new client
    /// writes until the lag is back in bounds, so no replica falls behind under load. A
    /// follower not heard from for an election timeout counts as down and holds nothing
    /// back; one replaying after a restart counts again once it is within the limit.
    #[serde(default = "default_apply_lag_entries_max")]
    pub apply_lag_entries_max: u64,
}

fn default_apply_lag_entries_max() -> u64 {
    65536
}

/// Durability.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Durability {
    /// fdatasync before acknowledging. Off only for benchmarks that measure everything but
    /// the disk; a cluster without it can lose acknowledged writes on power loss.
    pub fsync: bool,
}

impl ClusterConfig {
    /// The member with `node_id`.
    pub fn member(&self, node_id: u64) -> Option<&Member> {
        self.members.iter().find(|member| member.node_id == node_id)
    }

    /// Election timeout range in ticks (exact: validation requires multiples of the tick).
    pub fn election_timeout_ticks(&self) -> (u64, u64) {
        let tick = self.raft.tick_interval_ms.max(1);
        (
            self.raft.election_timeout_ms_min / tick,
            self.raft.election_timeout_ms_max / tick,
        )
    }

    /// Heartbeat interval in ticks.
    pub fn heartbeat_ticks(&self) -> u64 {
        self.raft.heartbeat_interval_ms / self.raft.tick_interval_ms.max(1)
    }

    /// The decoded cluster key, if set and valid.
    pub fn cluster_key(&self) -> Option<Vec<u8>> {
        decode_hex(self.cluster_key_hex.as_deref()?)
    }

    /// Checks every rule; paths are relative to the cluster table, prefixed by `at`.
    pub(crate) fn validate(&self, at: &str, problems: &mut Problems) {
        let key = |name: &str| format!("{at}{name}");
        problems.at_least(self.cluster_id, 1, key("cluster_id"));
        self.validate_members(at, problems);
        self.validate_shards(at, problems);
        self.validate_raft(at, problems);
        self.validate_replication(at, problems);
        if let Some(hex) = &self.cluster_key_hex {
            let bytes = decode_hex(hex);
            problems.check(bytes.is_some(), key("cluster_key_hex"), || {
                Reason::BadValue("not an even-length string of hex digits".to_owned())
            });
            if let Some(bytes) = bytes {
                let len = bytes.len() as u64;
                problems.at_least(len, 16, key("cluster_key_hex"));
                problems.at_most(len, 64, key("cluster_key_hex"));
            }
        }
    }

    fn validate_members(&self, at: &str, problems: &mut Problems) {
        problems.check(!self.members.is_empty(), format!("{at}members"), || {
            Reason::OutOfRange("at least one member is needed".to_owned())
        });
        let mut ids = HashSet::new();
        let mut addrs = HashSet::new();
        for (i, member) in self.members.iter().enumerate() {
            let path = |name: &str| format!("{at}members[{i}].{name}");
            problems.at_least(member.node_id, 1, path("node_id"));
            problems.check(ids.insert(member.node_id), path("node_id"), || {
                Reason::Duplicate(format!("node id {}", member.node_id))
            });
            for (name, addr) in [
                ("peer_addr", member.peer_addr),
                ("client_addr", member.client_addr),
            ] {
                problems.check(addr.port() != 0, path(name), || {
                    Reason::OutOfRange("port 0: peers and clients could not connect".to_owned())
                });
                problems.check(addrs.insert(addr), path(name), || {
                    Reason::Duplicate(format!("address {addr} is used twice in the cluster"))
                });
            }
        }
    }

    fn validate_shards(&self, at: &str, problems: &mut Problems) {
        let count = u64::from(self.shards.count);
        problems.at_least(count, 1, format!("{at}shards.count"));
        problems.at_most(count, SHARDS_MAX, format!("{at}shards.count"));
        let listed = self.shards.preferred_leaders.len() as u64;
        // Either no preference at all (an empty list) or one preferred leader per shard.
        problems.check(
            listed == count || listed == 0,
            format!("{at}shards.preferred_leaders"),
            || {
                Reason::Mismatch(format!(
                    "{listed} preferred leaders for {count} shards (list one per shard, or none)"
                ))
            },
        );
        for (i, &node) in self.shards.preferred_leaders.iter().enumerate() {
            problems.check(
                self.member(node).is_some(),
                format!("{at}shards.preferred_leaders[{i}]"),
                || Reason::UnknownNode(node),
            );
        }
    }

    fn validate_raft(&self, at: &str, problems: &mut Problems) {
        let raft = &self.raft;
        let key = |name: &str| format!("{at}raft.{name}");
        let tick = raft.tick_interval_ms;
        problems.at_least(tick, 1, key("tick_interval_ms"));
        for (name, value) in [
            ("heartbeat_interval_ms", raft.heartbeat_interval_ms),
            ("election_timeout_ms_min", raft.election_timeout_ms_min),
            ("election_timeout_ms_max", raft.election_timeout_ms_max),
        ] {
            // Time inside the core is whole ticks; a remainder would be silently dropped.
            problems.check(tick == 0 || value % tick == 0, key(name), || {
                Reason::OutOfRange(format!(
                    "{value} ms is not a multiple of the {tick} ms tick"
                ))
            });
            problems.check(value >= tick, key(name), || {
                Reason::OutOfRange(format!("{value} ms is shorter than the {tick} ms tick"))
            });
        }
        problems.check(
            raft.election_timeout_ms_min < raft.election_timeout_ms_max,
            key("election_timeout_ms_min"),
            || {
                Reason::OutOfRange(format!(
                    "election_timeout_ms_min {} must be below election_timeout_ms_max {} \
                     (randomized timeouts need a range)",
                    raft.election_timeout_ms_min, raft.election_timeout_ms_max
                ))
            },
        );
        problems.check(
            raft.heartbeat_interval_ms < raft.election_timeout_ms_min,
            key("heartbeat_interval_ms"),
            || {
                Reason::OutOfRange(format!(
                    "heartbeat {} ms must be below the minimum election timeout {} ms, or \
                     followers time out between heartbeats",
                    raft.heartbeat_interval_ms, raft.election_timeout_ms_min
                ))
            },
        );
        if let Some(node) = raft.fixed_leader {
            problems.check(self.member(node).is_some(), key("fixed_leader"), || {
                Reason::UnknownNode(node)
            });
        }
    }

    fn validate_replication(&self, at: &str, problems: &mut Problems) {
        let r = &self.replication;
        let key = |name: &str| format!("{at}replication.{name}");
        problems.at_least(u64::from(r.batch_entries_max), 1, key("batch_entries_max"));
        problems.at_least(r.batch_bytes_max, 1, key("batch_bytes_max"));
        problems.at_least(
            u64::from(r.inflight_messages_max),
            1,
            key("inflight_messages_max"),
        );
        problems.at_least(r.frame_bytes_max, 4096, key("frame_bytes_max"));
        problems.at_least(
            r.apply_lag_entries_max,
            u64::from(r.batch_entries_max),
            key("apply_lag_entries_max"),
        );
        problems.at_most(r.frame_bytes_max, FRAME_BYTES_MAX, key("frame_bytes_max"));
        problems.check(
            r.batch_bytes_max <= r.frame_bytes_max,
            key("batch_bytes_max"),
            || {
                Reason::OutOfRange(format!(
                    "a batch of {} bytes does not fit in a frame of frame_bytes_max {}",
                    r.batch_bytes_max, r.frame_bytes_max
                ))
            },
        );
        problems.check(
            r.inflight_bytes_max >= r.batch_bytes_max,
            key("inflight_bytes_max"),
            || {
                Reason::OutOfRange(format!(
                    "{} bytes in flight cannot hold one batch of batch_bytes_max {}",
                    r.inflight_bytes_max, r.batch_bytes_max
                ))
            },
        );
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}
