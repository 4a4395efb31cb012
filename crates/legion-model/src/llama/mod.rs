//! LEGION's language model: LLaMA-2 architecture (Vicuna-7B v1.5), numerically following
//! transformers' `LlamaForCausalLM` (`models/llama/modeling_llama.py`).
//!
//! `embed_tokens` -> N x [`LlamaDecoderLayer`] (RMSNorm -> self-attention with RoPE and
//! grouped-query heads -> residual; RMSNorm -> SwiGLU MLP -> residual) -> final RMSNorm ->
//! untied `lm_head`. LEGION (arXiv 2503.15264, GLaMM lineage) splices the 576 projected CLIP
//! tokens into the token embeddings and reads the last hidden state at `[SEG]` positions, so the
//! model is driven by embeddings: [`Llama::embed`] then [`Llama::forward_embeds`].
//!
//! Weights in the HF naming load with [`Llama::load_hf_safetensors`] (strict: every tensor must
//! match). Parity with PyTorch: `cargo test -p legion-model --test llama_parity`.

mod attention;
pub mod lora;
mod mlp;
pub mod rope;

use std::path::Path;

pub use attention::{LlamaAttention, LlamaAttentionConfig};
pub use mlp::{LlamaMlp, LlamaMlpConfig};

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};

use crate::kv_cache::KvCache;
use crate::linear;
use crate::precision::{cast_to, param_dtype, to_f32};
use crate::weights::{Allowances, KeyRemap, WeightsError, load_safetensors};

/// Key remaps from the HF `LlamaForCausalLM` naming to this module's field paths.
///
/// `model.embed_tokens.weight`, `model.layers.N.{self_attn.{q,k,v,o}_proj,mlp.{gate,up,down}_proj,
/// input_layernorm,post_attention_layernorm}.weight` and `model.norm.weight` lose the `model.`
/// prefix; `lm_head.weight` is unchanged. RMSNorm `weight` -> `gamma` and the Linear transpose
/// are done by `PyTorchToBurnAdapter` in [`crate::weights::load_safetensors`].
pub const LLAMA_HF_REMAP: &[KeyRemap] = &[(r"^model\.(.+)$", "$1")];

/// Errors of the LLaMA model.
#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    /// Loading weights failed.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// An HF `config.json` is not a supported LLaMA config (a field missing or unsupported).
    #[error("LLaMA config {path}: {message}")]
    Config { path: String, message: String },
    /// An HF `config.json` could not be read.
    #[error("LLaMA config {path}: {source}")]
    ConfigIo {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// An HF `config.json` is not JSON.
    #[error("LLaMA config {path}: {source}")]
    ConfigJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// An HF `config.json` holds a value no LLaMA can be built from.
    #[error("LLaMA config {path}: {source}")]
    ConfigInvalid {
        path: String,
        #[source]
        source: crate::config_check::InvalidConfig,
    },
}

/// Hyper-parameters of a LLaMA-architecture causal LM (HF `LlamaConfig` field names).
#[derive(Config, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size (rows of `embed_tokens` and `lm_head`).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// RMSNorm epsilon.
    #[config(default = 1e-5)]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    /// Longest sequence the model was trained for (informational: RoPE has no table limit).
    #[config(default = 4096)]
    pub max_position_embeddings: usize,
}

/// Vocabulary of LLaMA-2 / Vicuna-7B v1.5 before GLaMM's added tokens.
pub const VICUNA_BASE_VOCAB: usize = 32000;

/// Tokens GLaMM's `train.py` adds, in order, after the 32000 Vicuna tokens: `<im_start>` 32000,
/// `<im_end>` 32001, `<bbox>` 32002, `<point>` 32003, `[SEG]` 32004, `<p>` 32005, `</p>` 32006.
/// LEGION starts from `MBZUAI/GLaMM-GranD-Pretrained`, whose tokenizer already has them.
pub const GLAMM_ADDED_TOKENS: [&str; 7] = [
    "<im_start>",
    "<im_end>",
    "<bbox>",
    "<point>",
    "[SEG]",
    "<p>",
    "</p>",
];

impl LlamaConfig {
    /// Vicuna-7B v1.5 as used by GLaMM/LEGION: LLaMA-2-7B (hidden 4096, 32 layers, 32 heads,
    /// no GQA, intermediate 11008, eps 1e-5, theta 10000, 4096 positions) with the vocabulary
    /// grown to 32007 by [`GLAMM_ADDED_TOKENS`].
    pub fn vicuna_7b() -> Self {
        Self {
            vocab_size: VICUNA_BASE_VOCAB + GLAMM_ADDED_TOKENS.len(),
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 32,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            max_position_embeddings: 4096,
        }
    }

