//! SAM mask post-processing (`Sam.postprocess_masks`): low-resolution logits are resized
//! bilinearly to the padded encoder input (`img_size` square), the padding is cropped away
//! (keeping the resized image's `input_size`), and the result is resized bilinearly to the
//! original image size.
//!
//! Both resizes are `F.interpolate(mode="bilinear", align_corners=False)` (half-pixel centres,
//! source coordinate clamped at 0, neighbour clamped to the last sample, no antialiasing).
//! On the CPU backend (flex) they are burn's `interpolate`, which follows that rule and
//! differentiates. The CubeCL backends (wgpu, cuda) have no backward for it ("Bilinear
//! interpolation backward is not supported by JIT backend"), so there the resize is
//! [`resize_bilinear_matmul`]: a bilinear resize is separable and linear, `rows @ x @ cols^T`
//! with fixed interpolation matrices holding exactly PyTorch's weights, and a matmul
//! differentiates on every backend. Both forms are checked against PyTorch's values and input
//! gradients; they differ by float rounding only (~1e-7 relative), which is why the CPU keeps
//! `interpolate` (training runs give bit-identical numbers from release to release).
//!
//! GLaMM/LEGION cast the logits to f32 before the first resize (`pred_mask.float()`); so does
//! [`postprocess_masks`], whatever dtype the model computes in.
//!
//! Reference: `segment_anything/modeling/sam.py`, `Sam.postprocess_masks`
//! (<https://github.com/facebookresearch/segment-anything/blob/6fdee8f2727f4506cfbbe553e23b895e27956588/segment_anything/modeling/sam.py#L136-L164>).

use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};

use super::SamError;

/// Interpolation matrix `[out_len, in_len]` of PyTorch's `align_corners=False` linear
/// resize along one axis (`upsample_bilinear2d` / `upsample_linear1d` on the CPU): source
/// coordinate `(i + 0.5) * in/out - 0.5` in f32, clamped at 0, blended between `floor` and
/// `floor + 1` (clamped to the last sample) with weights `1 - lambda` and `lambda`.
pub(crate) fn linear_resize_matrix(in_len: usize, out_len: usize) -> Vec<f32> {
    let mut m = vec![0f32; out_len * in_len];
    let scale = in_len as f32 / out_len as f32;
    for i in 0..out_len {
        let src = ((i as f32 + 0.5) * scale - 0.5).max(0.0);
        let low = (src.floor() as usize).min(in_len - 1);
        let high = (low + 1).min(in_len - 1);
        let lambda = src - low as f32;
        m[i * in_len + low] += 1.0 - lambda;
        m[i * in_len + high] += lambda;
    }
    m
}

/// Bilinear resize with PyTorch's `align_corners=False` convention, differentiable on every
/// backend: burn's `interpolate` on the CPU backend, [`resize_bilinear_matmul`] elsewhere (see
/// the module docs). Computes in `x`'s dtype.
///
/// # Shapes
/// - `x`: `[batch, channels, h, w]` -> `[batch, channels, size[0], size[1]]`.
///
/// # Panics
/// If a dimension of `x` or of `size` is zero.
pub fn resize_bilinear(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        // Same size is the identity under align_corners=False (source = destination).
        return x;
    }
    if x.device().inner() == Device::flex() {
        // burn's `InterpolateOptions::new` defaults to align_corners = true: set it.
        let options = InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size(size);
        interpolate(x, options)
    } else {
        resize_bilinear_matmul(x, size)
    }
}

/// [`resize_bilinear`] as `rows @ x @ cols^T` with PyTorch's interpolation weights: two
/// matmuls, which every backend differentiates. Computes in `x`'s dtype.
///
/// # Shapes
/// - `x`: `[batch, channels, h, w]` -> `[batch, channels, size[0], size[1]]`.
///
/// # Panics
/// If a dimension of `x` or of `size` is zero.
pub fn resize_bilinear_matmul(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [batch, channels, h, w] = x.dims();
    if [h, w] == size {
        // Same size is the identity under align_corners=False (source = destination).
        return x;
    }
    assert!(
        h > 0 && w > 0 && size[0] > 0 && size[1] > 0,
        "resize_bilinear: empty size {:?} -> {size:?}",
        [h, w]
    );
    let device = x.device();
    let dtype = x.dtype();
    let matrix = |in_len: usize, out_len: usize| {
        let m = linear_resize_matrix(in_len, out_len);
        Tensor::<2>::from_data(TensorData::new(m, [out_len, in_len]), (&device, dtype))
    };
    let planes = batch * channels;
    // Columns: [planes * h, w] @ [w, W] (one GEMM over every row of every plane).
    let x = if w == size[1] {
        x.reshape([planes, h, w])
    } else {
        x.reshape([planes * h, w])
            .matmul(matrix(w, size[1]).transpose())
            .reshape([planes, h, size[1]])
    };
    // Rows: [H, h] @ [h, W] per plane (the matrix broadcast over the planes).
    let x = if h == size[0] {
        x
    } else {
        matrix(h, size[0])
            .unsqueeze::<3>()
            .expand([planes, size[0], h])
            .matmul(x)
    };
    x.reshape([batch, channels, size[0], size[1]])
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
    let masks = masks.cast(FloatDType::F32);
    let masks = resize_bilinear(masks, [img_size, img_size]);
    let masks = masks.slice([0..batch, 0..channels, 0..input_size[0], 0..input_size[1]]);
    Ok(resize_bilinear(masks, original_size))
}
