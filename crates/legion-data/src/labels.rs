//! Optional group labels: content type per image, artifact category per ref.
//!
//! The SynthScars release has NO content-type or category labels (the paper's per-type tables
//! were made from labels that were never published). Users who have labels supply a JSONL file,
//! one image per line:
//!
//! ```json
//! {"image": "0001.jpg", "content_type": "human", "categories": ["structure", "physics"]}
//! ```
//! `image` is the record's `img_file_name` (or `id`: the record id); `content_type` is one of
//! `human|animal|object|scene`; `categories` (optional) is aligned with the record's `refs` in file
//! order, each one of `physics|structure|distortion` or null. Labels are never guessed.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Location};

/// SynthScars content types (the paper's table columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    Human,
    Animal,
    Object,
    Scene,
}

impl ContentType {
    /// All content types in the paper's table order.
    pub const ALL: [ContentType; 4] = [Self::Object, Self::Animal, Self::Human, Self::Scene];

    /// The column name as printed in the paper's tables.
    pub fn title(&self) -> &'static str {
        match self {
            Self::Human => "Human",
            Self::Animal => "Animal",
            Self::Object => "Object",
            Self::Scene => "Scene",
        }
    }
}

/// SynthScars artifact categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactCategory {
    /// Optics/lighting, physical-law violations, perspective/spatial errors.
    Physics,
    /// Deformed objects, asymmetry, distorted text.
    Structure,
    /// Colour/texture, noise/blur, style errors, material.
    Distortion,
}

impl ArtifactCategory {
    /// All categories in a stable order.
    pub const ALL: [ArtifactCategory; 3] = [Self::Physics, Self::Structure, Self::Distortion];

    /// The name as printed in tables.
    pub fn title(&self) -> &'static str {
        match self {
            Self::Physics => "Physics",
            Self::Structure => "Structure",
            Self::Distortion => "Distortion",
        }
    }
}

/// One line of a labels file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageLabels {
    /// The record's `img_file_name` or id.
    pub image: String,
    /// The image's content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<ContentType>,
    /// Per-ref categories, aligned with the record's `refs` in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<Option<ArtifactCategory>>,
}

/// A labels file, keyed by image name or record id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    by_image: HashMap<String, ImageLabels>,
}

impl Labels {
    /// Reads a JSONL labels file.
    ///
    /// # Errors
    /// [`DataError::Json`] naming the line for a bad line, [`DataError::Duplicate`] for an image
    /// labelled twice, [`DataError::Io`] when unreadable.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let location = Location::file(path);
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(location.clone(), e))?;
        let mut by_image = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let labels: ImageLabels = serde_json::from_str(line).map_err(|e| DataError::Json {
                location: location.clone(),
                line: index + 1,
                column: e.column(),
                source: e,
            })?;
            if by_image.contains_key(&labels.image) {
                return Err(DataError::Duplicate {
                    location: location.field(format!("line {}", index + 1)),
                    what: "image",
                    value: labels.image,
                });
            }
            by_image.insert(labels.image.clone(), labels);
        }
        Ok(Self { by_image })
    }

    /// Writes a JSONL labels file, sorted by image, atomically.
    ///
    /// # Errors
    /// [`DataError::Io`] when the file cannot be written.
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        let mut lines: Vec<&ImageLabels> = self.by_image.values().collect();
        lines.sort_by(|a, b| a.image.cmp(&b.image));
        let mut text = String::new();
        for l in lines {
            text.push_str(&serde_json::to_string(l).expect("plain struct serialises"));
            text.push('\n');
        }
        crate::fsutil::write_atomic(path, text.as_bytes())
            .map_err(|e| DataError::io(Location::file(path), e))
    }

    /// Adds or replaces one image's labels.
    pub fn insert(&mut self, labels: ImageLabels) {
        self.by_image.insert(labels.image.clone(), labels);
    }

    /// The labels of a record, looked up by image file name, then by record id.
    pub fn get(&self, img_file_name: &str, record_id: &str) -> Option<&ImageLabels> {
        self.by_image
            .get(img_file_name)
            .or_else(|| self.by_image.get(record_id))
    }

    /// Every image's labels, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ImageLabels> {
        self.by_image.values()
    }

    /// Number of labelled images.
    pub fn len(&self) -> usize {
        self.by_image.len()
    }

    /// Whether no image is labelled.
    pub fn is_empty(&self) -> bool {
        self.by_image.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_rejects_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.jsonl");
        std::fs::write(
            &path,
            "{\"image\": \"a.jpg\", \"content_type\": \"human\", \"categories\": [\"physics\", null]}\n\n{\"image\": \"b\"}\n",
        )
        .unwrap();
        let labels = Labels::read(&path).unwrap();
        assert_eq!(labels.len(), 2);
        let a = labels.get("a.jpg", "x").unwrap();
        assert_eq!(a.content_type, Some(ContentType::Human));
        assert_eq!(a.categories, vec![Some(ArtifactCategory::Physics), None]);
        assert!(
            labels.get("nope.jpg", "b").is_some(),
            "falls back to the record id"
        );

        let out = dir.path().join("out.jsonl");
        labels.write(&out).unwrap();
        assert_eq!(Labels::read(&out).unwrap(), labels);

        std::fs::write(
            &path,
            "{\"image\": \"a\"}\n{\"image\": \"a\", \"content_type\": \"robot\"}\n",
        )
        .unwrap();
        let err = Labels::read(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        std::fs::write(&path, "{\"image\": \"a\"}\n{\"image\": \"a\"}\n").unwrap();
        assert!(matches!(
            Labels::read(&path),
            Err(DataError::Duplicate { .. })
        ));
    }
}
