//! Crash-test child: appends and syncs to the log in `argv[1]` until killed, reporting
//! progress on stdout, one line per event, flushed before continuing:
//!
//! - `S <first> <last> <term>`: entries `first..=last` (all of `term`) are durable.
//! - `I <index>`: about to truncate after `index` (entries above may vanish from now on).
//! - `C <index>`: about to compact before `index`.
//!
//! Payloads are derived from (index, term) with [`payload`], so the parent can check
//! every entry's content after reopening.

use std::io::Write;

use storage::{Log, LogConfig};

/// The payload of entry (`index`, `term`).
pub fn payload(index: u64, term: u64) -> Vec<u8> {
    let len = ((index * 7 + term) % 97 + 1) as usize;
    (0..len)
        .map(|j| ((index ^ (term << 3)) as u8).wrapping_add(j as u8))
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: storage-crash-child DIR SEED");
    let seed: u64 = args.next().expect("seed").parse().expect("numeric seed");
    let config = LogConfig {
        segment_bytes: 128 << 10,
        payload_bytes_max: 4096,
        ..LogConfig::default()
    };
    let mut log = Log::open(&dir, config).expect("child: open log");
    let mut rng = seed | 1;
    let mut next_rand = move || {
        // xorshift64: deterministic per seed, no dependencies.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut term = log.last_term().max(1);
    loop {
        let r = next_rand();
        if r % 40 == 0 && log.last_index() > log.first_index() + 8 {
            let cut = log.last_index() - 1 - next_rand() % 6;
            writeln!(out, "I {cut}")
                .and_then(|_| out.flush())
                .expect("stdout");
            log.truncate_after(cut).expect("child: truncate");
            term += 1;
        } else if r % 97 == 1 && log.last_index() > 600 {
            let before = log.last_index() - 500;
            writeln!(out, "C {before}")
                .and_then(|_| out.flush())
                .expect("stdout");
            log.compact_before(before).expect("child: compact");
        }
        let first = log.last_index() + 1;
        let n = 1 + next_rand() % 16;
        for index in first..first + n {
            log.append_entry(term, index, &payload(index, term))
                .expect("child: append");
        }
        let durable = log.sync().expect("child: sync");
        assert_eq!(durable.index, first + n - 1);
        writeln!(out, "S {first} {} {term}", first + n - 1)
            .and_then(|_| out.flush())
            .expect("stdout");
    }
}
