//! Ground truth for evaluation, from a SynthScars-layout dataset.
//!
//! The GT mask of an image follows the LEGION reference's `eval/utils.py generate_mask`:
//! every polygon of EVERY ref of the image (whether or not its phrase occurs in the caption)
//! is filled with its own `cv2.fillPoly(mask, [points], 1)`, the points converted to float32
//! and truncated to int32, via [`legion_data::raster::cv2_fill_poly`]. The reference matched
//! records by a substring test (`image_id in img_file_name`); here matching is exact.
//!
//! Alternatively the GT masks can come from a folder of `<stem>.png` masks (nonzero =
//! artifact), e.g. masks precomputed by OpenCV or a dataset that ships heatmaps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use legion_data::mask::Mask;
use legion_data::record::read_annotations;
use legion_data::{Record, SplitLayout};

use crate::error::EvalError;
use crate::predictions::image_stem;

/// Where GT masks come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GtMaskSource {
    /// Rasterise the annotation polygons (`cv2.fillPoly` convention).
    Polygons,
    /// Read `<stem>.png` from this folder.
    Folder(PathBuf),
}

/// A split of a SynthScars-layout dataset, ready for evaluation.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    /// The dataset root given by the user.
    pub root: PathBuf,
    /// The split's files.
    pub layout: SplitLayout,
    /// The records, in annotation-file order.
    pub records: Vec<Record>,
    /// Where GT masks come from.
    pub masks: GtMaskSource,
    by_file: HashMap<String, usize>,
    by_stem: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
}

impl GroundTruth {
    /// Opens `split` of the dataset at `root`, with polygon GT masks.
    ///
    /// # Errors
    /// The first bad record ([`EvalError::Data`]); [`EvalError::Duplicate`] when two records
    /// share an id, an image, or an image file stem (predictions are named by stem).
    pub fn open(root: &Path, split: &str) -> Result<Self, EvalError> {
        let layout = SplitLayout::find(root, split)?;
        let records = read_annotations(&layout.annotations)?
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_records(root, layout, records)
    }

    /// Builds from already-read records.
    ///
    /// # Errors
    /// As [`GroundTruth::open`] for duplicates.
    pub fn from_records(
        root: &Path,
        layout: SplitLayout,
        records: Vec<Record>,
    ) -> Result<Self, EvalError> {
        let (mut by_file, mut by_stem, mut by_id) =
            (HashMap::new(), HashMap::new(), HashMap::new());
        for (index, record) in records.iter().enumerate() {
            let duplicate = |what: &'static str, value: &str| EvalError::Duplicate {
                path: layout.annotations.clone(),
                line: None,
                what,
                value: value.to_string(),
            };
            if by_id.insert(record.id.clone(), index).is_some() {
                return Err(duplicate("record id", &record.id));
            }
            if by_file
                .insert(record.img_file_name.clone(), index)
                .is_some()
            {
                return Err(duplicate("image", &record.img_file_name));
            }
            let stem = image_stem(&record.img_file_name).to_string();
            if by_stem.insert(stem.clone(), index).is_some() {
                return Err(duplicate(
                    "image file stem (prediction masks are named <stem>.png)",
                    &stem,
                ));
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            layout,
            records,
            masks: GtMaskSource::Polygons,
            by_file,
            by_stem,
            by_id,
        })
    }

    /// Uses `<stem>.png` masks from `dir` instead of rasterising polygons.
    pub fn with_mask_folder(mut self, dir: &Path) -> Self {
        self.masks = GtMaskSource::Folder(dir.to_path_buf());
        self
    }

    /// The record index of an image key: its file name, file stem, or record id (tried in
    /// that order).
    pub fn find(&self, key: &str) -> Option<usize> {
        self.by_file
            .get(key)
            .or_else(|| self.by_stem.get(key))
            .or_else(|| self.by_id.get(key))
            .copied()
    }

    /// The record index of an image stem.
    pub fn find_stem(&self, stem: &str) -> Option<usize> {
        self.by_stem.get(stem).copied()
    }

    /// The image file of a record.
    pub fn image_path(&self, record: &Record) -> PathBuf {
        self.layout.image_path(&record.img_file_name)
    }

    /// (height, width) of a record's image, from its header (the image is not decoded).
    ///
    /// # Errors
    /// [`EvalError::ImageHeader`] naming the file.
    pub fn image_size(&self, record: &Record) -> Result<(usize, usize), EvalError> {
        let path = self.image_path(record);
        let (width, height) =
            image::image_dimensions(&path).map_err(|source| EvalError::ImageHeader {
                path: path.clone(),
                source: Box::new(source),
            })?;
        Ok((height as usize, width as usize))
    }

    /// The GT mask of a record at `height x width` (its image size).
    ///
    /// # Errors
    /// [`EvalError::Raster`] naming the record for a bad polygon; for a mask folder,
    /// [`EvalError::MaskFile`] when the file is missing, unreadable or of another size.
    pub fn mask(&self, record: &Record, height: usize, width: usize) -> Result<Mask, EvalError> {
        match &self.masks {
            GtMaskSource::Polygons => {
                polygon_gt_mask(record, height, width).map_err(|source| EvalError::Raster {
                    annotations: self.layout.annotations.clone(),
                    record: record.id.clone(),
                    source,
                })
            }
            GtMaskSource::Folder(dir) => {
                let path = dir.join(format!("{}.png", image_stem(&record.img_file_name)));
                read_binary_mask(&path, height, width)
            }
        }
    }
}

/// LEGION's evaluation GT of a record (`eval/utils.py generate_mask`): `cv2.fillPoly` of every
/// polygon of every ref, grounded in the caption or not, at `height x width`.
///
/// # Errors
/// The rasteriser's error for a bad polygon.
pub fn polygon_gt_mask(
    record: &Record,
    height: usize,
    width: usize,
) -> Result<Mask, legion_data::raster::RasterError> {
    let polys: Vec<Vec<f64>> = record
        .refs
        .iter()
        .flat_map(|r| r.segmentation.iter().cloned())
        .collect();
    legion_data::raster::cv2_fill_poly(&polys, height, width)
}

/// Reads a GT mask PNG (8- or 16-bit grey, nonzero = artifact) that must be `height x width`.
///
/// # Errors
/// [`EvalError::MaskDecode`] or [`EvalError::MaskFile`] naming the file.
pub fn read_binary_mask(path: &Path, height: usize, width: usize) -> Result<Mask, EvalError> {
    let image = legion_data::image_io::decode_image(path)
        .map_err(EvalError::mask_decode(path, "GT mask"))?;
    if (image.height() as usize, image.width() as usize) != (height, width) {
        return Err(EvalError::mask_file(
            path,
            format!(
                "the GT mask is {}x{}, the image {height}x{width}",
                image.height(),
                image.width()
            ),
        ));
    }
    let data: Vec<u8> = match image {
        image::DynamicImage::ImageLuma8(b) => {
            b.into_raw().iter().map(|&v| u8::from(v != 0)).collect()
        }
        image::DynamicImage::ImageLuma16(b) => {
            b.into_raw().iter().map(|&v| u8::from(v != 0)).collect()
        }
        other => {
            return Err(EvalError::mask_file(
                path,
                format!(
                    "a GT mask must be single-channel grey, found {:?}",
                    other.color()
                ),
            ));
        }
    };
    let mask = Mask::from_raw(height, width, data).map_err(|source| EvalError::MaskSize {
        path: path.to_path_buf(),
        height,
        width,
        source,
    })?;
    Ok(mask)
}
