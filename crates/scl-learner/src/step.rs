//! burn-train's `TrainStep` and `InferenceStep` for a contrastive encoder: [`SclLearner`]
//! wraps any [`Encoder`] (the networks of `scl-models` are one: [`SclModel`]) with what it is
//! trained with ([`Objective`]: SupCon on the views of each batch, with any `scl-loss`
//! configuration, or cross-entropy of a classifier head).
//!
//! Training batches are `scl_data::SclBatch`es (the views of every example, sample-major);
//! evaluation batches are [`EvalBatch`]es, one view, tagged with the set they come from, so
//! that the geometry metrics ([`crate::metrics`]) measure the training embeddings and classify
//! the test embeddings by the training class means in one validation pass
//! ([`crate::evaluation_loader`]).

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{ExecutionError, Int, Tensor};
use burn::train::{InferenceStep, ItemLazy, TrainOutput, TrainStep};
use scl_data::SclBatch;
use scl_loss::SupConLoss;
use scl_models::SclModel;

/// A network that maps images to embeddings: what [`SclLearner`] trains. Implement it for
/// your own Burn module to train it with SupCon and batch-binding under burn-train.
///
/// ```
/// use burn::module::Module;
/// use burn::nn::{Linear, LinearConfig};
/// use burn::tensor::{Device, Tensor};
/// use scl_learner::Encoder;
///
/// /// A linear map of the flattened image, L2-normalised.
/// #[derive(Module, Debug)]
/// struct LinearEncoder {
///     linear: Linear,
/// }
///
/// impl Encoder for LinearEncoder {
///     fn embed(&self, images: Tensor<4>) -> Tensor<2> {
///         scl_loss::l2_normalize(self.linear.forward(images.flatten(1, 3)))
///     }
/// }
///
/// let device = Device::flex();
/// let encoder = LinearEncoder { linear: LinearConfig::new(64, 16).init(&device) };
/// let z = encoder.embed(Tensor::zeros([3, 1, 8, 8], &device));
/// assert_eq!(z.dims(), [3, 16]);
/// ```
pub trait Encoder: Module + burn::module::ModuleDisplay + core::fmt::Display + 'static {
    /// The embeddings the contrastive loss sees, one row per image: `[N, d]` for images
    /// `[N, C, H, W]` (L2-normalise them here if your loss does not).
    fn embed(&self, images: Tensor<4>) -> Tensor<2>;

    /// For [`Objective::CrossEntropy`]: the embeddings the metrics measure (`[N, d]`,
    /// normalised as [`Encoder::embed`]'s) and the class logits (`[N, classes]`) of one
    /// forward pass. `None` (the default): the encoder has no classifier head.
    fn embed_and_logits(&self, images: Tensor<4>) -> Option<(Tensor<2>, Tensor<2>)> {
        let _ = images;
        None
    }
}

/// The networks of `scl-models`: [`SclModel::embed`], and its classifier head for
/// cross-entropy.
impl Encoder for SclModel {
    fn embed(&self, images: Tensor<4>) -> Tensor<2> {
        SclModel::embed(self, images)
    }

    fn embed_and_logits(&self, images: Tensor<4>) -> Option<(Tensor<2>, Tensor<2>)> {
        let (h, logits) = self.features_and_logits(images);
        Some((scl_models::l2_normalize(h), logits))
    }
}

/// What the network is trained with.
#[derive(Debug, Clone)]
pub enum Objective {
    /// The SupCon loss of `scl-loss` on the embeddings of every view of each batch.
    SupCon(SupConLoss),
    /// Cross-entropy of the classifier head on every view (needs an encoder whose
    /// [`Encoder::embed_and_logits`] gives logits, as the networks of `scl-models` do).
    CrossEntropy,
}

/// An [`Encoder`] and its [`Objective`], as burn-train trains it. Only the encoder's
/// parameters are recorded (checkpoints hold the encoder's record).
#[derive(Module, Debug)]
pub struct SclLearner<M: Encoder = SclModel> {
    /// The network.
    pub model: M,
    /// What it is trained with.
    #[module(skip)]
    pub objective: Objective,
}

impl<M: Encoder> SclLearner<M> {
    /// `model` trained with `objective`.
    pub fn new(model: M, objective: Objective) -> Self {
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
pub struct EvalBatch {
    /// The batch (`views` is 1 for evaluation).
    pub batch: SclBatch,
    /// Where its examples come from.
    pub part: Part,
}

/// What a step gives burn-train's metrics: the loss, the L2-normalised embeddings of the first
/// view of each example and the labels, on the device they were computed on.
#[derive(Debug, Clone)]
pub struct SclOutput {
    /// The batch's loss, `[1]`.
    pub loss: Tensor<1>,
    /// `[N, d]`, view 0 of every example.
    pub embeddings: Tensor<2>,
    /// `[N]`.
    pub labels: Tensor<1, Int>,
    /// The set the batch comes from (training batches: [`Part::Train`]).
    pub part: Part,
}

/// The metrics get the values, not the graph: the queued work is flushed and the tensors
/// leave the autodiff graph; nothing is read back here (the metrics read what they need).
impl ItemLazy for SclOutput {
    fn sync(self) -> Result<Self, ExecutionError> {
        self.loss.device().flush()?;
        Ok(Self {
            loss: self.loss.without_autodiff(),
            embeddings: self.embeddings.without_autodiff(),
            labels: self.labels.without_autodiff(),
            part: self.part,
        })
    }
}

impl<M: Encoder> SclLearner<M> {
    /// The loss of a batch of `views` views per example, and the embeddings of view 0.
    ///
    /// # Panics
    /// With [`Objective::CrossEntropy`] when the encoder gives no logits.
    fn forward(&self, batch: SclBatch, part: Part) -> SclOutput {
        let n = batch.labels.dims()[0];
        let v = batch.views;
        let first_view = |z: Tensor<2>| {
            let d = z.dims()[1];
            z.reshape([n, v, d])
                .slice([0..n, 0..1, 0..d])
                .reshape([n, d])
        };
        let (loss, z) = match &self.objective {
            Objective::SupCon(loss) => {
                let z = self.model.embed(batch.images);
                let d = z.dims()[1];
                let first = first_view(z.clone());
                (
                    loss.forward(z.reshape([n, v, d]), Some(batch.labels.clone())),
                    first,
                )
            }
            Objective::CrossEntropy => {
                let (z, logits) = self.model.embed_and_logits(batch.images).expect(
                    "Objective::CrossEntropy needs an encoder with a classifier head \
                     (Encoder::embed_and_logits returned None)",
                );
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
                (loss, first_view(z))
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

impl<M: Encoder> TrainStep for SclLearner<M> {
    type Input = SclBatch;
    type Output = SclOutput;

    fn step(&self, batch: SclBatch) -> TrainOutput<SclOutput> {
        let output = self.forward(batch, Part::Train);
        let grads = output.loss.backward();
        TrainOutput::new(self, grads, output)
    }
}

impl<M: Encoder> InferenceStep for SclLearner<M> {
    type Input = EvalBatch;
    type Output = SclOutput;

    fn step(&self, batch: EvalBatch) -> SclOutput {
        // One view cannot form a SupCon positive pair: the loss of an evaluation batch is
        // that of its single view against the others of its class.
        self.forward(batch.batch, batch.part)
    }
}
