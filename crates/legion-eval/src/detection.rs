//! Image-level real/fake detection metrics (the LEGION paper's UniversalFakeDetect table).
//!
//! **Label convention: real = 1, fake = 0** (as LEGION's `LegionForCls` head, class 1 = real).
//! A score is the method's confidence that the image is REAL (e.g. softmax probability of class
//! 1); the hard prediction is `real` when `score > threshold` (default 0.5).
//!
//! - accuracy: fraction of correct hard predictions;
//! - balanced accuracy: mean recall over the classes present (sklearn's
//!   `balanced_accuracy_score`);
//! - AP: sklearn's `average_precision_score` (step-wise, no interpolation) with the positive
//!   class chosen by [`PositiveClass`] (default real = 1, sklearn's `pos_label=1` on these labels;
//!   forensics papers often use fake as positive: choose [`PositiveClass::Fake`] to compare);
//! - ROC-AUC: trapezoids over the distinct thresholds, so tied scores count one half
//!   (sklearn's `roc_auc_score`);
//!
//! AP and ROC-AUC are `None` when a group has only one class. Results are given overall, per
//! group (generator or subset, from the optional `group` column), and as the mean of the
//! per-group accuracies (the paper's per-generator-group averaging).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::EvalError;

/// Which class AP treats as positive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositiveClass {
    /// Label 1 (real) is positive, scores used as given.
    #[default]
    Real,
    /// Label 0 (fake) is positive, scores negated.
    Fake,
}

/// One scored image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionSample {
    /// Image name (for error messages and per-image output).
    pub image: String,
    /// 1 = real, 0 = fake.
    pub label: u8,
    /// Confidence that the image is real.
    pub score: f64,
    /// Generator or subset, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Reads detection scores from a CSV (header with `image,label,score[,group]` in any order) or
/// a JSONL (`{"image": .., "label": 0|1, "score": .., "group": ..}`), by file extension.
///
/// # Errors
/// [`EvalError::BadLine`] naming the line for a malformed CSV line, an unknown label or a
/// non-finite score; [`EvalError::JsonLine`] for a JSONL line that is not JSON of the schema;
/// [`EvalError::Duplicate`] for an image listed twice.
pub fn read_detection_scores(path: &Path) -> Result<Vec<DetectionSample>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let samples = if is_csv {
        parse_csv(&text, path)?
    } else {
        parse_jsonl(&text, path)?
    };
    let mut seen = std::collections::HashSet::new();
    for (line, sample) in &samples {
        if !seen.insert(sample.image.clone()) {
            return Err(EvalError::Duplicate {
                path: path.to_path_buf(),
                line: Some(*line),
                what: "image",
                value: sample.image.clone(),
            });
        }
        if sample.label > 1 {
            return Err(EvalError::bad_line(
                path,
                *line,
                format!("label must be 0 (fake) or 1 (real), found {}", sample.label),
            ));
        }
        if !sample.score.is_finite() {
            return Err(EvalError::bad_line(path, *line, "score is not finite"));
        }
    }
    Ok(samples.into_iter().map(|(_, s)| s).collect())
}

fn parse_jsonl(text: &str, path: &Path) -> Result<Vec<(usize, DetectionSample)>, EvalError> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let sample: DetectionSample =
            serde_json::from_str(line).map_err(EvalError::json_line(path, index + 1))?;
        out.push((index + 1, sample));
    }
    Ok(out)
}

/// Splits one CSV line (RFC 4180 quotes, no embedded newlines).
pub(crate) fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(field);
    Ok(fields)
}

