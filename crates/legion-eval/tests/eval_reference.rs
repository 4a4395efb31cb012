//! Parity of legion-eval with the Python reference evaluator.
//!
//! Fixture made by `scripts/fixtures/eval.py` (which runs `scripts/eval_reference.py`, numpy +
//! cv2 + rouge-score + NLTK): a 36-image SynthScars-layout GT with cv2.fillPoly GT masks,
//! adversarial predictions (empty GT, empty/full prediction, tiny regions, 8/16-bit score maps,
//! other sizes, a missing file), labels, explanations, detection scores, ROUGE-L pairs and
//! Porter stems. Tolerance 1e-6 everywhere (values are in [0, 1]).

use std::path::{Path, PathBuf};

use legion_data::Labels;
use legion_eval::css::{EncoderError, SentenceEncoder};
use legion_eval::detection::{DetectionConfig, evaluate_detection, read_detection_scores};
use legion_eval::evaluate::{
    ExplanationConfig, LocalizationConfig, LocalizationReport, MissingPolicy, UnknownPolicy,
    evaluate_explanations, evaluate_localization,
};
use legion_eval::ground_truth::GroundTruth;
use legion_eval::metrics::localization::LocalizationSummary;
use legion_eval::metrics::trufor::TruforConfig;
use legion_eval::predictions::{Explanations, MaskFolder};
use legion_eval::{EvalError, NoProgress, Report};
use serde_json::Value;

const TOL: f64 = 1e-6;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval")
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn gt_from_masks() -> GroundTruth {
    GroundTruth::open(&fixture().join("dataset"), "test")
        .unwrap()
        .with_mask_folder(&fixture().join("gt_masks"))
}

fn labels() -> Labels {
    Labels::read(&fixture().join("labels.jsonl")).unwrap()
}

fn close(what: &str, ours: f64, theirs: &Value, max_err: &mut f64) {
    let theirs = theirs
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: reference is {theirs}"));
    let err = (ours - theirs).abs();
    *max_err = max_err.max(err);
    assert!(err <= TOL, "{what}: ours {ours} vs reference {theirs}");
}

fn check_summary(what: &str, ours: &LocalizationSummary, theirs: &Value, max_err: &mut f64) {
    assert_eq!(
        ours.images as u64,
        theirs["images"].as_u64().unwrap(),
        "{what}"
    );
    assert_eq!(
        ours.missing_predictions as u64,
        theirs["missing_predictions"].as_u64().unwrap(),
        "{what}"
    );
    for (name, value) in [
        ("miou_per_image", ours.miou_per_image),
        ("f1_per_image", ours.f1_per_image),
        ("miou_accumulated", ours.miou_accumulated),
        ("f1_accumulated", ours.f1_accumulated),
        ("giou_lisa", ours.giou_lisa),
        ("ciou_lisa", ours.ciou_lisa),
    ] {
        close(&format!("{what}.{name}"), value, &theirs[name], max_err);
    }
    match (&ours.trufor, theirs["trufor"].is_null()) {
        (None, true) => {}
        (Some(t), false) => {
            assert_eq!(
                t.forged_images as u64,
                theirs["trufor"]["forged_images"].as_u64().unwrap()
            );
            close(
                &format!("{what}.trufor.f1_fixed"),
                t.f1_fixed,
                &theirs["trufor"]["f1_fixed"],
                max_err,
            );
            close(
                &format!("{what}.trufor.f1_best"),
                t.f1_best,
                &theirs["trufor"]["f1_best"],
                max_err,
            );
        }
        (ours, _) => panic!("{what}: trufor {ours:?} vs {}", theirs["trufor"]),
    }
}

