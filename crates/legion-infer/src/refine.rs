//! LEGION as a controller for image refinement (`scripts/refine/inpainter.py` of the
//! reference): detect artifacts -> turn each mask + explanation into an inpainting prompt ->
//! repaint the (dilated) mask with a [`Generator`] -> detect again, for up to K rounds.
//!
//! Every round is recorded under the output folder:
//! ```text
//! <out>/round_00/{image.png, mask.png, overlay.png, analysis.json}   the input, analysed
//! <out>/round_01/...                                                after the first repaint
//! <out>/rounds.jsonl     one RoundRecord per line (areas, prompts, scores)
//! <out>/summary.json     RefineSummary (stop reason, best round)
//! <out>/strip.png        the rounds' overlays side by side
//! <out>/report.html      the same, self-contained
//! <out>/final.png        the image of the best round (smallest detected artifact area)
//! ```
//! Stopping rules (the reference has none; it always runs 3 iterations): no artifact remains
//! (union area <= `min_area`), the area stopped improving (did not drop by more than
//! `min_improvement` of the image for `patience` consecutive rounds), or `max_rounds`
//! repaints were done. The detector is a trait object ([`ArtifactDetector`]) so the loop can
//! be driven by LEGION ([`crate::analyze::Analyzer`]) or, in tests, by a deterministic fake.

use std::io::Write;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::analyze::Analyzer;
use crate::error::InferError;
use crate::generator::{CommandScorer, Generator, InpaintRequest, composite};
use crate::html::{escape, page, png_data_uri, thumbnail};
use crate::inpaint::dilate;
use crate::overlay::{render_analysis_overlay, side_by_side};
use crate::record::AnalysisRecord;

/// The reference's inpainting prompt (`inpainter.py`); `{explanation}` and `{phrase}` are
/// replaced by the artifact's.
pub const REFERENCE_PROMPT: &str = "Try to avoid the problem: {explanation} And make every effort to maintain the photorealism and reasonableness of the entire image, as well as consistency and coherence in style, lighting, and shadows.";

/// Finds artifacts in an image.
pub trait ArtifactDetector {
    /// Analyses `image` (named `name` in the record).
    ///
    /// # Errors
    /// Whatever the detector fails with.
    fn detect(&mut self, name: &str, image: &RgbImage) -> Result<AnalysisRecord, InferError>;
}

impl ArtifactDetector for Analyzer {
    fn detect(&mut self, name: &str, image: &RgbImage) -> Result<AnalysisRecord, InferError> {
        self.analyze_rgb(name, image.clone())
    }
}

/// Settings of [`refine`].
#[derive(Debug, Clone, PartialEq)]
pub struct RefineOptions {
    /// Most repaint rounds (K; the reference runs 3).
    pub max_rounds: usize,
    /// Mask dilation radius in pixels (the reference: 5x5 kernel, 5 iterations = 10).
    pub dilate_radius: usize,
    /// Prompt template with `{explanation}` and `{phrase}`.
    pub prompt_template: String,
    /// Stop when the union artifact area is at most this many pixels.
    pub min_area: u64,
    /// A round improves when the artifact ratio drops by more than this (fraction of the image).
    pub min_improvement: f64,
    /// Stop after this many consecutive rounds without improvement.
    pub patience: usize,
    /// Keep the pixels outside the mask exactly (paste the generator's output through the mask).
    pub keep_unmasked: bool,
}

impl Default for RefineOptions {
    fn default() -> Self {
        Self {
            max_rounds: 3,
            dilate_radius: 10,
            prompt_template: REFERENCE_PROMPT.to_string(),
            min_area: 0,
            min_improvement: 0.0,
            patience: 1,
            keep_unmasked: true,
        }
    }
}

/// Why the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The detector found no artifact (area <= `min_area`).
    NoArtifact,
    /// The artifact area stopped decreasing.
    NoImprovement,
    /// `max_rounds` repaints were done.
    MaxRounds,
}

