//! A multi-layer perceptron on flattened images.
//!
//! Where the final activation sits: after the last linear layer (and its batch norm, if any);
//! every hidden layer always ends in a ReLU.

use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::prelude::*;

/// Configuration of [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Input size (C * H * W of the images).
    pub input: usize,
    /// Output width of each layer; the last is the embedding dimension.
    pub widths: Vec<usize>,
    /// Batch norm after every linear layer.
    #[config(default = true)]
    pub batch_norm: bool,
}

/// One linear layer with optional batch norm.
#[derive(Module, Debug)]
pub struct MlpLayer {
    linear: Linear,
    norm: Option<BatchNorm>,
}

/// See [`MlpConfig`].
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<MlpLayer>,
}

impl MlpConfig {
    /// Builds the network.
    ///
    /// # Panics
    /// When `widths` is empty.
    pub fn init(&self, device: &Device) -> Mlp {
        assert!(!self.widths.is_empty(), "an MLP needs at least one layer");
        let mut input = self.input;
        let layers = self
            .widths
            .iter()
            .map(|&w| {
                let layer = MlpLayer {
                    linear: LinearConfig::new(input, w).init(device),
                    norm: self
                        .batch_norm
                        .then(|| BatchNormConfig::new(w).init(device)),
                };
                input = w;
                layer
            })
            .collect();
        Mlp { layers }
    }
}

impl Mlp {
    /// `[N, C, H, W]` (or any shape with N first) to `[N, widths.last]`; `final_relu` switches
    /// the ReLU after the last layer.
    pub fn forward(&self, x: Tensor<4>, final_relu: bool) -> Tensor<2> {
        let mut h: Tensor<2> = x.flatten(1, 3);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.linear.forward(h);
            if let Some(norm) = &layer.norm {
                h = scl_layers::batch_norm(norm, h);
            }
            if i < last || final_relu {
                h = burn::tensor::activation::relu(h);
            }
        }
        h
    }
}

impl Mlp {
    /// The embedding dimension.
    pub fn output_dim(&self) -> usize {
        let [_, out] = self.layers[self.layers.len() - 1].linear.weight.dims();
        out
    }
}
