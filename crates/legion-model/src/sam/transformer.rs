//! SAM's two-way transformer: prompt tokens and image tokens attend to each other in every
//! block (token self-attention, token->image cross-attention, token MLP, image->token
//! cross-attention), then a final token->image attention.
//!
//! Reference: `segment_anything/modeling/transformer.py` (`TwoWayTransformer`,
//! `TwoWayAttentionBlock`, `Attention`), Kirillov et al., arXiv 2304.02643. GLaMM/LEGION use it
//! unchanged.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use super::common::{MlpActivation, MlpBlock, MlpBlockConfig};
use crate::cpu_inference::transposed_copy;
use crate::layer_norm::{LayerNorm, LayerNormConfig};
use crate::linear;
use crate::matmul::matmul;
use crate::softmax::softmax_last;

/// Configuration of [`TwoWayTransformer`].
#[derive(Config, Debug)]
pub struct TwoWayTransformerConfig {
    /// Number of two-way blocks.
    pub depth: usize,
    /// Token width (the prompt embedding width).
    pub embedding_dim: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Hidden width of the token MLP.
    pub mlp_dim: usize,
    /// The cross-attentions project to `embedding_dim / attention_downsample_rate`.
    #[config(default = 2)]
    pub attention_downsample_rate: usize,
    /// Epsilon of the LayerNorms (`nn.LayerNorm` default).
    #[config(default = 1e-5)]
    pub norm_eps: f64,
}

impl TwoWayTransformerConfig {
    /// SAM's mask decoder transformer: depth 2, width 256, 8 heads, MLP 2048.
    pub fn sam() -> Self {
        Self {
            depth: 2,
            embedding_dim: 256,
            num_heads: 8,
            mlp_dim: 2048,
            attention_downsample_rate: 2,
            norm_eps: 1e-5,
        }
    }

    /// A tiny transformer matching `scripts/fixtures/sam.py`: depth 2, width 16, 2 heads, MLP 32.
    pub fn tiny() -> Self {
        Self {
            embedding_dim: 16,
            num_heads: 2,
            mlp_dim: 32,
            ..Self::sam()
        }
    }

    /// Builds the transformer with burn's default initialisation.
    ///
    /// # Panics
    /// When `num_heads` does not divide the (downsampled) attention width.
    pub fn init(&self, device: &Device) -> TwoWayTransformer {
        let norm = || {
            LayerNormConfig::new(self.embedding_dim)
                .with_epsilon(self.norm_eps)
                .init(device)
        };
        let cross = || {
            AttentionConfig::new(self.embedding_dim, self.num_heads)
                .with_downsample_rate(self.attention_downsample_rate)
                .init(device)
        };
        let layers = (0..self.depth)
            .map(|i| TwoWayAttentionBlock {
                self_attn: AttentionConfig::new(self.embedding_dim, self.num_heads).init(device),
                norm1: norm(),
                cross_attn_token_to_image: cross(),
                norm2: norm(),
                mlp: MlpBlockConfig::new(self.embedding_dim, self.mlp_dim, MlpActivation::Relu)
                    .init(device),
                norm3: norm(),
                norm4: norm(),
                cross_attn_image_to_token: cross(),
                skip_first_layer_pe: i == 0,
            })
            .collect();
        TwoWayTransformer {
            layers,
            final_attn_token_to_image: cross(),
            norm_final_attn: norm(),
        }
    }
}

/// Configuration of an [`Attention`] layer.
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Input and output width.
    pub embedding_dim: usize,
    /// Heads.
    pub num_heads: usize,
    /// Projections go to `embedding_dim / downsample_rate`.
    #[config(default = 1)]
    pub downsample_rate: usize,
}

impl AttentionConfig {
    /// Builds the layer.
    ///
    /// # Panics
    /// When `num_heads` does not divide `embedding_dim / downsample_rate`.
    pub fn init(&self, device: &Device) -> Attention {
        let internal = self.embedding_dim / self.downsample_rate.max(1);
        assert!(
            self.num_heads > 0 && internal.is_multiple_of(self.num_heads),
            "AttentionConfig: num_heads {} must divide the internal width {internal}",
            self.num_heads
        );
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        Attention {
            q_proj: linear(self.embedding_dim, internal),
            k_proj: linear(self.embedding_dim, internal),
            v_proj: linear(self.embedding_dim, internal),
            out_proj: linear(internal, self.embedding_dim),
            num_heads: self.num_heads,
        }
    }
}

/// Multi-head attention whose projections may shrink the width (`downsample_rate`).
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection `dim -> internal`.
    pub q_proj: Linear,
    /// Key projection `dim -> internal`.
    pub k_proj: Linear,
    /// Value projection `dim -> internal`.
    pub v_proj: Linear,
    /// Output projection `internal -> dim`.
    pub out_proj: Linear,
    /// Heads.
    pub num_heads: usize,
}

