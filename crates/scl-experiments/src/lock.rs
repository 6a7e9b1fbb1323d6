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

/// Who holds a lock, from its content `host pid`.
#[derive(Debug, PartialEq, Eq)]
enum Holder {
    /// A process that is alive, or on another host (which cannot be checked from here).
    Live,
    /// A process of this host that has ended.
    Dead,
    /// Content that names no owner (empty, or not `host pid`).
    Unreadable(String),
}

fn holder(content: &str) -> Holder {
    let mut words = content.split_whitespace();
    match (
        words.next(),
        words.next().map(str::parse::<u32>),
        words.next(),
    ) {
        (Some(host), Some(Ok(pid)), None) => {
            if host == host_name() && !Path::new("/proc").join(pid.to_string()).exists() {
                Holder::Dead
            } else {
                Holder::Live
            }
        }
        _ => Holder::Unreadable(content.chars().take(40).collect()),
    }
}

/// Takes `<root>/.lock-<id>`, holding `host pid`. The content is written to a temporary file
/// first and hard-linked into place, so a lock file never exists without its owner (where the
/// file system has no hard links, the file is created exclusively and then written). A lock
/// of a dead process of this host, or one whose content names no owner (left by a writer that
/// failed, e.g. on a full disk), is taken over, the latter with a warning. `Ok(None)`: a live
/// process holds it.
pub(crate) fn lock_cell(root: &Path, id: &str) -> Result<Option<CellLock>, FsError> {
    let path = lock_file(root, id);
    let me = format!("{} {}", host_name(), std::process::id());
    for _ in 0..2 {
        match create_with(&path, &me) {
            Ok(()) => return Ok(Some(CellLock(path))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let content = std::fs::read_to_string(&path).unwrap_or_default();
                match holder(&content) {
                    Holder::Live => return Ok(None),
                    Holder::Dead => {}
                    Holder::Unreadable(what) => eprintln!(
                        "warning: {} names no owner ({what:?}); taking it over",
                        path.display()
                    ),
                }
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => return Err(FsError::new(&path, e)),
        }
    }
    Ok(None)
}

/// Creates `path` with `content`, failing with `AlreadyExists` when it exists.
fn create_with(path: &Path, content: &str) -> std::io::Result<()> {
    let tmp = path.with_file_name(format!(
        "{}.tmp-{}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    std::fs::write(&tmp, content)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)?;
            f.write_all(content.as_bytes())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_garbage_lock_is_taken_over_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for content in ["", "garbage", "host"] {
            std::fs::write(lock_file(root, "c"), content).unwrap();
            let lock = lock_cell(root, "c").unwrap();
            assert!(lock.is_some(), "a lock holding {content:?} blocks the cell");
            let held = std::fs::read_to_string(lock_file(root, "c")).unwrap();
            assert_eq!(held, format!("{} {}", host_name(), std::process::id()));
        }
        // Held by this (live) process: another taker is refused.
        let first = lock_cell(root, "d").unwrap().expect("a free lock is taken");
        assert!(lock_cell(root, "d").unwrap().is_none());
        drop(first);
        assert!(!lock_file(root, "d").exists());
        // No temporary file is left beside the locks.
        let names: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    }

    #[test]
    fn a_lock_of_a_process_that_has_ended_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // pid_max on Linux is at most 2^22, so this pid cannot be running.
        std::fs::write(
            lock_file(dir.path(), "c"),
            format!("{} 99999999", host_name()),
        )
        .unwrap();
        assert!(lock_cell(dir.path(), "c").unwrap().is_some());
    }
}
