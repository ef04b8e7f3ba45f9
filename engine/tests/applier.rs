//! The applier: exactly-once in-order apply through a fake entry source, coalescing on a full
//! commit ring, roles and results, back-pressure, storage faults, and draining on stop.

use std::cell::RefCell;
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use engine::applier::{
    link, Applier, ApplierConfig, ApplierError, ApplyResult, ApplyRole, EntrySource, Rejection,
    ShardApplier, ShardLink, StateMachine, PREFETCH_AHEAD,
};
use engine::spsc::{Doorbell, Publish};
use engine::tuning::IdleStrategy;

/// (term, payload) of one entry.
type Entry = (u64, Vec<u8>);

/// A log in memory: entry `i` (1-based) is `entries[i - 1]`.
#[derive(Debug, Clone, Default)]
struct FakeLog {
    entries: Arc<RwLock<Vec<Entry>>>,
}

impl FakeLog {
    fn append(&self, term: u64, payload: &[u8]) -> u64 {
        let mut entries = self.entries.write().unwrap();
        entries.push((term, payload.to_vec()));
        entries.len() as u64
    }
}

#[derive(Debug, thiserror::Error)]
#[error("index {0} is not in the log")]
struct Missing(u64);

impl EntrySource for FakeLog {
    type Error = Missing;

    fn visit(
        &mut self,
        first: u64,
        last: u64,
        f: &mut dyn FnMut(u64, u64, &[u8]),
    ) -> Result<(), Missing> {
        let entries = self.entries.read().unwrap();
        for index in first..=last {
            let (term, payload) = entries.get(index as usize - 1).ok_or(Missing(index))?;
            f(index, *term, payload);
        }
        Ok(())
    }

    fn peek(&mut self, first: u64, last: u64, f: &mut dyn FnMut(&[u8])) {
        let entries = self.entries.read().unwrap();
        for index in first..=last {
            match entries.get(index as usize - 1) {
                Some((_, payload)) => f(payload),
                None => return,
            }
        }
    }
}

/// One call the applier made on the machine, in the order made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Prefetch(Vec<u8>),
    Apply(u64),
}

/// Records every call; replies with the payload on the leader.
#[derive(Debug, Default)]
struct Recorder {
    calls: Vec<(ApplyRole, u64, u64, Vec<u8>)>,
    applied: u64,
    /// Prefetches and applies, interleaved as made (`prefetch` takes `&self`).
    order: RefCell<Vec<Call>>,
}

impl StateMachine for Recorder {
    fn apply(&mut self, role: ApplyRole, index: u64, term: u64, payload: &[u8]) -> ApplyResult {
        assert_eq!(index, self.applied + 1);
        self.applied = index;
        self.calls.push((role, index, term, payload.to_vec()));
        self.order.borrow_mut().push(Call::Apply(index));
        match (payload.is_empty(), role) {
            (true, _) => ApplyResult::NoOp,
            (false, ApplyRole::Leader) => ApplyResult::Done(payload.to_vec()),
            (false, ApplyRole::Follower) => ApplyResult::Done(Vec::new()),
        }
    }

    fn prefetch(&self, payload: &[u8]) {
        self.order
            .borrow_mut()
            .push(Call::Prefetch(payload.to_vec()));
    }

    fn state_hash(&self) -> u64 {
        self.applied
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }
}

fn config(idle: IdleStrategy, batch: usize) -> ApplierConfig {
    ApplierConfig {
        idle,
        park_timeout: Duration::from_millis(20),
        batch_entries_max: batch,
        placement: None,
    }
}

/// One shard with a fake log, a recorder, and an applier driven by `poll`.
fn single(
    commit_ring: usize,
    result_ring: usize,
    batch: usize,
) -> (ShardLink, FakeLog, Applier<Recorder, FakeLog>) {
    let doorbell = Doorbell::new();
    let (shard, applier_end) = link(commit_ring, result_ring, Some(Arc::clone(&doorbell)));
    let log = FakeLog::default();
    let shard_applier = ShardApplier::new(0, applier_end, Recorder::default(), log.clone());
    let applier = Applier::new(
        config(IdleStrategy::Wait, batch),
        doorbell,
        vec![shard_applier],
    );
    (shard, log, applier)
}

