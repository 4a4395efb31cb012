//! Rotary position embedding (RoPE) in the Hugging Face LLaMA convention.
//!
//! HF's `LlamaRotaryEmbedding` + `apply_rotary_pos_emb` (transformers
//! `models/llama/modeling_llama.py`): `inv_freq[i] = 1 / theta^(2i / head_dim)` for
//! `i < head_dim / 2`, angles `pos * inv_freq` duplicated as `[freqs, freqs]` along the last
//! axis (not interleaved), and `x * cos + rotate_half(x) * sin` with
//! `rotate_half([x1, x2]) = [-x2, x1]` on the two halves. Meta's original checkpoints use the
//! interleaved convention; HF checkpoints (Vicuna, GLaMM, LEGION) have their q/k rows permuted
//! for this one, so this is the right one for every checkpoint legion-rs loads.

use burn::tensor::{Device, Int, Tensor};

/// Cosine and sine tables for one forward call, broadcastable over heads.
#[derive(Debug, Clone)]
pub struct RopeTables {
    /// `[batch, 1, seq, head_dim]`
    pub cos: Tensor<4>,
    /// `[batch, 1, seq, head_dim]`
    pub sin: Tensor<4>,
}

/// The inverse frequencies `1 / theta^(2i / head_dim)`, computed in `f32` as HF does
/// (`torch.arange(0, dim, 2, dtype=float) / dim` then `base ** x`).
pub fn inverse_frequencies(head_dim: usize, theta: f64) -> Vec<f32> {
    let theta = theta as f32;
    (0..head_dim / 2)
        .map(|i| 1.0f32 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect()
}

/// Builds the cos/sin tables for `position_ids`.
///
/// # Shapes
/// - `position_ids`: `[batch, seq]`
/// - output tables: `[batch, 1, seq, head_dim]`
///
/// # Panics
/// If `head_dim` is odd.
pub fn rope_tables(position_ids: Tensor<2, Int>, head_dim: usize, theta: f64) -> RopeTables {
    assert!(
        head_dim.is_multiple_of(2),
        "RoPE needs an even head_dim, got {head_dim}"
    );
    let device: Device = position_ids.device();
    let [batch, seq] = position_ids.dims();
    let half = head_dim / 2;
    let inv_freq =
        Tensor::<1>::from_floats(inverse_frequencies(head_dim, theta).as_slice(), &device)
            .reshape([1, 1, half]);
    // f32 product of positions and frequencies, as HF computes it before cos/sin.
    let freqs = position_ids.float().reshape([batch, seq, 1]) * inv_freq;
    let angles = Tensor::cat(vec![freqs.clone(), freqs], 2).unsqueeze_dim::<4>(1);
    RopeTables {
        cos: angles.clone().cos(),
        sin: angles.sin(),
    }
}

/// `[x1, x2] -> [-x2, x1]` on the last axis.
fn rotate_half(x: Tensor<4>) -> Tensor<4> {
    let [_, _, _, dim] = x.dims();
    let half = dim / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

/// Applies the rotation to queries or keys.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`
/// - `tables`: `[batch, 1, seq, head_dim]`
/// - output: `[batch, heads, seq, head_dim]`
///
/// # Panics
/// If the shapes do not broadcast.
pub fn apply_rope(x: Tensor<4>, tables: &RopeTables) -> Tensor<4> {
    x.clone() * tables.cos.clone() + rotate_half(x) * tables.sin.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_norm_is_preserved() {
        let device = Device::flex();
        let x = Tensor::<4>::random([1, 2, 3, 8], burn::tensor::Distribution::Default, &device);
        let pos = Tensor::<2, Int>::from_ints([[0, 5, 11]], &device);
        let y = apply_rope(x.clone(), &rope_tables(pos, 8, 10000.0));
        let x0 = x
            .clone()
            .narrow(2, 0, 1)
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        let y0 = y
            .clone()
            .narrow(2, 0, 1)
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        for (a, b) in x0.iter().zip(&y0) {
            assert!((a - b).abs() < 1e-6);
        }
        // A rotation keeps each pair's norm, hence the vector norm.
        let nx = x
            .powf_scalar(2.0)
            .sum_dim(3)
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        let ny = y
            .powf_scalar(2.0)
            .sum_dim(3)
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        for (a, b) in nx.iter().zip(&ny) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}
