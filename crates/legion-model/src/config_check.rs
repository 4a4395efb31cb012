//! `validate()` of every component config, called before any `init`: a `config.json` a user
//! edited is refused with the field named instead of panicking in `init` or `forward` (as
//! transformers' `LlamaAttention.__init__` raises on a bad head split).
//!
//! The rules of all components sit together here so that one reading shows what a loadable
//! config is; `LegionConfig::validate` (in `legion/config.rs`) adds the rules between components.

use crate::clip_vision::ClipVisionConfig;
use crate::detection_head::DetectionHeadConfig;
use crate::legion::seg_projector::TextHiddenFcsConfig;
use crate::llama::LlamaConfig;
use crate::projector::MlpProjectorConfig;
use crate::sam::{
    SamConfig, SamImageEncoderConfig, SamMaskDecoderConfig, SamPromptEncoderConfig,
    TwoWayTransformerConfig,
};

/// A config value no model can be built from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidConfig {
    /// The field's path in the config (`clip.num_heads`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl InvalidConfig {
    /// The same problem, seen from the config that holds this one under `section`.
    pub fn within(self, section: &str) -> Self {
        Self {
            field: format!("{section}.{}", self.field),
            message: self.message,
        }
    }
}

/// `Err` naming `field` unless `ok`.
pub(crate) fn require(
    ok: bool,
    field: &str,
    message: impl FnOnce() -> String,
) -> Result<(), InvalidConfig> {
    if ok {
        Ok(())
    } else {
        Err(InvalidConfig {
            field: field.to_string(),
            message: message(),
        })
    }
}

/// Every `(field, value)` is at least 1.
fn positive(fields: &[(&str, usize)]) -> Result<(), InvalidConfig> {
    for &(field, value) in fields {
        require(value > 0, field, || "must be > 0".into())?;
    }
    Ok(())
}

/// `value` is a finite number > 0.
fn positive_number(field: &str, value: f64) -> Result<(), InvalidConfig> {
    require(value.is_finite() && value > 0.0, field, || {
        format!("must be a positive number, got {value}")
    })
}

/// `value` splits into `parts` equal heads.
fn divisible(
    field: &str,
    value: usize,
    parts_field: &str,
    parts: usize,
) -> Result<(), InvalidConfig> {
    require(parts > 0 && value.is_multiple_of(parts), field, || {
        format!("{value} is not a multiple of {parts_field} {parts}")
    })
}

impl ClipVisionConfig {
    /// # Errors
    /// [`InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        positive(&[
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("hidden_size", self.hidden_size),
            ("num_heads", self.num_heads),
            ("intermediate_size", self.intermediate_size),
            ("num_channels", self.num_channels),
        ])?;
        require(self.image_size >= self.patch_size, "image_size", || {
            format!(
                "{} is smaller than patch_size {}: no patch",
                self.image_size, self.patch_size
            )
        })?;
        divisible("hidden_size", self.hidden_size, "num_heads", self.num_heads)?;
        positive_number("layer_norm_eps", self.layer_norm_eps)
    }
}

impl MlpProjectorConfig {
    /// # Errors
    /// [`InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        positive(&[
            ("input_size", self.input_size),
            ("hidden_size", self.hidden_size),
        ])
    }
}

impl LlamaConfig {
    /// # Errors
    /// [`InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        positive(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ])?;
        divisible(
            "hidden_size",
            self.hidden_size,
            "num_attention_heads",
            self.num_attention_heads,
        )?;
        divisible(
            "num_attention_heads",
            self.num_attention_heads,
            "num_key_value_heads",
            self.num_key_value_heads,
        )?;
        require(self.head_dim().is_multiple_of(2), "hidden_size", || {
            format!("head_dim {} must be even for RoPE", self.head_dim())
        })?;
        positive_number("rms_norm_eps", self.rms_norm_eps)?;
        positive_number("rope_theta", self.rope_theta)
    }
}

impl TextHiddenFcsConfig {
    /// # Errors
    /// [`InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        positive(&[("hidden_size", self.hidden_size), ("out_dim", self.out_dim)])
    }
}

impl DetectionHeadConfig {
    /// # Errors
    /// [`InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        positive(&[
            ("input_size", self.input_size),
            ("hidden_size", self.hidden_size),
        ])?;
        require(self.num_classes >= 2, "num_classes", || {
            format!(
                "a classifier needs at least 2 classes, got {}",
                self.num_classes
            )
        })
    }
}

