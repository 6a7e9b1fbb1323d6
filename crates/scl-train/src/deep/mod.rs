//! Deep-network training: SCL (SupCon on two views) or cross-entropy, any batch schedule of
//! `scl-batching` (batch-binding included), SGD with momentum and weight decay and a step
//! learning-rate schedule (or Adam), geometry and nearest-class-mean accuracy at configured
//! epochs, checkpoints and exact resumption.
//!
//! A run directory holds `config.json` (with the git revision and backend), `metrics.csv`
//! (one row per evaluated epoch, and with `log_every` one per logged step),
//! `summary.json` (written last: its presence means finished), `checkpoints/epoch-NNNN/`
//! (model, optimiser, state) with `checkpoints/latest` naming the newest and, with
//! [`DeepRunOptions::save_embeddings`], `embeddings/` (NumPy files). Every file is written to a
//! temporary name and renamed.
//!
//! On Ctrl-C or SIGTERM ([`crate::interrupt`]) the run finishes its current step, saves
//! `checkpoints/epoch-NNNN-batch-BBBBB/` (the position inside the epoch and the epoch's loss so
//! far included) and returns [`RunError::Interrupted`]; resuming continues from that batch.
//!
//! Determinism: the model is initialised after seeding the backend with `seed`; batches are a
//! function of (labels, schedule, seed, epoch) and augmentations of (seed, epoch, example,
//! view), so a run resumed from a checkpoint gives the same metrics as one that never stopped
//! (tested on the CPU backend).
//!
//! The module's rooms: `model` (the network of a configuration and its memory check),
//! `options` (where and how a run runs), `train` (the loop), `eval` (evaluation and saved embeddings),
//! `checkpoint` (saving, verifying and loading checkpoints).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use scl_batching::{BatchingConfig, Loader, Position, Schedule};
use scl_data::{
    DataDir, ImageItem, ImageSet, LoadOptions, Manifest, SclBatcher, Split, ViewPreset,
};
use scl_geometry::probe::{ProbeConfig, ProbeReport, linear_probe};
use scl_geometry::{Embeddings, geometry_summary};
use scl_loss::{SupConLoss, SupConLossConfig};

use scl_models::{
    Architecture, DenseNetConfig, MlpConfig, ResNet18Config, SclModel, SclModelConfig,
    SmallCnnConfig,
};
use serde::{Deserialize, Serialize};

use crate::RunError;
use crate::config::{ConfigError, OptimizerKind};
use crate::records::{self, ConfigRecord, RunLabel, Summary};

mod checkpoint;
mod eval;
mod model;
mod options;
mod train;

pub use model::{LOGGED_ROW_BYTES, check, check_memory, model_config};
pub use options::*;
/// The configuration of a deep run and what it produces (scl-types' plain types).
pub use scl_types::deep::*;
pub use train::{export_safetensors, scl_batch_loss, train_deep};

#[derive(Serialize, Deserialize)]
struct State {
    epochs_done: usize,
    step: usize,
    /// Batches of epoch `epochs_done` already trained on: 0 except in a checkpoint saved on
    /// interrupt, in the middle of an epoch.
    #[serde(default)]
    batch_in_epoch: usize,
    /// The sum of those batches' losses (the epoch's mean training loss goes on from it).
    #[serde(default)]
    loss_sum: f64,
    metrics: Vec<EpochMetrics>,
    /// The logged step losses (`log_every`).
    #[serde(default)]
    step_losses: Vec<StepLoss>,
    /// The sum and count of the losses since the last logged step.
    #[serde(default)]
    window: (f64, usize),
    config: DeepConfig,
    /// The format of the checkpoint's model and optimiser files ([`MODEL_FORMAT`]); 1 in
    /// checkpoints that do not say.
    #[serde(default = "first_model_format")]
    model_format: u32,
}

/// The format of the checkpoints this version writes: 3 since the model and the optimiser are
/// written by Burn 0.22's store (`model.bpk`, `optimizer.bpk`, burnpack files); 2 and 1 were
/// Burn 0.21's records (`model.bin`, `optimizer.bin`; in format 1 the small CNN's convolutions
/// were one `[9 C, O]` matrix). Checkpoints of formats 1 and 2 cannot be resumed.
const MODEL_FORMAT: u32 = 3;

fn first_model_format() -> u32 {
    1
}

struct Run<'a> {
    cfg: &'a DeepConfig,
    opts: &'a DeepRunOptions,
    train: &'a ImageSet,
    test: &'a ImageSet,
    minority: &'a [usize],
    schedule: Schedule,
    train_batcher: SclBatcher,
    eval_batcher: SclBatcher,
    loss: SupConLoss,
    device: &'a Device,
}

/// A closure for `map_err` that turns any error about `path` (file system, Burn's recorder,
/// JSON) into [`RunError::Io`].
fn io<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> RunError + '_ {
    move |e| {
        RunError::Io(scl_fs::FsError::new(
            path,
            std::io::Error::other(e.to_string()),
        ))
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunError> {
    Ok(scl_types::records::write_json(path, value)?)
}

fn class_minority(counts: &[usize]) -> Vec<usize> {
    let max = counts.iter().copied().max().unwrap_or(0);
    (0..counts.len()).filter(|&c| counts[c] < max).collect()
}

/// Embeddings (normalised, as the loss sees them) of a whole set in eval mode, one view
/// without augmentation.
fn embed_set(
    model: &SclModel,
    set: &ImageSet,
    batcher: &SclBatcher,
    device: &Device,
) -> Result<Embeddings, RunError> {
    let mut rows = Vec::with_capacity(set.len() * model.embedding_dim());
    let indices: Vec<usize> = (0..set.len()).collect();
    for chunk in indices.chunks(256) {
        let items = items_of(set, chunk);
        let batch = batcher.assemble(&items, 0).to_device(device);
        let z = model.embed(batch.images);
        rows.extend(
            z.try_into_vec_as::<f64>()
                .map_err(|e| RunError::Other(format!("reading embeddings: {e:?}")))?,
        );
    }
    Embeddings::new(set.len(), model.embedding_dim(), rows).map_err(|e| RunError::Geometry {
        what: "embeddings".to_string(),
        source: e,
    })
}

fn items_of(set: &ImageSet, indices: &[usize]) -> Vec<ImageItem> {
    indices
        .iter()
        .map(|&i| ImageItem {
            index: i,
            label: set.labels()[i],
            pixels: set.image(i).to_vec(),
        })
        .collect()
}
