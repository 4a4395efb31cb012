//! `legion data check` and `legion data stats`: validate a dataset and describe it.
//!
//! Checking opens every split with [`BadInputPolicy::Skip`] so that ALL problems are listed (not
//! just the first), then decodes every image and rasterises every mask in parallel, so that a
//! corrupt JPEG body (not only a bad header) is found before a training run meets it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::dataset::{OpenOptions, Problem, SynthScarsSplit};
use crate::error::{BadInputPolicy, DataError, Location};
use crate::labels::Labels;
use crate::layout::SplitLayout;
use crate::progress::Progress;
use crate::span::MissingPhrasePolicy;

/// Histogram bucket edges of the artifact-area fraction (union of an image's masks / image area).
pub const AREA_BUCKETS: [f64; 8] = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5];

/// Summary of one split.
#[derive(Debug, Clone, Serialize)]
pub struct SplitSummary {
    /// Split name.
    pub split: String,
    /// Annotation file.
    pub annotations: PathBuf,
    /// Records in the file.
    pub records: usize,
    /// Records usable after checks.
    pub usable_records: usize,
    /// Records with zero refs (valid: images without annotated artifact).
    pub zero_ref_records: usize,
    /// Refs in usable records.
    pub refs: usize,
    /// Refs grounded in their caption (the ones training uses).
    pub grounded_refs: usize,
    /// Histogram: number of refs per image -> images.
    pub refs_per_image: BTreeMap<usize, usize>,
    /// Histogram over [`AREA_BUCKETS`]: images whose artifact-area fraction is >= edge i and < edge i+1.
    pub area_fraction_histogram: Vec<usize>,
    /// Mean artifact-area fraction over images (the all-background predictor's miss rate).
    pub mean_area_fraction: f64,
    /// Images per content type (only with a labels file).
    pub content_types: BTreeMap<String, usize>,
    /// Refs per artifact category (only with a labels file).
    pub categories: BTreeMap<String, usize>,
    /// Image sizes seen: "HxW" -> count (the 10 most common).
    pub image_sizes: Vec<(String, usize)>,
    /// Everything wrong or dropped, with file, record and field.
    pub problems: Vec<Problem>,
}

/// The result of checking a dataset.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Dataset root.
    pub root: PathBuf,
    /// Labels file used, if any.
    pub labels: Option<PathBuf>,
    /// Per split.
    pub splits: Vec<SplitSummary>,
}

impl CheckReport {
    /// Problems that drop a record (errors); dropped refs are warnings.
    pub fn error_count(&self) -> usize {
        self.splits
            .iter()
            .flat_map(|s| &s.problems)
            .filter(|p| p.record_dropped)
            .count()
    }

    /// Dropped refs and other non-fatal findings.
    pub fn warning_count(&self) -> usize {
        self.splits
            .iter()
            .flat_map(|s| &s.problems)
            .filter(|p| !p.record_dropped)
            .count()
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Splits to check; empty = every split found.
    pub splits: Vec<String>,
    /// Decode every image fully (finds corrupt bodies); otherwise headers only.
    pub decode_images: bool,
    /// Labels file; `None` looks for `<root>/labels.jsonl`.
    pub labels: Option<PathBuf>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            splits: Vec::new(),
            decode_images: true,
            labels: None,
        }
    }
}

