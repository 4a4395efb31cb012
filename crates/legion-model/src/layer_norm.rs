//! Layer norm over the last axis (`nn.LayerNorm`) as a burn module whose forward and backward
//! run as one kernel each on the CPU backend.
//!
//! burn's `LayerNorm` calls the backend's `layer_norm`: burn-flex's runs on one thread in this
//! workspace (its row split is behind the `rayon` feature, see `matmul`), and burn-autodiff has
//! no layer norm of its own, so in training it records the decomposition (mean, centre,
//! variance, square root, divide, scale, shift: seven ops over the activation, each with a
//! backward pass). Here a burn backend extension (`#[backend_extension]`, as `softmax`) runs
//! `legion_kernels::elementwise::layer_norm_last` on flex, and under autodiff records one op
//! whose backward is `layer_norm_last_backward` (input, gamma and beta gradients in one pass
//! over the rows, moments recomputed). The GPU backends and dtypes other than f32 keep burn's
//! op, with burn's f16 widening.
//!
//! The module has the fields of burn's `LayerNorm` (`gamma`, `beta`, `epsilon`) and burn's
//! struct name, so its records and checkpoint keys are the same: burn-store's PyTorch adapter
//! renames `weight`/`bias` to `gamma`/`beta` for a struct named `LayerNorm`.
//!
//! What burn would need upstream for this to go: an autodiff `layer_norm` with this backward,
//! and burn-flex's row split without the `rayon` feature's threaded gemm.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use legion_kernels::elementwise::{LayerNormGrads, layer_norm_last, layer_norm_last_backward};

use crate::cpu_inference::{is_cpu, read_f32};

/// Configuration of a [`LayerNorm`].
#[derive(Config, Debug)]
pub struct LayerNormConfig {
    /// Size of the last axis.
    pub d_model: usize,
    /// Added to the variance before the square root (PyTorch's default).
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

impl LayerNormConfig {
    /// Builds the norm with gamma 1 and beta 0.
    pub fn init(&self, device: &Device) -> LayerNorm {
        LayerNorm {
            gamma: Param::from_tensor(Tensor::ones([self.d_model], device)),
            beta: Some(Param::from_tensor(Tensor::zeros([self.d_model], device))),
            epsilon: self.epsilon,
        }
    }
}

/// `(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last axis, with the biased
/// variance (PyTorch's `nn.LayerNorm`).
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Scale, `[d_model]`.
    pub gamma: Param<Tensor<1>>,
    /// Shift, `[d_model]` (an `Option` as in burn's `LayerNorm`, so the records match; every
    /// norm of this crate has one).
    pub beta: Option<Param<Tensor<1>>>,
    /// Added to the variance.
    pub epsilon: f64,
}

impl LayerNorm {
    /// # Shapes
    /// - `x`: `[..., d_model]` -> same shape.
    ///
    /// # Panics
    /// If the last axis of `x` is not `d_model`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let gamma = self.gamma.val();
        let [d_model] = gamma.dims();
        assert_eq!(
            x.dims()[D - 1],
            d_model,
            "LayerNorm: last axis {:?} is not d_model {d_model}",
            x.dims()
        );
        let beta = self.beta.as_ref().map(Param::val);
        match beta {
            Some(beta)
                if [x.dtype(), gamma.dtype(), beta.dtype()] == [DType::F32; 3] && is_cpu(&x) =>
            {
                Tensor::from_dispatch(<Dispatch as LayerNormBackend>::layer_norm_last_axis(
                    x.into_dispatch(),
                    gamma.into_dispatch(),
                    beta.into_dispatch(),
                    self.epsilon,
                ))
            }
            // burn's LayerNorm: f16 is widened for the sum of squares.
            beta if x.dtype() == DType::F16 => {
                let widened = |t: Tensor<1>| t.cast(FloatDType::F32);
                burn::tensor::module::layer_norm(
                    x.cast(FloatDType::F32),
                    widened(gamma),
                    beta.map(widened),
                    self.epsilon,
                )
                .cast(FloatDType::F16)
            }
            beta => burn::tensor::module::layer_norm(x, gamma, beta, self.epsilon),
        }
    }
}

