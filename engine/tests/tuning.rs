//! Tuning files: the shipped files parse and validate; unknown keys, bad values and missing
//! cores are rejected with the file, the key path, the location and a typed reason.

use std::path::PathBuf;

use engine::tuning::{
    validate_files, validate_files_with, validate_texts, CpuSet, IdleStrategy, LocalCluster,
    Reason, TuningErrors, BAREMETAL_CLUSTER_TOML, BAREMETAL_HOST_TOML, LOCAL_TOML,
};

fn tuning_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tuning")
}

/// A fake 2-core VM (the smallest machine local.toml must fit).
fn two_cores() -> CpuSet {
    CpuSet::from_cores([0, 1])
}

/// A fake bare-metal host with 8 cores.
fn eight_cores() -> CpuSet {
    CpuSet::from_cores(0..8)
}

fn local_with(from: &str, to: &str) -> Result<LocalCluster, TuningErrors> {
    assert!(
        LOCAL_TOML.contains(from),
        "fixture text {from:?} not in local.toml"
    );
    LocalCluster::parse(
        "local.toml",
        &LOCAL_TOML.replacen(from, to, 1),
        Some(&two_cores()),
    )
}

fn baremetal_host_with(from: &str, to: &str, cpus: &CpuSet) -> Result<(), TuningErrors> {
    assert!(
        BAREMETAL_HOST_TOML.contains(from),
        "fixture text {from:?} not in host file"
    );
    let host = BAREMETAL_HOST_TOML.replacen(from, to, 1);
    validate_texts(
        &[
            ("cluster.toml", BAREMETAL_CLUSTER_TOML),
            ("host.toml", host.as_str()),
        ],
        Some(cpus),
    )
    .map(|_| ())
}

#[test]
fn embedded_local_cluster_validates_on_this_machine() {
    let local = LocalCluster::embedded().unwrap();
    assert_eq!(local.cluster.members.len(), 3);
    assert_eq!(local.hosts.len(), 3);
    assert_eq!(local.cluster.shards.count, 1);
    assert!(local
        .hosts
        .iter()
        .all(|host| host.idle == IdleStrategy::Wait));
}

#[test]
fn local_cluster_fits_a_two_core_vm() {
    let local = LocalCluster::parse("local.toml", LOCAL_TOML, Some(&two_cores())).unwrap();
    let node = local.node(2).unwrap();
    assert_eq!(node.member().node_id, 2);
    assert_eq!(node.host.cores.shards.len(), 1);
    assert_eq!(local.cluster.election_timeout_ticks(), (30, 60));
    assert_eq!(local.cluster.heartbeat_ticks(), 5);
}

#[test]
fn local_file_validates_from_disk() {
    let set = validate_files(&[tuning_dir().join("local.toml")]).unwrap();
    assert_eq!(set.hosts.len(), 3);
}

#[test]
fn baremetal_examples_validate_against_a_fake_topology() {
    let dir = tuning_dir();
    let files = [
        dir.join("baremetal-example-cluster.toml"),
        dir.join("baremetal-example-host.toml"),
    ];
    let set = validate_files_with(&files, Some(&eight_cores())).unwrap();
    assert_eq!(set.cluster.shards.count, 4);
    assert_eq!(set.hosts[0].idle, IdleStrategy::Spin);
    assert_eq!(set.cluster.cluster_key().map(|key| key.len()), Some(32));
    // Without a topology (checking on another machine) it validates too.
    assert!(validate_files_with(&files, None).is_ok());
    // On this 2-core machine the cores do not exist.
    let error = validate_files_with(&files, Some(&two_cores())).unwrap_err();
    assert!(error.find("host.cores.shards[0]").is_some());
}

#[test]
fn overrides_revalidate() {
    let root = tempfile::tempdir().unwrap();
    let local = LocalCluster::parse("local.toml", LOCAL_TOML, Some(&two_cores()))
        .unwrap()
        .with_ports(&[(9001, 9101), (9002, 9102), (9003, 9103)])
        .unwrap()
        .with_data_root(root.path());
    assert_eq!(local.cluster.members[1].peer_addr.port(), 9002);
    assert_eq!(local.hosts[2].data_dir, root.path().join("node-3"));
    local.validate(Some(&two_cores())).unwrap();
    let clash = local.with_ports(&[(9001, 9101), (9001, 9102), (9003, 9103)]);
    let errors = clash.unwrap_err();
    let error = errors.find("cluster.members[1].peer_addr").unwrap();
    assert!(matches!(error.reason, Reason::Duplicate(_)));
}

