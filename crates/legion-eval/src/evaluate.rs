//! The evaluation pipeline: parallel (rayon) and streaming — each worker loads one image's GT
//! and prediction, reduces them to pixel counts and drops the masks, so memory stays at a few
//! masks per thread whatever the dataset size.
//!
//! Groups: overall numbers always; per content type (the paper's Object/Animal/Human/Scene
//! columns) and per artifact category only when a labels file is given (never guessed).
//! **Per-category metric**: the images that have at least one ref labelled with category `c`,
//! scored as usual on their whole-image GT and prediction (the prediction carries no category,
//! so a per-ref split of the prediction would be arbitrary); an image with refs of two
//! categories counts in both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use legion_data::Record;
use legion_data::labels::{ArtifactCategory, ContentType, Labels};
use legion_data::mask::Mask;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::css::SentenceEncoder;
use crate::detection::{DetectionConfig, evaluate_detection, read_detection_scores};
use crate::error::EvalError;
use crate::ground_truth::{GroundTruth, GtMaskSource};
use crate::metrics::localization::{ImagePixelScores, LocalizationSummary, PixelCounts};
use crate::metrics::trufor::{
    TruforConfig, TruforImage, trufor_f1, trufor_f1_from_level_counts, trufor_f1_levels,
};
use crate::predictions::{
    Explanations, MapKind, MaskFolder, PredictionMap, image_stem, read_prediction_png,
};
use crate::report::Report;
use crate::rouge::{clean_analysis_text, rouge_l};
use legion_data::progress::Progress;

/// What to do with a GT image that has no prediction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingPolicy {
    /// Fail, naming the first image without prediction.
    #[default]
    Error,
    /// Score it as an empty prediction (all background / empty text); counted in the report.
    Empty,
}

/// What to do with a prediction for an image that is not in the GT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownPolicy {
    /// Fail, naming the file.
    #[default]
    Error,
    /// Ignore it with a warning; counted in the report.
    Ignore,
}

/// Options of the localization evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalizationConfig {
    /// Score maps: artifact = score > threshold (binary masks are not thresholded).
    pub threshold: f64,
    /// Images without prediction.
    pub missing: MissingPolicy,
    /// Predictions for unknown images.
    pub unknown: UnknownPolicy,
    /// Also compute the TruFor-style F1 (not a LEGION metric).
    pub trufor: Option<TruforConfig>,
}

impl Default for LocalizationConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            missing: MissingPolicy::Error,
            unknown: UnknownPolicy::Error,
            trufor: Some(TruforConfig::default()),
        }
    }
}

/// Scores of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageLocalization {
    /// The image file name.
    pub image: String,
    /// The record id.
    pub record_id: String,
    pub height: usize,
    pub width: usize,
    /// Kind of the prediction file, `None` when it was missing (scored as empty).
    pub prediction: Option<MapKind>,
    pub counts: PixelCounts,
    pub scores: ImagePixelScores,
    /// TruFor-style F1 (forged images only, when enabled).
    pub trufor: Option<TruforImage>,
    pub content_type: Option<ContentType>,
    /// Distinct categories of the image's refs (from labels).
    pub categories: Vec<ArtifactCategory>,
}

/// A named group's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary<T> {
    pub group: String,
    pub summary: T,
}

/// Localization results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalizationReport {
    /// The prediction folder.
    pub predictions: PathBuf,
    /// Where the GT masks came from.
    pub gt_masks: GtMaskSource,
    pub config: LocalizationConfig,
    /// Which numbers are the published convention.
    pub metric_convention: String,
    /// Images without prediction (scored as empty).
    pub missing_predictions: Vec<String>,
    /// Prediction files for images not in the GT (ignored).
    pub unknown_predictions: Vec<PathBuf>,
    pub overall: LocalizationSummary,
    /// Per content type, in the paper's column order; empty without labels.
    pub by_content_type: Vec<GroupSummary<LocalizationSummary>>,
    /// Per artifact category; empty without category labels.
    pub by_category: Vec<GroupSummary<LocalizationSummary>>,
    /// How per-category numbers are defined.
    pub category_definition: String,
    /// Images with no content-type label (when labels were given).
    pub unlabelled_images: usize,
    /// Per-image scores, in annotation order.
    pub images: Vec<ImageLocalization>,
}

/// The text stored in reports to say which numbers are the paper's.
pub const LOCALIZATION_CONVENTION: &str = "LEGION tables: per-image mean x100 of mIoU = mean(background IoU, artifact IoU) with I/(U+1e-6) and of artifact-pixel F1 (1 if TP=FP=FN=0) (evaluate_ours.py); *_accumulated, gIoU/cIoU (LISA) and TruFor F1 are other conventions";

