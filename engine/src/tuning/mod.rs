//! Tuning: every knob of a node, read from TOML at start-up and checked before anything runs.
//!
//! Settings are split by who must agree (as TigerBeetle splits cluster and process config):
//!
//! * the **cluster file** ([`ClusterConfig`]): identical on every node: members, shards,
//!   Raft timings, batch and inflight limits, durability, optional cluster key;
//! * the **host file** ([`HostConfig`]): one per node process: cores, idle strategy,
//!   io_uring and buffer sizes, data directory, SPSC ring sizes;
//! * a **local-cluster file** ([`LocalCluster`]): one `[cluster]` table plus one `[[hosts]]`
//!   entry per node, describing a whole cluster on one machine. `tuning/local.toml` is the
//!   embedded default ([`LOCAL_TOML`]).
//!
//! Every table denies unknown keys. Loading reports *all* problems, each naming the file,
//! the key path (`host.cores.applier`, `hosts[2].idle`, `cluster.raft.tick_interval_ms`),
//! `line:col` when the key is in the file, and a typed [`Reason`]. [`validate_files`] is the
//! one entry point that `raftctl check-tuning` and `raftd` both call.

pub mod cluster;
pub mod error;
pub mod host;
pub mod local;
mod source;
pub mod topology;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

pub use cluster::{ClusterConfig, Durability, Member, RaftSettings, Replication, Shards};
pub use error::{Location, Reason, TuningError, TuningErrors};
pub use host::{Applier, Client, Cores, HostConfig, IdleStrategy, IoUring, Storage};
pub use local::{LocalCluster, BAREMETAL_CLUSTER_TOML, BAREMETAL_HOST_TOML, LOCAL_TOML};
pub use topology::{CpuSet, TopologyError};

use error::Problems;
use source::Source;

/// What a tuning file describes, told apart by its top-level keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Cluster,
    Host,
    /// `[cluster]` plus `[[hosts]]`: a whole cluster on one machine.
    Local,
}

const CLUSTER_KEYS: &[&str] = &[
    "cluster_id",
    "members",
    "shards",
    "raft",
    "replication",
    "durability",
    "cluster_key_hex",
];
const HOST_KEYS: &[&str] = &[
    "node_id", "data_dir", "cores", "idle", "io_uring", "storage", "client", "applier",
];

/// Schema of a local-cluster file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalFile {
    cluster: ClusterConfig,
    hosts: Vec<HostConfig>,
}

/// A validated set of files: exactly one cluster and the hosts given with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TuningSet {
    pub cluster: ClusterConfig,
    pub hosts: Vec<HostConfig>,
}

/// Everything one node process needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTuning {
    pub cluster: ClusterConfig,
    pub host: HostConfig,
}

impl NodeTuning {
    /// This node's entry in the member list (validation guarantees it exists).
    pub fn member(&self) -> &Member {
        self.cluster
            .member(self.host.node_id)
            .expect("validated: host node_id is a member")
    }
}

/// Reads, parses and validates `paths` (any mix of cluster, host and local-cluster files
/// describing exactly one cluster) against this machine's CPUs.
pub fn validate_files<P: AsRef<Path>>(paths: &[P]) -> Result<TuningSet, TuningErrors> {
    let cpus = CpuSet::online().map_err(|error| TuningError {
        file: topology::SYSFS_ONLINE.to_owned(),
        location: None,
        key: String::new(),
        reason: Reason::FileSet(error.to_string()),
    })?;
    validate_files_with(paths, Some(&cpus))
}

