//! raftbench: load and latency probes against a cluster, with the strict replication
//! check our users' old systems failed.
//!
//! ```text
//! raftbench local                  # 3 raftd processes from the embedded tuning/local.toml,
//!                                  # ~10 s of load, figures, graceful stop, exit 0 iff converged
//! raftbench local --runs 10        # the replication test 10 times, with the spread
//! raftbench local --fsync off --json
//! raftbench run --tuning FILE      # against a running cluster
//! ```
//!
//! Each run: a closed-loop throughput phase (clients x window x batch entries in flight;
//! with several shards, client `c` writes to shard `c % shards`), follower apply lag
//! sampled meanwhile, then the load stops and, in every shard, every follower must have
//! applied 100% of its leader's committed entries within 1 s; then an open-loop latency
//! probe (one entry per request at a fixed rate, timed from the intended send time); a
//! raw-socket loopback ping-pong (the latency baseline, measured in the same run) in
//! alternating slices with one synchronous client (a blocking socket to the leader, like
//! the ping-pong's) sending one 1-entry request at a time; and a
//! convergence check (applied index and state hash equal on every node, per shard). The
//! probe and the one-client phase use shard 0.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use engine::client::{client_members, Client, SyncClient};
use engine::node::ShardReport;
use engine::tuning::{self, LOCAL_TOML};
use hdrhistogram::Histogram;
use net::PeerConfig;
use serde::Serialize;
use tools::cpu::{self, CpuTimes};
use tools::launcher::{Cluster, CLIENT_ID_BASE};
use tools::load::{self, ClosedLoop};

#[derive(Debug, Parser)]
#[command(
    name = "raftbench",
    about = "Load, latency probes and convergence checks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Fsync {
    /// As the tuning file says.
    File,
    On,
    Off,
}

#[derive(Debug, Clone, clap::Args)]
struct LoadArgs {
    /// Seconds of closed-loop load per run.
    #[arg(long, default_value_t = 10.0, value_parser = seconds_above_zero, allow_negative_numbers = true)]
    seconds: f64,
    /// Client connections (comma-separated for a sweep, e.g. 1,2,4).
    #[arg(long, value_delimiter = ',', default_value = "4", value_parser = at_least_one)]
    clients: Vec<usize>,
    /// Requests in flight per client.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    window: usize,
    /// Entries per request.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    batch: usize,
    /// Bytes per entry (at least the size of the load's longest put with an empty value).
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Open-loop probe rate in requests (of one entry) per second.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=PROBE_RATE_MAX))]
    probe_rate: u64,
    /// Seconds of open-loop probing per run (0 skips it).
    #[arg(long, default_value_t = 3.0, value_parser = seconds_or_zero, allow_negative_numbers = true)]
    probe_seconds: f64,
    /// Seconds per run of one synchronous client (a blocking socket to the leader) sending
    /// one 1-entry request at a time, timed against a raw socket ping-pong measured in
    /// alternating slices with it (0 skips it).
    #[arg(long, default_value_t = 2.0, value_parser = seconds_or_zero, allow_negative_numbers = true)]
    one_client_seconds: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start a local 3-node cluster of raftd processes, load it, check it, stop it.
    Local {
        /// Local-cluster tuning file (default: the embedded tuning/local.toml).
        #[arg(long)]
        tuning: Option<PathBuf>,
        /// Override the tuning file's durability.
        #[arg(long, value_enum, default_value_t = Fsync::File)]
        fsync: Fsync,
        /// Independent runs, each on a fresh cluster.
        #[arg(long, default_value_t = 1, value_parser = at_least_one)]
        runs: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Load a running cluster described by a cluster or local-cluster file.
    Run {
        #[arg(long)]
        tuning: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Run one node (what the raftd binary does); `local` starts its nodes this way.
    Raftd(tools::raftd::Args),
}

/// Longest phase a flag may ask for: a day.
const SECONDS_MAX: f64 = 86_400.0;

/// Fastest open-loop probe: one request a microsecond.
const PROBE_RATE_MAX: u64 = 1_000_000;

/// A count of at least 1 (`--runs`, `--clients`, `--window`, `--batch`).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

fn seconds(text: &str, zero_ok: bool) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|e| format!("not a number of seconds: {e}"))?;
    let low = if zero_ok { "0 or more" } else { "above 0" };
    if !v.is_finite() || v < 0.0 || (v == 0.0 && !zero_ok) || v > SECONDS_MAX {
        return Err(format!("must be {low} and at most {SECONDS_MAX} seconds"));
    }
    Ok(v)
}

/// A phase that must run (`--seconds`).
fn seconds_above_zero(text: &str) -> Result<f64, String> {
    seconds(text, false)
}

