//! Errors of the evaluator. Every variant names the file (and line or image where there is
//! one), so that a user can fix a bad prediction folder without a debugger.

use std::path::PathBuf;

use legion_data::DataError;
use legion_data::raster::RasterError;

/// Errors while evaluating predictions.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading the ground-truth dataset failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A prediction or ground-truth mask PNG is unreadable or of an unsupported pixel type.
    #[error("{path}: {message}")]
    MaskFile { path: PathBuf, message: String },
    /// An image of the dataset could not be read (its size is needed to rasterise the GT).
    #[error("{path}: cannot read the image: {message}")]
    Image { path: PathBuf, message: String },
    /// A line of a JSONL or CSV input is malformed.
    #[error("{path}, line {line}: {message}")]
    BadLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The same image appears twice in an input (or two dataset images share a file stem).
    #[error("{path}{}: duplicate {what} `{value}`", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Duplicate {
        path: PathBuf,
        line: Option<usize>,
        what: &'static str,
        value: String,
    },
    /// A prediction names an image that is not in the ground truth.
    #[error("{path}: prediction for `{image}`, which is not an image of the ground truth")]
    UnknownImage { path: PathBuf, image: String },
    /// An image has no prediction and the policy is [`crate::MissingPolicy::Error`].
    #[error("no prediction for image `{image}` (expected {expected})")]
    MissingPrediction { image: String, expected: String },
    /// A ground-truth polygon could not be rasterised.
    #[error("{annotations}, record `{record}`: {source}")]
    Raster {
        annotations: PathBuf,
        record: String,
        #[source]
        source: RasterError,
    },
    /// The sentence encoder failed.
    #[error("sentence encoder `{encoder}`: {message}")]
    Encoder { encoder: String, message: String },
    /// A configuration value or input combination is invalid.
    #[error("{0}")]
    Invalid(String),
}

impl EvalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn mask_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::MaskFile {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn bad_line(
        path: impl Into<PathBuf>,
        line: usize,
        message: impl Into<String>,
    ) -> Self {
        Self::BadLine {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}
