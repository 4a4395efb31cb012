//! The evaluation report: everything needed to reproduce and compare a run (metric variant,
//! threshold, missing-prediction counts, encoder name, dataset path), serialised as JSON, plus
//! the per-image CSV and the worst images.

use std::path::{Path, PathBuf};

use legion_data::perturb::PerturbationRecord;
use serde::{Deserialize, Serialize};

use crate::detection::DetectionReport;
use crate::error::EvalError;
use crate::evaluate::{ExplanationReport, ImageLocalization, LocalizationReport};

/// One method's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The method's name (a table row label).
    pub method: String,
    /// The GT dataset root.
    pub dataset: PathBuf,
    /// The split evaluated.
    pub split: String,
    /// The evaluator version.
    pub evaluator: String,
    pub localization: Option<LocalizationReport>,
    pub explanation: Option<ExplanationReport>,
    pub detection: Option<DetectionReport>,
    /// What the images went through before the model saw them (`legion infer --perturb`), from
    /// the prediction folder's `infer.json`; `None` when the predictions did not record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perturbation: Option<PerturbationRecord>,
}

impl Report {
    /// An empty report for `method` on `dataset`/`split`.
    pub fn new(method: impl Into<String>, dataset: &Path, split: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            dataset: dataset.to_path_buf(),
            split: split.into(),
            evaluator: format!("legion-eval {}", env!("CARGO_PKG_VERSION")),
            localization: None,
            explanation: None,
            detection: None,
            perturbation: None,
        }
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report holds only plain JSON values")
    }

    /// Reads a report written by [`Report::to_json`].
    ///
    /// # Errors
    /// [`EvalError::Io`], or [`EvalError::JsonLine`] with the JSON error's line.
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| {
            let line = source.line();
            EvalError::json_line(path, line)(source)
        })
    }

    /// The per-image CSV: one row per GT image with its localization and explanation scores
    /// (empty cells where not computed). Values in [0, 1].
    pub fn per_image_csv(&self) -> String {
        let mut out = String::from(
            "image,record_id,content_type,prediction,height,width,tp,fp,fn,tn,miou,f1,artifact_iou_lisa,trufor_f1_fixed,trufor_f1_best,rouge_l,css\n",
        );
        let fmt = |v: Option<f64>| v.map(|v| format!("{v:.9}")).unwrap_or_default();
        if let Some(loc) = &self.localization {
            // Explanations are looked up by image name; index them once.
            let explanations: std::collections::HashMap<&str, &crate::evaluate::ImageExplanation> =
                self.explanation
                    .iter()
                    .flat_map(|e| e.images.iter().map(|i| (i.image.as_str(), i)))
                    .collect();
            for r in &loc.images {
                let ex = explanations.get(r.image.as_str());
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                    csv_field(&r.image),
                    csv_field(&r.record_id),
                    r.content_type.map(|c| c.title()).unwrap_or_default(),
                    match r.prediction {
                        Some(crate::predictions::MapKind::Binary) => "binary",
                        Some(crate::predictions::MapKind::ScoreMap) => "score-map",
                        None => "missing",
                    },
                    r.height,
                    r.width,
                    r.counts.tp,
                    r.counts.fp,
                    r.counts.fn_,
                    r.counts.tn,
                    fmt(Some(r.scores.miou)),
                    fmt(Some(r.scores.f1)),
                    fmt(Some(r.scores.giou_term)),
                    fmt(r.trufor.map(|t| t.f1_fixed)),
                    fmt(r.trufor.map(|t| t.f1_best)),
                    fmt(ex.map(|e| e.rouge_l)),
                    fmt(ex.and_then(|e| e.css)),
                ));
            }
        } else if let Some(e) = &self.explanation {
            for i in &e.images {
                out.push_str(&format!(
                    "{},,{},{},,,,,,,,,,,,{},{}\n",
                    csv_field(&i.image),
                    i.content_type.map(|c| c.title()).unwrap_or_default(),
                    if i.missing { "missing" } else { "text" },
                    fmt(Some(i.rouge_l)),
                    fmt(i.css),
                ));
            }
        }
        out
    }

    /// The `n` worst images by localization mIoU (ties: lower F1, then name), worst first.
    pub fn worst(&self, n: usize) -> Vec<&ImageLocalization> {
        let Some(loc) = &self.localization else {
            return Vec::new();
        };
        let mut images: Vec<&ImageLocalization> = loc.images.iter().collect();
        images.sort_by(|a, b| {
            a.scores
                .miou
                .total_cmp(&b.scores.miou)
                .then(a.scores.f1.total_cmp(&b.scores.f1))
                .then(a.image.cmp(&b.image))
        });
        images.truncate(n);
        images
    }
}

/// Quotes a CSV field when needed (RFC 4180).
pub(crate) fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}
