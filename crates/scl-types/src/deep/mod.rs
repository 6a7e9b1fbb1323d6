//! A deep-network run: its configuration (keys, defaults, validation) and what it produces
//! (the metrics of every evaluated epoch, logged step losses, the outcome).

use scl_batching::ScheduleKind;
use scl_data::{Imbalance, Manifest, ViewPreset};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, OptimizerKind, serde_plain};
use crate::model::{FinalActivation, WeightInit};

/// What the network is trained with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Supervised contrastive loss on the views of each batch.
    Scl,
    /// Cross-entropy of the classifier head on every view.
    Ce,
}

impl LossKind {
    /// Every loss, in the order option lists show them.
    pub const ALL: [Self; 2] = [Self::Scl, Self::Ce];
}

/// Which backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// scl-models' `Mlp` with `mlp_widths`.
    Mlp,
    /// scl-models' `SmallCnn` with `embedding` outputs.
    SmallCnn,
    /// scl-models' `ResNet18` (CIFAR stem), `resnet_width` channels in the first stage.
    Resnet18,
    /// scl-models' `DenseNet`-BC, growth 12, blocks (6, 6, 6).
    Densenet,
}

/// The head of the small CNN: where its final activation sits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CnnHead {
    /// One linear layer to the embedding, the final activation right after it (over
    /// non-negative pooled features).
    #[default]
    Linear,
    /// The linear layer, then a batch norm, then the final activation: the kind of head the
    /// paper's networks have (ResNet's last block, the MLP).
    LinearBn,
}

impl CnnHead {
    /// Every head, in the order option lists show them.
    pub const ALL: [Self; 2] = [Self::Linear, Self::LinearBn];

    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn is_burn_init(init: &WeightInit) -> bool {
    *init == WeightInit::Burn
}

impl ModelKind {
    /// Every backbone, in the order option lists show them.
    pub const ALL: [Self; 4] = [Self::Mlp, Self::SmallCnn, Self::Resnet18, Self::Densenet];
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
    /// How the convolutions start: `burn` (the default: Burn's, uniform in `±1/sqrt(fan_in)`)
    /// or `authors` (ResNet-18 Kaiming-normal on fan_out as torchvision's, DenseNet on fan_in;
    /// [`WeightInit`]).
    #[serde(default, skip_serializing_if = "is_burn_init")]
    pub init: WeightInit,
    /// The small CNN's head (`linear`, the default, or `linear-bn`: a batch norm before the
    /// final activation). Only for `model = "small-cnn"`.
    #[serde(default, skip_serializing_if = "CnnHead::is_default")]
    pub cnn_head: CnnHead,
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
    /// SGD momentum dampening τ: the velocity is `momentum * v + (1 - τ) * g`. Default `0`,
    /// PyTorch's SGD, the authors' optimiser. `0.1` is Burn's default, with which the CPU-scale
    /// results recorded before this key existed were computed: records and checkpoints
    /// written then, which lack the key, read as 0.1 ([`crate::records`]), and a configuration
    /// asking for 0.1 keeps their cell ids.
    #[serde(default)]
    pub dampening: f64,
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
    /// Evaluate (and checkpoint) at exactly these epochs (1-based) and at the end, in place of
    /// `eval_every`: e.g. the authors' `[1, 3, 5, 7, 9, 11, 20, 30, ...]`, dense early where
    /// batch-binding's speed-up shows. Epochs past the run's end are never reached (so a
    /// profile may shorten a run without rewriting the list). Absent: `eval_every` decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_epochs: Option<Vec<usize>>,
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
    /// (scl-train's `interrupt::request`, which stops every run of the process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupt_at_step: Option<usize>,
}

/// The dampening of Burn's SGD, which every deep run used before the `dampening` key existed:
/// what a record or checkpoint without the key means.
pub const BURN_DAMPENING: f64 = 0.1;

impl DeepConfig {
    /// Puts [`BURN_DAMPENING`] into the JSON of a configuration written before the
    /// `dampening` key existed (a record or checkpoint without it), so that it reads as the
    /// run it was.
    pub fn upgrade_json(config: &mut serde_json::Map<String, serde_json::Value>) {
        config
            .entry("dampening")
            .or_insert_with(|| serde_json::Value::from(BURN_DAMPENING));
    }
}

/// Every key of [`DeepConfig`], for experiment files.
pub const DEEP_KEYS: &[&str] = &[
    "dataset",
    "imbalance",
    "data_seed",
    "model",
    "mlp_widths",
    "embedding",
    "cnn_head",
    "init",
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
    "dampening",
    "weight_decay",
    "lr_milestones",
    "lr_gamma",
    "eval_every",
    "eval_epochs",
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
        Manifest::named(&self.dataset).map_err(|e| ConfigError::new(format!("dataset: {e}")))?;
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
        if !(0.0..1.0).contains(&self.dampening) {
            return Err(ConfigError::new(format!(
                "dampening = {} is not allowed: it must be in [0, 1) (0: PyTorch's SGD)",
                shown(self.dampening)
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
        if self.cnn_head != CnnHead::Linear && self.model != ModelKind::SmallCnn {
            return Err(ConfigError::new(format!(
                "cnn_head = {} is not allowed with model = {}: it is the head of the small CNN \
                 (model = \"small-cnn\")",
                serde_plain(&self.cnn_head),
                serde_plain(&self.model)
            )));
        }
        if let Some(list) = &self.eval_epochs
            && list.contains(&0)
        {
            return Err(ConfigError::new(format!(
                "eval_epochs = {list:?} is not allowed: epochs count from 1 (epoch 0, before \
                 training, is not evaluated)"
            )));
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
        Ok(())
    }

    /// Whether the run evaluates (and checkpoints) after `epoch` epochs (1-based): one of
    /// `eval_epochs` when it is given, else a multiple of `eval_every`; and always the last.
    pub fn is_evaluated(&self, epoch: usize) -> bool {
        epoch == self.epochs
            || match &self.eval_epochs {
                Some(list) => list.contains(&epoch),
                None => epoch.is_multiple_of(self.eval_every),
            }
    }

    /// How many epochs the run evaluates, in closed form (no loop over the epochs).
    pub fn evaluated_count(&self) -> usize {
        match &self.eval_epochs {
            Some(list) => {
                let mut listed: Vec<usize> = list
                    .iter()
                    .copied()
                    .filter(|&e| e >= 1 && e < self.epochs)
                    .collect();
                listed.sort_unstable();
                listed.dedup();
                listed.len() + 1
            }
            None => {
                let every = self.eval_every.max(1);
                self.epochs / every + usize::from(!self.epochs.is_multiple_of(every))
            }
        }
    }

    /// The learning rate of an epoch: `lr * lr_gamma^(milestones passed)`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let passed = self.lr_milestones.iter().filter(|&&m| epoch >= m).count();
        self.lr * self.lr_gamma.powi(passed as i32)
    }
}

mod outcome;
pub use outcome::{DeepOutcome, EpochMetrics, StepLoss};

#[cfg(test)]
mod tests;
