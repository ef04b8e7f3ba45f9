//! What a shard reports about itself: to `raftctl status`, to raftbench's convergence
//! check, and when it stops.

use net::wire::{FollowerStatus, ShardStatus};
use serde::{Deserialize, Serialize};

use super::machine::SharedKv;
use crate::applier::StateMachine;
use crate::raft::{Replica, Role};

/// One shard's state on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardReport {
    pub node_id: u64,
    pub shard: u32,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub persisted_index: u64,
    pub state_hash: u64,
    /// Leader only: each follower's match index.
    pub followers: Vec<(u64, u64)>,
    /// AppendEntries messages with entries this node sent, and the entries they carried.
    pub append_msgs_sent: u64,
    pub append_entries_sent: u64,
}

impl ShardReport {
    pub fn to_wire(&self) -> ShardStatus {
        ShardStatus {
            node_id: self.node_id,
            shard: self.shard,
            role: self.role.clone(),
            term: self.term,
            leader: self.leader,
            commit: self.commit,
            applied: self.applied,
            last_index: self.last_index,
            persisted_index: self.persisted_index,
            state_hash: self.state_hash,
            followers: self
                .followers
                .iter()
                .map(|&(node_id, match_index)| FollowerStatus {
                    node_id,
                    match_index,
                })
                .collect(),
            append_msgs_sent: self.append_msgs_sent,
            append_entries_sent: self.append_entries_sent,
        }
    }

    pub fn from_wire(s: &ShardStatus) -> Self {
        ShardReport {
            node_id: s.node_id,
            shard: s.shard,
            role: s.role.clone(),
            term: s.term,
            leader: s.leader,
            commit: s.commit,
            applied: s.applied,
            last_index: s.last_index,
            persisted_index: s.persisted_index,
            state_hash: s.state_hash,
            followers: s
                .followers
                .iter()
                .map(|f| (f.node_id, f.match_index))
                .collect(),
            append_msgs_sent: s.append_msgs_sent,
            append_entries_sent: s.append_entries_sent,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader.to_string()
    }
}

/// Counters a shard keeps about its own sends.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SendCounters {
    pub append_msgs: u64,
    pub append_entries: u64,
}

pub(crate) fn shard_status(
    node_id: u64,
    shard: u32,
    replica: &Replica,
    kv: &SharedKv,
    sent: SendCounters,
) -> ShardReport {
    let status = replica.status();
    // Hash and applied index under one lock, so they describe the same state.
    let (applied, state_hash) = {
        let store = kv.lock();
        (store.applied_index(), store.state_hash())
    };
    ShardReport {
        node_id,
        shard,
        role: status.role.to_string(),
        term: status.term,
        leader: status.leader,
        commit: status.commit,
        applied,
        last_index: status.last_index,
        persisted_index: status.persisted_index,
        state_hash,
        followers: status
            .progress
            .iter()
            .map(|p| (p.id, p.match_index))
            .collect(),
        append_msgs_sent: sent.append_msgs,
        append_entries_sent: sent.append_entries,
    }
}
