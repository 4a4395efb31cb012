//! Errors of the inference crate: every variant names the file or image it is about.

use std::path::{Path, PathBuf};

/// Errors running LEGION on images, writing its outputs or driving a generator.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An input image could not be decoded.
    #[error(transparent)]
    Image(#[from] legion_data::image_io::ImageIoError),
    /// An image could not be encoded or written.
    #[error("{path}: cannot write image: {source}")]
    ImageWrite {
        /// The output file (or what the encoded bytes are for).
        path: PathBuf,
        /// What the encoder reported.
        #[source]
        source: Box<image::ImageError>,
    },
    /// A perturbation (`--perturb`) failed on an image.
    #[error(transparent)]
    Perturb(#[from] legion_data::perturb::PerturbError),
    /// Preprocessing rejected an image.
    #[error("{path}: {source}")]
    Preprocess {
        /// The image.
        path: PathBuf,
        /// The reason.
        #[source]
        source: legion_data::preprocess::PreprocessError,
    },
    /// The model bundle could not be loaded.
    #[error(transparent)]
    Bundle(#[from] legion_model::bundle::BundleError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] legion_model::legion::LegionError),
    /// A file has invalid content (JSON, a line of a JSONL file, a mask).
    #[error("{path}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line, for line-oriented files.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// An external generator, scorer or endpoint answered with a failure or an unusable
    /// answer.
    #[error("{what}: {message}")]
    External {
        /// The generator, e.g. the command line or URL.
        what: String,
        /// What went wrong (exit status and stderr, HTTP status and body).
        message: String,
    },
    /// An external command could not be started.
    #[error("{what}: cannot start `sh`: {source}")]
    ExternalStart {
        /// The command line.
        what: String,
        /// Why `sh` did not start.
        #[source]
        source: std::io::Error,
    },
    /// An external endpoint could not be reached or its answer read.
    #[error("{what}: {source}")]
    ExternalHttp {
        /// The endpoint.
        what: String,
        /// The HTTP client's error.
        #[source]
        source: crate::http::HttpError,
    },
    /// An external endpoint's JSON answer does not parse.
    #[error("{what}: invalid JSON answer: {source}")]
    ExternalJson {
        /// The endpoint.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// An external endpoint's JSON answer holds an `image` that is not base64.
    #[error("{what}: `image` is not base64: {source}")]
    ExternalBase64 {
        /// The endpoint.
        what: String,
        /// The decoder's error.
        #[source]
        source: base64::DecodeError,
    },
    /// The image a generator produced cannot be decoded. `detail` says where it came from.
    #[error("{what}: {detail}: {source}")]
    GeneratedImage {
        /// The generator.
        what: String,
        /// `cannot read its output` (a command's file) or `answer is not an image`.
        detail: &'static str,
        /// The decoder's error.
        #[source]
        source: legion_data::image_io::ImageIoError,
    },
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] legion_model::tokenizer::TokenizerError),
    /// A predicted mask does not fit its size.
    #[error("mask: {0}")]
    Mask(#[from] legion_data::mask::MaskError),
    /// A predicted mask cannot be run-length encoded.
    #[error("mask RLE: {0}")]
    Rle(#[from] legion_data::rle::RleError),
    /// A model output (`what`) could not be read back from the device.
    #[error("reading the {what} back from the device: {source}")]
    Readback {
        /// Which output.
        what: &'static str,
        /// burn's error.
        #[source]
        source: Box<burn::tensor::DataError>,
    },
    /// A whole batch failed; each of its images carries the batch's error.
    #[error("{0}")]
    Batch(#[source] std::sync::Arc<InferError>),
    /// A setting is out of range or inconsistent.
    #[error("invalid setting: {0}")]
    Config(String),
}

impl InferError {
    /// [`InferError::Io`] for `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// [`InferError::Invalid`] for `path`, without a line.
    pub fn invalid(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.as_ref().to_path_buf(),
            line: None,
            message: message.into(),
        }
    }

    /// [`InferError::ImageWrite`] for `path`.
    pub fn image_write(path: impl AsRef<Path>, source: image::ImageError) -> Self {
        Self::ImageWrite {
            path: path.as_ref().to_path_buf(),
            source: Box::new(source),
        }
    }
}
