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
//! ([`supcon_fused_composed`]). On the CPU backend those would be about twenty passes over
//! `N x d` values around the kernel, so there the whole per-anchor loss is one operation on
//! a host copy of the features, [`SupConHostBackend::supcon_host_terms`] ([`host`]).
//!
//! Both are Burn backend extensions (`#[backend_extension]`), reached from a `Tensor<D>`
//! through Burn's dispatch, with implementations for
//!
//! - Burn's Flex CPU backend (cargo feature `flex`, on by default): the CPU kernel of [`cpu`],
//!   register-blocked SIMD micro-kernels (AVX-512, AVX2 + FMA or portable, detected at run
//!   time), multi-threaded, memory `O(N d + N)`, for `f32` tensors (other float types take the
//!   reference);
//! - with the cargo feature `wgpu` or `cuda`, Burn's CubeCL backend and its fusion wrapper:
//!   the CubeCL kernels of `cube`;
//! - `Autodiff` over either: the forward keeps the (already stored) features and the `[Na]`
//!   log-sum-exps; the backward recomputes the softmax weights tile by tile from them. No
//!   `N x N` tensor is kept between forward and backward.
//!
//! On a device without a kernel ([`has_kernel`] is false) the public functions compute the
//! log-sum-exp in plain tensor ops ([`reference_lse`]), so every Burn device works.

pub mod cpu;
#[cfg(feature = "cubecl")]
pub mod cube;
pub mod host;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, DispatchDevice, backend_extension};
use burn::tensor::{DType, Device, IndexingUpdateOp, Int, Tensor, TensorData};

use crate::{ContrastMode, SupConLoss, SupConTerms, l2_normalize};
pub use host::TermsProblem;

/// The masked log-sum-exp of SupCon and its gradient, as a Burn backend extension.
///
/// Implemented for Flex (the CPU kernel), with the feature `cubecl` (through `wgpu` or
/// `cuda`) for Burn's CubeCL backend and its fusion wrapper, and for `Autodiff` over them
/// (the fused backward). Call it through [`lse`] and [`lse_backward`], which fall back to the
/// reference on devices without a kernel.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(feature = "cubecl"),
    Fusion: cfg(feature = "cubecl"),
    Autodiff
)]
pub trait SupConBackend: Backend {
    /// `LSE_i = log sum_{a != i} exp(z_i . z_a / temperature)` for the first `n_anchor` rows.
    ///
    /// # Shapes
    /// - `z`: `[n_contrast, dim]`, `n_contrast >= 2`, `n_anchor <= n_contrast`
    /// - output: `[n_anchor]`
    #[fusion(dtype = z, shape = burn::tensor::Shape::new([*n_anchor]))]
    fn supcon_lse(z: FloatTensor<Self>, n_anchor: usize, temperature: f64) -> FloatTensor<Self>;

    /// The gradient with respect to `z` of `sum_i grad_i * LSE_i`, from the forward's output.
    ///
    /// # Shapes
    /// - `z`: `[n_contrast, dim]`; `lse`, `grad`: `[n_anchor]`
    /// - output: `[n_contrast, dim]`
    #[fusion(dtype = z, shape = z)]
    fn supcon_lse_backward(
        z: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        temperature: f64,
    ) -> FloatTensor<Self>;
}

/// The whole per-anchor SupCon loss on the host, as a Burn backend extension of the CPU
/// backend (Flex, and `Autodiff` over it, whose backward is [`host::backward`]).
#[backend_extension(Flex: cfg(feature = "flex"), Autodiff)]
pub trait SupConHostBackend: Backend {
    /// The per-anchor losses `[n_anchor]` of `features` (`[batch, views, dim]`, `f32`)
    /// computed on the host ([`host::forward`]).
    fn supcon_host_terms(features: FloatTensor<Self>, problem: TermsProblem) -> FloatTensor<Self>;
}

/// Which fused implementation a device has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The CPU kernel of [`cpu`] (Burn's Flex backend), with the whole loss on the host.
    Cpu,
    /// The CubeCL kernels (Burn's CubeCL backend: wgpu, CUDA).
    Cube,
}

