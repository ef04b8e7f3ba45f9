//! The built-in key-value state machine: command format, replies, rejections, no-op, and a
//! deterministic state hash.

use engine::applier::{ApplyResult, ApplyRole, StateMachine};
use engine::kv::{Command, KvDecodeError, KvStore, KEY_INLINE_MAX, OP_DELETE, OP_PUT};
use proptest::prelude::*;

fn put(key: &[u8], value: &[u8]) -> Vec<u8> {
    Command::Put { key, value }.to_bytes()
}

fn delete(key: &[u8]) -> Vec<u8> {
    Command::Delete { key }.to_bytes()
}

/// Applies `payloads` in order from index 1, all in `role`.
fn replay(role: ApplyRole, payloads: &[Vec<u8>]) -> (KvStore, Vec<ApplyResult>) {
    let mut store = KvStore::new();
    let results = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| store.apply(role, i as u64 + 1, 1, payload))
        .collect();
    (store, results)
}

#[test]
fn encoding_is_the_documented_layout() {
    assert_eq!(
        put(b"ab", b"xyz"),
        vec![OP_PUT, 2, 0, b'a', b'b', 3, 0, 0, 0, b'x', b'y', b'z']
    );
    assert_eq!(delete(b"k"), vec![OP_DELETE, 1, 0, b'k']);
    assert_eq!(Command::NoOp.to_bytes(), Vec::<u8>::new());
}

#[test]
fn decode_round_trips() {
    for command in [
        Command::NoOp,
        Command::Put {
            key: b"key",
            value: b"",
        },
        Command::Put {
            key: b"k",
            value: b"value",
        },
        Command::Delete { key: b"gone" },
    ] {
        assert_eq!(Command::decode(&command.to_bytes()), Ok(command));
    }
}

#[test]
fn put_get_delete_leave_no_reply_bytes() {
    let mut store = KvStore::new();
    let leader = ApplyRole::Leader;
    assert_eq!(
        store.apply(leader, 1, 1, &put(b"a", b"1")),
        ApplyResult::Done(Vec::new())
    );
    assert_eq!(store.get(b"a"), Some(&b"1"[..]));
    assert_eq!(
        store.apply(leader, 2, 1, &put(b"a", b"2")),
        ApplyResult::Done(Vec::new())
    );
    assert_eq!(store.get(b"a"), Some(&b"2"[..]));
    assert_eq!(
        store.apply(leader, 3, 1, &delete(b"a")),
        ApplyResult::Done(Vec::new())
    );
    assert_eq!(store.get(b"a"), None);
    assert_eq!(
        store.apply(leader, 4, 2, &delete(b"a")),
        ApplyResult::Done(Vec::new())
    );
    assert_eq!(store.applied_index(), 4);
    assert_eq!(store.applied_term(), 2);
    assert!(store.is_empty());
}

#[test]
fn leader_and_follower_roles_reach_the_same_state() {
    let payloads = vec![put(b"a", b"1"), put(b"b", b"2"), delete(b"a")];
    let (leader, leader_results) = replay(ApplyRole::Leader, &payloads);
    let (follower, follower_results) = replay(ApplyRole::Follower, &payloads);
    assert_eq!(leader_results[0], ApplyResult::Done(Vec::new()));
    assert!(follower_results
        .iter()
        .all(|result| *result == ApplyResult::Done(Vec::new())));
    assert_eq!(leader, follower);
    assert_eq!(leader.state_hash(), follower.state_hash());
}

#[test]
fn empty_payload_is_a_no_op() {
    let mut store = KvStore::new();
    assert_eq!(store.apply(ApplyRole::Leader, 1, 3, &[]), ApplyResult::NoOp);
    assert_eq!(store.applied_index(), 1);
    assert_eq!(store.state_hash(), 0);
    assert!(store.is_empty());
}

#[test]
fn malformed_commands_are_rejected_with_typed_errors() {
    let cases: Vec<(Vec<u8>, KvDecodeError)> = vec![
        (vec![0x7f], KvDecodeError::UnknownOpcode(0x7f)),
        (
            vec![OP_PUT, 1],
            KvDecodeError::Truncated {
                field: "key_len",
                needed: 2,
                available: 1,
            },
        ),
        (
            vec![OP_PUT, 5, 0, b'a'],
            KvDecodeError::Truncated {
                field: "key",
                needed: 5,
                available: 1,
            },
        ),
        (
            vec![OP_PUT, 1, 0, b'a', 9, 0, 0, 0, b'v'],
            KvDecodeError::Truncated {
                field: "value",
                needed: 9,
                available: 1,
            },
        ),
        (vec![OP_DELETE, 0, 0], KvDecodeError::EmptyKey),
        (
            vec![OP_PUT, 1, 0, b'a', 0xff, 0xff, 0xff, 0xff],
            KvDecodeError::ValueTooLong(u32::MAX as usize),
        ),
        (
            {
                let mut bytes = delete(b"k");
                bytes.push(0);
                bytes
            },
            KvDecodeError::TrailingBytes(1),
        ),
    ];
    for (payload, error) in cases {
        assert_eq!(Command::decode(&payload), Err(error));
        let mut store = KvStore::new();
        store.apply(ApplyRole::Leader, 1, 1, &put(b"keep", b"me"));
        let before = store.state_hash();
        let result = store.apply(ApplyRole::Leader, 2, 1, &payload);
        assert_eq!(result, ApplyResult::Rejected(error.rejection()));
        assert_eq!(store.state_hash(), before);
        assert_eq!(store.applied_index(), 2);
        assert_eq!(store.rejected(), 1);
        assert_eq!(store.get(b"keep"), Some(&b"me"[..]));
    }
}

