//! Whose state a data directory holds, and whether a node may start on it.
//!
//! A node that lost its data directory and came back under its old id as if nothing had
//! happened would start at term 0 with no vote. It could then vote a second time in a term
//! it had already voted in, help elect a second leader for that term, and so lose writes
//! that were acknowledged. Raft is only safe if a vote, once cast, is never forgotten. So a
//! node starts only on:
//!
//! - a data directory whose `identity.toml` names this cluster, this node and this shard
//!   count, and where every shard still has its hard state and a log segment; or
//! - an empty (or absent) data directory when told explicitly that this is a new node of a
//!   new cluster (`raftd --init`); the identity is written once the shards' storage exists;
//!   or
//! - an empty (or absent) data directory when told explicitly that this node lost its data
//!   and rejoins its cluster (`raftd --rejoin`). Each shard is then marked as rejoining
//!   (a `rejoining` file in its directory, written before its storage) until its core has
//!   learned the cluster's terms and caught up (see the core's rejoin notes in
//!   `raft::Replica`); meanwhile it neither votes nor campaigns, across restarts too.
//!
//! A directory with shard state but no identity (written by a build before identities, or
//! by an `--init` or `--rejoin` interrupted before its last step) is adopted: its state is
//! its own, and a rejoin mark in it still holds.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use storage::SEGMENT_SUFFIX;

use super::{
    shard_dir, shard_hard_state_path as hard_state_path, shard_log_dir as log_dir, NodeError,
};
use crate::tuning::NodeTuning;

/// The identity file's name inside the data directory.
pub const IDENTITY_FILE: &str = "identity.toml";

/// This file format's version.
const FORMAT: u32 = 1;

/// What `identity.toml` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    format: u32,
    cluster_id: u64,
    node_id: u64,
    shards: u32,
}

impl Identity {
    fn of(tuning: &NodeTuning) -> Self {
        Identity {
            format: FORMAT,
            cluster_id: tuning.cluster.cluster_id,
            node_id: tuning.host.node_id,
            shards: tuning.cluster.shards.count,
        }
    }
}

/// What the operator says about the data directory when starting a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Begin {
    /// The directory holds this node's state (every start but the first).
    #[default]
    Resume,
    /// A new node of a new cluster: format the empty directory (`raftd --init`).
    Init,
    /// This node lost its data: start on the empty directory and rejoin the cluster
    /// without voting until caught up (`raftd --rejoin`).
    Rejoin,
}

impl Begin {
    /// raftd's flag for it (none to resume).
    pub fn flag(self) -> Option<&'static str> {
        match self {
            Begin::Resume => None,
            Begin::Init => Some("--init"),
            Begin::Rejoin => Some("--rejoin"),
        }
    }

    fn named(self) -> &'static str {
        self.flag().unwrap_or("resuming")
    }
}

/// How a node starts on its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The directory holds this node's state.
    Existing,
    /// No identity yet: write it with [`record`] once the shards' storage is open.
    Record,
}

fn identity_path(tuning: &NodeTuning) -> PathBuf {
    tuning.host.data_dir.join(IDENTITY_FILE)
}

fn refuse(message: String) -> NodeError {
    NodeError::DataDir(message)
}

/// A node that lost its data: what to do instead of starting as if nothing happened.
const LOST_DATA: &str = "A node that lost its data must not start under its old id as if \
     nothing happened: it could vote twice in one term and lose acknowledged writes. Move \
     what is left of the directory away and start the node with --rejoin";