#[test]
fn unknown_key_names_file_key_and_line() {
    let errors = local_with("pre_vote = true", "pre_vote = true\nprevote = false").unwrap_err();
    let error = errors.first();
    assert_eq!(error.file, "local.toml");
    assert_eq!(error.key, "cluster.raft.prevote");
    assert!(matches!(error.reason, Reason::UnknownKey { .. }));
    let location = error.location.unwrap();
    let line = LOCAL_TOML
        .lines()
        .position(|line| line.starts_with("pre_vote"))
        .unwrap()
        + 2;
    assert_eq!(location.line, line);
    assert_eq!(location.column, 1);
    let text = error.to_string();
    assert!(text.starts_with(&format!("local.toml:{line}:1: key `cluster.raft.prevote`")));
}

#[test]
fn unknown_key_in_a_host_file_is_prefixed_host() {
    let error = baremetal_host_with(
        "applier = 6",
        "applier = 6\napplier_core = 6",
        &eight_cores(),
    )
    .unwrap_err();
    assert_eq!(error.first().file, "host.toml");
    assert_eq!(error.first().key, "host.cores.applier_core");
    assert!(matches!(error.first().reason, Reason::UnknownKey { .. }));
}

#[test]
fn wrong_type_names_the_key() {
    let error =
        baremetal_host_with("applier = 6", "applier = \"six\"", &eight_cores()).unwrap_err();
    assert_eq!(error.first().key, "host.cores.applier");
    assert!(matches!(error.first().reason, Reason::BadValue(_)));
    assert!(error.first().location.is_some());
}

#[test]
fn missing_key_names_the_key() {
    let error = baremetal_host_with("park_timeout_ms = 10\n", "", &eight_cores()).unwrap_err();
    assert_eq!(error.first().key, "host.applier.park_timeout_ms");
    assert!(matches!(error.first().reason, Reason::MissingKey));
}

#[test]
fn bad_address_names_the_key() {
    let errors = local_with("\"127.0.0.1:7102\"", "\"127.0.0.1\"").unwrap_err();
    assert_eq!(errors.first().key, "cluster.members[1].peer_addr");
    assert!(matches!(errors.first().reason, Reason::BadValue(_)));
}

#[test]
fn election_min_above_max_is_rejected() {
    let errors = local_with(
        "election_timeout_ms_min = 300",
        "election_timeout_ms_min = 900",
    )
    .unwrap_err();
    let error = errors.find("cluster.raft.election_timeout_ms_min").unwrap();
    assert!(matches!(error.reason, Reason::OutOfRange(_)));
    assert!(error
        .to_string()
        .contains("must be below election_timeout_ms_max"));
    assert!(error.location.is_some());
}

#[test]
fn applier_on_a_shard_core_with_spin_is_rejected() {
    let error = baremetal_host_with("applier = 6", "applier = 3", &eight_cores()).unwrap_err();
    let error = error.find("host.cores.applier").unwrap();
    assert!(matches!(error.reason, Reason::CoreConflict(_)));
    assert!(error
        .to_string()
        .contains("core 3 is already used by node 1 shard 1"));
}

#[test]
fn shared_cores_needs_the_wait_strategy() {
    let errors = local_with("strategy = \"wait\"", "strategy = \"spin\"").unwrap_err();
    let error = errors.find("hosts[0].cores.shared_cores").unwrap();
    assert!(matches!(error.reason, Reason::CoreConflict(_)));
}

#[test]
fn nonexistent_core_is_rejected() {
    let errors = local_with("applier = 0", "applier = 5").unwrap_err();
    let error = errors.find("hosts[1].cores.applier").unwrap();
    assert!(matches!(error.reason, Reason::NoSuchCore { core: 5, .. }));
    assert!(error.to_string().contains("online cores: 0-1"));
}

#[test]
fn ring_sizes_must_be_powers_of_two() {
    let errors = local_with("commit_ring_entries = 64", "commit_ring_entries = 48").unwrap_err();
    let error = errors.find("hosts[0].applier.commit_ring_entries").unwrap();
    assert!(matches!(error.reason, Reason::NotPowerOfTwo(48)));
}

