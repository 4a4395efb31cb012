//! Images in, model inputs out: decoding (as the reference loader sees images) and the CLIP /
//! SAM preprocessing of `legion-data`, at the sizes a model bundle was built for.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use image::RgbImage;
use legion_data::image_io::decode_rgb;
use legion_data::perturb::Perturbation;
use legion_data::preprocess::{
    ClipPreprocessConfig, SamPreprocessConfig, clip_preprocess, sam_preprocess,
};
use legion_model::bundle::BundleMeta;
use legion_model::legion::{LegionConfig, LegionImages};
use rayon::prelude::*;

use crate::error::InferError;

/// Image file extensions read from folders (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// The two preprocessing settings of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessor {
    /// CLIP input (shortest-edge resize + center crop to the tower's image size).
    pub clip: ClipPreprocessConfig,
    /// SAM input (longest side `meta.sam_target_size` on the encoder's canvas).
    pub sam: SamPreprocessConfig,
}

impl Preprocessor {
    /// The settings of a bundle: CLIP at `config.clip.image_size` (336 for ViT-L/14-336), SAM
    /// longest side `meta.sam_target_size` padded to `config.sam.image_encoder.img_size`.
    pub fn for_model(config: &LegionConfig, meta: &BundleMeta) -> Self {
        let clip_size = config.clip.image_size as u32;
        Self {
            clip: ClipPreprocessConfig::new(clip_size, clip_size),
            sam: SamPreprocessConfig::new(
                meta.sam_target_size as u32,
                config.sam.image_encoder.img_size as u32,
            ),
        }
    }
}

/// One decoded and preprocessed image.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// Where it came from.
    pub path: PathBuf,
    /// The decoded RGB pixels (EXIF orientation applied).
    pub rgb: RgbImage,
    /// CLIP pixels.
    pub clip: legion_data::preprocess::ClipInput,
    /// SAM pixels and sizes.
    pub sam: legion_data::preprocess::SamInput,
}

impl PreparedImage {
    /// Preprocesses an already decoded image.
    ///
    /// # Errors
    /// [`InferError::Preprocess`] naming `path` for an empty image.
    pub fn from_rgb(path: &Path, rgb: RgbImage, pre: &Preprocessor) -> Result<Self, InferError> {
        let wrap = |source| InferError::Preprocess {
            path: path.to_path_buf(),
            source,
        };
        let clip = clip_preprocess(&rgb, &pre.clip).map_err(wrap)?;
        let sam = sam_preprocess(&rgb, &pre.sam).map_err(wrap)?;
        Ok(Self {
            path: path.to_path_buf(),
            rgb,
            clip,
            sam,
        })
    }

    /// Decodes and preprocesses `path`.
    ///
    /// # Errors
    /// [`InferError::Image`] when the file is missing or not a decodable image,
    /// [`InferError::Preprocess`] for an empty image.
    pub fn load(path: &Path, pre: &Preprocessor) -> Result<Self, InferError> {
        Self::load_perturbed(path, pre, None)
    }

    /// Decodes `path`, applies `perturb` (a degradation and its seed) to the decoded pixels and
    /// preprocesses the result: the model, the overlays and the records all see the perturbed
    /// image.
    ///
    /// # Errors
    /// As [`PreparedImage::load`], plus [`InferError::Perturb`] when the perturbation fails
    /// (a JPEG side over 65535 pixels).
    pub fn load_perturbed(
        path: &Path,
        pre: &Preprocessor,
        perturb: Option<(&Perturbation, u64)>,
    ) -> Result<Self, InferError> {
        let rgb = decode_rgb(path)?;
        let rgb = match perturb {
            Some((perturbation, seed)) => perturbation.apply(&rgb, seed, path)?,
            None => rgb,
        };
        Self::from_rgb(path, rgb, pre)
    }
}

/// Decodes and preprocesses several images in parallel (rayon), keeping their order; each
/// image's result is separate so one bad file does not stop the others.
pub fn prepare_all(
    paths: &[PathBuf],
    pre: &Preprocessor,
) -> Vec<Result<PreparedImage, InferError>> {
    prepare_all_perturbed(paths, pre, None)
}

/// [`prepare_all`] with a perturbation applied after decoding ([`PreparedImage::load_perturbed`]).
pub fn prepare_all_perturbed(
    paths: &[PathBuf],
    pre: &Preprocessor,
    perturb: Option<(&Perturbation, u64)>,
) -> Vec<Result<PreparedImage, InferError>> {
    paths
        .par_iter()
        .map(|p| PreparedImage::load_perturbed(p, pre, perturb))
        .collect()
}

/// Stacks prepared images into the model's batch input.
///
/// # Shapes
/// `images.len() = B` -> `clip_pixels [B, 3, S, S]`, `sam_pixels [B, 3, P, P]`.
///
/// # Panics
/// When `images` is empty (burn cannot concatenate nothing).
pub fn to_legion_images(images: &[&PreparedImage], device: &Device) -> LegionImages {
    assert!(
        !images.is_empty(),
        "to_legion_images needs at least one image"
    );
    let clip: Vec<Tensor<4>> = images
        .iter()
        .map(|i| i.clip.to_tensor(device).unsqueeze_dim(0))
        .collect();
    let sam: Vec<Tensor<4>> = images
        .iter()
        .map(|i| i.sam.to_tensor(device).unsqueeze_dim(0))
        .collect();
    LegionImages {
        clip_pixels: Tensor::cat(clip, 0),
        sam_pixels: Tensor::cat(sam, 0),
        sam_resized_hw: images
            .iter()
            .map(|i| (i.sam.resized_hw.0 as usize, i.sam.resized_hw.1 as usize))
            .collect(),
        original_hw: images
            .iter()
            .map(|i| (i.sam.original_hw.0 as usize, i.sam.original_hw.1 as usize))
            .collect(),
    }
}

/// Whether `path` has an image extension ([`IMAGE_EXTENSIONS`]).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The image files directly inside `dir`, sorted by name.
///
/// # Errors
/// [`InferError::Io`] when the folder cannot be listed.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, InferError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| InferError::io(dir, e))? {
        let path = entry.map_err(|e| InferError::io(dir, e))?.path();
        if path.is_file() && is_image_file(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Expands command-line inputs: files are kept, folders contribute their images
/// ([`list_images`]).
///
/// # Errors
/// [`InferError::Io`] for a path that does not exist or a folder that cannot be read.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, InferError> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            out.extend(list_images(input)?);
        } else if input.is_file() {
            out.push(input.clone());
        } else {
            return Err(InferError::io(
                input,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            ));
        }
    }
    Ok(out)
}