/// The fused implementation that tensors on `device` run, if any (an autodiff device answers
/// for the device it wraps): [`Kernel::Cpu`] on Flex with the cargo feature `flex`,
/// [`Kernel::Cube`] on a CubeCL device with the feature `cubecl`, else `None`.
pub fn kernel(device: &Device) -> Option<Kernel> {
    fn of(device: &DispatchDevice) -> Option<Kernel> {
        match device {
            #[cfg(feature = "flex")]
            DispatchDevice::Flex(_) => Some(Kernel::Cpu),
            #[cfg(feature = "cubecl")]
            DispatchDevice::Cube(_) => Some(Kernel::Cube),
            DispatchDevice::Autodiff(inner) => of(inner),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
    of(device.as_dispatch())
}

/// Whether tensors on `device` take a fused kernel (what [`crate::Implementation::Auto`]
/// looks at); see [`kernel`].
pub fn has_kernel(device: &Device) -> bool {
    kernel(device).is_some()
}

/// [`SupConBackend::supcon_lse`] on `z` (`[n_contrast, dim]`): the fused kernel of `z`'s
/// device, or [`reference_lse`] where it has none. Differentiable: on an autodiff device the
/// fused backward is [`SupConBackend::supcon_lse_backward`].
pub fn lse(z: Tensor<2>, n_anchor: usize, temperature: f64) -> Tensor<1> {
    if has_kernel(&z.device()) {
        Tensor::from_dispatch(<burn::backend::Dispatch as SupConBackend>::supcon_lse(
            z.into_dispatch(),
            n_anchor,
            temperature,
        ))
    } else {
        reference_lse(z, n_anchor, temperature)
    }
}

/// [`SupConBackend::supcon_lse_backward`] on `z`'s device, or [`reference_lse_backward`]
/// where it has no kernel.
pub fn lse_backward(z: Tensor<2>, lse: Tensor<1>, grad: Tensor<1>, temperature: f64) -> Tensor<2> {
    if has_kernel(&z.device()) {
        Tensor::from_dispatch(
            <burn::backend::Dispatch as SupConBackend>::supcon_lse_backward(
                z.into_dispatch(),
                lse.into_dispatch(),
                grad.into_dispatch(),
                temperature,
            ),
        )
    } else {
        reference_lse_backward(z, lse, grad, temperature)
    }
}

/// The `[Na, Nc]` logits with the self entries at `-inf`.
fn masked_logits(z: Tensor<2>, n_anchor: usize, temperature: f64) -> Tensor<2> {
    let [n_contrast, _] = z.dims();
    let device = z.device();
    let anchor = z.clone().narrow(0, 0, n_anchor);
    let logits = anchor.matmul(z.transpose()).div_scalar(temperature);
    let is_self = crate::reference::self_mask(n_anchor, n_contrast, &device);
    logits.mask_fill(is_self, f32::NEG_INFINITY)
}

/// The reference masked log-sum-exp, `[Na]`, in plain tensor ops.
pub fn reference_lse(z: Tensor<2>, n_anchor: usize, temperature: f64) -> Tensor<1> {
    let logits = masked_logits(z, n_anchor, temperature);
    let max = logits.clone().max_dim(1);
    let sum = (logits - max.clone()).exp().sum_dim(1);
    (max + sum.log()).reshape([n_anchor])
}

/// The reference gradient of `sum_i grad_i LSE_i` with respect to `z`, in plain tensor ops.
pub fn reference_lse_backward(
    z: Tensor<2>,
    lse: Tensor<1>,
    grad: Tensor<1>,
    temperature: f64,
) -> Tensor<2> {
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

#[cfg(feature = "flex")]
mod flex_impl {
    use super::*;
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;

    /// `f` of the values of the `f32` tensor `t` in row-major order: a view of its storage
    /// when it is contiguous, else of a contiguous copy.
    pub(crate) fn with_f32<R>(t: &FlexTensor, f: impl FnOnce(&[f32]) -> R) -> R {
        match t.as_slice::<f32>() {
            Some(values) => f(values),
            None => f(t
                .to_contiguous()
                .as_slice::<f32>()
                .expect("a contiguous f32 tensor has a slice")),
        }
    }

    /// A Flex `f32` tensor of `shape` from host values.
    pub(crate) fn flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    fn tensor<const D: usize>(t: FlexTensor) -> Tensor<D> {
        Tensor::from_primitive::<Flex>(t)
    }

    fn primitive<const D: usize>(t: Tensor<D>) -> FlexTensor {
        t.try_into_primitive::<Flex>()
            .expect("a tensor computed on Flex stays on Flex")
    }

    /// The CPU kernel for `f32` tensors; other float types take the reference (the kernel
    /// computes in `f32` and would lose precision).
    impl SupConBackend for Flex {
        fn supcon_lse(z: FlexTensor, n_anchor: usize, temperature: f64) -> FlexTensor {
            if z.dtype() != DType::F32 {
                return primitive(reference_lse(tensor(z), n_anchor, temperature));
            }
            let [n_contrast, dim] = z.layout().shape().dims();
            let out = with_f32(&z, |values| {
                cpu::lse(&cpu::Problem {
                    z: values,
                    n_contrast,
                    n_anchor,
                    dim,
                    temperature: temperature as f32,
                })
            });
            flex_tensor(out, [n_anchor])
        }

        fn supcon_lse_backward(
            z: FlexTensor,
            lse: FlexTensor,
            grad: FlexTensor,
            temperature: f64,
        ) -> FlexTensor {
            if z.dtype() != DType::F32 {
                return primitive(reference_lse_backward(
                    tensor(z),
                    tensor(lse),
                    tensor(grad),
                    temperature,
                ));
            }
            let [n_contrast, dim] = z.layout().shape().dims();
            let out = with_f32(&z, |values| {
                with_f32(&lse, |lse| {
                    with_f32(&grad, |grad| {
                        cpu::lse_backward(
                            &cpu::Problem {
                                z: values,
                                n_contrast,
                                n_anchor: lse.len(),
                                dim,
                                temperature: temperature as f32,
                            },
                            lse,
                            grad,
                        )
                    })
                })
            });
            flex_tensor(out, [n_contrast, dim])
        }
    }

    impl SupConHostBackend for Flex {
        fn supcon_host_terms(features: FlexTensor, problem: TermsProblem) -> FlexTensor {
            host::forward(&features, &problem).0
        }
    }

    /// The autodiff wrapper of the host loss: one node whose backward is [`host::backward`].
    impl<C: CheckpointStrategy> SupConHostBackend for Autodiff<Flex, C> {
        fn supcon_host_terms(
            features: FloatTensor<Self>,
            problem: TermsProblem,
        ) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct TermsBackward;

            impl Backward<Flex, 1> for TermsBackward {
                type State = host::HostTerms;

                fn backward(
                    self,
                    ops: Ops<Self::State, 1>,
                    grads: &mut Gradients,
                    _checkpointer: &mut Checkpointer,
                ) {
                    let [node] = ops.parents;
                    let grad = grads.consume::<Flex>(&ops.node);
                    if let Some(node) = node {
                        grads.register::<Flex>(node.id, host::backward(&ops.state, &grad));
                    }
                }
            }

            match TermsBackward
                .prepare::<C>([features.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (loss, state) = host::forward(features.primitive(), &problem);
                    prep.finish(state, loss)
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(host::forward(features.primitive(), &problem).0)
                }
            }
        }
    }
}
#[cfg(feature = "flex")]
pub(crate) use flex_impl::{flex_tensor, with_f32};

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
            .prepare::<C>([z.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let z = z.into_primitive();
                let lse = B::supcon_lse(z.clone(), n_anchor, temperature);
                prep.finish((z, lse.clone(), temperature), lse)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::supcon_lse(z.into_primitive(), n_anchor, temperature))
            }
        }
    }

    fn supcon_lse_backward(
        z: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        temperature: f64,
    ) -> FloatTensor<Self> {
        // The gradient of a gradient is not needed anywhere: the backward is computed on the
        // inner backend and enters the graph as a constant.
        let out = B::supcon_lse_backward(
            z.into_primitive(),
            lse.into_primitive(),
            grad.into_primitive(),
            temperature,
        );
        <Self as AutodiffBackend>::from_inner(out)
    }
}

