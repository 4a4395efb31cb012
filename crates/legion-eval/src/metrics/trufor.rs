//! A TruFor-style localization F1 (Guillaro et al., CVPR 2023). **This is NOT what the LEGION
//! tables use** (they use [`super::localization`]); it is offered, named, for comparison with
//! image-forensics papers.
//!
//! Definition used here (the peers' code varies; this is the documented choice):
//! - only **forged images** count: images whose GT has at least one artifact pixel;
//! - per image, `F1 = 2TP / (2TP + FP + FN)` (0 when the denominator is 0) over the pixels that
//!   are not ignored;
//! - `f1_fixed`: prediction = score > the fixed threshold (0.5 by default);
//! - `f1_best`: the best F1 over all thresholds of this image's score map (the oracle
//!   per-image threshold: every set `{score >= v}` for a distinct score `v`, and the empty set);
//! - optional boundary band of width `k`: pixels where the GT's dilation and erosion with a
//!   `(2k+1) x (2k+1)` square differ are ignored (windows clipped at the image border, as
//!   `cv2.dilate`/`cv2.erode` with their default border);
//! - optional max with the inverted map: each F1 becomes `max(F1(s), F1(1 - s))`, which forgives
//!   a detector that swaps the classes.
//!
//! Binary predictions have scores 0/1, so their best threshold equals the fixed one.

use serde::{Deserialize, Serialize};

/// Options of the TruFor-style F1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TruforConfig {
    /// Fixed threshold on the score map for `f1_fixed` (TruFor: 0.5).
    pub fixed_threshold: f64,
    /// Width in pixels of the ignored band around the GT boundary (0 = none).
    pub boundary_band: usize,
    /// Take the max with the F1 of the inverted map.
    pub max_with_inverted: bool,
}

impl Default for TruforConfig {
    fn default() -> Self {
        Self {
            fixed_threshold: 0.5,
            boundary_band: 0,
            max_with_inverted: false,
        }
    }
}

/// TruFor-style F1 of one forged image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TruforImage {
    /// F1 at the fixed threshold.
    pub f1_fixed: f64,
    /// F1 at the best per-image threshold.
    pub f1_best: f64,
}

/// Means over the forged images of a dataset or group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TruforSummary {
    /// Number of forged images (GT not empty).
    pub forged_images: usize,
    /// Mean [`TruforImage::f1_fixed`].
    pub f1_fixed: f64,
    /// Mean [`TruforImage::f1_best`].
    pub f1_best: f64,
}

/// Sums per-image TruFor F1s.
#[derive(Debug, Clone, Copy, Default)]
pub struct TruforAccumulator {
    n: usize,
    fixed: f64,
    best: f64,
}

impl TruforAccumulator {
    /// Adds one forged image.
    pub fn add(&mut self, image: &TruforImage) {
        self.n += 1;
        self.fixed += image.f1_fixed;
        self.best += image.f1_best;
    }

    /// The means, or `None` when no forged image was added.
    pub fn finish(&self) -> Option<TruforSummary> {
        (self.n > 0).then(|| TruforSummary {
            forged_images: self.n,
            f1_fixed: self.fixed / self.n as f64,
            f1_best: self.best / self.n as f64,
        })
    }
}

fn f1_from(tp: u64, fp: u64, fn_: u64) -> f64 {
    let denominator = 2 * tp + fp + fn_;
    if denominator == 0 {
        0.0
    } else {
        (2 * tp) as f64 / denominator as f64
    }
}

