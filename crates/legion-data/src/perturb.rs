//! Image degradations for the robustness table of the LEGION paper (Table 10): JPEG compression,
//! additive Gaussian noise and Gaussian blur, applied to the decoded RGB pixels before the model
//! sees them (`legion infer --perturb jpeg:50 | noise:SIGMA | blur:KSIZE`).
//!
//! ```text
//! legion infer --data data/synthscars-tiny --checkpoint runs/tiny/final --out pred-jpeg50 --perturb jpeg:50
//! ```
//!
//! # What the reference does
//! `opendatalab/LEGION` `evaluate_ours.py` (commit `cd7df24`) has the flags `--apply_jpeg
//! --jpeg_quality 50`, `--apply_gaussian_noise --gaussian_noise_std 25.5` and
//! `--apply_gaussian_blur --gaussian_blur_size 5`; it applies one of them to the BGR array of
//! `cv2.imread` with the functions of `eval/utils.py` (commit `11ed011`, section `## disturb`):
//! - **JPEG**: kornia's `RandomJPEG(jpeg_quality=(50, 50))`, a *differentiable approximation* of
//!   JPEG (polynomial rounding, box chroma subsampling, nearest-neighbour chroma upsampling), run
//!   on BGR data as if it were RGB, then `* 255` and `astype(np.uint8)` (truncation). It is not a
//!   real JPEG file: on the fixtures it differs from Pillow's JPEG 50 by 5-13 grey levels on
//!   average (`tests/perturb_parity.rs`).
//! - **Noise**: the pixels are scaled to [0, 1], `torch.randn_like(x) * std` is added, the result
//!   clamped to [0, 1], scaled back by 255 and truncated. The line `std /= 255` is commented out
//!   while `mean /= 255` is not, so the default `--gaussian_noise_std 25.5` adds noise of standard
//!   deviation 25.5 *on the [0, 1] scale* (6502.5 grey levels): every channel of every pixel ends
//!   up 0 or 255 (about 1.6 % keep an intermediate value), i.e. the image is destroyed. 25.5 is
//!   0.1 of the 0-255 range, which reads like the intended value.
//! - **Blur**: `cv2.GaussianBlur(img, (5, 5), sigmaX=0)` on the float32 pixels (sigma derived
//!   from the kernel size; OpenCV's fixed kernel [1, 4, 6, 4, 1] / 16 for size 5), border
//!   `BORDER_REFLECT_101`, then truncation to uint8.
//!
//! # What legion-rs does
//! - **`jpeg:Q`** (Q in 1..=100): a real JPEG round trip, as `PIL.Image.save(format="JPEG",
//!   quality=Q)` then decoding: baseline JPEG, the Annex K tables scaled by the IJG quality
//!   formula, 4:2:0 chroma subsampling with libjpeg's box average, encoded by the `jpeg-encoder`
//!   crate and decoded by this crate's strict decoder ([`crate::image_io::decode_rgb_bytes`]),
//!   in RGB order (not the reference's BGR quirk). Against Pillow (libjpeg-turbo) at quality 50
//!   the measured difference is a mean of at most 1.6 grey levels, 84-100 % of samples within 2
//!   levels, and single samples up to 37
//!   where a DCT coefficient sits on a quantisation boundary (`jpeg-encoder` divides by a 15-bit
//!   reciprocal, libjpeg exactly); see `tests/perturb_parity.rs` for the bounds.
//! - **`noise:SIGMA`**: `floor(clamp(x + SIGMA * n, 0, 255))` per channel, `n` standard normal,
//!   SIGMA in grey levels (0-255 scale): `noise:25.5` is `np.clip(img + rng.normal(0, 25.5,
//!   img.shape), 0, 255).astype(np.uint8)`; `noise:6502.5` is what the reference code literally
//!   did with its default. The normals come from a documented generator ([`gaussian_noise`]):
//!   SplitMix64 seeded from `--perturb-seed` and the image's file name, Marsaglia's polar method.
//!   The same seed and file name give the same pixels whatever the batch size, order or resume;
//!   numpy's stream itself cannot be reproduced, so parity is statistical (mean, spread,
//!   clipping).
//! - **`blur:K`** (K odd, 1..=31): the reference exactly: separable Gaussian with OpenCV's kernel
//!   for `sigmaX=0` (sizes 1-7: the fixed binomial tables; larger: sigma `0.3 * ((K - 1) / 2 - 1) +
//!   0.8`), `BORDER_REFLECT_101`, result truncated. Bit-identical to the reference for K <= 7.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::image_io::ImageIoError;

