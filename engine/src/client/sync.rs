//! The synchronous client: one request at a time over one plain socket to the leader.

use std::time::{Duration, Instant};

use net::wire::{Body, ClientMessage, ClientStatus};
use net::{BlockingConn, BlockingError, PeerConfig, TransportConfig};

use super::{owned_reply, status_and_hint, ClientError, Reply};

/// Pause before retrying after `NotLeader` without a hint, `Busy`, or a lost connection.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// A client for callers that wait for each answer before sending the next request: it
/// keeps one blocking connection, to the leader, and sleeps in `recv` for the answer. That
/// is the cheapest wait a thread has; [`super::Client`] sleeps in an io_uring, which pays
/// off for many requests in flight but adds its wake-up path to every answer.
///
/// Requests follow leader hints and are retried after `NotLeader`, `Busy` and lost
/// connections, as [`super::Client::submit`] does: a batch whose connection failed after it
/// was sent may be applied twice.
#[derive(Debug)]
pub struct SyncClient {
    cfg: TransportConfig,
    members: Vec<PeerConfig>,
    leader: Option<u64>,
    /// Where to dial next when no leader is known (an index into `members`).
    next_guess: usize,
    conn: Option<BlockingConn>,
    next_request: u64,
    shard: u32,
    retries: u64,
}

impl SyncClient {
    /// A client of the cluster whose members answer clients at `members`; it dials on the
    /// first request. `client_id` must be unique among the cluster's clients.
    pub fn new(
        cluster_id: u64,
        client_id: u64,
        members: &[PeerConfig],
        cluster_key: Option<Vec<u8>>,
        frame_bytes_max: usize,
    ) -> SyncClient {
        assert!(!members.is_empty(), "a cluster has members");
        let mut cfg = TransportConfig::new(cluster_id, client_id, net::Role::Client);
        cfg.cluster_key = cluster_key;
        cfg.frame_bytes_max = frame_bytes_max;
        SyncClient {
            cfg,
            members: members.to_vec(),
            leader: None,
            next_guess: 0,
            conn: None,
            next_request: 1,
            shard: 0,
            retries: 0,
        }
    }

    /// A client of `cluster`, with its id, key and frame limit.
    pub fn for_cluster(cluster: &crate::tuning::ClusterConfig, client_id: u64) -> SyncClient {
        SyncClient::new(
            cluster.cluster_id,
            client_id,
            &super::client_members(cluster),
            cluster.cluster_key(),
            cluster.replication.frame_bytes_max as usize,
        )
    }

    /// Addresses later requests to shard `shard` (its own Raft group, with its own leader).
    pub fn set_shard(&mut self, shard: u32) {
        if shard != self.shard {
            self.shard = shard;
            self.leader = None;
        }
    }

    /// Requests sent again so far (after `NotLeader`, `Busy` or a lost connection).
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// The node believed to lead (the last one that answered `Ok`, or a hint).
    pub fn leader(&self) -> Option<u64> {
        self.leader
    }

