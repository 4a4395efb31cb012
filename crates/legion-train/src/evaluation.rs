//! Held-out evaluation of a model during and after training: greedy generation with LEGION's
//! question, one mask per generated `[SEG]`, scored with the evaluator's metrics.
//!
//! Conventions are the evaluator's (`legion-eval`, the LEGION paper's): prediction = OR of all
//! `[SEG]` masks with logit > 0 at the original size; GT = `cv2.fillPoly` of every ref of the
//! record; per-image mIoU (background and artifact IoU, `+1e-6`) and artifact F1, plain mean
//! over images, x100; ROUGE-L F of the cleaned answer against the cleaned caption, x100. The
//! all-background predictor is scored in the same pass, so a run shows what it adds over it.

use burn::tensor::{Device, Tensor};
use serde::Serialize;

use legion_data::dataset::{Sample, SampleConfig, SynthScarsSplit};
use legion_data::labels::ArtifactCategory;
use legion_data::synth::named_kind;
use legion_eval::ground_truth::polygon_gt_mask;
use legion_eval::metrics::localization::{PixelCounts, f1_fg, miou_bg_fg};
use legion_eval::rouge::{clean_analysis_text, rouge_l};
use legion_model::generation::GenerationConfig;
use legion_model::legion::{Legion, LegionImages};
use legion_model::tokenizer::LegionTokenizer;

use crate::error::TrainError;

/// Images analysed per generation batch.
const EVAL_BATCH: usize = 8;

/// Scores of a model on a split (percentages, as the paper's tables).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalSummary {
    /// Images scored.
    pub images: usize,
    /// Per-image mean mIoU x100.
    pub miou: f64,
    /// Per-image mean artifact F1 x100.
    pub f1: f64,
    /// Mean ROUGE-L F x100 of the explanation.
    pub rouge_l: f64,
    /// The all-background predictor's mIoU x100 on the same images.
    pub background_miou: f64,
    /// The all-background predictor's F1 x100.
    pub background_f1: f64,
    /// Mean number of `[SEG]` masks per image.
    pub masks_per_image: f64,
    /// Fraction of predicted pixels over all pixels.
    pub predicted_area: f64,
    /// Whether the predicted phrases name the planted kind of artifact (images whose truth
    /// phrases name a kind in the synthetic generator's vocabulary; `None` when none do).
    pub kinds: Option<KindScores>,
}

/// How often the model names the kind of artifact planted in an image (the synthetic data's
/// phrases name it, [`legion_data::synth::named_kind`]).
///
/// Per image whose truth phrases name a kind: the planted kind is that of its first ref (the
/// generator plants one kind per image), the named kind that of the first predicted phrase that
/// names one, or none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindScores {
    /// Images scored (those with a planted kind).
    pub images: usize,
    /// Share of them whose named kind is the planted one, x100.
    pub accuracy: f64,
    /// `confusion[planted][named]`: rows and columns in [`ArtifactCategory::ALL`] order, plus a
    /// last column for "named no kind".
    pub confusion: [[usize; 4]; 3],
}

impl KindScores {
    fn from_pairs(pairs: &[(ArtifactCategory, Option<ArtifactCategory>)]) -> Option<Self> {
        if pairs.is_empty() {
            return None;
        }
        let index = |k: ArtifactCategory| {
            ArtifactCategory::ALL
                .iter()
                .position(|&c| c == k)
                .expect("ALL lists every category")
        };
        let mut confusion = [[0usize; 4]; 3];
        for &(planted, named) in pairs {
            confusion[index(planted)][named.map_or(3, index)] += 1;
        }
        let right = pairs.iter().filter(|(p, n)| Some(*p) == *n).count();
        Some(Self {
            images: pairs.len(),
            accuracy: 100.0 * right as f64 / pairs.len() as f64,
            confusion,
        })
    }

