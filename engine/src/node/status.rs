//! What a shard reports about itself: to `raftctl status`, to raftbench's convergence
//! check, and when it stops. The report is the wire's [`ShardStatus`], so the same value
//! travels in a status reply and prints as the JSON line a stopping node writes.

use net::wire::FollowerStatus;
pub use net::wire::ShardStatus as ShardReport;

use super::machine::SharedKv;
use crate::applier::StateMachine;
use crate::raft::Replica;

/// Counters a shard keeps about its own work.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ShardCounters {
    pub append_msgs: u64,
    pub append_entries: u64,
    /// Submits held by the apply-lag rule.
    pub writes_held: u64,
}

pub(crate) fn shard_status(
    node_id: u64,
    shard: u32,
    replica: &Replica,
    kv: &SharedKv,
    counters: ShardCounters,
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
        // A rejoining follower says so: it does not vote yet.
        role: if status.rejoining {
            "rejoining".to_string()
        } else {
            status.role.to_string()
        },
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
            .map(|p| FollowerStatus {
                node_id: p.id,
                match_index: p.match_index,
            })
            .collect(),
        append_msgs_sent: counters.append_msgs,
        append_entries_sent: counters.append_entries,
        writes_held: counters.writes_held,
        rejoin_awaiting: status.rejoin_awaiting,
    }
}

#[cfg(test)]
mod tests {
    use crate::raft::Role;

    /// `ShardStatus::is_leader` (in `net`) recognizes the role by the name the core
    /// gives it.
    #[test]
    fn the_leader_role_is_named_as_the_wire_expects() {
        assert_eq!(Role::Leader.to_string(), "leader");
        assert_ne!(Role::Follower.to_string(), "leader");
    }
}
