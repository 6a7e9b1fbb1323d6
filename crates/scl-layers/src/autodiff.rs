//! [`LayerBackend`] for `Autodiff` over a backend that implements it: the graph nodes whose
//! backward calls the inner backend's gradients.

use super::*;

/// A tensor of the inner backend in the autodiff graph as a constant.
fn constant<B: Backend, C: CheckpointStrategy>(t: FloatTensor<B>) -> FloatTensor<Autodiff<B, C>> {
    <Autodiff<B, C> as AutodiffBackend>::from_inner(t)
}

/// The autodiff wrapper: the forward runs the inner backend's convolution and checkpoints the
/// input and the weight (as Burn's own convolution does); the backward calls the inner
/// backend's [`LayerBackend`] gradients, and Burn's bias gradient. The gradient operations
/// run on the inner backend and enter the graph as constants.
/// The autodiff convolution, with or without bias (one body for both trait methods).
fn autodiff_conv2d<B: LayerBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<B, C>> {
    #[derive(Debug)]
    struct WithBias;
    #[derive(Debug)]
    struct NoBias;

    fn grads_of<B: LayerBackend>(
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        grad: FloatTensor<B>,
        options: ConvOptions<2>,
        want: [bool; 2],
    ) -> [Option<FloatTensor<B>>; 2] {
        let input = want[0].then(|| {
            profile::timed(Part::InputGrad, || {
                B::scl_conv2d_input_grad(x.clone(), weight.clone(), grad.clone(), options.clone())
            })
        });
        let weight = want[1].then(|| {
            profile::timed(Part::WeightGrad, || {
                B::scl_conv2d_weight_grad(x, weight, grad, options)
            })
        });
        [input, weight]
    }

    impl<B: LayerBackend> Backward<B, 3> for WithBias {
        type State = (NodeId, NodeId, NodeId, ConvOptions<2>);

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let [node_x, node_weight, node_bias] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            let (x, weight, bias, options) = ops.state;
            let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x);
            let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight);
            let bias = checkpointer.retrieve_node_output::<FloatTensor<B>>(bias);
            if let Some(node) = node_bias {
                grads.register::<B>(
                    node.id,
                    B::conv2d_bias_backward(x.clone(), bias, grad.clone()),
                );
            }
            let [dx, dw] = grads_of::<B>(
                x,
                weight,
                grad,
                options,
                [node_x.is_some(), node_weight.is_some()],
            );
            if let (Some(node), Some(dx)) = (node_x, dx) {
                grads.register::<B>(node.id, dx);
            }
            if let (Some(node), Some(dw)) = (node_weight, dw) {
                grads.register::<B>(node.id, dw);
            }
        }
    }

    impl<B: LayerBackend> Backward<B, 2> for NoBias {
        type State = (NodeId, NodeId, ConvOptions<2>);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let [node_x, node_weight] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            let (x, weight, options) = ops.state;
            let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x);
            let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight);
            let [dx, dw] = grads_of::<B>(
                x,
                weight,
                grad,
                options,
                [node_x.is_some(), node_weight.is_some()],
            );
            if let (Some(node), Some(dx)) = (node_x, dx) {
                grads.register::<B>(node.id, dx);
            }
            if let (Some(node), Some(dw)) = (node_weight, dw) {
                grads.register::<B>(node.id, dw);
            }
        }
    }

    let forward = |x, weight, bias: Option<FloatTensor<B>>, options| {
        profile::timed(Part::Forward, || match bias {
            Some(bias) => B::scl_conv2d_with_bias(x, weight, bias, options),
            None => B::scl_conv2d(x, weight, options),
        })
    };
    match bias {
        Some(bias) => match WithBias
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&weight),
                    prep.checkpoint(&bias),
                    options.clone(),
                );
                prep.finish(
                    state,
                    forward(
                        x.into_primitive(),
                        weight.into_primitive(),
                        Some(bias.into_primitive()),
                        options,
                    ),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(
                x.into_primitive(),
                weight.into_primitive(),
                Some(bias.into_primitive()),
                options,
            )),
        },
        None => match NoBias
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&weight),
                    options.clone(),
                );
                prep.finish(
                    state,
                    forward(x.into_primitive(), weight.into_primitive(), None, options),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(
                x.into_primitive(),
                weight.into_primitive(),
                None,
                options,
            )),
        },
    }
}

