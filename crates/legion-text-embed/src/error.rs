//! Errors of this crate: every variant names the file (and field) it is about.

use std::path::PathBuf;

use crate::strict::StrictLoadError;

/// Everything that can go wrong loading a checkpoint or encoding sentences.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JSON file could not be parsed.
    #[error("cannot parse {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A config file parsed but describes something this crate does not implement or is
    /// inconsistent.
    #[error("{path}: field `{field}`: {message}")]
    Config {
        path: PathBuf,
        field: String,
        message: String,
    },
    /// A checkpoint directory lacks a file this crate needs.
    #[error("{dir} has no {what} (looked for {candidates})")]
    MissingFile {
        dir: PathBuf,
        what: &'static str,
        candidates: String,
    },
    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer {path}: {source}")]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
    /// The tokenizer refused the truncation length.
    #[error("tokenizer {path}: cannot truncate to {max_seq_length} tokens: {source}")]
    Truncation {
        path: PathBuf,
        max_seq_length: usize,
        #[source]
        source: tokenizers::Error,
    },
    /// The tokenizer has no padding settings and `pad_token_id` is not in its vocabulary.
    #[error("tokenizer {path}: pad_token_id {pad_token_id} is not in the vocabulary")]
    PadToken { path: PathBuf, pad_token_id: u32 },
    /// A batch cannot be tokenised into one padded block (it is empty, or padding failed).
    #[error("tokenizer {path}: {message}")]
    Batch { path: PathBuf, message: String },
    /// The weights do not match the model.
    #[error(transparent)]
    Weights(#[from] StrictLoadError),
    /// Two embeddings of different lengths were compared.
    #[error("cannot compare embeddings of lengths {left} and {right}")]
    LengthMismatch { left: usize, right: usize },
    /// A tensor could not be read back from the device.
    #[error("cannot read embeddings back from the device: {0}")]
    Readback(#[source] Box<dyn std::error::Error + Send + Sync>),
}
