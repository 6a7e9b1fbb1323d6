//! Training for supervised contrastive learning under class imbalance, on any Burn backend.
//!
//! Two kinds of run: the unconstrained-features model of Kini et al. (ICLR 2024), free
//! features optimised with SupCon (full batch or a batch schedule), with or without a ReLU, on
//! STEP-imbalanced classes ([`ufm`]); and deep networks (MLP, ResNet-18, DenseNet) trained with
//! SCL or cross-entropy on a dataset, with evaluation, checkpoints and exact resume ([`deep`]).
//! [`backend`] maps a backend name and device index to a Burn `Device`. Experiment grids,
//! results folders and the sweep runner live in the `scl-experiments` crate.
//!
//! # Example
//!
//! ```
//! use scl_train::config::{OptimizerKind, UfmConfig};
//! use scl_train::backend::{BackendKind, BackendRuntime};
//!
//! let cfg = UfmConfig {
//!     num_classes: 2,
//!     dim: None,
//!     n_majority: 4,
//!     ratio: 2.0,
//!     relu: true,
//!     temperature: 1.0,
//!     steps: 20,
//!     lr: 0.1,
//!     lr_schedule: scl_train::config::LrSchedule::Constant,
//!     adam_epsilon: None,
//!     optimizer: OptimizerKind::Adam,
//!     seed: 0,
//!     log_every: 10,
//!     schedule: None,
//!     batch_size: None,
//! };
//! let outcome = BackendKind::Flex.run_ufm(0, &cfg, |_step| {}).unwrap();
//! assert_eq!(outcome.points.len(), 3); // steps 0, 10 and 20
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod deep;
pub mod interrupt;
pub mod provenance;
pub mod ufm;

/// Run configurations and their validation (scl-types' plain types).
pub use scl_types::config;
/// The records every run leaves: `config.json` and `summary.json` (scl-types').
pub use scl_types::records;
/// The files of a run folder and their `metrics.csv` schemas (scl-types').
pub use scl_types::run_files;
pub use scl_types::{MAX_LR, machine_memory_bytes};

pub use config::ConfigError;

/// Why a run did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is wrong (exit code 2 in command-line tools).
    #[error("{0}")]
    Config(ConfigError),
    /// The loss or the features stopped being finite.
    #[error("the loss or the features became non-finite at step {step}")]
    NonFinite {
        /// The step at which it happened.
        step: usize,
    },
    /// The geometry stopped being defined: the OF distance of the class means is not a
    /// number, because every class mean is zero (every feature 0 after the final ReLU, as
    /// after a learning rate far too large) or the features overflowed.
    #[error(
        "the geometry became undefined at step {step}: the OF distance is not a number (every \
         class mean is zero, e.g. every feature 0 after the final ReLU, or overflowing features)"
    )]
    DegenerateGeometry {
        /// The step at which it was measured.
        step: usize,
    },
    /// A stop was asked for ([`interrupt`]). A deep-network run saved a checkpoint at its
    /// current step and resumes from it; a UFM run has none and starts again.
    #[error("interrupted at step {step}; {}", match .checkpoint {
        Some(dir) => format!("checkpoint saved in {dir}: resume to continue from it"),
        None => "no checkpoint (a UFM run starts again from step 0)".to_string(),
    })]
    Interrupted {
        /// Optimiser steps taken.
        step: usize,
        /// The checkpoint directory, where one was saved.
        checkpoint: Option<String>,
    },
    /// A run directory's checkpoints exist but none is intact (each is named with what is
    /// wrong with it).
    #[error("{0}")]
    DamagedCheckpoint(String),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] scl_fs::FsError),
    /// A dataset is missing, damaged or unreadable (exit code 3 in command-line tools): the
    /// reader's error, kept as the source.
    #[error(transparent)]
    Data(#[from] scl_data::DataError),
    /// A geometry measure could not be computed (e.g. a class without samples).
    #[error("{what}: {source}")]
    Geometry {
        /// What was being measured, and when.
        what: String,
        /// Why it failed.
        #[source]
        source: scl_geometry::GeometryError,
    },
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

impl From<ConfigError> for RunError {
    fn from(e: ConfigError) -> Self {
        RunError::Config(e)
    }
}

/// `geometry` unchanged while its OF distance is a number; [`RunError::DegenerateGeometry`]
/// at `step` once it is not (every class mean zero, overflowing features), so a run never
/// "finishes" with undefined geometry.
pub(crate) fn defined_geometry(
    geometry: scl_geometry::GeometrySummary,
    step: usize,
) -> Result<scl_geometry::GeometrySummary, RunError> {
    if geometry.overall.of_distance.is_nan() {
        return Err(RunError::DegenerateGeometry { step });
    }
    Ok(geometry)
}

#[cfg(test)]
mod geometry_tests {
    use super::*;
    use scl_geometry::{Embeddings, geometry_summary};

    #[test]
    fn features_that_all_died_make_the_geometry_degenerate() {
        // Three classes of two samples in R^3.
        let labels = [0, 0, 1, 1, 2, 2];
        let alive = [
            1.0, 0.1, 0.0, 0.9, 0.0, 0.1, 0.0, 1.0, 0.2, 0.1, 0.8, 0.0, 0.1, 0.0, 1.0, 0.0, 0.1,
            0.9,
        ];
        let x = Embeddings::new(6, 3, alive.to_vec()).unwrap();
        let geometry = geometry_summary(&x, &labels, 3, &[2]).unwrap();
        assert!(defined_geometry(geometry, 40).is_ok());
        // One dead class still has a defined geometry (far from the OF).
        let mut one_dead = alive;
        one_dead[12..].fill(0.0);
        let x = Embeddings::new(6, 3, one_dead.to_vec()).unwrap();
        let geometry = geometry_summary(&x, &labels, 3, &[2]).unwrap();
        assert!(defined_geometry(geometry, 40).is_ok());
        // Every feature 0, as after a final ReLU whose inputs all went negative.
        let x = Embeddings::new(6, 3, vec![0.0; 18]).unwrap();
        let geometry = geometry_summary(&x, &labels, 3, &[2]).unwrap();
        let err = defined_geometry(geometry, 40).unwrap_err();
        assert!(
            matches!(err, RunError::DegenerateGeometry { step: 40 }),
            "{err}"
        );
        assert!(err.to_string().contains("at step 40"), "{err}");
    }
}