    /// A tiny config for tests (same as `scripts/fixtures/llama.py`): vocab 64, hidden 32,
    /// 2 layers, 4 heads, 2 key/value heads, intermediate 64.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 64,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 128,
            ..Self::vicuna_7b()
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Reads an HF `config.json` of a LLaMA model.
    ///
    /// # Errors
    /// [`LlamaError::ConfigIo`] / [`LlamaError::ConfigJson`] when the file is unreadable or not
    /// JSON, [`LlamaError::ConfigInvalid`] for a value no model can be built from,
    /// [`LlamaError::Config`] when a field is missing or the config uses something this
    /// implementation does not (rope scaling, biases, tied embeddings, an activation other than
    /// SiLU, an explicit `head_dim` different from hidden/heads).
    pub fn from_hf_config_json(path: &Path) -> Result<Self, LlamaError> {
        let err = |message: String| LlamaError::Config {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| LlamaError::ConfigIo {
            path: path.display().to_string(),
            source,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| LlamaError::ConfigJson {
                path: path.display().to_string(),
                source,
            })?;
        let usize_field = |name: &str| -> Result<usize, LlamaError> {
            json.get(name)
                .and_then(serde_json::Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| err(format!("missing or non-integer field `{name}`")))
        };
        let hidden_size = usize_field("hidden_size")?;
        let heads = usize_field("num_attention_heads")?;
        let kv_heads = json
            .get("num_key_value_heads")
            .and_then(serde_json::Value::as_u64)
            .map_or(heads, |v| v as usize);
        let mut config = Self::new(
            usize_field("vocab_size")?,
            hidden_size,
            usize_field("intermediate_size")?,
            usize_field("num_hidden_layers")?,
            heads,
            kv_heads,
        );
        if let Some(eps) = json.get("rms_norm_eps").and_then(serde_json::Value::as_f64) {
            config.rms_norm_eps = eps;
        }
        // transformers 5 nests the base under `rope_parameters`; older files have `rope_theta`.
        let theta = json.get("rope_theta").or_else(|| {
            json.get("rope_parameters")
                .and_then(|r| r.get("rope_theta"))
        });
        if let Some(theta) = theta.and_then(serde_json::Value::as_f64) {
            config.rope_theta = theta;
        }
        if let Some(max) = json
            .get("max_position_embeddings")
            .and_then(serde_json::Value::as_u64)
        {
            config.max_position_embeddings = max as usize;
        }
        let is_set = |name: &str| {
            json.get(name)
                .is_some_and(|v| !v.is_null() && v != &serde_json::Value::Bool(false))
        };
        if is_set("rope_scaling") {
            return Err(err("`rope_scaling` is not supported".into()));
        }
        if let Some(kind) = json
            .get("rope_parameters")
            .and_then(|r| r.get("rope_type"))
            .and_then(|t| t.as_str())
            && kind != "default"
        {
            return Err(err(format!("rope_type `{kind}` is not supported")));
        }
        for flag in ["attention_bias", "mlp_bias", "tie_word_embeddings"] {
            if is_set(flag) {
                return Err(err(format!("`{flag}` = true is not supported")));
            }
        }
        if let Some(act) = json.get("hidden_act").and_then(|v| v.as_str())
            && act != "silu"
        {
            return Err(err(format!(
                "hidden_act `{act}` is not supported (only silu)"
            )));
        }
        config
            .validate()
            .map_err(|source| LlamaError::ConfigInvalid {
                path: path.display().to_string(),
                source,
            })?;
        if let Some(hd) = json.get("head_dim").and_then(serde_json::Value::as_u64)
            && hd as usize != config.head_dim()
        {
            return Err(err(format!(
                "head_dim {hd} != hidden_size / num_attention_heads"
            )));
        }
        Ok(config)
    }

    /// Builds the model with random weights (load real ones with
    /// [`Llama::load_hf_safetensors`]).
    ///
    /// # Panics
    /// If `hidden_size` is not divisible by the head counts or `head_dim` is odd.
    pub fn init(&self, device: &Device) -> Llama {
        assert!(
            self.head_dim().is_multiple_of(2),
            "RoPE needs an even head_dim"
        );
        let layers = (0..self.num_hidden_layers)
            .map(|_| LlamaDecoderLayer {
                self_attn: LlamaAttentionConfig::new(
                    self.hidden_size,
                    self.num_attention_heads,
                    self.num_key_value_heads,
                )
                .init(device),
                mlp: LlamaMlpConfig::new(self.hidden_size, self.intermediate_size).init(device),
                input_layernorm: RmsNormConfig::new(self.hidden_size)
                    .with_epsilon(self.rms_norm_eps)
                    .init(device),
                post_attention_layernorm: RmsNormConfig::new(self.hidden_size)
                    .with_epsilon(self.rms_norm_eps)
                    .init(device),
            })
            .collect();
        Llama {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, self.hidden_size).init(device),
            layers,
            norm: RmsNormConfig::new(self.hidden_size)
                .with_epsilon(self.rms_norm_eps)
                .init(device),
            lm_head: LinearConfig::new(self.hidden_size, self.vocab_size)
                .with_bias(false)
                .init(device),
            head_dim: self.head_dim(),
            rope_theta: self.rope_theta,
        }
    }
}

