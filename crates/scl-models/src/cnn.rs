//! A small CNN that trains on the CPU in minutes: two 3x3 convolution stages (batch norm,
//! ReLU, 2x2 max-pool), global average pooling, one linear layer to the embedding.
//!
//! Where the final activation sits: after that last linear layer, or, with `head_norm`, after
//! a batch norm that follows it (as in the MLP and in ResNet's last block, where the final
//! ReLU follows a batch norm rather than a linear map of non-negative pooled features).
//!
//! Its convolutions are Burn's `Conv2d` (3x3, padding 1, no bias) run through
//! `scl_layers::forward`, whose gradients are fast on the CPU backends. Checkpoints written
//! before (when this network had its own 3x3 convolution, a `[9 C, O]` matrix) cannot be
//! loaded into it; `scl-train` refuses to resume them with a sentence that says so.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use scl_layers::{batch_norm as norm, forward as conv};

/// Configuration of [`SmallCnn`].
#[derive(Config, Debug)]
pub struct SmallCnnConfig {
    /// Input channels (1 for MNIST, 3 for CIFAR).
    pub in_channels: usize,
    /// Channels of the two convolution stages.
    #[config(default = "[32, 64]")]
    pub channels: [usize; 2],
    /// Embedding dimension.
    #[config(default = 128)]
    pub embedding: usize,
    /// A batch norm between the last linear layer and the final activation.
    #[config(default = false)]
    pub head_norm: bool,
}

/// One convolution stage.
#[derive(Module, Debug)]
pub struct ConvStage {
    conv: Conv2d,
    norm: BatchNorm,
}

/// See [`SmallCnnConfig`].
#[derive(Module, Debug)]
pub struct SmallCnn {
    stages: Vec<ConvStage>,
    pool: MaxPool2d,
    gap: AdaptiveAvgPool2d,
    head: Linear,
    head_norm: Option<BatchNorm>,
}

impl SmallCnnConfig {
    /// Builds the network.
    pub fn init(&self, device: &Device) -> SmallCnn {
        let stage = |i: usize, o: usize| ConvStage {
            conv: Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device),
            norm: BatchNormConfig::new(o).init(device),
        };
        SmallCnn {
            stages: vec![
                stage(self.in_channels, self.channels[0]),
                stage(self.channels[0], self.channels[1]),
            ],
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            gap: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            head: LinearConfig::new(self.channels[1], self.embedding).init(device),
            head_norm: self
                .head_norm
                .then(|| BatchNormConfig::new(self.embedding).init(device)),
        }
    }
}

impl SmallCnn {
    /// `[N, C, H, W]` to `[N, embedding]`.
    pub fn forward(&self, x: Tensor<4>, final_relu: bool) -> Tensor<2> {
        let mut h = x;
        for stage in &self.stages {
            h = self
                .pool
                .forward(relu(norm(&stage.norm, conv(&stage.conv, h))));
        }
        let mut h = self.head.forward(self.gap.forward(h).flatten(1, 3));
        if let Some(n) = &self.head_norm {
            h = norm(n, h);
        }
        if final_relu { relu(h) } else { h }
    }
}

impl SmallCnn {
    /// The embedding dimension.
    pub fn output_dim(&self) -> usize {
        let [_, out] = self.head.weight.dims();
        out
    }
}
