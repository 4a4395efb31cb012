//! Model-input preprocessing for LEGION's two image encoders, numerically identical to the
//! reference processors.
//!
//! The LEGION training loader (`opendatalab/LEGION`, `dataset/gcg_datasets/GranDf_gcg_ds.py`)
//! decodes each image once (`cv2.imread` + `BGR2RGB`, see [`crate::image_io`]) and feeds it to:
//!
//! - **CLIP ViT-L/14-336** ("global image encoder"): `CLIPImageProcessor.preprocess` of
//!   `openai/clip-vit-large-patch14-336`: resize the shortest edge to 336 with PIL BICUBIC (the long
//!   edge becomes `int(336 * long / short)`, i.e. truncated), center crop 336x336 at offset
//!   `((h - 336) // 2, (w - 336) // 2)`, rescale by 1/255 (in `f64`, then cast to `f32`) and
//!   normalise `(x - mean) / std` in `f32`. See [`clip_preprocess`].
//! - **SAM ViT-H** ("grounding image encoder"): segment-anything's
//!   `ResizeLongestSide(target).apply_image` (PIL BILINEAR to [`preprocess_shape`]), then
//!   `(x - mean) / std` on the 0..255 values in `f32` and zero padding at the bottom/right to the
//!   loader's `IMG_SIZE = 1024` canvas. The resize target is 1024 at inference and 512 in
//!   training (`--image_size 512`); the canvas stays 1024 in both (the loader pads to
//!   `IMG_SIZE`, not to `image_size`). See [`sam_preprocess`].
//!
//! Both resizes go through [`crate::resample::resize_rgb8`], which reproduces Pillow's 8-bit
//! fixed-point resampler exactly, so the uint8 intermediates are identical to the reference and
//! the float outputs are bit-identical (checked by `tests/preprocess_parity.rs`).
//!
//! Everything here is plain CPU code on `Vec<f32>` in CHW order; [`ClipInput::to_tensor`] and
//! [`SamInput::to_tensor`] wrap the result as a burn tensor for the batcher.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::config::Config;
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use rayon::prelude::*;

use crate::resample::{Filter, Region, resize_rgb8_into};

/// Preprocessing errors: an image or configuration the processors cannot handle.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreprocessError {
    /// The input image has a zero width or height.
    #[error("cannot preprocess an empty image ({width}x{height})")]
    EmptyImage {
        /// Image width in pixels.
        width: u32,
        /// Image height in pixels.
        height: u32,
    },
    /// A configuration size field is zero.
    #[error("invalid preprocessing config: `{field}` must be positive")]
    ZeroSize {
        /// The offending config field.
        field: &'static str,
    },
    /// The SAM canvas is smaller than the resize target, so the image would not fit.
    #[error(
        "invalid SAM config: pad_size {pad_size} is smaller than the resize target longest_side {longest_side}"
    )]
    CanvasTooSmall {
        /// `SamPreprocessConfig::pad_size`.
        pad_size: u32,
        /// `SamPreprocessConfig::longest_side`.
        longest_side: u32,
    },
}

/// `CLIPImageProcessor` settings (the `preprocessor_config.json` of a CLIP checkpoint).
#[derive(Config, Debug, PartialEq)]
pub struct ClipPreprocessConfig {
    /// Target length of the image's shorter side after resizing (`size.shortest_edge`).
    pub shortest_edge: u32,
    /// Side of the square center crop (`crop_size`).
    pub crop_size: u32,
    /// Resampling filter (`resample = 3`, PIL BICUBIC).
    #[config(default = "Filter::Bicubic")]
    pub filter: Filter,
    /// Multiplier that maps 0..255 to 0..1 (`rescale_factor`), applied in `f64`.
    #[config(default = "1.0 / 255.0")]
    pub rescale_factor: f64,
    /// Per-channel RGB mean, subtracted after rescaling (`image_mean`; applied in `f32`).
    #[config(default = "[0.48145466, 0.4578275, 0.40821073]")]
    pub mean: [f64; 3],
    /// Per-channel RGB standard deviation (`image_std`; applied in `f32`).
    #[config(default = "[0.26862954, 0.26130258, 0.27577711]")]
    pub std: [f64; 3],
}