/// The extension: layer norm over the last axis.
#[backend_extension(Flex, Autodiff)]
pub trait LayerNormBackend: Backend {
    /// `(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last axis of `input`.
    fn layer_norm_last_axis(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
}

/// The backward kernel, called by the autodiff op on the inner backend.
pub trait LayerNormBackwardBackend: Backend {
    /// `(d input, d gamma, d beta)` for the output gradient `grad` of
    /// [`LayerNormBackend::layer_norm_last_axis`].
    fn layer_norm_last_axis_backward(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// `read` over the row-major values of three f32 flex tensors (see `read_f32`).
fn read_three_f32<R>(
    [a, b, c]: [&FlexTensor; 3],
    read: impl FnOnce(&[f32], &[f32], &[f32]) -> R,
) -> R {
    read_f32(a, |a| read_f32(b, |b| read_f32(c, |c| read(a, b, c))))
}

fn flex_tensor(values: Vec<f32>, shape: burn::tensor::Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

impl LayerNormBackend for Flex {
    fn layer_norm_last_axis(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        if [&input, &gamma, &beta]
            .iter()
            .any(|t| t.dtype() != DType::F32)
        {
            return Flex::layer_norm(input, gamma, Some(beta), epsilon);
        }
        let out = read_three_f32([&input, &gamma, &beta], |x, gamma, beta| {
            layer_norm_last(x, gamma, beta, epsilon as f32)
        });
        flex_tensor(out, input.shape())
    }
}

impl LayerNormBackwardBackend for Flex {
    fn layer_norm_last_axis_backward(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let LayerNormGrads {
            input: d_input,
            gamma: d_gamma,
            beta: d_beta,
        } = read_three_f32([&input, &gamma, &grad], |x, gamma, grad| {
            layer_norm_last_backward(x, grad, gamma, epsilon as f32)
        });
        (
            flex_tensor(d_input, input.shape()),
            flex_tensor(d_gamma, gamma.shape()),
            flex_tensor(d_beta, gamma.shape()),
        )
    }
}

impl<B: Backend + LayerNormBackend + LayerNormBackwardBackend, C: CheckpointStrategy>
    LayerNormBackend for Autodiff<B, C>
{
    fn layer_norm_last_axis(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        /// The recorded op; its state: the input, gamma and epsilon (the backward recomputes
        /// the row moments).
        #[derive(Debug)]
        struct LayerNormLast;

        impl<B: Backend + LayerNormBackwardBackend> Backward<B, 3> for LayerNormLast {
            type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (input, gamma, epsilon) = ops.state;
                let grad = grads.consume::<B>(&ops.node);
                let (d_input, d_gamma, d_beta) =
                    B::layer_norm_last_axis_backward(input, gamma, grad, epsilon);
                let [input_node, gamma_node, beta_node] = ops.parents;
                for (node, value) in [
                    (input_node, d_input),
                    (gamma_node, d_gamma),
                    (beta_node, d_beta),
                ] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, value);
                    }
                }
            }
        }