/// The pixels to ignore: where the GT's dilation and erosion by a `(2k+1)^2` square differ.
/// Windows are clipped at the border. Returns `None` for `k = 0`.
pub fn boundary_band(gt: &[u8], height: usize, width: usize, k: usize) -> Option<Vec<bool>> {
    if k == 0 {
        return None;
    }
    // Separable min/max filters with clipped windows.
    let pass = |src: &[u8], take_max: bool, horizontal: bool| -> Vec<u8> {
        let mut out = vec![0u8; src.len()];
        for row in 0..height {
            for col in 0..width {
                let (lo, hi, fixed) = if horizontal {
                    (col.saturating_sub(k), (col + k).min(width - 1), row)
                } else {
                    (row.saturating_sub(k), (row + k).min(height - 1), col)
                };
                let values = (lo..=hi).map(|i| {
                    if horizontal {
                        src[fixed * width + i]
                    } else {
                        src[i * width + fixed]
                    }
                });
                out[row * width + col] = if take_max {
                    values.max().unwrap_or(0)
                } else {
                    values.min().unwrap_or(0)
                };
            }
        }
        out
    };
    let binary: Vec<u8> = gt.iter().map(|&v| u8::from(v != 0)).collect();
    let dilated = pass(&pass(&binary, true, true), true, false);
    let eroded = pass(&pass(&binary, false, true), false, false);
    Some(dilated.iter().zip(&eroded).map(|(d, e)| d != e).collect())
}

/// TruFor-style F1 of one image, or `None` when the GT is empty (not a forged image).
///
/// `scores` are the prediction's per-pixel scores in [0, 1] at the GT's resolution (0/1 for a
/// binary mask); `gt` is the GT mask (nonzero = artifact), both row-major `height x width`.
/// Sorts the pixels by score; quantised maps should use [`trufor_f1_levels`] (same numbers,
/// no sort).
///
/// # Panics
/// If `scores`, `gt` and `height * width` disagree in length.
pub fn trufor_f1(
    scores: &[f64],
    gt: &[u8],
    height: usize,
    width: usize,
    config: &TruforConfig,
) -> Option<TruforImage> {
    assert_eq!(scores.len(), gt.len());
    assert_eq!(gt.len(), height * width);
    if is_empty(gt) {
        return None;
    }
    let ignored = boundary_band(gt, height, width, config.boundary_band);
    let kept = |i: usize| ignored.as_ref().is_none_or(|band| !band[i]);
    let mut pairs: Vec<(f64, bool)> = (0..gt.len())
        .filter(|&i| kept(i))
        .map(|i| (scores[i], gt[i] != 0))
        .collect();
    let positives = pairs.iter().filter(|p| p.1).count() as u64;

    let fixed_of = |predict: &dyn Fn(f64) -> bool| {
        let (mut tp, mut fp) = (0u64, 0u64);
        for &(s, g) in &pairs {
            if predict(s) {
                if g { tp += 1 } else { fp += 1 }
            }
        }
        f1_from(tp, fp, positives - tp)
    };
    let t = config.fixed_threshold;
    let mut f1_fixed = fixed_of(&|s| s > t);
    if config.max_with_inverted {
        f1_fixed = f1_fixed.max(fixed_of(&|s| 1.0 - s > t));
    }

    // Best threshold: sweep the sorted scores; every prefix ending at a change of value is a
    // candidate positive set. Descending order for the map, ascending for the inverted map.
    // Only the group boundaries matter, so the order within equal scores (unstable sort) does
    // not change the result.
    let sweep = |pairs: &[(f64, bool)]| {
        let (mut tp, mut fp) = (0u64, 0u64);
        let mut best = 0.0f64;
        for (i, &(s, g)) in pairs.iter().enumerate() {
            if g {
                tp += 1
            } else {
                fp += 1
            }
            if i + 1 == pairs.len() || pairs[i + 1].0 != s {
                best = best.max(f1_from(tp, fp, positives - tp));
            }
        }
        best
    };
    pairs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let mut f1_best = sweep(&pairs);
    if config.max_with_inverted {
        pairs.reverse();
        f1_best = f1_best.max(sweep(&pairs));
    }
    Some(TruforImage { f1_fixed, f1_best })
}

