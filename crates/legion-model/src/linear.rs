//! `Linear` layers on the CPU backend: bf16 weights multiplied without widening the weight, f32
//! products on all of rayon's threads.
//!
//! burn-flex 0.22 multiplies bf16 matrices by converting both operands to f32 on every call;
//! [`forward`] sends bf16 inference on the CPU backend to `legion_kernels::matmul` instead
//! (which reads the bf16 weight in place, see that crate), f32 on the CPU backend (inference
//! and training) to [`crate::matmul::matmul`] (burn-flex's gemm runs on one thread here), and
//! everything else (f16, bf16 training, the GPU backends) to burn's `Linear::forward`.

use burn::backend::Flex;
use burn::nn::Linear;
use burn::tensor::{DType, Tensor, TensorData, bf16};
use legion_kernels::{Kernel, WeightOrder, WeightView, matmul};

use crate::cpu_inference::is_cpu;
use crate::matmul as threaded;

/// `linear.forward(x)`, through the bf16 kernel of this module when `x` and the weight are bf16
/// tensors of the CPU backend without autodiff, through [`crate::matmul::matmul`] for f32 on
/// the CPU backend (with or without autodiff), through burn's `Linear::forward` otherwise.
///
/// # Shapes
/// `x` `[..., d_input]` -> `[..., d_output]`.
///
/// # Panics
/// If the last axis of `x` is not `d_input` (as `Linear::forward`).
pub fn forward<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    if let Some(y) = forward_bf16(linear, &x) {
        return y;
    }
    if let Some(y) = forward_f32(linear, &x) {
        return y;
    }
    linear.forward(x)
}

/// f32 on the CPU backend, with or without autodiff: `x @ W + b` with the product through
/// [`crate::matmul::matmul`] (on all of rayon's threads; burn-flex's gemm uses one), the input
/// seen as one `[rows, d_input]` matrix; in inference each thread adds the bias to its own
/// block ([`crate::matmul::matmul_add_bias_inference`]). The same outputs as `Linear::forward`,
/// bit for bit; in training, the weight's gradient sums all rows in one product rather than one
/// per batch entry, so it can differ from burn's in the last bits. `None` when it does not apply.
fn forward_f32<const D: usize>(linear: &Linear, x: &Tensor<D>) -> Option<Tensor<D>> {
    if x.dtype() != DType::F32
        || crate::precision::param_dtype(&linear.weight) != DType::F32
        || !is_cpu(x)
    {
        return None;
    }
    let dims = x.dims();
    let (k, m) = (dims[D - 1], dims[..D - 1].iter().product::<usize>());
    let rows: Tensor<2> = x.clone().reshape([m, k]);
    let weight = linear.weight.val();
    let bias = linear.bias.as_ref().map(|bias| bias.val());
    let fused = bias
        .as_ref()
        .and_then(|bias| threaded::matmul_add_bias_inference(&rows, &weight, bias));
    let out = match (fused, bias) {
        (Some(out), _) => out,
        (None, Some(bias)) => threaded::matmul(rows, weight) + bias.unsqueeze_dim(0),
        (None, None) => threaded::matmul(rows, weight),
    };
    let mut out_dims = dims;
    out_dims[D - 1] = out.dims()[1];
    Some(out.reshape(out_dims))
}

/// The bf16 path of [`forward`]; `None` when it does not apply.
fn forward_bf16<const D: usize>(linear: &Linear, x: &Tensor<D>) -> Option<Tensor<D>> {
    if x.dtype() != DType::BF16 || crate::precision::param_dtype(&linear.weight) != DType::BF16 {
        return None;
    }
    let device = x.device();
    let dims = x.dims();
    let k = dims[D - 1];
    let m = dims[..D - 1].iter().product::<usize>();
    let weight = linear.weight.val().try_into_primitive::<Flex>().ok()?;
    let [wk, n] = [weight.layout().shape()[0], weight.layout().shape()[1]];
    assert_eq!(wk, k, "linear: input width {k} but the weight expects {wk}");
    // Read the weight in place: row-major `[k, n]` as burn initialises it, or `[n, k]` seen
    // transposed. Any other view (a slice, a broadcast) takes burn's path.
    let strides = weight.layout().strides();
    let order = match strides {
        [s, 1] if *s == n as isize => WeightOrder::KByN,
        [1, s] if *s == k as isize => WeightOrder::NByK,
        _ if n == 1 || k == 1 => WeightOrder::KByN,
        _ => return None,
    };
    let input = x.clone().try_into_primitive::<Flex>().ok()?;
    let input = if input.is_contiguous() {
        input
    } else {
        input.to_contiguous()
    };
    let a = bits(input.as_slice::<bf16>()?);
    let w = &bits(weight.storage::<bf16>())[weight.layout().start_offset()..];
    let bias = linear
        .bias
        .as_ref()
        .map(|b| {
            b.val()
                .cast(burn::tensor::FloatDType::F32)
                .into_data()
                .try_to_vec::<f32>()
        })
        .transpose()
        .ok()?;
    let out = matmul(
        a,
        m,
        WeightView {
            data: w,
            k,
            n,
            order,
        },
        bias.as_deref(),
        Kernel::detect(),
    );
    let out: Vec<bf16> = out.into_iter().map(bf16::from_bits).collect();
    let mut out_dims = dims;
    out_dims[D - 1] = n;
    Some(
        Tensor::<2>::from_data(TensorData::new(out, [m, n]), (&device, DType::BF16))
            .reshape(out_dims),
    )
}

