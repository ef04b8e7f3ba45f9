//! Read-only access to published entries from another thread (the applier).
//!
//! Contract: the writer publishes a readable watermark with [`crate::Log::publish_readable`]
//! (Release) after freezing the bytes of every record up to it; a reader loads it
//! (Acquire) and reads only records at or below it, straight from the mapping. The
//! writer never modifies frozen bytes (truncation below the watermark is refused), and
//! each reader holds the mappings it reads through an `Arc`, so compaction and reset
//! never unmap bytes under a reader. Compaction must only pass indexes the applier has
//! applied; a cursor that falls behind compaction gets [`StorageError::Compacted`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::StorageError;
use crate::log::Shared;
use crate::record::{Entry, RecordHeader, RECORD_HEADER_BYTES};
use crate::segment::Segment;
use crate::segment_header::SEGMENT_HEADER_BYTES;

/// A cloneable, `Send + Sync` handle for reading published entries.
#[derive(Debug, Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

/// A forward cursor over published entries, holding the segment it reads.
#[derive(Debug, Clone)]
pub struct Cursor {
    shared: Arc<Shared>,
    seg: Arc<Segment>,
    offset: usize,
    next: u64,
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        LogReader { shared }
    }

    /// The highest index readers may read.
    pub fn readable_index(&self) -> u64 {
        self.shared.readable.load(Ordering::Acquire)
    }

    /// A cursor whose first entry is `from`. `from` may be at most one past the readable
    /// watermark (the cursor then waits for it to be published).
    pub fn cursor(&self, from: u64) -> Result<Cursor, StorageError> {
        let readable = self.readable_index();
        if from > readable + 1 {
            return Err(StorageError::NotReadable {
                index: from,
                readable,
            });
        }
        let seg = {
            let table = self
                .shared
                .segments
                .read()
                .expect("segment table lock poisoned");
            let at = table.partition_point(|s| s.first_index() <= from);
            if at == 0 {
                return Err(StorageError::Compacted {
                    index: from,
                    first_index: table.first().map_or(from + 1, |s| s.first_index()),
                });
            }
            Arc::clone(&table[at - 1])
        };
        // Walk headers from the segment start: every index below `from` in this segment
        // is at most the watermark, hence frozen.
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut index = seg.first_index();
        while index < from {
            let h = RecordHeader::decode(seg.read_frozen(offset..offset + RECORD_HEADER_BYTES));
            assert_eq!(
                h.index,
                index,
                "frozen record out of order in {}",
                seg.path().display()
            );
            offset += h.record_len();
            index += 1;
        }
        Ok(Cursor {
            shared: Arc::clone(&self.shared),
            seg,
            offset,
            next: from,
        })
    }
}

impl Cursor {
    /// Index of the entry the next call returns.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// The next published entry, borrowed from the mapping; `None` if the cursor caught
    /// up with the readable watermark.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'_>>, StorageError> {
        let readable = self.shared.readable.load(Ordering::Acquire);
        if self.next > readable {
            return Ok(None);
        }
        if self.offset + RECORD_HEADER_BYTES > self.seg.frozen() {
            // `next` is published but not in this segment's frozen bytes: it starts the
            // next segment.
            let table = self
                .shared
                .segments
                .read()
                .expect("segment table lock poisoned");
            match table.iter().find(|s| s.first_index() == self.next) {
                Some(s) => {
                    self.seg = Arc::clone(s);
                    self.offset = SEGMENT_HEADER_BYTES;
                }
                None => {
                    let first_index = table.first().map_or(u64::MAX, |s| s.first_index());
                    assert!(
                        first_index > self.next,
                        "published index {} in no segment",
                        self.next
                    );
                    return Err(StorageError::Compacted {
                        index: self.next,
                        first_index,
                    });
                }
            }
        }
        let seg: &Segment = &self.seg;
        let at = self.offset;
        let h = RecordHeader::decode(seg.read_frozen(at..at + RECORD_HEADER_BYTES));
        assert_eq!(
            h.index,
            self.next,
            "frozen record out of order in {}",
            seg.path().display()
        );
        let payload_at = at + RECORD_HEADER_BYTES;
        let payload = seg.read_frozen(payload_at..payload_at + h.payload_len as usize);
        self.offset = at + h.record_len();
        self.next += 1;
        Ok(Some(Entry {
            index: h.index,
            term: h.term,
            payload,
        }))
    }
}
