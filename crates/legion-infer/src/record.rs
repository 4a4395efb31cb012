//! LEGION's analysis of one image as a JSON record: the explanation and, per artifact, its
//! phrase, explanation, scores and mask as COCO RLE and polygons.
//!
//! ```json
//! {"image": "0001.jpg", "width": 640, "height": 480,
//!  "explanation": "...", "text": "<p> hand </p> [SEG] ...", "finish_reason": "eos",
//!  "artifact_area": 1234, "artifact_ratio": 0.004,
//!  "artifacts": [{"index": 1, "phrase": "hand", "explanation": "...", "category": null,
//!                 "area": 1234, "score": 0.91, "iou_prediction": 0.8,
//!                 "bbox": [x, y, w, h],
//!                 "segmentation": {"size": [480, 640], "counts": "<COCO string>"},
//!                 "polygons": [[x1, y1, x2, y2, ...]]}]}
//! ```
//! `segmentation` decodes with pycocotools `mask.decode` to exactly the mask (`logits > 0`);
//! `polygons` are the outer boundaries on pixel corners ([`legion_data::contour`]), so holes
//! are not in them. LEGION does not output an artifact category: `category` is kept in the
//! format (null) for models or annotators that do, never guessed.

use legion_data::contour::outer_polygons;
use legion_data::mask::Mask;
use legion_data::rle::Rle;
use legion_model::generation::FinishReason;
use legion_model::legion::{Analysis, Artifact};
use serde::{Deserialize, Serialize};

use crate::error::InferError;

/// One artifact of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// 1-based position in the answer (the k-th `[SEG]`).
    pub index: usize,
    /// The `<p>...</p>` phrase (null when the answer had fewer phrases than `[SEG]`s).
    pub phrase: Option<String>,
    /// The phrase's explanation.
    pub explanation: Option<String>,
    /// physics / structure / distortion when known; LEGION itself never outputs it.
    pub category: Option<String>,
    /// Mask pixels.
    pub area: u64,
    /// Mean sigmoid probability over the mask.
    pub score: f32,
    /// SAM's IoU prediction.
    pub iou_prediction: f32,
    /// `[x, y, width, height]` of the mask's pixels (zeros for an empty mask).
    pub bbox: [usize; 4],
    /// The mask, COCO RLE (compressed string).
    pub segmentation: Rle,
    /// Outer boundaries on pixel corners, `[x1, y1, x2, y2, ...]` per polygon.
    pub polygons: Vec<Vec<f64>>,
}

impl ArtifactRecord {
    /// The decoded mask.
    pub fn mask(&self) -> Mask {
        self.segmentation.to_mask()
    }

    /// `"phrase"`, or `"artifact k"` when the answer had no phrase for this mask.
    pub fn label(&self) -> String {
        self.phrase
            .clone()
            .unwrap_or_else(|| format!("artifact {}", self.index))
    }
}

/// LEGION's analysis of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisRecord {
    /// The image file name.
    pub image: String,
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// The answer without tags (what the evaluator scores).
    pub explanation: String,
    /// The raw answer with `<p>`, `</p>` and `[SEG]`.
    pub text: String,
    /// `eos`, `stop_token` or `max_new_tokens`.
    pub finish_reason: String,
    /// Pixels in the union of all artifact masks.
    pub artifact_area: u64,
    /// `artifact_area / (width * height)`.
    pub artifact_ratio: f64,
    /// One per generated `[SEG]`, in order.
    pub artifacts: Vec<ArtifactRecord>,
}

impl AnalysisRecord {
    /// The union of every artifact mask (all zero without artifacts).
    pub fn union_mask(&self) -> Mask {
        let mut union = Mask::zeros(self.height, self.width);
        for artifact in &self.artifacts {
            // Every artifact mask has the record's size by construction.
            let _ = union.union_with(&artifact.mask());
        }
        union
    }
}

