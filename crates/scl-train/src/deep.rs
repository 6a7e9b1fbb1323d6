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

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use scl_batching::{BatchingConfig, Loader, Position, Schedule, ScheduleKind};
use scl_data::{
    DataDir, ImageItem, ImageSet, Imbalance, LoadOptions, Manifest, SclBatcher, Split, ViewPreset,
};
use scl_geometry::probe::{ProbeConfig, ProbeReport, linear_probe};
use scl_geometry::{Embeddings, GeometrySummary, geometry_summary};
use scl_loss::{SupConLoss, SupConLossConfig};

use scl_models::{
    Architecture, DenseNetConfig, FinalActivation, MlpConfig, ResNet18Config, SclModel,
    SclModelConfig, SmallCnnConfig,
};
use serde::{Deserialize, Serialize};

use crate::RunError;
use crate::config::{ConfigError, OptimizerKind};

/// What the network is trained with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Supervised contrastive loss on the views of each batch.
    Scl,
    /// Cross-entropy of the classifier head on every view.
    Ce,
}

/// Which backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// [`scl_models::Mlp`] with `mlp_widths`.
    Mlp,
    /// [`scl_models::SmallCnn`] with `embedding` outputs.
    SmallCnn,
    /// [`scl_models::ResNet18`] (CIFAR stem), `resnet_width` channels in the first stage.
    Resnet18,
    /// [`scl_models::DenseNet`]-BC, growth 12, blocks (6, 6, 6).
    Densenet,
}

/// One deep-network run. Defaults are the paper's where it has one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepConfig {
    /// Dataset name (a manifest of `scl-data`, `crates/scl-data/manifests/`).
    pub dataset: String,
    /// Imbalance of the training split; `none` keeps it as published.
    #[serde(default = "default_imbalance")]
    pub imbalance: Imbalance,
    /// Seed of the imbalance subsampling (1: the authors' `np.random.seed(1)`).
    #[serde(default = "default_data_seed")]
    pub data_seed: u64,
    /// The backbone.
    pub model: ModelKind,
    /// MLP layer widths (the last is the embedding dimension).
    #[serde(default = "default_mlp_widths")]
    pub mlp_widths: Vec<usize>,
    /// Small CNN embedding dimension.
    #[serde(default = "default_embedding")]
    pub embedding: usize,
    /// ResNet-18 first-stage width (64: the paper's 512-d embedding).
    #[serde(default = "default_resnet_width")]
    pub resnet_width: usize,
    /// The paper's switch.
    #[serde(default)]
    pub final_activation: FinalActivation,
    /// Optional projection head output size (none in the authors' code).
    #[serde(default)]
    pub projection: Option<usize>,
    /// SCL or CE.
    #[serde(default = "default_loss")]
    pub loss: LossKind,
    /// SupCon temperature (0.1: the paper's experiments).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// SupCon base temperature (0.07: SupContrast's default, which the authors kept).
    #[serde(default = "default_base_temperature")]
    pub base_temperature: f64,
    /// The views of a batch (vertical-flip: the paper's plotted runs).
    #[serde(default = "default_views")]
    pub views: ViewPreset,
    /// The batch schedule.
    #[serde(default = "default_schedule")]
    pub schedule: ScheduleKind,
    /// Batch size before the binding examples (50: the authors' default).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Training epochs (350 in the paper).
    pub epochs: usize,
    /// SGD (the paper) or Adam.
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerKind,
    /// Learning rate (0.1: the paper).
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// SGD momentum (0.9: the paper).
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Weight decay (5e-4: the paper).
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Epochs at which the learning rate is multiplied by `lr_gamma` (paper: 116, 232).
    #[serde(default)]
    pub lr_milestones: Vec<usize>,
    /// Learning-rate factor at each milestone (0.1: the paper).
    #[serde(default = "default_lr_gamma")]
    pub lr_gamma: f64,
    /// Evaluate (geometry, accuracy) and checkpoint every this many epochs, and at the end.
    #[serde(default = "default_eval_every")]
    pub eval_every: usize,
    /// Also write the mean training loss of every `log_every` steps to `metrics.csv` (rows
    /// with the geometry columns empty). Absent: the loss only at evaluated epochs. Not
    /// written when absent, so cell ids of configurations without it do not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_every: Option<usize>,
    /// Seed of initialisation, batches and augmentations.
    #[serde(default)]
    pub seed: u64,
    /// Also train a linear probe ([`scl_geometry::probe`], defaults) on the training
    /// embeddings at every evaluated epoch and report its test accuracy. Not written when
    /// false, so cell ids of configurations from before this key existed do not change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub linear_probe: bool,
    /// Test hook: make the loss of this step non-finite (checks the run stops cleanly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject_nan_at_step: Option<usize>,
    /// Test hook: once this many steps are done, ask for a stop as Ctrl-C would
    /// ([`crate::interrupt::request`], which stops every run of the process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupt_at_step: Option<usize>,
}

/// Every key of [`DeepConfig`], for experiment files.
pub const DEEP_KEYS: &[&str] = &[
    "dataset",
    "imbalance",
    "data_seed",
    "model",
    "mlp_widths",
    "embedding",
    "resnet_width",
    "final_activation",
    "projection",
    "loss",
    "temperature",
    "base_temperature",
    "views",
    "schedule",
    "batch_size",
    "epochs",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "lr_milestones",
    "lr_gamma",
    "eval_every",
    "log_every",
    "seed",
    "linear_probe",
    "inject_nan_at_step",
    "interrupt_at_step",
];

/// The keys of [`DeepConfig`] without a default.
pub const DEEP_REQUIRED_KEYS: &[&str] = &["dataset", "model", "epochs"];

fn default_imbalance() -> Imbalance {
    Imbalance::None
}
fn default_data_seed() -> u64 {
    1
}
fn default_mlp_widths() -> Vec<usize> {
    vec![256, 128]
}
fn default_embedding() -> usize {
    128
}
fn default_resnet_width() -> usize {
    64
}
fn default_loss() -> LossKind {
    LossKind::Scl
}
fn default_temperature() -> f64 {
    0.1
}
fn default_base_temperature() -> f64 {
    0.07
}
fn default_views() -> ViewPreset {
    ViewPreset::VerticalFlip
}
fn default_schedule() -> ScheduleKind {
    ScheduleKind::Shuffle
}
fn default_batch_size() -> usize {
    50
}
fn default_optimizer() -> OptimizerKind {
    OptimizerKind::Sgd
}
fn default_lr() -> f64 {
    0.1
}
fn default_momentum() -> f64 {
    0.9
}
fn default_weight_decay() -> f64 {
    5e-4
}
fn default_lr_gamma() -> f64 {
    0.1
}
fn default_eval_every() -> usize {
    1
}