/// The seed of [`gaussian_noise`] when none is given (`legion infer --perturb-seed`).
pub const DEFAULT_PERTURB_SEED: u64 = 0;

/// Largest blur kernel accepted.
pub const MAX_BLUR_KSIZE: u32 = 31;

const SPEC_HELP: &str = "expected jpeg:QUALITY (1-100), noise:SIGMA (grey levels on the 0-255 \
                         scale, > 0) or blur:KSIZE (odd, 1-31), e.g. jpeg:50, noise:25.5, blur:5";

/// One degradation (see the module docs for the exact semantics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Perturbation {
    /// JPEG round trip at this quality (1..=100).
    Jpeg {
        /// IJG quality.
        quality: u8,
    },
    /// Additive Gaussian noise with this standard deviation in grey levels (0-255 scale).
    Noise {
        /// Standard deviation, > 0 and finite.
        sigma: f64,
    },
    /// Gaussian blur with this odd kernel size, sigma derived from it as OpenCV does.
    Blur {
        /// Kernel size, odd, 1..=[`MAX_BLUR_KSIZE`].
        ksize: u32,
    },
}

/// Why a perturbation could not be parsed or applied.
#[derive(Debug, thiserror::Error)]
pub enum PerturbError {
    /// The `kind:value` text is not a valid perturbation.
    #[error("invalid perturbation {spec:?}: {reason}; {SPEC_HELP}")]
    Spec {
        /// The text given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The image could not be JPEG-encoded (e.g. a side over 65535 pixels).
    #[error("{path}: cannot JPEG-encode the image for the perturbation: {detail}")]
    Encode {
        /// The image.
        path: PathBuf,
        /// What the encoder reported.
        detail: String,
    },
    /// The JPEG just encoded could not be decoded back.
    #[error("decoding the JPEG-compressed copy: {0}")]
    Decode(#[source] ImageIoError),
    /// A predictions metadata file could not be read or written.
    #[error("{path}: {source}")]
    MetaIo {
        /// The metadata file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A predictions metadata file is not valid JSON of the expected shape.
    #[error("{path}: not a predictions metadata file: {detail}")]
    MetaInvalid {
        /// The metadata file.
        path: PathBuf,
        /// What the JSON parser reported.
        detail: String,
    },
}

impl FromStr for Perturbation {
    type Err = PerturbError;

    fn from_str(spec: &str) -> Result<Self, PerturbError> {
        let bad = |reason: &str| PerturbError::Spec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (kind, value) = spec
            .trim()
            .split_once(':')
            .ok_or_else(|| bad("no ':' between the kind and its value"))?;
        let value = value.trim();
        match kind.trim().to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => {
                let quality: u8 = value
                    .parse()
                    .map_err(|_| bad("the JPEG quality is not an integer in 1-100"))?;
                if !(1..=100).contains(&quality) {
                    return Err(bad("the JPEG quality must be in 1-100"));
                }
                Ok(Self::Jpeg { quality })
            }
            "noise" => {
                let sigma: f64 = value
                    .parse()
                    .map_err(|_| bad("the noise sigma is not a number"))?;
                if !sigma.is_finite() || sigma <= 0.0 {
                    return Err(bad("the noise sigma must be finite and > 0"));
                }
                Ok(Self::Noise { sigma })
            }
            "blur" => {
                let ksize: u32 = value
                    .parse()
                    .map_err(|_| bad("the blur kernel size is not a positive integer"))?;
                if ksize.is_multiple_of(2) || ksize > MAX_BLUR_KSIZE {
                    return Err(bad("the blur kernel size must be odd and in 1-31"));
                }
                Ok(Self::Blur { ksize })
            }
            _ => Err(bad("unknown kind")),
        }
    }
}

impl fmt::Display for Perturbation {
    /// The `kind:value` spec, parseable by [`Perturbation::from_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Jpeg { quality } => write!(f, "jpeg:{quality}"),
            Self::Noise { sigma } => write!(f, "noise:{sigma}"),
            Self::Blur { ksize } => write!(f, "blur:{ksize}"),
        }
    }
}

impl Perturbation {
    /// One line saying what the perturbation does (for reports and tables).
    pub fn describe(&self) -> String {
        match self {
            Self::Jpeg { quality } => format!(
                "JPEG round trip at quality {quality} (IJG tables, 4:2:0, like PIL save(quality={quality}))"
            ),
            Self::Noise { sigma } => format!(
                "additive Gaussian noise, std {sigma} grey levels (0-255 scale), clipped to 0-255 and truncated"
            ),
            Self::Blur { ksize } => format!(
                "Gaussian blur, kernel {ksize}x{ksize}, sigma {:.2} (cv2.GaussianBlur sigmaX=0), reflect-101 border, truncated",
                opencv_sigma(*ksize)
            ),
        }
    }

