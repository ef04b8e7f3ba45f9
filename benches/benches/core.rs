//! Throughput of the pure Raft core: a leader and two followers exchanging messages in
//! memory, every write reported durable at once by the harness, proposals of 64 entries of
//! 256 B. Measured in entries per second through the core, against the minimal work floor
//! of the same run: pushing the same 64 entry metas into three logs plus the two message
//! copies a leader must hand its transport.
//!
//! The core keeps 16 B of metadata per entry forever (no compaction yet), so each timed
//! run rebuilds the cluster every [`BATCHES_PER_CLUSTER`] batches and memory stays bounded.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use engine::raft::{
    Action, Config, EntryMeta, Message, MessageBody, RecoveredState, Replica, ReplicaId,
};

/// Entries per proposal.
const BATCH_ENTRIES: usize = 64;
/// Payload bytes per entry.
const ENTRY_BYTES: u32 = 256;
/// Batches per cluster before it is rebuilt: 4096 x 64 entries x 16 B x 3 replicas is at
/// most 12.6 MB of entry metadata (plus the floor's copies of the same size).
const BATCHES_PER_CLUSTER: u64 = 4096;
/// The throughput the core must sustain on one core.
const TARGET_ENTRIES_PER_S: f64 = 5e6;

const LENS: [u32; BATCH_ENTRIES] = [ENTRY_BYTES; BATCH_ENTRIES];

/// Three replicas and the in-memory network between them. Replica 1 is the fixed leader,
/// so no election runs and every batch takes the replication hot path.
struct Cluster {
    replicas: Vec<Replica>,
    network: VecDeque<Message>,
    out: Vec<Action>,
    applied: u64,
}

impl Cluster {
    fn new() -> Self {
        let voters: Vec<ReplicaId> = vec![1, 2, 3];
        let mut cluster = Cluster {
            replicas: Vec::with_capacity(voters.len()),
            network: VecDeque::with_capacity(64),
            out: Vec::with_capacity(64),
            applied: 0,
        };
        for &id in &voters {
            let mut config = Config::new(id, voters.clone());
            config.fixed_leader = Some(1);
            let r = Replica::new(config, RecoveredState::default(), id).expect("valid config");
            cluster.replicas.push(r);
        }
        for i in 0..voters.len() {
            let mut out = std::mem::take(&mut cluster.out);
            cluster.replicas[i].start(&mut out);
            cluster.execute(i, &mut out);
            cluster.out = out;
        }
        cluster.deliver();
        assert_eq!(cluster.replicas[0].commit(), 1, "the no-op commits");
        cluster
    }

    /// Executes `out` for replica `i`: messages go to the network, a sync is reported
    /// durable at once (the log itself lives in the core's metadata here).
    fn execute(&mut self, i: usize, out: &mut Vec<Action>) {
        loop {
            let mut sync = false;
            for action in out.drain(..) {
                match action {
                    Action::Send(m) => self.network.push_back(m),
                    Action::Sync => sync = true,
                    Action::Apply { first, last } if i == 0 => {
                        self.applied += last - first + 1;
                    }
                    _ => {}
                }
            }
            if !sync {
                return;
            }
            let r = &mut self.replicas[i];
            let (last, term) = (r.last_index(), r.last_term());
            r.on_persisted(last, term, out);
        }
    }

    /// Delivers messages until the network is empty.
    fn deliver(&mut self) {
        let mut out = std::mem::take(&mut self.out);
        while let Some(m) = self.network.pop_front() {
            let i = (m.to - 1) as usize;
            self.replicas[i]
                .step(&m, &mut out)
                .expect("no bad input in the harness");
            self.execute(i, &mut out);
        }
        self.out = out;
    }

    /// One proposal of [`BATCH_ENTRIES`] entries, replicated and committed.
    fn batch(&mut self) {
        let mut out = std::mem::take(&mut self.out);
        self.replicas[0]
            .propose(&LENS, &mut out)
            .expect("leader accepts");
        self.execute(0, &mut out);
        self.out = out;
        self.deliver();
        debug_assert_eq!(self.replicas[0].commit(), self.replicas[0].last_index());
    }
}

