//! End-to-end runs of the inference pipeline on tiny models made in code
//! (`legion_infer::testing`) and the shipped tiny data (`data/synthscars-tiny`).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use image::RgbImage;
use legion_data::mask::Mask;
use legion_infer::analyze::{Analyzer, file_stem, write_analysis};
use legion_infer::generator::CommandScorer;
use legion_infer::generator::{BuiltinInpainter, CommandGenerator, HttpGenerator};
use legion_infer::html::{ReportEntry, analysis_report};
use legion_infer::infer::{InferOptions, run_infer};
use legion_infer::record::{AnalysisRecord, artifact_record, finalize_area};
use legion_infer::refine::{ArtifactDetector, RefineOptions, StopReason, refine};
use legion_infer::regenerate::{
    CommandRewriter, CommandTextToImage, RegenerateOptions, RuleRewriter, TextToImage, regenerate,
};
use legion_infer::testing::{
    SCRIPTED_EXPLANATION, SCRIPTED_PHRASE, scripted_bundle, tiny_detector,
};
use legion_infer::{AnalysisRecord as Record, InferError};

fn test_images(n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|k| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
                "../../data/synthscars-tiny/test/images/test_{k:05}.png"
            ))
        })
        .collect()
}

fn saved_analyzer(dir: &Path) -> Analyzer {
    let device = Device::flex();
    let bundle = scripted_bundle(&device, 7).unwrap();
    let target = dir.join("model");
    bundle.save(&target).unwrap();
    Analyzer::load(&target, device).unwrap()
}

#[test]
fn analyze_writes_records_overlays_and_a_report_from_a_saved_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let analyzer = saved_analyzer(dir.path());
    let paths = test_images(2);
    let prepared: Vec<_> = paths.iter().map(|p| analyzer.prepare(p).unwrap()).collect();
    let records = analyzer
        .analyze_batch(&prepared.iter().collect::<Vec<_>>())
        .unwrap();
    assert_eq!(records.len(), 2);
    let mut entries = Vec::new();
    for (record, image) in records.iter().zip(&prepared) {
        assert_eq!(record.image, format!("{}.png", file_stem(&image.path)));
        assert_eq!(
            (record.width, record.height),
            (image.rgb.width() as usize, image.rgb.height() as usize)
        );
        assert_eq!(record.finish_reason, "eos");
        assert_eq!(record.artifacts.len(), 1);
        let artifact = &record.artifacts[0];
        assert_eq!(artifact.phrase.as_deref(), Some(SCRIPTED_PHRASE));
        assert_eq!(artifact.explanation.as_deref(), Some(SCRIPTED_EXPLANATION));
        assert!(
            record.explanation.contains(SCRIPTED_EXPLANATION),
            "{}",
            record.explanation
        );
        assert!(
            artifact.area > 0,
            "the random SAM decoder gives a non-empty mask"
        );
        assert_eq!(record.artifact_area, artifact.area);

        let (files, overlay) =
            write_analysis(dir.path(), &file_stem(&image.path), record, &image.rgb).unwrap();
        // The JSON parses back, and its RLE and polygons describe the mask.
        let back: Record =
            serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
        assert_eq!(&back, record);
        let mask = back.artifacts[0].mask();
        assert_eq!(mask.area() as u64, artifact.area);
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
        let seg = &value["artifacts"][0]["segmentation"];
        assert_eq!(
            seg["size"],
            serde_json::json!([record.height, record.width])
        );
        assert!(seg["counts"].is_string());
        let rasterised = legion_data::raster::coco_polygons(
            &back.artifacts[0].polygons,
            record.height,
            record.width,
        )
        .unwrap();
        // Outer boundaries fill holes, so the polygons cover the mask.
        for (m, p) in mask.as_slice().iter().zip(rasterised.as_slice()) {
            assert!(*m == 0 || *p == 1);
        }
        let png = image::open(&files.overlay).unwrap().to_rgb8();
        assert_eq!(png, overlay);
        assert!(png.width() >= image.rgb.width() && png.height() > image.rgb.height());
        entries.push(ReportEntry {
            record: record.clone(),
            image: image.rgb.clone(),
            overlay,
        });
    }
    let html = analysis_report("test", &entries).unwrap();
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 4);
    assert!(html.contains(SCRIPTED_EXPLANATION));
}

