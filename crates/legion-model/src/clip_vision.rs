//! CLIP ViT vision tower: LEGION's global image encoder.
//!
//! LEGION (arXiv 2503.15264), like GLaMM and LLaVA before it, encodes the whole image with
//! `openai/clip-vit-large-patch14-336` and feeds the LLM the patch tokens of hidden layer -2 (the
//! output of the second-to-last encoder layer, CLS dropped: 576 tokens of 1024). `LegionForCls`
//! classifies real/fake from the CLS token of that same layer.
//!
//! The block follows transformers' `CLIPVisionModel` (`models/clip/modeling_clip.py`): patch
//! embedding (a bias-free stride-`patch` convolution), a learned class token, learned position
//! embeddings, `pre_layrnorm` (HF's spelling; here `pre_layernorm`), pre-norm encoder layers
//! (LayerNorm -> multi-head self-attention -> residual; LayerNorm -> fc1 -> quick_gelu -> fc2 ->
//! residual) and `post_layernorm`, which HF applies only to the pooled CLS of the last layer. LLaVA's
//! `CLIPVisionTower.feature_select` (groundingLMM `model/llava/model/multimodal_encoder/
//! clip_encoder.py`) indexes `hidden_states`, where `hidden_states[0]` is the `pre_layrnorm` output
//! and `hidden_states[i]` the output of encoder layer `i`, so layer -2 of 24 is the output of the
//! 23rd layer; [`ClipVisionTransformer::forward_features`] runs only the layers it needs.
//!
//! Weights: [`HF_CLIP_REMAP`] for HF checkpoints (`vision_model.*`, with or without that prefix —
//! transformers 5 saves `CLIPVisionModel` without it), [`GLAMM_CLIP_REMAP`] for GLaMM/LEGION
//! state dicts (`model.vision_tower.vision_tower.vision_model.*`); see [`load_clip_vision`].
//!
//! Dtype: burn-store keeps a checkpoint's dtype (a bf16 state dict loads as bf16). As LLaVA's
//! `CLIPVisionTower.forward`, the tower casts the pixels to its weights' dtype and its outputs
//! back to the pixels' dtype.
//!
//! Parity with PyTorch: `cargo test -p legion-model --test clip_parity`.

use std::path::Path;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{DType, Device, Tensor};

use crate::cpu_inference::{gelu, quick_gelu};
use crate::fused_attention::fused_inference;
use crate::layer_norm::{LayerNorm, LayerNormConfig};
use crate::linear;
use crate::matmul::matmul;
use crate::precision::{cast_to, param_dtype};
use crate::softmax::softmax_last;

use crate::weights::{self, Allowances, KeyRemap, WeightsError, compile_patterns};

/// Where GLaMM / LEGION state dicts keep the CLIP tower:
/// `LlavaLlamaForCausalLM.model.vision_tower` (`CLIPVisionTower`) `.vision_tower`
/// (`CLIPVisionModel`) `.vision_model`. `glamm_clip_prefix!()` is the regex (for loading),
/// `glamm_clip_prefix!(key)` the key prefix itself (for the GLaMM export).
macro_rules! glamm_clip_prefix {
    () => {
        r"model\.vision_tower\.vision_tower\.vision_model\."
    };
    (key) => {
        "model.vision_tower.vision_tower.vision_model."
    };
}
pub(crate) use glamm_clip_prefix;

/// The one table of CLIP's key names, and the two directions built from it. Use it through
/// [`clip_tower_remap`] (loading) and [`clip_tower_export_remap`] (the GLaMM export); macros
/// so that every table stays a `&'static [KeyRemap]` constant.
macro_rules! clip_tower_rules {
    // HF CLIP's names of the tower's fields where they differ from [`ClipVisionTransformer`]'s,
    // as (HF regex, HF name, our regex, our name): the one place these names are written.
    (@renames $direction:ident $($args:tt)*) => {
        $crate::clip_vision::clip_tower_rules!(@$direction $($args)*
            (r"encoder\.layers\.", "encoder.layers.", r"layers\.", "layers."),
            (r"pre_layrnorm\.", "pre_layrnorm.", r"pre_layernorm\.", "pre_layernorm.")
        )
    };
    // Checkpoint -> model: the prefix first, then each HF name under the new prefix.
    (@import $from:expr, $to:literal, $to_re:literal; [$($before:expr),*]; [$($after:expr),*];
     $(($hf_re:literal, $hf:literal, $ours_re:literal, $ours:literal)),*) => {
        &[
            $($before,)*
            (concat!("^", $from), $to),
            $((concat!("^", $to_re, $hf_re), concat!($to, $ours)),)*
            $($after,)*
        ]
    };
    // Model -> checkpoint: each of our names first (the rules chain, and after the prefix rule
    // our names would no longer start the key), then the prefix.
    (@export $from_re:literal, $to:expr; [$($before:expr),*]; [$($after:expr),*];
     $(($hf_re:literal, $hf:literal, $ours_re:literal, $ours:literal)),*) => {
        &[
            $($before,)*
            $((concat!("^", $from_re, $ours_re), concat!($to, $hf)),)*
            (concat!("^", $from_re), $to),
            $($after,)*
        ]
    };
}
pub(crate) use clip_tower_rules;