#[test]
fn hash_depends_on_contents_not_history() {
    let (a, _) = replay(
        ApplyRole::Leader,
        &[put(b"x", b"1"), put(b"y", b"2"), put(b"x", b"3")],
    );
    let (b, _) = replay(
        ApplyRole::Follower,
        &[
            put(b"y", b"2"),
            put(b"z", b"0"),
            delete(b"z"),
            put(b"x", b"3"),
        ],
    );
    assert_eq!(a.state_hash(), b.state_hash());
    let (c, _) = replay(ApplyRole::Leader, &[put(b"x", b"3"), put(b"y", b"3")]);
    assert_ne!(a.state_hash(), c.state_hash());
    // Moving a byte between key and value changes the hash.
    let (d, _) = replay(ApplyRole::Leader, &[put(b"ab", b"c")]);
    let (e, _) = replay(ApplyRole::Leader, &[put(b"a", b"bc")]);
    assert_ne!(d.state_hash(), e.state_hash());
}

#[test]
#[should_panic(expected = "index gap")]
fn skipping_an_index_is_a_bug() {
    let mut store = KvStore::new();
    store.apply(ApplyRole::Leader, 2, 1, &[]);
}

fn command() -> impl Strategy<Value = Vec<u8>> {
    let key = proptest::collection::vec(any::<u8>(), 1..4);
    let value = proptest::collection::vec(any::<u8>(), 0..8);
    prop_oneof![
        4 => (key.clone(), value).prop_map(|(k, v)| put(&k, &v)),
        2 => key.prop_map(|k| delete(&k)),
        1 => Just(Vec::new()),
        // Arbitrary bytes: mostly malformed, must never panic.
        2 => proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

/// Keys on both sides of the inline limit (stored in the table slot, or boxed), few
/// enough that puts overwrite and deletes hit.
fn boundary_key() -> impl Strategy<Value = Vec<u8>> {
    let lens = [
        1,
        2,
        KEY_INLINE_MAX - 1,
        KEY_INLINE_MAX,
        KEY_INLINE_MAX + 1,
        300,
    ];
    (0..lens.len(), 0u8..3).prop_map(move |(i, byte)| vec![byte; lens[i]])
}

proptest! {
    /// Against a plain map: every key reads back what was last put, deleted keys are gone,
    /// and keys that differ only in length (inline against boxed) never alias.
    #[test]
    fn matches_a_plain_map_across_the_inline_key_limit(
        ops in proptest::collection::vec(
            (boundary_key(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))),
            0..200,
        )
    ) {
        let mut store = KvStore::new();
        let mut model = std::collections::HashMap::new();
        for (i, (key, value)) in ops.iter().enumerate() {
            let payload = match value {
                Some(value) => {
                    model.insert(key.clone(), value.clone());
                    put(key, value)
                }
                None => {
                    model.remove(key);
                    delete(key)
                }
            };
            store.apply(ApplyRole::Follower, i as u64 + 1, 1, &payload);
        }
        prop_assert_eq!(store.len(), model.len());
        for (key, _) in &ops {
            prop_assert_eq!(store.get(key), model.get(key).map(Vec::as_slice));
        }
        prop_assert_eq!(store.state_hash(), store.recompute_hash());
    }

    /// Replicas applying the same entries in different roles reach the same state and hash;
    /// the incremental hash equals one recomputed from scratch; garbage never panics.
    #[test]
    fn replicas_converge(payloads in proptest::collection::vec(command(), 0..100)) {
        let (leader, leader_results) = replay(ApplyRole::Leader, &payloads);
        let (follower, follower_results) = replay(ApplyRole::Follower, &payloads);
        prop_assert_eq!(&leader, &follower);
        prop_assert_eq!(leader.state_hash(), follower.state_hash());
        prop_assert_eq!(leader.state_hash(), leader.recompute_hash());
        prop_assert_eq!(leader.applied_index(), payloads.len() as u64);
        for (l, f) in leader_results.iter().zip(&follower_results) {
            // Same outcome kind everywhere; only the reply bytes differ by role.
            prop_assert_eq!(std::mem::discriminant(l), std::mem::discriminant(f));
            if let ApplyResult::Rejected(rejection) = l {
                prop_assert_eq!(ApplyResult::Rejected(*rejection), f.clone());
            }
        }
    }
}

#[test]
fn prefetch_changes_nothing() {
    let payloads = vec![put(b"a", b"1"), put(b"b", b"2"), delete(b"a")];
    let (mut store, _) = replay(ApplyRole::Follower, &payloads);
    let before = store.clone();
    for payload in [
        put(b"b", b"3"),
        put(b"new", b"4"),
        delete(b"b"),
        delete(b"missing"),
        Vec::new(),
        vec![0xff, 1, 2],
    ] {
        store.prefetch(&payload);
    }
    assert_eq!(store, before);
    assert_eq!(store.get(b"b"), Some(&b"2"[..]));
    assert_eq!(
        store.apply(ApplyRole::Follower, 4, 1, &put(b"b", b"3")),
        ApplyResult::Done(Vec::new())
    );
    assert_eq!(store.get(b"b"), Some(&b"3"[..]));
}
