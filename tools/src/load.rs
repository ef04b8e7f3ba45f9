//! Load generation for raftbench: a closed-loop throughput phase, an open-loop latency
//! probe that times every request from its intended send time (no coordinated omission),
//! a raw-socket ping-pong baseline, and a sampler of follower apply lag.

use std::io::{IsTerminal, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::client::{Client, ClientError, Reply, SyncClient};
use engine::kv::Command;
use hdrhistogram::Histogram;
use net::wire::ClientStatus;

/// Distinct keys each load client writes: a bounded working set, as in a real database
/// workload, so the state machine overwrites values instead of growing without bound.
pub const KEYS_PER_CLIENT: u64 = 1 << 16;

/// A put whose encoded size is `payload_bytes` (key `k<client>-<seq mod KEYS_PER_CLIENT>`,
/// value padding).
pub fn put_command(client: u64, seq: u64, payload_bytes: usize) -> Vec<u8> {
    let key = format!("k{client}-{}", seq % KEYS_PER_CLIENT);
    // put = 1 opcode + 2 key length + key + 4 value length + value
    let overhead = 1 + 2 + key.len() + 4;
    let value = vec![b'v'; payload_bytes.saturating_sub(overhead)];
    Command::Put {
        key: key.as_bytes(),
        value: &value,
    }
    .to_bytes()
}

/// Smallest `payload_bytes` for which every put the load makes is exactly that size: the
/// put of its longest key (client number `u64::MAX`, the probe's, and the highest key
/// number) with an empty value.
pub fn payload_bytes_min() -> usize {
    put_command(u64::MAX, KEYS_PER_CLIENT - 1, 0).len()
}

/// `d` in whole microseconds, rounded to the nearest (truncating would read every latency
/// half a microsecond short on average, against a ping-pong baseline kept in nanoseconds),
/// and at least 1, the histogram's lowest value.
pub fn micros(d: Duration) -> u64 {
    let us = (d.as_nanos() + 500) / 1000;
    u64::try_from(us).unwrap_or(u64::MAX).max(1)
}

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Closed-loop settings: `clients` connections, each keeping `window` requests of
/// `batch` entries in flight.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop {
    pub clients: usize,
    pub window: usize,
    pub batch: usize,
    pub payload_bytes: usize,
    pub duration: Duration,
}

/// What a load phase achieved.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub entries: u64,
    /// Requests answered `Ok` (closed loop), or requests the schedule called for (open
    /// loop: also those refused, unsent or unanswered, whose latency the histogram lacks).
    pub requests: u64,
    pub elapsed: Duration,
    /// Commit latency (until applied on the leader and answered), microseconds.
    pub latency_us: Histogram<u64>,
    pub retries: u64,
}

impl PhaseResult {
    pub fn entries_per_sec(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Shows a one-line progress bar on stderr while stdout is a terminal.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    label: String,
    total: Duration,
    start: Instant,
    last_drawn: Instant,
}

impl Progress {
    pub fn new(label: &str, total: Duration) -> Progress {
        let now = Instant::now();
        Progress {
            enabled: std::io::stdout().is_terminal() && total >= Duration::from_secs(3),
            label: label.to_owned(),
            total,
            start: now,
            last_drawn: now,
        }
    }

    pub fn tick(&mut self, entries: u64) {
        if !self.enabled || self.last_drawn.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last_drawn = Instant::now();
        let done = self.start.elapsed().as_secs_f64() / self.total.as_secs_f64();
        let width = 30;
        let filled = ((done.min(1.0)) * width as f64) as usize;
        eprint!(
            "\r{:<12} [{}{}] {:>5.1}/{:.0} s  {} entries",
            self.label,
            "=".repeat(filled),
            " ".repeat(width - filled),
            self.start.elapsed().as_secs_f64(),
            self.total.as_secs_f64(),
            entries
        );
    }

