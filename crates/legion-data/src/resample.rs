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
//! The horizontal pass reads RGBX pixels, so a pixel's channels are one 4-lane vector; on CPUs
//! with AVX2 it computes two output pixels per 8-lane multiply-add (explicit intrinsics, with
//! the tap pairs laid out once per resize), and the vertical pass is compiled for AVX2 as well
//! (chosen at run time, same integers either way).
//! `tests/preprocess_parity.rs` checks the outputs against Pillow/transformers/segment-anything
//! (max abs error 0); the unit tests check them against a plain scalar implementation and the
//! AVX2 paths against the portable ones.

use std::cell::Cell;

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

/// The horizontal pass of one resize, for the region's output columns only (its kernel is
/// indexed from the region's first column).
struct HorizontalPass {
    kernel: Kernel,
    /// The taps in the layout of the AVX2 path, when the CPU has AVX2.
    #[cfg(target_arch = "x86_64")]
    avx2: Option<x86::PairTaps>,
}

impl HorizontalPass {
    fn new(in_size: usize, out_size: usize, filter: Filter, x0: usize, width: usize) -> Self {
        let full = Kernel::new(in_size, out_size, filter);
        let window = full.window;
        let kernel = Kernel {
            window,
            starts: full.starts[x0..x0 + width].to_vec(),
            taps: full.taps[x0 * window..(x0 + width) * window].to_vec(),
        };
        Self {
            #[cfg(target_arch = "x86_64")]
            avx2: crate::simd::has_avx2().then(|| x86::PairTaps::new(&kernel)),
            kernel,
        }
    }

