//! Gradient post-processing: the global L2 norm (as `torch.nn.utils.clip_grad_norm_` and
//! DeepSpeed's `gradient_clipping`) and clipping by it.
//!
//! burn's own `GradientClipping::Norm` clips every parameter by its own norm; the reference
//! clips all gradients together, which is what this does.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: f64,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let square: f64 = grad.clone().mul(grad).sum().into_scalar::<f64>();
            self.total += square;
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, grad.mul_scalar(self.factor));
        }
    }
}

/// Global L2 norm of the gradients of `module`'s parameters (NaN/inf when any gradient is).
pub fn global_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut visitor = SquaredNorm { grads, total: 0.0 };
    module.visit(&mut visitor);
    visitor.total.sqrt()
}

/// Scales every gradient by `factor`.
pub fn scale<M: Module>(module: &M, grads: &mut GradientsParams, factor: f64) {
    let mut visitor = Scale { grads, factor };
    module.visit(&mut visitor);
}

/// Clips the gradients to global norm `max_norm` (torch: factor `max_norm / (norm + 1e-6)`
/// when below 1); returns the norm before clipping. `max_norm <= 0` only measures.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = global_norm(module, grads);
    if max_norm > 0.0 && norm.is_finite() {
        let factor = max_norm / (norm + 1e-6);
        if factor < 1.0 {
            scale(module, grads, factor);
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Device;

    #[test]
    fn clipping_uses_the_global_norm() {
        let device = Device::flex().autodiff();
        let layer: Linear = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<2>::ones([4, 3], &device);
        let loss = layer.forward(x).sum().mul_scalar(10.0);
        let mut grads = GradientsParams::from_grads(loss.backward(), &layer);
        let before = global_norm(&layer, &grads);
        // d/dW of 10 * sum(xW + b) with 4 rows of ones: every weight grad is 40, bias 40.
        let expected = (40f64 * 40.0 * 8.0).sqrt();
        assert!((before - expected).abs() < 1e-3, "{before} {expected}");
        let reported = clip_global_norm(&layer, &mut grads, 1.0);
        assert_eq!(reported, before);
        let after = global_norm(&layer, &grads);
        assert!((after - 1.0).abs() < 1e-4, "{after}");
    }
}
