//! Net hot paths, each against a named baseline measured in the same run:
//!
//! - `append_entries_codec`: encode + validate + access an AppendEntries of 64 x 256 B
//!   records (rkyv header read in place, CRC32C over the frame) vs a hand-written fixed-layout
//!   little-endian header with the same memcpy of records and the same CRC32C
//!   (`manual_le_codec`).
//! - `bulk_64k`: one-way loopback throughput in 64 KiB AppendEntries payloads handed over as
//!   shared buffers (`send_shared`: sent in place with sendmsg, like std) vs std blocking
//!   `TcpStream` `write_all` of 64 KiB buffers.
//! - `stream_256b`: 256 B messages each handed to the transport individually (it batches all
//!   frames queued between two polls into one send) vs std writing each identical encoded frame
//!   with its own `write_all`.
//! - `pingpong_64b`: 64 B request/echo round trip, both sides busy-polling (`Idle::Spin`,
//!   each thread pinned to its own core, as a spinning shard is) vs std blocking `TcpStream`
//!   with TCP_NODELAY (unpinned: the scheduler wakes the blocked reader on the writer's core,
//!   the fastest layout for blocking sockets; pinned apart, std measured ~2x slower here).
//!
//! After each pair the ratio of the two means from this run is printed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use benches::{short_config, Mean};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use net::wire::{self, ArchivedRaftBody, Body, RaftBody, RaftMessage};
use net::{Dest, Event, Idle, Message, PeerConfig, Role, SendError, Transport, TransportConfig};

/// Idle strategies: busy-poll for this long after the last activity, then sleep in the ring.
/// `Duration::MAX` is pure spinning, zero is pure waiting.
const SPIN: Duration = Duration::MAX;
const SPIN_THEN_WAIT: Duration = Duration::from_micros(50);
const WAIT: Duration = Duration::ZERO;

fn report(what: &str, ours: &Mean, base: &Mean, base_name: &str, unit: &str, scale: f64) {
    let (o, b) = (ours.per_iter_ns(), base.per_iter_ns());
    if ours.is_empty() || base.is_empty() {
        return; // filtered out
    }
    println!(
        "RATIO {what}: net {:.1} {unit}, {base_name} {:.1} {unit}, net/baseline rate = {:.2}x",
        scale / o,
        scale / b,
        b / o
    );
}

fn append_entries() -> RaftMessage {
    RaftMessage {
        from: 1,
        to: 2,
        term: 9,
        body: RaftBody::AppendEntries {
            prev_index: 1000,
            prev_term: 9,
            commit: 990,
            count: 64,
        },
    }
}

/// The small message the ping-pong bounces (its term numbers the round trip).
fn timeout_now(from: u64, to: u64, term: u64) -> RaftMessage {
    RaftMessage {
        from,
        to,
        term,
        body: RaftBody::TimeoutNow,
    }
}