    /// Whether the output depends on the seed.
    pub fn is_random(&self) -> bool {
        matches!(self, Self::Noise { .. })
    }

    /// Applies the perturbation to `image`. `name` is the image's file name: it names the image
    /// in errors and, with `seed`, picks the noise stream ([`image_seed`]).
    ///
    /// # Errors
    /// Only for JPEG: [`PerturbError::Encode`] when the image cannot be encoded (a side over
    /// 65535 pixels), [`PerturbError::Decode`] when the encoded copy does not decode.
    pub fn apply(
        &self,
        image: &RgbImage,
        seed: u64,
        name: &Path,
    ) -> Result<RgbImage, PerturbError> {
        Ok(match *self {
            Self::Jpeg { quality } => jpeg_round_trip(image, quality, name)?,
            Self::Noise { sigma } => gaussian_noise(image, sigma, image_seed(seed, name)),
            Self::Blur { ksize } => gaussian_blur(image, ksize),
        })
    }
}

/// What a prediction folder records about the images the model saw (written by `legion infer`
/// to `infer.json`, carried into `legion eval` reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerturbationRecord {
    /// `none`, or the spec (`jpeg:50`, `noise:25.5`, `blur:5`).
    pub spec: String,
    /// The seed, for perturbations that use one (noise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// What the perturbation does, in words.
    pub description: String,
}

impl PerturbationRecord {
    /// The spec of unperturbed input.
    pub const CLEAN: &'static str = "none";

    /// The record of unperturbed input.
    pub fn clean() -> Self {
        Self {
            spec: Self::CLEAN.into(),
            seed: None,
            description: "no perturbation (the images as decoded)".into(),
        }
    }

    /// The record of `perturbation` applied with `seed` (or of clean input for `None`).
    pub fn new(perturbation: Option<&Perturbation>, seed: u64) -> Self {
        match perturbation {
            None => Self::clean(),
            Some(p) => Self {
                spec: p.to_string(),
                seed: p.is_random().then_some(seed),
                description: p.describe(),
            },
        }
    }

    /// Whether this records unperturbed input.
    pub fn is_clean(&self) -> bool {
        self.spec == Self::CLEAN
    }
}

/// File name of [`PredictionsMeta`] in a prediction folder (beside `masks/`).
pub const PREDICTIONS_META_FILE: &str = "infer.json";

/// `infer.json`: how the predictions of a folder were made, as far as scoring needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionsMeta {
    /// The perturbation applied to every image before the model saw it.
    pub perturbation: PerturbationRecord,
    /// The program that wrote the predictions (`legion-infer <version>`).
    #[serde(default)]
    pub writer: String,
}

impl PredictionsMeta {
    /// Reads `<dir>/infer.json`; `Ok(None)` when the folder has none.
    ///
    /// # Errors
    /// [`PerturbError::MetaIo`] when the file exists but cannot be read,
    /// [`PerturbError::MetaInvalid`] when it is not valid metadata.
    pub fn read_from(dir: &Path) -> Result<Option<Self>, PerturbError> {
        let path = dir.join(PREDICTIONS_META_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PerturbError::MetaIo { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| PerturbError::MetaInvalid {
                path,
                detail: e.to_string(),
            })
    }

    /// Pretty JSON, as written to `infer.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain strings and numbers serialise")
    }
}

/// JPEG-compresses `image` at `quality` and decodes it back (see the module docs).
///
/// # Errors
/// [`PerturbError::Encode`] for a side over 65535 pixels or an encoder failure,
/// [`PerturbError::Decode`] if the encoded bytes do not decode.
pub fn jpeg_round_trip(
    image: &RgbImage,
    quality: u8,
    name: &Path,
) -> Result<RgbImage, PerturbError> {
    use jpeg_encoder::{ChromaSubsamplingMethod, ColorType, Encoder, SamplingFactor};
    let encode_err = |detail: String| PerturbError::Encode {
        path: name.to_path_buf(),
        detail,
    };
    let (w, h) = image.dimensions();
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(encode_err(format!(
            "{w}x{h} is larger than JPEG's 65535x65535"
        )));
    };
    if w == 0 || h == 0 {
        return Ok(image.clone());
    }
    let mut bytes = Vec::new();
    let mut encoder = Encoder::new(&mut bytes, quality.clamp(1, 100));
    // libjpeg's (and Pillow's) defaults: 2x2 chroma subsampling by box average.
    encoder.set_sampling_factor(SamplingFactor::F_2_2);
    encoder.set_chroma_subsampling_method(ChromaSubsamplingMethod::Average);
    encoder
        .encode(image.as_raw(), w16, h16, ColorType::Rgb)
        .map_err(|e| encode_err(e.to_string()))?;
    crate::image_io::decode_rgb_bytes(&bytes, name).map_err(PerturbError::Decode)
}