/// Compares a localization report with a reference output, image by image and per group.
/// Returns the max abs error.
fn check_localization(report: &LocalizationReport, reference: &Value) -> f64 {
    let loc = &reference["localization"];
    let mut max_err = 0.0f64;
    let images = loc["images"].as_array().unwrap();
    assert_eq!(report.images.len(), images.len());
    for (ours, theirs) in report.images.iter().zip(images) {
        let name = &ours.image;
        assert_eq!(name, theirs["image"].as_str().unwrap());
        assert_eq!(
            (ours.height as u64, ours.width as u64),
            (
                theirs["height"].as_u64().unwrap(),
                theirs["width"].as_u64().unwrap()
            )
        );
        let c = &theirs["counts"];
        assert_eq!(
            [
                ours.counts.tp,
                ours.counts.fp,
                ours.counts.fn_,
                ours.counts.tn
            ],
            ["tp", "fp", "fn", "tn"].map(|k| c[k].as_u64().unwrap()),
            "{name}: pixel counts"
        );
        let kind = ours.prediction.map(|k| serde_json::to_value(k).unwrap());
        assert_eq!(
            kind.unwrap_or(Value::Null),
            theirs["prediction"],
            "{name}: kind"
        );
        close(
            &format!("{name}.miou"),
            ours.scores.miou,
            &theirs["miou"],
            &mut max_err,
        );
        close(
            &format!("{name}.f1"),
            ours.scores.f1,
            &theirs["f1"],
            &mut max_err,
        );
        close(
            &format!("{name}.giou"),
            ours.scores.giou_term,
            &theirs["giou_term"],
            &mut max_err,
        );
        match (&ours.trufor, theirs["trufor"].is_null()) {
            (None, true) => {}
            (Some(t), false) => {
                close(
                    &format!("{name}.trufor_fixed"),
                    t.f1_fixed,
                    &theirs["trufor"]["f1_fixed"],
                    &mut max_err,
                );
                close(
                    &format!("{name}.trufor_best"),
                    t.f1_best,
                    &theirs["trufor"]["f1_best"],
                    &mut max_err,
                );
            }
            other => panic!("{name}: trufor {other:?}"),
        }
    }
    check_summary("overall", &report.overall, &loc["overall"], &mut max_err);
    for (key, groups) in [
        ("by_content_type", &report.by_content_type),
        ("by_category", &report.by_category),
    ] {
        let theirs = loc[key].as_object().unwrap();
        let present: Vec<&String> = theirs
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k)
            .collect();
        assert_eq!(groups.len(), present.len(), "{key}");
        for g in groups.iter() {
            check_summary(
                &format!("{key}.{}", g.group),
                &g.summary,
                &theirs[&g.group.to_lowercase()],
                &mut max_err,
            );
        }
    }
    max_err
}

fn default_config() -> LocalizationConfig {
    LocalizationConfig {
        missing: MissingPolicy::Empty,
        ..LocalizationConfig::default()
    }
}

#[test]
fn localization_matches_reference_default_threshold() {
    let gt = gt_from_masks();
    let preds = MaskFolder::open(&fixture().join("pred")).unwrap();
    let report =
        evaluate_localization(&gt, &preds, Some(&labels()), &default_config(), &NoProgress)
            .unwrap();
    let max_err = check_localization(&report, &reference("reference_default.json"));
    println!("default: max abs error {max_err:e} over per-image and group metrics");
    assert_eq!(report.missing_predictions, vec!["img_34.png".to_string()]);
    assert_eq!(report.unlabelled_images, 1);
    assert_eq!(
        report.by_content_type[0].group, "Object",
        "paper column order"
    );
}

#[test]
fn localization_matches_reference_threshold_band_inverted() {
    let gt = gt_from_masks();
    let preds = MaskFolder::open(&fixture().join("pred")).unwrap();
    let config = LocalizationConfig {
        threshold: 0.3,
        trufor: Some(TruforConfig {
            fixed_threshold: 0.3,
            boundary_band: 2,
            max_with_inverted: true,
        }),
        ..default_config()
    };
    let report = evaluate_localization(&gt, &preds, Some(&labels()), &config, &NoProgress).unwrap();
    let max_err = check_localization(&report, &reference("reference_band.json"));
    println!("threshold 0.3, band 2, inverted: max abs error {max_err:e}");
}

