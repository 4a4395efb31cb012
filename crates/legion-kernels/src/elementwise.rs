//! Vectorised f32 element-wise kernels for the CPU backend: the exact (erf) GELU, QuickGELU, a row softmax
//! and a last-axis layer norm with its backward pass (in inference and, through `legion-model`'s
//! backend extensions, in training), a channel-axis layer norm, and a tiled transpose.
//!
//! burn-flex runs without its `simd` feature in this workspace (see the README), so its GELU
//! calls a scalar `erf` per element and its softmax a scalar `exp`, on one thread, and SAM's
//! `LayerNorm2d`, written as burn ops, makes nine passes over the tensor with a fresh allocation
//! each. The kernels here are branch-free loops that LLVM vectorises (with AVX2 where the CPU
//! has it, picked at run time), and split their work over rayon's threads.
//!
//! Accuracy (checked against f64 in the tests): [`gelu_erf`] is within 2e-7 of `x * Φ(x)`
//! relative to `max(|x|, 1)`. The error function comes from the complementary one,
//! `erfc(z) = t exp(-z² + P(t))` with `t = 1 / (1 + z / 2)` (the Chebyshev fit of Numerical
//! Recipes' `erfcc`, fractional error below 1.2e-7), and `exp` from a range reduction to
//! `|r| <= ln 2 / 2` and a degree-7 Taylor polynomial. Results do not depend on the CPU:
//! the vector and scalar paths run the same IEEE operations (no fused multiply-add).

use rayon::prelude::*;

/// Elements per rayon task: large enough to amortise a task, small enough to keep both
/// threads busy on SAM's smaller maps.
const CHUNK: usize = 1 << 14;

/// `e^x` with relative error below 2e-7 where the result is a normal f32; 0 below that range
/// (`x < -87`, where the true value is below 1.7e-38) and `e^88` above it.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let underflows = x < -87.0;
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact for |n| < 2^8.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n, built in the exponent field (n is in -126..=127 after the clamp). `n` is read from
    // the low mantissa bits of `shifted` rather than by `n as i32`, whose saturating
    // conversion LLVM does not vectorise.
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    if underflows { 0.0 } else { p * scale }
}

/// `Φ(x)`, the standard normal CDF, as `erfc(|x| / √2) / 2` reflected for `x >= 0`.
#[inline(always)]
fn normal_cdf(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let tail = 0.5 * t * exp(-z * z + poly);
    if x >= 0.0 { 1.0 - tail } else { tail }
}

