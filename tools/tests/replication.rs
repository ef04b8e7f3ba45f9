//! The replication test from our users' old system, made strict: 3 replicas, 1 shard,
//! at least 10 s of load, stop the load, and every follower must have applied 100% of the
//! leader's committed entries within 1 s, in every one of 3 runs, with the state hashes
//! equal and every node draining cleanly. It runs the real `raftbench local`; a second
//! test runs it on two shards per node, where it loads and checks each shard.

use std::process::Command;

use engine::tuning::LOCAL_TOML;

#[test]
fn followers_apply_everything_the_leader_committed_in_every_run() {
    let summary = raftbench_local(&["--runs", "3", "--seconds", "10", "--probe-seconds", "0"]);
    let runs = summary["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3, "{summary}");
    for run in runs {
        let shards = run["shards"].as_array().expect("shards");
        assert_eq!(
            shards.len(),
            1,
            "the embedded local.toml has one shard: {run}"
        );
        check_shard(&shards[0], 1000);
        assert_eq!(run["converged"], true, "{run}");
        assert_eq!(run["clean_shutdown"], true, "{run}");
    }
    check_one_client_spread(&summary);
}

#[test]
fn raftbench_loads_and_checks_every_shard() {
    // The embedded file with two shards per node, each node's threads on both cores.
    let mut text = LOCAL_TOML.to_owned();
    for (from, to) in [
        ("count = 1", "count = 2"),
        ("preferred_leaders = [1]", "preferred_leaders = [1, 2]"),
        ("shards = [0]\napplier = 1", "shards = [0, 1]\napplier = 1"),
        ("shards = [1]\napplier = 0", "shards = [1, 0]\napplier = 0"),
    ] {
        assert!(text.contains(from), "tuning text has no {from:?}");
        text = text.replace(from, to);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("two-shards.toml");
    std::fs::write(&path, text).expect("write tuning");
    let summary = raftbench_local(&[
        "--tuning",
        path.to_str().expect("utf-8 temp path"),
        "--seconds",
        "2",
        "--probe-seconds",
        "0",
        "--one-client-seconds",
        "0",
    ]);
    let run = &summary["runs"][0];
    let shards = run["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 2, "{run}");
    for (i, shard) in shards.iter().enumerate() {
        assert_eq!(shard["shard"].as_u64(), Some(i as u64));
        // Both shards carried load (two of the four clients each).
        check_shard(shard, 1000);
    }
    assert_eq!(run["clean_shutdown"], true, "{run}");
    assert!(
        summary["one_client"].is_null(),
        "no one-client phase, so no spread: {summary}"
    );
}

/// The summary's one-client spread counts what its runs report: the runs within 3x the
/// loopback RTT, those whose ping-pong was on one CPU at most checks, and those within 3x
/// of the round trip across two CPUs.
fn check_one_client_spread(summary: &serde_json::Value) {
    let runs = summary["runs"].as_array().expect("runs");
    let spread = &summary["one_client"];
    let within = |key: &str| {
        runs.iter()
            .filter(|r| r[key].as_f64().is_some_and(|x| x <= 3.0))
            .count() as u64
    };
    let one_cpu = runs
        .iter()
        .filter(|r| {
            let same = r["loopback_same_cpu_checks"].as_u64().expect("checks");
            same * 2 > r["loopback_cpu_checks"].as_u64().expect("checks")
        })
        .count() as u64;
    let two_cpu_rtts = runs
        .iter()
        .filter(|r| r["loopback_rtt_two_cpus_us"].as_f64().is_some())
        .count() as u64;
    assert_eq!(spread["runs"].as_u64(), Some(runs.len() as u64), "{spread}");
    assert_eq!(
        spread["within_target"].as_u64(),
        Some(within("one_client_p50_over_rtt")),
        "{summary}"
    );
    assert_eq!(
        spread["ping_pong_mostly_on_one_cpu"].as_u64(),
        Some(one_cpu),
        "{summary}"
    );
    assert_eq!(
        spread["runs_with_two_cpu_rtt"].as_u64(),
        Some(two_cpu_rtts),
        "{summary}"
    );
    assert_eq!(
        spread["within_target_of_two_cpu_rtt"].as_u64(),
        Some(within("one_client_p50_over_two_cpu_rtt")),
        "{summary}"
    );
}

/// Runs `raftbench local <args> --json`, requires exit 0, returns its JSON summary.
fn raftbench_local(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_raftbench"))
        .arg("local")
        .args(args)
        .arg("--json")
        .output()
        .expect("run raftbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "raftbench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("raftbench printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

/// One shard of a run: its leader committed more than `min_committed` entries, and every
/// follower applied all of them within 1 s of the load stopping, and converged.
fn check_shard(shard: &serde_json::Value, min_committed: u64) {
    let committed = shard["leader_committed"]
        .as_u64()
        .expect("leader_committed");
    assert!(
        committed > min_committed,
        "load too small to mean anything: {shard}"
    );
    for f in shard["followers"].as_array().expect("followers") {
        assert_eq!(
            f["applied"].as_u64(),
            Some(committed),
            "shard {}: follower {} applied {} of {committed}",
            shard["shard"],
            f["node"],
            f["applied"]
        );
        let ms = f["caught_up_ms"].as_u64().expect("caught up");
        assert!(ms <= 1000, "follower {} needed {ms} ms", f["node"]);
    }
    assert_eq!(shard["converged"], true, "{shard}");
}