#[test]
fn all_background_predictor_matches_reference_and_sits_below_half() {
    let gt = gt_from_masks();
    let empty = tempfile::tempdir().unwrap();
    let preds = MaskFolder::open(empty.path()).unwrap();
    let report =
        evaluate_localization(&gt, &preds, Some(&labels()), &default_config(), &NoProgress)
            .unwrap();
    let max_err = check_localization(&report, &reference("reference_empty_predictor.json"));
    println!(
        "empty predictor: max abs error {max_err:e}; mIoU {:.4} F1 {:.4}",
        report.overall.miou_per_image, report.overall.f1_per_image
    );
    // mIoU = (1 - mean artifact fraction)/2 < 0.5; F1 = fraction of empty-GT images (4/36).
    let mean_fraction: f64 = report
        .images
        .iter()
        .map(|r| r.counts.gt_area() as f64 / r.counts.total() as f64)
        .sum::<f64>()
        / report.images.len() as f64;
    assert!((report.overall.miou_per_image - (1.0 - mean_fraction) / 2.0).abs() < 1e-6);
    assert!((report.overall.f1_per_image - 4.0 / 36.0).abs() < 1e-12);
    assert_eq!(report.missing_predictions.len(), 36);
}

#[test]
fn polygon_ground_truth_matches_cv2_fill_poly() {
    let gt_polygons = GroundTruth::open(&fixture().join("dataset"), "test").unwrap();
    let gt_png = gt_from_masks();
    let mut differing = 0usize;
    for record in &gt_polygons.records {
        let (h, w) = gt_polygons.image_size(record).unwrap();
        let ours = gt_polygons.mask(record, h, w).unwrap();
        let cv2 = gt_png.mask(record, h, w).unwrap();
        differing += ours
            .as_slice()
            .iter()
            .zip(cv2.as_slice())
            .filter(|(a, b)| a != b)
            .count();
    }
    assert_eq!(differing, 0, "pixels differing from cv2.fillPoly");
    let preds = MaskFolder::open(&fixture().join("pred")).unwrap();
    let report = evaluate_localization(
        &gt_polygons,
        &preds,
        Some(&labels()),
        &default_config(),
        &NoProgress,
    )
    .unwrap();
    check_localization(&report, &reference("reference_default.json"));
}

#[test]
fn rouge_l_matches_rouge_score_on_pairs() {
    let text = std::fs::read_to_string(fixture().join("rouge_pairs.jsonl")).unwrap();
    let mut max_err = 0.0f64;
    let mut n = 0;
    for line in text.lines() {
        let pair: Value = serde_json::from_str(line).unwrap();
        let ours = legion_eval::rouge::rouge_l(
            pair["target"].as_str().unwrap(),
            pair["prediction"].as_str().unwrap(),
        );
        let what = format!("{} | {}", pair["target"], pair["prediction"]);
        close(
            &format!("{what} P"),
            ours.precision,
            &pair["precision"],
            &mut max_err,
        );
        close(
            &format!("{what} R"),
            ours.recall,
            &pair["recall"],
            &mut max_err,
        );
        close(
            &format!("{what} F"),
            ours.fmeasure,
            &pair["fmeasure"],
            &mut max_err,
        );
        n += 1;
    }
    println!("ROUGE-L: {n} pairs, max abs error {max_err:e}");
    assert!(n >= 300);
}

#[test]
fn porter_matches_nltk() {
    let words: Vec<(String, String)> = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("porter_words.json")).unwrap(),
    )
    .unwrap();
    let wrong: Vec<String> = words
        .iter()
        .filter(|(w, s)| &legion_eval::porter::stem(w) != s)
        .map(|(w, s)| format!("{w}: ours {} nltk {s}", legion_eval::porter::stem(w)))
        .collect();
    println!("Porter: {} words, {} differ", words.len(), wrong.len());
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The reference's stand-in encoder: letter histograms (checks the CSS plumbing, not a model).
struct LetterHistogram;

