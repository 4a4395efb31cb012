//! Pillow-exact resizing of 8-bit RGB images.
//!
//! Both reference preprocessing paths of LEGION resize with Pillow: the CLIP processor of
//! `transformers` (`CLIPImageProcessorPil`, the "slow" processor) calls
//! `PIL.Image.resize(.., BICUBIC)` and segment-anything's `ResizeLongestSide.apply_image` calls
//! torchvision's `resize` on a PIL image, which is `PIL.Image.resize(.., BILINEAR)`. Neither passes
//! `reducing_gap`, whose default is `None`, so Pillow applies no box-reduction (`Image.reduce`)
//! shortcut before the convolution; this module has none either.
//!
//! For 8-bit images Pillow (`src/libImaging/Resample.c`, `ImagingResample`) works like this, and
//! [`resize_rgb8`] reproduces every step bit for bit:
//!
//! 1. Per output axis, filter coefficients are computed in `f64`: the filter support is scaled by
//!    the downscale factor (`max(in/out, 1)`) so that reductions are antialiased, the window of
//!    input pixels is `[(center - support + 0.5) as int, (center + support + 0.5) as int)`
//!    clamped to the image, and the weights of each window are normalised to sum to 1.
//! 2. Each weight is converted to fixed point with 22 fractional bits, rounding half away from
//!    zero (`PRECISION_BITS = 32 - 8 - 2`).
//! 3. Two separable passes: **horizontal first, then vertical**. Each pass accumulates
//!    `pixel * weight` in integers starting from `1 << 21` (round half up), shifts right by 22
//!    and clips to `0..=255`, so the intermediate image is rounded to `u8` between the passes.
//! 4. A pass whose axis keeps its size is skipped; if both are, the image is copied unchanged.
//!
//! Bicubic is Keys' cubic convolution with `a = -0.5` (support 2); bilinear is the triangle
//! filter (support 1).

use image::RgbImage;

/// Fractional bits of Pillow's fixed-point coefficients for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resampling filter, named after Pillow's `Image.Resampling` members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Filter {
    /// Triangle filter, support 1 (`PIL.Image.BILINEAR`; SAM's `ResizeLongestSide`).
    Bilinear,
    /// Cubic convolution with `a = -0.5`, support 2 (`PIL.Image.BICUBIC`; CLIP's processor).
    Bicubic,
}

