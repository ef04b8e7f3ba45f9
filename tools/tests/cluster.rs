//! A 3-node cluster of real raftd processes on loopback: election, replication, a
//! follower restart, convergence, the preferred leader, leadership transfer, fixed-leader
//! mode, graceful drain, a bad tuning file, a node whose data was lost or is another's, a
//! node that rejoins after losing its data, and hostile connections during writes.
//!
//! Every test bounds its time, uses loopback ports leased by the launcher and a temporary
//! data directory, and stops its processes (the launcher kills them on drop).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use engine::client::Reply;
use engine::kv::Command as KvCommand;
use engine::tuning::LOCAL_TOML;
use net::wire::ClientStatus;
use tools::launcher::{Cluster, LaunchError};

const RAFTD: &str = env!("CARGO_BIN_EXE_raftd");
const STEP: Duration = Duration::from_secs(20);

fn put(i: u64) -> Vec<u8> {
    KvCommand::Put {
        key: format!("key-{i}").as_bytes(),
        value: format!("value-{i}").as_bytes(),
    }
    .to_bytes()
}

/// Puts `key-i` = `value-i` for each `i` in `keys`, one request at a time; returns the
/// last one's log index. `what` names the step in a failure.
fn puts(client: &mut engine::client::Client, keys: std::ops::Range<u64>, what: &str) -> u64 {
    let mut last = 0;
    for i in keys {
        last = client
            .submit(vec![put(i)], STEP)
            .unwrap_or_else(|e| panic!("{what}: put {i}: {e}"));
    }
    last
}

