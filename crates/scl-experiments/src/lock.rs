//! Cell locks: a cell runs in at most one process at a time, across processes and sweeps.
//!
//! A lock is the file `<root>/.lock-<id>` with an exclusive operating-system lock on it
//! (`flock` on Unix, `LockFileEx` on Windows), held for as long as the process runs the cell.
//! The kernel releases it when the process ends, however it ends, so a lock can never be
//! stale: a file whose lock is free is taken over whatever it says. The file's content,
//! `host pid`, is for people (and for the message when a cell is busy); it decides nothing.
//!
//! Taking a lock is open-or-create, try-lock, then a check that the path still names the
//! file that was locked (a holder removes the file before it lets go, so a process that
//! opened the old file and locks it afterwards sees a different or missing file and tries
//! again). Dropping a lock removes the file only while it is still this lock's own.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::layout::lock_file;
use scl_fs::FsError;

/// A held cell lock; the lock file is removed when dropped.
pub(crate) struct CellLock {
    path: PathBuf,
    file: File,
}

impl Drop for CellLock {
    fn drop(&mut self) {
        // Removed while still locked, and only if the path is still this lock's file: a
        // process waiting on this file then finds it gone and starts over.
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
        // `self.file` closes after this, which releases the lock.
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Whether `path` names the same file as the open `file`.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Whether `path` names the same file as the open `file` (without inode numbers: whether the
/// path exists).
#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// What a lock file taken over said about its previous holder, when that deserves a word.
fn previous_holder(content: &str) -> Option<String> {
    let mut words = content.split_whitespace();
    match (
        words.next(),
        words.next().map(str::parse::<u32>),
        words.next(),
    ) {
        (Some(host), Some(Ok(pid)), None) => {
            // A process of this host that is still alive but does not hold the lock is not a
            // cell process of this project (those hold it until they end).
            (host == host_name()
                && pid != std::process::id()
                && Path::new("/proc").join(pid.to_string()).exists())
            .then(|| {
                format!(
                    "it named process {pid}, which is running but holds no lock on it (not a \
                     cell process of this project)"
                )
            })
        }
        // Empty: a process stopped between creating the file and writing its name.
        _ if content.trim().is_empty() => None,
        _ => Some(format!(
            "it named no owner ({:?})",
            content.chars().take(40).collect::<String>()
        )),
    }
}

/// Takes the lock of cell `id` under `root` (`<root>/.lock-<id>`), writing `host pid` into it.
/// `Ok(None)`: another process holds it.
///
/// # Errors
/// An [`FsError`] naming the lock file when it cannot be opened or locked (for example on a
/// file system without file locks).
pub(crate) fn lock_cell(root: &Path, id: &str) -> Result<Option<CellLock>, FsError> {
    let path = lock_file(root, id);
    // A few rounds: each retry means another process removed or replaced the file between
    // this one opening and locking it, which ends quickly.
    for _ in 0..8 {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| FsError::new(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(FsError::new(&path, e)),
        }
        if !same_file(&file, &path) {
            continue;
        }
        let mut before = String::new();
        let _ = file.read_to_string(&mut before);
        if let Some(why) = previous_holder(&before) {
            eprintln!("warning: took over {}: {why}", path.display());
        }
        // The name is for people; a full disk that keeps it from being written does not
        // weaken the lock, so a failure here is not an error.
        let me = format!("{} {}", host_name(), std::process::id());
        let _ = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(me.as_bytes()))
            .and_then(|_| file.flush());
        remove_old_lock_temporaries(root, id);
        return Ok(Some(CellLock { path, file }));
    }
    Ok(None)
}

/// The process holding the lock of cell `id`, as its file names it (`host pid`), for messages.
pub(crate) fn lock_holder(root: &Path, id: &str) -> Option<String> {
    let text = std::fs::read_to_string(lock_file(root, id)).ok()?;
    let text = text.trim();
    (!text.is_empty() && text.len() < 300).then(|| text.to_string())
}

/// Removes `.lock-<id>.tmp-<pid>` files, which earlier versions wrote before linking a lock
/// into place and could leave behind on a full disk.
fn remove_old_lock_temporaries(root: &Path, id: &str) {
    let prefix = format!(".lock-{id}.tmp-");
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name
            .strip_prefix(&prefix)
            .is_some_and(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_whose_lock_is_free_is_taken_over_whatever_it_says() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let me = format!("{} {}", host_name(), std::process::id());
        // pid_max on Linux is at most 2^22, so 99999999 cannot be running; pid 1 is.
        for content in [
            String::new(),
            "garbage".into(),
            "host".into(),
            format!("{} 99999999", host_name()),
            format!("{} 1", host_name()),
            "other-host 12".into(),
        ] {
            std::fs::write(lock_file(root, "c"), &content).unwrap();
            let lock = lock_cell(root, "c").unwrap();
            assert!(lock.is_some(), "a lock holding {content:?} blocks the cell");
            let held = std::fs::read_to_string(lock_file(root, "c")).unwrap();
            assert_eq!(held, me, "after {content:?}");
            drop(lock);
            assert!(!lock_file(root, "c").exists());
        }
        assert!(
            previous_holder(&format!("{} 1", host_name())).is_some_and(|w| w.contains("process 1"))
        );
        assert!(previous_holder("garbage").is_some());
        assert!(previous_holder("").is_none());
        assert!(previous_holder(&format!("{} 99999999", host_name())).is_none());
    }

    #[test]
    fn a_held_lock_refuses_others_in_the_same_process_too() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let first = lock_cell(root, "d").unwrap().expect("a free lock is taken");
        assert!(lock_cell(root, "d").unwrap().is_none());
        assert_eq!(
            lock_holder(root, "d"),
            Some(format!("{} {}", host_name(), std::process::id()))
        );
        drop(first);
        assert!(!lock_file(root, "d").exists());
        assert!(lock_cell(root, "d").unwrap().is_some());
    }

    #[test]
    fn dropping_a_lock_leaves_a_lock_file_that_is_not_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let first = lock_cell(root, "e").unwrap().unwrap();
        // Someone removes the file by hand and another process takes the cell.
        std::fs::remove_file(lock_file(root, "e")).unwrap();
        let second = lock_cell(root, "e").unwrap().expect("the new file is free");
        drop(first);
        assert!(
            lock_file(root, "e").exists(),
            "the old holder removed the new lock"
        );
        assert!(lock_cell(root, "e").unwrap().is_none());
        drop(second);
        assert!(!lock_file(root, "e").exists());
    }

    #[test]
    fn temporaries_of_the_old_lock_writer_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in [
            ".lock-f.tmp-123",
            ".lock-f.tmp-77",
            ".lock-g.tmp-1",
            ".lock-f.tmp-x",
        ] {
            std::fs::write(root.join(name), "").unwrap();
        }
        let _lock = lock_cell(root, "f").unwrap().unwrap();
        let mut left: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".lock-f", ".lock-f.tmp-x", ".lock-g.tmp-1"]);
    }

    #[test]
    fn many_threads_racing_for_one_lock_never_hold_it_twice() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let holders = std::sync::atomic::AtomicUsize::new(0);
        let taken = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        if let Some(lock) = lock_cell(root, "h").unwrap() {
                            let now = holders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            assert_eq!(now, 0, "two holders at once");
                            taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            std::thread::yield_now();
                            holders.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            drop(lock);
                        }
                    }
                });
            }
        });
        assert!(taken.into_inner() > 0);
    }
}