fn poll_until_idle(applier: &mut Applier<Recorder, FakeLog>) {
    while applier.poll().unwrap() {}
}

fn assert_exactly_once(recorder: &Recorder, last: u64) {
    let indexes: Vec<u64> = recorder.calls.iter().map(|call| call.1).collect();
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(indexes, expected);
}

#[test]
fn applies_every_index_once_in_order() {
    let (mut shard, log, mut applier) = single(4, 16, 3);
    for i in 0..10u8 {
        log.append(1, &[i]);
    }
    assert_eq!(shard.publish_commit(4), Publish::Sent);
    poll_until_idle(&mut applier);
    assert_eq!(shard.applied_index(), 4);
    assert_eq!(shard.publish_commit(10), Publish::Sent);
    poll_until_idle(&mut applier);
    assert_eq!(shard.applied_index(), 10);
    assert_eq!(applier.shards()[0].applied_index(), 10);
    let recorder = applier.shards()[0].machine();
    assert_exactly_once(recorder, 10);
    for (i, call) in recorder.calls.iter().enumerate() {
        assert_eq!(call.3, vec![i as u8]);
        assert_eq!(call.2, 1);
    }
}

#[test]
fn every_entry_is_prefetched_once_before_it_is_applied_and_never_far_ahead() {
    // One batch of 300 entries: more than two prefetch chunks.
    let (mut shard, log, mut applier) = single(4, 512, 1000);
    let count = 2 * PREFETCH_AHEAD + 44;
    let payload = |index: u64| (index as u16).to_le_bytes().to_vec();
    for index in 1..=count {
        log.append(1, &payload(index));
    }
    assert_eq!(shard.publish_commit(count), Publish::Sent);
    poll_until_idle(&mut applier);
    assert_eq!(shard.applied_index(), count);
    let recorder = applier.shards()[0].machine();
    assert_exactly_once(recorder, count);

    let order = recorder.order.borrow();
    let position = |call: &Call| order.iter().position(|c| c == call).unwrap();
    let mut applied = 0u64;
    let mut prefetched = 0u64;
    for call in order.iter() {
        match call {
            Call::Apply(index) => {
                applied = *index;
                assert!(position(&Call::Prefetch(payload(*index))) < position(call));
            }
            Call::Prefetch(bytes) => {
                prefetched += 1;
                let index = u64::from(u16::from_le_bytes([bytes[0], bytes[1]]));
                assert_eq!(index, prefetched, "prefetched in order, each once");
                assert!(
                    index <= applied + PREFETCH_AHEAD,
                    "entry {index} prefetched with only {applied} applied"
                );
            }
        }
    }
    assert_eq!(prefetched, count);
}

#[test]
fn full_commit_ring_coalesces_without_skipping() {
    let (mut shard, log, mut applier) = single(2, 2048, 1024);
    for i in 0..1000u32 {
        log.append(1, &i.to_le_bytes());
    }
    let mut pending = 0;
    for commit in 1..=1000 {
        if shard.publish_commit(commit) == Publish::Pending {
            pending += 1;
        }
    }
    // Two slots, a thousand commits, no consumer: almost all had to coalesce.
    assert!(pending >= 997);
    assert_eq!(shard.commits().pending(), Some(1000));
    poll_until_idle(&mut applier);
    assert_eq!(shard.applied_index(), 2);
    assert!(shard.flush());
    poll_until_idle(&mut applier);
    assert_eq!(shard.applied_index(), 1000);
    assert_exactly_once(applier.shards()[0].machine(), 1000);
}

