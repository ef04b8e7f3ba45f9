//! Removing entries: truncating a conflicting suffix, compacting a prefix, resetting
//! after a snapshot.

use super::open::encode_meta;
use super::*;

impl Log {
    /// Removes every entry after `index` (a conflicting suffix). The removed records are
    /// zeroed and the zeroing is made durable before this returns, so they cannot
    /// reappear after a crash, even partly under new appends. Blocks on `fdatasync`;
    /// truncation is rare. `index` must not be below the readable watermark.
    pub fn truncate_after(&mut self, index: u64) -> Result<(), StorageError> {
        self.writable()?;
        if index >= self.last.index {
            return Ok(());
        }
        if index + 1 < self.first_index {
            return Err(StorageError::BadCut {
                op: "truncate",
                index,
                reason: format!("below the first index {}", self.first_index),
            });
        }
        if index < self.readable {
            return Err(StorageError::BadCut {
                op: "truncate",
                index,
                reason: format!("entries up to {} are published to readers", self.readable),
            });
        }
        let si = self.seg_for(index + 1);
        let removed: Vec<SegState> = self.segs.drain(si + 1..).collect();
        self.shared
            .segments
            .write()
            .expect("segment table lock poisoned")
            .truncate(si + 1);
        // Newest first, so a crash part-way leaves a gap-free prefix.
        for s in removed.iter().rev() {
            let path = s.w.segment().path();
            if let Err(e) = std::fs::remove_file(path) {
                return Err(self.fail(StorageError::io("remove", path, e)));
            }
        }
        if !removed.is_empty() {
            self.dir_dirty = true;
        }
        let seg = &mut self.segs[si];
        let cut = seg.offset_of(index + 1);
        let old_tail = seg.tail;
        if let Err(e) = seg.w.zero(cut, old_tail - cut) {
            let path = seg.w.segment().path().to_path_buf();
            return Err(self.fail(StorageError::io("zero", path, e)));
        }
        seg.offsets.truncate((index + 1 - seg.first_index) as usize);
        seg.tail = cut;
        seg.dirty = true;
        while self.term_runs.last().is_some_and(|r| r.0 > index) {
            self.term_runs.pop();
        }
        self.last = Position {
            index,
            term: self.term_at(index),
        };
        self.epoch += 1;
        self.sync_all_blocking()?;
        self.check_invariants();
        Ok(())
    }

    /// Drops whole segments holding only entries below `index` (pass at most the applied
    /// index, once a snapshot covers them). The tail segment is never dropped. The new
    /// first index and the term before it are saved first, so `term_of(first - 1)` stays
    /// known. Returns the new first index (which may be below `index`).
    pub fn compact_before(&mut self, index: u64) -> Result<u64, StorageError> {
        self.writable()?;
        if index > self.last.index + 1 {
            return Err(StorageError::BadCut {
                op: "compact",
                index,
                reason: format!("past the last index {} + 1; use reset", self.last.index),
            });
        }
        let mut n = 0;
        while n + 1 < self.segs.len() && self.segs[n + 1].first_index <= index {
            n += 1;
        }
        if n == 0 {
            return Ok(self.first_index);
        }
        let new_first = self.segs[n].first_index;
        let prev_term = self.term_at(new_first - 1);
        if let Err(e) = self.meta.save(&encode_meta(new_first, prev_term)) {
            return Err(self.fail(e));
        }
        self.shared
            .segments
            .write()
            .expect("segment table lock poisoned")
            .drain(..n);
        let removed: Vec<SegState> = self.segs.drain(..n).collect();
        for s in removed {
            let path = s.w.segment().path().to_path_buf();
            // Every index this file held is below the new first index, so as a spare its
            // stale records can never be mistaken for later entries. Only a segment
            // nobody else maps (no lagging reader, no pending sync) is reused: a reader's
            // bytes must never change under it. Others are unlinked; their mappings stay
            // valid until dropped.
            let spare_path = path.with_extension(&SPARE_SUFFIX[1..]);
            let eligible = self.spares.len() < self.config.spare_segments_max
                && s.w.segment().capacity() == self.config.segment_bytes
                && !self.spares.iter().any(|x| x.path() == spare_path);
            let spare = if eligible { s.w.into_spare() } else { None };
            let r = match spare {
                Some(mut spare) => std::fs::rename(&path, &spare_path).map(|()| {
                    spare.set_path(spare_path);
                    self.spares.push(Spare::Mapped(spare));
                }),
                None => std::fs::remove_file(&path),
            };
            if let Err(e) = r {
                return Err(self.fail(StorageError::io("remove", &path, e)));
            }
        }
        self.dir_dirty = true;
        self.first_index = new_first;
        self.prev_term = prev_term;
        let keep_from = self
            .term_runs
            .partition_point(|r| r.0 <= new_first)
            .saturating_sub(1);
        self.term_runs.drain(..keep_from);
        if self.durable.index + 1 < new_first {
            // Entries below the new first index now live only in the caller's snapshot.
            self.durable = Position {
                index: new_first - 1,
                term: prev_term,
            };
        }
        self.check_invariants();
        Ok(new_first)
    }

    /// Discards the whole log and restarts it after (`index`, `term`), e.g. after
    /// installing a snapshot that ends there. The snapshot must be durable first.
    /// Blocks on `fdatasync`. Readers see `index` as readable.
    pub fn reset(&mut self, index: u64, term: u64) -> Result<(), StorageError> {
        self.writable()?;
        if index < self.readable {
            return Err(StorageError::BadCut {
                op: "reset",
                index,
                reason: format!("entries up to {} are published to readers", self.readable),
            });
        }
        // Newest first, so a crash part-way leaves a gap-free prefix of the old log.
        let removed: Vec<SegState> = self.segs.drain(..).collect();
        self.shared
            .segments
            .write()
            .expect("segment table lock poisoned")
            .clear();
        for s in removed.iter().rev() {
            let path = s.w.segment().path();
            if let Err(e) = std::fs::remove_file(path) {
                return Err(self.fail(StorageError::io("remove", path, e)));
            }
        }
        if let Err(e) = self.dir_file.sync_all() {
            return Err(self.fail(StorageError::io("fsync dir", &self.dir, e)));
        }
        if let Err(e) = self.meta.save(&encode_meta(index + 1, term)) {
            return Err(self.fail(e));
        }
        self.first_index = index + 1;
        self.prev_term = term;
        self.last = Position { index, term };
        self.term_runs.clear();
        self.epoch += 1;
        self.roll()?;
        self.sync_all_blocking()?;
        self.readable = index;
        self.shared.readable.store(index, Ordering::Release);
        self.check_invariants();
        Ok(())
    }
}
