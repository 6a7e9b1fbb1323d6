//! Where dataset files live, whether they are the published ones (md5), and how missing ones
//! are fetched.
//!
//! Location: `--data-dir` (passed in by the caller), else the environment variable
//! `SCL_DATA_DIR`, else `datasets/cache/` under the current directory. Each dataset has a
//! folder named after its manifest (`<data dir>/mnist/train-images-idx3-ubyte.gz`). Where
//! that folder is incomplete, [`locate`] also looks for torchvision's layout of the dataset
//! under the same data directory (a `root` a PyTorch user already downloaded into):
//! `MNIST/raw/`, `FashionMNIST/raw/`, `cifar-10-batches-py/`, `cifar-100-python/`, or the
//! python archives `cifar-10-python.tar.gz` / `cifar-100-python.tar.gz`, verified by md5 like
//! the manifest's own files.
//!
//! Verification: the first time a file is used its md5 is compared with the manifest's; the
//! result is remembered in `.scl-verified.json` beside the file, so later runs do not hash
//! again. The record is keyed by what a copy or a `touch -r` cannot fake together: size,
//! modification time, and on Unix the inode, its device and the inode's change time (which
//! every write, and every change of the modification time, sets to the present). A folder
//! that cannot be written gets its record in the user's cache folder instead
//! (`$XDG_CACHE_HOME/scl-data/verified/`, else `~/.cache/scl-data/verified/`, else the system's
//! temporary folder). Records are readable by everyone (mode 0644), like the data.
//!
//! Downloads go to a temporary name in the same folder, are hashed while they stream, and are
//! renamed into place only when the md5 matches; on any failure the temporary file is removed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::{DataError, FileEntry, Manifest};

/// The environment variable that names the data directory when no flag does.
pub const DATA_DIR_ENV: &str = "SCL_DATA_DIR";

/// The data directory used when neither the flag nor the environment names one.
pub const DEFAULT_DATA_DIR: &str = "datasets/cache";

/// A resolved data directory and where the choice came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
    origin: &'static str,
}

impl DataDir {
    /// Resolves the data directory: `flag`, else `$SCL_DATA_DIR`, else `datasets/cache`.
    pub fn resolve(flag: Option<&Path>) -> Self {
        if let Some(dir) = flag {
            return Self::at(dir, "the command line");
        }
        match std::env::var_os(DATA_DIR_ENV) {
            Some(dir) if !dir.is_empty() => Self::at(Path::new(&dir), "SCL_DATA_DIR"),
            _ => Self::at(Path::new(DEFAULT_DATA_DIR), "default"),
        }
    }

    /// A data directory at an explicit path.
    pub fn at(root: &Path, origin: &'static str) -> Self {
        Self {
            root: root.to_path_buf(),
            origin,
        }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the path came from: `the command line`, `SCL_DATA_DIR` or `default`.
    pub fn origin(&self) -> &'static str {
        self.origin
    }

    /// The folder of one dataset.
    pub fn dataset_dir(&self, manifest: &Manifest) -> PathBuf {
        self.root.join(&manifest.name)
    }
}

/// Whether missing files may be downloaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// Never touch the network; missing files are an error that says where to get them.
    Never,
    /// Download missing files (with a progress bar when `progress` is true).
    IfMissing {
        /// Show a progress bar on standard error.
        progress: bool,
    },
}

/// The state of one dataset file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Not in the dataset's folder (neither as published nor as an unpacked copy).
    Missing,
    /// Present and its md5 equals the manifest's.
    Verified {
        /// The file that is read: the published name, or the unpacked copy without `.gz`
        /// when only that is there.
        path: PathBuf,
    },
    /// Present but its md5 differs.
    Mismatch {
        /// The file hashed.
        path: PathBuf,
        /// The md5 the manifest gives for it.
        expected: String,
        /// md5 of the file.
        found: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    bytes: u64,
    mtime_ns: u128,
    /// Inode change time (Unix; 0 elsewhere). Records written before it existed read as 0 and
    /// never match, so those files are hashed once more.
    #[serde(default)]
    ctime_ns: i128,
    #[serde(default)]
    inode: u64,
    #[serde(default)]
    device: u64,
    md5: String,
}

