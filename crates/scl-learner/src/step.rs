//! burn-train's `TrainStep` and `InferenceStep` for an `scl-models` network: [`SclLearner`]
//! wraps the [`SclModel`] with what it is trained with ([`Objective`]: SupCon on the views of
//! each batch, with any `scl-loss` configuration, or cross-entropy of the classifier head).
//!
//! Training batches are `scl_data::SclBatch`es (the views of every example, sample-major);
//! evaluation batches are [`EvalBatch`]es, one view, tagged with the set they come from, so
//! that the geometry metrics ([`crate::metrics`]) measure the training embeddings and classify
//! the test embeddings by the training class means in one validation pass
//! ([`crate::evaluation_loader`]).

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{InferenceStep, ItemLazy, TrainOutput, TrainStep};
use scl_data::SclBatch;
use scl_loss::{SupConBackend, SupConLoss};
use scl_models::{LayerBackend, SclModel};

/// What the network is trained with.
#[derive(Debug, Clone)]
pub enum Objective {
    /// The SupCon loss of `scl-loss` on the embeddings of every view of each batch.
    SupCon(SupConLoss),
    /// Cross-entropy of the classifier head on every view.
    CrossEntropy,
}

/// An `scl-models` network and its [`Objective`], as burn-train trains it. Only the network's
/// parameters are recorded (checkpoints hold the [`SclModel`]'s record).
#[derive(Module, Debug)]
pub struct SclLearner<B: Backend> {
    /// The network.
    pub model: SclModel<B>,
    /// What it is trained with.
    #[module(skip)]
    pub objective: Objective,
}

impl<B: Backend> SclLearner<B> {
    /// `model` trained with `objective`.
    pub fn new(model: SclModel<B>, objective: Objective) -> Self {
        Self { model, objective }
    }
}

/// Which set an evaluated batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The training set (eval mode, one view): the geometry is measured on it and its class
    /// means classify the test set.
    Train,
    /// The test set.
    Test,
}

/// An evaluation batch: one view of each example, and the set it comes from.
#[derive(Debug, Clone)]
pub struct EvalBatch<B: Backend> {
    /// The batch (`views` is 1 for evaluation).
    pub batch: SclBatch<B>,
    /// Where its examples come from.
    pub part: Part,
}

/// What a step gives burn-train's metrics: the loss, the L2-normalised embeddings of the first
/// view of each example and the labels.
#[derive(Debug, Clone)]
pub struct SclOutput<B: Backend> {
    /// The batch's loss, `[1]`.
    pub loss: Tensor<B, 1>,
    /// `[N, d]`, view 0 of every example.
    pub embeddings: Tensor<B, 2>,
    /// `[N]`.
    pub labels: Tensor<B, 1, Int>,
    /// The set the batch comes from (training batches: [`Part::Train`]).
    pub part: Part,
}

/// [`SclOutput`] read back to the host, as metrics receive it.
#[derive(Debug, Clone)]
pub struct SclOutputSync {
    /// The batch's loss.
    pub loss: f64,
    /// `[N, d]` row-major.
    pub embeddings: std::sync::Arc<Vec<f32>>,
    /// d.
    pub dim: usize,
    /// `[N]`.
    pub labels: std::sync::Arc<Vec<usize>>,
    /// The set the batch comes from.
    pub part: Part,
}

impl<B: Backend> ItemLazy for SclOutput<B> {
    type ItemSync = SclOutputSync;

    fn sync(self) -> SclOutputSync {
        let dim = self.embeddings.dims()[1];
        let loss = self.loss.into_data().convert::<f64>();
        let embeddings = self.embeddings.into_data().convert::<f32>();
        let labels = self.labels.into_data().convert::<i64>();
        SclOutputSync {
            loss: loss.iter::<f64>().next().unwrap_or(f64::NAN),
            embeddings: std::sync::Arc::new(embeddings.iter::<f32>().collect()),
            dim,
            labels: std::sync::Arc::new(labels.iter::<i64>().map(|l| l as usize).collect()),
            part: self.part,
        }
    }
}

impl<B: LayerBackend + SupConBackend> SclLearner<B> {
    /// The loss of a batch of `views` views per example, and the embeddings of view 0.
    fn forward(&self, batch: SclBatch<B>, part: Part) -> SclOutput<B> {
        let n = batch.labels.dims()[0];
        let v = batch.views;
        let (loss, z) = match &self.objective {
            Objective::SupCon(loss) => {
                let z = self.model.embed(batch.images);
                let d = z.dims()[1];
                let z = z.reshape([n, v, d]);
                let first = z.clone().slice([0..n, 0..1, 0..d]).reshape([n, d]);
                (loss.forward(z, Some(batch.labels.clone())), first)
            }
            Objective::CrossEntropy => {
                let (h, logits) = self.model.features_and_logits(batch.images);
                let d = h.dims()[1];
                let targets = batch
                    .labels
                    .clone()
                    .unsqueeze_dim::<2>(1)
                    .repeat_dim(1, v)
                    .reshape([n * v]);
                let loss = CrossEntropyLossConfig::new()
                    .init(&logits.device())
                    .forward(logits, targets)
                    .reshape([1]);
                let first = h
                    .reshape([n, v, d])
                    .slice([0..n, 0..1, 0..d])
                    .reshape([n, d]);
                (loss, scl_models::l2_normalize(first))
            }
        };
        SclOutput {
            loss,
            embeddings: z,
            labels: batch.labels,
            part,
        }
    }
}

impl<B> TrainStep for SclLearner<B>
where
    B: AutodiffBackend + LayerBackend + SupConBackend,
    B::InnerBackend: LayerBackend + SupConBackend,
{
    type Input = SclBatch<B>;
    type Output = SclOutput<B>;

    fn step(&self, batch: SclBatch<B>) -> TrainOutput<SclOutput<B>> {
        let output = self.forward(batch, Part::Train);
        let grads = output.loss.backward();
        // The metrics get the values, not the graph.
        let output = SclOutput {
            loss: output.loss.detach(),
            embeddings: output.embeddings.detach(),
            ..output
        };
        TrainOutput::new(self, grads, output)
    }
}

impl<B: LayerBackend + SupConBackend> InferenceStep for SclLearner<B> {
    type Input = EvalBatch<B>;
    type Output = SclOutput<B>;

    fn step(&self, batch: EvalBatch<B>) -> SclOutput<B> {
        // One view cannot form a SupCon positive pair: the loss of an evaluation batch is
        // that of its single view against the others of its class.
        self.forward(batch.batch, batch.part)
    }
}
