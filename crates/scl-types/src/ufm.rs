//! What a run of the unconstrained-features model produces: its logged points and the outcome
//! its summary keeps.

use scl_geometry::GeometrySummary;
use serde::{Deserialize, Serialize};

/// One logged point of a UFM run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct UfmPoint {
    /// Optimisation step (0 = initialisation).
    pub step: usize,
    /// Full-batch SupCon loss at this step.
    pub loss: f64,
    /// Geometry of the features at this step.
    pub geometry: GeometrySummary,
}

/// What a UFM cell produced, as its summary keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UfmCellOutcome {
    /// Samples per class.
    pub class_sizes: Vec<usize>,
    /// The final logged point: loss and geometry.
    pub last: UfmPoint,
    /// The closed-form loss at an orthogonal frame.
    pub orthogonal_frame_loss: f64,
    /// Final loss minus the orthogonal-frame loss.
    pub loss_gap: f64,
    /// For a mini-batch run, the validator's verdict on every batch the run used.
    #[serde(default)]
    pub verdict: Option<scl_batching::Verdict>,
    /// Gram matrix of the final class means (`K` rows of `K`).
    #[serde(default)]
    pub class_mean_gram: Vec<Vec<f64>>,
}
