//! DenseNet-BC as in the authors' code ("DenseNet40"): growth 12, dense blocks of (6, 6, 6)
//! bottleneck layers (BN-ReLU-1x1 conv to 4 x growth, BN-ReLU-3x3 conv to growth), 64 initial
//! maps from an ImageNet-style stem (7x7 stride-2 convolution, BN, ReLU, 3x3 stride-2
//! max-pool), transitions that halve the channels (BN-ReLU-1x1 conv, 2x2 average pool), a
//! final batch norm, global average pooling. Embedding dimension 64 -> 136 -> 68 -> 140 -> 70
//! -> 142.
//!
//! Where the final activation sits: the ReLU after the final batch norm (`norm5`), before
//! pooling; `none` removes it.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{
    AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, AvgPool2d, AvgPool2dConfig, MaxPool2d,
    MaxPool2dConfig,
};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use scl_layers::{batch_norm as norm, concat_channels, forward as conv};

use crate::WeightInit;

/// Configuration of [`DenseNet`].
#[derive(Config, Debug)]
pub struct DenseNetConfig {
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Channels each layer adds.
    #[config(default = 12)]
    pub growth: usize,
    /// Layers per dense block.
    #[config(default = "vec![6, 6, 6]")]
    pub blocks: Vec<usize>,
    /// Channels out of the stem.
    #[config(default = 64)]
    pub initial: usize,
    /// Bottleneck width as a multiple of `growth`.
    #[config(default = 4)]
    pub bn_size: usize,
    /// How the convolutions start ([`WeightInit::Authors`]: Kaiming-normal, fan_in).
    #[config(default = "WeightInit::Burn")]
    pub init: WeightInit,
}

/// A bottleneck layer whose output is concatenated to its input.
#[derive(Module, Debug)]
pub struct DenseLayer {
    norm1: BatchNorm,
    conv1: Conv2d,
    norm2: BatchNorm,
    conv2: Conv2d,
}

/// Halves the channels and the resolution.
#[derive(Module, Debug)]
pub struct Transition {
    norm: BatchNorm,
    conv: Conv2d,
    pool: AvgPool2d,
}

/// A dense block and the transition after it (none after the last).
#[derive(Module, Debug)]
pub struct DenseStage {
    layers: Vec<DenseLayer>,
    transition: Option<Transition>,
}

/// See [`DenseNetConfig`].
#[derive(Module, Debug)]
pub struct DenseNet {
    stem: Conv2d,
    stem_norm: BatchNorm,
    stem_pool: MaxPool2d,
    stages: Vec<DenseStage>,
    norm5: BatchNorm,
    gap: AdaptiveAvgPool2d,
}

impl DenseNetConfig {
    /// The embedding dimension this configuration produces.
    pub fn output_dim(&self) -> usize {
        let mut c = self.initial;
        for (i, &n) in self.blocks.iter().enumerate() {
            c += n * self.growth;
            if i + 1 < self.blocks.len() {
                c /= 2;
            }
        }
        c
    }

    /// Builds the network.
    pub fn init(&self, device: &Device) -> DenseNet {
        let mut c = self.initial;
        let mut stages = Vec::new();
        for (i, &n) in self.blocks.iter().enumerate() {
            let mut layers = Vec::new();
            for _ in 0..n {
                let mid = self.bn_size * self.growth;
                layers.push(DenseLayer {
                    norm1: BatchNormConfig::new(c).init(device),
                    conv1: crate::with_init(
                        Conv2dConfig::new([c, mid], [1, 1]).with_bias(false),
                        self.init,
                        false,
                    )
                    .init(device),
                    norm2: BatchNormConfig::new(mid).init(device),
                    conv2: crate::with_init(
                        Conv2dConfig::new([mid, self.growth], [3, 3])
                            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                            .with_bias(false),
                        self.init,
                        false,
                    )
                    .init(device),
                });
                c += self.growth;
            }
            let transition = (i + 1 < self.blocks.len()).then(|| {
                let t = Transition {
                    norm: BatchNormConfig::new(c).init(device),
                    conv: crate::with_init(
                        Conv2dConfig::new([c, c / 2], [1, 1]).with_bias(false),
                        self.init,
                        false,
                    )
                    .init(device),
                    pool: AvgPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
                };
                c /= 2;
                t
            });
            stages.push(DenseStage { layers, transition });
        }
        DenseNet {
            stem: crate::with_init(
                Conv2dConfig::new([self.in_channels, self.initial], [7, 7])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
                    .with_bias(false),
                self.init,
                false,
            )
            .init(device),
            stem_norm: BatchNormConfig::new(self.initial).init(device),
            stem_pool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            stages,
            norm5: BatchNormConfig::new(c).init(device),
            gap: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
        }
    }
}

impl DenseNet {
    /// `[N, C, H, W]` to `[N, output_dim]`; `final_relu` switches the ReLU after `norm5`.
    pub fn forward(&self, x: Tensor<4>, final_relu: bool) -> Tensor<2> {
        let mut h = self
            .stem_pool
            .forward(relu(norm(&self.stem_norm, conv(&self.stem, x))));
        for stage in &self.stages {
            for layer in &stage.layers {
                let y = conv(&layer.conv1, relu(norm(&layer.norm1, h.clone())));
                let y = conv(&layer.conv2, relu(norm(&layer.norm2, y)));
                h = concat_channels(h, y);
            }
            if let Some(t) = &stage.transition {
                h = t.pool.forward(conv(&t.conv, relu(norm(&t.norm, h))));
            }
        }
        let h = norm(&self.norm5, h);
        let h = if final_relu { relu(h) } else { h };
        self.gap.forward(h).flatten(1, 3)
    }
}

impl DenseNet {
    /// The embedding dimension (142 for the paper's configuration).
    pub fn output_dim(&self) -> usize {
        let [c] = self.norm5.gamma.dims();
        c
    }
}
