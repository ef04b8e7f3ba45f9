//! The blocking client connection against a real transport node on loopback: the
//! handshake with and without a cluster key, answers matched to requests, and every way a
//! handshake or a stream can fail, each a named error within a bounded time.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{config, listener};
use net::wire::{Body, ClientMessage, ClientStatus};
use net::{
    BlockingConn, BlockingError, Dest, Event, FrameError, Idle, Message, Role, Transport,
    TransportConfig,
};

const NODE: u64 = 7;
const STEP: Duration = Duration::from_secs(10);

/// Node `NODE` of cluster `cluster` on its own thread, answering every client `Submit`
/// with an `Ok` reply whose index is the request id, until dropped.
struct AnsweringNode {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl AnsweringNode {
    fn start(cluster: u64, key: Option<&[u8]>) -> AnsweringNode {
        let l = listener();
        let addr = l.local_addr().unwrap();
        let mut cfg = config(cluster, NODE, &[(NODE, addr)]);
        cfg.cluster_key = key.map(<[u8]>::to_vec);
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut t = Transport::new(cfg, Some(l)).expect("node transport");
            let mut answers = Vec::new();
            while !s.load(Ordering::Acquire) {
                t.poll(Idle::Wait(Duration::from_millis(5)), |e| {
                    if let Event::Frame {
                        conn,
                        message: Message::Client(m),
                        ..
                    } = e
                    {
                        let m: ClientMessage =
                            rkyv::deserialize::<_, rkyv::rancor::Error>(m).unwrap();
                        answers.push((conn, m.request_id()));
                    }
                })
                .expect("poll");
                for (conn, request_id) in answers.drain(..) {
                    let reply = ClientMessage::Reply {
                        request_id,
                        status: ClientStatus::Ok,
                        leader_hint: Some(NODE),
                        leader_addr: None,
                        index: request_id,
                    };
                    t.send(Dest::Conn(conn), 0, &reply, &[]).expect("reply");
                }
            }
        });
        AnsweringNode {
            addr,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for AnsweringNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.join().expect("node thread");
        }
    }
}

fn client_config(cluster: u64, key: Option<&[u8]>) -> TransportConfig {
    let mut cfg = TransportConfig::new(cluster, 100, Role::Client);
    cfg.cluster_key = key.map(<[u8]>::to_vec);
    cfg.frame_bytes_max = 256 * 1024;
    cfg
}

fn submit(request_id: u64) -> ClientMessage {
    ClientMessage::Submit {
        request_id,
        payloads: vec![vec![request_id as u8; 100]],
    }
}

/// The request id of the next frame, which must be a client reply.
fn next_reply(conn: &mut BlockingConn) -> u64 {
    conn.recv_until(Instant::now() + STEP, |frame| match frame.body {
        Body::Client(m) => {
            let m: ClientMessage = rkyv::deserialize::<_, rkyv::rancor::Error>(m).unwrap();
            m.request_id()
        }
        other => panic!("not a client frame: {other:?}"),
    })
    .expect("reply")
}

fn handshake_error(e: BlockingError) -> String {
    match e {
        BlockingError::Handshake { reason, .. } => reason,
        other => panic!("not a handshake error: {other}"),
    }
}

#[test]
fn a_blocking_connection_handshakes_with_and_without_a_key_and_gets_each_answer() {
    for key in [None, Some(&b"0123456789abcdef"[..])] {
        let node = AnsweringNode::start(1, key);
        let mut conn = BlockingConn::connect(&client_config(1, key), NODE, node.addr, STEP)
            .unwrap_or_else(|e| panic!("connect (key {}): {e}", key.is_some()));
        assert_eq!((conn.node(), conn.addr()), (NODE, node.addr));
        for id in 1..=50 {
            conn.send(0, &submit(id), &[]).expect("send");
            assert_eq!(next_reply(&mut conn), id);
        }
        // Two in flight: answered in order, each whole.
        conn.send(0, &submit(51), &[]).expect("send");
        conn.send(0, &submit(52), &[]).expect("send");
        assert_eq!(next_reply(&mut conn), 51);
        assert_eq!(next_reply(&mut conn), 52);
    }
}

#[test]
fn a_refused_handshake_says_why() {
    let key = &b"0123456789abcdef"[..];
    let plain = AnsweringNode::start(1, None);
    let keyed = AnsweringNode::start(1, Some(key));
    let connect = |cluster, key, node, addr| {
        BlockingConn::connect(&client_config(cluster, key), node, addr, STEP)
            .map(|_| ())
            .map_err(handshake_error)
            .expect_err("refused")
    };
    let why = connect(2, None, NODE, plain.addr);
    assert!(why.contains("cluster 1, not 2"), "{why}");
    let why = connect(1, None, 8, plain.addr);
    assert!(why.contains("node 7, not node 8"), "{why}");
    let why = connect(1, Some(key), NODE, plain.addr);
    assert!(why.contains("no cluster key"), "{why}");
    // The keyed node refuses a hello without a key by closing the connection: which of the
    // two sides notices first depends on timing.
    let why = connect(1, None, NODE, keyed.addr);
    assert!(
        why.contains("requires a cluster key") || why.contains("closed the connection"),
        "{why}"
    );
    let why = connect(1, Some(b"another key, 16b"), NODE, keyed.addr);
    assert!(
        why.contains("proof of the cluster key is wrong") || why.contains("closed the connection"),
        "{why}"
    );
}

/// A listener on its own thread that does `serve` with the first connection.
fn raw_server(serve: impl FnOnce(std::net::TcpStream) + Send + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((s, _)) = l.accept() {
            serve(s);
        }
    });
    addr
}

#[test]
fn garbage_silence_a_closed_socket_and_an_oversized_frame_are_named_errors() {
    let cfg = client_config(1, None);

    let addr = raw_server(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        std::thread::sleep(Duration::from_secs(2));
    });
    match BlockingConn::connect(&cfg, NODE, addr, STEP) {
        Err(
            e @ BlockingError::Frame {
                source: FrameError::BadMagic,
                ..
            },
        ) => assert!(e.to_string().contains(&addr.to_string()), "{e}"),
        other => panic!("expected a bad-magic error, got {other:?}"),
    }

    let addr = raw_server(|mut s| {
        let mut hello = [0u8; 64];
        let _ = s.read(&mut hello);
        std::thread::sleep(Duration::from_secs(2));
    });
    let started = Instant::now();
    match BlockingConn::connect(&cfg, NODE, addr, Duration::from_millis(200)) {
        Err(e @ BlockingError::Timeout { .. }) => {
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited past the timeout"
    );

    let addr = raw_server(drop);
    let why = BlockingConn::connect(&cfg, NODE, addr, STEP)
        .map(|_| ())
        .map_err(handshake_error)
        .expect_err("closed");
    assert!(why.contains("closed the connection"), "{why}");

    let node = AnsweringNode::start(1, None);
    let mut conn = BlockingConn::connect(&cfg, NODE, node.addr, STEP).expect("connect");
    let huge = ClientMessage::Submit {
        request_id: 1,
        payloads: vec![vec![0u8; cfg.frame_bytes_max]],
    };
    match conn.send(0, &huge, &[]) {
        Err(BlockingError::Encode {
            source: FrameError::Oversized { .. },
            ..
        }) => {}
        other => panic!("expected an oversized-frame error, got {other:?}"),
    }
    // The refused frame left nothing behind: the connection still works.
    conn.send(0, &submit(2), &[]).expect("send");
    assert_eq!(next_reply(&mut conn), 2);
}
