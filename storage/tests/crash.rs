//! Crash test: a child process appends and syncs in a loop, reporting each durable
//! batch; the parent SIGKILLs it at random moments, reopens the log, and checks that
//! every reported-durable entry is intact and that the log accepts appends again.
//!
//! Kills: 30 by default, `STORAGE_CRASH_KILLS=300` for a longer run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use storage::{Log, LogConfig};

/// Must match `payload` in src/bin/crash_child.rs.
fn payload(index: u64, term: u64) -> Vec<u8> {
    let len = ((index * 7 + term) % 97 + 1) as usize;
    (0..len)
        .map(|j| ((index ^ (term << 3)) as u8).wrapping_add(j as u8))
        .collect()
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 128 << 10,
        payload_bytes_max: 4096,
        ..LogConfig::default()
    }
}

/// What the parent knows must be in the log: `terms[i]` is the term of index `i + 1`
/// (`None`: present but of unreported term).
#[derive(Default)]
struct Known {
    terms: Vec<Option<u64>>,
    floor: u64,
}

impl Known {
    fn apply(&mut self, line: &str) {
        let parts: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| -> u64 { parts[i].parse().expect("number in child output") };
        match parts[0] {
            "S" => {
                let (first, last, term) = (num(1), num(2), num(3));
                assert!(first >= 1 && last >= first);
                assert!(
                    first as usize <= self.terms.len() + 1,
                    "gap in reports: {line}"
                );
                self.terms.truncate(first as usize - 1);
                self.terms.extend((first..=last).map(|_| Some(term)));
            }
            "I" => self.terms.truncate(num(1) as usize),
            "C" => self.floor = self.floor.max(num(1)),
            other => panic!("unexpected child output {other:?}"),
        }
    }
}

#[test]
fn sigkill_never_loses_reported_durable_entries() {
    let kills: usize = std::env::var("STORAGE_CRASH_KILLS")
        .ok()
        .map(|v| v.parse().expect("STORAGE_CRASH_KILLS is a number"))
        .unwrap_or(30);
    let seed: u64 = rand::random();
    println!("crash test seed {seed}, {kills} kills");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut known = Known::default();
    let started = Instant::now();
    let mut total_entries_checked = 0u64;
    for kill in 0..kills {
        let mut child = Command::new(env!("CARGO_BIN_EXE_storage-crash-child"))
            .arg(dir.path())
            .arg(rng.gen::<u64>().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn crash child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let pump = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let wait_ms = rng.gen_range(2..40);
        // Kill at a random moment, but only once the child got going at least once in
        // a while, so the log keeps growing between kills.
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("crash child exited on its own: {status}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().expect("SIGKILL child");
        let status = child.wait().unwrap();
        assert!(!status.success());
        pump.join().unwrap();
        for line in rx.try_iter() {
            known.apply(&line);
        }

        let mut log = Log::open(dir.path(), config())
            .unwrap_or_else(|e| panic!("reopen after kill {kill} (seed {seed}): {e}"));
        assert!(
            log.last_index() as usize >= known.terms.len(),
            "kill {kill}: log ends at {} but {} entries were reported durable (seed {seed})",
            log.last_index(),
            known.terms.len()
        );
        assert!(log.first_index() <= known.floor.max(1));
        for meta in log.iter_meta() {
            let e = log.read_entry(meta.index).unwrap();
            assert_eq!(
                e.payload,
                &payload(e.index, e.term)[..],
                "entry {} content",
                e.index
            );
            if let Some(&Some(t)) = known.terms.get(e.index as usize - 1) {
                assert_eq!(
                    e.term, t,
                    "kill {kill}: entry {} term (seed {seed})",
                    e.index
                );
            }
            total_entries_checked += 1;
        }
        assert_eq!(
            log.durable(),
            log.last(),
            "open makes everything recovered durable"
        );
        // Appends work after reopen; what we sync here is known durable too.
        let index = log.last_index() + 1;
        let term = log.last_term().max(1);
        log.append_entry(term, index, &payload(index, term))
            .unwrap();
        assert_eq!(log.sync().unwrap().index, index);
        known.terms.truncate(index as usize - 1);
        known.terms.resize(index as usize - 1, None);
        // Indexes between reported ones and `index` were appended by the child without
        // a report; they are checked for content above, not for term.
        known.terms.push(Some(term));
        drop(log);
    }
    println!(
        "{kills} kills in {:?}, {} entries durable at the end, {total_entries_checked} entry checks",
        started.elapsed(),
        known.terms.len()
    );
    assert!(known.terms.len() > kills, "the child made progress");
}