/// Bytes a logged row takes in memory, at most: an epoch's metrics with its geometry
/// (the larger of the two kinds of row the run keeps).
const LOGGED_ROW_BYTES: f64 = std::mem::size_of::<EpochMetrics>() as f64;

/// A number as a message shows it: in exponent form when very large or very small (`1e300`
/// rather than 301 digits).
fn shown(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-4..1e6).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

impl DeepConfig {
    /// Checks every value; the error names the key and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let manifest = Manifest::named(&self.dataset)
            .map_err(|e| ConfigError::new(format!("dataset: {e}")))?;
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ConfigError::new(format!(
                    "{name} = {} is not allowed: it must be a positive number",
                    shown(v)
                )))
            }
        };
        positive("temperature", self.temperature)?;
        positive("base_temperature", self.base_temperature)?;
        positive("lr", self.lr)?;
        if self.lr > crate::MAX_LR {
            return Err(ConfigError::new(format!(
                "lr = {} is not allowed: it must be a number above 0 and at most {}",
                self.lr,
                crate::MAX_LR
            )));
        }
        if self.log_every == Some(0) {
            return Err(ConfigError::new(
                "log_every = 0 is not allowed: it must be at least 1 (or absent: the loss at evaluated epochs only)",
            ));
        }
        if self.projection == Some(0) {
            return Err(ConfigError::new(
                "projection = 0 is not allowed: it must be at least 1 (or absent: no projection head)",
            ));
        }
        positive("lr_gamma", self.lr_gamma)?;
        // The largest rate the schedule reaches within the run's epochs: above 1, gamma raises
        // the rate at every milestone passed.
        let reached = self
            .lr_milestones
            .iter()
            .filter(|&&m| m < self.epochs)
            .count();
        let peak = if self.lr_gamma > 1.0 {
            self.lr
                * self
                    .lr_gamma
                    .powi(i32::try_from(reached).unwrap_or(i32::MAX))
        } else {
            self.lr
        };
        if !(peak.is_finite() && peak <= crate::MAX_LR) {
            return Err(ConfigError::new(format!(
                "lr_gamma = {} is not allowed: with lr = {} and {reached} milestones within the \
                 {} epochs the learning rate would reach {}, above the largest allowed, {}",
                shown(self.lr_gamma),
                shown(self.lr),
                self.epochs,
                shown(peak),
                crate::MAX_LR
            )));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(ConfigError::new(format!(
                "momentum = {} is not allowed: it must be in [0, 1)",
                self.momentum
            )));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(ConfigError::new(format!(
                "weight_decay = {} is not allowed: it must be >= 0",
                self.weight_decay
            )));
        }
        for (name, v) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("eval_every", self.eval_every),
            ("embedding", self.embedding),
            ("resnet_width", self.resnet_width),
        ] {
            if v == 0 {
                return Err(ConfigError::new(format!(
                    "{name} = 0 is not allowed: it must be at least 1"
                )));
            }
        }
        if self.mlp_widths.is_empty() || self.mlp_widths.contains(&0) {
            return Err(ConfigError::new(
                "mlp_widths must list at least one positive width",
            ));
        }
        if self.loss == LossKind::Scl && self.views == ViewPreset::Single && self.batch_size < 2 {
            return Err(ConfigError::new(
                "batch_size must be at least 2 for SCL with a single view",
            ));
        }
        self.check_model_memory(
            manifest.image_shape,
            manifest.num_classes,
            manifest.split_size(scl_data::Split::Train),
        )
    }

    /// The model's parameters, their gradients and the optimiser's state (16 bytes per
    /// parameter in f32), one batch's activations (`batch_size x views` examples,
    /// [`SclModelConfig::activation_count`] values each, 8 bytes with their gradients) and the
    /// logged rows the run keeps (one per logged step and per evaluated epoch) against this
    /// machine's memory, before anything is allocated: one sentence naming the keys.
    fn check_model_memory(
        &self,
        shape: [usize; 3],
        num_classes: usize,
        train_examples: usize,
    ) -> Result<(), ConfigError> {
        let Some(available) = crate::machine_memory_bytes() else {
            return Ok(());
        };
        let available_f = available as f64;
        let model = self.model_config(shape, num_classes);
        let parameters = model.parameter_count();
        let views = if self.views == ViewPreset::Single {
            1
        } else {
            2
        };
        let activations =
            8.0 * self.batch_size as f64 * f64::from(views) * model.activation_count(shape);
        if 16.0 * parameters <= available_f && 16.0 * parameters + activations > available_f {
            return Err(ConfigError::new(format!(
                "batch_size = {} is not allowed: with {} views of each example a batch would \
                 keep about {} GiB of activations, more than this machine's {} GiB of memory \
                 beside the model; lower batch_size",
                self.batch_size,
                views,
                crate::gib_text(activations),
                crate::gib_text(available_f)
            )));
        }
        let steps = self.epochs as f64 * (train_examples as f64 / self.batch_size as f64).ceil();
        let rows = self.log_every.map_or(0.0, |n| steps / n as f64)
            + self.epochs as f64 / self.eval_every as f64;
        let kept = rows * LOGGED_ROW_BYTES;
        if kept > available_f / 2.0 {
            return Err(ConfigError::new(format!(
                "epochs = {} is not allowed with log_every = {} and eval_every = {}: the run \
                 would keep about {rows:.1e} logged rows, {} GiB, more than half this \
                 machine's {} GiB of memory; lower epochs or log less often",
                self.epochs,
                self.log_every
                    .map_or_else(|| "(absent)".to_string(), |n| n.to_string()),
                self.eval_every,
                crate::gib_text(kept),
                crate::gib_text(available_f)
            )));
        }
        let needed = 16.0 * parameters;
        if needed <= available_f {
            return Ok(());
        }
        let keys = match self.model {
            ModelKind::Mlp => format!("mlp_widths = {:?}", self.mlp_widths),
            ModelKind::SmallCnn => format!("embedding = {}", self.embedding),
            ModelKind::Resnet18 => format!("resnet_width = {}", self.resnet_width),
            ModelKind::Densenet => "the DenseNet-BC configuration".to_string(),
        };
        let keys = match self.projection {
            Some(p) => format!("{keys} with projection = {p}"),
            None => keys,
        };
        Err(ConfigError::new(format!(
            "{keys} is not allowed: the model would have about {parameters:.1e} parameters, \
             {} GiB with their gradients and the optimiser's state, more than this machine's \
             {} GiB of memory; lower it",
            crate::gib_text(needed),
            crate::gib_text(available as f64)
        )))
    }

    /// The model configuration for images of `shape` (after the views' transforms).
    pub fn model_config(&self, shape: [usize; 3], num_classes: usize) -> SclModelConfig {
        let architecture = match self.model {
            ModelKind::Mlp => Architecture::Mlp(MlpConfig::new(
                shape.iter().product(),
                self.mlp_widths.clone(),
            )),
            ModelKind::SmallCnn => {
                Architecture::SmallCnn(SmallCnnConfig::new(shape[0]).with_embedding(self.embedding))
            }
            ModelKind::Resnet18 => Architecture::Resnet18(
                ResNet18Config::new()
                    .with_in_channels(shape[0])
                    .with_width(self.resnet_width),
            ),
            ModelKind::Densenet => {
                Architecture::Densenet(DenseNetConfig::new().with_in_channels(shape[0]))
            }
        };
        SclModelConfig::new(architecture, num_classes)
            .with_final_activation(self.final_activation)
            .with_projection(self.projection)
    }

    /// The learning rate of an epoch: `lr * lr_gamma^(milestones passed)`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let passed = self.lr_milestones.iter().filter(|&&m| epoch >= m).count();
        self.lr * self.lr_gamma.powi(passed as i32)
    }
}