impl ClipPreprocessConfig {
    /// `openai/clip-vit-large-patch14-336`, LEGION's global image encoder.
    pub fn clip_vit_l_336() -> Self {
        Self::new(336, 336)
    }

    /// A 28 px variant with the same statistics, for tests with tiny CLIP models.
    pub fn tiny() -> Self {
        Self::new(28, 28)
    }

    /// Size `(height, width)` of the shortest-edge resize, before the crop.
    ///
    /// Like `transformers.image_transforms.get_resize_output_image_size(.., default_to_square=False)`:
    /// the short side becomes `shortest_edge` and the long side `int(shortest_edge * long / short)`
    /// (truncated; computed exactly in integers, which equals Python's float result for any image
    /// size below 2^26). A square image keeps the width as its "short" side.
    pub fn resize_shape(&self, height: u32, width: u32) -> (u32, u32) {
        let s = u64::from(self.shortest_edge);
        if width <= height {
            let long = s * u64::from(height) / u64::from(width.max(1));
            (long as u32, self.shortest_edge)
        } else {
            let long = s * u64::from(width) / u64::from(height.max(1));
            (self.shortest_edge, long as u32)
        }
    }
}

/// CLIP pixel input of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipInput {
    /// Normalised pixels, CHW order, `3 * crop_size * crop_size` values.
    pub pixels: Vec<f32>,
    /// `[3, crop_size, crop_size]`.
    pub shape: [usize; 3],
}

impl ClipInput {
    /// The pixels as a `[3, H, W]` float tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> Tensor<3> {
        Tensor::from_data(TensorData::new(self.pixels.clone(), self.shape), device)
    }
}

/// Preprocesses an RGB image for the CLIP vision tower exactly like the reference
/// `CLIPImageProcessor` (PIL backend): shortest-edge BICUBIC resize, center crop, rescale and
/// normalisation.
///
/// If the crop is larger than the resized image on an axis (only possible with
/// `crop_size > shortest_edge`), the image is centered on a zero canvas first (offset
/// `ceil((crop - size) / 2)`), as `transformers`' `center_crop` does; zeros are then normalised
/// like any other value.
///
/// # Shapes
/// - input: `H x W` RGB8 image
/// - output: `[3, crop_size, crop_size]`
///
/// # Errors
/// [`PreprocessError::EmptyImage`] for a zero-sized image, [`PreprocessError::ZeroSize`] for a zero
/// `shortest_edge` or `crop_size`.
pub fn clip_preprocess(
    image: &RgbImage,
    cfg: &ClipPreprocessConfig,
) -> Result<ClipInput, PreprocessError> {
    let (width, height) = image.dimensions();
    if width == 0 || height == 0 {
        return Err(PreprocessError::EmptyImage { width, height });
    }
    if cfg.shortest_edge == 0 {
        return Err(PreprocessError::ZeroSize {
            field: "shortest_edge",
        });
    }
    if cfg.crop_size == 0 {
        return Err(PreprocessError::ZeroSize { field: "crop_size" });
    }
    let (rh, rw) = cfg.resize_shape(height, width);

    let crop = cfg.crop_size as usize;
    let (src_y0, dst_y0, ny) = crop_axis(rh as usize, crop);
    let (src_x0, dst_x0, nx) = crop_axis(rw as usize, crop);

    // Python: `image.astype(float64) * scale` then `.astype(float32)`; then float32 arithmetic.
    let normalisers: [ByteNormaliser; 3] = std::array::from_fn(|c| {
        ByteNormaliser::rescaled(cfg.rescale_factor, cfg.mean[c] as f32, cfg.std[c] as f32)
    });
    // Only the cropped part of the resize is computed, written straight into the planes; if
    // the image does not cover the crop, the rest of the canvas is the normalised zero.
    let region = Region {
        x0: src_x0,
        y0: src_y0,
        width: nx,
        height: ny,
    };
    let canvas = Canvas {
        side: crop,
        top: dst_y0,
        left: dst_x0,
        background: normalisers.each_ref().map(|n| n.table[0]),
    };
    let pixels = canvas.resized(image, (rw, rh), cfg.filter, region, &normalisers);
    Ok(ClipInput {
        pixels,
        shape: [3, crop, crop],
    })
}