/// [`trufor_f1`] for a quantised score map: pixel `i` has the score `values[levels[i]]`, with
/// `values` strictly ascending (e.g. `[0, 1]` for a binary mask, `v / 255` for an 8-bit map).
/// Counts artifact and background pixels per level instead of sorting the pixels; the F1s
/// are computed from the same integer counts, so the numbers are identical to [`trufor_f1`].
///
/// # Panics
/// If `levels`, `gt` and `height * width` disagree in length, or a level indexes past
/// `values`.
pub fn trufor_f1_levels<L: Copy + Into<usize>>(
    levels: &[L],
    values: &[f64],
    gt: &[u8],
    height: usize,
    width: usize,
    config: &TruforConfig,
) -> Option<TruforImage> {
    assert_eq!(levels.len(), gt.len());
    assert_eq!(gt.len(), height * width);
    if is_empty(gt) {
        return None;
    }
    // (background, artifact) pixel counts per level, over the kept pixels.
    let mut counts = vec![[0u64; 2]; values.len()];
    match boundary_band(gt, height, width, config.boundary_band) {
        None => {
            for (&level, &g) in levels.iter().zip(gt) {
                counts[level.into()][usize::from(g != 0)] += 1;
            }
        }
        Some(band) => {
            for ((&level, &g), &ignored) in levels.iter().zip(gt).zip(&band) {
                if !ignored {
                    counts[level.into()][usize::from(g != 0)] += 1;
                }
            }
        }
    }
    Some(trufor_f1_from_level_counts(values, &counts, config))
}

/// Whether a mask has no nonzero pixel (an OR reduction, which vectorises).
fn is_empty(mask: &[u8]) -> bool {
    mask.iter().fold(0u8, |any, &v| any | v) == 0
}

