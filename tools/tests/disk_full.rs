//! A follower's disk fills up under load: the follower stops with an error that names the
//! file and the full disk, the leader and the other follower go on committing, and every
//! acknowledged write is applied on both. Its data directory sits on a small tmpfs (needs
//! root to mount; skipped with a message otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use engine::kv::Command as KvCommand;
use engine::tuning::LOCAL_TOML;
use tools::launcher::{Cluster, LaunchError};

const RAFTD: &str = env!("CARGO_BIN_EXE_raftd");
const STEP: Duration = Duration::from_secs(20);

fn put(i: u64) -> Vec<u8> {
    KvCommand::Put {
        key: format!("key-{i}").as_bytes(),
        value: vec![(i % 251) as u8; 200].as_slice(),
    }
    .to_bytes()
}

/// A tmpfs mounted at a path, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `mib` MiB at `at`, or `None` when this process may not mount.
    fn tmpfs(at: &Path, mib: u64) -> Option<Mount> {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m"),
                "raft-disk-full",
            ])
            .arg(at)
            .status();
        match status {
            Ok(s) if s.success() => Some(Mount(at.to_path_buf())),
            other => {
                println!("SKIPPED disk-full test: cannot mount a tmpfs here ({other:?})");
                None
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazily: on a failed run the node may still hold files there; the mount goes as
        // soon as the launcher has killed it.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Moves `dir`'s contents onto a fresh tmpfs of `mib` MiB mounted at `dir`.
fn onto_tmpfs(dir: &Path, mib: u64) -> Option<Mount> {
    let aside = dir.with_extension("before-tmpfs");
    std::fs::rename(dir, &aside).expect("move the data directory aside");
    std::fs::create_dir(dir).expect("recreate the data directory");
    let mount = Mount::tmpfs(dir, mib);
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", aside.display()))
        .arg(dir)
        .status()
        .expect("cp runs");
    assert!(copied.success(), "copying the data directory back failed");
    mount
}

/// Which node's disk fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Follower,
    Leader,
}

/// Puts the victim's data directory on a tmpfs too small for its log, writes until it
/// has stopped and 100 requests past that, then checks what every test here checks.
fn fill_the_disk_of(victim: Victim) {
    let mut cluster = Cluster::start(Path::new(RAFTD), LOCAL_TOML).expect("start cluster");
    let mut client = cluster.client(11).expect("client");
    client.wait_connected(STEP).expect("connect");
    let leader = cluster.wait_leader(&mut client, STEP).expect("leader");
    let full = match victim {
        // The preferred leader: once back, it takes the lead again (below).
        Victim::Leader => leader,
        Victim::Follower => cluster
            .node_ids()
            .into_iter()
            .find(|&id| id != leader)
            .expect("a follower"),
    };
    let dir = cluster
        .data_dir(full)
        .expect("its data directory")
        .to_path_buf();
    cluster.stop(full, STEP).expect("stop the victim");
    // Room for the log's first segment and the one prepared after it (16 MiB each), not
    // for a third: the disk fills after about one segment of entries.
    let Some(_mount) = onto_tmpfs(&dir, 40) else {
        return;
    };
    cluster.restart(full).expect("restart on the small disk");
    client.set_leader(None);
    let deadline = Instant::now() + STEP;
    while cluster.wait_leader(&mut client, STEP).expect("leader") != leader {
        assert!(Instant::now() < deadline, "node {leader} never led again");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Writes go on until the victim has stopped (about 60,000 entries), and after (puts
    // are idempotent, so a batch sent twice is harmless).
    let mut next = 0u64;
    let mut last = 0;
    let mut stopped_at = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while stopped_at.is_none_or(|at| next < at + 6400) {
        assert!(
            Instant::now() < deadline,
            "node {full} still running after {next} entries"
        );
        let batch: Vec<Vec<u8>> = (next..next + 64).map(put).collect();
        // A request the stopping leader leaves unanswered, the client sends again to the
        // next leader itself: no submit fails.
        last = client
            .submit(batch, STEP)
            .unwrap_or_else(|e| panic!("submit at entry {next}: {e}"));
        next += 64;
        if stopped_at.is_none() {
            match cluster.check_alive() {
                Ok(()) => {}
                Err(LaunchError::Exited {
                    node, code, tail, ..
                }) => {
                    assert_eq!(node, full, "only the small disk's node may stop: {tail}");
                    assert_eq!(code, Some(1), "{tail}");
                    assert!(
                        tail.contains("No space left on device")
                            && tail.contains(&dir.display().to_string()),
                        "the error names neither the full disk nor the file:\n{tail}"
                    );
                    cluster.kill(full).expect("reap");
                    if victim == Victim::Leader {
                        client.set_leader(None);
                        let new = cluster.wait_leader(&mut client, STEP).expect("new leader");
                        assert_ne!(new, full);
                    }
                    stopped_at = Some(next);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    let leader = cluster.wait_leader(&mut client, STEP).expect("leader");

    // Everything acknowledged is applied on the two nodes left, and reads see it.
    let deadline = Instant::now() + STEP;
    loop {
        let applied: Vec<(u64, u64)> = cluster
            .running()
            .into_iter()
            .filter_map(|id| {
                let r = client.status(id, Duration::from_secs(1)).ok()?;
                Some((r.applied, r.state_hash))
            })
            .collect();
        if applied.len() == 2 && applied.iter().all(|&a| a == applied[0] && a.0 >= last) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence at {last}: {applied:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in [0, next / 2, next - 1] {
        let value = client
            .get(format!("key-{i}").as_bytes(), STEP)
            .expect("read");
        assert_eq!(value, Some(vec![(i % 251) as u8; 200]), "key-{i}");
    }
    // The leader's graceful stop waits for the follower that is up, not for the one that
    // stopped (which could never catch up): no drain runs out its timeout.
    let exits = cluster.stop_all(STEP).expect("stop");
    assert!(exits.iter().all(|e| e.success), "{exits:?}");
    let log = cluster.log_tail(leader, 50);
    assert!(!log.contains("drain timed out"), "{log}");
}

#[test]
fn a_follower_whose_disk_fills_stops_naming_it_and_the_others_lose_nothing() {
    fill_the_disk_of(Victim::Follower);
}

#[test]
fn a_leader_whose_disk_fills_stops_naming_it_and_its_successor_loses_nothing() {
    fill_the_disk_of(Victim::Leader);
}
