//! Peer and client connections over the ring driver: dial/accept, handshake, framing, send
//! queues with back-pressure, reconnect with capped exponential backoff.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::buf::RecvBuf;
use crate::config::{Role, TransportConfig};
use crate::counters::{CloseReason, Counters};
use crate::error::{FrameError, RingError, SendError, TransportError};
use crate::handshake::{self, PeerHello};
use crate::ring::{Completion, FdRef, Features, Ring, SendBuf};
use crate::wire::{
    decode_frame, encode_frame, encode_frame_flags, encode_frame_head, payload_padding,
    ArchivedClientMessage, ArchivedRaftMessage, Auth, Body, Frame, FrameKind, WireMessage,
    FLAG_PAYLOAD_UNCHECKED, ROLE_CLIENT, ROLE_NODE,
};

const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const OP_CONNECT: u64 = 3;
const OP_ACCEPT: u64 = 4;
const ACCEPT_TOKEN: u64 = (u32::MAX as u64) << 32 | OP_ACCEPT;
/// Accepts on the optional second (client) listener.
const CLIENT_ACCEPT_TOKEN: u64 = (u32::MAX as u64 - 1) << 32 | OP_ACCEPT;
/// Payloads smaller than this are copied by `send_shared` instead of spliced in.
const SHARED_PAYLOAD_MIN_BYTES: usize = 4096;
/// Spliced payloads per send (each needs an iovec; the kernel allows 1024).
const SHARED_PAYLOADS_PER_SEND_MAX: usize = 256;
/// Handshake deadlines are checked at most this often.
const DEADLINE_SCAN_INTERVAL: Duration = Duration::from_millis(10);

/// Names one connection. Stale ids (connection closed, slot reused) are detected by the
/// generation and treated as not connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    index: u32,
    gen: u32,
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A cluster member (or, on a client transport, the node it dialed).
    Peer(u64),
    /// A client, by the id it announced.
    Client(u64),
}

/// Where to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dest {
    /// The established connection to this node.
    Peer(u64),
    /// This connection (replies to clients).
    Conn(ConnId),
}

/// How [`Transport::poll`] idles when nothing is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Submit and reap without blocking (busy-poll; call in a loop to spin).
    Spin,
    /// Submit, then sleep until a completion arrives or the duration passes (bounded further
    /// by the transport's own timers: reconnects, handshake deadlines).
    Wait(Duration),
}

/// A validated message header of a data frame, read in place from the receive buffer.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    /// Replica to replica.
    Raft(&'a ArchivedRaftMessage),
    /// Client traffic.
    Client(&'a ArchivedClientMessage),
}

/// What [`Transport::poll`] reports. Frame data borrows the receive buffer: copy what must
/// outlive the callback (the AppendEntries payload is meant to be appended straight to the
/// log from here).
#[derive(Debug)]
pub enum Event<'a> {
    /// Handshake with a node completed; it can be sent to.
    PeerUp {
        /// Node id.
        node: u64,
        /// Connection.
        conn: ConnId,
    },
    /// The established connection to a node closed (a dialer reconnects on its own).
    PeerDown {
        /// Node id.
        node: u64,
        /// Connection.
        conn: ConnId,
    },
    /// A client connected (handshake done).
    ClientUp {
        /// Client id it announced.
        client: u64,
        /// Connection to reply on.
        conn: ConnId,
    },
    /// A client connection closed.
    ClientDown {
        /// Client id.
        client: u64,
        /// Connection.
        conn: ConnId,
    },
    /// A data frame arrived.
    Frame {
        /// Connection it came on.
        conn: ConnId,
        /// Sender.
        from: Origin,
        /// Shard id from the frame header.
        shard: u32,
        /// Validated message header.
        message: Message<'a>,
        /// Raw payload (AppendEntries record run), opaque to net.
        payload: &'a [u8],
    },
    /// A connection that refused a send with `QueueFull` drained below half its budget.
    Writable {
        /// Connection.
        conn: ConnId,
    },
    /// A foreign operation pushed with [`Ring::push_foreign`] completed.
    Foreign {
        /// Caller's token.
        token: u64,
        /// CQE result (negative errno on failure).
        result: i32,
        /// CQE flags.
        flags: u32,
    },
}