    /// Whether [`Self::row`] runs the AVX2 code.
    #[cfg(test)]
    fn uses_avx2(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.avx2.is_some();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// One output row: the region's columns of an input row given as RGBX pixels (the fourth
    /// byte is ignored), written de-interleaved into the plane rows `r`, `g`, `b`.
    fn row(&self, rgbx: &[[u8; 4]], out: [&mut [u8]; 3]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(pairs) = &self.avx2 {
            // SAFETY: `avx2` is only set when the CPU supports AVX2 (`Self::new`), the only
            // requirement for calling a `#[target_feature(enable = "avx2")]` function.
            return unsafe { x86::horizontal_row_avx2(rgbx, &self.kernel, pairs, out) };
        }
        horizontal_row_portable(rgbx, &self.kernel, out)
    }
}

fn horizontal_row_portable(rgbx: &[[u8; 4]], kernel: &Kernel, out: [&mut [u8]; 3]) {
    // A compile-time window length unrolls the tap loop (and drops its bounds checks) for the
    // usual windows: 2 for a bilinear upscale, 4 for bicubic, longer for reductions.
    match kernel.window {
        1 => horizontal_row_n::<1>(rgbx, kernel, out),
        2 => horizontal_row_n::<2>(rgbx, kernel, out),
        3 => horizontal_row_n::<3>(rgbx, kernel, out),
        4 => horizontal_row_n::<4>(rgbx, kernel, out),
        5 => horizontal_row_n::<5>(rgbx, kernel, out),
        6 => horizontal_row_n::<6>(rgbx, kernel, out),
        7 => horizontal_row_n::<7>(rgbx, kernel, out),
        8 => horizontal_row_n::<8>(rgbx, kernel, out),
        9 => horizontal_row_n::<9>(rgbx, kernel, out),
        _ => horizontal_row_any(rgbx, kernel, out),
    }
}

/// One output pixel: `taps` applied to `window` on the four RGBX lanes (the fourth is dropped).
#[inline(always)]
fn pixel_sum(window: &[[u8; 4]], taps: &[i32]) -> [u8; 3] {
    // i32 as in Pillow (`INT32 ss`): |sum| < 2^31 for 8-bit input and 22-bit taps. Wrapping
    // ops only so that overflow checks (dev builds) do not block optimisation.
    let mut acc = [HALF; 4];
    for (px, &k) in window.iter().zip(taps) {
        for (a, &v) in acc.iter_mut().zip(px) {
            *a = a.wrapping_add(i32::from(v).wrapping_mul(k));
        }
    }
    [clip8(acc[0]), clip8(acc[1]), clip8(acc[2])]
}

fn horizontal_row_n<const N: usize>(rgbx: &[[u8; 4]], kernel: &Kernel, out: [&mut [u8]; 3]) {
    let [out_r, out_g, out_b] = out;
    let (taps, _) = kernel.taps.as_chunks::<N>();
    let pixels = out_r.iter_mut().zip(out_g.iter_mut()).zip(out_b.iter_mut());
    for (((r, g), b), (&start, taps)) in pixels.zip(kernel.starts.iter().zip(taps)) {
        let window: &[[u8; 4]; N] = rgbx[start..start + N]
            .try_into()
            .expect("window of N pixels");
        [*r, *g, *b] = pixel_sum(window, taps);
    }
}

fn horizontal_row_any(rgbx: &[[u8; 4]], kernel: &Kernel, out: [&mut [u8]; 3]) {
    let [out_r, out_g, out_b] = out;
    let window = kernel.window;
    let taps = kernel.taps.chunks_exact(window);
    let pixels = out_r.iter_mut().zip(out_g.iter_mut()).zip(out_b.iter_mut());
    for (((r, g), b), (&start, taps)) in pixels.zip(kernel.starts.iter().zip(taps)) {
        [*r, *g, *b] = pixel_sum(&rgbx[start..start + window], taps);
    }
}

/// The AVX2 passes. The horizontal one uses explicit instructions: two output pixels per step, each a
/// 4-lane (RGBX) half of one 256-bit vector, so one 32-bit multiply instruction serves eight
/// products. The integer operations are the portable ones (wrapping 32-bit multiply-adds from
/// `HALF`, arithmetic shift, saturation to `0..=255`), so the bytes are identical.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{
        HALF, Kernel, PRECISION_BITS, horizontal_row_any, pixel_sum, vertical_row_portable,
    };

    /// The portable vertical pass, compiled for AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) fn vertical_row_avx2(
        rows: &[u8],
        stride: usize,
        taps: &[i32],
        acc: &mut [i32],
        out: &mut [u8],
    ) {
        vertical_row_portable(rows, stride, taps, acc, out)
    }

    /// The taps of output pixels `2p` and `2p + 1`, tap `i`, at `[p * window + i]`: the first
    /// pixel's tap in lanes 0..4, the second's in lanes 4..8 (one vector load per tap).
    pub(super) struct PairTaps(Vec<[i32; 8]>);

    impl PairTaps {
        pub(super) fn new(kernel: &Kernel) -> Self {
            let window = kernel.window;
            let pairs = kernel.taps.chunks_exact(2 * window).flat_map(|two| {
                let (a, b) = two.split_at(window);
                a.iter().zip(b).map(|(&a, &b)| [a, a, a, a, b, b, b, b])
            });
            Self(pairs.collect())
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn horizontal_row_avx2(
        rgbx: &[[u8; 4]],
        kernel: &Kernel,
        pairs: &PairTaps,
        out: [&mut [u8]; 3],
    ) {
        match kernel.window {
            1 => row_n::<1>(rgbx, kernel, pairs, out),
            2 => row_n::<2>(rgbx, kernel, pairs, out),
            3 => row_n::<3>(rgbx, kernel, pairs, out),
            4 => row_n::<4>(rgbx, kernel, pairs, out),
            5 => row_n::<5>(rgbx, kernel, pairs, out),
            6 => row_n::<6>(rgbx, kernel, pairs, out),
            7 => row_n::<7>(rgbx, kernel, pairs, out),
            8 => row_n::<8>(rgbx, kernel, pairs, out),
            9 => row_n::<9>(rgbx, kernel, pairs, out),
            10 => row_n::<10>(rgbx, kernel, pairs, out),
            11 => row_n::<11>(rgbx, kernel, pairs, out),
            12 => row_n::<12>(rgbx, kernel, pairs, out),
            _ => horizontal_row_any(rgbx, kernel, out),
        }
    }

    /// Two pixels' RGBX bytes in the low 64 bits of a vector.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn two_pixels(a: [u8; 4], b: [u8; 4]) -> __m128i {
        let lane = |px: [u8; 4]| _mm_cvtsi32_si128(i32::from_le_bytes(px));
        _mm_unpacklo_epi32(lane(a), lane(b))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn row_n<const N: usize>(
        rgbx: &[[u8; 4]],
        kernel: &Kernel,
        pairs: &PairTaps,
        out: [&mut [u8]; 3],
    ) {
        let [out_r, out_g, out_b] = out;
        let window = |start: usize| -> &[[u8; 4]; N] {
            rgbx[start..start + N]
                .try_into()
                .expect("window of N pixels")
        };
        let (pair_taps, _) = pairs.0.as_chunks::<N>();
        let (starts, odd_start) = kernel.starts.as_chunks::<2>();
        let (r_pairs, r_last) = out_r.as_chunks_mut::<2>();
        let (g_pairs, g_last) = out_g.as_chunks_mut::<2>();
        let (b_pairs, b_last) = out_b.as_chunks_mut::<2>();
        let outputs = r_pairs
            .iter_mut()
            .zip(g_pairs.iter_mut())
            .zip(b_pairs.iter_mut());
        for (((r, g), b), (&[sa, sb], taps)) in outputs.zip(starts.iter().zip(pair_taps)) {
            let (wa, wb) = (window(sa), window(sb));
            let mut acc = _mm256_set1_epi32(HALF);
            for i in 0..N {
                let px = _mm256_cvtepu8_epi32(two_pixels(wa[i], wb[i]));
                let t = &taps[i];
                let k = _mm256_setr_epi32(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]);
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(px, k));
            }
            // `clip8` on all lanes: the shifted sums fit i16, so the two saturating packs
            // clamp to 0..=255 exactly.
            let shifted = _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(acc);
            let words = _mm256_packs_epi32(shifted, shifted);
            let bytes = _mm256_packus_epi16(words, words);
            let pa = _mm256_extract_epi32::<0>(bytes).to_le_bytes();
            let pb = _mm256_extract_epi32::<4>(bytes).to_le_bytes();
            (*r, *g, *b) = ([pa[0], pb[0]], [pa[1], pb[1]], [pa[2], pb[2]]);
        }
        if let ([start], [r], [g], [b]) = (odd_start, r_last, g_last, b_last) {
            let taps = &kernel.taps[kernel.taps.len() - N..];
            [*r, *g, *b] = pixel_sum(window(*start), taps);
        }
    }
}

