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
//!
//! # Speed, with the same integers
//! The sums are the ones Pillow computes (`i32`, like its `INT32` accumulators), only
//! organised for the CPU: coefficient tables are built once per axis; every window is padded
//! to one fixed length with zero taps (which add exactly nothing) so the tap loops unroll; the
//! intermediate image is stored as per-channel plane rows, so the vertical pass is one
//! vectorised loop over contiguous bytes; rows are computed in parallel (rayon); and
//! [`crate::preprocess`] asks only for the rows and columns it keeps (the CLIP crop) and
//! receives plane rows it normalises in place into its CHW buffer (no intermediate image).
//! The horizontal pass stays scalar (a gather per output pixel), and is the largest cost.
//! `tests/preprocess_parity.rs` checks the outputs against Pillow/transformers/segment-anything
//! (max abs error 0); the unit tests check them against a plain scalar implementation.

use image::RgbImage;
use rayon::prelude::*;

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
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Rounding bias Pillow starts every accumulator with (one half in fixed point).
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// [`AxisCoefficients`] with one window length for every output position, so the inner loops
/// have a fixed trip count: output `o` reads `window` input pixels from `starts[o]`, with
/// weights `taps[o * window ..][.. window]`. Windows near the end are shifted left to stay
/// inside the input and padded with zero taps, which add exactly nothing: the integer sums
/// are Pillow's.
struct Kernel {
    window: usize,
    starts: Vec<usize>,
    taps: Vec<i32>,
}

impl Kernel {
    fn new(in_size: usize, out_size: usize, filter: Filter) -> Self {
        let c = axis_coefficients(in_size, out_size, filter);
        // The longest Pillow window (`len <= ksize`, `len <= in_size`); usually shorter than
        // `ksize` (2 instead of 3 for a bilinear upscale), so no work is spent on zero taps.
        let window = c
            .lens
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(1)
            .min(in_size);
        let mut starts = Vec::with_capacity(out_size);
        let mut taps = vec![0i32; out_size * window];
        for out in 0..out_size {
            let (start, len) = (c.starts[out], c.lens[out]);
            let shifted = start.min(in_size - window);
            let offset = start - shifted;
            taps[out * window + offset..out * window + offset + len]
                .copy_from_slice(&c.taps[out * c.ksize..out * c.ksize + len]);
            starts.push(shifted);
        }
        Self {
            window,
            starts,
            taps,
        }
    }

    fn taps(&self, out: usize) -> &[i32] {
        &self.taps[out * self.window..(out + 1) * self.window]
    }
}

/// The part of a resized image to compute: output columns `x0 .. x0 + width` of output rows
/// `y0 .. y0 + height` (a crop of the resized image costs only its own pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub x0: usize,
    pub y0: usize,
    pub width: usize,
    pub height: usize,
}

/// Output rows handed to a sink per parallel task (rows of one task share nothing but the
/// read-only intermediate image).
const ROWS_PER_TASK: usize = 16;

/// One output row of the horizontal pass: output columns `x0 ..` of input row `row` (RGB8),
/// written de-interleaved into the plane rows `r`, `g`, `b`.
fn horizontal_row(row: &[u8], kernel: &Kernel, x0: usize, out: [&mut [u8]; 3]) {
    // A compile-time window length unrolls the tap loop (and drops its bounds checks) for the
    // usual windows: 2 for a bilinear upscale, 4 for bicubic, longer for reductions.
    match kernel.window {
        1 => horizontal_row_n::<1>(row, kernel, x0, out),
        2 => horizontal_row_n::<2>(row, kernel, x0, out),
        3 => horizontal_row_n::<3>(row, kernel, x0, out),
        4 => horizontal_row_n::<4>(row, kernel, x0, out),
        5 => horizontal_row_n::<5>(row, kernel, x0, out),
        6 => horizontal_row_n::<6>(row, kernel, x0, out),
        7 => horizontal_row_n::<7>(row, kernel, x0, out),
        8 => horizontal_row_n::<8>(row, kernel, x0, out),
        9 => horizontal_row_n::<9>(row, kernel, x0, out),
        _ => horizontal_row_any(row, kernel, x0, out),
    }
}

