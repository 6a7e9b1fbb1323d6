//! The SupCon loss of `scl-loss` in a model and training loop of your own.
//!
//! Everything here except `SupConLossConfig` and the final geometry line is plain Burn: a
//! two-layer network with a ReLU on its output (the paper's switch: non-negative embeddings),
//! points from four Gaussian clusters (one class each, imbalanced 40:40:4:4), two noisy views
//! per point, Adam. The loss takes features `[batch, views, dim]` and labels `[batch]`, like
//! SupContrast's `SupConLoss`; it picks its fused kernel on devices that have one (Flex here:
//! `Device::flex().autodiff()`; a GPU device works the same way).
//!
//! `cargo run -p scl-examples --example supcon_in_your_loop [-- EPOCHS]` (default 60).

use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::relu;
use scl_geometry::{Embeddings, geometry};
use scl_loss::SupConLossConfig;

/// Your model: here a two-layer network whose output goes through a ReLU.
#[derive(Module, Debug)]
struct Net {
    hidden: Linear,
    out: Linear,
}

impl Net {
    fn new(device: &Device) -> Self {
        Self {
            hidden: LinearConfig::new(8, 64).init(device),
            out: LinearConfig::new(64, 16).init(device),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        relu(self.out.forward(relu(self.hidden.forward(x))))
    }
}

/// Four clusters in 8 dimensions, 40, 40, 4 and 4 points (a step imbalance of ratio 10).
fn data(device: &Device) -> (Tensor<2>, Tensor<1, Int>, Vec<usize>) {
    let counts = [40usize, 40, 4, 4];
    let labels: Vec<usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(c, &n)| std::iter::repeat_n(c, n))
        .collect();
    let n = labels.len();
    let mut centres = vec![0.0f32; 4 * 8];
    for c in 0..4 {
        centres[c * 8 + 2 * c] = 3.0; // well separated
    }
    let centres = Tensor::<2>::from_data(TensorData::new(centres, [4, 8]), device);
    let index = Tensor::<1, Int>::from_data(
        TensorData::new(labels.iter().map(|&l| l as i64).collect(), [n]),
        device,
    );
    let points = centres.select(0, index.clone())
        + Tensor::random([n, 8], Distribution::Normal(0.0, 0.5), device);
    (points, index, labels)
}

fn main() {
    let epochs: usize = std::env::args()
        .nth(1)
        .map_or(Ok(60), |a| a.parse())
        .unwrap_or_else(|_| {
            eprintln!("error: EPOCHS must be a whole number");
            std::process::exit(2)
        });
    let device = Device::flex().autodiff();
    device.seed(0);
    let (points, labels, host_labels) = data(&device);
    let n = host_labels.len();

    let mut model = Net::new(&device);
    let mut optim = AdamConfig::new().init();
    // tau = 0.1 as in the paper; the embeddings are L2-normalised inside the loss.
    let loss_fn = SupConLossConfig::new()
        .with_temperature(0.1)
        .with_normalize(true)
        .init();

    for epoch in 1..=epochs {
        // Two views: the points with fresh noise. Stack them as [n, 2, dim].
        let view =
            || points.clone() + Tensor::random([n, 8], Distribution::Normal(0.0, 0.1), &device);
        let z1 = model.forward(view());
        let z2 = model.forward(view());
        let features = Tensor::stack::<3>(vec![z1, z2], 1);
        let loss = loss_fn.forward(features, Some(labels.clone()));
        let value: f32 = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
        if epoch % 10 == 0 || epoch == 1 {
            println!("epoch {epoch:3}: SupCon loss {value:.4}");
        }
    }

    // The geometry of the class means of the learned (non-negative) embeddings.
    let z = model.valid().forward(points.without_autodiff());
    let z = Embeddings::from_tensor(z).expect("finite embeddings");
    let g = geometry(&z, &host_labels, 4).expect("four classes");
    println!(
        "class means: OF distance {:.3} (0 = orthogonal frame), mean cosine {:.3}, NC1 {:.3e}",
        g.of_distance, g.mean_cosine, g.nc1
    );
}