/// The key of `path` as it is now: everything of [`Stamp`] but the md5.
fn stamp_key(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    #[cfg(unix)]
    let (ctime_ns, inode, device) = {
        use std::os::unix::fs::MetadataExt;
        (
            i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            meta.ino(),
            meta.dev(),
        )
    };
    #[cfg(not(unix))]
    let (ctime_ns, inode, device) = (0, 0, 0);
    Some(Stamp {
        bytes: meta.len(),
        mtime_ns: mtime.as_nanos(),
        ctime_ns,
        inode,
        device,
        md5: String::new(),
    })
}

/// The user's cache folder for records of folders that cannot be written.
fn user_cache_dir() -> PathBuf {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from_env("XDG_CACHE_HOME")
        .or_else(|| from_env("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("scl-data")
        .join("verified")
}

fn stamp_files(dir: &Path) -> [PathBuf; 2] {
    let local = dir.join(".scl-verified.json");
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    // FNV-1a of the folder's path names the record of a folder that cannot be written.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.to_string_lossy().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let fallback = user_cache_dir().join(format!("{h:016x}.json"));
    [local, fallback]
}

fn load_stamps(dir: &Path) -> BTreeMap<String, Stamp> {
    for file in stamp_files(dir) {
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Ok(map) = serde_json::from_str(&text)
        {
            return map;
        }
    }
    BTreeMap::new()
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename; the
/// file is readable by everyone (mode 0644 on Unix), like the data beside it.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Records that `dir/name`, as it is now ([`stamp_key`]), has md5 `md5`.
fn remember_verified(dir: &Path, name: &str, md5: String) {
    let Some(key) = stamp_key(&dir.join(name)) else {
        return;
    };
    let mut map = load_stamps(dir);
    map.insert(name.to_string(), Stamp { md5, ..key });
    let Ok(text) = serde_json::to_string_pretty(&map) else {
        return;
    };
    // The record is a cache: if neither place is writable, the next run hashes again.
    for file in stamp_files(dir) {
        if write_atomic(&file, text.as_bytes()).is_ok() {
            return;
        }
    }
}

/// md5 of a file, streamed, as lower-case hex.
pub fn md5_file(path: &Path) -> Result<String, DataError> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut ctx = md5::Context::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        ctx.consume(&buf[..n]);
    }
    Ok(format!("{:x}", ctx.finalize()))
}

/// The state of `entry` in `dir`, hashing the file unless a record of an earlier
/// verification with the same size and modification time exists. The published name is
/// looked at first; where it is absent, an unpacked copy (the name without `.gz`, for entries
/// whose manifest gives the decompressed md5) stands in for it.
///
/// # Errors
/// [`DataError::NotAFile`] when a folder or another non-file has the file's name;
/// [`DataError::Io`] when the file cannot be read.
pub fn file_state(dir: &Path, entry: &FileEntry) -> Result<FileState, DataError> {
    let mut candidates = vec![(entry.name.as_str(), entry.md5.as_str())];
    candidates.extend(entry.unpacked());
    for (name, md5) in candidates {
        let path = dir.join(name);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => return verify(dir, name, md5),
            Ok(_) => return Err(DataError::NotAFile { path }),
            Err(_) => {}
        }
    }
    Ok(FileState::Missing)
}

/// Checks `dir/name` against `md5` (or the record of an earlier check).
fn verify(dir: &Path, name: &str, md5: &str) -> Result<FileState, DataError> {
    let path = dir.join(name);
    let key = stamp_key(&path);
    if let (Some(key), Some(stamp)) = (key, load_stamps(dir).get(name))
        && *stamp
            == (Stamp {
                md5: md5.to_string(),
                ..key
            })
    {
        return Ok(FileState::Verified { path });
    }
    let found = md5_file(&path)?;
    if found != md5 {
        return Ok(FileState::Mismatch {
            path,
            expected: md5.to_string(),
            found,
        });
    }
    remember_verified(dir, name, found);
    Ok(FileState::Verified { path })
}

/// The file of `entry` in `dir` that readers open: the published name, or its unpacked copy
/// when only that is there.
pub fn located(dir: &Path, entry: &FileEntry) -> PathBuf {
    let published = dir.join(&entry.name);
    if published.exists() {
        return published;
    }
    match entry.unpacked() {
        Some((raw, _)) if dir.join(raw).is_file() => dir.join(raw),
        _ => published,
    }
}

