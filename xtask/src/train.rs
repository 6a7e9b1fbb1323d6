//! `cargo xtask train --config FILE --out DIR [--resume]`: one deep-network run outside a
//! sweep, with a progress bar; `--resume` continues from the newest checkpoint in `DIR`.
//! Ctrl-C saves a checkpoint at the current step and exits with code 130.

use std::path::PathBuf;
use std::process::ExitCode;

use scl_train::backend::{BackendKind, BackendRuntime};
use scl_train::deep::{DeepConfig, DeepRunOptions};
use scl_train::{ConfigError, RunError};

use crate::sweep::config_error;

/// Arguments of `cargo xtask train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// A TOML file with the keys of a deep cell (dataset, model, epochs, ...).
    #[arg(long)]
    config: PathBuf,
    /// The run directory.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the newest checkpoint in `--out`.
    #[arg(long)]
    resume: bool,
    /// Backend: flex (the CPU), wgpu or cuda (the last one needs its cargo feature, and wgpu
    /// is in the default build).
    #[arg(long, default_value = "flex", value_parser = crate::choice::backend_kind())]
    backend: BackendKind,
    /// Data directory (default: $SCL_DATA_DIR, else datasets/cache).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Device index of the backend (default 0).
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Replace a key of `--config` (repeatable): `--set lr=0.1 --set epochs=5`.
    #[arg(long = "set", value_name = "KEY=VALUE", long_help = crate::choice::set_help(
        "Replace a key of `--config` (repeatable): `--set lr=0.1 --set epochs=5`."))]
    set: Vec<String>,
    /// Also write the embeddings and labels of every evaluated epoch as NumPy files,
    /// `DIR/embeddings/epoch-NNNN-{train,test}[-labels].npy`.
    #[arg(long)]
    save_embeddings: bool,
    /// When the run finishes, also write the trained weights (and batch-norm running
    /// statistics) to this SafeTensors file, each tensor under its module path.
    #[arg(long, value_name = "FILE")]
    export_safetensors: Option<PathBuf>,
}

/// Runs `cargo xtask train`.
pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let backend = args.backend;
    if let Err(e) = backend.check_device(args.device) {
        return Ok(config_error(&e));
    }
    let text = match std::fs::read_to_string(&args.config) {
        Ok(t) => t,
        Err(e) => {
            return Ok(config_error(&ConfigError::new(format!(
                "cannot read --config {}: {e}",
                args.config.display()
            ))));
        }
    };
    let mut table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let e: toml::de::Error = e;
            return Ok(config_error(&ConfigError::new(format!(
                "{}: {}",
                args.config.display(),
                e.message().trim()
            ))));
        }
    };
    let sets = match crate::sweep::parse_sets(&args.set) {
        Ok(s) => s,
        Err(e) => return Ok(config_error(&e)),
    };
    for (key, value) in sets {
        if !scl_train::deep::DEEP_KEYS.contains(&key.as_str()) {
            return Ok(config_error(&ConfigError::new(format!(
                "--set {key}={value} is not allowed: {key} is not a key of a deep run; the keys \
                 are {}",
                scl_train::deep::DEEP_KEYS.join(", ")
            ))));
        }
        table.insert(key, value);
    }
    let config: DeepConfig = match table.try_into() {
        Ok(c) => c,
        Err(e) => {
            return Ok(config_error(&ConfigError::new(format!(
                "{}: {}",
                args.config.display(),
                e.message().trim()
            ))));
        }
    };
    if let Err(e) = config.validate() {
        return Ok(config_error(&e));
    }
    let checkpoints = args.out.join("checkpoints");
    let has_checkpoint = checkpoints.join("latest").exists()
        || std::fs::read_dir(&checkpoints).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("epoch-"))
        });
    if args.resume && !has_checkpoint {
        return Ok(config_error(&ConfigError::new(format!(
            "--resume is not allowed here: {} holds no checkpoint to continue from; run without \
             --resume to start the run there",
            args.out.display()
        ))));
    }
    if has_checkpoint && !args.resume {
        return Ok(config_error(&ConfigError::new(format!(
            "{} already holds checkpoints: pass --resume to continue that run, or choose another --out",
            args.out.display()
        ))));
    }
    // The data and the imbalance and batches it allows, before anything is written.
    let data_dir = scl_data::DataDir::resolve(args.data_dir.as_deref());
    if let Err(e) = scl_experiments::feasibility::check_run(&config, &data_dir) {
        return Ok(crate::sweep::infeasible(&e));
    }
    // Outside a sweep, the run is named by its folder.
    let label = scl_train::records::RunLabel {
        cell_id: args
            .out
            .file_name()
            .map_or_else(|| "run".to_string(), |n| n.to_string_lossy().into_owned()),
        experiment: "train".to_string(),
        axes: Vec::new(),
    };
    let opts = DeepRunOptions {
        run_dir: args.out.clone(),
        label,
        data_dir,
        resume: args.resume,
        backend,
        stop_after_epochs: None,
        save_embeddings: args.save_embeddings,
        export_safetensors: args.export_safetensors.clone(),
    };
    let bar = indicatif::ProgressBar::new(config.epochs as u64);
    if !scl_experiments::runner::stderr_is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "train [{bar:30}] epoch {pos}/{len} {elapsed} ETA {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    crate::stop_cleanly_on_signals();
    let outcome =
        match backend.train_deep(args.device, &config, &opts, |e| bar.set_position(e as u64)) {
            Ok(o) => o,
            Err(RunError::Config(e)) => return Ok(config_error(&e)),
            Err(RunError::Data(e)) => {
                bar.abandon();
                return Ok(crate::sweep::data_error(&e, Some(&config.dataset)));
            }
            Err(e @ RunError::Interrupted { .. }) => {
                bar.abandon();
                eprintln!(
                    "{e}\ncontinue with: cargo xtask train --config {} --out {} --resume",
                    args.config.display(),
                    args.out.display()
                );
                return Ok(ExitCode::from(scl_train::interrupt::EXIT_CODE));
            }
            Err(e) => {
                bar.abandon();
                eprintln!("error: {e}");
                return Ok(ExitCode::FAILURE);
            }
        };
    bar.finish_and_clear();
    match outcome.metrics.last() {
        Some(m) => say!(
            "{}: epoch {}, OF distance {:.4}, NC1 {:.3e}, NCC accuracy {:.4}, balanced {:.4}; run directory {}",
            outcome.dataset_title,
            m.epoch,
            m.geometry.overall.of_distance,
            m.geometry.overall.nc1,
            m.ncc_accuracy,
            m.balanced_accuracy,
            args.out.display()
        ),
        None => say!("nothing left to train in {}", args.out.display()),
    }
    Ok(ExitCode::SUCCESS)
}