/// Local tuning with `replace` applied to the embedded file's text.
fn tuning_with(replace: &[(&str, &str)]) -> String {
    let mut text = LOCAL_TOML.to_owned();
    for (from, to) in replace {
        assert!(text.contains(from), "tuning text has no {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// The reply to request `id`, waited for at most `STEP`.
fn answer_to(client: &mut engine::client::Client, id: u64) -> Reply {
    let deadline = Instant::now() + STEP;
    let mut answer = None;
    while answer.is_none() && Instant::now() < deadline {
        client
            .poll(Duration::from_millis(10), |r| {
                if r.request_id() == id {
                    answer = Some(r);
                }
            })
            .expect("poll");
    }
    answer.unwrap_or_else(|| panic!("no answer to request {id} within {STEP:?}"))
}

/// Starts a cluster from `text` and returns it, a connected client (`client_id`) and the
/// first leader.
fn started(text: &str, client_id: u64) -> (Cluster, engine::client::Client, u64) {
    let mut cluster = Cluster::start(Path::new(RAFTD), text).expect("start cluster");
    let mut client = cluster.client(client_id).expect("client");
    client.wait_connected(STEP).expect("connect");
    let leader = cluster.wait_leader(&mut client, STEP).expect("leader");
    (cluster, client, leader)
}

#[test]
fn a_node_whose_port_was_taken_makes_the_launcher_start_again_on_other_ports() {
    // The first node started exits as raftd does when its listen address is taken; every
    // later start runs raftd.
    let marker = tempfile::tempdir().expect("tempdir");
    let script = format!(
        "if [ ! -e '{m}/taken' ]; then touch '{m}/taken'; exit {code}; fi; exec '{RAFTD}' \"$@\"",
        m = marker.path().display(),
        code = tools::raftd::EXIT_ADDRESS_IN_USE,
    );
    let mut cluster =
        Cluster::start_with(Path::new("/bin/sh"), &["-c", &script, "raftd"], LOCAL_TOML)
            .expect("started on the second attempt");
    assert!(
        marker.path().join("taken").exists(),
        "the first start failed"
    );
    let mut client = cluster.client(7).expect("client");
    let leader = cluster.wait_leader(&mut client, STEP).expect("leader");
    let index = client.submit(vec![put(1)], STEP).expect("submit");
    assert!(index > 0, "leader {leader}");
    let converged = wait_converged(&mut cluster, index, STEP);
    assert_eq!(converged.len(), 3, "{converged:?}");
}

#[test]
fn a_launch_whose_ports_stay_taken_fails_naming_the_node_and_exit() {
    let script = format!("exit {}", tools::raftd::EXIT_ADDRESS_IN_USE);
    let err = Cluster::start_with(Path::new("/bin/sh"), &["-c", &script, "raftd"], LOCAL_TOML)
        .expect_err("every start fails");
    match err {
        LaunchError::Exited {
            node, code, status, ..
        } => {
            assert!((1..=3).contains(&node), "node {node}");
            assert_eq!(
                code,
                Some(i32::from(tools::raftd::EXIT_ADDRESS_IN_USE)),
                "{status}"
            );
        }
        other => panic!("unexpected: {other}"),
    }
}

/// Waits until every running node has applied `index` with the same state hash.
fn wait_converged(cluster: &mut Cluster, index: u64, timeout: Duration) -> Vec<(u64, u64, u64)> {
    let mut client = cluster.client(900).expect("client");
    client
        .wait_connected(Duration::from_secs(5))
        .expect("connect");
    let deadline = Instant::now() + timeout;
    loop {
        cluster.check_alive().expect("nodes alive");
        let mut seen = Vec::new();
        for id in cluster.running() {
            if let Ok(r) = client.status(id, Duration::from_secs(1)) {
                seen.push((id, r.applied, r.state_hash));
            }
        }
        let all = seen.len() == cluster.running().len();
        let caught_up = seen.iter().all(|&(_, applied, _)| applied >= index);
        let same = seen
            .windows(2)
            .all(|w| w[0].1 == w[1].1 && w[0].2 == w[1].2);
        if all && caught_up && same {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence at {index} within {timeout:?}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_nodes_elect_replicate_survive_a_follower_restart_and_converge() {
    let mut cluster = Cluster::start(Path::new(RAFTD), LOCAL_TOML).expect("start cluster");
    let mut client = cluster.client(1).expect("client");
    assert_eq!(client.wait_connected(STEP).expect("connect"), 3);
    let leader = cluster.wait_leader(&mut client, STEP).expect("leader");
    // The embedded file prefers node 1 for shard 0.
    assert_eq!(leader, 1, "the preferred leader wins the first election");

    // A follower refuses a submit and names the leader and its client address.
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|&n| n != leader)
        .expect("follower");
    client.set_leader(Some(follower));
    let id = client.send_submit(vec![put(0)]).expect("send to follower");
    let leader_addr = cluster.tuning.cluster.members[0].client_addr.to_string();
    match answer_to(&mut client, id) {
        Reply::Reply {
            status,
            leader_hint,
            leader_addr: addr,
            ..
        } => {
            assert_eq!(status, ClientStatus::NotLeader);
            assert_eq!(leader_hint, Some(leader));
            assert_eq!(addr, Some(leader_addr));
        }
        other => panic!("unexpected reply {other:?}"),
    }
    client.set_leader(Some(leader));
    // The leader's own answer names no address: the client already talks to it.
    let id = client.send_submit(vec![put(0)]).expect("send to leader");
    match answer_to(&mut client, id) {
        Reply::Reply {
            status,
            leader_addr,
            ..
        } => {
            assert_eq!(status, ClientStatus::Ok);
            assert_eq!(leader_addr, None);
        }
        other => panic!("unexpected reply {other:?}"),
    }

    let mut last = puts(&mut client, 0..200, "submit");
    assert_eq!(
        client.get(b"key-199", STEP).expect("read"),
        Some(b"value-199".to_vec())
    );
    wait_converged(&mut cluster, last, STEP);

    // A follower goes down hard, misses writes, and catches up after its restart.
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|&n| n != leader)
        .expect("follower");
    cluster.kill(follower).expect("kill");
    last = puts(&mut client, 200..400, "submit with a follower down");
    cluster.restart(follower).expect("restart");
    let converged = wait_converged(&mut cluster, last, STEP);
    assert_eq!(converged.len(), 3, "{converged:?}");

    let exits = cluster.stop_all(STEP).expect("stop");
    for exit in &exits {
        assert!(exit.success, "node {} did not drain cleanly", exit.node);
        let report = exit.reports.first().expect("final report");
        assert!(
            report.applied >= last,
            "node {} applied {} < {last}",
            exit.node,
            report.applied
        );
    }
    let hashes: Vec<u64> = exits.iter().map(|e| e.reports[0].state_hash).collect();
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
}

/// Waits until node `id` exits (no other may) and returns its exit code and log tail.
fn exit_of(cluster: &mut Cluster, id: u64) -> (Option<i32>, String) {
    let deadline = Instant::now() + STEP;
    loop {
        match cluster.check_alive() {
            Ok(()) => {}
            Err(LaunchError::Exited {
                node, code, tail, ..
            }) => {
                assert_eq!(node, id, "only node {id} may exit: {tail}");
                cluster.kill(id).expect("reap");
                return (code, tail);
            }
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "node {id} still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_follower_that_lost_its_data_is_refused_and_starts_again_once_it_is_back() {
    let (mut cluster, mut client, leader) = started(LOCAL_TOML, 12);
    puts(&mut client, 0..100, "submit");
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|&n| n != leader)
        .expect("follower");
    let dir = cluster.data_dir(follower).expect("data dir").to_path_buf();
    cluster.stop(follower, STEP).expect("stop the follower");

    // Its data is gone (moved aside): it would start at term 0 with no vote, so it must not
    // start at all, and it says why.
    let aside = dir.with_extension("aside");
    std::fs::rename(&dir, &aside).expect("move the data aside");
    cluster.restart(follower).expect("restart without data");
    let (code, tail) = exit_of(&mut cluster, follower);
    assert_eq!(code, Some(4), "{tail}");
    assert!(
        tail.contains("holds no state") && tail.contains("--init") && tail.contains("vote twice"),
        "the refusal does not say why:\n{tail}"
    );
    assert!(
        tail.contains(&dir.display().to_string()),
        "names the directory:\n{tail}"
    );

    // Another node's data is refused too, naming both nodes.
    let other = cluster
        .data_dir(leader)
        .expect("leader's data dir")
        .to_path_buf();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&other)
        .arg(&dir)
        .status()
        .expect("cp runs");
    assert!(copied.success());
    cluster
        .restart(follower)
        .expect("restart on the leader's data");
    let (code, tail) = exit_of(&mut cluster, follower);
    assert_eq!(code, Some(4), "{tail}");
    let says =
        format!("holds the state of node {leader} of cluster 1, and this is node {follower}");
    assert!(tail.contains(&says), "{tail}");

    // The two others went on; with its own data back the follower starts and catches up.
    let last = puts(&mut client, 100..200, "submit");
    std::fs::remove_dir_all(&dir).expect("drop the copy");
    std::fs::rename(&aside, &dir).expect("bring the data back");
    cluster.restart(follower).expect("restart on its own data");
    let converged = wait_converged(&mut cluster, last, STEP);
    assert_eq!(converged.len(), 3, "{converged:?}");
    let exits = cluster.stop_all(STEP).expect("stop");
    assert!(exits.iter().all(|e| e.success), "{exits:?}");
}

/// Waits until node `id` reports a role other than "rejoining"; returns it.
fn wait_rejoined(client: &mut engine::client::Client, id: u64) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        if let Ok(r) = client.status(id, Duration::from_millis(500)) {
            if r.role != "rejoining" {
                return r.role;
            }
        }
        assert!(Instant::now() < deadline, "node {id} still rejoining");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The two followers of `leader`.
fn followers(cluster: &Cluster, leader: u64) -> (u64, u64) {
    let ids: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| n != leader)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    (ids[0], ids[1])
}

/// Kills node `id` and deletes its data directory, as a lost disk would.
fn lose_data(cluster: &mut Cluster, id: u64) {
    let dir = cluster.data_dir(id).expect("data dir").to_path_buf();
    cluster.kill(id).expect("kill");
    std::fs::remove_dir_all(&dir).expect("lose the data");
}

#[test]
fn a_follower_that_lost_its_data_rejoins_and_then_carries_the_cluster() {
    let (mut cluster, mut client, leader) = started(LOCAL_TOML, 13);
    puts(&mut client, 0..100, "submit");
    let (lost, other) = followers(&cluster, leader);
    let dir = cluster.data_dir(lost).expect("data dir").to_path_buf();
    lose_data(&mut cluster, lost);
    // The cluster goes on without it, and it comes back with nothing.
    puts(&mut client, 100..200, "submit with one node lost");
    cluster.rejoin(lost).expect("rejoin");
    // It learns the terms, moves above them (a new election follows), catches up, and
    // then says it is a follower again.
    let role = wait_rejoined(&mut client, lost);
    assert_eq!(role, "follower");
    let mut last = puts(&mut client, 200..300, "submit after the rejoin");
    let converged = wait_converged(&mut cluster, last, STEP);
    assert_eq!(converged.len(), 3, "{converged:?}");
    let log = cluster.log_tail(lost, 400);
    assert!(
        log.contains("rejoining after a loss of data") && log.contains("rejoin complete"),
        "{log}"
    );
    assert!(
        !dir.join("shard-0").join("rejoining").exists(),
        "the rejoin mark is gone"
    );

    // It is a full member again: with one of the two others down, it and the survivor
    // elect a leader (or it keeps leading) and take writes, and every write acknowledged
    // before its loss is still there.
    let current = cluster.wait_leader(&mut client, STEP).expect("one leader");
    let down = if current == lost { other } else { current };
    cluster.kill(down).expect("kill one of the others");
    client.set_leader(None);
    last = puts(&mut client, 300..320, "submit with one of the others down");
    for i in [5, 150, 250, 310] {
        let value = client
            .get(format!("key-{i}").as_bytes(), STEP)
            .expect("read");
        assert_eq!(value, Some(format!("value-{i}").into_bytes()), "key-{i}");
    }
    cluster
        .restart(down)
        .expect("restart the node that was down");
    let converged = wait_converged(&mut cluster, last, STEP);
    assert_eq!(converged.len(), 3, "{converged:?}");

    // With its data back, `--rejoin` is refused: it starts only on an empty directory.
    cluster.stop(lost, STEP).expect("stop");
    cluster
        .rejoin(lost)
        .expect("start with --rejoin on its data");
    let (code, tail) = exit_of(&mut cluster, lost);
    assert_eq!(code, Some(4), "{tail}");
    assert!(
        tail.contains("--rejoin starts only on an empty data directory"),
        "{tail}"
    );
    cluster.restart(lost).expect("restart");
    let converged = wait_converged(&mut cluster, last, STEP);
    assert_eq!(converged.len(), 3, "{converged:?}");
    let exits = cluster.stop_all(STEP).expect("stop");
    assert!(exits.iter().all(|e| e.success), "{exits:?}");
}

/// The embedded local-cluster file with two more members, 4 and 5, set up as node 3.
fn five_nodes() -> String {
    let member3 = "[[cluster.members]]\nnode_id = 3\npeer_addr = \"127.0.0.1:7103\"\n\
                   client_addr = \"127.0.0.1:7203\"\n";
    let host3 = LOCAL_TOML
        .find("[[hosts]]\nnode_id = 3\n")
        .expect("local.toml has node 3's host section");
    let mut text = LOCAL_TOML.to_owned();
    let mut hosts = String::new();
    let mut members = String::new();
    for id in [4, 5] {
        members.push_str(
            &member3
                .replace("node_id = 3", &format!("node_id = {id}"))
                .replace("7103", &format!("710{id}"))
                .replace("7203", &format!("720{id}")),
        );
        hosts.push('\n');
        hosts.push_str(
            &LOCAL_TOML[host3..]
                .replace("node_id = 3", &format!("node_id = {id}"))
                .replace("node-3", &format!("node-{id}")),
        );
    }
    assert!(
        text.contains(member3),
        "local.toml lists member 3 as expected"
    );
    text = text.replacen(member3, &format!("{member3}\n{members}"), 1);
    text.push_str(&hosts);
    text
}

#[test]
fn two_of_five_nodes_that_lost_their_data_together_rejoin_together() {
    let (mut cluster, mut client, leader) = started(&five_nodes(), 16);
    assert_eq!(cluster.node_ids().len(), 5);
    puts(&mut client, 0..100, "submit");
    let lost: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| n != leader)
        .take(2)
        .collect();
    for &id in &lost {
        lose_data(&mut cluster, id);
    }
    // Three of five go on.
    puts(&mut client, 100..200, "submit with two nodes lost");
    // Both come back with nothing at once: each asks the other for its term too.
    for &id in &lost {
        cluster.rejoin(id).expect("rejoin");
    }
    for &id in &lost {
        assert_eq!(wait_rejoined(&mut client, id), "follower", "node {id}");
    }
    let last = puts(&mut client, 200..300, "submit after the rejoins");
    let converged = wait_converged(&mut cluster, last, STEP);
    assert_eq!(converged.len(), 5, "{converged:?}");
    for &id in &lost {
        let log = cluster.log_tail(id, 400);
        assert!(log.contains("rejoin complete"), "node {id}: {log}");
    }
    for i in [5, 150, 250] {
        let value = client
            .get(format!("key-{i}").as_bytes(), STEP)
            .expect("read");
        assert_eq!(value, Some(format!("value-{i}").into_bytes()), "key-{i}");
    }
    let exits = cluster.stop_all(STEP).expect("stop");
    assert!(exits.iter().all(|e| e.success), "{exits:?}");
}

#[test]
fn a_rejoining_node_waits_for_every_member_before_it_takes_part() {
    let (mut cluster, mut client, leader) = started(LOCAL_TOML, 14);
    puts(&mut client, 0..50, "submit");
    let (lost, down) = followers(&cluster, leader);
    lose_data(&mut cluster, lost);
    cluster.kill(down).expect("kill the other follower");
    cluster.rejoin(lost).expect("rejoin");
    // It cannot learn every member's term: it stays rejoining and takes no entries from
    // the leader (whose term it does not know to be current).
    // Its status names the member it waits for.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut awaiting = Vec::new();
    while Instant::now() < deadline {
        if let Ok(r) = client.status(lost, Duration::from_millis(500)) {
            assert_eq!(r.role, "rejoining", "{r:?}");
            assert_eq!(r.last_index, 0, "it took entries while still asking: {r:?}");
            assert!(r.rejoin_awaiting.contains(&down), "{r:?}");
            awaiting = r.rejoin_awaiting;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        awaiting,
        vec![down],
        "the leader answered; only {down} is missing"
    );
    cluster.restart(down).expect("the other follower is back");
    assert_eq!(wait_rejoined(&mut client, lost), "follower");
    let log = cluster.log_tail(lost, 400);
    assert!(
        log.contains(&format!("nodes=[{down}]")) && log.contains("every member told its term"),
        "the log says whom the rejoin waited for, and when it stopped: {log}"
    );
    client.set_leader(None);
    let last = puts(&mut client, 50..100, "submit after the rejoin");
    let converged = wait_converged(&mut cluster, last, STEP);
    assert_eq!(converged.len(), 3, "{converged:?}");
    let exits = cluster.stop_all(STEP).expect("stop");
    assert!(exits.iter().all(|e| e.success), "{exits:?}");
}

#[test]
fn leadership_moves_on_request() {
    // Without a preferred leader, a transferred leadership stays where it was sent.
    let text = tuning_with(&[("preferred_leaders = [1]", "preferred_leaders = []")]);
    let (mut cluster, mut client, leader) = started(&text, 2);
    client.submit(vec![put(1)], STEP).expect("submit");
    // The synchronous client starts at the first member, and follows its hint if that is
    // not the leader.
    let mut sync = cluster.sync_client(20);
    let first = sync.submit(vec![put(100)], STEP).expect("sync submit");
    assert_eq!(sync.leader(), Some(leader));
    // A batch over the frame limit is refused at once, naming the limit, and retried nowhere.
    let retries = sync.retries();
    let err = sync
        .submit(vec![vec![b'x'; 2 << 20]], STEP)
        .expect_err("oversized");
    assert!(err.to_string().contains("exceeds maximum"), "{err}");
    assert_eq!(sync.retries(), retries);
    let target = cluster
        .node_ids()
        .into_iter()
        .find(|&n| n != leader)
        .expect("other");
    let deadline = Instant::now() + STEP;
    loop {
        let _ = client.transfer_leader(leader, target, Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(r) = client.status(target, Duration::from_secs(1)) {
            if r.is_leader() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "leadership did not move to {target}"
        );
    }
    client.set_leader(Some(target));
    let index = client
        .submit(vec![put(2)], STEP)
        .expect("submit to new leader");
    // The old leader answers `NotLeader` with a hint; the synchronous client follows it.
    let sync_index = sync
        .submit(vec![put(101)], STEP)
        .expect("sync submit after");
    assert_eq!(sync.leader(), Some(target));
    assert!(
        sync_index > index.max(first),
        "{sync_index} after {index} and {first}"
    );
    wait_converged(&mut cluster, sync_index, STEP);
    let value = client.get(b"key-101", STEP).expect("read");
    assert_eq!(value.as_deref(), Some(&b"value-101"[..]));
    // Reads through the synchronous client: a written key and a missing one.
    let value = sync.get(b"key-100", STEP).expect("sync read");
    assert_eq!(value.as_deref(), Some(&b"value-100"[..]));
    assert_eq!(sync.get(b"no-such-key", STEP).expect("sync read"), None);
}

/// A write on an otherwise idle cluster is below the batch that wakes a parked applier at
/// once, so it waits for the shard's next tick (10 ms here). With a park timeout of 10 s,
/// every node applying it within 3 s shows that the tick wakes the applier; and a read of
/// it, which waits for the leader's applier, is answered.
#[test]
fn a_lone_write_is_applied_everywhere_without_waiting_for_the_park_timeout() {
    let text = tuning_with(&[("park_timeout_ms = 100", "park_timeout_ms = 10000")]);
    let (mut cluster, mut client, _) = started(&text, 4);
    // Let the appliers apply the leader's first entry and park.
    std::thread::sleep(Duration::from_millis(300));
    let index = client.submit(vec![put(7)], STEP).expect("submit");
    let read = client.get(b"key-7", STEP).expect("read");
    assert_eq!(read.as_deref(), Some(&b"value-7"[..]));
    wait_converged(&mut cluster, index, Duration::from_secs(3));
}

#[test]
fn a_fixed_leader_cluster_never_elects() {
    let text = tuning_with(&[("# fixed_leader = 1", "fixed_leader = 2")]);
    let (mut cluster, mut client, leader) = started(&text, 3);
    assert_eq!(leader, 2);
    let last = puts(&mut client, 0..50, "submit");
    wait_converged(&mut cluster, last, STEP);
    for id in cluster.node_ids() {
        let r = client.status(id, STEP).expect("status");
        assert_eq!(r.term, 1, "node {id} saw an election: {r:?}");
        assert_eq!(r.leader, Some(2), "node {id}");
    }
}

#[test]
fn a_bad_tuning_file_is_refused_with_file_key_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        tuning_with(&[(
            "election_timeout_ms_min = 300",
            "election_timeout_ms_min = 900",
        )]),
    )
    .expect("write");
    let out = Command::new(RAFTD)
        .args(["--local", path.to_str().expect("utf-8 path"), "--node", "1"])
        .output()
        .expect("run raftd");
    assert_eq!(out.status.code(), Some(2), "raftd must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml"), "names the file: {stderr}");
    assert!(
        stderr.contains("election_timeout_ms"),
        "names the key: {stderr}"
    );

    std::fs::write(
        &path,
        tuning_with(&[("[cluster.raft]", "[cluster.raft]\nsurprise = 1")]),
    )
    .expect("write");
    let out = Command::new(RAFTD)
        .args(["--local", path.to_str().expect("utf-8 path"), "--node", "1"])
        .output()
        .expect("run raftd");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("surprise"),
        "names the unknown key: {stderr}"
    );
}

