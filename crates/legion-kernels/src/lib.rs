//! CPU kernels that burn's CPU backend (burn-flex 0.22) lacks, on plain slices so that they are
//! tested and benchmarked without tensors; `legion-model` calls them from its layers. This file
//! is the bf16 matrix product; [`elementwise`] holds vectorised f32 GELU, softmax and layer norm.
//!
//! burn-flex multiplies bf16 matrices by converting both operands to f32 and back on every
//! call (`burn-flex/src/ops/matmul.rs`): for a 7B LLM that is a whole-weight f32 allocation per
//! projection (180 MB for a `4096 x 11008` MLP weight), and its gemm runs on one thread in this
//! workspace. [`matmul`] multiplies bf16 inputs by bf16 weights in place: it packs the weight,
//! 64 output columns and up to 1,024 inputs at a time, into pairs of bf16 along the reduction
//! axis, and multiplies them with AVX-512 BF16's `vdpbf16ps` (two bf16 products summed into f32
//! per lane) where the CPU has it, or a portable kernel that widens in registers otherwise;
//! one input row (a decode step) streams the weight once in memory order instead. Work is
//! split over rayon's pool. Products of bf16 values are exact in f32 and sums accumulate in
//! f32; the bias is added in f32 and the result rounded once to bf16 (round to nearest even),
//! as PyTorch's CPU bf16 `addmm` does.
//!
//! The crate is built at `opt-level = 3` in every profile (see the workspace `Cargo.toml`):
//! the micro-kernels are 3x slower at the workspace's default `opt-level = 1`.
//!
//! What burn would need upstream for this to go: a bf16 gemm in burn-flex (gemm 0.19 has f16
//! but no bf16 kernels), or a matmul that widens tiles rather than whole operands.

pub mod elementwise;

use rayon::prelude::*;

/// Output columns per packed panel: four 16-lane f32 vectors.
const N_BLOCK: usize = 64;
/// Reduction length per packed panel (even, so that only the last panel can have an odd tail):
/// `1024 / 2 * 64 * 4` bytes = 128 KiB, which stays in L2 while the rows of the input stream.
const K_BLOCK: usize = 1024;
/// Input rows per micro-kernel call (6 rows x 4 vectors = 24 accumulators).
const M_BLOCK: usize = 6;

/// `value` rounded to the nearest bf16 (ties to even), as its bit pattern; NaN stays NaN.
pub fn round_to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        // Keep sign and payload's top bits, force a quiet NaN.
        return ((bits >> 16) | 0x40) as u16;
    }
    let lsb = (bits >> 16) & 1;
    (bits.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// How the weight's elements lie in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightOrder {
    /// Row-major `[k, n]` (burn's `Linear` weight `[d_input, d_output]`).
    KByN,
    /// Row-major `[n, k]` (PyTorch's `nn.Linear` weight `[out, in]`).
    NByK,
}

/// A bf16 weight of `k` inputs and `n` outputs, as bit patterns.
#[derive(Debug, Clone, Copy)]
pub struct WeightView<'a> {
    /// At least `k * n` elements, in `order`.
    pub data: &'a [u16],
    /// Inputs (the reduction length).
    pub k: usize,
    /// Outputs.
    pub n: usize,
    /// Memory order of `data`.
    pub order: WeightOrder,
}

/// The micro-kernel a multiplication runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust: widens both operands to f32 in registers.
    Portable,
    /// AVX-512 BF16 `vdpbf16ps` (Zen 4 and later, Intel Cooper Lake and Sapphire Rapids on).
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
        {
            return Self::Avx512Bf16;
        }
        Self::Portable
    }
}

