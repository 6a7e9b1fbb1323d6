//! Fused SupCon: the loss and its gradient without the `N x N` similarity matrix.
//!
//! Per anchor `i` with `P_i >= 1` positives, the SupCon loss (see the crate documentation) is
//!
//! ```text
//! loss_i = scale * ( LSE_i  -  z_i . (S_{y_i} - z_i) / (tau P_i) ),
//! LSE_i  = log sum_{a != i} exp(z_i . z_a / tau),
//! ```
//!
//! where `S_c` is the sum of the contrast rows of class `c` and `scale = tau / base_tau`.
//! Only `LSE` needs pairwise work. It is one backend operation, [`SupConBackend::supcon_lse`],
//! with its own backward, [`SupConBackend::supcon_lse_backward`]; on the GPU backends the
//! normalisation, the positive term and the scale are ordinary tensor ops in `O(N d)` (a
//! scatter-add of the class sums and a gather), differentiated by Burn's autodiff as usual
//! ([`supcon_fused_composed`]). On the CPU backends those would be about twenty passes over
//! `N x d` values around the kernel, so there the whole per-anchor loss is one operation on
//! a host copy of the features, [`SupConBackend::supcon_host_terms`] ([`host`]).
//!
//! The operation has three implementations:
//!
//! - the trait's default methods, the reference: the `[Na, Nc]` logits in plain tensor ops,
//!   so every Burn backend works;
//! - the CPU kernel of [`cpu`] for Burn's CPU backends, Flex and ndarray (f32): register-blocked SIMD
//!   micro-kernels (AVX-512, AVX2 + FMA or portable, detected at run time), multi-threaded,
//!   memory `O(N d + N)`;
//! - with the cargo feature `cubecl`, CubeCL kernels for Burn's GPU backends (wgpu, CUDA;
//!   the fusion wrapper included), see `cube`.
//!
//! For `Autodiff<B>`, the forward keeps the (already stored) features and the `[Na]`
//! log-sum-exps; the backward recomputes the softmax weights tile by tile from them. No
//! `N x N` tensor is kept between forward and backward.

pub mod cpu;
#[cfg(feature = "cubecl")]
pub mod cube;
pub mod host;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData, TensorMetadata, TensorPrimitive};

use crate::{ContrastMode, SupConLoss, SupConTerms, l2_normalize};
pub use host::TermsProblem;

/// A Burn backend that can compute SupCon's masked log-sum-exp, possibly with a fused kernel.
///
/// Both methods have default bodies (the reference, built from tensor ops, with the
/// `[Na, Nc]` logits in memory), so `impl SupConBackend for MyBackend {}` is all a backend
/// without a kernel needs. This crate implements it for `Flex` and `NdArray` (a CPU kernel),
/// `Autodiff<B>` (the fused backward), and with the feature `cubecl` for `CubeBackend` and
/// `Fusion<CubeBackend>` (wgpu, CUDA).
pub trait SupConBackend: Backend {
    /// `LSE_i = log sum_{a != i} exp(z_i . z_a / temperature)` for the first `n_anchor` rows.
    ///
    /// # Shapes
    /// - `z`: `[n_contrast, dim]`, `n_contrast >= 2`, `n_anchor <= n_contrast`
    /// - output: `[n_anchor]`
    fn supcon_lse(z: FloatTensor<Self>, n_anchor: usize, temperature: f64) -> FloatTensor<Self> {
        reference_lse_op::<Self>(z, n_anchor, temperature)
    }

    /// The gradient with respect to `z` of `sum_i grad_i * LSE_i`, from the forward's output.
    ///
    /// # Shapes
    /// - `z`: `[n_contrast, dim]`; `lse`, `grad`: `[n_anchor]`
    /// - output: `[n_contrast, dim]`
    fn supcon_lse_backward(
        z: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        temperature: f64,
    ) -> FloatTensor<Self> {
        reference_lse_backward_op::<Self>(z, lse, grad, temperature)
    }

    /// Whether [`SupConBackend::supcon_lse`] runs a fused kernel on this backend (what
    /// [`crate::Implementation::Auto`] looks at). `false` for the default methods.
    fn supcon_fused_available() -> bool {
        false
    }

    /// Whether [`supcon_fused`] computes the whole per-anchor loss with
    /// [`SupConBackend::supcon_host_terms`] (true on the CPU backends, where reading the
    /// features to the host costs one copy), rather than composing it from tensor operations
    /// around [`SupConBackend::supcon_lse`]. `false` by default.
    fn supcon_terms_on_host() -> bool {
        false
    }

