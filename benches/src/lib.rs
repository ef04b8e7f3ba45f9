//! Benchmarks live in benches/benches/; this library holds what several of them share.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use criterion::Criterion;

/// Mean time per iteration accumulated over every criterion sample of one function (so a
/// bench can print its ratio to a baseline measured in the same run).
#[derive(Debug, Clone, Default)]
pub struct Mean(Rc<Cell<(u64, Duration)>>);

impl Mean {
    /// Adds a sample of `iters` iterations that took `d`; returns `d` for `iter_custom`.
    pub fn add(&self, iters: u64, d: Duration) -> Duration {
        let (i, t) = self.0.get();
        self.0.set((i + iters, t + d));
        d
    }

    /// Nanoseconds per iteration (0 when nothing ran).
    pub fn per_iter_ns(&self) -> f64 {
        let (i, t) = self.0.get();
        t.as_nanos() as f64 / i.max(1) as f64
    }

    /// Whether no sample was added (the function was filtered out).
    pub fn is_empty(&self) -> bool {
        self.0.get().0 == 0
    }
}

/// Ten short samples per function: these benches compare against a baseline in the same
/// run, so the ratio matters more than criterion's confidence interval.
pub fn short_config(measurement: Duration) -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(measurement)
}