#[test]
fn zero_provided_buffers_turns_the_buffer_ring_off() {
    let local = local_with("provided_buffers = 64", "provided_buffers = 0").unwrap();
    let ring = |node| engine::node::transport_config(&local.node(node).unwrap()).ring;
    assert!(!ring(1).provided_buffers);
    assert!(ring(2).provided_buffers);
    let errors = local_with("provided_buffers = 64", "provided_buffers = 48").unwrap_err();
    let error = errors.find("hosts[0].io_uring.provided_buffers").unwrap();
    assert!(matches!(error.reason, Reason::NotPowerOfTwo(48)));
}

#[test]
fn host_for_an_unknown_node_is_rejected() {
    let error = baremetal_host_with("node_id = 1", "node_id = 9", &eight_cores()).unwrap_err();
    let error = error.find("host.node_id").unwrap();
    assert!(matches!(error.reason, Reason::UnknownNode(9)));
}

#[test]
fn shard_core_count_must_match_the_cluster() {
    let error = baremetal_host_with(
        "shards = [2, 3, 4, 5]",
        "shards = [2, 3, 4]",
        &eight_cores(),
    )
    .unwrap_err();
    let error = error.find("host.cores.shards").unwrap();
    assert!(matches!(error.reason, Reason::Mismatch(_)));
}

#[test]
fn duplicate_addresses_are_rejected() {
    let errors = local_with("\"127.0.0.1:7202\"", "\"127.0.0.1:7101\"").unwrap_err();
    let error = errors.find("cluster.members[1].client_addr").unwrap();
    assert!(matches!(error.reason, Reason::Duplicate(_)));
}

#[test]
fn zero_sizes_are_rejected() {
    let errors = local_with("batch_entries_max = 256", "batch_entries_max = 0").unwrap_err();
    assert!(errors
        .find("cluster.replication.batch_entries_max")
        .is_some());
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = LOCAL_TOML
        .replacen("tick_interval_ms = 10", "tick_interval_ms = 0", 1)
        .replacen("count = 1", "count = 2", 1);
    let errors = LocalCluster::parse("local.toml", &text, Some(&two_cores())).unwrap_err();
    assert!(errors.find("cluster.raft.tick_interval_ms").is_some());
    assert!(errors.find("cluster.shards.preferred_leaders").is_some());
    assert!(errors.find("hosts[0].cores.shards").is_some());
    assert!(errors.errors.len() >= 5);
}

#[test]
fn syntax_error_has_a_location() {
    let errors = local_with("[cluster.durability]", "[cluster.durability").unwrap_err();
    assert!(matches!(errors.first().reason, Reason::Syntax(_)));
    assert!(errors.first().location.is_some());
}

#[test]
fn an_integer_over_64_bits_names_its_key_and_line() {
    // TOML integers are 64-bit, so this one fails the parse itself, before any schema.
    // The second host's, so the element index is counted too.
    let second = LOCAL_TOML
        .match_indices("provided_buffers = 64")
        .nth(1)
        .unwrap()
        .0;
    let text = format!(
        "{}provided_buffers = 99999999999999999999{}",
        &LOCAL_TOML[..second],
        &LOCAL_TOML[second + "provided_buffers = 64".len()..]
    );
    let errors = LocalCluster::parse("local.toml", &text, Some(&two_cores())).unwrap_err();
    let error = errors.first();
    assert!(matches!(error.reason, Reason::Syntax(_)), "{error}");
    assert_eq!(error.key, "hosts[1].io_uring.provided_buffers");
    let line = 1 + text
        .lines()
        .position(|l| l.contains("99999999999999999999"))
        .unwrap();
    assert_eq!(error.location.map(|l| l.line), Some(line), "{error}");
}

#[test]
fn a_set_needs_exactly_one_cluster() {
    let errors = validate_texts(&[("host.toml", BAREMETAL_HOST_TOML)], None).unwrap_err();
    assert!(matches!(errors.first().reason, Reason::FileSet(_)));
    let errors = validate_texts(
        &[
            ("a.toml", BAREMETAL_CLUSTER_TOML),
            ("b.toml", BAREMETAL_CLUSTER_TOML),
        ],
        None,
    )
    .unwrap_err();
    assert!(matches!(errors.first().reason, Reason::FileSet(_)));
}

#[test]
fn unreadable_file_names_the_file() {
    let missing = tuning_dir().join("does-not-exist.toml");
    let errors = validate_files_with(std::slice::from_ref(&missing), None).unwrap_err();
    assert_eq!(errors.first().file, missing.display().to_string());
    assert!(matches!(errors.first().reason, Reason::Io(_)));
}