    /// The confusion table in Markdown (planted kind per row, named kind per column).
    pub fn table(&self) -> String {
        let names: Vec<String> = ArtifactCategory::ALL
            .iter()
            .map(|k| k.title().to_lowercase())
            .collect();
        let mut out = format!(
            "| planted \\ named | {} | none |\n|---|---|---|---|---|\n",
            names.join(" | ")
        );
        for (name, row) in names.iter().zip(&self.confusion) {
            let cells: Vec<String> = row.iter().map(usize::to_string).collect();
            out.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
        }
        out
    }
}

impl EvalSummary {
    /// `mIoU 54.1  F1 30.2  ROUGE-L 40.0  kind named 61.1  (all-background: mIoU 45.0  F1 12.5)`.
    pub fn one_line(&self) -> String {
        let kinds = self
            .kinds
            .as_ref()
            .map(|k| format!("  kind named {:.1}", k.accuracy))
            .unwrap_or_default();
        format!(
            "mIoU {:.2}  F1 {:.2}  ROUGE-L {:.2}  masks/image {:.2}{kinds}  (all-background: mIoU {:.2}  F1 {:.2}; {} images)",
            self.miou,
            self.f1,
            self.rouge_l,
            self.masks_per_image,
            self.background_miou,
            self.background_f1,
            self.images
        )
    }
}

/// Accuracy of a real/fake detector on a split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectEval {
    /// Images.
    pub images: usize,
    /// Accuracy x100.
    pub accuracy: f64,
    /// Mean of the real and fake accuracies x100.
    pub balanced_accuracy: f64,
}

impl DetectEval {
    /// `accuracy 93.75  balanced accuracy 93.75  (16 images)`.
    pub fn one_line(&self) -> String {
        format!(
            "accuracy {:.2}  balanced accuracy {:.2}  ({} images)",
            self.accuracy, self.balanced_accuracy, self.images
        )
    }
}

/// The held-out scores of a run, one variant per task (serialised as the scores alone).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TaskEval {
    /// `task = "segment"`: mIoU / F1 / ROUGE-L.
    Segment(EvalSummary),
    /// `task = "detect"`: real/fake accuracy.
    Detect(DetectEval),
    /// `task = "clip"`: kind and content accuracy of the pretrained tower's heads.
    Clip(crate::clip_pretrain::ClipEval),
}

impl TaskEval {
    /// The scores on one line, for progress messages.
    pub fn one_line(&self) -> String {
        match self {
            TaskEval::Segment(scores) => scores.one_line(),
            TaskEval::Detect(scores) => scores.one_line(),
            TaskEval::Clip(scores) => scores.one_line(),
        }
    }
}

/// The model inputs of preprocessed samples, on `device`.
///
/// # Shapes
/// `B = samples.len()` -> [`LegionImages`] of batch `B`.
pub fn legion_images(samples: &[&Sample], device: &Device) -> LegionImages {
    LegionImages {
        clip_pixels: Tensor::stack(
            samples.iter().map(|s| s.clip.to_tensor(device)).collect(),
            0,
        ),
        sam_pixels: Tensor::stack(samples.iter().map(|s| s.sam.to_tensor(device)).collect(), 0),
        sam_resized_hw: samples
            .iter()
            .map(|s| (s.sam.resized_hw.0 as usize, s.sam.resized_hw.1 as usize))
            .collect(),
        original_hw: samples.iter().map(|s| s.original_hw).collect(),
    }
}

/// Union of the `[SEG]` masks (`logit > 0`) as 0/1 bytes, `h * w`.
fn union_mask(masks: &[Tensor<2>], h: usize, w: usize) -> Vec<u8> {
    let mut out = vec![0u8; h * w];
    for logits in masks {
        let values: Vec<f32> = logits
            .clone()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 mask logits");
        for (o, v) in out.iter_mut().zip(values) {
            if v > 0.0 {
                *o = 1;
            }
        }
    }
    out
}

