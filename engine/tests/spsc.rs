//! The SPSC ring and the coalescing commit publisher: single-thread behaviour, two-thread
//! stress (bounded in time, loom is not available), and a model-based proptest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use engine::spsc::{channel, CommitPublisher, Doorbell, Full, Publish};
use proptest::prelude::*;

/// Stress tests stop producing after this long even if they have not reached their count,
/// so a slow shared CI machine cannot make them hang; correctness is checked either way.
const STRESS_BUDGET: Duration = Duration::from_secs(10);

#[test]
fn push_until_full_then_pop_in_order() {
    let (mut producer, mut consumer) = channel::<u64>(4);
    assert_eq!(producer.capacity(), 4);
    assert!(consumer.is_empty());
    for value in 0..4 {
        assert_eq!(producer.push(value), Ok(()));
    }
    assert_eq!(producer.len(), 4);
    assert_eq!(producer.push(99), Err(Full(99)));
    assert_eq!(consumer.len(), 4);
    assert_eq!(consumer.peek(), Some(&0));
    for value in 0..4 {
        assert_eq!(consumer.pop(), Some(value));
    }
    assert_eq!(consumer.pop(), None);
    assert!(producer.is_empty());
    assert_eq!(producer.push(4), Ok(()));
    assert_eq!(consumer.pop(), Some(4));
}

#[test]
fn pop_batch_takes_everything_ready() {
    let (mut producer, mut consumer) = channel::<u64>(8);
    for value in 10..15 {
        producer.push(value).unwrap();
    }
    let mut seen = Vec::new();
    assert_eq!(consumer.pop_batch(|value| seen.push(value)), 5);
    assert_eq!(seen, vec![10, 11, 12, 13, 14]);
    assert_eq!(consumer.pop_batch(|_| unreachable!()), 0);
    assert!(producer.is_empty());
}

#[test]
fn closed_flags_follow_drops() {
    let (producer, consumer) = channel::<u64>(2);
    assert!(!consumer.is_producer_closed());
    assert!(!producer.is_consumer_closed());
    drop(producer);
    assert!(consumer.is_producer_closed());
    let (producer, consumer) = channel::<u64>(2);
    drop(consumer);
    assert!(producer.is_consumer_closed());
}

#[test]
#[should_panic(expected = "power of two")]
fn capacity_must_be_a_power_of_two() {
    let _ = channel::<u64>(3);
}

#[test]
fn handles_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<engine::spsc::Producer<u64>>();
    assert_send::<engine::spsc::Consumer<u64>>();
    assert_send::<CommitPublisher>();
}

#[test]
fn two_threads_every_value_once_in_order() {
    const COUNT: u64 = 2_000_000;
    let (mut producer, mut consumer) = channel::<u64>(64);
    let start = Instant::now();
    let writer = thread::spawn(move || {
        let mut next = 0u64;
        while next < COUNT && start.elapsed() < STRESS_BUDGET {
            match producer.push(next) {
                Ok(()) => next += 1,
                Err(Full(_)) => std::hint::spin_loop(),
            }
        }
        next
    });
    let mut expected = 0u64;
    loop {
        match consumer.pop() {
            Some(value) => {
                assert_eq!(value, expected);
                expected += 1;
            }
            None if consumer.is_producer_closed() && consumer.is_empty() => break,
            None => std::hint::spin_loop(),
        }
    }
    let sent = writer.join().unwrap();
    assert_eq!(expected, sent);
    assert!(sent > 0);
}

#[test]
fn two_threads_values_with_drop_glue_are_not_leaked() {
    const COUNT: usize = 100_000;
    let marker = Arc::new(());
    let (mut producer, mut consumer) = channel::<(usize, Arc<()>)>(8);
    let writer_marker = Arc::clone(&marker);
    let writer = thread::spawn(move || {
        for i in 0..COUNT {
            let mut item = (i, Arc::clone(&writer_marker));
            loop {
                match producer.push(item) {
                    Ok(()) => break,
                    // Nobody will read any more: stop (the value is dropped here).
                    Err(Full(_)) if producer.is_consumer_closed() => return,
                    Err(Full(back)) => {
                        item = back;
                        thread::yield_now();
                    }
                }
            }
        }
    });
    // Read half, then drop the consumer with values possibly still queued.
    let mut expected = 0;
    while expected < COUNT / 2 {
        if let Some((i, _)) = consumer.pop() {
            assert_eq!(i, expected);
            expected += 1;
        }
    }
    drop(consumer);
    writer.join().unwrap();
    assert_eq!(Arc::strong_count(&marker), 1);
}

