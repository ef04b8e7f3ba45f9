//! A full disk: segment preallocation fails with ENOSPC, the error is typed, the log
//! refuses further appends, and nothing unsynced was reported durable. Runs on a tiny
//! tmpfs (needs root to mount; skipped with a message otherwise).

use std::path::Path;
use std::process::Command;

use storage::{Log, LogConfig, StorageError};

struct Mount<'a>(&'a Path);

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn enospc_fails_the_log_without_losing_durable_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "storage-enospc-test"])
        .arg(dir.path())
        .status();
    if !matches!(mounted, Ok(s) if s.success()) {
        println!("SKIPPED enospc test: cannot mount a tmpfs here ({mounted:?})");
        return;
    }
    let _mount = Mount(dir.path());
    let config = LogConfig {
        segment_bytes: 128 << 10,
        payload_bytes_max: 4096,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    let mut durable = 0;
    let err = loop {
        let index = log.last_index() + 1;
        match log.append_entry(1, index, &[index as u8; 3000]) {
            Ok(()) => {}
            Err(e) => break e,
        }
        if index % 10 == 0 {
            durable = log.sync().unwrap().index;
        }
        assert!(index < 10_000, "a 1 MiB tmpfs must fill up");
    };
    match &err {
        StorageError::Io { op, source, .. } => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{err}");
            assert_eq!(*op, "fallocate");
        }
        other => panic!("expected an IO error, got {other}"),
    }
    assert!(log.is_failed());
    assert_eq!(
        log.durable().index,
        durable,
        "failure reports nothing new durable"
    );
    let next = log.last_index() + 1;
    assert!(matches!(
        log.append_entry(1, next, b"x"),
        Err(StorageError::Failed { .. })
    ));
    assert!(matches!(log.sync(), Err(StorageError::Failed { .. })));
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert!(log.last_index() >= durable);
    for i in 1..=durable {
        assert_eq!(log.read_entry(i).unwrap().payload, &[i as u8; 3000][..]);
    }
}