impl SamImageEncoderConfig {
    /// # Errors
    /// [`InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        positive(&[
            ("img_size", self.img_size),
            ("patch_size", self.patch_size),
            ("embed_dim", self.embed_dim),
            ("num_heads", self.num_heads),
            ("window_size", self.window_size),
            ("out_chans", self.out_chans),
            ("in_chans", self.in_chans),
        ])?;
        require(self.img_size >= self.patch_size, "img_size", || {
            format!(
                "{} is smaller than patch_size {}: no patch",
                self.img_size, self.patch_size
            )
        })?;
        divisible("embed_dim", self.embed_dim, "num_heads", self.num_heads)?;
        if let Some(&index) = self.global_attn_indexes.iter().find(|&&i| i >= self.depth) {
            return Err(InvalidConfig {
                field: "global_attn_indexes".into(),
                message: format!("block {index} does not exist (depth {})", self.depth),
            });
        }
        positive_number("mlp_ratio", self.mlp_ratio)?;
        require(
            self.embed_dim as f64 * self.mlp_ratio >= 1.0,
            "mlp_ratio",
            || format!("{} leaves the MLP no hidden unit", self.mlp_ratio),
        )?;
        positive_number("norm_eps", self.norm_eps)
    }
}

impl SamPromptEncoderConfig {
    /// # Errors
    /// [`InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        positive(&[
            ("embed_dim", self.embed_dim),
            ("image_embedding_size[0]", self.image_embedding_size[0]),
            ("image_embedding_size[1]", self.image_embedding_size[1]),
            ("input_image_size[0]", self.input_image_size[0]),
            ("input_image_size[1]", self.input_image_size[1]),
        ])?;
        // The random Fourier features are `embed_dim / 2` sine/cosine pairs.
        require(self.embed_dim.is_multiple_of(2), "embed_dim", || {
            format!("{} must be even (sine/cosine pairs)", self.embed_dim)
        })?;
        // The mask downscaler's first convolution has `mask_in_chans / 4` channels.
        require(self.mask_in_chans >= 4, "mask_in_chans", || {
            format!("{} must be >= 4", self.mask_in_chans)
        })
    }
}

impl TwoWayTransformerConfig {
    /// # Errors
    /// [`InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        positive(&[
            ("embedding_dim", self.embedding_dim),
            ("num_heads", self.num_heads),
            ("mlp_dim", self.mlp_dim),
            ("attention_downsample_rate", self.attention_downsample_rate),
        ])?;
        divisible(
            "embedding_dim",
            self.embedding_dim,
            "num_heads",
            self.num_heads,
        )?;
        let internal = self.embedding_dim / self.attention_downsample_rate;
        require(
            internal > 0 && internal.is_multiple_of(self.num_heads),
            "attention_downsample_rate",
            || {
                format!(
                    "embedding_dim / {} = {internal} is not a multiple of num_heads {}",
                    self.attention_downsample_rate, self.num_heads
                )
            },
        )?;
        positive_number("norm_eps", self.norm_eps)
    }
}

impl SamMaskDecoderConfig {
    /// # Errors
    /// [`InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        // The upscaler narrows the width to a quarter, then an eighth.
        require(
            self.transformer_dim >= 8 && self.transformer_dim.is_multiple_of(8),
            "transformer_dim",
            || format!("{} must be a positive multiple of 8", self.transformer_dim),
        )?;
        positive(&[
            ("iou_head_depth", self.iou_head_depth),
            ("iou_head_hidden_dim", self.iou_head_hidden_dim),
        ])?;
        self.transformer
            .validate()
            .map_err(|e| e.within("transformer"))?;
        require(
            self.transformer.embedding_dim == self.transformer_dim,
            "transformer.embedding_dim",
            || {
                format!(
                    "{} != transformer_dim {}",
                    self.transformer.embedding_dim, self.transformer_dim
                )
            },
        )
    }
}

impl SamConfig {
    /// # Errors
    /// [`InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.image_encoder
            .validate()
            .map_err(|e| e.within("image_encoder"))?;
        self.prompt_encoder
            .validate()
            .map_err(|e| e.within("prompt_encoder"))?;
        self.mask_decoder
            .validate()
            .map_err(|e| e.within("mask_decoder"))
    }
}
