//! Atomic file and folder writes: a temporary name in the same folder, `fsync`, rename.
//!
//! Every file the workspace writes for a user (run records, checkpoints, reports, figures,
//! benchmark pages, scripts) goes through this crate, so a reader sees either the previous
//! content or the new one, never half of it, and a failed write leaves nothing behind.
//!
//! # Example
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("summary.json");
//! scl_fs::write(&path, b"{\"loss\": 1.5}").unwrap();
//! assert_eq!(std::fs::read(&path).unwrap(), b"{\"loss\": 1.5}");
//!
//! // A folder is filled under a temporary name and appears whole.
//! let staged = scl_fs::StagedDir::new_in(dir.path(), "cell-0").unwrap();
//! std::fs::write(staged.path().join("metrics.csv"), "step,loss\n").unwrap();
//! staged.commit(&dir.path().join("cell-0")).unwrap();
//! assert!(dir.path().join("cell-0/metrics.csv").exists());
//! ```
#![warn(missing_docs)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file-system operation that failed, with the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FsError {
    /// The file or folder.
    pub path: PathBuf,
    /// What the operating system said.
    #[source]
    pub source: std::io::Error,
}

impl FsError {
    /// An error about `path`.
    pub fn new(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self {
            path: path.into(),
            source,
        }
    }
}

/// A closure for `map_err` that attaches `path` to an I/O error.
pub fn at(path: &Path) -> impl Fn(std::io::Error) -> FsError + '_ {
    move |source| FsError::new(path, source)
}

/// The marker inside every temporary name: `.<name>.tmp-<pid>-<n>`.
const MARKER: &str = ".tmp-";

/// Whether a file or folder name is one of this crate's temporary names (left behind only by a
/// process that was killed while writing).
pub fn is_temporary(name: &str) -> bool {
    parse_temporary(name).is_some()
}

/// A temporary name taken apart: `.<stem>.tmp-<pid>-<n>[.<extension>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemporaryName<'a> {
    /// The name the temporary stands for, without its extension (`of` for
    /// `.of.tmp-12-0.png`, `epoch-0003` for a checkpoint folder).
    pub stem: &'a str,
    /// The process that created it.
    pub pid: u32,
}

/// Takes a temporary name apart; `None` for any other name.
pub fn parse_temporary(name: &str) -> Option<TemporaryName<'_>> {
    let rest = name.strip_prefix('.')?;
    let at = rest.rfind(MARKER)?;
    let (stem, tail) = (&rest[..at], &rest[at + MARKER.len()..]);
    let (pid, tail) = tail.split_once('-')?;
    let counter = tail.split('.').next()?;
    if stem.is_empty()
        || counter.is_empty()
        || !counter.bytes().all(|b| b.is_ascii_digit())
        || !pid.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(TemporaryName {
        stem,
        pid: pid.parse().ok()?,
    })
}

/// How long a temporary must have been left unchanged before [`is_abandoned`] gives it up:
/// far longer than any single write of this workspace takes.
pub const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether the process `pid` is running on this machine. Where that cannot be known (no
/// `/proc`), every process counts as running.
pub fn process_is_running(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// Whether the temporary at `path` was left behind by a process that has gone: its process
/// is not running on this machine and it has not changed for [`ABANDONED_AFTER`] (so a
/// writer on another machine sharing the folder, whose process id means nothing here, is
/// never disturbed).
pub fn is_abandoned(path: &Path, name: &TemporaryName<'_>) -> bool {
    let unchanged_for = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    !process_is_running(name.pid) && unchanged_for.is_some_and(|d| d >= ABANDONED_AFTER)
}

/// Removes the temporaries directly in `dir` (and, with `recursive`, in its sub-folders)
/// that `select` picks, and returns their paths. What cannot be read or removed is left as it
/// is: this is clean-up, never a reason to fail.
pub fn remove_temporaries(
    dir: &Path,
    recursive: bool,
    select: &dyn Fn(&Path, &TemporaryName<'_>) -> bool,
) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        match parse_temporary(&name.to_string_lossy()) {
            Some(t) if select(&path, &t) => {
                let gone = if is_dir {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if gone.is_ok() {
                    removed.push(path);
                }
            }
            Some(_) => {}
            None if recursive && is_dir => {
                removed.extend(remove_temporaries(&path, true, select));
            }
            None => {}
        }
    }
    removed.sort();
    removed
}

/// A hidden name unique in this process: `.<stem><MARKER><pid>-<n>`.
fn temporary_name(stem: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(".{stem}{MARKER}{}-{n}", std::process::id())
}

/// A temporary sibling of the file `path`: same folder, keeping the extension
/// (`figures/of.png` -> `figures/.of.tmp-<pid>-<n>.png`).
fn temporary_sibling(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{}.{}", temporary_name(&stem), ext.to_string_lossy()),
        None => temporary_name(&stem),
    };
    path.with_file_name(name)
}

/// Removes a temporary file or folder when dropped, unless disarmed.
struct Cleanup {
    path: PathBuf,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.path);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Flushes a folder's entry table to disk (best effort: not every file system allows opening a
/// folder for this).
fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically, creating the folder if needed.
///
/// # Errors
/// The [`FsError`] of the step that failed; the temporary file is removed and `path` is
/// unchanged.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), FsError> {
    write_with(path, |tmp| {
        let mut f = File::create(tmp)?;
        f.write_all(bytes.as_ref())?;
        Ok(())
    })
}

