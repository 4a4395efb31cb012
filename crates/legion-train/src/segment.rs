//! `task = "segment"`: grounded artifact explanation (`LegionForCausalLM`), token CE + mask
//! BCE + Dice, scored on the held-out split with the evaluator's mIoU / F1 / ROUGE-L.
//!
//! Samples are SynthScars records with at least one grounded phrase (as the reference training
//! loader keeps), optionally mixed with a second dataset (`data.mix_root`, `data.mix_ratio`).
//! The loop is [`crate::learner`]'s.

use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use legion_data::batch::masks_tensor;
use legion_data::dataset::{OpenOptions, Sample, SampleConfig, SynthScarsSplit};
use legion_data::error::BadInputPolicy;
use legion_data::preprocess::{ClipPreprocessConfig, SamPreprocessConfig};
use legion_model::bundle::{BundleMeta, ModelBundle};
use legion_model::clip_vision::ClipVisionTransformer;
use legion_model::legion::{Legion, LegionConfig};
use legion_model::tokenizer::{
    LEGION_QUESTION, LegionTokenizer, TrainingExample, legion_training_conversation,
};

use crate::clip_pretrain::load_pretrained;
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::evaluation::{TaskEval, evaluate, legion_images};
use crate::learner::{ShardLoss, StepLosses, TrainTask};
use crate::loss::{LossWeights, Normalisers, legion_loss, supervised_tokens};
use crate::rng::{EpochSampler, random_u64, random_unit};
use crate::trainable::configure_trainable;

/// The `LegionConfig` of the run's preset (`model.preset`).
///
/// # Errors
/// [`TrainError::Config`] for an unknown preset.
pub fn preset_config(preset: &str) -> Result<LegionConfig, TrainError> {
    LegionConfig::preset(preset).ok_or_else(|| TrainError::Config {
        source_name: "model.preset".into(),
        message: format!(
            "unknown preset `{preset}` ({})",
            LegionConfig::preset_names()
        ),
    })
}

/// Preprocessing of a model config: CLIP at the tower's input size, SAM on the encoder's
/// canvas with the longest side `sam_longest_side` (default, as at inference: the canvas).
pub fn sample_config(model: &LegionConfig, sam_longest_side: Option<u32>) -> SampleConfig {
    let clip = model.clip.image_size as u32;
    let canvas = model.sam.image_encoder.img_size as u32;
    SampleConfig {
        clip: ClipPreprocessConfig::new(clip, clip),
        sam: SamPreprocessConfig::new(sam_longest_side.unwrap_or(canvas).min(canvas), canvas),
    }
}

fn open_split(root: &Path, split: &str, skip_bad: bool) -> Result<SynthScarsSplit, TrainError> {
    let options = OpenOptions {
        bad_input: if skip_bad {
            BadInputPolicy::Skip
        } else {
            BadInputPolicy::Error
        },
        ..OpenOptions::default()
    };
    let opened = SynthScarsSplit::open(root, split, &options)?;
    for problem in opened.problems() {
        tracing::warn!(location = %problem.location, "{}", problem.message);
    }
    Ok(opened)
}

/// Records the reference training loader keeps: at least one grounded phrase.
fn trainable_indices(split: &SynthScarsSplit) -> Vec<usize> {
    (0..split.len())
        .filter(|&i| !split.entries()[i].grounding.spans.is_empty())
        .collect()
}

/// A record of a split.
pub struct RecordPosition {
    split: Arc<SynthScarsSplit>,
    index: usize,
}

/// One tokenised sample.
pub struct Prepared {
    sample: Sample,
    example: TrainingExample,
}

/// The segmentation task of a run.
pub struct SegmentTask {
    model_config: LegionConfig,
    tokenizer: LegionTokenizer,
    primary: Arc<SynthScarsSplit>,
    primary_indices: Vec<usize>,
    mix: Option<(Arc<SynthScarsSplit>, Vec<usize>)>,
    val_split: Arc<SynthScarsSplit>,
    /// Training preprocessing (SAM at `data.sam_longest_side`).
    sample_config: SampleConfig,
    /// Inference preprocessing (SAM fills its canvas), for the held-out scores.
    eval_sample_config: SampleConfig,
    weights: LossWeights,
    /// Text tokens a row keeps: `model_max_length` minus the image tokens.
    max_text: usize,
    seed: u64,
    mix_ratio: f64,
    model_max_length: usize,
    max_new_tokens: usize,
    preset: String,
}

/// The tower of the pretrained tower folder `dir` (`model.clip`), which must have been
/// pretrained for `model_config`'s tower and hidden layer.
fn pretrained_tower(
    dir: &Path,
    model_config: &LegionConfig,
    device: &Device,
) -> Result<ClipVisionTransformer, TrainError> {
    let (meta, pretrained) = load_pretrained(dir, device)?;
    let same_tower =
        serde_json::to_value(&meta.clip).ok() == serde_json::to_value(&model_config.clip).ok();
    if !same_tower || meta.select_layer != model_config.select_layer {
        return Err(TrainError::Config {
            source_name: format!("model.clip = {}", dir.display()),
            message: format!(
                "the tower was pretrained as {:?} reading layer {}, the preset's is {:?} \
                 reading layer {}",
                meta.clip, meta.select_layer, model_config.clip, model_config.select_layer
            ),
        });
    }
    Ok(pretrained.vision_tower)
}

