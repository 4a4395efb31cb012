//! LLaMA feed-forward block: SwiGLU, `down(silu(gate(x)) * up(x))`, no biases.
//!
//! Reference: `LlamaMLP` in transformers `models/llama/modeling_llama.py`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};

use crate::linear;

/// Configuration of [`LlamaMlp`].
#[derive(burn::config::Config, Debug)]
pub struct LlamaMlpConfig {
    /// Model width.
    pub hidden_size: usize,
    /// Inner width (11008 for LLaMA-2-7B).
    pub intermediate_size: usize,
}

impl LlamaMlpConfig {
    /// Builds the module with random weights.
    pub fn init(&self, device: &Device) -> LlamaMlp {
        let proj = |d_in: usize, d_out: usize| {
            LinearConfig::new(d_in, d_out).with_bias(false).init(device)
        };
        LlamaMlp {
            gate_proj: proj(self.hidden_size, self.intermediate_size),
            up_proj: proj(self.hidden_size, self.intermediate_size),
            down_proj: proj(self.intermediate_size, self.hidden_size),
        }
    }
}

/// SwiGLU feed-forward block.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    /// Gate projection, `hidden -> intermediate`.
    pub gate_proj: Linear,
    /// Up projection, `hidden -> intermediate`.
    pub up_proj: Linear,
    /// Down projection, `intermediate -> hidden`.
    pub down_proj: Linear,
}

impl LlamaMlp {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` -> `[batch, seq, hidden]`
    ///
    /// # Panics
    /// If the last axis of `x` is not `hidden`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(linear::forward(&self.gate_proj, x.clone()));
        linear::forward(&self.down_proj, gate * linear::forward(&self.up_proj, x))
    }
}
