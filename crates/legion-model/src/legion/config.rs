//! [`LegionConfig`]: the component configurations of LEGION and their consistency rules.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Device;

use super::seg_projector::TextHiddenFcsConfig;
use super::{Legion, LegionError};
use crate::clip_vision::ClipVisionConfig;
use crate::config_check::require;
use crate::detection_head::DetectionHeadConfig;
use crate::llama::LlamaConfig;
use crate::projector::MlpProjectorConfig;
use crate::sam::{
    SamConfig, SamImageEncoderConfig, SamMaskDecoderConfig, SamPromptEncoderConfig,
    TwoWayTransformerConfig,
};

/// Configuration of the composed LEGION model (`LegionForCausalLM`).
#[derive(Config, Debug)]
pub struct LegionConfig {
    /// Global image encoder (CLIP ViT-L/14-336 in LEGION).
    pub clip: ClipVisionConfig,
    /// `mm_projector` (`mlp2x_gelu`).
    pub projector: MlpProjectorConfig,
    /// The LLM (Vicuna-7B v1.5 with GLaMM's 7 added tokens).
    pub llm: LlamaConfig,
    /// The grounding encoder (SAM ViT-H).
    pub sam: SamConfig,
    /// `text_hidden_fcs` (`[SEG]` hidden state -> SAM prompt).
    pub text_hidden_fcs: TextHiddenFcsConfig,
    /// CLIP hidden state fed to the projector (`mm_vision_select_layer`, Python indexing into
    /// `hidden_states`); -2 in LLaVA / GLaMM / LEGION.
    #[config(default = "-2")]
    pub select_layer: isize,
}

