//! Batch inference over a dataset, writing predictions in exactly the evaluator's input format
//! (`legion_eval::predictions`), resumable:
//!
//! ```text
//! <out>/masks/<image stem>.png    binary mask (0 / 255): the union of the artifact masks
//! <out>/explanations.jsonl        {"image": "<file name>", "explanation": "<answer without tags>"}
//! <out>/records/<image stem>.json the full analysis record (crate::record), with RLE masks
//! <out>/infer.json                 how the images were fed (the perturbation, if any), read by
//!                                  `legion eval` into its report
//! ```
//!
//! With [`InferOptions::perturbation`] every image is degraded after decoding and before the
//! model sees it (`legion_data::perturb`: JPEG, Gaussian noise, Gaussian blur; the robustness
//! table of the LEGION paper).
//! Score it with `legion eval --gt DATA --masks <out>/masks --explanations <out>/explanations.jsonl`.
//!
//! An image is done when its explanation line is in `explanations.jsonl` and its mask exists;
//! the mask and record are written (through a temporary file and a rename) before the line is
//! appended, so a run killed at any point resumes where it stopped: the next run keeps the
//! complete lines (a torn last line is dropped) and skips those images. Decoding and
//! preprocessing run in parallel (rayon); the model runs on batches of `batch_size` images.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use legion_data::Progress;
use legion_data::perturb::{
    DEFAULT_PERTURB_SEED, PREDICTIONS_META_FILE, Perturbation, PerturbationRecord, PredictionsMeta,
};
use serde::{Deserialize, Serialize};

use crate::analyze::{Analyzer, file_name, file_stem};
use crate::error::InferError;
use crate::input::{PreparedImage, prepare_all_perturbed};
use crate::record::AnalysisRecord;

/// Sub-folder of the mask PNGs.
pub const MASKS_DIR: &str = "masks";
/// Sub-folder of the JSON records.
pub const RECORDS_DIR: &str = "records";
/// The explanations file.
pub const EXPLANATIONS_FILE: &str = "explanations.jsonl";

/// Settings of [`run_infer`].
#[derive(Debug, Clone, PartialEq)]
pub struct InferOptions {
    /// Images per model call.
    pub batch_size: usize,
    /// Skip images already done in `out` (otherwise start over).
    pub resume: bool,
    /// Degrade every image after decoding (robustness evaluation); `None` = as decoded.
    pub perturbation: Option<Perturbation>,
    /// Seed of random perturbations (noise); mixed with each image's file name.
    pub perturb_seed: u64,
}

impl Default for InferOptions {
    fn default() -> Self {
        Self {
            batch_size: 4,
            resume: true,
            perturbation: None,
            perturb_seed: DEFAULT_PERTURB_SEED,
        }
    }
}

