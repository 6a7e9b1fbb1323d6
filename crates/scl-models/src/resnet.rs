//! ResNet-18 with the CIFAR stem: a 3x3 stride-1 first convolution and no max-pool (the
//! authors' torchvision model with `conv1` replaced and `maxpool` made a no-op), four stages of
//! two basic blocks (64, 128, 256, 512 channels), global average pooling to the 512-d
//! embedding.
//!
//! Where the final activation sits: the ReLU at the end of the **last basic block** (after the
//! residual addition), before pooling. torchvision's block always has it, so the authors'
//! released model is the `relu` variant; `none` removes exactly that one ReLU. Every other
//! ReLU stays.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use scl_layers::{batch_norm as norm, forward as conv};

use crate::WeightInit;

/// Configuration of [`ResNet18`].
#[derive(Config, Debug)]
pub struct ResNet18Config {
    /// Input channels (3 for CIFAR, 1 for MNIST).
    #[config(default = 3)]
    pub in_channels: usize,
    /// Channels of the first stage; the others are 2x, 4x, 8x (64 in the paper, 512-d output).
    #[config(default = 64)]
    pub width: usize,
    /// How the convolutions start ([`WeightInit::Authors`]: torchvision's Kaiming-normal,
    /// fan_out).
    #[config(default = "WeightInit::Burn")]
    pub init: WeightInit,
}

fn conv3x3(i: usize, o: usize, stride: usize, init: WeightInit, device: &Device) -> Conv2d {
    let config = Conv2dConfig::new([i, o], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false);
    crate::with_init(config, init, true).init(device)
}

/// The 1x1 projection of a shortcut that changes shape.
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
    norm: BatchNorm,
}

/// A basic residual block: two 3x3 convolutions with batch norm, a shortcut, a final ReLU.
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<Downsample>,
}

impl BasicBlock {
    fn new(i: usize, o: usize, stride: usize, init: WeightInit, device: &Device) -> Self {
        let downsample = (stride != 1 || i != o).then(|| Downsample {
            conv: crate::with_init(
                Conv2dConfig::new([i, o], [1, 1])
                    .with_stride([stride, stride])
                    .with_bias(false),
                init,
                true,
            )
            .init(device),
            norm: BatchNormConfig::new(o).init(device),
        });
        Self {
            conv1: conv3x3(i, o, stride, init, device),
            bn1: BatchNormConfig::new(o).init(device),
            conv2: conv3x3(o, o, 1, init, device),
            bn2: BatchNormConfig::new(o).init(device),
            downsample,
        }
    }
}

impl BasicBlock {
    fn forward(&self, x: Tensor<4>, end_relu: bool) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(d) => norm(&d.norm, conv(&d.conv, x.clone())),
            None => x.clone(),
        };
        let h = relu(norm(&self.bn1, conv(&self.conv1, x)));
        let h = norm(&self.bn2, conv(&self.conv2, h)) + shortcut;
        if end_relu { relu(h) } else { h }
    }
}

/// See [`ResNet18Config`].
#[derive(Module, Debug)]
pub struct ResNet18 {
    conv1: Conv2d,
    bn1: BatchNorm,
    blocks: Vec<BasicBlock>,
    gap: AdaptiveAvgPool2d,
}

impl ResNet18Config {
    /// Builds the network.
    pub fn init(&self, device: &Device) -> ResNet18 {
        let w = self.width;
        let mut blocks = Vec::new();
        let mut i = w;
        for (stage, o) in [w, 2 * w, 4 * w, 8 * w].into_iter().enumerate() {
            let stride = if stage == 0 { 1 } else { 2 };
            blocks.push(BasicBlock::new(i, o, stride, self.init, device));
            blocks.push(BasicBlock::new(o, o, 1, self.init, device));
            i = o;
        }
        ResNet18 {
            conv1: conv3x3(self.in_channels, w, 1, self.init, device),
            bn1: BatchNormConfig::new(w).init(device),
            blocks,
            gap: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
        }
    }
}

impl ResNet18 {
    /// `[N, C, H, W]` to `[N, 8 * width]`; `final_relu` switches the ReLU at the end of the
    /// last block.
    pub fn forward(&self, x: Tensor<4>, final_relu: bool) -> Tensor<2> {
        let mut h = relu(norm(&self.bn1, conv(&self.conv1, x)));
        let last = self.blocks.len() - 1;
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward(h, i < last || final_relu);
        }
        self.gap.forward(h).flatten(1, 3)
    }
}

impl ResNet18 {
    /// The embedding dimension (512 for width 64).
    pub fn output_dim(&self) -> usize {
        let [o, _, _, _] = self.blocks[self.blocks.len() - 1].conv2.weight.dims();
        o
    }
}
