//! Running a model bundle on images: [`Analyzer`] turns images into [`AnalysisRecord`]s, and
//! [`write_analysis`] writes a record's JSON and overlay PNG.
//!
//! ```text
//! legion analyze photo.jpg --checkpoint runs/tiny/final --out analysis/ --html analysis/report.html
//! ```

use std::path::{Path, PathBuf};

use burn::tensor::{Device, FloatDType};
use image::RgbImage;
use legion_model::bundle::ModelBundle;
use legion_model::generation::GenerationConfig;

use crate::error::InferError;
use crate::input::{PreparedImage, Preprocessor, to_legion_images};
use crate::overlay::render_analysis_overlay;
use crate::record::{AnalysisRecord, analysis_record};

/// A loaded model with its preprocessing and generation settings.
#[derive(Debug)]
pub struct Analyzer {
    /// The model, tokenizer and settings.
    pub bundle: ModelBundle,
    /// Where the model runs.
    pub device: Device,
    /// Generation settings (greedy, LEGION's 512 new tokens, the tokenizer's EOS / pad).
    pub generation: GenerationConfig,
    /// CLIP / SAM preprocessing at the bundle's sizes.
    pub preprocessor: Preprocessor,
}

impl Analyzer {
    /// Wraps a loaded bundle with LEGION's inference settings.
    pub fn new(bundle: ModelBundle, device: Device) -> Self {
        let special = *bundle.tokenizer.special();
        let mut generation = GenerationConfig::legion();
        generation.eos_token_id = Some(special.eos);
        generation.pad_token_id = special.unk;
        let preprocessor = Preprocessor::for_model(&bundle.config, &bundle.meta);
        Self {
            bundle,
            device,
            generation,
            preprocessor,
        }
    }

    /// Loads the bundle in `dir` onto `device`.
    ///
    /// # Errors
    /// [`InferError::Bundle`] when the bundle is missing or invalid.
    pub fn load(dir: &Path, device: Device) -> Result<Self, InferError> {
        Self::load_as(dir, device, None)
    }

    /// Loads the bundle in `dir` onto `device` with its weights in `dtype` (`None`: as
    /// stored); the model computes in that dtype (see `legion_model::precision`).
    ///
    /// # Errors
    /// [`InferError::Bundle`] when the bundle is missing or invalid.
    pub fn load_as(
        dir: &Path,
        device: Device,
        dtype: Option<FloatDType>,
    ) -> Result<Self, InferError> {
        Ok(Self::new(
            ModelBundle::load_as(dir, &device, dtype)?,
            device,
        ))
    }

    /// Decodes and preprocesses one image file for this model.
    ///
    /// # Errors
    /// As [`PreparedImage::load`].
    pub fn prepare(&self, path: &Path) -> Result<PreparedImage, InferError> {
        PreparedImage::load(path, &self.preprocessor)
    }

    /// Analyses a batch of prepared images in one model call; the records are named by the
    /// images' file names.
    ///
    /// # Errors
    /// [`InferError::Model`] when the model fails, [`InferError::Config`] for unreadable masks.
    pub fn analyze_batch(
        &self,
        images: &[&PreparedImage],
    ) -> Result<Vec<AnalysisRecord>, InferError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let inputs = to_legion_images(images, &self.device);
        let analyses =
            self.bundle
                .model
                .analyze(&inputs, &self.bundle.tokenizer, &self.generation)?;
        images
            .iter()
            .zip(&analyses)
            .map(|(image, analysis)| {
                let mut record = analysis_record(&file_name(&image.path), analysis)?;
                // Without artifacts there is no mask to take the size from.
                record.width = image.rgb.width() as usize;
                record.height = image.rgb.height() as usize;
                crate::record::finalize_area(&mut record);
                Ok(record)
            })
            .collect()
    }

    /// Analyses one decoded image (named `name` in the record).
    ///
    /// # Errors
    /// As [`Analyzer::analyze_batch`], plus [`InferError::Preprocess`] for an empty image.
    pub fn analyze_rgb(&self, name: &str, rgb: RgbImage) -> Result<AnalysisRecord, InferError> {
        let prepared = PreparedImage::from_rgb(Path::new(name), rgb, &self.preprocessor)?;
        let mut records = self.analyze_batch(&[&prepared])?;
        Ok(records.remove(0))
    }
}

/// The file name of `path` (lossy), or the whole path when it has none.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The file stem of `path` (`0001.jpg` -> `0001`), the key of the evaluator's mask files.
pub fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file_name(path))
}

/// Files written for one analysed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysisFiles {
    /// `<out>/<stem>.json`.
    pub json: PathBuf,
    /// `<out>/<stem>.overlay.png`.
    pub overlay: PathBuf,
}

/// Writes `<out>/<stem>.json` (the record, pretty JSON) and `<out>/<stem>.overlay.png`, and
/// returns their paths and the overlay.
///
/// # Errors
/// [`InferError::Io`] / [`InferError::ImageWrite`] naming the file.
pub fn write_analysis(
    out: &Path,
    stem: &str,
    record: &AnalysisRecord,
    image: &RgbImage,
) -> Result<(AnalysisFiles, RgbImage), InferError> {
    std::fs::create_dir_all(out).map_err(|e| InferError::io(out, e))?;
    let json = out.join(format!("{stem}.json"));
    let text = serde_json::to_string_pretty(record).expect("records always serialise");
    std::fs::write(&json, text).map_err(|e| InferError::io(&json, e))?;
    let overlay = render_analysis_overlay(image, record);
    let overlay_path = out.join(format!("{stem}.overlay.png"));
    overlay
        .save(&overlay_path)
        .map_err(|e| InferError::image_write(&overlay_path, e))?;
    Ok((
        AnalysisFiles {
            json,
            overlay: overlay_path,
        },
        overlay,
    ))
}
