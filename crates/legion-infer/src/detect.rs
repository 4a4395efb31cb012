//! Image-level real/fake detection with `LegionForCls` (CLIP layer -2 CLS -> 2-way head).
//!
//! A detector directory is a [`legion_model::bundle::DetectorBundle`] (`detector.json` +
//! `model.bpk`), as `legion train` with `task = "detect"` writes it.
//! [`Detector::from_glamm`] reads a reference `LegionForCls` safetensors file instead (CLIP
//! ViT-L/14-336 + head 1024 -> 2048 -> 2). Scores follow the evaluator's convention: the
//! probability that the image is **real** (label 1); fake = 0.

use std::path::{Path, PathBuf};

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use image::RgbImage;
use legion_data::preprocess::{ClipPreprocessConfig, clip_preprocess};
use legion_model::bundle::DetectorBundle;
use legion_model::legion::{LegionClsConfig, LegionForCls};
use serde::{Deserialize, Serialize};

use crate::error::InferError;

/// A loaded real/fake classifier with its CLIP preprocessing.
#[derive(Debug)]
pub struct Detector {
    /// Component shapes.
    pub config: LegionClsConfig,
    /// The classifier.
    pub model: LegionForCls,
    /// CLIP preprocessing (shortest edge and crop = the tower's image size).
    pub clip: ClipPreprocessConfig,
    /// Where it runs.
    pub device: Device,
}

/// One image's detection result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionScore {
    /// Image file name.
    pub image: String,
    /// Probability that the image is real (label 1).
    pub score: f64,
    /// `"real"` when `score > 0.5`, else `"fake"`.
    pub prediction: String,
}

impl Detector {
    /// A detector from a config and model (weights already set).
    pub fn new(config: LegionClsConfig, model: LegionForCls, device: Device) -> Self {
        let size = config.clip.image_size as u32;
        Self {
            config,
            model,
            clip: ClipPreprocessConfig::new(size, size),
            device,
        }
    }

    /// Loads a detector directory (see the module docs).
    ///
    /// # Errors
    /// [`InferError::Bundle`] naming the missing / invalid file or the mismatching tensors.
    pub fn load(dir: &Path, device: Device) -> Result<Self, InferError> {
        let bundle = DetectorBundle::load(dir, &device)?;
        Ok(Self::new(bundle.config, bundle.model, device))
    }

    /// Reads a reference `LegionForCls` safetensors file (CLIP ViT-L/14-336).
    ///
    /// # Errors
    /// [`InferError::Model`] listing missing / unexpected tensors.
    pub fn from_glamm(path: &Path, device: Device) -> Result<Self, InferError> {
        let config = LegionClsConfig::legion_cls();
        let model = config.init(&device)?.load_glamm(path)?;
        Ok(Self::new(config, model, device))
    }

    /// Writes a detector directory (see the module docs).
    ///
    /// # Errors
    /// [`InferError::Bundle`] naming the file.
    pub fn save(&self, dir: &Path) -> Result<(), InferError> {
        DetectorBundle {
            config: self.config.clone(),
            model: self.model.clone(),
            source: "legion-infer".into(),
        }
        .save(dir)?;
        Ok(())
    }

    /// Probability that each image is real.
    ///
    /// # Shapes
    /// `images.len() = B` images of any size -> `B` scores.
    ///
    /// # Errors
    /// [`InferError::Preprocess`] for an empty image, [`InferError::Model`] on a model failure.
    pub fn real_probability(&self, images: &[(&Path, &RgbImage)]) -> Result<Vec<f64>, InferError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let mut pixels = Vec::with_capacity(images.len());
        for (path, image) in images {
            let input =
                clip_preprocess(image, &self.clip).map_err(|source| InferError::Preprocess {
                    path: path.to_path_buf(),
                    source,
                })?;
            pixels.push(input.to_tensor(&self.device).unsqueeze_dim::<4>(0));
        }
        let logits = self.model.forward(Tensor::cat(pixels, 0))?;
        let probs = softmax(logits, 1);
        let n = images.len();
        let real: Vec<f32> = probs
            .narrow(1, 1, 1)
            .reshape([n])
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|source| InferError::Readback {
                what: "detector output",
                source: Box::new(source),
            })?;
        Ok(real.into_iter().map(f64::from).collect())
    }

    /// Scores image files in batches of `batch_size`; unreadable images are returned as
    /// errors beside the scores of the others.
    pub fn score_files(
        &self,
        paths: &[PathBuf],
        batch_size: usize,
        progress: &dyn legion_data::Progress,
    ) -> Vec<Result<DetectionScore, InferError>> {
        let mut out = Vec::with_capacity(paths.len());
        progress.start("detect", paths.len() as u64);
        for chunk in paths.chunks(batch_size.max(1)) {
            let decoded: Vec<Result<RgbImage, InferError>> = chunk
                .iter()
                .map(|p| legion_data::image_io::decode_rgb(p).map_err(InferError::from))
                .collect();
            let ok: Vec<(&Path, &RgbImage)> = chunk
                .iter()
                .zip(&decoded)
                .filter_map(|(p, d)| d.as_ref().ok().map(|img| (p.as_path(), img)))
                .collect();
            let mut scores = match self.real_probability(&ok) {
                Ok(s) => s.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => {
                    let shared = std::sync::Arc::new(e);
                    ok.iter()
                        .map(|_| Err(InferError::Batch(shared.clone())))
                        .collect()
                }
            }
            .into_iter();
            for (path, d) in chunk.iter().zip(decoded) {
                out.push(d.and_then(|_| {
                    scores
                        .next()
                        .expect("one score per decoded image")
                        .map(|score| DetectionScore {
                            image: crate::analyze::file_name(path),
                            score,
                            prediction: if score > 0.5 { "real" } else { "fake" }.to_string(),
                        })
                }));
            }
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
        out
    }
}