/// Rules that move a CLIP tower found under `$from` (a regex) in a checkpoint to `$to` in the
/// model (`$to_re`: the same path as a regex), with HF's renames of the tower's fields
/// (`encoder.layers` -> `layers`, `pre_layrnorm` -> `pre_layernorm`), between the family's
/// rules `[$before]` and `[$after]`.
macro_rules! clip_tower_remap {
    ($from:expr, $to:literal, $to_re:literal; [$($before:expr),*]; [$($after:expr),*]) => {
        $crate::clip_vision::clip_tower_rules!(
            @renames import $from, $to, $to_re; [$($before),*]; [$($after),*];
        )
    };
}
pub(crate) use clip_tower_remap;

/// The inverse of [`clip_tower_remap`]: rules that move the model's tower at `$from_re` (a
/// regex) to the checkpoint key prefix `$to`, with HF's field names, between `[$before]` and
/// `[$after]`.
macro_rules! clip_tower_export_remap {
    ($from_re:literal, $to:expr; [$($before:expr),*]; [$($after:expr),*]) => {
        $crate::clip_vision::clip_tower_rules!(
            @renames export $from_re, $to; [$($before),*]; [$($after),*];
        )
    };
}
pub(crate) use clip_tower_export_remap;

/// Key remaps from HF CLIP naming (`CLIPVisionModel` / `CLIPModel` checkpoints such as
/// `openai/clip-vit-large-patch14-336`) to [`ClipVisionTransformer`] field paths.
///
/// The `vision_model.` prefix is optional: hub checkpoints (transformers 4.x) have it,
/// `CLIPVisionModel.state_dict()` in transformers 5.x does not.
pub const HF_CLIP_REMAP: &[KeyRemap] = clip_tower_remap!(r"vision_model\.", "", ""; []; []);

/// Key remaps from the GLaMM / LEGION combined state dict (the tower under
/// [`glamm_clip_prefix`]) to [`ClipVisionTransformer`] field paths. A PEFT-wrapped (unmerged
/// LoRA) state dict adds `base_model.model.`, accepted too.
///
/// Note: GLaMM's and LEGION's `merge_lora_weights.py` drop every key containing `vision_tower`
/// before `save_pretrained`, so merged GLaMM/LEGION HF checkpoints carry no CLIP weights (load
/// `openai/clip-vit-large-patch14-336` with [`HF_CLIP_REMAP`]); the prefix appears in DeepSpeed
/// `zero_to_fp32` dumps and in `LegionForCls` checkpoints saved by the HF `Trainer`.
pub const GLAMM_CLIP_REMAP: &[KeyRemap] = clip_tower_remap!(
    concat!(r"(?:base_model\.model\.)?", glamm_clip_prefix!()), "", "";
    [];
    []
);

/// File tensors (after [`HF_CLIP_REMAP`]) that a vision-only load ignores: the text tower and
/// projections of a full `CLIPModel` checkpoint, and the `position_ids` buffer that transformers
/// < 4.31 saved (it is `arange(num_positions)`, recomputed here).
pub const HF_CLIP_IGNORED: &[&str] = &[
    r"^text_model\.",
    r"^(visual|text)_projection\.",
    r"^logit_scale$",
    r"^embeddings\.position_ids$",
];

