//! raftctl's own checks of what it is asked: a shard or node the cluster file does not have,
//! a zero timeout, and `inspect-log` pointed at a directory that holds no log. Each is
//! refused with the reason before anything is contacted; a real log still inspects clean.

use std::path::Path;
use std::process::{Command, Output};

use engine::tuning::LOCAL_TOML;
use storage::{Log, LogConfig};

const RAFTCTL: &str = env!("CARGO_BIN_EXE_raftctl");

fn raftctl(args: &[&str]) -> Output {
    Command::new(RAFTCTL)
        .args(args)
        .output()
        .expect("raftctl runs")
}

/// Asserts `out` failed with exit code `code` and an error naming every one of `says`.
fn failed(out: &Output, code: i32, says: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    for s in says {
        assert!(stderr.contains(s), "no {s:?} in {stderr}");
    }
}

fn local_file(dir: &Path) -> String {
    let path = dir.join("local.toml");
    std::fs::write(&path, LOCAL_TOML).unwrap();
    path.display().to_string()
}

#[test]
fn a_shard_or_node_the_cluster_lacks_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let file = local_file(dir.path());
    let out = raftctl(&["status", "--tuning", &file, "--shard", "1"]);
    failed(&out, 1, &["--shard 1", "1 shard(s), numbered 0 to 0"]);
    let out = raftctl(&["transfer-leader", "--tuning", &file, "--to", "9"]);
    failed(&out, 1, &["--to 9", "not a member", "[1, 2, 3]"]);
    let out = raftctl(&["status", "--tuning", &file, "--timeout-ms", "0"]);
    failed(&out, 2, &["--timeout-ms"]);
}

#[test]
fn inspect_log_names_the_logs_under_a_node_directory() {
    let node = tempfile::tempdir().unwrap();
    let log_dir = node.path().join("shard-0").join("log");
    let config = LogConfig {
        segment_bytes: 1 << 20,
        payload_bytes_max: 4096,
        ..LogConfig::default()
    };
    let mut log = Log::open(&log_dir, config).unwrap();
    for index in 1..=3 {
        log.append_entry(1, index, b"entry").unwrap();
    }
    drop(log);

    let out = raftctl(&["inspect-log", &node.path().display().to_string()]);
    failed(
        &out,
        1,
        &["not a log directory", &log_dir.display().to_string()],
    );
    let out = raftctl(&["inspect-log", &log_dir.display().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("all checksums valid") && stdout.contains("indexes 1..=3"),
        "{stdout}"
    );
}
