//! Burn models for supervised contrastive learning, each with the paper's switch: a ReLU on
//! the final layer (`FinalActivation::Relu`) or not (`None`).
//!
//! An [`SclModel`] is a backbone ([`Mlp`], [`SmallCnn`], [`ResNet18`] with the CIFAR stem,
//! [`DenseNet`]-BC), an optional linear projection head, the final activation, optional L2
//! normalisation, and a linear classifier head for cross-entropy training.
//!
//! Where the switch sits: without a projection head, inside the backbone at its last layer
//! (for ResNet-18 the ReLU at the end of the last residual block; for DenseNet the ReLU after
//! the final batch norm; for the MLP and the small CNN after the last linear layer). With a
//! projection head, the backbone keeps all its ReLUs and the switch acts on the projection's
//! output ("a ReLU after the projection layer").
//!
//! ```
//! use burn::prelude::*;
//! use scl_models::{Architecture, FinalActivation, MlpConfig, SclModelConfig};
//!
//! let device = Device::flex();
//! let config = SclModelConfig::new(Architecture::Mlp(MlpConfig::new(64, vec![128, 32])), 10)
//!     .with_final_activation(FinalActivation::Relu);
//! let model = config.init(&device);
//! let images = Tensor::<4>::zeros([5, 1, 8, 8], &device);
//! let z = model.embed(images.clone()); // [5, 32], non-negative, unit rows
//! let logits = model.logits(images); // [5, 10]
//! assert_eq!(z.dims(), [5, 32]);
//! assert_eq!(logits.dims(), [5, 10]);
//! ```
//!
//! Initialisation ([`WeightInit`]): Burn's defaults, or the authors' per network
//! (`WeightInit::Authors`: Kaiming-normal convolutions, fan_out for ResNet-18 as torchvision
//! does, fan_in for DenseNet; batch norm 1 and 0; linear layers PyTorch's default, which is
//! Burn's).
#![warn(missing_docs)]

mod cnn;
mod densenet;
mod mlp;
mod resnet;

pub use cnn::{SmallCnn, SmallCnnConfig};
pub use densenet::{DenseNet, DenseNetConfig};
pub use mlp::{Mlp, MlpConfig};
pub use resnet::{ResNet18, ResNet18Config};
/// The convolutions' initialisation and the final activation, plain types shared with run
/// configurations and records.
pub use scl_types::model::{FinalActivation, WeightInit};

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The initializer of a convolution under `init`: Kaiming-normal for ReLU networks (gain
/// `sqrt(2)`) on fan_out or fan_in for [`WeightInit::Authors`], Burn's default otherwise
/// (`None`).
pub(crate) fn conv_initializer(init: WeightInit, fan_out: bool) -> Option<burn::nn::Initializer> {
    match init {
        WeightInit::Burn => None,
        WeightInit::Authors => Some(burn::nn::Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: fan_out,
        }),
    }
}

/// A convolution's configuration with `init`'s initializer (fan_out or fan_in).
pub(crate) fn with_init(
    config: burn::nn::conv::Conv2dConfig,
    init: WeightInit,
    fan_out: bool,
) -> burn::nn::conv::Conv2dConfig {
    match conv_initializer(init, fan_out) {
        Some(initializer) => config.with_initializer(initializer),
        None => config,
    }
}

/// The backbone and its configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// See [`MlpConfig`].
    Mlp(MlpConfig),
    /// See [`SmallCnnConfig`].
    SmallCnn(SmallCnnConfig),
    /// See [`ResNet18Config`].
    Resnet18(ResNet18Config),
    /// See [`DenseNetConfig`].
    Densenet(DenseNetConfig),
}

impl PartialEq for MlpConfig {
    fn eq(&self, o: &Self) -> bool {
        self.input == o.input && self.widths == o.widths && self.batch_norm == o.batch_norm
    }
}
impl PartialEq for SmallCnnConfig {
    fn eq(&self, o: &Self) -> bool {
        self.in_channels == o.in_channels
            && self.channels == o.channels
            && self.embedding == o.embedding
    }
}
impl PartialEq for ResNet18Config {
    fn eq(&self, o: &Self) -> bool {
        self.in_channels == o.in_channels && self.width == o.width
    }
}
impl PartialEq for DenseNetConfig {
    fn eq(&self, o: &Self) -> bool {
        self.in_channels == o.in_channels
            && self.growth == o.growth
            && self.blocks == o.blocks
            && self.initial == o.initial
            && self.bn_size == o.bn_size
    }
}

/// A backbone module.
// One model exists per run; the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone {
    /// See [`Mlp`].
    Mlp(Mlp),
    /// See [`SmallCnn`].
    SmallCnn(SmallCnn),
    /// See [`ResNet18`].
    Resnet18(ResNet18),
    /// See [`DenseNet`].
    Densenet(DenseNet),
}

impl Backbone {
    /// Runs the backbone; `final_relu` is the switch at its last layer.
    pub fn forward(&self, x: Tensor<4>, final_relu: bool) -> Tensor<2> {
        match self {
            Self::Mlp(m) => m.forward(x, final_relu),
            Self::SmallCnn(m) => m.forward(x, final_relu),
            Self::Resnet18(m) => m.forward(x, final_relu),
            Self::Densenet(m) => m.forward(x, final_relu),
        }
    }
}

