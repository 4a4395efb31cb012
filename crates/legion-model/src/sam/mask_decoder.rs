//! SAM's mask decoder: output tokens (IoU token + mask tokens) are prepended to the sparse
//! prompt tokens, run through the [`TwoWayTransformer`] against the image embedding (plus the
//! dense prompt), and each mask token is turned by a hypernetwork MLP into weights over the
//! 4x upscaled image embedding.
//!
//! Reference: `segment_anything/modeling/mask_decoder.py` (`MaskDecoder`, `MLP`), Kirillov et
//! al., arXiv 2304.02643. GLaMM/LEGION's copy is numerically identical (it only spells the final
//! reshape with `num_mask_tokens`); LEGION calls it once per image with that image's embedding
//! `[1, 256, 64, 64]`, all of the image's `[SEG]` prompts as the batch, the no-mask dense
//! embedding, and `multimask_output=False`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{DType, Device, Tensor};

use super::common::{LayerNorm2d, LayerNorm2dConfig, Mlp, MlpConfig};
use super::transformer::{TwoWayTransformer, TwoWayTransformerConfig};
use crate::cpu_inference::{gelu, is_plain_cpu, transposed_copy};
use crate::matmul::matmul;
use crate::precision::{cast_to, param_dtype, to_f32};

/// Configuration of [`MaskDecoder`].
#[derive(Config, Debug)]
pub struct SamMaskDecoderConfig {
    /// Token width (the prompt embedding width).
    pub transformer_dim: usize,
    /// The two-way transformer.
    pub transformer: TwoWayTransformerConfig,
    /// Masks predicted in multimask mode (3); one more mask token exists for single-mask mode.
    #[config(default = 3)]
    pub num_multimask_outputs: usize,
    /// Layers of the IoU head.
    #[config(default = 3)]
    pub iou_head_depth: usize,
    /// Hidden width of the IoU head.
    #[config(default = 256)]
    pub iou_head_hidden_dim: usize,
}

impl SamMaskDecoderConfig {
    /// The mask decoder of every released SAM.
    pub fn sam() -> Self {
        Self {
            transformer_dim: 256,
            transformer: TwoWayTransformerConfig::sam(),
            num_multimask_outputs: 3,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
        }
    }

    /// A tiny decoder matching `scripts/fixtures/sam.py`: width 16, IoU head hidden 16.
    pub fn tiny() -> Self {
        Self {
            transformer_dim: 16,
            transformer: TwoWayTransformerConfig::tiny(),
            iou_head_hidden_dim: 16,
            ..Self::sam()
        }
    }

    /// Builds the decoder with burn's default initialisation.
    ///
    /// # Panics
    /// When `transformer_dim` is not a multiple of 8 or differs from the transformer's width.
    pub fn init(&self, device: &Device) -> MaskDecoder {
        let dim = self.transformer_dim;
        assert!(
            dim.is_multiple_of(8),
            "SamMaskDecoderConfig: transformer_dim must be a multiple of 8"
        );
        assert_eq!(
            dim, self.transformer.embedding_dim,
            "SamMaskDecoderConfig: transformer_dim differs from the transformer's width"
        );
        let num_mask_tokens = self.num_multimask_outputs + 1;
        MaskDecoder {
            transformer: self.transformer.init(device),
            iou_token: EmbeddingConfig::new(1, dim).init(device),
            mask_tokens: EmbeddingConfig::new(num_mask_tokens, dim).init(device),
            output_upscaling: OutputUpscaling {
                conv_transpose1: ConvTranspose2dConfig::new([dim, dim / 4], [2, 2])
                    .with_stride([2, 2])
                    .init(device),
                norm: LayerNorm2dConfig::new(dim / 4).init(device),
                conv_transpose2: ConvTranspose2dConfig::new([dim / 4, dim / 8], [2, 2])
                    .with_stride([2, 2])
                    .init(device),
            },
            output_hypernetworks_mlps: (0..num_mask_tokens)
                .map(|_| MlpConfig::new(dim, dim, dim / 8, 3).init(device))
                .collect(),
            iou_prediction_head: MlpConfig::new(
                dim,
                self.iou_head_hidden_dim,
                num_mask_tokens,
                self.iou_head_depth,
            )
            .init(device),
        }
    }
}

/// The 4x upscaling of the image tokens (`output_upscaling.{0,1,3}` in the checkpoint):
/// `ConvT2x2/2 -> LayerNorm2d -> GELU -> ConvT2x2/2 -> GELU`.
#[derive(Module, Debug)]
pub struct OutputUpscaling {
    /// `dim -> dim / 4`, kernel 2 stride 2.
    pub conv_transpose1: ConvTranspose2d,
    /// Channel norm after the first transposed convolution.
    pub norm: LayerNorm2d,
    /// `dim / 4 -> dim / 8`, kernel 2 stride 2.
    pub conv_transpose2: ConvTranspose2d,
}