/// A phase that 0 skips (`--probe-seconds`, `--one-client-seconds`).
fn seconds_or_zero(text: &str) -> Result<f64, String> {
    seconds(text, true)
}

/// What the flags ask of a cluster with `cluster`'s limits, checked before any load: an
/// entry must hold the load's longest put, and a request of `--batch` entries must fit one
/// frame (a client cannot send a larger one, and would retry it forever).
fn check_load(args: &LoadArgs, cluster: &tuning::ClusterConfig) -> Result<(), String> {
    let min = load::payload_bytes_min();
    if args.payload < min {
        return Err(format!(
            "--payload {}: a put of the load's longest key with an empty value takes {min} \
             bytes; use --payload {min} or more",
            args.payload
        ));
    }
    let frame_max = cluster.replication.frame_bytes_max as usize;
    let request = args.batch.saturating_mul(args.payload);
    let fits = request <= frame_max && {
        let submit = net::wire::ClientMessage::Submit {
            request_id: u64::MAX,
            payloads: vec![vec![0u8; args.payload]; args.batch],
        };
        net::wire::encode_frame(&mut Vec::new(), u32::MAX, &submit, &[], frame_max).is_ok()
    };
    if !fits {
        return Err(format!(
            "--batch {} x --payload {}: a request of {} entries of {} bytes does not fit the \
             cluster's frame limit of {frame_max} bytes (replication.frame_bytes_max)",
            args.batch, args.payload, args.batch, args.payload
        ));
    }
    Ok(())
}

/// The one-client phase alternates with the ping-pong it is compared with, in this many
/// slices of each.
const ONE_CLIENT_SLICES: usize = 4;
/// The one-client target with fsync off: p50 at most this many loopback round trips.
const ONE_CLIENT_TARGET_RTTS: f64 = 3.0;

/// How long followers get to apply everything once the load stops.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(1);

#[derive(Debug, Serialize)]
struct Latency {
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    count: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            count: h.len(),
        }
    }

    /// "p50 .. p99 .. p99.9 .. max .." with units.
    fn percentiles(&self) -> String {
        format!(
            "p50 {} p99 {} p99.9 {} max {}",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us)
        )
    }
}

#[derive(Debug, Serialize)]
struct SweepPoint {
    clients: usize,
    entries_per_sec: f64,
    mb_per_sec: f64,
    latency: Latency,
    retries: u64,
}

/// How much of this machine the closed-loop load used, from `/proc/stat`: every process
/// counts, so on a machine running only the benchmark (as `local` does) this is the cost
/// of the whole cluster and its clients.
#[derive(Debug, Serialize)]
struct LoadCpu {
    busy_percent: f64,
    /// CPU time the hypervisor gave to someone else while this VM had work.
    steal_percent: f64,
    /// Busy CPU time per committed entry: moves far less with a shared host's load than
    /// entries/s does.
    busy_us_per_entry: f64,
}

impl LoadCpu {
    fn of(used: CpuTimes, entries: u64) -> LoadCpu {
        LoadCpu {
            busy_percent: used.busy_fraction() * 100.0,
            steal_percent: used.steal_fraction() * 100.0,
            busy_us_per_entry: used.busy_time(cpu::clock_tick()).as_secs_f64() * 1e6
                / entries.max(1) as f64,
        }
    }
}

#[derive(Debug, Serialize)]
struct FollowerCatchUp {
    node: u64,
    applied: u64,
    percent_of_leader: f64,
    caught_up_ms: Option<u64>,
}

/// The strict check and convergence of one shard (its own Raft group).
#[derive(Debug, Serialize)]
struct ShardCheck {
    shard: u32,
    leader: u64,
    leader_committed: u64,
    followers: Vec<FollowerCatchUp>,
    all_followers_caught_up: bool,
    converged: bool,
    state_hashes: Vec<(u64, u64)>,
}

