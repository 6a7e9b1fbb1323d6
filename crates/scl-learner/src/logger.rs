//! burn-train's file metric logger with the epochs of a resumed run numbered right.
//!
//! burn-train 0.21's event store numbers the epochs it hands its loggers from 1 until the
//! first epoch ends, whatever epoch the run resumed at: the first epoch of a run resumed
//! from the checkpoint of epoch `n` is logged as epoch 1 (its files overwrite
//! `train/epoch-1/` and `valid/epoch-1/`), and `train/epoch-{n+1}/` never appears, so a
//! checkpointing or early-stopping strategy that reads a metric of epoch `n + 1` finds
//! nothing. [`EpochFileLogger`] writes the same files as burn-train's `FileMetricLogger`, each
//! epoch under its true number.

use std::collections::HashMap;
use std::path::Path;

use burn::train::logger::{FileMetricLogger, MetricLogger};
use burn::train::metric::store::{EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{MetricDefinition, NumericEntry};

/// burn-train's `FileMetricLogger` (`<dir>/{train,valid}/epoch-N/<metric>.log`) numbering
/// the epochs of a resumed run from the epoch after its checkpoint (see the module
/// documentation). Register it with `SupervisedTraining::with_metric_logger`, which then
/// writes no other file logs.
pub struct EpochFileLogger {
    inner: FileMetricLogger,
    /// The epoch each split logs now.
    current: HashMap<Split, usize>,
    /// The first epoch this run trains.
    first: usize,
}

impl EpochFileLogger {
    /// Logs into `directory` (the one given to `SupervisedTraining::new`) for a run that
    /// resumes from the checkpoint of epoch `resumed_from` (`None`: a run from the start).
    pub fn new(directory: impl AsRef<Path>, resumed_from: Option<usize>) -> Self {
        Self {
            inner: FileMetricLogger::new(directory),
            current: HashMap::new(),
            first: resumed_from.map_or(1, |n| n + 1),
        }
    }

    /// The epoch `split`'s entries are logged under now.
    fn epoch(&mut self, split: &Split) -> usize {
        *self.current.entry(split.clone()).or_insert(self.first)
    }
}

impl MetricLogger for EpochFileLogger {
    fn log(&mut self, update: MetricsUpdate, _counted: usize, split: &Split) {
        let epoch = self.epoch(split);
        self.inner.log(update, epoch, split);
    }

    fn read_numeric(
        &mut self,
        name: &str,
        epoch: usize,
        split: &Split,
    ) -> Result<Vec<NumericEntry>, String> {
        self.inner.read_numeric(name, epoch, split)
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.inner.log_metric_definition(definition);
    }

    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        // The summary carries the learner's own epoch number, so the next epoch is exact
        // from here on.
        self.current
            .insert(summary.split.clone(), summary.epoch_number + 1);
        self.inner.log_epoch_summary(summary);
    }
}