/// The minimal work floor: what any replication of 64 entries to two followers must do
/// at least, with no protocol logic. The leader appends the metas, builds one message of
/// them, hands a copy to each follower, and each follower appends them.
struct Floor {
    logs: [Vec<EntryMeta>; 3],
    sent: Vec<Message>,
}

impl Floor {
    fn new() -> Self {
        Floor {
            logs: Default::default(),
            sent: Vec::with_capacity(2),
        }
    }

    fn batch(&mut self) {
        let term = 1;
        let first = self.logs[0].len();
        self.logs[0].extend(LENS.iter().map(|&len| EntryMeta { term, len }));
        let template = Message {
            from: 1,
            to: 2,
            term,
            body: MessageBody::AppendEntries {
                prev_index: first as u64,
                prev_term: term,
                commit: first as u64,
                entries: self.logs[0][first..].to_vec(),
            },
        };
        for to in [2, 3] {
            let mut m = template.clone();
            m.to = to;
            self.sent.push(m);
        }
        for m in self.sent.drain(..) {
            if let MessageBody::AppendEntries { entries, .. } = &m.body {
                self.logs[(m.to - 1) as usize].extend_from_slice(entries);
            }
        }
        black_box(&self.logs);
    }
}

/// Runs `iters` batches of a fresh `T` per [`BATCHES_PER_CLUSTER`], timing only batches.
fn run<T>(iters: u64, new: impl Fn() -> T, batch: impl Fn(&mut T)) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(BATCHES_PER_CLUSTER);
        let mut state = new();
        let start = Instant::now();
        for _ in 0..n {
            batch(&mut state);
        }
        total += start.elapsed();
        black_box(&state);
        done += n;
    }
    total
}

fn core_batch(c: &mut Cluster) {
    c.batch();
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(BATCH_ENTRIES as u64));
    group.bench_function("replicate_3_replicas_64x256B", |b| {
        b.iter_custom(|iters| run(iters, Cluster::new, core_batch))
    });
    group.bench_function("floor_vec_push_and_message_clones", |b| {
        b.iter_custom(|iters| run(iters, Floor::new, Floor::batch))
    });
    group.finish();
}

/// Entries per second of the best of a few fixed-size runs.
fn entries_per_s<T>(new: impl Fn() -> T + Copy, batch: impl Fn(&mut T) + Copy) -> f64 {
    let iters = 4 * BATCHES_PER_CLUSTER;
    let best = (0..5)
        .map(|_| run(iters, new, batch))
        .min()
        .expect("five runs");
    (iters * BATCH_ENTRIES as u64) as f64 / best.as_secs_f64()
}

/// Prints the core against the floor of the same run, and checks the correctness of one
/// cluster's run before trusting its speed.
fn report() {
    let mut cluster = Cluster::new();
    for _ in 0..BATCHES_PER_CLUSTER {
        cluster.batch();
    }
    let entries = BATCHES_PER_CLUSTER * BATCH_ENTRIES as u64;
    assert_eq!(
        cluster.applied,
        entries + 1,
        "every entry (and the no-op) applied"
    );
    for r in &cluster.replicas {
        assert_eq!(r.last_index(), entries + 1);
        assert_eq!(r.persisted_index(), entries + 1);
    }
    assert_eq!(cluster.replicas[0].commit(), entries + 1);

    let core = entries_per_s(Cluster::new, core_batch);
    let floor = entries_per_s(Floor::new, Floor::batch);
    println!(
        "core: {:.2} M entries/s; floor (vec push + message clones): {:.2} M entries/s; \
         core takes {:.1}x the floor's time; target {:.0} M entries/s: {}",
        core / 1e6,
        floor / 1e6,
        floor / core,
        TARGET_ENTRIES_PER_S / 1e6,
        if core >= TARGET_ENTRIES_PER_S {
            "met"
        } else {
            "MISSED"
        },
    );
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        report();
    }
}