/// `a @ w + bias` rounded to bf16, as bit patterns.
///
/// # Shapes
/// `a` `[m, w.k]` row-major, `bias` `[w.n]` -> `[m, w.n]` row-major.
///
/// # Panics
/// If `a` or `w.data` is shorter than its shape, `bias` is not `w.n` long, or `kernel` is not
/// supported by this CPU.
pub fn matmul(
    a: &[u16],
    m: usize,
    w: WeightView<'_>,
    bias: Option<&[f32]>,
    kernel: Kernel,
) -> Vec<u16> {
    let (k, n) = (w.k, w.n);
    assert!(a.len() >= m * k, "matmul: input shorter than [{m}, {k}]");
    assert!(
        w.data.len() >= k * n,
        "matmul: weight shorter than [{k}, {n}]"
    );
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "matmul: bias length");
    }
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512Bf16 {
        assert!(
            Kernel::detect() == Kernel::Avx512Bf16,
            "matmul: this CPU has no AVX-512 BF16"
        );
    }
    let round = |sum: f32, col: usize| round_to_bf16(sum + bias.map_or(0.0, |b| b[col]));
    if m == 1 {
        // One row (a decode step): reading the weight is the whole cost, so it is streamed
        // once in memory order instead of being packed.
        let sums = match w.order {
            WeightOrder::KByN => gemv_k_by_n(&a[..k], &w, kernel),
            WeightOrder::NByK => gemv_n_by_k(&a[..k], &w, kernel),
        };
        return sums
            .into_iter()
            .enumerate()
            .map(|(col, sum)| round(sum, col))
            .collect();
    }
    let blocks: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(N_BLOCK))
        .into_par_iter()
        .map(|block| {
            let n0 = block * N_BLOCK;
            (n0, column_block(a, m, &w, n0, kernel))
        })
        .collect();
    let mut out = vec![0u16; m * n];
    for (n0, tile) in blocks {
        let width = N_BLOCK.min(n - n0);
        for row in 0..m {
            let dst = &mut out[row * n + n0..row * n + n0 + width];
            let src = &tile[row * N_BLOCK..row * N_BLOCK + width];
            for (col, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
                *d = round(s, n0 + col);
            }
        }
    }
    out
}

/// Weight rows per task of [`gemv_k_by_n`]: 4 MiB of an 11008-wide bf16 weight, enough to
/// amortise a task's partial sums, few enough that every thread gets several tasks.
const GEMV_ROWS: usize = 192;

/// `a @ w` for one input row and a `[k, n]` weight: tasks take contiguous runs of weight rows
/// (so that each streams its part of the weight in memory order) and sum into their own
/// `[n]` partials, which are then added.
fn gemv_k_by_n(a: &[u16], w: &WeightView<'_>, kernel: Kernel) -> Vec<f32> {
    let (k, n) = (w.k, w.n);
    (0..k.div_ceil(GEMV_ROWS))
        .into_par_iter()
        .map(|task| {
            let rows = task * GEMV_ROWS..k.min((task + 1) * GEMV_ROWS);
            let mut partial = vec![0f32; n];
            for i in rows {
                let scale = widen(u32::from(a[i]));
                let row = &w.data[i * n..(i + 1) * n];
                match kernel {
                    Kernel::Portable => {
                        for (y, &b) in partial.iter_mut().zip(row) {
                            *y += scale * widen(u32::from(b));
                        }
                    }
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `matmul` checked that the CPU has AVX-512F; `row` and
                    // `partial` are both `n` long.
                    Kernel::Avx512Bf16 => unsafe { avx512::axpy(scale, row, &mut partial) },
                }
            }
            partial
        })
        .reduce_with(|mut sum, partial| {
            sum.iter_mut().zip(&partial).for_each(|(s, p)| *s += p);
            sum
        })
        .unwrap_or_else(|| vec![0.0; n])
}

/// `a @ w` for one input row and an `[n, k]` weight: every output is a dot product of two
/// contiguous bf16 runs, tasks take contiguous runs of outputs.
fn gemv_n_by_k(a: &[u16], w: &WeightView<'_>, kernel: Kernel) -> Vec<f32> {
    let k = w.k;
    let mut out = vec![0f32; w.n];
    out.par_chunks_mut(N_BLOCK)
        .enumerate()
        .for_each(|(block, out)| {
            for (j, y) in out.iter_mut().enumerate() {
                let col = block * N_BLOCK + j;
                let row = &w.data[col * k..(col + 1) * k];
                *y = match kernel {
                    Kernel::Portable => a
                        .iter()
                        .zip(row)
                        .map(|(&x, &b)| widen(u32::from(x)) * widen(u32::from(b)))
                        .sum(),
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `matmul` checked the CPU; `a` and `row` are both `k` long.
                    Kernel::Avx512Bf16 => unsafe { avx512::dot(a, row) },
                };
            }
        });
    out
}