fn manual_encode(out: &mut Vec<u8>, records: &[u8]) {
    out.clear();
    out.extend_from_slice(&0x5246_5431u32.to_le_bytes());
    for v in [1u64, 2, 9, 1000, 9, 990] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&64u32.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(records);
    let crc = wire::checksum(&[&out[..60], &out[64..]]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
}

fn manual_decode(buf: &[u8]) -> Option<(u64, u64, &[u8])> {
    let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap());
    if buf.len() < 64 || buf[..4] != 0x5246_5431u32.to_le_bytes() {
        return None;
    }
    let len = u32::from_le_bytes(buf[56..60].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(buf[60..64].try_into().unwrap());
    if buf.len() < 64 + len || wire::checksum(&[&buf[..60], &buf[64..64 + len]]) != crc {
        return None;
    }
    Some((u64_at(28), u64_at(44), &buf[64..64 + len]))
}

fn bench_codec(c: &mut Criterion) {
    let records: Vec<u8> = (0..64 * 256).map(|i| (i % 251) as u8).collect();
    let msg = append_entries();
    let mut g = c.benchmark_group("append_entries_codec");
    g.throughput(Throughput::Bytes(records.len() as u64));
    let (ours, base) = (Mean::default(), Mean::default());
    let mut buf = Vec::with_capacity(32 * 1024);
    let mut rb = net::RecvBuf::with_capacity(64 * 1024);
    let o = ours.clone();
    g.bench_function("net_rkyv_frame", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                buf.clear();
                wire::encode_frame(&mut buf, 3, &msg, &records, 1 << 20).unwrap();
                // The receive path reads from a 16-byte aligned buffer; the copy stands for
                // the kernel's write into it and is charged to us.
                rb.spare_mut()[..buf.len()].copy_from_slice(&buf);
                rb.commit(buf.len());
                let f = wire::decode_frame(rb.data(), 1 << 20).unwrap().unwrap();
                let Body::Raft(m) = f.body else {
                    unreachable!()
                };
                let ArchivedRaftBody::AppendEntries {
                    prev_index, commit, ..
                } = &m.body
                else {
                    unreachable!()
                };
                assert_eq!(
                    prev_index.to_native() + f.payload.len() as u64 + commit.to_native(),
                    1000 + 16384 + 990
                );
                let len = f.len;
                rb.consume(len);
            }
            o.add(iters, t.elapsed())
        })
    });
    let bb = base.clone();
    g.bench_function("manual_le_codec", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                manual_encode(&mut buf, &records);
                rb.spare_mut()[..buf.len()].copy_from_slice(&buf);
                rb.commit(buf.len());
                let (prev, commit, payload) = manual_decode(rb.data()).unwrap();
                assert_eq!(prev + payload.len() as u64 + commit, 1000 + 16384 + 990);
                rb.consume(buf.len());
            }
            bb.add(iters, t.elapsed())
        })
    });
    g.finish();
    report(
        "append_entries_codec (64 x 256 B)",
        &ours,
        &base,
        "manual_le_codec",
        "k frames/s",
        1e6,
    );
}

// ---------------------------------------------------------------------------------------
// Loopback fixtures
// ---------------------------------------------------------------------------------------

fn bench_config(node: u64, peers: &[(u64, std::net::SocketAddr)]) -> TransportConfig {
    let mut cfg = TransportConfig::new(1, node, Role::Node);
    cfg.peers = peers
        .iter()
        .map(|&(node_id, addr)| PeerConfig { node_id, addr })
        .collect();
    cfg.frame_bytes_max = 256 * 1024;
    cfg.send_queue_bytes_max = 4 << 20;
    // Loopback: the kernel copies SEND_ZC pages anyway, so zero-copy only adds notification
    // overhead here (NETB_ZC=1 to measure it). AppendEntries records carry their own
    // checksums, so frames checksum headers only (NETB_CRC=1 to checksum payloads too).
    // NETB_MULTISHOT=1 receives through the provided-buffer ring instead.
    cfg.ring.send_zc = std::env::var_os("NETB_ZC").is_some();
    cfg.payload_checksum = std::env::var_os("NETB_CRC").is_some();
    cfg.ring.provided_buffers = std::env::var_os("NETB_MULTISHOT").is_some();
    cfg
}

/// Receiver side running in its own thread: counts payload bytes and frames; echoes frames
/// back when `echo` is set. Spins when `spin`, else spins briefly then sleeps in the ring.
struct Remote {
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    frames: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Remote {
    fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        self.handle.take().unwrap().join().unwrap();
    }
}

/// Two different cores for a pair of busy-polling threads, when the machine has them.
/// Spinning only makes sense with a core per spinner (the engine pins its shard threads);
/// left to the scheduler, the two spinners can share one core (it balances them against
/// unrelated load, not against each other), and each round trip then waits for a time slice.
fn spin_cores() -> Option<(core_affinity::CoreId, core_affinity::CoreId)> {
    static CORES: OnceLock<Option<(core_affinity::CoreId, core_affinity::CoreId)>> =
        OnceLock::new();
    *CORES.get_or_init(|| match core_affinity::get_core_ids()?.as_slice() {
        [first, second, ..] => Some((*first, *second)),
        _ => None,
    })
}

fn pin(core: Option<core_affinity::CoreId>) {
    if let Some(core) = core {
        // Falls back to unpinned: the numbers are then noisier, not wrong.
        let _ = core_affinity::set_for_current(core);
    }
}