/// Parallel rows `(r, g, b)` of a CHW buffer of 3 planes of `plane` values: the slices
/// `rows` (a range of whole rows of `row_len`) of each plane.
fn plane_rows<T: Send>(
    pixels: &mut [T],
    plane: usize,
    rows: std::ops::Range<usize>,
    row_len: usize,
) -> impl IndexedParallelIterator<Item = ((&mut [T], &mut [T]), &mut [T])> {
    let (r, rest) = pixels.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let [r, g, b] = [r, g, b].map(|p| &mut p[rows.clone()]);
    r.par_chunks_mut(row_len)
        .zip(g.par_chunks_mut(row_len))
        .zip(b.par_chunks_mut(row_len))
}

/// One axis of `transformers`' `center_crop`: `(source start, destination start, length)`.
fn crop_axis(size: usize, crop: usize) -> (usize, usize, usize) {
    if size >= crop {
        // `top = (size - crop) // 2`
        ((size - crop) / 2, 0, crop)
    } else {
        // Zero canvas of `crop` with the image at `ceil((crop - size) / 2)`.
        (0, (crop - size).div_ceil(2), size)
    }
}

/// segment-anything input settings (`ResizeLongestSide` + the LEGION loader's normalisation and
/// padding).
#[derive(Config, Debug, PartialEq)]
pub struct SamPreprocessConfig {
    /// Target length of the longer side after resizing (`ResizeLongestSide(target_length)`;
    /// the loader's `image_size`).
    pub longest_side: u32,
    /// Side of the square zero-padded canvas (the loader's `IMG_SIZE`, the SAM encoder's input).
    pub pad_size: u32,
    /// Resampling filter (torchvision `resize` on a PIL image: PIL BILINEAR).
    #[config(default = "Filter::Bilinear")]
    pub filter: Filter,
    /// Per-channel RGB mean on the 0..255 scale (applied in `f32`).
    #[config(default = "[123.675, 116.28, 103.53]")]
    pub mean: [f64; 3],
    /// Per-channel RGB standard deviation on the 0..255 scale (applied in `f32`).
    #[config(default = "[58.395, 57.12, 57.375]")]
    pub std: [f64; 3],
}

impl SamPreprocessConfig {
    /// Inference: longest side 1024 on the 1024 canvas.
    pub fn inference_1024() -> Self {
        Self::new(1024, 1024)
    }

    /// LEGION training (`--image_size 512`): longest side 512, still padded to the 1024 canvas
    /// like the reference loader (`IMG_SIZE = 1024`).
    pub fn training_512() -> Self {
        Self::new(512, 1024)
    }

    /// A 32 px variant for tests with tiny SAM models.
    pub fn tiny() -> Self {
        Self::new(32, 32)
    }
}

/// SAM pixel input of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct SamInput {
    /// Normalised pixels, CHW order, `3 * pad_size * pad_size` values; zero (in normalised space)
    /// outside the top-left `resized_hw` region.
    pub pixels: Vec<f32>,
    /// `[3, pad_size, pad_size]`.
    pub shape: [usize; 3],
    /// `(height, width)` of the resized image inside the canvas (the reference's `image_resize`,
    /// used to crop SAM's upsampled mask logits).
    pub resized_hw: (u32, u32),
    /// `(height, width)` of the input image (to resize the masks back).
    pub original_hw: (u32, u32),
}

