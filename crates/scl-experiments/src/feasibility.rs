//! Whether the deep cells of an experiment (or one deep run) can run on this machine and the
//! data at hand, checked before anything is written: every network, batch and log within the
//! machine's memory (`scl_train::deep::check_memory`), every dataset present and verified, every imbalance
//! within what each class of the training split has, and every batch schedule possible on
//! the subsampled split. `sweep`, `compare-backends`, `slurm` and `train` all ask here.

use scl_data::{DataDir, DataError, Manifest};
use scl_types::config::ConfigError;
use scl_types::deep::DeepConfig;

use crate::experiment::Experiment;

/// Why the cells cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Infeasible {
    /// A dataset is missing, damaged or unreadable.
    #[error("{source}")]
    Data {
        /// The dataset's name (for the command that fetches it).
        dataset: String,
        /// The reader's error.
        #[source]
        source: DataError,
    },
    /// A cell asks more of the data than it has: one sentence naming the cell.
    #[error("{0}")]
    Config(ConfigError),
}

/// Checks the deep cells of `experiment` against the data in `data_dir`: each dataset
/// present and verified; with `check_sizes`, also each cell's imbalance and batches against
/// its training split (a sweep checks them once; its `--cell` children skip them).
///
/// # Errors
/// [`Infeasible`] for the first dataset or cell that fails.
pub fn check_experiment(
    experiment: &Experiment,
    data_dir: &DataDir,
    check_sizes: bool,
) -> Result<(), Infeasible> {
    check_memory(experiment)?;
    let mut datasets: Vec<&str> = experiment
        .deep_cells
        .iter()
        .map(|c| c.config.dataset.as_str())
        .collect();
    datasets.sort_unstable();
    datasets.dedup();
    for name in datasets {
        let available = verified(name, data_dir, check_sizes)?;
        let Some(available) = available else {
            continue;
        };
        for cell in experiment
            .deep_cells
            .iter()
            .filter(|c| c.config.dataset == name)
        {
            check_sizes_of(&cell.config, &available).map_err(|why| {
                Infeasible::Config(ConfigError::new(format!("cell {}: {why}", cell.id)))
            })?;
        }
    }
    Ok(())
}

/// Checks every deep cell of `experiment` against this machine's memory: its network with
/// gradients and optimiser state, one batch's activations and the rows it logs
/// (`scl_train::deep::check_memory`), one sentence naming the key and the cell. Needs no data.
///
/// # Errors
/// [`Infeasible::Config`] for the first cell that does not fit.
pub fn check_memory(experiment: &Experiment) -> Result<(), Infeasible> {
    for cell in &experiment.deep_cells {
        scl_train::deep::check_memory(&cell.config).map_err(|e| {
            Infeasible::Config(ConfigError::new(format!(
                "{}{}",
                e.message(),
                crate::experiment::where_of(&cell.axes)
            )))
        })?;
    }
    Ok(())
}

/// Checks one deep run's memory, dataset, imbalance and batches against the data in `data_dir`.
///
/// # Errors
/// [`Infeasible`] naming what fails.
pub fn check_run(config: &DeepConfig, data_dir: &DataDir) -> Result<(), Infeasible> {
    scl_train::deep::check_memory(config).map_err(Infeasible::Config)?;
    let available = verified(&config.dataset, data_dir, true)?.unwrap_or_default();
    check_sizes_of(config, &available).map_err(|why| Infeasible::Config(ConfigError::new(why)))
}

/// Verifies dataset `name` in `data_dir` and, when `counts` is asked for, returns the
/// examples per class of its training split.
fn verified(
    name: &str,
    data_dir: &DataDir,
    counts: bool,
) -> Result<Option<Vec<usize>>, Infeasible> {
    let data = |source| Infeasible::Data {
        dataset: name.to_string(),
        source,
    };
    let manifest = Manifest::named(name).map_err(data)?;
    scl_data::store::ensure_files(&manifest, data_dir, scl_data::Fetch::Never).map_err(data)?;
    if !counts {
        return Ok(None);
    }
    let opts = scl_data::LoadOptions::offline(data_dir.clone());
    scl_data::split_counts(&manifest, scl_data::Split::Train, &opts)
        .map(Some)
        .map_err(data)
}

/// The imbalance of `cfg` within `available` examples per class, and its batch schedule
/// possible on the subsampled split (a batch no larger than the data, binding examples every
/// class has); the sentence says which is not.
fn check_sizes_of(cfg: &DeepConfig, available: &[usize]) -> Result<(), String> {
    let counts = cfg.imbalance.target_counts(available).map_err(|e| {
        format!(
            "{e} (the training split of {} has {} to {} examples per class)",
            cfg.dataset,
            available.iter().min().copied().unwrap_or(0),
            available.iter().max().copied().unwrap_or(0)
        )
    })?;
    let labels: Vec<usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(class, &n)| std::iter::repeat_n(class, n))
        .collect();
    let batching = scl_batching::BatchingConfig::new(cfg.schedule, cfg.batch_size);
    scl_batching::Schedule::new(&labels, counts.len(), &batching, cfg.seed)
        .map(drop)
        .map_err(|e| e.to_string())
}