fn transport_pair(echo: bool, spin_window: Duration) -> (Transport, Remote) {
    transport_pair_on(echo, spin_window, None)
}

/// Like [`transport_pair`], with the remote thread pinned to `core`.
fn transport_pair_on(
    echo: bool,
    spin_window: Duration,
    core: Option<core_affinity::CoreId>,
) -> (Transport, Remote) {
    let la = TcpListener::bind("127.0.0.1:0").unwrap();
    let lb = TcpListener::bind("127.0.0.1:0").unwrap();
    let peers = [(1, la.local_addr().unwrap()), (2, lb.local_addr().unwrap())];
    let mut a = Transport::new(bench_config(1, &peers), Some(la)).unwrap();
    let cfg_b = bench_config(2, &peers);
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let frames = Arc::new(AtomicU64::new(0));
    let (s, by, fr) = (stop.clone(), bytes.clone(), frames.clone());
    let handle = std::thread::spawn(move || {
        pin(core);
        let mut b = Transport::new(cfg_b, Some(lb)).unwrap();
        let mut echoes: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut idle_since = Instant::now();
        let (mut nbytes, mut nframes) = (0u64, 0u64);
        while !s.load(Ordering::Acquire) {
            let idle = if idle_since.elapsed() < spin_window {
                Idle::Spin
            } else {
                Idle::Wait(Duration::from_millis(1))
            };
            let n = b
                .poll(idle, |e| {
                    if let Event::Frame {
                        message: Message::Raft(m),
                        payload,
                        ..
                    } = e
                    {
                        nbytes += payload.len() as u64;
                        nframes += 1;
                        if echo {
                            echoes.push((m.term.to_native(), payload.to_vec()));
                        }
                    }
                })
                .unwrap();
            if n > 0 {
                idle_since = Instant::now();
                by.store(nbytes, Ordering::Release);
                fr.store(nframes, Ordering::Release);
            }
            for (term, payload) in echoes.drain(..) {
                b.send(Dest::Peer(1), 0, &timeout_now(2, 1, term), &payload)
                    .unwrap();
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.is_connected(2) {
        assert!(Instant::now() < deadline, "bench pair did not connect");
        a.poll(Idle::Wait(Duration::from_millis(1)), |_| {})
            .unwrap();
    }
    (
        a,
        Remote {
            stop,
            bytes,
            frames,
            handle: Some(handle),
        },
    )
}

/// std receiver thread: reads and counts bytes (echoes them when `echo_len` > 0).
fn std_pair(echo_len: usize) -> (TcpStream, Remote) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    client.set_nodelay(true).unwrap();
    let (mut server, _) = l.accept().unwrap();
    server.set_nodelay(true).unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let frames = Arc::new(AtomicU64::new(0));
    let (s, by) = (stop.clone(), bytes.clone());
    let handle = std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        while !s.load(Ordering::Acquire) {
            if echo_len > 0 {
                match server.read_exact(&mut buf[..echo_len]) {
                    Ok(()) => server.write_all(&buf[..echo_len]).unwrap(),
                    Err(_) => continue,
                }
            } else {
                match server.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        total += n as u64;
                        by.store(total, Ordering::Release);
                    }
                    Err(_) => continue,
                }
            }
        }
    });
    (
        client,
        Remote {
            stop,
            bytes,
            frames,
            handle: Some(handle),
        },
    )
}

fn send_or_pump(a: &mut Transport, msg: &RaftMessage, payload: &[u8]) {
    send_or_pump_with(a, |a| a.send(Dest::Peer(2), 0, msg, payload));
}

fn send_or_pump_with(
    a: &mut Transport,
    mut send: impl FnMut(&mut Transport) -> Result<(), SendError>,
) {
    loop {
        match send(a) {
            Ok(()) => return,
            Err(SendError::QueueFull) => {
                // Back-pressure: sleep in the ring until a send completes (like a blocked
                // write), so the sender does not steal the receiver's core.
                a.poll(Idle::Wait(Duration::from_millis(1)), |_| {})
                    .unwrap();
            }
            Err(e) => panic!("send: {e}"),
        }
    }
}

