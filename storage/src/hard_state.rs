//! Raft hard state (current term, vote, commit index) in its own crash-atomic file.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use io_uring::squeue;

use crate::error::StorageError;
use crate::slot_file::{SlotFile, SlotKind, SLOT_PAYLOAD_BYTES};
use crate::sync_ring::fdatasync_entry;

/// The state Raft must persist before answering votes or appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// Latest term this replica has seen.
    pub term: u64,
    /// Candidate voted for in `term`, if any.
    pub voted_for: Option<u64>,
    /// Highest index known committed.
    pub commit: u64,
}

impl HardState {
    fn encode(&self) -> [u8; SLOT_PAYLOAD_BYTES] {
        let mut b = [0u8; SLOT_PAYLOAD_BYTES];
        b[0..8].copy_from_slice(&self.term.to_le_bytes());
        b[8..16].copy_from_slice(&u64::from(self.voted_for.is_some()).to_le_bytes());
        b[16..24].copy_from_slice(&self.voted_for.unwrap_or(0).to_le_bytes());
        b[24..32].copy_from_slice(&self.commit.to_le_bytes());
        b
    }

    fn decode(b: &[u8; SLOT_PAYLOAD_BYTES], path: &Path) -> Result<HardState, StorageError> {
        let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8"));
        let voted_for = match word(1) {
            0 => None,
            1 => Some(word(2)),
            flag => {
                return Err(StorageError::NoValidSlot {
                    path: path.to_path_buf(),
                    reason: format!("newest slot has invalid vote flag {flag}"),
                })
            }
        };
        Ok(HardState {
            term: word(0),
            voted_for,
            commit: word(3),
        })
    }
}

/// The hard-state file. Saves are crash-atomic: after a crash, load returns either the
/// state before or after the interrupted save, never a mix.
///
/// At most one save may be pending at a time: [`HardStateFile::begin_save`] asserts the
/// previous one completed.
#[derive(Debug)]
pub struct HardStateFile {
    file: SlotFile,
    current: HardState,
    pending: bool,
    failed: bool,
}

/// A written but not yet durable hard state. Submit [`PendingHardState::entry`], then
/// pass its result to [`HardStateFile::complete_save`]. Keep the `HardStateFile` alive
/// until then (it owns the fd).
#[derive(Debug)]
pub struct PendingHardState {
    entry: squeue::Entry,
    state: HardState,
    fd: RawFd,
}

impl PendingHardState {
    /// The `fdatasync` SQE to submit (user_data 0; retag as needed).
    pub fn entry(&self) -> &squeue::Entry {
        &self.entry
    }

    /// The state that is durable once the SQE completes successfully.
    pub fn state(&self) -> HardState {
        self.state
    }
}

impl HardStateFile {
    /// Opens `path`, creating it with the default state (term 0, no vote, commit 0) if
    /// absent. Errors if both slots are invalid, naming the file.
    pub fn open(path: impl AsRef<Path>) -> Result<(HardStateFile, HardState), StorageError> {
        let path = path.as_ref();
        let (file, payload) =
            SlotFile::open_or_create(path, SlotKind::HardState, &HardState::default().encode())?;
        let current = HardState::decode(&payload, path)?;
        Ok((
            HardStateFile {
                file,
                current,
                pending: false,
                failed: false,
            },
            current,
        ))
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.file.path().to_path_buf()
    }

    /// The last state saved (or being saved).
    pub fn current(&self) -> HardState {
        self.current
    }