/// `x * Φ(x)` for one element (the exact GELU, PyTorch's `approximate='none'`).
#[inline(always)]
pub fn gelu_erf_scalar(x: f32) -> f32 {
    x * normal_cdf(x)
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[inline(always)]
fn map_slice(values: &mut [f32], f: impl Fn(f32) -> f32) {
    for v in values {
        *v = f(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn map_slice_avx2(values: &mut [f32], f: impl Fn(f32) -> f32) {
    map_slice(values, f);
}

/// `f` of every element, in place: chunks on rayon's threads, each compiled for AVX2 where the
/// CPU has it (the same IEEE operations as the portable loop, so the same bits).
fn map_in_place(values: &mut [f32], f: impl Fn(f32) -> f32 + Copy + Sync) {
    let avx2 = has_avx2();
    values.par_chunks_mut(CHUNK).for_each(|chunk| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { map_slice_avx2(chunk, f) };
            return;
        }
        let _ = avx2;
        map_slice(chunk, f);
    });
}

/// The exact GELU of every element, in place.
pub fn gelu_erf(values: &mut [f32]) {
    map_in_place(values, gelu_erf_scalar);
}

/// `x * sigmoid(1.702 x)` for one element (OpenAI CLIP's QuickGELU), as `x / (1 + e^(-1.702 x))`
/// with [`exp`]; below `x = -51.7`, where [`exp`] saturates at `e^88`, the result is `x / e^88`
/// (below 1e-30 in magnitude for any finite f32; the true value is smaller still).
#[inline(always)]
pub fn quick_gelu_scalar(x: f32) -> f32 {
    x / (1.0 + exp(-1.702 * x))
}

/// [`quick_gelu_scalar`] of every element, in place, on rayon's threads.
pub fn quick_gelu(values: &mut [f32]) {
    map_in_place(values, quick_gelu_scalar);
}

/// Independent partial results per reduction: one AVX2 vector. A single running max or sum
/// is a serial dependency LLVM may not reorder (f32 addition is not associative), so the
/// reductions keep one partial per lane and combine them at the end.
const LANES: usize = 8;

#[inline(always)]
fn lane_reduce(row: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut partial = [init; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (p, &x) in partial.iter_mut().zip(chunk) {
            *p = op(*p, x);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |acc, &x| op(acc, x));
    partial.iter().fold(tail, |acc, &p| op(acc, p))
}

#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    // `x > m` rather than `f32::max`, whose NaN rule does not map onto one vector instruction.
    let max = lane_reduce(row, f32::NEG_INFINITY, |m, x| if x > m { x } else { m });
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    let sum = lane_reduce(row, 0.0, |acc, x| acc + x);
    for x in row.iter_mut() {
        *x /= sum;
    }
}

#[inline(always)]
fn softmax_rows(rows: &mut [f32], row_len: usize) {
    for row in rows.chunks_exact_mut(row_len) {
        softmax_row(row);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_rows_avx2(rows: &mut [f32], row_len: usize) {
    softmax_rows(rows, row_len);
}

/// Softmax of every row of a row-major `[rows, row_len]` array, in place: `exp(x - max) / sum`
/// per row (burn's and PyTorch's formulation). A row whose entries are all equal, such as one
/// fully masked with the same large negative number, becomes uniform.
///
/// # Panics
/// If `row_len` is 0 or does not divide `values.len()`.
pub fn softmax_last(values: &mut [f32], row_len: usize) {
    assert!(
        row_len > 0 && values.len().is_multiple_of(row_len),
        "softmax_last: {} values are not rows of {row_len}",
        values.len()
    );
    let avx2 = has_avx2();
    let rows_per_task = (CHUNK / row_len).max(1);
    values
        .par_chunks_mut(rows_per_task * row_len)
        .for_each(|rows| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 (checked above).
                unsafe { softmax_rows_avx2(rows, row_len) };
                return;
            }
            let _ = avx2;
            softmax_rows(rows, row_len);
        });
}

/// Layer norm over the channel axis of a row-major `[batch, channels, pixels]` array, for every
/// batch item and pixel: `(x - mean) / sqrt(var + eps) * weight[c] + bias[c]` with the biased
/// variance of the centred values (SAM's `LayerNorm2d`), written to a new array.
///
/// # Panics
/// If `input.len() != batch * channels * pixels` or `weight`/`bias` are not `channels` long.
pub fn layer_norm_channels(
    input: &[f32],
    batch: usize,
    channels: usize,
    pixels: usize,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) -> Vec<f32> {
    assert_eq!(
        input.len(),
        batch * channels * pixels,
        "layer_norm_channels: input length"
    );
    assert_eq!(weight.len(), channels, "layer_norm_channels: weight length");
    assert_eq!(bias.len(), channels, "layer_norm_channels: bias length");
    let mut out = vec![0.0f32; input.len()];
    if input.is_empty() {
        return out;
    }
    // Pass 1, over runs of pixels: each pixel's mean and standard deviation across the
    // channel planes (reading a run of every plane, so the inner loops are contiguous), written
    // straight into the per-pixel arrays.
    let span = (CHUNK / channels.max(1)).clamp(64, pixels.max(64));
    let mut mean = vec![0.0f32; batch * pixels];
    let mut std = vec![0.0f32; batch * pixels];
    mean.par_chunks_mut(pixels)
        .zip(std.par_chunks_mut(pixels))
        .enumerate()
        .for_each(|(b, (mean, std))| {
            mean.par_chunks_mut(span)
                .zip(std.par_chunks_mut(span))
                .enumerate()
                .for_each(|(run, (mean, std))| {
                    let (p0, len) = (run * span, mean.len());
                    let plane = |c: usize| {
                        let start = (b * channels + c) * pixels + p0;
                        &input[start..start + len]
                    };
                    column_moments(plane, channels, eps, mean, std);
                });
        });
    // Pass 2, over output planes: normalise, scale and shift.
    out.par_chunks_mut(pixels)
        .zip(input.par_chunks(pixels))
        .enumerate()
        .for_each(|(plane, (out, x))| {
            let (b, c) = (plane / channels, plane % channels);
            let (w, shift) = (weight[c], bias[c]);
            let mean = &mean[b * pixels..][..pixels];
            let std = &std[b * pixels..][..pixels];
            for (((o, &x), &m), &s) in out.iter_mut().zip(x).zip(mean).zip(std) {
                // The reference divides by the standard deviation; so does this.
                *o = (x - m) / s * w + shift;
            }
        });
    out
}

/// `Σ f(x)` over a row with one partial sum per vector lane (see [`LANES`]).
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut partial = [0.0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (p, &x) in partial.iter_mut().zip(chunk) {
            *p += f(x);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    partial.iter().fold(tail, |acc, &p| acc + p)
}

/// A row's mean and `1 / sqrt(var + eps)`, with the biased variance of the centred values (two
/// passes, as the reference's `(x - u).pow(2).mean()`). The mean is summed relative to the first
/// value, so that a large common offset (activations of a residual stream) does not eat the
/// digits of the spread.
#[inline(always)]
fn row_moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let shift = row[0];
    let mean = shift + lane_sum(row, |x| x - shift) / n;
    let var = lane_sum(row, |x| (x - mean) * (x - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

#[inline(always)]
fn layer_norm_rows_in(input: &[f32], out: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let row_len = gamma.len();
    for (x, out) in input
        .chunks_exact(row_len)
        .zip(out.chunks_exact_mut(row_len))
    {
        let (mean, rstd) = row_moments(x, eps);
        for (((o, &x), &g), &b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
            *o = (x - mean) * rstd * g + b;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn layer_norm_rows_avx2(
    input: &[f32],
    out: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    layer_norm_rows_in(input, out, gamma, beta, eps);
}

/// Layer norm over the last axis of a row-major `[rows, row_len]` array (`row_len =
/// gamma.len()`): `(x - mean) * rstd * gamma + beta` per row, `rstd = 1 / sqrt(var + eps)` with
/// the biased variance (PyTorch's `F.layer_norm`), written to a new array. Rows are split over
/// rayon's threads.
///
/// # Panics
/// If `gamma` is empty, `beta` is not as long, or `gamma.len()` does not divide `input.len()`.
pub fn layer_norm_last(input: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let row_len = gamma.len();
    check_rows("layer_norm_last", input.len(), row_len);
    assert_eq!(beta.len(), row_len, "layer_norm_last: beta length");
    let mut out = vec![0.0f32; input.len()];
    let avx2 = has_avx2();
    let task = (CHUNK / row_len).max(1) * row_len;
    out.par_chunks_mut(task)
        .zip(input.par_chunks(task))
        .for_each(|(out, x)| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 (checked above).
                unsafe { layer_norm_rows_avx2(x, out, gamma, beta, eps) };
                return;
            }
            let _ = avx2;
            layer_norm_rows_in(x, out, gamma, beta, eps);
        });
    out
}

/// The gradients of [`layer_norm_last`] for the loss gradient `grad` of its output.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormGrads {
    /// d loss / d input, the input's shape.
    pub input: Vec<f32>,
    /// d loss / d gamma, `row_len` long.
    pub gamma: Vec<f32>,
    /// d loss / d beta, `row_len` long.
    pub beta: Vec<f32>,
}

/// One block of rows of [`layer_norm_last_backward`]: writes `d_input` and returns this block's
/// `(d_gamma, d_beta)` sums, laid out as `[d_gamma.., d_beta..]`.
#[inline(always)]
fn layer_norm_backward_rows_in(
    input: &[f32],
    grad: &[f32],
    d_input: &mut [f32],
    gamma: &[f32],
    eps: f32,
) -> Vec<f32> {
    let row_len = gamma.len();
    let inv_n = 1.0 / row_len as f32;
    let mut sums = vec![0.0f32; 2 * row_len];
    let (d_gamma, d_beta) = sums.split_at_mut(row_len);
    let rows = input
        .chunks_exact(row_len)
        .zip(grad.chunks_exact(row_len))
        .zip(d_input.chunks_exact_mut(row_len));
    for ((x, g), dx) in rows {
        let (mean, rstd) = row_moments(x, eps);
        // With x̂ = (x - mean) * rstd and gγ = g * gamma:
        // dx = rstd * (gγ - mean(gγ) - x̂ * mean(gγ * x̂)).
        // Both sums with one partial per lane (see [`LANES`]).
        let mut gg_sum = [0.0f32; LANES];
        let mut ggx_sum = [0.0f32; LANES];
        let (mut xs, mut gs, mut ws) = (
            x.chunks_exact(LANES),
            g.chunks_exact(LANES),
            gamma.chunks_exact(LANES),
        );
        for ((x, g), w) in (&mut xs).zip(&mut gs).zip(&mut ws) {
            for lane in 0..LANES {
                let gg = g[lane] * w[lane];
                gg_sum[lane] += gg;
                ggx_sum[lane] += gg * (x[lane] - mean);
            }
        }
        let tail = xs
            .remainder()
            .iter()
            .zip(gs.remainder())
            .zip(ws.remainder());
        let (mut gg_tail, mut ggx_tail) = (0.0f32, 0.0f32);
        for ((&x, &g), &w) in tail {
            gg_tail += g * w;
            ggx_tail += g * w * (x - mean);
        }
        let gg_mean = gg_sum.iter().fold(gg_tail, |acc, &p| acc + p) * inv_n;
        let ggx_mean = ggx_sum.iter().fold(ggx_tail, |acc, &p| acc + p) * rstd * inv_n;
        let per_column = dx.iter_mut().zip(x).zip(g).zip(gamma);
        for ((((dx, &x), &g), &w), (dw, db)) in per_column.zip(d_gamma.iter_mut().zip(&mut *d_beta))
        {
            let x_hat = (x - mean) * rstd;
            *dx = rstd * (g * w - gg_mean - x_hat * ggx_mean);
            *dw += g * x_hat;
            *db += g;
        }
    }
    sums
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn layer_norm_backward_rows_avx2(
    input: &[f32],
    grad: &[f32],
    d_input: &mut [f32],
    gamma: &[f32],
    eps: f32,
) -> Vec<f32> {
    layer_norm_backward_rows_in(input, grad, d_input, gamma, eps)
}

/// The backward pass of [`layer_norm_last`] in one kernel: the input gradient of every row, and
/// the gamma and beta gradients summed over the rows. The row moments are recomputed from
/// `input` (one pass) rather than saved. Rows are split over rayon's threads in fixed blocks
/// whose partial sums are added in block order, so the result does not depend on the thread
/// count or scheduling.
///
/// # Panics
/// If `gamma` is empty, `grad` is not as long as `input`, or `gamma.len()` does not divide
/// `input.len()`.
pub fn layer_norm_last_backward(
    input: &[f32],
    grad: &[f32],
    gamma: &[f32],
    eps: f32,
) -> LayerNormGrads {
    let row_len = gamma.len();
    check_rows("layer_norm_last_backward", input.len(), row_len);
    assert_eq!(
        grad.len(),
        input.len(),
        "layer_norm_last_backward: grad length"
    );
    let mut d_input = vec![0.0f32; input.len()];
    let avx2 = has_avx2();
    let task = (CHUNK / row_len).max(1) * row_len;
    let block_sums: Vec<Vec<f32>> = d_input
        .par_chunks_mut(task)
        .zip(input.par_chunks(task).zip(grad.par_chunks(task)))
        .map(|(dx, (x, g))| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 (checked above).
                return unsafe { layer_norm_backward_rows_avx2(x, g, dx, gamma, eps) };
            }
            let _ = avx2;
            layer_norm_backward_rows_in(x, g, dx, gamma, eps)
        })
        .collect();
    let mut sums = vec![0.0f32; 2 * row_len];
    for block in &block_sums {
        for (s, &b) in sums.iter_mut().zip(block) {
            *s += b;
        }
    }
    let d_beta = sums.split_off(row_len);
    LayerNormGrads {
        input: d_input,
        gamma: sums,
        beta: d_beta,
    }
}

fn check_rows(kernel: &str, len: usize, row_len: usize) {
    assert!(
        row_len > 0 && len.is_multiple_of(row_len),
        "{kernel}: {len} values are not rows of {row_len}"
    );
}

/// `[batch, rows, cols]` -> `[batch, cols, rows]` (row-major in and out): the copy behind a
/// transposed view made contiguous, split over rayon's threads by blocks of output rows and
/// walked in square tiles.
///
/// # Panics
/// If `input.len() != batch * rows * cols`.
pub fn transpose(input: &[f32], batch: usize, rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(input.len(), batch * rows * cols, "transpose: input length");
    const TILE: usize = 32;
    let mut out = vec![0.0f32; input.len()];
    if input.is_empty() {
        return out;
    }
    out.par_chunks_mut(rows * cols)
        .zip(input.par_chunks(rows * cols))
        .for_each(|(out, input)| {
            // One task: TILE output rows (input columns c0..c0 + TILE), all input rows.
            out.par_chunks_mut(rows * TILE)
                .enumerate()
                .for_each(|(task, out)| {
                    let (c0, width) = (task * TILE, out.len() / rows);
                    // Transposed in a small buffer, then written a run of whole cache lines per
                    // output row: scattered single writes to rows 4096 floats apart (SAM's
                    // 64x64 maps) all fall in one cache set and evict each other.
                    let mut tile = [0.0f32; TILE * TILE];
                    for r0 in (0..rows).step_by(TILE) {
                        let height = TILE.min(rows - r0);
                        for r in 0..height {
                            let row = &input[(r0 + r) * cols + c0..][..width];
                            for (c, &x) in row.iter().enumerate() {
                                tile[c * TILE + r] = x;
                            }
                        }
                        for c in 0..width {
                            out[c * rows + r0..][..height]
                                .copy_from_slice(&tile[c * TILE..][..height]);
                        }
                    }
                });
        });
    out
}

/// Per column across `channels` planes, into the zeroed `mean` and `std` (one entry per column):
/// the mean and `sqrt(var + eps)`, with the biased variance of the centred values (two passes,
/// as the reference's `(x - u).pow(2).mean()`).
#[inline(always)]
fn column_moments<'a>(
    plane: impl Fn(usize) -> &'a [f32],
    channels: usize,
    eps: f32,
    mean: &mut [f32],
    std: &mut [f32],
) {
    let inv_channels = 1.0 / channels as f32;
    for c in 0..channels {
        for (m, &x) in mean.iter_mut().zip(plane(c)) {
            *m += x;
        }
    }
    mean.iter_mut().for_each(|m| *m *= inv_channels);
    // The centred sum of squares accumulates in `std`, then becomes `sqrt(var + eps)`.
    for c in 0..channels {
        for ((v, &x), &m) in std.iter_mut().zip(plane(c)).zip(&*mean) {
            let d = x - m;
            *v += d * d;
        }
    }
    std.iter_mut()
        .for_each(|v| *v = (*v * inv_channels + eps).sqrt());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 (Abramowitz-Stegun 7.1.26 is too coarse; this is the series / continued
    /// fraction pair, accurate to ~1e-15 over the tested range).
    fn erf64(x: f64) -> f64 {
        if x.abs() < 2.5 {
            // Maclaurin series.
            let mut term = x;
            let mut sum = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // Continued fraction for erfc, evaluated backwards.
            let z = x.abs();
            let mut f = 0.0;
            for k in (1..200).rev() {
                f = (k as f64 / 2.0) / (z + f);
            }
            let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f);
            (1.0 - erfc).copysign(x)
        }
    }

    fn gelu64(x: f64) -> f64 {
        0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2))
    }

    #[test]
    fn exp_is_accurate_over_the_normal_range() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f64 / 200_000.0;
            let got = f64::from(exp(x as f32));
            let want = (x as f32 as f64).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 2e-7, "exp relative error {worst:e}");
    }

    #[test]
    fn gelu_matches_f64_and_is_the_same_on_every_path() {
        let xs: Vec<f32> = (0..=400_000)
            .map(|i| -12.0 + 24.0 * i as f32 / 400_000.0)
            .chain([0.0, -0.0, 1e-30, -1e-30, 40.0, -40.0, 1e6, -1e6])
            .collect();
        let mut vectorised = xs.clone();
        gelu_erf(&mut vectorised);
        let mut worst = 0.0f64;
        for (&x, &y) in xs.iter().zip(&vectorised) {
            assert_eq!(y.to_bits(), gelu_erf_scalar(x).to_bits(), "x = {x}");
            let want = gelu64(f64::from(x));
            let err = (f64::from(y) - want).abs() / f64::from(x).abs().max(1.0);
            worst = worst.max(err);
        }
        assert!(worst < 2e-7, "gelu error {worst:e}");
        // Saturation: GELU(x) = x for large x and (about) 0 for very negative x.
        assert_eq!(gelu_erf_scalar(40.0), 40.0);
        assert_eq!(gelu_erf_scalar(-40.0), 0.0);
    }

    #[test]
    fn softmax_matches_f64_and_masked_entries_are_zero() {
        let row_len = 37;
        let mut values: Vec<f32> = (0..row_len * 50)
            .map(|i| ((i * 7919) % 1009) as f32 / 40.0 - 12.0)
            .collect();
        // A row with blocked entries (finfo-min, as the LLaMA mask) and a fully blocked one.
        for v in &mut values[row_len..row_len + 10] {
            *v = f32::MIN;
        }
        for v in &mut values[2 * row_len..3 * row_len] {
            *v = f32::MIN;
        }
        let input = values.clone();
        softmax_last(&mut values, row_len);
        for (row_in, row_out) in input.chunks(row_len).zip(values.chunks(row_len)) {
            let max = row_in
                .iter()
                .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
            let exps: Vec<f64> = row_in.iter().map(|&x| (f64::from(x) - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            for (&got, e) in row_out.iter().zip(&exps) {
                let want = e / sum;
                assert!(
                    (f64::from(got) - want).abs() <= 1e-6 * want.max(1e-3),
                    "{got} vs {want}"
                );
                if want == 0.0 {
                    assert_eq!(got, 0.0);
                }
            }
        }
        assert!(
            values[2 * row_len..3 * row_len]
                .iter()
                .all(|&p| p == 1.0 / row_len as f32)
        );
    }

    #[test]
    fn nan_and_infinity_propagate() {
        assert!(gelu_erf_scalar(f32::NAN).is_nan());
        assert_eq!(gelu_erf_scalar(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn layer_norm_channels_matches_a_direct_f64_computation() {
        let (batch, channels, pixels) = (3, 7, 1000);
        let input: Vec<f32> = (0..batch * channels * pixels)
            .map(|i| ((i * 7919 % 1013) as f32 / 101.3 - 5.0) * if i % 3 == 0 { 3.0 } else { 1.0 })
            .collect();
        let weight: Vec<f32> = (0..channels).map(|c| 0.5 + c as f32 * 0.25).collect();
        let bias: Vec<f32> = (0..channels).map(|c| c as f32 * -0.1).collect();
        let out = layer_norm_channels(&input, batch, channels, pixels, &weight, &bias, 1e-6);
        for b in 0..batch {
            for p in 0..pixels {
                let at = |c: usize| (b * channels + c) * pixels + p;
                let xs: Vec<f64> = (0..channels).map(|c| f64::from(input[at(c)])).collect();
                let mean = xs.iter().sum::<f64>() / channels as f64;
                let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / channels as f64;
                for c in 0..channels {
                    let want = (xs[c] - mean) / (var + 1e-6).sqrt() * f64::from(weight[c])
                        + f64::from(bias[c]);
                    let got = f64::from(out[at(c)]);
                    assert!(
                        (got - want).abs() < 2e-6,
                        "b {b} p {p} c {c}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// Rows of a `[rows, row_len]` array with offsets and spreads that differ by row, so that
    /// a wrong mean or variance shows.
    fn layer_norm_case(rows: usize, row_len: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let input = (0..rows * row_len)
            .map(|i| {
                let row = (i / row_len) as f32;
                ((i * 7919 % 1013) as f32 / 101.3 - 5.0) * (0.1 + row * 0.3) + row
            })
            .collect();
        let gamma = (0..row_len).map(|c| 0.5 + c as f32 * 0.01).collect();
        let beta = (0..row_len).map(|c| c as f32 * -0.02).collect();
        (input, gamma, beta)
    }

    /// One row's `(x - mean) / sqrt(var + eps)` in f64.
    fn normalised64(row: &[f32], eps: f64) -> Vec<f64> {
        let n = row.len() as f64;
        let mean = row.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = row
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        row.iter()
            .map(|&x| (f64::from(x) - mean) / (var + eps).sqrt())
            .collect()
    }

    #[test]
    fn layer_norm_last_matches_a_direct_f64_computation() {
        // 77 columns: vector lanes plus a tail; 700 rows: several rayon tasks.
        let (rows, row_len) = (700, 77);
        let (input, gamma, beta) = layer_norm_case(rows, row_len);
        let out = layer_norm_last(&input, &gamma, &beta, 1e-5);
        for (x, y) in input.chunks(row_len).zip(out.chunks(row_len)) {
            for (c, x_hat) in normalised64(x, 1e-5).into_iter().enumerate() {
                let want = x_hat * f64::from(gamma[c]) + f64::from(beta[c]);
                assert!((f64::from(y[c]) - want).abs() < 2e-6, "{} vs {want}", y[c]);
            }
        }
    }

    #[test]
    fn layer_norm_last_backward_matches_a_direct_f64_computation() {
        let (rows, row_len) = (700, 77);
        let (input, gamma, _) = layer_norm_case(rows, row_len);
        let grad: Vec<f32> = (0..rows * row_len)
            .map(|i| (i * 104_729 % 997) as f32 / 498.5 - 1.0)
            .collect();
        let got = layer_norm_last_backward(&input, &grad, &gamma, 1e-5);
        let mut d_gamma = vec![0.0f64; row_len];
        let mut d_beta = vec![0.0f64; row_len];
        for (r, (x, g)) in input.chunks(row_len).zip(grad.chunks(row_len)).enumerate() {
            let x_hat = normalised64(x, 1e-5);
            let n = row_len as f64;
            let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = x
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let rstd = 1.0 / (var + 1e-5).sqrt();
            let gg: Vec<f64> = (0..row_len)
                .map(|c| f64::from(g[c]) * f64::from(gamma[c]))
                .collect();
            let gg_mean = gg.iter().sum::<f64>() / n;
            let ggx_mean = gg.iter().zip(&x_hat).map(|(a, b)| a * b).sum::<f64>() / n;
            for c in 0..row_len {
                let want = rstd * (gg[c] - gg_mean - x_hat[c] * ggx_mean);
                let got = f64::from(got.input[r * row_len + c]);
                // Relative to the row's scale of the gradient (rstd * max |g * gamma|).
                assert!(
                    (got - want).abs() <= 1e-5 * rstd.max(1.0),
                    "row {r} col {c}: {got} vs {want}"
                );
                d_gamma[c] += f64::from(g[c]) * x_hat[c];
                d_beta[c] += f64::from(g[c]);
            }
        }
        for c in 0..row_len {
            assert!(
                (f64::from(got.gamma[c]) - d_gamma[c]).abs() < 1e-3,
                "d_gamma {c}"
            );
            assert!(
                (f64::from(got.beta[c]) - d_beta[c]).abs() < 1e-3,
                "d_beta {c}"
            );
        }
        // The same bits again: block sums are added in a fixed order.
        assert_eq!(layer_norm_last_backward(&input, &grad, &gamma, 1e-5), got);
    }

    #[test]
    fn transpose_moves_every_value() {
        // Sizes that are not multiples of the tile.
        let (batch, rows, cols) = (3, 45, 70);
        let input: Vec<f32> = (0..batch * rows * cols).map(|i| i as f32).collect();
        let out = transpose(&input, batch, rows, cols);
        for b in 0..batch {
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        out[(b * cols + c) * rows + r],
                        input[(b * rows + r) * cols + c]
                    );
                }
            }
        }
    }

    #[test]
    fn quick_gelu_matches_f64_and_is_the_same_on_every_path() {
        let xs: Vec<f32> = (0..=200_000)
            .map(|i| -60.0 + 120.0 * i as f32 / 200_000.0)
            .chain([0.0, -0.0, 1e6, -1e6])
            .collect();
        let mut vectorised = xs.clone();
        quick_gelu(&mut vectorised);
        let mut worst = 0.0f64;
        for (&x, &y) in xs.iter().zip(&vectorised) {
            assert_eq!(y.to_bits(), quick_gelu_scalar(x).to_bits(), "x = {x}");
            let x64 = f64::from(x);
            let want = x64 / (1.0 + (-1.702 * x64).exp());
            worst = worst.max((f64::from(y) - want).abs() / x64.abs().max(1.0));
        }
        assert!(worst < 5e-7, "quick_gelu error {worst:e}");
        assert_eq!(quick_gelu_scalar(1e6), 1e6);
        assert!(quick_gelu_scalar(-1e6).abs() < 1e-30);
    }
}
