//! Which CPUs exist, so a host file naming a core this machine does not have is rejected at
//! start rather than silently left unpinned.
//!
//! By default the set comes from `/sys/devices/system/cpu/online` (Linux's CPU list format,
//! e.g. `0-3,8-11`). With the `hwloc` cargo feature it comes from hwlocality's topology,
//! which also knows about cgroup/cpuset restrictions on bare metal.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

/// The kernel's list of online CPUs.
pub const SYSFS_ONLINE: &str = "/sys/devices/system/cpu/online";

/// Why the CPU set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The sysfs file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The CPU list is malformed.
    #[error("malformed CPU list {list:?}: {reason}")]
    Parse { list: String, reason: &'static str },
    /// hwloc could not build a topology.
    #[error("hwloc: {0}")]
    Hwloc(String),
}

/// A set of CPU (core) ids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuSet {
    cores: BTreeSet<usize>,
}

impl CpuSet {
    /// A set holding exactly `cores` (a fake topology for tests and remote checks).
    pub fn from_cores(cores: impl IntoIterator<Item = usize>) -> Self {
        Self {
            cores: cores.into_iter().collect(),
        }
    }

    /// Parses Linux's CPU list format: comma-separated ids and inclusive ranges.
    pub fn parse_list(list: &str) -> Result<Self, TopologyError> {
        let bad = |reason| TopologyError::Parse {
            list: list.to_owned(),
            reason,
        };
        let mut cores = BTreeSet::new();
        for part in list.trim().split(',').filter(|part| !part.is_empty()) {
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            let low: usize = low.trim().parse().map_err(|_| bad("not a number"))?;
            let high: usize = high.trim().parse().map_err(|_| bad("not a number"))?;
            if low > high {
                return Err(bad("range start above its end"));
            }
            if high - low > 1 << 16 {
                return Err(bad("range too large"));
            }
            cores.extend(low..=high);
        }
        if cores.is_empty() {
            return Err(bad("no CPUs"));
        }
        Ok(Self { cores })
    }

    /// Reads a CPU list file (normally [`SYSFS_ONLINE`]).
    pub fn from_file(path: &Path) -> Result<Self, TopologyError> {
        let list = std::fs::read_to_string(path).map_err(|source| TopologyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_list(&list)
    }

    /// The CPUs of this machine: hwloc's allowed set with the `hwloc` feature, the sysfs
    /// online list otherwise.
    pub fn online() -> Result<Self, TopologyError> {
        #[cfg(feature = "hwloc")]
        {
            Self::from_hwloc()
        }
        #[cfg(not(feature = "hwloc"))]
        {
            Self::from_file(Path::new(SYSFS_ONLINE))
        }
    }

    /// The processing units hwloc reports as allowed for this process.
    #[cfg(feature = "hwloc")]
    pub fn from_hwloc() -> Result<Self, TopologyError> {
        let topology =
            hwlocality::Topology::new().map_err(|error| TopologyError::Hwloc(error.to_string()))?;
        let cpuset = topology.allowed_cpuset();
        let cores: BTreeSet<usize> = cpuset.iter_set().map(usize::from).collect();
        if cores.is_empty() {
            return Err(TopologyError::Hwloc("no allowed CPUs".to_owned()));
        }
        Ok(Self { cores })
    }

    /// Whether `core` exists.
    pub fn contains(&self, core: usize) -> bool {
        self.cores.contains(&core)
    }

    /// Number of CPUs.
    pub fn len(&self) -> usize {
        self.cores.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }
}

impl fmt::Display for CpuSet {
    /// Formats back into Linux's CPU list format (`0-3,8`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.cores.iter().copied().peekable();
        while let Some(low) = iter.next() {
            let mut high = low;
            while iter.peek() == Some(&(high + 1)) {
                high += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if low == high {
                write!(f, "{low}")?;
            } else {
                write!(f, "{low}-{high}")?;
            }
        }
        Ok(())
    }
}