/// Copies an RGB8 row into RGBX pixels (the layout [`HorizontalPass::row`] reads).
fn to_rgbx(row: &[u8], rgbx: &mut Vec<[u8; 4]>) {
    rgbx.clear();
    rgbx.extend(row.chunks_exact(3).map(|p| [p[0], p[1], p[2], 0]));
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
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked on the line above), the only requirement for
        // calling a `#[target_feature(enable = "avx2")]` function.
        return unsafe { x86::vertical_row_avx2(rows, stride, taps, acc, out) };
    }
    vertical_row_portable(rows, stride, taps, acc, out)
}

/// [`vertical_row`]'s loops; `#[inline(always)]` so that the AVX2 copy compiles them with
/// 8-lane integer multiplies (the plain x86-64 target has only SSE2).
#[inline(always)]
fn vertical_row_portable(
    rows: &[u8],
    stride: usize,
    taps: &[i32],
    acc: &mut [i32],
    out: &mut [u8],
) {
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
#[inline(always)]
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
#[inline(always)]
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
    let horizontal =
        (out_w != in_w).then(|| HorizontalPass::new(in_w, out_w, filter, region.x0, width));
    let mut mid = INTERMEDIATE.take();
    // Stale bytes are fine: the horizontal pass writes every byte of every row.
    mid.resize((row1 - row0) * 3 * width, 0);
    mid.par_chunks_mut(3 * width)
        .with_min_len(ROWS_PER_TASK)
        .enumerate()
        .for_each_init(Vec::new, |rgbx, (r, planes)| {
            let y = row0 + r;
            let row = &src_raw[y * in_w * 3..(y + 1) * in_w * 3];
            let (red, rest) = planes.split_at_mut(width);
            let (green, blue) = rest.split_at_mut(width);
            match &horizontal {
                Some(pass) => {
                    to_rgbx(row, rgbx);
                    pass.row(rgbx, [red, green, blue]);
                }
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
    if mid.capacity() <= KEPT_INTERMEDIATE_BYTES {
        INTERMEDIATE.set(mid);
    }
}

/// The largest intermediate image a thread keeps for its next resize.
const KEPT_INTERMEDIATE_BYTES: usize = 16 << 20;

thread_local! {
    /// The intermediate image of this thread's last resize, reused by the next one instead of
    /// a fresh zero-filled buffer per image. Taken out while in use, so a resize that starts
    /// on this thread meanwhile (rayon work stealing) just allocates its own.
    static INTERMEDIATE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
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

    /// The AVX2 horizontal pass (when this CPU has it) and the portable one give the same
    /// bytes, for short and long windows (both filters, up- and downscales up to 6.5x, so
    /// also windows past the unrolled lengths), odd and even widths, and crops starting
    /// anywhere.
    #[test]
    fn horizontal_pass_paths_agree() {
        let row = noise(203, 1, 11);
        let rgbx: Vec<[u8; 4]> = row
            .as_raw()
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2], 0])
            .collect();
        let mut checked_avx2 = 0;
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            for out_w in [31, 34, 60, 97, 150, 203, 411] {
                for (x0, width) in [(0, out_w), (1, out_w - 1), (3, out_w / 2), (out_w - 1, 1)] {
                    let pass = HorizontalPass::new(203, out_w, filter, x0, width);
                    let mut portable = vec![0u8; 3 * width];
                    let (r, rest) = portable.split_at_mut(width);
                    let (g, b) = rest.split_at_mut(width);
                    horizontal_row_portable(&rgbx, &pass.kernel, [r, g, b]);
                    let mut dispatched = vec![0u8; 3 * width];
                    let (r, rest) = dispatched.split_at_mut(width);
                    let (g, b) = rest.split_at_mut(width);
                    pass.row(&rgbx, [r, g, b]);
                    assert_eq!(
                        portable, dispatched,
                        "{filter:?} 203 -> {out_w}, x0 {x0}, width {width}"
                    );
                    checked_avx2 += usize::from(pass.uses_avx2());
                }
            }
        }
        if crate::simd::has_avx2() {
            assert_eq!(checked_avx2, 2 * 7 * 4, "every case ran the AVX2 path");
        }
    }

    #[test]
    fn vertical_pass_paths_agree() {
        let img = noise(77, 40, 13);
        let rows = img.as_raw();
        let stride = 77 * 3;
        for taps_len in 1..=10 {
            let taps: Vec<i32> = (0..taps_len)
                .map(|i| ((i * 7_919) % 3_000_001) - 1_000_000)
                .collect();
            let mut acc = vec![0i32; stride];
            let mut portable = vec![0u8; stride];
            vertical_row_portable(rows, stride, &taps, &mut acc, &mut portable);
            let mut dispatched = vec![0u8; stride];
            vertical_row(rows, stride, &taps, &mut acc, &mut dispatched);
            assert_eq!(portable, dispatched, "{taps_len} taps");
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
