//! The built-in classical inpainter, so the refinement loop runs with no external model:
//! onion-peel filling from the mask boundary followed by iterative diffusion (harmonic
//! smoothing), in the spirit of Oliveira et al., "Fast Digital Image Inpainting" (2001).
//!
//! 1. **Onion peel.** Masked pixels with a known 8-neighbour take the mean of their known
//!    neighbours, one boundary layer at a time, until the hole is filled.
//! 2. **Diffusion.** `iterations` Gauss-Seidel sweeps replace every masked pixel by the mean of
//!    its 4-neighbours, which converges to the harmonic (smoothest) fill of the hole given its
//!    boundary.
//!
//! It removes what differs from the surroundings (an artifact's colour, texture, edges) and
//! leaves a smooth patch: good for the loop's mechanics and for small artifacts, no match for a
//! diffusion model on large structured regions. Pixels outside the mask are never changed.
//! [`dilate`] grows a mask first, as the reference does (5x5 kernel, 5 iterations = radius 10).

use image::RgbImage;
use legion_data::mask::Mask;

/// Settings of [`inpaint`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InpaintConfig {
    /// Diffusion sweeps after the onion peel.
    pub iterations: usize,
}

impl Default for InpaintConfig {
    fn default() -> Self {
        Self { iterations: 100 }
    }
}

/// Grows `mask` by `radius` pixels with a square structuring element (Chebyshev distance), as
/// `cv2.dilate` with a `(2r+1) x (2r+1)` kernel of ones.
pub fn dilate(mask: &Mask, radius: usize) -> Mask {
    if radius == 0 {
        return mask.clone();
    }
    let (h, w) = (mask.height(), mask.width());
    let src = mask.as_slice();
    // Separable: rows, then columns.
    let mut rows = vec![0u8; h * w];
    for r in 0..h {
        for c in 0..w {
            if src[r * w + c] != 0 {
                let (lo, hi) = (c.saturating_sub(radius), (c + radius).min(w - 1));
                rows[r * w + lo..=r * w + hi].fill(1);
            }
        }
    }
    let mut out = vec![0u8; h * w];
    for c in 0..w {
        for r in 0..h {
            if rows[r * w + c] != 0 {
                let (lo, hi) = (r.saturating_sub(radius), (r + radius).min(h - 1));
                for rr in lo..=hi {
                    out[rr * w + c] = 1;
                }
            }
        }
    }
    Mask::from_raw(h, w, out).expect("same size as the input mask")
}

/// Fills the masked pixels of `image` from their surroundings (see the module docs). A mask
/// covering the whole image has nothing to fill from: the image is returned unchanged.
///
/// # Panics
/// When the mask does not have the image's size.
pub fn inpaint(image: &RgbImage, mask: &Mask, config: &InpaintConfig) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    assert_eq!(
        (mask.height(), mask.width()),
        (h, w),
        "mask and image sizes differ"
    );
    let hole = mask.as_slice();
    if hole.iter().all(|&m| m != 0) || hole.iter().all(|&m| m == 0) {
        return image.clone();
    }
    let mut values: Vec<[f32; 3]> = image
        .pixels()
        .map(|p| [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])])
        .collect();
    let mut known: Vec<bool> = hole.iter().map(|&m| m == 0).collect();

    // 1. Onion peel.
    loop {
        let mut layer = Vec::new();
        for r in 0..h {
            for c in 0..w {
                let i = r * w + c;
                if known[i] {
                    continue;
                }
                let mut sum = [0f32; 3];
                let mut n = 0f32;
                for dr in -1i64..=1 {
                    for dc in -1i64..=1 {
                        let (rr, cc) = (r as i64 + dr, c as i64 + dc);
                        if (dr, dc) == (0, 0)
                            || rr < 0
                            || cc < 0
                            || rr >= h as i64
                            || cc >= w as i64
                        {
                            continue;
                        }
                        let j = rr as usize * w + cc as usize;
                        if known[j] {
                            for k in 0..3 {
                                sum[k] += values[j][k];
                            }
                            n += 1.0;
                        }
                    }
                }
                if n > 0.0 {
                    layer.push((i, sum.map(|s| s / n)));
                }
            }
        }
        if layer.is_empty() {
            break;
        }
        for (i, v) in layer {
            values[i] = v;
            known[i] = true;
        }
    }

    // 2. Diffusion over the hole.
    let holes: Vec<usize> = (0..h * w).filter(|&i| hole[i] != 0).collect();
    for _ in 0..config.iterations {
        for &i in &holes {
            let (r, c) = (i / w, i % w);
            let mut sum = [0f32; 3];
            let mut n = 0f32;
            let mut add = |j: usize| {
                for k in 0..3 {
                    sum[k] += values[j][k];
                }
                n += 1.0;
            };
            if r > 0 {
                add(i - w);
            }
            if r + 1 < h {
                add(i + w);
            }
            if c > 0 {
                add(i - 1);
            }
            if c + 1 < w {
                add(i + 1);
            }
            values[i] = sum.map(|s| s / n);
        }
    }

    let mut out = image.clone();
    for &i in &holes {
        let v = values[i].map(|x| x.round().clamp(0.0, 255.0) as u8);
        out.put_pixel((i % w) as u32, (i / w) as u32, image::Rgb(v));
    }
    out
}

