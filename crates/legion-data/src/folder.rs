//! The generic "folder" format for images from a new generator, and its conversion to the
//! SynthScars layout.
//!
//! ```text
//! <src>/images/<name>.{jpg,jpeg,png,webp}
//! <src>/masks/<stem>.png          label map: 0 = background, k = the k-th artifact (1-based), or
//! <src>/masks/<stem>_<k>.png      one binary PNG per artifact (nonzero = artifact), k = 1, 2, ...
//! <src>/explanations.jsonl        one line per image:
//!   {"image": "<name>", "summary": "...", "artifacts": [{"phrase": "...", "explanation": "...",
//!    "category": "physics|structure|distortion"}], "content_type": "human|animal|object|scene"}
//! ```
//! `summary`, `category` and `content_type` are optional; a `caption` field, if given, is used
//! verbatim (it must contain every phrase) instead of the SynthScars-style caption built from the
//! summary and the artifacts. An image listed with no artifacts is a clean image (zero refs).
//! Masks become polygons ([`crate::contour`]); pixels a polygon list cannot express (holes) are
//! counted in the report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::contour::outer_polygons;
use crate::error::{DataError, Location};
use crate::labels::{ArtifactCategory, ContentType, ImageLabels, Labels};
use crate::layout::SplitLayout;
use crate::mask::Mask;
use crate::progress::Progress;
use crate::record::{ArtifactRef, Record, write_annotations};
use crate::span::Grounding;

/// One artifact of a folder-format image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderArtifact {
    /// The artifact phrase.
    pub phrase: String,
    /// Why it is an artifact.
    #[serde(default)]
    pub explanation: String,
    /// Optional category.
    #[serde(default)]
    pub category: Option<ArtifactCategory>,
}

/// One line of `explanations.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderEntry {
    /// Image file name under `images/`.
    pub image: String,
    /// One-sentence summary for the caption.
    #[serde(default)]
    pub summary: Option<String>,
    /// Full caption, used verbatim when given.
    #[serde(default)]
    pub caption: Option<String>,
    /// Artifacts in mask order.
    #[serde(default)]
    pub artifacts: Vec<FolderArtifact>,
    /// Optional content type.
    #[serde(default)]
    pub content_type: Option<ContentType>,
}

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// Where the dataset was written.
    pub out: PathBuf,
    /// Split written.
    pub split: String,
    /// Images imported.
    pub images: usize,
    /// Artifacts imported.
    pub artifacts: usize,
    /// Artifacts whose mask had holes: (image, artifact index, pixels added by filling).
    pub filled_holes: Vec<(String, usize, usize)>,
    /// Whether a labels file was written.
    pub labels_written: bool,
}

/// The SynthScars-style caption for a folder entry.
pub fn caption_for(entry: &FolderEntry) -> String {
    if let Some(caption) = &entry.caption {
        return caption.clone();
    }
    if entry.artifacts.is_empty() {
        let summary = entry
            .summary
            .clone()
            .unwrap_or_else(|| "no obvious artifact.".into());
        return format!("Upon examining the image. I have found: {summary}");
    }
    let summary = entry.summary.clone().unwrap_or_else(|| {
        let phrases: Vec<&str> = entry
            .artifacts
            .iter()
            .map(|a| a.phrase.trim_end_matches('.'))
            .collect();
        format!(
            "{} artifact(s): {}.",
            entry.artifacts.len(),
            phrases.join(", ")
        )
    });
    let mut caption = format!(
        "Upon examining the image. I have found: {summary}\nTo elaborate, I have found the following artifacts. "
    );
    for a in &entry.artifacts {
        caption.push_str(&a.phrase);
        caption.push(':');
        caption.push_str(&a.explanation);
    }
    caption
}