fn wait_count(a: &mut Transport, counter: &AtomicU64, target: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter.load(Ordering::Acquire) < target {
        assert!(Instant::now() < deadline, "receiver stalled");
        a.poll(Idle::Wait(Duration::from_micros(50)), |_| {})
            .unwrap();
    }
}

fn bench_bulk(c: &mut Criterion) {
    const BATCH: usize = 64 * 1024;
    let payload = vec![0x5au8; BATCH];
    // The record run as the log would hand it over: shared, sent in place.
    let shared: Arc<[u8]> = payload.clone().into();
    let msg = append_entries();
    let mut g = c.benchmark_group("bulk_64k");
    g.throughput(Throughput::Bytes(BATCH as u64));
    let (ours, base) = (Mean::default(), Mean::default());

    let (mut a, remote) = transport_pair(false, SPIN_THEN_WAIT);
    let mut sent = 0u64;
    let o = ours.clone();
    g.bench_function(BenchmarkId::new("net_transport", "64KiB"), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                send_or_pump_with(&mut a, |a| {
                    a.send_shared(Dest::Peer(2), 0, &msg, shared.clone())
                });
                sent += BATCH as u64;
            }
            wait_count(&mut a, &remote.bytes, sent);
            o.add(iters, t.elapsed())
        })
    });
    remote.stop();
    drop(a);

    let (mut s, remote) = std_pair(0);
    let mut sent = 0u64;
    let bb = base.clone();
    g.bench_function(BenchmarkId::new("std_tcpstream", "64KiB"), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                s.write_all(&payload).unwrap();
                sent += BATCH as u64;
            }
            while remote.bytes.load(Ordering::Acquire) < sent {
                std::hint::spin_loop();
            }
            bb.add(iters, t.elapsed())
        })
    });
    drop(s);
    remote.stop();
    g.finish();
    report(
        "bulk_64k",
        &ours,
        &base,
        "std_tcpstream",
        "MiB/s",
        BATCH as f64 * 1e9 / (1 << 20) as f64,
    );
}

fn bench_stream(c: &mut Criterion) {
    const MSG: usize = 256;
    const POLL_EVERY: u64 = 32;
    let payload = vec![0x33u8; MSG];
    let msg = RaftMessage {
        from: 1,
        to: 2,
        term: 9,
        body: RaftBody::Heartbeat {
            commit: 1,
            read_seq: 2,
        },
    };
    let mut frame = Vec::new();
    wire::encode_frame(&mut frame, 0, &msg, &payload, 1 << 20).unwrap();
    let mut g = c.benchmark_group("stream_256b");
    g.throughput(Throughput::Elements(1));
    let (ours, base) = (Mean::default(), Mean::default());

    let (mut a, remote) = transport_pair(false, SPIN_THEN_WAIT);
    let mut sent = 0u64;
    let o = ours.clone();
    g.bench_function("net_transport_individual_sends", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for i in 0..iters {
                send_or_pump(&mut a, &msg, &payload);
                sent += 1;
                if i % POLL_EVERY == POLL_EVERY - 1 {
                    a.poll(Idle::Spin, |_| {}).unwrap();
                }
            }
            wait_count(&mut a, &remote.frames, sent);
            o.add(iters, t.elapsed())
        })
    });
    let batching = a.counters().frames_out as f64 / a.counters().sends.max(1) as f64;
    remote.stop();
    drop(a);

    let (mut s, remote) = std_pair(0);
    let mut sent = 0u64;
    let bb = base.clone();
    g.bench_function("std_write_per_message", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                s.write_all(&frame).unwrap();
                sent += frame.len() as u64;
            }
            while remote.bytes.load(Ordering::Acquire) < sent {
                std::hint::spin_loop();
            }
            bb.add(iters, t.elapsed())
        })
    });
    drop(s);
    remote.stop();
    g.finish();
    println!(
        "stream_256b: {:.1} frames per send submission, frame {} B on the wire",
        batching,
        frame.len()
    );
    report(
        "stream_256b",
        &ours,
        &base,
        "std_write_per_message",
        "k msgs/s",
        1e6,
    );
}

const PINGPONG_MSG: usize = 64;

