//! `cargo xtask data check|fetch|imbalance`: what datasets are present and verified, with
//! per-class counts; downloading missing files; the counts an imbalance construction keeps.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use scl_data::store::{FileState, file_state};
use scl_data::{DataDir, Fetch, Format, LoadOptions, Manifest, Split, count_table, split_counts};

/// Arguments of `cargo xtask data`.
#[derive(clap::Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(clap::Subcommand, Debug)]
enum DataCommand {
    /// List every dataset: files present and verified (md5), per-class counts of each split.
    Check {
        /// Data directory (default: $SCL_DATA_DIR, else datasets/cache).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the per-class counts of a training split after an imbalance construction.
    Imbalance {
        /// A dataset name.
        #[arg(value_parser = crate::choice::Choice::dataset())]
        name: String,
        /// How the classes are unbalanced.
        #[arg(long, default_value = "step", value_parser = crate::choice::imbalance_kind())]
        kind: scl_data::ImbalanceKind,
        /// The imbalance ratio R (at least 1).
        #[arg(long, default_value_t = 10.0)]
        ratio: f64,
        /// Examples per majority class (step) or of class 0 (long-tail); default
        /// min(5000, smallest class) as in the paper.
        #[arg(long)]
        n_max: Option<usize>,
        /// Subsampling seed (the paper's code uses 1).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Data directory (default: $SCL_DATA_DIR, else datasets/cache).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Download the missing files of a dataset (or `all`), verified by md5.
    Fetch {
        /// A dataset name, or `all`.
        #[arg(value_parser = crate::choice::Choice::dataset_or_all())]
        name: String,
        /// Data directory (default: $SCL_DATA_DIR, else datasets/cache).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Runs `cargo xtask data ...`.
pub fn run(args: DataArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DataCommand::Check { data_dir } => check(DataDir::resolve(data_dir.as_deref())),
        DataCommand::Fetch { name, data_dir } => {
            fetch(&name, DataDir::resolve(data_dir.as_deref()))
        }
        DataCommand::Imbalance {
            name,
            kind,
            ratio,
            n_max,
            seed,
            data_dir,
        } => imbalance(
            &name,
            kind,
            ratio,
            n_max,
            seed,
            DataDir::resolve(data_dir.as_deref()),
        ),
    }
}

fn imbalance(
    name: &str,
    kind: scl_data::ImbalanceKind,
    ratio: f64,
    n_max: Option<usize>,
    seed: u64,
    dir: DataDir,
) -> anyhow::Result<ExitCode> {
    let usage = |msg: String| {
        eprintln!("error: {msg}");
        Ok(ExitCode::from(2))
    };
    let manifest = match Manifest::named(name) {
        Ok(m) => m,
        Err(e) => return usage(format!("{e}.")),
    };
    let Some(imbalance) = kind.with_ratio(ratio, n_max) else {
        return usage(format!(
            "--kind {kind} is not allowed here: it needs its counts, which an experiment file gives"
        ));
    };
    let train = match scl_data::load(&manifest, Split::Train, &LoadOptions::offline(dir)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let selection = match imbalance.select(train.labels(), train.num_classes(), seed) {
        Ok(s) => s,
        Err(e) => return usage(format!("{e}.")),
    };
    say!(
        "{} train, {}, seed {seed}:\n{}",
        manifest.title,
        imbalance.label(),
        count_table(train.class_names(), &selection.available, &selection.counts)
    );
    Ok(ExitCode::SUCCESS)
}

fn fetch(name: &str, dir: DataDir) -> anyhow::Result<ExitCode> {
    let manifests = if name == "all" {
        Manifest::builtin()
    } else {
        match Manifest::named(name) {
            Ok(m) => vec![m],
            Err(e) => {
                eprintln!("error: {e}, or `all`.");
                return Ok(ExitCode::from(2));
            }
        }
    };
    let mut failed = false;
    for m in manifests {
        match scl_data::store::ensure_files(&m, &dir, Fetch::IfMissing { progress: true }) {
            Ok(path) => say!("{}: ready in {}", m.name, path.display()),
            Err(e) => {
                eprintln!("{}: {e}", m.name);
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn check(dir: DataDir) -> anyhow::Result<ExitCode> {
    say!(
        "data directory: {} (from {})",
        dir.root().display(),
        dir.origin()
    );
    let opts = LoadOptions::offline(dir.clone());
    let mut bad = false;
    for m in Manifest::builtin() {
        let mut out = String::new();
        let folder = dir.dataset_dir(&m);
        let _ = writeln!(
            out,
            "\n== {} ({}){}",
            m.name,
            m.title,
            if m.lossy { " [LOSSY]" } else { "" }
        );
        let mut all_verified = true;
        if m.format == Format::EmbeddedDigits {
            let _ = writeln!(
                out,
                "   embedded in the smartcore crate: nothing to download"
            );
        }
        // Data in torchvision's layout (a PyTorch user's `root`) is read where the dataset's
        // own folder is incomplete.
        let own_file = |path: &std::path::Path| {
            m.files.iter().any(|f| {
                path.file_name().is_some_and(|n| {
                    n == f.name.as_str() || f.unpacked().is_some_and(|(raw, _)| n == raw)
                })
            })
        };
        let torchvision = match scl_data::store::locate(&m, &dir, scl_data::Fetch::Never) {
            Ok(source) if source.is_torchvision() => Some(Ok(source)),
            // A torchvision file that is not the published one (the own files' problems are
            // listed below, file by file).
            Err(e @ scl_data::DataError::Checksum { .. }) if matches!(&e, scl_data::DataError::Checksum { path, .. } if !own_file(path)) => {
                Some(Err(e))
            }
            _ => None,
        };
        let own_files = match &torchvision {
            Some(Ok(source)) => {
                let what = match source {
                    scl_data::Source::TorchvisionArchive(_) => "torchvision's archive",
                    _ => "torchvision's folder",
                };
                let _ = writeln!(
                    out,
                    "   found in {what} {} (md5 ok)",
                    source.path().display()
                );
                &[][..]
            }
            Some(Err(e)) => {
                all_verified = false;
                bad = true;
                let _ = writeln!(out, "   torchvision layout: {e}");
                &[][..]
            }
            None => &m.files[..],
        };
        for f in own_files {
            let state = match file_state(&folder, f) {
                Ok(FileState::Verified { path }) if path.ends_with(&f.name) => {
                    "verified (md5 ok)".to_string()
                }
                Ok(FileState::Verified { path }) => format!(
                    "verified as the unpacked copy {} (md5 ok)",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ),
                Ok(FileState::Missing) => {
                    all_verified = false;
                    format!(
                        "missing ({})",
                        if f.urls.is_empty() {
                            "no public download"
                        } else {
                            &f.urls[0]
                        }
                    )
                }
                Ok(FileState::Mismatch {
                    path,
                    expected,
                    found,
                }) => {
                    all_verified = false;
                    bad = true;
                    format!(
                        "MD5 MISMATCH: {} has {found}, expected {expected}",
                        path.display()
                    )
                }
                Err(e) => {
                    all_verified = false;
                    bad = true;
                    format!("unreadable: {e}")
                }
            };
            let _ = writeln!(out, "   {:<32} {state}", f.name);
        }
        if all_verified {
            let counts: Vec<_> = [Split::Train, Split::Test]
                .iter()
                .map(|s| split_counts(&m, *s, &opts))
                .collect();
            match (&counts[0], &counts[1]) {
                (Ok(train), Ok(test)) => {
                    let _ = writeln!(
                        out,
                        "   {:>5}  {:<24} {:>6} {:>6}",
                        "label", "class", "train", "test"
                    );
                    for (c, name) in m.class_names.iter().enumerate() {
                        let _ =
                            writeln!(out, "   {c:>5}  {name:<24} {:>6} {:>6}", train[c], test[c]);
                    }
                    let _ = writeln!(
                        out,
                        "   {:>5}  {:<24} {:>6} {:>6}",
                        "",
                        "total",
                        train.iter().sum::<usize>(),
                        test.iter().sum::<usize>()
                    );
                }
                (Err(e), _) | (_, Err(e)) => {
                    bad = true;
                    let _ = writeln!(out, "   cannot read: {e}");
                }
            }
        } else {
            let _ = writeln!(
                out,
                "   not usable yet: `cargo xtask data fetch {}`",
                m.name
            );
        }
        print!("{out}");
    }
    Ok(if bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
