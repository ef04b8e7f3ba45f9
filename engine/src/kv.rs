//! A built-in in-memory key-value store: the default [`StateMachine`], used by raftd,
//! raftbench and the tests.
//!
//! # Command format (version 1)
//!
//! All integers little-endian. A payload is exactly one command; trailing bytes are an error.
//!
//! | command | layout                                                                 |
//! |---------|------------------------------------------------------------------------|
//! | no-op   | empty payload (the entry a leader appends at the start of its term)    |
//! | put     | `0x01` · key_len: u16 · key · value_len: u32 · value                   |
//! | delete  | `0x02` · key_len: u16 · key                                            |
//!
//! Keys are 1..=[`KEY_BYTES_MAX`] bytes, values 0..=[`VALUE_BYTES_MAX`] bytes. Reads
//! (`get`) are not log commands: they go through ReadIndex and [`KvStore::get`].
//!
//! # Replies
//!
//! None: a put or delete has no outcome but "done", on either role, so `apply` returns an
//! empty [`ApplyResult::Done`] and the node acknowledges a well-formed command as soon as
//! it is committed. [`Command::decode`] is the whole check; the node runs it before
//! proposing, so only well-formed commands reach the log from a client.
//!
//! # Rejections
//!
//! A malformed payload is rejected with [`Rejection::code`] `1 + KvDecodeError` variant
//! number (see [`KvDecodeError::code`]), identically on every replica, with the state
//! unchanged.

use std::collections::HashMap;

use foldhash::quality::RandomState;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::applier::{ApplyResult, ApplyRole, Rejection, StateMachine};

/// Opcode of a put command.
pub const OP_PUT: u8 = 0x01;
/// Opcode of a delete command.
pub const OP_DELETE: u8 = 0x02;
/// Longest key, bounded so a key length fits in two bytes.
pub const KEY_BYTES_MAX: usize = u16::MAX as usize;
/// Longest value; well above any frame limit, the frame limit is what binds in practice.
pub const VALUE_BYTES_MAX: usize = 64 << 20;

/// A decoded command, borrowing key and value from the payload (no copy until stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Empty payload.
    NoOp,
    /// Set `key` to `value`.
    Put { key: &'a [u8], value: &'a [u8] },
    /// Remove `key`.
    Delete { key: &'a [u8] },
}

/// Why a payload is not a valid command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KvDecodeError {
    /// The first byte is not a known opcode.
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// The payload ends before a length field or the bytes it announces.
    #[error("truncated: {field} needs {needed} bytes, {available} left")]
    Truncated {
        field: &'static str,
        needed: usize,
        available: usize,
    },
    /// Bytes remain after a complete command.
    #[error("{0} trailing bytes after the command")]
    TrailingBytes(usize),
    /// A key of length zero.
    #[error("empty key")]
    EmptyKey,
    /// A value longer than [`VALUE_BYTES_MAX`].
    #[error("value of {0} bytes above the maximum")]
    ValueTooLong(usize),
}

impl KvDecodeError {
    /// Stable rejection code sent to clients (0 is reserved for "no error").
    pub fn code(&self) -> u16 {
        match self {
            Self::UnknownOpcode(_) => 1,
            Self::Truncated { .. } => 2,
            Self::TrailingBytes(_) => 3,
            Self::EmptyKey => 4,
            Self::ValueTooLong(_) => 5,
        }
    }

    /// Static reason, so a rejection never allocates.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownOpcode(_) => "kv: unknown opcode",
            Self::Truncated { .. } => "kv: truncated command",
            Self::TrailingBytes(_) => "kv: trailing bytes after command",
            Self::EmptyKey => "kv: empty key",
            Self::ValueTooLong(_) => "kv: value too long",
        }
    }

    /// The rejection every replica returns for this error.
    pub fn rejection(&self) -> Rejection {
        Rejection {
            code: self.code(),
            reason: self.reason(),
        }
    }
}

