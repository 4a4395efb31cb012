//! A SynthScars split as a lazy, model-ready dataset.
//!
//! Opening a split parses the annotation file, reads every image *header* (in parallel) to know
//! its size, validates every polygon against it and grounds every phrase; nothing is decoded up
//! front, so a 12k-image split opens in seconds and holds only the records in memory.
//! [`SynthScarsSplit::load`] then decodes one image, runs both preprocessing paths and
//! rasterises the training masks (pycocotools convention), in `[SEG]` order.
//!
//! Bad input never panics: with [`BadInputPolicy::Error`] the first bad record is the error;
//! with [`BadInputPolicy::Skip`] it is recorded in [`SynthScarsSplit::problems`] and left out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataset::Dataset;
use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{BadInputPolicy, DataError, Location};
use crate::image_io;
use crate::layout::SplitLayout;
use crate::mask::Mask;
use crate::preprocess::{self, ClipInput, ClipPreprocessConfig, SamInput, SamPreprocessConfig};
use crate::raster;
use crate::record::{Record, read_annotations};
use crate::span::{DroppedRef, Grounding, MissingPhrasePolicy};

/// How to open a split.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct OpenOptions {
    /// What to do with a record that cannot be used (bad field, missing or unreadable image).
    pub bad_input: BadInputPolicy,
    /// What to do with a ref whose phrase is not in the caption.
    pub missing_phrase: MissingPhrasePolicy,
}

/// Something found while opening or checking a split.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// File, record and field.
    pub location: Location,
    /// What is wrong.
    pub message: String,
    /// Whether the record was left out because of it.
    pub record_dropped: bool,
}

/// A validated record with what opening learnt about it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The record as annotated.
    pub record: Record,
    /// Image size (height, width) after EXIF orientation, from the header.
    pub image_hw: (usize, usize),
    /// Phrases grounded in the caption, in `[SEG]` order, and the refs dropped.
    pub grounding: Grounding,
}

/// One split of a SynthScars-layout dataset, opened lazily.
#[derive(Debug, Clone)]
pub struct SynthScarsSplit {
    layout: SplitLayout,
    entries: Vec<Entry>,
    problems: Vec<Problem>,
    records_in_file: usize,
}

impl SynthScarsSplit {
    /// Opens `split` (`train`, `test`) of the dataset at `root`.
    ///
    /// # Errors
    /// A missing or malformed annotation file always; a bad record under
    /// [`BadInputPolicy::Error`]; an ungroundable phrase under [`MissingPhrasePolicy::Error`].
    pub fn open(root: &Path, split: &str, options: &OpenOptions) -> Result<Self, DataError> {
        Self::open_layout(SplitLayout::find(root, split)?, options)
    }

    /// Opens a split at an explicit layout.
    ///
    /// # Errors
    /// As [`SynthScarsSplit::open`].
    pub fn open_layout(layout: SplitLayout, options: &OpenOptions) -> Result<Self, DataError> {
        let parsed = read_annotations(&layout.annotations)?;
        let records_in_file = parsed.len();
        let file = Location::file(&layout.annotations);

        // Headers in parallel: a 12k-image split must open in seconds.
        let checked: Vec<Result<Entry, DataError>> = parsed
            .into_par_iter()
            .map(|record| record.and_then(|r| validate(&layout, r)))
            .collect();

        let mut entries = Vec::with_capacity(checked.len());
        let mut problems = Vec::new();
        let mut seen_ids = std::collections::HashMap::new();
        let mut seen_images = std::collections::HashMap::new();
        for result in checked {
            let entry = match result {
                Ok(entry) => entry,
                Err(err) => {
                    if options.bad_input == BadInputPolicy::Error {
                        return Err(err);
                    }
                    tracing::warn!("skipping bad record: {err}");
                    problems.push(problem_from(&err, &file, true));
                    continue;
                }
            };
            let at = file.record(&entry.record.id);
            let duplicate = if seen_ids.insert(entry.record.id.clone(), ()).is_some() {
                Some(DataError::Duplicate {
                    location: at.clone(),
                    what: "record id",
                    value: entry.record.id.clone(),
                })
            } else if seen_images
                .insert(entry.record.img_file_name.clone(), ())
                .is_some()
            {
                Some(DataError::Duplicate {
                    location: at.field("img_file_name"),
                    what: "image",
                    value: entry.record.img_file_name.clone(),
                })
            } else {
                None
            };
            if let Some(err) = duplicate {
                if options.bad_input == BadInputPolicy::Error {
                    return Err(err);
                }
                problems.push(problem_from(&err, &file, true));
                continue;
            }
            let dropped = &entry.grounding.dropped;
            if !dropped.is_empty() {
                let drop_record = options.missing_phrase == MissingPhrasePolicy::SkipRecord;
                for d in dropped {
                    let problem = dropped_problem(&at, d, drop_record);
                    if options.missing_phrase == MissingPhrasePolicy::Error {
                        return Err(DataError::invalid(problem.location, problem.message));
                    }
                    problems.push(problem);
                }
                if drop_record {
                    continue;
                }
            }
            entries.push(entry);
        }
        Ok(Self {
            layout,
            entries,
            problems,
            records_in_file,
        })
    }

