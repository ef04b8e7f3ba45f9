//! Glue between the applier and the rest of a node: the log as an [`EntrySource`], and the
//! built-in key-value store shared between the applier (which writes it) and the shard
//! thread (which serves linearizable reads and status from it).

use std::sync::{Arc, Mutex, MutexGuard};

use storage::{Cursor, LogReader, StorageError};

use crate::applier::{ApplyResult, ApplyRole, EntrySource, StateMachine};
use crate::kv::KvStore;

/// Reads committed entries straight from the memory-mapped log.
#[derive(Debug)]
pub struct LogSource {
    reader: LogReader,
    cursor: Option<Cursor>,
}

impl LogSource {
    pub fn new(reader: LogReader) -> Self {
        LogSource {
            reader,
            cursor: None,
        }
    }
}

/// A committed entry the log could not produce: a storage fault, so the applier stops.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("entry {0} is committed but not readable (published watermark {1})")]
    NotPublished(u64, u64),
}

impl EntrySource for LogSource {
    type Error = SourceError;

    fn visit(
        &mut self,
        first: u64,
        last: u64,
        f: &mut dyn FnMut(u64, u64, &[u8]),
    ) -> Result<(), SourceError> {
        assert!(first <= last, "visit of an empty range");
        let reuse = self
            .cursor
            .as_ref()
            .is_some_and(|c| c.next_index() == first);
        if !reuse {
            self.cursor = Some(self.reader.cursor(first)?);
        }
        let cursor = self.cursor.as_mut().expect("cursor set above");
        for index in first..=last {
            match cursor.next_entry()? {
                Some(entry) => {
                    assert_eq!(entry.index, index, "cursor out of step");
                    f(entry.index, entry.term, entry.payload);
                }
                None => {
                    return Err(SourceError::NotPublished(
                        index,
                        self.reader.readable_index(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The key-value store behind a mutex: the applier holds the lock for one entry at a time,
/// the shard thread for one read or one status report.
#[derive(Debug, Clone, Default)]
pub struct SharedKv {
    inner: Arc<Mutex<KvStore>>,
}

impl SharedKv {
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the store for reading.
    pub fn lock(&self) -> MutexGuard<'_, KvStore> {
        self.inner
            .lock()
            .expect("kv lock poisoned: the applier panicked")
    }
}

impl StateMachine for SharedKv {
    fn apply(&mut self, role: ApplyRole, index: u64, term: u64, payload: &[u8]) -> ApplyResult {
        self.lock().apply(role, index, term, payload)
    }

    fn state_hash(&self) -> u64 {
        self.lock().state_hash()
    }

    fn applied_index(&self) -> u64 {
        self.lock().applied_index()
    }

    fn with_batch(&mut self, batch: &mut dyn FnMut(&mut dyn StateMachine)) {
        batch(&mut *self.lock())
    }
}