/// Decides whether this node may start on its data directory, given what the operator
/// says about it. Reads only; creates nothing.
pub fn check(tuning: &NodeTuning, begin: Begin) -> Result<Start, NodeError> {
    let dir = &tuning.host.data_dir;
    if begin == Begin::Rejoin && tuning.cluster.members.len() < 2 {
        return Err(refuse(format!(
            "--rejoin needs another member that kept its data, and the cluster file names \
             node {} alone",
            tuning.host.node_id
        )));
    }
    if begin == Begin::Rejoin && tuning.cluster.raft.fixed_leader.is_some() {
        return Err(refuse(
            "--rejoin is not available in fixed-leader mode (raft.fixed_leader): the fixed \
             leader takes office without an election, and the newer term a rejoining node \
             moves to would depose it for good"
                .to_string(),
        ));
    }
    let path = identity_path(tuning);
    let want = Identity::of(tuning);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(refuse(format!("cannot read {}: {e}", path.display()))),
    };
    let Some(text) = text else {
        let with_state = (0..want.shards).find(|&s| has_state(tuning, s));
        return match (with_state, begin) {
            (Some(shard), Begin::Init | Begin::Rejoin) => Err(refuse(format!(
                "{} starts only on an empty data directory, and {} holds shard {shard}'s \
                 state ({}) without an {IDENTITY_FILE}: start without {} to keep that state",
                begin.named(),
                dir.display(),
                hard_state_path(tuning, shard).display(),
                begin.named(),
            ))),
            (Some(_), Begin::Resume) | (None, Begin::Init | Begin::Rejoin) => Ok(Start::Record),
            (None, Begin::Resume) => Err(refuse(format!(
                "{} holds no state of node {}: no {IDENTITY_FILE} and no shard state. For a new \
                 node of a new cluster, start it once with --init. {LOST_DATA}",
                dir.display(),
                want.node_id,
            ))),
        };
    };
    let found: Identity = toml::from_str(&text).map_err(|e| {
        refuse(format!(
            "{}: not a node identity: {}",
            path.display(),
            e.message()
        ))
    })?;
    if found.format != FORMAT {
        return Err(refuse(format!(
            "{}: identity format {} (this build reads format {FORMAT})",
            path.display(),
            found.format
        )));
    }
    if (found.cluster_id, found.node_id) != (want.cluster_id, want.node_id) {
        return Err(refuse(format!(
            "{} holds the state of node {} of cluster {}, and this is node {} of cluster {}: \
             check the host file's node_id and data_dir",
            dir.display(),
            found.node_id,
            found.cluster_id,
            want.node_id,
            want.cluster_id
        )));
    }
    if found.shards != want.shards {
        return Err(refuse(format!(
            "{} holds {} shards, and the cluster file asks for {}: the shard count of an \
             existing cluster cannot change",
            dir.display(),
            found.shards,
            want.shards
        )));
    }
    if begin != Begin::Resume {
        return Err(refuse(format!(
            "{} starts only on an empty data directory, and {} already holds node {}'s \
             state: start without {}",
            begin.named(),
            dir.display(),
            want.node_id,
            begin.named(),
        )));
    }
    if let Some(lost) = (0..want.shards).find(|&s| !has_state(tuning, s)) {
        return Err(refuse(format!(
            "{} is missing: node {}'s state for shard {lost} was lost. {LOST_DATA}",
            hard_state_path(tuning, lost).display(),
            want.node_id
        )));
    }
    // An open log always keeps a segment. Without one, the entries this node acknowledged
    // are gone, and its votes would let a candidate that lacks them win.
    if let Some(lost) = (0..want.shards).find(|&s| !has_log(tuning, s)) {
        return Err(refuse(format!(
            "{} holds no log segment (*{SEGMENT_SUFFIX}): node {}'s log for shard {lost} was \
             lost, and with it entries it acknowledged: its vote could elect a leader without \
             them. {LOST_DATA}",
            log_dir(tuning, lost).display(),
            want.node_id
        )));
    }
    Ok(Start::Existing)
}

fn has_log(tuning: &NodeTuning, shard: u32) -> bool {
    std::fs::read_dir(log_dir(tuning, shard)).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(SEGMENT_SUFFIX))
    })
}

/// Whether the shard has state: its hard state file exists.
fn has_state(tuning: &NodeTuning, shard: u32) -> bool {
    hard_state_path(tuning, shard).exists()
}

/// The file that marks shard `shard` as rejoining after a loss of data.
pub fn rejoin_mark_path(tuning: &NodeTuning, shard: u32) -> PathBuf {
    shard_dir(tuning, shard).join(REJOIN_MARK)
}

/// The rejoin mark's name inside a shard's directory.
pub const REJOIN_MARK: &str = "rejoining";

/// Marks shard `shard` as rejoining, durably, before any of its storage exists: a crash
/// at any later point leaves the mark, so the shard never votes before it caught up.
pub fn mark_rejoining(tuning: &NodeTuning, shard: u32) -> Result<(), NodeError> {
    let dir = shard_dir(tuning, shard);
    std::fs::create_dir_all(&dir).map_err(|e| io_refusal("create", &dir, e))?;
    write_synced(
        &rejoin_mark_path(tuning, shard),
        b"This shard lost its data and is rejoining its cluster: it does not vote until it\n\
          has caught up with the leader, and raftd removes this file then. Do not remove it.\n",
    )?;
    for d in [&dir, &tuning.host.data_dir] {
        sync_dir(d).map_err(|e| io_refusal("sync", d, e))?;
    }
    Ok(())
}