/// One decoder layer (pre-norm attention and MLP blocks with residuals).
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer {
    /// Self-attention.
    pub self_attn: LlamaAttention,
    /// SwiGLU MLP.
    pub mlp: LlamaMlp,
    /// RMSNorm before attention.
    pub input_layernorm: RmsNorm,
    /// RMSNorm before the MLP.
    pub post_attention_layernorm: RmsNorm,
}

impl LlamaDecoderLayer {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` -> `[batch, seq, hidden]`; see [`LlamaAttention::forward`]
    ///   for `rope` and `blocked`.
    ///
    /// # Panics
    /// On shape mismatches.
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &rope::RopeTables,
        blocked: Option<Tensor<4, Bool>>,
        cache: Option<&mut crate::kv_cache::LayerKvCache>,
    ) -> Tensor<3> {
        let h = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), rope, blocked, cache);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

/// LLaMA causal LM (HF `LlamaForCausalLM`): embeddings, decoder stack, final norm, LM head.
#[derive(Module, Debug)]
pub struct Llama {
    /// Token embeddings `[vocab, hidden]`.
    pub embed_tokens: Embedding,
    /// Decoder layers.
    pub layers: Vec<LlamaDecoderLayer>,
    /// Final RMSNorm.
    pub norm: RmsNorm,
    /// LM head `hidden -> vocab` (not tied to the embeddings).
    pub lm_head: Linear,
    /// Width of one attention head.
    pub head_dim: usize,
    /// RoPE base.
    pub rope_theta: f64,
}

/// Outputs of [`Llama::forward_embeds`].
#[derive(Debug, Clone)]
pub struct LlamaOutput {
    /// `[batch, seq, vocab]`, in f32 whatever the weights' dtype.
    pub logits: Tensor<3>,
    /// Output of the final RMSNorm, `[batch, seq, hidden]` (HF `hidden_states[-1]`, what GLaMM
    /// feeds to `text_hidden_fcs`).
    pub last_hidden_state: Tensor<3>,
}

impl Llama {
    /// Loads HF-named safetensors (`model.embed_tokens.weight`, ..., `lm_head.weight`) into
    /// `self`, strictly.
    ///
    /// # Errors
    /// [`LlamaError::Weights`] listing every missing / unexpected tensor and shape error.
    pub fn load_hf_safetensors(self, path: &Path) -> Result<Self, LlamaError> {
        Ok(load_safetensors(
            self,
            path,
            LLAMA_HF_REMAP,
            &Allowances::default(),
        )?)
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The dtype the model computes in: its weights' (see [`crate::precision`]).
    pub fn dtype(&self) -> DType {
        param_dtype(&self.embed_tokens.weight)
    }

    /// An empty KV cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Token embeddings.
    ///
    /// # Shapes
    /// - `ids`: `[batch, seq]` -> `[batch, seq, hidden]`
    ///
    /// # Panics
    /// If an id is out of the vocabulary (backend-dependent).
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.embed_tokens.forward(ids)
    }

    /// Forward from token ids; see [`Llama::forward_embeds`].
    ///
    /// # Shapes
    /// - `ids`: `[batch, seq]`; `attention_mask`: `[batch, past + seq]`
    ///
    /// # Panics
    /// As [`Llama::forward_embeds`].
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        cache: Option<&mut KvCache>,
    ) -> LlamaOutput {
        self.forward_embeds(self.embed(ids), attention_mask, None, cache)
    }

    /// Forward from input embeddings (e.g. text embeddings with image tokens spliced in).
    ///
    /// `attention_mask` is HF's: 1 for real tokens, 0 for padding, covering the cached
    /// positions followed by the new ones; `None` = no padding. Queries see keys that are both
    /// not padding and not in the future. `position_ids` default to HF's `past..past + seq`
    /// for every row (as in GLaMM training, with right padding); with left padding pass
    /// `cumsum(mask) - 1` (what [`crate::generation`] does) to make rows independent of their
    /// padding. With `cache`, the new keys/values are appended to it.
    ///
    /// Outputs at padded query positions are meaningless (their attention row is fully masked).
    ///
    /// # Shapes
    /// - `embeds`: `[batch, seq, hidden]`
    /// - `attention_mask`: `[batch, past + seq]`
    /// - `position_ids`: `[batch, seq]`
    /// - output: see [`LlamaOutput`]
    ///
    /// # Panics
    /// If `embeds` is not `hidden` wide, if the mask or position shapes disagree with `embeds`
    /// and the cache, or if the cache has a different number of layers.
    pub fn forward_embeds(
        &self,
        embeds: Tensor<3>,
        attention_mask: Option<Tensor<2, Int>>,
        position_ids: Option<Tensor<2, Int>>,
        cache: Option<&mut KvCache>,
    ) -> LlamaOutput {
        let last_hidden_state = self.forward_hidden(embeds, attention_mask, position_ids, cache);
        LlamaOutput {
            // `LlamaForCausalLM` returns `logits.float()`: losses and sampling run in f32.
            logits: to_f32(linear::forward(&self.lm_head, last_hidden_state.clone())),
            last_hidden_state,
        }
    }

    /// Like [`Llama::forward_embeds`] without the LM head: returns the last hidden state
    /// `[batch, seq, hidden]` only.
    ///
    /// # Panics
    /// As [`Llama::forward_embeds`].
    pub fn forward_hidden(
        &self,
        embeds: Tensor<3>,
        attention_mask: Option<Tensor<2, Int>>,
        position_ids: Option<Tensor<2, Int>>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let device = embeds.device();
        let [batch, seq, _] = embeds.dims();
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        if let Some(c) = cache.as_ref() {
            assert_eq!(
                c.num_layers(),
                self.layers.len(),
                "KV cache built for another model"
            );
        }
        let position_ids = position_ids.unwrap_or_else(|| {
            Tensor::<1, Int>::arange(past as i64..(past + seq) as i64, &device)
                .reshape([1, seq])
                .expand([batch, seq])
        });
        assert_eq!(
            position_ids.dims(),
            [batch, seq],
            "position_ids must be [batch, seq]"
        );
        // The model computes in its weights' dtype (crate::precision); the rotary tables are
        // built in f32 and cast, as transformers' `LlamaRotaryEmbedding` does.
        let dtype = self.dtype();
        let rope = rope::rope_tables(position_ids, self.head_dim, self.rope_theta);
        let rope = rope::RopeTables {
            cos: cast_to(rope.cos, dtype),
            sin: cast_to(rope.sin, dtype),
        };
        let blocked = blocked_mask(attention_mask, batch, seq, past, &device);

        let mut h = cast_to(embeds, dtype);
        for (index, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| c.layer_mut(index));
            h = layer.forward(h, &rope, blocked.clone(), layer_cache);
        }
        self.norm.forward(h)
    }
}

/// The combined causal + padding mask, `true` where query `i` (absolute position `past + i`)
/// may not attend to key `j`: `j > past + i` or `attention_mask[b, j] == 0`.
/// `None` when nothing is blocked (one new token, no padding mask).
///
/// # Shapes
/// - `attention_mask`: `[batch, past + seq]` -> `[batch, 1, seq, past + seq]`
///
/// # Panics
/// If `attention_mask` is not `[batch, past + seq]`.
pub fn blocked_mask(
    attention_mask: Option<Tensor<2, Int>>,
    batch: usize,
    seq: usize,
    past: usize,
    device: &Device,
) -> Option<Tensor<4, Bool>> {
    let total = past + seq;
    let causal = (seq > 1).then(|| {
        let blocked: Vec<bool> = (0..seq)
            .flat_map(|i| (0..total).map(move |j| j > past + i))
            .collect();
        Tensor::<2, Bool>::from_data(TensorData::new(blocked, [seq, total]), device)
            .reshape([1, 1, seq, total])
            .expand([batch, 1, seq, total])
    });
    let padding = attention_mask.map(|mask| {
        assert_eq!(
            mask.dims(),
            [batch, total],
            "attention_mask must be [batch, past + seq]"
        );
        mask.equal_elem(0)
            .reshape([batch, 1, 1, total])
            .expand([batch, 1, seq, total])
    });
    match (causal, padding) {
        (Some(c), Some(p)) => Some(c.bool_or(p)),
        (c, p) => c.or(p),
    }
}