/// The noise seed of one image: `seed` mixed with the FNV-1a hash of the file name (not the
/// path), so an image gets the same noise wherever the dataset lies and in whatever order or
/// batch it is processed.
pub fn image_seed(seed: u64, name: &Path) -> u64 {
    let name = name
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_string_lossy().into_owned());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    SplitMix64(seed ^ hash).next_u64()
}

/// Adds Gaussian noise of standard deviation `sigma` grey levels to every channel of every
/// pixel, clips to 0-255 and truncates: `floor(clamp(x + sigma * n, 0, 255))`.
///
/// The normals `n` are drawn in pixel order (rows top to bottom, then columns, then R, G, B)
/// by Marsaglia's polar method from uniforms `2 * (u >> 11) / 2^53 - 1`, `u` the outputs of
/// SplitMix64 started at `seed`. The stream is fixed by this description; the only
/// platform-dependent step is `ln`, whose last-bit differences could move a pixel by one level
/// in rare cases.
pub fn gaussian_noise(image: &RgbImage, sigma: f64, seed: u64) -> RgbImage {
    let mut rng = SplitMix64(seed);
    let mut spare: Option<f64> = None;
    let mut out = image.clone();
    for v in out.iter_mut() {
        let n = match spare.take() {
            Some(n) => n,
            None => {
                let (a, b) = rng.polar_pair();
                spare = Some(b);
                a
            }
        };
        *v = (f64::from(*v) + sigma * n).clamp(0.0, 255.0).floor() as u8;
    }
    out
}

/// OpenCV's sigma for a kernel size when `sigmaX = 0`: `0.3 * ((k - 1) * 0.5 - 1) + 0.8`.
pub fn opencv_sigma(ksize: u32) -> f64 {
    0.3 * ((f64::from(ksize) - 1.0) * 0.5 - 1.0) + 0.8
}

/// OpenCV's 1-D Gaussian kernel for `sigma <= 0` (`cv::getGaussianKernel`): the fixed tables for
/// sizes 1, 3, 5 and 7, otherwise the sampled Gaussian of [`opencv_sigma`] normalised to sum 1.
fn opencv_kernel(ksize: u32) -> Vec<f64> {
    match ksize {
        1 => vec![1.0],
        3 => vec![0.25, 0.5, 0.25],
        5 => vec![0.0625, 0.25, 0.375, 0.25, 0.0625],
        7 => vec![
            0.031_25, 0.109_375, 0.218_75, 0.281_25, 0.218_75, 0.109_375, 0.031_25,
        ],
        k => {
            let sigma = opencv_sigma(k);
            let half = f64::from(k - 1) / 2.0;
            let raw: Vec<f64> = (0..k)
                .map(|i| {
                    let x = f64::from(i) - half;
                    (-(x * x) / (2.0 * sigma * sigma)).exp()
                })
                .collect();
            let sum: f64 = raw.iter().sum();
            raw.into_iter().map(|w| w / sum).collect()
        }
    }
}

/// `BORDER_REFLECT_101` (`gfedcb|abcdefgh|gfedcba`) index of `p` in a row of `len` samples,
/// as OpenCV's `borderInterpolate`.
fn reflect_101(mut p: isize, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    let len = len as isize;
    while p < 0 || p >= len {
        p = if p < 0 { -p } else { 2 * len - 2 - p };
    }
    p as usize
}

/// Separable Gaussian blur with OpenCV's kernel for `ksize` ([`opencv_kernel`]), border
/// reflect-101, result truncated to uint8 (the reference's float32 `cv2.GaussianBlur` followed
/// by `astype(np.uint8)`). For sizes up to 7 the weights are dyadic and the sums exact, so the
/// output is bit-identical to the reference.
///
/// # Panics
/// Never for the kernel sizes [`Perturbation::from_str`] accepts; an even `ksize` is rounded up.
pub fn gaussian_blur(image: &RgbImage, ksize: u32) -> RgbImage {
    let kernel = opencv_kernel(ksize | 1);
    let radius = (kernel.len() / 2) as isize;
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w == 0 || h == 0 {
        return image.clone();
    }
    let src = image.as_raw();
    // Horizontal pass into f64 (exact for the dyadic kernels).
    let mut rows = vec![0.0f64; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (i, k) in kernel.iter().enumerate() {
                    let sx = reflect_101(x as isize + i as isize - radius, w);
                    acc += k * f64::from(src[(y * w + sx) * 3 + c]);
                }
                rows[(y * w + x) * 3 + c] = acc;
            }
        }
    }
    let mut out = RgbImage::new(image.width(), image.height());
    let dst: &mut [u8] = &mut out;
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (i, k) in kernel.iter().enumerate() {
                    let sy = reflect_101(y as isize + i as isize - radius, h);
                    acc += k * rows[(sy * w + x) * 3 + c];
                }
                // Sums within 1e-9 of an integer are that integer: the sampled kernels of sizes
                // over 7 sum to 1 only up to rounding, and a flat image must stay flat. (The
                // exact sums of sizes up to 7 have fractions in 1/4096 steps: unaffected.)
                dst[(y * w + x) * 3 + c] = (acc + 1e-9).clamp(0.0, 255.0).floor() as u8;
            }
        }
    }
    out
}

