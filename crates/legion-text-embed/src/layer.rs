//! One post-LayerNorm BERT encoder layer (Devlin et al., arXiv 1810.04805; Vaswani et al.,
//! arXiv 1706.03762): multi-head self-attention with biased q/k/v projections and an output
//! projection, residual + LayerNorm, then a GELU (exact erf) feed-forward block, residual +
//! LayerNorm — `transformers`' `BertLayer` without dropout.

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Bool, Device, Tensor};

use crate::config::BertConfig;

/// Multi-head self-attention with its output projection (`BertSelfAttention` + `BertSelfOutput.dense`).
#[derive(Module, Debug)]
pub struct BertAttention {
    /// Query projection, `hidden -> hidden`.
    pub query: Linear,
    /// Key projection, `hidden -> hidden`.
    pub key: Linear,
    /// Value projection, `hidden -> hidden`.
    pub value: Linear,
    /// Output projection applied to the concatenated heads.
    pub output: Linear,
    /// Number of heads.
    pub num_heads: usize,
}

impl BertAttention {
    /// Attends every position to every non-padding key.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]`
    /// - `key_bias`: `[batch, 1, 1, seq]`, 0 for real keys and a large negative value for
    ///   padding (see [`key_padding_bias`])
    /// - returns `[batch, seq, hidden]`
    ///
    /// # Panics
    /// If the shapes disagree or `hidden` is not divisible by `num_heads`.
    pub fn forward(&self, hidden: Tensor<3>, key_bias: Tensor<4>) -> Tensor<3> {
        let [batch, seq, width] = hidden.dims();
        let head_dim = width / self.num_heads;
        let split_heads = |x: Tensor<3>| {
            x.reshape([batch, seq, self.num_heads, head_dim])
                .swap_dims(1, 2)
        };
        // Scaling q before the product touches seq/head_dim times fewer values than scaling
        // the `[batch, heads, seq, seq]` scores.
        let q = split_heads(token_wise(&self.query, hidden.clone())) / (head_dim as f64).sqrt();
        let k = split_heads(token_wise(&self.key, hidden.clone()));
        let v = split_heads(token_wise(&self.value, hidden));

        let scores = q.matmul(k.swap_dims(2, 3));
        let weights = softmax(scores + key_bias, 3);
        let context = weights
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, seq, width]);
        token_wise(&self.output, context)
    }
}

/// Applies a Linear to every token as one `[batch * seq, width]` matrix product: burn-flex runs
/// a 3-D input as `batch` separate small products, which parallelise worse for short sentences
/// (an interleaved A/B on 1000 sentences of ~40 tokens, all-MiniLM-L6-v2 on 2 busy cores, gave
/// 33-38 s with this against 39-45 s without).
fn token_wise(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [batch, seq, width] = x.dims();
    let y = linear.forward(x.reshape([batch * seq, width]));
    let [_, out] = y.dims();
    y.reshape([batch, seq, out])
}

/// The additive attention bias for padded keys, built once per forward and shared by all
/// layers (cheaper than masking the `[batch, heads, seq, seq]` scores in every layer).
///
/// Padding gets `f32::MIN` like `transformers`' extended attention mask: adding it to a finite
/// score stays finite, and every row keeps at least the [CLS] key, so softmax gives padding a
/// weight of exactly 0.
///
/// # Shapes
/// - `key_padding`: `[batch, seq]`, `true` where the key is padding
/// - returns `[batch, 1, 1, seq]`
pub fn key_padding_bias(key_padding: Tensor<2, Bool>) -> Tensor<4> {
    let [batch, seq] = key_padding.dims();
    let device = key_padding.device();
    Tensor::<2>::zeros([batch, seq], &device)
        .mask_fill(key_padding, f32::MIN)
        .reshape([batch, 1, 1, seq])
}

/// One encoder layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Self-attention block.
    pub attention: BertAttention,
    /// LayerNorm after the attention residual.
    pub attention_norm: LayerNorm,
    /// Feed-forward expansion, `hidden -> intermediate`.
    pub intermediate: Linear,
    /// Feed-forward contraction, `intermediate -> hidden`.
    pub output: Linear,
    /// LayerNorm after the feed-forward residual.
    pub output_norm: LayerNorm,
}

impl BertConfig {
    /// Creates one encoder layer with random weights.
    pub fn init_layer(&self, device: &Device) -> BertLayer {
        let linear = |d_in, d_out| LinearConfig::new(d_in, d_out).init(device);
        let norm = || {
            LayerNormConfig::new(self.hidden_size)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let h = self.hidden_size;
        BertLayer {
            attention: BertAttention {
                query: linear(h, h),
                key: linear(h, h),
                value: linear(h, h),
                output: linear(h, h),
                num_heads: self.num_attention_heads,
            },
            attention_norm: norm(),
            intermediate: linear(h, self.intermediate_size),
            output: linear(self.intermediate_size, h),
            output_norm: norm(),
        }
    }
}

impl BertLayer {
    /// Runs the layer.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]`
    /// - `key_bias`: `[batch, 1, 1, seq]` from [`key_padding_bias`]
    /// - returns `[batch, seq, hidden]`
    ///
    /// # Panics
    /// If the shapes disagree with the layer's sizes.
    pub fn forward(&self, hidden: Tensor<3>, key_bias: Tensor<4>) -> Tensor<3> {
        let attended = self.attention.forward(hidden.clone(), key_bias);
        let hidden = self.attention_norm.forward(attended + hidden);
        let expanded = gelu(token_wise(&self.intermediate, hidden.clone()));
        self.output_norm
            .forward(token_wise(&self.output, expanded) + hidden)
    }
}
