//! Opening a log: listing segments, recovery scan of each, torn-tail repair.

use super::*;

pub(super) fn encode_meta(first_index: u64, prev_term: u64) -> [u8; SLOT_PAYLOAD_BYTES] {
    let mut b = [0u8; SLOT_PAYLOAD_BYTES];
    b[0..8].copy_from_slice(&first_index.to_le_bytes());
    b[8..16].copy_from_slice(&prev_term.to_le_bytes());
    b
}

fn decode_meta(b: &[u8; SLOT_PAYLOAD_BYTES]) -> (u64, u64) {
    (
        u64::from_le_bytes(b[0..8].try_into().expect("8")),
        u64::from_le_bytes(b[8..16].try_into().expect("8")),
    )
}

pub(crate) fn corrupt(
    path: &Path,
    offset: u64,
    index: u64,
    reason: impl Into<String>,
) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        index,
        reason: reason.into(),
    }
}

/// Spare files in `dir`: those of the configured size are kept (up to the maximum),
/// others are deleted.
fn collect_spares(dir: &Path, config: &LogConfig) -> Result<Vec<PathBuf>, StorageError> {
    let mut spares = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| StorageError::io("read_dir", dir, e))?;
    for ent in rd {
        let path = ent
            .map_err(|e| StorageError::io("read_dir", dir, e))?
            .path();
        if !path.to_str().is_some_and(|p| p.ends_with(SPARE_SUFFIX)) {
            continue;
        }
        let len = std::fs::metadata(&path)
            .map_err(|e| StorageError::io("stat", &path, e))?
            .len();
        if len == config.segment_bytes as u64 && spares.len() < config.spare_segments_max {
            spares.push(path);
        } else {
            std::fs::remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
        }
    }
    spares.sort();
    Ok(spares)
}

/// The prepared next-segment file, if a previous process finished one of the configured
/// size; an unfinished or differently sized one is deleted.
fn collect_prepared(dir: &Path, config: &LogConfig) -> Result<Option<PathBuf>, StorageError> {
    let remove = |path: &Path| match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StorageError::io("remove", path, e)),
        _ => Ok(()),
    };
    remove(&dir.join(PREPARING_FILE))?;
    let path = dir.join(PREPARED_FILE);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() == config.segment_bytes as u64 => Ok(Some(path)),
        Ok(_) => remove(&path).map(|()| None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("stat", &path, e)),
    }
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| StorageError::io("read_dir", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| StorageError::io("read_dir", dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        let path = ent.path();
        let first: u64 = stem
            .parse()
            .map_err(|_| corrupt(&path, 0, 0, "segment file name is not a first index"))?;
        if first == 0 {
            return Err(corrupt(&path, 0, 0, "segment file name has first index 0"));
        }
        out.push((first, path));
    }
    out.sort();
    Ok(out)
}

