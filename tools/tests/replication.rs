//! The replication test from our users' old system, made strict: 3 replicas, 1 shard,
//! at least 10 s of load, stop the load, and every follower must have applied 100% of the
//! leader's committed entries within 1 s, in every one of 3 runs, with the state hashes
//! equal and every node draining cleanly. It runs the real `raftbench local`.

use std::process::Command;

#[test]
fn followers_apply_everything_the_leader_committed_in_every_run() {
    let out = Command::new(env!("CARGO_BIN_EXE_raftbench"))
        .args([
            "local",
            "--runs",
            "3",
            "--seconds",
            "10",
            "--probe-seconds",
            "0",
            "--json",
        ])
        .output()
        .expect("run raftbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("raftbench printed no JSON ({e}):\n{stdout}\n{stderr}"));
    let runs = summary["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3, "{stdout}");
    for run in runs {
        let committed = run["leader_committed"].as_u64().expect("leader_committed");
        assert!(committed > 1000, "load too small to mean anything: {run}");
        for f in run["followers"].as_array().expect("followers") {
            assert_eq!(
                f["applied"].as_u64(),
                Some(committed),
                "follower {} applied {} of {committed}",
                f["node"],
                f["applied"]
            );
            let ms = f["caught_up_ms"].as_u64().expect("caught up");
            assert!(ms <= 1000, "follower {} needed {ms} ms", f["node"]);
        }
        assert_eq!(run["converged"], true, "{run}");
        assert_eq!(run["clean_shutdown"], true, "{run}");
    }
    assert!(
        out.status.success(),
        "raftbench failed:\n{stdout}\n{stderr}"
    );
}