    /// The per-anchor losses `[n_anchor]` of `features` (`[batch, views, dim]`) computed on
    /// the host ([`host::forward`]); [`supcon_fused`] calls it only where
    /// [`SupConBackend::supcon_terms_on_host`] is true. The default body works on every
    /// backend (it reads the features with `into_data`); `Autodiff<B>` overrides it with one
    /// autodiff node whose backward is [`host::backward`].
    fn supcon_host_terms(features: FloatTensor<Self>, problem: &TermsProblem) -> FloatTensor<Self> {
        host::forward::<Self>(features, problem).0
    }
}

/// [`reference_lse`] on primitives: the default body of [`SupConBackend::supcon_lse`].
pub fn reference_lse_op<B: Backend>(
    z: FloatTensor<B>,
    n_anchor: usize,
    temperature: f64,
) -> FloatTensor<B> {
    reference_lse(float::<B, 2>(z), n_anchor, temperature)
        .into_primitive()
        .tensor()
}

/// [`reference_lse_backward`] on primitives: the default body of
/// [`SupConBackend::supcon_lse_backward`].
pub fn reference_lse_backward_op<B: Backend>(
    z: FloatTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
    temperature: f64,
) -> FloatTensor<B> {
    reference_lse_backward(
        float::<B, 2>(z),
        float::<B, 1>(lse),
        float::<B, 1>(grad),
        temperature,
    )
    .into_primitive()
    .tensor()
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The `[Na, Nc]` logits with the self entries at `-inf`.
fn masked_logits<B: Backend>(z: Tensor<B, 2>, n_anchor: usize, temperature: f64) -> Tensor<B, 2> {
    let [n_contrast, _] = z.dims();
    let device = z.device();
    let anchor = z.clone().narrow(0, 0, n_anchor);
    let logits = anchor.matmul(z.transpose()).div_scalar(temperature);
    let is_self = crate::reference::self_mask::<B>(n_anchor, n_contrast, &device);
    logits.mask_fill(is_self, f32::NEG_INFINITY)
}

/// The reference masked log-sum-exp, `[Na]`, in plain tensor ops.
pub fn reference_lse<B: Backend>(
    z: Tensor<B, 2>,
    n_anchor: usize,
    temperature: f64,
) -> Tensor<B, 1> {
    let logits = masked_logits(z, n_anchor, temperature);
    let max = logits.clone().max_dim(1);
    let sum = (logits - max.clone()).exp().sum_dim(1);
    (max + sum.log()).reshape([n_anchor])
}

/// The reference gradient of `sum_i grad_i LSE_i` with respect to `z`, in plain tensor ops.
pub fn reference_lse_backward<B: Backend>(
    z: Tensor<B, 2>,
    lse: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    temperature: f64,
) -> Tensor<B, 2> {
    let [n_contrast, dim] = z.dims();
    let [n_anchor] = lse.dims();
    let logits = masked_logits(z.clone(), n_anchor, temperature);
    // exp(-inf) = 0 on the self entries.
    let weights = (logits - lse.unsqueeze_dim::<2>(1)).exp() * grad.unsqueeze_dim::<2>(1);
    let columns = weights
        .clone()
        .transpose()
        .matmul(z.clone().narrow(0, 0, n_anchor));
    let rows = weights.matmul(z.clone());
    let rows = if n_anchor < n_contrast {
        Tensor::cat(
            vec![
                rows,
                Tensor::zeros([n_contrast - n_anchor, dim], &z.device()),
            ],
            0,
        )
    } else {
        rows
    };
    (rows + columns).div_scalar(temperature)
}

/// Host `f32` copy of a float primitive.
fn host_f32<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    float::<B, 1>(t)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("a float tensor converts to f32")
}

/// [`SupConBackend::supcon_lse`] on the CPU kernel, for a CPU backend: the features are read
/// into one host buffer (a copy of `O(N d)`) and the `[Na]` result is written back. Tensors of
/// another float type than `f32` take the reference (the kernel computes in `f32` and would
/// lose precision).
fn cpu_lse_op<B: Backend>(z: FloatTensor<B>, n_anchor: usize, temperature: f64) -> FloatTensor<B> {
    if z.dtype() != burn::tensor::DType::F32 {
        return reference_lse_op::<B>(z, n_anchor, temperature);
    }
    let z = float::<B, 2>(z);
    let [n_contrast, dim] = z.dims();
    let device = z.device();
    let values = host_f32::<B>(z.reshape([n_contrast * dim]).into_primitive().tensor());
    let problem = cpu::Problem {
        z: &values,
        n_contrast,
        n_anchor,
        dim,
        temperature: temperature as f32,
    };
    host::device_tensor::<B, 1>(cpu::lse(&problem), [n_anchor], &device)
}