        match LayerNormLast
            .prepare::<C>([input.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (input, gamma) = (input.into_primitive(), gamma.into_primitive());
                let output = B::layer_norm_last_axis(
                    input.clone(),
                    gamma.clone(),
                    beta.into_primitive(),
                    epsilon,
                );
                prep.finish((input, gamma, epsilon), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::layer_norm_last_axis(
                input.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                epsilon,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::LayerNormConfig as BurnLayerNormConfig;
    use burn::tensor::Distribution;

    use super::*;

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// A norm with non-trivial gamma and beta, and burn's `LayerNorm` with the same values.
    fn norms(d_model: usize, epsilon: f64, device: &Device) -> (LayerNorm, burn::nn::LayerNorm) {
        let gamma = Tensor::<1>::random([d_model], Distribution::Normal(1.0, 0.5), device);
        let beta = Tensor::<1>::random([d_model], Distribution::Normal(0.0, 0.5), device);
        let ours = LayerNorm {
            gamma: Param::from_tensor(gamma.clone()),
            beta: Some(Param::from_tensor(beta.clone())),
            epsilon,
        };
        let mut burns = BurnLayerNormConfig::new(d_model)
            .with_epsilon(epsilon)
            .init(device);
        burns.gamma = Param::from_tensor(gamma);
        burns.beta = Some(Param::from_tensor(beta));
        (ours, burns)
    }

    /// `x` normalised over its last axis in f64, scaled and shifted by `norm`'s parameters.
    fn reference(x: &Tensor<3>, norm: &LayerNorm) -> Vec<f64> {
        let values = |t: Tensor<1>| t.to_data().try_to_vec::<f32>().expect("f32");
        let gamma = values(norm.gamma.val());
        let beta = values(norm.beta.as_ref().expect("a beta").val());
        let d = gamma.len();
        let x = x.to_data().try_to_vec::<f32>().expect("f32");
        x.chunks(d)
            .flat_map(|row| {
                let row: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
                let mean = row.iter().sum::<f64>() / d as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
                let rstd = 1.0 / (var + norm.epsilon).sqrt();
                (0..d)
                    .map(|c| (row[c] - mean) * rstd * f64::from(gamma[c]) + f64::from(beta[c]))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn matches_f64_and_burn_in_inference() {
        let device = Device::flex();
        device.seed(11);
        // Rows with a large offset and a tiny spread: a wrong epsilon or a mean that loses
        // digits would show.
        let x = Tensor::<3>::random([3, 50, 40], Distribution::Normal(2.0, 0.01), &device);
        let (ours, burns) = norms(40, 1e-6, &device);
        let got = ours
            .forward(x.clone())
            .to_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let worst = got
            .iter()
            .zip(reference(&x, &ours))
            .map(|(&g, w)| (f64::from(g) - w).abs())
            .fold(0.0, f64::max);
        // burn's own kernel is within 1.3e-4 on this input.
        assert!(worst < 5e-5, "worst {worst:e}");
        // A transposed (non-contiguous) input, against burn.
        let xt = x.swap_dims(0, 1);
        assert!(max_diff(ours.forward(xt.clone()), burns.forward(xt)) < 2e-4);
    }

    #[test]
    fn matches_burn_in_training() {
        let device = Device::flex().autodiff();
        device.seed(12);
        let data =
            Tensor::<3>::random([2, 37, 24], Distribution::Normal(0.5, 2.0), &device).into_data();
        let weights = Tensor::<3>::random([2, 37, 24], Distribution::Normal(0.0, 1.0), &device);
        let (ours, burns) = norms(24, 1e-5, &device);
        let run = |fused: bool| {
            let x = Tensor::<3>::from_data(data.clone(), &device).require_grad();
            // The extension's autodiff route is the one under test.
            assert!(x.clone().try_into_primitive::<Autodiff<Flex>>().is_ok());
            let y = if fused {
                ours.forward(x.clone())
            } else {
                burns.forward(x.clone())
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let (gamma, beta) = if fused {
                (&ours.gamma, ours.beta.as_ref())
            } else {
                (&burns.gamma, burns.beta.as_ref())
            };
            let grad_of = |p: &Param<Tensor<1>>| p.val().grad(&grads).expect("a gradient");
            (
                y.inner(),
                x.grad(&grads).expect("a gradient"),
                grad_of(gamma),
                grad_of(beta.expect("a beta")),
            )
        };
        let (y, dx, dgamma, dbeta) = run(true);
        let (y_burn, dx_burn, dgamma_burn, dbeta_burn) = run(false);
        assert!(max_diff(y, y_burn) < 1e-5);
        assert!(max_diff(dx, dx_burn) < 1e-4);
        assert!(max_diff(dgamma, dgamma_burn) < 1e-4);
        assert!(max_diff(dbeta, dbeta_burn) < 1e-4);
    }
}