    /// The split's layout (annotation file, image folder).
    pub fn layout(&self) -> &SplitLayout {
        &self.layout
    }

    /// The usable records, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of usable records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no record is usable.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of records in the annotation file, usable or not.
    pub fn records_in_file(&self) -> usize {
        self.records_in_file
    }

    /// Everything found while opening: dropped records and refs, with why.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The path of entry `index`'s image.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn image_path(&self, index: usize) -> PathBuf {
        self.layout
            .image_path(&self.entries[index].record.img_file_name)
    }

    /// Decodes entry `index`'s image (EXIF orientation applied).
    ///
    /// # Errors
    /// [`DataError::Image`] naming the file and record when it cannot be decoded,
    /// [`DataError::ImageSize`] when its size differs from the header read at opening.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn decode_image(&self, index: usize) -> Result<RgbImage, DataError> {
        let entry = &self.entries[index];
        let path = self.image_path(index);
        let image = image_io::decode_rgb(&path).map_err(|source| DataError::Image {
            location: Location::file(&path).record(&entry.record.id),
            source: Box::new(source),
        })?;
        let hw = (image.height() as usize, image.width() as usize);
        if hw != entry.image_hw {
            return Err(DataError::ImageSize {
                location: Location::file(&path).record(&entry.record.id),
                decoded: hw,
                header: entry.image_hw,
            });
        }
        Ok(image)
    }

    /// Training masks of entry `index` in `[SEG]` order (pycocotools convention, polygons of a
    /// ref OR-ed), at the original image size.
    ///
    /// # Errors
    /// [`DataError::Polygon`] naming the ref when a polygon cannot be rasterised.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn training_masks(&self, index: usize) -> Result<Vec<Mask>, DataError> {
        let entry = &self.entries[index];
        let (h, w) = entry.image_hw;
        let at = Location::file(&self.layout.annotations).record(&entry.record.id);
        entry
            .grounding
            .ordered_refs()
            .into_iter()
            .map(|k| {
                raster::coco_polygons(&entry.record.refs[k].segmentation, h, w).map_err(|source| {
                    DataError::Polygon {
                        location: at.field(format!("refs[{k}].segmentation")),
                        source,
                    }
                })
            })
            .collect()
    }

    /// Loads entry `index` as a model-ready sample.
    ///
    /// # Errors
    /// Image decoding or rasterisation errors, naming file, record and field.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn load(&self, index: usize, config: &SampleConfig) -> Result<Sample, DataError> {
        let entry = &self.entries[index];
        let image = self.decode_image(index)?;
        let masks = self.training_masks(index)?;
        let phrases = entry
            .grounding
            .ordered_refs()
            .into_iter()
            .map(|k| entry.record.refs[k].sentence.clone())
            .collect();
        let at = || Location::file(self.image_path(index)).record(&entry.record.id);
        let clip = preprocess::clip_preprocess(&image, &config.clip).map_err(|source| {
            DataError::Preprocess {
                location: at(),
                source,
            }
        })?;
        let sam = preprocess::sam_preprocess(&image, &config.sam).map_err(|source| {
            DataError::Preprocess {
                location: at(),
                source,
            }
        })?;
        Ok(Sample {
            id: entry.record.id.clone(),
            image_path: self.image_path(index),
            original_hw: entry.image_hw,
            clip,
            sam,
            answer: entry.grounding.tagged_answer(),
            phrases,
            masks,
        })
    }

    /// Loads several samples in parallel (rayon), keeping order.
    pub fn load_many(
        &self,
        indices: &[usize],
        config: &SampleConfig,
    ) -> Vec<Result<Sample, DataError>> {
        indices.par_iter().map(|&i| self.load(i, config)).collect()
    }
}