impl Backbone {
    /// The backbone's output dimension.
    pub fn output_dim(&self) -> usize {
        match self {
            Self::Mlp(m) => m.output_dim(),
            Self::SmallCnn(m) => m.output_dim(),
            Self::Resnet18(m) => m.output_dim(),
            Self::Densenet(m) => m.output_dim(),
        }
    }
}

/// Configuration of [`SclModel`].
#[derive(Config, Debug)]
pub struct SclModelConfig {
    /// The backbone.
    pub architecture: Architecture,
    /// Number of classes (the classifier head's outputs).
    pub num_classes: usize,
    /// The paper's switch; ReLU by default, as in the authors' released models.
    #[config(default = "FinalActivation::Relu")]
    pub final_activation: FinalActivation,
    /// Output size of an optional linear projection head (none in the authors' code).
    #[config(default = "None")]
    pub projection: Option<usize>,
    /// L2-normalise the embedding in [`SclModel::embed`] (the authors do, inside the model).
    #[config(default = true)]
    pub normalize: bool,
}

/// A backbone, optional projection, final activation, optional L2 normalisation and a
/// classifier head.
#[derive(Module, Debug)]
pub struct SclModel {
    backbone: Backbone,
    projection: Option<Linear>,
    classifier: Linear,
    #[module(skip)]
    final_activation: FinalActivation,
    #[module(skip)]
    normalize: bool,
}

impl SclModelConfig {
    /// Builds the model.
    pub fn init(&self, device: &Device) -> SclModel {
        let backbone = match &self.architecture {
            Architecture::Mlp(c) => Backbone::Mlp(c.init(device)),
            Architecture::SmallCnn(c) => Backbone::SmallCnn(c.init(device)),
            Architecture::Resnet18(c) => Backbone::Resnet18(c.init(device)),
            Architecture::Densenet(c) => Backbone::Densenet(c.init(device)),
        };
        let dim = backbone.output_dim();
        let projection = self
            .projection
            .map(|p| LinearConfig::new(dim, p).init(device));
        let embed_dim = self.projection.unwrap_or(dim);
        SclModel {
            backbone,
            projection,
            classifier: LinearConfig::new(embed_dim, self.num_classes).init(device),
            final_activation: self.final_activation,
            normalize: self.normalize,
        }
    }
}

impl SclModelConfig {
    /// Roughly how many values one example's forward pass keeps for the backward pass, for
    /// images of `shape` (`[channels, height, width]`): every layer's output counted three
    /// times (the linear map or convolution, its batch norm, its activation), spatial sizes
    /// halved where the network pools or strides. A rough count for refusing sizes no machine
    /// holds before anything is allocated; it has not been measured against what a backend
    /// actually keeps, so it is not a prediction of memory use.
    pub fn activation_count(&self, shape: [usize; 3]) -> f64 {
        let f = |x: usize| x as f64;
        let plane = f(shape[1]) * f(shape[2]);
        let input = f(shape[0]) * plane;
        let body = match &self.architecture {
            Architecture::Mlp(c) => c.widths.iter().map(|&w| 3.0 * f(w)).sum::<f64>(),
            Architecture::SmallCnn(c) => {
                let [a, b] = c.channels.map(f);
                // conv-BN-ReLU at full size, then pooled; the second stage at a quarter.
                3.0 * a * plane
                    + a * plane / 4.0
                    + 3.0 * b * plane / 4.0
                    + if c.head_norm { 3.0 } else { 1.0 } * f(c.embedding)
            }
            Architecture::Resnet18(c) => {
                let w = f(c.width);
                // The stem and four stages of four convolutions, each at half the side of the
                // stage before and twice the channels.
                let stages: f64 = (0..4)
                    .map(|s| 12.0 * w * 2f64.powi(s) * plane / 4f64.powi(s))
                    .sum();
                3.0 * w * plane + stages
            }
            Architecture::Densenet(c) => {
                // After the stride-2 stem and max-pool the maps are a sixteenth of the image;
                // each layer keeps its bottleneck and its new maps, each block at a quarter of
                // the area of the block before.
                let (growth, mid) = (f(c.growth), f(c.bn_size * c.growth));
                let mut area = plane / 16.0;
                let mut ch = f(c.initial);
                let mut n = 3.0 * ch * plane / 4.0;
                for (i, &layers) in c.blocks.iter().enumerate() {
                    for _ in 0..layers {
                        n += (3.0 * ch + 3.0 * mid + growth) * area;
                        ch += growth;
                    }
                    if i + 1 < c.blocks.len() {
                        ch = (ch / 2.0).floor();
                        area /= 4.0;
                    }
                }
                n
            }
        };
        let head = self.projection.map_or(0.0, f) + f(self.num_classes);
        input + body + head
    }

