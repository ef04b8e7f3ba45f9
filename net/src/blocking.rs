//! A blocking connection to one node: a plain socket with the transport's handshake and
//! frames, for a caller that sends one request and waits for its answer (a synchronous
//! client). Its wait is a blocked `recv`, the cheapest sleep a thread has: a ring's wait
//! adds the ring's wake-up and completion work to every answer, which a caller with a
//! single outstanding request gains nothing from.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::error::FrameError;
use crate::handshake::{self, PeerHello, PROTOCOL_VERSION};
use crate::wire::{
    decode_frame, encode_frame, Auth, Body, Frame, WireMessage, ROLE_CLIENT, ROLE_NODE,
};
use crate::{CloseReason, RecvBuf, Role, TransportConfig};

const CLOSED_IN_HANDSHAKE: &str = "the node closed the connection (it refused our hello)";

/// Why a blocking connection failed. Each names the node's address.
#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    /// A socket call failed.
    #[error("{op} {addr}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The node's address.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// The node sent bytes that are not a valid frame.
    #[error("bad frame from {addr}: {source}")]
    Frame {
        /// The node's address.
        addr: SocketAddr,
        /// What was wrong with it.
        source: FrameError,
    },
    /// The handshake failed on our side (the node is not the one expected, or not of this
    /// cluster) or on the node's (it closed the connection instead of answering).
    #[error("handshake with {addr} failed: {reason}")]
    Handshake {
        /// The node's address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The node closed the connection.
    #[error("{addr} closed the connection")]
    Closed {
        /// The node's address.
        addr: SocketAddr,
    },
    /// Nothing complete arrived in time.
    #[error("no frame from {addr} within {after:?}")]
    Timeout {
        /// The node's address.
        addr: SocketAddr,
        /// How long we waited.
        after: Duration,
    },
    /// A frame that cannot be encoded (too large for the frame limit).
    #[error("frame for {addr} rejected: {source}")]
    Encode {
        /// The node's address.
        addr: SocketAddr,
        /// Why.
        source: FrameError,
    },
}

/// See the module docs. Only the client role dials this way.
pub struct BlockingConn {
    stream: TcpStream,
    addr: SocketAddr,
    node: u64,
    rbuf: RecvBuf,
    out: Vec<u8>,
    frame_bytes_max: usize,
    read_timeout: Option<Duration>,
}

impl std::fmt::Debug for BlockingConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingConn")
            .field("node", &self.node)
            .field("addr", &self.addr)
            .field("buffered", &self.rbuf.len())
            .finish()
    }
}

