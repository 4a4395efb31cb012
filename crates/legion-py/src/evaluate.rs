//! `legion_rs.evaluate`: `legion eval` on folders, returning its JSON report.

use std::path::{Path, PathBuf};

use legion_data::Labels;
use legion_eval::evaluate::{EvalRequest, evaluate_request};
use legion_eval::ground_truth::GroundTruth;
use legion_eval::predictions::MaskFolder;
use legion_eval::{EvalError, MissingPolicy, NoProgress, Report};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::{eval_error, json_to_py};

/// What to evaluate, as `legion eval`'s flags.
struct EvalInputs {
    gt: PathBuf,
    split: String,
    masks: Option<PathBuf>,
    explanations: Option<PathBuf>,
    scores: Option<PathBuf>,
    labels: Option<PathBuf>,
    method: String,
    threshold: f64,
    missing: MissingPolicy,
}

/// The labels file to use: `labels` when given, else `<gt>/labels.jsonl` when it exists
/// (as `legion eval` does), never with `no_labels`.
fn labels_path(gt: &Path, labels: Option<PathBuf>, no_labels: bool) -> Option<PathBuf> {
    if no_labels {
        return None;
    }
    labels.or_else(|| Some(gt.join("labels.jsonl")).filter(|p| p.is_file()))
}

/// Opens the inputs and evaluates them; CSS is not computed (no sentence encoder here), as
/// `legion eval` without `--encoder`.
fn run(inputs: &EvalInputs) -> Result<Report, EvalError> {
    let gt = GroundTruth::open(&inputs.gt, &inputs.split)?;
    let labels = inputs.labels.as_deref().map(Labels::read).transpose()?;
    let masks = inputs.masks.as_deref().map(MaskFolder::open).transpose()?;
    let request = EvalRequest {
        method: &inputs.method,
        split: &inputs.split,
        masks: masks.as_ref(),
        explanations: inputs.explanations.as_deref(),
        scores: inputs.scores.as_deref(),
        labels: labels.as_ref(),
        encoder: None,
        threshold: inputs.threshold,
        missing: inputs.missing,
    };
    evaluate_request(&gt, &request, &NoProgress)
}

/// The `legion eval --format json` report of the given inputs, as a dict (GIL released
/// while evaluating).
#[pyfunction]
#[pyo3(signature = (gt_dir, split = "test", masks_dir = None, explanations = None, scores = None,
                    labels = None, no_labels = false, method = "method", threshold = 0.5,
                    missing = "error"))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate_json<'py>(
    py: Python<'py>,
    gt_dir: PathBuf,
    split: &str,
    masks_dir: Option<PathBuf>,
    explanations: Option<PathBuf>,
    scores: Option<PathBuf>,
    labels: Option<PathBuf>,
    no_labels: bool,
    method: &str,
    threshold: f64,
    missing: &str,
) -> PyResult<Bound<'py, PyAny>> {
    if masks_dir.is_none() && explanations.is_none() && scores.is_none() {
        return Err(PyValueError::new_err(
            "nothing to evaluate: give masks_dir, explanations and/or scores",
        ));
    }
    let missing = match missing {
        "error" => MissingPolicy::Error,
        "empty" => MissingPolicy::Empty,
        other => {
            return Err(PyValueError::new_err(format!(
                "missing must be \"error\" or \"empty\", got `{other}`"
            )));
        }
    };
    let inputs = EvalInputs {
        labels: labels_path(&gt_dir, labels, no_labels),
        gt: gt_dir,
        split: split.to_owned(),
        masks: masks_dir,
        explanations,
        scores,
        method: method.to_owned(),
        threshold,
        missing,
    };
    let report = py.detach(|| run(&inputs)).map_err(eval_error)?;
    json_to_py(py, &report)
}
