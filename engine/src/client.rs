//! The client library the tools use: connects to every node over the same io_uring
//! transport the nodes use, follows leader hints, and offers both blocking calls and a
//! pipelined interface (many requests in flight, replies collected by `poll`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use net::wire::{ArchivedClientMessage, ClientMessage, ClientStatus};
use net::{Dest, Event, Idle, Origin, PeerConfig, Transport, TransportConfig};

use crate::node::ShardReport;

mod sync;
pub use sync::SyncClient;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("transport: {0}")]
    Transport(#[from] net::TransportError),
    #[error("no leader answered within {0:?}")]
    NoLeader(Duration),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("node {0} is not connected")]
    NotConnected(u64),
    #[error("request refused: {0}")]
    Refused(String),
    #[error("send: {0}")]
    Send(#[from] net::SendError),
    #[error("{0}")]
    Blocking(#[from] net::BlockingError),
}

/// A reply, owned (deserialized out of the receive buffer): one of the reply kinds of
/// [`ClientMessage`] (`Reply`, `ReadReply`, `StatusReply`, `AdminReply`).
pub type Reply = ClientMessage;

/// A connection to every node of a cluster.
pub struct Client {
    transport: Transport,
    nodes: Vec<u64>,
    leader: Option<u64>,
    next_request: u64,
    shard: u32,
    /// Replies that arrived while waiting for another one.
    stash: BTreeMap<u64, Reply>,
    /// Requests sent and not answered yet: the node each went to.
    pending: BTreeMap<u64, u64>,
    /// Requests whose connection closed before their answer, not yet taken.
    lost: Vec<u64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("nodes", &self.nodes)
            .field("leader", &self.leader)
            .finish()
    }
}

impl Client {
    /// Dials every member. `client_id` must be unique among the cluster's clients.
    pub fn connect(
        cluster_id: u64,
        client_id: u64,
        members: &[PeerConfig],
        cluster_key: Option<Vec<u8>>,
        frame_bytes_max: usize,
    ) -> Result<Client, ClientError> {
        let mut cfg = TransportConfig::new(cluster_id, client_id, net::Role::Client);
        cfg.peers = members.to_vec();
        cfg.cluster_key = cluster_key;
        cfg.frame_bytes_max = frame_bytes_max;
        cfg.send_queue_bytes_max = cfg.send_queue_bytes_max.max(frame_bytes_max * 4);
        let transport = Transport::bind(cfg, None)?;
        Ok(Client {
            transport,
            nodes: members.iter().map(|m| m.node_id).collect(),
            leader: None,
            next_request: 1,
            shard: 0,
            stash: BTreeMap::new(),
            pending: BTreeMap::new(),
            lost: Vec::new(),
        })
    }

    /// Dials every member of `cluster` at its client address, with the cluster's id, key
    /// and frame limit.
    pub fn connect_cluster(
        cluster: &crate::tuning::ClusterConfig,
        client_id: u64,
    ) -> Result<Client, ClientError> {
        Client::connect(
            cluster.cluster_id,
            client_id,
            &client_members(cluster),
            cluster.cluster_key(),
            cluster.replication.frame_bytes_max as usize,
        )
    }

