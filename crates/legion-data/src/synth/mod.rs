//! Deterministic generator of the shipped tiny dataset, in the exact SynthScars layout.
//!
//! The SynthScars release (LEGION, arXiv 2503.15264) is 12k real generator outputs; tests and
//! CPU smoke training need something small that still has planted, *learnable* artifacts. This
//! module draws simple images of the four SynthScars content types (human, animal, object,
//! scene) on varied, mildly noisy backgrounds and plants artifacts of the three categories
//! (structure, distortion, physics, see `synth::artifact`) whose annotation polygons cover exactly the
//! altered pixels; the artifacts of one image are of one kind, which its phrases name
//! ([`named_kind`]). It writes
//!
//! ```text
//! <root>/train/images/train_00000.png ...   <root>/train/annotations/train.json
//! <root>/test/images/test_00000.png ...     <root>/test/annotations/test.json
//! <root>/labels.jsonl                       (content type per image, category per ref)
//! <root>/README.md                          (what this is, counts, how to regenerate)
//! ```
//!
//! The same [`SynthConfig`] gives byte-identical files: the PRNG is SplitMix64 written here (not
//! `rand`, whose streams change between versions), each image has its own stream derived from
//! `(seed, split, index)`, and PNG encoding is deterministic. (Geometry uses `sin`/`cos`, so a
//! different libm could move a vertex in the last bit; regenerate on one platform.)
//!
//! ```text
//! legion data synth --out data/synthscars-tiny --seed 20250316 --train 160 --test 40
//! ```

pub(crate) mod artifact;
pub(crate) mod canvas;
pub(crate) mod caption;
pub(crate) mod rng;
pub(crate) mod scene;

use std::collections::BTreeMap;
use std::path::Path;

use burn::config::Config;
use image::ImageEncoder;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{DataError, Location};
use crate::labels::{ArtifactCategory, ContentType, ImageLabels, Labels};
use crate::layout::SplitLayout;
use crate::progress::{NoProgress, Progress};
use crate::record::{ArtifactRef, Record, write_annotations};

pub use artifact::named_kind;
use artifact::{Effect, Planned};
use canvas::Canvas;
use rng::{SplitMix64, derive_seed};
use scene::Scene;