/// Per-anchor SupCon losses through [`SupConBackend::supcon_lse`]: the same values and
/// gradients as [`crate::supcon_reference`], without the `N x N` matrix when the features'
/// device has a fused kernel.
///
/// On the CPU backend ([`Kernel::Cpu`], `f32` features) the whole loss is one operation on a
/// host copy of the features ([`host`]); elsewhere it is composed from tensor operations
/// around the kernel ([`supcon_fused_composed`]). The labels are read to the host once (to
/// count the positives of every anchor).
///
/// # Panics
/// When `labels` does not have `batch` entries.
pub fn supcon_fused(
    features: Tensor<3>,
    labels: Option<Tensor<1, Int>>,
    loss: &SupConLoss,
) -> SupConTerms {
    let on_host = kernel(&features.device()) == Some(Kernel::Cpu);
    fused_terms(features, labels, loss, on_host)
}

/// [`supcon_fused`] composed from tensor operations around [`SupConBackend::supcon_lse`] on
/// every device (what the GPU backends run): the normalisation, the class sums and the
/// positive term are Burn operations differentiated by Burn's autodiff, and the features
/// stay on the device.
///
/// # Panics
/// When `labels` does not have `batch` entries.
pub fn supcon_fused_composed(
    features: Tensor<3>,
    labels: Option<Tensor<1, Int>>,
    loss: &SupConLoss,
) -> SupConTerms {
    fused_terms(features, labels, loss, false)
}

fn fused_terms(
    features: Tensor<3>,
    labels: Option<Tensor<1, Int>>,
    loss: &SupConLoss,
    on_host: bool,
) -> SupConTerms {
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
            l.try_into_vec_as::<i64>().expect("labels convert to i64")
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
    let has = Tensor::<1>::from_data(TensorData::new(has, [n_anchor]), &device);
    if on_host && features.dtype() == DType::F32 {
        let terms = <burn::backend::Dispatch as SupConHostBackend>::supcon_host_terms(
            features.into_dispatch(),
            problem,
        );
        return SupConTerms {
            loss: Tensor::from_dispatch(terms),
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
    let lse = lse(contrast.clone(), n_anchor, loss.temperature);
    let classes = Tensor::<1, Int>::from_data(TensorData::new(class_of, [n_contrast]), &device);
    let class_sums = Tensor::<2>::zeros([num_classes, dim], &device).select_assign(
        0,
        classes.clone(),
        contrast.clone(),
        IndexingUpdateOp::Add,
    );
    let anchor = contrast.narrow(0, 0, n_anchor);
    let others = class_sums.select(0, classes.narrow(0, 0, n_anchor)) - anchor.clone();
    let positive = (anchor * others).sum_dim(1).reshape([n_anchor]);
    let weight = Tensor::<1>::from_data(TensorData::new(weight, [n_anchor]), &device);
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