    /// Waits until every node is connected (or `timeout` passes); returns how many are.
    pub fn wait_connected(&mut self, timeout: Duration) -> Result<usize, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let up = self.connected();
            if up == self.nodes.len() || Instant::now() >= deadline {
                return Ok(up);
            }
            self.pump(Duration::from_millis(5))?;
        }
    }

    /// Number of nodes currently connected.
    pub fn connected(&self) -> usize {
        self.nodes
            .iter()
            .filter(|&&n| self.transport.is_connected(n))
            .count()
    }

    /// Whether node `node` is connected now.
    pub fn is_connected(&self, node: u64) -> bool {
        self.transport.is_connected(node)
    }

    /// The node believed to lead (from the last reply's hint).
    pub fn leader(&self) -> Option<u64> {
        self.leader
    }

    /// Addresses later requests to shard `shard` (each shard is its own Raft group with
    /// its own leader; the leader guess is reset).
    pub fn set_shard(&mut self, shard: u32) {
        self.shard = shard;
        self.leader = None;
    }

    /// Sets the leader guess.
    pub fn set_leader(&mut self, node: Option<u64>) {
        self.leader = node;
    }

    fn target(&self) -> u64 {
        self.leader.unwrap_or_else(|| {
            *self
                .nodes
                .iter()
                .find(|&&n| self.transport.is_connected(n))
                .unwrap_or(&self.nodes[0])
        })
    }

    /// Sends request `request_id` to `node` and tracks it until its answer, or until its
    /// connection closes first ([`Client::take_lost`]).
    fn send(&mut self, node: u64, request_id: u64, msg: &ClientMessage) -> Result<(), ClientError> {
        self.transport
            .send(Dest::Peer(node), self.shard, msg, &[])
            .map_err(ClientError::Send)?;
        self.pending.insert(request_id, node);
        Ok(())
    }

    /// Sends a batch of commands to the believed leader without waiting; the reply comes
    /// from [`Client::poll`]. Returns the request id.
    pub fn send_submit(&mut self, payloads: Vec<Vec<u8>>) -> Result<u64, ClientError> {
        let request_id = self.next_request;
        self.next_request += 1;
        let node = self.target();
        self.send(
            node,
            request_id,
            &ClientMessage::Submit {
                request_id,
                payloads,
            },
        )?;
        Ok(request_id)
    }

    /// Sends a linearizable read to the believed leader without waiting.
    pub fn send_read(&mut self, key: Vec<u8>) -> Result<u64, ClientError> {
        let request_id = self.next_request;
        self.next_request += 1;
        let node = self.target();
        self.send(node, request_id, &ClientMessage::Read { request_id, key })?;
        Ok(request_id)
    }

    /// Requests sent with [`Client::send_submit`] or [`Client::send_read`] whose connection
    /// closed before their answer came (seen by [`Client::poll`]): no answer will come.
    /// Their outcome is unknown; a submit sent again may be applied twice. Callers of
    /// `poll` take them after each call (they are kept until taken).
    pub fn take_lost(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.lost)
    }

    /// Runs the transport for up to `wait` and hands every reply that arrived to
    /// `on_reply`. Leader hints update the leader guess.
    pub fn poll(
        &mut self,
        wait: Duration,
        mut on_reply: impl FnMut(Reply),
    ) -> Result<(), ClientError> {
        for (_, reply) in std::mem::take(&mut self.stash) {
            on_reply(reply);
        }
        let mut got = Vec::new();
        let mut down = Vec::new();
        let idle = if wait.is_zero() {
            Idle::Spin
        } else {
            Idle::Wait(wait)
        };
        self.transport.poll(idle, |event| match event {
            Event::Frame {
                from: Origin::Peer(node),
                message: net::Message::Client(m),
                ..
            } => {
                if let Some(reply) = owned_reply(m) {
                    got.push((node, reply));
                }
            }
            Event::PeerDown { node, .. } => down.push(node),
            _ => {}
        })?;
        for (_, reply) in &got {
            self.pending.remove(&reply.request_id());
        }
        for node in down {
            if self.leader == Some(node) {
                self.leader = None;
            }
            // Answers come on the connection the request went out on; it is gone.
            self.pending.retain(|&id, &mut to| {
                if to == node {
                    self.lost.push(id);
                }
                to != node
            });
        }
        for (node, reply) in got {
            self.learn_leader(node, &reply);
            on_reply(reply);
        }
        Ok(())
    }

    fn pump(&mut self, wait: Duration) -> Result<(), ClientError> {
        let mut got = Vec::new();
        self.poll(wait, |r| got.push(r))?;
        for r in got {
            self.stash.insert(r.request_id(), r);
        }
        Ok(())
    }

    fn learn_leader(&mut self, node: u64, reply: &Reply) {
        let Some((status, hint)) = status_and_hint(reply) else {
            return;
        };
        match status {
            ClientStatus::Ok => self.leader = Some(node),
            ClientStatus::NotLeader => self.leader = hint.filter(|&h| h != node),
            _ => {}
        }
    }

    /// The reply to `request_id`; `None` once its connection is gone (no answer can come).
    fn wait_for(
        &mut self,
        request_id: u64,
        deadline: Instant,
    ) -> Result<Option<Reply>, ClientError> {
        loop {
            if let Some(r) = self.stash.remove(&request_id) {
                return Ok(Some(r));
            }
            if let Some(at) = self.lost.iter().position(|&id| id == request_id) {
                self.lost.swap_remove(at);
                return Ok(None);
            }
            let now = Instant::now();
            if now >= deadline {
                // No answer is awaited any more.
                self.pending.remove(&request_id);
                return Err(ClientError::Timeout(Duration::ZERO));
            }
            self.pump((deadline - now).min(Duration::from_millis(5)))?;
        }
    }

    /// Sends a request built by `send` to the believed leader until `done` accepts a
    /// reply (`Some`), following leader hints and backing off on `NotLeader`/`Busy`. A
    /// request whose connection is lost before its answer is sent again, to another node
    /// when one leads (so a batch may be applied twice, as with [`SyncClient`]).
    fn call_leader<T>(
        &mut self,
        timeout: Duration,
        mut send: impl FnMut(&mut Self) -> Result<u64, ClientError>,
        mut done: impl FnMut(Reply) -> Result<Option<T>, ClientError>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() >= deadline {
                return Err(ClientError::NoLeader(timeout));
            }
            let id = match send(self) {
                Ok(id) => id,
                Err(ClientError::Send(_)) => {
                    self.leader = None;
                    self.pump(Duration::from_millis(10))?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let reply = match self.wait_for(id, deadline) {
                Ok(Some(r)) => r,
                // `poll` dropped the leader guess with the connection.
                Ok(None) => {
                    self.pump(Duration::from_millis(10))?;
                    continue;
                }
                Err(ClientError::Timeout(_)) => return Err(ClientError::Timeout(timeout)),
                Err(e) => return Err(e),
            };
            if let Some(value) = done(reply)? {
                return Ok(value);
            }
            // NotLeader or Busy: the hint (if any) is already applied; back off a bit.
            self.rotate_if_unknown();
            self.pump(Duration::from_millis(10))?;
        }
    }

    /// Submits a batch and waits until it is committed (acknowledged by a quorum, durable
    /// there as the tuning says); follows redirects and retries `Busy`.
    /// Returns the index of the batch's last entry.
    pub fn submit(
        &mut self,
        payloads: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<u64, ClientError> {
        self.call_leader(
            timeout,
            |c| c.send_submit(payloads.clone()),
            |reply| match reply {
                Reply::Reply {
                    status: ClientStatus::Ok,
                    index,
                    ..
                } => Ok(Some(index)),
                Reply::Reply {
                    status: ClientStatus::Rejected,
                    ..
                } => Err(ClientError::Refused("rejected by the state machine".into())),
                Reply::Reply { .. } => Ok(None),
                other => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
            },
        )
    }

    /// Linearizable read through the leader's ReadIndex.
    pub fn get(&mut self, key: &[u8], timeout: Duration) -> Result<Option<Vec<u8>>, ClientError> {
        self.call_leader(
            timeout,
            |c| c.send_read(key.to_vec()),
            |reply| match reply {
                Reply::ReadReply {
                    status: ClientStatus::Ok,
                    value,
                    ..
                } => Ok(Some(value)),
                Reply::ReadReply { .. } => Ok(None),
                other => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
            },
        )
    }

    /// When no leader is known, try the next node.
    fn rotate_if_unknown(&mut self) {
        if self.leader.is_none() {
            let current = self.target();
            let pos = self.nodes.iter().position(|&n| n == current).unwrap_or(0);
            self.leader = Some(self.nodes[(pos + 1) % self.nodes.len()]);
        }
    }

    /// Asks one node for its shard's status.
    pub fn status(&mut self, node: u64, timeout: Duration) -> Result<ShardReport, ClientError> {
        let deadline = Instant::now() + timeout;
        let request_id = self.next_request;
        self.next_request += 1;
        while !self.transport.is_connected(node) {
            if Instant::now() >= deadline {
                return Err(ClientError::NotConnected(node));
            }
            self.pump(Duration::from_millis(5))?;
        }
        self.send(node, request_id, &ClientMessage::Status { request_id })?;
        match self.wait_for(request_id, deadline) {
            Ok(Some(Reply::StatusReply { status, .. })) => Ok(status),
            Ok(Some(other)) => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
            Ok(None) => Err(ClientError::NotConnected(node)),
            Err(ClientError::Timeout(_)) => Err(ClientError::Timeout(timeout)),
            Err(e) => Err(e),
        }
    }

    /// Asks `via` (the leader) to hand leadership to `to`.
    pub fn transfer_leader(
        &mut self,
        via: u64,
        to: u64,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        let request_id = self.next_request;
        self.next_request += 1;
        self.send(
            via,
            request_id,
            &ClientMessage::TransferLeader { request_id, to },
        )?;
        match self.wait_for(request_id, deadline) {
            Ok(Some(Reply::AdminReply {
                status: ClientStatus::Ok,
                ..
            })) => Ok(()),
            Ok(Some(Reply::AdminReply {
                status,
                detail,
                leader_hint,
                ..
            })) => Err(ClientError::Refused(format!(
                "{status:?} (leader hint {leader_hint:?}) {detail}"
            ))),
            Ok(Some(other)) => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
            Ok(None) => Err(ClientError::NotConnected(via)),
            Err(ClientError::Timeout(_)) => Err(ClientError::Timeout(timeout)),
            Err(e) => Err(e),
        }
    }
}

/// The members of `cluster` as a client dials them (their client addresses).
pub fn client_members(cluster: &crate::tuning::ClusterConfig) -> Vec<PeerConfig> {
    cluster
        .members
        .iter()
        .map(|m| PeerConfig {
            node_id: m.node_id,
            addr: m.client_addr,
        })
        .collect()
}

/// The status and leader hint a reply carries; `None` for a status reply (any node
/// answers those, leader or not).
fn status_and_hint(reply: &Reply) -> Option<(ClientStatus, Option<u64>)> {
    match reply {
        Reply::Reply {
            status,
            leader_hint,
            ..
        }
        | Reply::ReadReply {
            status,
            leader_hint,
            ..
        }
        | Reply::AdminReply {
            status,
            leader_hint,
            ..
        } => Some((*status, *leader_hint)),
        _ => None,
    }
}

/// The owned form of a reply frame; `None` for request kinds, which a node never sends
/// to a client.
fn owned_reply(m: &ArchivedClientMessage) -> Option<Reply> {
    let reply = rkyv::deserialize::<ClientMessage, rkyv::rancor::Error>(m)
        .expect("frames are validated before they are handed over");
    matches!(
        reply,
        ClientMessage::Reply { .. }
            | ClientMessage::ReadReply { .. }
            | ClientMessage::StatusReply { .. }
            | ClientMessage::AdminReply { .. }
    )
    .then_some(reply)
}