impl BlockingConn {
    /// Dials node `node` at `addr` and completes the handshake (hello, then auth with the
    /// cluster key when `cfg` has one), all within `timeout`. `cfg` gives our identity
    /// (its role must be [`Role::Client`]), the cluster id and key, and the frame limit.
    pub fn connect(
        cfg: &TransportConfig,
        node: u64,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<BlockingConn, BlockingError> {
        assert_eq!(
            cfg.role,
            Role::Client,
            "nodes talk to each other over the ring"
        );
        let io = |op| move |source| BlockingError::Io { op, addr, source };
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(io("connect to"))?;
        stream.set_nodelay(true).map_err(io("set TCP_NODELAY on"))?;
        // Frames are whole multiples of the alignment; room for the largest frame plus a
        // read's worth of the next.
        let capacity = (cfg.frame_bytes_max + cfg.recv_chunk_bytes).next_multiple_of(8);
        let mut conn = BlockingConn {
            stream,
            addr,
            node,
            rbuf: RecvBuf::with_capacity(capacity),
            out: Vec::new(),
            frame_bytes_max: cfg.frame_bytes_max,
            read_timeout: None,
        };
        let deadline = Instant::now() + timeout;
        let nonce = handshake::nonce().map_err(io("draw a nonce for"))?;
        let auth = cfg.cluster_key.is_some();
        conn.send(
            0,
            &handshake::hello(cfg.cluster_id, cfg.node_id, ROLE_CLIENT, auth, nonce),
            &[],
        )?;
        let refused = |reason: String| BlockingError::Handshake { addr, reason };
        // A node that refuses a hello closes the connection, which may reach us as a reset
        // (our unread bytes were still in its socket).
        let closed_early = |e: BlockingError| match e {
            BlockingError::Closed { .. } => refused(CLOSED_IN_HANDSHAKE.into()),
            BlockingError::Io { ref source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) =>
            {
                refused(CLOSED_IN_HANDSHAKE.into())
            }
            e => e,
        };
        let peer = conn
            .recv_until(deadline, |frame| match frame.body {
                Body::Hello(h) => Some(PeerHello::from_archived(h)),
                _ => None,
            })
            .map_err(closed_early)?
            .ok_or_else(|| refused("the node's first frame is not a hello".into()))?;
        let identity_ok = peer.role == ROLE_NODE && peer.node_id == node;
        if let Some(why) = handshake::refusal(&peer, cfg.cluster_id, identity_ok, auth) {
            // The transport's rule; the reason spelled out with what the node said.
            let reason = match why {
                CloseReason::WrongCluster => format!(
                    "it belongs to cluster {}, not {}",
                    peer.cluster_id, cfg.cluster_id
                ),
                CloseReason::VersionMismatch => format!(
                    "it speaks protocol {}, we speak {PROTOCOL_VERSION}",
                    peer.protocol_version
                ),
                CloseReason::NotMember if peer.role == ROLE_NODE => {
                    format!("it is node {}, not node {node}", peer.node_id)
                }
                CloseReason::NotMember => {
                    format!("it is a client with id {}, not node {node}", peer.node_id)
                }
                CloseReason::AuthMissing if auth => "it has no cluster key and we have one".into(),
                CloseReason::AuthMissing => "it requires a cluster key and we have none".into(),
                other => format!("{other:?}"),
            };
            return Err(refused(reason));
        }
        let mac = match &cfg.cluster_key {
            None => [0u8; 32],
            Some(key) => handshake::prove(
                key,
                cfg.cluster_id,
                cfg.node_id,
                ROLE_CLIENT,
                &peer.nonce,
                &nonce,
            ),
        };
        conn.send(0, &Auth { mac }, &[]).map_err(closed_early)?;
        let mac = conn
            .recv_until(deadline, |frame| match frame.body {
                Body::Auth(a) => Some(a.mac),
                _ => None,
            })
            .map_err(closed_early)?
            .ok_or_else(|| refused("the node answered our hello with no auth frame".into()))?;
        if let Some(key) = &cfg.cluster_key {
            if !handshake::verify(key, cfg.cluster_id, &peer, &nonce, &mac) {
                return Err(refused("its proof of the cluster key is wrong".into()));
            }
        }
        Ok(conn)
    }

    /// The node this connection reaches.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one frame, blocking until the socket took all of it.
    pub fn send<M: WireMessage>(
        &mut self,
        shard: u32,
        msg: &M,
        payload: &[u8],
    ) -> Result<(), BlockingError> {
        let addr = self.addr;
        self.out.clear();
        encode_frame(&mut self.out, shard, msg, payload, self.frame_bytes_max)
            .map_err(|source| BlockingError::Encode { addr, source })?;
        self.stream
            .write_all(&self.out)
            .map_err(|source| BlockingError::Io {
                op: "send to",
                addr,
                source,
            })
    }

    /// Blocks until the next whole frame arrived (or `deadline` passes) and hands it to
    /// `f`. A frame that fails validation is an error: the stream cannot be trusted past it.
    pub fn recv_until<R>(
        &mut self,
        deadline: Instant,
        f: impl FnOnce(Frame<'_>) -> R,
    ) -> Result<R, BlockingError> {
        let addr = self.addr;
        let started = Instant::now();
        loop {
            match decode_frame(self.rbuf.data(), self.frame_bytes_max) {
                Ok(Some(frame)) => {
                    let len = frame.len;
                    let r = f(frame);
                    self.rbuf.consume(len);
                    return Ok(r);
                }
                Ok(None) => {}
                Err(source) => return Err(BlockingError::Frame { addr, source }),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BlockingError::Timeout {
                    addr,
                    after: started.elapsed(),
                });
            }
            // Setting the timeout is a system call, so the last one is kept while it neither
            // overshoots the deadline by more than a millisecond nor wakes us before half
            // of the time left (callers mostly reuse one timeout).
            let want = Some(left.max(Duration::from_millis(1)));
            if self
                .read_timeout
                .is_none_or(|t| t > left + Duration::from_millis(1) || t < left / 2)
            {
                self.stream
                    .set_read_timeout(want)
                    .map_err(|source| BlockingError::Io {
                        op: "set a read timeout on",
                        addr,
                        source,
                    })?;
                self.read_timeout = want;
            }
            self.rbuf.make_room(self.rbuf.capacity() / 2);
            match self.stream.read(self.rbuf.spare_mut()) {
                Ok(0) => return Err(BlockingError::Closed { addr }),
                Ok(n) => self.rbuf.commit(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Err(BlockingError::Timeout {
                            addr,
                            after: started.elapsed(),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(BlockingError::Io {
                        op: "receive from",
                        addr,
                        source,
                    })
                }
            }
        }
    }
}
