//! Loopback behaviour of the transport: traffic both ways, reconnect, back-pressure,
//! handshake refusals, bad input isolation.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use net::wire::{self, ClientMessage, ClientStatus, Hello, RaftBody, RaftMessage};
use net::{CloseReason, Dest, Idle, Origin, Role, SendError, Transport, TransportConfig};

const LIMIT: Duration = Duration::from_secs(10);

fn connected_pair() -> (Transport, Transport) {
    connected_pair_with(|_| {})
}

fn connected_pair_with(tweak: impl Fn(&mut TransportConfig)) -> (Transport, Transport) {
    let (mut ca, la, mut cb, lb) = pair_configs(7, 7);
    tweak(&mut ca);
    tweak(&mut cb);
    let mut a = Transport::new(ca, Some(la)).unwrap();
    let mut b = Transport::new(cb, Some(lb)).unwrap();
    let mut evs = vec![Vec::new(), Vec::new()];
    let up = pump_until(&mut [&mut a, &mut b], &mut evs, LIMIT, |_, e| {
        has(&e[0], &Ev::Up(2)) && has(&e[1], &Ev::Up(1))
    });
    assert!(up, "pair did not connect: {evs:?}");
    (a, b)
}

#[test]
fn many_messages_both_ways() {
    exchange_both_ways(connected_pair(), 20_000);
}

#[test]
fn peers_on_loopback_get_no_zero_copy_sends_unless_asked() {
    // The same sizes as the zero-copy test below, which does see zero-copy sends.
    let (a, b) = exchange_both_ways(
        connected_pair_with(|c| c.ring.send_zc_threshold_bytes = 1024),
        5_000,
    );
    assert!(a.counters().sends > 0);
    assert_eq!(
        a.counters().sends_zero_copy + b.counters().sends_zero_copy,
        0
    );
}

#[test]
fn many_messages_both_ways_without_optional_ring_features() {
    // Single-shot receive into the connection buffer, plain fds, copying sends only.
    let pair = connected_pair_with(|c| {
        c.ring.provided_buffers = false;
        c.ring.registered_files = 0;
        c.ring.send_zc = false;
    });
    assert!(!pair.0.features().provided_buffers && !pair.0.features().registered_files);
    exchange_both_ways(pair, 5_000);
}

#[test]
fn many_messages_both_ways_with_multishot_receive() {
    // Provided-buffer ring + multishot receive, buffers smaller than many frames.
    let pair = connected_pair_with(|c| {
        c.ring.provided_buffers = true;
        c.ring.provided_buf_count = 16;
        c.ring.provided_buf_bytes = 4096;
    });
    assert!(pair.0.features().provided_buffers);
    exchange_both_ways(pair, 5_000);
}

#[test]
fn many_messages_both_ways_with_header_only_checksums() {
    exchange_both_ways(connected_pair_with(|c| c.payload_checksum = false), 5_000);
}

#[test]
fn many_messages_both_ways_with_zero_copy_sends() {
    // Every send above 1 KiB goes through SEND_ZC when the kernel has it.
    let (a, _) = exchange_both_ways(
        connected_pair_with(|c| {
            c.ring.send_zc_threshold_bytes = 1024;
            c.zero_copy_to_loopback = true;
        }),
        5_000,
    );
    if a.features().send_zc {
        assert!(a.counters().sends_zero_copy > 0, "no zero-copy send");
    }
}