/// Reads `explanations.jsonl`.
///
/// # Errors
/// [`DataError::Json`] naming the line, [`DataError::Duplicate`] for an image listed twice.
pub fn read_entries(path: &Path) -> Result<Vec<FolderEntry>, DataError> {
    let location = Location::file(path);
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(location.clone(), e))?;
    let mut seen = HashMap::new();
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: FolderEntry = serde_json::from_str(line).map_err(|e| DataError::Json {
            location: location.clone(),
            line: i + 1,
            column: e.column(),
            source: e,
        })?;
        if seen.insert(entry.image.clone(), ()).is_some() {
            return Err(DataError::Duplicate {
                location: location.field(format!("line {}", i + 1)),
                what: "image",
                value: entry.image,
            });
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// Reads a mask PNG as raw integer values (label ids are not rescaled): 8- and 16-bit gray as
/// stored; RGB(A) only when every pixel is gray (R = G = B), taking that value.
fn read_values(path: &Path, record: &str) -> Result<(u32, u32, Vec<u16>), DataError> {
    let at = Location::file(path).record(record);
    let img = crate::image_io::decode_image(path).map_err(|source| DataError::Image {
        location: at.clone(),
        source: Box::new(source),
    })?;
    let (w, h) = (img.width(), img.height());
    let values = match img {
        image::DynamicImage::ImageLuma8(g) => g.into_raw().into_iter().map(u16::from).collect(),
        image::DynamicImage::ImageLuma16(g) => g.into_raw(),
        image::DynamicImage::ImageLumaA8(g) => g.pixels().map(|p| u16::from(p.0[0])).collect(),
        image::DynamicImage::ImageLumaA16(g) => g.pixels().map(|p| p.0[0]).collect(),
        other => {
            let rgb = other.into_rgb8();
            if let Some(p) = rgb.pixels().find(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]) {
                return Err(DataError::MaskNotGray {
                    location: at,
                    colour: p.0,
                });
            }
            rgb.pixels().map(|p| u16::from(p.0[0])).collect()
        }
    };
    Ok((w, h, values))
}

/// The masks of one folder entry, one per artifact, at the image size `hw`.
///
/// # Errors
/// Missing or unreadable mask files, a size that differs from the image, a label map whose
/// labels do not match the artifact count.
pub fn entry_masks(
    src: &Path,
    entry: &FolderEntry,
    hw: (usize, usize),
) -> Result<Vec<Mask>, DataError> {
    let stem = Path::new(&entry.image)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let masks_dir = src.join("masks");
    let n = entry.artifacts.len();
    let label_map = masks_dir.join(format!("{stem}.png"));
    let check_size = |path: &Path, w: u32, h: u32| {
        if (h as usize, w as usize) != hw {
            Err(DataError::MaskSize {
                location: Location::file(path).record(&entry.image),
                mask_hw: (h as usize, w as usize),
                image_hw: hw,
            })
        } else {
            Ok(())
        }
    };
    if label_map.is_file() {
        let (w, h, values) = read_values(&label_map, &entry.image)?;
        check_size(&label_map, w, h)?;
        let max = values.iter().copied().max().unwrap_or(0) as usize;
        if max > n {
            return Err(DataError::invalid(
                Location::file(&label_map).record(&entry.image),
                format!("label map has label {max} but explanations.jsonl lists {n} artifacts"),
            ));
        }
        return Ok((1..=n)
            .map(|k| {
                let data = values.iter().map(|&v| u8::from(v as usize == k)).collect();
                Mask::from_raw(hw.0, hw.1, data).expect("size checked")
            })
            .collect());
    }
    (1..=n)
        .map(|k| {
            let path = masks_dir.join(format!("{stem}_{k}.png"));
            if !path.is_file() {
                return Err(DataError::invalid(
                    Location::file(&path).record(&entry.image),
                    format!("missing mask for artifact {k} (expected {stem}.png as a label map or {stem}_{k}.png)"),
                ));
            }
            let (w, h, values) = read_values(&path, &entry.image)?;
            check_size(&path, w, h)?;
            let data = values.iter().map(|&v| u8::from(v != 0)).collect();
            Ok(Mask::from_raw(hw.0, hw.1, data).expect("size checked"))
        })
        .collect()
}