/// Reports produced where no event callback is at hand (local close, submission failure,
/// timers, a send completed inline by flush); delivered before the next event.
#[derive(Debug, Clone, Copy)]
enum Notice {
    PeerDown { node: u64, conn: ConnId },
    ClientDown { client: u64, conn: ConnId },
    Writable { conn: ConnId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Hello,
    AwaitAuth,
    Established,
    Closing,
}

#[derive(Debug)]
struct Conn {
    gen: u32,
    state: State,
    stream: Option<TcpStream>,
    fd: Option<FdRef>,
    dialed: Option<u64>,
    peer: Option<PeerHello>,
    origin: Option<Origin>,
    nonce: [u8; 32],
    rbuf: Option<RecvBuf>,
    recv_armed: bool,
    pending: SendBuf,
    /// Bytes of the payloads spliced into `pending` (cached `pending.len() - bytes.len()`).
    pending_ext_bytes: usize,
    spare: Option<SendBuf>,
    sending: bool,
    inflight_bytes: usize,
    ops: u32,
    deadline: Option<Instant>,
    blocked: bool,
    dirty: bool,
}

impl Conn {
    fn queued_bytes(&self) -> usize {
        self.pending.bytes.len() + self.pending_ext_bytes + self.inflight_bytes
    }
}

#[derive(Debug)]
struct PeerSlot {
    node: u64,
    addr: SocketAddr,
    dial: bool,
    conn: Option<ConnId>,
    backoff: Duration,
    next_dial: Instant,
}

/// One node's connections, driven by one ring. Single-threaded: the shard thread that owns it
/// calls [`Transport::poll`] in its loop and [`Transport::send`] between polls. All shards'
/// traffic to a node shares one connection; frames carry the shard id.
pub struct Transport {
    // Dropped first: the ring cancels and drains in-flight operations while sockets are open.
    ring: Ring,
    cfg: TransportConfig,
    listener: Option<TcpListener>,
    accept_armed: bool,
    /// A second listening socket for clients (the cluster file's `client_addr`); the
    /// handshake, not the socket, decides what a connection is.
    client_listener: Option<TcpListener>,
    client_accept_armed: bool,
    conns: Vec<Option<Conn>>,
    free_conns: Vec<u32>,
    next_gen: u32,
    peers: Vec<PeerSlot>,
    dirty: Vec<u32>,
    closing: Vec<u32>,
    notices: Vec<Notice>,
    done: Vec<Completion>,
    counters: Counters,
    next_deadline_scan: Instant,
    /// Whether some connection may have a handshake deadline armed (see `run_timers`).
    handshaking: bool,
    next_wake: Option<Instant>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.cfg.node_id)
            .field("ring", &self.ring)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn token(index: u32, gen: u32, op: u64) -> u64 {
    u64::from(index) << 32 | u64::from(gen & 0x00ff_ffff) << 8 | op
}

/// Binds a listener, naming the address when it cannot be had.
fn listen_on(addr: SocketAddr) -> Result<TcpListener, TransportError> {
    TcpListener::bind(addr).map_err(|source| TransportError::Listen { addr, source })
}

fn token_parts(token: u64) -> (u32, u32, u64) {
    (
        (token >> 32) as u32,
        ((token >> 8) & 0x00ff_ffff) as u32,
        token & 0xff,
    )
}

impl Transport {
    /// Binds `listen` (nodes) and starts. Clients pass `None`.
    pub fn bind(
        cfg: TransportConfig,
        listen: Option<SocketAddr>,
    ) -> Result<Transport, TransportError> {
        let listener = listen.map(listen_on).transpose()?;
        Transport::new(cfg, listener)
    }

    /// Binds the peer listener `listen` and a second listener `client_listen` for clients,
    /// both served by the same ring.
    pub fn bind_with_clients(
        cfg: TransportConfig,
        listen: SocketAddr,
        client_listen: SocketAddr,
    ) -> Result<Transport, TransportError> {
        let listener = listen_on(listen)?;
        let client_listener = listen_on(client_listen)?;
        let mut t = Transport::new(cfg, Some(listener))?;
        t.client_listener = Some(client_listener);
        t.run_timers(Instant::now());
        Ok(t)
    }

    /// The client listener's address, when there is one.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Starts with an already bound listener (tests bind port 0 first to learn the address).
    pub fn new(
        cfg: TransportConfig,
        listener: Option<TcpListener>,
    ) -> Result<Transport, TransportError> {
        cfg.validate()?;
        if cfg.role == Role::Client && listener.is_some() {
            return Err(TransportError::Config("clients do not listen"));
        }
        let ring = Ring::new(&cfg.ring)?;
        let now = Instant::now();
        let peers = cfg
            .peers
            .iter()
            .filter(|p| p.node_id != cfg.node_id)
            .map(|p| PeerSlot {
                node: p.node_id,
                addr: p.addr,
                dial: cfg.role == Role::Client || p.node_id > cfg.node_id,
                conn: None,
                backoff: cfg.reconnect_backoff_min,
                next_dial: now,
            })
            .collect();
        let conns_max = cfg.conns_max;
        let mut t = Transport {
            ring,
            listener,
            accept_armed: false,
            client_listener: None,
            client_accept_armed: false,
            conns: (0..conns_max).map(|_| None).collect(),
            free_conns: (0..conns_max).rev().collect(),
            next_gen: 1,
            peers,
            dirty: Vec::with_capacity(conns_max as usize),
            closing: Vec::new(),
            notices: Vec::new(),
            done: Vec::with_capacity(cfg.ring.cq_entries as usize),
            counters: Counters::default(),
            next_deadline_scan: now,
            handshaking: false,
            next_wake: None,
            cfg,
        };
        t.run_timers(now);
        Ok(t)
    }

    /// Listening address, when listening.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Counters (per close reason, traffic, batching).
    pub fn counters(&self) -> Counters {
        let mut counters = self.counters.clone();
        counters.sends_zero_copy = self.ring.zero_copy_sends();
        counters
    }

    /// Ring features in use.
    pub fn features(&self) -> Features {
        self.ring.features()
    }

    /// The ring, to push foreign operations (e.g. the log's fdatasync) whose completions come
    /// back as [`Event::Foreign`].
    pub fn ring(&mut self) -> &mut Ring {
        &mut self.ring
    }

    /// Whether the connection to `node` is established.
    pub fn is_connected(&self, node: u64) -> bool {
        self.resolve(Dest::Peer(node)).is_some()
    }

    /// Bytes queued (not yet acknowledged by the kernel) towards `to`.
    pub fn queued_bytes(&self, to: Dest) -> Option<usize> {
        self.resolve(to).map(|i| {
            self.conns[i as usize]
                .as_ref()
                .expect("resolved")
                .queued_bytes()
        })
    }

    /// Bytes queued towards all connections together.
    pub fn queued_bytes_total(&self) -> usize {
        self.conns.iter().flatten().map(Conn::queued_bytes).sum()
    }

