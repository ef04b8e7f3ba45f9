//! How raftbench measures against its loopback baseline: the ping-pong reports where its
//! two ends ran, because on a VM a round trip between two threads on one vCPU is several
//! times shorter than across two, and the ratio printed against it means something else
//! then; and latencies are rounded, not truncated, to the microseconds they are kept in.

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use tools::load::{ping_pong, CPU_CHECK_EVERY};

#[test]
fn ends_pinned_to_one_cpu_are_reported_on_one_cpu() {
    // The echo thread inherits the affinity of the thread that spawns it.
    let mut one = CpuSet::new();
    one.set(0).unwrap();
    sched_setaffinity(Pid::from_raw(0), &one).unwrap();
    let rounds = 4 * CPU_CHECK_EVERY;
    let p = ping_pong(rounds, None).unwrap();
    assert_eq!(p.samples.len(), rounds);
    assert_eq!(
        p.cpu_checks(),
        4,
        "every {CPU_CHECK_EVERY}th round is checked on both ends"
    );
    assert_eq!(p.same_cpu_checks(), 4);
    assert_eq!(
        p.one_cpu, p.samples,
        "every round went before a one-CPU check"
    );
    assert!(p.two_cpus.is_empty());
}

#[test]
fn slices_add_up() {
    let mut all = ping_pong(CPU_CHECK_EVERY, None).unwrap();
    all.extend(ping_pong(2 * CPU_CHECK_EVERY + 1, None).unwrap());
    assert_eq!(all.samples.len(), 3 * CPU_CHECK_EVERY + 1);
    assert_eq!(all.cpu_checks(), 3);
    assert!(all.same_cpu_checks() <= all.cpu_checks());
}

#[test]
fn latencies_round_to_the_nearest_microsecond() {
    use std::time::Duration;
    use tools::load::micros;
    assert_eq!(micros(Duration::from_nanos(49_499)), 49);
    assert_eq!(micros(Duration::from_nanos(49_500)), 50);
    assert_eq!(micros(Duration::from_nanos(49_999)), 50);
    assert_eq!(micros(Duration::ZERO), 1, "the histogram's lowest value");
    assert_eq!(micros(Duration::MAX), u64::MAX);
}

#[test]
fn round_trips_are_split_by_where_the_ends_ran() {
    let mut all = ping_pong(3 * CPU_CHECK_EVERY + 7, None).unwrap();
    all.extend(ping_pong(2 * CPU_CHECK_EVERY, None).unwrap());
    assert_eq!(all.samples.len(), 5 * CPU_CHECK_EVERY + 7);
    assert_eq!(
        all.cpu_checks(),
        5,
        "every window before a check is on one side"
    );
    // The rounds before each check go to the side that check found; the 7 after the last
    // check of the first slice go to neither.
    let tail = 3 * CPU_CHECK_EVERY..3 * CPU_CHECK_EVERY + 7;
    let mut expected: Vec<_> = all
        .samples
        .iter()
        .enumerate()
        .filter(|(i, _)| !tail.contains(i))
        .map(|(_, d)| *d)
        .collect();
    let mut split: Vec<_> = all.one_cpu.iter().chain(&all.two_cpus).copied().collect();
    expected.sort_unstable();
    split.sort_unstable();
    assert_eq!(split, expected);
}