/// Converts a folder-format dataset to the SynthScars layout under `out/<split>/`.
///
/// Images are copied unchanged; `out/labels.jsonl` is written (merged with an existing one) when
/// any entry carries a content type or category.
///
/// # Errors
/// Any bad entry (missing image or mask, bad JSON line, phrase not in a given caption); nothing is
/// written to the annotation file unless every entry converts.
pub fn import_folder(
    src: &Path,
    out: &Path,
    split: &str,
    progress: &dyn Progress,
) -> Result<ImportReport, DataError> {
    let entries = read_entries(&src.join("explanations.jsonl"))?;
    let layout = SplitLayout::new_at(out, split);
    std::fs::create_dir_all(&layout.images)
        .map_err(|e| DataError::io(Location::file(&layout.images), e))?;
    progress.start("importing", entries.len() as u64);
    type Imported = (Record, Vec<(usize, usize)>);
    let converted: Vec<Result<Imported, DataError>> = entries
        .par_iter()
        .map(|entry| {
            let image_path = src.join("images").join(&entry.image);
            let (w, h) =
                crate::image_io::dimensions(&image_path).map_err(|source| DataError::Image {
                    location: Location::file(&image_path).record(&entry.image),
                    source: Box::new(source),
                })?;
            let (h, w) = (h as usize, w as usize);
            let masks = entry_masks(src, entry, (h, w))?;
            let mut refs = Vec::with_capacity(masks.len());
            let mut holes = Vec::new();
            for (k, (mask, artifact)) in masks.iter().zip(&entry.artifacts).enumerate() {
                let segmentation = outer_polygons(mask);
                let back = crate::raster::coco_polygons(&segmentation, h, w).map_err(|source| {
                    DataError::Polygon {
                        location: Location::file(&image_path)
                            .record(&entry.image)
                            .field(format!("artifacts[{k}]")),
                        source,
                    }
                })?;
                let added = back.area().saturating_sub(mask.area());
                if added > 0 {
                    holes.push((k, added));
                }
                refs.push(ArtifactRef {
                    sentence: artifact.phrase.clone(),
                    explanation: artifact.explanation.clone(),
                    bbox: None,
                    segmentation,
                });
            }
            let record = Record {
                id: Path::new(&entry.image)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                img_file_name: entry.image.clone(),
                caption: caption_for(entry),
                refs,
            };
            let grounding = Grounding::of(&record);
            if let Some(d) = grounding.dropped.first() {
                return Err(DataError::invalid(
                    Location::file(src.join("explanations.jsonl"))
                        .record(&entry.image)
                        .field(format!("artifacts[{}].phrase", d.ref_index)),
                    format!("{} (`{}`)", d.issue, d.sentence),
                ));
            }
            std::fs::copy(&image_path, layout.image_path(&entry.image))
                .map_err(|e| DataError::io(Location::file(&image_path).record(&entry.image), e))?;
            progress.advance(1);
            Ok((record, holes))
        })
        .collect();
    progress.finish();
    let mut records = Vec::with_capacity(converted.len());
    let mut filled_holes = Vec::new();
    for result in converted {
        let (record, holes) = result?;
        filled_holes.extend(
            holes
                .into_iter()
                .map(|(k, n)| (record.img_file_name.clone(), k, n)),
        );
        records.push(record);
    }
    write_annotations(&layout.annotations, &records)?;

    let labelled: Vec<ImageLabels> = entries
        .iter()
        .filter(|e| e.content_type.is_some() || e.artifacts.iter().any(|a| a.category.is_some()))
        .map(|e| ImageLabels {
            image: e.image.clone(),
            content_type: e.content_type,
            categories: e.artifacts.iter().map(|a| a.category).collect(),
        })
        .collect();
    let labels_written = !labelled.is_empty();
    if labels_written {
        let path = out.join("labels.jsonl");
        let mut labels = if path.is_file() {
            Labels::read(&path)?
        } else {
            Labels::default()
        };
        for l in labelled {
            labels.insert(l);
        }
        labels.write(&path)?;
    }
    Ok(ImportReport {
        out: out.to_path_buf(),
        split: split.to_string(),
        images: records.len(),
        artifacts: records.iter().map(|r| r.refs.len()).sum(),
        filled_holes,
        labels_written,
    })
}