#[test]
fn cpu_lists_parse_like_the_kernel_writes_them() {
    let cpus = CpuSet::parse_list("0-3,8,10-11\n").unwrap();
    assert_eq!(cpus.len(), 7);
    assert!(cpus.contains(8));
    assert!(!cpus.contains(9));
    assert_eq!(cpus.to_string(), "0-3,8,10-11");
    assert!(CpuSet::parse_list("3-1").is_err());
    assert!(CpuSet::parse_list("").is_err());
    assert!(CpuSet::online().unwrap().contains(0));
}

#[test]
fn bad_array_element_names_its_index() {
    let error = baremetal_host_with(
        "shards = [2, 3, 4, 5]",
        "shards = [2, 3, -4, 5]",
        &eight_cores(),
    )
    .unwrap_err();
    assert_eq!(error.first().key, "host.cores.shards[2]");
    assert!(matches!(error.first().reason, Reason::BadValue(_)));
}

#[test]
fn spin_us_only_with_spin_then_wait() {
    let error = baremetal_host_with(
        "strategy = \"spin\"",
        "strategy = \"spin\"\nspin_us = 5",
        &eight_cores(),
    )
    .unwrap_err();
    assert_eq!(error.first().key, "host.idle");
    assert!(error.first().to_string().contains("spin_us is only valid"));
    let ok = baremetal_host_with(
        "strategy = \"spin\"",
        "strategy = \"spin-then-wait\"\nspin_us = 5",
        &eight_cores(),
    );
    assert!(ok.is_ok());
}

/// The dotted path of every `key = value` line of a TOML file without inline tables, as
/// tuning errors name keys (`cluster.members[1].peer_addr`), with the line's number.
fn key_lines(text: &str) -> Vec<(usize, String)> {
    let mut table = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            let k = arrays.entry(name.to_owned()).or_insert(usize::MAX);
            *k = k.wrapping_add(1);
            table = format!("{name}[{k}]");
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            // A sub-table of the latest element of an array of tables (`[hosts.cores]`).
            table = match arrays
                .iter()
                .filter(|(array, _)| name.starts_with(&format!("{array}.")))
                .max_by_key(|(array, _)| array.len())
            {
                Some((array, k)) => format!("{array}[{k}]{}", &name[array.len()..]),
                None => name.to_owned(),
            };
        } else if let Some((key, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            out.push((n, format!("{table}.{}", key.trim())));
        }
    }
    out
}

/// Every value of the embedded local file, replaced in turn by each of a set of hostile
/// values (wrong types, negatives, zero, overflows, an empty string): the file either still
/// validates or is refused with an error naming the replaced key, the file and the line.
/// Never a panic, never an error that names nothing.
#[test]
fn every_value_replaced_by_a_hostile_one_is_accepted_or_refused_naming_its_key() {
    const HOSTILE: [&str; 10] = [
        "-1",
        "0",
        "18446744073709551616",
        "1e309",
        "0.5",
        "\"\"",
        "\"x\"",
        "true",
        "[]",
        "{}",
    ];
    let lines: Vec<&str> = LOCAL_TOML.lines().collect();
    let keys = key_lines(LOCAL_TOML);
    assert!(keys.len() > 60, "only {} keys found", keys.len());
    let (mut accepted, mut refused) = (0, 0);
    for (n, path) in &keys {
        for value in HOSTILE {
            let key = lines[*n].split_once('=').expect("a key line").0;
            let mut text: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            text[*n] = format!("{key}= {value}");
            let text = text.join("\n");
            let parsed = std::panic::catch_unwind(|| {
                LocalCluster::parse("local.toml", &text, Some(&two_cores()))
            })
            .unwrap_or_else(|_| panic!("parse panicked with {path} = {value}"));
            let Err(errors) = parsed else {
                accepted += 1;
                continue;
            };
            refused += 1;
            let named = errors
                .errors
                .iter()
                .find(|e| e.key == *path || e.key.starts_with(&format!("{path}[")));
            let Some(error) = named else {
                panic!("{path} = {value}: no error names the key: {errors}");
            };
            let shown = error.to_string();
            assert!(
                shown.starts_with("local.toml:") && error.location.is_some_and(|l| l.line == n + 1),
                "{path} = {value}: error without the file or the line: {shown}"
            );
        }
    }
    // Most hostile values are refused; a few are valid settings (0 provided buffers, an
    // empty `preferred_leaders`, `fsync = true`...).
    assert!(
        refused > 8 * accepted,
        "{refused} refused, {accepted} accepted"
    );
}