/// The TruFor-style F1 from per-level pixel counts: `counts[i] = [background, artifact]`
/// pixels (not ignored) whose score is `values[i]`, `values` strictly ascending. For a binary
/// map without boundary band the counts are the image's confusion counts:
/// `[[tn, fn], [fp, tp]]` at values `[0, 1]`. The caller checks that the GT is not empty.
///
/// # Panics
/// If `values` and `counts` differ in length.
pub fn trufor_f1_from_level_counts(
    values: &[f64],
    counts: &[[u64; 2]],
    config: &TruforConfig,
) -> TruforImage {
    assert_eq!(values.len(), counts.len());
    debug_assert!(values.windows(2).all(|w| w[0] < w[1]));
    let positives: u64 = counts.iter().map(|c| c[1]).sum();

    let fixed_of = |predict: &dyn Fn(f64) -> bool| {
        let (mut tp, mut fp) = (0u64, 0u64);
        for (&value, c) in values.iter().zip(counts) {
            if predict(value) {
                tp += c[1];
                fp += c[0];
            }
        }
        f1_from(tp, fp, positives - tp)
    };
    let t = config.fixed_threshold;
    let mut f1_fixed = fixed_of(&|s| s > t);
    if config.max_with_inverted {
        f1_fixed = f1_fixed.max(fixed_of(&|s| 1.0 - s > t));
    }

    // Best threshold: the candidate positive sets are `{score >= v}` for every present level
    // `v` (descending sweep) and, inverted, `{score <= v}` (ascending sweep).
    let sweep = |order: &mut dyn Iterator<Item = &[u64; 2]>| {
        let (mut tp, mut fp) = (0u64, 0u64);
        let mut best = 0.0f64;
        for c in order.filter(|c| c[0] + c[1] > 0) {
            tp += c[1];
            fp += c[0];
            best = best.max(f1_from(tp, fp, positives - tp));
        }
        best
    };
    let mut f1_best = sweep(&mut counts.iter().rev());
    if config.max_with_inverted {
        f1_best = f1_best.max(sweep(&mut counts.iter()));
    }
    TruforImage { f1_fixed, f1_best }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_gt_is_not_a_forged_image() {
        assert!(trufor_f1(&[0.9, 0.1], &[0, 0], 1, 2, &TruforConfig::default()).is_none());
    }

    #[test]
    fn fixed_and_best_threshold_hand_computed() {
        // GT: pixels 0,1 artifact. Scores: 0.9, 0.4, 0.45, 0.1.
        let scores = [0.9, 0.4, 0.45, 0.1];
        let gt = [1, 1, 0, 0];
        let r = trufor_f1(&scores, &gt, 2, 2, &TruforConfig::default()).unwrap();
        // At 0.5: TP 1, FP 0, FN 1 -> 2/3.
        assert!((r.f1_fixed - 2.0 / 3.0).abs() < 1e-12);
        // Best: {0.9} -> 2/3; {0.9,0.45} -> 2/4; {0.9,0.45,0.4} -> 4/5; all -> 4/6.
        assert!((r.f1_best - 0.8).abs() < 1e-12);
    }

    #[test]
    fn inverted_map_rescues_swapped_classes() {
        let scores = [0.0, 0.0, 1.0, 1.0];
        let gt = [1, 1, 0, 0];
        let plain = trufor_f1(&scores, &gt, 2, 2, &TruforConfig::default()).unwrap();
        assert_eq!(plain.f1_fixed, 0.0);
        // Best without inversion: predicting everything -> 2*2/(4+2) = 2/3.
        assert!((plain.f1_best - 2.0 / 3.0).abs() < 1e-12);
        let config = TruforConfig {
            max_with_inverted: true,
            ..TruforConfig::default()
        };
        let inverted = trufor_f1(&scores, &gt, 2, 2, &config).unwrap();
        assert_eq!((inverted.f1_fixed, inverted.f1_best), (1.0, 1.0));
    }

    #[test]
    fn boundary_band_marks_pixels_near_the_edge() {
        // 1x5 GT 0 0 1 1 1, k = 1: dilation 0 1 1 1 1, erosion 0 0 0 1 1 -> band at 1, 2.
        let band = boundary_band(&[0, 0, 1, 1, 1], 1, 5, 1).unwrap();
        assert_eq!(band, vec![false, true, true, false, false]);
    }

    #[test]
    fn levels_match_the_sorting_sweep() {
        // Pseudo-random 8-bit levels with ties, a GT blob, every option combination.
        let (height, width) = (23, 31);
        let mut state = 12345u32;
        let levels: Vec<u16> = (0..height * width)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((state >> 16) % 40 * 6) as u16
            })
            .collect();
        let gt: Vec<u8> = (0..height * width)
            .map(|i| u8::from((i / width) % 7 < 3 && (i % width) > 9))
            .collect();
        let values: Vec<f64> = (0..=255u16).map(|v| f64::from(v) / 255.0).collect();
        let scores: Vec<f64> = levels.iter().map(|&v| values[usize::from(v)]).collect();
        for band in [0, 1, 3] {
            for inverted in [false, true] {
                for fixed_threshold in [0.5, 0.2] {
                    let config = TruforConfig {
                        fixed_threshold,
                        boundary_band: band,
                        max_with_inverted: inverted,
                    };
                    let sorted = trufor_f1(&scores, &gt, height, width, &config);
                    let counted = trufor_f1_levels(&levels, &values, &gt, height, width, &config);
                    assert_eq!(sorted, counted, "{config:?}");
                }
            }
        }
        // Binary map: the confusion counts are the level counts.
        let binary: Vec<u8> = levels.iter().map(|&v| u8::from(v > 100)).collect();
        let scores: Vec<f64> = binary.iter().map(|&v| f64::from(v)).collect();
        let c = crate::metrics::localization::PixelCounts::from_masks(&binary, &gt);
        for max_with_inverted in [false, true] {
            let config = TruforConfig {
                max_with_inverted,
                ..TruforConfig::default()
            };
            let sorted = trufor_f1(&scores, &gt, height, width, &config);
            let levels = [[c.tn, c.fn_], [c.fp, c.tp]];
            assert_eq!(
                sorted,
                Some(trufor_f1_from_level_counts(&[0.0, 1.0], &levels, &config))
            );
            assert_eq!(
                sorted,
                trufor_f1_levels(&binary, &[0.0, 1.0], &gt, height, width, &config)
            );
        }
    }
}
