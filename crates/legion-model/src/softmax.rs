//! Softmax over the last axis through `legion_kernels::elementwise::softmax_last` on the CPU
//! backend, in inference and in training.
//!
//! burn-flex (without its `simd` feature, see the README) computes `exp` with a scalar libm
//! call per element, and burn-autodiff does not use the backend's softmax at all: it runs the
//! decomposition `exp(x - max) / sum`, each op recorded for the backward pass. In CPU training
//! that scalar `exp` was 9% of a `small` step, plus 3% in glibc's underflow path for the
//! LLaMA mask's blocked scores (PyTorch's `finfo.min`, as in HF). This module is a burn backend
//! extension (`#[backend_extension]`): on flex one vectorised kernel, and under autodiff one
//! recorded op whose backward is `y * (g - sum(g * y))` from the saved output. The GPU
//! backends and other dtypes keep burn's `softmax`.
//!
//! What burn would need upstream for this to go: an autodiff `softmax` that calls the
//! backend's fused op and records this backward, and a vectorised `exp` in burn-flex.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::activation;
use burn::tensor::{DType, Tensor};
use legion_kernels::elementwise;

use crate::cpu_inference::{is_cpu, map_f32};

/// The extension: a softmax over the last axis.
#[backend_extension(Flex, Autodiff)]
pub trait SoftmaxLastBackend: Backend {
    /// Softmax over the last axis of `tensor`.
    fn softmax_last_axis(tensor: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl SoftmaxLastBackend for Flex {
    fn softmax_last_axis(tensor: FloatTensor<Self>) -> FloatTensor<Self> {
        let last = tensor.shape().num_dims() - 1;
        if tensor.dtype() != DType::F32 {
            return Flex::softmax(tensor, last);
        }
        let row_len = tensor.shape()[last];
        map_f32(tensor, |values| elementwise::softmax_last(values, row_len))
    }
}

impl<B: Backend + SoftmaxLastBackend, C: CheckpointStrategy> SoftmaxLastBackend for Autodiff<B, C> {
    fn softmax_last_axis(tensor: FloatTensor<Self>) -> FloatTensor<Self> {
        /// The recorded op; its state is the softmax output.
        #[derive(Debug)]
        struct SoftmaxLast;

        impl<B: Backend> Backward<B, 1> for SoftmaxLast {
            type State = B::FloatTensorPrimitive;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let output = ops.state;
                let last = output.shape().num_dims() - 1;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    // d softmax: y * (g - sum(g * y)) along the axis.
                    let weighted = B::float_mul(grad, output.clone());
                    let dot = B::float_sum_dim(weighted.clone(), last);
                    B::float_sub(weighted, B::float_mul(output, dot))
                });
            }
        }

        match SoftmaxLast
            .prepare::<C>([tensor.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output = B::softmax_last_axis(tensor.primitive().clone());
                prep.finish(output.clone(), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::softmax_last_axis(tensor.into_primitive())),
        }
    }
}

/// `softmax(x, D - 1)`: through the extension for f32 tensors of the CPU backend, with or
/// without autodiff (the default checkpointing strategy); burn's `activation::softmax`
/// otherwise. Within 1e-6 of the exact value relative to `max(p, 1e-3)`; an entry whose
/// shifted score is below -87 gets 0 (burn's: below 1.7e-38; blocked entries are 0 in both).
///
/// # Shapes
/// Any shape -> the same shape.
///
/// # Panics
/// If the last axis is empty.
pub(crate) fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() != DType::F32 || !is_cpu(&x) {
        return activation::softmax(x, D - 1);
    }
    Tensor::from_dispatch(<Dispatch as SoftmaxLastBackend>::softmax_last_axis(
        x.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor, TensorData};

    use super::*;

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    #[test]
    fn matches_burn_in_inference_and_training() {
        let plain = Device::flex();
        plain.seed(3);
        let scores = Tensor::<3>::random([2, 5, 33], Distribution::Normal(0.0, 4.0), &plain);
        // Blocked entries as the LLaMA mask writes them.
        let blocked = Tensor::<3, burn::tensor::Bool>::from_data(
            TensorData::new(
                (0..2 * 5 * 33).map(|i| i % 7 == 0).collect::<Vec<_>>(),
                [2, 5, 33],
            ),
            &plain,
        );
        let scores = scores.mask_fill(blocked, f32::MIN);
        let want = activation::softmax(scores.clone(), 2);
        assert!(max_diff(softmax_last(scores.clone()), want.clone()) < 1e-6);

        // Training: the same values and the same input gradient as burn's decomposed softmax,
        // for a loss that weighs the outputs unevenly.
        let device = Device::flex().autodiff();
        let data = scores.into_data();
        let weights = Tensor::<3>::random([2, 5, 33], Distribution::Normal(0.0, 1.0), &device);
        let grad_of = |fused: bool| {
            let x = Tensor::<3>::from_data(data.clone(), &device).require_grad();
            // The extension's autodiff route is the one under test.
            assert!(x.clone().try_into_primitive::<Autodiff<Flex>>().is_ok());
            let y = if fused {
                softmax_last(x.clone())
            } else {
                activation::softmax(x.clone(), 2)
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            (y.inner(), x.grad(&grads).expect("a gradient"))
        };
        let (y_fused, g_fused) = grad_of(true);
        let (y_burn, g_burn) = grad_of(false);
        assert!(max_diff(y_fused, y_burn) < 1e-6);
        let scale = g_burn.clone().abs().max().into_scalar::<f32>();
        assert!(max_diff(g_fused, g_burn) <= 1e-5 * scale.max(1.0));
    }
}