impl OutputUpscaling {
    /// # Shapes
    /// - `x`: `[batch, dim, h, w]` -> `[batch, dim / 8, 4 h, 4 w]`.
    ///
    /// # Panics
    /// When `x` does not have `dim` channels.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = gelu(
            self.norm
                .forward(conv_transpose_tiled(&self.conv_transpose1, x)),
        );
        gelu(conv_transpose_tiled(&self.conv_transpose2, x))
    }
}

/// `conv.forward(x)` for a transposed convolution whose kernel equals its stride (SAM's 2 x 2,
/// stride 2 upscaling), on f32 tensors of the CPU backend without autodiff: no two taps reach
/// the same output pixel, so it is one product `Wᵀ [c_out kh kw, c_in] x x [c_in, h w]` on
/// rayon's threads ([`crate::matmul::matmul`]) and a pixel shuffle. burn-flex computes the
/// same product on one thread (12-14% of the decoder's time) and scatters it into a zeroed
/// output: the same values bit for bit (test below). Any other convolution, dtype or backend
/// takes burn's op.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]` -> `[batch, c_out, kh h, kw w]`.
fn conv_transpose_tiled(conv: &ConvTranspose2d, x: Tensor<4>) -> Tensor<4> {
    let tiles = conv.stride == conv.kernel_size
        && conv.padding == [0, 0]
        && conv.padding_out == [0, 0]
        && conv.dilation == [1, 1]
        && conv.groups == 1;
    let weight = conv.weight.val();
    if !tiles || x.dtype() != DType::F32 || weight.dtype() != DType::F32 || !is_plain_cpu(&x) {
        return conv.forward(x);
    }
    let [batch, c_in, h, w] = x.dims();
    let [_, c_out, kh, kw] = weight.dims();
    // [1, c_out kh kw, c_in] x [batch, c_in, h w] -> [batch, c_out kh kw, h w]
    let taps = matmul(
        weight.reshape([1, c_in, c_out * kh * kw]).swap_dims(1, 2),
        x.reshape([batch, c_in, h * w]),
    );
    let out = taps
        .reshape([batch, c_out, kh, kw, h, w])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([batch, c_out, h * kh, w * kw]);
    match &conv.bias {
        Some(bias) => out + bias.val().reshape([1, c_out, 1, 1]),
        None => out,
    }
}

/// SAM's mask decoder.
#[derive(Module, Debug)]
pub struct MaskDecoder {
    /// The two-way transformer.
    pub transformer: TwoWayTransformer,
    /// The IoU prediction token `[1, dim]`.
    pub iou_token: Embedding,
    /// The mask tokens `[num_multimask_outputs + 1, dim]`; token 0 is the single-mask output.
    pub mask_tokens: Embedding,
    /// 4x upscaling of the image tokens.
    pub output_upscaling: OutputUpscaling,
    /// One hypernetwork MLP per mask token, `dim -> dim -> dim -> dim / 8`.
    pub output_hypernetworks_mlps: Vec<Mlp>,
    /// IoU prediction head `dim -> hidden -> ... -> num_mask_tokens`.
    pub iou_prediction_head: Mlp,
}

impl MaskDecoder {
    /// Predicts masks for a batch of prompts on one image.
    ///
    /// `image_embeddings` with batch 1 is repeated for every prompt, as the reference's
    /// `repeat_interleave` does for its only supported case; a batch equal to the number of
    /// prompts pairs image `i` with prompt `i` (the same as `batch` calls with batch 1).
    ///
    /// # Shapes
    /// - `image_embeddings`: `[1 or batch, dim, h, w]`
    /// - `image_pe`: `[1, dim, h, w]`
    /// - `sparse_prompt_embeddings`: `[batch, n_tokens, dim]`
    /// - `dense_prompt_embeddings`: `[batch, dim, h, w]`
    /// - returns `(masks [batch, m, 4 h, 4 w], iou_pred [batch, m])` with `m` = 1, or
    ///   `num_multimask_outputs` when `multimask_output`.
    ///
    /// # Panics
    /// When the shapes disagree as above.
    pub fn forward(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse_prompt_embeddings: Tensor<3>,
        dense_prompt_embeddings: Tensor<4>,
        multimask_output: bool,
    ) -> (Tensor<4>, Tensor<2>) {
        // Computes in the weights' dtype (crate::precision); the outputs are f32.
        let dtype = param_dtype(&self.iou_token.weight);
        let (masks, iou_pred) = self.predict_masks(
            cast_to(image_embeddings, dtype),
            cast_to(image_pe, dtype),
            cast_to(sparse_prompt_embeddings, dtype),
            cast_to(dense_prompt_embeddings, dtype),
        );
        let (masks, iou_pred) = (to_f32(masks), to_f32(iou_pred));
        let [batch, num_mask_tokens, h, w] = masks.dims();
        let range = if multimask_output {
            1..num_mask_tokens
        } else {
            0..1
        };
        (
            masks.slice([0..batch, range.clone(), 0..h, 0..w]),
            iou_pred.slice([0..batch, range]),
        )
    }

