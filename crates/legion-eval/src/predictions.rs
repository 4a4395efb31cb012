//! Reading predictions: mask PNGs, explanation JSONL.
//!
//! # Mask PNGs
//! One single-channel PNG per image, named `<image file stem>.png` (`0001.jpg` -> `0001.png`),
//! of any size. Pixel types and their meaning:
//! - **binary**: 8-bit grey with values only in {0, 1} or only in {0, 255}, or 16-bit grey with
//!   values only in {0, 1} or {0, 65535}: artifact = nonzero. Resized to the image size with
//!   **nearest neighbour** exactly as `cv2.resize(..., interpolation=cv2.INTER_NEAREST)`
//!   (source index `floor(dst * (src/dst))`, clamped).
//! - **score map**: any other 8-bit (value / 255) or 16-bit (value / 65535) grey image, a
//!   probability in [0, 1]. Resized with **bilinear** interpolation, half-pixel centres and edge
//!   clamping (the `cv2.INTER_LINEAR` convention, computed in f64), THEN thresholded:
//!   artifact = score > threshold (default 0.5; strict, so a model's `logit > 0` equals
//!   `sigmoid > 0.5`).
//!
//! Colour, grey+alpha and other types are rejected with an error naming the file (a colour
//! "mask" is ambiguous). Each rule is tested against OpenCV in the fixture script.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::DynamicImage;

use crate::error::EvalError;

/// A decoded prediction PNG, before resizing.
#[derive(Debug, Clone, PartialEq)]
pub enum PredictionMap {
    /// 0/1 per pixel.
    Binary {
        height: usize,
        width: usize,
        data: Vec<u8>,
    },
    /// Scores as stored in the PNG: level `v` is the score `v / max` (`max` = 255 or 65535).
    /// Kept quantised so the TruFor sweep can count levels instead of sorting pixels.
    Levels {
        height: usize,
        width: usize,
        data: Vec<u16>,
        max: u16,
    },
    /// Scores in [0, 1] per pixel (a resized score map).
    Scores {
        height: usize,
        width: usize,
        data: Vec<f64>,
    },
}

/// The kind of a prediction map, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MapKind {
    Binary,
    ScoreMap,
}

impl PredictionMap {
    /// (height, width).
    pub fn size(&self) -> (usize, usize) {
        match self {
            Self::Binary { height, width, .. }
            | Self::Levels { height, width, .. }
            | Self::Scores { height, width, .. } => (*height, *width),
        }
    }

    /// Binary or score map.
    pub fn kind(&self) -> MapKind {
        match self {
            Self::Binary { .. } => MapKind::Binary,
            Self::Levels { .. } | Self::Scores { .. } => MapKind::ScoreMap,
        }
    }

    /// Resizes to `height x width` by the rule of the map's kind (see the module docs); a map
    /// already of that size is returned as is.
    pub fn resized(self, height: usize, width: usize) -> PredictionMap {
        if self.size() == (height, width) {
            return self;
        }
        match self {
            Self::Binary {
                height: sh,
                width: sw,
                data,
            } => Self::Binary {
                height,
                width,
                data: resize_nearest(&data, sh, sw, height, width),
            },
            Self::Levels {
                height: sh,
                width: sw,
                data,
                max,
            } => {
                let scores: Vec<f64> = data.iter().map(|&v| level_score(v, max)).collect();
                Self::Scores {
                    height,
                    width,
                    data: resize_bilinear(&scores, sh, sw, height, width),
                }
            }
            Self::Scores {
                height: sh,
                width: sw,
                data,
            } => Self::Scores {
                height,
                width,
                data: resize_bilinear(&data, sh, sw, height, width),
            },
        }
    }

    /// The artifact mask: nonzero for binary maps, `score > threshold` for score maps.
    pub fn binarize(&self, threshold: f64) -> Vec<u8> {
        match self {
            Self::Binary { data, .. } => data.clone(),
            Self::Levels { data, max, .. } => {
                let above = level_table(*max, |s| u8::from(s > threshold));
                data.iter().map(|&v| above[usize::from(v)]).collect()
            }
            Self::Scores { data, .. } => data.iter().map(|&s| u8::from(s > threshold)).collect(),
        }
    }

    /// As [`PredictionMap::binarize`], reusing a binary map's buffer.
    pub fn into_binary(self, threshold: f64) -> Vec<u8> {
        match self {
            Self::Binary { data, .. } => data,
            other => other.binarize(threshold),
        }
    }