/// File tensors (after [`GLAMM_CLIP_REMAP`]) that a vision-only load of a combined GLaMM/LEGION
/// state dict ignores: everything outside the vision tower (LLM, projector, SAM, heads) keeps its
/// `model.` / `lm_head.` / `prediction_head.` / `base_model.` prefix, and the old `position_ids`
/// buffer.
pub const GLAMM_CLIP_IGNORED: &[&str] = &[
    r"^(model|lm_head|prediction_head|base_model)\.",
    r"^embeddings\.position_ids$",
];

/// Errors from running the vision tower on bad input.
#[derive(Debug, thiserror::Error)]
pub enum ClipVisionError {
    /// The pixel tensor does not have the configured channels / resolution.
    #[error(
        "CLIP vision input has shape {got:?}, expected [batch, {channels}, {image_size}, {image_size}] \
         (no position-embedding interpolation)"
    )]
    InputShape {
        got: [usize; 4],
        channels: usize,
        image_size: usize,
    },
    /// `select_layer` does not index `hidden_states` (length `num_layers + 1`).
    #[error("select_layer {select_layer} is out of range for {num_hidden_states} hidden states (-{num_hidden_states}..={})", num_hidden_states - 1)]
    SelectLayer {
        select_layer: isize,
        num_hidden_states: usize,
    },
}

/// Activation of the encoder MLP.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)`, the OpenAI CLIP activation (`hidden_act = "quick_gelu"`).
    QuickGelu,
    /// Exact (erf) GELU (`hidden_act = "gelu"`).
    Gelu,
}

impl ClipActivation {
    fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            // 1.702 is the constant of OpenAI's and HF's QuickGELU.
            Self::QuickGelu => quick_gelu(x),
            Self::Gelu => gelu(x),
        }
    }
}

/// Configuration of the CLIP vision tower (HF `CLIPVisionConfig`).
#[derive(Config, Debug)]
pub struct ClipVisionConfig {
    /// Square input resolution in pixels.
    pub image_size: usize,
    /// Square patch size in pixels (the patch convolution's kernel and stride).
    pub patch_size: usize,
    /// Token width.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_layers: usize,
    /// Attention heads per layer (`hidden_size` must be a multiple).
    pub num_heads: usize,
    /// Width of the encoder MLP.
    pub intermediate_size: usize,
    /// Input channels.
    #[config(default = 3)]
    pub num_channels: usize,
    /// Epsilon of every LayerNorm.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// MLP activation.
    #[config(default = "ClipActivation::QuickGelu")]
    pub activation: ClipActivation,
}

impl ClipVisionConfig {
    /// `openai/clip-vit-large-patch14-336`, LEGION's global image encoder.
    pub fn clip_vit_l_336() -> Self {
        Self {
            image_size: 336,
            patch_size: 14,
            hidden_size: 1024,
            num_layers: 24,
            num_heads: 16,
            intermediate_size: 4096,
            num_channels: 3,
            layer_norm_eps: 1e-5,
            activation: ClipActivation::QuickGelu,
        }
    }