/// The text stored in reports to define per-category numbers.
pub const CATEGORY_DEFINITION: &str =
    "images with at least one ref of the category, scored on their whole-image GT and prediction";

fn image_labels(
    labels: Option<&Labels>,
    record: &Record,
) -> Result<(Option<ContentType>, Vec<ArtifactCategory>), EvalError> {
    let Some(found) = labels.and_then(|l| l.get(&record.img_file_name, &record.id)) else {
        return Ok((None, Vec::new()));
    };
    if !found.categories.is_empty() && found.categories.len() != record.refs.len() {
        return Err(EvalError::Invalid(format!(
            "labels of image `{}` list {} categories but the record has {} refs",
            record.img_file_name,
            found.categories.len(),
            record.refs.len()
        )));
    }
    let mut categories: Vec<ArtifactCategory> =
        found.categories.iter().flatten().copied().collect();
    categories.sort();
    categories.dedup();
    Ok((found.content_type, categories))
}

/// The GT mask and the binarised prediction (`None` when missing) of one image at its size.
///
/// # Errors
/// Image, GT or prediction read errors, naming the file.
pub fn load_image_masks(
    gt: &GroundTruth,
    predictions: &MaskFolder,
    record: &Record,
    threshold: f64,
) -> Result<(Mask, Option<Vec<u8>>), EvalError> {
    let (height, width) = gt.image_size(record)?;
    let gt_mask = gt.mask(record, height, width)?;
    let prediction = match predictions.get(image_stem(&record.img_file_name)) {
        Some(path) => Some(
            read_prediction_png(path)?
                .resized(height, width)
                .into_binary(threshold),
        ),
        None => None,
    };
    Ok((gt_mask, prediction))
}

fn score_image(
    gt: &GroundTruth,
    predictions: &MaskFolder,
    record: &Record,
    labels: Option<&Labels>,
    config: &LocalizationConfig,
) -> Result<ImageLocalization, EvalError> {
    let (height, width) = gt.image_size(record)?;
    let gt_mask = gt.mask(record, height, width)?;
    let gt_slice = gt_mask.as_slice();
    let (kind, map) = match predictions.get(image_stem(&record.img_file_name)) {
        Some(path) => {
            let map = read_prediction_png(path)?.resized(height, width);
            (Some(map.kind()), map)
        }
        None => (
            None,
            PredictionMap::Binary {
                height,
                width,
                data: vec![0u8; height * width],
            },
        ),
    };
    let counts = match &map {
        PredictionMap::Binary { data, .. } => PixelCounts::from_masks(data, gt_slice),
        other => PixelCounts::from_masks(&other.binarize(config.threshold), gt_slice),
    };
    let trufor = config
        .trufor
        .and_then(|tf| map_trufor_f1(&map, &counts, gt_slice, height, width, &tf));
    let (content_type, categories) = image_labels(labels, record)?;
    Ok(ImageLocalization {
        image: record.img_file_name.clone(),
        record_id: record.id.clone(),
        height,
        width,
        prediction: kind,
        scores: ImagePixelScores::from_counts(&counts),
        counts,
        trufor,
        content_type,
        categories,
    })
}

/// The TruFor-style F1 of a prediction map whose confusion counts are `counts`: binary maps
/// from the counts, PNG score levels by counting levels, resized score maps by sorting (the
/// same numbers, see [`trufor_f1_levels`]).
fn map_trufor_f1(
    map: &PredictionMap,
    counts: &PixelCounts,
    gt: &[u8],
    height: usize,
    width: usize,
    config: &TruforConfig,
) -> Option<TruforImage> {
    match map {
        PredictionMap::Binary { .. } if config.boundary_band == 0 => {
            let levels = [[counts.tn, counts.fn_], [counts.fp, counts.tp]];
            (counts.gt_area() > 0)
                .then(|| trufor_f1_from_level_counts(&[0.0, 1.0], &levels, config))
        }
        PredictionMap::Binary { data, .. } => {
            trufor_f1_levels(data, &[0.0, 1.0], gt, height, width, config)
        }
        PredictionMap::Levels { data, .. } => {
            let values = map.level_values().unwrap_or_default();
            trufor_f1_levels(data, &values, gt, height, width, config)
        }
        PredictionMap::Scores { data, .. } => trufor_f1(data, gt, height, width, config),
    }
}

fn summarize_localization(images: &[&ImageLocalization]) -> Option<LocalizationSummary> {
    LocalizationSummary::from_images(images.iter().map(|r| {
        (
            &r.counts,
            &r.scores,
            r.prediction.is_none(),
            r.trufor.as_ref(),
        )
    }))
}

