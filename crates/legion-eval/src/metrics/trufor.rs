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
    if gt.iter().all(|&v| v == 0) {
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
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut f1_best = sweep(&pairs);
    if config.max_with_inverted {
        pairs.reverse();
        f1_best = f1_best.max(sweep(&pairs));
    }
    Some(TruforImage { f1_fixed, f1_best })
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
}