    /// A tiny tower for tests: 42 px, patch 14 (9 patches), width 32, 3 layers, 4 heads.
    pub fn tiny() -> Self {
        Self {
            image_size: 42,
            hidden_size: 32,
            num_layers: 3,
            num_heads: 4,
            intermediate_size: 64,
            ..Self::clip_vit_l_336()
        }
    }

    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Number of patch tokens (576 for ViT-L/14 at 336).
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Initialises a tower with random weights (load real weights with [`load_clip_vision`]).
    ///
    /// The embeddings keep burn's default initialisers (class token and positions N(0, 1), the
    /// patch convolution Kaiming-uniform), not transformers' (N(0, 0.02) for both, class token
    /// N(0, width^-1/2)): the tiny preset's main job was tuned on these, and transformers' scales
    /// scored lower there (README, "Does it tell artifacts apart?").
    ///
    /// # Panics
    /// If `hidden_size` is not a multiple of `num_heads` or `patch_size` is 0 (invalid config).
    pub fn init(&self, device: &Device) -> ClipVisionTransformer {
        assert!(
            self.patch_size > 0 && self.hidden_size.is_multiple_of(self.num_heads),
            "invalid CLIP vision config: {self:?}"
        );
        let norm = LayerNormConfig::new(self.hidden_size).with_epsilon(self.layer_norm_eps);
        let embeddings = ClipVisionEmbeddings {
            class_embedding: Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            }
            .init([self.hidden_size], device),
            patch_embedding: Conv2dConfig::new(
                [self.num_channels, self.hidden_size],
                [self.patch_size, self.patch_size],
            )
            .with_stride([self.patch_size, self.patch_size])
            .with_bias(false)
            .init(device),
            position_embedding: EmbeddingConfig::new(self.num_patches() + 1, self.hidden_size)
                .init(device),
        };
        let layers = (0..self.num_layers)
            .map(|_| ClipEncoderLayer {
                layer_norm1: norm.init(device),
                self_attn: ClipAttention {
                    q_proj: LinearConfig::new(self.hidden_size, self.hidden_size).init(device),
                    k_proj: LinearConfig::new(self.hidden_size, self.hidden_size).init(device),
                    v_proj: LinearConfig::new(self.hidden_size, self.hidden_size).init(device),
                    out_proj: LinearConfig::new(self.hidden_size, self.hidden_size).init(device),
                    num_heads: self.num_heads,
                },
                layer_norm2: norm.init(device),
                mlp: ClipMlp {
                    fc1: LinearConfig::new(self.hidden_size, self.intermediate_size).init(device),
                    fc2: LinearConfig::new(self.intermediate_size, self.hidden_size).init(device),
                    activation: self.activation,
                },
            })
            .collect();
        ClipVisionTransformer {
            embeddings,
            pre_layernorm: norm.init(device),
            layers,
            post_layernorm: norm.init(device),
            image_size: self.image_size,
            num_channels: self.num_channels,
        }
    }
}

/// Patch, class and position embeddings (HF `CLIPVisionEmbeddings`).
#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings {
    /// The learned class token, `[hidden]`.
    pub class_embedding: Param<Tensor<1>>,
    /// Bias-free convolution, kernel = stride = patch size.
    pub patch_embedding: Conv2d,
    /// Learned positions, `[num_patches + 1, hidden]` (index 0 = class token).
    pub position_embedding: Embedding,
}

impl ClipVisionEmbeddings {
    /// # Shapes
    /// `pixels` `[B, C, S, S]` -> `[B, 1 + (S/patch)^2, hidden]`.
    ///
    /// # Panics
    /// If the shape does not match the config (checked by the caller).
    fn forward(&self, pixels: Tensor<4>) -> Tensor<3> {
        let [batch, _, _, _] = pixels.dims();
        let patches = self.patch_embedding.forward(pixels); // [B, hidden, g, g]
        let [_, hidden, gh, gw] = patches.dims();
        // Row-major flattening of the grid, as PyTorch's `flatten(2).transpose(1, 2)`.
        let patches = patches.reshape([batch, hidden, gh * gw]).swap_dims(1, 2);
        let class = self
            .class_embedding
            .val()
            .reshape([1, 1, hidden])
            .expand([batch, 1, hidden]);
        let tokens = Tensor::cat(vec![class, patches], 1);
        tokens + self.position_embedding.weight.val().unsqueeze::<3>()
    }
}

/// Multi-head self-attention with biased q/k/v/out projections (HF `CLIPAttention`).
#[derive(Module, Debug)]
pub struct ClipAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    num_heads: usize,
}

impl ClipAttention {
    /// # Shapes
    /// `x` `[B, N, C]` -> `[B, N, C]`.
    ///
    /// # Panics
    /// If `C` is not the configured width.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, tokens, width] = x.dims();
        let head_dim = width / self.num_heads;
        let split = |t: Tensor<3>| {
            t.reshape([batch, tokens, self.num_heads, head_dim])
                .swap_dims(1, 2)
        };
        let q = split(linear::forward(&self.q_proj, x.clone()));
        let k = split(linear::forward(&self.k_proj, x.clone()));
        let v = split(linear::forward(&self.v_proj, x));
        let scale = (head_dim as f64).powf(-0.5);
        let out = match fused_inference(&q, &k, &v, None, scale, false) {
            Some(out) => out,
            None => matmul(softmax_last(matmul(q, k.transpose()).mul_scalar(scale)), v),
        };
        let out = out.swap_dims(1, 2).reshape([batch, tokens, width]);
        linear::forward(&self.out_proj, out)
    }
}

/// fc1 -> activation -> fc2 (HF `CLIPMLP`).
#[derive(Module, Debug)]
pub struct ClipMlp {
    pub fc1: Linear,
    pub fc2: Linear,
    #[module(skip)]
    activation: ClipActivation,
}