/// Writes are acknowledged at commit, held back by the leader while a
/// live replica has more than `apply_lag_entries_max` entries left to apply, and never held
/// by a replica that stopped answering. Malformed commands are refused before they reach
/// the log.
#[test]
fn malformed_commands_are_refused_and_a_frozen_follower_does_not_hold_writes() {
    // The smallest lag the tuning allows (one batch), so the gate is exercised.
    let text = tuning_with(&[(
        "apply_lag_entries_max = 65536",
        "apply_lag_entries_max = 256",
    )]);
    let (mut cluster, mut client, leader) = started(&text, 6);
    let before = client.submit(vec![put(0)], STEP).expect("submit");

    // An unknown opcode: refused at the leader, nothing proposed.
    let refused = client.submit(vec![put(1), vec![0xff, 1, 2]], STEP);
    assert!(
        matches!(refused, Err(engine::client::ClientError::Refused(_))),
        "{refused:?}"
    );
    let status = client.status(leader, STEP).expect("status");
    assert_eq!(
        status.commit, before,
        "a refused batch must not be proposed"
    );

    // Load well past the lag limit with every replica up: held back, never lost.
    let batch = |from: u64| (from..from + 64).map(put).collect::<Vec<_>>();
    let mut last = before;
    for i in 0..40 {
        last = client.submit(batch(1000 + i * 64), STEP).expect("submit");
    }
    wait_converged(&mut cluster, last, STEP);

    // A frozen follower stops reporting: after an election timeout at most it no longer
    // holds writes, and the other follower keeps the quorum.
    let frozen = cluster
        .node_ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    cluster.freeze(frozen, true).expect("SIGSTOP");
    for i in 0..40 {
        last = client
            .submit(batch(10_000 + i * 64), STEP)
            .expect("submit with a frozen follower");
    }
    cluster.freeze(frozen, false).expect("SIGCONT");
    assert_eq!(
        client.get(b"key-12559", STEP).expect("read"),
        Some(b"value-12559".to_vec())
    );
    let converged = wait_converged(&mut cluster, last, STEP);
    assert_eq!(converged.len(), 3, "{converged:?}");
}

