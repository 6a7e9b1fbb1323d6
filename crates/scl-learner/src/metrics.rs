//! The geometry of the learned class means as burn-train metrics, accumulated over an epoch:
//! OF distance, centred-ETF distance, NC1, mean cosine between class means (on the training
//! embeddings) and the balanced nearest-class-mean accuracy of the test embeddings with the
//! TRAINING class means, as `scl_geometry` defines them.
//!
//! A [`GeometryMetric`] collects the embeddings of every batch of an epoch and computes its
//! value once, at the epoch's last batch (when the loader's progress reaches its total);
//! until then it logs entries of weight 0, so burn-train's epoch value (the weighted mean of
//! the logged entries, which checkpoint selection and early stopping use) is exactly the
//! measure of the whole epoch. Registered on the validation split with
//! [`crate::evaluation_loader`] (the training set in eval mode, then the test set), it gives
//! the protocol of the workspace's own runs; on the training split it measures the embeddings
//! the training batches produced during the epoch (first view, train mode).

use std::sync::Arc;

use burn::backend::Flex;
use burn::prelude::*;
use burn::train::metric::{
    Adaptor, LossInput, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric,
    NumericAttributes, NumericEntry, SerializedEntry,
};
use scl_geometry::Embeddings;

use crate::step::{Part, SclOutputSync};

/// Which measure a [`GeometryMetric`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometryMeasure {
    /// Distance of the class-mean Gram matrix to an orthogonal frame (lower is closer).
    OfDistance,
    /// Distance to a simplex equiangular tight frame.
    EtfDistance,
    /// Within-class variability relative to between-class (NC1).
    Nc1,
    /// Mean cosine between distinct class means.
    MeanCosine,
    /// Balanced accuracy of nearest-class-mean classification of the test embeddings with the
    /// training class means (in %).
    BalancedNccAccuracy,
}

impl GeometryMeasure {
    /// The metric's name, as renderers and logs show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::OfDistance => "OF distance",
            Self::EtfDistance => "ETF distance",
            Self::Nc1 => "NC1",
            Self::MeanCosine => "Mean cosine",
            Self::BalancedNccAccuracy => "Balanced NCC accuracy",
        }
    }
}

/// One geometry measure as a burn-train metric (see the module documentation).
#[derive(Debug, Clone)]
pub struct GeometryMetric {
    measure: GeometryMeasure,
    num_classes: usize,
    name: MetricName,
    dim: usize,
    train: (Vec<f32>, Vec<usize>),
    test: (Vec<f32>, Vec<usize>),
    /// The value of the last finished epoch.
    last: Option<f64>,
}

impl GeometryMetric {
    /// `measure` of the class means of `num_classes` classes.
    pub fn new(measure: GeometryMeasure, num_classes: usize) -> Self {
        Self {
            measure,
            num_classes,
            name: Arc::new(measure.name().to_string()),
            dim: 0,
            train: (Vec::new(), Vec::new()),
            test: (Vec::new(), Vec::new()),
            last: None,
        }
    }

    /// The value of the last finished epoch (`None` before the first, or when it is not
    /// defined: a class without examples, or accuracy without a test set).
    pub fn last_value(&self) -> Option<f64> {
        self.last
    }

    /// Why the measure of the collected embeddings is undefined.
    fn undefined(&self) -> &'static str {
        if self.measure == GeometryMeasure::BalancedNccAccuracy
            && (self.test.1.is_empty() || self.train.1.is_empty())
        {
            "undefined (it needs training and test embeddings in one pass)"
        } else {
            "undefined (a class without embeddings)"
        }
    }

    /// The measure of the collected embeddings.
    fn compute(&self) -> Option<f64> {
        let embeddings = |(values, labels): &(Vec<f32>, Vec<usize>)| {
            let rows = labels.len();
            Embeddings::new(
                rows,
                self.dim,
                values.iter().map(|&v| f64::from(v)).collect(),
            )
            .ok()
        };
        // The geometry is that of the training embeddings; without any (a loader of test
        // batches only), of the test ones.
        let measured = if self.train.1.is_empty() {
            &self.test
        } else {
            &self.train
        };
        let z = embeddings(measured)?;
        if self.measure == GeometryMeasure::BalancedNccAccuracy {
            let classes: Vec<usize> = (0..self.num_classes).collect();
            let means = scl_geometry::class_means(&z, &measured.1, &classes).ok()?;
            if self.test.1.is_empty() || self.train.1.is_empty() {
                return None;
            }
            let test = embeddings(&self.test)?;
            let (_, balanced, _) = scl_geometry::nearest_class_mean(&test, &self.test.1, &means);
            return Some(100.0 * balanced);
        }
        let g = scl_geometry::geometry(&z, &measured.1, self.num_classes).ok()?;
        Some(match self.measure {
            GeometryMeasure::OfDistance => g.of_distance,
            GeometryMeasure::EtfDistance => g.etf_distance,
            GeometryMeasure::Nc1 => g.nc1,
            GeometryMeasure::MeanCosine => g.mean_cosine,
            GeometryMeasure::BalancedNccAccuracy => unreachable!("handled above"),
        })
    }
}

