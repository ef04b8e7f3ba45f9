//! A tiny crash-atomic state file: two checksummed slots written alternately, each
//! carrying a sequence number. A save overwrites the older slot and is made durable with
//! `fdatasync`; a crash mid-save can only damage the slot being written, so load always
//! finds the previous state in the other slot. Slots live in separate 4 KiB pages so a
//! torn page write cannot touch both.

use std::fs::{File, OpenOptions};
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::StorageError;

const SLOT_MAGIC: u32 = u32::from_le_bytes(*b"RSLT");
const SLOT_VERSION: u16 = 1;
/// Distance between the two slots (one page each).
pub(crate) const SLOT_STRIDE_BYTES: u64 = 4096;
/// Payload bytes a slot carries.
pub(crate) const SLOT_PAYLOAD_BYTES: usize = 40;

/// Slot layout (little-endian), pinned below.
#[repr(C)]
struct SlotLayout {
    magic: u32,
    version: u16,
    kind: u16,
    seq: u64,
    payload: [u8; SLOT_PAYLOAD_BYTES],
    crc: u32,
    reserved: u32,
}
const SLOT_BYTES: usize = 64;
const _: () = assert!(size_of::<SlotLayout>() == SLOT_BYTES);
const _: () = assert!(offset_of!(SlotLayout, kind) == 6);
const _: () = assert!(offset_of!(SlotLayout, seq) == 8);
const _: () = assert!(offset_of!(SlotLayout, payload) == 16);
const _: () = assert!(offset_of!(SlotLayout, crc) == 56);
const CRC_AT: usize = offset_of!(SlotLayout, crc);

/// Which kind of state a slot file holds (guards against swapping files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotKind {
    HardState = 1,
    LogMeta = 2,
}

/// An open two-slot file. At most one save may be in flight at a time.
#[derive(Debug)]
pub(crate) struct SlotFile {
    path: PathBuf,
    file: File,
    kind: SlotKind,
    /// Sequence number of the newest slot written (durable or pending).
    seq: u64,
}