/// One repaint of one artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepaintRecord {
    /// The artifact's phrase (or `artifact k`).
    pub phrase: String,
    /// Pixels repainted (after dilation).
    pub mask_area: u64,
    /// The prompt sent to the generator.
    pub prompt: String,
}

/// One round: the analysis of the round's image and the repaints made from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// 0 = the input image; k = after k repaint rounds.
    pub round: usize,
    /// The round's folder, relative to the output folder.
    pub dir: String,
    /// What was found in the round's image.
    #[serde(flatten)]
    pub findings: RoundFindings,
    /// Repaints made from this round's analysis (empty on the last round).
    pub repaints: Vec<RepaintRecord>,
}

/// What the detector (and the scorer) found in one round's image of a controller loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundFindings {
    /// Union of the detected artifact masks, in pixels.
    pub artifact_area: u64,
    /// `artifact_area` / image pixels.
    pub artifact_ratio: f64,
    /// Number of detected artifacts.
    pub artifacts: usize,
    /// The detected phrases.
    pub phrases: Vec<String>,
    /// The external score of the image, when a scorer is set.
    pub external_score: Option<f64>,
}

/// What [`refine`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefineSummary {
    /// The input image's name.
    pub image: String,
    /// The generator used.
    pub generator: String,
    /// Every round, in order.
    pub rounds: Vec<RoundRecord>,
    /// Why the loop stopped.
    pub stop_reason: StopReason,
    /// The round with the smallest artifact area (the earliest on ties).
    pub best_round: usize,
    /// `<out>/final.png`.
    pub final_image: PathBuf,
}

impl RefineSummary {
    /// The artifact area of every round.
    pub fn areas(&self) -> Vec<u64> {
        self.rounds
            .iter()
            .map(|r| r.findings.artifact_area)
            .collect()
    }
}

/// One round's image analysed, with its records saved in the round's folder.
pub(crate) struct AnalysedRound {
    pub record: AnalysisRecord,
    pub overlay: RgbImage,
    pub findings: RoundFindings,
}

/// Saves `image` as `<dir>/image.png`, analyses it and saves `analysis.json`, `mask.png` (the
/// union of the artifact masks) and `overlay.png`; scores the image when a scorer is set.
pub(crate) fn analyse_round(
    detector: &mut dyn ArtifactDetector,
    scorer: Option<&CommandScorer>,
    name: &str,
    image: &RgbImage,
    dir: &Path,
) -> Result<AnalysedRound, InferError> {
    let image_path = dir.join("image.png");
    save_png(image, &image_path)?;
    let record = detector.detect(name, image)?;
    let json_path = dir.join("analysis.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&record).expect("records serialise"),
    )
    .map_err(|e| InferError::io(&json_path, e))?;
    let mask_path = dir.join("mask.png");
    record
        .union_mask()
        .to_gray_image(255)
        .save(&mask_path)
        .map_err(|e| InferError::image_write(&mask_path, e))?;
    let overlay = render_analysis_overlay(image, &record);
    save_png(&overlay, &dir.join("overlay.png"))?;
    let external_score = scorer.map(|s| s.score(&image_path)).transpose()?;
    let pixels = (image.width() as f64 * image.height() as f64).max(1.0);
    let findings = RoundFindings {
        artifact_area: record.artifact_area,
        artifact_ratio: record.artifact_area as f64 / pixels,
        artifacts: record.artifacts.len(),
        phrases: record.artifacts.iter().map(|a| a.label()).collect(),
        external_score,
    };
    Ok(AnalysedRound {
        record,
        overlay,
        findings,
    })
}

pub(crate) fn save_png(image: &RgbImage, path: &Path) -> Result<(), InferError> {
    image
        .save(path)
        .map_err(|e| InferError::image_write(path, e))
}

/// Fills the prompt template for one artifact.
pub fn artifact_prompt(template: &str, phrase: &str, explanation: &str) -> String {
    let explanation = if explanation.trim().is_empty() {
        phrase
    } else {
        explanation.trim()
    };
    template
        .replace("{explanation}", explanation)
        .replace("{phrase}", phrase)
}