impl SamInput {
    /// The pixels as a `[3, pad_size, pad_size]` float tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> Tensor<3> {
        Tensor::from_data(TensorData::new(self.pixels.clone(), self.shape), device)
    }
}

/// `ResizeLongestSide.get_preprocess_shape(h, w, target)`: `(new_h, new_w)` with the longer side
/// scaled to `target` and both sides rounded as `int(x + 0.5)` in `f64` (the same float
/// operations as the Python, so ties and near-ties round identically).
pub fn preprocess_shape(height: u32, width: u32, target: u32) -> (u32, u32) {
    let scale = f64::from(target) * 1.0 / f64::from(height.max(width));
    let new_h = (f64::from(height) * scale + 0.5) as u32;
    let new_w = (f64::from(width) * scale + 0.5) as u32;
    (new_h, new_w)
}

/// Preprocesses an RGB image for the SAM image encoder like the LEGION loader: BILINEAR resize of
/// the longest side to `longest_side`, `(x - mean) / std`, zero padding bottom/right to
/// `pad_size x pad_size`.
///
/// # Shapes
/// - input: `H x W` RGB8 image
/// - output: `[3, pad_size, pad_size]`, image in the top-left `resized_hw` block
///
/// # Errors
/// [`PreprocessError::EmptyImage`] for a zero-sized image (or one whose short side rounds to 0
/// pixels), [`PreprocessError::ZeroSize`] / [`PreprocessError::CanvasTooSmall`] for an invalid
/// config.
pub fn sam_preprocess(
    image: &RgbImage,
    cfg: &SamPreprocessConfig,
) -> Result<SamInput, PreprocessError> {
    let (width, height) = image.dimensions();
    if cfg.longest_side == 0 {
        return Err(PreprocessError::ZeroSize {
            field: "longest_side",
        });
    }
    if cfg.pad_size < cfg.longest_side {
        return Err(PreprocessError::CanvasTooSmall {
            pad_size: cfg.pad_size,
            longest_side: cfg.longest_side,
        });
    }
    let (rh, rw) = if width == 0 || height == 0 {
        (0, 0)
    } else {
        preprocess_shape(height, width, cfg.longest_side)
    };
    if rh == 0 || rw == 0 {
        // An extreme aspect ratio can round the short side to 0 (PIL would refuse the resize).
        return Err(PreprocessError::EmptyImage { width, height });
    }
    let pad = cfg.pad_size as usize;
    let normalisers: [ByteNormaliser; 3] = std::array::from_fn(|c| {
        ByteNormaliser::shifted_scaled(cfg.mean[c] as f32, cfg.std[c] as f32)
    });
    let region = Region {
        x0: 0,
        y0: 0,
        width: rw as usize,
        height: rh as usize,
    };
    let canvas = Canvas {
        side: pad,
        top: 0,
        left: 0,
        background: [0.0; 3],
    };
    let pixels = canvas.resized(image, (rw, rh), cfg.filter, region, &normalisers);
    Ok(SamInput {
        pixels,
        shape: [3, pad, pad],
        resized_hw: (rh, rw),
        original_hw: (height, width),
    })
}

/// A CHW canvas of three `side x side` planes holding a normalised image block with its top-left
/// corner at (`top`, `left`); every other value is `background[channel]`.
struct Canvas {
    side: usize,
    top: usize,
    left: usize,
    background: [f32; 3],
}