fn parse_csv(text: &str, path: &Path) -> Result<Vec<(usize, DetectionSample)>, EvalError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((header_index, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let header = split_csv_line(header.trim_end_matches('\r'))
        .map_err(|e| EvalError::bad_line(path, header_index + 1, e))?;
    let column = |name: &str| header.iter().position(|h| h.trim() == name);
    let (Some(image_col), Some(label_col), Some(score_col)) =
        (column("image"), column("label"), column("score"))
    else {
        return Err(EvalError::bad_line(
            path,
            header_index + 1,
            format!(
                "the header must name the columns image, label, score (and optionally group); found {header:?}"
            ),
        ));
    };
    let group_col = column("group");
    let mut out = Vec::new();
    for (index, line) in lines {
        let line_no = index + 1;
        let fields = split_csv_line(line.trim_end_matches('\r'))
            .map_err(|e| EvalError::bad_line(path, line_no, e))?;
        if fields.len() != header.len() {
            return Err(EvalError::bad_line(
                path,
                line_no,
                format!("{} fields, the header has {}", fields.len(), header.len()),
            ));
        }
        let label: u8 = fields[label_col].trim().parse().map_err(|_| {
            EvalError::bad_line(
                path,
                line_no,
                format!("label `{}` is not 0 or 1", fields[label_col]),
            )
        })?;
        let score: f64 = fields[score_col].trim().parse().map_err(|_| {
            EvalError::bad_line(
                path,
                line_no,
                format!("score `{}` is not a number", fields[score_col]),
            )
        })?;
        out.push((
            line_no,
            DetectionSample {
                image: fields[image_col].clone(),
                label,
                score,
                group: group_col
                    .map(|g| fields[g].clone())
                    .filter(|g| !g.is_empty()),
            },
        ));
    }
    Ok(out)
}

/// Metrics of one set of samples, in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionSummary {
    pub images: usize,
    pub real: usize,
    pub fake: usize,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    /// `None` when only one class is present.
    pub average_precision: Option<f64>,
    /// `None` when only one class is present.
    pub roc_auc: Option<f64>,
}

/// Options of the detection metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetectionConfig {
    /// Hard prediction: real when `score > threshold`.
    pub threshold: f64,
    /// Positive class of AP.
    pub positive: PositiveClass,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            positive: PositiveClass::Real,
        }
    }
}

/// Detection results: overall, per group, and the mean of the group accuracies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionReport {
    pub scores_file: Option<PathBuf>,
    pub config: DetectionConfig,
    pub label_convention: String,
    pub overall: DetectionSummary,
    pub by_group: BTreeMap<String, DetectionSummary>,
    /// Mean over groups of the group accuracy (`None` without groups).
    pub mean_group_accuracy: Option<f64>,
}

/// sklearn's `average_precision_score` for binary labels (1 = positive).
pub fn average_precision(labels: &[u8], scores: &[f64]) -> Option<f64> {
    let positives = labels.iter().filter(|&&l| l == 1).count();
    if positives == 0 || positives == labels.len() {
        return None;
    }
    let order = descending_order(scores);
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut previous_recall = 0.0;
    let mut ap = 0.0;
    for (k, &i) in order.iter().enumerate() {
        if labels[i] == 1 {
            tp += 1
        } else {
            fp += 1
        }
        let last_of_tie = k + 1 == order.len() || scores[order[k + 1]] != scores[i];
        if last_of_tie {
            let recall = tp as f64 / positives as f64;
            let precision = tp as f64 / (tp + fp) as f64;
            ap += (recall - previous_recall) * precision;
            previous_recall = recall;
        }
    }
    Some(ap)
}

/// sklearn's `roc_auc_score` for binary labels (1 = positive); ties count one half.
pub fn roc_auc(labels: &[u8], scores: &[f64]) -> Option<f64> {
    let positives = labels.iter().filter(|&&l| l == 1).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let order = descending_order(scores);
    let (mut tp, mut fp) = (0usize, 0usize);
    let (mut previous_tpr, mut previous_fpr) = (0.0f64, 0.0f64);
    let mut area = 0.0;
    for (k, &i) in order.iter().enumerate() {
        if labels[i] == 1 {
            tp += 1
        } else {
            fp += 1
        }
        if k + 1 == order.len() || scores[order[k + 1]] != scores[i] {
            let tpr = tp as f64 / positives as f64;
            let fpr = fp as f64 / negatives as f64;
            area += (fpr - previous_fpr) * (tpr + previous_tpr) / 2.0;
            previous_tpr = tpr;
            previous_fpr = fpr;
        }
    }
    Some(area)
}