fn horizontal_row_n<const N: usize>(row: &[u8], kernel: &Kernel, x0: usize, out: [&mut [u8]; 3]) {
    let [out_r, out_g, out_b] = out;
    let taps = kernel.taps[x0 * N..].chunks_exact(N);
    let pixels = out_r.iter_mut().zip(out_g.iter_mut()).zip(out_b.iter_mut());
    for (((r_out, g_out), b_out), (&start, taps)) in
        pixels.zip(kernel.starts[x0..].iter().zip(taps))
    {
        let window = &row[start * 3..start * 3 + N * 3];
        // i32 as in Pillow (`INT32 ss`): |sum| < 2^31 for 8-bit input and 22-bit taps. Wrapping
        // ops only so that overflow checks (dev builds) do not block optimisation.
        let (mut r, mut g, mut b) = (HALF, HALF, HALF);
        for i in 0..N {
            let k = taps[i];
            r = r.wrapping_add(i32::from(window[3 * i]).wrapping_mul(k));
            g = g.wrapping_add(i32::from(window[3 * i + 1]).wrapping_mul(k));
            b = b.wrapping_add(i32::from(window[3 * i + 2]).wrapping_mul(k));
        }
        *r_out = clip8(r);
        *g_out = clip8(g);
        *b_out = clip8(b);
    }
}

fn horizontal_row_any(row: &[u8], kernel: &Kernel, x0: usize, out: [&mut [u8]; 3]) {
    let [out_r, out_g, out_b] = out;
    let window = kernel.window;
    let taps = kernel.taps[x0 * window..].chunks_exact(window);
    let pixels = out_r.iter_mut().zip(out_g.iter_mut()).zip(out_b.iter_mut());
    for (((r_out, g_out), b_out), (&start, taps)) in
        pixels.zip(kernel.starts[x0..].iter().zip(taps))
    {
        let window = &row[start * 3..start * 3 + window * 3];
        let (mut r, mut g, mut b) = (HALF, HALF, HALF);
        for (p, &k) in window.chunks_exact(3).zip(taps) {
            r = r.wrapping_add(i32::from(p[0]).wrapping_mul(k));
            g = g.wrapping_add(i32::from(p[1]).wrapping_mul(k));
            b = b.wrapping_add(i32::from(p[2]).wrapping_mul(k));
        }
        *r_out = clip8(r);
        *g_out = clip8(g);
        *b_out = clip8(b);
    }
}

/// De-interleaves columns `x0 .. x0 + r.len()` of an RGB8 row into plane rows.
fn split_row(row: &[u8], x0: usize, out: [&mut [u8]; 3]) {
    let [r, g, b] = out;
    let pixels = row[x0 * 3..].chunks_exact(3);
    for (((px, r), g), b) in pixels.zip(r.iter_mut()).zip(g.iter_mut()).zip(b.iter_mut()) {
        *r = px[0];
        *g = px[1];
        *b = px[2];
    }
}

/// One plane row of the vertical pass: `taps.len()` consecutive rows of `rows`, `stride`
/// bytes apart, of which the first `out.len()` bytes are used.
fn vertical_row(rows: &[u8], stride: usize, taps: &[i32], acc: &mut [i32], out: &mut [u8]) {
    match taps.len() {
        1 => vertical_row_n::<1>(rows, stride, taps, out),
        2 => vertical_row_n::<2>(rows, stride, taps, out),
        3 => vertical_row_n::<3>(rows, stride, taps, out),
        4 => vertical_row_n::<4>(rows, stride, taps, out),
        5 => vertical_row_n::<5>(rows, stride, taps, out),
        6 => vertical_row_n::<6>(rows, stride, taps, out),
        7 => vertical_row_n::<7>(rows, stride, taps, out),
        _ => vertical_row_any(rows, stride, taps, acc, out),
    }
}

/// [`vertical_row`] for `N` taps: one pass over the columns with the taps unrolled, which
/// the compiler vectorises across columns.
fn vertical_row_n<const N: usize>(rows: &[u8], stride: usize, taps: &[i32], out: &mut [u8]) {
    let len = out.len();
    let rows: [&[u8]; N] = std::array::from_fn(|i| &rows[i * stride..i * stride + len]);
    let taps: [i32; N] = std::array::from_fn(|i| taps[i]);
    for (x, o) in out.iter_mut().enumerate() {
        // i32 as in Pillow; wrapping ops only so that overflow checks do not block
        // vectorisation (the sum cannot overflow).
        let mut acc = HALF;
        for i in 0..N {
            acc = acc.wrapping_add(i32::from(rows[i][x]).wrapping_mul(taps[i]));
        }
        *o = clip8(acc);
    }
}

/// [`vertical_row`] for any number of taps: accumulated tap by tap over whole rows.
fn vertical_row_any(rows: &[u8], stride: usize, taps: &[i32], acc: &mut [i32], out: &mut [u8]) {
    acc.fill(HALF);
    for (i, &k) in taps.iter().enumerate() {
        if k == 0 {
            // Zero padding of the window (and true zero taps): adds nothing.
            continue;
        }
        let row = &rows[i * stride..i * stride + acc.len()];
        for (a, &p) in acc.iter_mut().zip(row) {
            *a = a.wrapping_add(i32::from(p).wrapping_mul(k));
        }
    }
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = clip8(a);
    }
}

