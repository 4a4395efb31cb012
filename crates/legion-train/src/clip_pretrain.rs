//! `task = "clip"`: pretraining a small CLIP vision tower on a generated dataset's labels, so
//! that a small LEGION starts, as the real one does, from a pretrained tower it keeps frozen.
//!
//! LEGION's CLIP ViT-L/14-336 comes pretrained (OpenAI) and stays frozen; a tiny LEGION
//! trained from scratch has no such tower, and its from-scratch tower does not learn to tell
//! the images apart within a short run (the tiny main job named the scene's content on 31% of
//! its *training* images after 300 steps, and the artifact kind at chance). This task trains
//! the tower on the generator's record of every image (`labels.jsonl`: its artifact kind and
//! content type), on images generated for it (another seed than the shipped data), through two
//! linear heads on the mean of the patch tokens of the hidden layer LEGION's projector reads
//! (`select_layer`); the heads are discarded by the LEGION that loads the tower
//! (`model.clip` in a segment config).
//!
//! Labels: kind 0 = no artifact, 1 + [`ArtifactCategory`] index (physics, structure,
//! distortion); content = [`ContentType::ALL`] index. The loop is [`crate::learner`]'s.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use legion_data::labels::{ArtifactCategory, ContentType, ImageLabels, Labels};
use legion_data::preprocess::{ClipInput, ClipPreprocessConfig};
use legion_model::bundle::{
    BUNDLE_WEIGHTS_FILE, BundleError, load_burnpack, save_burnpack, write_dir_atomically,
};
use legion_model::clip_vision::{ClipVisionConfig, ClipVisionTransformer};

use crate::config::TrainConfig;
use crate::detect::{ce_shard_loss, clip_pixels, predicted_classes};
use crate::error::TrainError;
use crate::evaluation::TaskEval;
use crate::learner::{ShardLoss, TrainTask};
use crate::rng::EpochSampler;
use crate::segment::preset_config;

/// Kind classes: no artifact, then the three categories.
pub const KIND_CLASSES: usize = 1 + ArtifactCategory::ALL.len();

/// File of a pretrained tower's metadata in its folder.
pub const CLIP_META_FILE: &str = "clip.json";

/// A CLIP vision tower with the two label heads it is pretrained with.
#[derive(Module, Debug)]
pub struct ClipPretrainer {
    /// The tower (what a LEGION loads).
    pub vision_tower: ClipVisionTransformer,
    /// Artifact kind logits ([`KIND_CLASSES`]).
    pub kind_head: Linear,
    /// Content type logits ([`ContentType::ALL`]).
    pub content_head: Linear,
    /// Hidden state read (`select_layer`, Python indexing).
    pub select_layer: isize,
}

impl ClipPretrainer {
    /// A tower of `clip` with fresh heads.
    ///
    /// # Panics
    /// On an invalid tower config (as [`ClipVisionConfig::init`]).
    pub fn init(clip: &ClipVisionConfig, select_layer: isize, device: &Device) -> Self {
        Self {
            vision_tower: clip.init(device),
            kind_head: LinearConfig::new(clip.hidden_size, KIND_CLASSES).init(device),
            content_head: LinearConfig::new(clip.hidden_size, ContentType::ALL.len()).init(device),
            select_layer,
        }
    }

    /// Kind and content logits.
    ///
    /// # Shapes
    /// `pixels` `[B, 3, S, S]` -> (`[B, KIND_CLASSES]`, `[B, 4]`).
    ///
    /// # Errors
    /// [`TrainError::Model`]-wrapped tower errors on a wrong input shape.
    pub fn forward(&self, pixels: Tensor<4>) -> Result<(Tensor<2>, Tensor<2>), TrainError> {
        let patches = self
            .vision_tower
            .forward_features(pixels, self.select_layer)
            .map_err(legion_model::legion::LegionError::Clip)?
            .patches;
        let [batch, _, hidden] = patches.dims();
        let pooled = patches.mean_dim(1).reshape([batch, hidden]);
        Ok((
            self.kind_head.forward(pooled.clone()),
            self.content_head.forward(pooled),
        ))
    }
}

/// What a pretrained tower's folder records besides its weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipPretrainMeta {
    /// The tower's config.
    pub clip: ClipVisionConfig,
    /// Hidden state the heads read.
    pub select_layer: isize,
    /// Optimiser steps it was trained for.
    pub trained_steps: u64,
    /// The data it was trained on.
    pub data: PathBuf,
}

