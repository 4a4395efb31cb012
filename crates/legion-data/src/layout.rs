//! The SynthScars folder layout.
//!
//! ```text
//! <root>/{train,test}/images/<img_file_name>
//! <root>/{train,test}/annotations/{train,test}.json   (the release's README says "annoations")
//! ```
//! `root` may also be the folder that contains `SynthScars/`.

use std::path::{Path, PathBuf};

use crate::error::DataError;

/// The two annotation folder names found in the wild.
pub const ANNOTATION_DIRS: [&str; 2] = ["annotations", "annoations"];

/// Where one split of a SynthScars-layout dataset lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitLayout {
    /// The split name (`train`, `test`, ...).
    pub split: String,
    /// The annotation JSON.
    pub annotations: PathBuf,
    /// The folder holding the images.
    pub images: PathBuf,
}

impl SplitLayout {
    /// Finds `split` under `root`.
    ///
    /// # Errors
    /// [`DataError::NoAnnotations`] listing every path tried.
    pub fn find(root: &Path, split: &str) -> Result<Self, DataError> {
        let mut tried = Vec::new();
        for base in [root.to_path_buf(), root.join("SynthScars")] {
            for dir in ANNOTATION_DIRS {
                let annotations = base.join(split).join(dir).join(format!("{split}.json"));
                if annotations.is_file() {
                    return Ok(Self {
                        split: split.to_string(),
                        annotations,
                        images: base.join(split).join("images"),
                    });
                }
                tried.push(annotations.display().to_string());
            }
        }
        Err(DataError::NoAnnotations {
            root: root.to_path_buf(),
            split: split.to_string(),
            tried: tried.join(", "),
        })
    }

    /// The layout a writer creates for `split` under `root` (`annotations/`, the release's name).
    pub fn new_at(root: &Path, split: &str) -> Self {
        Self {
            split: split.to_string(),
            annotations: root
                .join(split)
                .join("annotations")
                .join(format!("{split}.json")),
            images: root.join(split).join("images"),
        }
    }

    /// The splits present under `root`, in a stable order (`train`, `test`, then others sorted).
    pub fn splits(root: &Path) -> Vec<Self> {
        let mut names: Vec<String> = ["train", "test"].iter().map(|s| s.to_string()).collect();
        for base in [root.to_path_buf(), root.join("SynthScars")] {
            if let Ok(entries) = std::fs::read_dir(&base) {
                let mut others: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !names.contains(n))
                    .collect();
                others.sort();
                names.extend(others);
            }
        }
        names
            .iter()
            .filter_map(|n| Self::find(root, n).ok())
            .collect()
    }

    /// The path of an image of this split.
    pub fn image_path(&self, img_file_name: &str) -> PathBuf {
        self.images.join(img_file_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_both_annotation_folder_spellings_and_nested_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("train/annoations")).unwrap();
        std::fs::write(root.join("train/annoations/train.json"), "[]").unwrap();
        std::fs::create_dir_all(root.join("SynthScars/test/annotations")).unwrap();
        std::fs::write(root.join("SynthScars/test/annotations/test.json"), "[]").unwrap();
        let train = SplitLayout::find(root, "train").unwrap();
        assert!(train.annotations.ends_with("train/annoations/train.json"));
        let test = SplitLayout::find(root, "test").unwrap();
        assert_eq!(test.images, root.join("SynthScars/test/images"));
        let err = SplitLayout::find(root, "val").unwrap_err().to_string();
        assert!(err.contains("val/annotations/val.json"), "{err}");
        assert_eq!(SplitLayout::splits(root).len(), 2);
    }
}
