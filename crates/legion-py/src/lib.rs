//! Python bindings of legion-rs: the `legion_rs._native` extension module behind the
//! `legion_rs` package (`python/legion_rs`, built into a wheel by maturin from
//! `pyproject.toml`).
//!
//! What Python gets: the folder evaluator with the `legion eval --format json` report
//! ([`evaluate`]), the per-image metrics on numpy masks and a dataset accumulator
//! ([`metrics`]), ROUGE-L, polygon rasterisation in the pycocotools and `cv2.fillPoly`
//! conventions and COCO RLE ([`masks`]), and SynthScars records with their masks
//! ([`dataset`]). Every call that walks pixels or files releases the GIL.
//!
//! ```text
//! python python/build_wheel.py && pip install target/wheels/legion_rs-*.whl
//! ```

mod arrays;
mod dataset;
mod evaluate;
mod masks;
mod metrics;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

/// The message of `error` followed by its chain of sources, `outer: inner: ...`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        // thiserror's `transparent` and `{source}` messages already contain the inner text.
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = inner.source();
    }
    message
}

/// A Python `ValueError` carrying `error`'s message chain (bad input: the message names the
/// file, record and field, as the Rust error does).
fn value_error(error: &dyn std::error::Error) -> PyErr {
    PyValueError::new_err(error_chain(error))
}

/// Evaluator errors: unreadable files become `OSError`, everything else `ValueError`.
fn eval_error(error: legion_eval::EvalError) -> PyErr {
    match &error {
        legion_eval::EvalError::Io { .. } => PyOSError::new_err(error_chain(&error)),
        _ => value_error(&error),
    }
}

/// `value` as Python objects (dicts, lists, numbers, strings, `None`), through `json.loads` of
/// its serde JSON, so a dict reads exactly like the `legion eval --format json` output: same
/// keys in the same order, same numbers (shortest round-trip floats).
fn json_to_py<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| PyValueError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_function(wrap_pyfunction!(evaluate::evaluate_json, module)?)?;
    module.add_function(wrap_pyfunction!(metrics::image_scores, module)?)?;
    module.add_function(wrap_pyfunction!(metrics::image_scores_batch, module)?)?;
    module.add_function(wrap_pyfunction!(metrics::rouge_l, module)?)?;
    module.add_function(wrap_pyfunction!(metrics::clean_analysis_text, module)?)?;
    module.add_class::<metrics::LocalizationAccumulator>()?;
    module.add_function(wrap_pyfunction!(masks::polygon_mask, module)?)?;
    module.add_function(wrap_pyfunction!(masks::rle_encode, module)?)?;
    module.add_function(wrap_pyfunction!(masks::rle_decode, module)?)?;
    module.add_function(wrap_pyfunction!(dataset::load_synthscars, module)?)?;
    module.add_class::<dataset::SynthScarsRecords>()?;
    Ok(())
}
