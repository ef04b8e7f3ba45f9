//! Where a thread runs: pinned to one core, or free to run on any of a set.
//!
//! Dedicated cores get one thread each, pinned: a spinning shard keeps its caches and never
//! migrates. Where the tuning says threads share cores (`cores.shared_cores`, for small
//! VMs that run three replicas and their clients on two vCPUs), pinning each thread to one
//! core backfires: a woken thread waits for its own core while another one idles. Measured
//! on the 2-vCPU development VM with `raftbench local --fsync off`: 397,000-415,000 entries/s
//! pinned, 440,000-447,000 floating over both cores. So a shared-cores host confines its
//! threads to the union of its listed cores and lets the scheduler place them.

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Where one thread runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Pinned to this core.
    Core(usize),
    /// Any of these cores, as the scheduler sees fit.
    Among(Vec<usize>),
}

impl Placement {
    /// Applies the placement to the calling thread. A failure (a core outside the
    /// process's allowed set, say) is logged, not fatal: the same binary runs where
    /// affinity is restricted.
    pub fn apply(&self, thread: &str) {
        match self {
            Placement::Core(core) => {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: *core }) {
                    tracing::warn!(thread, core, "could not pin the thread");
                }
            }
            Placement::Among(cores) => {
                let mut set = CpuSet::new();
                let filled = cores.iter().try_for_each(|&core| set.set(core));
                // Pid 0: the calling thread.
                if let Err(e) = filled.and_then(|()| sched_setaffinity(Pid::from_raw(0), &set)) {
                    tracing::warn!(thread, ?cores, error = %e, "could not confine the thread");
                }
            }
        }
    }
}