impl Filter {
    /// Half-width of the filter kernel at scale 1, in input pixels.
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    /// Kernel value at distance `x` (same operation order as Pillow's C code, so the `f64`
    /// results are identical).
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point filter taps for one axis: output position `o` reads input pixels
/// `starts[o] .. starts[o] + lens[o]` with weights `taps[o * ksize ..][.. lens[o]]`.
struct AxisCoefficients {
    ksize: usize,
    starts: Vec<usize>,
    lens: Vec<usize>,
    taps: Vec<i32>,
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for a full-image box.
fn axis_coefficients(in_size: usize, out_size: usize, filter: Filter) -> AxisCoefficients {
    // Pillow computes `in1 - in0` with `float` box corners; sizes are far below 2^24 so that
    // is exact and equal to the `f64` value here.
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv_filterscale = 1.0 / filterscale;

    let mut starts = Vec::with_capacity(out_size);
    let mut lens = Vec::with_capacity(out_size);
    let mut taps = vec![0i32; out_size * ksize];
    let mut weights = vec![0f64; ksize];
    for out in 0..out_size {
        let center = (out as f64 + 0.5) * scale;
        // C casts `(int)` truncate toward zero; any negative value ends up clamped to 0, which
        // is what `max(0.0)` before the cast gives here.
        let start = ((center - support + 0.5).max(0.0) as usize).min(in_size);
        let end = ((center + support + 0.5).max(0.0) as usize).min(in_size);
        let len = end.saturating_sub(start);
        let mut total = 0.0;
        for (i, w) in weights.iter_mut().take(len).enumerate() {
            *w = filter.weight(((i + start) as f64 - center + 0.5) * inv_filterscale);
            total += *w;
        }
        let row = &mut taps[out * ksize..out * ksize + len];
        for (tap, &w) in row.iter_mut().zip(&weights[..len]) {
            let w = if total != 0.0 { w / total } else { w };
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            // Round half away from zero, as `(int)(±0.5 + w * 2^22)` does.
            *tap = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        starts.push(start);
        lens.push(len);
    }
    AxisCoefficients {
        ksize,
        starts,
        lens,
        taps,
    }
}

/// Pillow's `clip8`: drop the 22 fractional bits and saturate to a byte.
#[inline]
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Rounding bias Pillow starts every accumulator with (one half in fixed point).
const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// Resizes an 8-bit RGB image exactly as `PIL.Image.resize((new_w, new_h), filter)` does with
/// the default `box` and `reducing_gap=None`.
///
/// Returns a copy when the size is unchanged. A zero `new_w` or `new_h` gives an empty image
/// (Pillow itself refuses to create one; callers here never ask for it).
pub fn resize_rgb8(src: &RgbImage, new_w: u32, new_h: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = src.dimensions();
    if new_w == 0 || new_h == 0 || in_w == 0 || in_h == 0 {
        return RgbImage::new(new_w, new_h);
    }
    let (in_w, in_h, out_w, out_h) = (in_w as usize, in_h as usize, new_w as usize, new_h as usize);
    let vertical = axis_coefficients(in_h, out_h, filter);

    // Horizontal pass, restricted (like Pillow) to the input rows the vertical pass reads;
    // skipped when the width is unchanged.
    let (rows_first, rows_last) = (
        vertical.starts[0],
        vertical.starts[out_h - 1] + vertical.lens[out_h - 1],
    );
    let src_raw = src.as_raw();
    let (mid, mid_w, mid_row0): (Vec<u8>, usize, usize) = if out_w != in_w {
        let horizontal = axis_coefficients(in_w, out_w, filter);
        let rows = rows_last - rows_first;
        let mut mid = vec![0u8; rows * out_w * 3];
        for (r, out_row) in mid.chunks_exact_mut(out_w * 3).enumerate() {
            let in_row = &src_raw[(rows_first + r) * in_w * 3..(rows_first + r + 1) * in_w * 3];
            for (x, px) in out_row.chunks_exact_mut(3).enumerate() {
                let start = horizontal.starts[x];
                let taps = &horizontal.taps
                    [x * horizontal.ksize..x * horizontal.ksize + horizontal.lens[x]];
                let mut acc = [HALF; 3];
                for (i, &k) in taps.iter().enumerate() {
                    let p = &in_row[(start + i) * 3..(start + i) * 3 + 3];
                    for c in 0..3 {
                        acc[c] += i64::from(p[c]) * i64::from(k);
                    }
                }
                for c in 0..3 {
                    px[c] = clip8(acc[c]);
                }
            }
        }
        (mid, out_w, rows_first)
    } else {
        (src_raw.clone(), in_w, 0)
    };

    if out_h == in_h {
        // Vertical pass skipped: the horizontal result (or a copy) is the output.
        return RgbImage::from_raw(new_w, new_h, mid)
            .expect("buffer holds new_w * new_h * 3 bytes by construction");
    }

    let mut out = vec![0u8; out_w * out_h * 3];
    let stride = mid_w * 3;
    for (y, out_row) in out.chunks_exact_mut(out_w * 3).enumerate() {
        let start = vertical.starts[y] - mid_row0;
        let taps = &vertical.taps[y * vertical.ksize..y * vertical.ksize + vertical.lens[y]];
        for (xc, v) in out_row.iter_mut().enumerate() {
            let mut acc = HALF;
            for (i, &k) in taps.iter().enumerate() {
                acc += i64::from(mid[(start + i) * stride + xc]) * i64::from(k);
            }
            *v = clip8(acc);
        }
    }
    RgbImage::from_raw(new_w, new_h, out)
        .expect("buffer holds new_w * new_h * 3 bytes by construction")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        RgbImage::from_fn(w, h, |_, _| {
            let mut px = [0u8; 3];
            for v in &mut px {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *v = (state >> 24) as u8;
            }
            image::Rgb(px)
        })
    }

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            for (i, o) in [(17, 336), (700, 336), (500, 1024), (1023, 1024), (9, 4)] {
                let c = axis_coefficients(i, o, filter);
                for out in 0..o {
                    let sum: i64 = c.taps[out * c.ksize..out * c.ksize + c.lens[out]]
                        .iter()
                        .map(|&k| i64::from(k))
                        .sum();
                    // Each tap is rounded separately: the sum is within one unit per tap.
                    assert!(
                        (sum - (1 << PRECISION_BITS)).abs() <= c.ksize as i64,
                        "{filter:?} {i}->{o} at {out}: {sum}"
                    );
                    assert!(c.starts[out] + c.lens[out] <= i);
                }
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([7, 128, 250]));
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            for (w, h) in [(100, 60), (5, 3), (37, 50), (12, 23)] {
                let out = resize_rgb8(&img, w, h, filter);
                assert_eq!(out.dimensions(), (w, h));
                assert!(
                    out.pixels().all(|p| p.0 == [7, 128, 250]),
                    "{filter:?} {w}x{h}"
                );
            }
        }
    }

    #[test]
    fn same_size_is_a_copy() {
        let img = noise(19, 11, 3);
        assert_eq!(resize_rgb8(&img, 19, 11, Filter::Bicubic), img);
    }

    #[test]
    fn single_axis_resize_matches_transposed_resize() {
        // Only one pass runs when one side keeps its size; by symmetry, resizing the width of
        // an image equals resizing the height of its transpose.
        let img = noise(29, 13, 5);
        let transposed = RgbImage::from_fn(13, 29, |x, y| *img.get_pixel(y, x));
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            let a = resize_rgb8(&img, 64, 13, filter);
            let b = resize_rgb8(&transposed, 13, 64, filter);
            for (x, y, p) in a.enumerate_pixels() {
                assert_eq!(p, b.get_pixel(y, x));
            }
        }
    }
}