#[derive(Debug, Serialize)]
struct RunReport {
    run: usize,
    loopback_rtt_us: f64,
    /// Checks (every `load::CPU_CHECK_EVERY` rounds of the ping-pong) at which its two
    /// ends were on one CPU, where a round trip is much shorter on a VM.
    loopback_same_cpu_checks: u32,
    /// Checks made.
    loopback_cpu_checks: u32,
    /// The median round trip over the rounds before checks that found both ends on one
    /// CPU, and before those that found them on two (`load::PingPong`); none without
    /// such checks.
    loopback_rtt_one_cpu_us: Option<f64>,
    loopback_rtt_two_cpus_us: Option<f64>,
    /// The same ping-pong paced at the probe's rate (see `load::loopback_rtt`).
    loopback_rtt_paced_us: Option<f64>,
    sweep: Vec<SweepPoint>,
    entries_per_sec: f64,
    mb_per_sec: f64,
    commit_latency: Latency,
    probe: Option<Latency>,
    probe_p50_over_rtt: Option<f64>,
    probe_p50_over_paced_rtt: Option<f64>,
    /// Probe requests refused (Busy, redirect), not sent (queue full) or unanswered: the
    /// percentiles lack their latency.
    probe_unanswered: u64,
    /// One synchronous client, one 1-entry request in flight, closed loop.
    one_client: Option<Latency>,
    one_client_p50_over_rtt: Option<f64>,
    /// Against the ping-pong's round trip across two CPUs, where each of its hops wakes a
    /// thread on the other CPU as the cluster's do: what the ratio above means when the
    /// ping-pong mostly ran on one CPU. Reported beside the target, not instead of it.
    one_client_p50_over_two_cpu_rtt: Option<f64>,
    entries_per_append: f64,
    /// This machine's CPUs over the closed-loop load (with `local`, the whole cluster's).
    load_cpu: Option<LoadCpu>,
    follower_apply_lag_max: u64,
    /// Submits the leaders held for lagging appliers during the run.
    writes_held: u64,
    /// Every shard's check; the load is spread over all of them (client `c` writes to
    /// shard `c % shards`), the probe and the one-client phase use shard 0.
    shards: Vec<ShardCheck>,
    /// Every follower of every shard applied all its leader's commits within 1 s.
    all_followers_caught_up: bool,
    /// Every shard converged.
    converged: bool,
    clean_shutdown: Option<bool>,
}

impl RunReport {
    /// Whether the load got anything committed: without it the catch-up and convergence
    /// checks hold trivially and prove nothing.
    fn loaded(&self) -> bool {
        self.entries_per_sec > 0.0
    }

    /// Whether the ping-pong's two ends were on one CPU at most of its checks.
    fn ping_pong_mostly_on_one_cpu(&self) -> bool {
        self.loopback_same_cpu_checks * 2 > self.loopback_cpu_checks
    }
}

#[derive(Debug, Serialize)]
struct Summary {
    command: String,
    fsync: bool,
    payload_bytes: usize,
    batch: usize,
    window: usize,
    runs: Vec<RunReport>,
    /// The one-client target over the runs; none without a one-client phase.
    one_client: Option<OneClientSpread>,
    passed: bool,
}

impl Summary {
    fn new(
        command: &str,
        fsync: bool,
        args: &LoadArgs,
        runs: Vec<RunReport>,
        passed: bool,
    ) -> Summary {
        Summary {
            command: command.into(),
            fsync,
            payload_bytes: args.payload,
            batch: args.batch,
            window: args.window,
            one_client: OneClientSpread::of(&runs),
            runs,
            passed,
        }
    }
}

/// Over the runs with a one-client phase: how many met the target, how many of those
/// runs had a ping-pong mostly on one CPU, and how many were within the target of the
/// round trip across two CPUs (of the runs that measured one).
#[derive(Debug, Serialize)]
struct OneClientSpread {
    runs: usize,
    within_target: usize,
    ping_pong_mostly_on_one_cpu: usize,
    runs_with_two_cpu_rtt: usize,
    within_target_of_two_cpu_rtt: usize,
}

impl OneClientSpread {
    fn of(runs: &[RunReport]) -> Option<OneClientSpread> {
        let within = |ratio: Option<f64>| ratio.is_some_and(|x| x <= ONE_CLIENT_TARGET_RTTS);
        let measured: Vec<&RunReport> = runs.iter().filter(|r| r.one_client.is_some()).collect();
        if measured.is_empty() {
            return None;
        }
        let count = |f: &dyn Fn(&RunReport) -> bool| measured.iter().filter(|r| f(r)).count();
        Some(OneClientSpread {
            runs: measured.len(),
            within_target: count(&|r| within(r.one_client_p50_over_rtt)),
            ping_pong_mostly_on_one_cpu: count(&|r| r.ping_pong_mostly_on_one_cpu()),
            runs_with_two_cpu_rtt: count(&|r| r.loopback_rtt_two_cpus_us.is_some()),
            within_target_of_two_cpu_rtt: count(&|r| within(r.one_client_p50_over_two_cpu_rtt)),
        })
    }

