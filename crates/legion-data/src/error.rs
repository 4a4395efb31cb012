//! Errors of the data crate. Every variant names the file, and where there is one the record id
//! and the field, so a user can find the bad line in a 12k-record annotation file.

use std::path::PathBuf;

/// Where in a dataset a problem sits: file, record and field (each optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    /// The file that holds the problem (annotation JSON, image, mask PNG, ...).
    pub file: PathBuf,
    /// The record id (the single key of the SynthScars record object), when known.
    pub record: Option<String>,
    /// The field path inside the record, e.g. `refs[2].segmentation[0][7]`.
    pub field: Option<String>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(record) = &self.record {
            write!(f, ", record `{record}`")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        Ok(())
    }
}

impl Location {
    /// A location in `file` with no record.
    pub fn file(file: impl Into<PathBuf>) -> Self {
        Self {
            file: file.into(),
            record: None,
            field: None,
        }
    }

    /// The same file, in `record`.
    pub fn record(&self, record: impl Into<String>) -> Self {
        Self {
            file: self.file.clone(),
            record: Some(record.into()),
            field: None,
        }
    }

    /// The same file and record, at `field`.
    pub fn field(&self, field: impl Into<String>) -> Self {
        Self {
            file: self.file.clone(),
            record: self.record.clone(),
            field: Some(field.into()),
        }
    }
}

/// Errors reading SynthScars-layout or folder-layout data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read.
    #[error("{location}: {source}")]
    Io {
        location: Location,
        #[source]
        source: std::io::Error,
    },
    /// The dataset folder has no annotation file where SynthScars keeps it.
    #[error("no annotation file for split `{split}` under {root}: looked for {tried}")]
    NoAnnotations {
        root: PathBuf,
        split: String,
        tried: String,
    },
    /// The annotation file (or a JSONL line) is not valid JSON.
    #[error("{location}: malformed JSON at line {line}, column {column}: {source}")]
    Json {
        location: Location,
        line: usize,
        column: usize,
        #[source]
        source: serde_json::Error,
    },
    /// The JSON is well formed but a record or field has the wrong shape or value.
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
    /// An image (or mask PNG) could not be read or decoded.
    #[error("{location}: {source}")]
    Image {
        location: Location,
        #[source]
        source: Box<crate::image_io::ImageIoError>,
    },
    /// A decoded image has another size than its header said when the split was opened.
    #[error("{location}: decoded size {decoded:?} differs from the header size {header:?}")]
    ImageSize {
        location: Location,
        decoded: (usize, usize),
        header: (usize, usize),
    },
    /// A decoded image cannot be preprocessed for the model.
    #[error("{location}: {source}")]
    Preprocess {
        location: Location,
        #[source]
        source: crate::preprocess::PreprocessError,
    },
    /// A generated image could not be encoded as PNG.
    #[error("{location}: PNG encoding failed: {source}")]
    ImageEncode {
        location: Location,
        #[source]
        source: Box<image::ImageError>,
    },
    /// A mask PNG holds a colour pixel (masks are gray label maps).
    #[error("{location}: mask must be grayscale; found the colour {colour:?}")]
    MaskNotGray { location: Location, colour: [u8; 3] },
    /// A mask PNG has another size than its image.
    #[error("{location}: mask is {}x{} but the image is {}x{}", mask_hw.0, mask_hw.1, image_hw.0, image_hw.1)]
    MaskSize {
        location: Location,
        mask_hw: (usize, usize),
        image_hw: (usize, usize),
    },
    /// A polygon could not be rasterised.
    #[error("{location}: {source}")]
    Polygon {
        location: Location,
        #[source]
        source: crate::raster::RasterError,
    },
    /// Two records share an id or an image.
    #[error("{location}: duplicate {what} `{value}`")]
    Duplicate {
        location: Location,
        what: &'static str,
        value: String,
    },
}

impl DataError {
    /// The location of the problem, for reports.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Io { location, .. }
            | Self::Json { location, .. }
            | Self::Invalid { location, .. }
            | Self::Image { location, .. }
            | Self::ImageSize { location, .. }
            | Self::Preprocess { location, .. }
            | Self::ImageEncode { location, .. }
            | Self::MaskNotGray { location, .. }
            | Self::MaskSize { location, .. }
            | Self::Polygon { location, .. }
            | Self::Duplicate { location, .. } => Some(location),
            Self::NoAnnotations { .. } => None,
        }
    }

    pub(crate) fn invalid(location: Location, message: impl Into<String>) -> Self {
        Self::Invalid {
            location,
            message: message.into(),
        }
    }

    pub(crate) fn io(location: Location, source: std::io::Error) -> Self {
        Self::Io { location, source }
    }
}

/// What to do with bad input (a corrupt image, an invalid polygon, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadInputPolicy {
    /// Stop at the first bad record with its error.
    #[default]
    Error,
    /// Report the bad record (tracing warning + in the returned report) and go on without it.
    Skip,
}