#[test]
fn roles_follow_the_terms_this_node_led() {
    let (mut shard, log, mut applier) = single(4, 16, 64);
    log.append(1, b"a");
    log.append(1, b"b");
    shard.became_leader(2);
    log.append(2, b"");
    log.append(2, b"c");
    log.append(3, b"d");
    shard.publish_commit(5);
    poll_until_idle(&mut applier);
    let roles: Vec<ApplyRole> = applier.shards()[0]
        .machine()
        .calls
        .iter()
        .map(|call| call.0)
        .collect();
    use ApplyRole::{Follower, Leader};
    assert_eq!(roles, vec![Follower, Follower, Leader, Leader, Follower]);
    // Only the leader-role command produced a result; the no-op did not.
    let result = shard.pop_result().unwrap();
    assert_eq!(result.index, 4);
    assert_eq!(result.term, 2);
    assert_eq!(result.result, ApplyResult::Done(b"c".to_vec()));
    assert_eq!(shard.pop_result(), None);
}

#[test]
fn full_result_ring_applies_back_pressure_without_loss() {
    let (mut shard, log, mut applier) = single(4, 2, 4);
    shard.became_leader(1);
    for i in 1..=20u8 {
        log.append(1, &[i]);
    }
    shard.publish_commit(20);
    poll_until_idle(&mut applier);
    // The first batch of 4 fits 2 results; the applier waits for the shard to take them.
    assert_eq!(shard.applied_index(), 4);
    let mut results = Vec::new();
    while results.len() < 20 {
        while let Some(applied) = shard.pop_result() {
            results.push(applied.index);
        }
        applier.poll().unwrap();
    }
    let expected: Vec<u64> = (1..=20).collect();
    assert_eq!(results, expected);
    assert_eq!(shard.applied_index(), 20);
    assert_eq!(applier.shards()[0].results_dropped(), 0);
}

#[test]
fn results_for_a_departed_shard_are_dropped_not_blocking() {
    let (mut shard, log, mut applier) = single(4, 2, 8);
    shard.became_leader(1);
    for i in 1..=8u8 {
        log.append(1, &[i]);
    }
    shard.publish_commit(8);
    let watermark = shard.watermark();
    drop(shard);
    poll_until_idle(&mut applier);
    assert_eq!(watermark.get(), 8);
    // The shard end is gone, so no result is even queued: all 8 are counted as dropped.
    assert_eq!(applier.shards()[0].results_dropped(), 8);
}

#[test]
fn missing_entry_is_a_storage_fault() {
    let (mut shard, log, mut applier) = single(4, 16, 64);
    log.append(1, b"a");
    shard.publish_commit(3);
    let error = applier.poll().unwrap_err();
    assert!(matches!(
        error,
        ApplierError::Read {
            shard: 0,
            first: 1,
            last: 3,
            ..
        }
    ));
    // The entry that could be read was applied, and only it, and the watermark says so.
    assert_eq!(applier.shards()[0].applied_index(), 1);
    assert_eq!(shard.applied_index(), 1);
}

/// A source that skips an index: the applier must refuse to apply out of order.
#[derive(Debug)]
struct Skipping;

impl EntrySource for Skipping {
    type Error = Missing;

    fn visit(
        &mut self,
        first: u64,
        last: u64,
        f: &mut dyn FnMut(u64, u64, &[u8]),
    ) -> Result<(), Missing> {
        for index in first..=last {
            if index != 2 {
                f(index, 1, b"x");
            }
        }
        Ok(())
    }
}

#[test]
fn source_skipping_an_index_is_rejected() {
    let doorbell = Doorbell::new();
    let (mut shard, end) = link(4, 4, None);
    let shard_applier = ShardApplier::new(0, end, Recorder::default(), Skipping);
    let mut applier = Applier::new(config(IdleStrategy::Spin, 8), doorbell, vec![shard_applier]);
    shard.publish_commit(3);
    let error = applier.poll().unwrap_err();
    assert!(matches!(
        error,
        ApplierError::BadEntry {
            index: 3,
            reason: "index out of order",
            ..
        }
    ));
    assert_eq!(applier.shards()[0].applied_index(), 1);
}