    fn line(&self) -> String {
        let two_cpus = if self.runs_with_two_cpu_rtt == 0 {
            "no run's ping-pong crossed CPUs at a check".to_owned()
        } else {
            format!(
                "within {ONE_CLIENT_TARGET_RTTS}x its round trip across two CPUs in {}/{} runs",
                self.within_target_of_two_cpu_rtt, self.runs_with_two_cpu_rtt
            )
        };
        format!(
            "one client: p50 within {ONE_CLIENT_TARGET_RTTS}x the loopback RTT in {}/{} runs \
             (the ping-pong on one CPU at most checks in {} of them); {two_cpus}",
            self.within_target, self.runs, self.ping_pong_mostly_on_one_cpu,
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Raftd(args) => tools::raftd::main_with(args),
        Cmd::Local {
            tuning,
            fsync,
            runs,
            load,
        } => finish(local(tuning.as_deref(), fsync, runs, &load), load.json),
        Cmd::Run { tuning, load } => finish(remote(&tuning, &load), load.json),
    }
}

fn finish(result: Result<Summary, String>, json: bool) -> ExitCode {
    match result {
        Ok(summary) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).expect("serializes")
                );
            } else {
                print_summary(&summary);
            }
            if summary.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("raftbench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Lines of each node's log a failed run's message ends with.
const LOG_TAIL_LINES: usize = 40;

fn local(
    tuning_path: Option<&Path>,
    fsync: Fsync,
    runs: usize,
    args: &LoadArgs,
) -> Result<Summary, String> {
    let mut text = match tuning_path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => LOCAL_TOML.to_owned(),
    };
    match fsync {
        Fsync::File => {}
        Fsync::On => text = text.replace("fsync = false", "fsync = true"),
        Fsync::Off => text = text.replace("fsync = true", "fsync = false"),
    }
    let parsed = tuning::LocalCluster::parse(
        &tuning_path.map_or("tuning/local.toml".into(), |p| p.display().to_string()),
        &text,
        None,
    )
    .map_err(|e| e.to_string())?;
    check_load(args, &parsed.cluster)?;
    let me = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut reports = Vec::new();
    let mut fsync_on = true;
    for run in 1..=runs {
        let mut cluster = Cluster::start_with(&me, &["raftd"], &text).map_err(|e| e.to_string())?;
        fsync_on = cluster.tuning.cluster.durability.fsync;
        let c = cluster.tuning.cluster.clone();
        let target = Target {
            cluster: &c,
            id_base: CLIENT_ID_BASE,
        };
        let mut admin = target
            .client(run as u64 * 1000)
            .map_err(|e| e.to_string())?;
        admin
            .wait_connected(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        for shard in 0..c.shards.count {
            admin.set_shard(shard);
            cluster
                .wait_leader(&mut admin, Duration::from_secs(20))
                .map_err(|e| format!("shard {shard}: {e}"))?;
        }
        // The nodes' logs go with the cluster's temporary directory: a failed run keeps
        // their ends in its message.
        let mut report = one_run(run, &target, &mut admin, args)
            .map_err(|e| format!("run {run}: {e}\n{}", cluster.log_tails(LOG_TAIL_LINES)))?;
        let exits = cluster
            .stop_all(Duration::from_secs(20))
            .map_err(|e| e.to_string())?;
        report.clean_shutdown = Some(exits.iter().all(|e| e.success));
        if !args.json {
            print_run(&report);
        }
        reports.push(report);
    }
    let passed = reports.iter().all(|r| {
        r.loaded() && r.converged && r.all_followers_caught_up && r.clean_shutdown != Some(false)
    });
    Ok(Summary::new("local", fsync_on, args, reports, passed))
}

fn remote(path: &Path, args: &LoadArgs) -> Result<Summary, String> {
    let set = tuning::validate_files_with(&[path], None).map_err(|e| e.to_string())?;
    let c = set.cluster;
    check_load(args, &c)?;
    let members = client_members(&c);
    let target = Target {
        cluster: &c,
        id_base: CLIENT_ID_BASE + (u64::from(std::process::id()) << 16),
    };
    let mut admin = target.client(999).map_err(|e| e.to_string())?;
    let wait = Duration::from_secs(10);
    let up = admin.wait_connected(wait).map_err(|e| e.to_string())?;
    if up == 0 {
        let addrs: Vec<String> = members.iter().map(|m| m.addr.to_string()).collect();
        return Err(format!(
            "{}: none of the {} members answered at its client address ({}) within {wait:?}; \
             is the cluster running?",
            path.display(),
            members.len(),
            addrs.join(", ")
        ));
    }
    let report = one_run(1, &target, &mut admin, args)?;
    if !args.json {
        print_run(&report);
    }
    let passed = report.loaded() && report.converged && report.all_followers_caught_up;
    Ok(Summary::new(
        "run",
        c.durability.fsync,
        args,
        vec![report],
        passed,
    ))
}

/// The cluster a run loads, and the first of the client ids it may use (each client
/// of a cluster needs its own).
struct Target<'a> {
    cluster: &'a tuning::ClusterConfig,
    id_base: u64,
}

