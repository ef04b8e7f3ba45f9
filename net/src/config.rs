//! Transport configuration. Cluster-wide values (cluster id, members, key, frame size) must
//! match on every node; the rest is per host.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::TransportError;
use crate::ring::RingConfig;
use crate::wire::FRAME_ALIGN;

/// A cluster member and where to dial it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Node id (unique in the cluster, non-zero).
    pub node_id: u64,
    /// Listen address of that node.
    pub addr: SocketAddr,
}

/// Whether this transport is a cluster node or a client of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A member: listens, accepts members and clients, dials members with a higher id.
    Node,
    /// A client: dials every listed node, never listens, accepts nothing.
    Client,
}

/// Everything a [`crate::Transport`] needs. Sizes are fixed at start-up.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Cluster id; a peer with another one is refused.
    pub cluster_id: u64,
    /// Our node id (client id for clients).
    pub node_id: u64,
    /// Node or client.
    pub role: Role,
    /// Cluster members (may include ourselves; ignored).
    pub peers: Vec<PeerConfig>,
    /// Shared cluster key; when set, both sides of every connection prove it (HMAC-SHA256).
    pub cluster_key: Option<Vec<u8>>,
    /// Largest frame accepted or sent, header and padding included.
    pub frame_bytes_max: usize,
    /// Send queue budget per connection; past it `send` returns `QueueFull`.
    pub send_queue_bytes_max: usize,
    /// Single-shot receive size (also the minimum free space kept in the receive buffer).
    pub recv_chunk_bytes: usize,
    /// A connection not through its handshake by then is closed.
    pub handshake_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_backoff_min: Duration,
    /// Reconnect delay cap (the delay doubles after each failure).
    pub reconnect_backoff_max: Duration,
    /// Whether data frames' CRC32C covers the payload. Turn off when payloads carry their own
    /// checksums (storage records, validated by the engine): frames then carry
    /// `FLAG_PAYLOAD_UNCHECKED` and only the headers are checksummed. Receivers accept both.
    pub payload_checksum: bool,
    /// Maximum simultaneous connections (peers and clients); extra accepts are dropped.
    pub conns_max: u32,
    /// Whether sends to a peer on this host (a loopback address) may go zero-copy too.
    /// Off by default: loopback delivery copies every zero-copy fragment into the
    /// receiver anyway, after pinning its pages, and posts a notification per send, so
    /// there zero copy only costs (see `FdRef::copy_only`). Tests of the zero-copy path
    /// over loopback turn it on.
    pub zero_copy_to_loopback: bool,
    /// Ring driver settings.
    pub ring: RingConfig,
}

impl TransportConfig {
    /// Defaults for everything but identity.
    pub fn new(cluster_id: u64, node_id: u64, role: Role) -> TransportConfig {
        TransportConfig {
            cluster_id,
            node_id,
            role,
            peers: Vec::new(),
            cluster_key: None,
            frame_bytes_max: 1 << 20,
            send_queue_bytes_max: 8 << 20,
            recv_chunk_bytes: 64 * 1024,
            handshake_timeout: Duration::from_secs(2),
            reconnect_backoff_min: Duration::from_millis(10),
            reconnect_backoff_max: Duration::from_secs(1),
            payload_checksum: true,
            conns_max: 256,
            zero_copy_to_loopback: false,
            ring: RingConfig::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), TransportError> {
        let bad = |why| Err(TransportError::Config(why));
        if self.node_id == 0 {
            return bad("node_id must be non-zero");
        }
        if self.frame_bytes_max < 4096
            || self.frame_bytes_max % FRAME_ALIGN != 0
            || self.frame_bytes_max > u32::MAX as usize
        {
            return bad("frame_bytes_max must be a multiple of 8 in [4096, 2^32)");
        }
        if self.send_queue_bytes_max < self.frame_bytes_max {
            return bad("send_queue_bytes_max must be >= frame_bytes_max");
        }
        if self.recv_chunk_bytes < 4096 || self.recv_chunk_bytes % FRAME_ALIGN != 0 {
            return bad("recv_chunk_bytes must be a multiple of 8 and >= 4096");
        }
        if self.reconnect_backoff_min.is_zero()
            || self.reconnect_backoff_max < self.reconnect_backoff_min
        {
            return bad("reconnect backoff must satisfy 0 < min <= max");
        }
        if self.conns_max == 0 || self.conns_max * 2 + 1 > self.ring.inflight_ops_max {
            return bad("conns_max must be > 0 and 2 * conns_max + 1 <= ring.inflight_ops_max");
        }
        let mut ids: Vec<u64> = self.peers.iter().map(|p| p.node_id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) || ids.contains(&0) {
            return bad("peer node ids must be unique and non-zero");
        }
        Ok(())
    }

    /// Receive buffer size per connection: one maximal frame plus one receive chunk.
    pub(crate) fn recv_buf_bytes(&self) -> usize {
        let chunk = self
            .recv_chunk_bytes
            .max(self.ring.provided_buf_bytes as usize);
        crate::wire::pad_to_align(self.frame_bytes_max + chunk)
    }
}