/// Where a dataset's files were found, each verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The manifest's files in the dataset's folder, `<data dir>/<name>/`.
    Own(PathBuf),
    /// torchvision's folder of the dataset (`<data dir>/MNIST/raw`,
    /// `<data dir>/cifar-10-batches-py`).
    TorchvisionFolder(PathBuf),
    /// torchvision's download archive of the CIFAR python version.
    TorchvisionArchive(PathBuf),
}

impl Source {
    /// The folder or archive.
    pub fn path(&self) -> &Path {
        match self {
            Self::Own(p) | Self::TorchvisionFolder(p) | Self::TorchvisionArchive(p) => p,
        }
    }

    /// Whether the files are torchvision's rather than the manifest's own.
    pub fn is_torchvision(&self) -> bool {
        !matches!(self, Self::Own(_))
    }
}

/// Whether `entry` is in `dir` (as published, or as its unpacked copy), without hashing.
fn present(dir: &Path, entry: &FileEntry) -> bool {
    dir.join(&entry.name).is_file()
        || entry
            .unpacked()
            .is_some_and(|(raw, _)| dir.join(raw).is_file())
}

/// Verifies every one of `entries` in `dir`.
fn verify_all(dir: &Path, entries: &[FileEntry]) -> Result<(), DataError> {
    for entry in entries {
        match file_state(dir, entry)? {
            FileState::Verified { .. } => {}
            FileState::Mismatch {
                path,
                expected,
                found,
            } => {
                return Err(DataError::Checksum {
                    path,
                    expected,
                    found,
                });
            }
            FileState::Missing => {
                return Err(DataError::Missing(format!(
                    "{} disappeared while it was being verified",
                    dir.join(&entry.name).display()
                )));
            }
        }
    }
    Ok(())
}

/// Finds the files of `manifest` under `data_dir` and verifies them: the dataset's own
/// folder when it holds every file; else torchvision's folder of the dataset when it holds
/// every file it needs; else torchvision's archive (in the data directory or the dataset's
/// folder); else the own folder after downloading what is missing, when `fetch` allows
/// ([`ensure_files`]).
///
/// # Errors
/// [`DataError::Checksum`] for a file of the chosen source whose md5 differs;
/// [`DataError::Missing`] as [`ensure_files`] gives it when no source is complete.
pub fn locate(manifest: &Manifest, data_dir: &DataDir, fetch: Fetch) -> Result<Source, DataError> {
    let own = data_dir.dataset_dir(manifest);
    let own_complete = manifest.files.iter().all(|e| present(&own, e));
    if let (false, Some(tv)) = (own_complete, &manifest.torchvision) {
        let folder = data_dir.root().join(&tv.folder);
        let files = manifest.torchvision_files();
        if !files.is_empty() && files.iter().all(|e| present(&folder, e)) {
            verify_all(&folder, &files)?;
            return Ok(Source::TorchvisionFolder(folder));
        }
        if let Some(archive) = &tv.archive {
            for dir in [data_dir.root(), own.as_path()] {
                if present(dir, archive) {
                    verify_all(dir, std::slice::from_ref(archive))?;
                    return Ok(Source::TorchvisionArchive(dir.join(&archive.name)));
                }
            }
        }
    }
    ensure_files(manifest, data_dir, fetch).map(Source::Own)
}