/// Removes a shard's rejoin mark once its core has caught up, durably.
pub fn clear_rejoin_mark(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    sync_dir(path.parent().expect("a mark lives in a shard directory"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

fn io_refusal(what: &str, at: &Path, e: std::io::Error) -> NodeError {
    refuse(format!("cannot {what} {}: {e}", at.display()))
}

/// Creates (or replaces) `path` with `bytes`, synced.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    let mut file = File::create(path).map_err(|e| io_refusal("create", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_refusal("write", path, e))
}

/// Writes the identity: to a temporary file, synced, renamed into place, and the directory
/// synced, so a crash leaves either no identity or the whole one.
pub fn record(tuning: &NodeTuning) -> Result<(), NodeError> {
    let path = identity_path(tuning);
    let dir = &tuning.host.data_dir;
    let text = format!(
        "# Written once, when this node first started. raftd refuses to start on a data\n\
         # directory whose identity is not its own. Do not copy or edit.\n{}",
        toml::to_string(&Identity::of(tuning)).expect("identity serializes")
    );
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    write_synced(&tmp, text.as_bytes())?;
    std::fs::rename(&tmp, &path).map_err(|e| io_refusal("rename into", &path, e))?;
    sync_dir(dir).map_err(|e| io_refusal("sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::{LocalCluster, LOCAL_TOML};

    fn node(root: &Path, id: u64) -> NodeTuning {
        LocalCluster::parse("local.toml", LOCAL_TOML, None)
            .expect("embedded tuning")
            .with_data_root(root)
            .node(id)
            .expect("node")
    }

    /// A data directory as a node's first start leaves it: shard storage and identity.
    fn formatted(root: &Path, id: u64) -> NodeTuning {
        let t = node(root, id);
        open_shards(&t);
        record(&t).expect("record");
        t
    }

    /// What opening the shards' storage leaves behind (the hard state file is the marker;
    /// creating the log directory creates the data directory too).
    fn open_shards(tuning: &NodeTuning) {
        for s in 0..tuning.cluster.shards.count {
            std::fs::create_dir_all(log_dir(tuning, s)).expect("log dir");
            std::fs::write(hard_state_path(tuning, s), b"state").expect("hard state");
            let segment = log_dir(tuning, s).join(format!("{:020}{SEGMENT_SUFFIX}", 1));
            std::fs::write(segment, b"segment").expect("segment");
        }
    }

    fn refusal(result: Result<Start, NodeError>) -> String {
        match result {
            Err(NodeError::DataDir(m)) => m,
            other => panic!("expected a data-directory refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_new_node_starts_only_with_init_and_then_only_without() {
        let root = tempfile::tempdir().expect("tempdir");
        let t = node(root.path(), 2);
        let m = refusal(check(&t, Begin::Resume));
        assert!(m.contains("--init") && m.contains("vote twice"), "{m}");
        assert!(m.contains(&t.host.data_dir.display().to_string()), "{m}");
        assert_eq!(check(&t, Begin::Init).expect("init"), Start::Record);
        // The check creates nothing: until the identity is recorded, the directory is new.
        assert!(!t.host.data_dir.exists());

        open_shards(&t);
        record(&t).expect("record");
        assert_eq!(check(&t, Begin::Resume).expect("restart"), Start::Existing);
        let m = refusal(check(&t, Begin::Init));
        assert!(m.contains("already holds node 2's state"), "{m}");
        assert!(!t.host.data_dir.join("identity.toml.tmp").exists());
    }

    #[test]
    fn a_lost_shard_state_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let t = formatted(root.path(), 1);
        std::fs::remove_dir_all(shard_dir(&t, 0)).expect("lose shard 0");
        let m = refusal(check(&t, Begin::Resume));
        assert!(m.contains("shard-0/hard_state is missing"), "{m}");
        assert!(m.contains("shard 0 was lost"), "{m}");

        // The hard state without the log: the entries it acknowledged are gone.
        open_shards(&t);
        assert_eq!(
            check(&t, Begin::Resume).expect("whole again"),
            Start::Existing
        );
        for entry in std::fs::read_dir(log_dir(&t, 0)).expect("log dir") {
            std::fs::remove_file(entry.expect("entry").path()).expect("remove segment");
        }
        let m = refusal(check(&t, Begin::Resume));
        assert!(m.contains("shard-0/log holds no log segment"), "{m}");
        std::fs::remove_dir(log_dir(&t, 0)).expect("remove log dir");
        let m = refusal(check(&t, Begin::Resume));
        assert!(m.contains("log for shard 0 was lost"), "{m}");
    }

    #[test]
    fn another_nodes_or_clusters_directory_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let one = formatted(root.path(), 1);

        let mut two = node(root.path(), 2);
        two.host.data_dir = one.host.data_dir.clone();
        let m = refusal(check(&two, Begin::Resume));
        assert!(m.contains("node 1 of cluster 1, and this is node 2"), "{m}");

        let mut other_cluster = one.clone();
        other_cluster.cluster.cluster_id = 7;
        let m = refusal(check(&other_cluster, Begin::Resume));
        assert!(m.contains("this is node 1 of cluster 7"), "{m}");

        let mut more_shards = one.clone();
        more_shards.cluster.shards.count = 2;
        let m = refusal(check(&more_shards, Begin::Resume));
        assert!(
            m.contains("holds 1 shards") && m.contains("asks for 2"),
            "{m}"
        );
    }

    #[test]
    fn state_without_an_identity_is_adopted_but_not_formatted() {
        let root = tempfile::tempdir().expect("tempdir");
        let t = node(root.path(), 3);
        open_shards(&t);
        assert_eq!(check(&t, Begin::Resume).expect("adopt"), Start::Record);
        let m = refusal(check(&t, Begin::Init));
        assert!(m.contains("start without --init"), "{m}");
    }

    #[test]
    fn rejoin_starts_only_on_an_empty_directory_and_marks_every_shard() {
        let root = tempfile::tempdir().expect("tempdir");
        let t = node(root.path(), 2);
        assert_eq!(check(&t, Begin::Rejoin).expect("rejoin"), Start::Record);
        mark_rejoining(&t, 0).expect("mark");
        let mark = rejoin_mark_path(&t, 0);
        assert!(mark.exists());
        // Cut short before the storage: nothing to adopt yet, so --rejoin again.
        assert_eq!(check(&t, Begin::Rejoin).expect("again"), Start::Record);
        open_shards(&t);
        record(&t).expect("record");
        // Restarts go without the flag; the mark stays until the core caught up.
        assert_eq!(check(&t, Begin::Resume).expect("resume"), Start::Existing);
        let m = refusal(check(&t, Begin::Rejoin));
        assert!(
            m.contains("--rejoin starts only on an empty data directory"),
            "{m}"
        );
        clear_rejoin_mark(&mark).expect("clear");
        assert!(!mark.exists());

        // A node with shard state but no identity keeps it: --rejoin would drop it.
        let other = node(root.path(), 3);
        open_shards(&other);
        let m = refusal(check(&other, Begin::Rejoin));
        assert!(m.contains("start without --rejoin"), "{m}");
    }

    #[test]
    fn rejoin_is_refused_alone_and_in_fixed_leader_mode() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut alone = node(root.path(), 1);
        alone.cluster.members.truncate(1);
        let m = refusal(check(&alone, Begin::Rejoin));
        assert!(m.contains("another member that kept its data"), "{m}");
        let mut fixed = node(root.path(), 2);
        fixed.cluster.raft.fixed_leader = Some(1);
        let m = refusal(check(&fixed, Begin::Rejoin));
        assert!(m.contains("fixed-leader mode"), "{m}");
    }

    #[test]
    fn a_damaged_identity_names_the_file() {
        let root = tempfile::tempdir().expect("tempdir");
        let t = node(root.path(), 1);
        open_shards(&t);
        for (text, says) in [
            ("format = 1\ncluster_id = 1\n", "missing field"),
            ("\u{0}\u{1}garbage", "not a node identity"),
            (
                "format = 1\ncluster_id = 1\nnode_id = 1\nshards = 1\nextra = 2\n",
                "unknown field",
            ),
            (
                "format = 9\ncluster_id = 1\nnode_id = 1\nshards = 1\n",
                "identity format 9",
            ),
        ] {
            std::fs::write(t.host.data_dir.join(IDENTITY_FILE), text).expect("write");
            let m = refusal(check(&t, Begin::Resume));
            assert!(m.contains("identity.toml"), "{m}");
            assert!(m.contains(says), "{text:?}: {m}");
        }
    }
}
