//! Training and fine-tuning LEGION (arXiv 2503.15264) with burn: the reference recipe's mask
//! and text losses ([`loss`]), LoRA and frozen towers ([`trainable`]), AdamW with warmup and
//! linear decay ([`schedule`]), global gradient clipping ([`grads`]), gradient accumulation,
//! data parallelism over several devices in one process, crash-safe checkpoints with exact
//! resume ([`checkpoint`]), a NaN guard, JSONL metrics and loss curves ([`curve`]), and the
//! held-out evaluation with the evaluator's metrics ([`evaluation`]).
//!
//! ```text
//! legion train --config configs/tiny.toml
//! legion finetune --from runs/tiny/final --data my-generator/ --set run.steps=200
//! ```

pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod curve;
pub mod detect;
pub mod evaluation;
pub mod grads;
pub mod loss;
pub mod rng;
pub mod schedule;
pub mod trainable;
pub mod trainer;

use std::path::PathBuf;

pub use config::{Task, TrainConfig};
pub use trainer::{StepRecord, TrainObserver, TrainSummary, train};

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration is invalid.
    #[error("config {source_name}: {message}")]
    Config {
        source_name: String,
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    /// Bad training data (with the bad-input policy `error`).
    #[error(transparent)]
    Data(#[from] legion_data::error::DataError),
    /// The model rejected its input or weights.
    #[error(transparent)]
    Model(#[from] legion_model::legion::LegionError),
    /// A model bundle or checkpoint file is invalid.
    #[error(transparent)]
    Bundle(#[from] legion_model::bundle::BundleError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] legion_model::tokenizer::TokenizerError),
    /// The evaluator failed.
    #[error(transparent)]
    Eval(#[from] legion_eval::EvalError),
    /// Device selection failed.
    #[error(transparent)]
    Backend(#[from] legion_backend::BackendError),
    /// A record cannot be scored (e.g. a polygon the evaluation rasteriser rejects).
    #[error("record {record}: {message}")]
    Record { record: String, message: String },
    /// Too many consecutive non-finite steps.
    #[error(
        "stopped at step {step}: {count} consecutive steps had a non-finite loss or gradient \
         (last: {detail}); the last good checkpoint is {last_checkpoint}"
    )]
    Diverged {
        step: u64,
        count: u32,
        detail: String,
        last_checkpoint: String,
    },
}