fn validate(layout: &SplitLayout, record: Record) -> Result<Entry, DataError> {
    let path = layout.image_path(&record.img_file_name);
    let at = Location::file(&layout.annotations).record(&record.id);
    let (w, h) = image_io::dimensions(&path).map_err(|source| DataError::Image {
        location: Location::file(&path).record(&record.id),
        source: Box::new(source),
    })?;
    let (h, w) = (h as usize, w as usize);
    for (k, r) in record.refs.iter().enumerate() {
        for (p, poly) in r.segmentation.iter().enumerate() {
            raster::validate_coco_polygon(poly, h, w).map_err(|source| DataError::Polygon {
                location: at.field(format!("refs[{k}].segmentation[{p}]")),
                source,
            })?;
        }
    }
    let grounding = Grounding::of(&record);
    Ok(Entry {
        record,
        image_hw: (h, w),
        grounding,
    })
}

fn problem_from(err: &DataError, file: &Location, record_dropped: bool) -> Problem {
    Problem {
        location: err.location().cloned().unwrap_or_else(|| file.clone()),
        // The report shows the location in its own column; the message is the cause alone.
        message: match err {
            DataError::Invalid { message, .. } => message.clone(),
            DataError::Image { source, .. } => source.to_string(),
            DataError::Preprocess { source, .. } => source.to_string(),
            DataError::Polygon { source, .. } => source.to_string(),
            other => other.to_string(),
        },
        record_dropped,
    }
}

fn dropped_problem(at: &Location, d: &DroppedRef, record_dropped: bool) -> Problem {
    Problem {
        location: at.field(format!("refs[{}].sentence", d.ref_index)),
        message: format!(
            "{} (`{}`): ref {}",
            d.issue,
            d.sentence,
            if record_dropped {
                "and record dropped"
            } else {
                "dropped"
            }
        ),
        record_dropped,
    }
}

/// How samples are preprocessed.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SampleConfig {
    /// CLIP (global encoder) input.
    pub clip: ClipPreprocessConfig,
    /// SAM (grounding encoder) input; the reference trains at 512 and infers at 1024.
    pub sam: SamPreprocessConfig,
}

impl SampleConfig {
    /// The reference training setup: CLIP 336, SAM longest side 512 on a 1024 canvas.
    pub fn legion_training() -> Self {
        Self {
            clip: ClipPreprocessConfig::clip_vit_l_336(),
            sam: SamPreprocessConfig::training_512(),
        }
    }

    /// The reference inference setup: CLIP 336, SAM 1024.
    pub fn legion_inference() -> Self {
        Self {
            clip: ClipPreprocessConfig::clip_vit_l_336(),
            sam: SamPreprocessConfig::inference_1024(),
        }
    }
}

/// One model-ready sample.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Record id.
    pub id: String,
    /// Image file.
    pub image_path: PathBuf,
    /// Original image size (height, width).
    pub original_hw: (usize, usize),
    /// CLIP input.
    pub clip: ClipInput,
    /// SAM input.
    pub sam: SamInput,
    /// Target answer with `<p> phrase </p> [SEG]` tags.
    pub answer: String,
    /// Phrases in `[SEG]` order.
    pub phrases: Vec<String>,
    /// Training masks in `[SEG]` order, at `original_hw`.
    pub masks: Vec<Mask>,
}

/// A burn [`Dataset`] over a split: lazy, `get` decodes one sample.
///
/// For training, [`SynthScarsDataset::training`] keeps only records with at least one grounded
/// phrase (the reference loader skips the others); for evaluation keep them all.
#[derive(Debug, Clone)]
pub struct SynthScarsDataset {
    split: Arc<SynthScarsSplit>,
    config: SampleConfig,
    indices: Vec<usize>,
}

impl SynthScarsDataset {
    /// Every usable record.
    pub fn all(split: Arc<SynthScarsSplit>, config: SampleConfig) -> Self {
        let indices = (0..split.len()).collect();
        Self {
            split,
            config,
            indices,
        }
    }

    /// Records with at least one grounded phrase, as the reference training loader.
    pub fn training(split: Arc<SynthScarsSplit>, config: SampleConfig) -> Self {
        let indices = (0..split.len())
            .filter(|&i| !split.entries()[i].grounding.spans.is_empty())
            .collect();
        Self {
            split,
            config,
            indices,
        }
    }

    /// The underlying split.
    pub fn split(&self) -> &SynthScarsSplit {
        &self.split
    }

    /// The split indices this dataset serves.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Dataset<Sample, DataError> for SynthScarsDataset {
    fn get(&self, index: usize) -> Result<Sample, DataError> {
        self.split.load(self.indices[index], &self.config)
    }

    fn len(&self) -> usize {
        self.indices.len()
    }
}