/// As [`validate_files`], against the given CPUs (`None`: skip core-existence checks, e.g.
/// when checking a bare-metal host file on a laptop).
pub fn validate_files_with<P: AsRef<Path>>(
    paths: &[P],
    cpus: Option<&CpuSet>,
) -> Result<TuningSet, TuningErrors> {
    let mut files = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        let name = path.as_ref().display().to_string();
        match std::fs::read_to_string(path.as_ref()) {
            Ok(text) => files.push((name, text)),
            Err(error) => errors.push(TuningError {
                file: name,
                location: None,
                key: String::new(),
                reason: Reason::Io(error),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(TuningErrors::new(errors));
    }
    validate_texts(&files, cpus)
}

/// Loads the two files of one node and returns its settings.
pub fn load_node(
    cluster: &Path,
    host: &Path,
    cpus: Option<&CpuSet>,
) -> Result<NodeTuning, TuningErrors> {
    let mut set = validate_files_with(&[cluster, host], cpus)?;
    let host_name = host.display().to_string();
    if set.hosts.len() != 1 {
        return Err(TuningError {
            file: host_name,
            location: None,
            key: String::new(),
            reason: Reason::FileSet(format!("expected one host, found {}", set.hosts.len())),
        }
        .into());
    }
    let host = set.hosts.remove(0);
    Ok(NodeTuning {
        cluster: set.cluster,
        host,
    })
}

/// Parses and validates in-memory files `(name, text)`; the core of [`validate_files`].
pub fn validate_texts<N: AsRef<str>, T: AsRef<str>>(
    files: &[(N, T)],
    cpus: Option<&CpuSet>,
) -> Result<TuningSet, TuningErrors> {
    let mut errors = Vec::new();
    let mut sources = Vec::with_capacity(files.len());
    for (name, text) in files {
        match Source::parse(name.as_ref(), text.as_ref().to_owned()) {
            Ok(source) => sources.push(source),
            Err(failed) => errors.extend(failed.errors),
        }
    }
    let mut clusters: Vec<(usize, String, ClusterConfig)> = Vec::new();
    let mut hosts: Vec<Placed> = Vec::new();
    for (i, source) in sources.iter_mut().enumerate() {
        let kind = match kind_of(source) {
            Ok(kind) => kind,
            Err(error) => {
                errors.push(*error);
                continue;
            }
        };
        source.display_prefix = match kind {
            FileKind::Cluster => "cluster.",
            FileKind::Host => "host.",
            FileKind::Local => "",
        };
        let parsed = match kind {
            FileKind::Cluster => source
                .deserialize::<ClusterConfig>()
                .map(|cluster| clusters.push((i, String::new(), cluster))),
            FileKind::Host => source.deserialize::<HostConfig>().map(|host| {
                hosts.push(Placed {
                    source: i,
                    at: String::new(),
                    host,
                    local: false,
                })
            }),
            FileKind::Local => source.deserialize::<LocalFile>().map(|file| {
                clusters.push((i, "cluster.".to_owned(), file.cluster));
                for (h, host) in file.hosts.into_iter().enumerate() {
                    hosts.push(Placed {
                        source: i,
                        at: format!("hosts[{h}]."),
                        host,
                        local: true,
                    });
                }
            }),
        };
        if let Err(failed) = parsed {
            errors.extend(failed.errors);
        }
    }
    if !errors.is_empty() {
        return Err(TuningErrors::new(errors));
    }
    if clusters.len() != 1 {
        let names: Vec<&str> = sources.iter().map(|source| source.name.as_str()).collect();
        return Err(TuningError {
            file: names.join(", "),
            location: None,
            key: String::new(),
            reason: Reason::FileSet(format!(
                "the files describe {} clusters; exactly one cluster (file or [cluster] table) is needed",
                clusters.len()
            )),
        }
        .into());
    }
    let (cluster_source, cluster_at, cluster) = clusters.remove(0);
    let cluster_ref = ClusterRef {
        source: &sources[cluster_source],
        at: &cluster_at,
        config: &cluster,
    };
    let errors = check_set(&cluster_ref, &hosts, &sources, cpus);
    if !errors.is_empty() {
        return Err(TuningErrors::new(errors));
    }
    Ok(TuningSet {
        cluster,
        hosts: hosts.into_iter().map(|placed| placed.host).collect(),
    })
}

/// A host and where it was read from.
#[derive(Debug)]
struct Placed {
    source: usize,
    /// Path prefix inside its document (`hosts[1].` in a local-cluster file).
    at: String,
    host: HostConfig,
    /// From a local-cluster file: all its hosts share this machine.
    local: bool,
}

#[derive(Debug)]
struct ClusterRef<'a> {
    source: &'a Source,
    at: &'a str,
    config: &'a ClusterConfig,
}

fn kind_of(source: &Source) -> Result<FileKind, Box<TuningError>> {
    let has = |key: &str| source.top_keys.iter().any(|top| top == key);
    if has("cluster") || has("hosts") {
        return Ok(FileKind::Local);
    }
    let cluster = CLUSTER_KEYS.iter().filter(|key| has(key)).count();
    let host = HOST_KEYS.iter().filter(|key| has(key)).count();
    match (cluster, host) {
        (0, 0) => Err(Box::new(TuningError {
            file: source.name.clone(),
            location: None,
            key: String::new(),
            reason: Reason::FileSet(
                "neither a cluster file (cluster_id, members, ...), a host file (node_id, \
                 cores, ...) nor a local-cluster file ([cluster], [[hosts]])"
                    .to_owned(),
            ),
        })),
        (c, h) if c >= h => Ok(FileKind::Cluster),
        _ => Ok(FileKind::Host),
    }
}

/// All rules over a cluster and its hosts.
fn check_set(
    cluster: &ClusterRef<'_>,
    hosts: &[Placed],
    sources: &[Source],
    cpus: Option<&CpuSet>,
) -> Vec<TuningError> {
    let mut errors = Vec::new();
    let mut problems = Problems::default();
    cluster.config.validate(cluster.at, &mut problems);
    errors.extend(cluster.source.errors(problems.list));
    let cluster_display = format!("{}{}", cluster.source.display_prefix, cluster.at);
    let mut node_ids: BTreeMap<u64, usize> = BTreeMap::new();
    for (h, placed) in hosts.iter().enumerate() {
        let mut problems = Problems::default();
        placed.host.validate(&placed.at, &mut problems);
        placed
            .host
            .validate_against(cluster.config, &placed.at, &cluster_display, &mut problems);
        if let Some(cpus) = cpus {
            placed
                .host
                .validate_topology(cpus, &placed.at, &mut problems);
        }
        if let Some(&first) = node_ids.get(&placed.host.node_id) {
            let other = &hosts[first];
            problems.push(
                format!("{}node_id", placed.at),
                Reason::Duplicate(format!(
                    "node {} is also described in {} {}",
                    placed.host.node_id, sources[other.source].name, other.at
                )),
            );
        } else {
            node_ids.insert(placed.host.node_id, h);
        }
        errors.extend(sources[placed.source].errors(problems.list));
    }
    errors.extend(check_shared_machine(hosts, sources));
    errors
}

/// Hosts of one local-cluster file run on the same machine: a core used by two of them must
/// be shareable by both.
fn check_shared_machine(hosts: &[Placed], sources: &[Source]) -> Vec<TuningError> {
    let mut errors = Vec::new();
    let mut owners: BTreeMap<usize, (usize, String)> = BTreeMap::new();
    for (h, placed) in hosts.iter().enumerate().filter(|(_, placed)| placed.local) {
        for (core, thread) in placed.host.pinned_threads() {
            match owners.get(&core) {
                Some((other, owner)) if *other != h => {
                    let both =
                        placed.host.may_share_cores() && hosts[*other].host.may_share_cores();
                    if !both {
                        let mut problems = Problems::default();
                        problems.push(
                            format!("{}cores", placed.at),
                            Reason::CoreConflict(format!(
                                "{thread} and {owner} both use core {core} on this machine; \
                                 sharing needs idle strategy \"wait\" and shared_cores = true \
                                 on both"
                            )),
                        );
                        errors.extend(sources[placed.source].errors(problems.list));
                    }
                }
                Some(_) => {}
                None => {
                    owners.insert(core, (h, thread));
                }
            }
        }
    }
    errors
}