    fn resolve(&self, to: Dest) -> Option<u32> {
        let id = match to {
            Dest::Conn(id) => id,
            Dest::Peer(node) => self.peers.iter().find(|p| p.node == node)?.conn?,
        };
        let conn = self.conns.get(id.index as usize)?.as_ref()?;
        (conn.gen == id.gen && conn.state == State::Established).then_some(id.index)
    }

    /// Queues one frame: `message` as the rkyv header, `payload` (e.g. an AppendEntries
    /// record run, opaque to net) after it. Frames queued between two polls go out in one
    /// send. Fails without queuing anything when not connected or when the connection's
    /// queue is at its byte budget (back-pressure: retry after [`Event::Writable`]).
    pub fn send<M: WireMessage>(
        &mut self,
        to: Dest,
        shard: u32,
        message: &M,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let (idx, queued) = self.send_target::<M>(to)?;
        let (budget, frame_max, flags) = self.send_params();
        let conn = self.conns[idx as usize].as_mut().expect("resolved");
        let before = conn.pending.bytes.len();
        let len = encode_frame_flags(
            &mut conn.pending.bytes,
            shard,
            message,
            payload,
            frame_max,
            flags,
        )?;
        if queued + len > budget {
            conn.pending.bytes.truncate(before);
            return Err(self.queue_full(idx));
        }
        assert!(conn.queued_bytes() <= budget);
        self.counters.frames_out += 1;
        self.mark_dirty(idx);
        Ok(())
    }

    /// Like [`Transport::send`], but the payload is sent from where it lives (vectored send),
    /// never copied: for large AppendEntries record runs. `payload` is kept until the kernel
    /// is done with it and then dropped. Payloads below 4 KiB are copied (cheaper than an
    /// iovec).
    pub fn send_shared<M: WireMessage, P: AsRef<[u8]> + Send + 'static>(
        &mut self,
        to: Dest,
        shard: u32,
        message: &M,
        payload: P,
    ) -> Result<(), SendError> {
        if payload.as_ref().len() < SHARED_PAYLOAD_MIN_BYTES {
            return self.send(to, shard, message, payload.as_ref());
        }
        let (idx, queued) = self.send_target::<M>(to)?;
        let (budget, frame_max, flags) = self.send_params();
        let conn = self.conns[idx as usize].as_mut().expect("resolved");
        if conn.pending.ext.len() >= SHARED_PAYLOADS_PER_SEND_MAX {
            return Err(self.queue_full(idx));
        }
        let before = conn.pending.bytes.len();
        let len = encode_frame_head(
            &mut conn.pending.bytes,
            shard,
            message,
            payload.as_ref(),
            frame_max,
            flags,
        )?;
        if queued + len > budget {
            conn.pending.bytes.truncate(before);
            return Err(self.queue_full(idx));
        }
        let payload_len = payload.as_ref().len();
        let at = conn.pending.bytes.len();
        conn.pending.ext.push((at, Box::new(payload)));
        conn.pending
            .bytes
            .resize(at + payload_padding(payload_len), 0);
        conn.pending_ext_bytes += payload_len;
        assert_eq!(conn.queued_bytes(), queued + len);
        assert!(conn.queued_bytes() <= budget);
        self.counters.frames_out += 1;
        self.mark_dirty(idx);
        Ok(())
    }

    fn send_target<M: WireMessage>(&mut self, to: Dest) -> Result<(u32, usize), SendError> {
        assert!(
            matches!(M::KIND, FrameKind::Raft | FrameKind::Client),
            "handshake frames are sent by the transport itself"
        );
        let idx = self.resolve(to).ok_or(SendError::NotConnected)?;
        let queued = self.conns[idx as usize]
            .as_ref()
            .expect("resolved")
            .queued_bytes();
        if queued >= self.cfg.send_queue_bytes_max {
            return Err(self.queue_full(idx));
        }
        Ok((idx, queued))
    }

    fn send_params(&self) -> (usize, usize, u16) {
        let flags = if self.cfg.payload_checksum {
            0
        } else {
            FLAG_PAYLOAD_UNCHECKED
        };
        (
            self.cfg.send_queue_bytes_max,
            self.cfg.frame_bytes_max,
            flags,
        )
    }

    fn queue_full(&mut self, idx: u32) -> SendError {
        self.conns[idx as usize].as_mut().expect("resolved").blocked = true;
        self.counters.queue_full += 1;
        SendError::QueueFull
    }

    /// Closes a connection (e.g. a misbehaving client). No-op for stale ids. The matching
    /// `PeerDown`/`ClientDown` is reported by the next poll.
    pub fn close(&mut self, conn: ConnId) {
        if let Some(Some(c)) = self.conns.get(conn.index as usize) {
            if c.gen == conn.gen {
                self.close_conn(conn.index, CloseReason::Local);
            }
        }
    }