impl Target<'_> {
    /// A pipelined client, connected to every member.
    fn client(&self, id: u64) -> Result<Client, engine::client::ClientError> {
        Client::connect_cluster(self.cluster, self.id_base + id)
    }

    /// A synchronous client (it dials on its first request).
    fn sync_client(&self, id: u64) -> SyncClient {
        SyncClient::for_cluster(self.cluster, self.id_base + id)
    }
}

/// Every member's report for `shard` (members that do not answer are left out).
fn statuses(admin: &mut Client, members: &[PeerConfig], shard: u32) -> Vec<ShardReport> {
    admin.set_shard(shard);
    members
        .iter()
        .filter_map(|m| admin.status(m.node_id, Duration::from_millis(500)).ok())
        .collect()
}

/// Every member's report for every shard.
fn all_statuses(admin: &mut Client, members: &[PeerConfig], shards: u32) -> Vec<ShardReport> {
    (0..shards)
        .flat_map(|shard| statuses(admin, members, shard))
        .collect()
}

/// A load client for client number `c`: it writes to shard `c % shards` (`shards` >= 1).
fn on_shard(
    client: Result<Client, engine::client::ClientError>,
    c: u64,
    shards: u32,
) -> Result<Client, engine::client::ClientError> {
    let mut client = client?;
    client.set_shard((c % u64::from(shards)) as u32);
    Ok(client)
}

/// Append messages and entries sent, and writes held, summed over `reports`.
fn counters(reports: &[ShardReport]) -> (u64, u64, u64) {
    reports.iter().fold((0, 0, 0), |a, r| {
        (
            a.0 + r.append_msgs_sent,
            a.1 + r.append_entries_sent,
            a.2 + r.writes_held,
        )
    })
}

