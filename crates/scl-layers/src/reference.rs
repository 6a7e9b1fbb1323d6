//! Batch normalisation written with Burn's tensor operations: the reference the host kernels
//! are tested against, and the path of every device without them.

use super::*;

/// The formulas of [`norm`] in tensor operations: `(y, mean, var)` of batch normalisation in
/// training mode for `x` `[N, C, S]` (the biased variance, as Burn's `BatchNorm`). On every
/// device; what the host loops are tested against.
pub fn reference_batch_norm(
    x: Tensor<3>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> (Tensor<3>, Tensor<1>, Tensor<1>) {
    let [n, c, s] = x.dims();
    let rows = x.clone().swap_dims(0, 1).reshape([c, n * s]);
    let mean = rows.clone().mean_dim(1);
    let var = (rows - mean.clone()).square().mean_dim(1);
    let std = var.clone().add_scalar(epsilon).sqrt();
    let scale = gamma.reshape([c, 1]) * (std.ones_like() / std);
    let shift = beta.reshape([c, 1]) - mean.clone() * scale.clone();
    let y = x * scale.reshape([1, c, 1]) + shift.reshape([1, c, 1]);
    (y, mean.reshape([c]), var.reshape([c]))
}

/// Batch normalisation in inference mode in tensor operations (the formula of Burn's
/// `BatchNorm` with its running statistics), for `x` `[N, C, S]`.
pub fn reference_batch_norm_inference(
    x: Tensor<3>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
    epsilon: f64,
) -> Tensor<3> {
    let c = x.dims()[1];
    let channel = |t: Tensor<1>| t.reshape([1, c, 1]);
    let std = channel(var).add_scalar(epsilon).sqrt();
    (x - channel(mean)) / std * channel(gamma) + channel(beta)
}

/// The gradients `(dx, dgamma, dbeta)` of [`reference_batch_norm`] in tensor operations.
pub fn reference_batch_norm_backward(
    x: Tensor<3>,
    gamma: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
    output_grad: Tensor<3>,
    epsilon: f64,
) -> (Tensor<3>, Tensor<1>, Tensor<1>) {
    let dy = output_grad;
    let [n, c, s] = x.dims();
    let m = (n * s) as f64;
    let std = var.add_scalar(epsilon).sqrt();
    let inv_std = std.ones_like() / std;
    let x_hat = (x - mean.reshape([1, c, 1])) * inv_std.clone().reshape([1, c, 1]);
    let per_channel = |t: Tensor<3>| t.sum_dim(0).sum_dim(2).reshape([c]);
    let dbeta = per_channel(dy.clone());
    let dgamma = per_channel(dy.clone() * x_hat.clone());
    let k = (gamma * inv_std).div_scalar(m);
    let dx = k.reshape([1, c, 1])
        * (dy.mul_scalar(m)
            - dbeta.clone().reshape([1, c, 1])
            - x_hat * dgamma.clone().reshape([1, c, 1]));
    (dx, dgamma, dbeta)
}