/// Drives a publisher over a tiny ring from one thread while another applies; every index
/// must be covered exactly once, ring values strictly increase, and the last one is the final
/// commit.
fn publisher_stress(doorbell: bool) {
    const FINAL: u64 = 1_000_000;
    let (producer, mut consumer) = channel::<u64>(2);
    let bell = doorbell.then(Doorbell::new);
    let mut publisher = CommitPublisher::new(producer, bell.clone());
    let done = Arc::new(AtomicBool::new(false));
    let reader_done = Arc::clone(&done);
    let reader_bell = bell.clone();
    let reader = thread::spawn(move || {
        let mut applied = 0u64;
        let mut last = 0u64;
        let mut pops = 0u64;
        loop {
            match consumer.pop() {
                Some(commit) => {
                    assert!(commit > last);
                    // "Apply" every index up to the commit, once.
                    for index in applied + 1..=commit {
                        assert_eq!(index, applied + 1);
                        applied = index;
                    }
                    last = commit;
                    pops += 1;
                }
                None if reader_done.load(Ordering::Acquire) && consumer.is_empty() => break,
                None => match &reader_bell {
                    Some(bell) => {
                        bell.sleep(Duration::from_millis(50), || !consumer.is_empty());
                    }
                    None => std::hint::spin_loop(),
                },
            }
        }
        (applied, last, pops)
    });
    let start = Instant::now();
    let mut commit = 0u64;
    let mut step = 1u64;
    while commit < FINAL && start.elapsed() < STRESS_BUDGET {
        commit = (commit + step).min(FINAL);
        step = step % 7 + 1;
        let outcome = publisher.publish(commit);
        assert_ne!(outcome, Publish::Unchanged);
        if outcome == Publish::Pending {
            assert_eq!(publisher.pending(), Some(commit));
        }
    }
    assert!(publisher.flush_for(Duration::from_secs(30)));
    assert_eq!(publisher.pending(), None);
    assert_eq!(publisher.sent(), commit);
    done.store(true, Ordering::Release);
    if let Some(bell) = &bell {
        bell.ring();
    }
    let (applied, last, pops) = reader.join().unwrap();
    assert_eq!(applied, commit);
    assert_eq!(last, commit);
    assert!(pops >= 1);
}

#[test]
fn publisher_two_threads_spinning_consumer() {
    publisher_stress(false);
}

#[test]
fn publisher_two_threads_parking_consumer() {
    publisher_stress(true);
}

#[test]
fn publisher_coalesces_when_full() {
    let (producer, mut consumer) = channel::<u64>(2);
    let mut publisher = CommitPublisher::new(producer, None);
    assert_eq!(publisher.publish(1), Publish::Sent);
    assert_eq!(publisher.publish(2), Publish::Sent);
    assert_eq!(publisher.publish(3), Publish::Pending);
    assert_eq!(publisher.publish(7), Publish::Pending);
    assert_eq!(publisher.pending(), Some(7));
    assert_eq!(publisher.publish(7), Publish::Pending);
    assert_eq!(consumer.pop(), Some(1));
    assert!(publisher.flush());
    assert_eq!(publisher.pending(), None);
    assert_eq!(publisher.publish(7), Publish::Unchanged);
    assert_eq!(consumer.pop(), Some(2));
    assert_eq!(consumer.pop(), Some(7));
    assert_eq!(consumer.pop(), None);
}

#[test]
#[should_panic(expected = "went backwards")]
fn publisher_rejects_decreasing_commit() {
    let (producer, _consumer) = channel::<u64>(2);
    let mut publisher = CommitPublisher::new(producer, None);
    publisher.publish(5);
    publisher.publish(4);
}

#[test]
fn doorbell_wakes_a_parked_consumer() {
    let bell = Doorbell::new();
    let (mut producer, mut consumer) = channel::<u64>(2);
    let sleeper_bell = Arc::clone(&bell);
    let sleeper = thread::spawn(move || loop {
        if let Some(value) = consumer.pop() {
            return value;
        }
        // A long timeout: if the ring were not heard, the test would visibly stall.
        sleeper_bell.sleep(Duration::from_secs(60), || !consumer.is_empty());
    });
    thread::sleep(Duration::from_millis(20));
    producer.push(42).unwrap();
    bell.ring();
    assert_eq!(sleeper.join().unwrap(), 42);
}