fn exchange_both_ways((mut a, mut b): (Transport, Transport), n: u64) -> (Transport, Transport) {
    let (mut sent_a, mut sent_b) = (0u64, 0u64);
    let (mut got_a, mut got_b) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ev = Vec::new();
    while got_a < n || got_b < n {
        assert!(
            Instant::now() < deadline,
            "timed out: a got {got_a}, b got {got_b}"
        );
        // Queue a burst each way; QueueFull just means pump first.
        for _ in 0..256 {
            if sent_a < n {
                match a.send(
                    Dest::Peer(2),
                    (sent_a % 4) as u32,
                    &seq_msg(1, 2, sent_a),
                    &payload_for(sent_a),
                ) {
                    Ok(()) => sent_a += 1,
                    Err(SendError::QueueFull) => {}
                    Err(e) => panic!("send a: {e}"),
                }
            }
            if sent_b < n {
                match b.send(
                    Dest::Peer(1),
                    (sent_b % 4) as u32,
                    &seq_msg(2, 1, sent_b),
                    &payload_for(sent_b),
                ) {
                    Ok(()) => sent_b += 1,
                    Err(SendError::QueueFull) => {}
                    Err(e) => panic!("send b: {e}"),
                }
            }
        }
        for (t, got, peer) in [(&mut a, &mut got_a, 2u64), (&mut b, &mut got_b, 1u64)] {
            ev.clear();
            pump(t, Idle::Spin, &mut ev);
            for e in ev.drain(..) {
                match e {
                    Ev::Raft {
                        from,
                        shard,
                        seq,
                        payload,
                    } => {
                        assert_eq!(from, Origin::Peer(peer));
                        assert_eq!(seq, *got, "frames arrive in order, none lost");
                        assert_eq!(shard, (seq % 4) as u32);
                        assert_eq!(payload, payload_for(seq));
                        *got += 1;
                    }
                    Ev::Writable => {}
                    other => panic!("unexpected event {other:?}"),
                }
            }
        }
    }
    assert_eq!(a.counters().frames_in, n);
    assert_eq!(b.counters().frames_in, n);
    // Batching: far fewer send submissions than frames.
    assert!(
        a.counters().sends < n / 4,
        "sends {} for {n} frames",
        a.counters().sends
    );
    assert_eq!(a.counters().closed_bad_input(), 0);
    (a, b)
}

#[test]
fn restarted_peer_is_reconnected() {
    let (ca, la, cb, lb) = pair_configs(7, 7);
    let b_addr = lb.local_addr().unwrap();
    let cb2 = cb.clone();
    let mut a = Transport::new(ca, Some(la)).unwrap();
    let mut b = Transport::new(cb, Some(lb)).unwrap();
    let mut evs = vec![Vec::new(), Vec::new()];
    assert!(pump_until(
        &mut [&mut a, &mut b],
        &mut evs,
        LIMIT,
        |_, e| has(&e[0], &Ev::Up(2))
    ));
    drop(b);
    let mut ev_a = vec![Vec::new()];
    assert!(
        pump_until(&mut [&mut a], &mut ev_a, LIMIT, |_, e| has(
            &e[0],
            &Ev::Down(2)
        )),
        "a did not notice b going away"
    );
    assert!(!a.is_connected(2));
    assert_eq!(
        a.send(Dest::Peer(2), 0, &seq_msg(1, 2, 0), &[]),
        Err(SendError::NotConnected)
    );
    // Let a fail a few dials against the closed port, then restart b on the same address.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(100) {
        pump(&mut a, Idle::Wait(Duration::from_millis(5)), &mut ev_a[0]);
    }
    let mut b = Transport::bind(cb2, Some(b_addr)).unwrap();
    let mut evs = vec![Vec::new(), Vec::new()];
    assert!(
        pump_until(&mut [&mut a, &mut b], &mut evs, LIMIT, |_, e| has(
            &e[0],
            &Ev::Up(2)
        ) && has(
            &e[1],
            &Ev::Up(1)
        )),
        "no reconnect: {evs:?}"
    );
    a.send(Dest::Peer(2), 3, &seq_msg(1, 2, 42), b"after restart")
        .unwrap();
    assert!(pump_until(
        &mut [&mut a, &mut b],
        &mut evs,
        LIMIT,
        |_, e| {
            e[1].iter().any(|x| matches!(x, Ev::Raft { seq: 42, shard: 3, payload, .. } if payload == b"after restart"))
        }
    ));
}