/// `bf16` values as their bit patterns (`bf16` is a transparent `u16`).
fn bits(values: &[bf16]) -> &[u16] {
    // SAFETY: `half::bf16` is `#[repr(transparent)]` over `u16`: same size, alignment and
    // validity (every bit pattern is a value of both).
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u16>(), values.len()) }
}

#[cfg(test)]
mod tests {
    use burn::nn::LinearConfig;
    use burn::tensor::{Device, Distribution, FloatDType};

    use super::*;
    use crate::precision::cast_params;

    /// Largest absolute difference between two tensors, in f32.
    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a.cast(FloatDType::F32) - b.cast(FloatDType::F32))
            .abs()
            .max()
            .into_scalar::<f32>()
    }

    /// A bf16 layer on bf16 inputs takes this module's kernel (a decode row and a 3-D batch) and
    /// agrees with burn's own bf16 path (which widens to f32, multiplies, and rounds) within two
    /// bf16 roundings of the output scale; f32 layers and inputs are burn's path, bit for bit.
    #[test]
    fn bf16_tensors_agree_with_burn_and_f32_is_untouched() {
        let device = Device::flex();
        let layer: Linear = LinearConfig::new(150, 70).init(&device);
        for dims in [[1, 1, 150], [2, 7, 150]] {
            let x = Tensor::<3>::random(dims, Distribution::Uniform(-1.0, 1.0), &device);
            assert_eq!(
                max_diff(forward(&layer, x.clone()), layer.forward(x.clone())),
                0.0
            );
            let layer16 = cast_params(layer.clone(), FloatDType::BF16);
            let x16 = x.cast(FloatDType::BF16);
            let ours = forward(&layer16, x16.clone());
            assert_eq!(ours.dtype(), DType::BF16);
            assert_eq!(ours.dims(), [dims[0], dims[1], 70]);
            let burn = layer16.forward(x16);
            let scale = burn
                .clone()
                .cast(FloatDType::F32)
                .abs()
                .max()
                .into_scalar::<f32>();
            let diff = max_diff(ours, burn);
            assert!(diff <= scale / 128.0, "{dims:?}: {diff} (scale {scale})");
        }
    }

    /// Large f32 inference products are split over threads and give burn's result bit for bit.
    #[test]
    fn f32_rows_split_over_threads_are_bit_exact() {
        let device = Device::flex();
        let layer: Linear = LinearConfig::new(96, 80).init(&device);
        // 2,600 rows: blocks of 1,300 on two threads, one odd-sized tail on three.
        let x = Tensor::<3>::random([2, 1300, 96], Distribution::Uniform(-1.0, 1.0), &device);
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let split = pool
                .install(|| forward_f32(&layer, &x))
                .expect("the f32 path applies");
            assert_eq!(split.dims(), [2, 1300, 80]);
            assert_eq!(
                max_diff(split, layer.forward(x.clone())),
                0.0,
                "{threads} threads"
            );
        }
    }

    /// Autodiff tensors keep burn's path: as in half-precision training, gradients flow
    /// through the bf16 cast of the f32 parameters back to them and to the input.
    #[test]
    fn autodiff_tensors_keep_their_gradients() {
        let device = Device::flex().autodiff();
        let master: Linear = LinearConfig::new(8, 4).init(&device);
        let compute = cast_params(master.clone(), FloatDType::BF16);
        let x = Tensor::<2>::ones([3, 8], &device)
            .cast(FloatDType::BF16)
            .require_grad();
        let grads = forward(&compute, x.clone()).sum().backward();
        assert_eq!(x.grad(&grads).expect("input gradient").dims(), [3, 8]);
        let w_grad = master.weight.grad(&grads).expect("weight gradient");
        // d(sum(xW + b))/dW = the sum of x over its rows = 3 for every weight.
        let w_grad = w_grad
            .cast(FloatDType::F32)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(w_grad.iter().all(|&g| g == 3.0), "{w_grad:?}");
    }
}