/// Writes `path` atomically through `fill`, which creates and writes the file at the path it
/// is given (a temporary sibling with the same extension); then the file is synced and renamed
/// over `path`. The folder is created if needed.
///
/// # Errors
/// `fill`'s error (turned into an [`FsError`] about `path`) or that of the sync or rename; the
/// temporary file is removed and `path` is unchanged.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), FsError> {
    let dir = parent_of(path);
    std::fs::create_dir_all(dir).map_err(at(dir))?;
    let tmp = temporary_sibling(path);
    let mut cleanup = Cleanup {
        path: tmp.clone(),
        armed: true,
    };
    fill(&tmp).map_err(at(path))?;
    File::options()
        .write(true)
        .open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(at(path))?;
    std::fs::rename(&tmp, path).map_err(at(path))?;
    cleanup.armed = false;
    sync_dir(dir);
    Ok(())
}

/// Copies `from` to `to` atomically (`to` is whole or untouched).
///
/// # Errors
/// An [`FsError`] naming `from` when it cannot be read, else as [`write_with`].
pub fn copy(from: &Path, to: &Path) -> Result<(), FsError> {
    if !from.is_file() {
        return Err(FsError::new(
            from,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    write_with(to, |tmp| std::fs::copy(from, tmp).map(|_| ()))
}

/// A folder filled under a temporary name (`<parent>/.<tag>.tmp-<pid>-<n>`) and renamed into
/// place by [`StagedDir::commit`]. Dropped without a commit, it is removed with its content.
#[derive(Debug)]
pub struct StagedDir {
    path: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Creates an empty staging folder in `parent` (created if needed); `tag` names it for a
    /// reader of the folder (a cell id, a checkpoint name).
    ///
    /// # Errors
    /// An [`FsError`] when the folder cannot be created.
    pub fn new_in(parent: &Path, tag: &str) -> Result<Self, FsError> {
        std::fs::create_dir_all(parent).map_err(at(parent))?;
        let path = parent.join(temporary_name(tag));
        std::fs::create_dir(&path).map_err(at(&path))?;
        Ok(Self {
            path,
            committed: false,
        })
    }

    /// The staging folder, to write into.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs every file directly inside the staging folder, removes what is at `dest` (a
    /// folder left by an earlier, unfinished attempt) and renames the staging folder to `dest`.
    ///
    /// # Errors
    /// An [`FsError`] of the step that failed; the staging folder is then removed.
    pub fn commit(mut self, dest: &Path) -> Result<(), FsError> {
        let entries = std::fs::read_dir(&self.path).map_err(at(&self.path))?;
        for entry in entries {
            let entry = entry.map_err(at(&self.path))?;
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                File::open(entry.path())
                    .and_then(|f| f.sync_all())
                    .map_err(at(&entry.path()))?;
            }
        }
        move_dir_into_place(&self.path, dest)?;
        self.committed = true;
        Ok(())
    }
}

/// Moves the finished folder `from` to `dest` in one rename, replacing what `dest` was (an
/// unfinished folder or a file of that name): the folder is synced first and the parent after,
/// so that `dest` never holds a partial folder, also after a crash. `from` and `dest` must be
/// on one file system (a sibling, as [`StagedDir`] and work folders are).
///
/// # Errors
/// An [`FsError`] naming the path of the step that failed.
pub fn move_dir_into_place(from: &Path, dest: &Path) -> Result<(), FsError> {
    sync_dir(from);
    if dest.is_dir() {
        std::fs::remove_dir_all(dest).map_err(at(dest))?;
    } else if dest.exists() {
        std::fs::remove_file(dest).map_err(at(dest))?;
    }
    std::fs::rename(from, dest).map_err(at(dest))?;
    sync_dir(parent_of(dest));
    Ok(())
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn temporary_names_are_taken_apart_and_nothing_else_is() {
        let figure = temporary_sibling(Path::new("figures/of.png"));
        let name = figure.file_name().unwrap().to_string_lossy().into_owned();
        let t = parse_temporary(&name).unwrap();
        assert_eq!((t.stem, t.pid), ("of", std::process::id()));
        assert_eq!(
            parse_temporary(".failed-cell-1.tmp-42-7.json"),
            Some(TemporaryName {
                stem: "failed-cell-1",
                pid: 42
            })
        );
        for other in [
            "of.png",
            ".lock-cell",
            ".partial-cell",
            ".x.tmp-",
            ".x.tmp-12",
            ".x.tmp-a-1",
            ".x.tmp-1-",
            "..tmp-1-2",
        ] {
            assert_eq!(parse_temporary(other), None, "{other}");
        }
    }

    #[test]
    fn temporaries_are_removed_as_selected_and_other_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/checkpoints/.epoch-0002.tmp-9-0")).unwrap();
        std::fs::write(
            root.join("a/checkpoints/.epoch-0002.tmp-9-0/model.mpk"),
            "x",
        )
        .unwrap();
        std::fs::write(root.join("a/.metrics.tmp-9-1.csv"), "").unwrap();
        std::fs::write(root.join("a/metrics.csv"), "kept").unwrap();
        std::fs::write(root.join(".report.tmp-9-2.md"), "").unwrap();
        std::fs::write(root.join(".b.tmp-9-3"), "").unwrap();
        // Not recursive: only the top level, and only what is selected.
        let removed = remove_temporaries(root, false, &|_, t| t.stem == "report");
        assert_eq!(removed, [root.join(".report.tmp-9-2.md")]);
        let removed = remove_temporaries(&root.join("a"), true, &|_, _| true);
        assert_eq!(
            removed,
            [
                root.join("a/.metrics.tmp-9-1.csv"),
                root.join("a/checkpoints/.epoch-0002.tmp-9-0")
            ]
        );
        assert_eq!(names(&root.join("a")), ["checkpoints", "metrics.csv"]);
        assert!(names(&root.join("a/checkpoints")).is_empty());
        assert_eq!(names(root), [".b.tmp-9-3", "a"]);
    }

    #[test]
    fn a_fresh_temporary_or_one_of_a_running_process_is_not_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".x.tmp-1-0");
        std::fs::write(&path, "").unwrap();
        let own = TemporaryName {
            stem: "x",
            pid: std::process::id(),
        };
        assert!(process_is_running(own.pid));
        assert!(!is_abandoned(&path, &own));
        // Old but written by this (running) process: kept.
        let old = std::time::SystemTime::now() - 2 * ABANDONED_AFTER;
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(!is_abandoned(&path, &own));
        // Old, and its process id is beyond any the kernel hands out: abandoned.
        let gone = TemporaryName {
            stem: "x",
            pid: u32::MAX,
        };
        assert_eq!(is_abandoned(&path, &gone), !process_is_running(u32::MAX));
        assert!(is_abandoned(&path, &gone) || !Path::new("/proc/self").exists());
    }

    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/report.md");
        write(&path, "first").unwrap();
        write(&path, "second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        assert_eq!(names(&dir.path().join("nested")), ["report.md"]);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("figure.png");
        write(&path, "old").unwrap();
        let err = write_with(&path, |tmp| {
            assert!(tmp.extension().is_some_and(|e| e == "png"), "{tmp:?}");
            assert!(is_temporary(&tmp.file_name().unwrap().to_string_lossy()));
            std::fs::write(tmp, "half")?;
            Err(std::io::Error::other("encoder failed"))
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("figure.png: encoder failed"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(names(dir.path()), ["figure.png"]);
    }

    #[test]
    fn a_staged_folder_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("cell");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("stale.txt"), "from an unfinished attempt").unwrap();
        {
            let dropped = StagedDir::new_in(dir.path(), "cell").unwrap();
            std::fs::write(dropped.path().join("a"), "1").unwrap();
        }
        assert_eq!(names(dir.path()), ["cell"]);
        let staged = StagedDir::new_in(dir.path(), "cell").unwrap();
        std::fs::write(staged.path().join("summary.json"), "{}").unwrap();
        staged.commit(&dest).unwrap();
        assert_eq!(names(dir.path()), ["cell"]);
        assert_eq!(names(&dest), ["summary.json"]);
    }

    #[test]
    fn copying_a_missing_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = copy(&dir.path().join("absent"), &dir.path().join("to")).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
        assert!(names(dir.path()).is_empty());
    }
}