    fn check(&self, hs: &HardState) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Failed {
                reason: format!("an earlier save of {} failed", self.file.path().display()),
            });
        }
        // Raft never lowers its term; a vote may only change together with the term.
        assert!(
            hs.term >= self.current.term,
            "hard state term went backwards"
        );
        if hs.term == self.current.term && self.current.voted_for.is_some() {
            assert_eq!(
                hs.voted_for, self.current.voted_for,
                "vote changed within a term"
            );
        }
        Ok(())
    }

    /// Writes and `fdatasync`s `hs`; durable when this returns `Ok`.
    pub fn save(&mut self, hs: HardState) -> Result<(), StorageError> {
        assert!(!self.pending, "save while another save is pending");
        self.check(&hs)?;
        let r = self.file.save(&hs.encode());
        if r.is_err() {
            self.failed = true;
        }
        r?;
        self.current = hs;
        Ok(())
    }

    /// Writes `hs` to the page cache and returns the `fdatasync` to submit on the
    /// caller's ring. Nothing may be acknowledged on the strength of `hs` until
    /// [`HardStateFile::complete_save`] returned `Ok`.
    pub fn begin_save(&mut self, hs: HardState) -> Result<PendingHardState, StorageError> {
        assert!(!self.pending, "begin_save while another save is pending");
        self.check(&hs)?;
        if let Err(e) = self.file.write_next(&hs.encode()) {
            self.failed = true;
            return Err(e);
        }
        self.pending = true;
        let fd = self.file.fd();
        Ok(PendingHardState {
            entry: fdatasync_entry(fd, 0),
            state: hs,
            fd,
        })
    }

    /// Completes a save with the CQE result of its `fdatasync` (0 or `-errno`).
    pub fn complete_save(
        &mut self,
        pending: PendingHardState,
        result: i32,
    ) -> Result<HardState, StorageError> {
        assert!(self.pending, "complete_save without begin_save");
        assert_eq!(pending.fd, self.file.fd(), "pending save of another file");
        self.pending = false;
        if result < 0 {
            self.failed = true;
            return Err(StorageError::io(
                "fdatasync",
                self.file.path(),
                std::io::Error::from_raw_os_error(-result),
            ));
        }
        self.current = pending.state;
        Ok(self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot_file::SLOT_STRIDE_BYTES;
    use std::os::unix::fs::FileExt;

    #[test]
    fn save_load_and_slot_corruption_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hard_state");
        let (mut f, hs) = HardStateFile::open(&path).unwrap();
        assert_eq!(hs, HardState::default());
        let a = HardState {
            term: 3,
            voted_for: Some(2),
            commit: 10,
        };
        let b = HardState {
            term: 4,
            voted_for: None,
            commit: 12,
        };
        f.save(a).unwrap(); // seq 2 -> slot 0
        f.save(b).unwrap(); // seq 3 -> slot 1
        drop(f);
        assert_eq!(HardStateFile::open(&path).unwrap().1, b);
        let raw = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        raw.write_all_at(&[0x5a; 8], SLOT_STRIDE_BYTES + 16)
            .unwrap();
        assert_eq!(
            HardStateFile::open(&path).unwrap().1,
            a,
            "falls back to the older slot"
        );
        raw.write_all_at(&[0x5a; 8], 16).unwrap();
        let err = HardStateFile::open(&path).unwrap_err();
        assert!(matches!(err, StorageError::NoValidSlot { .. }));
        assert!(err.to_string().contains("hard_state"), "{err}");
    }

    #[test]
    fn sqe_save_is_durable_only_after_completion() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hs");
        let (mut f, _) = HardStateFile::open(&path).unwrap();
        let hs = HardState {
            term: 9,
            voted_for: Some(1),
            commit: 0,
        };
        let p = f.begin_save(hs).unwrap();
        let mut ring = crate::sync_ring::SyncRing::new().unwrap();
        let res = ring.fdatasync_all(&[p.fd]).unwrap();
        assert_eq!(f.complete_save(p, res[0]).unwrap(), hs);
        // A failed fdatasync fails the file: nothing more may be saved.
        let p = f.begin_save(HardState { term: 10, ..hs }).unwrap();
        assert!(f.complete_save(p, -libc::EIO).is_err());
        assert!(matches!(
            f.save(HardState { term: 11, ..hs }),
            Err(StorageError::Failed { .. })
        ));
    }
}