impl Metric for GeometryMetric {
    type Input = SclOutputSync;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: (self.measure == GeometryMeasure::BalancedNccAccuracy).then(|| "%".to_string()),
            higher_is_better: self.measure == GeometryMeasure::BalancedNccAccuracy,
        }
        .into()
    }

    fn update(&mut self, item: &SclOutputSync, metadata: &MetricMetadata) -> SerializedEntry {
        self.dim = item.dim;
        let (values, labels) = match item.part {
            Part::Train => &mut self.train,
            Part::Test => &mut self.test,
        };
        values.extend_from_slice(&item.embeddings);
        labels.extend_from_slice(&item.labels);
        let progress = &metadata.progress;
        let done = progress.items_total > 0 && progress.items_processed >= progress.items_total;
        if !done {
            // Weight 0: the epoch value is the measure of the whole epoch alone.
            let seen = self.train.1.len() + self.test.1.len();
            return SerializedEntry::new(
                format!("collecting ({seen} embeddings)"),
                NumericEntry::Aggregated {
                    aggregated_value: 0.0,
                    count: 0,
                }
                .serialize(),
            );
        }
        self.last = self.compute();
        match self.last {
            Some(v) => SerializedEntry::new(
                format!("{v:.4}"),
                NumericEntry::Aggregated {
                    aggregated_value: v,
                    count: self.train.1.len() + self.test.1.len(),
                }
                .serialize(),
            ),
            None => SerializedEntry::new(
                self.undefined().to_string(),
                NumericEntry::Aggregated {
                    aggregated_value: 0.0,
                    count: 0,
                }
                .serialize(),
            ),
        }
    }

    fn clear(&mut self) {
        self.train = (Vec::new(), Vec::new());
        self.test = (Vec::new(), Vec::new());
    }
}

impl Numeric for GeometryMetric {
    fn value(&self) -> NumericEntry {
        NumericEntry::Value(self.last.unwrap_or(f64::NAN))
    }

    fn running_value(&self) -> NumericEntry {
        self.value()
    }
}

impl Adaptor<SclOutputSync> for SclOutputSync {
    fn adapt(&self) -> SclOutputSync {
        self.clone()
    }
}

/// burn-train's `LossMetric` reads the loss of a step, weighted by the batch's examples.
impl Adaptor<LossInput<Flex>> for SclOutputSync {
    fn adapt(&self) -> LossInput<Flex> {
        let n = self.labels.len().max(1);
        LossInput::new(Tensor::from_data(
            TensorData::new(vec![self.loss as f32; n], [n]),
            &Default::default(),
        ))
    }
}

/// The five geometry metrics of `num_classes` classes, for `SupervisedTraining::metrics`.
pub fn geometry_metrics(
    num_classes: usize,
) -> (
    GeometryMetric,
    GeometryMetric,
    GeometryMetric,
    GeometryMetric,
    GeometryMetric,
) {
    let m = |measure| GeometryMetric::new(measure, num_classes);
    (
        m(GeometryMeasure::OfDistance),
        m(GeometryMeasure::EtfDistance),
        m(GeometryMeasure::Nc1),
        m(GeometryMeasure::MeanCosine),
        m(GeometryMeasure::BalancedNccAccuracy),
    )
}
