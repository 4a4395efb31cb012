//! SAM's prompt encoder, with GLaMM/LEGION's text prompts.
//!
//! Points and box corners are encoded with random Fourier features
//! ([`PositionEmbeddingRandom`], its Gaussian matrix is a checkpoint buffer) plus learned type
//! embeddings; a low-resolution mask is downscaled by a small CNN into the dense embedding, and
//! without a mask the dense embedding is the learned `no_mask_embed` broadcast over the grid.
//!
//! GLaMM (`mbzuai-oryx/groundingLMM`, `model/SAM/modeling/prompt_encoder.py`), and LEGION which
//! copies it, add one argument: `text_embeds` `[B, T, C]` is concatenated to the sparse
//! embeddings after the point and box embeddings, and counts for the batch size. LEGION calls
//! the encoder with only `text_embeds = seg_embeddings.unsqueeze(1)` (one `[SEG]` projection per
//! prompt, `[num_seg, 1, 256]`), so sparse = the text embeddings and dense = `no_mask_embed`.
//!
//! Reference: `segment_anything/modeling/prompt_encoder.py`, Kirillov et al., arXiv 2304.02643.

use std::f64::consts::PI;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::common::{LayerNorm2d, LayerNorm2dConfig};
use crate::cpu_inference::gelu;
use crate::precision::{cast_to, param_dtype};

/// Configuration of [`PromptEncoder`].
#[derive(Config, Debug)]
pub struct SamPromptEncoderConfig {
    /// Prompt embedding width (256 in SAM).
    pub embed_dim: usize,
    /// `[height, width]` of the image embedding grid (64x64 in SAM).
    pub image_embedding_size: [usize; 2],
    /// `[height, width]` of the padded encoder input in pixels (1024x1024 in SAM); point and
    /// box coordinates are in this frame.
    pub input_image_size: [usize; 2],
    /// Hidden channels of the mask downscaling CNN (16 in SAM).
    pub mask_in_chans: usize,
}

impl SamPromptEncoderConfig {
    /// The prompt encoder of every released SAM (ViT-B/L/H).
    pub fn sam() -> Self {
        Self {
            embed_dim: 256,
            image_embedding_size: [64, 64],
            input_image_size: [1024, 1024],
            mask_in_chans: 16,
        }
    }

    /// A tiny prompt encoder matching [`super::SamImageEncoderConfig::tiny`] and
    /// `scripts/fixtures/sam.py`: width 16, 8x8 grid, 64 px input.
    pub fn tiny() -> Self {
        Self {
            embed_dim: 16,
            image_embedding_size: [8, 8],
            input_image_size: [64, 64],
            mask_in_chans: 8,
        }
    }

    /// Builds the encoder with burn's default initialisation (weights are meant to be loaded).
    ///
    /// # Panics
    /// When `embed_dim` is odd or `mask_in_chans` is not a multiple of 4.
    pub fn init(&self, device: &Device) -> PromptEncoder {
        assert!(
            self.embed_dim.is_multiple_of(2),
            "SamPromptEncoderConfig: embed_dim must be even"
        );
        assert!(
            self.mask_in_chans.is_multiple_of(4) && self.mask_in_chans > 0,
            "SamPromptEncoderConfig: mask_in_chans must be a positive multiple of 4"
        );
        let embedding = |n| EmbeddingConfig::new(n, self.embed_dim).init(device);
        let quarter = self.mask_in_chans / 4;
        PromptEncoder {
            pe_layer: PositionEmbeddingRandom {
                // A buffer in the reference: never trained (loading keeps this flag).
                positional_encoding_gaussian_matrix: Param::from_tensor(Tensor::random(
                    [2, self.embed_dim / 2],
                    burn::tensor::Distribution::Normal(0.0, 1.0),
                    device,
                ))
                .set_require_grad(false),
            },
            point_embeddings: (0..4).map(|_| embedding(1)).collect(),
            not_a_point_embed: embedding(1),
            mask_downscaling: MaskDownscaling {
                conv1: Conv2dConfig::new([1, quarter], [2, 2])
                    .with_stride([2, 2])
                    .init(device),
                norm1: LayerNorm2dConfig::new(quarter).init(device),
                conv2: Conv2dConfig::new([quarter, self.mask_in_chans], [2, 2])
                    .with_stride([2, 2])
                    .init(device),
                norm2: LayerNorm2dConfig::new(self.mask_in_chans).init(device),
                conv3: Conv2dConfig::new([self.mask_in_chans, self.embed_dim], [1, 1]).init(device),
            },
            no_mask_embed: embedding(1),
            embed_dim: self.embed_dim,
            image_embedding_size: self.image_embedding_size,
            input_image_size: self.input_image_size,
        }
    }
}