/// Resizes `src` to `new_w x new_h` as [`resize_rgb8`] does, computes only `region` of the
/// result, and hands its rows, in order and paired with the items of `sinks` (one per region
/// row), to `emit(sink, [r, g, b])`: the row's three channel planes, `region.width` bytes
/// each. Rows are computed in parallel (rayon).
///
/// Internally the intermediate image is stored as plane rows, so the vertical pass and the
/// sinks work on contiguous single-channel rows (vectorised loops).
///
/// # Panics
/// If `region` is not inside `new_w x new_h`, or `sinks` does not yield `region.height` items.
pub(crate) fn resize_rgb8_into<S, I, F>(
    src: &RgbImage,
    new_w: u32,
    new_h: u32,
    filter: Filter,
    region: Region,
    sinks: I,
    emit: F,
) where
    S: Send,
    I: IndexedParallelIterator<Item = S>,
    F: Fn(S, [&[u8]; 3]) + Sync + Send,
{
    let (in_w, in_h) = (src.width() as usize, src.height() as usize);
    let (out_w, out_h) = (new_w as usize, new_h as usize);
    assert!(region.x0 + region.width <= out_w && region.y0 + region.height <= out_h);
    assert_eq!(sinks.len(), region.height, "one sink per region row");
    if region.width == 0 || region.height == 0 {
        return;
    }
    let vertical = (out_h != in_h).then(|| Kernel::new(in_h, out_h, filter));
    // Input rows the vertical pass reads (all of the region's rows when it is skipped).
    let (row0, row1) = match &vertical {
        Some(v) => (
            v.starts[region.y0],
            v.starts[region.y0 + region.height - 1] + v.window,
        ),
        None => (region.y0, region.y0 + region.height),
    };
    let src_raw = src.as_raw();
    let width = region.width;

    // Intermediate image: for each needed input row, its R, G and B plane rows (`3 * width`
    // bytes), horizontally resampled to the region's columns, or just de-interleaved when
    // the width is unchanged.
    let horizontal = (out_w != in_w).then(|| Kernel::new(in_w, out_w, filter));
    let mut mid = vec![0u8; (row1 - row0) * 3 * width];
    mid.par_chunks_mut(3 * width)
        .with_min_len(ROWS_PER_TASK)
        .enumerate()
        .for_each(|(r, planes)| {
            let y = row0 + r;
            let row = &src_raw[y * in_w * 3..(y + 1) * in_w * 3];
            let (red, rest) = planes.split_at_mut(width);
            let (green, blue) = rest.split_at_mut(width);
            match &horizontal {
                Some(kernel) => horizontal_row(row, kernel, region.x0, [red, green, blue]),
                None => split_row(row, region.x0, [red, green, blue]),
            }
        });

    let stride = 3 * width;
    match &vertical {
        Some(kernel) => sinks.with_min_len(ROWS_PER_TASK).enumerate().for_each_init(
            || (vec![0i32; width], vec![0u8; 3 * width]),
            |(acc, out), (r, sink)| {
                let y = region.y0 + r;
                let first = (kernel.starts[y] - row0) * stride;
                let span = (kernel.window - 1) * stride + stride;
                let rows = &mid[first..first + span];
                for (c, plane) in out.chunks_exact_mut(width).enumerate() {
                    vertical_row(&rows[c * width..], stride, kernel.taps(y), acc, plane);
                }
                let (red, rest) = out.split_at(width);
                let (green, blue) = rest.split_at(width);
                emit(sink, [red, green, blue]);
            },
        ),
        None => sinks
            .with_min_len(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(r, sink)| {
                let planes = &mid[(region.y0 + r - row0) * stride..][..stride];
                let (red, rest) = planes.split_at(width);
                let (green, blue) = rest.split_at(width);
                emit(sink, [red, green, blue]);
            }),
    }
}

/// Resizes an 8-bit RGB image exactly as `PIL.Image.resize((new_w, new_h), filter)` does with
/// the default `box` and `reducing_gap=None`.
///
/// Returns a copy when the size is unchanged. A zero `new_w` or `new_h` gives an empty image
/// (Pillow itself refuses to create one; callers here never ask for it). Rows are computed in
/// parallel (rayon).
pub fn resize_rgb8(src: &RgbImage, new_w: u32, new_h: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = src.dimensions();
    if new_w == 0 || new_h == 0 || in_w == 0 || in_h == 0 {
        return RgbImage::new(new_w, new_h);
    }
    let (out_w, out_h) = (new_w as usize, new_h as usize);
    let mut out = vec![0u8; out_w * out_h * 3];
    let region = Region {
        x0: 0,
        y0: 0,
        width: out_w,
        height: out_h,
    };
    resize_rgb8_into(
        src,
        new_w,
        new_h,
        filter,
        region,
        out.par_chunks_mut(out_w * 3),
        interleave,
    );
    RgbImage::from_raw(new_w, new_h, out)
        .expect("buffer holds new_w * new_h * 3 bytes by construction")
}

