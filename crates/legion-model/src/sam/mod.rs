//! SAM (Segment Anything, Kirillov et al., arXiv 2304.02643), LEGION's grounding encoder.
//!
//! [`Sam`] = [`ImageEncoderViT`] (ViT-H in LEGION, frozen) + [`PromptEncoder`] (frozen) +
//! [`MaskDecoder`] (trained in LEGION), numerically faithful to the `segment_anything` package.
//! LEGION (`opendatalab/LEGION`, `model/Legion.py`, from GLaMM) prompts SAM with the projected
//! `[SEG]` hidden states only: per image, `sparse = seg_embeddings[:, None, :]`, dense = the
//! no-mask embedding, `multimask_output=False`, then [`postprocess_masks`] to the original size
//! ([`Sam::segment_with_text`]).
//!
//! Weights: [`SAM_REMAP`] maps the original checkpoint naming (`sam_vit_h_4b8939.pth`, converted
//! to safetensors) onto these modules, [`glamm_sam_remap`] the GLaMM/LEGION combined checkpoint
//! (`model.grounding_encoder.*`). Only the `nn.Sequential` indices need renaming; every other
//! key matches a field path, and burn-store's `PyTorchToBurnAdapter` transposes the Linear
//! weights and renames `nn.LayerNorm` weight/bias to gamma/beta. Conv2d and ConvTranspose2d
//! weights share PyTorch's layout and pass unchanged; [`common::LayerNorm2d`] keeps the names
//! weight/bias.
//!
//! ```text
//! python scripts/fixtures/sam.py           # regenerate the fixtures
//! cargo test -p legion-model --test sam_parity
//! ```

pub mod common;
pub mod image_encoder;
pub mod mask_decoder;
pub mod postprocess;
pub mod prompt_encoder;
pub mod transformer;

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

pub use image_encoder::{ImageEncoderViT, SamImageEncoderConfig};
pub use mask_decoder::{MaskDecoder, SamMaskDecoderConfig};
pub use postprocess::{postprocess_masks, resize_bilinear, resize_bilinear_matmul};
pub use prompt_encoder::{PromptEncoder, SamPromptEncoderConfig, SamPrompts};
pub use transformer::{TwoWayTransformer, TwoWayTransformerConfig};

use crate::weights::{Allowances, KeyRemap, WeightsError, load_safetensors};

/// Errors of the SAM block beyond weight loading.
#[derive(Debug, thiserror::Error)]
pub enum SamError {
    /// A size argument is impossible (zero, or larger than the padded input).
    #[error("invalid size: {0}")]
    InvalidSize(String),
    /// Prompts or embeddings have the wrong shape.
    #[error("invalid shape: {0}")]
    InvalidShape(String),
}

/// Key remaps from the original SAM checkpoint naming to [`Sam`]'s field paths, in order.
///
/// The patterns match anywhere after a `.` or at the start, so the same rules serve keys with a
/// prefix (GLaMM's `model.grounding_encoder.`, see [`glamm_sam_remap`]).
pub const SAM_REMAP: &[KeyRemap] = &[
    // image_encoder.neck = Sequential(Conv1x1, LayerNorm2d, Conv3x3, LayerNorm2d)
    (
        r"(^|\.)image_encoder\.neck\.0\.",
        "${1}image_encoder.neck.conv1.",
    ),
    (
        r"(^|\.)image_encoder\.neck\.1\.",
        "${1}image_encoder.neck.norm1.",
    ),
    (
        r"(^|\.)image_encoder\.neck\.2\.",
        "${1}image_encoder.neck.conv2.",
    ),
    (
        r"(^|\.)image_encoder\.neck\.3\.",
        "${1}image_encoder.neck.norm2.",
    ),
    // prompt_encoder.mask_downscaling = Sequential(Conv, LN2d, GELU, Conv, LN2d, GELU, Conv)
    (
        r"(^|\.)prompt_encoder\.mask_downscaling\.0\.",
        "${1}prompt_encoder.mask_downscaling.conv1.",
    ),
    (
        r"(^|\.)prompt_encoder\.mask_downscaling\.1\.",
        "${1}prompt_encoder.mask_downscaling.norm1.",
    ),
    (
        r"(^|\.)prompt_encoder\.mask_downscaling\.3\.",
        "${1}prompt_encoder.mask_downscaling.conv2.",
    ),
    (
        r"(^|\.)prompt_encoder\.mask_downscaling\.4\.",
        "${1}prompt_encoder.mask_downscaling.norm2.",
    ),
    (
        r"(^|\.)prompt_encoder\.mask_downscaling\.6\.",
        "${1}prompt_encoder.mask_downscaling.conv3.",
    ),
    // mask_decoder.output_upscaling = Sequential(ConvT, LN2d, GELU, ConvT, GELU)
    (
        r"(^|\.)mask_decoder\.output_upscaling\.0\.",
        "${1}mask_decoder.output_upscaling.conv_transpose1.",
    ),
    (
        r"(^|\.)mask_decoder\.output_upscaling\.1\.",
        "${1}mask_decoder.output_upscaling.norm.",
    ),
    (
        r"(^|\.)mask_decoder\.output_upscaling\.3\.",
        "${1}mask_decoder.output_upscaling.conv_transpose2.",
    ),
];

