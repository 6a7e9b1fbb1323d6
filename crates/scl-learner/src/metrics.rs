//! The geometry of the learned class means as burn-train metrics, measured once per epoch:
//! OF distance, centred-ETF distance, NC1, mean cosine between class means (on the training
//! embeddings) and the balanced nearest-class-mean accuracy of the test embeddings with the
//! TRAINING class means, as `scl_geometry` defines them.
//!
//! A [`GeometryMetric`] keeps the embeddings of every batch of an epoch (as tensors, on the
//! device the step computed them on) and measures them once, in burn-train's `Metric::compute`
//! at the end of the split: it reads the epoch's embeddings back in one transfer and logs one
//! entry, `NumericEntry::Final`, which burn-train takes as the epoch's value (checkpoint
//! selection, early stopping). Registered on the validation split with
//! [`crate::evaluation_loader`] (the training set in eval mode, then the test set), it gives
//! the protocol of the workspace's own runs; on the training split it measures the embeddings
//! the training batches produced during the epoch (first view, train mode).

use std::sync::Arc;

use burn::tensor::{Int, Tensor, TensorReadError};
use burn::train::metric::{
    Adaptor, LossInput, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric,
    NumericAttributes, NumericEntry, SerializedEntry,
};
use scl_geometry::Embeddings;

use crate::step::{Part, SclOutput};

/// What the geometry metrics read from a step: the embeddings of view 0, the labels and the
/// set they come from.
#[derive(Debug, Clone)]
pub struct GeometryInput {
    /// `[N, d]`.
    pub embeddings: Tensor<2>,
    /// `[N]`.
    pub labels: Tensor<1, Int>,
    /// Where the batch comes from.
    pub part: Part,
}

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
    /// This epoch's batches, per part.
    train: Vec<(Tensor<2>, Tensor<1, Int>)>,
    test: Vec<(Tensor<2>, Tensor<1, Int>)>,
    /// The value of the last finished epoch.
    last: Option<f64>,
}

/// Embeddings and labels read back to the host.
struct Host {
    values: Vec<f64>,
    labels: Vec<usize>,
    dim: usize,
}

impl Host {
    /// The batches of one part, joined and read back in one transfer.
    fn read(parts: &[(Tensor<2>, Tensor<1, Int>)]) -> Result<Self, TensorReadError> {
        if parts.is_empty() {
            return Ok(Self {
                values: Vec::new(),
                labels: Vec::new(),
                dim: 0,
            });
        }
        let z = Tensor::cat(parts.iter().map(|p| p.0.clone()).collect(), 0);
        let dim = z.dims()[1];
        let y = Tensor::cat(parts.iter().map(|p| p.1.clone()).collect(), 0);
        Ok(Self {
            values: z.try_into_vec_as::<f64>()?,
            labels: y
                .try_into_vec_as::<i64>()?
                .into_iter()
                .map(|l| l as usize)
                .collect(),
            dim,
        })
    }

    fn embeddings(&self) -> Option<Embeddings> {
        Embeddings::new(self.labels.len(), self.dim, self.values.clone()).ok()
    }
}

impl GeometryMetric {
    /// `measure` of the class means of `num_classes` classes.
    pub fn new(measure: GeometryMeasure, num_classes: usize) -> Self {
        Self {
            measure,
            num_classes,
            name: Arc::new(measure.name().to_string()),
            train: Vec::new(),
            test: Vec::new(),
            last: None,
        }
    }

    /// The value of the last finished epoch (`None` before the first, or when it is not
    /// defined: a class without examples, or accuracy without a test set).
    pub fn last_value(&self) -> Option<f64> {
        self.last
    }

    fn unit(&self) -> Option<&'static str> {
        (self.measure == GeometryMeasure::BalancedNccAccuracy).then_some("%")
    }

    /// Why the measure of the collected embeddings is undefined.
    fn undefined(&self, train: &Host, test: &Host) -> &'static str {
        if self.measure == GeometryMeasure::BalancedNccAccuracy
            && (test.labels.is_empty() || train.labels.is_empty())
        {
            "undefined (it needs training and test embeddings in one pass)"
        } else {
            "undefined (a class without embeddings)"
        }
    }

    /// The measure of the epoch's embeddings.
    fn measure_of(&self, train: &Host, test: &Host) -> Option<f64> {
        // The geometry is that of the training embeddings; without any (a loader of test
        // batches only), of the test ones.
        let measured = if train.labels.is_empty() { test } else { train };
        let z = measured.embeddings()?;
        if self.measure == GeometryMeasure::BalancedNccAccuracy {
            let classes: Vec<usize> = (0..self.num_classes).collect();
            let means = scl_geometry::class_means(&z, &measured.labels, &classes).ok()?;
            if test.labels.is_empty() || train.labels.is_empty() {
                return None;
            }
            let test_z = test.embeddings()?;
            let (_, balanced, _) = scl_geometry::nearest_class_mean(&test_z, &test.labels, &means);
            return Some(100.0 * balanced);
        }
        let g = scl_geometry::geometry(&z, &measured.labels, self.num_classes).ok()?;
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
    type Input = GeometryInput;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: self.unit().map(str::to_string),
            higher_is_better: self.measure == GeometryMeasure::BalancedNccAccuracy,
        }
        .into()
    }

    fn update(
        &mut self,
        item: &GeometryInput,
        _metadata: &MetricMetadata,
    ) -> Result<SerializedEntry, TensorReadError> {
        let part = match item.part {
            Part::Train => &mut self.train,
            Part::Test => &mut self.test,
        };
        part.push((item.embeddings.clone(), item.labels.clone()));
        // Nothing per batch: the value is the epoch's, in `compute`.
        Ok(SerializedEntry::not_available(self.unit()))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        if self.train.is_empty() && self.test.is_empty() {
            self.last = None;
            return Ok(SerializedEntry::not_available(self.unit()));
        }
        let (train, test) = (Host::read(&self.train)?, Host::read(&self.test)?);
        self.last = self.measure_of(&train, &test);
        let unit = self.unit().map(|u| format!(" {u}")).unwrap_or_default();
        Ok(match self.last {
            Some(v) => {
                SerializedEntry::new(format!("{v:.4}{unit}"), NumericEntry::Final(v).serialize())
            }
            // Not an error (that would stop training): the value is not a number, and the
            // entry says why.
            None => SerializedEntry::new(
                self.undefined(&train, &test).to_string(),
                NumericEntry::Final(f64::NAN).serialize(),
            ),
        })
    }

    fn clear(&mut self) {
        self.train.clear();
        self.test.clear();
    }
}

impl Numeric for GeometryMetric {
    fn value(&self) -> Option<NumericEntry> {
        None
    }

    fn running_value(&self) -> Option<NumericEntry> {
        None
    }

    fn final_value(&self) -> NumericEntry {
        NumericEntry::Final(self.last.unwrap_or(f64::NAN))
    }
}

impl Adaptor<GeometryInput> for SclOutput {
    fn adapt(&self) -> GeometryInput {
        GeometryInput {
            embeddings: self.embeddings.clone(),
            labels: self.labels.clone(),
            part: self.part,
        }
    }
}

/// burn-train's `LossMetric` reads the loss of a step, weighted by the batch's examples (its
/// weight is the length of the tensor it gets).
impl Adaptor<LossInput> for SclOutput {
    fn adapt(&self) -> LossInput {
        let n = self.labels.dims()[0].max(1);
        LossInput::new(self.loss.clone().repeat_dim(0, n))
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