impl ClipMlp {
    /// # Shapes
    /// `x` `[B, N, C]` -> `[B, N, C]`.
    ///
    /// # Panics
    /// If `C` is not the configured width.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        linear::forward(
            &self.fc2,
            self.activation.apply(linear::forward(&self.fc1, x)),
        )
    }
}

/// One pre-norm transformer layer (HF `CLIPEncoderLayer`).
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    pub layer_norm1: LayerNorm,
    pub self_attn: ClipAttention,
    pub layer_norm2: LayerNorm,
    pub mlp: ClipMlp,
}

impl ClipEncoderLayer {
    /// # Shapes
    /// `x` `[B, N, C]` -> `[B, N, C]`.
    ///
    /// # Panics
    /// If `C` is not the configured width.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

/// The CLIP vision tower (HF `CLIPVisionModel` / `CLIPVisionTransformer`).
#[derive(Module, Debug)]
pub struct ClipVisionTransformer {
    pub embeddings: ClipVisionEmbeddings,
    /// HF `pre_layrnorm`.
    pub pre_layernorm: LayerNorm,
    /// HF `encoder.layers`.
    pub layers: Vec<ClipEncoderLayer>,
    /// Applied to the pooled CLS of the last layer only; unused by LEGION's features but part of
    /// every checkpoint.
    pub post_layernorm: LayerNorm,
    image_size: usize,
    num_channels: usize,
}

/// Features of one hidden layer, as LLaVA / LEGION select them.
#[derive(Debug, Clone)]
pub struct ClipFeatures {
    /// Patch tokens (CLS dropped, LLaVA's `"patch"` select feature), `[B, num_patches, hidden]`.
    pub patches: Tensor<3>,
    /// The CLS token of the same layer, `[B, hidden]` (`LegionForCls` head input).
    pub cls: Tensor<2>,
}

/// Output of the full tower (HF `BaseModelOutputWithPooling`).
#[derive(Debug, Clone)]
pub struct ClipVisionOutput {
    /// Output of the last encoder layer, `[B, 1 + num_patches, hidden]`.
    pub last_hidden_state: Tensor<3>,
    /// `post_layernorm` of the last layer's CLS, `[B, hidden]`.
    pub pooled: Tensor<2>,
}

impl ClipVisionTransformer {
    /// Number of encoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Resolves a Python-style index into `hidden_states` (length `num_layers + 1`) to the number
    /// of encoder layers to run.
    ///
    /// # Errors
    /// [`ClipVisionError::SelectLayer`] when out of range.
    pub fn resolve_select_layer(&self, select_layer: isize) -> Result<usize, ClipVisionError> {
        let num_hidden_states = self.layers.len() + 1;
        let resolved = if select_layer < 0 {
            num_hidden_states as isize + select_layer
        } else {
            select_layer
        };
        if (0..num_hidden_states as isize).contains(&resolved) {
            Ok(resolved as usize)
        } else {
            Err(ClipVisionError::SelectLayer {
                select_layer,
                num_hidden_states,
            })
        }
    }

    fn check_input(&self, pixels: &Tensor<4>) -> Result<(), ClipVisionError> {
        let dims = pixels.dims();
        let [_, channels, height, width] = dims;
        if channels != self.num_channels || height != self.image_size || width != self.image_size {
            return Err(ClipVisionError::InputShape {
                got: dims,
                channels: self.num_channels,
                image_size: self.image_size,
            });
        }
        Ok(())
    }

    /// The dtype of the loaded weights (a bf16 checkpoint loads as bf16).
    fn weights_dtype(&self) -> DType {
        param_dtype(&self.embeddings.patch_embedding.weight)
    }

    /// Embeddings followed by `pre_layrnorm`: `hidden_states[0]`, in the weights' dtype.
    ///
    /// As LLaVA's `CLIPVisionTower.forward` (`images.to(dtype=self.dtype)`), the pixels are cast
    /// to the weights' dtype; the public forwards cast their outputs back to the input's dtype
    /// (`.to(images.dtype)`).
    fn embed(&self, pixels: Tensor<4>) -> Tensor<3> {
        let pixels = cast_to(pixels, self.weights_dtype());
        self.pre_layernorm.forward(self.embeddings.forward(pixels))
    }

