//! A leader's view of one follower: what it has, what is in flight to it, and whether
//! the leader may send more.

use std::collections::VecDeque;

use super::types::{Index, ProgressStatus, ReplicaId};

/// Probe sends one AppendEntries and waits for its answer (or the next heartbeat) to find
/// where the logs match; Replicate pipelines up to the inflight window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    Probe,
    Replicate,
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) id: ReplicaId,
    /// Highest index known to match the leader's log and be durable on the follower.
    pub(crate) match_index: Index,
    /// Next index to send.
    pub(crate) next_index: Index,
    pub(crate) state: ProgressState,
    /// In Probe: a message is outstanding, wait for its answer or the next heartbeat.
    pub(crate) probe_sent: bool,
    /// Last index and payload bytes of each AppendEntries in flight (Replicate only).
    inflight: VecDeque<(Index, u64)>,
    inflight_bytes: u64,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// Highest ReadIndex round this follower has answered in the current term.
    pub(crate) read_seq_acked: u64,
}

impl Progress {
    pub(crate) fn new(id: ReplicaId, last_index: Index) -> Self {
        Progress {
            id,
            match_index: 0,
            next_index: last_index + 1,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: true,
            read_seq_acked: 0,
        }
    }

    /// Whether the window allows one more AppendEntries.
    pub(crate) fn can_send(&self, msgs_max: u32, bytes_max: u64) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => {
                self.inflight.len() < msgs_max as usize && self.inflight_bytes < bytes_max
            }
        }
    }

    /// Records an AppendEntries covering up to `last` with `bytes` of payload.
    pub(crate) fn sent(&mut self, last: Index, bytes: u64) {
        match self.state {
            ProgressState::Probe => {
                assert!(!self.probe_sent, "probe already outstanding");
                self.probe_sent = true;
            }
            ProgressState::Replicate => {
                assert!(last >= self.next_index, "replicate sends only entries");
                self.next_index = last + 1;
                self.inflight.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
        }
    }

    /// The follower acknowledged `index`; returns whether `match_index` advanced.
    pub(crate) fn acked(&mut self, index: Index) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
        }
        self.next_index = self.next_index.max(index + 1);
        while self
            .inflight
            .front()
            .is_some_and(|&(last, _)| last <= index)
        {
            let (_, bytes) = self.inflight.pop_front().expect("front exists");
            self.inflight_bytes -= bytes;
        }
        if self.state == ProgressState::Probe {
            self.become_replicate();
        }
        advanced
    }

    pub(crate) fn become_probe(&mut self, next_index: Index) {
        assert!(
            next_index > self.match_index,
            "probe must start past the match"
        );
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.next_index = next_index;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.probe_sent = false;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    pub(crate) fn status(&self) -> ProgressStatus {
        ProgressStatus {
            id: self.id,
            match_index: self.match_index,
            next_index: self.next_index,
            replicating: self.state == ProgressState::Replicate,
            inflight_msgs: self.inflight.len() as u32,
            inflight_bytes: self.inflight_bytes,
            recently_active: self.recent_active,
        }
    }

    pub(crate) fn check(&self, last_index: Index) {
        assert!(
            self.match_index < self.next_index,
            "replica {}: match {} not below next {}",
            self.id,
            self.match_index,
            self.next_index
        );
        assert!(
            self.next_index <= last_index + 1,
            "replica {}: next {} beyond last {}",
            self.id,
            self.next_index,
            last_index
        );
        assert_eq!(
            self.inflight_bytes,
            self.inflight.iter().map(|&(_, b)| b).sum::<u64>(),
            "replica {}: inflight bytes out of sync",
            self.id
        );
        if self.state == ProgressState::Probe {
            assert!(self.inflight.is_empty(), "probe has no pipeline");
        }
    }
}