/// Checks prediction keys against the GT; returns the unknown ones (policy `Ignore`).
fn check_unknown(
    unknown: Vec<PathBuf>,
    policy: UnknownPolicy,
    image_of: impl Fn(&Path) -> String,
) -> Result<Vec<PathBuf>, EvalError> {
    if let (Some(first), UnknownPolicy::Error) = (unknown.first(), policy) {
        return Err(EvalError::UnknownImage {
            path: first.clone(),
            image: image_of(first),
        });
    }
    for path in &unknown {
        tracing::warn!(file = %path.display(), "prediction for an image not in the ground truth; ignored");
    }
    Ok(unknown)
}

/// Evaluates a folder of prediction masks against the GT.
///
/// # Errors
/// Unknown or missing predictions under the `Error` policies (checked before any image is
/// scored), and any read error, naming the file.
pub fn evaluate_localization(
    gt: &GroundTruth,
    predictions: &MaskFolder,
    labels: Option<&Labels>,
    config: &LocalizationConfig,
    progress: &dyn Progress,
) -> Result<LocalizationReport, EvalError> {
    if !(0.0..=1.0).contains(&config.threshold) {
        return Err(EvalError::Invalid(format!(
            "score-map threshold {} is outside [0, 1]",
            config.threshold
        )));
    }
    let unknown: Vec<PathBuf> = predictions
        .stems()
        .into_iter()
        .filter(|s| gt.find_stem(s).is_none())
        .map(|s| predictions.path_of(s))
        .collect();
    let unknown = check_unknown(unknown, config.unknown, |p| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    })?;
    let missing: Vec<String> = gt
        .records
        .iter()
        .filter(|r| predictions.get(image_stem(&r.img_file_name)).is_none())
        .map(|r| r.img_file_name.clone())
        .collect();
    if let (Some(first), MissingPolicy::Error) = (missing.first(), config.missing) {
        return Err(EvalError::MissingPrediction {
            image: first.clone(),
            expected: predictions
                .expected_path(image_stem(first))
                .display()
                .to_string(),
        });
    }
    if !missing.is_empty() {
        tracing::warn!(
            count = missing.len(),
            "images without prediction, scored as empty"
        );
    }

    progress.start("localization", gt.records.len() as u64);
    let images: Vec<ImageLocalization> = gt
        .records
        .par_iter()
        .map(|record| {
            let result = score_image(gt, predictions, record, labels, config);
            progress.advance(1);
            result
        })
        .collect::<Result<_, _>>()?;
    progress.finish();

    let all: Vec<&ImageLocalization> = images.iter().collect();
    let overall = summarize_localization(&all)
        .ok_or_else(|| EvalError::Invalid("the ground truth has no image".into()))?;
    let by_content_type = ContentType::ALL
        .iter()
        .filter_map(|ct| {
            let members: Vec<&ImageLocalization> = images
                .iter()
                .filter(|r| r.content_type == Some(*ct))
                .collect();
            summarize_localization(&members).map(|summary| GroupSummary {
                group: ct.title().to_string(),
                summary,
            })
        })
        .collect();
    let by_category = ArtifactCategory::ALL
        .iter()
        .filter_map(|c| {
            let members: Vec<&ImageLocalization> =
                images.iter().filter(|r| r.categories.contains(c)).collect();
            summarize_localization(&members).map(|summary| GroupSummary {
                group: c.title().to_string(),
                summary,
            })
        })
        .collect();
    let unlabelled_images = if labels.is_some() {
        images.iter().filter(|r| r.content_type.is_none()).count()
    } else {
        0
    };
    Ok(LocalizationReport {
        predictions: predictions.dir.clone(),
        gt_masks: gt.masks.clone(),
        config: config.clone(),
        metric_convention: LOCALIZATION_CONVENTION.into(),
        missing_predictions: missing,
        unknown_predictions: unknown,
        overall,
        by_content_type,
        by_category,
        category_definition: CATEGORY_DEFINITION.into(),
        unlabelled_images,
        images,
    })
}

/// Options of the explanation evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplanationConfig {
    /// Images without explanation: error, or score 0 (ROUGE-L and CSS).
    pub missing: MissingPolicy,
    /// Explanations for unknown images.
    pub unknown: UnknownPolicy,
    /// Texts per encoder call.
    pub batch_size: usize,
}

impl Default for ExplanationConfig {
    fn default() -> Self {
        Self {
            missing: MissingPolicy::Error,
            unknown: UnknownPolicy::Error,
            batch_size: 32,
        }
    }
}

