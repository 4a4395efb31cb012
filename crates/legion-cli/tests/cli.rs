//! End-to-end runs of the `legion` binary on the shipped tiny data (`data/synthscars-tiny`).

use std::path::PathBuf;
use std::process::Command;

fn legion() -> Command {
    Command::new(env!("CARGO_BIN_EXE_legion"))
}

fn tiny_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/synthscars-tiny")
}

#[test]
fn data_check_passes_on_the_shipped_data() {
    let out = legion()
        .args(["data", "check"])
        .arg(tiny_data())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 errors"), "{stdout}");
    assert!(
        stdout.contains("content types: Animal"),
        "labels are read: {stdout}"
    );
}

#[test]
fn shipped_data_is_what_the_generator_makes() {
    // The committed data must be reproducible by the documented command.
    let dir = tempfile::tempdir().unwrap();
    let status = legion()
        .args(["data", "synth", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    for file in [
        "train/annotations/train.json",
        "test/annotations/test.json",
        "labels.jsonl",
        "test/images/test_00000.png",
    ] {
        let shipped = std::fs::read(tiny_data().join(file)).unwrap();
        let fresh = std::fs::read(dir.path().join(file)).unwrap();
        assert!(
            shipped == fresh,
            "{file} differs from `legion data synth` output"
        );
    }
}

#[test]
fn baselines_then_eval_then_tables() {
    let dir = tempfile::tempdir().unwrap();
    let out = legion()
        .args(["baselines", "--gt"])
        .arg(tiny_data())
        .arg("--out")
        .arg(dir.path())
        .args(["--format", "csv"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("all-background") && table.contains("LEGION (paper)"),
        "{table}"
    );

    // The all-background predictor: F1 is the share of images without artifact (F1 = 1 when
    // TP = FP = FN = 0), mIoU is the mean of (1 - artifact fraction) / 2.
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("all-background.json")).unwrap(),
    )
    .unwrap();
    let loc = &report["localization"];
    let images = loc["images"].as_array().unwrap();
    let empty = images
        .iter()
        .filter(|i| i["counts"]["fn"].as_u64() == Some(0))
        .count();
    let f1 = loc["overall"]["f1_per_image"].as_f64().unwrap();
    assert!(
        (f1 - empty as f64 / images.len() as f64).abs() < 1e-12,
        "F1 {f1}, {empty}/{}",
        images.len()
    );
    let miou = loc["overall"]["miou_per_image"].as_f64().unwrap();
    assert!(miou > 0.45 && miou < 0.5, "mIoU {miou}");

    // Scoring the written masks again through `legion eval` gives the same numbers.
    let eval_json = dir.path().join("again.json");
    let out = legion()
        .args(["eval", "--gt"])
        .arg(tiny_data())
        .arg("--masks")
        .arg(dir.path().join("all-background"))
        .args(["--method", "again", "--format", "md", "--out"])
        .arg(&eval_json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&eval_json).unwrap()).unwrap();
    assert_eq!(again["localization"]["overall"], loc["overall"]);

    let out = legion()
        .arg("tables")
        .arg(dir.path().join("all-background.json"))
        .arg(&eval_json)
        .args(["--format", "tex"])
        .output()
        .unwrap();
    let tex = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && tex.contains("\\begin{tabular}"),
        "{tex}"
    );
}

#[test]
fn bad_dataset_is_a_clear_error() {
    let out = legion()
        .args(["data", "check", "/nonexistent/dataset"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train/annotations/train.json"), "{err}");
}

#[test]
fn explanations_are_scored_with_rouge_and_css() {
    // Perfect explanations (the GT captions) score ROUGE-L 1 and CSS 1; a wrong one scores less.
    let dir = tempfile::tempdir().unwrap();
    let records: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tiny_data().join("test/annotations/test.json")).unwrap(),
    )
    .unwrap();
    let mut lines = String::new();
    for (i, record) in records.as_array().unwrap().iter().enumerate() {
        let body = record.as_object().unwrap().values().next().unwrap();
        let text = if i == 0 {
            "a cat sat on the mat".to_string()
        } else {
            body["caption"].as_str().unwrap().to_string()
        };
        lines.push_str(
            &serde_json::json!({"image": body["img_file_name"], "explanation": text}).to_string(),
        );
        lines.push('\n');
    }
    let preds = dir.path().join("explanations.jsonl");
    std::fs::write(&preds, lines).unwrap();
    let encoder = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../legion-text-embed/tests/fixtures/tiny_sbert");
    let report_path = dir.path().join("report.json");
    let out = legion()
        .args(["eval", "--gt"])
        .arg(tiny_data())
        .arg("--explanations")
        .arg(&preds)
        .arg("--encoder")
        .arg(&encoder)
        .arg("--out")
        .arg(&report_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let images = report["explanation"]["images"].as_array().unwrap();
    assert!(images[0]["rouge_l"].as_f64().unwrap() < 0.5);
    for image in &images[1..] {
        assert!((image["rouge_l"].as_f64().unwrap() - 1.0).abs() < 1e-12);
        assert!(
            (image["css"].as_f64().unwrap() - 1.0).abs() < 1e-5,
            "{image}"
        );
    }
    assert!(
        report["explanation"]["encoder"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "encoder recorded"
    );
}