#[test]
fn stalled_reader_bounds_memory_and_pushes_back() {
    let (mut a, mut b) = connected_pair();
    let budget = 512 * 1024;
    let payload = vec![0xabu8; 4096];
    let mut accepted = 0u64;
    let mut refusals = 0u64;
    let mut ev = Vec::new();
    let deadline = Instant::now() + LIMIT;
    // b never polls: kernel buffers fill, then a's queue hits its budget.
    while refusals < 1000 {
        assert!(
            Instant::now() < deadline,
            "never saw back-pressure after {accepted} frames"
        );
        match a.send(Dest::Peer(2), 0, &seq_msg(1, 2, accepted), &payload) {
            Ok(()) => accepted += 1,
            Err(SendError::QueueFull) => refusals += 1,
            Err(e) => panic!("unexpected {e}"),
        }
        let queued = a.queued_bytes(Dest::Peer(2)).unwrap();
        assert!(queued <= budget, "queue {queued} above budget");
        pump(&mut a, Idle::Spin, &mut ev);
    }
    assert!(a.counters().queue_full >= 1000);
    assert!(a.queued_bytes_total() <= budget);
    assert!(!ev.contains(&Ev::Writable));
    // Resume reading: everything accepted arrives, in order, and a hears it may send again.
    let mut evs = vec![Vec::new(), Vec::new()];
    let mut got = 0u64;
    let ok = pump_until(&mut [&mut a, &mut b], &mut evs, LIMIT, |_, e| {
        for x in e[1].iter().skip(got as usize) {
            if let Ev::Raft { seq, .. } = x {
                assert_eq!(*seq, got);
                got += 1;
            }
        }
        got == accepted && has(&e[0], &Ev::Writable)
    });
    assert!(ok, "received {got} of {accepted}");
    a.send(Dest::Peer(2), 0, &seq_msg(1, 2, accepted), &payload)
        .unwrap();
}

#[test]
fn wrong_cluster_is_refused() {
    let (ca, la, cb, lb) = pair_configs(7, 8);
    let mut a = Transport::new(ca, Some(la)).unwrap();
    let mut b = Transport::new(cb, Some(lb)).unwrap();
    let mut evs = vec![Vec::new(), Vec::new()];
    let refused = pump_until(&mut [&mut a, &mut b], &mut evs, LIMIT, |t, _| {
        t[1].counters().closed(CloseReason::WrongCluster) >= 2
            && t[0].counters().closed(CloseReason::WrongCluster) >= 2
    });
    assert!(refused, "refusals not counted");
    assert!(!has(&evs[0], &Ev::Up(2)) && !has(&evs[1], &Ev::Up(1)));
    assert!(!a.is_connected(2) && !b.is_connected(1));
}

#[test]
fn non_member_is_refused() {
    let (ca, la, mut cb, lb) = pair_configs(7, 7);
    // b does not list node 1.
    cb.peers.retain(|p| p.node_id != 1);
    let mut a = Transport::new(ca, Some(la)).unwrap();
    let mut b = Transport::new(cb, Some(lb)).unwrap();
    let mut evs = vec![Vec::new(), Vec::new()];
    assert!(pump_until(
        &mut [&mut a, &mut b],
        &mut evs,
        LIMIT,
        |t, _| { t[1].counters().closed(CloseReason::NotMember) >= 2 }
    ));
    assert!(!has(&evs[0], &Ev::Up(2)));
}

#[test]
fn a_taken_listen_address_is_refused_naming_it() {
    let held = listener();
    let addr = held.local_addr().unwrap();
    let cfg = config(7, 1, &[(1, addr)]);
    let err = Transport::bind(cfg, Some(addr)).expect_err("the address is held");
    assert!(err.is_address_in_use(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&addr.to_string()), "{text}");
    drop(held);
    // The peer listener takes the address; the client listener then finds it taken.
    let cfg = config(7, 1, &[(1, addr)]);
    let err = Transport::bind_with_clients(cfg, addr, addr)
        .expect_err("peer and client listeners on one address");
    assert!(err.is_address_in_use(), "{err:?}");
}

fn keyed_pair(key_a: Option<&[u8]>, key_b: Option<&[u8]>) -> (Transport, Transport) {
    let (mut ca, la, mut cb, lb) = pair_configs(7, 7);
    ca.cluster_key = key_a.map(<[u8]>::to_vec);
    cb.cluster_key = key_b.map(<[u8]>::to_vec);
    (
        Transport::new(ca, Some(la)).unwrap(),
        Transport::new(cb, Some(lb)).unwrap(),
    )
}

