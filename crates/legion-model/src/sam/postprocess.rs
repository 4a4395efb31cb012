//! SAM mask post-processing (`Sam.postprocess_masks`): low-resolution logits are resized
//! bilinearly to the padded encoder input (`img_size` square), the padding is cropped away
//! (keeping the resized image's `input_size`), and the result is resized bilinearly to the
//! original image size.
//!
//! Both resizes are `F.interpolate(mode="bilinear", align_corners=False)` (half-pixel centres,
//! source coordinate clamped at 0, no antialiasing). burn 0.22's `interpolate` with
//! `InterpolateMode::Bilinear` and `align_corners = false` uses the same rule in `burn-flex`
//! (`(out + 0.5) * in / out - 0.5`, clamped, neighbour clamped to the last sample) and in the
//! CubeCL kernels; the parity test checks it against PyTorch. Note that burn's
//! `InterpolateOptions::new` defaults to `align_corners = true`, so it is set explicitly here.
//! GLaMM/LEGION cast the logits to f32 before the first resize; burn tensors here are f32.
//!
//! Reference: `segment_anything/modeling/sam.py`, `Sam.postprocess_masks`.

use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::SamError;

/// Bilinear resize with PyTorch's `align_corners=False` convention.
///
/// # Shapes
/// - `x`: `[batch, channels, h, w]` -> `[batch, channels, size[0], size[1]]`.
pub fn resize_bilinear(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        // Same size is the identity under align_corners=False (source = destination).
        return x;
    }
    let options = InterpolateOptions::new(InterpolateMode::Bilinear)
        .with_align_corners(false)
        .with_output_size(size);
    interpolate(x, options)
}

/// Removes padding and upscales mask logits to the original image size.
///
/// `input_size` is the `[h, w]` of the image after the longest-side resize (before padding to
/// `img_size`), `original_size` the `[h, w]` of the image as loaded.
///
/// # Shapes
/// - `masks`: `[batch, channels, h, w]` -> `[batch, channels, original_size[0], original_size[1]]`.
///
/// # Errors
/// [`SamError::InvalidSize`] when a size is zero or `input_size` exceeds `img_size`.
pub fn postprocess_masks(
    masks: Tensor<4>,
    img_size: usize,
    input_size: [usize; 2],
    original_size: [usize; 2],
) -> Result<Tensor<4>, SamError> {
    let [batch, channels, _, _] = masks.dims();
    if img_size == 0 || input_size.contains(&0) || original_size.contains(&0) {
        return Err(SamError::InvalidSize(format!(
            "postprocess_masks: zero size (img_size {img_size}, input {input_size:?}, original \
             {original_size:?})"
        )));
    }
    if input_size[0] > img_size || input_size[1] > img_size {
        return Err(SamError::InvalidSize(format!(
            "postprocess_masks: input size {input_size:?} exceeds the padded size {img_size}"
        )));
    }
    let masks = resize_bilinear(masks, [img_size, img_size]);
    let masks = masks.slice([0..batch, 0..channels, 0..input_size[0], 0..input_size[1]]);
    Ok(resize_bilinear(masks, original_size))
}