#[test]
fn a_killed_leader_is_replaced_and_nothing_acknowledged_is_lost() {
    let mut cluster = Cluster::start(Path::new(RAFTD), LOCAL_TOML).expect("start cluster");
    let mut client = cluster.client(4).expect("client");
    client.wait_connected(STEP).expect("connect");
    let old = cluster.wait_leader(&mut client, STEP).expect("leader");
    for i in 0..100 {
        client.submit(vec![put(i)], STEP).expect("submit");
    }
    cluster.kill(old).expect("kill leader");
    client.set_leader(None);
    let new = cluster.wait_leader(&mut client, STEP).expect("new leader");
    assert_ne!(new, old);
    let last = puts(&mut client, 100..200, "submit after failover");
    // Everything acknowledged before the crash is still readable through the new leader.
    for i in [0u64, 57, 99, 199] {
        let value = client
            .get(format!("key-{i}").as_bytes(), STEP)
            .expect("read");
        assert_eq!(value, Some(format!("value-{i}").into_bytes()), "key-{i}");
    }
    cluster.restart(old).expect("restart old leader");
    let converged = wait_converged(&mut cluster, last, STEP);
    assert_eq!(converged.len(), 3, "{converged:?}");
}

#[test]
fn two_shards_per_node_spread_their_leaders_and_both_converge() {
    let text = tuning_with(&[
        ("count = 1", "count = 2"),
        ("preferred_leaders = [1]", "preferred_leaders = [1, 2]"),
        ("shards = [0]\napplier = 1", "shards = [0, 1]\napplier = 1"),
        ("shards = [1]\napplier = 0", "shards = [1, 0]\napplier = 0"),
    ]);
    let mut cluster = Cluster::start(Path::new(RAFTD), &text).expect("start cluster");
    let mut clients = Vec::new();
    for shard in 0..2u32 {
        let mut client = cluster.client(10 + u64::from(shard)).expect("client");
        client.set_shard(shard);
        client.wait_connected(STEP).expect("connect");
        clients.push(client);
    }
    // Each shard's preferred leader wins its group: leaders are spread over nodes.
    let deadline = Instant::now() + STEP;
    for (shard, expected) in [(0usize, 1u64), (1, 2)] {
        loop {
            cluster.check_alive().expect("nodes alive");
            let r = clients[shard].status(expected, Duration::from_secs(1));
            if r.as_ref().is_ok_and(|r| r.is_leader()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "shard {shard}: node {expected} never led: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut last = [0u64; 2];
    for i in 0..100 {
        for (shard, client) in clients.iter_mut().enumerate() {
            last[shard] = client
                .submit(vec![put(i * 2 + shard as u64)], STEP)
                .expect("submit");
        }
    }
    for (shard, client) in clients.iter_mut().enumerate() {
        let deadline = Instant::now() + STEP;
        loop {
            let seen: Vec<_> = cluster
                .node_ids()
                .into_iter()
                .filter_map(|n| client.status(n, Duration::from_secs(1)).ok())
                .map(|r| (r.shard, r.applied, r.state_hash))
                .collect();
            let done = seen.len() == 3
                && seen.iter().all(|&(s, applied, h)| {
                    s == shard as u32 && applied >= last[shard] && h == seen[0].2
                });
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "shard {shard} did not converge: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let exits = cluster.stop_all(STEP).expect("stop");
    for exit in exits {
        assert!(exit.success, "node {} did not drain cleanly", exit.node);
        assert_eq!(exit.reports.len(), 2, "one report per shard");
    }
}

/// The open-loop probe counts every request its schedule called for, so one that is never
/// answered shows as missing from the percentiles instead of vanishing: against a frozen
/// leader nothing is answered, and every scheduled request is counted.
#[test]
fn the_open_loop_probe_counts_requests_a_frozen_leader_never_answers() {
    // A fixed leader: only it can answer `Ok`. Otherwise a probe request that finds no
    // connection to it (a handshake still under way on a loaded machine) goes to another
    // node, and an election during the 5 s the probe waits could answer it.
    let text = tuning_with(&[("# fixed_leader = 1", "fixed_leader = 1")]);
    let (mut cluster, mut client, leader) = started(&text, 7);
    client.set_leader(Some(leader));
    cluster.freeze(leader, true).expect("SIGSTOP");
    let r = tools::load::open_loop(&mut client, 200, Duration::from_millis(500), 64);
    cluster.freeze(leader, false).expect("SIGCONT");
    let r = r.expect("probe");
    assert_eq!(r.entries, 0, "a frozen leader answers nothing");
    assert!(
        (95..=101).contains(&r.requests),
        "0.5 s at 200/s schedules 100 requests, counted {}",
        r.requests
    );
    cluster.stop_all(STEP).expect("stop");
}

/// One hostile connection's bytes: what it sends, and its name for failure messages.
struct Hostile {
    name: &'static str,
    bytes: Vec<u8>,
}

/// Bad input of each kind a transport sees first: noise, a frame whose checksum fails, a
/// frame announcing a length over the limit, a well-formed hello from another cluster.
fn hostile_inputs(role: u8) -> Vec<Hostile> {
    use net::wire::{encode_frame, FRAME_HEADER_LEN};
    let hello = |cluster_id: u64| {
        let h = net::wire::Hello {
            cluster_id,
            node_id: 999_001,
            protocol_version: net::PROTOCOL_VERSION,
            role,
            auth: false,
            nonce: [7u8; 32],
        };
        let mut frame = Vec::new();
        encode_frame(&mut frame, 0, &h, &[], 1 << 20).expect("encode hello");
        frame
    };
    let mut bad_crc = hello(1);
    bad_crc[FRAME_HEADER_LEN + 3] ^= 0x20;
    let mut oversized = hello(1);
    oversized[16..20].copy_from_slice(&u32::MAX.to_le_bytes()); // the payload length
                                                                // Noise from a fixed xorshift, so a failure replays.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise = (0..256)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    vec![
        Hostile {
            name: "noise",
            bytes: noise,
        },
        Hostile {
            name: "bad checksum",
            bytes: bad_crc,
        },
        Hostile {
            name: "oversized length",
            bytes: oversized,
        },
        Hostile {
            name: "hello from another cluster",
            bytes: hello(77),
        },
    ]
}

/// Sends `input` on a fresh connection to `addr` and waits (bounded) for the node to
/// close it.
fn closed_after(addr: std::net::SocketAddr, input: &Hostile) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, STEP)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(STEP)).expect("timeout");
    s.write_all(&input.bytes)
        .map_err(|e| format!("{} to {addr}: write: {e}", input.name))?;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            // A refusal may come first; the close is what counts.
            Ok(n) if n > 0 => continue,
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(format!("{} to {addr}: not closed: {e}", input.name)),
        }
    }
}