/// Random Fourier position encoding: `[sin(2 pi (2c - 1) G), cos(2 pi (2c - 1) G)]` for
/// coordinates `c` in `[0, 1]^2`.
#[derive(Module, Debug)]
pub struct PositionEmbeddingRandom {
    /// The fixed Gaussian frequency matrix `[2, embed_dim / 2]`. A registered buffer in PyTorch
    /// (in the checkpoint, never trained); here a parameter so that it loads, created with
    /// `require_grad = false`.
    pub positional_encoding_gaussian_matrix: Param<Tensor<2>>,
}

impl PositionEmbeddingRandom {
    /// Encodes coordinates normalised to `[0, 1]` (x first).
    ///
    /// # Shapes
    /// - `coords`: `[d1, d2, 2]` -> `[d1, d2, embed_dim]`.
    pub fn encode(&self, coords: Tensor<3>) -> Tensor<3> {
        let [d1, d2, _] = coords.dims();
        let gaussian = self.positional_encoding_gaussian_matrix.val();
        // GLaMM builds the coordinates in the Gaussian matrix's dtype.
        let coords = cast_to(coords, gaussian.dtype());
        let [_, feats] = gaussian.dims();
        let projected = (coords * 2.0 - 1.0).reshape([d1 * d2, 2]).matmul(gaussian);
        let projected = (projected * (2.0 * PI)).reshape([d1, d2, feats]);
        Tensor::cat(vec![projected.clone().sin(), projected.cos()], 2)
    }

    /// Encoding of the centre of every cell of an `[h, w]` grid.
    ///
    /// # Shapes
    /// - returns `[embed_dim, h, w]`.
    pub fn grid(&self, size: [usize; 2]) -> Tensor<3> {
        let [h, w] = size;
        let device = self.positional_encoding_gaussian_matrix.device();
        // The reference builds these with cumsum of ones minus 0.5, then divides in f32.
        let mut coords = Vec::with_capacity(h * w * 2);
        for i in 0..h {
            for j in 0..w {
                coords.push(((j + 1) as f32 - 0.5) / w as f32);
                coords.push(((i + 1) as f32 - 0.5) / h as f32);
            }
        }
        let coords = Tensor::<3>::from_data(TensorData::new(coords, [h, w, 2]), &device);
        self.encode(coords).permute([2, 0, 1])
    }

    /// Encodes pixel coordinates `(x, y)` in an image of `[height, width]`.
    ///
    /// # Shapes
    /// - `coords`: `[batch, n, 2]` -> `[batch, n, embed_dim]`.
    pub fn encode_pixels(&self, coords: Tensor<3>, image_size: [usize; 2]) -> Tensor<3> {
        let device = coords.device();
        let [h, w] = image_size;
        let divisor = Tensor::<3>::from_data(
            TensorData::new(vec![w as f32, h as f32], [1, 1, 2]),
            &device,
        );
        self.encode(coords / divisor)
    }
}

/// The mask downscaling CNN (`mask_downscaling.{0,1,3,4,6}` in the checkpoint):
/// `Conv2x2/2 -> LayerNorm2d -> GELU -> Conv2x2/2 -> LayerNorm2d -> GELU -> Conv1x1`.
#[derive(Module, Debug)]
pub struct MaskDownscaling {
    /// `1 -> mask_in_chans / 4`, kernel 2 stride 2.
    pub conv1: Conv2d,
    /// Channel norm after `conv1`.
    pub norm1: LayerNorm2d,
    /// `mask_in_chans / 4 -> mask_in_chans`, kernel 2 stride 2.
    pub conv2: Conv2d,
    /// Channel norm after `conv2`.
    pub norm2: LayerNorm2d,
    /// `mask_in_chans -> embed_dim`, 1x1.
    pub conv3: Conv2d,
}