    /// The number of values the model's module will hold, counted from the configuration
    /// without building it: weights, biases, and batch norm's scales, shifts and running
    /// statistics (what Burn's `Module::num_params` counts on the built model). An `f64`, so
    /// that any sizes give a number: a configuration can be checked against the memory it
    /// would need before anything is allocated.
    pub fn parameter_count(&self) -> f64 {
        let f = |x: usize| x as f64;
        let linear = |i: f64, o: f64| i * o + o;
        let conv = |i: f64, o: f64, k: f64| i * o * k * k;
        let norm = |c: f64| 4.0 * c;
        let (backbone, dim) = match &self.architecture {
            Architecture::Mlp(c) => {
                let (mut n, mut input) = (0.0, f(c.input));
                for &w in &c.widths {
                    n += linear(input, f(w)) + if c.batch_norm { norm(f(w)) } else { 0.0 };
                    input = f(w);
                }
                (n, input)
            }
            Architecture::SmallCnn(c) => {
                let [a, b] = c.channels.map(f);
                let n = conv(f(c.in_channels), a, 3.0)
                    + norm(a)
                    + conv(a, b, 3.0)
                    + norm(b)
                    + linear(b, f(c.embedding))
                    + if c.head_norm {
                        norm(f(c.embedding))
                    } else {
                        0.0
                    };
                (n, f(c.embedding))
            }
            Architecture::Resnet18(c) => {
                let w = f(c.width);
                let mut n = conv(f(c.in_channels), w, 3.0) + norm(w);
                let mut i = w;
                for o in [w, 2.0 * w, 4.0 * w, 8.0 * w] {
                    // Two basic blocks of two 3x3 convolutions and two batch norms each; the
                    // first block's first convolution takes `i` channels, and that block has a
                    // 1x1 shortcut where the shape changes (every stage but the first).
                    n += conv(i, o, 3.0) + 3.0 * conv(o, o, 3.0) + 4.0 * norm(o);
                    if i != o {
                        n += conv(i, o, 1.0) + norm(o);
                    }
                    i = o;
                }
                (n, 8.0 * w)
            }
            Architecture::Densenet(c) => {
                let (growth, mid) = (f(c.growth), f(c.bn_size * c.growth));
                let mut ch = f(c.initial);
                let mut n = conv(f(c.in_channels), ch, 7.0) + norm(ch);
                for (i, &layers) in c.blocks.iter().enumerate() {
                    for _ in 0..layers {
                        n += norm(ch) + conv(ch, mid, 1.0) + norm(mid) + conv(mid, growth, 3.0);
                        ch += growth;
                    }
                    if i + 1 < c.blocks.len() {
                        n += norm(ch) + conv(ch, (ch / 2.0).floor(), 1.0);
                        ch = (ch / 2.0).floor();
                    }
                }
                (n + norm(ch), ch)
            }
        };
        let projection = self.projection.map_or(0.0, |p| linear(dim, f(p)));
        let embed = self.projection.map_or(dim, f);
        backbone + projection + linear(embed, f(self.num_classes))
    }
}

impl SclModel {
    /// The embedding `h` after the final activation, before normalisation: `[N, dim]`.
    ///
    /// # Shapes
    /// - `images`: `[N, C, H, W]`
    /// - output: `[N, embedding_dim]`
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let relu_on = self.final_activation == FinalActivation::Relu;
        match &self.projection {
            None => self.backbone.forward(images, relu_on),
            Some(p) => {
                let h = p.forward(self.backbone.forward(images, true));
                if relu_on {
                    burn::tensor::activation::relu(h)
                } else {
                    h
                }
            }
        }
    }

    /// The embedding fed to the contrastive loss: [`SclModel::features`], L2-normalised when
    /// configured.
    pub fn embed(&self, images: Tensor<4>) -> Tensor<2> {
        let h = self.features(images);
        if self.normalize { l2_normalize(h) } else { h }
    }

    /// Class logits from the classifier head on [`SclModel::features`] (cross-entropy).
    pub fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.classifier.forward(self.features(images))
    }

    /// [`SclModel::features`] and the logits of the classifier head on them, from one
    /// forward pass: `([N, embedding_dim], [N, classes])`.
    pub fn features_and_logits(&self, images: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let h = self.features(images);
        let logits = self.classifier.forward(h.clone());
        (h, logits)
    }
}

impl SclModel {
    /// The embedding dimension.
    pub fn embedding_dim(&self) -> usize {
        match &self.projection {
            Some(p) => p.weight.dims()[1],
            None => self.backbone.output_dim(),
        }
    }

    /// The switch this model was built with.
    pub fn final_activation(&self) -> FinalActivation {
        self.final_activation
    }
}

/// Rows divided by their L2 norm (with a floor of 1e-12, as `F.normalize`).
///
/// Written as `x * (1 / norm)` with the reciprocal from a division of constants: Burn's
/// autodiff differentiates `x / norm` through the backend's `float_recip`, which a backend may
/// compute with the processor's approximate reciprocal (Burn's older ndarray backend did: 12
/// correct bits with AVX2), and that error would reach every gradient through the
/// normalisation. `scl_loss::l2_normalize`
/// is written the same way.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x * norm.clone().ones_like().div(norm)
}

#[cfg(test)]
mod tests;
