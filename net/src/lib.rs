//! `net`: the io_uring ring driver, peer and client connections, and the wire format.
//!
//! # Layers
//!
//! - [`ring`]: [`Ring`], one io_uring per shard thread. Operations carry a caller token in
//!   their slot; buffers are owned by the driver until their completion; in-flight operations
//!   are bounded; SQPOLL, registered files, provided-buffer rings (multishot receive) and
//!   SEND_ZC are probed at start and fall back with one log line each. Foreign operations
//!   (the log's writes and fdatasync) share the ring through [`Ring::push_foreign`] and come
//!   back as [`Event::Foreign`] with their token. The only module with `unsafe`.
//! - [`wire`]: a frame is a 24-byte frame header (magic, version, kind, flags, shard id,
//!   header length, payload length, CRC32C) + an rkyv-archived message header read in place
//!   after bytecheck validation + an optional raw payload. AppendEntries records are that
//!   payload: opaque bytes in the storage record format, which net never parses (net does not
//!   depend on `storage` or `engine`; the engine validates records).
//! - [`Transport`]: one TCP connection (TCP_NODELAY) per peer node carrying every shard's
//!   frames; the lower node id dials, the higher accepts; reconnect with capped exponential
//!   backoff; a newer connection from a node replaces the older one. Handshake: both sides
//!   send `Hello` (cluster id, node id, role, protocol version, nonce) and answer an accepted
//!   hello with `Auth`; a side reports [`Event::PeerUp`] only after the peer's `Auth`, i.e.
//!   after the peer accepted it too. With a cluster key, `Auth` carries an HMAC-SHA256 over
//!   the sender's identity and both nonces (challenge-response both ways). Wrong cluster,
//!   non-member, wrong version, missing or wrong key: refused, logged, counted.
//! - Sending: [`Transport::send`] encodes the frame straight into the connection's queue;
//!   everything queued between two polls leaves in one send SQE. [`Transport::send_shared`]
//!   takes an owned payload (`Arc<[u8]>`, a log-segment handle...) and splices it into the
//!   queue without copying; the batch then leaves as one sendmsg whose iovecs point into it. The queue has a byte budget
//!   ([`TransportConfig::send_queue_bytes_max`]); past it `send` returns
//!   [`SendError::QueueFull`] and an [`Event::Writable`] follows when it drained below half.
//!   Per connection memory is bounded by about `2 x (budget + frame_bytes_max)` of send
//!   buffers plus one receive buffer of `frame_bytes_max + recv_chunk_bytes`, all sized at
//!   connect time.
//! - Receiving: frames are decoded in place from the connection's 16-byte aligned receive
//!   buffer; [`Event::Frame`] borrows the validated archived header and the payload from it.
//!   Bad input (truncated, oversized, wrong version, bad checksum, malformed archive, random
//!   bytes, frames out of handshake order) closes that connection only, with a `warn!` and a
//!   per-reason counter ([`Counters::closed`] by [`CloseReason`]); the process never panics on
//!   input and other connections keep working.
//! - Payload checksums: by default the frame CRC32C covers the payload too. AppendEntries
//!   records already carry their own checksums (computed once when written, validated by the
//!   engine before appending), so a runtime may set
//!   [`TransportConfig::payload_checksum`] to `false`: frames then carry
//!   [`wire::FLAG_PAYLOAD_UNCHECKED`] and only headers are checksummed. Receivers accept both.
//! - Idle strategies: [`Idle::Spin`] submits and reaps without blocking; [`Idle::Wait`] sleeps
//!   in `io_uring_enter` until a completion or the timeout. Spin, spin-then-wait and wait are
//!   built from these by the shard loop.
//!
//! # Driving it from a shard loop
//!
//! ```no_run
//! use std::time::Duration;
//! use net::{Dest, Event, Idle, Message, PeerConfig, Role, Transport, TransportConfig};
//! use net::wire::{RaftBody, RaftMessage};
//!
//! let mut cfg = TransportConfig::new(/* cluster */ 7, /* node */ 1, Role::Node);
//! cfg.peers.push(PeerConfig { node_id: 2, addr: "127.0.0.1:7002".parse().unwrap() });
//! let mut t = Transport::bind(cfg, Some("127.0.0.1:7001".parse().unwrap())).unwrap();
//! let mut outbox: Vec<(u64, RaftMessage)> = Vec::new();
//! loop {
//!     // Spin while busy; sleep in the ring when idle (the tuning file picks the strategy).
//!     t.poll(Idle::Wait(Duration::from_millis(1)), |event| match event {
//!         Event::Frame { from, shard, message: Message::Raft(m), payload, .. } => {
//!             // `m` is the archived header, validated and read in place; `payload` is the
//!             // record run of an AppendEntries, still in the receive buffer.
//!             let _ = (from, shard, m.term.to_native(), payload.len());
//!         }
//!         Event::PeerUp { node, .. } => outbox.push((node, RaftMessage {
//!             from: 1, to: node, term: 1, body: RaftBody::Heartbeat { commit: 0, read_seq: 0 },
//!         })),
//!         _ => {}
//!     }).unwrap();
//!     // Sends happen between polls; frames queued here leave together at the next poll.
//!     for (node, msg) in outbox.drain(..) {
//!         match t.send(Dest::Peer(node), /* shard */ 0, &msg, &[]) {
//!             Ok(()) => {}
//!             Err(net::SendError::QueueFull) => { /* back-pressure: wait for Event::Writable */ }
//!             Err(e) => eprintln!("{e}"),
//!         }
//!     }
//! }
//! ```
//!
//! A transport is single-threaded and owns the node's peer connections; a runtime with
//! several shard threads runs the transport on one of them (or one transport per shard
//! thread towards distinct listeners) and routes frames by their shard id.

#![deny(unsafe_code)]

mod blocking;
mod buf;
mod config;
mod counters;
mod error;
mod handshake;
#[allow(unsafe_code)]
pub mod ring;
mod transport;
pub mod wire;

pub use blocking::{BlockingConn, BlockingError};
pub use buf::RecvBuf;
pub use config::{PeerConfig, Role, TransportConfig};
pub use counters::{CloseReason, Counters};
pub use error::{FrameError, RingError, SendError, TransportError};
pub use handshake::PROTOCOL_VERSION;
pub use ring::{
    Completion, FdRef, Features, ProvidedBuf, Ring, RingConfig, SendBuf, SharedPayload,
};
pub use transport::{ConnId, Dest, Event, Idle, Message, Origin, Transport};