/// What to generate. The defaults are the shipped `data/synthscars-tiny` (about 2 MB).
#[derive(Config, Debug, PartialEq)]
pub struct SynthConfig {
    /// Seed of every random choice.
    #[config(default = 20250316)]
    pub seed: u64,
    /// Number of train images.
    #[config(default = 160)]
    pub train_count: usize,
    /// Number of test images.
    #[config(default = 40)]
    pub test_count: usize,
    /// Side of the square images in pixels (32..=1024; the drawings are designed at 64).
    #[config(default = 64)]
    pub image_size: u32,
    /// Fraction of images with no artifact (zero refs), per split, rounded to whole images.
    #[config(default = 0.1)]
    pub clean_fraction: f64,
    /// Most artifacts planted in one image (at least 1).
    #[config(default = 3)]
    pub max_artifacts: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SynthConfig {
    /// The CLI flags that reproduce this configuration (written into the README).
    pub fn cli_flags(&self) -> String {
        format!(
            "--seed {} --train {} --test {} --image-size {} --clean-fraction {} --max-artifacts {}",
            self.seed,
            self.train_count,
            self.test_count,
            self.image_size,
            self.clean_fraction,
            self.max_artifacts
        )
    }

    fn validate(&self, root: &Path) -> Result<(), DataError> {
        let at = |field: &str| Location::file(root).field(field.to_string());
        if !(32..=1024).contains(&self.image_size) {
            return Err(DataError::invalid(
                at("image_size"),
                format!("must be in 32..=1024, got {}", self.image_size),
            ));
        }
        if !(0.0..=1.0).contains(&self.clean_fraction) {
            return Err(DataError::invalid(
                at("clean_fraction"),
                format!("must be in [0, 1], got {}", self.clean_fraction),
            ));
        }
        if self.max_artifacts == 0 {
            return Err(DataError::invalid(
                at("max_artifacts"),
                "must be at least 1 (use clean_fraction = 1 for clean images only)",
            ));
        }
        Ok(())
    }
}

/// Counts of one generated split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitReport {
    pub split: String,
    pub images: usize,
    /// Images with zero refs.
    pub clean_images: usize,
    pub refs: usize,
    /// Refs with more than one polygon.
    pub multi_polygon_refs: usize,
    pub by_category: BTreeMap<ArtifactCategory, usize>,
    pub by_content: BTreeMap<ContentType, usize>,
    /// Mean over images of the fraction of pixels inside some artifact polygon (pixel-centre
    /// rule): what an all-background predictor misses.
    pub mean_artifact_fraction: f64,
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynthReport {
    pub splits: Vec<SplitReport>,
    /// Total bytes of all files written.
    pub bytes_written: u64,
}

/// One generated image with its record and labels.
struct Sample {
    record: Record,
    labels: ImageLabels,
    png: Vec<u8>,
    artifact_pixels: usize,
    categories: Vec<ArtifactCategory>,
}

/// Generates the dataset under `root` (created if needed; our own stale `<split>_NNNNN.png`
/// files from a larger earlier generation are removed, nothing else is touched).
///
/// # Errors
/// [`DataError::Invalid`] for a bad configuration, [`DataError::Io`] when a file cannot be
/// written, [`DataError::ImageEncode`] if PNG encoding fails.
pub fn generate(root: &Path, cfg: &SynthConfig) -> Result<SynthReport, DataError> {
    generate_with_progress(root, cfg, &NoProgress)
}

/// [`generate`], reporting each written image to `progress`. Images are rendered and written
/// in parallel and not kept in memory (a 1000-image 1024 px split is ~1.3 GB of PNG).
///
/// # Errors
/// As [`generate`].
pub fn generate_with_progress(
    root: &Path,
    cfg: &SynthConfig,
    progress: &dyn Progress,
) -> Result<SynthReport, DataError> {
    cfg.validate(root)?;
    let mut labels = Labels::default();
    let mut reports = Vec::new();
    let mut bytes_written = 0u64;
    for (split, count) in [("train", cfg.train_count), ("test", cfg.test_count)] {
        let layout = SplitLayout::new_at(root, split);
        std::fs::create_dir_all(&layout.images)
            .map_err(|e| DataError::io(Location::file(&layout.images), e))?;
        let plan = split_plan(cfg, split, count);
        progress.start(&format!("generating {split}"), count as u64);
        // Each PNG is written as soon as it is encoded and its bytes dropped (`png_bytes`
        // keeps the size).
        let samples: Vec<(Sample, u64)> = plan
            .into_par_iter()
            .enumerate()
            .map(|(index, (content, kind))| {
                let mut sample = render_sample(cfg, split, index, content, kind)?;
                let path = layout.image_path(&sample.record.img_file_name);
                crate::fsutil::write_atomic(&path, &sample.png)
                    .map_err(|e| DataError::io(Location::file(&path), e))?;
                progress.advance(1);
                let png_bytes = std::mem::take(&mut sample.png).len() as u64;
                Ok((sample, png_bytes))
            })
            .collect::<Result<_, DataError>>()?;
        progress.finish();
        let mut report = SplitReport {
            split: split.to_string(),
            images: count,
            clean_images: 0,
            refs: 0,
            multi_polygon_refs: 0,
            by_category: BTreeMap::new(),
            by_content: BTreeMap::new(),
            mean_artifact_fraction: 0.0,
        };
        let pixels = f64::from(cfg.image_size).powi(2);
        let mut records = Vec::with_capacity(count);
        for (sample, png_bytes) in samples {
            bytes_written += png_bytes;
            report.clean_images += usize::from(sample.record.refs.is_empty());
            report.refs += sample.record.refs.len();
            report.multi_polygon_refs += sample
                .record
                .refs
                .iter()
                .filter(|r| r.segmentation.len() > 1)
                .count();
            for c in &sample.categories {
                *report.by_category.entry(*c).or_default() += 1;
            }
            if let Some(content) = sample.labels.content_type {
                *report.by_content.entry(content).or_default() += 1;
            }
            report.mean_artifact_fraction += sample.artifact_pixels as f64 / pixels;
            labels.insert(sample.labels);
            records.push(sample.record);
        }
        report.mean_artifact_fraction /= count.max(1) as f64;
        remove_stale_images(&layout, split, count)?;
        write_annotations(&layout.annotations, &records)?;
        bytes_written += file_len(&layout.annotations);
        tracing::info!(
            split,
            images = count,
            clean = report.clean_images,
            refs = report.refs,
            "generated synthetic split"
        );
        reports.push(report);
    }
    let labels_path = root.join("labels.jsonl");
    labels.write(&labels_path)?;
    bytes_written += file_len(&labels_path);
    let readme_path = root.join("README.md");
    let readme = readme(cfg, &reports);
    crate::fsutil::write_atomic(&readme_path, readme.as_bytes())
        .map_err(|e| DataError::io(Location::file(&readme_path), e))?;
    bytes_written += readme.len() as u64;
    Ok(SynthReport {
        splits: reports,
        bytes_written,
    })
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Per image of a split: its content type (balanced: a shuffled round-robin) and the kind of
/// its artifacts, `None` for a clean image (exactly `round(count * clean_fraction)` images, at
/// shuffled positions; the kinds are a shuffled round-robin over the other images).
fn split_plan(
    cfg: &SynthConfig,
    split: &str,
    count: usize,
) -> Vec<(ContentType, Option<ArtifactCategory>)> {
    let mut rng = SplitMix64::new(derive_seed(cfg.seed, split, u64::MAX));
    let mut order: Vec<usize> = (0..count).collect();
    rng.shuffle(&mut order);
    let clean_count = (count as f64 * cfg.clean_fraction).round() as usize;
    let mut clean = vec![false; count];
    for &i in order.iter().take(clean_count) {
        clean[i] = true;
    }
    let mut kinds: Vec<usize> = (0..count - clean_count).collect();
    rng.shuffle(&mut kinds);
    let mut kinds = kinds
        .into_iter()
        .map(|k| ArtifactCategory::ALL[k % ArtifactCategory::ALL.len()]);
    let kind_of: Vec<Option<ArtifactCategory>> = clean
        .iter()
        .map(|&is_clean| if is_clean { None } else { kinds.next() })
        .collect();
    rng.shuffle(&mut order);
    order
        .iter()
        .zip(kind_of)
        .map(|(&k, kind)| (ContentType::ALL[k % ContentType::ALL.len()], kind))
        .collect()
}

fn image_name(split: &str, index: usize) -> String {
    format!("{split}_{index:05}.png")
}

fn render_sample(
    cfg: &SynthConfig,
    split: &str,
    index: usize,
    content: ContentType,
    kind: Option<ArtifactCategory>,
) -> Result<Sample, DataError> {
    let mut rng = SplitMix64::new(derive_seed(cfg.seed, split, index as u64));
    let scene = Scene::build(&mut rng, content, cfg.image_size);
    let artifacts = match kind {
        None => Vec::new(),
        Some(kind) => {
            let mut wanted = 1;
            while wanted < cfg.max_artifacts && rng.chance(0.45) {
                wanted += 1;
            }
            artifact::plan(&mut rng, &scene, wanted, kind)
        }
    };
    let file_name = image_name(split, index);
    let location = Location::file(format!("{split}/images/{file_name}"));
    if kind.is_some() && artifacts.is_empty() {
        return Err(DataError::invalid(
            location,
            format!("generator bug: no {kind:?} artifact could be planted"),
        ));
    }

    let canvas = paint(&scene, &artifacts, &mut rng).finished;

    let cap = caption::caption(&scene.description, &artifacts);
    // The generator's own invariant: each phrase's first occurrence is where it was written, so
    // the reference loader grounds it (and no phrase is dropped or mis-placed).
    for (a, &offset) in artifacts.iter().zip(&cap.phrase_offsets) {
        if cap.text.find(&a.phrase) != Some(offset) {
            return Err(DataError::invalid(
                location.field("caption"),
                format!(
                    "generator bug: phrase `{}` is not grounded at its own place",
                    a.phrase
                ),
            ));
        }
    }
    let size = cfg.image_size;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut png,
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::Adaptive,
    )
    .write_image(
        &canvas.to_rgb8(),
        size,
        size,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|source| DataError::ImageEncode {
        location: location.clone(),
        source: Box::new(source),
    })?;
    let all_polygons: Vec<canvas::Ring> = artifacts
        .iter()
        .flat_map(|a| a.polygons.iter().cloned())
        .collect();
    let artifact_pixels = artifact::union_pixels(&canvas, &all_polygons).len();
    let refs = artifacts
        .iter()
        .map(|a| ArtifactRef {
            sentence: a.phrase.clone(),
            explanation: a.explanation.clone(),
            bbox: None,
            segmentation: a
                .polygons
                .iter()
                .map(|p| p.iter().flat_map(|&(x, y)| [x, y]).collect())
                .collect(),
        })
        .collect();
    let categories: Vec<ArtifactCategory> = artifacts.iter().map(|a| a.category).collect();
    tracing::debug!(file = %file_name, refs = artifacts.len(), "rendered synthetic image");
    Ok(Sample {
        record: Record {
            id: index.to_string(),
            img_file_name: file_name.clone(),
            caption: cap.text,
            refs,
        },
        labels: ImageLabels {
            image: file_name,
            content_type: Some(content),
            categories: categories.iter().map(|c| Some(*c)).collect(),
        },
        png,
        artifact_pixels,
        categories,
    })
}

/// The canvas before and after the artifacts painted over the noise (all but shadows and
/// reflections, which replace a part of the clean content and are painted in its place).
struct Painted {
    // Read by the tests, which check that artifacts alter their polygons only.
    #[cfg_attr(not(test), allow(dead_code))]
    before_late_artifacts: Canvas,
    finished: Canvas,
}

/// Paints background, shadows (a wrong one replaces the correct one), parts, reflection, noise,
/// then the remaining artifacts in order.
fn paint(scene: &Scene, artifacts: &[Planned], rng: &mut SplitMix64) -> Painted {
    let mut canvas = Canvas::new(scene.size as usize);
    scene.paint_background(&mut canvas);
    let skip: Vec<usize> = artifacts
        .iter()
        .filter_map(|a| match a.effect {
            Effect::WrongShadow { subject, .. } => Some(subject),
            _ => None,
        })
        .collect();
    for after_parts in [false, true] {
        if after_parts {
            scene.paint_parts(&mut canvas);
        }
        scene.paint_shadows(&mut canvas, &skip, after_parts);
        for a in artifacts {
            if matches!(a.effect, Effect::WrongShadow { after_parts: late, .. } if late == after_parts)
            {
                artifact::apply(&mut canvas, a, rng);
            }
        }
    }
    let is_reflection = |a: &&Planned| matches!(a.effect, Effect::Reflection { .. });
    scene.paint_reflection(&mut canvas, artifacts.iter().any(|a| is_reflection(&a)));
    for a in artifacts.iter().filter(is_reflection) {
        artifact::apply(&mut canvas, a, rng);
    }
    scene.paint_noise(&mut canvas, rng);
    let before_late_artifacts = canvas.clone();
    for a in artifacts.iter().filter(|a| is_late(a)) {
        artifact::apply(&mut canvas, a, rng);
    }
    Painted {
        before_late_artifacts,
        finished: canvas,
    }
}

/// Whether an artifact is painted over the finished clean image.
fn is_late(a: &Planned) -> bool {
    !matches!(
        a.effect,
        Effect::WrongShadow { .. } | Effect::Reflection { .. }
    )
}

/// Removes `<split>_NNNNN.png` files with an index `>= count` left by an earlier, larger
/// generation, so that the folder holds exactly what the annotations list.
fn remove_stale_images(layout: &SplitLayout, split: &str, count: usize) -> Result<(), DataError> {
    let dir = &layout.images;
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(Location::file(dir), e))?;
    let prefix = format!("{split}_");
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let index = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".png"))
            .filter(|digits| digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<usize>().ok());
        if let Some(index) = index.filter(|&i| i >= count) {
            let path = entry.path();
            tracing::warn!(file = %path.display(), index, "removing stale synthetic image");
            std::fs::remove_file(&path).map_err(|e| DataError::io(Location::file(&path), e))?;
        }
    }
    Ok(())
}