impl MaskDownscaling {
    /// # Shapes
    /// - `masks`: `[batch, 1, 4 h, 4 w]` -> `[batch, embed_dim, h, w]`.
    ///
    /// # Panics
    /// When `masks` does not have one channel.
    pub fn forward(&self, masks: Tensor<4>) -> Tensor<4> {
        let x = gelu(self.norm1.forward(self.conv1.forward(masks)));
        let x = gelu(self.norm2.forward(self.conv2.forward(x)));
        self.conv3.forward(x)
    }
}

/// Prompts for one [`PromptEncoder::forward`] call; every present field must have the same
/// batch size (the number of masks to predict).
#[derive(Debug, Clone, Default)]
pub struct SamPrompts {
    /// Point coordinates `[batch, n, 2]` as `(x, y)` pixels of the padded input frame, and
    /// labels `[batch, n]`: 1 foreground, 0 background, -1 padding (ignored point).
    pub points: Option<(Tensor<3>, Tensor<2, Int>)>,
    /// Boxes `[batch, 4]` as `(x0, y0, x1, y1)` pixels of the padded input frame.
    pub boxes: Option<Tensor<2>>,
    /// Low-resolution mask logits `[batch, 1, 4 h, 4 w]`.
    pub masks: Option<Tensor<4>>,
    /// GLaMM/LEGION text prompts `[batch, t, embed_dim]` (the projected `[SEG]` hidden states),
    /// appended after the point and box embeddings.
    pub text_embeds: Option<Tensor<3>>,
}

impl SamPrompts {
    /// LEGION's prompt: one text embedding per mask,
    /// `[batch, embed_dim]` -> `text_embeds [batch, 1, embed_dim]`.
    pub fn text(seg_embeddings: Tensor<2>) -> Self {
        Self {
            text_embeds: Some(seg_embeddings.unsqueeze_dim(1)),
            ..Self::default()
        }
    }

    /// The batch size the reference derives: from points, else boxes, else masks, else text,
    /// else 1.
    pub fn batch_size(&self) -> usize {
        if let Some((coords, _)) = &self.points {
            coords.dims()[0]
        } else if let Some(boxes) = &self.boxes {
            boxes.dims()[0]
        } else if let Some(masks) = &self.masks {
            masks.dims()[0]
        } else if let Some(text) = &self.text_embeds {
            text.dims()[0]
        } else {
            1
        }
    }
}

/// SAM's prompt encoder.
#[derive(Module, Debug)]
pub struct PromptEncoder {
    /// Random Fourier position encoding (half the width in frequencies).
    pub pe_layer: PositionEmbeddingRandom,
    /// Type embeddings: 0 background point, 1 foreground point, 2 box top-left, 3 box
    /// bottom-right.
    pub point_embeddings: Vec<Embedding>,
    /// Embedding of a padding point (label -1).
    pub not_a_point_embed: Embedding,
    /// Mask input CNN.
    pub mask_downscaling: MaskDownscaling,
    /// Dense embedding used when no mask is given.
    pub no_mask_embed: Embedding,
    /// Prompt embedding width.
    pub embed_dim: usize,
    /// `[h, w]` of the image embedding grid.
    pub image_embedding_size: [usize; 2],
    /// `[h, w]` of the padded encoder input.
    pub input_image_size: [usize; 2],
}

impl PromptEncoder {
    /// Positional encoding of the image embedding grid, for the mask decoder.
    ///
    /// # Shapes
    /// - returns `[1, embed_dim, h, w]`.
    pub fn get_dense_pe(&self) -> Tensor<4> {
        self.pe_layer.grid(self.image_embedding_size).unsqueeze()
    }