impl InferOptions {
    /// What `infer.json` records for these options.
    pub fn meta(&self) -> PredictionsMeta {
        PredictionsMeta {
            perturbation: PerturbationRecord::new(self.perturbation.as_ref(), self.perturb_seed),
            writer: format!("legion-infer {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// One line of `explanations.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplanationLine {
    /// The image file name.
    pub image: String,
    /// The answer without tags.
    pub explanation: String,
}

/// What [`run_infer`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferSummary {
    /// Images given.
    pub total: usize,
    /// Already done by an earlier run, skipped.
    pub skipped: usize,
    /// Analysed by this run.
    pub analysed: usize,
    /// Images that failed (unreadable file, model error), with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

/// The images of a dataset: `<root>/<split>/images/*` of a SynthScars-layout dataset when
/// that folder exists, otherwise the images directly in `root`.
///
/// # Errors
/// [`InferError::Io`] when neither folder can be read; [`InferError::Config`] when it holds
/// no image.
pub fn dataset_images(root: &Path, split: &str) -> Result<Vec<PathBuf>, InferError> {
    let dir = match legion_data::SplitLayout::find(root, split) {
        Ok(layout) => layout.images,
        Err(_) if root.join(split).join("images").is_dir() => root.join(split).join("images"),
        Err(_) if root.join("images").is_dir() => root.join("images"),
        Err(_) => root.to_path_buf(),
    };
    let images = crate::input::list_images(&dir)?;
    if images.is_empty() {
        return Err(InferError::Config(format!(
            "no image (.jpg, .jpeg, .png, .webp) in {}",
            dir.display()
        )));
    }
    // Two files with one stem would write the same mask.
    let mut stems = HashSet::new();
    for image in &images {
        if !stems.insert(file_stem(image)) {
            return Err(InferError::invalid(
                image,
                "another image has the same file stem; mask files are named by stem",
            ));
        }
    }
    Ok(images)
}

/// Reads the complete lines of an existing `explanations.jsonl` whose mask exists, rewrites
/// the file with exactly those, and returns the image names done.
fn resume_state(out: &Path) -> Result<HashSet<String>, InferError> {
    let path = out.join(EXPLANATIONS_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(HashSet::new());
    };
    let mut kept = String::new();
    let mut done = HashSet::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if !line.ends_with('\n') {
            tracing::warn!(file = %path.display(), line = index + 1, "dropping a torn last line");
            continue;
        }
        let Ok(parsed) = serde_json::from_str::<ExplanationLine>(line.trim_end()) else {
            tracing::warn!(file = %path.display(), line = index + 1, "dropping an unreadable line");
            continue;
        };
        let mask = out
            .join(MASKS_DIR)
            .join(format!("{}.png", file_stem(Path::new(&parsed.image))));
        if mask.is_file() && done.insert(parsed.image.clone()) {
            kept.push_str(line);
        }
    }
    write_atomic(&path, kept.as_bytes())?;
    Ok(done)
}

/// Refuses to resume into a folder whose predictions were made with another perturbation (a
/// table row would mix clean and degraded inputs). A folder from before `infer.json` existed
/// holds clean predictions.
fn check_resume_meta(
    out: &Path,
    done: &HashSet<String>,
    wanted: &PredictionsMeta,
) -> Result<(), InferError> {
    let path = out.join(PREDICTIONS_META_FILE);
    let found = PredictionsMeta::read_from(out)?
        .map(|m| m.perturbation)
        .or_else(|| (!done.is_empty()).then(PerturbationRecord::clean));
    match found {
        Some(found) if found != wanted.perturbation => Err(InferError::invalid(
            &path,
            format!(
                "the predictions in this folder were made with perturbation {}{}, this run asks \
                 for {}{}; use another --out, or --no-resume to start over",
                found.spec,
                found
                    .seed
                    .map(|s| format!(" (seed {s})"))
                    .unwrap_or_default(),
                wanted.perturbation.spec,
                wanted
                    .perturbation
                    .seed
                    .map(|s| format!(" (seed {s})"))
                    .unwrap_or_default(),
            ),
        )),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` through `path.tmp` and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), InferError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| InferError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| InferError::io(path, e))
}

/// Writes one image's mask and record, then appends its explanation line.
fn write_prediction(
    out: &Path,
    explanations: &mut std::fs::File,
    record: &AnalysisRecord,
) -> Result<(), InferError> {
    let stem = file_stem(Path::new(&record.image));
    let mask = record.union_mask();
    let mask_path = out.join(MASKS_DIR).join(format!("{stem}.png"));
    let png = crate::html::png_bytes_gray(&mask.to_gray_image(255), &record.image)?;
    write_atomic(&mask_path, &png)?;
    let record_path = out.join(RECORDS_DIR).join(format!("{stem}.json"));
    let json = serde_json::to_vec(record).expect("records always serialise");
    write_atomic(&record_path, &json)?;
    let line = serde_json::to_string(&ExplanationLine {
        image: record.image.clone(),
        explanation: record.explanation.clone(),
    })
    .expect("plain strings serialise");
    let path = out.join(EXPLANATIONS_FILE);
    writeln!(explanations, "{line}")
        .and_then(|()| explanations.flush())
        .map_err(|e| InferError::io(&path, e))
}

/// Analyses `images` and writes the predictions to `out` (see the module docs).
///
/// # Errors
/// [`InferError::Io`] when `out` cannot be written. A failing image is not an error: it is
/// logged, listed in [`InferSummary::failed`] and the run goes on.
pub fn run_infer(
    analyzer: &Analyzer,
    images: &[PathBuf],
    out: &Path,
    options: &InferOptions,
    progress: &dyn Progress,
) -> Result<InferSummary, InferError> {
    if options.batch_size == 0 {
        return Err(InferError::Config("batch size must be at least 1".into()));
    }
    for dir in [out.join(MASKS_DIR), out.join(RECORDS_DIR)] {
        std::fs::create_dir_all(&dir).map_err(|e| InferError::io(&dir, e))?;
    }
    let meta = options.meta();
    let done = if options.resume {
        let done = resume_state(out)?;
        check_resume_meta(out, &done, &meta)?;
        done
    } else {
        write_atomic(&out.join(EXPLANATIONS_FILE), b"")?;
        HashSet::new()
    };
    write_atomic(&out.join(PREDICTIONS_META_FILE), meta.to_json().as_bytes())?;
    let perturb = options
        .perturbation
        .as_ref()
        .map(|p| (p, options.perturb_seed));
    let explanations_path = out.join(EXPLANATIONS_FILE);
    let mut explanations = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&explanations_path)
        .map_err(|e| InferError::io(&explanations_path, e))?;

    let todo: Vec<PathBuf> = images
        .iter()
        .filter(|p| !done.contains(&file_name(p)))
        .cloned()
        .collect();
    let mut summary = InferSummary {
        total: images.len(),
        skipped: images.len() - todo.len(),
        ..InferSummary::default()
    };
    if summary.skipped > 0 {
        tracing::info!(skipped = summary.skipped, "resuming: images already done");
    }
    progress.start("infer", todo.len() as u64);
    for chunk in todo.chunks(options.batch_size) {
        let prepared = prepare_all_perturbed(chunk, &analyzer.preprocessor, perturb);
        let mut ok: Vec<&PreparedImage> = Vec::new();
        for (path, result) in chunk.iter().zip(&prepared) {
            match result {
                Ok(p) => ok.push(p),
                Err(e) => {
                    tracing::error!(image = %path.display(), error = %e, "skipping image");
                    summary.failed.push((path.clone(), e.to_string()));
                    progress.advance(1);
                }
            }
        }
        if ok.is_empty() {
            continue;
        }
        match analyzer.analyze_batch(&ok) {
            Ok(records) => {
                for record in &records {
                    write_prediction(out, &mut explanations, record)?;
                    summary.analysed += 1;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "model failed on a batch");
                for p in &ok {
                    summary.failed.push((p.path.clone(), e.to_string()));
                }
            }
        }
        progress.advance(ok.len() as u64);
    }
    progress.finish();
    Ok(summary)
}