/// Key remaps from the GLaMM / LEGION combined checkpoint (`GLaMMForCausalLM`, SAM under
/// `model.grounding_encoder.`) to a standalone [`Sam`]: strip the prefix, then [`SAM_REMAP`].
/// Use with [`Sam::glamm_allowances`], since that checkpoint also holds the LLM, CLIP, the
/// projector, `text_hidden_fcs` and `region_encoder`.
pub fn glamm_sam_remap() -> Vec<KeyRemap> {
    std::iter::once((r"^model\.grounding_encoder\.", ""))
        .chain(SAM_REMAP.iter().copied())
        .collect()
}

/// Configuration of [`Sam`].
#[derive(Config, Debug)]
pub struct SamConfig {
    /// The ViT image encoder.
    pub image_encoder: SamImageEncoderConfig,
    /// The prompt encoder.
    pub prompt_encoder: SamPromptEncoderConfig,
    /// The mask decoder.
    pub mask_decoder: SamMaskDecoderConfig,
}

impl SamConfig {
    /// SAM ViT-H, LEGION's grounding encoder (`build_sam_vit_h`).
    pub fn vit_h() -> Self {
        Self::new(
            SamImageEncoderConfig::vit_h(),
            SamPromptEncoderConfig::sam(),
            SamMaskDecoderConfig::sam(),
        )
    }

    /// SAM ViT-L.
    pub fn vit_l() -> Self {
        Self::new(
            SamImageEncoderConfig::vit_l(),
            SamPromptEncoderConfig::sam(),
            SamMaskDecoderConfig::sam(),
        )
    }

    /// SAM ViT-B.
    pub fn vit_b() -> Self {
        Self::new(
            SamImageEncoderConfig::vit_b(),
            SamPromptEncoderConfig::sam(),
            SamMaskDecoderConfig::sam(),
        )
    }

    /// The tiny random SAM of `scripts/fixtures/sam.py` (64 px input, 16-wide prompts).
    pub fn tiny() -> Self {
        Self::new(
            SamImageEncoderConfig::tiny(),
            SamPromptEncoderConfig::tiny(),
            SamMaskDecoderConfig::tiny(),
        )
    }

    /// Builds SAM with burn's default initialisation (weights are meant to be loaded).
    ///
    /// # Panics
    /// When the parts disagree: the encoder's output channels, the prompt width and the decoder
    /// width must be equal, and the prompt encoder's grid must be the encoder's.
    pub fn init(&self, device: &Device) -> Sam {
        let grid = self.image_encoder.grid_size();
        assert!(
            self.image_encoder.out_chans == self.prompt_encoder.embed_dim
                && self.prompt_encoder.embed_dim == self.mask_decoder.transformer_dim,
            "SamConfig: encoder out_chans, prompt embed_dim and decoder width must be equal"
        );
        assert_eq!(
            self.prompt_encoder.image_embedding_size,
            [grid, grid],
            "SamConfig: the prompt encoder's grid must be img_size / patch_size"
        );
        Sam {
            image_encoder: self.image_encoder.init(device),
            prompt_encoder: self.prompt_encoder.init(device),
            mask_decoder: self.mask_decoder.init(device),
        }
    }
}

/// Segment Anything: image encoder, prompt encoder and mask decoder, with the reference's field
/// names (`image_encoder`, `prompt_encoder`, `mask_decoder`).
#[derive(Module, Debug)]
pub struct Sam {
    /// ViT image encoder.
    pub image_encoder: ImageEncoderViT,
    /// Prompt encoder.
    pub prompt_encoder: PromptEncoder,
    /// Mask decoder.
    pub mask_decoder: MaskDecoder,
}