#[test]
fn infer_writes_the_eval_format_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let analyzer = saved_analyzer(dir.path());
    let images = test_images(3);
    let out = dir.path().join("pred");
    let options = InferOptions {
        batch_size: 2,
        resume: true,
        ..InferOptions::default()
    };
    let first = run_infer(&analyzer, &images, &out, &options, &legion_data::NoProgress).unwrap();
    assert_eq!((first.total, first.skipped, first.analysed), (3, 0, 3));
    assert!(first.failed.is_empty());
    // Each mask is the union of the record's masks, as a binary 0/255 PNG.
    for path in &images {
        let stem = file_stem(path);
        let record: AnalysisRecord = serde_json::from_slice(
            &std::fs::read(out.join("records").join(format!("{stem}.json"))).unwrap(),
        )
        .unwrap();
        let png = image::open(out.join("masks").join(format!("{stem}.png")))
            .unwrap()
            .to_luma8();
        let expected = record.union_mask().to_gray_image(255);
        assert_eq!(png, expected);
    }
    // Simulate a crash after the second image: drop the third line, leave a torn line.
    let jsonl = out.join("explanations.jsonl");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    std::fs::write(
        &jsonl,
        format!("{}\n{}\n{{\"image\": \"te", lines[0], lines[1]),
    )
    .unwrap();
    let second = run_infer(&analyzer, &images, &out, &options, &legion_data::NoProgress).unwrap();
    assert_eq!((second.skipped, second.analysed), (2, 1));
    let text = std::fs::read_to_string(&jsonl).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert_eq!(text, lines.join("\n") + "\n");
    // A missing file is reported, not fatal.
    let mut with_bad = images.clone();
    with_bad.push(dir.path().join("missing.png"));
    let third = run_infer(
        &analyzer,
        &with_bad,
        &out,
        &options,
        &legion_data::NoProgress,
    )
    .unwrap();
    assert_eq!(
        (third.skipped, third.analysed, third.failed.len()),
        (3, 0, 1)
    );
}

#[test]
fn infer_records_its_perturbation_and_refuses_to_mix_inputs() {
    use legion_data::perturb::PredictionsMeta;
    let dir = tempfile::tempdir().unwrap();
    let analyzer = saved_analyzer(dir.path());
    let images = test_images(2);
    let out = dir.path().join("pred");
    let clean = InferOptions::default();
    run_infer(&analyzer, &images, &out, &clean, &legion_data::NoProgress).unwrap();
    let meta = PredictionsMeta::read_from(&out).unwrap().unwrap();
    assert!(meta.perturbation.is_clean(), "{meta:?}");

    // Resuming with another perturbation would mix clean and degraded predictions.
    let noisy = InferOptions {
        perturbation: Some("noise:25.5".parse().unwrap()),
        perturb_seed: 3,
        ..InferOptions::default()
    };
    let err = run_infer(&analyzer, &images, &out, &noisy, &legion_data::NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("infer.json") && err.contains("none") && err.contains("noise:25.5 (seed 3)"),
        "{err}"
    );
    // Starting over is allowed, and recorded.
    let fresh = InferOptions {
        resume: false,
        ..noisy.clone()
    };
    let summary = run_infer(&analyzer, &images, &out, &fresh, &legion_data::NoProgress).unwrap();
    assert_eq!(summary.analysed, 2);
    let meta = PredictionsMeta::read_from(&out).unwrap().unwrap();
    assert_eq!(
        (meta.perturbation.spec.as_str(), meta.perturbation.seed),
        ("noise:25.5", Some(3))
    );
    // The same perturbation resumes.
    let again = run_infer(&analyzer, &images, &out, &noisy, &legion_data::NoProgress).unwrap();
    assert_eq!((again.skipped, again.analysed), (2, 0));
    // Every kind runs through the pipeline (JPEG on a PNG input, blur).
    for spec in ["jpeg:50", "blur:5"] {
        let options = InferOptions {
            perturbation: Some(spec.parse().unwrap()),
            ..InferOptions::default()
        };
        let out = dir.path().join(spec.replace(':', "-"));
        let summary =
            run_infer(&analyzer, &images, &out, &options, &legion_data::NoProgress).unwrap();
        assert_eq!(summary.analysed, 2, "{spec}: {:?}", summary.failed);
    }
}

