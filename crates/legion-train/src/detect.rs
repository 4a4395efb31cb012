//! `task = "detect"`: training LEGION's image-level real/fake head (`LegionForCls`: CLIP hidden
//! layer -2 CLS -> Linear -> ReLU -> Linear 2) with cross-entropy, labels real = 1, fake = 0.
//!
//! Data layout (UniversalFakeDetect / CNNDetection): every image under a folder named
//! `0_real` is real, under `1_fake` fake, at any depth below `<root>/<split>/` (e.g.
//! `<root>/train/progan/car/1_fake/x.png`); the group of an image is its first folder below
//! the split. The loop is [`crate::learner`]'s (optimiser, schedule, clipping, accumulation,
//! devices, checkpoints, exact resume, NaN guard, validation); the tower is frozen unless
//! `trainable.full`.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;

use legion_data::image_io::decode_rgb;
use legion_data::preprocess::{ClipInput, ClipPreprocessConfig, clip_preprocess};
use legion_model::bundle::DetectorBundle;
use legion_model::detection_head::{FAKE_LABEL, REAL_LABEL};
use legion_model::legion::{LegionClsConfig, LegionForCls};

use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::evaluation::{DetectEval, TaskEval};
use crate::learner::{ShardLoss, StepLosses, TrainTask};
use crate::rng::EpochSampler;

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImage {
    /// File.
    pub path: PathBuf,
    /// [`REAL_LABEL`] or [`FAKE_LABEL`].
    pub label: i64,
    /// First folder below the split (the generator), or `""`.
    pub group: String,
}

