//! Vectorised f32 element-wise kernels for the CPU backend: the exact (erf) GELU, a row softmax
//! (in inference and, through `legion-model`'s backend extension, in training) and a
//! channel-axis layer norm.
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

#[inline(always)]
fn gelu_slice(values: &mut [f32]) {
    for v in values {
        *v = gelu_erf_scalar(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_slice_avx2(values: &mut [f32]) {
    gelu_slice(values);
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

/// The exact GELU of every element, in place.
pub fn gelu_erf(values: &mut [f32]) {
    let avx2 = has_avx2();
    values.par_chunks_mut(CHUNK).for_each(|chunk| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { gelu_slice_avx2(chunk) };
            return;
        }
        let _ = avx2;
        gelu_slice(chunk);
    });
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
}