/// Writes plane rows back as one RGB8 row.
fn interleave(dst: &mut [u8], [r, g, b]: [&[u8]; 3]) {
    for (((px, &r), &g), &b) in dst.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
        px[0] = r;
        px[1] = g;
        px[2] = b;
    }
}

/// The scalar reference implementation (one accumulator per output value, `i64`), kept for
/// the tests: the optimised passes must give the same bytes.
#[cfg(test)]
fn resize_rgb8_scalar(src: &RgbImage, new_w: u32, new_h: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = src.dimensions();
    let (in_w, in_h, out_w, out_h) = (in_w as usize, in_h as usize, new_w as usize, new_h as usize);
    let clip = |acc: i64| (acc >> PRECISION_BITS).clamp(0, 255) as u8;
    let half = i64::from(HALF);
    let src_raw = src.as_raw();
    let mid: Vec<u8> = if out_w != in_w {
        let h = axis_coefficients(in_w, out_w, filter);
        let mut mid = vec![0u8; in_h * out_w * 3];
        for (y, out_row) in mid.chunks_exact_mut(out_w * 3).enumerate() {
            let in_row = &src_raw[y * in_w * 3..(y + 1) * in_w * 3];
            for (x, px) in out_row.chunks_exact_mut(3).enumerate() {
                for c in 0..3 {
                    let mut acc = half;
                    for i in 0..h.lens[x] {
                        acc += i64::from(in_row[(h.starts[x] + i) * 3 + c])
                            * i64::from(h.taps[x * h.ksize + i]);
                    }
                    px[c] = clip(acc);
                }
            }
        }
        mid
    } else {
        src_raw.clone()
    };
    if out_h == in_h {
        return RgbImage::from_raw(new_w, new_h, mid).unwrap();
    }
    let v = axis_coefficients(in_h, out_h, filter);
    let stride = out_w * 3;
    let mut out = vec![0u8; out_w * out_h * 3];
    for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
        for (xc, o) in out_row.iter_mut().enumerate() {
            let mut acc = half;
            for i in 0..v.lens[y] {
                acc += i64::from(mid[(v.starts[y] + i) * stride + xc])
                    * i64::from(v.taps[y * v.ksize + i]);
            }
            *o = clip(acc);
        }
    }
    RgbImage::from_raw(new_w, new_h, out).unwrap()
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

    #[test]
    fn optimised_passes_match_the_scalar_reference() {
        // Up- and downscaling on each axis, tiny images (window longer than the input), and
        // one-pass cases, with both filters.
        let sizes = [
            ((40, 30), (17, 64)),
            ((64, 17), (40, 30)),
            ((3, 2), (9, 5)),
            ((9, 5), (2, 1)),
            ((33, 21), (33, 50)),
            ((33, 21), (12, 21)),
            ((200, 150), (51, 77)),
        ];
        for (k, ((w, h), (nw, nh))) in sizes.into_iter().enumerate() {
            let img = noise(w, h, k as u32);
            for filter in [Filter::Bilinear, Filter::Bicubic] {
                assert_eq!(
                    resize_rgb8(&img, nw, nh, filter),
                    resize_rgb8_scalar(&img, nw, nh, filter),
                    "{filter:?} {w}x{h} -> {nw}x{nh}"
                );
            }
        }
    }

    #[test]
    fn region_rows_are_the_rows_of_the_full_resize() {
        let img = noise(50, 41, 9);
        let full = resize_rgb8(&img, 37, 66, Filter::Bicubic);
        let region = Region {
            x0: 5,
            y0: 11,
            width: 20,
            height: 30,
        };
        let mut rows = vec![0u8; region.width * region.height * 3];
        resize_rgb8_into(
            &img,
            37,
            66,
            Filter::Bicubic,
            region,
            rows.par_chunks_mut(region.width * 3),
            interleave,
        );
        for (r, row) in rows.chunks_exact(region.width * 3).enumerate() {
            for (x, px) in row.chunks_exact(3).enumerate() {
                let expected = full.get_pixel((region.x0 + x) as u32, (region.y0 + r) as u32);
                assert_eq!(px, &expected.0[..], "row {r} col {x}");
            }
        }
    }
}
