//! Evaluator for legion-rs: trusted metrics and the LEGION paper's benchmark tables for ANY
//! method's predictions (LEGION, arXiv 2503.15264).
//!
//! - Localization ([`metrics::localization`]): the paper's `mIoU` (mean of background and
//!   artifact IoU, `+1e-6`) and artifact-pixel `F1`, per-image mean (the published convention,
//!   the default) and dataset-accumulated; LISA/GLaMM `gIoU`/`cIoU` and a TruFor-style F1
//!   ([`metrics::trufor`]), clearly labelled as not what the LEGION tables use.
//! - Explanations: ROUGE-L F ([`rouge`], matching Python `rouge-score` with its Porter stemmer,
//!   [`porter`]) and CSS through a pluggable [`css::SentenceEncoder`].
//! - Detection ([`detection`]): accuracy, balanced accuracy, AP, ROC-AUC, per group.
//! - Output: [`report::Report`] (JSON), tables in the paper's layout ([`tables`]), per-image CSV,
//!   the worst images and overlay PNGs ([`overlay`]).
//!
//! Ground truth comes from a SynthScars-layout dataset ([`ground_truth`]); predictions are a
//! folder of `<image stem>.png` masks, a JSONL of explanations, and/or a CSV/JSONL of
//! image-level scores ([`predictions`]). Evaluation runs in parallel and streams: each worker
//! holds one image's masks at a time ([`evaluate`]).
//!
//! ```text
//! legion eval --gt data/synthscars-tiny --split test --masks preds/ --explanations preds.jsonl
//! ```

pub mod css;
pub mod detection;
pub mod error;
pub mod evaluate;
pub mod ground_truth;
pub mod metrics;
pub mod overlay;
pub mod porter;
pub mod predictions;

pub mod report;
pub mod rouge;
pub mod tables;

pub use error::EvalError;
pub use evaluate::{ExplanationConfig, LocalizationConfig, MissingPolicy};
pub use legion_data::progress::{NoProgress, Progress};
pub use report::Report;