/// Local side of the transport ping-pong on its own thread (pinned to `core`): for each
/// iteration count received on the first channel it runs that many round trips and answers
/// with their total time. Ends when the sender is dropped, dropping the transport.
fn pingpong_client(
    mut a: Transport,
    spin_window: Duration,
    core: Option<core_affinity::CoreId>,
) -> (mpsc::Sender<u64>, mpsc::Receiver<Duration>, JoinHandle<()>) {
    let (run, iterations) = mpsc::channel::<u64>();
    let (elapsed, done) = mpsc::channel();
    let client = std::thread::spawn(move || {
        pin(core);
        let payload = vec![0x11u8; PINGPONG_MSG];
        let mut term = 0u64;
        for iters in iterations {
            let t = Instant::now();
            for _ in 0..iters {
                term += 1;
                a.send(Dest::Peer(2), 0, &timeout_now(1, 2, term), &payload)
                    .unwrap();
                let mut got = false;
                let sent_at = Instant::now();
                while !got {
                    let idle = if sent_at.elapsed() < spin_window {
                        Idle::Spin
                    } else {
                        Idle::Wait(Duration::from_millis(1))
                    };
                    a.poll(idle, |e| {
                        if let Event::Frame {
                            message: Message::Raft(m),
                            payload,
                            ..
                        } = e
                        {
                            assert_eq!(m.term.to_native(), term);
                            assert_eq!(payload.len(), PINGPONG_MSG);
                            got = true;
                        }
                    })
                    .unwrap();
                }
            }
            elapsed.send(t.elapsed()).unwrap();
        }
    });
    (run, done, client)
}

fn bench_pingpong(c: &mut Criterion) {
    const MSG: usize = PINGPONG_MSG;
    let payload = vec![0x11u8; MSG];
    let mut g = c.benchmark_group("pingpong_64b");
    let (ours, base) = (Mean::default(), Mean::default());

    let (ours_stw, ours_wait) = (Mean::default(), Mean::default());
    for (name, spin_window, mean) in [
        ("net_transport_spin", SPIN, ours.clone()),
        (
            "net_transport_spin_then_wait_50us",
            SPIN_THEN_WAIT,
            ours_stw.clone(),
        ),
        ("net_transport_wait", WAIT, ours_wait.clone()),
    ] {
        // Pure spinners get a core each; the other strategies sleep, and are left to the
        // scheduler like the std pair.
        let cores = spin_cores().filter(|_| spin_window == SPIN);
        let (a, remote) = transport_pair_on(true, spin_window, cores.map(|c| c.1));
        // The local side runs on its own thread (criterion's thread only hands it iteration
        // counts and sleeps), so pinning it leaves criterion's thread and the std pair alone.
        let (run, done, client) = pingpong_client(a, spin_window, cores.map(|c| c.0));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                run.send(iters).unwrap();
                mean.add(iters, done.recv().unwrap())
            })
        });
        drop(run);
        client.join().unwrap();
        remote.stop();
    }

    let (mut s, remote) = std_pair(MSG);
    let bb = base.clone();
    let mut buf = [0u8; MSG];
    g.bench_function("std_tcpstream_blocking", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                s.write_all(&payload).unwrap();
                s.read_exact(&mut buf).unwrap();
            }
            bb.add(iters, t.elapsed())
        })
    });
    drop(s);
    remote.stop();
    g.finish();
    if ours.is_empty() || base.is_empty() {
        return; // filtered out
    }
    let (on, bn) = (ours.per_iter_ns(), base.per_iter_ns());
    let (sn, wn) = (ours_stw.per_iter_ns(), ours_wait.per_iter_ns());
    println!(
        "RATIO pingpong_64b: std {:.1} us/round trip; net spin {:.1} us ({:.2}x std), spin-then-wait {:.1} us ({:.2}x), wait {:.1} us ({:.2}x)  [x = std time / net time]",
        bn / 1e3,
        on / 1e3,
        bn / on,
        sn / 1e3,
        bn / sn,
        wn / 1e3,
        bn / wn
    );
}

criterion_group! {
    name = benches;
    config = short_config(Duration::from_secs(3));
    targets = bench_codec, bench_bulk, bench_stream, bench_pingpong
}
criterion_main!(benches);