    /// All mask tokens' masks and IoU predictions (`predict_masks`).
    ///
    /// # Shapes
    /// As [`Self::forward`], returning `(masks [batch, num_mask_tokens, 4 h, 4 w],
    /// iou_pred [batch, num_mask_tokens])`.
    ///
    /// # Panics
    /// When the shapes disagree.
    pub fn predict_masks(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse_prompt_embeddings: Tensor<3>,
        dense_prompt_embeddings: Tensor<4>,
    ) -> (Tensor<4>, Tensor<2>) {
        let [batch, _, dim] = sparse_prompt_embeddings.dims();
        let output_tokens = Tensor::cat(
            vec![self.iou_token.weight.val(), self.mask_tokens.weight.val()],
            0,
        );
        let [num_output_tokens, _] = output_tokens.dims();
        let num_mask_tokens = num_output_tokens - 1;
        let output_tokens = output_tokens
            .unsqueeze::<3>()
            .expand([batch, num_output_tokens, dim]);
        let tokens = Tensor::cat(vec![output_tokens, sparse_prompt_embeddings], 1);

        let [image_batch, c, h, w] = image_embeddings.dims();
        let src = match image_batch {
            1 => image_embeddings.repeat_dim(0, batch),
            b if b == batch => image_embeddings,
            b => panic!("MaskDecoder: image batch {b} must be 1 or the prompt batch {batch}"),
        };
        let src = src + dense_prompt_embeddings;
        // `[1, dim, h, w]`: the transformer repeats it for the batch.
        let (hs, src) = self.transformer.forward(src, image_pe, tokens);
        let iou_token_out = hs.clone().slice([0..batch, 0..1]).reshape([batch, dim]);
        let mask_tokens_out = hs.slice([0..batch, 1..1 + num_mask_tokens]);

        let src = transposed_copy(src).reshape([batch, c, h, w]);
        let upscaled = self.output_upscaling.forward(src);
        let hyper_in = self
            .output_hypernetworks_mlps
            .iter()
            .enumerate()
            .map(|(i, mlp)| {
                mlp.forward(
                    mask_tokens_out
                        .clone()
                        .slice([0..batch, i..i + 1])
                        .reshape([batch, dim]),
                )
            })
            .collect::<Vec<_>>();
        let hyper_in: Tensor<3> = Tensor::stack(hyper_in, 1);
        let [_, up_c, up_h, up_w] = upscaled.dims();
        let masks = hyper_in
            .matmul(upscaled.reshape([batch, up_c, up_h * up_w]))
            .reshape([batch, num_mask_tokens, up_h, up_w]);
        let iou_pred = self.iou_prediction_head.forward(iou_token_out);
        (masks, iou_pred)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;

    /// The product-and-shuffle transposed convolution gives burn's values bit for bit at SAM's
    /// upscaling shapes (256 -> 64 channels, then 64 -> 32; smaller grids), over and under the
    /// threaded product's threshold, with and without a bias.
    #[test]
    fn tiled_conv_transpose_equals_burn_bit_for_bit() {
        let device = Device::flex();
        device.seed(21);
        for (c_in, c_out, side, bias) in [(256, 64, 24, true), (64, 32, 48, false), (8, 4, 5, true)]
        {
            let conv = ConvTranspose2dConfig::new([c_in, c_out], [2, 2])
                .with_stride([2, 2])
                .with_bias(bias)
                .init(&device);
            let x = Tensor::<4>::random(
                [2, c_in, side, side],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let want = conv.forward(x.clone());
            let got = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap()
                .install(|| conv_transpose_tiled(&conv, x));
            assert_eq!(got.dims(), [2, c_out, 2 * side, 2 * side]);
            assert_eq!(
                (got - want).abs().max().into_scalar::<f32>(),
                0.0,
                "{c_in} -> {c_out}"
            );
        }
    }
}