impl SentenceEncoder for LetterHistogram {
    fn name(&self) -> String {
        "toy-letter-histogram".into()
    }
    fn encode(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EncoderError> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0f32; 26];
                for c in t.to_lowercase().chars().filter(char::is_ascii_lowercase) {
                    v[(c as u8 - b'a') as usize] += 1.0;
                }
                v
            })
            .collect())
    }
}

#[test]
fn explanations_match_reference() {
    let gt = gt_from_masks();
    let explanations = Explanations::read(&fixture().join("explanations.jsonl")).unwrap();
    let config = ExplanationConfig {
        missing: MissingPolicy::Empty,
        batch_size: 5,
        ..ExplanationConfig::default()
    };
    let reference = reference("reference_default.json");
    let ex = &reference["explanation"];
    let mut max_err = 0.0f64;
    let report = evaluate_explanations(
        &gt,
        &explanations,
        Some(&LetterHistogram),
        Some(&labels()),
        &config,
        &NoProgress,
    )
    .unwrap();
    for (ours, theirs) in report.images.iter().zip(ex["images"].as_array().unwrap()) {
        assert_eq!(ours.image, theirs["image"].as_str().unwrap());
        assert_eq!(ours.missing, theirs["missing"].as_bool().unwrap());
        close(
            &format!("{} rouge", ours.image),
            ours.rouge_l,
            &theirs["rouge_l"],
            &mut max_err,
        );
        close(
            &format!("{} css", ours.image),
            ours.css.unwrap(),
            &theirs["css_toy"],
            &mut max_err,
        );
    }
    close(
        "rouge mean",
        report.overall.rouge_l,
        &ex["rouge_l"],
        &mut max_err,
    );
    close(
        "css mean",
        report.overall.css.unwrap(),
        &ex["css_toy"],
        &mut max_err,
    );
    assert_eq!(report.encoder.as_deref(), Some("toy-letter-histogram"));
    assert_eq!(report.missing_explanations, vec!["img_33.jpg".to_string()]);
    println!("explanations: max abs error {max_err:e}");

    let no_encoder =
        evaluate_explanations(&gt, &explanations, None, None, &config, &NoProgress).unwrap();
    assert_eq!(
        no_encoder.overall.css, None,
        "CSS is unavailable without an encoder, never faked"
    );
    assert_eq!(no_encoder.encoder, None);
}

#[test]
fn detection_matches_reference() {
    let samples = read_detection_scores(&fixture().join("detection.csv")).unwrap();
    let report = evaluate_detection(&samples, &DetectionConfig::default(), None).unwrap();
    let reference = reference("reference_default.json");
    let det = &reference["detection"];
    let mut max_err = 0.0f64;
    let check = |what: &str,
                 ours: &legion_eval::detection::DetectionSummary,
                 theirs: &Value,
                 max_err: &mut f64| {
        close(
            &format!("{what} acc"),
            ours.accuracy,
            &theirs["accuracy"],
            max_err,
        );
        close(
            &format!("{what} bacc"),
            ours.balanced_accuracy,
            &theirs["balanced_accuracy"],
            max_err,
        );
        match ours.average_precision {
            Some(ap) => close(
                &format!("{what} ap"),
                ap,
                &theirs["average_precision"],
                max_err,
            ),
            None => assert!(theirs["average_precision"].is_null(), "{what}"),
        }
        match ours.roc_auc {
            Some(auc) => {
                close(&format!("{what} auc"), auc, &theirs["roc_auc"], max_err);
                if let Some(sk) = theirs.get("sklearn_roc_auc") {
                    close(&format!("{what} sklearn auc"), auc, sk, max_err);
                    close(
                        &format!("{what} sklearn ap"),
                        ours.average_precision.unwrap(),
                        &theirs["sklearn_average_precision"],
                        max_err,
                    );
                }
            }
            None => assert!(theirs["roc_auc"].is_null(), "{what}"),
        }
    };
    check("overall", &report.overall, &det["overall"], &mut max_err);
    assert_eq!(report.by_group.len(), 3);
    for (g, s) in &report.by_group {
        check(g, s, &det["by_group"][g], &mut max_err);
    }
    close(
        "mean group acc",
        report.mean_group_accuracy.unwrap(),
        &det["mean_group_accuracy"],
        &mut max_err,
    );
    let fake_positive = evaluate_detection(
        &samples,
        &DetectionConfig {
            positive: legion_eval::detection::PositiveClass::Fake,
            ..DetectionConfig::default()
        },
        None,
    )
    .unwrap();
    close(
        "ap fake positive",
        fake_positive.overall.average_precision.unwrap(),
        &det["overall"]["average_precision_fake_positive"],
        &mut max_err,
    );
    println!("detection: max abs error {max_err:e}");
}

