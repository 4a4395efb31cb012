//! The evaluator's per-image metrics on numpy masks, a dataset accumulator, and ROUGE-L on
//! strings: the functions `legion eval` applies to each image, without files.

use legion_eval::metrics::localization::{ImagePixelScores, LocalizationSummary, PixelCounts};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use rayon::prelude::*;
use serde_json::json;

use crate::arrays::{MaskArray, same_shape};
use crate::json_to_py;

/// Pixel counts and scores of one image as JSON (`tp fp fn tn miou f1 giou_term`).
fn scores_json(counts: &PixelCounts, scores: &ImagePixelScores) -> serde_json::Value {
    json!({
        "tp": counts.tp, "fp": counts.fp, "fn": counts.fn_, "tn": counts.tn,
        "miou": scores.miou, "f1": scores.f1, "giou_term": scores.giou_term,
    })
}

/// Reads the `gt` and `pred` arguments and counts their pixels with the GIL released; `what`
/// names the call in a shape error.
fn count(
    py: Python<'_>,
    gt: &Bound<'_, PyAny>,
    pred: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<PixelCounts> {
    let (gt, prediction) = (
        MaskArray::extract(gt, "gt")?,
        MaskArray::extract(pred, "pred")?,
    );
    same_shape(&gt, &prediction, what)?;
    let (gt, prediction) = (gt.bytes(), prediction.bytes());
    let (gt, prediction): (&[u8], &[u8]) = (&gt, &prediction);
    Ok(py.detach(|| PixelCounts::from_masks(prediction, gt)))
}

/// The confusion counts of artifact pixels (`tp fp fn tn`, artifact = nonzero) and the
/// per-image scores of one image: `miou` (the LEGION mIoU), `f1` (artifact
/// F1, 1 when TP = FP = FN = 0) and `giou_term` (LISA's per-image IoU).
#[pyfunction]
pub(crate) fn image_scores<'py>(
    py: Python<'py>,
    gt: &Bound<'py, PyAny>,
    pred: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let counts = count(py, gt, pred, "image_scores")?;
    json_to_py(
        py,
        &scores_json(&counts, &ImagePixelScores::from_counts(&counts)),
    )
}

/// [`image_scores`] of many images at once, in parallel over the cores (GIL released).
#[pyfunction]
pub(crate) fn image_scores_batch<'py>(
    py: Python<'py>,
    gts: &Bound<'py, PyAny>,
    preds: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let gts: Vec<Bound<'py, PyAny>> = gts.try_iter()?.collect::<PyResult<_>>()?;
    let preds: Vec<Bound<'py, PyAny>> = preds.try_iter()?.collect::<PyResult<_>>()?;
    if gts.len() != preds.len() {
        return Err(PyValueError::new_err(format!(
            "image_scores_batch: {} GT masks but {} predictions",
            gts.len(),
            preds.len()
        )));
    }
    let mut arrays = Vec::with_capacity(gts.len());
    for (index, (gt, pred)) in gts.iter().zip(&preds).enumerate() {
        let what = format!("image_scores_batch, image {index}");
        let gt = MaskArray::extract(gt, &format!("gts[{index}]"))?;
        let pred = MaskArray::extract(pred, &format!("preds[{index}]"))?;
        same_shape(&gt, &pred, &what)?;
        arrays.push((gt, pred));
    }
    let bytes: Vec<_> = arrays.iter().map(|(g, p)| (g.bytes(), p.bytes())).collect();
    let slices: Vec<(&[u8], &[u8])> = bytes.iter().map(|(g, p)| (&**g, &**p)).collect();
    let counts: Vec<PixelCounts> = py.detach(|| {
        slices
            .par_iter()
            .map(|(gt, prediction)| PixelCounts::from_masks(prediction, gt))
            .collect()
    });
    let out = PyList::empty(py);
    for c in &counts {
        out.append(json_to_py(
            py,
            &scores_json(c, &ImagePixelScores::from_counts(c)),
        )?)?;
    }
    Ok(out)
}

/// Accumulates images of a dataset and summarises them like `legion eval` (per-image means,
/// the paper's convention, and the dataset-accumulated variants).
#[pyclass(module = "legion_rs._native")]
#[derive(Default)]
pub(crate) struct LocalizationAccumulator {
    images: Vec<(PixelCounts, ImagePixelScores, bool)>,
}

#[pymethods]
impl LocalizationAccumulator {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Adds one image; `missing=True` counts it as an image without prediction (score it with
    /// an all-zero `pred`). Returns the image's scores as [`image_scores`] does.
    #[pyo3(signature = (gt, pred, missing = false))]
    fn add<'py>(
        &mut self,
        py: Python<'py>,
        gt: &Bound<'py, PyAny>,
        pred: &Bound<'py, PyAny>,
        missing: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let what = format!("LocalizationAccumulator.add, image {}", self.images.len());
        let counts = count(py, gt, pred, &what)?;
        let scores = ImagePixelScores::from_counts(&counts);
        self.images.push((counts, scores, missing));
        json_to_py(py, &scores_json(&counts, &scores))
    }

    /// The summary (`images`, `missing_predictions`, `miou_per_image`, `f1_per_image`,
    /// `miou_accumulated`, `f1_accumulated`, `giou_lisa`, `ciou_lisa`, `accumulated_counts`),
    /// the `overall` block of the JSON report without TruFor; `None` before any image.
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let summary = LocalizationSummary::from_images(
            self.images
                .iter()
                .map(|(c, s, missing)| (c, s, *missing, None)),
        );
        let value =
            serde_json::to_value(summary).map_err(|e| PyValueError::new_err(e.to_string()))?;
        json_to_py(py, &value)
    }

    fn __len__(&self) -> usize {
        self.images.len()
    }
}

/// ROUGE-L of `prediction` against `target` as rouge-score's
/// `RougeScorer(['rougeL'], use_stemmer=True).score(target, prediction)['rougeL']`:
/// `{"precision", "recall", "fmeasure"}`.
#[pyfunction]
pub(crate) fn rouge_l<'py>(
    py: Python<'py>,
    target: String,
    prediction: String,
) -> PyResult<Bound<'py, PyAny>> {
    let score = py.detach(|| legion_eval::rouge::rouge_l(&target, &prediction));
    json_to_py(
        py,
        &json!({"precision": score.precision, "recall": score.recall, "fmeasure": score.fmeasure}),
    )
}

/// The text the evaluator scores: `<...>` tags and `[SEG]` removed, whitespace collapsed.
#[pyfunction]
pub(crate) fn clean_analysis_text(text: &str) -> String {
    legion_eval::rouge::clean_analysis_text(text)
}
