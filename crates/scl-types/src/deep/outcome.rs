//! What a deep run produces: the metrics of every evaluated epoch, the logged step losses and
//! the outcome its summary keeps.

use scl_geometry::GeometrySummary;
use scl_geometry::probe::ProbeReport;
use serde::{Deserialize, Serialize};

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