/// The f32 sums of output columns `n0..n0 + 64` (zero beyond `n`) for every row, `[m, 64]`.
fn column_block(a: &[u16], m: usize, w: &WeightView<'_>, n0: usize, kernel: Kernel) -> Vec<f32> {
    let k = w.k;
    let mut acc = vec![0f32; m * N_BLOCK];
    let mut panel = vec![0u32; K_BLOCK / 2 * N_BLOCK];
    for k0 in (0..k).step_by(K_BLOCK) {
        let depth = K_BLOCK.min(k - k0);
        let pairs = depth.div_ceil(2);
        pack(w, k0, depth, n0, &mut panel[..pairs * N_BLOCK]);
        for m0 in (0..m).step_by(M_BLOCK) {
            let rows = M_BLOCK.min(m - m0);
            // Rows past `m` repeat the last one; the kernel reads only the first `rows`.
            let a_rows: [&[u16]; M_BLOCK] = std::array::from_fn(|r| {
                let row = (m0 + r).min(m - 1);
                &a[row * k + k0..row * k + k0 + depth]
            });
            let c = &mut acc[m0 * N_BLOCK..(m0 + rows) * N_BLOCK];
            micro(kernel, rows, &a_rows, &panel[..pairs * N_BLOCK], c);
        }
    }
    acc
}

/// Packs `w[k0..k0 + depth, n0..n0 + 64]` as `[depth / 2 (rounded up), 64]` pairs: the low
/// half of each `u32` is the even input's value, the high half the odd one's (zero past `depth`
/// or past `n`), which is the operand layout of `vdpbf16ps`.
fn pack(w: &WeightView<'_>, k0: usize, depth: usize, n0: usize, panel: &mut [u32]) {
    let width = N_BLOCK.min(w.n - n0);
    match w.order {
        WeightOrder::KByN => {
            for (p, dst) in panel.chunks_exact_mut(N_BLOCK).enumerate() {
                let even = k0 + 2 * p;
                let lo = &w.data[even * w.n + n0..even * w.n + n0 + width];
                if 2 * p + 1 < depth {
                    let hi = &w.data[(even + 1) * w.n + n0..(even + 1) * w.n + n0 + width];
                    for ((d, &l), &h) in dst.iter_mut().zip(lo).zip(hi) {
                        *d = u32::from(l) | (u32::from(h) << 16);
                    }
                } else {
                    for (d, &l) in dst.iter_mut().zip(lo) {
                        *d = u32::from(l);
                    }
                }
                dst[width..].fill(0);
            }
        }
        WeightOrder::NByK => {
            panel.fill(0);
            for col in 0..width {
                let row = &w.data[(n0 + col) * w.k + k0..(n0 + col) * w.k + k0 + depth];
                for (p, pair) in row.chunks(2).enumerate() {
                    let hi = pair.get(1).copied().unwrap_or(0);
                    panel[p * N_BLOCK + col] = u32::from(pair[0]) | (u32::from(hi) << 16);
                }
            }
        }
    }
}