/// Runs the refinement loop on `image` and records it under `out` (see the module docs).
///
/// # Errors
/// The detector's or generator's error (the rounds done so far stay on disk),
/// [`InferError::Io`] / [`InferError::ImageWrite`] when `out` cannot be written.
pub fn refine(
    name: &str,
    image: &RgbImage,
    detector: &mut dyn ArtifactDetector,
    generator: &mut dyn Generator,
    scorer: Option<&CommandScorer>,
    options: &RefineOptions,
    out: &Path,
) -> Result<RefineSummary, InferError> {
    std::fs::create_dir_all(out).map_err(|e| InferError::io(out, e))?;
    let rounds_path = out.join("rounds.jsonl");
    let mut rounds_file =
        std::fs::File::create(&rounds_path).map_err(|e| InferError::io(&rounds_path, e))?;
    let mut current = image.clone();
    let mut rounds: Vec<RoundRecord> = Vec::new();
    let mut overlays: Vec<RgbImage> = Vec::new();
    let mut images: Vec<RgbImage> = Vec::new();
    let mut stale = 0usize;
    let stop_reason;
    let mut round = 0usize;
    loop {
        let dir_name = format!("round_{round:02}");
        let dir = out.join(&dir_name);
        std::fs::create_dir_all(&dir).map_err(|e| InferError::io(&dir, e))?;
        let AnalysedRound {
            record,
            overlay,
            findings,
        } = analyse_round(detector, scorer, name, &current, &dir)?;
        let ratio = findings.artifact_ratio;
        tracing::info!(
            round,
            area = record.artifact_area,
            ratio,
            "refine round analysed"
        );

        let mut entry = RoundRecord {
            round,
            dir: dir_name,
            findings,
            repaints: Vec::new(),
        };
        if let Some(previous) = rounds.last() {
            if previous.findings.artifact_ratio - ratio > options.min_improvement {
                stale = 0;
            } else {
                stale += 1;
            }
        }
        let stop = if record.artifact_area <= options.min_area {
            Some(StopReason::NoArtifact)
        } else if round > 0 && stale >= options.patience.max(1) {
            Some(StopReason::NoImprovement)
        } else if round >= options.max_rounds {
            Some(StopReason::MaxRounds)
        } else {
            None
        };
        let analysed = current.clone();
        if stop.is_none() {
            // Repaint each artifact in turn, as the reference does.
            let mut next = current.clone();
            for artifact in &record.artifacts {
                let mask = dilate(&artifact.mask(), options.dilate_radius);
                if mask.area() == 0 {
                    continue;
                }
                let phrase = artifact.label();
                let prompt = artifact_prompt(
                    &options.prompt_template,
                    &phrase,
                    artifact.explanation.as_deref().unwrap_or(""),
                );
                let generated = generator.inpaint(
                    &InpaintRequest {
                        image: &next,
                        mask: &mask,
                        prompt: &prompt,
                    },
                    &dir,
                )?;
                next = composite(&next, generated, &mask, options.keep_unmasked);
                entry.repaints.push(RepaintRecord {
                    phrase,
                    mask_area: mask.area() as u64,
                    prompt,
                });
            }
            current = next;
        }
        writeln!(
            rounds_file,
            "{}",
            serde_json::to_string(&entry).expect("round records serialise")
        )
        .map_err(|e| InferError::io(&rounds_path, e))?;
        rounds.push(entry);
        overlays.push(overlay);
        images.push(analysed);
        if let Some(reason) = stop {
            stop_reason = reason;
            break;
        }
        round += 1;
    }

    let best_round = rounds
        .iter()
        .min_by_key(|r| (r.findings.artifact_area, r.round))
        .map(|r| r.round)
        .unwrap_or(0);
    let final_image = out.join("final.png");
    save_png(&images[best_round], &final_image)?;
    let summary = RefineSummary {
        image: name.to_string(),
        generator: generator.describe(),
        rounds,
        stop_reason,
        best_round,
        final_image,
    };
    let areas = summary
        .rounds
        .iter()
        .map(|r| (r.round, r.findings.artifact_area));
    let report = refine_report(&summary, &images, &overlays)?;
    write_loop_records(out, &overlays, areas, &report, &summary)?;
    Ok(summary)
}

