//! LLaMA self-attention: q/k/v/o projections without bias, RoPE on queries and keys,
//! grouped-query attention (`num_key_value_heads` <= `num_attention_heads`), scaled dot product
//! with a boolean "blocked" mask, softmax in f32.
//!
//! Reference: `LlamaAttention` + `eager_attention_forward` in transformers
//! `models/llama/modeling_llama.py`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Bool, DType, Device, Tensor};

use super::rope::{RopeTables, apply_rope};
use crate::fused_attention::fused_inference;
use crate::kv_cache::LayerKvCache;
use crate::linear;
use crate::matmul::matmul;
use crate::softmax::softmax_last;

/// Configuration of [`LlamaAttention`].
#[derive(burn::config::Config, Debug)]
pub struct LlamaAttentionConfig {
    /// Model width.
    pub hidden_size: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention); equal to `num_heads` for LLaMA-2-7B.
    pub num_kv_heads: usize,
}

impl LlamaAttentionConfig {
    /// Builds the module with random weights.
    ///
    /// # Panics
    /// If `hidden_size` is not divisible by `num_heads` or `num_heads` by `num_kv_heads`.
    pub fn init(&self, device: &Device) -> LlamaAttention {
        assert!(
            self.hidden_size.is_multiple_of(self.num_heads)
                && self.num_heads.is_multiple_of(self.num_kv_heads),
            "invalid attention config {self:?}"
        );
        let head_dim = self.hidden_size / self.num_heads;
        let proj = |d_in: usize, d_out: usize| {
            LinearConfig::new(d_in, d_out).with_bias(false).init(device)
        };
        LlamaAttention {
            q_proj: proj(self.hidden_size, self.num_heads * head_dim),
            k_proj: proj(self.hidden_size, self.num_kv_heads * head_dim),
            v_proj: proj(self.hidden_size, self.num_kv_heads * head_dim),
            o_proj: proj(self.num_heads * head_dim, self.hidden_size),
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim,
        }
    }
}

/// Multi-head (grouped-query) causal self-attention of one decoder layer.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    /// Query projection, `hidden -> heads * head_dim`.
    pub q_proj: Linear,
    /// Key projection, `hidden -> kv_heads * head_dim`.
    pub k_proj: Linear,
    /// Value projection, `hidden -> kv_heads * head_dim`.
    pub v_proj: Linear,
    /// Output projection, `heads * head_dim -> hidden`.
    pub o_proj: Linear,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// The value written over blocked attention scores: the most negative finite value of the
/// score dtype (HF uses `finfo(dtype).min`). Finite, so a row whose keys are all blocked (a
/// padding query) gives a uniform softmax instead of NaN; its output is never used.
fn blocked_score(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => -65504.0,
        // Representable in bf16 as well as f32.
        _ => -3.0e38,
    }
}

impl LlamaAttention {
    /// Applies attention to `x`, appending the new keys/values to `cache` when given.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `rope`: tables for the `seq` new positions, `[batch, 1, seq, head_dim]`
    /// - `blocked`: `[batch, 1, seq, past + seq]`, `true` where a query may NOT attend to a key;
    ///   `None` means every key is visible (single-token decoding without padding)
    /// - output: `[batch, seq, hidden]`
    ///
    /// # Panics
    /// On shape mismatches between `x`, `rope`, `blocked` and the cache.
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        blocked: Option<Tensor<4, Bool>>,
        cache: Option<&mut LayerKvCache>,
    ) -> Tensor<3> {
        let [batch, seq, _] = x.dims();
        let split_heads = |t: Tensor<3>, heads: usize| {
            t.reshape([batch, seq, heads, self.head_dim])
                .swap_dims(1, 2)
        };
        let q = split_heads(linear::forward(&self.q_proj, x.clone()), self.num_heads);
        let k = split_heads(linear::forward(&self.k_proj, x.clone()), self.num_kv_heads);
        let v = split_heads(linear::forward(&self.v_proj, x), self.num_kv_heads);

        let q = apply_rope(q, rope);
        let k = apply_rope(k, rope);
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v),
            None => (k, v),
        };
        let k = self.repeat_kv(k);
        let v = self.repeat_kv(v);

        let scale = (self.head_dim as f64).powf(-0.5);
        // `blocked` always holds the causal mask; `causal` lets the fused kernel skip tiles.
        let out = match fused_inference(&q, &k, &v, blocked.clone(), scale, true) {
            Some(out) => out,
            None => {
                let scores = matmul(q, k.swap_dims(2, 3)).mul_scalar(scale);
                let scores = match blocked {
                    Some(mask) => {
                        let fill = blocked_score(scores.dtype());
                        scores.mask_fill(mask, fill)
                    }
                    None => scores,
                };
                // HF computes the softmax in f32 whatever the activation dtype.
                let dtype = scores.dtype();
                matmul(softmax_last(scores.cast(DType::F32)).cast(dtype), v)
            }
        }; // [batch, heads, seq, head_dim]
        let out = out
            .swap_dims(1, 2)
            .reshape([batch, seq, self.num_heads * self.head_dim]);
        linear::forward(&self.o_proj, out)
    }

    /// `[b, kv_heads, s, d] -> [b, heads, s, d]`, each kv head repeated `heads / kv_heads` times
    /// consecutively (HF `repeat_kv`, i.e. `repeat_interleave` on the head axis).
    fn repeat_kv(&self, x: Tensor<4>) -> Tensor<4> {
        let n_rep = self.num_heads / self.num_kv_heads;
        if n_rep == 1 {
            return x;
        }
        let [b, kvh, s, d] = x.dims();
        x.unsqueeze_dim::<5>(2)
            .expand([b, kvh, n_rep, s, d])
            .reshape([b, kvh * n_rep, s, d])
    }
}