/// [`SupConBackend::supcon_lse_backward`] on the CPU kernel (see [`cpu_lse_op`]).
fn cpu_lse_backward_op<B: Backend>(
    z: FloatTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
    temperature: f64,
) -> FloatTensor<B> {
    if z.dtype() != burn::tensor::DType::F32 {
        return reference_lse_backward_op::<B>(z, lse, grad, temperature);
    }
    let z = float::<B, 2>(z);
    let [n_contrast, dim] = z.dims();
    let device = z.device();
    let values = host_f32::<B>(z.reshape([n_contrast * dim]).into_primitive().tensor());
    let lse = host_f32::<B>(lse);
    let grad = host_f32::<B>(grad);
    let problem = cpu::Problem {
        z: &values,
        n_contrast,
        n_anchor: lse.len(),
        dim,
        temperature: temperature as f32,
    };
    let out = cpu::lse_backward(&problem, &lse, &grad);
    host::device_tensor::<B, 2>(out, [n_contrast, dim], &device)
}

/// The two kernel methods of [`SupConBackend`] on the CPU kernel, for a CPU backend's impl.
#[allow(unused_macros)]
macro_rules! cpu_supcon_methods {
    () => {
        fn supcon_lse(
            z: FloatTensor<Self>,
            n_anchor: usize,
            temperature: f64,
        ) -> FloatTensor<Self> {
            cpu_lse_op::<Self>(z, n_anchor, temperature)
        }

        fn supcon_lse_backward(
            z: FloatTensor<Self>,
            lse: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            temperature: f64,
        ) -> FloatTensor<Self> {
            cpu_lse_backward_op::<Self>(z, lse, grad, temperature)
        }
    };
}

/// The CPU kernel for `f32` tensors (Flex chooses the float type per tensor).
#[cfg(feature = "flex")]
impl SupConBackend for burn::backend::Flex {
    cpu_supcon_methods!();

    fn supcon_fused_available() -> bool {
        true
    }

    fn supcon_terms_on_host() -> bool {
        true
    }
}

#[cfg(feature = "ndarray")]
mod ndarray_impl {
    use super::*;
    use burn::backend::NdArray;
    use burn::backend::ndarray::{
        FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray,
    };
    use burn::tensor::DType;

    /// The CPU kernel for `NdArray<f32>`; other float types take the reference.
    impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> SupConBackend
        for NdArray<E, I, Q>
    where
        NdArrayTensor: From<SharedArray<E>>,
        NdArrayTensor: From<SharedArray<I>>,
    {
        cpu_supcon_methods!();

        fn supcon_fused_available() -> bool {
            E::dtype() == DType::F32
        }

        fn supcon_terms_on_host() -> bool {
            E::dtype() == DType::F32
        }
    }
}

/// The autodiff wrapper: the forward runs the inner backend's operation and keeps `z` (a
/// handle to the stored input, no copy) and the `[Na]` output; the backward calls the inner
/// backend's [`SupConBackend::supcon_lse_backward`].
impl<B: SupConBackend, C: CheckpointStrategy> SupConBackend for Autodiff<B, C> {
    fn supcon_lse(z: FloatTensor<Self>, n_anchor: usize, temperature: f64) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LseBackward;

        impl<B: SupConBackend> Backward<B, 1> for LseBackward {
            type State = (FloatTensor<B>, FloatTensor<B>, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [node_z] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (z, lse, temperature) = ops.state;
                if let Some(node) = node_z {
                    grads.register::<B>(node.id, B::supcon_lse_backward(z, lse, grad, temperature));
                }
            }
        }

        match LseBackward
            .prepare::<C>([z.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let lse = B::supcon_lse(z.primitive.clone(), n_anchor, temperature);
                prep.finish((z.primitive, lse.clone(), temperature), lse)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::supcon_lse(z.primitive, n_anchor, temperature))
            }
        }
    }

    fn supcon_fused_available() -> bool {
        B::supcon_fused_available()
    }

    fn supcon_terms_on_host() -> bool {
        B::supcon_terms_on_host()
    }

    fn supcon_host_terms(features: FloatTensor<Self>, problem: &TermsProblem) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct TermsBackward;

        impl<B: SupConBackend> Backward<B, 1> for TermsBackward {
            type State = host::HostTerms;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(node) = node {
                    grads.register::<B>(node.id, host::backward::<B>(&ops.state, grad));
                }
            }
        }

        match TermsBackward
            .prepare::<C>([features.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (loss, state) = host::forward::<B>(features.primitive, problem);
                prep.finish(state, loss)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(host::forward::<B>(features.primitive, problem).0)
            }
        }
    }
}