impl Attention {
    fn separate_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [batch, tokens, width] = x.dims();
        x.reshape([batch, tokens, self.num_heads, width / self.num_heads])
            .swap_dims(1, 2)
    }

    /// # Shapes
    /// - `q`: `[batch, n_q, dim]`, `k` and `v`: `[batch, n_k, dim]` -> `[batch, n_q, dim]`.
    ///
    /// # Panics
    /// When the widths are not `dim` or the batch sizes differ.
    pub fn forward(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let q = self.separate_heads(linear::forward(&self.q_proj, q));
        let k = self.separate_heads(linear::forward(&self.k_proj, k));
        let v = self.separate_heads(linear::forward(&self.v_proj, v));
        let [batch, heads, n_q, head_dim] = q.dims();
        // The reference divides by sqrt(head_dim) after the product (not a pre-scaled query).
        let attn = matmul(q, k.swap_dims(2, 3)) / (head_dim as f64).sqrt();
        let out = matmul(softmax_last(attn), v);
        let out = out.swap_dims(1, 2).reshape([batch, n_q, heads * head_dim]);
        linear::forward(&self.out_proj, out)
    }
}

/// One two-way block.
#[derive(Module, Debug)]
pub struct TwoWayAttentionBlock {
    /// Token self-attention.
    pub self_attn: Attention,
    /// Norm after self-attention.
    pub norm1: LayerNorm,
    /// Tokens attend to the image.
    pub cross_attn_token_to_image: Attention,
    /// Norm after the token->image attention.
    pub norm2: LayerNorm,
    /// Token MLP (ReLU).
    pub mlp: MlpBlock,
    /// Norm after the MLP.
    pub norm3: LayerNorm,
    /// Norm of the image tokens after the image->token attention.
    pub norm4: LayerNorm,
    /// Image tokens attend to the prompt tokens.
    pub cross_attn_image_to_token: Attention,
    /// First block: self-attention without the query PE and without its residual.
    pub skip_first_layer_pe: bool,
}

impl TwoWayAttentionBlock {
    /// # Shapes
    /// - `queries`, `query_pe`: `[batch, n_tokens, dim]`; `keys`, `key_pe`:
    ///   `[batch, n_image, dim]` -> `(queries, keys)` of the same shapes.
    ///
    /// # Panics
    /// When the widths are not `dim` or the batch sizes differ.
    pub fn forward(
        &self,
        queries: Tensor<3>,
        keys: Tensor<3>,
        query_pe: Tensor<3>,
        key_pe: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let queries = if self.skip_first_layer_pe {
            self.self_attn
                .forward(queries.clone(), queries.clone(), queries)
        } else {
            let q = queries.clone() + query_pe.clone();
            queries.clone() + self.self_attn.forward(q.clone(), q, queries)
        };
        let queries = self.norm1.forward(queries);

        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe.clone();
        let queries = queries + self.cross_attn_token_to_image.forward(q, k, keys.clone());
        let queries = self.norm2.forward(queries);

        let queries = queries.clone() + self.mlp.forward(queries);
        let queries = self.norm3.forward(queries);

        let q = queries.clone() + query_pe;
        let k = keys.clone() + key_pe;
        let keys = keys
            + self
                .cross_attn_image_to_token
                .forward(k, q, queries.clone());
        let keys = self.norm4.forward(keys);
        (queries, keys)
    }
}

/// SAM's two-way transformer.
#[derive(Module, Debug)]
pub struct TwoWayTransformer {
    /// The two-way blocks.
    pub layers: Vec<TwoWayAttentionBlock>,
    /// Final token->image attention.
    pub final_attn_token_to_image: Attention,
    /// Norm after the final attention.
    pub norm_final_attn: LayerNorm,
}

impl TwoWayTransformer {
    /// # Shapes
    /// - `image_embedding`: `[batch, dim, h, w]`; `image_pe`: `[batch, dim, h, w]` or
    ///   `[1, dim, h, w]` (one encoding for every batch item)
    /// - `point_embedding`: `[batch, n_tokens, dim]`
    /// - returns `(queries [batch, n_tokens, dim], keys [batch, h * w, dim])`.
    ///
    /// # Panics
    /// When the widths are not `dim` or the batch sizes differ.
    pub fn forward(
        &self,
        image_embedding: Tensor<4>,
        image_pe: Tensor<4>,
        point_embedding: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let batch = image_embedding.dims()[0];
        let image_embedding = tokens_row_major(image_embedding);
        // One positional encoding for the batch is transposed once, then repeated.
        let image_pe = match image_pe.dims()[0] {
            1 if batch > 1 => tokens_row_major(image_pe).repeat_dim(0, batch),
            _ => tokens_row_major(image_pe),
        };
        let mut queries = point_embedding.clone();
        let mut keys = image_embedding;
        for layer in &self.layers {
            (queries, keys) =
                layer.forward(queries, keys, point_embedding.clone(), image_pe.clone());
        }
        let q = queries.clone() + point_embedding;
        let k = keys.clone() + image_pe;
        let queries = queries + self.final_attn_token_to_image.forward(q, k, keys.clone());
        (self.norm_final_attn.forward(queries), keys)
    }
}

/// `[B, C, h, w]` -> `[B, hw, C]`, copied into row-major order. A plain `swap_dims` view would
/// do for the maths, but the blocks add the image's positional encoding to the keys five times,
/// and burn-flex adds a transposed operand element by element through its strided path (13% of
/// the SAM decoder's forward on a 64x64 grid); one copy here makes those adds contiguous.
fn tokens_row_major(x: Tensor<4>) -> Tensor<3> {
    transposed_copy(x.flatten::<3>(2, 3))
}
