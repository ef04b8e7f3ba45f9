//! Applying puts to the built-in key-value store with a working set far larger than the
//! cache, the way `raftbench` loads it (4 clients x 65,536 keys, 256 B entries, each key
//! written again only after every other key): entries applied one at a time (the baseline)
//! against the applier's way, a chunk of `PREFETCH_AHEAD` entries prefetched
//! (`StateMachine::prefetch`) and then applied. Prints both rates and the ratio.
//!
//! Run: `cargo bench -p benches --bench applier` (about half a minute; builds two stores of
//! about 100 MB each).

use std::time::{Duration, Instant};

use benches::{short_config, Mean};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::applier::{ApplyRole, StateMachine, PREFETCH_AHEAD};
use engine::kv::{Command, KvStore};

const CLIENTS: u64 = 4;
const KEYS_PER_CLIENT: u64 = 1 << 16;
const ENTRY_BYTES: usize = 256;

/// Every put of one pass over the key space, in the order the load clients interleave.
fn payloads() -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity((CLIENTS * KEYS_PER_CLIENT) as usize);
    for seq in 0..KEYS_PER_CLIENT {
        for client in 0..CLIENTS {
            let key = format!("k{client}-{seq}");
            let value = vec![b'v'; ENTRY_BYTES - (1 + 2 + key.len() + 4)];
            out.push(
                Command::Put {
                    key: key.as_bytes(),
                    value: &value,
                }
                .to_bytes(),
            );
        }
    }
    out
}

/// A store that holds every key, and where the next put goes.
struct Loaded {
    store: KvStore,
    index: u64,
}

impl Loaded {
    fn new(payloads: &[Vec<u8>]) -> Self {
        let mut loaded = Loaded {
            store: KvStore::new(),
            index: 0,
        };
        loaded.run(payloads, payloads.len() as u64, false);
        loaded
    }

    /// Applies the next `count` puts of the cycle, prefetching each chunk first or not.
    fn run(&mut self, payloads: &[Vec<u8>], count: u64, prefetch: bool) {
        let cycle = payloads.len() as u64;
        let mut done = 0;
        while done < count {
            let chunk = PREFETCH_AHEAD.min(count - done);
            let at = |i: u64| &payloads[((self.index + i) % cycle) as usize];
            if prefetch {
                for i in 1..=chunk {
                    self.store.prefetch(at(i));
                }
            }
            for i in 1..=chunk {
                let index = self.index + i;
                self.store.apply(ApplyRole::Follower, index, 1, at(i));
            }
            self.index += chunk;
            done += chunk;
        }
    }
}

fn measure(c: &mut Criterion) {
    let payloads = payloads();
    let mut g = c.benchmark_group("kv_apply_262k_keys");
    g.throughput(Throughput::Elements(1));
    let (plain, prefetched) = (Mean::default(), Mean::default());
    for (name, prefetch, mean) in [
        ("one_at_a_time", false, plain.clone()),
        ("prefetched_chunks", true, prefetched.clone()),
    ] {
        let mut loaded = Loaded::new(&payloads);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                loaded.run(&payloads, iters, prefetch);
                mean.add(iters, t.elapsed())
            })
        });
    }
    g.finish();
    if !plain.is_empty() && !prefetched.is_empty() {
        let (p, f) = (plain.per_iter_ns(), prefetched.per_iter_ns());
        println!(
            "RATIO kv_apply_262k_keys: one at a time {:.0} ns/entry, prefetched chunks of {} {:.0} ns/entry, prefetched/one-at-a-time rate = {:.2}x",
            p,
            PREFETCH_AHEAD,
            f,
            p / f
        );
    }
}

criterion_group! {
    name = benches;
    config = short_config(Duration::from_secs(4));
    targets = measure
}
criterion_main!(benches);