/// A shard thread appending and committing while the applier runs on its own thread.
fn threaded(idle: IdleStrategy) {
    const ENTRIES: u64 = 20_000;
    let doorbell = Doorbell::new();
    let mut shards = Vec::new();
    let mut appliers = Vec::new();
    let mut logs = Vec::new();
    for id in 0..2 {
        let (shard, end) = link(4, 64, Some(Arc::clone(&doorbell)));
        let log = FakeLog::default();
        appliers.push(ShardApplier::new(id, end, Recorder::default(), log.clone()));
        shards.push(shard);
        logs.push(log);
    }
    let handle = Applier::new(config(idle, 128), Arc::clone(&doorbell), appliers)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let writers: Vec<_> = shards
        .into_iter()
        .zip(logs)
        .map(|(mut shard, log)| {
            thread::spawn(move || {
                let mut commit = 0;
                while commit < ENTRIES && start.elapsed() < Duration::from_secs(10) {
                    let index = log.append(1, &commit.to_le_bytes());
                    if index % 3 == 0 {
                        commit = index;
                        shard.publish_commit(commit);
                    }
                    if index % 1000 == 0 {
                        // Give a parking applier the chance to park and be woken.
                        thread::yield_now();
                    }
                }
                assert!(shard.flush_for(Duration::from_secs(30)));
                (shard, commit)
            })
        })
        .collect();
    let finished: Vec<(ShardLink, u64)> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let machines = handle.stop().unwrap();
    assert_eq!(machines.len(), 2);
    for ((shard, commit), machine) in finished.iter().zip(&machines) {
        assert!(*commit > 0);
        assert_eq!(shard.applied_index(), *commit);
        assert_exactly_once(machine, *commit);
    }
}

#[test]
fn threaded_wait() {
    threaded(IdleStrategy::Wait);
}

#[test]
fn threaded_spin_then_wait() {
    threaded(IdleStrategy::SpinThenWait { spin_us: 50 });
}

#[test]
fn threaded_spin() {
    threaded(IdleStrategy::Spin);
}

#[test]
fn stop_drains_everything_published() {
    let doorbell = Doorbell::new();
    let (mut shard, end) = link(8, 8, Some(Arc::clone(&doorbell)));
    let log = FakeLog::default();
    for i in 0..5000u32 {
        log.append(1, &i.to_le_bytes());
    }
    let shard_applier = ShardApplier::new(0, end, Recorder::default(), log);
    // Batches of 16 and a parked start: the stop arrives long before the work is done.
    let handle = Applier::new(
        config(IdleStrategy::Wait, 16),
        doorbell,
        vec![shard_applier],
    )
    .spawn()
    .unwrap();
    shard.publish_commit(5000);
    let machines = handle.stop().unwrap();
    assert_eq!(shard.applied_index(), 5000);
    assert_exactly_once(&machines[0], 5000);
}

#[test]
fn resumes_after_the_machines_applied_index() {
    let doorbell = Doorbell::new();
    let (mut shard, end) = link(4, 4, None);
    let log = FakeLog::default();
    for i in 0..10u8 {
        log.append(1, &[i]);
    }
    let restored = Recorder {
        applied: 6,
        ..Recorder::default()
    };
    let shard_applier = ShardApplier::new(0, end, restored, log);
    assert_eq!(shard.applied_index(), 6);
    let mut applier = Applier::new(config(IdleStrategy::Spin, 8), doorbell, vec![shard_applier]);
    shard.publish_commit(10);
    while applier.poll().unwrap() {}
    let indexes: Vec<u64> = applier.shards()[0]
        .machine()
        .calls
        .iter()
        .map(|call| call.1)
        .collect();
    assert_eq!(indexes, vec![7, 8, 9, 10]);
}

#[test]
fn rejection_is_a_plain_value() {
    let rejection = Rejection {
        code: 3,
        reason: "test",
    };
    assert_eq!(
        ApplyResult::Rejected(rejection),
        ApplyResult::Rejected(rejection)
    );
}