/// Writes a pretrained tower folder (`clip.json` + `model.bpk`) atomically.
///
/// # Errors
/// [`BundleError`] naming the file that failed.
pub fn save_pretrained(
    model: &ClipPretrainer,
    meta: &ClipPretrainMeta,
    dir: &Path,
) -> Result<(), BundleError> {
    write_dir_atomically(dir, |tmp| {
        let path = tmp.join(CLIP_META_FILE);
        let text = serde_json::to_string_pretty(meta).expect("serialisable meta");
        std::fs::write(&path, text).map_err(|source| BundleError::Io {
            path: path.clone(),
            source,
        })?;
        save_burnpack(model, &tmp.join(BUNDLE_WEIGHTS_FILE))
    })
}

/// Loads a pretrained tower folder strictly.
///
/// # Errors
/// [`TrainError::Config`] for a missing or unreadable `clip.json`, [`BundleError`] for weights
/// that do not match its config.
pub fn load_pretrained(
    dir: &Path,
    device: &Device,
) -> Result<(ClipPretrainMeta, ClipPretrainer), TrainError> {
    let path = dir.join(CLIP_META_FILE);
    let bad = |message: String| TrainError::Config {
        source_name: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let meta: ClipPretrainMeta = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let model = ClipPretrainer::init(&meta.clip, meta.select_layer, device);
    let model = load_burnpack(model, &dir.join(BUNDLE_WEIGHTS_FILE))?;
    Ok((meta, model))
}

/// One image of the pretraining data and its two labels.
#[derive(Debug, Clone, PartialEq)]
pub struct KindLabelledImage {
    /// File.
    pub path: PathBuf,
    /// Kind class (0 = no artifact).
    pub kind: i64,
    /// Content class.
    pub content: i64,
}

/// The images of `<root>/<split>/images/` named in `<root>/labels.jsonl`, sorted, with their
/// kind and content classes.
///
/// # Errors
/// [`TrainError::Data`] for an unreadable labels file; [`TrainError::Config`] naming the image
/// when its labels have no content type or mix artifact kinds; [`TrainError::NoLabelledImages`]
/// when none of the split's images is labelled.
pub fn list_kind_labelled(root: &Path, split: &str) -> Result<Vec<KindLabelledImage>, TrainError> {
    let labels_path = root.join("labels.jsonl");
    let labels = Labels::read(&labels_path)?;
    let images = root.join(split).join("images");
    let mut found = Vec::new();
    for labelled in labels.iter() {
        let path = images.join(&labelled.image);
        if !path.is_file() {
            continue;
        }
        let (kind, content) = classes(labelled).map_err(|message| TrainError::Config {
            source_name: format!("{}: image {}", labels_path.display(), labelled.image),
            message,
        })?;
        found.push(KindLabelledImage {
            path,
            kind,
            content,
        });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    if found.is_empty() {
        return Err(TrainError::NoLabelledImages { path: images });
    }
    Ok(found)
}

fn classes(labels: &ImageLabels) -> Result<(i64, i64), String> {
    let content = labels
        .content_type
        .and_then(|c| ContentType::ALL.iter().position(|&t| t == c))
        .ok_or("no content_type")?;
    let kind = match labels.categories.first() {
        None => 0,
        Some(first) => {
            let first = first.ok_or("a ref without a category")?;
            if labels.categories.iter().any(|c| *c != Some(first)) {
                return Err("refs of several kinds (one kind per image is needed)".into());
            }
            1 + ArtifactCategory::ALL
                .iter()
                .position(|&c| c == first)
                .expect("every category is in ALL")
        }
    };
    Ok((kind as i64, content as i64))
}

/// A decoded, preprocessed image and its labels.
pub struct KindLabelledPixels {
    pixels: ClipInput,
    kind: i64,
    content: i64,
}

fn load_image(
    image: &KindLabelledImage,
    clip: &ClipPreprocessConfig,
) -> Result<KindLabelledPixels, TrainError> {
    Ok(KindLabelledPixels {
        pixels: clip_pixels(&image.path, clip)?,
        kind: image.kind,
        content: image.content,
    })
}

/// # Shapes
/// `B = items.len()` -> pixels `[B, 3, S, S]`, kinds `[B]`, contents `[B]`.
fn stack(
    items: &[KindLabelledPixels],
    device: &Device,
) -> (Tensor<4>, Tensor<1, Int>, Tensor<1, Int>) {
    let pixels = Tensor::stack(
        items.iter().map(|i| i.pixels.to_tensor(device)).collect(),
        0,
    );
    let n = items.len();
    let ints = |values: Vec<i64>| Tensor::from_data(TensorData::new(values, [n]), device);
    (
        pixels,
        ints(items.iter().map(|i| i.kind).collect()),
        ints(items.iter().map(|i| i.content).collect()),
    )
}

/// Accuracies of a pretrained tower's heads on a split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipEval {
    /// Images.
    pub images: usize,
    /// Kind accuracy x100 over the images with an artifact (the kinds LEGION is asked to name).
    pub kind_accuracy: f64,
    /// Content accuracy x100 over all images.
    pub content_accuracy: f64,
    /// Kind confusion, planted (rows) x predicted (columns), both [`KIND_CLASSES`] long.
    pub kind_confusion: Vec<Vec<usize>>,
}

impl ClipEval {
    /// `kind 75.00  content 95.00  (40 images)`.
    pub fn one_line(&self) -> String {
        format!(
            "kind {:.2}  content {:.2}  ({} images)",
            self.kind_accuracy, self.content_accuracy, self.images
        )
    }
}

/// Evaluates `model` (plain device) on `images`.
///
/// # Errors
/// [`TrainError`] when an image cannot be read.
pub fn evaluate_pretrained(
    model: &ClipPretrainer,
    images: &[KindLabelledImage],
    clip: &ClipPreprocessConfig,
) -> Result<ClipEval, TrainError> {
    let device = model.kind_head.weight.device();
    let mut confusion = vec![vec![0usize; KIND_CLASSES]; KIND_CLASSES];
    let mut content_ok = 0;
    for chunk in images.chunks(64) {
        let items: Vec<KindLabelledPixels> = chunk
            .par_iter()
            .map(|image| load_image(image, clip))
            .collect::<Result<_, _>>()?;
        let (pixels, _, _) = stack(&items, &device);
        let (kind_logits, content_logits) = model.forward(pixels)?;
        for ((item, kind), content) in chunk
            .iter()
            .zip(predicted_classes(kind_logits))
            .zip(predicted_classes(content_logits))
        {
            confusion[item.kind as usize][kind as usize] += 1;
            content_ok += usize::from(content == item.content);
        }
    }
    let with_artifact: usize = confusion[1..].iter().flatten().sum();
    let kind_ok: usize = (1..KIND_CLASSES).map(|k| confusion[k][k]).sum();
    let rate = |ok: usize, n: usize| 100.0 * ok as f64 / n.max(1) as f64;
    Ok(ClipEval {
        images: images.len(),
        kind_accuracy: rate(kind_ok, with_artifact),
        content_accuracy: rate(content_ok, images.len()),
        kind_confusion: confusion,
    })
}

/// The tower-pretraining task of a run.
pub struct ClipPretrainTask {
    clip_config: ClipVisionConfig,
    select_layer: isize,
    clip: ClipPreprocessConfig,
    train_images: Vec<KindLabelledImage>,
    val_images: Vec<KindLabelledImage>,
    data: PathBuf,
    ce_weight: f64,
}

impl ClipPretrainTask {
    /// The task of `config` and a fresh tower of its preset's CLIP config (seeded by
    /// `run.seed`) on `device` (autodiff).
    ///
    /// # Errors
    /// A bad preset or data folder.
    pub fn new(
        config: &TrainConfig,
        device: &Device,
    ) -> Result<(Self, ClipPretrainer), TrainError> {
        let train_images = list_kind_labelled(&config.data.root, &config.data.train_split)?;
        let val_images = list_kind_labelled(&config.data.root, &config.data.val_split)?;
        let legion = preset_config(&config.model.preset)?;
        device.seed(config.run.seed);
        let model = ClipPretrainer::init(&legion.clip, legion.select_layer, device);
        let size = legion.clip.image_size as u32;
        Ok((
            Self {
                clip_config: legion.clip,
                select_layer: legion.select_layer,
                clip: ClipPreprocessConfig::new(size, size),
                train_images,
                val_images,
                data: config.data.root.clone(),
                ce_weight: config.loss.ce_weight,
            },
            model,
        ))
    }
}

impl TrainTask for ClipPretrainTask {
    /// Images in the whole step.
    type StepContext = usize;
    type Model = ClipPretrainer;
    type Item = KindLabelledPixels;
    type Position = KindLabelledImage;

    fn load(&self, image: &KindLabelledImage) -> Result<KindLabelledPixels, TrainError> {
        load_image(image, &self.clip)
    }

    fn step_context(&self, items: &[KindLabelledPixels]) -> usize {
        items.len()
    }

    fn context_counts(&self, images: &usize) -> Vec<f64> {
        vec![*images as f64]
    }

    fn context_from_counts(&self, counts: &[f64]) -> usize {
        counts[0] as usize
    }

    /// The two heads' mean CEs, summed ([`ce_shard_loss`]).
    fn shard_loss(
        &self,
        model: &ClipPretrainer,
        shard: &[KindLabelledPixels],
        step_images: usize,
        device: &Device,
    ) -> Result<ShardLoss, TrainError> {
        let (pixels, kinds, contents) = stack(shard, device);
        let (kind_logits, content_logits) = model.forward(pixels)?;
        let ce_loss = CrossEntropyLossConfig::new().init(device);
        let ce = ce_loss.forward(kind_logits, kinds) + ce_loss.forward(content_logits, contents);
        Ok(ce_shard_loss(ce, shard.len(), step_images, self.ce_weight))
    }

    fn evaluate(&self, model: &ClipPretrainer) -> Result<TaskEval, TrainError> {
        evaluate_pretrained(model, &self.val_images, &self.clip).map(TaskEval::Clip)
    }

    fn save_final(
        &self,
        model: ClipPretrainer,
        steps: u64,
        dir: &Path,
    ) -> Result<ClipPretrainer, TrainError> {
        let model = model.valid();
        let meta = ClipPretrainMeta {
            clip: self.clip_config.clone(),
            select_layer: self.select_layer,
            trained_steps: steps,
            data: self.data.clone(),
        };
        save_pretrained(&model, &meta, dir)?;
        Ok(model)
    }

    fn epoch_len(&self) -> usize {
        self.train_images.len()
    }

    fn locate(&self, sampler: &mut EpochSampler, k: u64) -> KindLabelledImage {
        self.train_images[sampler.item(k)].clone()
    }

    fn validation_positions(&self) -> Vec<KindLabelledImage> {
        self.val_images.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn labels(
        content: Option<ContentType>,
        categories: &[Option<ArtifactCategory>],
    ) -> ImageLabels {
        ImageLabels {
            image: "x.png".into(),
            content_type: content,
            categories: categories.to_vec(),
        }
    }

    #[test]
    fn classes_follow_the_generator_record_and_reject_what_has_no_single_kind() {
        let physics = Some(ArtifactCategory::Physics);
        let distortion = Some(ArtifactCategory::Distortion);
        let human = Some(ContentType::Human);
        let human_index = ContentType::ALL
            .iter()
            .position(|&c| c == ContentType::Human);
        assert_eq!(
            classes(&labels(human, &[])),
            Ok((0, human_index.unwrap() as i64))
        );
        let (kind, _) = classes(&labels(human, &[distortion, distortion])).unwrap();
        assert_eq!(
            ArtifactCategory::ALL[kind as usize - 1],
            ArtifactCategory::Distortion
        );
        assert!(classes(&labels(human, &[physics, distortion])).is_err());
        assert!(classes(&labels(human, &[None])).is_err());
        assert!(classes(&labels(None, &[physics])).is_err());
    }

    /// data/clip-tiny (what configs/tiny.toml loads) is the tiny preset's tower, loads strictly,
    /// and tells the shipped test images' kinds and contents apart (images it never saw).
    #[test]
    fn the_shipped_tower_names_kinds_and_contents_of_the_shipped_test_split() {
        let device = Device::flex();
        let (meta, model) = load_pretrained(&repo().join("data/clip-tiny"), &device).unwrap();
        let tiny = legion_model::legion::LegionConfig::tiny();
        assert_eq!(
            serde_json::to_value(&meta.clip).unwrap(),
            serde_json::to_value(&tiny.clip).unwrap()
        );
        assert_eq!(meta.select_layer, tiny.select_layer);
        let images = list_kind_labelled(&repo().join("data/synthscars-tiny"), "test").unwrap();
        assert_eq!(images.len(), 40);
        let size = tiny.clip.image_size as u32;
        let eval =
            evaluate_pretrained(&model, &images, &ClipPreprocessConfig::new(size, size)).unwrap();
        // Chance: 33% (kinds of the 36 images with artifacts), 25% (contents).
        assert!(eval.kind_accuracy >= 55.0, "{eval:?}");
        assert!(eval.content_accuracy >= 80.0, "{eval:?}");
    }

    #[test]
    fn a_tower_folder_with_other_weights_fails_to_load() {
        let dir = tempfile::tempdir().unwrap();
        let device = Device::flex();
        let clip = ClipVisionConfig {
            hidden_size: 16,
            ..legion_model::legion::LegionConfig::tiny().clip
        };
        let model = ClipPretrainer::init(&clip, -2, &device);
        let meta = ClipPretrainMeta {
            clip: legion_model::legion::LegionConfig::tiny().clip,
            select_layer: -2,
            trained_steps: 0,
            data: PathBuf::from("nowhere"),
        };
        save_pretrained(&model, &meta, &dir.path().join("tower")).unwrap();
        assert!(load_pretrained(&dir.path().join("tower"), &device).is_err());
        let missing = load_pretrained(&dir.path().join("absent"), &device).unwrap_err();
        assert!(missing.to_string().contains("clip.json"), "{missing}");
    }
}
