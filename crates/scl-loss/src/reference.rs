//! The reference SupCon loss: plain Burn tensor ops, differentiable by Burn's autodiff.
//!
//! This is the definition every other implementation is tested against. It materialises the
//! `[anchors, contrast]` similarity matrix, so its memory is quadratic in the batch.

use burn::tensor::{Bool, Device, Int, Tensor};

use crate::{ContrastMode, SupConLoss, SupConTerms, l2_normalize};

/// Per-anchor SupCon losses computed with plain tensor ops.
///
/// Numerics: the row maximum is taken over the non-self entries only and is detached (the
/// log-sum-exp does not depend on it), and the self entry is set to `-inf` before the
/// exponential. Every row therefore has a term `exp(0) = 1` in its sum, the log is finite,
/// and a huge self-similarity (un-normalised features, tiny temperature) cannot overflow.
/// With a single contrast row (one sample, one view) there is no pair at all and every
/// output is 0.
///
/// # Panics
/// When `labels` does not have `batch` entries.
pub fn supcon_reference(
    features: Tensor<3>,
    labels: Option<Tensor<1, Int>>,
    loss: &SupConLoss,
) -> SupConTerms {
    let [batch, views, dim] = features.dims();
    let device = features.device();
    let features = if loss.normalize {
        l2_normalize(features)
    } else {
        features
    };
    let labels = match labels {
        Some(labels) => {
            assert_eq!(
                labels.dims()[0],
                batch,
                "SupCon: {} labels for a batch of {batch}",
                labels.dims()[0]
            );
            labels
        }
        None => Tensor::<1, Int>::arange(0..batch as i64, &device),
    };
    let anchor_views = match loss.contrast_mode {
        ContrastMode::All => views,
        ContrastMode::One => 1,
    };
    let n_contrast = batch * views;
    let n_anchor = batch * anchor_views;
    if n_contrast <= 1 {
        return SupConTerms {
            loss: Tensor::zeros([n_anchor], &device),
            has_positive: Tensor::zeros([n_anchor], &device),
        };
    }

    // View-major concatenation: row v * batch + i is view v of sample i.
    let contrast = features.swap_dims(0, 1).reshape([n_contrast, dim]);
    let anchor = contrast.clone().narrow(0, 0, n_anchor);
    let logits = anchor
        .matmul(contrast.transpose())
        .div_scalar(loss.temperature);

    let contrast_labels = labels.repeat_dim(0, views);
    let anchor_labels = contrast_labels.clone().narrow(0, 0, n_anchor);
    let same_label = anchor_labels
        .unsqueeze_dim::<2>(1)
        .expand([n_anchor, n_contrast])
        .equal(
            contrast_labels
                .unsqueeze_dim::<2>(0)
                .expand([n_anchor, n_contrast]),
        );
    let is_self = self_mask(n_anchor, n_contrast, &device);
    let positive = same_label.bool_and(is_self.clone().bool_not());

    let logits = logits.mask_fill(is_self, f32::NEG_INFINITY);
    let row_max = logits.clone().max_dim(1).detach();
    let shifted = logits - row_max;
    let log_sum_exp = log_of_sum(shifted.clone().exp().sum_dim(1));
    let log_prob = shifted - log_sum_exp;

    let positive_count = positive.clone().float().sum_dim(1);
    let positive_log_prob = log_prob.mask_fill(positive.bool_not(), 0.0).sum_dim(1);
    // The count carries no gradient; its reciprocal is exact (see `l2_normalize`).
    let mean_log_prob =
        positive_log_prob * crate::exact_recip(positive_count.clone().clamp_min(1.0));
    let scale = loss.temperature / loss.base_temperature;
    SupConTerms {
        loss: mean_log_prob.mul_scalar(-scale).reshape([n_anchor]),
        has_positive: positive_count.clamp_max(1.0).reshape([n_anchor]),
    }
}

/// `log(sum)` whose gradient is `1 / sum` from an exact division.
///
/// Burn's autodiff differentiates `log(x)` as `grad * float_recip(x)`, and a backend may take
/// that reciprocal with the processor's approximate instruction (Burn's older ndarray backend
/// did: 12 correct bits with AVX2, errors of up to 4e-4 of the largest entry in the
/// reference's gradient). The value here is `log(sum)`; the gradient flows through
/// `(sum - sum.detach()) * (1 / sum)`, a term that is exactly 0 in value.
fn log_of_sum<const D: usize>(sum: Tensor<D>) -> Tensor<D> {
    let fixed = sum.clone().detach();
    let inv = crate::exact_recip(fixed.clone());
    fixed.clone().log() + (sum - fixed) * inv
}

/// `[n_anchor, n_contrast]`, true where anchor `i` meets itself (column `i`).
pub(crate) fn self_mask(n_anchor: usize, n_contrast: usize, device: &Device) -> Tensor<2, Bool> {
    let rows = Tensor::<1, Int>::arange(0..n_anchor as i64, device);
    let cols = Tensor::<1, Int>::arange(0..n_contrast as i64, device);
    rows.unsqueeze_dim::<2>(1)
        .expand([n_anchor, n_contrast])
        .equal(cols.unsqueeze_dim::<2>(0).expand([n_anchor, n_contrast]))
}