#[test]
fn hmac_same_key_connects() {
    let (mut a, mut b) = keyed_pair(Some(b"secret"), Some(b"secret"));
    let mut evs = vec![Vec::new(), Vec::new()];
    assert!(pump_until(
        &mut [&mut a, &mut b],
        &mut evs,
        LIMIT,
        |_, e| has(&e[0], &Ev::Up(2)) && has(&e[1], &Ev::Up(1))
    ));
    a.send(Dest::Peer(2), 0, &seq_msg(1, 2, 5), b"x").unwrap();
    assert!(pump_until(
        &mut [&mut a, &mut b],
        &mut evs,
        LIMIT,
        |_, e| e[1].iter().any(|x| matches!(x, Ev::Raft { seq: 5, .. }))
    ));
}

#[test]
fn hmac_wrong_key_is_refused() {
    let (mut a, mut b) = keyed_pair(Some(b"secret"), Some(b"guess"));
    let mut evs = vec![Vec::new(), Vec::new()];
    assert!(pump_until(
        &mut [&mut a, &mut b],
        &mut evs,
        LIMIT,
        |t, _| {
            t[0].counters().closed(CloseReason::AuthFailed) >= 2
                && t[1].counters().closed(CloseReason::AuthFailed) >= 2
        }
    ));
    assert!(!has(&evs[0], &Ev::Up(2)) && !has(&evs[1], &Ev::Up(1)));
}

#[test]
fn hmac_missing_key_is_refused() {
    let (mut a, mut b) = keyed_pair(None, Some(b"secret"));
    let mut evs = vec![Vec::new(), Vec::new()];
    assert!(pump_until(
        &mut [&mut a, &mut b],
        &mut evs,
        LIMIT,
        |t, _| {
            t[0].counters().closed(CloseReason::AuthMissing) >= 2
                && t[1].counters().closed(CloseReason::AuthMissing) >= 2
        }
    ));
    assert!(!has(&evs[0], &Ev::Up(2)) && !has(&evs[1], &Ev::Up(1)));
}

/// A raw socket speaking our handshake as a client (no key), for injecting bad frames.
fn raw_client(addr: std::net::SocketAddr, cluster: u64) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let hello = Hello {
        cluster_id: cluster,
        node_id: 99,
        protocol_version: net::PROTOCOL_VERSION,
        role: wire::ROLE_CLIENT,
        auth: false,
        nonce: [9; 32],
    };
    wire::encode_frame(&mut out, 0, &hello, &[], 4096).unwrap();
    // Keyless handshake: an Auth frame with a zero MAC confirms we accept the node's hello.
    wire::encode_frame(&mut out, 0, &wire::Auth { mac: [0; 32] }, &[], 4096).unwrap();
    s.write_all(&out).unwrap();
    s
}

fn valid_frame() -> Vec<u8> {
    let mut out = Vec::new();
    let msg = ClientMessage::Submit {
        request_id: 1,
        payloads: vec![b"cmd".to_vec()],
    };
    wire::encode_frame(&mut out, 0, &msg, &[], 4096).unwrap();
    out
}