impl LegionConfig {
    /// Every named preset, the one table `model.preset`, `legion convert --preset` and the
    /// detector presets read.
    pub const PRESETS: [(&'static str, fn() -> Self); 5] = [
        ("tiny", Self::tiny),
        ("small", Self::small),
        ("mid", Self::mid),
        ("fixture", Self::fixture),
        ("legion-7b", Self::legion_7b),
    ];

    /// The preset called `name` (see [`LegionConfig::PRESETS`]).
    pub fn preset(name: &str) -> Option<Self> {
        Self::PRESETS
            .iter()
            .find(|(preset, _)| *preset == name)
            .map(|(_, make)| make())
    }

    /// The preset names, comma-separated (for messages).
    pub fn preset_names() -> String {
        Self::PRESETS.map(|(name, _)| name).join(", ")
    }

    /// LEGION as published: CLIP ViT-L/14-336 (576 patch tokens of 1024), projector
    /// 1024 -> 4096 -> 4096, Vicuna-7B (vocab 32007), SAM ViT-H, `text_hidden_fcs`
    /// 4096 -> 4096 -> 256.
    pub fn legion_7b() -> Self {
        Self::new(
            ClipVisionConfig::clip_vit_l_336(),
            MlpProjectorConfig::llava_mlp2x_gelu(),
            LlamaConfig::vicuna_7b(),
            SamConfig::vit_h(),
            TextHiddenFcsConfig::legion_7b(),
        )
    }

    /// A tiny, consistent LEGION that trains on a CPU in minutes: CLIP at 32 px with patch 8
    /// (16 image tokens, width 32, 2 layers), projector 32 -> 64, LLM hidden 64 with 2 layers,
    /// 4 heads and a 640-token vocabulary (room for a small test tokenizer; set
    /// `llm.vocab_size` to the tokenizer's size), SAM [`SamConfig::tiny`] at 64 px (prompt
    /// width 16), `text_hidden_fcs` 64 -> 64 -> 16.
    pub fn tiny() -> Self {
        Self::new(
            ClipVisionConfig {
                image_size: 32,
                patch_size: 8,
                hidden_size: 32,
                num_layers: 2,
                num_heads: 4,
                intermediate_size: 64,
                ..ClipVisionConfig::clip_vit_l_336()
            },
            MlpProjectorConfig {
                input_size: 32,
                hidden_size: 64,
            },
            LlamaConfig {
                vocab_size: 640,
                hidden_size: 64,
                intermediate_size: 128,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                num_key_value_heads: 4,
                max_position_embeddings: 512,
                ..LlamaConfig::vicuna_7b()
            },
            SamConfig::tiny(),
            TextHiddenFcsConfig {
                hidden_size: 64,
                out_dim: 16,
            },
        )
    }

    /// A small LEGION between [`Self::tiny`] and the real model, for training benchmarks
    /// (`scripts/bench_train.py`): CLIP at 64 px with patch 8 (64 image tokens, width 64,
    /// 2 layers, 4 heads), projector 64 -> 256, LLM hidden 256 with 4 layers, 8 heads,
    /// intermediate 512 and the 640-token vocabulary of [`Self::tiny`], SAM at 128 px with
    /// patch 8 (16x16 grid, width 64, 4 blocks, global attention in blocks 1 and 3, window 4),
    /// prompt/decoder width 32, `text_hidden_fcs` 256 -> 256 -> 32.
    pub fn small() -> Self {
        Self::new(
            ClipVisionConfig {
                image_size: 64,
                patch_size: 8,
                hidden_size: 64,
                num_layers: 2,
                num_heads: 4,
                intermediate_size: 128,
                ..ClipVisionConfig::clip_vit_l_336()
            },
            MlpProjectorConfig {
                input_size: 64,
                hidden_size: 256,
            },
            LlamaConfig {
                vocab_size: 640,
                hidden_size: 256,
                intermediate_size: 512,
                num_hidden_layers: 4,
                num_attention_heads: 8,
                num_key_value_heads: 8,
                max_position_embeddings: 1024,
                ..LlamaConfig::vicuna_7b()
            },
            SamConfig::new(
                SamImageEncoderConfig {
                    img_size: 128,
                    patch_size: 8,
                    embed_dim: 64,
                    depth: 4,
                    num_heads: 4,
                    global_attn_indexes: vec![1, 3],
                    window_size: 4,
                    out_chans: 32,
                    ..SamImageEncoderConfig::vit_h()
                },
                SamPromptEncoderConfig {
                    embed_dim: 32,
                    image_embedding_size: [16, 16],
                    input_image_size: [128, 128],
                    mask_in_chans: 16,
                },
                SamMaskDecoderConfig {
                    transformer_dim: 32,
                    transformer: TwoWayTransformerConfig {
                        embedding_dim: 32,
                        num_heads: 4,
                        mlp_dim: 128,
                        ..TwoWayTransformerConfig::sam()
                    },
                    iou_head_hidden_dim: 32,
                    ..SamMaskDecoderConfig::sam()
                },
            ),
            TextHiddenFcsConfig {
                hidden_size: 256,
                out_dim: 32,
            },
        )
    }

    /// About 1 B parameters, for GPU throughput (`scripts/gpu_acceptance.sh`,
    /// `scripts/bench_train.py --presets mid`): CLIP ViT-B/16 at 224 px (196 patch tokens of
    /// 768, 12 layers), projector 768 -> 2048, an LLM of hidden 2048 with 16 layers, 16 heads,
    /// intermediate 5632 and the 640-token vocabulary of [`Self::tiny`] (so it trains on the
    /// shipped tiny data), SAM ViT-B, `text_hidden_fcs` 2048 -> 2048 -> 256.
    pub fn mid() -> Self {
        Self::new(
            ClipVisionConfig {
                image_size: 224,
                patch_size: 16,
                hidden_size: 768,
                num_layers: 12,
                num_heads: 12,
                intermediate_size: 3072,
                ..ClipVisionConfig::clip_vit_l_336()
            },
            MlpProjectorConfig {
                input_size: 768,
                hidden_size: 2048,
            },
            LlamaConfig {
                vocab_size: 640,
                hidden_size: 2048,
                intermediate_size: 5632,
                num_hidden_layers: 16,
                num_attention_heads: 16,
                num_key_value_heads: 16,
                max_position_embeddings: 2048,
                ..LlamaConfig::vicuna_7b()
            },
            SamConfig::vit_b(),
            TextHiddenFcsConfig {
                hidden_size: 2048,
                out_dim: 256,
            },
        )
    }

    /// The even smaller model of `scripts/fixtures/legion.py` (tests/fixtures/legion): CLIP
    /// 16 px patch 8 (4 image tokens, width 16), LLM vocab 48 hidden 32, SAM 32 px with width
    /// 16 and prompt width 16.
    pub fn fixture() -> Self {
        Self::new(
            ClipVisionConfig {
                image_size: 16,
                patch_size: 8,
                hidden_size: 16,
                num_layers: 2,
                num_heads: 2,
                intermediate_size: 32,
                ..ClipVisionConfig::clip_vit_l_336()
            },
            MlpProjectorConfig::tiny(),
            LlamaConfig {
                vocab_size: 48,
                ..LlamaConfig::tiny()
            },
            SamConfig::new(
                SamImageEncoderConfig {
                    img_size: 32,
                    embed_dim: 16,
                    window_size: 2,
                    ..SamImageEncoderConfig::tiny()
                },
                SamPromptEncoderConfig {
                    embed_dim: 16,
                    image_embedding_size: [4, 4],
                    input_image_size: [32, 32],
                    mask_in_chans: 4,
                },
                SamMaskDecoderConfig::tiny(),
            ),
            TextHiddenFcsConfig {
                hidden_size: 32,
                out_dim: 16,
            },
        )
    }

    /// Number of image tokens spliced in for `<image>` (576 for CLIP ViT-L/14 at 336 px).
    pub fn num_image_tokens(&self) -> usize {
        self.clip.num_patches()
    }

    /// Checks that the components fit together.
    ///
    /// # Errors
    /// [`LegionError::Config`] naming the first mismatch.
    pub fn validate(&self) -> Result<(), LegionError> {
        self.clip.validate().map_err(|e| e.within("clip"))?;
        self.projector
            .validate()
            .map_err(|e| e.within("projector"))?;
        self.llm.validate().map_err(|e| e.within("llm"))?;
        self.sam.validate().map_err(|e| e.within("sam"))?;
        self.text_hidden_fcs
            .validate()
            .map_err(|e| e.within("text_hidden_fcs"))?;
        validate_select_layer(self.select_layer, &self.clip)?;
        let checks = [
            (
                self.clip.hidden_size == self.projector.input_size,
                format!(
                    "clip.hidden_size {} != projector.input_size {}",
                    self.clip.hidden_size, self.projector.input_size
                ),
            ),
            (
                self.projector.hidden_size == self.llm.hidden_size,
                format!(
                    "projector.hidden_size {} != llm.hidden_size {}",
                    self.projector.hidden_size, self.llm.hidden_size
                ),
            ),
            (
                self.text_hidden_fcs.hidden_size == self.llm.hidden_size,
                format!(
                    "text_hidden_fcs.hidden_size {} != llm.hidden_size {}",
                    self.text_hidden_fcs.hidden_size, self.llm.hidden_size
                ),
            ),
            (
                self.text_hidden_fcs.out_dim == self.sam.prompt_encoder.embed_dim,
                format!(
                    "text_hidden_fcs.out_dim {} != sam.prompt_encoder.embed_dim {}",
                    self.text_hidden_fcs.out_dim, self.sam.prompt_encoder.embed_dim
                ),
            ),
            (
                self.sam.image_encoder.out_chans == self.sam.prompt_encoder.embed_dim
                    && self.sam.prompt_encoder.embed_dim == self.sam.mask_decoder.transformer_dim,
                "sam: encoder out_chans, prompt embed_dim and decoder width differ".to_string(),
            ),
            (
                self.sam.prompt_encoder.image_embedding_size
                    == [self.sam.image_encoder.grid_size(); 2],
                "sam: prompt encoder grid != image encoder grid".to_string(),
            ),
            (
                self.clip.num_patches() > 0,
                "clip: no image tokens".to_string(),
            ),
        ];
        match checks.into_iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err(LegionError::Config(message)),
            None => Ok(()),
        }
    }