fn encode_slot(kind: SlotKind, seq: u64, payload: &[u8; SLOT_PAYLOAD_BYTES]) -> [u8; SLOT_BYTES] {
    let mut b = [0u8; SLOT_BYTES];
    b[0..4].copy_from_slice(&SLOT_MAGIC.to_le_bytes());
    b[4..6].copy_from_slice(&SLOT_VERSION.to_le_bytes());
    b[6..8].copy_from_slice(&(kind as u16).to_le_bytes());
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..16 + SLOT_PAYLOAD_BYTES].copy_from_slice(payload);
    let crc = crc32c::crc32c(&b[..CRC_AT]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_slot(kind: SlotKind, b: &[u8]) -> Result<(u64, [u8; SLOT_PAYLOAD_BYTES]), String> {
    if b.len() < SLOT_BYTES {
        return Err(format!("short ({} bytes)", b.len()));
    }
    let magic = u32::from_le_bytes(b[0..4].try_into().expect("4"));
    if magic != SLOT_MAGIC {
        return Err(format!("bad magic {magic:#010x}"));
    }
    let crc = u32::from_le_bytes(b[CRC_AT..CRC_AT + 4].try_into().expect("4"));
    let computed = crc32c::crc32c(&b[..CRC_AT]);
    if crc != computed {
        return Err(format!(
            "checksum mismatch (stored {crc:#010x}, computed {computed:#010x})"
        ));
    }
    let version = u16::from_le_bytes(b[4..6].try_into().expect("2"));
    if version != SLOT_VERSION {
        return Err(format!("unsupported version {version}"));
    }
    let found_kind = u16::from_le_bytes(b[6..8].try_into().expect("2"));
    if found_kind != kind as u16 {
        return Err(format!("holds kind {found_kind}, expected {}", kind as u16));
    }
    let seq = u64::from_le_bytes(b[8..16].try_into().expect("8"));
    let mut payload = [0u8; SLOT_PAYLOAD_BYTES];
    payload.copy_from_slice(&b[16..16 + SLOT_PAYLOAD_BYTES]);
    Ok((seq, payload))
}

impl SlotFile {
    /// Opens `path`, or creates it holding `initial` if it does not exist. Creation is
    /// atomic (temp file, fsync, rename, directory fsync). Returns the file and the
    /// payload of the newest valid slot.
    pub(crate) fn open_or_create(
        path: &Path,
        kind: SlotKind,
        initial: &[u8; SLOT_PAYLOAD_BYTES],
    ) -> Result<(SlotFile, [u8; SLOT_PAYLOAD_BYTES]), StorageError> {
        if !path.exists() {
            Self::create(path, kind, initial)?;
        }
        Self::open(path, kind)
    }

    /// Opens an existing slot file and loads the newest valid slot.
    pub(crate) fn open(
        path: &Path,
        kind: SlotKind,
    ) -> Result<(SlotFile, [u8; SLOT_PAYLOAD_BYTES]), StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StorageError::io("open", path, e))?;
        let mut slots = Vec::with_capacity(2);
        let mut reasons = Vec::with_capacity(2);
        // A slot of zeros was never written (the file is new and only one slot has been
        // saved): expected, not worth a warning.
        let mut never_written = 0;
        for slot in 0..2u64 {
            let mut b = [0u8; SLOT_BYTES];
            let at = slot * SLOT_STRIDE_BYTES;
            let res = match read_full_at(&file, &mut b, at) {
                Ok(n) if b[..n].iter().all(|&x| x == 0) => {
                    never_written += 1;
                    Err("never written".to_owned())
                }
                Ok(n) => decode_slot(kind, &b[..n]),
                Err(e) => Err(format!("read failed: {e}")),
            };
            match res {
                Ok(v) => slots.push(v),
                Err(r) => reasons.push(format!("slot {slot} at offset {at}: {r}")),
            }
        }
        let Some(&(seq, payload)) = slots.iter().max_by_key(|(seq, _)| *seq) else {
            return Err(StorageError::NoValidSlot {
                path: path.to_path_buf(),
                reason: reasons.join("; "),
            });
        };
        if reasons.len() > never_written {
            tracing::warn!(path = %path.display(), reason = %reasons.join("; "), "state file slot invalid, using the other slot");
        }
        Ok((
            SlotFile {
                path: path.to_path_buf(),
                file,
                kind,
                seq,
            },
            payload,
        ))
    }

    fn create(
        path: &Path,
        kind: SlotKind,
        initial: &[u8; SLOT_PAYLOAD_BYTES],
    ) -> Result<(), StorageError> {
        let tmp = path.with_extension("tmp");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| StorageError::io("create", &tmp, e))?;
        let slot = encode_slot(kind, 1, initial);
        file.write_all_at(&slot, 0)
            .map_err(|e| StorageError::io("write", &tmp, e))?;
        file.set_len(2 * SLOT_STRIDE_BYTES)
            .map_err(|e| StorageError::io("set_len", &tmp, e))?;
        file.sync_all()
            .map_err(|e| StorageError::io("fsync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| StorageError::io("rename", path, e))?;
        sync_parent_dir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Writes `payload` into the older slot (page cache only). The state is durable only
    /// after an `fdatasync` of [`SlotFile::fd`] issued after this returns has completed.
    pub(crate) fn write_next(
        &mut self,
        payload: &[u8; SLOT_PAYLOAD_BYTES],
    ) -> Result<u64, StorageError> {
        let seq = self.seq + 1;
        let slot = encode_slot(self.kind, seq, payload);
        let at = (seq % 2) * SLOT_STRIDE_BYTES;
        self.file
            .write_all_at(&slot, at)
            .map_err(|e| StorageError::io("write", &self.path, e))?;
        self.seq = seq;
        Ok(seq)
    }

    /// Writes and `fdatasync`s: durable when this returns `Ok`.
    pub(crate) fn save(&mut self, payload: &[u8; SLOT_PAYLOAD_BYTES]) -> Result<(), StorageError> {
        self.write_next(payload)?;
        self.file
            .sync_data()
            .map_err(|e| StorageError::io("fdatasync", &self.path, e))
    }
}

fn read_full_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `fsync`s the directory containing `path`, making a create/rename/unlink durable.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<(), StorageError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync dir", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_valid_slot_wins_and_corruption_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let p = |v: u8| [v; SLOT_PAYLOAD_BYTES];
        let (mut f, got) = SlotFile::open_or_create(&path, SlotKind::LogMeta, &p(1)).unwrap();
        assert_eq!(got, p(1));
        f.save(&p(2)).unwrap(); // seq 2 -> slot 0
        f.save(&p(3)).unwrap(); // seq 3 -> slot 1
        drop(f);
        let (_, got) = SlotFile::open(&path, SlotKind::LogMeta).unwrap();
        assert_eq!(got, p(3));
        // Corrupt the newest slot (slot 1): load falls back to seq 2.
        let raw = OpenOptions::new().write(true).open(&path).unwrap();
        raw.write_all_at(&[0xff], SLOT_STRIDE_BYTES + 20).unwrap();
        let (mut f, got) = SlotFile::open(&path, SlotKind::LogMeta).unwrap();
        assert_eq!(got, p(2));
        // The next save overwrites the broken slot and becomes the newest.
        f.save(&p(4)).unwrap();
        drop(f);
        assert_eq!(SlotFile::open(&path, SlotKind::LogMeta).unwrap().1, p(4));
        // Wrong kind is rejected, naming the file.
        let err = SlotFile::open(&path, SlotKind::HardState).unwrap_err();
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    }
}