/// Per-anchor SupCon losses through [`SupConBackend::supcon_lse`]: the same values and
/// gradients as [`crate::supcon_reference`], without the `N x N` matrix when the backend has
/// a fused kernel.
///
/// On the CPU backends ([`SupConBackend::supcon_terms_on_host`]) the whole loss is one
/// operation on a host copy of the features ([`host`]); elsewhere it is composed from tensor
/// operations around the kernel ([`supcon_fused_composed`]). The labels are read to the
/// host once (to count the positives of every anchor).
///
/// # Panics
/// When `labels` does not have `batch` entries.
pub fn supcon_fused<B: SupConBackend>(
    features: Tensor<B, 3>,
    labels: Option<Tensor<B, 1, Int>>,
    loss: &SupConLoss,
) -> SupConTerms<B> {
    fused_terms(features, labels, loss, B::supcon_terms_on_host())
}

/// [`supcon_fused`] composed from tensor operations around [`SupConBackend::supcon_lse`] on
/// every backend (what the GPU backends run): the normalisation, the class sums and the
/// positive term are Burn operations differentiated by Burn's autodiff, and the features
/// stay on the device.
///
/// # Panics
/// When `labels` does not have `batch` entries.
pub fn supcon_fused_composed<B: SupConBackend>(
    features: Tensor<B, 3>,
    labels: Option<Tensor<B, 1, Int>>,
    loss: &SupConLoss,
) -> SupConTerms<B> {
    fused_terms(features, labels, loss, false)
}

fn fused_terms<B: SupConBackend>(
    features: Tensor<B, 3>,
    labels: Option<Tensor<B, 1, Int>>,
    loss: &SupConLoss,
    on_host: bool,
) -> SupConTerms<B> {
    let [batch, views, dim] = features.dims();
    let device = features.device();
    let n_contrast = batch * views;
    let n_anchor = match loss.contrast_mode {
        ContrastMode::All => n_contrast,
        ContrastMode::One => batch,
    };
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
    if n_contrast <= 1 {
        return SupConTerms {
            loss: Tensor::zeros([n_anchor], &device),
            has_positive: Tensor::zeros([n_anchor], &device),
        };
    }
    let (dense, num_classes) = dense_classes(&sample_labels);
    let problem = TermsProblem {
        batch,
        views,
        dim,
        n_anchor,
        classes: dense,
        num_classes,
        normalize: loss.normalize,
        temperature: loss.temperature,
        scale: loss.temperature / loss.base_temperature,
    };
    let (has, weight) = problem.anchor_weights();
    let has = Tensor::<B, 1>::from_data(TensorData::new(has, [n_anchor]), &device);
    if on_host && features.dtype() == burn::tensor::DType::F32 {
        let terms = B::supcon_host_terms(features.into_primitive().tensor(), &problem);
        return SupConTerms {
            loss: float::<B, 1>(terms),
            has_positive: has,
        };
    }

    let features = if loss.normalize {
        l2_normalize(features)
    } else {
        features
    };
    // View-major: contrast row v * batch + i is view v of sample i.
    let class_of: Vec<i64> = (0..views)
        .flat_map(|_| problem.classes.iter().map(|&c| c as i64))
        .collect();
    let weight: Vec<f32> = weight.into_iter().map(|w| w as f32).collect();
    let contrast = features.swap_dims(0, 1).reshape([n_contrast, dim]);
    let lse = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(B::supcon_lse(
        contrast.clone().into_primitive().tensor(),
        n_anchor,
        loss.temperature,
    )));
    let classes = Tensor::<B, 1, Int>::from_data(TensorData::new(class_of, [n_contrast]), &device);
    let class_sums = Tensor::<B, 2>::zeros([num_classes, dim], &device).select_assign(
        0,
        classes.clone(),
        contrast.clone(),
        IndexingUpdateOp::Add,
    );
    let anchor = contrast.narrow(0, 0, n_anchor);
    let others = class_sums.select(0, classes.narrow(0, 0, n_anchor)) - anchor.clone();
    let positive = (anchor * others).sum_dim(1).reshape([n_anchor]);
    let weight = Tensor::<B, 1>::from_data(TensorData::new(weight, [n_anchor]), &device);
    SupConTerms {
        loss: (lse * has.clone() - positive * weight).mul_scalar(problem.scale),
        has_positive: has,
    }
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