    /// Builds the model with random (lazily materialised) weights.
    ///
    /// burn's `Initializer` parameters are lazy: nothing is allocated until a value is used or
    /// a checkpoint is loaded over it, so building [`LegionConfig::legion_7b`] costs only the
    /// few eager buffers (SAM's zero `pos_embed`, 64x64x1280 f32 = 21 MB, its relative
    /// position tables and the prompt encoder's Gaussian matrix).
    ///
    /// # Errors
    /// [`LegionError::Config`] when the components do not fit ([`Self::validate`]).
    pub fn init(&self, device: &Device) -> Result<Legion, LegionError> {
        self.validate()?;
        Ok(Legion {
            vision_tower: self.clip.init(device),
            mm_projector: self.projector.init(device),
            llm: self.llm.init(device),
            grounding_encoder: self.sam.init(device),
            text_hidden_fcs: self.text_hidden_fcs.init(device),
            select_layer: self.select_layer,
        })
    }
}

/// Parameter counts of a LEGION model, per component (from `Module::num_params`, which reads
/// lazy shapes and allocates nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegionParamCount {
    /// CLIP vision tower.
    pub vision_tower: usize,
    /// `mm_projector`.
    pub mm_projector: usize,
    /// LLM (embeddings, decoder, norm, `lm_head`).
    pub llm: usize,
    /// SAM image encoder + prompt encoder + mask decoder.
    pub grounding_encoder: usize,
    /// `text_hidden_fcs`.
    pub text_hidden_fcs: usize,
}