/// SplitMix64 (Steele, Lea, Flood 2014): a fixed, documented stream.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform in [-1, 1).
    fn uniform_pm1(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (2.0 / (1u64 << 53) as f64) - 1.0
    }

    /// Two independent standard normals (Marsaglia's polar method).
    fn polar_pair(&mut self) -> (f64, f64) {
        loop {
            let u = self.uniform_pm1();
            let v = self.uniform_pm1();
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * s.ln() / s).sqrt();
                return (u * f, v * f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for spec in [
            "jpeg:50",
            "noise:25.5",
            "noise:6502.5",
            "blur:5",
            "blur:1",
            "jpeg:100",
        ] {
            let p: Perturbation = spec.parse().unwrap();
            assert_eq!(p.to_string(), spec);
        }
        assert_eq!(
            "JPEG:50".parse::<Perturbation>().unwrap(),
            Perturbation::Jpeg { quality: 50 }
        );
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        for (spec, needle) in [
            ("jpeg:abc", "not an integer"),
            ("jpeg:0", "1-100"),
            ("jpeg:101", "1-100"),
            ("jpeg:300", "not an integer"),
            ("noise:-1", "> 0"),
            ("noise:nan", "finite"),
            ("noise:inf", "finite"),
            ("noise:", "not a number"),
            ("blur:4", "odd"),
            ("blur:0", "odd"),
            ("blur:33", "1-31"),
            ("blur:-3", "positive integer"),
            ("salt:3", "unknown kind"),
            ("jpeg50", "no ':'"),
        ] {
            let err = spec.parse::<Perturbation>().unwrap_err().to_string();
            assert!(err.contains(needle), "{spec}: {err}");
            assert!(err.contains(spec), "{spec}: {err}");
        }
    }

    #[test]
    fn reflect_101_matches_opencv() {
        // cv::borderInterpolate(p, 5, BORDER_REFLECT_101) for p = -3..8.
        let got: Vec<usize> = (-3..8).map(|p| reflect_101(p, 5)).collect();
        assert_eq!(got, [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
        assert_eq!(reflect_101(-4, 1), 0);
        assert_eq!(reflect_101(5, 2), 1);
    }

    #[test]
    fn blur_keeps_flat_images_and_kernel_one_is_identity() {
        let flat = RgbImage::from_pixel(7, 3, image::Rgb([10, 128, 255]));
        assert_eq!(gaussian_blur(&flat, 5), flat);
        assert_eq!(gaussian_blur(&flat, 31), flat);
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([(x * 50) as u8, (y * 60) as u8, 7]));
        assert_eq!(gaussian_blur(&img, 1), img);
        for k in [9, 31] {
            let kernel = opencv_kernel(k);
            assert!((kernel.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn empty_images_pass_through() {
        let empty = RgbImage::new(0, 0);
        assert_eq!(gaussian_blur(&empty, 5), empty);
        assert_eq!(gaussian_noise(&empty, 3.0, 1), empty);
        assert_eq!(
            jpeg_round_trip(&empty, 50, Path::new("e.png")).unwrap(),
            empty
        );
    }

    #[test]
    fn records_name_the_perturbation_and_the_seed_only_when_used() {
        let clean = PerturbationRecord::new(None, 7);
        assert!(clean.is_clean());
        let noise = PerturbationRecord::new(Some(&"noise:25.5".parse().unwrap()), 7);
        assert_eq!((noise.spec.as_str(), noise.seed), ("noise:25.5", Some(7)));
        let blur = PerturbationRecord::new(Some(&"blur:5".parse().unwrap()), 7);
        assert_eq!(blur.seed, None);
        assert!(
            blur.description.contains("sigma 1.10"),
            "{}",
            blur.description
        );
    }
}