#[test]
fn hostile_connections_are_closed_alone_while_writes_go_on_and_none_is_lost() {
    let (mut cluster, mut client, leader) = started(LOCAL_TOML, 8);
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let m = cluster.member(leader).expect("leader member");
    let targets = vec![
        (m.peer_addr, net::wire::ROLE_NODE),
        (m.client_addr, net::wire::ROLE_CLIENT),
        (
            cluster.member(follower).expect("follower member").peer_addr,
            net::wire::ROLE_NODE,
        ),
    ];
    // Half a hello, then silence for the whole test: it must hold nothing up.
    let mut stalled = std::net::TcpStream::connect(m.peer_addr).expect("connect");
    std::io::Write::write_all(
        &mut stalled,
        &hostile_inputs(net::wire::ROLE_NODE)[3].bytes[..10],
    )
    .expect("half a frame");

    // The attack lasts as long as the writes, three rounds at least.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let rogue = std::thread::spawn({
        let writing = std::sync::Arc::clone(&writing);
        move || -> Result<usize, String> {
            let mut rounds = 0;
            while rounds < 3 || writing.load(std::sync::atomic::Ordering::Relaxed) {
                for &(addr, role) in &targets {
                    for input in hostile_inputs(role) {
                        closed_after(addr, &input)?;
                    }
                }
                rounds += 1;
            }
            Ok(rounds)
        }
    });
    let last = puts(&mut client, 0..300, "submit under attack");
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let rounds = rogue
        .join()
        .expect("rogue thread")
        .expect("every hostile connection closed");
    assert!(rounds >= 3);
    drop(stalled);

    let converged = wait_converged(&mut cluster, last, STEP);
    assert_eq!(converged.len(), 3, "{converged:?}");
    for i in [0u64, 150, 299] {
        let value = client
            .get(format!("key-{i}").as_bytes(), STEP)
            .expect("read");
        assert_eq!(value, Some(format!("value-{i}").into_bytes()), "key-{i}");
    }
    // Each closing is logged with its reason.
    let log = cluster.log_tail(leader, 400);
    for reason in [
        "bad frame magic",
        "checksum mismatch",
        "exceeds maximum",
        "reason=WrongCluster",
    ] {
        assert!(
            log.contains(reason),
            "the leader's log names no {reason:?} closing:\n{log}"
        );
    }
}

