//! Supervised contrastive learning with burn-train, Burn's standard trainer: the pieces a
//! Burn project needs to train an `scl-models` network with SupCon and batch-binding under
//! `burn::train::SupervisedTraining`, with the neural-collapse geometry as metrics.
//!
//! - [`SclLearner`]: burn-train's `TrainStep` / `InferenceStep` for any [`Encoder`] (your own
//!   Burn module, or an [`scl_models::SclModel`]) and its [`Objective`] (SupCon with any
//!   `scl-loss` configuration, or cross-entropy);
//! - [`ScheduledLoader`]: any `scl-batching` schedule (shuffle, batch-binding, fixed,
//!   class-balanced) over a Burn `Dataset` and `Batcher` as a Burn `DataLoader`,
//!   deterministic and resumable at a position;
//! - [`evaluation_loader`] and [`metrics`]: the OF distance, centred-ETF distance, NC1, mean
//!   cosine of the training embeddings and the balanced nearest-class-mean accuracy with the
//!   training class means, as burn-train metrics of the validation pass, computed once per
//!   epoch on the embeddings of the whole pass;
//! - [`EpochLines`]: a renderer that prints one line per epoch (logs, CI).
//!
//! The sklearn digits with batch-binding, trained by burn-train (this is
//! `examples/burn_train_digits.rs`, which CI runs):
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use burn::optim::AdamConfig;
//! use burn::tensor::Device;
//! use burn::train::{Learner, SupervisedTraining, metric::LossMetric};
//! use scl_batching::{BatchingConfig, Schedule, ScheduleKind};
//! use scl_data::{DataDir, LoadOptions, Manifest, SclBatcher, Split, ViewPreset, load};
//! use scl_learner::{EpochLines, Objective, SclLearner, ScheduledLoader, evaluation_loader, metrics};
//! use scl_models::{Architecture, MlpConfig, SclModelConfig};
//!
//! let digits = Manifest::named("sklearn-digits")?;
//! let opts = LoadOptions::offline(DataDir::resolve(None));
//! let (train, test) = (load(&digits, Split::Train, &opts)?, load(&digits, Split::Test, &opts)?);
//! let batcher = |views: ViewPreset| {
//!     let (mean, std) = (digits.mean.clone(), digits.std.clone());
//!     SclBatcher::new(views.views(&digits), train.shape(), train.max_value(), mean, std, 0)
//! };
//! let views = batcher(ViewPreset::VerticalFlip)?;
//! let schedule = Schedule::new(train.labels(), 10, &BatchingConfig::new(ScheduleKind::BatchBinding, 64), 0)?;
//! let epochs = views.clone();
//! let train_loader = ScheduledLoader::new(schedule, train.clone(), views)
//!     .on_epoch(move |e| epochs.set_epoch(e));
//! let single = batcher(ViewPreset::Single)?;
//! let valid_loader = evaluation_loader(train, test, single, 256);
//! let model = SclModelConfig::new(Architecture::Mlp(MlpConfig::new(64, vec![128, 32])), 10)
//!     .init(&Device::flex().autodiff());
//! let objective = Objective::SupCon(scl_loss::SupConLossConfig::new().with_temperature(0.1).init());
//! let result = SupervisedTraining::new("runs/digits-burn-train", Arc::new(train_loader), valid_loader)
//!     .metrics((LossMetric::new(),))
//!     .metrics(metrics::geometry_metrics(10))
//!     .with_default_checkpointers()
//!     .renderer(Box::new(EpochLines::new()))
//!     .num_epochs(4)
//!     .launch(Learner::new(SclLearner::new(model, objective), AdamConfig::new().init(), 1e-3));
//! if let Some(error) = result.error {
//!     return Err(error.to_string().into());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # burn-train or the workspace's own loop
//!
//! Use burn-train (this crate) to put SCL and batch-binding into a Burn project that already
//! trains with `SupervisedTraining`: its metrics, checkpointer, early stopping, renderers and
//! multi-device strategies come with it, and it resumes at epoch boundaries
//! (`SupervisedTraining::checkpoint(n)` with [`ScheduledLoader::start_at`]). Use the
//! workspace's own loop (`scl_train::deep`, `cargo xtask train` and `sweep`) for the paper's
//! protocol and grids: it resumes in the middle of an epoch with exactly the batches an
//! uninterrupted run gets, verifies its checkpoints, writes the run folders the sweep runner
//! and the report read, and evaluates on the schedule of `eval_every` or `eval_epochs`.
#![warn(missing_docs)]

mod loader;
pub mod metrics;
mod renderer;
mod step;

pub use loader::{EpochHook, EvaluationLoader, ScheduledLoader, evaluation_loader};
pub use metrics::{GeometryInput, GeometryMeasure, GeometryMetric};
pub use renderer::EpochLines;
pub use step::{Encoder, EvalBatch, Objective, Part, SclLearner, SclOutput};

#[cfg(test)]
mod tests;