impl LegionParamCount {
    /// Counts the parameters of `model`.
    pub fn of(model: &Legion) -> Self {
        Self {
            vision_tower: model.vision_tower.num_params(),
            mm_projector: model.mm_projector.num_params(),
            llm: model.llm.num_params(),
            grounding_encoder: model.grounding_encoder.num_params(),
            text_hidden_fcs: model.text_hidden_fcs.num_params(),
        }
    }

    /// All parameters.
    pub fn total(&self) -> usize {
        self.vision_tower
            + self.mm_projector
            + self.llm
            + self.grounding_encoder
            + self.text_hidden_fcs
    }

    /// Weight memory in bytes at `bytes_per_param` (4 for f32, 2 for bf16).
    pub fn bytes(&self, bytes_per_param: usize) -> usize {
        self.total() * bytes_per_param
    }
}

/// Configuration of `LegionForCls`: the CLIP vision tower and the real/fake head on the CLS
/// token of hidden layer -2 (`model/Legion.py`, `LegionForCls.forward_inference_cls`).
#[derive(Config, Debug)]
pub struct LegionClsConfig {
    /// Vision tower.
    pub clip: ClipVisionConfig,
    /// `prediction_head`.
    pub head: DetectionHeadConfig,
    /// CLIP hidden state whose CLS token is classified (-2).
    #[config(default = "-2")]
    pub select_layer: isize,
}

impl LegionClsConfig {
    /// `LegionForCls` on CLIP ViT-L/14-336: head 1024 -> 2048 -> 2.
    pub fn legion_cls() -> Self {
        Self::new(
            ClipVisionConfig::clip_vit_l_336(),
            DetectionHeadConfig::legion_cls(),
        )
    }

    /// The classifier of the [`LegionConfig`] preset `name`: `legion-7b` is LEGION's
    /// ([`LegionClsConfig::legion_cls`]); the others put the head on the preset's CLIP tower,
    /// hidden width twice the tower's (as LEGION's).
    pub fn preset(name: &str) -> Option<Self> {
        if name == "legion-7b" {
            return Some(Self::legion_cls());
        }
        let clip = LegionConfig::preset(name)?.clip;
        let width = clip.hidden_size;
        Some(Self::new(
            clip,
            DetectionHeadConfig {
                input_size: width,
                hidden_size: 2 * width,
                ..DetectionHeadConfig::legion_cls()
            },
        ))
    }

    /// Checks every field and that the head reads the tower's width.
    ///
    /// # Errors
    /// [`LegionError::InvalidConfig`] naming the bad field, [`LegionError::Config`] when the
    /// head's input is not the tower's width.
    pub fn validate(&self) -> Result<(), LegionError> {
        self.clip.validate().map_err(|e| e.within("clip"))?;
        self.head.validate().map_err(|e| e.within("head"))?;
        validate_select_layer(self.select_layer, &self.clip)?;
        if self.clip.hidden_size != self.head.input_size {
            return Err(LegionError::Config(format!(
                "clip.hidden_size {} != head.input_size {}",
                self.clip.hidden_size, self.head.input_size
            )));
        }
        Ok(())
    }

    /// Builds the classifier with random weights.
    ///
    /// # Errors
    /// As [`LegionClsConfig::validate`].
    pub fn init(&self, device: &Device) -> Result<super::LegionForCls, LegionError> {
        self.validate()?;
        Ok(super::LegionForCls {
            vision_tower: self.clip.init(device),
            prediction_head: self.head.init(device),
            select_layer: self.select_layer,
        })
    }
}

/// `select_layer` indexes the tower's `num_layers + 1` hidden states (Python indexing).
fn validate_select_layer(select_layer: isize, clip: &ClipVisionConfig) -> Result<(), LegionError> {
    let states = clip.num_layers as isize + 1;
    require((-states..states).contains(&select_layer), "select_layer", || {
        format!(
            "{select_layer} is out of range for the {states} hidden states of clip.num_layers = {}",
            clip.num_layers
        )
    })
    .map_err(LegionError::from)
}
