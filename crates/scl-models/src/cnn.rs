//! A small CNN that trains on the CPU in minutes: two 3x3 convolution stages (batch norm,
//! ReLU, 2x2 max-pool), global average pooling, one linear layer to the embedding.
//!
//! Where the final activation sits: after that last linear layer.
//!
//! Its convolutions are [`Conv3x3`]: nine shifted copies of the padded input and one matrix
//! product. A one-off timing on 2 CPU cores with burn-ndarray 0.21 on 2026-11-29 (a scratch
//! test, not kept in the repository; 100 images, 32 -> 64 channels, 14x14, forward +
//! backward): Burn's `Conv2d` 14.5 s, almost all in the backward; [`Conv3x3`] 0.31 s. A whole
//! training step of this network on 100 MNIST-sized images took 0.9 s there, so CPU runs of it are minutes per epoch at thousands of images. The deep models
//! (ResNet, DenseNet) keep Burn's `Conv2d`, which GPU backends run well; on the CPU backend
//! they inherit its slow backward.

use burn::module::Param;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::ops::PadMode;

/// A 3x3 convolution, stride 1, zero padding 1, no bias, computed as one matrix product of
/// the nine shifted copies of the input (im2col by slicing).
#[derive(Module, Debug)]
pub struct Conv3x3<B: Backend> {
    /// `[9 * in_channels, out_channels]`, rows ordered (dy, dx, channel).
    pub(crate) weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Conv3x3<B> {
    /// A convolution from `i` to `o` channels with Kaiming-uniform weights (as Burn's
    /// `Conv2d`: gain 1/sqrt(3), fan-in 9 i).
    pub fn new(i: usize, o: usize, device: &B::Device) -> Self {
        let weight = Initializer::KaimingUniform {
            gain: 1.0 / 3.0f64.sqrt(),
            fan_out_only: false,
        }
        .init_with([9 * i, o], Some(9 * i), Some(9 * o), device);
        Self { weight }
    }

    /// `[N, C, H, W]` to `[N, O, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let padded = x.pad((1, 1, 1, 1), PadMode::Constant(0.0));
        let mut shifted = Vec::with_capacity(9);
        for dy in 0..3 {
            for dx in 0..3 {
                shifted.push(padded.clone().slice([0..n, 0..c, dy..dy + h, dx..dx + w]));
            }
        }
        // [N, 9C, H, W] -> [N H W, 9C]
        let cols = Tensor::cat(shifted, 1)
            .permute([0, 2, 3, 1])
            .reshape([n * h * w, 9 * c]);
        let o = self.weight.dims()[1];
        cols.matmul(self.weight.val())
            .reshape([n, h, w, o])
            .permute([0, 3, 1, 2])
    }
}

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
}

/// One convolution stage.
#[derive(Module, Debug)]
pub struct ConvStage<B: Backend> {
    conv: Conv3x3<B>,
    norm: BatchNorm<B>,
}

/// See [`SmallCnnConfig`].
#[derive(Module, Debug)]
pub struct SmallCnn<B: Backend> {
    stages: Vec<ConvStage<B>>,
    pool: MaxPool2d,
    gap: AdaptiveAvgPool2d,
    head: Linear<B>,
}

impl SmallCnnConfig {
    /// Builds the network.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SmallCnn<B> {
        let stage = |i: usize, o: usize| ConvStage {
            conv: Conv3x3::new(i, o, device),
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
        }
    }
}

impl<B: Backend> SmallCnn<B> {
    /// `[N, C, H, W]` to `[N, embedding]`.
    pub fn forward(&self, x: Tensor<B, 4>, final_relu: bool) -> Tensor<B, 2> {
        let mut h = x;
        for stage in &self.stages {
            h = self
                .pool
                .forward(relu(stage.norm.forward(stage.conv.forward(h))));
        }
        let h = self.head.forward(self.gap.forward(h).flatten(1, 3));
        if final_relu { relu(h) } else { h }
    }

    /// The embedding dimension.
    pub fn output_dim(&self) -> usize {
        let [_, out] = self.head.weight.dims();
        out
    }
}
