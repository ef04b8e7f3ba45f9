//! How a shard thread reaches the network.
//!
//! A node has one connection per peer node carrying every shard's frames, owned by the
//! transport of shard 0's thread ([`Port::Net`]). Every other shard thread has its own
//! io_uring for its log and its sleep ([`Port::Relay`]) and exchanges frames with shard 0's
//! thread through two bounded SPSC rings; each side wakes the other through a socket the
//! other polls on its ring. A full ring drops the frame (counted): Raft retransmits, and
//! client replies are the only frames whose loss a client notices (it times out).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use net::wire::{ClientMessage, RaftMessage};
use net::{ConnId, Dest, Event, Idle, Origin, Ring, SendError, Transport};

use crate::spsc::{self, Consumer, Producer};

use super::NodeError;

/// Token of the poll on a port's own wake-up socket.
const RELAY_WAKE_TOKEN: u64 = 1 << 42;
/// Frames in flight between shard 0's thread and another shard, each way.
const RELAY_RING_ENTRIES: usize = 4096;

/// A frame for a relayed shard, copied out of shard 0's receive buffer.
#[derive(Debug)]
pub(crate) enum Inbound {
    Raft {
        conn: ConnId,
        node: u64,
        msg: RaftMessage,
        payload: Vec<u8>,
    },
    Client {
        conn: ConnId,
        from: Origin,
        msg: ClientMessage,
    },
}

/// What a relayed shard asks shard 0's thread to do.
#[derive(Debug)]
pub(crate) enum Outbound {
    Raft {
        to: Dest,
        msg: RaftMessage,
        payload: Vec<u8>,
    },
    Client {
        to: Dest,
        msg: ClientMessage,
    },
    Close(ConnId),
}

/// Shard 0's end of the link to one other shard.
#[derive(Debug)]
pub(crate) struct Hub {
    shard: u32,
    to_shard: Producer<Inbound>,
    from_shard: Consumer<Outbound>,
    wake_shard: UnixStream,
    /// Frames were queued for the shard since its socket was last rung.
    bell: bool,
    dropped: u64,
}

/// The other shard's end.
#[derive(Debug)]
pub(crate) struct Relay {
    ring: Ring,
    inbound: Consumer<Inbound>,
    outbound: Producer<Outbound>,
    wake_hub: UnixStream,
    wake_me: UnixStream,
    armed: bool,
    /// Frames were queued for shard 0 since its socket was last rung.
    bell: bool,
    dropped: u64,
    done: Vec<net::Completion>,
}

/// Creates the link between shard 0's thread and shard `shard`, whose relay uses `ring`;
/// `hub_wake` is the write end of shard 0's wake-up socket.
pub(crate) fn relay_pair(
    shard: u32,
    ring: Ring,
    hub_wake: UnixStream,
) -> std::io::Result<(Hub, Relay)> {
    let (to_shard, inbound) = spsc::channel(RELAY_RING_ENTRIES);
    let (outbound, from_shard) = spsc::channel(RELAY_RING_ENTRIES);
    let (wake_me, wake_shard) = UnixStream::pair()?;
    wake_me.set_nonblocking(true)?;
    wake_shard.set_nonblocking(true)?;
    Ok((
        Hub {
            shard,
            to_shard,
            from_shard,
            wake_shard,
            bell: false,
            dropped: 0,
        },
        Relay {
            ring,
            inbound,
            outbound,
            wake_hub: hub_wake,
            wake_me,
            armed: false,
            bell: false,
            dropped: 0,
            done: Vec::new(),
        },
    ))
}

fn ring_bell(mut sock: &UnixStream) {
    // Non-blocking; a full socket means a wake-up is already pending.
    let _ = sock.write(&[1]);
}

fn drain(mut sock: &UnixStream) {
    let mut buf = [0u8; 256];
    while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
}

/// Shard 0's network: the transport plus the hubs of the other shards.
pub(crate) struct NetPort {
    pub(crate) transport: Transport,
    hubs: Vec<Hub>,
    wake_me: Option<UnixStream>,
    armed: bool,
}

impl std::fmt::Debug for NetPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetPort")
            .field("hubs", &self.hubs.len())
            .finish()
    }
}

/// A shard thread's way to the network.
#[derive(Debug)]
pub(crate) enum Port {
    // Boxed: both hold an io_uring driver, and a port is built once per shard.
    Net(Box<NetPort>),
    Relay(Box<Relay>),
}