fn descending_order(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// Summarises one set of samples. `None` for an empty set.
pub fn summarize(
    samples: &[&DetectionSample],
    config: &DetectionConfig,
) -> Option<DetectionSummary> {
    if samples.is_empty() {
        return None;
    }
    let real = samples.iter().filter(|s| s.label == 1).count();
    let fake = samples.len() - real;
    let predicted_real = |s: &DetectionSample| s.score > config.threshold;
    let correct_real = samples
        .iter()
        .filter(|s| s.label == 1 && predicted_real(s))
        .count();
    let correct_fake = samples
        .iter()
        .filter(|s| s.label == 0 && !predicted_real(s))
        .count();
    let accuracy = (correct_real + correct_fake) as f64 / samples.len() as f64;
    let mut recalls = Vec::new();
    if real > 0 {
        recalls.push(correct_real as f64 / real as f64);
    }
    if fake > 0 {
        recalls.push(correct_fake as f64 / fake as f64);
    }
    let balanced_accuracy = recalls.iter().sum::<f64>() / recalls.len() as f64;
    let (labels, scores): (Vec<u8>, Vec<f64>) = samples
        .iter()
        .map(|s| match config.positive {
            PositiveClass::Real => (s.label, s.score),
            PositiveClass::Fake => (1 - s.label, -s.score),
        })
        .unzip();
    Some(DetectionSummary {
        images: samples.len(),
        real,
        fake,
        accuracy,
        balanced_accuracy,
        average_precision: average_precision(&labels, &scores),
        roc_auc: roc_auc(&labels, &scores),
    })
}

/// Evaluates detection scores overall and per group.
///
/// # Errors
/// [`EvalError::Invalid`] when there is no sample.
pub fn evaluate_detection(
    samples: &[DetectionSample],
    config: &DetectionConfig,
    scores_file: Option<&Path>,
) -> Result<DetectionReport, EvalError> {
    let all: Vec<&DetectionSample> = samples.iter().collect();
    let overall = summarize(&all, config)
        .ok_or_else(|| EvalError::Invalid("no detection scores to evaluate".into()))?;
    let mut groups: BTreeMap<String, Vec<&DetectionSample>> = BTreeMap::new();
    for s in samples {
        if let Some(g) = &s.group {
            groups.entry(g.clone()).or_default().push(s);
        }
    }
    let by_group: BTreeMap<String, DetectionSummary> = groups
        .iter()
        .filter_map(|(g, v)| summarize(v, config).map(|s| (g.clone(), s)))
        .collect();
    let mean_group_accuracy = (!by_group.is_empty())
        .then(|| by_group.values().map(|s| s.accuracy).sum::<f64>() / by_group.len() as f64);
    Ok(DetectionReport {
        scores_file: scores_file.map(Path::to_path_buf),
        config: *config,
        label_convention: "real=1, fake=0; score = confidence that the image is real".into(),
        overall,
        by_group,
        mean_group_accuracy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ap_and_auc_hand_computed_with_ties() {
        // scores: 0.9(1) 0.8(0) 0.8(1) 0.1(0)
        let labels = [1, 0, 1, 0];
        let scores = [0.9, 0.8, 0.8, 0.1];
        // AP: thresholds 0.9 -> P 1, R .5; 0.8 -> P 2/3, R 1; 0.1 -> R stays 1.
        let ap = average_precision(&labels, &scores).unwrap();
        assert!((ap - (0.5 * 1.0 + 0.5 * 2.0 / 3.0)).abs() < 1e-12);
        // AUC: pairs (pos, neg): (0.9,0.8) 1, (0.9,0.1) 1, (0.8,0.8) .5, (0.8,0.1) 1 -> 3.5/4.
        let auc = roc_auc(&labels, &scores).unwrap();
        assert!((auc - 0.875).abs() < 1e-12);
        assert!(roc_auc(&[1, 1], &[0.1, 0.2]).is_none());
    }

    #[test]
    fn accuracy_and_balanced_accuracy() {
        let s = |label, score| DetectionSample {
            image: String::new(),
            label,
            score,
            group: None,
        };
        let samples = [s(1, 0.9), s(1, 0.2), s(1, 0.7), s(0, 0.1)];
        let refs: Vec<&DetectionSample> = samples.iter().collect();
        let r = summarize(&refs, &DetectionConfig::default()).unwrap();
        assert!((r.accuracy - 0.75).abs() < 1e-12);
        assert!((r.balanced_accuracy - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.csv");
        std::fs::write(&path, "image,label,score\na.png,1,0.5\nb.png,2,0.1\n").unwrap();
        let err = read_detection_scores(&path).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("s.csv"), "{err}");
        std::fs::write(&path, "image,label,score\na.png,1,0.5\na.png,0,0.1\n").unwrap();
        let err = read_detection_scores(&path).unwrap_err().to_string();
        assert!(err.contains("duplicate") && err.contains("line 3"), "{err}");
    }
}