    /// One turn of the shard loop: run timers (dials, handshake deadlines), submit queued
    /// sends, idle as asked, and report completions through `on_event`. Returns the number
    /// of completions processed. Only ring failures are errors; a connection's failure
    /// closes that connection and is counted.
    pub fn poll(
        &mut self,
        idle: Idle,
        mut on_event: impl FnMut(Event<'_>),
    ) -> Result<usize, TransportError> {
        let now = Instant::now();
        self.run_timers(now);
        self.flush();
        match idle {
            Idle::Spin => {
                self.ring.submit()?;
            }
            Idle::Wait(d) => {
                let d = match self.next_wake {
                    Some(w) => d.min(w.saturating_duration_since(now)),
                    None => d,
                };
                self.ring.submit_and_wait(d)?;
            }
        }
        let mut done = std::mem::take(&mut self.done);
        self.ring.reap(&mut done);
        let n = done.len();
        for c in done.drain(..) {
            self.on_completion(c, &mut on_event);
        }
        self.done = done;
        self.emit_notices(&mut on_event);
        self.finalize_closed();
        Ok(n)
    }

    fn emit_notices(&mut self, on_event: &mut impl FnMut(Event<'_>)) {
        for n in self.notices.drain(..) {
            on_event(match n {
                Notice::PeerDown { node, conn } => Event::PeerDown { node, conn },
                Notice::ClientDown { client, conn } => Event::ClientDown { client, conn },
                Notice::Writable { conn } => Event::Writable { conn },
            });
        }
    }

    fn mark_dirty(&mut self, idx: u32) {
        let conn = self.conns[idx as usize].as_mut().expect("live conn");
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(idx);
        }
    }

    fn run_timers(&mut self, now: Instant) {
        if !self.accept_armed {
            if let Some(l) = &self.listener {
                if self.ring.accept(l.as_raw_fd(), ACCEPT_TOKEN).is_ok() {
                    self.accept_armed = true;
                }
            }
        }
        if !self.client_accept_armed {
            if let Some(l) = &self.client_listener {
                if self.ring.accept(l.as_raw_fd(), CLIENT_ACCEPT_TOKEN).is_ok() {
                    self.client_accept_armed = true;
                }
            }
        }
        let mut wake: Option<Instant> = None;
        for p in 0..self.peers.len() {
            let slot = &self.peers[p];
            if !slot.dial || slot.conn.is_some() {
                continue;
            }
            if now >= slot.next_dial {
                self.dial(p, now);
            }
            let slot = &self.peers[p];
            if slot.conn.is_none() {
                wake = Some(wake.map_or(slot.next_dial, |w| w.min(slot.next_dial)));
            }
        }
        if now >= self.next_deadline_scan {
            self.next_deadline_scan = now + DEADLINE_SCAN_INTERVAL;
            let mut expired: Vec<(u32, State)> = Vec::new();
            let mut pending = false;
            for (i, c) in self.conns.iter().enumerate() {
                let Some(c) = c.as_ref().filter(|c| c.state != State::Closing) else {
                    continue;
                };
                match c.deadline {
                    Some(d) if now >= d => expired.push((i as u32, c.state)),
                    Some(_) => pending = true,
                    None => {}
                }
            }
            for (idx, state) in expired {
                let reason = if state == State::Connecting {
                    CloseReason::ConnectFailed
                } else {
                    CloseReason::HandshakeTimeout
                };
                self.close_conn(idx, reason);
            }
            self.handshaking = pending;
        }
        // Scanning the connection table on every turn would cost a busy-polling loop more
        // than the rest of the turn; `handshaking` is set whenever a deadline is armed and
        // cleared only by the periodic scan, so it may stay set one interval too long.
        if self.handshaking {
            wake = Some(wake.map_or(self.next_deadline_scan, |w| w.min(self.next_deadline_scan)));
        }
        self.next_wake = wake;
    }

    fn backoff(&mut self, p: usize, now: Instant) {
        let max = self.cfg.reconnect_backoff_max;
        let slot = &mut self.peers[p];
        slot.next_dial = now + slot.backoff;
        slot.backoff = (slot.backoff * 2).min(max);
        assert!(slot.backoff <= max);
    }

    fn new_conn(&mut self, dialed: Option<u64>) -> Option<u32> {
        let idx = self.free_conns.pop()?;
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1) & 0x00ff_ffff;
        if self.next_gen == 0 {
            self.next_gen = 1;
        }
        assert!(self.conns[idx as usize].is_none());
        self.conns[idx as usize] = Some(Conn {
            gen,
            state: State::Connecting,
            stream: None,
            fd: None,
            dialed,
            peer: None,
            origin: None,
            nonce: [0; 32],
            rbuf: Some(RecvBuf::with_capacity(self.cfg.recv_buf_bytes())),
            recv_armed: false,
            pending: SendBuf::default(),
            pending_ext_bytes: 0,
            spare: Some(SendBuf::default()),
            sending: false,
            inflight_bytes: 0,
            ops: 0,
            deadline: None,
            blocked: false,
            dirty: false,
        });
        Some(idx)
    }

    fn dial(&mut self, p: usize, now: Instant) {
        let (node, addr) = (self.peers[p].node, self.peers[p].addr);
        let Some(idx) = self.new_conn(Some(node)) else {
            tracing::warn!(node, "connection table full, dial postponed");
            self.backoff(p, now);
            return;
        };
        let gen = self.conns[idx as usize].as_ref().expect("new").gen;
        match self.ring.connect(addr, token(idx, gen, OP_CONNECT)) {
            Ok(()) => {
                let conn = self.conns[idx as usize].as_mut().expect("new");
                conn.ops += 1;
                conn.deadline = Some(now + self.cfg.handshake_timeout);
                self.handshaking = true;
                self.peers[p].conn = Some(ConnId { index: idx, gen });
                tracing::debug!(node, %addr, "dialing");
            }
            Err(e) => {
                tracing::warn!(node, %addr, error = %e, "dial failed");
                self.conns[idx as usize] = None;
                self.free_conns.push(idx);
                self.backoff(p, now);
            }
        }
    }

