//! raftbench refuses bad flags before it starts anything: exit code 2 and one line naming
//! the flag and what is wrong with it. None of these may start a cluster (each call is
//! bounded, and a started cluster would take seconds).

use std::process::Command;
use std::time::{Duration, Instant};

const RAFTBENCH: &str = env!("CARGO_BIN_EXE_raftbench");

/// Runs `raftbench local ARGS`, asserting exit code 2 within 10 s and that its error names
/// every one of `says`.
fn refused(args: &[&str], says: &[&str]) {
    let started = Instant::now();
    let out = Command::new(RAFTBENCH)
        .arg("local")
        .args(args)
        .output()
        .expect("raftbench runs");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{args:?} took {:?}: it must be refused before any cluster starts",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    for s in says {
        assert!(stderr.contains(s), "{args:?}: no {s:?} in {stderr}");
    }
}

#[test]
fn counts_below_one_are_refused() {
    for flag in ["--runs", "--window", "--batch", "--clients"] {
        refused(&[flag, "0"], &[flag, "must be at least 1"]);
    }
    refused(&["--clients", "2,0"], &["--clients", "must be at least 1"]);
    refused(&["--clients", "two"], &["--clients", "not a whole number"]);
}

#[test]
fn durations_must_be_finite_and_in_range() {
    for (flag, value) in [
        ("--seconds", "0"),
        ("--seconds", "-1"),
        ("--seconds", "inf"),
        ("--seconds", "NaN"),
        ("--probe-seconds", "-0.5"),
        ("--probe-seconds", "1e9"),
        ("--one-client-seconds", "nan"),
    ] {
        refused(&[flag, value], &[flag, "at most 86400 seconds"]);
    }
    refused(&["--probe-rate", "0"], &["--probe-rate", "1..=1000000"]);
}

#[test]
fn entries_too_small_or_requests_too_large_are_refused() {
    refused(
        &["--payload", "0"],
        &["--payload 0", "use --payload 34 or more"],
    );
    refused(
        &["--payload", "100000000"],
        &["--payload 100000000", "frame limit of 1048576 bytes"],
    );
    // Each entry fits, but 5000 of them do not fit one request's frame.
    refused(&["--batch", "5000"], &["--batch 5000", "frame_bytes_max"]);
}

/// `raftbench run` against a cluster file whose members are not running says so, naming the
/// addresses, instead of loading nobody and blaming a missing leader.
#[test]
fn run_against_a_cluster_that_is_not_up_says_so() {
    // Leased as the launcher leases ports for clusters, so no other test's cluster takes
    // them meanwhile; nothing listens there.
    let lease = tools::launcher::PortLease::take(6).unwrap();
    let free = lease.ports();
    let mut text = engine::tuning::LOCAL_TOML.to_owned();
    for (i, old) in ["7101", "7201", "7102", "7202", "7103", "7203"]
        .iter()
        .enumerate()
    {
        text = text.replace(
            &format!("127.0.0.1:{old}"),
            &format!("127.0.0.1:{}", free[i]),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("down.toml");
    std::fs::write(&file, text).unwrap();
    let started = Instant::now();
    let out = Command::new(RAFTBENCH)
        .args(["run", "--tuning"])
        .arg(&file)
        .args(["--seconds", "1"])
        .output()
        .expect("raftbench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("none of the 3 members answered")
            && stderr.contains(&format!("127.0.0.1:{}", free[1]))
            && stderr.contains("is the cluster running?"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