/// Checks the dataset at `root`.
///
/// # Errors
/// Only what prevents checking at all: no split found, an unreadable or malformed annotation
/// file, an unreadable labels file. Bad records are reported in the summary, not errors.
pub fn check(
    root: &Path,
    options: &CheckOptions,
    progress: &dyn Progress,
) -> Result<CheckReport, DataError> {
    let layouts: Vec<SplitLayout> = if options.splits.is_empty() {
        SplitLayout::splits(root)
    } else {
        options
            .splits
            .iter()
            .map(|s| SplitLayout::find(root, s))
            .collect::<Result<_, _>>()?
    };
    if layouts.is_empty() {
        return Err(
            SplitLayout::find(root, "train").expect_err("no split was found, so train is missing")
        );
    }
    let labels_path = options.labels.clone().or_else(|| {
        let default = root.join("labels.jsonl");
        default.is_file().then_some(default)
    });
    let labels = labels_path.as_deref().map(Labels::read).transpose()?;
    let open = OpenOptions {
        bad_input: BadInputPolicy::Skip,
        missing_phrase: MissingPhrasePolicy::SkipRef,
    };
    let splits = layouts
        .into_iter()
        .map(|layout| {
            summarize(
                SynthScarsSplit::open_layout(layout, &open)?,
                options,
                labels.as_ref(),
                progress,
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(CheckReport {
        root: root.to_path_buf(),
        labels: labels_path,
        splits,
    })
}

fn summarize(
    split: SynthScarsSplit,
    options: &CheckOptions,
    labels: Option<&Labels>,
    progress: &dyn Progress,
) -> Result<SplitSummary, DataError> {
    let annotations = split.layout().annotations.clone();
    progress.start(
        &format!("checking {}", split.layout().split),
        split.len() as u64,
    );
    // Per image: decode (optionally), rasterise every ref, measure the union's area.
    let per_image: Vec<Result<f64, DataError>> = (0..split.len())
        .into_par_iter()
        .map(|i| {
            if options.decode_images {
                split.decode_image(i)?;
            }
            let entry = &split.entries()[i];
            let (h, w) = entry.image_hw;
            let mut union = crate::mask::Mask::zeros(h, w);
            for (k, r) in entry.record.refs.iter().enumerate() {
                let m = crate::raster::coco_polygons(&r.segmentation, h, w).map_err(|source| {
                    DataError::Polygon {
                        location: Location::file(&annotations)
                            .record(&entry.record.id)
                            .field(format!("refs[{k}].segmentation")),
                        source,
                    }
                })?;
                union
                    .union_with(&m)
                    .expect("masks rasterised at the same image size");
            }
            progress.advance(1);
            Ok(union.area() as f64 / (h * w).max(1) as f64)
        })
        .collect();
    progress.finish();

    let mut summary = SplitSummary {
        split: split.layout().split.clone(),
        annotations: annotations.clone(),
        records: split.records_in_file(),
        usable_records: 0,
        zero_ref_records: 0,
        refs: 0,
        grounded_refs: 0,
        refs_per_image: BTreeMap::new(),
        area_fraction_histogram: vec![0; AREA_BUCKETS.len()],
        mean_area_fraction: 0.0,
        content_types: BTreeMap::new(),
        categories: BTreeMap::new(),
        image_sizes: Vec::new(),
        problems: split.problems().to_vec(),
    };
    let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
    let mut area_sum = 0.0;
    for (entry, area) in split.entries().iter().zip(per_image) {
        let area = match area {
            Ok(a) => a,
            Err(err) => {
                summary.problems.push(Problem {
                    location: err
                        .location()
                        .cloned()
                        .unwrap_or_else(|| Location::file(&annotations)),
                    message: err.to_string(),
                    record_dropped: true,
                });
                continue;
            }
        };
        summary.usable_records += 1;
        let n = entry.record.refs.len();
        summary.refs += n;
        summary.grounded_refs += entry.grounding.spans.len();
        summary.zero_ref_records += usize::from(n == 0);
        *summary.refs_per_image.entry(n).or_default() += 1;
        let bucket = AREA_BUCKETS
            .iter()
            .rposition(|&edge| area >= edge)
            .unwrap_or(0);
        summary.area_fraction_histogram[bucket] += 1;
        area_sum += area;
        *sizes
            .entry(format!("{}x{}", entry.image_hw.0, entry.image_hw.1))
            .or_default() += 1;
        if let Some(l) = labels.and_then(|l| l.get(&entry.record.img_file_name, &entry.record.id)) {
            if let Some(ct) = l.content_type {
                *summary
                    .content_types
                    .entry(ct.title().to_string())
                    .or_default() += 1;
            }
            if !l.categories.is_empty() && l.categories.len() != n {
                summary.problems.push(Problem {
                    location: Location::file(&annotations).record(&entry.record.id),
                    message: format!(
                        "labels file gives {} categories for {} refs",
                        l.categories.len(),
                        n
                    ),
                    record_dropped: false,
                });
            }
            for c in l.categories.iter().flatten() {
                *summary.categories.entry(c.title().to_string()).or_default() += 1;
            }
        }
    }
    summary.mean_area_fraction = area_sum / summary.usable_records.max(1) as f64;
    let mut sizes: Vec<(String, usize)> = sizes.into_iter().collect();
    sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    sizes.truncate(10);
    summary.image_sizes = sizes;
    Ok(summary)
}
