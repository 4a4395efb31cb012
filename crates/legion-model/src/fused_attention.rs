//! Scaled dot-product attention for half-precision inference on the CPU through burn-flex's
//! fused kernel.
//!
//! The decomposed attention of the blocks (`softmax(q kᵀ · scale + mask) v`, as the PyTorch
//! references write it) materialises the score matrix and runs burn-flex's bf16 matmuls, which
//! widen both operands to f32 on every call, and a scalar softmax: at full size it was the
//! largest cost of the CLIP forward and the LLM prefill. burn's `attention` op runs on flex as
//! one fused kernel (tiles over the keys with an online softmax in f32, causal tiles skipped;
//! `burn-flex/src/ops/attention.rs`), 2.3-2.5x faster on CLIP's and Vicuna's shapes here. It
//! computes in f32 throughout, so it is used only where the decomposed path is not the
//! reference bit for bit anyway: bf16 and f16 tensors of the CPU backend without autodiff.
//! f32 inference, training (autodiff) and the GPU backends keep the decomposed path.
//!
//! A query row whose keys are all masked gets zeros (the decomposed path gives the mean of the
//! values); only padded positions have such rows, and their outputs are never read.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Tensor};

use crate::cpu_inference::is_plain_cpu;

/// `softmax(q kᵀ · scale, masked where `mask` is true and, with `causal`, above the diagonal
/// offset by the cached keys) v`, fused, when `q` is a bf16 or f16 tensor of the CPU backend
/// without autodiff; `None` otherwise (the caller runs its decomposed attention).
///
/// # Shapes
/// `q` `[B, H, Sq, D]`, `k` and `v` `[B, H, Sk, D]`, `mask` `[B or 1, H or 1, Sq, Sk]` ->
/// `[B, H, Sq, D]`.
pub fn fused_inference(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
    scale: f64,
    causal: bool,
) -> Option<Tensor<4>> {
    if !matches!(q.dtype(), DType::BF16 | DType::F16) {
        return None;
    }
    if !is_plain_cpu(q) {
        return None;
    }
    let options = AttentionModuleOptions {
        scale: Some(scale),
        softcap: None,
        is_causal: causal,
    };
    Some(attention(
        q.clone(),
        k.clone(),
        v.clone(),
        mask,
        None,
        options,
    ))
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::softmax;
    use burn::tensor::{Device, Distribution, FloatDType};

    use super::*;

    fn random(dims: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::random(dims, Distribution::Uniform(-1.0, 1.0), device)
    }

    /// bf16 inference takes the fused kernel and agrees with the decomposed attention in f32
    /// (causal with a KV cache, plus a padding mask) within bf16 rounding; f32 and autodiff
    /// tensors are left to the caller.
    #[test]
    fn bf16_matches_the_decomposed_attention() {
        let device = Device::flex();
        let (q, k, v) = (
            random([2, 3, 5, 8], &device),
            random([2, 3, 9, 8], &device),
            random([2, 3, 9, 8], &device),
        );
        // Causal over 4 cached keys + 5 new ones, and the first key of the second row padded.
        let mut blocked = vec![false; 2 * 5 * 9];
        for row in 0..2 {
            for i in 0..5 {
                for j in 0..9 {
                    blocked[(row * 5 + i) * 9 + j] = j > 4 + i || (row == 1 && j == 0);
                }
            }
        }
        let mask = Tensor::<4, Bool>::from_data(
            burn::tensor::TensorData::new(blocked, [2, 1, 5, 9]),
            &device,
        );
        let scale = 8f64.powf(-0.5);
        let scores = q
            .clone()
            .matmul(k.clone().swap_dims(2, 3))
            .mul_scalar(scale);
        let reference =
            softmax(scores.mask_fill(mask.clone().expand([2, 3, 5, 9]), -1e9), 3).matmul(v.clone());
        let half = |t: &Tensor<4>| t.clone().cast(FloatDType::BF16);
        let fused = fused_inference(
            &half(&q),
            &half(&k),
            &half(&v),
            Some(mask.clone()),
            scale,
            true,
        )
        .expect("bf16 on the CPU backend is fused");
        assert_eq!(fused.dtype(), DType::BF16);
        let diff = (fused.cast(FloatDType::F32) - reference)
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(diff < 0.02, "max difference {diff}");

        assert!(fused_inference(&q, &k, &v, Some(mask), scale, true).is_none());
        let autodiff = Device::flex().autodiff();
        let q16 = random([1, 1, 2, 8], &autodiff).cast(FloatDType::BF16);
        assert!(fused_inference(&q16, &q16, &q16, None, scale, false).is_none());
    }
}
