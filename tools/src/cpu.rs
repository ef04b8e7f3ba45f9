//! How busy this machine's CPUs were over a stretch of time, from the kernel's own
//! accounting (`/proc/stat`), so a benchmark can say whether it was CPU-bound and how
//! much of the machine a hypervisor took away (steal).
//!
//! On a shared VM, throughput moves with the host's load from one minute to the next;
//! CPU time per committed entry moves much less, and steal time names one cause of a
//! slow run.

use std::time::Duration;

/// CPU time of all CPUs, in clock ticks: cumulative as `/proc/stat`'s `cpu` line has it
/// ([`CpuTimes::now`]), or over a stretch ([`CpuTimes::until`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq: time spent running something.
    pub busy: u64,
    /// idle + iowait: time with nothing to run.
    pub idle: u64,
    /// Time the hypervisor ran something else while this guest had work.
    pub steal: u64,
}

/// Why `/proc/stat` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CpuStatError {
    #[error("cannot read /proc/stat: {0}")]
    Read(#[from] std::io::Error),
    #[error("/proc/stat: {0}")]
    Parse(String),
}

impl CpuTimes {
    /// Reads the machine's counters now.
    pub fn now() -> Result<CpuTimes, CpuStatError> {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat")?)
    }

    /// Parses the aggregate `cpu` line of a `/proc/stat` text: user, nice, system, idle,
    /// iowait, irq, softirq, steal (guest time is already inside user and nice). Kernels
    /// before 2.6.11 print fewer fields; those are refused rather than guessed.
    pub fn parse(stat: &str) -> Result<CpuTimes, CpuStatError> {
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some("cpu"))
            .ok_or_else(|| CpuStatError::Parse("no aggregate `cpu` line".into()))?;
        let fields = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .enumerate()
            .map(|(i, f)| {
                f.parse::<u64>().map_err(|_| {
                    CpuStatError::Parse(format!("field {} of the `cpu` line is {f:?}", i + 1))
                })
            })
            .collect::<Result<Vec<u64>, _>>()?;
        let &[user, nice, system, idle, iowait, irq, softirq, steal] = fields.as_slice() else {
            return Err(CpuStatError::Parse(format!(
                "the `cpu` line has {} numbers, expected at least 8",
                fields.len()
            )));
        };
        Ok(CpuTimes {
            busy: user + nice + system + irq + softirq,
            idle: idle + iowait,
            steal,
        })
    }

    /// What happened between `self` (earlier) and `later`.
    pub fn until(&self, later: &CpuTimes) -> CpuTimes {
        CpuTimes {
            busy: later.busy.saturating_sub(self.busy),
            idle: later.idle.saturating_sub(self.idle),
            steal: later.steal.saturating_sub(self.steal),
        }
    }

    fn total(&self) -> u64 {
        self.busy + self.idle + self.steal
    }

    /// Share of all CPU time spent running something (0 when nothing was counted).
    pub fn busy_fraction(&self) -> f64 {
        self.busy as f64 / self.total().max(1) as f64
    }

    /// Share of all CPU time the hypervisor took.
    pub fn steal_fraction(&self) -> f64 {
        self.steal as f64 / self.total().max(1) as f64
    }

    /// Busy CPU time, given the length of a clock tick.
    pub fn busy_time(&self, tick: Duration) -> Duration {
        tick.saturating_mul(u32::try_from(self.busy).unwrap_or(u32::MAX))
    }
}

/// The length of one `/proc/stat` clock tick (`sysconf(_SC_CLK_TCK)`, 100 Hz on Linux).
pub fn clock_tick() -> Duration {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&hz| hz > 0)
        .unwrap_or(100);
    Duration::from_secs(1) / u32::try_from(hz).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  5941475 7 1219223 2556358 799203 3 159887 46337 11 0\n\
                        cpu0 2970000 3 600000 1278000 400000 1 80000 23000 5 0\n\
                        intr 1 2 3\n";

    #[test]
    fn parses_the_aggregate_line_only() {
        let t = CpuTimes::parse(STAT).unwrap();
        assert_eq!(t.busy, 5941475 + 7 + 1219223 + 3 + 159887);
        assert_eq!(t.idle, 2556358 + 799203);
        assert_eq!(t.steal, 46337);
    }

    #[test]
    fn fractions_and_time_between_two_readings() {
        let a = CpuTimes {
            busy: 1000,
            idle: 500,
            steal: 10,
        };
        let b = CpuTimes {
            busy: 1970,
            idle: 520,
            steal: 20,
        };
        let u = a.until(&b);
        assert_eq!((u.busy, u.idle, u.steal), (970, 20, 10));
        assert!((u.busy_fraction() - 0.97).abs() < 1e-12);
        assert!((u.steal_fraction() - 0.01).abs() < 1e-12);
        assert_eq!(
            u.busy_time(Duration::from_millis(10)),
            Duration::from_millis(9700)
        );
        // Counters never run backwards; if a reading did, nothing is made up.
        assert_eq!(b.until(&a).total(), 0);
        assert_eq!(b.until(&a).busy_fraction(), 0.0);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let no_cpu = CpuTimes::parse("intr 1 2 3\n").unwrap_err().to_string();
        assert!(no_cpu.contains("no aggregate `cpu` line"), "{no_cpu}");
        let short = CpuTimes::parse("cpu 1 2 3 4\n").unwrap_err().to_string();
        assert!(short.contains("4 numbers, expected at least 8"), "{short}");
        let bad = CpuTimes::parse("cpu 1 2 x 4 5 6 7 8\n")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("field 3") && bad.contains("\"x\""), "{bad}");
        // `cpu0` is not the aggregate line.
        assert!(CpuTimes::parse("cpu0 1 2 3 4 5 6 7 8\n").is_err());
    }

    #[test]
    fn reads_this_machine() {
        let tick = clock_tick();
        assert!(tick > Duration::ZERO && tick <= Duration::from_secs(1));
        if std::path::Path::new("/proc/stat").exists() {
            let a = CpuTimes::now().unwrap();
            let b = CpuTimes::now().unwrap();
            assert!(b.busy >= a.busy && b.idle >= a.idle);
        }
    }
}