/// Makes sure every file of `manifest` is present and verified in its folder under
/// `data_dir`, downloading missing ones when `fetch` allows; returns the dataset's folder.
///
/// # Errors
/// [`DataError::Checksum`] for a file whose md5 differs (it is left alone: it may be the
/// user's), and [`DataError::Missing`], one message naming every missing file, its URLs and
/// the folder to put it in, when files are missing and could not be downloaded.
pub fn ensure_files(
    manifest: &Manifest,
    data_dir: &DataDir,
    fetch: Fetch,
) -> Result<PathBuf, DataError> {
    let dir = data_dir.dataset_dir(manifest);
    let mut missing = Vec::new();
    for entry in &manifest.files {
        match file_state(&dir, entry)? {
            FileState::Verified { .. } => {}
            FileState::Mismatch {
                path,
                expected,
                found,
            } => {
                return Err(DataError::Checksum {
                    path,
                    expected,
                    found,
                });
            }
            FileState::Missing => missing.push(entry),
        }
    }
    if missing.is_empty() {
        return Ok(dir);
    }
    let mut failures = Vec::new();
    if let Fetch::IfMissing { progress } = fetch {
        let mut still = Vec::new();
        for entry in missing {
            match download_entry(&dir, entry, progress) {
                Ok(()) => {}
                Err(e) => {
                    failures.push(e.to_string());
                    still.push(entry);
                }
            }
        }
        missing = still;
    }
    if missing.is_empty() {
        return Ok(dir);
    }
    Err(DataError::Missing(missing_message(
        manifest, data_dir, &dir, &missing, &failures,
    )))
}

fn missing_message(
    manifest: &Manifest,
    data_dir: &DataDir,
    dir: &Path,
    missing: &[&FileEntry],
    failures: &[String],
) -> String {
    let mut msg = format!(
        "dataset `{}` is missing {} file(s) in {} (data directory from {}){}:",
        manifest.name,
        missing.len(),
        dir.display(),
        data_dir.origin(),
        if failures.is_empty() {
            " and downloading is off".to_string()
        } else {
            format!(" and the download failed ({})", failures.join("; "))
        }
    );
    for entry in missing {
        let from = if entry.urls.is_empty() {
            format!(
                "no public download; see crates/scl-data/manifests/{}.toml for how to make it",
                manifest.name
            )
        } else {
            entry.urls.join(" or ")
        };
        msg.push_str(&format!(
            "\n  {} (md5 {}) from {from}",
            entry.name, entry.md5
        ));
    }
    msg.push_str(&format!(
        "\nPut the files in {}, or use a data directory (the command's data-directory option, \
         or {DATA_DIR_ENV}) that holds `{}/`",
        dir.display(),
        manifest.name
    ));
    if let Some(tv) = &manifest.torchvision {
        let archive = tv
            .archive
            .as_ref()
            .map(|a| format!(" or `{}`", a.name))
            .unwrap_or_default();
        msg.push_str(&format!(
            " or torchvision's `{}/`{archive} (the `root` of torchvision.datasets)",
            tv.folder
        ));
    }
    msg.push('.');
    msg
}

/// Downloads one file into `dir`: to a temporary name, hashed on the way, renamed when the
/// md5 matches. Tries each URL of the entry in turn.
pub fn download_entry(dir: &Path, entry: &FileEntry, progress: bool) -> Result<(), DataError> {
    if entry.urls.is_empty() {
        return Err(DataError::Download {
            url: "(none)".into(),
            message: format!("{} has no download address", entry.name),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let mut last = None;
    for url in &entry.urls {
        match download_one(dir, entry, url, progress) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one URL was tried"))
}

#[cfg(not(feature = "download"))]
fn download_one(_: &Path, _: &FileEntry, url: &str, _: bool) -> Result<(), DataError> {
    Err(DataError::Download {
        url: url.to_string(),
        message: "this build of scl-data has no `download` feature".into(),
    })
}

#[cfg(feature = "download")]
fn download_one(dir: &Path, entry: &FileEntry, url: &str, progress: bool) -> Result<(), DataError> {
    let fail = |message: String| DataError::Download {
        url: url.to_string(),
        message,
    };
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(15))
        .timeout_read(std::time::Duration::from_secs(60))
        .build();
    let response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let total = response
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(entry.bytes);
    let mut reader = response.into_reader();
    // The temporary file is deleted when dropped unless it was persisted.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", entry.name))
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(|e| DataError::io(dir, e))?;
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message(entry.name.clone());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut ctx = md5::Context::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        ctx.consume(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| DataError::io(tmp.path(), e))?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let found = format!("{:x}", ctx.finalize());
    if found != entry.md5 {
        return Err(DataError::Checksum {
            path: PathBuf::from(url),
            expected: entry.md5.clone(),
            found,
        });
    }
    let target = dir.join(&entry.name);
    tmp.persist(&target)
        .map_err(|e| DataError::io(&target, e.error))?;
    remember_verified(dir, &entry.name, found);
    Ok(())
}