/// Lists the images of `<root>/<split>/` by their `0_real` / `1_fake` folders, sorted.
///
/// # Errors
/// [`TrainError::Io`] when a folder cannot be read, [`TrainError::NoLabelledImages`] when
/// it holds no labelled image.
pub fn list_labelled_images(root: &Path, split: &str) -> Result<Vec<LabelledImage>, TrainError> {
    let base = root.join(split);
    let mut found = Vec::new();
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        let io_error = |source| TrainError::Io {
            path: dir.clone(),
            source,
        };
        let entries = std::fs::read_dir(&dir).map_err(io_error)?;
        for entry in entries {
            let path = entry.map_err(io_error)?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let is_image = path.extension().is_some_and(|e| {
                ["png", "jpg", "jpeg", "webp"]
                    .contains(&e.to_string_lossy().to_lowercase().as_str())
            });
            let label = match dir.file_name().and_then(|n| n.to_str()) {
                Some("0_real") => REAL_LABEL,
                Some("1_fake") => FAKE_LABEL,
                _ => continue,
            };
            if is_image {
                let group = path
                    .strip_prefix(&base)
                    .ok()
                    .and_then(|rel| rel.components().next())
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .filter(|g| g != "0_real" && g != "1_fake")
                    .unwrap_or_default();
                found.push(LabelledImage { path, label, group });
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    if found.is_empty() {
        return Err(TrainError::NoLabelledImages { path: base });
    }
    Ok(found)
}

/// The classifier config of a run's preset.
///
/// # Errors
/// [`TrainError::Config`] for an unknown preset.
pub fn detector_config(preset: &str) -> Result<LegionClsConfig, TrainError> {
    LegionClsConfig::preset(preset).ok_or_else(|| TrainError::Config {
        source_name: "model.preset".into(),
        message: format!(
            "unknown preset `{preset}` ({})",
            legion_model::legion::LegionConfig::preset_names()
        ),
    })
}

/// A decoded, preprocessed image and its label.
pub struct LabelledPixels {
    pixels: ClipInput,
    label: i64,
}

/// The CLIP input of the image file `path`.
///
/// # Errors
/// [`TrainError`] naming the file when it cannot be decoded or preprocessed.
pub(crate) fn clip_pixels(
    path: &Path,
    clip: &ClipPreprocessConfig,
) -> Result<ClipInput, TrainError> {
    let rgb = decode_rgb(path)?;
    clip_preprocess(&rgb, clip).map_err(|source| TrainError::Preprocess {
        path: path.to_path_buf(),
        source,
    })
}

/// The predicted class of every row of `logits` (`[B, classes]`).
pub(crate) fn predicted_classes(logits: Tensor<2>) -> Vec<i64> {
    logits
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("int predictions")
}

/// The loss of an image-level task's shard from its mean cross-entropy `ce`: weighed by the
/// shard's share of the step's `step_images` (the shards' losses add up to the step's mean; a
/// factor of exactly 1 for a whole-step shard), times `ce_weight`.
pub(crate) fn ce_shard_loss(
    ce: Tensor<1>,
    shard_images: usize,
    step_images: usize,
    ce_weight: f64,
) -> ShardLoss {
    let ce = ce.mul_scalar(shard_images as f64 / step_images as f64);
    let total = ce.clone().mul_scalar(ce_weight);
    ShardLoss {
        terms: StepLosses {
            total: total.clone().into_scalar::<f64>(),
            ce: ce.into_scalar::<f64>(),
            bce: 0.0,
            dice: 0.0,
        },
        total,
    }
}

fn load_labelled(
    image: &LabelledImage,
    clip: &ClipPreprocessConfig,
) -> Result<LabelledPixels, TrainError> {
    Ok(LabelledPixels {
        pixels: clip_pixels(&image.path, clip)?,
        label: image.label,
    })
}

/// # Shapes
/// `B = items.len()` -> pixels `[B, 3, S, S]`, labels `[B]`.
fn stack(items: &[LabelledPixels], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let pixels = Tensor::stack(
        items.iter().map(|i| i.pixels.to_tensor(device)).collect(),
        0,
    );
    let labels: Vec<i64> = items.iter().map(|i| i.label).collect();
    let n = labels.len();
    (
        pixels,
        Tensor::from_data(TensorData::new(labels, [n]), device),
    )
}

/// Evaluates `model` (plain device) on `images`.
///
/// # Errors
/// [`TrainError`] when an image cannot be read.
pub fn evaluate_detector(
    model: &LegionForCls,
    images: &[LabelledImage],
    clip: &ClipPreprocessConfig,
) -> Result<DetectEval, TrainError> {
    let device = model.prediction_head.fc1.weight.device();
    let (mut correct, mut real_ok, mut real_n, mut fake_ok, mut fake_n) = (0, 0, 0, 0, 0);
    for chunk in images.chunks(32) {
        let items: Vec<LabelledPixels> = chunk
            .par_iter()
            .map(|image| load_labelled(image, clip))
            .collect::<Result<_, _>>()?;
        let (pixels, _) = stack(&items, &device);
        let predicted = predicted_classes(model.forward(pixels)?);
        for (item, p) in chunk.iter().zip(predicted) {
            let ok = usize::from(p == item.label);
            correct += ok;
            if item.label == REAL_LABEL {
                real_ok += ok;
                real_n += 1;
            } else {
                fake_ok += ok;
                fake_n += 1;
            }
        }
    }
    let rate = |ok: usize, n: usize| {
        if n == 0 {
            0.0
        } else {
            100.0 * ok as f64 / n as f64
        }
    };
    let classes = usize::from(real_n > 0) + usize::from(fake_n > 0);
    Ok(DetectEval {
        images: images.len(),
        accuracy: rate(correct, images.len()),
        balanced_accuracy: (rate(real_ok, real_n) + rate(fake_ok, fake_n)) / classes.max(1) as f64,
    })
}

/// The detection task of a run.
pub struct DetectTask {
    cls_config: LegionClsConfig,
    clip: ClipPreprocessConfig,
    train_images: Vec<LabelledImage>,
    val_images: Vec<LabelledImage>,
    ce_weight: f64,
}

impl DetectTask {
    /// The task of `config` and its starting classifier on `device` (autodiff): random from
    /// the seed with the preset's config, or the `model.init` detector bundle; the tower
    /// frozen unless `trainable.full`.
    ///
    /// # Errors
    /// A bad preset, bundle or data folder.
    pub fn new(config: &TrainConfig, device: &Device) -> Result<(Self, LegionForCls), TrainError> {
        let train_images = list_labelled_images(&config.data.root, &config.data.train_split)?;
        let val_images = list_labelled_images(&config.data.root, &config.data.val_split)?;
        device.seed(config.run.seed);
        let (cls_config, mut model) = match &config.model.init {
            Some(init) => {
                let bundle = DetectorBundle::load(init, device)?;
                (bundle.config, bundle.model)
            }
            None => {
                let cls_config = detector_config(&config.model.preset)?;
                let model = cls_config.init(device)?;
                (cls_config, model)
            }
        };
        if !config.trainable.full {
            model.vision_tower = model.vision_tower.no_grad();
        }
        let size = cls_config.clip.image_size as u32;
        let clip = ClipPreprocessConfig::new(size, size);
        Ok((
            Self {
                cls_config,
                clip,
                train_images,
                val_images,
                ce_weight: config.loss.ce_weight,
            },
            model,
        ))
    }
}

impl TrainTask for DetectTask {
    /// Images in the whole step.
    type StepContext = usize;
    type Model = LegionForCls;
    type Item = LabelledPixels;
    type Position = LabelledImage;

    fn load(&self, image: &LabelledImage) -> Result<LabelledPixels, TrainError> {
        load_labelled(image, &self.clip)
    }

    fn step_context(&self, items: &[LabelledPixels]) -> usize {
        items.len()
    }

    fn context_counts(&self, images: &usize) -> Vec<f64> {
        vec![*images as f64]
    }

    fn context_from_counts(&self, counts: &[f64]) -> usize {
        counts[0] as usize
    }

    /// Mean CE over the shard ([`ce_shard_loss`]).
    fn shard_loss(
        &self,
        model: &LegionForCls,
        shard: &[LabelledPixels],
        step_images: usize,
        device: &Device,
    ) -> Result<ShardLoss, TrainError> {
        let (pixels, labels) = stack(shard, device);
        let logits = model.forward(pixels)?;
        let ce = CrossEntropyLossConfig::new()
            .init(device)
            .forward(logits, labels);
        Ok(ce_shard_loss(ce, shard.len(), step_images, self.ce_weight))
    }

    fn evaluate(&self, model: &LegionForCls) -> Result<TaskEval, TrainError> {
        evaluate_detector(model, &self.val_images, &self.clip).map(TaskEval::Detect)
    }

    fn save_final(
        &self,
        model: LegionForCls,
        _steps: u64,
        dir: &Path,
    ) -> Result<LegionForCls, TrainError> {
        let bundle = DetectorBundle {
            config: self.cls_config.clone(),
            model: model.valid(),
            source: "legion train (task detect)".into(),
        };
        bundle.save(dir)?;
        Ok(bundle.model)
    }

    fn epoch_len(&self) -> usize {
        self.train_images.len()
    }

    fn locate(&self, sampler: &mut EpochSampler, k: u64) -> LabelledImage {
        self.train_images[sampler.item(k)].clone()
    }

    fn validation_positions(&self) -> Vec<LabelledImage> {
        self.val_images.clone()
    }
}
