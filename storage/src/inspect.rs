//! Read-only verification of a log directory, for `raftctl inspect-log`: the same checks
//! as recovery (every record's checksum, contiguous indexes, monotonic terms, sealed
//! segments clean), but nothing is written, so a torn tail is reported, not repaired.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::log::open::corrupt;
use crate::recovery::scan_segment;
use crate::segment_header::{SegmentHeader, SEGMENT_HEADER_BYTES};

/// What one segment file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    pub path: PathBuf,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    /// (first index, last index), `None` when the segment holds no record.
    pub indexes: Option<(u64, u64)>,
    /// (first term, last term) of its records.
    pub terms: Option<(u64, u64)>,
    /// Bytes after the last valid record that are not zero (a torn tail; recovery
    /// zeroes it on the next open).
    pub torn_tail_bytes: u64,
}

/// The result of inspecting a log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectReport {
    pub dir: PathBuf,
    pub segments: Vec<SegmentSummary>,
    /// Each run of equal terms as (first index, term).
    pub term_runs: Vec<(u64, u64)>,
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "log {}: {} segment(s), all checksums valid",
            self.dir.display(),
            self.segments.len()
        )?;
        for s in &self.segments {
            let name = s.path.file_name().map_or_else(
                || s.path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            match (s.indexes, s.terms) {
                (Some((a, b)), Some((ta, tb))) => write!(
                    f,
                    "  {name}: indexes {a}..={b} ({} records), terms {ta}..={tb}, {} of {} bytes used",
                    b - a + 1,
                    s.used_bytes,
                    s.capacity_bytes
                )?,
                _ => write!(f, "  {name}: empty, {} bytes", s.capacity_bytes)?,
            }
            if s.torn_tail_bytes > 0 {
                write!(
                    f,
                    ", torn tail of {} bytes (unsynced; truncated on open)",
                    s.torn_tail_bytes
                )?;
            }
            writeln!(f)?;
        }
        write!(f, "  term runs (first index: term):")?;
        for (index, term) in &self.term_runs {
            write!(f, " {index}:{term}")?;
        }
        Ok(())
    }
}

/// Verifies every segment of the log in `dir` without modifying anything.
pub fn inspect(dir: impl AsRef<Path>) -> Result<InspectReport, StorageError> {
    let dir = dir.as_ref();
    let mut files = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| StorageError::io("read_dir", dir, e))?;
    for ent in rd {
        let path = ent
            .map_err(|e| StorageError::io("read_dir", dir, e))?
            .path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(crate::log::SEGMENT_SUFFIX))
        else {
            continue;
        };
        let first: u64 = stem
            .parse()
            .map_err(|_| corrupt(&path, 0, 0, "segment file name is not a first index"))?;
        files.push((first, path));
    }
    files.sort();
    let mut report = InspectReport {
        dir: dir.to_path_buf(),
        segments: Vec::with_capacity(files.len()),
        term_runs: Vec::new(),
    };
    let mut expected: Option<u64> = None;
    let mut last_term = 0;
    let count = files.len();
    for (i, (name_first, path)) in files.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let bytes = std::fs::read(&path).map_err(|e| StorageError::io("read", &path, e))?;
        let index = expected.unwrap_or(name_first);
        if bytes.len() < SEGMENT_HEADER_BYTES {
            return Err(corrupt(
                &path,
                bytes.len() as u64,
                index,
                "shorter than the segment header",
            ));
        }
        let header = SegmentHeader::decode(&bytes).map_err(|r| corrupt(&path, 0, index, r))?;
        if header.first_index != name_first {
            return Err(corrupt(
                &path,
                0,
                index,
                format!(
                    "header says first index {}, file name says {name_first}",
                    header.first_index
                ),
            ));
        }
        if header.capacity != bytes.len() as u64 {
            return Err(corrupt(
                &path,
                bytes.len() as u64,
                index,
                format!(
                    "file is {} bytes but was created with {} (truncated?)",
                    bytes.len(),
                    header.capacity
                ),
            ));
        }
        if name_first != index {
            return Err(corrupt(
                &path,
                0,
                index,
                format!(
                    "segment starts at index {name_first}, expected {index} (missing segment?)"
                ),
            ));
        }
        let runs_before = report.term_runs.len();
        let scan = scan_segment(
            &bytes,
            index,
            last_term,
            is_last,
            header.recycled(),
            &mut report.term_runs,
        )
        .map_err(|f| corrupt(&path, f.offset as u64, f.index, f.reason))?;
        let first_term = report.term_runs.get(runs_before).map_or(last_term, |r| r.1);
        if let Some((last_index, term)) = scan.last {
            expected = Some(last_index + 1);
            last_term = term;
        }
        report.segments.push(SegmentSummary {
            path,
            capacity_bytes: bytes.len() as u64,
            used_bytes: scan.end as u64,
            indexes: scan.last.map(|(l, _)| (index, l)),
            terms: scan.last.map(|(_, t)| (first_term, t)),
            // A recycled segment keeps stale records of its previous life past its end.
            torn_tail_bytes: if header.recycled() {
                0
            } else {
                (scan.dirty_end - scan.end) as u64
            },
        });
    }
    Ok(report)
}