    /// Embeds point prompts; `pad` appends one padding point (label -1) per batch item, as the
    /// reference does when no box is given.
    ///
    /// # Shapes
    /// - `coords`: `[batch, n, 2]`, `labels`: `[batch, n]` -> `[batch, n (+1), embed_dim]`.
    pub fn embed_points(&self, coords: Tensor<3>, labels: Tensor<2, Int>, pad: bool) -> Tensor<3> {
        let device = coords.device();
        let [batch, _, _] = coords.dims();
        // Shift to the pixel centre.
        let mut coords = coords + 0.5;
        let mut labels = labels;
        if pad {
            coords = Tensor::cat(vec![coords, Tensor::zeros([batch, 1, 2], &device)], 1);
            labels = Tensor::cat(
                vec![labels, Tensor::<2, Int>::full([batch, 1], -1, &device)],
                1,
            );
        }
        let pe = self.pe_layer.encode_pixels(coords, self.input_image_size);
        let dtype = pe.dtype();
        let is = |value: i64| {
            cast_to(labels.clone().equal_elem(value).float(), dtype).unsqueeze_dim::<3>(2)
        };
        let (padding, negative, positive) = (is(-1), is(0), is(1));
        let weight = |e: &Embedding| e.weight.val().unsqueeze::<3>();
        // Padding points get exactly `not_a_point_embed` (their encoding is zeroed); labelled
        // points add their type embedding. Masks are 0/1, so every product is exact.
        pe * (padding.clone().neg() + 1.0)
            + padding * weight(&self.not_a_point_embed)
            + negative * weight(&self.point_embeddings[0])
            + positive * weight(&self.point_embeddings[1])
    }

    /// Embeds box prompts as their two corners.
    ///
    /// # Shapes
    /// - `boxes`: `[batch, 4]` -> `[batch, 2, embed_dim]`.
    pub fn embed_boxes(&self, boxes: Tensor<2>) -> Tensor<3> {
        let [batch, _] = boxes.dims();
        let corners = (boxes + 0.5).reshape([batch, 2, 2]);
        let pe = self.pe_layer.encode_pixels(corners, self.input_image_size);
        let corner_types = Tensor::cat(
            vec![
                self.point_embeddings[2].weight.val(),
                self.point_embeddings[3].weight.val(),
            ],
            0,
        );
        pe + corner_types.unsqueeze::<3>()
    }

    /// Embeds prompts into sparse tokens and a dense map.
    ///
    /// Sparse = `[points (+ padding point when no box), box corners, text]` concatenated along
    /// the token axis; dense = the downscaled mask, or `no_mask_embed` broadcast.
    ///
    /// # Shapes
    /// - returns `(sparse [batch, n_tokens, embed_dim], dense [batch, embed_dim, h, w])`, with
    ///   `batch` from [`SamPrompts::batch_size`]; with no sparse prompt `n_tokens` is 0.
    ///
    /// # Panics
    /// When the prompts' batch sizes differ, their widths are not `embed_dim`, or a mask is not
    /// `[batch, 1, 4 h, 4 w]`.
    pub fn forward(&self, prompts: SamPrompts) -> (Tensor<3>, Tensor<4>) {
        let batch = prompts.batch_size();
        let device = self.no_mask_embed.weight.device();
        let mut sparse = Vec::new();
        if let Some((coords, labels)) = prompts.points {
            sparse.push(self.embed_points(coords, labels, prompts.boxes.is_none()));
        }
        if let Some(boxes) = prompts.boxes {
            sparse.push(self.embed_boxes(boxes));
        }
        if let Some(text) = prompts.text_embeds {
            sparse.push(cast_to(text, param_dtype(&self.no_mask_embed.weight)));
        }
        for part in &sparse {
            let [b, _, c] = part.dims();
            assert!(
                b == batch && c == self.embed_dim,
                "PromptEncoder: a sparse prompt is [{b}, _, {c}], expected [{batch}, _, {}]",
                self.embed_dim
            );
        }
        let sparse = if sparse.is_empty() {
            Tensor::zeros([batch, 0, self.embed_dim], &device)
        } else {
            Tensor::cat(sparse, 1)
        };
        let [h, w] = self.image_embedding_size;
        let dense = match prompts.masks {
            Some(masks) => {
                let masks = cast_to(masks, param_dtype(&self.no_mask_embed.weight));
                let dense = self.mask_downscaling.forward(masks);
                assert_eq!(
                    dense.dims(),
                    [batch, self.embed_dim, h, w],
                    "PromptEncoder: masks must be [batch, 1, {}, {}]",
                    4 * h,
                    4 * w
                );
                dense
            }
            None => self
                .no_mask_embed
                .weight
                .val()
                .reshape([1, self.embed_dim, 1, 1])
                .expand([batch, self.embed_dim, h, w]),
        };
        (sparse, dense)
    }
}