impl<B: LayerBackend, C: CheckpointStrategy> LayerBackend for Autodiff<B, C> {
    fn scl_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        autodiff_conv2d::<B, C>(x, weight, None, options)
    }

    fn scl_conv2d_with_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        autodiff_conv2d::<B, C>(x, weight, Some(bias), options)
    }

    fn scl_conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        constant::<B, C>(B::scl_conv2d_input_grad(
            x.into_primitive(),
            weight.into_primitive(),
            output_grad.into_primitive(),
            options,
        ))
    }

    fn scl_conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        constant::<B, C>(B::scl_conv2d_weight_grad(
            x.into_primitive(),
            weight.into_primitive(),
            output_grad.into_primitive(),
            options,
        ))
    }

    fn scl_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> Three<Self> {
        #[derive(Debug)]
        struct NormBackward;

        impl<B: LayerBackend> Backward<B, 3> for NormBackward {
            type State = ([FloatTensor<B>; 4], f64);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let ([x, gamma, mean, var], epsilon) = ops.state;
                let (dx, dgamma, dbeta) = profile::timed(Part::NormBackward, || {
                    B::scl_batch_norm_backward(x, gamma, mean, var, grad, epsilon)
                });
                for (node, g) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, g);
                    }
                }
            }
        }

        let forward = |x, gamma, beta| {
            profile::timed(Part::NormForward, || {
                B::scl_batch_norm(x, gamma, beta, epsilon)
            })
        };
        match NormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, gamma, beta) = (
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                );
                let (y, mean, var) = forward(x.clone(), gamma.clone(), beta);
                let state = ([x, gamma, mean.clone(), var.clone()], epsilon);
                (
                    prep.finish(state, y),
                    constant::<B, C>(mean),
                    constant::<B, C>(var),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (y, mean, var) = forward(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                );
                (
                    prep.finish(y),
                    constant::<B, C>(mean),
                    constant::<B, C>(var),
                )
            }
        }
    }

    fn scl_batch_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> Three<Self> {
        let (dx, dgamma, dbeta) = B::scl_batch_norm_backward(
            x.into_primitive(),
            gamma.into_primitive(),
            mean.into_primitive(),
            var.into_primitive(),
            output_grad.into_primitive(),
            epsilon,
        );
        (
            constant::<B, C>(dx),
            constant::<B, C>(dgamma),
            constant::<B, C>(dbeta),
        )
    }

    fn scl_batch_norm_inference(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        constant::<B, C>(B::scl_batch_norm_inference(
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            mean.into_primitive(),
            var.into_primitive(),
            epsilon,
        ))
    }

    fn scl_concat_channels(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ConcatBackward;

        impl<B: LayerBackend> Backward<B, 2> for ConcatBackward {
            type State = usize;

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [node_a, node_b] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (da, db) = B::scl_split_channels(grad, ops.state);
                for (node, g) in [(node_a, da), (node_b, db)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, g);
                    }
                }
            }
        }

        let at = burn::backend::TensorMetadata::shape(a.primitive()).dims::<4>()[1];
        match ConcatBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                at,
                B::scl_concat_channels(a.into_primitive(), b.into_primitive()),
            ),
            OpsKind::UnTracked(prep) => prep.finish(B::scl_concat_channels(
                a.into_primitive(),
                b.into_primitive(),
            )),
        }
    }

    fn scl_split_channels(
        t: FloatTensor<Self>,
        at: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (a, b) = B::scl_split_channels(t.into_primitive(), at);
        (constant::<B, C>(a), constant::<B, C>(b))
    }
}