/// Mean absolute difference per channel between `a` and `b` over the pixels of `mask`
/// (0 for an empty mask): how far a region is from a reference.
///
/// # Panics
/// When the sizes differ.
pub fn masked_mean_abs_diff(a: &RgbImage, b: &RgbImage, mask: &Mask) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut total = 0f64;
    let mut n = 0usize;
    for ((pa, pb), &m) in a.pixels().zip(b.pixels()).zip(mask.as_slice()) {
        if m != 0 {
            for k in 0..3 {
                total += (f64::from(pa[k]) - f64::from(pb[k])).abs();
            }
            n += 3;
        }
    }
    if n == 0 { 0.0 } else { total / n as f64 }
}

/// Mean absolute 4-neighbour Laplacian over the pixels of `mask` (0 for an empty mask): the
/// high-frequency energy of a region, an anomaly measure that needs no reference image.
pub fn masked_laplacian_energy(image: &RgbImage, mask: &Mask) -> f64 {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let px = |r: usize, c: usize, k: usize| f64::from(image.get_pixel(c as u32, r as u32)[k]);
    let mut total = 0f64;
    let mut n = 0usize;
    for r in 1..h.saturating_sub(1) {
        for c in 1..w.saturating_sub(1) {
            if mask.get(r, c) != Some(true) {
                continue;
            }
            for k in 0..3 {
                let lap = 4.0 * px(r, c, k)
                    - px(r - 1, c, k)
                    - px(r + 1, c, k)
                    - px(r, c - 1, k)
                    - px(r, c + 1, k);
                total += lap.abs();
            }
            n += 3;
        }
    }
    if n == 0 { 0.0 } else { total / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth gradient with a noisy, saturated square pasted in: the inpainter must bring
    /// the square back close to the clean gradient and remove its high-frequency energy.
    #[test]
    fn inpainting_removes_a_synthetic_artifact() {
        let clean = RgbImage::from_fn(48, 40, |x, y| {
            image::Rgb([(60 + 3 * x) as u8, (40 + 4 * y) as u8, 120])
        });
        let mut corrupted = clean.clone();
        let mut mask = Mask::zeros(40, 48);
        let mut state = 12345u32;
        for y in 14..26 {
            for x in 18..32 {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                let noise = (state >> 24) as u8;
                corrupted.put_pixel(x, y, image::Rgb([255, noise, 255 - noise]));
                mask.set(y as usize, x as usize, true);
            }
        }
        let before = masked_mean_abs_diff(&corrupted, &clean, &mask);
        let energy_before = masked_laplacian_energy(&corrupted, &mask);
        let fixed = inpaint(&corrupted, &dilate(&mask, 1), &InpaintConfig::default());
        let after = masked_mean_abs_diff(&fixed, &clean, &mask);
        let energy_after = masked_laplacian_energy(&fixed, &mask);
        assert!(before > 80.0, "corruption is strong: {before}");
        assert!(
            after < 3.0,
            "inpainted region is close to the clean image: {after}"
        );
        assert!(
            energy_after < 0.05 * energy_before,
            "{energy_before} -> {energy_after}"
        );
        // Outside the (dilated) mask nothing changes.
        let grown = dilate(&mask, 1);
        for (i, (a, b)) in fixed.pixels().zip(corrupted.pixels()).enumerate() {
            if grown.as_slice()[i] == 0 {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn dilation_is_a_square_kernel_clipped_at_the_border() {
        let mut mask = Mask::zeros(5, 6);
        mask.set(0, 0, true);
        mask.set(3, 3, true);
        let d = dilate(&mask, 1);
        assert_eq!(d.area(), 4 + 9);
        assert_eq!(d.get(4, 4), Some(true));
        assert_eq!(d.get(1, 2), Some(false));
        assert_eq!(dilate(&mask, 0), mask);
        assert_eq!(dilate(&mask, 10).area(), 30);
    }
}
