//! Cell locks: a cell runs in at most one process at a time, across processes and sweeps.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::layout::lock_file;
use scl_fs::FsError;

/// A held cell lock; the lock file is removed when dropped.
pub(crate) struct CellLock(PathBuf);

impl Drop for CellLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Takes `<root>/.lock-<id>` (created exclusively; holds `host pid`). A lock left by a dead
/// process of this host is taken over. `Ok(None)`: a live process holds it.
pub(crate) fn lock_cell(root: &Path, id: &str) -> Result<Option<CellLock>, FsError> {
    let path = lock_file(root, id);
    let me = format!("{} {}", host_name(), std::process::id());
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(me.as_bytes()).map_err(scl_fs::at(&path))?;
                return Ok(Some(CellLock(path)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let mut words = holder.split_whitespace();
                let (host, pid) = (words.next(), words.next());
                let stale = host == Some(host_name().as_str())
                    && pid.is_some_and(|p| !Path::new("/proc").join(p).exists());
                if !stale {
                    return Ok(None);
                }
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => return Err(FsError::new(&path, e)),
        }
    }
    Ok(None)
}