/// `[x, y, w, h]` of a mask's foreground, zeros when empty.
pub fn mask_bbox(mask: &Mask) -> [usize; 4] {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for r in 0..mask.height() {
        let row = &mask.as_slice()[r * mask.width()..(r + 1) * mask.width()];
        for (c, &v) in row.iter().enumerate() {
            if v != 0 {
                x0 = x0.min(c);
                y0 = y0.min(r);
                x1 = x1.max(c);
                y1 = y1.max(r);
            }
        }
    }
    if x0 == usize::MAX {
        [0; 4]
    } else {
        [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
    }
}

/// The binary mask `logits > 0` of an artifact.
///
/// # Shapes
/// `artifact.mask_logits` `[H, W]` -> an `H x W` [`Mask`].
///
/// # Errors
/// [`InferError::Config`] when the tensor data cannot be read as `f32`.
pub fn artifact_mask(artifact: &Artifact) -> Result<Mask, InferError> {
    let [h, w] = artifact.mask_logits.dims();
    let logits = artifact
        .mask_logits
        .clone()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|source| InferError::Readback {
            what: "mask logits",
            source: Box::new(source),
        })?;
    let data = logits.iter().map(|&v| u8::from(v > 0.0)).collect();
    Ok(Mask::from_raw(h, w, data)?)
}

fn finish_reason_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Eos => "eos",
        FinishReason::StopToken => "stop_token",
        FinishReason::MaxNewTokens => "max_new_tokens",
    }
}

/// Builds the record of one analysis.
///
/// # Errors
/// [`InferError::Config`] when a mask cannot be read or is too large for COCO RLE.
pub fn analysis_record(image: &str, analysis: &Analysis) -> Result<AnalysisRecord, InferError> {
    let mut artifacts = Vec::with_capacity(analysis.artifacts.len());
    let mut size = None;
    for (k, artifact) in analysis.artifacts.iter().enumerate() {
        let mask = artifact_mask(artifact)?;
        size = Some((mask.height(), mask.width()));
        artifacts.push(artifact_record(
            k + 1,
            artifact.phrase.clone(),
            artifact.explanation.clone(),
            &mask,
            artifact.score,
            artifact.iou_prediction,
        )?);
    }
    let (height, width) = size.unwrap_or((0, 0));
    let mut record = AnalysisRecord {
        image: image.to_string(),
        width,
        height,
        explanation: analysis.clean_text.clone(),
        text: analysis.text.clone(),
        finish_reason: finish_reason_name(analysis.finish_reason).to_string(),
        artifact_area: 0,
        artifact_ratio: 0.0,
        artifacts,
    };
    finalize_area(&mut record);
    Ok(record)
}

/// One artifact's record from its mask and scores.
///
/// # Errors
/// [`InferError::Config`] when the mask is too large for COCO RLE.
pub fn artifact_record(
    index: usize,
    phrase: Option<String>,
    explanation: Option<String>,
    mask: &Mask,
    score: f32,
    iou_prediction: f32,
) -> Result<ArtifactRecord, InferError> {
    let segmentation = Rle::from_mask(mask)?;
    Ok(ArtifactRecord {
        index,
        phrase,
        explanation,
        category: None,
        area: mask.area() as u64,
        score,
        iou_prediction,
        bbox: mask_bbox(mask),
        segmentation,
        polygons: outer_polygons(mask),
    })
}

/// Sets `artifact_area` / `artifact_ratio` from the artifacts (width/height must be set).
pub fn finalize_area(record: &mut AnalysisRecord) {
    let pixels = record.width * record.height;
    record.artifact_area = if record.artifacts.is_empty() {
        0
    } else {
        record.union_mask().area() as u64
    };
    record.artifact_ratio = if pixels == 0 {
        0.0
    } else {
        record.artifact_area as f64 / pixels as f64
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbox_union_and_rle_round_trip() {
        let mut a = Mask::zeros(4, 5);
        a.set(1, 1, true);
        a.set(2, 3, true);
        let mut b = Mask::zeros(4, 5);
        b.set(2, 3, true);
        b.set(3, 4, true);
        assert_eq!(mask_bbox(&a), [1, 1, 3, 2]);
        assert_eq!(mask_bbox(&Mask::zeros(2, 2)), [0; 4]);
        let mut record = AnalysisRecord {
            image: "x.png".into(),
            width: 5,
            height: 4,
            explanation: String::new(),
            text: String::new(),
            finish_reason: "eos".into(),
            artifact_area: 0,
            artifact_ratio: 0.0,
            artifacts: vec![
                artifact_record(1, Some("a".into()), None, &a, 0.5, 0.1).unwrap(),
                artifact_record(2, None, None, &b, 0.5, 0.1).unwrap(),
            ],
        };
        finalize_area(&mut record);
        assert_eq!(record.artifact_area, 3);
        assert!((record.artifact_ratio - 0.15).abs() < 1e-12);
        assert_eq!(record.artifacts[1].label(), "artifact 2");
        let json = serde_json::to_string(&record).unwrap();
        let back: AnalysisRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.artifacts[0].mask(), a);
        assert_eq!(back, record);
    }
}