    /// The score of each level of a [`PredictionMap::Levels`] map (`v / max` for `v` in
    /// `0..=max`, strictly ascending); `None` for other kinds.
    pub fn level_values(&self) -> Option<Vec<f64>> {
        match self {
            Self::Levels { max, .. } => Some(level_table(*max, |s| s)),
            _ => None,
        }
    }

    /// Per-pixel scores (0/1 for binary maps), for the TruFor-style F1.
    pub fn scores(&self) -> Vec<f64> {
        match self {
            Self::Binary { data, .. } => data.iter().map(|&v| f64::from(v)).collect(),
            Self::Levels { data, max, .. } => data.iter().map(|&v| level_score(v, *max)).collect(),
            Self::Scores { data, .. } => data.clone(),
        }
    }
}

/// The score of PNG level `v` of a map whose full scale is `max`.
fn level_score(v: u16, max: u16) -> f64 {
    f64::from(v) / f64::from(max)
}

/// `f(score)` for every level `0..=max`.
fn level_table<T>(max: u16, f: impl Fn(f64) -> T) -> Vec<T> {
    (0..=max).map(|v| f(level_score(v, max))).collect()
}

/// Decodes a prediction PNG (see the module docs for the accepted types).
///
/// # Errors
/// [`EvalError::MaskDecode`] naming the file when it cannot be read or decoded,
/// [`EvalError::MaskFile`] when it is not a single-channel image.
pub fn read_prediction_png(path: &Path) -> Result<PredictionMap, EvalError> {
    let image =
        legion_data::image_io::decode_image(path).map_err(EvalError::mask_decode(path, "mask"))?;
    let (width, height) = (image.width() as usize, image.height() as usize);
    if width == 0 || height == 0 {
        return Err(EvalError::mask_file(path, "the mask is empty (0 pixels)"));
    }
    match image {
        DynamicImage::ImageLuma8(buffer) => Ok(map_from_u8(height, width, buffer.into_raw())),
        DynamicImage::ImageLuma16(buffer) => Ok(map_from_u16(height, width, buffer.into_raw())),
        other => Err(EvalError::mask_file(
            path,
            format!(
                "expected a single-channel 8- or 16-bit grey PNG (binary mask or score map), found {:?}",
                other.color()
            ),
        )),
    }
}

/// Whether grey levels of full scale `max` form a binary mask: every value in {0, 1}, or
/// every value in {0, max}.
fn is_binary<T: Copy + PartialEq + PartialOrd>(raw: &[T], zero: T, one: T, max: T) -> bool {
    // Branch-free folds over the whole buffer (vectorised); the buffer is read twice at most.
    let small = raw.iter().fold(true, |all, &v| all & (v <= one));
    small
        || raw
            .iter()
            .fold(true, |all, &v| all & ((v == zero) | (v == max)))
}

/// An 8-bit grey mask: binary (see [`is_binary`]) or a score map `v / 255`. A binary mask
/// reuses the decoded buffer.
fn map_from_u8(height: usize, width: usize, mut raw: Vec<u8>) -> PredictionMap {
    if is_binary(&raw, 0, 1, u8::MAX) {
        for v in &mut raw {
            *v = u8::from(*v != 0);
        }
        PredictionMap::Binary {
            height,
            width,
            data: raw,
        }
    } else {
        PredictionMap::Levels {
            height,
            width,
            data: raw.into_iter().map(u16::from).collect(),
            max: u16::from(u8::MAX),
        }
    }
}

/// A 16-bit grey mask: binary (see [`is_binary`]) or a score map `v / 65535`.
fn map_from_u16(height: usize, width: usize, raw: Vec<u16>) -> PredictionMap {
    if is_binary(&raw, 0, 1, u16::MAX) {
        PredictionMap::Binary {
            height,
            width,
            data: raw.iter().map(|&v| u8::from(v != 0)).collect(),
        }
    } else {
        PredictionMap::Levels {
            height,
            width,
            data: raw,
            max: u16::MAX,
        }
    }
}

