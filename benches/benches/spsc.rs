//! SPSC ring vs `std::sync::mpsc::sync_channel` of the same capacity: one producer and one
//! consumer thread, pinned to different cores when possible, moving `MESSAGES` u64 values.
//! Prints messages/s for both and the ratio (target: ring >= 3x the std channel).
//!
//! Run: `cargo bench -p benches --bench spsc` (about half a minute).

use std::hint::black_box;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::spsc::{channel, Full};

/// Values moved per measured run: enough that thread start-up is noise.
const MESSAGES: u64 = 1 << 20;
/// Both queues get the same capacity (a commit ring is sized like this in tuning).
const CAPACITY: usize = 1024;

/// PAUSE instructions the ring consumer waits after finding the ring empty, and the
/// producer after finding it full (the same constant the applier's spin idle uses).
const EMPTY_POLL_PAUSES: u32 = engine::applier::SPIN_IDLE_PAUSES;

/// The two cores to pin to, read once before any thread is pinned (the affinity mask read
/// by `get_core_ids` is the calling thread's, which pinning would shrink).
fn cores() -> Option<(core_affinity::CoreId, core_affinity::CoreId)> {
    static CORES: OnceLock<Option<(core_affinity::CoreId, core_affinity::CoreId)>> =
        OnceLock::new();
    *CORES.get_or_init(|| {
        let ids = core_affinity::get_core_ids()?;
        match ids.as_slice() {
            [first, second, ..] => Some((*first, *second)),
            _ => None,
        }
    })
}

fn pin(core: Option<core_affinity::CoreId>) {
    if let Some(core) = core {
        // Falls back to unpinned: the numbers are then noisier, not wrong.
        let _ = core_affinity::set_for_current(core);
    }
}

/// Waits for the other side. Pinned to separate cores, pure spinning is what a shard and a
/// spinning applier do; a yield there would hand the core to whatever else is runnable for a
/// whole time slice. Unpinned, both threads may share a core, so yield after a short spin.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if cores().is_some() || *spins < 128 {
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

/// Runs `producer` and `consumer` on two threads pinned to different cores; returns the
/// time from both being ready until the consumer finished.
fn two_threads(
    producer: impl FnOnce() + Send + 'static,
    consumer: impl FnOnce() + Send + 'static,
) -> Duration {
    let pins = cores();
    let ready = Arc::new(Barrier::new(3));
    let producer_ready = Arc::clone(&ready);
    let consumer_ready = Arc::clone(&ready);
    let writer = thread::spawn(move || {
        pin(pins.map(|p| p.0));
        producer_ready.wait();
        producer();
    });
    let reader = thread::spawn(move || {
        pin(pins.map(|p| p.1));
        consumer_ready.wait();
        let start = Instant::now();
        consumer();
        start.elapsed()
    });
    ready.wait();
    writer.join().expect("producer thread");
    reader.join().expect("consumer thread")
}

/// Moves `MESSAGES` values through the SPSC ring; returns the elapsed time.
fn run_ring() -> Duration {
    let (mut producer, mut consumer) = channel::<u64>(CAPACITY);
    two_threads(
        move || {
            for value in 0..MESSAGES {
                let mut value = value;
                let mut spins = 0;
                while let Err(Full(back)) = producer.push(value) {
                    value = back;
                    // Same reasoning on the full side: give the consumer a batch of room.
                    for _ in 0..EMPTY_POLL_PAUSES {
                        std::hint::spin_loop();
                    }
                    backoff(&mut spins);
                }
            }
        },
        move || {
            let mut sum = 0u64;
            let mut received = 0u64;
            let mut spins = 0;
            while received < MESSAGES {
                // The applier's way of reading: everything ready, one head store per batch.
                let taken = consumer.pop_batch(|value| sum = sum.wrapping_add(value));
                if taken == 0 {
                    // Like the applier's spin idle: re-polling the producer's index in a
                    // tight loop pulls its cache line away on every push and halves the
                    // producer's speed; a short pause lets a batch build up instead.
                    for _ in 0..EMPTY_POLL_PAUSES {
                        std::hint::spin_loop();
                    }
                    backoff(&mut spins);
                } else {
                    received += taken as u64;
                    spins = 0;
                }
            }
            assert_eq!(sum, MESSAGES * (MESSAGES - 1) / 2);
            black_box(sum);
        },
    )
}

/// Moves `MESSAGES` values through a std bounded channel; returns the elapsed time.
fn run_mpsc() -> Duration {
    let (sender, receiver) = sync_channel::<u64>(CAPACITY);
    two_threads(
        move || {
            for value in 0..MESSAGES {
                sender.send(value).expect("receiver alive");
            }
        },
        move || {
            let mut sum = 0u64;
            for _ in 0..MESSAGES {
                sum = sum.wrapping_add(receiver.recv().expect("sender alive"));
            }
            assert_eq!(sum, MESSAGES * (MESSAGES - 1) / 2);
            black_box(sum);
        },
    )
}

/// Messages and time accumulated over every measured run, per queue.
static TOTALS: Mutex<[(u64, Duration); 2]> = Mutex::new([(0, Duration::ZERO); 2]);

fn measure(c: &mut Criterion) {
    // Read the core list before anything is pinned.
    let _ = cores();
    let mut group = c.benchmark_group("spsc_vs_mpsc");
    group.throughput(Throughput::Elements(MESSAGES));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    for (slot, name, run) in [
        (0, "spsc_ring", run_ring as fn() -> Duration),
        (1, "std_sync_channel", run_mpsc as fn() -> Duration),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run();
                }
                let mut totals = TOTALS.lock().expect("totals");
                totals[slot].0 += iters * MESSAGES;
                totals[slot].1 += total;
                total
            });
        });
    }
    group.finish();
    let totals = TOTALS.lock().expect("totals");
    let rate = |(messages, time): (u64, Duration)| messages as f64 / time.as_secs_f64();
    let pinned = if cores().is_some() {
        "pinned to 2 cores"
    } else {
        "unpinned"
    };
    println!(
        "criterion totals: spsc ring {:.0} messages/s, std sync_channel {:.0} messages/s \
         ({pinned}, capacity {CAPACITY})",
        rate(totals[0]),
        rate(totals[1])
    );
    // The two criterion groups run one after the other, so on a shared machine they can
    // see different load. Alternating single runs gives both the same conditions; the
    // medians of these pairs are the headline numbers.
    let mut ring = Vec::new();
    let mut mpsc = Vec::new();
    for _ in 0..PAIRS {
        ring.push(MESSAGES as f64 / run_ring().as_secs_f64());
        mpsc.push(MESSAGES as f64 / run_mpsc().as_secs_f64());
    }
    let ring = median(&mut ring);
    let mpsc = median(&mut mpsc);
    println!("spsc ring:        {ring:>12.0} messages/s (median of {PAIRS} alternating runs)");
    println!("std sync_channel: {mpsc:>12.0} messages/s");
    println!("ratio ring/std:   {:>12.2}x (target >= 3x)", ring / mpsc);
}

/// Alternating (ring, std) runs for the headline ratio.
const PAIRS: usize = 7;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

criterion_group!(benches, measure);
criterion_main!(benches);
