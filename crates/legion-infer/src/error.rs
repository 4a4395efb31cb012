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
    #[error("{path}: cannot write image: {message}")]
    ImageWrite {
        /// The output file.
        path: PathBuf,
        /// What the encoder reported.
        message: String,
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
    /// An external generator, scorer or endpoint failed.
    #[error("{what}: {message}")]
    External {
        /// The generator, e.g. the command line or URL.
        what: String,
        /// What went wrong (exit status and stderr, HTTP status and body).
        message: String,
    },
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
    pub fn image_write(path: impl AsRef<Path>, message: impl std::fmt::Display) -> Self {
        Self::ImageWrite {
            path: path.as_ref().to_path_buf(),
            message: message.to_string(),
        }
    }
}
