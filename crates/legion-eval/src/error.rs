//! Errors of the evaluator. Every variant names the file (and line or image where there is
//! one), so that a user can fix a bad prediction folder without a debugger.

use std::path::{Path, PathBuf};

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
    /// A prediction or ground-truth mask PNG has an unsupported pixel type or size.
    #[error("{path}: {message}")]
    MaskFile { path: PathBuf, message: String },
    /// A prediction or ground-truth mask PNG cannot be read or decoded. `what` says which.
    #[error("{path}: cannot decode the {what}: {source}")]
    MaskDecode {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: legion_data::image_io::ImageIoError,
    },
    /// A ground-truth mask's pixels do not fill the image size.
    #[error("{path}: the GT mask does not have the image size {height}x{width}: {source}")]
    MaskSize {
        path: PathBuf,
        height: usize,
        width: usize,
        #[source]
        source: legion_data::mask::MaskError,
    },
    /// An image of the dataset could not be decoded (for an overlay).
    #[error("{path}: cannot read the image: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: legion_data::image_io::ImageIoError,
    },
    /// An image header of the dataset could not be read (its size is needed to rasterise the
    /// GT).
    #[error("{path}: cannot read the image: {source}")]
    ImageHeader {
        path: PathBuf,
        #[source]
        source: Box<image::ImageError>,
    },
    /// An overlay image could not be written.
    #[error("{path}: cannot write the image: {source}")]
    ImageWrite {
        path: PathBuf,
        #[source]
        source: Box<image::ImageError>,
    },
    /// A line of a CSV input (or a value in a JSONL line) is malformed.
    #[error("{path}, line {line}: {message}")]
    BadLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A line of a JSONL input (or a JSON file, at the parser's line) is not JSON of its schema.
    #[error("{path}, line {line}: {source}")]
    JsonLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
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
    #[error("sentence encoder `{encoder}`: {source}")]
    Encoder {
        encoder: String,
        #[source]
        source: crate::css::EncoderError,
    },
    /// The sentence encoder returned another number of embeddings than it was given texts.
    #[error("sentence encoder `{encoder}`: returned {embeddings} embeddings for {texts} texts")]
    EncoderCount {
        encoder: String,
        embeddings: usize,
        texts: usize,
    },
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

    /// [`EvalError::JsonLine`] for line `line` of `path`, as a `map_err` argument.
    pub(crate) fn json_line(path: &Path, line: usize) -> impl FnOnce(serde_json::Error) -> Self {
        move |source| Self::JsonLine {
            path: path.to_path_buf(),
            line,
            source,
        }
    }

    /// [`EvalError::MaskDecode`] for the `what` mask file `path`, as a `map_err` argument.
    pub(crate) fn mask_decode(
        path: &Path,
        what: &'static str,
    ) -> impl FnOnce(legion_data::image_io::ImageIoError) -> Self {
        move |source| Self::MaskDecode {
            path: path.to_path_buf(),
            what,
            source,
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