impl Log {
    /// Opens (or creates) the log in `dir`, verifying every record. A torn tail of the
    /// last segment is zeroed; anything else that is not a valid, gap-free log is an
    /// error naming the file, byte offset and index. Everything recovered is made
    /// durable (fdatasync) before this returns.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log, StorageError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("create_dir", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = Arc::new(DirLock::acquire(&lock_path).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                StorageError::Locked {
                    path: lock_path.clone(),
                }
            } else {
                StorageError::io("lock", &lock_path, e)
            }
        })?);
        let dir_file = Arc::new(File::open(&dir).map_err(|e| StorageError::io("open", &dir, e))?);
        let mut on_disk = list_segments(&dir)?;
        let meta_path = dir.join(META_FILE);
        if !meta_path.exists() && !on_disk.is_empty() {
            return Err(corrupt(
                &meta_path,
                0,
                0,
                "log metadata missing while segments exist",
            ));
        }
        let (meta, payload) =
            SlotFile::open_or_create(&meta_path, SlotKind::LogMeta, &encode_meta(1, 0))?;
        let (first_index, prev_term) = decode_meta(&payload);
        if first_index == 0 {
            return Err(corrupt(&meta_path, 0, 0, "log metadata has first index 0"));
        }

        // Segments wholly below the first index are leftovers of an interrupted compaction.
        let mut below = 0;
        while below + 1 < on_disk.len() && on_disk[below + 1].0 <= first_index {
            below += 1;
        }
        for (_, path) in on_disk.drain(..below) {
            std::fs::remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
        }
        if below > 0 {
            dir_file
                .sync_all()
                .map_err(|e| StorageError::io("fsync dir", &dir, e))?;
        }

        let mut segs: Vec<SegState> = Vec::with_capacity(on_disk.len());
        let mut term_runs = Vec::new();
        let mut last = Position {
            index: first_index - 1,
            term: prev_term,
        };
        let count = on_disk.len();
        for (i, (name_first, path)) in on_disk.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let expected = last.index + 1;
            let len = std::fs::metadata(&path)
                .map_err(|e| StorageError::io("stat", &path, e))?
                .len();
            if len < SEGMENT_HEADER_BYTES as u64 {
                if !is_last {
                    return Err(corrupt(
                        &path,
                        len,
                        expected,
                        "sealed segment file shorter than its header",
                    ));
                }
                // Created but never written (crash during creation): no entries in it.
                Self::remove_unwritten(&path, &dir_file, &dir)?;
                continue;
            }
            let mut w = SegmentWriter::open(&path, name_first, &lock)
                .map_err(|(op, e)| StorageError::io(op, &path, e))?;
            w.advise_sequential();
            let header = SegmentHeader::decode(w.bytes());
            let header = match header {
                Ok(h) if is_last && h.first_index < name_first => {
                    // A spare renamed into place whose new header never reached the
                    // file: no record in it was ever synced (a sync covers the header).
                    drop(w);
                    Self::remove_unwritten(&path, &dir_file, &dir)?;
                    continue;
                }
                Ok(h) => h,
                Err(_) if is_last && w.bytes().iter().all(|&b| b == 0) => {
                    drop(w);
                    Self::remove_unwritten(&path, &dir_file, &dir)?;
                    continue;
                }
                Err(reason) => return Err(corrupt(&path, 0, expected, reason)),
            };
            if header.first_index != name_first {
                return Err(corrupt(
                    &path,
                    0,
                    expected,
                    format!(
                        "header says first index {}, file name says {name_first}",
                        header.first_index
                    ),
                ));
            }
            if header.capacity != len {
                return Err(corrupt(
                    &path,
                    len,
                    expected,
                    format!(
                        "file is {len} bytes but was created with {} (truncated?)",
                        header.capacity
                    ),
                ));
            }
            if name_first != expected {
                return Err(corrupt(
                    &path,
                    0,
                    expected,
                    format!("segment starts at index {name_first}, expected {expected} (missing segment?)"),
                ));
            }
            let scan = scan_segment(
                w.bytes(),
                expected,
                last.term,
                is_last,
                header.recycled(),
                &mut term_runs,
            )
            .map_err(|f| corrupt(&path, f.offset as u64, f.index, f.reason))?;
            if !is_last && scan.last.is_none() {
                return Err(corrupt(
                    &path,
                    SEGMENT_HEADER_BYTES as u64,
                    expected,
                    "sealed segment holds no records",
                ));
            }
            let mut dirty = false;
            if is_last && scan.dirty_end > scan.end {
                // Zero what a torn record can span; beyond that a recycled segment holds
                // only stale records, which recovery recognizes by their lower indexes.
                let zero_end = scan
                    .dirty_end
                    .min(scan.end + record_len(config.payload_bytes_max));
                tracing::warn!(
                    path = %path.display(),
                    offset = scan.end,
                    bytes = zero_end - scan.end,
                    "truncating torn tail of the log"
                );
                w.zero(scan.end, zero_end - scan.end)
                    .map_err(|e| StorageError::io("zero", &path, e))?;
                dirty = true;
            }
            if let Some((index, term)) = scan.last {
                last = Position { index, term };
            }
            segs.push(SegState {
                w,
                first_index: name_first,
                offsets: scan.offsets,
                tail: scan.end,
                dirty,
            });
        }

        let prepared = collect_prepared(&dir, &config)?.map(Spare::File);
        let spares = collect_spares(&dir, &config)?
            .into_iter()
            .map(Spare::File)
            .collect();
        let shared = Arc::new(Shared {
            segments: RwLock::new(segs.iter().map(|s| Arc::clone(s.w.segment())).collect()),
            readable: AtomicU64::new(0),
        });
        let mut log = Log {
            dir,
            config,
            lock,
            dir_file,
            meta,
            segs,
            shared,
            first_index,
            prev_term,
            last,
            term_runs,
            durable: Position {
                index: first_index - 1,
                term: prev_term,
            },
            sync_begun: last,
            inflight: VecDeque::new(),
            next_sync_seq: 0,
            epoch: 0,
            dir_dirty: true,
            spares,
            readable: 0,
            failed: None,
            ring: LazyRing::default(),
            preparing: None,
            prepared,
            stage: Vec::new(),
        };
        if log.segs.is_empty() {
            // A new log: its first segment is zero-filled now, as later ones are ahead of
            // time (see `Log::prepare_ahead`), so syncs do not convert extents from the
            // start. Blocks open for the time of writing `segment_bytes`.
            if log.prepared.is_none() {
                let (tmp, path) = (log.dir.join(PREPARING_FILE), log.dir.join(PREPARED_FILE));
                prepare_zeroed(&tmp, &path, config.segment_bytes)
                    .map_err(|(op, e)| StorageError::io(op, &tmp, e))?;
                log.prepared = Some(Spare::File(path));
            }
            log.roll()?;
        }
        // What we found may sit only in the page cache (the previous process died before
        // syncing): make it durable before anyone builds on it.
        log.sync_all_blocking()?;
        log.check_invariants();
        Ok(log)
    }

    fn remove_unwritten(path: &Path, dir_file: &File, dir: &Path) -> Result<(), StorageError> {
        tracing::warn!(path = %path.display(), "removing unwritten last segment");
        std::fs::remove_file(path).map_err(|e| StorageError::io("remove", path, e))?;
        dir_file
            .sync_all()
            .map_err(|e| StorageError::io("fsync dir", dir, e))
    }
}