/// Explanation scores of one image, in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageExplanation {
    pub image: String,
    pub missing: bool,
    /// ROUGE-L F-measure.
    pub rouge_l: f64,
    /// Cosine similarity; `None` without encoder.
    pub css: Option<f64>,
    pub content_type: Option<ContentType>,
}

/// Means over a group, in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplanationSummary {
    pub images: usize,
    pub missing: usize,
    pub rouge_l: f64,
    pub css: Option<f64>,
}

/// Explanation results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplanationReport {
    pub explanations: PathBuf,
    /// The sentence encoder's name, `None` when CSS was not computed.
    pub encoder: Option<String>,
    pub reference_text: String,
    pub rouge_variant: String,
    pub config: ExplanationConfig,
    pub missing_explanations: Vec<String>,
    pub unknown_explanations: Vec<String>,
    pub overall: ExplanationSummary,
    pub by_content_type: Vec<GroupSummary<ExplanationSummary>>,
    pub images: Vec<ImageExplanation>,
}

fn summarize_explanations(images: &[&ImageExplanation]) -> Option<ExplanationSummary> {
    if images.is_empty() {
        return None;
    }
    let n = images.len() as f64;
    let css = images
        .iter()
        .map(|i| i.css)
        .collect::<Option<Vec<f64>>>()
        .map(|v| v.iter().sum::<f64>() / n);
    Some(ExplanationSummary {
        images: images.len(),
        missing: images.iter().filter(|i| i.missing).count(),
        rouge_l: images.iter().map(|i| i.rouge_l).sum::<f64>() / n,
        css,
    })
}

/// Evaluates predicted explanations: ROUGE-L (always) and CSS (with an encoder) against the GT
/// caption with tags removed.
///
/// # Errors
/// Unknown/missing explanations under the `Error` policies, encoder failures.
pub fn evaluate_explanations(
    gt: &GroundTruth,
    explanations: &Explanations,
    encoder: Option<&dyn SentenceEncoder>,
    labels: Option<&Labels>,
    config: &ExplanationConfig,
    progress: &dyn Progress,
) -> Result<ExplanationReport, EvalError> {
    let mut by_record: BTreeMap<usize, &str> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (key, text, line) in &explanations.entries {
        match gt.find(key) {
            Some(index) => {
                if by_record.insert(index, text).is_some() {
                    return Err(EvalError::Duplicate {
                        path: explanations.path.clone(),
                        line: Some(*line),
                        what: "explanation for image",
                        value: gt.records[index].img_file_name.clone(),
                    });
                }
            }
            None if config.unknown == UnknownPolicy::Error => {
                return Err(EvalError::bad_line(
                    &explanations.path,
                    *line,
                    format!("explanation for `{key}`, which is not an image of the ground truth"),
                ));
            }
            None => {
                tracing::warn!(image = %key, line, "explanation for an image not in the ground truth; ignored");
                unknown.push(key.clone());
            }
        }
    }
    let missing: Vec<String> = gt
        .records
        .iter()
        .enumerate()
        .filter(|(i, _)| !by_record.contains_key(i))
        .map(|(_, r)| r.img_file_name.clone())
        .collect();
    if let (Some(first), MissingPolicy::Error) = (missing.first(), config.missing) {
        return Err(EvalError::MissingPrediction {
            image: first.clone(),
            expected: format!("a line in {}", explanations.path.display()),
        });
    }

    progress.start("explanations", gt.records.len() as u64);
    let mut images: Vec<ImageExplanation> = gt
        .records
        .par_iter()
        .enumerate()
        .map(|(index, record)| {
            let reference = clean_analysis_text(&record.caption);
            let content_type = labels
                .and_then(|l| l.get(&record.img_file_name, &record.id))
                .and_then(|l| l.content_type);
            let result = match by_record.get(&index) {
                Some(text) => ImageExplanation {
                    image: record.img_file_name.clone(),
                    missing: false,
                    rouge_l: rouge_l(&reference, &clean_analysis_text(text)).fmeasure,
                    css: None,
                    content_type,
                },
                None => ImageExplanation {
                    image: record.img_file_name.clone(),
                    missing: true,
                    rouge_l: 0.0,
                    css: None,
                    content_type,
                },
            };
            progress.advance(1);
            result
        })
        .collect();
    progress.finish();

    if let Some(encoder) = encoder {
        let name = encoder.name();
        let batch = config.batch_size.max(1);
        progress.start("css", gt.records.len() as u64);
        for start in (0..gt.records.len()).step_by(batch) {
            let end = (start + batch).min(gt.records.len());
            let present: Vec<usize> = (start..end).filter(|i| by_record.contains_key(i)).collect();
            // Missing explanations (policy `Empty`) score 0, like their ROUGE-L.
            for image in &mut images[start..end] {
                image.css = Some(0.0);
            }
            if !present.is_empty() {
                let mut texts: Vec<String> = present
                    .iter()
                    .map(|&i| clean_analysis_text(&gt.records[i].caption))
                    .collect();
                texts.extend(present.iter().map(|&i| clean_analysis_text(by_record[&i])));
                let embeddings = encoder
                    .encode(&texts)
                    .map_err(|source| EvalError::Encoder {
                        encoder: name.clone(),
                        source,
                    })?;
                if embeddings.len() != texts.len() {
                    return Err(EvalError::EncoderCount {
                        encoder: name.clone(),
                        embeddings: embeddings.len(),
                        texts: texts.len(),
                    });
                }
                let n = present.len();
                for (k, &i) in present.iter().enumerate() {
                    images[i].css = Some(crate::css::cosine_similarity(
                        &embeddings[k],
                        &embeddings[n + k],
                    ));
                }
            }
            progress.advance((end - start) as u64);
        }
        progress.finish();
    }

    let all: Vec<&ImageExplanation> = images.iter().collect();
    let overall = summarize_explanations(&all)
        .ok_or_else(|| EvalError::Invalid("the ground truth has no image".into()))?;
    let by_content_type = ContentType::ALL
        .iter()
        .filter_map(|ct| {
            let members: Vec<&ImageExplanation> = images
                .iter()
                .filter(|r| r.content_type == Some(*ct))
                .collect();
            summarize_explanations(&members).map(|summary| GroupSummary {
                group: ct.title().to_string(),
                summary,
            })
        })
        .collect();
    Ok(ExplanationReport {
        explanations: explanations.path.clone(),
        encoder: encoder.map(|e| e.name()),
        reference_text: "GT caption with <...> tags and [SEG] removed, whitespace collapsed".into(),
        rouge_variant: "rouge-score 0.1.2 RougeScorer(['rougeL'], use_stemmer=True) F-measure, mean over images".into(),
        config: config.clone(),
        missing_explanations: missing,
        unknown_explanations: unknown,
        overall,
        by_content_type,
        images,
    })
}