impl SegmentTask {
    /// The task of `config` and its starting model on `device` (autodiff): random from the
    /// seed with the preset's config (its CLIP tower from the `model.clip` folder when given),
    /// or, with `model.init`, the bundle's weights, config and tokenizer; the trainable plan
    /// applied.
    ///
    /// # Errors
    /// A bad preset, bundle, tokenizer or dataset.
    pub fn new(config: &TrainConfig, device: &Device) -> Result<(Self, Legion), TrainError> {
        device.seed(config.run.seed);
        let (model_config, tokenizer, model) = match &config.model.init {
            Some(init) => {
                if let Some(clip) = &config.model.clip {
                    tracing::warn!(
                        clip = %clip.display(),
                        init = %init.display(),
                        "model.clip is not read: the model.init bundle has its own CLIP tower"
                    );
                }
                let bundle = ModelBundle::load(init, device)?;
                (bundle.config, bundle.tokenizer, bundle.model)
            }
            None => {
                let path = config
                    .data
                    .tokenizer
                    .as_ref()
                    .ok_or_else(|| TrainError::Config {
                        source_name: "data.tokenizer".into(),
                        message: "no tokenizer given".into(),
                    })?;
                let tokenizer = LegionTokenizer::from_file(path)?;
                let model_config = preset_config(&config.model.preset)?;
                let mut model = model_config.init(device)?;
                if let Some(dir) = &config.model.clip {
                    model.vision_tower = pretrained_tower(dir, &model_config, device)?;
                }
                (model_config, tokenizer, model)
            }
        };
        let model = configure_trainable(model, &config.trainable)?;
        if tokenizer.vocab_size() > model_config.llm.vocab_size {
            return Err(TrainError::Config {
                source_name: "data.tokenizer / model.init".into(),
                message: format!(
                    "the tokenizer has {} tokens, the model's vocabulary {}",
                    tokenizer.vocab_size(),
                    model_config.llm.vocab_size
                ),
            });
        }
        let data = &config.data;
        let primary = Arc::new(open_split(&data.root, &data.train_split, data.skip_bad)?);
        let primary_indices = trainable_indices(&primary);
        if primary_indices.is_empty() {
            return Err(TrainError::Config {
                source_name: data.root.display().to_string(),
                message: format!(
                    "split `{}` has no record with a grounded artifact phrase to train on",
                    data.train_split
                ),
            });
        }
        let mix = match (&data.mix_root, data.mix_ratio > 0.0) {
            (Some(root), true) => {
                let split = Arc::new(open_split(root, &data.train_split, data.skip_bad)?);
                let indices = trainable_indices(&split);
                Some((split, indices))
            }
            _ => None,
        };
        let val_split = Arc::new(open_split(&data.root, &data.val_split, data.skip_bad)?);
        let task = Self {
            sample_config: sample_config(&model_config, data.sam_longest_side),
            eval_sample_config: sample_config(&model_config, None),
            max_text: data
                .model_max_length
                .saturating_sub(model_config.num_image_tokens() - 1)
                .max(1),
            weights: LossWeights {
                ce: config.loss.ce_weight,
                bce: config.loss.bce_weight,
                dice: config.loss.dice_weight,
            },
            model_config,
            tokenizer,
            primary,
            primary_indices,
            mix,
            val_split,
            seed: config.run.seed,
            mix_ratio: data.mix_ratio,
            model_max_length: data.model_max_length,
            max_new_tokens: config.run.max_new_tokens,
            preset: config.model.preset.clone(),
        };
        Ok((task, model))
    }
}

impl TrainTask for SegmentTask {
    type Model = Legion;
    type Position = RecordPosition;
    type Item = Prepared;
    type StepContext = Normalisers;

    fn epoch_len(&self) -> usize {
        self.primary_indices.len()
    }

    fn locate(&self, sampler: &mut EpochSampler, k: u64) -> RecordPosition {
        if let Some((split, indices)) = &self.mix
            && random_unit(self.seed, 1, k) < self.mix_ratio
        {
            // Mixed-in data is drawn with replacement, a pure function of k.
            let pick = (random_u64(self.seed, 2, k) % indices.len() as u64) as usize;
            return RecordPosition {
                split: split.clone(),
                index: indices[pick],
            };
        }
        RecordPosition {
            split: self.primary.clone(),
            index: self.primary_indices[sampler.item(k)],
        }
    }

    fn validation_positions(&self) -> Vec<RecordPosition> {
        trainable_indices(&self.val_split)
            .into_iter()
            .map(|index| RecordPosition {
                split: self.val_split.clone(),
                index,
            })
            .collect()
    }

