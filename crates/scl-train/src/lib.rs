//! Training loops and the experiment runner for supervised contrastive learning under class
//! imbalance.
//!
//! Today this crate runs the unconstrained-features experiment of Kini et al. (ICLR 2024):
//! free features optimised with full-batch SupCon, with or without a ReLU, on STEP-imbalanced
//! classes ([`ufm`]); it expands experiment files into grids of cells ([`experiment`]), runs
//! them on a chosen backend and writes run directories ([`sweep`]); the `scl-report` crate
//! renders their report.
//!
//! # Example
//!
//! ```
//! use scl_train::config::{OptimizerKind, UfmConfig};
//! use scl_train::backend::BackendKind;
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
//!     optimizer: OptimizerKind::Adam,
//!     seed: 0,
//!     log_every: 10,
//!     schedule: None,
//!     batch_size: None,
//! };
//! let outcome = BackendKind::Ndarray.run_ufm(0, &cfg, |_step| {}).unwrap();
//! assert_eq!(outcome.points.len(), 3); // steps 0, 10 and 20
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod deep;
pub mod experiment;
pub mod interrupt;
pub mod sweep;
pub mod ufm;

pub use config::ConfigError;

/// Why a run did not finish.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// Reading or writing a file failed.
    #[error("I/O error: {0}")]
    Io(String),
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

impl From<ConfigError> for RunError {
    fn from(e: ConfigError) -> Self {
        RunError::Config(e)
    }
}
