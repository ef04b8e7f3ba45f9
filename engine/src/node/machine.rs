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
        let cursor = self.cursor_at(first)?;
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

    /// Walks a copy of the cursor, so the next `visit` of `first` reuses the original.
    fn peek(&mut self, first: u64, last: u64, f: &mut dyn FnMut(&[u8])) {
        let Ok(cursor) = self.cursor_at(first) else {
            return;
        };
        let mut ahead = cursor.clone();
        for _ in first..=last {
            match ahead.next_entry() {
                Ok(Some(entry)) => f(entry.payload),
                Ok(None) | Err(_) => return,
            }
        }
    }
}

impl LogSource {
    /// The cursor positioned at `first`: the one kept from the last visit when it ended
    /// just before `first` (a new one walks record headers from the segment's start).
    fn cursor_at(&mut self, first: u64) -> Result<&mut Cursor, StorageError> {
        let reuse = self
            .cursor
            .as_ref()
            .is_some_and(|c| c.next_index() == first);
        if !reuse {
            self.cursor = Some(self.reader.cursor(first)?);
        }
        Ok(self.cursor.as_mut().expect("cursor set above"))
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

    fn prefetch(&self, payload: &[u8]) {
        self.lock().prefetch(payload);
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