impl Port {
    /// Shard 0's port: `hubs` link it to the other shards, `wake_me` is the read end of the
    /// socket they ring.
    pub(crate) fn net(transport: Transport, hubs: Vec<Hub>, wake_me: Option<UnixStream>) -> Port {
        if let Some(sock) = &wake_me {
            let _ = sock.set_nonblocking(true);
        }
        Port::Net(Box::new(NetPort {
            transport,
            hubs,
            wake_me,
            armed: false,
        }))
    }

    pub(crate) fn ring(&mut self) -> &mut Ring {
        match self {
            Port::Net(n) => n.transport.ring(),
            Port::Relay(r) => &mut r.ring,
        }
    }

    /// Frames dropped because a relay ring was full.
    pub(crate) fn relay_drops(&self) -> u64 {
        match self {
            Port::Net(n) => n.hubs.iter().map(|h| h.dropped).sum(),
            Port::Relay(r) => r.dropped,
        }
    }

    /// One turn: idle as asked, then report this shard's events. Shard 0 also forwards
    /// other shards' frames and sends what they queued.
    pub(crate) fn poll(
        &mut self,
        idle: Idle,
        mut on_event: impl FnMut(Event<'_>),
    ) -> Result<usize, NodeError> {
        match self {
            Port::Net(n) => n.poll(idle, &mut on_event),
            Port::Relay(r) => r.poll(idle, &mut on_event),
        }
    }

    /// Lets queued frames leave now (shard 0, which owns the sockets); relayed shards'
    /// frames go when the relay polls.
    pub(crate) fn flush_sends(&mut self) {
        if let Port::Net(n) = self {
            n.transport.flush_sends();
        }
    }

    pub(crate) fn send_raft(
        &mut self,
        to: Dest,
        shard: u32,
        msg: &RaftMessage,
        payload: &[u8],
    ) -> Result<(), SendError> {
        match self {
            Port::Net(n) => n.transport.send(to, shard, msg, payload),
            Port::Relay(r) => r.push(Outbound::Raft {
                to,
                msg: msg.clone(),
                payload: payload.to_vec(),
            }),
        }
    }

    pub(crate) fn send_client(
        &mut self,
        to: Dest,
        shard: u32,
        msg: &ClientMessage,
    ) -> Result<(), SendError> {
        match self {
            Port::Net(n) => n.transport.send(to, shard, msg, &[]),
            Port::Relay(r) => r.push(Outbound::Client {
                to,
                msg: msg.clone(),
            }),
        }
    }

    pub(crate) fn close(&mut self, conn: ConnId) {
        match self {
            Port::Net(n) => n.transport.close(conn),
            Port::Relay(r) => {
                let _ = r.push(Outbound::Close(conn));
            }
        }
    }
}

impl NetPort {
    fn poll(
        &mut self,
        idle: Idle,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, NodeError> {
        self.forward_outbound();
        if let (Some(sock), false) = (&self.wake_me, self.armed) {
            if self
                .transport
                .ring()
                .poll_readable(sock.as_raw_fd(), RELAY_WAKE_TOKEN)
                .is_ok()
            {
                self.armed = true;
            }
        }
        let hubs = &mut self.hubs;
        let wake_me = &self.wake_me;
        let mut woken = false;
        let n = self.transport.poll(idle, |event| match event {
            Event::Foreign {
                token: RELAY_WAKE_TOKEN,
                ..
            } => {
                woken = true;
                if let Some(sock) = wake_me {
                    drain(sock);
                }
            }
            Event::Frame {
                conn,
                from,
                shard,
                message,
                payload,
            } if shard != 0 => forward(hubs, conn, from, shard, message, payload),
            other => on_event(other),
        })?;
        if woken {
            self.armed = false;
        }
        // One wake-up per shard and turn, however many frames it was handed.
        for hub in hubs_with_bell(&mut self.hubs) {
            ring_bell(&hub.wake_shard);
        }
        self.forward_outbound();
        Ok(n)
    }

    /// Sends what the other shards queued.
    fn forward_outbound(&mut self) {
        for hub in &mut self.hubs {
            while let Some(out) = hub.from_shard.pop() {
                let shard = hub.shard;
                let result = match &out {
                    Outbound::Raft { to, msg, payload } => {
                        self.transport.send(*to, shard, msg, payload)
                    }
                    Outbound::Client { to, msg } => self.transport.send(*to, shard, msg, &[]),
                    Outbound::Close(conn) => {
                        self.transport.close(*conn);
                        Ok(())
                    }
                };
                if result.is_err() {
                    hub.dropped += 1;
                }
            }
        }
    }
}

/// Copies a frame of shard `shard` into that shard's inbound ring.
fn forward(
    hubs: &mut [Hub],
    conn: ConnId,
    from: Origin,
    shard: u32,
    message: net::Message<'_>,
    payload: &[u8],
) {
    let Some(hub) = hubs.iter_mut().find(|h| h.shard == shard) else {
        tracing::debug!(shard, "frame for a shard this node does not run");
        return;
    };
    let item = match (message, from) {
        (net::Message::Raft(m), Origin::Peer(node)) => {
            match rkyv::deserialize::<RaftMessage, rkyv::rancor::Error>(m) {
                Ok(msg) => Inbound::Raft {
                    conn,
                    node,
                    msg,
                    payload: payload.to_vec(),
                },
                Err(_) => return,
            }
        }
        (net::Message::Client(m), from) => {
            match rkyv::deserialize::<ClientMessage, rkyv::rancor::Error>(m) {
                Ok(msg) => Inbound::Client { conn, from, msg },
                Err(_) => return,
            }
        }
        _ => return,
    };
    if hub.to_shard.push(item).is_err() {
        hub.dropped += 1;
    }
    hub.bell = true;
}

/// The hubs with frames queued since their last wake-up, their flag cleared.
fn hubs_with_bell(hubs: &mut [Hub]) -> impl Iterator<Item = &mut Hub> {
    hubs.iter_mut()
        .filter_map(|h| std::mem::take(&mut h.bell).then_some(h))
}

impl Relay {
    fn push(&mut self, out: Outbound) -> Result<(), SendError> {
        // Shard 0 is woken once per turn, in `poll`, before this shard may sleep.
        self.bell = true;
        self.outbound.push(out).map_err(|_| {
            self.dropped += 1;
            SendError::QueueFull
        })
    }