/// `c[r, :] += sum over pairs p of a_rows[r][2p..2p + 2] . panel[p, :]` for `r < rows`.
fn micro(kernel: Kernel, rows: usize, a_rows: &[&[u16]; M_BLOCK], panel: &[u32], c: &mut [f32]) {
    match kernel {
        Kernel::Portable => micro_portable(rows, a_rows, panel, c),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul` checked that the CPU has AVX-512F and AVX-512 BF16.
        Kernel::Avx512Bf16 => unsafe {
            match rows {
                1 => avx512::micro::<1>(a_rows, panel, c),
                2 => avx512::micro::<2>(a_rows, panel, c),
                3 => avx512::micro::<3>(a_rows, panel, c),
                4 => avx512::micro::<4>(a_rows, panel, c),
                5 => avx512::micro::<5>(a_rows, panel, c),
                _ => avx512::micro::<6>(a_rows, panel, c),
            }
        },
    }
}

/// The input pair at `p` of `row` as `vdpbf16ps` reads it (zero past the end).
fn a_pair(row: &[u16], p: usize) -> u32 {
    let lo = u32::from(row[2 * p]);
    let hi = row.get(2 * p + 1).map_or(0, |&h| u32::from(h));
    lo | (hi << 16)
}

fn widen(bits: u32) -> f32 {
    f32::from_bits(bits << 16)
}

fn micro_portable(rows: usize, a_rows: &[&[u16]; M_BLOCK], panel: &[u32], c: &mut [f32]) {
    for (r, a_row) in a_rows.iter().enumerate().take(rows) {
        let c_row = &mut c[r * N_BLOCK..(r + 1) * N_BLOCK];
        for (p, pair) in panel.chunks_exact(N_BLOCK).enumerate() {
            let a = a_pair(a_row, p);
            let (a_lo, a_hi) = (widen(a & 0xffff), widen(a >> 16));
            for (acc, &b) in c_row.iter_mut().zip(pair) {
                *acc += a_lo * widen(b & 0xffff) + a_hi * widen(b >> 16);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{M_BLOCK, N_BLOCK, a_pair};

    /// `y += scale * x` with `x` in bf16.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `x.len() == y.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn axpy(scale: f32, x: &[u16], y: &mut [f32]) {
        assert_eq!(x.len(), y.len());
        let s = _mm512_set1_ps(scale);
        let body = x.len() / 16 * 16;
        for j in (0..body).step_by(16) {
            // SAFETY: j + 16 <= body <= len for both slices.
            unsafe {
                let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(x.as_ptr().add(j).cast()));
                let xv = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide));
                let yp = y.as_mut_ptr().add(j);
                _mm512_storeu_ps(yp, _mm512_fmadd_ps(s, xv, _mm512_loadu_ps(yp)));
            }
        }
        for j in body..x.len() {
            y[j] += scale * super::widen(u32::from(x[j]));
        }
    }

    /// The f32 dot product of two bf16 runs with `vdpbf16ps`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512 BF16; `a.len() == b.len()`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn dot(a: &[u16], b: &[u16]) -> f32 {
        assert_eq!(a.len(), b.len());
        let body = a.len() / 32 * 32;
        let mut acc = [_mm512_setzero_ps(); 2];
        for (step, i) in (0..body).step_by(32).enumerate() {
            // SAFETY: i + 32 <= body <= len for both slices.
            let (x, y): (__m512bh, __m512bh) = unsafe {
                (
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        a.as_ptr().add(i).cast(),
                    )),
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        b.as_ptr().add(i).cast(),
                    )),
                )
            };
            acc[step % 2] = _mm512_dpbf16_ps(acc[step % 2], x, y);
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
        for i in body..a.len() {
            sum += super::widen(u32::from(a[i])) * super::widen(u32::from(b[i]));
        }
        sum
    }

    /// [`super::micro`] for `R` rows with `vdpbf16ps`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512 BF16; `panel.len()` must be a multiple of 64,
    /// `c.len() >= R * 64`, and each of the first `R` rows of `a_rows` at least
    /// `2 * panel.len() / 64 - 1` long.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn micro<const R: usize>(
        a_rows: &[&[u16]; M_BLOCK],
        panel: &[u32],
        c: &mut [f32],
    ) {
        let pairs = panel.len() / N_BLOCK;
        assert!(c.len() >= R * N_BLOCK);
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for (r, row) in acc.iter_mut().enumerate() {
            for (v, lane) in row.iter_mut().enumerate() {
                // SAFETY: `c` holds R rows of 64 (asserted above).
                *lane = unsafe { _mm512_loadu_ps(c.as_ptr().add(r * N_BLOCK + 16 * v)) };
            }
        }
        // Pairs whose odd element lies inside every row: read as one u32.
        let full = a_rows[..R]
            .iter()
            .map(|row| row.len() / 2)
            .min()
            .unwrap_or(0)
            .min(pairs);
        let b_ptr = panel.as_ptr();
        for p in 0..full {
            // SAFETY: p < pairs, so the 64 u32 at p * 64 are inside `panel`.
            let b: [__m512bh; 4] = std::array::from_fn(|v| unsafe {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    b_ptr.add(p * N_BLOCK + 16 * v).cast(),
                ))
            });
            for r in 0..R {
                // SAFETY: 2p + 1 < row length (p < full).
                let pair = unsafe { a_rows[r].as_ptr().add(2 * p).cast::<i32>().read_unaligned() };
                let a: __m512bh =
                    unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair)) };
                for v in 0..4 {
                    acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, b[v]);
                }
            }
        }
        for p in full..pairs {
            let b: [__m512bh; 4] = std::array::from_fn(|v| unsafe {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    b_ptr.add(p * N_BLOCK + 16 * v).cast(),
                ))
            });
            for r in 0..R {
                let a: __m512bh = unsafe {
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                        a_pair(a_rows[r], p) as i32,
                    ))
                };
                for v in 0..4 {
                    acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, b[v]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, lane) in row.iter().enumerate() {
                // SAFETY: as the loads.
                unsafe { _mm512_storeu_ps(c.as_mut_ptr().add(r * N_BLOCK + 16 * v), *lane) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        let bf = |bits: u32| round_to_bf16(f32::from_bits(bits));
        assert_eq!(bf(0x3f80_0000), 0x3f80); // 1.0
        assert_eq!(bf(0x3f80_7fff), 0x3f80); // below half: down
        assert_eq!(bf(0x3f80_8001), 0x3f81); // above half: up
        assert_eq!(bf(0x3f80_8000), 0x3f80); // tie, even below: down
        assert_eq!(bf(0x3f81_8000), 0x3f82); // tie, odd below: up to even
        assert_eq!(bf(0x7f7f_ffff), 0x7f80); // f32::MAX rounds to infinity
        assert_eq!(bf(0xff80_0000), 0xff80); // -infinity stays
        assert!(widen(u32::from(bf(0x7fc0_0001))).is_nan()); // NaN stays NaN
    }

    /// Deterministic pseudo-random bf16 values in [-2, 2) (a 64-bit LCG).
    fn values(len: usize, seed: u64) -> Vec<u16> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
                round_to_bf16(4.0 * unit - 2.0)
            })
            .collect()
    }

    fn kernels() -> Vec<Kernel> {
        let mut kernels = vec![Kernel::Portable];
        if Kernel::detect() != Kernel::Portable {
            kernels.push(Kernel::detect());
        }
        kernels
    }

    /// Every kernel, both weight orders, tails of every block size (rows not a multiple of 6,
    /// columns not of 64, odd inputs, inputs across a `K_BLOCK` boundary), with and without
    /// bias, against f64 sums of the same bf16 values: within one bf16 rounding (2^-8 relative)
    /// plus f32 accumulation error (2^-16 of the sum of absolute products).
    #[test]
    fn matches_f64_reference() {
        let f = |b: u16| f64::from(widen(u32::from(b)));
        for (m, k, n) in [
            (1, 1, 1),
            (1, 450, 100),
            (1, 37, 33),
            (1, 3, 70),
            (5, 64, 64),
            (7, 33, 65),
            (13, 130, 130),
            (6, K_BLOCK + 3, 129),
            (2, 2 * K_BLOCK + 2, 17),
        ] {
            let a = values(m * k, 1 + m as u64);
            let w_kn = values(k * n, 2 + k as u64);
            let mut w_nk = vec![0u16; k * n];
            for row in 0..k {
                for col in 0..n {
                    w_nk[col * k + row] = w_kn[row * n + col];
                }
            }
            let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 3.0).collect();
            for kernel in kernels() {
                for (data, order) in [(&w_kn, WeightOrder::KByN), (&w_nk, WeightOrder::NByK)] {
                    for bias in [None, Some(bias.as_slice())] {
                        let w = WeightView { data, k, n, order };
                        let got = matmul(&a, m, w, bias, kernel);
                        for row in 0..m {
                            for col in 0..n {
                                let mut sum = bias.map_or(0.0, |b| f64::from(b[col]));
                                let mut abs = sum.abs();
                                for i in 0..k {
                                    let p = f(a[row * k + i]) * f(w_kn[i * n + col]);
                                    sum += p;
                                    abs += p.abs();
                                }
                                let got = f(got[row * n + col]);
                                let tol = sum.abs() / 256.0 + abs / 65536.0;
                                assert!(
                                    (got - sum).abs() <= tol,
                                    "{kernel:?} {order:?} bias {} [{m}x{k}]x[{k}x{n}] at \
                                     ({row}, {col}): {got} vs {sum} (tol {tol})",
                                    bias.is_some()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
