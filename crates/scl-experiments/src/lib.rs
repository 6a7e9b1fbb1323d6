//! Experiments for supervised contrastive learning under class imbalance: experiment files
//! expanded into grids of cells with stable ids ([`experiment`]), the results folder of a sweep
//! ([`layout`]) and the records in it ([`records`]), and the runner that computes every
//! unfinished cell, in threads or child processes, on a backend chosen at run time
//! ([`runner`], [`child`], cell locks).
//!
//! Training itself is the `scl-train` crate's; the report (`scl-report`) reads results through
//! [`records`] alone. The runner and the checks of what this machine can run (`runner`,
//! `child`, `feasibility`) need the cargo feature `runner` (on with the default `flex`, and
//! with `wgpu` and `cuda`); without it the crate has no tensor code.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "runner")] {
//! use scl_experiments::experiment::Experiment;
//! use scl_experiments::runner::{SweepOptions, run_sweep};
//! use scl_types::backend::BackendKind;
//!
//! let experiment = Experiment::parse(
//!     r#"
//!     [experiment]
//!     name = "tiny"
//!     [base]
//!     num_classes = 2
//!     n_majority = 4
//!     temperature = 1.0
//!     steps = 5
//!     lr = 0.1
//!     optimizer = "adam"
//!     log_every = 5
//!     seed = 0
//!     [grid]
//!     relu = [true, false]
//!     ratio = [2]
//!     "#,
//!     "tiny",
//!     None,
//! )
//! .unwrap();
//! let results = tempfile::tempdir().unwrap();
//! let opts = SweepOptions {
//!     results_root: results.path().to_path_buf(),
//!     backend: BackendKind::Flex,
//!     jobs: 1,
//!     devices: vec![],
//!     progress: false,
//!     data_dir: None,
//!     launcher: None,
//!     save_embeddings: false,
//! };
//! let outcome = run_sweep(&experiment, &opts).unwrap();
//! assert_eq!((outcome.ran, outcome.summaries.len()), (2, 2));
//! # }
//! ```
#![warn(missing_docs)]

#[cfg(feature = "runner")]
pub mod child;
pub mod experiment;
#[cfg(feature = "runner")]
pub mod feasibility;
pub mod layout;
#[cfg(feature = "runner")]
mod lock;
pub mod records;
#[cfg(feature = "runner")]
pub mod runner;