    /// Submits a batch and waits until it is committed; follows redirects and retries
    /// `Busy`. Returns the index of the batch's last entry.
    ///
    /// Fails at once for a batch over the frame limit; with [`ClientError::Timeout`] when
    /// a node took the request and did not answer in time (the outcome is unknown); and,
    /// when no node could be reached in time, with the last connection failure (naming the
    /// address and, for a refused handshake, why), or [`ClientError::NoLeader`].
    pub fn submit(
        &mut self,
        payloads: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<u64, ClientError> {
        let msg = ClientMessage::Submit {
            request_id: 0,
            payloads,
        };
        self.call_leader(msg, timeout, |reply| match reply {
            Reply::Reply { index, .. } => Some(index),
            _ => None,
        })
    }

    /// Linearizable read of `key` through the leader's ReadIndex; fails as
    /// [`SyncClient::submit`] does.
    pub fn get(&mut self, key: &[u8], timeout: Duration) -> Result<Option<Vec<u8>>, ClientError> {
        let msg = ClientMessage::Read {
            request_id: 0,
            key: key.to_vec(),
        };
        self.call_leader(msg, timeout, |reply| match reply {
            Reply::ReadReply { value, .. } => Some(value),
            _ => None,
        })
    }

    /// Sends `msg` (its request id renewed on each attempt) to the believed leader until a
    /// reply says `Ok`, which `ok` turns into the result (`None`: a reply of the wrong
    /// kind). Follows `NotLeader` hints, retries `Busy`, moves on from nodes that fail.
    fn call_leader<T>(
        &mut self,
        mut msg: ClientMessage,
        timeout: Duration,
        ok: impl Fn(Reply) -> Option<T>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + timeout;
        // Why the last attempt that reached no node failed: the error reported if time
        // runs out before a node answers (a refused handshake names its reason there).
        let mut failed: Option<ClientError> = None;
        for attempt in 0u64.. {
            if Instant::now() >= deadline {
                return Err(failed.unwrap_or(ClientError::NoLeader(timeout)));
            }
            self.retries += u64::from(attempt > 0);
            let request_id = self.next_request;
            self.next_request += 1;
            if let ClientMessage::Submit { request_id: id, .. }
            | ClientMessage::Read { request_id: id, .. } = &mut msg
            {
                *id = request_id;
            }
            let reply = match self.call(&msg, request_id, deadline) {
                Ok(reply) => reply,
                Err(ClientError::Blocking(BlockingError::Timeout { .. })) => {
                    // The outcome is unknown. The connection goes, with any late answer
                    // on it; the next request starts afresh.
                    self.conn = None;
                    self.leader = None;
                    return Err(ClientError::Timeout(timeout));
                }
                Err(e @ ClientError::Blocking(BlockingError::Encode { .. })) => return Err(e),
                Err(e) => {
                    // The node went away, refused us or misbehaved: try another.
                    tracing::debug!(error = %e, "request failed; retrying");
                    self.conn = None;
                    self.leader = None;
                    failed = Some(e);
                    if let Err(no_time) = self.pause(deadline, timeout) {
                        return Err(failed.unwrap_or(no_time));
                    }
                    continue;
                }
            };
            let Some((status, leader_hint)) = status_and_hint(&reply) else {
                return Err(ClientError::Refused(format!("unexpected reply {reply:?}")));
            };
            let from = self.conn.as_ref().map(BlockingConn::node);
            match status {
                ClientStatus::Ok => {
                    self.leader = from;
                    return ok(reply).ok_or_else(|| {
                        ClientError::Refused("an Ok reply of another kind than the request".into())
                    });
                }
                ClientStatus::Rejected => {
                    return Err(ClientError::Refused("rejected by the state machine".into()))
                }
                ClientStatus::NotLeader => {
                    self.leader = leader_hint.filter(|&h| Some(h) != from);
                    if self.leader.is_none() {
                        self.pause(deadline, timeout)?;
                    }
                }
                ClientStatus::Busy | ClientStatus::Timeout => self.pause(deadline, timeout)?,
            }
        }
        unreachable!("the attempts never run out")
    }

    /// Sends `msg` to the believed leader (dialing it first if needed) and waits for the
    /// reply carrying `request_id`.
    fn call(
        &mut self,
        msg: &ClientMessage,
        request_id: u64,
        deadline: Instant,
    ) -> Result<Reply, ClientError> {
        let shard = self.shard;
        let conn = self.connect(deadline)?;
        conn.send(shard, msg, &[])?;
        loop {
            let reply = conn.recv_until(deadline, |frame| match frame.body {
                Body::Client(m) => owned_reply(m).filter(|r| r.request_id() == request_id),
                // Answers to requests given up on, and anything a node should not send.
                _ => None,
            })?;
            if let Some(reply) = reply {
                return Ok(reply);
            }
        }
    }

    /// The connection to the believed leader, or to the next member in turn when none is
    /// known.
    fn connect(&mut self, deadline: Instant) -> Result<&mut BlockingConn, ClientError> {
        let target = self.leader.unwrap_or_else(|| {
            let node = self.members[self.next_guess % self.members.len()].node_id;
            self.next_guess += 1;
            node
        });
        if self.conn.as_ref().is_some_and(|c| c.node() != target) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let member = self
                .members
                .iter()
                .find(|m| m.node_id == target)
                .ok_or_else(|| {
                    ClientError::Refused(format!("leader hint {target} is not a member"))
                })?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BlockingError::Timeout {
                    addr: member.addr,
                    after: Duration::ZERO,
                }
                .into());
            }
            self.conn = Some(BlockingConn::connect(&self.cfg, target, member.addr, left)?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn pause(&self, deadline: Instant, timeout: Duration) -> Result<(), ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::NoLeader(timeout));
        }
        std::thread::sleep(RETRY_PAUSE.min(left));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses nothing listens on: bound, then released.
    fn dead_members(n: u64) -> Vec<PeerConfig> {
        (1..=n)
            .map(|node_id| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                PeerConfig {
                    node_id,
                    addr: l.local_addr().expect("addr"),
                }
            })
            .collect()
    }

    #[test]
    fn a_cluster_that_is_not_up_fails_the_request_within_its_timeout() {
        let mut c = SyncClient::new(1, 1000, &dead_members(3), None, 1 << 20);
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        // The error names the last address tried and why it failed.
        match c.submit(vec![b"x".to_vec()], timeout) {
            Err(e @ ClientError::Blocking(BlockingError::Io { .. })) => {
                let text = e.to_string();
                assert!(text.starts_with("connect to 127.0.0.1:"), "{text}");
                assert!(text.contains("refused"), "{text}");
            }
            other => panic!("expected a connection error, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // It went round the members, retrying.
        assert!(c.retries() >= 3, "{} retries", c.retries());
        assert_eq!(c.leader(), None);
    }
}