    /// Socket is connected (dialed or accepted): register it, send our hello, start receiving.
    fn start_handshake(&mut self, idx: u32, stream: TcpStream) {
        let cfg = &self.cfg;
        let conn = self.conns[idx as usize].as_mut().expect("live conn");
        assert!(conn.stream.is_none() && conn.state == State::Connecting);
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "TCP_NODELAY failed");
        }
        let fd = self.ring.register_file(stream.as_raw_fd());
        let local_peer = stream.peer_addr().is_ok_and(|a| a.ip().is_loopback());
        let copy_only = local_peer && !cfg.zero_copy_to_loopback;
        conn.fd = Some(if copy_only { fd.copy_only() } else { fd });
        conn.stream = Some(stream);
        conn.state = State::Hello;
        conn.deadline = Some(Instant::now() + cfg.handshake_timeout);
        self.handshaking = true;
        conn.nonce = match handshake::nonce() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "no entropy for a handshake nonce");
                self.close_conn(idx, CloseReason::Io);
                return;
            }
        };
        let role = match cfg.role {
            Role::Node => ROLE_NODE,
            Role::Client => ROLE_CLIENT,
        };
        let hello = handshake::hello(
            cfg.cluster_id,
            cfg.node_id,
            role,
            cfg.cluster_key.is_some(),
            conn.nonce,
        );
        encode_frame(&mut conn.pending.bytes, 0, &hello, &[], cfg.frame_bytes_max)
            .expect("hello fits any frame size");
        self.mark_dirty(idx);
        self.arm_recv(idx);
    }

    fn arm_recv(&mut self, idx: u32) {
        let recv_chunk = self.cfg.recv_chunk_bytes;
        let conn = self.conns[idx as usize].as_mut().expect("live conn");
        if conn.state == State::Closing || conn.recv_armed {
            return;
        }
        let fd = conn.fd.expect("armed after connect");
        let tok = token(idx, conn.gen, OP_RECV);
        let result = if self.ring.features().recv_multishot {
            self.ring.recv_multi(fd, tok)
        } else {
            let mut buf = conn.rbuf.take().expect("receive buffer at home");
            buf.make_room(recv_chunk);
            self.ring.recv(fd, buf, tok).map_err(|(e, buf)| {
                conn.rbuf = Some(buf);
                e
            })
        };
        match result {
            Ok(()) => {
                conn.recv_armed = true;
                conn.ops += 1;
            }
            Err(RingError::Busy) => {
                // Retried from flush once the ring has room.
                self.mark_dirty(idx);
            }
            Err(e) => {
                tracing::warn!(error = %e, "arming receive failed");
                self.close_conn(idx, CloseReason::Io);
            }
        }
    }

    /// Sends the frames queued so far now rather than at the next [`Transport::poll`]: a
    /// caller with other work before it polls again (waking another thread, say) lets its
    /// messages leave first. Small sends leave inline; the rest are queued on the ring and
    /// submitted by the next poll.
    pub fn flush_sends(&mut self) {
        self.flush();
    }

    /// Submits each dirty connection's queued frames as one send, then re-arms its receive.
    /// The send goes first: a receive armed on an empty socket costs a failed attempt plus a
    /// poll registration, which would otherwise delay a reply in the same submission.
    fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut keep = Vec::new();
        for idx in dirty.drain(..) {
            let Some(conn) = self.conns[idx as usize].as_mut() else {
                continue;
            };
            conn.dirty = false;
            if conn.state == State::Closing || conn.state == State::Connecting {
                continue;
            }
            if !conn.sending && !conn.pending.is_empty() && self.submit_pending(idx) {
                keep.push(idx);
            }
            let Some(conn) = self.conns[idx as usize].as_mut() else {
                continue;
            };
            if !conn.recv_armed {
                self.arm_recv(idx);
            }
        }
        dirty.extend(keep);
        dirty.append(&mut self.dirty);
        self.dirty = dirty;
    }

    /// Sends connection `idx`'s queued bytes: as much as the socket takes at once right here
    /// (small sends; see [`Ring::send_now`]), the rest as one ring send. Returns true when
    /// the ring was full and the connection must stay dirty.
    fn submit_pending(&mut self, idx: u32) -> bool {
        let budget = self.cfg.send_queue_bytes_max;
        let conn = self.conns[idx as usize].as_mut().expect("live conn");
        let fd = conn.fd.expect("connected");
        let now = match self.ring.send_now(fd, &conn.pending, 0) {
            Ok(n) => n,
            Err(e) => {
                tracing::info!(error = %e, origin = ?conn.origin, "send failed");
                self.close_conn(idx, CloseReason::Io);
                return false;
            }
        };
        if now > 0 {
            self.counters.bytes_out += now as u64;
            self.counters.sends += 1;
            if now == conn.pending.len() {
                conn.pending.clear();
                if conn.blocked && conn.queued_bytes() <= budget / 2 {
                    conn.blocked = false;
                    let conn = ConnId {
                        index: idx,
                        gen: conn.gen,
                    };
                    self.notices.push(Notice::Writable { conn });
                }
                return false;
            }
        }
        let spare = conn.spare.take().unwrap_or_default();
        assert!(spare.is_empty());
        let buf = std::mem::replace(&mut conn.pending, spare);
        let len = buf.len();
        let ext_bytes = std::mem::take(&mut conn.pending_ext_bytes);
        assert_eq!(len, buf.bytes.len() + ext_bytes);
        match self.ring.send(fd, buf, now, token(idx, conn.gen, OP_SEND)) {
            Ok(()) => {
                conn.sending = true;
                conn.inflight_bytes = len - now;
                conn.ops += 1;
                self.counters.sends += 1;
                false
            }
            Err((e, mut buf)) => {
                if now > 0 {
                    // Keep what did not go; it is the head of the queue now.
                    buf.bytes.drain(..now);
                }
                let spare = std::mem::replace(&mut conn.pending, buf);
                conn.pending_ext_bytes = ext_bytes;
                conn.spare = Some(spare);
                if matches!(e, RingError::Busy) {
                    conn.dirty = true;
                    true
                } else {
                    tracing::warn!(error = %e, "send submission failed");
                    self.close_conn(idx, CloseReason::Io);
                    false
                }
            }
        }
    }

    fn conn_for(&mut self, tok: u64) -> Option<(u32, &mut Conn)> {
        let (index, gen, _) = token_parts(tok);
        let conn = self.conns.get_mut(index as usize)?.as_mut()?;
        assert_eq!(
            conn.gen & 0x00ff_ffff,
            gen,
            "completion for a recycled connection slot"
        );
        Some((index, conn))
    }

    fn on_completion(&mut self, c: Completion, on_event: &mut impl FnMut(Event<'_>)) {
        match c {
            Completion::Foreign {
                token,
                result,
                flags,
            } => on_event(Event::Foreign {
                token,
                result,
                flags,
            }),
            Completion::Accepted { token, result } => {
                if token == CLIENT_ACCEPT_TOKEN {
                    self.client_accept_armed = false;
                } else {
                    assert_eq!(token, ACCEPT_TOKEN);
                    self.accept_armed = false;
                }
                match result {
                    Ok(stream) => match self.new_conn(None) {
                        Some(idx) => self.start_handshake(idx, stream),
                        None => {
                            tracing::warn!("connection table full, refusing an incoming connection")
                        }
                    },
                    Err(errno) => tracing::warn!(errno, "accept failed"),
                }
                self.run_timers(Instant::now());
            }
            Completion::Connected {
                token,
                result,
                stream,
            } => {
                let (idx, conn) = self
                    .conn_for(token)
                    .expect("connect completion for a live conn");
                conn.ops -= 1;
                if conn.state == State::Closing {
                    return;
                }
                if result < 0 {
                    tracing::debug!(errno = -result, node = ?conn.dialed, "connect failed");
                    self.close_conn(idx, CloseReason::ConnectFailed);
                } else {
                    self.start_handshake(idx, stream);
                }
            }
            Completion::Sent {
                token,
                result,
                buf,
                off,
            } => self.on_sent(token, result, buf, off, on_event),
            Completion::Received { token, result, buf } => {
                let (idx, conn) = self
                    .conn_for(token)
                    .expect("recv completion for a live conn");
                conn.ops -= 1;
                conn.recv_armed = false;
                assert!(conn.rbuf.is_none());
                conn.rbuf = Some(buf);
                self.on_received(idx, result, true, on_event);
            }
            Completion::ReceivedProvided {
                token,
                result,
                more,
                buf,
            } => {
                let (idx, conn) = self
                    .conn_for(token)
                    .expect("multishot completion for a live conn");
                if !more {
                    conn.ops -= 1;
                    conn.recv_armed = false;
                }
                let mut copied = true;
                let closing = conn.state == State::Closing;
                if let Some(b) = buf {
                    if !closing && result > 0 {
                        let rbuf = self.conns[idx as usize]
                            .as_mut()
                            .and_then(|c| c.rbuf.as_mut())
                            .expect("receive buffer at home");
                        copied = rbuf.extend(self.ring.provided(&b));
                    }
                    self.ring.recycle(b);
                }
                if !copied {
                    // Impossible by sizing (buffer = max frame + chunk); refuse rather than grow.
                    self.close_conn(idx, CloseReason::Oversized);
                    return;
                }
                if result == -libc::ENOBUFS {
                    self.mark_dirty(idx);
                    return;
                }
                if result == -libc::EINVAL && self.counters.bytes_in == 0 {
                    self.ring.disable_recv_multishot();
                    self.mark_dirty(idx);
                    return;
                }
                self.on_received(idx, result, !more, on_event);
            }
        }
    }

    fn on_sent(
        &mut self,
        tok: u64,
        result: i32,
        mut buf: SendBuf,
        off: usize,
        on_event: &mut impl FnMut(Event<'_>),
    ) {
        let budget = self.cfg.send_queue_bytes_max;
        let (idx, conn) = self.conn_for(tok).expect("send completion for a live conn");
        conn.ops -= 1;
        conn.sending = false;
        if conn.state == State::Closing {
            return;
        }
        if result <= 0 {
            tracing::info!(errno = -result, origin = ?conn.origin, "send failed");
            self.close_conn(idx, CloseReason::Io);
            return;
        }
        let sent = result as usize;
        self.counters.bytes_out += sent as u64;
        let total = buf.len();
        assert!(off + sent <= total);
        let conn = self.conns[idx as usize].as_mut().expect("live conn");
        if off + sent < total {
            // Short send: the rest goes first, before anything queued since.
            conn.inflight_bytes = total - off - sent;
            let fd = conn.fd.expect("connected");
            match self.ring.send(fd, buf, off + sent, tok) {
                Ok(()) => {
                    conn.sending = true;
                    conn.ops += 1;
                    self.counters.sends += 1;
                }
                Err((e, _)) => {
                    tracing::warn!(error = %e, "send resubmission failed");
                    self.close_conn(idx, CloseReason::Io);
                }
            }
            return;
        }
        buf.clear();
        conn.spare = Some(buf);
        conn.inflight_bytes = 0;
        let wake = conn.blocked && conn.queued_bytes() <= budget / 2;
        let conn_id = ConnId {
            index: idx,
            gen: conn.gen,
        };
        if wake {
            conn.blocked = false;
        }
        if !conn.pending.is_empty() {
            self.mark_dirty(idx);
        }
        if wake {
            on_event(Event::Writable { conn: conn_id });
        }
    }

    fn on_received(
        &mut self,
        idx: u32,
        result: i32,
        rearm: bool,
        on_event: &mut impl FnMut(Event<'_>),
    ) {
        let conn = self.conns[idx as usize].as_mut().expect("live conn");
        if conn.state == State::Closing {
            return;
        }
        if result == 0 {
            let leftover = conn.rbuf.as_ref().is_some_and(|b| !b.is_empty());
            let reason = if leftover {
                CloseReason::Truncated
            } else {
                CloseReason::PeerClosed
            };
            self.close_conn(idx, reason);
            return;
        }
        if result < 0 {
            tracing::debug!(errno = -result, "receive failed");
            self.close_conn(idx, CloseReason::Io);
            return;
        }
        self.counters.bytes_in += result as u64;
        self.process_frames(idx, on_event);
        if rearm {
            // Re-armed by the next flush, after any reply queued by the frames' handler.
            self.mark_dirty(idx);
        }
    }

    fn process_frames(&mut self, idx: u32, on_event: &mut impl FnMut(Event<'_>)) {
        let frame_max = self.cfg.frame_bytes_max;
        let mut rbuf = self.conns[idx as usize]
            .as_mut()
            .expect("live conn")
            .rbuf
            .take()
            .expect("receive buffer at home");
        loop {
            if self.conns[idx as usize].as_ref().expect("live conn").state == State::Closing {
                break;
            }
            match decode_frame(rbuf.data(), frame_max) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    let len = frame.len;
                    self.on_frame(idx, frame, on_event);
                    rbuf.consume(len);
                }
                Err(e) => {
                    self.close_frame_error(idx, e);
                    break;
                }
            }
        }
        let conn = self.conns[idx as usize].as_mut().expect("live conn");
        assert!(rbuf.len() < frame_max || conn.state == State::Closing);
        conn.rbuf = Some(rbuf);
    }

    fn close_frame_error(&mut self, idx: u32, e: FrameError) {
        let origin = self.conns[idx as usize].as_ref().and_then(|c| c.origin);
        tracing::warn!(error = %e, ?origin, "bad frame, closing connection");
        self.close_conn(idx, CloseReason::from(e));
    }

    fn on_frame(&mut self, idx: u32, frame: Frame<'_>, on_event: &mut impl FnMut(Event<'_>)) {
        let conn = self.conns[idx as usize].as_ref().expect("live conn");
        let state = conn.state;
        match (state, frame.body) {
            (State::Hello, Body::Hello(h)) => self.on_hello(idx, PeerHello::from_archived(h)),
            (State::AwaitAuth, Body::Auth(a)) => self.on_auth(idx, &a.mac, on_event),
            (State::Established, Body::Raft(m)) => {
                self.emit_notices(on_event);
                let conn = self.conns[idx as usize].as_ref().expect("live conn");
                self.counters.frames_in += 1;
                let conn_id = ConnId {
                    index: idx,
                    gen: conn.gen,
                };
                let from = conn.origin.expect("established");
                on_event(Event::Frame {
                    conn: conn_id,
                    from,
                    shard: frame.shard,
                    message: Message::Raft(m),
                    payload: frame.payload,
                });
            }
            (State::Established, Body::Client(m)) => {
                self.emit_notices(on_event);
                let conn = self.conns[idx as usize].as_ref().expect("live conn");
                self.counters.frames_in += 1;
                let conn_id = ConnId {
                    index: idx,
                    gen: conn.gen,
                };
                let from = conn.origin.expect("established");
                on_event(Event::Frame {
                    conn: conn_id,
                    from,
                    shard: frame.shard,
                    message: Message::Client(m),
                    payload: frame.payload,
                });
            }
            (state, body) => {
                tracing::warn!(?state, kind = ?body_kind(&body), "frame not allowed in this state, closing connection");
                self.close_conn(idx, CloseReason::ProtocolViolation);
            }
        }
    }

    fn refuse(&mut self, idx: u32, reason: CloseReason, peer: &PeerHello) {
        tracing::warn!(
            ?reason,
            peer_cluster = peer.cluster_id,
            peer_node = peer.node_id,
            peer_role = peer.role,
            "handshake refused"
        );
        self.close_conn(idx, reason);
    }

    fn on_hello(&mut self, idx: u32, peer: PeerHello) {
        let cfg = &self.cfg;
        let conn = self.conns[idx as usize].as_ref().expect("live conn");
        let member =
            peer.node_id != cfg.node_id && self.peers.iter().any(|p| p.node == peer.node_id);
        let identity_ok = match conn.dialed {
            // We dialed a node: the one we meant.
            Some(node) => peer.role == ROLE_NODE && peer.node_id == node,
            // It dialed us: a member node, or a client (only nodes take clients).
            None => {
                cfg.role == Role::Node
                    && match peer.role {
                        ROLE_NODE => member,
                        ROLE_CLIENT => peer.node_id != 0,
                        _ => false,
                    }
            }
        };
        let refusal = handshake::refusal(
            &peer,
            cfg.cluster_id,
            identity_ok,
            cfg.cluster_key.is_some(),
        );
        if let Some(reason) = refusal {
            self.refuse(idx, reason, &peer);
            return;
        }
        let conn = self.conns[idx as usize].as_mut().expect("live conn");
        conn.peer = Some(peer);
        // Always answer with an Auth frame, even without a key (MAC left zero): it tells the
        // peer we accepted its hello, so neither side reports a connection the other refused.
        let mac = match &cfg.cluster_key {
            None => [0u8; 32],
            Some(key) => {
                let role = match cfg.role {
                    Role::Node => ROLE_NODE,
                    Role::Client => ROLE_CLIENT,
                };
                handshake::prove(
                    key,
                    cfg.cluster_id,
                    cfg.node_id,
                    role,
                    &peer.nonce,
                    &conn.nonce,
                )
            }
        };
        encode_frame(
            &mut conn.pending.bytes,
            0,
            &Auth { mac },
            &[],
            cfg.frame_bytes_max,
        )
        .expect("auth fits any frame size");
        conn.state = State::AwaitAuth;
        self.mark_dirty(idx);
    }

    fn on_auth(&mut self, idx: u32, mac: &[u8; 32], on_event: &mut impl FnMut(Event<'_>)) {
        let conn = self.conns[idx as usize].as_ref().expect("live conn");
        let peer = conn.peer.expect("auth after hello");
        let proven = match &self.cfg.cluster_key {
            // Hello already established that neither side has a key.
            None => true,
            Some(key) => handshake::verify(key, self.cfg.cluster_id, &peer, &conn.nonce, mac),
        };
        if proven {
            self.establish(idx, on_event);
        } else {
            self.refuse(idx, CloseReason::AuthFailed, &peer);
        }
    }

    fn establish(&mut self, idx: u32, on_event: &mut impl FnMut(Event<'_>)) {
        let conn = self.conns[idx as usize].as_mut().expect("live conn");
        let peer = conn.peer.expect("established after hello");
        let conn_id = ConnId {
            index: idx,
            gen: conn.gen,
        };
        conn.state = State::Established;
        conn.deadline = None;
        self.counters.established += 1;
        if peer.role == ROLE_CLIENT {
            conn.origin = Some(Origin::Client(peer.node_id));
            self.emit_notices(on_event);
            tracing::debug!(client = peer.node_id, "client connected");
            on_event(Event::ClientUp {
                client: peer.node_id,
                conn: conn_id,
            });
            return;
        }
        conn.origin = Some(Origin::Peer(peer.node_id));
        let p = self
            .peers
            .iter()
            .position(|p| p.node == peer.node_id)
            .expect("membership checked in hello");
        if let Some(old) = self.peers[p].conn {
            if old != conn_id {
                tracing::info!(node = peer.node_id, "new connection replaces the old one");
                self.close_conn(old.index, CloseReason::Replaced);
            }
        }
        let slot = &mut self.peers[p];
        slot.conn = Some(conn_id);
        slot.backoff = self.cfg.reconnect_backoff_min;
        tracing::info!(node = peer.node_id, "peer connected");
        self.emit_notices(on_event);
        on_event(Event::PeerUp {
            node: peer.node_id,
            conn: conn_id,
        });
    }

    fn close_conn(&mut self, idx: u32, reason: CloseReason) {
        let now = Instant::now();
        let conn = self.conns[idx as usize].as_mut().expect("live conn");
        if conn.state == State::Closing {
            return;
        }
        let was = conn.state;
        let conn_id = ConnId {
            index: idx,
            gen: conn.gen,
        };
        conn.state = State::Closing;
        conn.pending = SendBuf::default();
        conn.pending_ext_bytes = 0;
        conn.spare = None;
        conn.deadline = None;
        self.counters.bump_closed(reason);
        if reason.is_bad_input() {
            tracing::warn!(?reason, origin = ?conn.origin, "closing connection");
        } else {
            tracing::debug!(?reason, origin = ?conn.origin, "closing connection");
        }
        if let Some(stream) = &conn.stream {
            // Wakes the in-flight receive (and fails the send) so the ops drain.
            let _ = stream.shutdown(Shutdown::Both);
        }
        let origin = conn.origin;
        let gen = conn.gen;
        let _ = self.ring.cancel(token(idx, gen, OP_RECV));
        let _ = self.ring.cancel(token(idx, gen, OP_CONNECT));
        self.closing.push(idx);
        if let Some(p) = self.peers.iter().position(|p| p.conn == Some(conn_id)) {
            self.peers[p].conn = None;
            if self.peers[p].dial {
                self.backoff(p, now);
            }
        }
        if was == State::Established {
            // Reported before any later event (see `emit_notices`), so a replacement's PeerUp
            // always follows the old connection's PeerDown.
            self.notices.push(match origin {
                Some(Origin::Peer(node)) => Notice::PeerDown {
                    node,
                    conn: conn_id,
                },
                Some(Origin::Client(client)) => Notice::ClientDown {
                    client,
                    conn: conn_id,
                },
                None => unreachable!("established connections have an origin"),
            });
        }
    }

    fn finalize_closed(&mut self) {
        let mut i = 0;
        while i < self.closing.len() {
            let idx = self.closing[i];
            let conn = self.conns[idx as usize]
                .as_ref()
                .expect("closing conn is live");
            assert_eq!(conn.state, State::Closing);
            if conn.ops > 0 {
                i += 1;
                continue;
            }
            self.closing.swap_remove(i);
            let conn = self.conns[idx as usize]
                .take()
                .expect("closing conn is live");
            if let Some(fd) = conn.fd {
                self.ring.unregister_file(fd);
            }
            drop(conn);
            self.free_conns.push(idx);
            assert!(self.free_conns.len() <= self.conns.len());
        }
    }
}

fn body_kind(body: &Body<'_>) -> FrameKind {
    match body {
        Body::Hello(_) => FrameKind::Hello,
        Body::Auth(_) => FrameKind::Auth,
        Body::Raft(_) => FrameKind::Raft,
        Body::Client(_) => FrameKind::Client,
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        for conn in self.conns.iter().flatten() {
            if let Some(stream) = &conn.stream {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

// A shard runtime may build the transport on one thread and move it to its pinned thread.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Transport>();
};