    /// `hidden_states[depth]` in the weights' dtype.
    fn run_layers(&self, pixels: Tensor<4>, depth: usize) -> Tensor<3> {
        let x = self.embed(pixels);
        self.layers[..depth]
            .iter()
            .fold(x, |x, layer| layer.forward(x))
    }

    /// All hidden states, as HF's `output_hidden_states=True`: index 0 is the `pre_layrnorm`
    /// output, index `i` the output of encoder layer `i`.
    ///
    /// # Shapes
    /// `pixels` `[B, C, S, S]` (CLIP-normalised) -> `num_layers + 1` tensors
    /// `[B, 1 + num_patches, hidden]`, in the dtype of `pixels`.
    ///
    /// # Errors
    /// [`ClipVisionError::InputShape`] when the input does not match the config.
    ///
    /// # Panics
    /// Never on bad input (shapes are checked first).
    pub fn forward_hidden_states(
        &self,
        pixels: Tensor<4>,
    ) -> Result<Vec<Tensor<3>>, ClipVisionError> {
        self.check_input(&pixels)?;
        let out_dtype = pixels.dtype();
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        let mut x = self.embed(pixels);
        for layer in &self.layers {
            states.push(cast_to(x.clone(), out_dtype));
            x = layer.forward(x);
        }
        states.push(cast_to(x, out_dtype));
        Ok(states)
    }

    /// `hidden_states[select_layer]`, running only the layers it needs (LEGION: `-2`).
    ///
    /// # Shapes
    /// `pixels` `[B, C, S, S]` -> `[B, 1 + num_patches, hidden]` (CLS first), in the dtype of
    /// `pixels`.
    ///
    /// # Errors
    /// [`ClipVisionError::InputShape`], [`ClipVisionError::SelectLayer`].
    ///
    /// # Panics
    /// Never on bad input (shapes and index are checked first).
    pub fn forward_layer(
        &self,
        pixels: Tensor<4>,
        select_layer: isize,
    ) -> Result<Tensor<3>, ClipVisionError> {
        self.check_input(&pixels)?;
        let depth = self.resolve_select_layer(select_layer)?;
        let out_dtype = pixels.dtype();
        Ok(cast_to(self.run_layers(pixels, depth), out_dtype))
    }

    /// LLaVA/LEGION image features: the patch tokens of `hidden_states[select_layer]` (CLS
    /// dropped) and that layer's CLS token.
    ///
    /// # Shapes
    /// `pixels` `[B, C, S, S]` -> patches `[B, num_patches, hidden]`, cls `[B, hidden]`, in the
    /// dtype of `pixels`.
    ///
    /// # Errors
    /// [`ClipVisionError::InputShape`], [`ClipVisionError::SelectLayer`].
    ///
    /// # Panics
    /// Never on bad input (shapes and index are checked first).
    pub fn forward_features(
        &self,
        pixels: Tensor<4>,
        select_layer: isize,
    ) -> Result<ClipFeatures, ClipVisionError> {
        let layer = self.forward_layer(pixels, select_layer)?;
        let [batch, tokens, hidden] = layer.dims();
        let cls = layer.clone().narrow(1, 0, 1).reshape([batch, hidden]);
        let patches = layer.narrow(1, 1, tokens - 1);
        Ok(ClipFeatures { patches, cls })
    }

    /// The full tower as HF `CLIPVisionModel.forward`: last hidden state and pooled output.
    ///
    /// # Shapes
    /// `pixels` `[B, C, S, S]` -> last `[B, 1 + num_patches, hidden]`, pooled `[B, hidden]`, in
    /// the dtype of `pixels`.
    ///
    /// # Errors
    /// [`ClipVisionError::InputShape`].
    ///
    /// # Panics
    /// Never on bad input (shapes are checked first).
    pub fn forward(&self, pixels: Tensor<4>) -> Result<ClipVisionOutput, ClipVisionError> {
        self.check_input(&pixels)?;
        let out_dtype = pixels.dtype();
        let last = self.run_layers(pixels, self.layers.len());
        let [batch, _, hidden] = last.dims();
        let pooled = self
            .post_layernorm
            .forward(last.clone().narrow(1, 0, 1).reshape([batch, hidden]));
        Ok(ClipVisionOutput {
            last_hidden_state: cast_to(last, out_dtype),
            pooled: cast_to(pooled, out_dtype),
        })
    }
}

/// Where a checkpoint's CLIP vision weights live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipCheckpointLayout {
    /// HF CLIP naming (`vision_model.*`, or unprefixed), e.g. `openai/clip-vit-large-patch14-336`;
    /// a full `CLIPModel`'s text tower is ignored.
    HfClip,
    /// A combined GLaMM / LEGION state dict (`model.vision_tower.vision_tower.vision_model.*`);
    /// everything else in it is ignored.
    Glamm,
}