    pub fn finish(&mut self) {
        if self.enabled {
            eprintln!();
        }
    }
}

/// Runs the closed-loop phase with one thread per client.
pub fn closed_loop(
    mut make_client: impl FnMut(u64) -> Result<Client, ClientError>,
    cfg: ClosedLoop,
) -> Result<PhaseResult, ClientError> {
    let stop = Arc::new(AtomicBool::new(false));
    let entries = Arc::new(AtomicU64::new(0));
    let merged = Arc::new(Mutex::new(histogram()));
    let mut threads = Vec::new();
    let start = Instant::now();
    for c in 0..cfg.clients {
        let mut client = make_client(c as u64)?;
        let stop = Arc::clone(&stop);
        let entries = Arc::clone(&entries);
        let merged = Arc::clone(&merged);
        threads.push(std::thread::spawn(
            move || -> Result<(u64, u64), ClientError> {
                let mut hist = histogram();
                // Every command this client sends, encoded once: the generator's own
                // formatting and allocations would otherwise take CPU from the cluster it
                // measures (the same cores). A batch is a range of sequence numbers.
                let commands: Vec<Vec<u8>> = (0..KEYS_PER_CLIENT)
                    .map(|seq| put_command(c as u64, seq, cfg.payload_bytes))
                    .collect();
                let encode = |batch: &std::ops::Range<u64>| -> Vec<Vec<u8>> {
                    batch
                        .clone()
                        .map(|seq| commands[(seq % KEYS_PER_CLIENT) as usize].clone())
                        .collect()
                };
                let mut inflight: std::collections::BTreeMap<u64, (Instant, std::ops::Range<u64>)> =
                    std::collections::BTreeMap::new();
                let mut seq = 1u64;
                let mut requests = 0u64;
                let mut retries = 0u64;
                let mut resend: Vec<std::ops::Range<u64>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    while inflight.len() < cfg.window {
                        let batch = resend.pop().unwrap_or_else(|| {
                            let batch = seq..seq + cfg.batch as u64;
                            seq = batch.end;
                            batch
                        });
                        match client.send_submit(encode(&batch)) {
                            Ok(id) => {
                                inflight.insert(id, (Instant::now(), batch));
                            }
                            Err(ClientError::Send(_)) => {
                                resend.push(batch);
                                client.set_leader(None);
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    let mut replies = Vec::new();
                    client.poll(Duration::from_millis(1), |r| replies.push(r))?;
                    // Batches whose connection closed unanswered (a node went down): sent
                    // again, like refused ones (puts are idempotent).
                    for id in client.take_lost() {
                        if let Some((_, batch)) = inflight.remove(&id) {
                            retries += 1;
                            resend.push(batch);
                        }
                    }
                    for reply in replies {
                        let Reply::Reply {
                            request_id, status, ..
                        } = reply
                        else {
                            continue;
                        };
                        let Some((sent, batch)) = inflight.remove(&request_id) else {
                            continue;
                        };
                        match status {
                            ClientStatus::Ok => {
                                hist.saturating_record(micros(sent.elapsed()));
                                entries.fetch_add(batch.end - batch.start, Ordering::Relaxed);
                                requests += 1;
                            }
                            _ => {
                                retries += 1;
                                resend.push(batch);
                            }
                        }
                    }
                    if !resend.is_empty() && inflight.is_empty() {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                // Collect what is still in flight so every accepted request is accounted for.
                let deadline = Instant::now() + Duration::from_secs(5);
                while !inflight.is_empty() && Instant::now() < deadline {
                    let mut replies = Vec::new();
                    client.poll(Duration::from_millis(1), |r| replies.push(r))?;
                    for id in client.take_lost() {
                        inflight.remove(&id);
                    }
                    for reply in replies {
                        if let Reply::Reply {
                            request_id,
                            status: ClientStatus::Ok,
                            ..
                        } = reply
                        {
                            if let Some((_, batch)) = inflight.remove(&request_id) {
                                entries.fetch_add(batch.end - batch.start, Ordering::Relaxed);
                            }
                        } else {
                            inflight.remove(&reply.request_id());
                        }
                    }
                }
                merged
                    .lock()
                    .expect("histogram lock")
                    .add(&hist)
                    .expect("same bounds");
                Ok((requests, retries))
            },
        ));
    }
    let mut progress = Progress::new("throughput", cfg.duration);
    while start.elapsed() < cfg.duration {
        std::thread::sleep(Duration::from_millis(50));
        progress.tick(entries.load(Ordering::Relaxed));
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    progress.finish();
    let mut requests = 0;
    let mut retries = 0;
    for t in threads {
        let (r, x) = t.join().expect("load thread panicked")?;
        requests += r;
        retries += x;
    }
    let latency_us = Arc::try_unwrap(merged)
        .expect("threads joined")
        .into_inner()
        .expect("histogram lock");
    Ok(PhaseResult {
        entries: entries.load(Ordering::Relaxed),
        requests,
        elapsed,
        latency_us,
        retries,
    })
}

/// One client sending one 1-entry put at a time through a [`SyncClient`] (client number
/// `client_no`), each as soon as the previous one is answered, for `duration`, after one
/// untimed request that dials and finds the leader. Each latency runs from just before the
/// request is sent to its answer; the put is encoded before.
pub fn one_at_a_time(
    client: &mut SyncClient,
    client_no: u64,
    payload_bytes: usize,
    duration: Duration,
) -> Result<PhaseResult, ClientError> {
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
    let mut hist = histogram();
    // The first request dials and finds the leader: not timed.
    client.submit(
        vec![put_command(client_no, 0, payload_bytes)],
        REQUEST_TIMEOUT,
    )?;
    let mut progress = Progress::new("one client", duration);
    let start = Instant::now();
    let mut requests = 0u64;
    let mut seq = 0u64;
    while start.elapsed() < duration {
        seq += 1;
        let command = vec![put_command(client_no, seq, payload_bytes)];
        let sent = Instant::now();
        client.submit(command, REQUEST_TIMEOUT)?;
        hist.saturating_record(micros(sent.elapsed()));
        requests += 1;
        progress.tick(requests);
    }
    progress.finish();
    Ok(PhaseResult {
        entries: requests,
        requests,
        elapsed: start.elapsed(),
        latency_us: hist,
        retries: client.retries(),
    })
}

/// Open-loop probe: one request of one entry every `1/rate` seconds, each timed from
/// its intended send time, so a stall counts against every request it delayed.
pub fn open_loop(
    client: &mut Client,
    rate_per_sec: u64,
    duration: Duration,
    payload_bytes: usize,
) -> Result<PhaseResult, ClientError> {
    assert!(rate_per_sec > 0, "probe rate must be positive");
    let interval = Duration::from_nanos(1_000_000_000 / rate_per_sec);
    let mut hist = histogram();
    let mut inflight: std::collections::BTreeMap<u64, Instant> = std::collections::BTreeMap::new();
    let start = Instant::now();
    let mut next = start;
    let mut seq = 0u64;
    let mut entries = 0;
    let mut retries = 0;
    let mut progress = Progress::new("latency", duration);
    let record = |hist: &mut Histogram<u64>, intended: Instant| {
        hist.saturating_record(micros(intended.elapsed()));
    };
    while start.elapsed() < duration || !inflight.is_empty() {
        let now = Instant::now();
        if now.duration_since(start) >= duration + Duration::from_secs(5) {
            break;
        }
        while next <= now && start.elapsed() < duration {
            seq += 1;
            match client.send_submit(vec![put_command(u64::MAX, seq, payload_bytes)]) {
                Ok(id) => {
                    inflight.insert(id, next);
                }
                Err(ClientError::Send(_)) => {
                    retries += 1;
                    client.set_leader(None);
                }
                Err(e) => return Err(e),
            }
            next += interval;
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(1));
        let mut replies = Vec::new();
        client.poll(wait, |r| replies.push(r))?;
        // A request whose connection closed will not be answered: stop waiting for it (it
        // counts as unanswered).
        for id in client.take_lost() {
            inflight.remove(&id);
        }
        for reply in replies {
            let id = reply.request_id();
            let Some(intended) = inflight.remove(&id) else {
                continue;
            };
            match reply {
                Reply::Reply {
                    status: ClientStatus::Ok,
                    ..
                } => {
                    record(&mut hist, intended);
                    entries += 1;
                }
                _ => retries += 1,
            }
        }
        progress.tick(entries);
    }
    progress.finish();
    Ok(PhaseResult {
        entries,
        // Every request the schedule called for, answered or not.
        requests: seq,
        elapsed: start.elapsed(),
        latency_us: hist,
        retries,
    })
}

/// Round trip of a 64-byte message over loopback with std blocking sockets, median of
/// `rounds`, measured in this process: the baseline the commit latency is judged by.
///
/// With `pace`, each ping starts `pace` after the previous one started, as the open-loop
/// probe's requests do: on a VM an idle vCPU halts, and waking it costs far more than a
/// wake-up in a back-to-back exchange, so the paced figure is the like-for-like baseline
/// of a probe at that rate.
pub fn loopback_rtt(rounds: usize, pace: Option<Duration>) -> std::io::Result<Duration> {
    Ok(median(ping_pong(rounds, pace)?.samples))
}

/// The median of `samples` (the upper one of an even count).
///
/// # Panics
/// If `samples` is empty.
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Both ends of the ping-pong note their CPU after every this many rounds, outside the
/// timed part of the client's round.
pub const CPU_CHECK_EVERY: usize = 50;

/// A raw socket ping-pong: its round trips, and where its two ends ran. Both ends wait in
/// blocking reads, which the kernel wakes with its sync hint, so the scheduler may put
/// them on one CPU: on a VM a round trip is then several times shorter than across two
/// vCPUs (no idle vCPU to wake), which changes what the baseline measures.
#[derive(Debug, Clone, Default)]
pub struct PingPong {
    /// Every round trip, in the order measured (at least one).
    pub samples: Vec<Duration>,
    /// The round trips of the [`CPU_CHECK_EVERY`] rounds before each check that found both
    /// ends on one CPU ...
    pub one_cpu: Vec<Duration>,
    /// ... and before each check that found them on two (checks where an end could not
    /// tell its CPU count in neither). An end may move within those rounds, so this split
    /// is close, not exact.
    pub two_cpus: Vec<Duration>,
}

impl PingPong {
    /// Adds another slice's round trips and checks.
    pub fn extend(&mut self, other: PingPong) {
        self.samples.extend(other.samples);
        self.one_cpu.extend(other.one_cpu);
        self.two_cpus.extend(other.two_cpus);
    }

    /// Checks at which both ends were on the same CPU.
    pub fn same_cpu_checks(&self) -> u32 {
        checks(self.one_cpu.len())
    }

    /// Checks where both ends could tell their CPU.
    pub fn cpu_checks(&self) -> u32 {
        checks(self.one_cpu.len() + self.two_cpus.len())
    }
}

/// The checks behind `rounds` split round trips (a whole window each).
fn checks(rounds: usize) -> u32 {
    u32::try_from(rounds / CPU_CHECK_EVERY).unwrap_or(u32::MAX)
}

/// The CPU the calling thread runs on (`sched_getcpu`), or `None` where the kernel cannot
/// tell.
fn current_cpu() -> Option<u32> {
    nix::sched::sched_getcpu()
        .ok()
        .and_then(|cpu| u32::try_from(cpu).ok())
}

/// `rounds` round trips of a 64-byte message over a fresh loopback TCP connection with an
/// echo thread, each sent `pace` after the previous one's start (or back to back).
pub fn ping_pong(rounds: usize, pace: Option<Duration>) -> std::io::Result<PingPong> {
    let rounds = rounds.max(1);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<Vec<Option<u32>>> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        let mut cpus = Vec::new();
        let mut round = 0usize;
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(cpus),
                Err(e) => return Err(e),
            }
            round += 1;
            if round % CPU_CHECK_EVERY == 0 {
                cpus.push(current_cpu());
            }
        }
    });
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut buf = [7u8; 64];
    let mut samples = Vec::with_capacity(rounds);
    let mut cpus = Vec::new();
    let mut next = Instant::now();
    for round in 1..=rounds {
        if let Some(pace) = pace {
            next += pace;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        let t = Instant::now();
        s.write_all(&buf)?;
        s.read_exact(&mut buf)?;
        samples.push(t.elapsed());
        if round % CPU_CHECK_EVERY == 0 {
            cpus.push(current_cpu());
        }
    }
    drop(s);
    let echo_cpus = echo.join().expect("echo thread panicked")?;
    let mut out = PingPong {
        samples,
        ..PingPong::default()
    };
    for (window, (ours, theirs)) in out
        .samples
        .chunks_exact(CPU_CHECK_EVERY)
        .zip(cpus.iter().zip(&echo_cpus))
    {
        if let (Some(a), Some(b)) = (ours, theirs) {
            let side = if a == b {
                &mut out.one_cpu
            } else {
                &mut out.two_cpus
            };
            side.extend_from_slice(window);
        }
    }
    Ok(out)
}
