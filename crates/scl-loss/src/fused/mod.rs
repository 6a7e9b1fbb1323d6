//! Fused SupCon: the loss and its gradient without the `N x N` similarity matrix.
//!
//! [`supcon_fused`] runs the tiled CPU kernel of [`cpu`] on a host copy of the features and
//! hands the gradient to Burn's autodiff through a linear surrogate: it returns
//! `L + sum(Z * G) - detach(sum(Z * G))`, whose value is the loss `L` and whose gradient with
//! respect to the (normalised) contrast features `Z` is the kernel's `G`. Everything before
//! the kernel (L2 normalisation, a ReLU, the model) is differentiated by autodiff as usual.
//! The extra state kept for the backward pass is `G` itself, `O(N d)`; no `N x N` tensor is
//! ever formed.
//!
//! The gradient is computed during the forward call, so an evaluation-only call pays for it
//! too. Only the reduced loss is fused; per-anchor losses come from the reference.

pub mod cpu;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::{ContrastMode, NoPositivePolicy, SupConLoss, l2_normalize};

/// The reduced SupCon loss (same value and gradient as [`SupConLoss::forward`]) through the
/// fused CPU kernel.
///
/// # Shapes
/// - `features`: `[batch, views, dim]`
/// - `labels`: `[batch]` (`None`: SimCLR)
/// - output: `[1]`
///
/// # Panics
/// When `labels` does not have `batch` entries.
pub fn supcon_fused<B: Backend>(
    features: Tensor<B, 3>,
    labels: Option<Tensor<B, 1, Int>>,
    loss: &SupConLoss,
) -> Tensor<B, 1> {
    let [batch, views, dim] = features.dims();
    let device = features.device();
    let features = if loss.normalize {
        l2_normalize(features)
    } else {
        features
    };
    let n_contrast = batch * views;
    let n_anchor = match loss.contrast_mode {
        ContrastMode::All => n_contrast,
        ContrastMode::One => batch,
    };
    let contrast = features.swap_dims(0, 1).reshape([n_contrast, dim]);

    let sample_labels: Vec<i64> = match labels {
        Some(l) => {
            assert_eq!(
                l.dims()[0],
                batch,
                "SupCon: {} labels for a batch of {batch}",
                l.dims()[0]
            );
            l.into_data()
                .convert::<i64>()
                .into_vec::<i64>()
                .expect("labels convert to i64")
        }
        None => (0..batch as i64).collect(),
    };
    let (dense, num_classes) = dense_classes(&sample_labels);
    let class_of: Vec<usize> = (0..views).flat_map(|_| dense.iter().copied()).collect();

    let z: Vec<f32> = contrast
        .to_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("features convert to f32");
    let problem = cpu::Problem {
        z: &z,
        class_of: &class_of,
        num_classes,
        n_contrast,
        n_anchor,
        dim,
        temperature: loss.temperature as f32,
    };
    let (losses, saved) = cpu::forward(&problem);
    let with_positive = saved.positives.iter().filter(|&&p| p > 0).count();
    let denominator = match loss.no_positive {
        NoPositivePolicy::CountAsZero => n_anchor,
        NoPositivePolicy::Exclude => with_positive,
    }
    .max(1) as f64;
    let weight = loss.temperature / loss.base_temperature / denominator;
    let value: f64 = losses.iter().sum::<f64>() * weight;
    let upstream = vec![weight; n_anchor];
    let grad = cpu::backward(&problem, &saved, &upstream);

    let grad = Tensor::<B, 2>::from_data(TensorData::new(grad, [n_contrast, dim]), &device);
    let surrogate = (contrast * grad).sum();
    let constant = Tensor::<B, 1>::from_data(TensorData::new(vec![value], [1]), &device);
    constant + surrogate.clone() - surrogate.detach()
}

/// Maps arbitrary labels to `0..C` in order of first appearance; returns them and `C`.
fn dense_classes(labels: &[i64]) -> (Vec<usize>, usize) {
    let mut seen = std::collections::HashMap::new();
    let dense = labels
        .iter()
        .map(|l| {
            let next = seen.len();
            *seen.entry(*l).or_insert(next)
        })
        .collect();
    (dense, seen.len())
}