#[test]
fn detector_scores_are_probabilities_and_survive_save_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let detector = tiny_detector(&device, 3).unwrap();
    let images = test_images(3);
    let scores: Vec<f64> = detector
        .score_files(&images, 2, &legion_data::NoProgress)
        .into_iter()
        .map(|s| s.unwrap().score)
        .collect();
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
    assert!(scores[0] != scores[1], "different images, different scores");
    detector.save(&dir.path().join("det")).unwrap();
    let loaded = legion_infer::detect::Detector::load(&dir.path().join("det"), device).unwrap();
    let again: Vec<f64> = loaded
        .score_files(&images, 3, &legion_data::NoProgress)
        .into_iter()
        .map(|s| s.unwrap().score)
        .collect();
    for (a, b) in scores.iter().zip(&again) {
        assert!((a - b).abs() < 1e-6, "{scores:?} vs {again:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The refinement loop with deterministic FAKE detectors. They test the loop's logic
// (rounds, prompts, stopping rules, records); they are not LEGION. Whether a trained LEGION's
// detected area shrinks round after round is measured separately on a trained bundle.
// ---------------------------------------------------------------------------------------

fn is_red(p: &image::Rgb<u8>) -> bool {
    p[0] > 200 && p[1] < 80 && p[2] < 80
}

/// FAKE detector with limited capacity: reports only the largest 4-connected component of
/// saturated-red pixels, as one artifact.
struct LargestRedBlobDetector;

impl ArtifactDetector for LargestRedBlobDetector {
    fn detect(&mut self, name: &str, image: &RgbImage) -> Result<AnalysisRecord, InferError> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let red: Vec<bool> = image.pixels().map(is_red).collect();
        let mut seen = vec![false; w * h];
        let mut best: Vec<usize> = Vec::new();
        for start in 0..w * h {
            if !red[start] || seen[start] {
                continue;
            }
            let mut component = vec![start];
            seen[start] = true;
            let mut k = 0;
            while k < component.len() {
                let i = component[k];
                k += 1;
                let (r, c) = (i / w, i % w);
                let neighbours = [
                    (r > 0).then(|| i - w),
                    (r + 1 < h).then(|| i + w),
                    (c > 0).then(|| i - 1),
                    (c + 1 < w).then(|| i + 1),
                ];
                for j in neighbours.into_iter().flatten() {
                    if red[j] && !seen[j] {
                        seen[j] = true;
                        component.push(j);
                    }
                }
            }
            if component.len() > best.len() {
                best = component;
            }
        }
        let mut mask = Mask::zeros(h, w);
        for i in best {
            mask.set(i / w, i % w, true);
        }
        Ok(record_of(
            name,
            image,
            &[("red blob", "The colour is saturated red", mask)],
        ))
    }
}

/// FAKE detector: always the same square, whatever the image.
struct FixedDetector;

impl ArtifactDetector for FixedDetector {
    fn detect(&mut self, name: &str, image: &RgbImage) -> Result<AnalysisRecord, InferError> {
        let mut mask = Mask::zeros(image.height() as usize, image.width() as usize);
        for y in 2..6 {
            for x in 2..6 {
                mask.set(y, x, true);
            }
        }
        Ok(record_of(name, image, &[("corner", "", mask)]))
    }
}

fn record_of(name: &str, image: &RgbImage, artifacts: &[(&str, &str, Mask)]) -> AnalysisRecord {
    let mut record = AnalysisRecord {
        image: name.to_string(),
        width: image.width() as usize,
        height: image.height() as usize,
        explanation: String::new(),
        text: String::new(),
        finish_reason: "eos".into(),
        artifact_area: 0,
        artifact_ratio: 0.0,
        artifacts: artifacts
            .iter()
            .enumerate()
            .filter(|(_, (_, _, m))| m.area() > 0)
            .map(|(k, (p, e, m))| {
                artifact_record(k + 1, Some(p.to_string()), Some(e.to_string()), m, 1.0, 1.0)
                    .unwrap()
            })
            .collect(),
    };
    finalize_area(&mut record);
    record
}

/// A grey gradient with three saturated red squares: 20x20, 12x12 and 6x6.
fn red_square_image() -> RgbImage {
    let squares = [(3, 3, 20), (28, 4, 12), (30, 26, 6)];
    RgbImage::from_fn(48, 40, |x, y| {
        let inside = squares
            .iter()
            .any(|&(x0, y0, s)| (x0..x0 + s).contains(&x) && (y0..y0 + s).contains(&y));
        if inside {
            image::Rgb([250, 20, 20])
        } else {
            image::Rgb([(80 + x) as u8, (90 + y) as u8, 100])
        }
    })
}

#[test]
fn refine_shrinks_the_detected_area_until_none_remains() {
    let dir = tempfile::tempdir().unwrap();
    let options = RefineOptions {
        max_rounds: 10,
        dilate_radius: 0,
        ..RefineOptions::default()
    };
    let summary = refine(
        "red.png",
        &red_square_image(),
        &mut LargestRedBlobDetector,
        &mut BuiltinInpainter::default(),
        None,
        &options,
        dir.path(),
    )
    .unwrap();
    let areas = summary.areas();
    // One blob repainted per round: the detected area shrinks round after round to zero.
    assert_eq!(areas, vec![400, 144, 36, 0]);
    assert_eq!(summary.stop_reason, StopReason::NoArtifact);
    assert_eq!(summary.best_round, areas.len() - 1);
    // The final image has no red pixel left.
    let last = image::open(&summary.final_image).unwrap().to_rgb8();
    assert_eq!(last.pixels().filter(|p| is_red(p)).count(), 0);
    // The prompts carry the explanation, the records and the strip are on disk.
    let prompt = &summary.rounds[0].repaints[0].prompt;
    assert!(
        prompt.starts_with("Try to avoid the problem: The colour is saturated red And"),
        "{prompt}"
    );
    let jsonl = std::fs::read_to_string(dir.path().join("rounds.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), areas.len());
    for round in &summary.rounds {
        for file in ["image.png", "mask.png", "overlay.png", "analysis.json"] {
            assert!(
                dir.path().join(&round.dir).join(file).is_file(),
                "{} {file}",
                round.dir
            );
        }
    }
    let strip = image::open(dir.path().join("strip.png")).unwrap();
    assert!(strip.width() > 256 * areas.len() as u32);
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert_eq!(
        html.matches("data:image/png;base64,").count(),
        2 * areas.len()
    );
}

#[test]
fn refine_stops_at_k_rounds_or_when_nothing_improves() {
    let dir = tempfile::tempdir().unwrap();
    let options = RefineOptions {
        max_rounds: 2,
        dilate_radius: 0,
        ..RefineOptions::default()
    };
    let summary = refine(
        "red.png",
        &red_square_image(),
        &mut LargestRedBlobDetector,
        &mut BuiltinInpainter::default(),
        None,
        &options,
        &dir.path().join("k"),
    )
    .unwrap();
    assert_eq!(summary.stop_reason, StopReason::MaxRounds);
    assert_eq!(summary.rounds.len(), 3);
    assert!(summary.rounds[2].repaints.is_empty());

    // An identity generator (a shell command) never changes what the fixed detector sees.
    let options = RefineOptions {
        max_rounds: 5,
        patience: 2,
        ..RefineOptions::default()
    };
    let summary = refine(
        "red.png",
        &red_square_image(),
        &mut FixedDetector,
        &mut CommandGenerator {
            template: "cp {image} {out}".into(),
        },
        Some(&legion_infer::generator::CommandScorer {
            template: "echo 0.25".into(),
        }),
        &options,
        &dir.path().join("stale"),
    )
    .unwrap();
    assert_eq!(summary.stop_reason, StopReason::NoImprovement);
    assert_eq!(summary.areas(), vec![16, 16, 16]);
    assert_eq!(summary.rounds[0].findings.external_score, Some(0.25));
    // Empty explanation: the phrase stands in.
    assert!(
        summary.rounds[0].repaints[0]
            .prompt
            .starts_with("Try to avoid the problem: corner And")
    );
}

#[test]
fn refine_runs_with_the_tiny_model_as_detector() {
    // Smoke run with a real (scripted, untrained) bundle: the loop's plumbing around LEGION.
    let dir = tempfile::tempdir().unwrap();
    let mut analyzer = saved_analyzer(dir.path());
    let image = legion_data::image_io::decode_rgb(&test_images(1)[0]).unwrap();
    let options = RefineOptions {
        max_rounds: 2,
        dilate_radius: 1,
        ..RefineOptions::default()
    };
    let summary = refine(
        "test_00000.png",
        &image,
        &mut analyzer,
        &mut BuiltinInpainter::default(),
        None,
        &options,
        &dir.path().join("refine"),
    )
    .unwrap();
    assert!(!summary.rounds.is_empty());
    assert_eq!(
        summary.rounds[0].findings.phrases,
        vec![SCRIPTED_PHRASE.to_string()]
    );
    assert!(summary.rounds[0].findings.artifact_area > 0);
    assert!(
        summary.rounds[0].repaints[0]
            .prompt
            .contains(SCRIPTED_EXPLANATION)
    );
}

/// FAKE text-to-image model: the red-square picture, without its squares once the prompt
/// asks for `no red blob`; it records the prompts it was given.
struct PromptSensitivePainter {
    prompts: Vec<String>,
}

impl TextToImage for PromptSensitivePainter {
    fn describe(&self) -> String {
        "fake painter".into()
    }

    fn generate(
        &mut self,
        prompt: &str,
        _round: usize,
        _workdir: &Path,
    ) -> Result<RgbImage, InferError> {
        self.prompts.push(prompt.to_string());
        let mut image = red_square_image();
        if prompt.contains("no red blob") {
            for p in image.pixels_mut().filter(|p| is_red(p)) {
                *p = image::Rgb([120, 120, 120]);
            }
        }
        Ok(image)
    }
}

#[test]
fn regenerate_rewrites_the_prompt_from_the_reflection_until_the_image_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let mut painter = PromptSensitivePainter {
        prompts: Vec::new(),
    };
    let summary = regenerate(
        "generated.png",
        "a grey gradient",
        &mut LargestRedBlobDetector,
        &mut painter,
        &mut RuleRewriter,
        None,
        &RegenerateOptions::default(),
        dir.path(),
    )
    .unwrap();
    assert_eq!(
        painter.prompts,
        ["a grey gradient", "a grey gradient, no red blob"]
    );
    assert_eq!(summary.rounds.len(), 2);
    assert_eq!(
        summary.rounds[0].reflection,
        "red blob: The colour is saturated red"
    );
    assert_eq!(summary.rounds[0].findings.artifact_area, 400);
    assert_eq!(summary.rounds[1].findings.artifact_area, 0);
    assert_eq!(summary.rounds[1].reflection, "");
    assert_eq!(summary.stop_reason, StopReason::NoArtifact);
    assert_eq!(summary.best_round, 2);
    let best = image::open(&summary.final_image).unwrap().to_rgb8();
    assert_eq!(best.pixels().filter(|p| is_red(p)).count(), 0);
    let jsonl = std::fs::read_to_string(dir.path().join("rounds.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 2);
    for round in &summary.rounds {
        for file in ["image.png", "mask.png", "overlay.png", "analysis.json"] {
            assert!(
                dir.path().join(&round.dir).join(file).is_file(),
                "{} {file}",
                round.dir
            );
        }
    }
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("a grey gradient, no red blob"));
    assert_eq!(html.matches("data:image/png;base64,").count(), 4);
}

#[test]
fn regenerate_with_external_commands_keeps_k_rounds_and_picks_the_best_score() {
    let dir = tempfile::tempdir().unwrap();
    let picture = dir.path().join("picture.png");
    red_square_image().save(&picture).unwrap();
    // The "model" copies a fixed picture, the "LLM" answers a fixed prompt after some chatter,
    // the scorer prefers later rounds (its score is the round folder's number).
    let mut generator = CommandTextToImage {
        template: format!("cp '{}' {{out}}", picture.display()),
    };
    let mut rewriter = CommandRewriter {
        template: "printf 'considering %s\\n' {instruction} >/dev/null; echo '<START> a tidy scene, sharp <END>'".into(),
    };
    let scorer = CommandScorer {
        template: "basename \"$(dirname {image})\" | tr -dc 0-9".into(),
    };
    let summary = regenerate(
        "generated.png",
        "a scene",
        &mut FixedDetector,
        &mut generator,
        &mut rewriter,
        Some(&scorer),
        &RegenerateOptions {
            max_rounds: 3,
            ..RegenerateOptions::default()
        },
        dir.path(),
    )
    .unwrap();
    let prompts: Vec<&str> = summary.rounds.iter().map(|r| r.prompt.as_str()).collect();
    assert_eq!(
        prompts,
        ["a scene", "a tidy scene, sharp", "a tidy scene, sharp"]
    );
    assert_eq!(summary.stop_reason, StopReason::MaxRounds);
    let scores: Vec<Option<f64>> = summary
        .rounds
        .iter()
        .map(|r| r.findings.external_score)
        .collect();
    assert_eq!(scores, [Some(1.0), Some(2.0), Some(3.0)]);
    assert_eq!(summary.best_round, 3);

    // A rewriter that answers without the markers fails the run, naming the problem.
    let mut silent = CommandRewriter {
        template: "echo 'I cannot help'".into(),
    };
    let err = regenerate(
        "generated.png",
        "a scene",
        &mut FixedDetector,
        &mut generator,
        &mut silent,
        None,
        &RegenerateOptions::default(),
        &dir.path().join("silent"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("<START>") && err.contains("I cannot help"),
        "{err}"
    );
}

#[test]
fn http_generator_round_trips_through_a_local_endpoint() {
    use base64::Engine;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/inpaint", listener.local_addr().unwrap());
    // A stub endpoint: answers the input image with every pixel inverted, as JSON.
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let request = legion_infer::http::read_message(&stream, 1 << 20).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["prompt"], "fix it");
        let b64 = base64::engine::general_purpose::STANDARD;
        let png = b64.decode(body["image"].as_str().unwrap()).unwrap();
        let mut img = image::load_from_memory(&png).unwrap().to_rgb8();
        image::imageops::invert(&mut img);
        let answer = serde_json::json!({
            "image": b64.encode(legion_infer::html::png_bytes(&img, "x").unwrap())
        });
        legion_infer::http::write_response(
            &stream,
            200,
            "application/json",
            answer.to_string().as_bytes(),
        )
        .unwrap();
    });
    let image = RgbImage::from_pixel(4, 3, image::Rgb([10, 20, 30]));
    let mask = Mask::full(3, 4);
    let mut generator = HttpGenerator {
        url,
        timeout: std::time::Duration::from_secs(10),
    };
    let out = legion_infer::generator::Generator::inpaint(
        &mut generator,
        &legion_infer::generator::InpaintRequest {
            image: &image,
            mask: &mask,
            prompt: "fix it",
        },
        Path::new("."),
    )
    .unwrap();
    server.join().unwrap();
    assert_eq!(out.get_pixel(0, 0).0, [245, 235, 225]);
}
