//! Shared loopback test harness: transports on 127.0.0.1 with ephemeral ports, pumped from
//! the test thread with time bounds.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use net::wire::{ArchivedRaftBody, RaftBody, RaftMessage};
use net::{Event, Idle, Message, Origin, PeerConfig, Role, Transport, TransportConfig};

/// Events copied out of the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Up(u64),
    Down(u64),
    ClientUp(u64),
    ClientDown(u64),
    Writable,
    Raft {
        from: Origin,
        shard: u32,
        seq: u64,
        payload: Vec<u8>,
    },
    Client {
        from: Origin,
        conn: net::ConnId,
        request_id: u64,
    },
    Foreign {
        token: u64,
        result: i32,
    },
}

pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind ephemeral port")
}

pub fn config(cluster: u64, node: u64, peers: &[(u64, SocketAddr)]) -> TransportConfig {
    let mut cfg = TransportConfig::new(cluster, node, Role::Node);
    cfg.peers = peers
        .iter()
        .map(|&(node_id, addr)| PeerConfig { node_id, addr })
        .collect();
    cfg.reconnect_backoff_min = Duration::from_millis(5);
    cfg.reconnect_backoff_max = Duration::from_millis(50);
    cfg.handshake_timeout = Duration::from_millis(500);
    cfg.frame_bytes_max = 256 * 1024;
    cfg.send_queue_bytes_max = 512 * 1024;
    cfg.ring.provided_buf_count = 64;
    cfg.ring.provided_buf_bytes = 16 * 1024;
    cfg.ring.registered_files = 64;
    cfg.ring.cq_entries = 2048;
    cfg.conns_max = 64;
    cfg
}

/// Two nodes (1 dials 2) with pre-bound listeners.
pub fn pair_configs(
    cluster_a: u64,
    cluster_b: u64,
) -> (TransportConfig, TcpListener, TransportConfig, TcpListener) {
    let la = listener();
    let lb = listener();
    let peers = [(1, la.local_addr().unwrap()), (2, lb.local_addr().unwrap())];
    (
        config(cluster_a, 1, &peers),
        la,
        config(cluster_b, 2, &peers),
        lb,
    )
}

pub fn seq_msg(from: u64, to: u64, seq: u64) -> RaftMessage {
    RaftMessage {
        from,
        to,
        term: 1,
        body: RaftBody::AppendEntries {
            prev_index: seq,
            prev_term: 1,
            commit: 0,
            count: 1,
        },
    }
}

/// Deterministic payload for a sequence number, varying in length and content.
pub fn payload_for(seq: u64) -> Vec<u8> {
    let len = (seq.wrapping_mul(2654435761) % 1500) as usize;
    (0..len)
        .map(|i| (seq as usize).wrapping_add(i * 31) as u8)
        .collect()
}

/// Polls `t` once and appends owned copies of its events.
pub fn pump(t: &mut Transport, idle: Idle, out: &mut Vec<Ev>) {
    t.poll(idle, |e| out.push(own(e))).expect("poll");
}

pub fn own(e: Event<'_>) -> Ev {
    match e {
        Event::PeerUp { node, .. } => Ev::Up(node),
        Event::PeerDown { node, .. } => Ev::Down(node),
        Event::ClientUp { client, .. } => Ev::ClientUp(client),
        Event::ClientDown { client, .. } => Ev::ClientDown(client),
        Event::Writable { .. } => Ev::Writable,
        Event::Foreign { token, result, .. } => Ev::Foreign { token, result },
        Event::Frame {
            from,
            shard,
            message: Message::Raft(m),
            payload,
            ..
        } => {
            let seq = match &m.body {
                ArchivedRaftBody::AppendEntries { prev_index, .. } => prev_index.to_native(),
                ArchivedRaftBody::Heartbeat { read_seq, .. } => read_seq.to_native(),
                _ => u64::MAX,
            };
            Ev::Raft {
                from,
                shard,
                seq,
                payload: payload.to_vec(),
            }
        }
        Event::Frame {
            from,
            conn,
            message: Message::Client(m),
            ..
        } => {
            let request_id = match m {
                net::wire::ArchivedClientMessage::Submit { request_id, .. }
                | net::wire::ArchivedClientMessage::Reply { request_id, .. }
                | net::wire::ArchivedClientMessage::Read { request_id, .. }
                | net::wire::ArchivedClientMessage::ReadReply { request_id, .. }
                | net::wire::ArchivedClientMessage::Status { request_id }
                | net::wire::ArchivedClientMessage::StatusReply { request_id, .. }
                | net::wire::ArchivedClientMessage::TransferLeader { request_id, .. }
                | net::wire::ArchivedClientMessage::AdminReply { request_id, .. } => {
                    request_id.to_native()
                }
            };
            Ev::Client {
                from,
                conn,
                request_id,
            }
        }
    }
}

/// Pumps every transport until `done` holds or `limit` passes; returns whether it held.
pub fn pump_until(
    ts: &mut [&mut Transport],
    evs: &mut [Vec<Ev>],
    limit: Duration,
    mut done: impl FnMut(&[&mut Transport], &[Vec<Ev>]) -> bool,
) -> bool {
    assert_eq!(ts.len(), evs.len());
    let deadline = Instant::now() + limit;
    loop {
        for (t, ev) in ts.iter_mut().zip(evs.iter_mut()) {
            pump(t, Idle::Wait(Duration::from_micros(200)), ev);
        }
        if done(ts, evs) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

pub fn has(evs: &[Ev], e: &Ev) -> bool {
    evs.iter().any(|x| x == e)
}