#[test]
fn the_closed_loop_load_goes_on_through_a_killed_leader() {
    let (mut cluster, mut client, leader) = started(LOCAL_TOML, 9);
    let cfg = tools::load::ClosedLoop {
        clients: 2,
        window: 4,
        batch: 16,
        payload_bytes: 64,
        duration: Duration::from_secs(4),
    };
    let clients: Vec<engine::client::Client> = (0..2)
        .map(|c| cluster.client(20 + c).expect("client"))
        .collect();
    let mut clients = clients.into_iter();
    let load = std::thread::spawn(move || {
        tools::load::closed_loop(|_| Ok(clients.next().expect("two clients")), cfg)
    });
    // Kill the leader with the load's batches in flight to it: once the load is seen
    // committing (a fixed pause was not always enough on a loaded machine).
    let start = client.status(leader, STEP).expect("status").commit;
    let deadline = Instant::now() + STEP;
    let before = loop {
        let commit = client.status(leader, STEP).expect("status").commit;
        if commit > start + 200 {
            break commit;
        }
        assert!(Instant::now() < deadline, "the load committed nothing");
        std::thread::sleep(Duration::from_millis(20));
    };
    cluster.kill(leader).expect("kill the leader");
    client.set_leader(None);
    let new = cluster.wait_leader(&mut client, STEP).expect("new leader");
    assert_ne!(new, leader);

    // The batches the dead leader left unanswered were sent again to the new one, and the
    // load went on there.
    let result = load
        .join()
        .expect("load thread")
        .expect("the load ran to its end");
    let after = client.status(new, STEP).expect("status").commit;
    assert!(result.retries > 0, "{result:?}");
    assert!(
        after > before + 100,
        "no progress after failover: {before} -> {after}"
    );
    cluster.restart(leader).expect("restart the old leader");
    let converged = wait_converged(&mut cluster, after, STEP);
    assert_eq!(converged.len(), 3, "{converged:?}");
}
