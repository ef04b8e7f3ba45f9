//! The deterministic simulator over many seeds (see `engine::sim`). 200 seeds by default;
//! `VOPR_SEEDS=5000` (and `VOPR_START`, `VOPR_TICKS`) run a longer sweep. A failing seed
//! is replayed with `cargo run --release -p tools --bin vopr -- --seed S --verbose`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use engine::sim::{run_seed, SimFailure, SimOptions};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
        Err(_) => default,
    }
}

#[test]
fn simulator_seeds_pass() {
    let seeds = env_u64("VOPR_SEEDS", 200);
    let start = env_u64("VOPR_START", 0);
    let options = SimOptions {
        fault_ticks_max: env_u64("VOPR_TICKS", SimOptions::default().fault_ticks_max),
        ..SimOptions::default()
    };
    let next = AtomicU64::new(start);
    let failures: Mutex<Vec<SimFailure>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start + seeds {
                    break;
                }
                if let Err(failure) = run_seed(seed, &options) {
                    failures.lock().expect("no poisoned lock").push(failure);
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("no poisoned lock");
    failures.sort_by_key(|f| f.seed);
    let lines: Vec<String> = failures
        .iter()
        .map(|f| {
            format!(
                "seed {} failed: {f} -- replay: {}",
                f.seed,
                f.replay_command()
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed:\n{}",
        failures.len(),
        lines.join("\n")
    );
}

#[test]
fn same_seed_same_run() {
    let options = SimOptions {
        fault_ticks_max: 600,
        trace: true,
        ..SimOptions::default()
    };
    for seed in [1, 2, 3] {
        let a = run_seed(seed, &options);
        let b = run_seed(seed, &options);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.trace, b.trace, "seed {seed} diverged");
                assert_eq!(a.ticks, b.ticks);
            }
            (Err(a), Err(b)) => assert_eq!(a.trace, b.trace, "seed {seed} diverged"),
            (a, b) => panic!(
                "seed {seed} passed once and failed once: {:?} / {:?}",
                a.err().map(|f| f.to_string()),
                b.err().map(|f| f.to_string())
            ),
        }
    }
}