    fn load(&self, position: &RecordPosition) -> Result<Prepared, TrainError> {
        let sample = position.split.load(position.index, &self.sample_config)?;
        let conversation = legion_training_conversation(LEGION_QUESTION, &sample.answer);
        let example = self
            .tokenizer
            .training_example(&conversation, self.model_max_length)?;
        Ok(Prepared { sample, example })
    }

    /// Supervised tokens after truncation, masks that have a `[SEG]` left after truncation.
    fn step_context(&self, prepared: &[Prepared]) -> Normalisers {
        let seg_id = self.tokenizer.special().seg;
        let mut tokens = 0usize;
        let mut masks = 0usize;
        for p in prepared {
            let len = p.example.input_ids.len().min(self.max_text);
            tokens += supervised_tokens(&p.example.labels[..len], len);
            let segs = p.example.input_ids[..len]
                .iter()
                .filter(|&&t| t == seg_id as i64)
                .count();
            masks += segs.min(p.sample.masks.len());
        }
        // The loss clamps `tokens` to at least 1; kept raw here so that counts of several
        // processes add up.
        Normalisers {
            tokens: tokens as f64,
            masks: masks as f64,
        }
    }

    fn context_counts(&self, norm: &Normalisers) -> Vec<f64> {
        vec![norm.tokens, norm.masks]
    }

    fn context_from_counts(&self, counts: &[f64]) -> Normalisers {
        Normalisers {
            tokens: counts[0],
            masks: counts[1],
        }
    }

    fn shard_loss(
        &self,
        model: &Legion,
        shard: &[Prepared],
        norm: Normalisers,
        device: &Device,
    ) -> Result<ShardLoss, TrainError> {
        let examples: Vec<TrainingExample> = shard.iter().map(|p| p.example.clone()).collect();
        let tokens = self.tokenizer.collate(&examples, Some(self.max_text));
        let samples: Vec<&Sample> = shard.iter().map(|p| &p.sample).collect();
        let images = legion_images(&samples, device);
        let out = model.forward_train(&images, &tokens, self.tokenizer.special().seg)?;
        let mut pairs = Vec::new();
        for (row, pred) in out.pred_masks.iter().enumerate() {
            let n_pred = pred.dims()[0];
            let gt = &shard[row].sample.masks;
            let n = n_pred.min(gt.len());
            if n == 0 {
                continue;
            }
            // Both in [SEG] order; truncation may have cut the last [SEG]s.
            let gt = masks_tensor(&gt[..n], device).expect("n > 0 masks");
            pairs.push((pred.clone().narrow(0, 0, n), gt));
        }
        let terms = legion_loss(out.logits, out.labels, pairs, norm, self.weights);
        let scalar = |t: &Tensor<1>| t.clone().into_scalar::<f64>();
        Ok(ShardLoss {
            terms: StepLosses {
                total: scalar(&terms.total),
                ce: scalar(&terms.ce),
                bce: scalar(&terms.bce),
                dice: scalar(&terms.dice),
            },
            total: terms.total,
        })
    }

    fn evaluate(&self, model: &Legion) -> Result<TaskEval, TrainError> {
        let scores = evaluate(
            model,
            &self.tokenizer,
            &self.val_split,
            &self.eval_sample_config,
            self.max_new_tokens,
        )?;
        Ok(TaskEval::Segment(scores))
    }

    /// A [`ModelBundle`] with the LoRA adapters merged.
    fn save_final(&self, model: Legion, steps: u64, dir: &Path) -> Result<Legion, TrainError> {
        let mut meta = BundleMeta::new(
            &self.model_config,
            format!("legion train ({})", self.preset),
        );
        meta.trained_steps = Some(steps);
        let bundle = ModelBundle {
            config: self.model_config.clone(),
            model: model.valid().materialize(),
            tokenizer: self.tokenizer.clone(),
            meta,
        };
        bundle.save(dir)?;
        Ok(bundle.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip_pretrain::{ClipPretrainMeta, ClipPretrainer, save_pretrained};

    #[test]
    fn a_tower_pretrained_for_another_config_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let device = Device::flex();
        let tiny = LegionConfig::tiny();
        let save = |name: &str, clip: &legion_model::clip_vision::ClipVisionConfig, layer| {
            let meta = ClipPretrainMeta {
                clip: clip.clone(),
                select_layer: layer,
                trained_steps: 0,
                data: "generated".into(),
            };
            let path = dir.path().join(name);
            save_pretrained(&ClipPretrainer::init(clip, layer, &device), &meta, &path).unwrap();
            path
        };
        let same = save("same", &tiny.clip, tiny.select_layer);
        pretrained_tower(&same, &tiny, &device).unwrap();
        let narrower = legion_model::clip_vision::ClipVisionConfig {
            hidden_size: 16,
            num_heads: 2,
            ..tiny.clip.clone()
        };
        for path in [
            save("narrower", &narrower, tiny.select_layer),
            save("last-layer", &tiny.clip, -1),
        ] {
            let e = pretrained_tower(&path, &tiny, &device)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("pretrained as") && e.contains("model.clip"),
                "{e}"
            );
        }
    }
}