/// Everything `legion eval` can score on one ground truth: the prediction folder, the
/// explanations and the detection scores are each optional.
#[derive(Clone, Copy)]
pub struct EvalRequest<'a> {
    /// The method name (the report's table row).
    pub method: &'a str,
    /// The split of the ground truth, stored in the report.
    pub split: &'a str,
    pub masks: Option<&'a MaskFolder>,
    /// JSONL of predicted explanations.
    pub explanations: Option<&'a Path>,
    /// CSV/JSONL of image-level real/fake scores.
    pub scores: Option<&'a Path>,
    pub labels: Option<&'a Labels>,
    /// Sentence encoder for CSS; without one CSS is reported as unavailable.
    pub encoder: Option<&'a dyn SentenceEncoder>,
    /// Score maps: artifact = score > threshold.
    pub threshold: f64,
    /// Images without prediction (masks and explanations).
    pub missing: MissingPolicy,
}

/// The full report of `request` on `gt` (what `legion eval --format json` prints): the
/// localization, explanation and detection parts that were asked for, default options
/// otherwise.
///
/// # Errors
/// As [`evaluate_localization`], [`evaluate_explanations`] and [`evaluate_detection`], and
/// read errors of the explanation and score files, naming the file.
pub fn evaluate_request(
    gt: &GroundTruth,
    request: &EvalRequest<'_>,
    progress: &dyn Progress,
) -> Result<Report, EvalError> {
    let mut report = Report::new(request.method, &gt.root, request.split);
    if let Some(masks) = request.masks {
        let config = LocalizationConfig {
            threshold: request.threshold,
            missing: request.missing,
            ..LocalizationConfig::default()
        };
        report.localization = Some(evaluate_localization(
            gt,
            masks,
            request.labels,
            &config,
            progress,
        )?);
    }
    if let Some(path) = request.explanations {
        let config = ExplanationConfig {
            missing: request.missing,
            ..ExplanationConfig::default()
        };
        report.explanation = Some(evaluate_explanations(
            gt,
            &Explanations::read(path)?,
            request.encoder,
            request.labels,
            &config,
            progress,
        )?);
    }
    if let Some(path) = request.scores {
        let samples = read_detection_scores(path)?;
        report.detection = Some(evaluate_detection(
            &samples,
            &DetectionConfig::default(),
            Some(path),
        )?);
    }
    Ok(report)
}