/// Metrics of one evaluated epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epochs completed (1-based).
    pub epoch: usize,
    /// Optimiser steps taken so far.
    pub step: usize,
    /// Learning rate of the epoch.
    pub lr: f64,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Geometry of the training embeddings (eval mode), overall / majority / minority.
    pub geometry: GeometrySummary,
    /// Nearest-class-mean accuracy on the test split, with the TRAINING class means.
    pub ncc_accuracy: f64,
    /// Mean of the per-class NCC accuracies.
    pub balanced_accuracy: f64,
    /// NCC accuracy of each class.
    pub per_class_accuracy: Vec<f64>,
    /// Gram matrix `M^T M` of the training class means (`K` rows of `K`; L2-normalised
    /// embeddings, eval mode).
    #[serde(default)]
    pub gram: Vec<Vec<f64>>,
    /// The linear probe's test accuracies, when `linear_probe` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeReport>,
}

/// The mean training loss of the steps since the previous logged step, logged every
/// `log_every` steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLoss {
    /// The epoch the step belongs to (1-based, as in [`EpochMetrics::epoch`]).
    pub epoch: usize,
    /// Optimiser steps taken so far.
    pub step: usize,
    /// Learning rate of the epoch.
    pub lr: f64,
    /// Mean loss of the steps since the previous logged step.
    pub loss: f64,
}

/// What a finished run returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeepOutcome {
    /// The dataset's title (says "lossy-JPEG" where it applies).
    pub dataset_title: String,
    /// Training examples per class after the imbalance.
    pub class_counts: Vec<usize>,
    /// Classes with fewer examples than the largest class.
    pub minority: Vec<usize>,
    /// One entry per evaluated epoch.
    pub metrics: Vec<EpochMetrics>,
}

/// What `config.json` of a deep run holds, written before training starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeepRunRecord {
    /// The backend the run uses.
    pub backend: String,
    /// Training examples per class after the imbalance.
    pub class_counts: Vec<usize>,
    /// The resolved configuration.
    pub config: DeepConfig,
    /// The dataset's title (says "lossy-JPEG" where it applies).
    pub dataset_title: String,
    /// `git rev-parse HEAD` of the working tree, with `-dirty` when it had changes.
    pub git_revision: String,
    /// Always `deep`.
    pub kind: String,
}

/// Where and how to run.
#[derive(Clone, Debug)]
pub struct DeepRunOptions {
    /// The run directory (created if missing).
    pub run_dir: PathBuf,
    /// Where the dataset files are.
    pub data_dir: DataDir,
    /// Continue from the newest checkpoint in `run_dir` if there is one.
    pub resume: bool,
    /// Backend name for `config.json`.
    pub backend: String,
    /// Stop after this many epochs of this invocation (tests of resumption); `None`: run on.
    pub stop_after_epochs: Option<usize>,
    /// At every evaluated epoch, also write the embeddings the geometry is measured on, and
    /// the labels, as NumPy files: `embeddings/epoch-NNNN-{train,test}.npy` (`[n, d]`, `f32`,
    /// L2-normalised, eval mode, one view without augmentation) and
    /// `embeddings/epoch-NNNN-{train,test}-labels.npy` (`[n]`, `i64`).
    pub save_embeddings: bool,
    /// When the run finishes, also write the trained model's weights (and batch-norm running
    /// statistics) to this SafeTensors file, named by their module paths (Burn's store), for
    /// other frameworks (`safetensors.torch.load_file`). Written atomically.
    pub export_safetensors: Option<PathBuf>,
}

/// The folder of a run directory that `save_embeddings` writes to.
pub const EMBEDDINGS_DIR: &str = "embeddings";

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