impl Sam {
    /// Loads an original-naming SAM checkpoint (safetensors) strictly.
    ///
    /// # Errors
    /// [`WeightsError`] when the file cannot be read or any tensor is missing, unexpected or of
    /// the wrong shape.
    pub fn load(config: &SamConfig, path: &Path, device: &Device) -> Result<Self, WeightsError> {
        load_safetensors(config.init(device), path, SAM_REMAP, &Allowances::default())
    }

    /// Loads SAM out of a GLaMM/LEGION combined safetensors file (`model.grounding_encoder.*`),
    /// ignoring the file's non-SAM tensors but nothing of SAM's.
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn load_glamm(
        config: &SamConfig,
        path: &Path,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        load_safetensors(
            config.init(device),
            path,
            &glamm_sam_remap(),
            &Self::glamm_allowances(),
        )
    }

    /// What a GLaMM/LEGION file may hold beyond SAM, after [`glamm_sam_remap`]: every key still
    /// under `model.` (LLM, CLIP, projector, `text_hidden_fcs`, `region_encoder`) and `lm_head.`.
    /// SAM's own keys no longer start with `model.` once remapped, so none of them is excused.
    pub fn glamm_allowances() -> Allowances {
        Allowances {
            missing: Vec::new(),
            unexpected: crate::weights::compile_patterns(&[r"^model\.", r"^lm_head\."]),
        }
    }

    /// Side of the padded encoder input.
    pub fn img_size(&self) -> usize {
        self.image_encoder.img_size
    }

    /// LEGION's mask head for one image: every `[SEG]` embedding prompts the decoder alone
    /// (sparse = that embedding, dense = no-mask), single-mask output, post-processed to the
    /// original image size (`_generate_and_postprocess_masks` in `model/Legion.py`).
    ///
    /// # Shapes
    /// - `image_embedding`: `[1, 256, 64, 64]` (this image's encoder output)
    /// - `seg_embeddings`: `[n_seg, 256]` (the `text_hidden_fcs` outputs)
    /// - returns mask logits `[n_seg, original_size[0], original_size[1]]`.
    ///
    /// # Errors
    /// [`SamError::InvalidShape`] when the embeddings' shapes do not fit the model,
    /// [`SamError::InvalidSize`] for impossible sizes.
    pub fn segment_with_text(
        &self,
        image_embedding: Tensor<4>,
        seg_embeddings: Tensor<2>,
        input_size: [usize; 2],
        original_size: [usize; 2],
    ) -> Result<Tensor<3>, SamError> {
        let dim = self.prompt_encoder.embed_dim;
        let [gh, gw] = self.prompt_encoder.image_embedding_size;
        if image_embedding.dims() != [1, dim, gh, gw] {
            return Err(SamError::InvalidShape(format!(
                "image embedding is {:?}, expected [1, {dim}, {gh}, {gw}]",
                image_embedding.dims()
            )));
        }
        let [n_seg, width] = seg_embeddings.dims();
        if width != dim {
            return Err(SamError::InvalidShape(format!(
                "[SEG] embeddings are {:?}, expected [n, {dim}]",
                seg_embeddings.dims()
            )));
        }
        let (sparse, dense) = self
            .prompt_encoder
            .forward(SamPrompts::text(seg_embeddings));
        let (low_res, _iou) = self.mask_decoder.forward(
            image_embedding,
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            false,
        );
        let masks = postprocess_masks(low_res, self.img_size(), input_size, original_size)?;
        let [_, _, h, w] = masks.dims();
        Ok(masks.reshape([n_seg, h, w]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glamm_remap_is_prefix_strip_then_sam_remap() {
        let glamm = glamm_sam_remap();
        assert_eq!(glamm[0].1, "");
        assert_eq!(&glamm[1..], SAM_REMAP);
        let _ = Sam::glamm_allowances();
    }

    #[test]
    fn tiny_sam_shapes() {
        let device = Device::flex();
        let sam = SamConfig::tiny().init(&device);
        let image = Tensor::<4>::zeros([1, 3, 64, 64], &device);
        let embedding = sam.image_encoder.forward(image);
        assert_eq!(embedding.dims(), [1, 16, 8, 8]);
        let seg = Tensor::<2>::ones([3, 16], &device);
        let masks = sam
            .segment_with_text(embedding, seg, [40, 64], [50, 80])
            .unwrap();
        assert_eq!(masks.dims(), [3, 50, 80]);
    }
}