/// Nearest-neighbour resize as OpenCV's `INTER_NEAREST`: `sx = min(floor(x * (1 / (dw/sw))),
/// sw - 1)`, with the scale computed in f64 as OpenCV does.
pub fn resize_nearest(src: &[u8], sh: usize, sw: usize, dh: usize, dw: usize) -> Vec<u8> {
    let index = |d: usize, s: usize| -> Vec<usize> {
        let inv_scale = d as f64 / s as f64;
        let scale = 1.0 / inv_scale;
        (0..d)
            .map(|x| ((x as f64 * scale).floor() as usize).min(s - 1))
            .collect()
    };
    let xs = index(dw, sw);
    let ys = index(dh, sh);
    let mut out = Vec::with_capacity(dh * dw);
    for &y in &ys {
        let row = &src[y * sw..(y + 1) * sw];
        out.extend(xs.iter().map(|&x| row[x]));
    }
    out
}

/// Source index and weight of the next pixel, per destination index: half-pixel centres,
/// clamped at the borders (OpenCV's `INTER_LINEAR` coordinate rule).
fn linear_taps(d: usize, s: usize) -> Vec<(usize, usize, f64)> {
    let scale = s as f64 / d as f64;
    (0..d)
        .map(|x| {
            let f = (x as f64 + 0.5) * scale - 0.5;
            let mut i = f.floor();
            let mut w = f - i;
            if i < 0.0 {
                i = 0.0;
                w = 0.0;
            }
            let i = i as usize;
            if i + 1 >= s {
                (s - 1, s - 1, 0.0)
            } else {
                (i, i + 1, w)
            }
        })
        .collect()
}

/// Bilinear resize with half-pixel centres and edge clamping (see [`linear_taps`]), in f64.
pub fn resize_bilinear(src: &[f64], sh: usize, sw: usize, dh: usize, dw: usize) -> Vec<f64> {
    let xs = linear_taps(dw, sw);
    let ys = linear_taps(dh, sh);
    let mut out = Vec::with_capacity(dh * dw);
    for &(y0, y1, wy) in &ys {
        for &(x0, x1, wx) in &xs {
            let top = src[y0 * sw + x0] * (1.0 - wx) + src[y0 * sw + x1] * wx;
            let bottom = src[y1 * sw + x0] * (1.0 - wx) + src[y1 * sw + x1] * wx;
            out.push(top * (1.0 - wy) + bottom * wy);
        }
    }
    out
}

/// The file stem of an image name (`0001.jpg` -> `0001`), the key of prediction files.
pub fn image_stem(img_file_name: &str) -> &str {
    Path::new(img_file_name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(img_file_name)
}

/// A folder of `<stem>.png` prediction masks, indexed by stem (nothing decoded yet).
#[derive(Debug, Clone)]
pub struct MaskFolder {
    /// The folder.
    pub dir: PathBuf,
    files: HashMap<String, PathBuf>,
}

impl MaskFolder {
    /// Lists `dir`'s `*.png` files (case-insensitive extension). Other files are ignored with
    /// a debug log.
    ///
    /// # Errors
    /// [`EvalError::Io`] when the folder cannot be read, [`EvalError::Duplicate`] when two files
    /// share a stem (`a.png`, `a.PNG`).
    pub fn open(dir: &Path) -> Result<Self, EvalError> {
        let mut files = HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| EvalError::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| EvalError::io(dir, e))?;
            let path = entry.path();
            let is_png = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"));
            if !is_png || !path.is_file() {
                tracing::debug!(file = %path.display(), "not a PNG prediction; ignored");
                continue;
            }
            let Some(stem) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                return Err(EvalError::mask_file(&path, "file name is not valid UTF-8"));
            };
            if files.insert(stem.clone(), path.clone()).is_some() {
                return Err(EvalError::Duplicate {
                    path,
                    line: None,
                    what: "prediction for image stem",
                    value: stem,
                });
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// The prediction file of an image stem, if present.
    pub fn get(&self, stem: &str) -> Option<&Path> {
        self.files.get(stem).map(PathBuf::as_path)
    }

    /// The expected path of an image stem's prediction (for messages).
    pub fn expected_path(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.png"))
    }

    /// All stems with a file, sorted.
    pub fn stems(&self) -> Vec<&str> {
        let mut stems: Vec<&str> = self.files.keys().map(String::as_str).collect();
        stems.sort_unstable();
        stems
    }

    /// The file of a stem (for error messages about unknown images).
    pub fn path_of(&self, stem: &str) -> PathBuf {
        self.files
            .get(stem)
            .cloned()
            .unwrap_or_else(|| self.expected_path(stem))
    }
}

/// One predicted explanation.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct ExplanationLine {
    image: String,
    explanation: String,
}