impl ClipCheckpointLayout {
    /// The key remap table of this layout.
    pub fn remaps(self) -> &'static [KeyRemap] {
        match self {
            Self::HfClip => HF_CLIP_REMAP,
            Self::Glamm => GLAMM_CLIP_REMAP,
        }
    }

    /// What a vision-only load of this layout may ignore (nothing may be missing).
    pub fn allowances(self) -> Allowances {
        let ignored = match self {
            Self::HfClip => HF_CLIP_IGNORED,
            Self::Glamm => GLAMM_CLIP_IGNORED,
        };
        Allowances {
            missing: Vec::new(),
            unexpected: compile_patterns(ignored),
        }
    }
}

/// Loads the vision tower's weights from a safetensors file, strictly: every tower tensor must
/// be present with its shape; file tensors outside the tower are ignored only as the layout
/// allows ([`HF_CLIP_IGNORED`], [`GLAMM_CLIP_IGNORED`]).
///
/// # Errors
/// [`WeightsError`] listing every missing / unexpected tensor and shape error.
pub fn load_clip_vision(
    model: ClipVisionTransformer,
    path: &Path,
    layout: ClipCheckpointLayout,
) -> Result<ClipVisionTransformer, WeightsError> {
    weights::load_safetensors(model, path, layout.remaps(), &layout.allowances())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_tables_compile() {
        for layout in [ClipCheckpointLayout::HfClip, ClipCheckpointLayout::Glamm] {
            for (from, _) in layout.remaps() {
                regex_lite::Regex::new(from).unwrap();
            }
            assert!(!layout.allowances().unexpected.is_empty());
        }
    }

    #[test]
    fn remap_tables_map_reference_names() {
        let apply = |table: &[KeyRemap], key: &str| {
            table.iter().fold(key.to_string(), |k, (from, to)| {
                regex_lite::Regex::new(from)
                    .unwrap()
                    .replace_all(&k, *to)
                    .into_owned()
            })
        };
        assert_eq!(
            apply(
                HF_CLIP_REMAP,
                "vision_model.encoder.layers.7.self_attn.q_proj.weight"
            ),
            "layers.7.self_attn.q_proj.weight"
        );
        assert_eq!(
            apply(HF_CLIP_REMAP, "pre_layrnorm.bias"),
            "pre_layernorm.bias"
        );
        assert_eq!(
            apply(
                GLAMM_CLIP_REMAP,
                "base_model.model.model.vision_tower.vision_tower.vision_model.pre_layrnorm.weight"
            ),
            "pre_layernorm.weight"
        );
        assert_eq!(
            apply(
                GLAMM_CLIP_REMAP,
                "model.vision_tower.vision_tower.vision_model.post_layernorm.bias"
            ),
            "post_layernorm.bias"
        );
        // Keys of other components keep a prefix that GLAMM_CLIP_IGNORED matches.
        let ignored = ClipCheckpointLayout::Glamm.allowances().unexpected;
        for other in [
            "model.layers.0.mlp.up_proj.weight",
            "lm_head.weight",
            "prediction_head.0.bias",
        ] {
            let key = apply(GLAMM_CLIP_REMAP, other);
            assert!(ignored.iter().any(|r| r.is_match(&key)), "{key}");
        }
    }

    #[test]
    fn select_layer_resolution() {
        let model = ClipVisionConfig::tiny().init(&Device::flex());
        assert_eq!(model.resolve_select_layer(-2).unwrap(), 2);
        assert_eq!(model.resolve_select_layer(-4).unwrap(), 0);
        assert_eq!(model.resolve_select_layer(3).unwrap(), 3);
        assert!(matches!(
            model.resolve_select_layer(4),
            Err(ClipVisionError::SelectLayer { .. })
        ));
        assert!(model.resolve_select_layer(-5).is_err());
    }
}