/// Writes a controller loop's closing records under `out`: `strip.png` (the rounds' overlays
/// side by side, captioned `round k: <area> px` from `areas`), `report.html` and
/// `summary.json`.
pub(crate) fn write_loop_records(
    out: &Path,
    overlays: &[RgbImage],
    areas: impl Iterator<Item = (usize, u64)>,
    report_html: &str,
    summary: &impl Serialize,
) -> Result<(), InferError> {
    let panels: Vec<(RgbImage, String)> = overlays
        .iter()
        .zip(areas)
        .map(|(o, (round, area))| (o.clone(), format!("round {round}: {area} px")))
        .collect();
    save_png(&side_by_side(&panels), &out.join("strip.png"))?;
    crate::html::write_html(&out.join("report.html"), report_html)?;
    let summary_path = out.join("summary.json");
    std::fs::write(
        &summary_path,
        serde_json::to_string_pretty(summary).expect("summary serialises"),
    )
    .map_err(|e| InferError::io(&summary_path, e))
}

/// A round's image and overlay as two HTML figures, the overlay captioned with the findings.
///
/// # Errors
/// [`InferError::ImageWrite`] when an image cannot be encoded.
pub(crate) fn round_figures(
    round: usize,
    image: &RgbImage,
    overlay: &RgbImage,
    findings: &RoundFindings,
) -> Result<String, InferError> {
    let score = findings
        .external_score
        .map(|s| format!(", score {s:.4}"))
        .unwrap_or_default();
    Ok(format!(
        "<figure><img class=\"round-image\" alt=\"round {round}\" src=\"{}\"><figcaption>image</figcaption></figure>\n\
         <figure><img class=\"overlay\" alt=\"round {round} overlay\" src=\"{}\"><figcaption>{} artifact(s), {} px ({:.2}%){score}</figcaption></figure>\n",
        png_data_uri(&thumbnail(image), "round image")?,
        png_data_uri(&thumbnail(overlay), "round overlay")?,
        findings.artifacts,
        findings.artifact_area,
        100.0 * findings.artifact_ratio,
    ))
}

/// The self-contained HTML page of a refinement: one column per round (image, overlay,
/// area, score, prompts).
///
/// # Errors
/// [`InferError::ImageWrite`] when an image cannot be encoded.
pub fn refine_report(
    summary: &RefineSummary,
    images: &[RgbImage],
    overlays: &[RgbImage],
) -> Result<String, InferError> {
    let mut body = format!(
        "<p>Generator: {}. Stopped: {:?}. Best round: {}.</p>\n<div class=\"images\">\n",
        escape(&summary.generator),
        summary.stop_reason,
        summary.best_round
    );
    for ((round, image), overlay) in summary.rounds.iter().zip(images).zip(overlays) {
        body.push_str(&format!(
            "<div class=\"card round\" data-round=\"{r}\">\n<h2>Round {r}</h2>\n{}",
            round_figures(round.round, image, overlay, &round.findings)?,
            r = round.round,
        ));
        if !round.repaints.is_empty() {
            body.push_str("<table><tr><th>repainted</th><th>px</th><th>prompt</th></tr>\n");
            for repaint in &round.repaints {
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    escape(&repaint.phrase),
                    repaint.mask_area,
                    escape(&repaint.prompt)
                ));
            }
            body.push_str("</table>\n");
        }
        body.push_str("</div>\n");
    }
    body.push_str("</div>\n");
    Ok(page(
        &format!("LEGION refinement of {}", summary.image),
        &body,
    ))
}
