//! What a deep run returns and writes: per-epoch metrics, logged step losses, the outcome, the record of `config.json` and the run options.

use super::*;

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
    pub backend: crate::backend::BackendKind,
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
    pub backend: crate::backend::BackendKind,
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
