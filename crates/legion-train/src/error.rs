//! Errors of training: one variant per failure kind, each keeping its cause as `source`.

use std::path::PathBuf;

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration is invalid (a bad value, an option the task cannot honour).
    #[error("config {source_name}: {message}")]
    Config {
        source_name: String,
        message: String,
    },
    /// A config file is not TOML of the config's schema, or an override is malformed.
    #[error("config {source_name}: {source}")]
    ConfigSyntax {
        source_name: String,
        #[source]
        source: toml::de::Error,
    },
    /// The `[trainable]` LoRA settings cannot be applied to the LLM.
    #[error("config trainable: {0}")]
    Lora(#[source] legion_model::llama::lora::LoraError),
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file the run wrote (checkpoint state, metrics log) does not parse.
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A line of the metrics log does not parse.
    #[error("{path}, line {line}: {source}")]
    MetricsLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    /// An image (the loss curve) could not be written.
    #[error("{path}: {source}")]
    ImageWrite {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// `checkpoints/latest` names a folder that is not a complete checkpoint.
    #[error("{latest}: points to {target}, which is not a complete checkpoint")]
    IncompleteCheckpoint { latest: PathBuf, target: PathBuf },
    /// The optimiser state of a checkpoint could not be written or read.
    #[error("{path}: optimiser state: {source}")]
    OptimizerState {
        path: PathBuf,
        #[source]
        source: burn::store::RecordError,
    },
    /// A training or evaluation image could not be decoded or preprocessed.
    #[error(transparent)]
    Image(#[from] legion_data::image_io::ImageIoError),
    /// A decoded image cannot be preprocessed for the model.
    #[error("{path}: {source}")]
    Preprocess {
        path: PathBuf,
        #[source]
        source: legion_data::preprocess::PreprocessError,
    },
    /// A folder that should hold labelled images holds none.
    #[error("{path}: no image under a 0_real/ or 1_fake/ folder")]
    NoLabelledImages { path: PathBuf },
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
    #[error("record {record}: {source}")]
    Record {
        record: String,
        #[source]
        source: legion_data::raster::RasterError,
    },
    /// An exchange between the processes of a distributed run failed (a rank died, the
    /// transport broke).
    #[error("step {step}: the processes of the run could not exchange data: {source}")]
    Collective {
        step: u64,
        #[source]
        source: crate::distributed::CollectiveError,
    },
    /// The processes of a distributed run no longer hold the same model.
    #[error("step {step}: {detail}")]
    Replicas { step: u64, detail: String },
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
