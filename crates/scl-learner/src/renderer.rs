//! A burn-train renderer for logs and terminals without a full-screen interface: one line
//! per epoch with the last value of every metric, training and validation.
//!
//! burn-train's own choice without a terminal prints a progress record for every batch and no
//! metric values; its terminal interface takes the whole screen. [`EpochLines`] prints what a
//! log of a sweep or a CI run wants to keep:
//!
//! ```text
//! epoch 2/4: train Loss 4.812 | valid Loss 4.737, OF distance 0.4012, ..., Balanced NCC accuracy 93.2 %
//! ```

use std::collections::BTreeMap;
use std::io::Write;

use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

/// One line per epoch on standard error (see the module documentation).
#[derive(Default)]
pub struct EpochLines {
    /// Metric names by id.
    names: Vec<(MetricId, String)>,
    train: BTreeMap<String, String>,
    valid: BTreeMap<String, String>,
    /// The last epoch a line was printed for.
    printed: usize,
}

impl EpochLines {
    /// A renderer that has printed nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn name_of(&self, id: &MetricId) -> String {
        self.names
            .iter()
            .find(|(i, _)| i == id)
            .map_or_else(|| format!("{id:?}"), |(_, n)| n.clone())
    }

    fn record(&mut self, valid: bool, state: MetricState) {
        let entry = match state {
            MetricState::Generic(e) | MetricState::Numeric(e, _) => e,
        };
        let name = self.name_of(&entry.metric_id);
        let values = if valid {
            &mut self.valid
        } else {
            &mut self.train
        };
        values.insert(name, entry.serialized_entry.formatted);
    }

    /// The metrics of a split: the loss first, then the others by name (burn-train registers
    /// them in no fixed order, and lines of a log should compare column by column).
    fn line(&self, values: &BTreeMap<String, String>) -> String {
        let loss = values.get_key_value("Loss");
        loss.into_iter()
            .chain(values.iter().filter(|(name, _)| name.as_str() != "Loss"))
            .map(|(name, v)| format!("{name} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl MetricsRendererTraining for EpochLines {
    fn update_train(&mut self, state: MetricState) {
        self.record(false, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(true, state);
    }

    fn render_train(&mut self, _item: TrainingProgress, _indicators: Vec<ProgressType>) {}

    fn render_valid(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let epoch = item.global_progress.items_processed;
        let finished = item
            .progress
            .as_ref()
            .is_some_and(|p| p.items_processed >= p.items_total);
        if finished && epoch > self.printed {
            self.printed = epoch;
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "epoch {epoch}/{}: train {} | valid {}",
                item.global_progress.items_total,
                self.line(&self.train),
                self.line(&self.valid)
            );
        }
    }
}

impl MetricsRendererEvaluation for EpochLines {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record(true, state);
    }

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for EpochLines {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        if !self.names.iter().any(|(id, _)| *id == definition.metric_id) {
            self.names.push((definition.metric_id, definition.name));
        }
    }
}