fn assert_json_close(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-12 * x.abs().max(1.0),
                "{at}: {x} vs {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_json_close(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}"
            );
            for (k, v) in x {
                assert_json_close(v, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn bad_inputs_give_errors_naming_the_file() {
    let gt = gt_from_masks();
    let dir = tempfile::tempdir().unwrap();
    let preds_dir = dir.path().join("pred");
    copy_dir(&fixture().join("pred"), &preds_dir);

    // Missing prediction under the default (error) policy.
    let preds = MaskFolder::open(&preds_dir).unwrap();
    let err = evaluate_localization(
        &gt,
        &preds,
        None,
        &LocalizationConfig::default(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, EvalError::MissingPrediction { .. }), "{err}");
    assert!(err.to_string().contains("img_34"), "{err}");

    // Unknown image.
    std::fs::copy(
        preds_dir.join("img_00.png"),
        preds_dir.join("not_an_image.png"),
    )
    .unwrap();
    let preds = MaskFolder::open(&preds_dir).unwrap();
    let err = evaluate_localization(&gt, &preds, None, &default_config(), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("not_an_image.png"), "{err}");
    let ignore = LocalizationConfig {
        unknown: UnknownPolicy::Ignore,
        ..default_config()
    };
    let report = evaluate_localization(&gt, &preds, None, &ignore, &NoProgress).unwrap();
    assert_eq!(report.unknown_predictions.len(), 1);
    std::fs::remove_file(preds_dir.join("not_an_image.png")).unwrap();

    // Unreadable PNG and a colour PNG.
    std::fs::write(preds_dir.join("img_05.png"), b"garbage").unwrap();
    let preds = MaskFolder::open(&preds_dir).unwrap();
    let err = evaluate_localization(&gt, &preds, None, &default_config(), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("img_05.png"), "{err}");
    image::RgbImage::new(4, 4)
        .save(preds_dir.join("img_05.png"))
        .unwrap();
    let err = evaluate_localization(&gt, &preds, None, &default_config(), &NoProgress).unwrap_err();
    assert!(
        err.to_string().contains("img_05.png") && err.to_string().contains("single-channel"),
        "{err}"
    );

    // Duplicate stem.
    std::fs::copy(preds_dir.join("img_00.png"), preds_dir.join("img_00.PNG")).unwrap();
    let err = MaskFolder::open(&preds_dir).unwrap_err();
    assert!(
        err.to_string().contains("duplicate") && err.to_string().contains("img_00"),
        "{err}"
    );

    // JSONL with a bad line and an unknown image.
    let jsonl = dir.path().join("ex.jsonl");
    std::fs::write(
        &jsonl,
        "{\"image\": \"img_01.png\", \"explanation\": \"x\"}\n{\"image\": 3}\n",
    )
    .unwrap();
    let err = Explanations::read(&jsonl).unwrap_err().to_string();
    assert!(err.contains("ex.jsonl") && err.contains("line 2"), "{err}");
    std::fs::write(&jsonl, "{\"image\": \"img_01.png\", \"explanation\": \"x\"}\n{\"image\": \"nope\", \"explanation\": \"y\"}\n").unwrap();
    let explanations = Explanations::read(&jsonl).unwrap();
    let config = ExplanationConfig {
        missing: MissingPolicy::Empty,
        ..ExplanationConfig::default()
    };
    let err = evaluate_explanations(&gt, &explanations, None, None, &config, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope") && err.contains("line 2"), "{err}");
    // The same image under two keys (file name and record id).
    std::fs::write(&jsonl, "{\"image\": \"img_01.png\", \"explanation\": \"x\"}\n{\"image\": \"rec_01\", \"explanation\": \"y\"}\n").unwrap();
    let explanations = Explanations::read(&jsonl).unwrap();
    let err = evaluate_explanations(&gt, &explanations, None, None, &config, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("duplicate") && err.contains("img_01.png"),
        "{err}"
    );
}

#[test]
fn report_tables_csv_worst_and_overlays() {
    let gt = gt_from_masks();
    let preds = MaskFolder::open(&fixture().join("pred")).unwrap();
    let mut report = Report::new("ours", &fixture().join("dataset"), "test");
    report.localization = Some(
        evaluate_localization(&gt, &preds, Some(&labels()), &default_config(), &NoProgress)
            .unwrap(),
    );
    let json = report.to_json();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.json"), &json).unwrap();
    let again = Report::read(&dir.path().join("r.json")).unwrap();
    // serde_json's default float parser may be 1 ulp off, so compare values with a tolerance.
    let (a, b) = (
        serde_json::to_value(&again).unwrap(),
        serde_json::to_value(&report).unwrap(),
    );
    assert_json_close(&a, &b, "report");

    let table = legion_eval::tables::merge_tables_with(
        &[report.clone()],
        &legion_eval::tables::TableOptions {
            with_published: true,
            ..Default::default()
        },
    );
    let ours = &table.rows[0];
    let overall_miou = table
        .columns
        .iter()
        .position(|c| c == "Overall mIoU")
        .unwrap();
    assert!(
        (ours.cells[overall_miou].unwrap()
            - 100.0 * report.localization.as_ref().unwrap().overall.miou_per_image)
            .abs()
            < 1e-9
    );
    assert_eq!(table.rows.len(), 7, "ours + 6 published rows");
    for format in [
        legion_eval::tables::TableFormat::Text,
        legion_eval::tables::TableFormat::Markdown,
        legion_eval::tables::TableFormat::Csv,
        legion_eval::tables::TableFormat::Latex,
        legion_eval::tables::TableFormat::Json,
    ] {
        assert!(table.render(format).contains("ours"), "{format:?}");
    }

    let csv = report.per_image_csv();
    assert_eq!(csv.lines().count(), 37, "header + 36 images");

    let worst = report.worst(3);
    let mut mious: Vec<f64> = report
        .localization
        .as_ref()
        .unwrap()
        .images
        .iter()
        .map(|r| r.scores.miou)
        .collect();
    mious.sort_by(f64::total_cmp);
    assert_eq!(
        worst.iter().map(|r| r.scores.miou).collect::<Vec<_>>(),
        mious[..3].to_vec()
    );
    let written =
        legion_eval::overlay::write_worst_overlays(&report, &gt, &preds, 3, dir.path()).unwrap();
    assert_eq!(written.len(), 3);
    let first = image::open(&written[0]).unwrap();
    assert_eq!(first.height() as usize, worst[0].height);
    assert_eq!(first.width() as usize, 3 * worst[0].width + 8);
}
