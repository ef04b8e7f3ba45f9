//! vopr: the deterministic Raft cluster simulator over many seeds.
//!
//! `vopr --seeds N` runs seeds `0..N` (or from `--start`), prints one line per failing
//! seed with the command that replays it, then `N seeds passed`; it exits 1 if any seed
//! failed. `vopr --seed S --verbose` replays one seed and prints its event trace.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::Parser;
use engine::sim::{self, SimFailure, SimOptions, SimReport};

#[derive(Debug, Parser)]
#[command(about = "Deterministic simulator for the Raft core: one line per failing seed")]
struct Args {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of the run.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Replay exactly this seed (overrides --seeds and --start).
    #[arg(long)]
    seed: Option<u64>,
    /// Upper bound of each seed's fault phase, in ticks.
    #[arg(long, default_value_t = SimOptions::default().fault_ticks_max)]
    ticks: u64,
    /// Print the event trace of every seed run (meant for one replayed seed).
    #[arg(long)]
    verbose: bool,
    /// Print a one-line summary of every passing seed (what it exercised).
    #[arg(long)]
    summary: bool,
    /// Skip healing and the liveness check.
    #[arg(long)]
    no_liveness: bool,
    /// Worker threads (default: available parallelism).
    #[arg(long)]
    jobs: Option<usize>,
    /// Test the checkers, not the core: a replica whose disk is wiped comes back as a
    /// fresh one instead of rejoining; failures are expected.
    #[arg(long)]
    naive_wipes: bool,
    /// Test the checkers, not the core: a replica whose log is cut after a leader change
    /// does not answer the writes whose entries the cut removed; failures are expected.
    #[arg(long)]
    silent_truncations: bool,
}

fn print_trace(trace: &[String]) {
    for line in trace {
        println!("{line}");
    }
}

fn report_failure(failure: &SimFailure) {
    println!(
        "seed {} failed: {failure} -- replay: {}",
        failure.seed,
        failure.replay_command()
    );
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = SimOptions {
        fault_ticks_max: args.ticks,
        liveness: !args.no_liveness,
        trace: args.verbose,
        naive_wipes: args.naive_wipes,
        silent_truncations: args.silent_truncations,
    };
    let (start, count) = match args.seed {
        Some(seed) => (seed, 1),
        None => (args.start, args.seeds),
    };
    if !args.verbose {
        sim::install_quiet_panic_hook();
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let began = Instant::now();
    let next = AtomicU64::new(start);
    let failures: Mutex<Vec<SimFailure>> = Mutex::new(Vec::new());
    let passed = AtomicU64::new(0);
    let print = Mutex::new(());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start.saturating_add(count) {
                    break;
                }
                let result = sim::run_seed(seed, &options);
                let _guard = print.lock().expect("no poisoned lock");
                match result {
                    Ok(report) => {
                        passed.fetch_add(1, Ordering::Relaxed);
                        if args.verbose {
                            print_trace(&report.trace);
                        }
                        if args.verbose || args.summary {
                            print_summary(&report);
                        }
                    }
                    Err(failure) => {
                        if args.verbose {
                            println!("scenario: {}", failure.scenario);
                            print_trace(&failure.trace);
                        }
                        report_failure(&failure);
                        failures.lock().expect("no poisoned lock").push(failure);
                    }
                }
            });
        }
    });
    let failed = failures.into_inner().expect("no poisoned lock").len();
    println!("{} seeds passed", passed.into_inner());
    if failed > 0 {
        println!("{failed} seeds failed");
    }
    eprintln!("({:.1} s)", began.elapsed().as_secs_f64());
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_summary(report: &SimReport) {
    println!(
        "seed {} passed: {} ticks, {} steps, {} committed, {} leader terms, {} crashes \
         ({} wiped, {} beside a rejoin, {} rejoins begun, {} done), {} partitions, {} proposals (answered {} ok, {} replaced, \
         {} outcome unknown), {} reads served, {}/{}/{} messages sent/delivered/dropped ({})",
        report.seed,
        report.ticks,
        report.stats.steps,
        report.committed,
        report.leader_terms,
        report.stats.crashes,
        report.stats.wipes,
        report.stats.wipes_beside_rejoin,
        report.stats.rejoins_begun,
        report.stats.rejoins,
        report.stats.partitions,
        report.stats.proposals_accepted,
        report.stats.answered_ok,
        report.stats.answered_replaced,
        report.stats.answered_unknown,
        report.stats.reads_served,
        report.messages_sent,
        report.messages_delivered,
        report.messages_dropped,
        report.scenario
    );
}
