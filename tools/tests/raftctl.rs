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

/// `status` and `transfer-leader` against a live cluster, through a local file naming the
/// ports the launcher picked; then with two nodes down, which `status` reports after one
/// wait for connections, not one more wait per dead node.
#[test]
fn status_and_transfer_reach_a_live_cluster_and_name_the_nodes_down() {
    use std::time::{Duration, Instant};
    use tools::launcher::Cluster;

    let step = Duration::from_secs(20);
    // Without a preferred leader, a transferred leadership stays where it was sent.
    let base = LOCAL_TOML.replace("preferred_leaders = [1]", "preferred_leaders = []");
    assert_ne!(base, LOCAL_TOML);
    let mut cluster =
        Cluster::start(Path::new(env!("CARGO_BIN_EXE_raftd")), &base).expect("start cluster");
    let mut client = cluster.client(21).expect("client");
    client.wait_connected(step).expect("connect");
    let leader = cluster.wait_leader(&mut client, step).expect("leader");
    let mut text = base.clone();
    for id in cluster.node_ids() {
        let m = cluster.member(id).expect("member").clone();
        for (port, addr) in [(7100 + id, m.peer_addr), (7200 + id, m.client_addr)] {
            let placeholder = format!("\"127.0.0.1:{port}\"");
            assert!(text.contains(&placeholder), "{placeholder}");
            text = text.replace(&placeholder, &format!("\"{addr}\""));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.toml");
    std::fs::write(&path, text).unwrap();
    let file = path.display().to_string();

    let out = raftctl(&["status", "--tuning", &file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let mut roles: Vec<&str> = stdout
        .lines()
        .skip(1)
        .filter_map(|row| row.split_whitespace().nth(1))
        .collect();
    roles.sort_unstable();
    assert_eq!(roles, ["follower", "follower", "leader"], "{stdout}");

    let to = cluster
        .node_ids()
        .into_iter()
        .find(|&n| n != leader)
        .expect("follower");
    // A transfer can be refused while the target catches up: asked again until it lands.
    let deadline = Instant::now() + step;
    loop {
        let out = raftctl(&[
            "transfer-leader",
            "--tuning",
            &file,
            "--to",
            &to.to_string(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            let says = format!("leader {leader} is handing shard 0 to node {to}");
            assert!(stdout.contains(&says), "{stdout}");
        }
        std::thread::sleep(Duration::from_millis(200));
        if cluster.wait_leader(&mut client, step).expect("leader") == to {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {to} never took the lead: {stdout}"
        );
    }

    let down: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| n != to)
        .collect();
    for &id in &down {
        cluster.kill(id).expect("kill");
    }
    let started = Instant::now();
    let out = raftctl(&["status", "--tuning", &file, "--timeout-ms", "4000"]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    failed(&out, 1, &["2 node(s) did not answer"]);
    for id in down {
        assert!(
            stdout.contains(&format!("{id:>5} unreachable: node {id} is not connected")),
            "{stdout}"
        );
    }
    // One 4 s wait for connections; a wait per dead node on top would make it 12 s.
    assert!(took < Duration::from_secs(10), "took {took:?}");
}
