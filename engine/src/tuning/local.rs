//! A whole cluster on one machine, described by one file (`tuning/local.toml`, embedded).
//! The launcher may override addresses and data directories programmatically; the result is
//! validated again.

use std::net::SocketAddr;
use std::path::Path;

use super::error::{Reason, TuningError, TuningErrors};
use super::source::Source;
use super::topology::CpuSet;
use super::{check_set, validate_texts, ClusterConfig, ClusterRef, HostConfig, NodeTuning, Placed};

/// The embedded default: 3 nodes on 127.0.0.1, 1 shard, idle `wait`, sized for a 2-vCPU VM.
pub const LOCAL_TOML: &str = include_str!("../../../tuning/local.toml");
/// Example cluster file for dedicated bare-metal hosts.
pub const BAREMETAL_CLUSTER_TOML: &str =
    include_str!("../../../tuning/baremetal-example-cluster.toml");
/// Example host file for a dedicated bare-metal host (spin, isolated cores, big rings).
pub const BAREMETAL_HOST_TOML: &str = include_str!("../../../tuning/baremetal-example-host.toml");

/// Name under which the embedded default is reported in errors.
pub const LOCAL_TOML_NAME: &str = "tuning/local.toml (embedded)";

/// A cluster whose nodes all run on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCluster {
    pub cluster: ClusterConfig,
    /// One per member, in member order.
    pub hosts: Vec<HostConfig>,
}

impl LocalCluster {
    /// The embedded `tuning/local.toml`, validated against this machine's CPUs.
    pub fn embedded() -> Result<Self, TuningErrors> {
        let cpus = CpuSet::online().map_err(|error| TuningError {
            file: super::topology::SYSFS_ONLINE.to_owned(),
            location: None,
            key: String::new(),
            reason: Reason::FileSet(error.to_string()),
        })?;
        Self::parse(LOCAL_TOML_NAME, LOCAL_TOML, Some(&cpus))
    }

    /// Parses and validates a local-cluster file (`cpus: None` skips core existence).
    pub fn parse(name: &str, text: &str, cpus: Option<&CpuSet>) -> Result<Self, TuningErrors> {
        let set = validate_texts(&[(name, text)], cpus)?;
        let local = Self {
            cluster: set.cluster,
            hosts: set.hosts,
        };
        local.check_one_host_per_member(name)?;
        Ok(local)
    }

    /// Replaces every member's addresses: `addrs[i]` is `(peer, client)` of member `i`.
    /// For launchers that pick free ports at run time. Validates the result.
    pub fn with_addrs(mut self, addrs: &[(SocketAddr, SocketAddr)]) -> Result<Self, TuningErrors> {
        if addrs.len() != self.cluster.members.len() {
            return Err(self.override_error(
                "cluster.members",
                Reason::Mismatch(format!(
                    "{} address pairs for {} members",
                    addrs.len(),
                    self.cluster.members.len()
                )),
            ));
        }
        for (member, &(peer, client)) in self.cluster.members.iter_mut().zip(addrs) {
            member.peer_addr = peer;
            member.client_addr = client;
        }
        self.validate(None)?;
        Ok(self)
    }

    /// Keeps each member's IP and replaces its ports: `ports[i]` is `(peer, client)`.
    pub fn with_ports(self, ports: &[(u16, u16)]) -> Result<Self, TuningErrors> {
        if ports.len() != self.cluster.members.len() {
            return Err(self.override_error(
                "cluster.members",
                Reason::Mismatch(format!(
                    "{} port pairs for {} members",
                    ports.len(),
                    self.cluster.members.len()
                )),
            ));
        }
        let addrs: Vec<(SocketAddr, SocketAddr)> = self
            .cluster
            .members
            .iter()
            .zip(ports)
            .map(|(member, &(peer, client))| {
                (
                    SocketAddr::new(member.peer_addr.ip(), peer),
                    SocketAddr::new(member.client_addr.ip(), client),
                )
            })
            .collect();
        self.with_addrs(&addrs)
    }

    /// Puts node `n`'s data in `root/node-n`.
    pub fn with_data_root(mut self, root: &Path) -> Self {
        for host in &mut self.hosts {
            host.data_dir = root.join(format!("node-{}", host.node_id));
        }
        self
    }

    /// The settings of one node.
    pub fn node(&self, node_id: u64) -> Option<NodeTuning> {
        let host = self.hosts.iter().find(|host| host.node_id == node_id)?;
        Some(NodeTuning {
            cluster: self.cluster.clone(),
            host: host.clone(),
        })
    }

    /// Validates the cluster as it is now (after programmatic changes). Errors name the keys
    /// as in a local-cluster file, without locations.
    pub fn validate(&self, cpus: Option<&CpuSet>) -> Result<(), TuningErrors> {
        let name = "local cluster (after overrides)";
        let source = Source::parse(name, String::new())?;
        let sources = [source];
        let cluster = ClusterRef {
            source: &sources[0],
            at: "cluster.",
            config: &self.cluster,
        };
        let hosts: Vec<Placed> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(h, host)| Placed {
                source: 0,
                at: format!("hosts[{h}]."),
                host: host.clone(),
                local: true,
            })
            .collect();
        let errors = check_set(&cluster, &hosts, &sources, cpus);
        if !errors.is_empty() {
            return Err(TuningErrors::new(errors));
        }
        self.check_one_host_per_member(name)
    }

    /// A local cluster runs every member here, so each needs a host entry.
    fn check_one_host_per_member(&self, name: &str) -> Result<(), TuningErrors> {
        let missing: Vec<u64> = self
            .cluster
            .members
            .iter()
            .map(|member| member.node_id)
            .filter(|id| !self.hosts.iter().any(|host| host.node_id == *id))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(TuningError {
            file: name.to_owned(),
            location: None,
            key: "hosts".to_owned(),
            reason: Reason::Mismatch(format!("no [[hosts]] entry for members {missing:?}")),
        }
        .into())
    }

    fn override_error(&self, key: &str, reason: Reason) -> TuningErrors {
        TuningError {
            file: "local cluster (overrides)".to_owned(),
            location: None,
            key: key.to_owned(),
            reason,
        }
        .into()
    }
}