fn one_run(
    run: usize,
    target: &Target<'_>,
    admin: &mut Client,
    args: &LoadArgs,
) -> Result<RunReport, String> {
    let members = &client_members(target.cluster)[..];
    let shards = target.cluster.shards.count.max(1);
    let connect = |id: u64| target.client(id);
    let before = counters(&all_statuses(admin, members, shards));

    // Closed-loop phases (one per client count), with the apply lag sampled meanwhile.
    let total = Duration::from_secs_f64(args.seconds);
    // Unreadable counters (not Linux, /proc not mounted) leave the CPU line out, nothing else.
    let cpu_before = CpuTimes::now()
        .inspect_err(|e| eprintln!("raftbench: no CPU accounting for run {run}: {e}"))
        .ok();
    let per_point = total / args.clients.len() as u32;
    let mut sweep = Vec::new();
    let mut merged = load::histogram();
    let (mut entries, mut elapsed) = (0u64, Duration::ZERO);
    let mut lag_max = 0u64;
    for (i, &clients) in args.clients.iter().enumerate() {
        let sampler = LagSampler::start(
            connect((run * 100 + i) as u64 + 500),
            members.to_vec(),
            shards,
        );
        let cfg = ClosedLoop {
            clients,
            window: args.window,
            batch: args.batch,
            payload_bytes: args.payload,
            duration: per_point,
        };
        let offset = (run * 100 + i * 10) as u64;
        let result = load::closed_loop(|c| on_shard(connect(offset + c), c, shards), cfg)
            .map_err(|e| e.to_string())?;
        lag_max = lag_max.max(sampler.stop());
        let eps = result.entries_per_sec();
        sweep.push(SweepPoint {
            clients,
            entries_per_sec: eps,
            mb_per_sec: eps * args.payload as f64 / 1e6,
            latency: Latency::of(&result.latency_us),
            retries: result.retries,
        });
        merged.add(&result.latency_us).expect("same bounds");
        entries += result.entries;
        elapsed += result.elapsed;
    }

    let load_cpu = cpu_before
        .zip(CpuTimes::now().ok())
        .map(|(before, after)| LoadCpu::of(before.until(&after), entries));

    // The strict check: load has stopped; every follower of every shard applies all of
    // its leader's committed entries within CATCH_UP_LIMIT.
    let stopped = Instant::now();
    let mut checks = Vec::new();
    for shard in 0..shards {
        let (leader, leader_committed) = loop {
            let now = statuses(admin, members, shard);
            if let Some(l) = now.iter().find(|r| r.is_leader()) {
                break (l.node_id, l.commit);
            }
            if stopped.elapsed() > Duration::from_secs(5) {
                return Err(format!("shard {shard}: no leader after the load stopped"));
            }
        };
        checks.push(ShardCheck {
            shard,
            leader,
            leader_committed,
            followers: members
                .iter()
                .filter(|m| m.node_id != leader)
                .map(|m| FollowerCatchUp {
                    node: m.node_id,
                    applied: 0,
                    percent_of_leader: 0.0,
                    caught_up_ms: None,
                })
                .collect(),
            all_followers_caught_up: false,
            converged: false,
            state_hashes: Vec::new(),
        });
    }
    loop {
        for check in &mut checks {
            if check.followers.iter().all(|f| f.caught_up_ms.is_some()) {
                continue;
            }
            let now = statuses(admin, members, check.shard);
            for f in &mut check.followers {
                if let Some(r) = now.iter().find(|r| r.node_id == f.node) {
                    f.applied = r.applied;
                    f.percent_of_leader =
                        100.0 * r.applied as f64 / check.leader_committed.max(1) as f64;
                    if r.applied >= check.leader_committed && f.caught_up_ms.is_none() {
                        f.caught_up_ms = Some(stopped.elapsed().as_millis() as u64);
                    }
                }
            }
        }
        let done = checks
            .iter()
            .all(|c| c.followers.iter().all(|f| f.caught_up_ms.is_some()));
        if done || stopped.elapsed() > CATCH_UP_LIMIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for check in &mut checks {
        check.all_followers_caught_up = check.followers.iter().all(|f| {
            f.caught_up_ms
                .is_some_and(|ms| ms <= CATCH_UP_LIMIT.as_millis() as u64)
        });
    }
    let leader = checks[0].leader;

    // Open-loop latency probe with a single client.
    let mut probe_unanswered = 0;
    let probe = if args.probe_seconds > 0.0 {
        let mut client = connect((run * 100 + 99) as u64).map_err(|e| e.to_string())?;
        client
            .wait_connected(Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        client.set_leader(Some(leader));
        let r = load::open_loop(
            &mut client,
            args.probe_rate,
            Duration::from_secs_f64(args.probe_seconds),
            args.payload,
        )
        .map_err(|e| e.to_string())?;
        probe_unanswered = r.requests.saturating_sub(r.entries);
        Some(Latency::of(&r.latency_us))
    } else {
        None
    };

    // The raw socket ping-pong and one client doing the same with the cluster (one 1-entry
    // request at a time, each sent as soon as the previous one is answered), in alternating
    // slices, so that both see the VM in the same state. The client waits in a blocking
    // `recv`, as the ping-pong's ends do, so the ratio is the cluster's cost, not the
    // client's (`engine::client::SyncClient`).
    let (ping_pong, one_client) = if args.one_client_seconds > 0.0 {
        let slice = Duration::from_secs_f64(args.one_client_seconds / ONE_CLIENT_SLICES as f64);
        let mut ping_pong = load::PingPong::default();
        let mut hist = load::histogram();
        for s in 0..ONE_CLIENT_SLICES {
            ping_pong
                .extend(load::ping_pong(500, None).map_err(|e| format!("loopback baseline: {e}"))?);
            let offset = (run * 100 + 90 + s) as u64;
            let mut client = target.sync_client(offset);
            let r = load::one_at_a_time(&mut client, offset, args.payload, slice)
                .map_err(|e| format!("one client: {e}"))?;
            hist.add(&r.latency_us).expect("same bounds");
        }
        (ping_pong, Some(Latency::of(&hist)))
    } else {
        let ping_pong =
            load::ping_pong(2000, None).map_err(|e| format!("loopback baseline: {e}"))?;
        (ping_pong, None)
    };
    let ping_pong_cpus = (ping_pong.same_cpu_checks(), ping_pong.cpu_checks());
    let median_us = |samples: Vec<Duration>| {
        (!samples.is_empty()).then(|| load::median(samples).as_secs_f64() * 1e6)
    };
    let one_cpu_rtt_us = median_us(ping_pong.one_cpu);
    let two_cpu_rtt_us = median_us(ping_pong.two_cpus);
    let rtt = load::median(ping_pong.samples);

    // Convergence: in every shard, every node's applied index and state hash equal the
    // leader's.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = Vec::new();
    for check in &mut checks {
        let now = loop {
            let now = statuses(admin, members, check.shard);
            let leader_r = now.iter().find(|r| r.is_leader()).cloned();
            check.converged = now.len() == members.len()
                && leader_r.as_ref().is_some_and(|l| {
                    now.iter()
                        .all(|r| r.applied == l.commit && r.state_hash == l.state_hash)
                });
            if check.converged || Instant::now() > deadline {
                break now;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        check.state_hashes = now.iter().map(|r| (r.node_id, r.state_hash)).collect();
        after.extend(now);
    }
    let after = counters(&after);
    let writes_held = after.2.saturating_sub(before.2);
    let msgs = after.0.saturating_sub(before.0);
    let sent = after.1.saturating_sub(before.1);

    let eps = entries as f64 / elapsed.as_secs_f64().max(1e-9);
    let rtt_us = rtt.as_secs_f64() * 1e6;
    // Paced like the probe, over at most a second.
    let paced_rtt_us = match &probe {
        Some(_) => {
            let pace = Duration::from_nanos(1_000_000_000 / args.probe_rate.max(1));
            let rounds = args.probe_rate.clamp(100, 1000) as usize;
            let paced = load::loopback_rtt(rounds, Some(pace))
                .map_err(|e| format!("paced loopback baseline: {e}"))?;
            Some(paced.as_secs_f64() * 1e6)
        }
        None => None,
    };
    Ok(RunReport {
        run,
        loopback_rtt_us: rtt_us,
        loopback_same_cpu_checks: ping_pong_cpus.0,
        loopback_cpu_checks: ping_pong_cpus.1,
        loopback_rtt_one_cpu_us: one_cpu_rtt_us,
        loopback_rtt_two_cpus_us: two_cpu_rtt_us,
        loopback_rtt_paced_us: paced_rtt_us,
        probe_p50_over_paced_rtt: probe
            .as_ref()
            .zip(paced_rtt_us)
            .map(|(p, paced)| p.p50_us as f64 / paced.max(1e-3)),
        sweep,
        entries_per_sec: eps,
        mb_per_sec: eps * args.payload as f64 / 1e6,
        commit_latency: Latency::of(&merged),
        probe_p50_over_rtt: probe.as_ref().map(|p| p.p50_us as f64 / rtt_us.max(1e-3)),
        probe_unanswered,
        probe,
        one_client_p50_over_rtt: one_client
            .as_ref()
            .map(|p| p.p50_us as f64 / rtt_us.max(1e-3)),
        one_client_p50_over_two_cpu_rtt: one_client
            .as_ref()
            .zip(two_cpu_rtt_us)
            .map(|(p, two)| p.p50_us as f64 / two.max(1e-3)),
        one_client,
        entries_per_append: sent as f64 / msgs.max(1) as f64,
        load_cpu,
        follower_apply_lag_max: lag_max,
        writes_held,
        all_followers_caught_up: checks.iter().all(|c| c.all_followers_caught_up),
        converged: checks.iter().all(|c| c.converged),
        shards: checks,
        clean_shutdown: None,
    })
}

/// Samples `leader commit - follower applied` (every shard's) on a thread while load runs.
struct LagSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl LagSampler {
    fn start(
        client: Result<Client, engine::client::ClientError>,
        members: Vec<PeerConfig>,
        shards: u32,
    ) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let Ok(mut client) = client else { return 0 };
            let _ = client.wait_connected(Duration::from_secs(5));
            let mut max = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for shard in 0..shards {
                    let now = statuses(&mut client, &members, shard);
                    if let Some(l) = now.iter().find(|r| r.is_leader()) {
                        for r in now.iter().filter(|r| !r.is_leader()) {
                            max = max.max(l.commit.saturating_sub(r.applied));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            max
        });
        LagSampler { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

fn ms(us: u64) -> String {
    if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

fn print_run(r: &RunReport) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "run {}:", r.run);
    for p in &r.sweep {
        let _ = writeln!(
            out,
            "  {:>3} clients: {:>10.0} entries/s {:>7.1} MB/s   commit latency {}   retried (Busy/redirect) {}",
            p.clients,
            p.entries_per_sec,
            p.mb_per_sec,
            p.latency.percentiles(),
            p.retries
        );
    }
    let _ = writeln!(
        out,
        "  throughput {:.0} entries/s ({:.1} MB/s), {:.1} entries per AppendEntries, follower apply lag max {} entries, writes held for appliers {}",
        r.entries_per_sec, r.mb_per_sec, r.entries_per_append, r.follower_apply_lag_max, r.writes_held
    );
    if let Some(c) = &r.load_cpu {
        let _ = writeln!(
            out,
            "  CPU under load (all of this machine): {:.1}% busy, {:.1}% stolen by the hypervisor, {:.2} busy CPU-µs per committed entry",
            c.busy_percent, c.steal_percent, c.busy_us_per_entry
        );
    }
    if !r.loaded() {
        let _ = writeln!(
            out,
            "  nothing was committed under load, so the checks below prove nothing: this run fails"
        );
    }
    if let Some(p) = &r.probe {
        let _ = writeln!(
            out,
            "  open-loop probe: {} ({} requests); loopback RTT {:.1} µs, p50 = {:.1}x RTT",
            p.percentiles(),
            p.count,
            r.loopback_rtt_us,
            r.probe_p50_over_rtt.unwrap_or(0.0)
        );
        if let (Some(paced), Some(ratio)) = (r.loopback_rtt_paced_us, r.probe_p50_over_paced_rtt) {
            let _ = writeln!(
                out,
                "  (the same ping-pong paced at the probe's rate: RTT {paced:.1} µs, p50 = {ratio:.1}x that; an idle vCPU is slow to wake)"
            );
        }
        if r.probe_unanswered > 0 {
            let _ = writeln!(
                out,
                "  {} of the probe's requests were refused (Busy, redirect), not sent (queue full) or not answered: the percentiles above lack them",
                r.probe_unanswered
            );
        }
    }
    if let (Some(p), Some(ratio)) = (&r.one_client, r.one_client_p50_over_rtt) {
        let _ = writeln!(
            out,
            "  one synchronous client, one 1-entry request at a time: {} ({} requests); p50 = {ratio:.1}x the loopback RTT of {:.1} µs (target with fsync off: <= {ONE_CLIENT_TARGET_RTTS}x)",
            p.percentiles(),
            p.count,
            r.loopback_rtt_us,
        );
        let mut split = String::new();
        if let Some(one) = r.loopback_rtt_one_cpu_us {
            split = format!("; its round trip {one:.1} µs on one CPU");
        }
        if let (Some(two), Some(ratio)) = (
            r.loopback_rtt_two_cpus_us,
            r.one_client_p50_over_two_cpu_rtt,
        ) {
            let lead = if split.is_empty() {
                "; its round trip"
            } else {
                ","
            };
            split = format!("{split}{lead} {two:.1} µs across two, p50 = {ratio:.1}x that");
        }
        let _ = writeln!(
            out,
            "  (the ping-pong's two ends were on one CPU at {} of {} checks{split}{})",
            r.loopback_same_cpu_checks,
            r.loopback_cpu_checks,
            if r.ping_pong_mostly_on_one_cpu() {
                ": on one CPU a round trip skips waking an idle vCPU, which every hop of a request pays"
            } else {
                ""
            }
        );
    }
    for c in &r.shards {
        let shard = if r.shards.len() > 1 {
            format!("shard {}: ", c.shard)
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "  {shard}leader {} committed {}",
            c.leader, c.leader_committed
        );
        for f in &c.followers {
            let _ = write!(
                out,
                "; follower {} applied {} ({:.2}%{})",
                f.node,
                f.applied,
                f.percent_of_leader,
                f.caught_up_ms.map_or_else(
                    || ", NOT within 1 s".to_owned(),
                    |ms| format!(" after {ms} ms")
                )
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  {shard}convergence: {} {:?}",
            if c.converged { "OK" } else { "FAILED" },
            c.state_hashes
                .iter()
                .map(|(n, h)| format!("{n}:{h:016x}"))
                .collect::<Vec<_>>(),
        );
    }
    match r.clean_shutdown {
        Some(true) => {
            let _ = writeln!(out, "  graceful shutdown OK");
        }
        Some(false) => {
            let _ = writeln!(out, "  a node did NOT shut down cleanly");
        }
        None => {}
    }
}

fn print_summary(s: &Summary) {
    if s.runs.len() > 1 {
        let min = s
            .runs
            .iter()
            .map(|r| r.entries_per_sec)
            .fold(f64::MAX, f64::min);
        let max = s.runs.iter().map(|r| r.entries_per_sec).fold(0.0, f64::max);
        let exact = s
            .runs
            .iter()
            .filter(|r| {
                r.all_followers_caught_up
                    && r.shards
                        .iter()
                        .all(|c| c.followers.iter().all(|f| f.applied >= c.leader_committed))
            })
            .count();
        println!(
            "spread over {} runs: throughput {:.0}..{:.0} entries/s; every follower applied 100% of the leader's commits within 1 s in {}/{} runs",
            s.runs.len(),
            min,
            max,
            exact,
            s.runs.len()
        );
        if let Some(spread) = &s.one_client {
            println!("{}", spread.line());
        }
    }
    println!(
        "{} (fsync {}, {} B entries, batch {}, window {})",
        if s.passed { "PASSED" } else { "FAILED" },
        if s.fsync { "on" } else { "off" },
        s.payload_bytes,
        s.batch,
        s.window
    );
}