/// A consumer that parks on `bell` (60 s, so a lost ring would show as a stall) until a
/// value is in the ring, and says each time it is about to park. Returns the value and how
/// often it woke.
fn parking_consumer(
    bell: &Arc<Doorbell>,
    mut consumer: engine::spsc::Consumer<u64>,
) -> (
    std::sync::mpsc::Receiver<()>,
    thread::JoinHandle<(u64, usize)>,
) {
    let (parking_tx, parking_rx) = std::sync::mpsc::channel();
    let bell = Arc::clone(bell);
    let sleeper = thread::spawn(move || {
        let mut wakes = 0;
        loop {
            // Called once the sleeping flag is up: a ring from now on is heard.
            bell.sleep(Duration::from_secs(60), || {
                let _ = parking_tx.send(());
                false
            });
            wakes += 1;
            if let Some(value) = consumer.pop() {
                return (value, wakes);
            }
        }
    });
    (parking_rx, sleeper)
}

#[test]
fn deferred_publisher_wakes_the_consumer_when_asked() {
    let bell = Doorbell::new();
    let (producer, consumer) = channel::<u64>(4);
    let mut publisher = CommitPublisher::new(producer, Some(Arc::clone(&bell)));
    publisher.defer_wakes();
    let (parking, sleeper) = parking_consumer(&bell, consumer);
    parking.recv().unwrap();
    assert_eq!(publisher.publish(5), Publish::Sent);
    assert_eq!(publisher.unrung_entries(), 5);
    // Not rung by the push: the consumer stays parked.
    thread::sleep(Duration::from_millis(50));
    assert!(!sleeper.is_finished(), "a deferred push woke the consumer");
    publisher.wake();
    assert_eq!(publisher.unrung_entries(), 0);
    assert_eq!(sleeper.join().unwrap(), (5, 1));
    // Nothing pushed since: nothing to ring.
    publisher.wake();
    assert_eq!(publisher.publish(8), Publish::Sent);
    assert_eq!(publisher.unrung_entries(), 3);
}

#[test]
fn deferred_publisher_rings_at_once_when_the_ring_is_full() {
    let bell = Doorbell::new();
    let (mut producer, consumer) = channel::<u64>(2);
    producer.push(1).unwrap();
    producer.push(2).unwrap();
    let mut publisher = CommitPublisher::new(producer, Some(Arc::clone(&bell)));
    publisher.defer_wakes();
    let (parking, sleeper) = parking_consumer(&bell, consumer);
    parking.recv().unwrap();
    assert_eq!(publisher.publish(3), Publish::Pending);
    assert_eq!(sleeper.join().unwrap(), (1, 1));
}

#[derive(Debug, Clone)]
enum Op {
    /// Offer the current commit plus this much (0 repeats the offer).
    Publish(u64),
    /// The consumer pops up to this many values.
    Pop(usize),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..5).prop_map(Op::Publish),
        2 => (0usize..4).prop_map(Op::Pop),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    /// Model check: whatever the interleaving of offers, pops and flushes over a ring of 1,
    /// 2 or 4 slots, the ring carries strictly increasing values, the publisher keeps exactly
    /// the newest unsent offer pending, and after a final drain the consumer holds the newest
    /// offer: coalescing never loses the latest commit.
    #[test]
    fn publisher_never_loses_the_newest_commit(
        capacity_log in 0u32..3,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let (producer, mut consumer) = channel::<u64>(1 << capacity_log);
        let mut publisher = CommitPublisher::new(producer, None);
        let mut commit = 0u64;
        let mut last_seen = 0u64;
        for op in ops {
            match op {
                Op::Publish(delta) => {
                    commit += delta;
                    let outcome = publisher.publish(commit);
                    prop_assert_eq!(publisher.offered(), commit);
                    if delta > 0 {
                        prop_assert_ne!(outcome, Publish::Unchanged);
                    }
                }
                Op::Pop(count) => {
                    for _ in 0..count {
                        if let Some(value) = consumer.pop() {
                            prop_assert!(value > last_seen);
                            last_seen = value;
                        }
                    }
                }
                Op::Flush => {
                    publisher.flush();
                }
            }
            prop_assert!(publisher.sent() <= publisher.offered());
            prop_assert_eq!(publisher.pending().is_some(), publisher.sent() < publisher.offered());
            if let Some(pending) = publisher.pending() {
                prop_assert_eq!(pending, commit);
            }
        }
        loop {
            let flushed = publisher.flush();
            while let Some(value) = consumer.pop() {
                prop_assert!(value > last_seen);
                last_seen = value;
            }
            if flushed {
                break;
            }
        }
        prop_assert_eq!(last_seen, commit);
    }
}