/// Evaluates `model` (on a plain, non-autodiff device) on every record of `split`.
///
/// # Errors
/// [`TrainError`] when the data cannot be read or the model fails.
pub fn evaluate(
    model: &Legion,
    tokenizer: &LegionTokenizer,
    split: &SynthScarsSplit,
    sample_config: &SampleConfig,
    max_new_tokens: usize,
) -> Result<EvalSummary, TrainError> {
    let device = model.llm.embed_tokens.weight.device();
    let mut generation = GenerationConfig::legion();
    generation.max_new_tokens = max_new_tokens;
    generation.eos_token_id = Some(tokenizer.special().eos);
    generation.pad_token_id = tokenizer.special().unk;
    let (mut miou, mut f1, mut rouge, mut bg_miou, mut bg_f1) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut masks, mut predicted, mut pixels) = (0usize, 0u64, 0u64);
    let mut kinds = Vec::new();
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(EVAL_BATCH) {
        let samples = chunk
            .iter()
            .map(|&i| split.load(i, sample_config))
            .collect::<Result<Vec<_>, _>>()?;
        let images = legion_images(&samples.iter().collect::<Vec<_>>(), &device);
        let analyses = model.analyze(&images, tokenizer, &generation)?;
        for ((&index, sample), analysis) in chunk.iter().zip(&samples).zip(&analyses) {
            let record = &split.entries()[index].record;
            let (h, w) = sample.original_hw;
            let gt = polygon_gt_mask(record, h, w).map_err(|source| TrainError::Record {
                record: record.id.clone(),
                source,
            })?;
            let logits: Vec<Tensor<2>> = analysis
                .artifacts
                .iter()
                .map(|a| a.mask_logits.clone())
                .collect();
            let prediction = union_mask(&logits, h, w);
            let counts = PixelCounts::from_masks(&prediction, gt.as_slice());
            let empty = PixelCounts::from_masks(&vec![0u8; h * w], gt.as_slice());
            miou += miou_bg_fg(&counts);
            f1 += f1_fg(&counts);
            bg_miou += miou_bg_fg(&empty);
            bg_f1 += f1_fg(&empty);
            rouge += rouge_l(&clean_analysis_text(&record.caption), &analysis.clean_text).fmeasure;
            if let Some(planted) = record.refs.first().and_then(|r| named_kind(&r.sentence)) {
                let named = analysis.phrases.iter().find_map(|p| named_kind(p));
                kinds.push((planted, named));
            }
            masks += analysis.artifacts.len();
            predicted += prediction.iter().map(|&v| u64::from(v)).sum::<u64>();
            pixels += (h * w) as u64;
        }
    }
    let n = split.len().max(1) as f64;
    Ok(EvalSummary {
        images: split.len(),
        miou: 100.0 * miou / n,
        f1: 100.0 * f1 / n,
        rouge_l: 100.0 * rouge / n,
        background_miou: 100.0 * bg_miou / n,
        background_f1: 100.0 * bg_f1 / n,
        masks_per_image: masks as f64 / n,
        predicted_area: predicted as f64 / pixels.max(1) as f64,
        kinds: KindScores::from_pairs(&kinds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_scores_count_the_confusion_and_the_unnamed() {
        use ArtifactCategory::{Distortion, Physics, Structure};
        assert_eq!(KindScores::from_pairs(&[]), None);
        let scores = KindScores::from_pairs(&[
            (Physics, Some(Physics)),
            (Structure, Some(Physics)),
            (Structure, Some(Structure)),
            (Distortion, None),
        ])
        .unwrap();
        assert_eq!(scores.images, 4);
        assert_eq!(scores.accuracy, 50.0);
        // Rows and columns in `ArtifactCategory::ALL` order (physics, structure, distortion),
        // then "none".
        assert_eq!(scores.confusion, [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]]);
        let table = scores.table();
        assert!(table.contains("| structure | 1 | 1 | 0 | 0 |"), "{table}");
        assert!(table.contains("| distortion | 0 | 0 | 0 | 1 |"), "{table}");
    }
}