/// A cursor over a payload that turns every short read into a typed error.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, needed: usize) -> Result<&'a [u8], KvDecodeError> {
        if self.bytes.len() < needed {
            return Err(KvDecodeError::Truncated {
                field,
                needed,
                available: self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(needed);
        self.bytes = tail;
        Ok(head)
    }

    fn key(&mut self) -> Result<&'a [u8], KvDecodeError> {
        let len = self.take("key_len", 2)?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        if len == 0 {
            return Err(KvDecodeError::EmptyKey);
        }
        self.take("key", len)
    }

    fn value(&mut self) -> Result<&'a [u8], KvDecodeError> {
        let len = self.take("value_len", 4)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > VALUE_BYTES_MAX {
            return Err(KvDecodeError::ValueTooLong(len));
        }
        self.take("value", len)
    }
}

impl<'a> Command<'a> {
    /// Decodes one command. Total: any byte string yields a command or a typed error.
    pub fn decode(payload: &'a [u8]) -> Result<Self, KvDecodeError> {
        let Some((&opcode, rest)) = payload.split_first() else {
            return Ok(Command::NoOp);
        };
        let mut reader = Reader { bytes: rest };
        let command = match opcode {
            OP_PUT => {
                let key = reader.key()?;
                let value = reader.value()?;
                Command::Put { key, value }
            }
            OP_DELETE => Command::Delete { key: reader.key()? },
            other => return Err(KvDecodeError::UnknownOpcode(other)),
        };
        if !reader.bytes.is_empty() {
            return Err(KvDecodeError::TrailingBytes(reader.bytes.len()));
        }
        Ok(command)
    }

    /// Appends the encoding of this command to `out` (a no-op appends nothing).
    ///
    /// # Panics
    /// If the key is empty or longer than [`KEY_BYTES_MAX`], or the value longer than
    /// [`VALUE_BYTES_MAX`]: clients validate before encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Command::NoOp => {}
            Command::Put { key, value } => {
                assert!(value.len() <= VALUE_BYTES_MAX, "value too long");
                out.reserve(1 + 2 + key.len() + 4 + value.len());
                out.push(OP_PUT);
                encode_key(key, out);
                let len = u32::try_from(value.len()).expect("bounded by VALUE_BYTES_MAX");
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(value);
            }
            Command::Delete { key } => {
                out.reserve(1 + 2 + key.len());
                out.push(OP_DELETE);
                encode_key(key, out);
            }
        }
    }

    /// The encoding as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

fn encode_key(key: &[u8], out: &mut Vec<u8>) {
    assert!(!key.is_empty(), "empty key");
    let len = u16::try_from(key.len()).expect("key longer than KEY_BYTES_MAX");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(key);
}

/// In-memory key-value state machine.
///
/// The state hash is the wrapping sum of a 64-bit hash of each (key, value) pair: it depends
/// only on the contents, not on the order of operations, and is updated in O(1) per
/// command. The pair hash is XXH3 (see `pair_hash`), a fixed published algorithm, where
/// std's `DefaultHasher` promises no stability. Each pair's hash is stored beside its value,
/// so an overwrite or delete subtracts it without reading the old value again: that read
/// missed the cache for every command of a large working set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvStore {
    /// Hashed, not ordered: nothing iterates it in order (the state hash is a sum), and a
    /// lookup is one hash and one compare where a B-tree of 10^5 keys compares ~17 times.
    /// The hasher is seeded per store, so client-chosen keys cannot force collisions.
    /// Keys of up to [`KEY_INLINE_MAX`] bytes sit in the table's slot itself, so a lookup
    /// compares them without a dependent cache miss on a separate key allocation.
    map: HashMap<Key, Stored, RandomState>,
    hash: u64,
    applied_index: u64,
    applied_term: u64,
    rejected: u64,
}

/// Longest key kept inline in its hash-table slot (a slot is then 64 bytes: key 32,
/// value 24, pair hash 8); longer keys get their own allocation.
pub const KEY_INLINE_MAX: usize = 30;

/// A stored key: inline when short, else boxed. Hashes, compares and borrows as the
/// `[u8]` it holds, so the table is looked up with a plain byte slice.
#[derive(Debug, Clone)]
enum Key {
    Inline {
        len: u8,
        bytes: [u8; KEY_INLINE_MAX],
    },
    Boxed(Box<[u8]>),
}