impl Canvas {
    /// Resizes `image` to `size` (width, height), computes `region` of the result and writes it
    /// normalised into the canvas block, in parallel rows.
    ///
    /// Every value is written exactly once: the canvas is not zero-filled first (at
    /// 1024 x 1024 x 3, a fill costs as much as the normalisation).
    ///
    /// # Panics
    /// If the block does not fit the canvas or `region` does not fit the resized image.
    fn resized(
        &self,
        image: &RgbImage,
        (width, height): (u32, u32),
        filter: Filter,
        region: Region,
        normalisers: &[ByteNormaliser; 3],
    ) -> Vec<f32> {
        let side = self.side;
        let (top, left, block_w, block_h) = (self.top, self.left, region.width, region.height);
        assert!(
            top + block_h <= side && left + block_w <= side,
            "block inside the canvas"
        );
        let plane = side * side;
        let mut pixels: Vec<f32> = Vec::with_capacity(3 * plane);
        let values = &mut pixels.spare_capacity_mut()[..3 * plane];
        // Rows above and below the block.
        for (plane_values, &background) in values.chunks_exact_mut(plane).zip(&self.background) {
            let (above, rest) = plane_values.split_at_mut(top * side);
            for v in above.iter_mut().chain(&mut rest[block_h * side..]) {
                v.write(background);
            }
        }
        // The block's rows, whole: left margin, image, right margin.
        let rows_written = AtomicUsize::new(0);
        resize_rgb8_into(
            image,
            width,
            height,
            filter,
            region,
            plane_rows(values, plane, top * side..(top + block_h) * side, side),
            |((r, g), b), planes| {
                for (c, (row, src)) in [r, g, b].into_iter().zip(planes).enumerate() {
                    assert_eq!(
                        (row.len(), src.len()),
                        (side, block_w),
                        "one whole canvas row"
                    );
                    let (margin_left, rest) = row.split_at_mut(left);
                    let (block, margin_right) = rest.split_at_mut(block_w);
                    normalisers[c].row(src, block);
                    for v in margin_left.iter_mut().chain(margin_right) {
                        v.write(self.background[c]);
                    }
                }
                rows_written.fetch_add(1, Ordering::Relaxed);
            },
        );
        assert_eq!(
            rows_written.into_inner(),
            block_h,
            "every block row was emitted"
        );
        // SAFETY: all `3 * plane` values are initialised: in each plane, the rows outside the
        // block by the loop above, and each of the `block_h` block rows (all emitted: counted)
        // in full by the sink: margins by its loop, the block by `ByteNormaliser::row`, which
        // writes every value of its output (lengths asserted).
        unsafe { pixels.set_len(3 * plane) };
        pixels
    }
}

/// The normalisation of byte values as the reference's float arithmetic computes it, one image
/// row at a time: a table of the 256 results (exact by construction), or, for `(v - mean) /
/// std` on CPUs with AVX2 and FMA, an 8-lane computation that was checked to give the table's
/// bits for all 256 inputs.
#[derive(Debug, Clone)]
struct ByteNormaliser {
    /// The normalised value of each byte.
    table: [f32; 256],
    /// `[mean, std, 1 / std]` when the FMA path is used.
    fma: Option<[f32; 3]>,
}

impl ByteNormaliser {
    /// `(v - mean) / std` in `f32` (segment-anything's normalisation on 0..255 values).
    fn shifted_scaled(mean: f32, std: f32) -> Self {
        let table = std::array::from_fn(|v| (v as f32 - mean) / std);
        let reciprocal = 1.0 / std;
        let exact = crate::simd::has_avx2_fma()
            && (0..=255u8).all(|v| {
                let q = quotient_by_reciprocal(f32::from(v) - mean, std, reciprocal);
                q.to_bits() == table[usize::from(v)].to_bits()
            });
        Self {
            table,
            fma: exact.then_some([mean, std, reciprocal]),
        }
    }

    /// `((v * rescale) as f32 - mean) / std`, the product in `f64` (`transformers`' rescale of a
    /// uint8 array, then float32 normalisation).
    fn rescaled(rescale: f64, mean: f32, std: f32) -> Self {
        Self {
            table: std::array::from_fn(|v| ((v as f64 * rescale) as f32 - mean) / std),
            fma: None,
        }
    }