fn readme(cfg: &SynthConfig, reports: &[SplitReport]) -> String {
    let mut table = String::from(
        "| split | images | clean | refs | multi-polygon refs | physics | structure | distortion | human | animal | object | scene | mean artifact area |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let cat = |c| r.by_category.get(&c).copied().unwrap_or(0);
        let con = |c| r.by_content.get(&c).copied().unwrap_or(0);
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1}% |\n",
            r.split,
            r.images,
            r.clean_images,
            r.refs,
            r.multi_polygon_refs,
            cat(ArtifactCategory::Physics),
            cat(ArtifactCategory::Structure),
            cat(ArtifactCategory::Distortion),
            con(ContentType::Human),
            con(ContentType::Animal),
            con(ContentType::Object),
            con(ContentType::Scene),
            100.0 * r.mean_artifact_fraction,
        ));
    }
    let config = serde_json::to_string_pretty(cfg).expect("a plain config struct serialises");
    format!(
        r#"# Synthetic SynthScars-layout data (generated)

This folder is NOT SynthScars. It is a small synthetic dataset in the exact layout of the
SynthScars release (`{{train,test}}/images/`, `{{train,test}}/annotations/{{train,test}}.json`, one
single-key record per image with `caption`, `img_file_name` and `refs`), made by
`legion_data::synth` so that tests, the evaluator and a tiny model trained on CPU have data with
planted, learnable artifacts. Numbers measured on it say nothing about LEGION on real images.

Regenerate it byte-for-byte with

```text
legion data synth --out <this folder> {flags}
```

## Content

{size}x{size} PNG images of four content types (`labels.jsonl` gives each image's type):
human (a standing figure or a face portrait), animal (a dog/cat/fox-like quadruped or a bird),
object (a cup, box or bottle on a table, half of them glossy with a reflection) and scene (a house
and a tree under the sun), on varied backgrounds with mild pixel noise, lit from one side with
soft shadows cast away from the light.

## Artifacts

Each ref's polygons cover exactly the pixels that were altered (pixel centres, even-odd rule):

- structure: an extra limb-like protrusion, a swirl warp across a part's contour, or a slice of
  the part shifted sideways;
- distortion: a checkerboard texture, coarse colour noise, an unnatural colour blotch or a
  directional smear, stained magenta (a blotch is a neon tint itself), in a blob of a part or over a
  whole part (tens of pixels to a sixth of the image);
- physics: a hard, near-black shadow cast towards the light (replacing the correct one), or a
  reflection whose colour (and sometimes position) does not match the object.

Artifacts are sized and coloured so that their kind still shows at 32 px, the tiny preset's CLIP
input (a 1-pixel checkerboard or fine noise alone averages to the part's colour there).

The artifacts of one image are all of one kind (the kinds are spread evenly over the images
with artifacts), and every phrase names its kind: "Deformed left hand" (structure), "Garbled
roof of the house" (distortion), "The shadow of the fox" or "The reflection on the table"
(physics). `legion train` scores whether the model's phrases name the planted kind.

Some refs have two polygons, some coordinates overshoot the border by a float round-off (as in
the release), some phrases end with a period, and some images have no artifact (zero refs).
Captions follow the release: `Upon examining the image. I have found: <summary>\nTo elaborate, I
have found the following artifacts. <phrase>:<explanation><phrase>:<explanation>...`; every
phrase occurs in its caption. `labels.jsonl` gives the category of every ref (the release has no
such labels; this file exercises the grouped tables).

{table}
"Mean artifact area" is the mean over images (clean ones included) of the fraction of pixels
inside some artifact polygon: what an all-background predictor misses.

## Configuration

```json
{config}
```
"#,
        flags = cfg.cli_flags(),
        size = cfg.image_size,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within one image, no artifact phrase may contain another (with or without its trailing
    /// period), or the reference loader would ground one inside the other.
    #[test]
    fn phrases_of_a_scene_never_contain_each_other() {
        let mut checked = 0;
        for i in 0..400u64 {
            let mut rng = SplitMix64::new(derive_seed(7, "vocab", i));
            let content = ContentType::ALL[(i % 4) as usize];
            let scene = Scene::build(&mut rng, content, 64);
            let mut phrases: Vec<String> =
                scene.parts.iter().flat_map(|p| p.phrases.clone()).collect();
            phrases.extend(scene.subjects.iter().flat_map(|s| s.phrases.clone()));
            phrases.extend(scene.mirror.iter().flat_map(|m| m.phrases.clone()));
            let owner = |p: &str| {
                scene
                    .parts
                    .iter()
                    .position(|q| q.phrases.iter().any(|x| x == p))
            };
            for a in &phrases {
                for b in &phrases {
                    // Two phrases of the same part never appear in one caption.
                    if a != b && (owner(a).is_none() || owner(a) != owner(b)) {
                        assert!(!b.contains(a.as_str()), "`{a}` inside `{b}` ({content:?})");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000);
    }

    #[test]
    fn split_plan_balances_content_and_counts_clean_images() {
        let cfg = SynthConfig::new().with_clean_fraction(0.25);
        let plan = split_plan(&cfg, "test", 40);
        assert_eq!(plan.iter().filter(|p| p.1.is_none()).count(), 10);
        for kind in ArtifactCategory::ALL {
            assert_eq!(plan.iter().filter(|p| p.1 == Some(kind)).count(), 10);
        }
        for c in ContentType::ALL {
            assert_eq!(plan.iter().filter(|p| p.0 == c).count(), 10);
        }
    }

    #[test]
    fn artifacts_alter_pixels_inside_their_polygons_only_and_visibly() {
        // For the artifacts painted over the finished image, every changed pixel must lie in an
        // artifact polygon, and a good share of each kind's polygon pixels must visibly change
        // (more than 10 of 255 levels in some channel).
        let cfg = SynthConfig::new();
        // Per effect kind: (polygon pixels, visibly changed pixels).
        let mut by_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for index in 0..96u64 {
            let mut rng = SplitMix64::new(derive_seed(3, "paint", index));
            let scene = Scene::build(&mut rng, ContentType::ALL[(index % 4) as usize], 64);
            let kind = ArtifactCategory::ALL[(index / 4 % 3) as usize];
            let artifacts = artifact::plan(&mut rng, &scene, cfg.max_artifacts, kind);
            let painted = paint(&scene, &artifacts, &mut rng);
            let (before, after) = (&painted.before_late_artifacts, &painted.finished);
            let late: Vec<&Planned> = artifacts.iter().filter(|a| is_late(a)).collect();
            let all: Vec<canvas::Ring> = late.iter().flat_map(|a| a.polygons.clone()).collect();
            let inside = artifact::union_pixels(after, &all);
            for y in 0..64 {
                for x in 0..64 {
                    let (a, b) = (before.get(x, y), after.get(x, y));
                    let changed = (0..3).any(|k| (a[k] - b[k]).abs() > 1e-6);
                    assert!(
                        !changed || inside.contains(&(x, y)),
                        "image {index}: pixel ({x}, {y}) changed outside every polygon"
                    );
                }
            }
            for a in late {
                let kind = format!("{:?}", a.effect);
                let kind = kind
                    .split([' ', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let entry = by_kind.entry(kind).or_default();
                for (x, y) in artifact::union_pixels(after, &a.polygons) {
                    let (p, q) = (before.get(x, y), after.get(x, y));
                    entry.0 += 1;
                    entry.1 += usize::from((0..3).any(|k| (p[k] - q[k]).abs() > 0.04));
                }
            }
        }
        eprintln!("visibly changed share of artifact pixels, by kind: {by_kind:?}");
        assert_eq!(by_kind.len(), 7, "{by_kind:?}");
        for (kind, (pixels, visible)) in &by_kind {
            let share = *visible as f64 / *pixels as f64;
            // A swirl or a shifted slice moves uniform areas onto themselves; the rest repaint.
            let floor = if kind == "Swirl" || kind == "Tear" {
                0.3
            } else {
                0.75
            };
            assert!(
                share > floor,
                "{kind}: only {share:.2} of its pixels visibly changed"
            );
        }
    }
}
