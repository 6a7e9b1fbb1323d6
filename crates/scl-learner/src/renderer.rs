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

use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricAttributes, MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};

/// One line per epoch on standard error (see the module documentation).
#[derive(Default)]
pub struct EpochLines {
    /// Metric names and units by id.
    names: Vec<(MetricId, String, Option<String>)>,
    train: BTreeMap<String, String>,
    valid: BTreeMap<String, String>,
    /// The number of epochs of the run.
    total: usize,
}

impl EpochLines {
    /// A renderer that has printed nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn name_of(&self, id: &MetricId) -> (String, Option<String>) {
        self.names.iter().find(|(i, _, _)| i == id).map_or_else(
            || (format!("{id:?}"), None),
            |(_, n, u)| (n.clone(), u.clone()),
        )
    }

    /// Keeps a metric's value of the epoch: the final value burn-train computes at the end of
    /// the split (per-batch values of a split are not kept).
    fn record(&mut self, valid: bool, state: MetricState) {
        let (entry, text) = match state {
            MetricState::Numeric(entry, Some(NumericEntry::Final(v))) => {
                let (_, unit) = self.name_of(&entry.metric_id);
                let unit = unit.map(|u| format!(" {u}")).unwrap_or_default();
                let text = if v.is_finite() {
                    format!("{}{unit}", significant(v))
                } else {
                    entry.serialized_entry.formatted.clone()
                };
                (entry, text)
            }
            MetricState::Generic(entry) => {
                let text = entry.serialized_entry.formatted.clone();
                (entry, text)
            }
            MetricState::Numeric(..) => return,
        };
        let (name, _) = self.name_of(&entry.metric_id);
        let values = if valid {
            &mut self.valid
        } else {
            &mut self.train
        };
        values.insert(name, text);
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

/// Four significant digits, without an exponent for everyday magnitudes.
fn significant(v: f64) -> String {
    let magnitude = if v == 0.0 {
        0
    } else {
        v.abs().log10().floor() as i32
    };
    let decimals = (3 - magnitude).clamp(0, 8) as usize;
    format!("{v:.decimals$}")
}

impl MetricsRendererTraining for EpochLines {
    fn update_train(&mut self, state: MetricState) {
        self.record(false, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(true, state);
    }
}

impl MetricsRendererEvaluation for EpochLines {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record(true, state);
    }
}

impl TrainingProgressLogger for EpochLines {
    fn start(
        &mut self,
        total_epochs: usize,
        _starting_epoch: usize,
        _total_items: Option<usize>,
        _label: Option<&str>,
    ) {
        self.total = total_epochs;
    }

    /// burn-train calls it after the validation split of `epoch` (the true epoch number, also
    /// after a resume): the line of the epoch.
    fn update_epoch(&mut self, epoch: usize) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "epoch {epoch}/{}: train {} | valid {}",
            self.total,
            self.line(&self.train),
            self.line(&self.valid)
        );
        self.train.clear();
        self.valid.clear();
    }

    fn start_split(&mut self, _split: &str, _total_items: usize) {}

    fn update_split(&mut self, _items_processed: usize) {}

    fn end_split(&mut self) {}

    fn end(&mut self) {}

    /// burn-train's events are one "Iteration" per step: one line per epoch is the point.
    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for EpochLines {
    fn start_global_progress(&mut self, _total_tests: usize) {}

    fn start_test(&mut self, _name: &str, _total_items: usize) {}

    fn update_test_progress(&mut self, _items_processed: usize) {}

    fn end_test(&mut self) {}

    fn end_global_progress(&mut self) {}

    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRenderer for EpochLines {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        if !self
            .names
            .iter()
            .any(|(id, _, _)| *id == definition.metric_id)
        {
            let unit = match &definition.attributes {
                MetricAttributes::Numeric(numeric) => numeric.unit.clone(),
                _ => None,
            };
            self.names
                .push((definition.metric_id, definition.name.to_string(), unit));
        }
    }
}