/// Reads until EOF (the server closing us) or the timeout.
fn wait_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn bad_input_closes_only_that_connection() {
    let (mut a, mut b) = connected_pair();
    let b_addr = b.local_addr().unwrap();
    type Case = (CloseReason, Box<dyn Fn() -> Vec<u8>>);
    let cases: Vec<Case> = vec![
        (
            CloseReason::BadMagic,
            Box::new(|| (0..200u32).map(|i| (i * 7919 % 251) as u8).collect()),
        ),
        (
            CloseReason::Checksum,
            Box::new(|| {
                let mut f = valid_frame();
                let n = f.len();
                f[n - 9] ^= 0x40;
                f
            }),
        ),
        (
            CloseReason::BadVersion,
            Box::new(|| {
                let mut f = valid_frame();
                f[4] = 9;
                f
            }),
        ),
        (
            CloseReason::Oversized,
            Box::new(|| {
                let mut f = valid_frame();
                f[16..20].copy_from_slice(&(100u32 << 20).to_le_bytes());
                f
            }),
        ),
        (
            CloseReason::Truncated,
            Box::new(|| {
                let f = valid_frame();
                f[..f.len() - 5].to_vec()
            }),
        ),
        (
            CloseReason::Malformed,
            Box::new(|| {
                // Valid CRC over a header that is not a valid archive.
                let mut f = valid_frame();
                let hl = u32::from_le_bytes(f[12..16].try_into().unwrap()) as usize;
                for x in &mut f[24..24 + hl] {
                    *x = 0xff;
                }
                let crc = crc32c::crc32c_append(crc32c::crc32c(&f[..20]), &f[24..]);
                f[20..24].copy_from_slice(&crc.to_le_bytes());
                f
            }),
        ),
    ];
    for (reason, make) in cases {
        let before = b.counters().closed(reason);
        let mut s = raw_client(b_addr, 7);
        let mut evs = vec![Vec::new(), Vec::new()];
        assert!(pump_until(
            &mut [&mut a, &mut b],
            &mut evs,
            LIMIT,
            |_, e| has(&e[1], &Ev::ClientUp(99))
        ));
        s.write_all(&make()).unwrap();
        if reason == CloseReason::Truncated {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let closed = pump_until(&mut [&mut a, &mut b], &mut evs, LIMIT, |t, _| {
            t[1].counters().closed(reason) > before
        });
        assert!(
            closed,
            "{reason:?} not counted; counters {:?}",
            b.counters()
        );
        assert!(has(&evs[1], &Ev::ClientDown(99)));
        assert!(wait_closed(&mut s), "{reason:?}: connection left open");
        // The peer connection is untouched and still carries traffic.
        assert!(a.is_connected(2) && b.is_connected(1));
        a.send(Dest::Peer(2), 1, &seq_msg(1, 2, 77), b"still here")
            .unwrap();
        assert!(pump_until(
            &mut [&mut a, &mut b],
            &mut evs,
            LIMIT,
            |_, e| { e[1].iter().any(|x| matches!(x, Ev::Raft { seq: 77, .. })) }
        ));
    }
    // Garbage before any handshake, too.
    let mut s = TcpStream::connect(b_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let before = b.counters().closed(CloseReason::BadMagic);
    let mut evs = vec![Vec::new(), Vec::new()];
    assert!(pump_until(
        &mut [&mut a, &mut b],
        &mut evs,
        LIMIT,
        |t, _| t[1].counters().closed(CloseReason::BadMagic) > before
    ));
    assert!(wait_closed(&mut s));
    assert!(a.is_connected(2) && b.is_connected(1));
}

#[test]
fn silent_connection_times_out() {
    let (mut a, mut b) = connected_pair();
    let s = TcpStream::connect(b.local_addr().unwrap()).unwrap();
    let mut evs = vec![Vec::new(), Vec::new()];
    assert!(pump_until(
        &mut [&mut a, &mut b],
        &mut evs,
        LIMIT,
        |t, _| { t[1].counters().closed(CloseReason::HandshakeTimeout) >= 1 }
    ));
    drop(s);
    assert!(a.is_connected(2));
}

#[test]
fn client_submits_and_gets_reply() {
    let (_ca, la, cb, lb) = pair_configs(7, 7);
    drop(la);
    let b_addr = lb.local_addr().unwrap();
    let mut b = Transport::new(cb, Some(lb)).unwrap();
    let mut cc = TransportConfig::new(7, 500, Role::Client);
    cc.peers = vec![net::PeerConfig {
        node_id: 2,
        addr: b_addr,
    }];
    let mut c = Transport::new(cc, None).unwrap();
    let mut evs = vec![Vec::new(), Vec::new()];
    assert!(pump_until(
        &mut [&mut c, &mut b],
        &mut evs,
        LIMIT,
        |_, e| has(&e[0], &Ev::Up(2)) && has(&e[1], &Ev::ClientUp(500))
    ));
    let submit = ClientMessage::Submit {
        request_id: 11,
        payloads: vec![b"a".to_vec(), b"bb".to_vec()],
    };
    c.send(Dest::Peer(2), 0, &submit, &[]).unwrap();
    assert!(pump_until(
        &mut [&mut c, &mut b],
        &mut evs,
        LIMIT,
        |_, e| e[1]
            .iter()
            .any(|x| matches!(x, Ev::Client { request_id: 11, .. }))
    ));
    let conn = evs[1]
        .iter()
        .find_map(|x| match x {
            Ev::Client {
                conn,
                from: Origin::Client(500),
                ..
            } => Some(*conn),
            _ => None,
        })
        .expect("client frame carries its connection");
    let reply = ClientMessage::Reply {
        request_id: 11,
        status: ClientStatus::Ok,
        leader_hint: Some(2),
        leader_addr: Some("127.0.0.1:7202".into()),
        index: 3,
    };
    b.send(Dest::Conn(conn), 0, &reply, &[]).unwrap();
    assert!(pump_until(
        &mut [&mut c, &mut b],
        &mut evs,
        LIMIT,
        |_, e| e[0].iter().any(|x| matches!(
            x,
            Ev::Client {
                request_id: 11,
                from: Origin::Peer(2),
                ..
            }
        ))
    ));
    // A raft message from a client connection would be delivered with a client origin; the
    // engine decides. Here: heartbeat round-trip from the node side is refused for clients
    // only by the engine, so just check the body type is carried.
    let hb = RaftMessage {
        from: 2,
        to: 500,
        term: 1,
        body: RaftBody::Heartbeat {
            commit: 0,
            read_seq: 9,
        },
    };
    b.send(Dest::Conn(conn), 0, &hb, &[]).unwrap();
    assert!(pump_until(
        &mut [&mut c, &mut b],
        &mut evs,
        LIMIT,
        |_, e| e[0].iter().any(|x| matches!(x, Ev::Raft { seq: 9, .. }))
    ));
}

fn big_payload_for(seq: u64) -> Vec<u8> {
    let len = 4096 + (seq.wrapping_mul(7919) % 60_000) as usize;
    (0..len)
        .map(|i| (i as u64 ^ seq.wrapping_mul(31)) as u8)
        .collect()
}

fn shared_payloads_arrive_intact(payload_checksum: bool, zc: bool) {
    let (mut a, mut b) = connected_pair_with(|c| {
        c.payload_checksum = payload_checksum;
        c.ring.send_zc = zc;
        c.ring.send_zc_threshold_bytes = 1024;
        c.zero_copy_to_loopback = zc;
    });
    const N: u64 = 600;
    let mut sent = 0u64;
    let mut got = 0u64;
    let mut ev = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < N {
        assert!(Instant::now() < deadline, "timed out at {got}");
        while sent < N {
            let msg = seq_msg(1, 2, sent);
            let r = if sent % 3 == 2 {
                a.send(Dest::Peer(2), 0, &msg, &payload_for(sent))
            } else {
                let shared: std::sync::Arc<[u8]> = big_payload_for(sent).into();
                a.send_shared(Dest::Peer(2), 0, &msg, shared)
            };
            match r {
                Ok(()) => sent += 1,
                Err(SendError::QueueFull) => break,
                Err(e) => panic!("send: {e}"),
            }
            assert!(a.queued_bytes(Dest::Peer(2)).unwrap() <= 512 * 1024);
        }
        pump(&mut a, Idle::Spin, &mut ev);
        ev.clear();
        pump(&mut b, Idle::Spin, &mut ev);
        for e in ev.drain(..) {
            match e {
                Ev::Raft { seq, payload, .. } => {
                    assert_eq!(seq, got);
                    let want = if seq % 3 == 2 {
                        payload_for(seq)
                    } else {
                        big_payload_for(seq)
                    };
                    assert!(payload == want, "payload {seq} corrupted");
                    got += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(b.counters().closed_bad_input(), 0);
    if zc && a.features().send_zc {
        assert!(a.counters().sends_zero_copy > 0, "no zero-copy send");
    } else {
        assert_eq!(a.counters().sends_zero_copy, 0);
    }
}

#[test]
fn shared_payloads_arrive_intact_with_payload_checksum() {
    shared_payloads_arrive_intact(true, false);
}

#[test]
fn shared_payloads_arrive_intact_with_zero_copy_sendmsg() {
    shared_payloads_arrive_intact(false, true);
}

#[test]
fn shared_payloads_arrive_intact_header_checksum_only() {
    shared_payloads_arrive_intact(false, false);
}