    /// Writes the normalised value of every byte of `src` into `dst`.
    ///
    /// # Panics
    /// If the lengths differ.
    fn row(&self, src: &[u8], dst: &mut [MaybeUninit<f32>]) {
        assert_eq!(src.len(), dst.len(), "one value per byte");
        #[cfg(target_arch = "x86_64")]
        if let Some([mean, std, reciprocal]) = self.fma {
            // SAFETY: `fma` is only set when the CPU has AVX2 and FMA (`shifted_scaled`), the
            // only requirement for calling a `#[target_feature(enable = "avx2,fma")]` function.
            return unsafe { normalise_row_fma(src, mean, std, reciprocal, dst) };
        }
        for (d, &v) in dst.iter_mut().zip(src) {
            d.write(self.table[usize::from(v)]);
        }
    }
}

/// `x / std` through the reciprocal: the fused multiply-add computes the residual
/// `x - q * std` exactly, and one correction step rounds to the correctly rounded quotient
/// (Markstein's theorem, for a correctly rounded reciprocal and no overflow or underflow).
/// Multiplies and FMAs are much cheaper than vector divisions.
#[inline(always)]
fn quotient_by_reciprocal(x: f32, std: f32, reciprocal: f32) -> f32 {
    let q = x * reciprocal;
    let residual = (-q).mul_add(std, x);
    residual.mul_add(reciprocal, q)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn normalise_row_fma(
    src: &[u8],
    mean: f32,
    std: f32,
    reciprocal: f32,
    dst: &mut [MaybeUninit<f32>],
) {
    for (d, &v) in dst.iter_mut().zip(src) {
        d.write(quotient_by_reciprocal(f32::from(v) - mean, std, reciprocal));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_shape_matches_segment_anything() {
        // Values from segment-anything's formula evaluated by hand.
        assert_eq!(preprocess_shape(480, 640, 1024), (768, 1024));
        assert_eq!(preprocess_shape(9, 17, 1024), (542, 1024));
        assert_eq!(preprocess_shape(250, 1023, 1024), (250, 1024));
        assert_eq!(preprocess_shape(1000, 1000, 512), (512, 512));
        assert_eq!(preprocess_shape(3, 2, 1024), (1024, 683));
    }

    #[test]
    fn clip_resize_shape_truncates_long_side() {
        let cfg = ClipPreprocessConfig::clip_vit_l_336();
        assert_eq!(cfg.resize_shape(9, 17), (336, 634)); // 336 * 17 / 9 = 634.67
        assert_eq!(cfg.resize_shape(900, 600), (504, 336));
        assert_eq!(cfg.resize_shape(512, 512), (336, 336));
    }

    #[test]
    fn crop_axis_centers_like_transformers() {
        assert_eq!(crop_axis(448, 336), (56, 0, 336));
        assert_eq!(crop_axis(337, 336), (0, 0, 336)); // (337 - 336) // 2 == 0
        assert_eq!(crop_axis(339, 336), (1, 0, 336));
        assert_eq!(crop_axis(5, 8), (0, 2, 5)); // ceil(3 / 2)
    }

    #[test]
    fn normalisation_matches_the_float_formula_bit_for_bit() {
        let src: Vec<u8> = (0..=255).chain((0..=255).rev()).chain([7, 9, 11]).collect();
        let sam = SamPreprocessConfig::inference_1024();
        let presets = (0..3).map(|c| (sam.mean[c] as f32, sam.std[c] as f32));
        for (mean, std) in presets.chain([(0.0, 1.0), (-3.5, 0.1), (0.5, 3.0)]) {
            let mut out = vec![MaybeUninit::uninit(); src.len()];
            ByteNormaliser::shifted_scaled(mean, std).row(&src, &mut out);
            for (&v, o) in src.iter().zip(&out) {
                // SAFETY: `row` wrote every value.
                let o = unsafe { o.assume_init() };
                assert_eq!(
                    o.to_bits(),
                    ((f32::from(v) - mean) / std).to_bits(),
                    "{v} of ({mean}, {std})"
                );
            }
        }
        // The SAM statistics take the FMA path wherever the CPU has it.
        if crate::simd::has_avx2_fma() {
            for c in 0..3 {
                let n = ByteNormaliser::shifted_scaled(sam.mean[c] as f32, sam.std[c] as f32);
                assert!(n.fma.is_some(), "channel {c}");
            }
        }
    }

    #[test]
    fn sam_output_is_padded_with_zeros() {
        let img = RgbImage::from_pixel(10, 6, image::Rgb([200, 100, 50]));
        let cfg = SamPreprocessConfig::tiny();
        let out = sam_preprocess(&img, &cfg).unwrap();
        assert_eq!(out.shape, [3, 32, 32]);
        assert_eq!(out.resized_hw, (19, 32));
        assert_eq!(out.original_hw, (6, 10));
        let plane = 32 * 32;
        for c in 0..3 {
            let expected =
                (f32::from([200u8, 100, 50][c]) - cfg.mean[c] as f32) / cfg.std[c] as f32;
            for y in 0..32 {
                for x in 0..32 {
                    let v = out.pixels[c * plane + y * 32 + x];
                    if y < 19 {
                        assert_eq!(v, expected);
                    } else {
                        assert_eq!(v, 0.0);
                    }
                }
            }
        }
    }

    #[test]
    fn clip_tiny_shapes_and_constant_value() {
        let img = RgbImage::from_pixel(50, 20, image::Rgb([255, 0, 128]));
        let cfg = ClipPreprocessConfig::tiny();
        let out = clip_preprocess(&img, &cfg).unwrap();
        assert_eq!(out.shape, [3, 28, 28]);
        let expected0 =
            ((255.0 * cfg.rescale_factor) as f32 - cfg.mean[0] as f32) / cfg.std[0] as f32;
        assert!(out.pixels[..28 * 28].iter().all(|&v| v == expected0));
    }

    #[test]
    fn clip_crop_larger_than_the_image_centres_it_on_the_normalised_zero() {
        // 20x10 -> shortest edge 8 gives 8x16; a 12x12 crop takes columns 2..14 and puts the
        // 8 rows at canvas rows 2..10 (`ceil((12 - 8) / 2)`).
        let img = RgbImage::from_fn(20, 10, |x, y| {
            image::Rgb([(x * 12) as u8, (y * 25) as u8, 77])
        });
        let cfg = ClipPreprocessConfig::new(8, 12);
        let out = clip_preprocess(&img, &cfg).unwrap();
        let resized = crate::resample::resize_rgb8(&img, 16, 8, Filter::Bicubic);
        let value = |v: u8, c: usize| {
            ((f64::from(v) * cfg.rescale_factor) as f32 - cfg.mean[c] as f32) / cfg.std[c] as f32
        };
        for c in 0..3 {
            for y in 0..12 {
                for x in 0..12 {
                    let expected = if (2..10).contains(&y) {
                        value(resized.get_pixel(x as u32 + 2, y as u32 - 2)[c], c)
                    } else {
                        value(0, c)
                    };
                    assert_eq!(
                        out.pixels[c * 144 + y * 12 + x],
                        expected,
                        "c {c} y {y} x {x}"
                    );
                }
            }
        }
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let empty = RgbImage::new(0, 5);
        assert!(matches!(
            clip_preprocess(&empty, &ClipPreprocessConfig::tiny()),
            Err(PreprocessError::EmptyImage { .. })
        ));
        assert!(matches!(
            sam_preprocess(&empty, &SamPreprocessConfig::tiny()),
            Err(PreprocessError::EmptyImage { .. })
        ));
        let img = RgbImage::new(4, 4);
        assert_eq!(
            sam_preprocess(&img, &SamPreprocessConfig::new(64, 32)),
            Err(PreprocessError::CanvasTooSmall {
                pad_size: 32,
                longest_side: 64
            })
        );
        let sliver = RgbImage::new(2000, 1);
        assert!(matches!(
            sam_preprocess(&sliver, &SamPreprocessConfig::tiny()),
            Err(PreprocessError::EmptyImage { .. })
        ));
    }
}