impl Key {
    fn new(key: &[u8]) -> Self {
        if key.len() <= KEY_INLINE_MAX {
            let mut bytes = [0u8; KEY_INLINE_MAX];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            Key::Boxed(key.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Boxed(bytes) => bytes,
        }
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As the slice does: `Borrow` requires equal hashes for equal borrowed forms.
        self.as_slice().hash(state)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

/// A value and the hash of its pair.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    value: Vec<u8>,
    pair_hash: u64,
}

impl KvStore {
    /// An empty store that has applied nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a key. Linearizable only when called after the applied index passed the
    /// ReadIndex of the read.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(|stored| stored.value.as_slice())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store has no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Term of the last applied entry.
    pub fn applied_term(&self) -> u64 {
        self.applied_term
    }

    /// Commands rejected so far (malformed payloads).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Recomputes the hash from the contents; equals [`StateMachine::state_hash`] unless
    /// the incremental update has a bug (checked by tests).
    pub fn recompute_hash(&self) -> u64 {
        self.map.iter().fold(0u64, |sum, (key, stored)| {
            sum.wrapping_add(pair_hash(key.as_slice(), &stored.value))
        })
    }

    /// Executes a command; `None` for the no-op.
    fn execute(&mut self, command: Command<'_>) -> Option<()> {
        match command {
            Command::NoOp => None,
            Command::Put { key, value } => {
                let pair_hash = pair_hash(key, value);
                self.hash = self.hash.wrapping_add(pair_hash);
                // Overwrites reuse the stored key and value buffers: no allocation.
                if let Some(stored) = self.map.get_mut(key) {
                    self.hash = self.hash.wrapping_sub(stored.pair_hash);
                    stored.pair_hash = pair_hash;
                    stored.value.clear();
                    stored.value.extend_from_slice(value);
                    return Some(());
                }
                let value = value.to_vec();
                self.map.insert(Key::new(key), Stored { value, pair_hash });
                Some(())
            }
            Command::Delete { key } => {
                if let Some(previous) = self.map.remove(key) {
                    self.hash = self.hash.wrapping_sub(previous.pair_hash);
                }
                Some(())
            }
        }
    }
}

impl StateMachine for KvStore {
    fn apply(&mut self, _role: ApplyRole, index: u64, term: u64, payload: &[u8]) -> ApplyResult {
        assert_eq!(index, self.applied_index + 1, "kv: index gap or repeat");
        assert!(term >= self.applied_term, "kv: term went backwards");
        self.applied_index = index;
        self.applied_term = term;
        match Command::decode(payload) {
            Err(error) => {
                self.rejected += 1;
                ApplyResult::Rejected(error.rejection())
            }
            // No reply bytes on either role: a put or delete has no result a client
            // waits for, so the node acknowledges it at commit (see `node::shard`).
            Ok(command) => match self.execute(command) {
                None => ApplyResult::NoOp,
                Some(()) => ApplyResult::Done(Vec::new()),
            },
        }
    }

    /// Looks the command's key up: the hash table's control bytes and the key's slot (with
    /// the key itself when inline, else its boxed copy too) come into cache for the `apply`
    /// that follows.
    fn prefetch(&self, payload: &[u8]) {
        if let Ok(Command::Put { key, .. } | Command::Delete { key }) = Command::decode(payload) {
            std::hint::black_box(self.map.get(key).map(|stored| stored.pair_hash));
        }
    }

    fn state_hash(&self) -> u64 {
        self.hash
    }

    fn applied_index(&self) -> u64 {
        self.applied_index
    }
}

/// Hash of one pair: XXH3 (a published, fixed algorithm, so replicas built by different
/// compiler versions agree) of the key, seeded with the XXH3 of the value. XXH3 mixes the
/// input length in, so ("ab", "c") and ("a", "bc") differ. The value is hashed unseeded:
/// for inputs over 240 B a seeded XXH3 first derives a secret from its seed, which costs
/// more than hashing a 256 B value.
fn pair_hash(key: &[u8], value: &[u8]) -> u64 {
    xxh3_64_with_seed(key, xxh3_64(value))
}