    fn poll(
        &mut self,
        idle: Idle,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, NodeError> {
        if std::mem::take(&mut self.bell) {
            ring_bell(&self.wake_hub);
        }
        if !self.armed {
            self.ring
                .poll_readable(self.wake_me.as_raw_fd(), RELAY_WAKE_TOKEN)
                .map_err(|e| NodeError::Transport(e.into()))?;
            self.armed = true;
        }
        let busy = !self.inbound.is_empty();
        match idle {
            Idle::Wait(d) if !busy => self.ring.submit_and_wait(d),
            _ => self.ring.submit(),
        }
        .map_err(|e| NodeError::Transport(e.into()))?;
        let mut done = std::mem::take(&mut self.done);
        let mut n = self.ring.reap(&mut done);
        for c in done.drain(..) {
            match c {
                net::Completion::Foreign {
                    token: RELAY_WAKE_TOKEN,
                    ..
                } => {
                    self.armed = false;
                    drain(&self.wake_me);
                }
                net::Completion::Foreign {
                    token,
                    result,
                    flags,
                } => on_event(Event::Foreign {
                    token,
                    result,
                    flags,
                }),
                other => {
                    tracing::error!(?other, "unexpected completion on a relay shard's ring");
                }
            }
        }
        self.done = done;
        while let Some(item) = self.inbound.pop() {
            n += 1;
            deliver(item, on_event);
        }
        Ok(n)
    }
}

/// Hands a relayed frame to the shard as the same event shard 0 would have seen: the
/// message is archived again (aligned) and read in place.
fn deliver(item: Inbound, on_event: &mut dyn FnMut(Event<'_>)) {
    match item {
        Inbound::Raft {
            conn,
            node,
            msg,
            payload,
        } => {
            let Ok(bytes) = rkyv::to_bytes::<rkyv::rancor::Error>(&msg) else {
                return;
            };
            let Ok(archived) =
                rkyv::access::<net::wire::ArchivedRaftMessage, rkyv::rancor::Error>(&bytes)
            else {
                return;
            };
            on_event(Event::Frame {
                conn,
                from: Origin::Peer(node),
                shard: 0,
                message: net::Message::Raft(archived),
                payload: &payload,
            });
        }
        Inbound::Client { conn, from, msg } => {
            let Ok(bytes) = rkyv::to_bytes::<rkyv::rancor::Error>(&msg) else {
                return;
            };
            let Ok(archived) =
                rkyv::access::<net::wire::ArchivedClientMessage, rkyv::rancor::Error>(&bytes)
            else {
                return;
            };
            on_event(Event::Frame {
                conn,
                from,
                shard: 0,
                message: net::Message::Client(archived),
                payload: &[],
            });
        }
    }
}