/// Predicted explanations from a JSONL file: `{"image": ..., "explanation": ...}` per line.
/// `image` is the image file name, its stem, or the record id.
#[derive(Debug, Clone)]
pub struct Explanations {
    /// The file.
    pub path: PathBuf,
    /// (image key, explanation, line number).
    pub entries: Vec<(String, String, usize)>,
}

impl Explanations {
    /// Reads the file; blank lines are skipped.
    ///
    /// # Errors
    /// [`EvalError::JsonLine`] with the line number for invalid JSON or missing keys,
    /// [`EvalError::Duplicate`] for an image given twice.
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        let mut entries = Vec::new();
        let mut seen = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed: ExplanationLine =
                serde_json::from_str(line).map_err(EvalError::json_line(path, index + 1))?;
            if seen.insert(parsed.image.clone(), index + 1).is_some() {
                return Err(EvalError::Duplicate {
                    path: path.to_path_buf(),
                    line: Some(index + 1),
                    what: "explanation for image",
                    value: parsed.image,
                });
            }
            entries.push((parsed.image, parsed.explanation, index + 1));
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_matches_hand_computed_indices() {
        // 2 -> 5 columns: sx = floor(x * 0.4) = 0 0 0 1 1.
        let out = resize_nearest(&[1, 0], 1, 2, 1, 5);
        assert_eq!(out, vec![1, 1, 1, 0, 0]);
        // 4 -> 2: sx = floor(x * 2) = 0, 2.
        assert_eq!(resize_nearest(&[1, 0, 0, 1], 1, 4, 1, 2), vec![1, 0]);
    }

    #[test]
    fn bilinear_half_pixel_hand_computed() {
        // 2 -> 4: f = (x+.5)/2 - .5 = -.25 (clamp 0), .25, .75, 1.25 (clamp to last).
        let out = resize_bilinear(&[0.0, 1.0], 1, 2, 1, 4);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
        // 4 -> 2: f = 0.5, 2.5 -> averages of pairs.
        let out = resize_bilinear(&[0.0, 1.0, 0.2, 0.4], 1, 4, 1, 2);
        assert!((out[0] - 0.5).abs() < 1e-15 && (out[1] - 0.3).abs() < 1e-15);
    }

    #[test]
    fn png_kinds_and_bad_types() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("b.png");
        image::GrayImage::from_raw(2, 1, vec![0, 255])
            .unwrap()
            .save(&binary)
            .unwrap();
        assert_eq!(
            read_prediction_png(&binary).unwrap(),
            PredictionMap::Binary {
                height: 1,
                width: 2,
                data: vec![0, 1]
            }
        );
        let scores = dir.path().join("s.png");
        image::GrayImage::from_raw(2, 1, vec![0, 128])
            .unwrap()
            .save(&scores)
            .unwrap();
        let map = read_prediction_png(&scores).unwrap();
        assert_eq!(map.kind(), MapKind::ScoreMap);
        assert_eq!(map.binarize(0.5), vec![0, 1]);
        let rgb = dir.path().join("c.png");
        image::RgbImage::new(2, 2).save(&rgb).unwrap();
        let err = read_prediction_png(&rgb).unwrap_err().to_string();
        assert!(
            err.contains("c.png") && err.contains("single-channel"),
            "{err}"
        );
        let junk = dir.path().join("j.png");
        std::fs::write(&junk, b"not a png").unwrap();
        let err = read_prediction_png(&junk).unwrap_err().to_string();
        assert!(err.contains("j.png"), "{err}");
    }

    #[test]
    fn explanations_report_bad_lines_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        std::fs::write(&path, "{\"image\": \"a\", \"explanation\": \"x\"}\n{oops\n").unwrap();
        let err = Explanations::read(&path).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("e.jsonl"), "{err}");
        std::fs::write(
            &path,
            "{\"image\": \"a\", \"explanation\": \"x\"}\n\n{\"image\": \"a\", \"explanation\": \"y\"}\n",
        )
        .unwrap();
        let err = Explanations::read(&path).unwrap_err().to_string();
        assert!(err.contains("duplicate") && err.contains("line 3"), "{err}");
    }
}