/// The SCL loss of one batch: `images` are `[N * V, C, H, W]` with the `V` views of each of
/// the `N` samples next to each other (sample-major, as `scl_data::SclBatcher` assembles
/// them), `labels` are `[N]`; the model's embeddings, `[N * V, d]`, go to `loss` as
/// `[N, V, d]`.
///
/// # Panics
/// When the image count is not `N * V`.
pub fn scl_batch_loss(
    model: &SclModel,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    views: usize,
    loss: &SupConLoss,
) -> Tensor<1> {
    let n = labels.dims()[0];
    let z = model.embed(images);
    let d = z.dims()[1];
    loss.forward(z.reshape([n, views, d]), Some(labels))
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
    let text = serde_json::to_string_pretty(value).expect("run records serialise to JSON");
    Ok(scl_fs::write(path, text)?)
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

/// Trains one deep-network run into `opts.run_dir`.
///
/// # Errors
/// [`RunError::Config`] for a wrong configuration or a dataset that cannot be read;
/// [`RunError::NonFinite`] when the loss stops being finite (the last checkpoint stays
/// loadable); [`RunError::Interrupted`] after a stop was asked for ([`crate::interrupt`]) and
/// a checkpoint saved; [`RunError::Io`] when a file cannot be written.
pub fn train_deep(
    cfg: &DeepConfig,
    opts: &DeepRunOptions,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<DeepOutcome, RunError> {
    cfg.validate()?;
    let manifest = Manifest::named(&cfg.dataset).map_err(|e| ConfigError::new(e.to_string()))?;
    let load_opts = LoadOptions::offline(opts.data_dir.clone());
    // Reading the data fails only on the data; an imbalance the data cannot give is a
    // configuration error.
    let data_err = |e: scl_data::DataError| RunError::Config(ConfigError::new(e.to_string()));
    let full_train = scl_data::load(&manifest, Split::Train, &load_opts)?;
    let test = scl_data::load(&manifest, Split::Test, &load_opts)?;
    let k = full_train.num_classes();
    let selection = cfg
        .imbalance
        .select(full_train.labels(), k, cfg.data_seed)
        .map_err(data_err)?;
    let train = full_train.subset(&selection.indices);
    let minority = class_minority(&selection.counts);

    let shape = train.shape();
    let batcher_for = |views: ViewPreset| {
        SclBatcher::new(
            views.views(&manifest),
            shape,
            train.max_value(),
            manifest.mean.clone(),
            manifest.std.clone(),
            cfg.seed,
        )
        .map_err(data_err)
    };
    let train_batcher = batcher_for(cfg.views)?;
    let eval_batcher = batcher_for(ViewPreset::Single)?;
    let out_shape = train_batcher.output_shape();

    let schedule = Schedule::new(
        train.labels(),
        k,
        &BatchingConfig::new(cfg.schedule, cfg.batch_size),
        cfg.seed,
    )
    .map_err(|e| ConfigError::new(format!("schedule: {e}")))?;

    std::fs::create_dir_all(opts.run_dir.join("checkpoints")).map_err(io(&opts.run_dir))?;
    for path in scl_fs::remove_temporaries(&opts.run_dir, true, &scl_fs::is_abandoned) {
        eprintln!(
            "note: removed {}, left by a process that stopped while writing it",
            path.display()
        );
    }
    let record = DeepRunRecord {
        backend: opts.backend.clone(),
        class_counts: selection.counts.clone(),
        config: cfg.clone(),
        dataset_title: manifest.title.clone(),
        git_revision: crate::provenance::git_revision(),
        kind: "deep".to_string(),
    };
    write_json(&opts.run_dir.join(crate::run_files::CONFIG), &record)?;

    // Burn draws initial weights from the backend's process-wide generator: seed it and
    // initialise under one lock, so runs on other threads cannot interleave their draws.
    let model: SclModel = {
        static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
        device.seed(cfg.seed);
        // Parameters are initialised lazily, on first use: force the draws now, inside the
        // lock, by taking the record.
        let record = cfg.model_config(out_shape, k).init(device).into_record();
        cfg.model_config(out_shape, k)
            .init(device)
            .load_record(record)
    };
    let run = Run {
        cfg,
        opts,
        train: &train,
        test: &test,
        minority: &minority,
        schedule,
        train_batcher,
        eval_batcher,
        loss: SupConLossConfig::new()
            .with_temperature(cfg.temperature)
            .with_base_temperature(cfg.base_temperature)
            .try_init()
            .map_err(|e| ConfigError::new(e.to_string()))?,
        device,
    };
    let wd = (cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay as f32));
    let (metrics, model) = match cfg.optimizer {
        OptimizerKind::Sgd => {
            let momentum =
                (cfg.momentum > 0.0).then(|| MomentumConfig::new().with_momentum(cfg.momentum));
            let optim = SgdConfig::new()
                .with_momentum(momentum)
                .with_weight_decay(wd)
                .init();
            run.optimise(model, optim, &mut progress)?
        }
        OptimizerKind::Adam => {
            let optim = AdamConfig::new().with_weight_decay(wd).init();
            run.optimise(model, optim, &mut progress)?
        }
    };
    let outcome = DeepOutcome {
        dataset_title: manifest.title.clone(),
        class_counts: selection.counts.clone(),
        minority: minority.clone(),
        metrics,
    };
    let finished = opts.stop_after_epochs.is_none_or(|_| {
        outcome
            .metrics
            .last()
            .is_some_and(|m| m.epoch == cfg.epochs)
    });
    if finished {
        if let Some(path) = &opts.export_safetensors {
            export_safetensors(&model, path)?;
        }
        write_json(&opts.run_dir.join(crate::run_files::SUMMARY), &outcome)?;
    }
    Ok(outcome)
}

/// Writes `model`'s parameters and batch-norm running statistics to the SafeTensors file
/// `path` (replacing it; Burn's store writes a temporary file and renames it), in eval mode,
/// each tensor under its module path (e.g. `backbone.Mlp.layers.0.linear.weight`).
///
/// # Errors
/// [`RunError::Io`] naming `path` when it cannot be written.
pub fn export_safetensors(model: &SclModel, path: &Path) -> Result<(), RunError> {
    use burn::store::{ModuleSnapshot, SafetensorsStore};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut store = SafetensorsStore::from_file(path).overwrite(true);
    model.valid().save_into(&mut store).map_err(io(path))
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

impl Run<'_> {
    fn optimise(
        &self,
        mut model: SclModel,
        mut optim: ModuleOptimizer,
        progress: &mut impl FnMut(usize, usize),
    ) -> Result<(Vec<EpochMetrics>, SclModel), RunError> {
        let cfg = self.cfg;
        let ckpt_root = self.opts.run_dir.join("checkpoints");
        let mut state = State {
            epochs_done: 0,
            step: 0,
            batch_in_epoch: 0,
            loss_sum: 0.0,
            metrics: Vec::new(),
            step_losses: Vec::new(),
            window: (0.0, 0),
            config: cfg.clone(),
            model_format: MODEL_FORMAT,
        };
        if self.opts.resume
            && let Some((loaded, m, o)) = self.load_latest(&ckpt_root, &model, &optim)?
        {
            state = State {
                model_format: MODEL_FORMAT,
                ..loaded
            };
            model = m;
            optim = o;
        }
        let ce = CrossEntropyLossConfig::new().init(self.device);
        // Every epoch of a schedule has the same number of batches.
        let per_epoch = self.schedule.epoch(0).len();
        let mut saved_at_epoch_end: Option<PathBuf> = None;
        for (epochs_this_call, epoch) in (state.epochs_done..cfg.epochs).enumerate() {
            if self
                .opts
                .stop_after_epochs
                .is_some_and(|n| epochs_this_call >= n)
            {
                break;
            }
            // A checkpoint saved on interrupt continues its epoch where it stopped.
            let (mut loss_sum, mut batches) = (
                std::mem::take(&mut state.loss_sum),
                std::mem::take(&mut state.batch_in_epoch),
            );
            if crate::interrupt::requested() {
                // The epoch that just ended saved its checkpoint already: stop there.
                if let Some(dir) = saved_at_epoch_end.take() {
                    return Err(RunError::Interrupted {
                        step: state.step,
                        checkpoint: Some(dir.display().to_string()),
                    });
                }
                return Err(self.interrupted(&ckpt_root, state, batches, loss_sum, &model, &optim));
            }
            saved_at_epoch_end = None;
            let lr = cfg.lr_at(epoch);
            let batcher = self.train_batcher.clone();
            let train = self.train.clone();
            let e = epoch as u64;
            let loader = Loader::new(
                self.schedule.clone(),
                Position {
                    epoch: e,
                    batch: batches,
                },
                e + 1,
                2,
                4,
                move |indices: &[usize]| batcher.assemble(&items_of(&train, indices), e),
            );
            for loaded in loader {
                let batch = loaded.item.to_device(self.device);
                let n = batch.indices.len();
                let v = batch.views;
                let loss = match cfg.loss {
                    LossKind::Scl => {
                        scl_batch_loss(&model, batch.images, batch.labels, v, &self.loss)
                    }
                    LossKind::Ce => {
                        let logits = model.logits(batch.images);
                        let targets = batch
                            .labels
                            .unsqueeze_dim::<2>(1)
                            .repeat_dim(1, v)
                            .reshape([n * v]);
                        ce.forward(logits, targets).reshape([1])
                    }
                };
                let loss = if cfg.inject_nan_at_step == Some(state.step) {
                    loss * f32::NAN
                } else {
                    loss
                };
                let value: f64 = loss.clone().into_scalar::<f64>();
                if !value.is_finite() {
                    // The logged losses up to here show how the run got there.
                    self.write_metrics(&state.metrics, &state.step_losses)?;
                    return Err(RunError::NonFinite { step: state.step });
                }
                loss_sum += value;
                batches += 1;
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(lr, model, grads);
                state.step += 1;
                state.window.0 += value;
                state.window.1 += 1;
                if cfg.log_every.is_some_and(|n| state.step.is_multiple_of(n)) {
                    let (sum, count) = std::mem::take(&mut state.window);
                    state.step_losses.push(StepLoss {
                        epoch: epoch + 1,
                        step: state.step,
                        lr,
                        loss: sum / count as f64,
                    });
                }
                if cfg.interrupt_at_step == Some(state.step) {
                    crate::interrupt::request();
                }
                // After the epoch's last batch the epoch ends first (evaluated if due), and the
                // stop is taken at the next epoch's start: a checkpoint is never at a batch
                // past its epoch's end.
                if crate::interrupt::requested() && batches < per_epoch {
                    return Err(
                        self.interrupted(&ckpt_root, state, batches, loss_sum, &model, &optim)
                    );
                }
            }
            state.epochs_done = epoch + 1;
            progress(state.epochs_done, cfg.epochs);
            if state.epochs_done.is_multiple_of(cfg.eval_every) || state.epochs_done == cfg.epochs {
                let metrics = self.evaluate(
                    &model,
                    state.epochs_done,
                    state.step,
                    lr,
                    loss_sum / batches.max(1) as f64,
                )?;
                state.metrics.push(metrics);
                self.write_metrics(&state.metrics, &state.step_losses)?;
                saved_at_epoch_end =
                    Some(self.save_checkpoint(&ckpt_root, &state, &model, &optim)?);
            }
        }
        Ok((state.metrics, model))
    }

    fn evaluate(
        &self,
        model: &SclModel,
        epoch: usize,
        step: usize,
        lr: f64,
        train_loss: f64,
    ) -> Result<EpochMetrics, RunError> {
        // Eval mode: no autodiff, batch norms on their running statistics.
        let valid = model.valid();
        let inner = self.device.clone().inner();
        let k = self.train.num_classes();
        let train_z = embed_set(&valid, self.train, &self.eval_batcher, &inner)?;
        let geometry =
            geometry_summary(&train_z, self.train.labels(), k, self.minority).map_err(|e| {
                RunError::Geometry {
                    what: format!("geometry at epoch {epoch}"),
                    source: e,
                }
            })?;
        let geometry = crate::defined_geometry(geometry, step)?;
        // The training class means classify the test set (not the test means, which the
        // authors' released code used by mistake).
        let classes: Vec<usize> = (0..k).collect();
        let means =
            scl_geometry::class_means(&train_z, self.train.labels(), &classes).map_err(|e| {
                RunError::Geometry {
                    what: format!("class means at epoch {epoch}"),
                    source: e,
                }
            })?;
        let test_z = embed_set(&valid, self.test, &self.eval_batcher, &inner)?;
        if self.opts.save_embeddings {
            self.save_embeddings(epoch, "train", &train_z, self.train.labels())?;
            self.save_embeddings(epoch, "test", &test_z, self.test.labels())?;
        }
        let (ncc, balanced, per_class) =
            scl_geometry::nearest_class_mean(&test_z, self.test.labels(), &means);
        let probe = if self.cfg.linear_probe {
            Some(
                linear_probe(
                    &train_z,
                    self.train.labels(),
                    &test_z,
                    self.test.labels(),
                    k,
                    &ProbeConfig::default(),
                )
                .map_err(|e| RunError::Geometry {
                    what: format!("linear probe at epoch {epoch}"),
                    source: e,
                })?,
            )
        } else {
            None
        };
        Ok(EpochMetrics {
            epoch,
            step,
            lr,
            train_loss,
            geometry,
            ncc_accuracy: ncc,
            balanced_accuracy: balanced,
            per_class_accuracy: per_class,
            gram: scl_geometry::class_mean_gram(&train_z, self.train.labels(), k).map_err(|e| {
                RunError::Geometry {
                    what: format!("gram at epoch {epoch}"),
                    source: e,
                }
            })?,
            probe,
        })
    }

    /// Writes `embeddings/epoch-NNNN-<split>.npy` and `...-<split>-labels.npy` (atomically,
    /// each).
    fn save_embeddings(
        &self,
        epoch: usize,
        split: &str,
        z: &Embeddings,
        labels: &[usize],
    ) -> Result<(), RunError> {
        let dir = self.opts.run_dir.join(EMBEDDINGS_DIR);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let (n, d) = (z.rows(), z.dim());
        // The embeddings came from f32 tensors, so this conversion is exact.
        let values: Vec<f32> = (0..n)
            .flat_map(|i| z.row(i).iter().map(|&v| v as f32))
            .collect();
        let stem = format!("epoch-{epoch:04}-{split}");
        scl_fs::write(
            &dir.join(format!("{stem}.npy")),
            scl_geometry::io::npy_f32(n, d, &values),
        )?;
        let labels: Vec<i64> = labels.iter().map(|&c| c as i64).collect();
        scl_fs::write(
            &dir.join(format!("{stem}-labels.npy")),
            scl_geometry::io::npy_i64(&labels),
        )?;
        Ok(())
    }

    /// Writes `metrics.csv` (columns [`crate::run_files::DEEP_COLUMNS`]): one row per
    /// evaluated epoch and, with `log_every`, one per logged step (only `epoch`, `step`, `lr`
    /// and `train_loss` filled), in step order, a logged step before the evaluated epoch that
    /// ends at the same step.
    fn write_metrics(&self, metrics: &[EpochMetrics], losses: &[StepLoss]) -> Result<(), RunError> {
        let of = |g: Option<scl_geometry::GeometryReport>| {
            g.map(|r| r.of_distance.to_string()).unwrap_or_default()
        };
        let step_rows = losses.iter().map(|l| {
            let mut row = vec![String::new(); crate::run_files::DEEP_COLUMNS.len()];
            row[0] = l.epoch.to_string();
            row[1] = l.step.to_string();
            row[2] = l.lr.to_string();
            row[3] = l.loss.to_string();
            ((l.step, 0), row)
        });
        let epoch_rows = metrics.iter().map(|m| {
            ((m.step, 1), {
                let g = &m.geometry.overall;
                let probe = |f: fn(&ProbeReport) -> f64| {
                    m.probe
                        .as_ref()
                        .map(|p| f(p).to_string())
                        .unwrap_or_default()
                };
                vec![
                    m.epoch.to_string(),
                    m.step.to_string(),
                    m.lr.to_string(),
                    m.train_loss.to_string(),
                    g.of_distance.to_string(),
                    g.etf_distance.to_string(),
                    g.nc1.to_string(),
                    g.mean_cosine.to_string(),
                    g.norm_ratio.to_string(),
                    of(m.geometry.majority),
                    of(m.geometry.minority),
                    m.ncc_accuracy.to_string(),
                    m.balanced_accuracy.to_string(),
                    probe(|p| p.accuracy),
                    probe(|p| p.balanced_accuracy),
                ]
            })
        });
        let mut keyed: Vec<((usize, u8), Vec<String>)> = step_rows.chain(epoch_rows).collect();
        keyed.sort_by_key(|(key, _)| *key);
        let rows = keyed.into_iter().map(|(_, row)| row).collect();
        let path = self.opts.run_dir.join(crate::run_files::METRICS);
        Ok(crate::run_files::write_rows(
            &path,
            &crate::run_files::DEEP_COLUMNS,
            rows,
        )?)
    }

    /// Saves a checkpoint at the current position (`batches` of epoch `state.epochs_done`
    /// done) and returns the error that says where it is; an error saving it is returned
    /// instead.
    fn interrupted(
        &self,
        root: &Path,
        mut state: State,
        batches: usize,
        loss_sum: f64,
        model: &SclModel,
        optim: &ModuleOptimizer,
    ) -> RunError {
        state.batch_in_epoch = batches;
        state.loss_sum = loss_sum;
        let saved = self
            .save_checkpoint(root, &state, model, optim)
            .and_then(|dir| {
                self.write_metrics(&state.metrics, &state.step_losses)?;
                Ok(dir)
            });
        match saved {
            Ok(dir) => RunError::Interrupted {
                step: state.step,
                checkpoint: Some(dir.display().to_string()),
            },
            Err(e) => e,
        }
    }

    /// Writes `root/epoch-NNNN` (or `epoch-NNNN-batch-BBBBB` in the middle of an epoch),
    /// points `root/latest` at it and returns its path.
    fn save_checkpoint(
        &self,
        root: &Path,
        state: &State,
        model: &SclModel,
        optim: &ModuleOptimizer,
    ) -> Result<PathBuf, RunError> {
        let name = if state.batch_in_epoch == 0 {
            format!("epoch-{:04}", state.epochs_done)
        } else {
            format!(
                "epoch-{:04}-batch-{:05}",
                state.epochs_done, state.batch_in_epoch
            )
        };
        // Filled under a temporary name and renamed whole; `latest` moves only after that.
        let staged = scl_fs::StagedDir::new_in(root, &name)?;
        let tmp = staged.path();
        // `valid` syncs the batch norms' running statistics, so the file holds the last
        // step's update (Burn's record reads them as they were one update before).
        let _ = model.valid();
        model
            .clone()
            .save_file(tmp.join("model"))
            .map_err(io(tmp))?;
        optim.save(tmp.join("optimizer")).map_err(io(tmp))?;
        write_json(&tmp.join("state.json"), state)?;
        write_json(&tmp.join(CHECKPOINT_FILES), &FileList::of(tmp)?)?;
        let dest = root.join(&name);
        staged.commit(&dest)?;
        scl_fs::write(&root.join("latest"), &name)?;
        Ok(dest)
    }

    /// The newest intact checkpoint under `root`, with the model and optimiser loaded from
    /// it: the one `latest` names, else (with a warning naming what is wrong with each newer
    /// one) the next older intact one. `None` when there is no checkpoint.
    ///
    /// # Errors
    /// [`RunError::Config`] for a checkpoint of another configuration or of a model layout
    /// this version cannot read; [`RunError::DamagedCheckpoint`] when checkpoints exist but
    /// none is intact.
    #[allow(clippy::type_complexity)]
    fn load_latest(
        &self,
        root: &Path,
        model: &SclModel,
        optim: &ModuleOptimizer,
    ) -> Result<Option<(State, SclModel, ModuleOptimizer)>, RunError> {
        let candidates = checkpoint_candidates(root);
        if candidates.is_empty() {
            return Ok(None);
        }
        let mut damaged = Vec::new();
        for dir in &candidates {
            match self.load_checkpoint(dir, model, optim) {
                Ok(loaded) => {
                    for why in &damaged {
                        eprintln!("warning: damaged checkpoint: {why}");
                    }
                    if !damaged.is_empty() {
                        eprintln!(
                            "warning: resuming from the intact checkpoint {}",
                            dir.display()
                        );
                    }
                    return Ok(Some(loaded));
                }
                Err(Loaded::Damaged(why)) => damaged.push(why),
                Err(Loaded::Refused(e)) => return Err(e),
            }
        }
        Err(RunError::DamagedCheckpoint(format!(
            "no intact checkpoint in {} ({}); remove the damaged ones to start the run again",
            root.display(),
            damaged.join("; ")
        )))
    }

    /// Validates and loads one checkpoint folder.
    #[allow(clippy::type_complexity)]
    fn load_checkpoint(
        &self,
        dir: &Path,
        model: &SclModel,
        optim: &ModuleOptimizer,
    ) -> Result<(State, SclModel, ModuleOptimizer), Loaded> {
        let list = FileList::check(dir).map_err(Loaded::Damaged)?;
        let state_path = dir.join("state.json");
        let state: State = std::fs::read_to_string(&state_path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
            .map_err(|e| Loaded::Damaged(format!("{}: {e}", state_path.display())))?;
        if state.config != *self.cfg {
            return Err(Loaded::Refused(RunError::Config(ConfigError::new(
                format!(
                    "{} holds a checkpoint of a different configuration; use another run directory",
                    self.opts.run_dir.display()
                ),
            ))));
        }
        if state.model_format < MODEL_FORMAT {
            return Err(Loaded::Refused(RunError::Config(ConfigError::new(
                format!(
                    "{} holds a checkpoint written by an earlier version (Burn 0.21's record \
                     files model.bin and optimizer.bin), which this version cannot load; start \
                     the run again in a new run directory",
                    self.opts.run_dir.display()
                ),
            ))));
        }
        self.check_position(&state)
            .map_err(|why| Loaded::Damaged(format!("{}: {why}", state_path.display())))?;
        list.names(dir, &["model.bpk", "optimizer.bpk"])
            .map_err(Loaded::Damaged)?;
        let model = model
            .clone()
            .try_load_file(dir.join("model.bpk"))
            .map_err(|e| Loaded::Damaged(format!("{}: {e}", dir.join("model.bpk").display())))?;
        let optim = optim.clone().load(dir.join("optimizer.bpk")).map_err(|e| {
            Loaded::Damaged(format!("{}: {e}", dir.join("optimizer.bpk").display()))
        })?;
        Ok((state, model, optim))
    }

    /// Whether a checkpoint's position agrees with the run: at most `epochs` epochs done, a
    /// batch inside its epoch, the step count those imply, and one metrics row per evaluated
    /// epoch so far.
    fn check_position(&self, state: &State) -> Result<(), String> {
        let cfg = self.cfg;
        // Every epoch of a schedule has the same number of batches.
        let per_epoch = self.schedule.epoch(0).len();
        if state.epochs_done > cfg.epochs {
            return Err(format!(
                "it says {} epochs are done, but the run has {}",
                state.epochs_done, cfg.epochs
            ));
        }
        if state.batch_in_epoch > 0
            && (state.epochs_done == cfg.epochs || state.batch_in_epoch >= per_epoch)
        {
            return Err(format!(
                "it is at batch {} of epoch {}, which has {} batches",
                state.batch_in_epoch,
                state.epochs_done + 1,
                per_epoch
            ));
        }
        let step = state.epochs_done * per_epoch + state.batch_in_epoch;
        if state.step != step {
            return Err(format!(
                "it says {} steps were taken, but its position implies {step}",
                state.step
            ));
        }
        let evaluated: Vec<usize> = (1..=state.epochs_done)
            .filter(|e| e.is_multiple_of(cfg.eval_every) || *e == cfg.epochs)
            .collect();
        let rows: Vec<usize> = state.metrics.iter().map(|m| m.epoch).collect();
        if rows != evaluated {
            return Err(format!(
                "it holds metrics of epochs {rows:?}, but epochs {evaluated:?} were evaluated"
            ));
        }
        Ok(())
    }
}

/// Why a checkpoint was not loaded.
enum Loaded {
    /// It is damaged (a file missing, truncated, changed or unreadable; a position the run
    /// cannot have reached): an older one may be used instead.
    Damaged(String),
    /// It is intact but belongs to another run: nothing is resumed.
    Refused(RunError),
}

/// The checkpoint folders under `root`, the one `latest` names first, then the others from
/// the newest position to the oldest.
fn checkpoint_candidates(root: &Path) -> Vec<PathBuf> {
    let position = |name: &str| -> Option<(usize, usize)> {
        let rest = name.strip_prefix("epoch-")?;
        let (epoch, batch) = match rest.split_once("-batch-") {
            Some((e, b)) => (e, b.parse().ok()?),
            None => (rest, 0),
        };
        Some((epoch.parse().ok()?, batch))
    };
    let mut found: Vec<((usize, usize), PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((position(&e.file_name().to_string_lossy())?, e.path())))
        .collect();
    found.sort_by_key(|(position, _)| std::cmp::Reverse(*position));
    let mut dirs: Vec<PathBuf> = found.into_iter().map(|(_, p)| p).collect();
    if let Ok(name) = std::fs::read_to_string(root.join("latest"))
        && let Some(i) = dirs.iter().position(|d| d.ends_with(name.trim()))
    {
        let named = dirs.remove(i);
        dirs.insert(0, named);
    }
    dirs
}

/// The name of the list of a checkpoint's files (sizes and md5s), written last.
const CHECKPOINT_FILES: &str = "files.json";

/// Size and md5 of every file of a checkpoint, so that a truncated or changed file is found
/// before anything is loaded from it.
#[derive(Serialize, Deserialize)]
struct FileList {
    files: std::collections::BTreeMap<String, FileStamp>,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct FileStamp {
    bytes: u64,
    md5: String,
}

impl FileList {
    fn stamp(path: &Path) -> std::io::Result<FileStamp> {
        let bytes = std::fs::read(path)?;
        Ok(FileStamp {
            bytes: bytes.len() as u64,
            md5: format!("{:x}", md5::compute(&bytes)),
        })
    }

    /// The files directly in `dir` (the list itself excluded).
    fn of(dir: &Path) -> Result<Self, RunError> {
        let mut files = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != CHECKPOINT_FILES && entry.file_type().is_ok_and(|t| t.is_file()) {
                files.insert(name, Self::stamp(&entry.path()).map_err(io(&entry.path()))?);
            }
        }
        Ok(Self { files })
    }

    /// Compares `dir`'s files with its list and returns the list. A checkpoint without a list,
    /// or whose list does not name its `state.json`, is incomplete (the list is written last).
    fn check(dir: &Path) -> Result<Self, String> {
        let list_path = dir.join(CHECKPOINT_FILES);
        let text = match std::fs::read_to_string(&list_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{} is missing (a checkpoint's list of files is written last, so without \
                     it the checkpoint cannot be trusted)",
                    list_path.display()
                ));
            }
            Err(e) => return Err(format!("{}: {e}", list_path.display())),
        };
        let list: Self =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", list_path.display()))?;
        list.names(dir, &["state.json"])?;
        for (name, recorded) in &list.files {
            let path = dir.join(name);
            let found = Self::stamp(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if found.bytes != recorded.bytes {
                return Err(format!(
                    "{} is {} bytes, the checkpoint recorded {}",
                    path.display(),
                    found.bytes,
                    recorded.bytes
                ));
            }
            if found.md5 != recorded.md5 {
                return Err(format!(
                    "{} has md5 {}, the checkpoint recorded {}",
                    path.display(),
                    found.md5,
                    recorded.md5
                ));
            }
        }
        Ok(list)
    }

    /// Fails, naming the list, unless it names every one of `files`.
    fn names(&self, dir: &Path, files: &[&str]) -> Result<(), String> {
        match files.iter().find(|name| !self.files.contains_key(**name)) {
            Some(missing) => Err(format!(
                "{} does not list {missing}",
                dir.join(CHECKPOINT_FILES).display()
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_keys_are_exactly_the_fields_of_the_config() {
        // Experiment files check keys against DEEP_KEYS before serde sees them; the two lists
        // must not drift. Every optional field is set so that it serialises.
        let mut cfg: DeepConfig =
            toml::from_str("dataset = \"mnist\"\nmodel = \"mlp\"\nepochs = 1").unwrap();
        cfg.projection = Some(8);
        cfg.inject_nan_at_step = Some(1);
        cfg.interrupt_at_step = Some(1);
        cfg.linear_probe = true;
        cfg.log_every = Some(1);
        let value = serde_json::to_value(&cfg).unwrap();
        let mut fields: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = DEEP_KEYS.to_vec();
        fields.sort_unstable();
        keys.sort_unstable();
        assert_eq!(fields, keys);
        for key in DEEP_REQUIRED_KEYS {
            assert!(DEEP_KEYS.contains(key), "{key}");
        }
    }

    #[test]
    fn batches_and_logs_no_machine_holds_are_one_sentence() {
        if crate::machine_memory_bytes().is_none() {
            return;
        }
        let base = "dataset = \"sklearn-digits\"\nmodel = \"mlp\"\n";
        let cfg =
            |extra: &str| -> DeepConfig { toml::from_str(&format!("{base}{extra}")).unwrap() };
        let err = cfg("epochs = 1\nbatch_size = 100000000000")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("batch_size = 100000000000 is not allowed: with 2 views"),
            "{err}"
        );
        let err = cfg("epochs = 1000000000000\nlog_every = 1")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("epochs = 1000000000000 is not allowed with log_every = 1"),
            "{err}"
        );
        // The sizes the experiment files use pass.
        assert!(
            cfg("epochs = 200\nlog_every = 1\nbatch_size = 1024")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn a_schedule_whose_rate_grows_past_the_limit_is_refused() {
        let base = "dataset = \"sklearn-digits\"\nmodel = \"mlp\"\nepochs = 100\n";
        let cfg =
            |extra: &str| -> DeepConfig { toml::from_str(&format!("{base}{extra}")).unwrap() };
        let err = cfg("lr_milestones = [10, 20]\nlr_gamma = 1e300")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("lr_gamma = 1e300 is not allowed: with lr = 0.1 and 2 milestones"),
            "{err}"
        );
        // Milestones after the last epoch are never reached; a gamma below 1 only lowers it.
        assert!(
            cfg("lr_milestones = [200]\nlr_gamma = 1e300")
                .validate()
                .is_ok()
        );
        assert!(
            cfg("lr_milestones = [10, 20]\nlr_gamma = 0.1")
                .validate()
                .is_ok()
        );
        assert!(
            cfg("lr_milestones = [10, 20]\nlr_gamma = 2")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn model_sizes_no_machine_holds_are_one_sentence_before_anything_is_allocated() {
        let base = "dataset = \"sklearn-digits\"\nepochs = 1\n";
        let cases = [
            (
                "model = \"mlp\"\nmlp_widths = [100000000]",
                "mlp_widths = [100000000]",
            ),
            (
                "model = \"mlp\"\nprojection = 1000000000",
                "mlp_widths = [256, 128] with projection = 1000000000",
            ),
            (
                "model = \"small-cnn\"\nembedding = 1000000000",
                "embedding = 1000000000",
            ),
            (
                "model = \"resnet18\"\nresnet_width = 1000000",
                "resnet_width = 1000000",
            ),
        ];
        for (text, key) in cases {
            let cfg: DeepConfig = toml::from_str(&format!("{base}{text}")).unwrap();
            if crate::machine_memory_bytes().is_none() {
                assert!(cfg.validate().is_ok());
                continue;
            }
            let err = cfg.validate().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{key} is not allowed: the model would have about")),
                "{err}"
            );
            assert!(err.contains("GiB of memory"), "{err}");
        }
        // The default sizes pass.
        let cfg: DeepConfig = toml::from_str(&format!("{base}model = \"resnet18\"")).unwrap();
        cfg.validate().unwrap();
    }
}
