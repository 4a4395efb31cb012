//! End-to-end runs of `legion analyze`, `infer` (scored by `legion eval`), `detect` and
//! `refine` on tiny bundles made in code (`legion_infer::testing`: a scripted LLM that always
//! names one artifact, random CLIP/SAM) and the shipped tiny data. The analysis report is
//! opened in a real headless Chromium, which must decode every inlined image.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use legion_infer::AnalysisRecord;
use legion_infer::testing::{SCRIPTED_EXPLANATION, SCRIPTED_PHRASE};

mod common;
use common::{bundle, copy_dir, run_summary, test_image, tiny_data};

fn legion() -> Command {
    Command::new(env!("CARGO_BIN_EXE_legion"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn analyze_writes_json_overlays_and_a_report_that_renders_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let model = bundle(dir.path());
    let out = dir.path().join("analysis");
    let html = out.join("report.html");
    let stdout = run_ok(
        legion()
            .arg("analyze")
            .arg(test_image(0))
            .arg(test_image(1))
            .arg("--checkpoint")
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .arg("--html")
            .arg(&html)
            .args(["--batch-size", "2", "--max-new-tokens", "32"]),
    );
    assert!(
        stdout.contains(&format!("1. {SCRIPTED_PHRASE}")),
        "{stdout}"
    );
    assert!(stdout.contains(SCRIPTED_EXPLANATION), "{stdout}");
    for k in 0..2 {
        let stem = format!("test_{k:05}");
        let record: AnalysisRecord = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("{stem}.json"))).unwrap(),
        )
        .unwrap();
        let image = image::open(test_image(k)).unwrap();
        assert_eq!(
            (record.width, record.height),
            (image.width() as usize, image.height() as usize)
        );
        assert_eq!(record.artifacts.len(), 1);
        let artifact = &record.artifacts[0];
        let mask = artifact.mask();
        assert_eq!((mask.height(), mask.width()), (record.height, record.width));
        assert_eq!(mask.area() as u64, artifact.area);
        assert!(artifact.area > 0);
        let overlay = image::open(out.join(format!("{stem}.overlay.png"))).unwrap();
        assert!(overlay.height() > image.height());
    }
    check_report_in_browser(&html, 4);
}

/// Loads `html` in headless Chromium with a probe script that writes every `<img>`'s
/// `naturalWidth` into the DOM, and checks that `expected` images decoded to the widths of
/// the PNGs inlined in the file.
fn check_report_in_browser(html: &Path, expected: usize) {
    let candidates = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ];
    let browser = std::env::var("LEGION_CHROMIUM").ok().or_else(|| {
        candidates
            .iter()
            .find(|c| {
                Command::new(c)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .map(|c| c.to_string())
    });
    let Some(browser) = browser else {
        panic!(
            "no headless browser found (tried {candidates:?} and $LEGION_CHROMIUM). This test \
             checks the HTML report in a real browser and does not skip: install Chromium \
             (Debian: `apt-get install -y --no-install-recommends chromium`; .ci/run does this) \
             or point LEGION_CHROMIUM at a Chrome/Chromium binary."
        )
    };
    let text = std::fs::read_to_string(html).unwrap();
    // The widths the browser must report: decode the inlined PNGs here.
    let b64 = base64::engine::general_purpose::STANDARD;
    let widths: Vec<u32> = text
        .split("src=\"data:image/png;base64,")
        .skip(1)
        .map(|rest| {
            let data = &rest[..rest.find('"').unwrap()];
            image::load_from_memory(&b64.decode(data).unwrap())
                .unwrap()
                .width()
        })
        .collect();
    assert_eq!(widths.len(), expected);
    let probe = "<script>window.addEventListener('load', () => { const p = document.createElement('pre'); \
                 p.id = 'probe'; p.textContent = JSON.stringify([...document.images].map(i => i.complete ? i.naturalWidth : -1)); \
                 document.body.appendChild(p); });</script>";
    let probed = html.with_file_name("probed.html");
    std::fs::write(&probed, text.replace("</body>", &format!("{probe}</body>"))).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!(
            "file://{}",
            probed.canonicalize().unwrap().display()
        ))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find("<pre id=\"probe\">").unwrap_or_else(|| {
        panic!(
            "{browser} did not run the probe:\n{dom}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    }) + "<pre id=\"probe\">".len();
    let end = start + dom[start..].find("</pre>").unwrap();
    let rendered: Vec<i64> = serde_json::from_str(&dom[start..end]).unwrap();
    let expected_widths: Vec<i64> = widths.iter().map(|&w| i64::from(w)).collect();
    assert_eq!(
        rendered, expected_widths,
        "naturalWidth of every <img> in {browser}"
    );
}

#[test]
fn infer_output_is_scored_by_legion_eval() {
    let dir = tempfile::tempdir().unwrap();
    let model = bundle(dir.path());
    let pred = dir.path().join("pred");
    let stdout = run_ok(
        legion()
            .arg("infer")
            .arg("--data")
            .arg(tiny_data())
            .arg("--checkpoint")
            .arg(&model)
            .arg("--out")
            .arg(&pred)
            .args(["--batch-size", "8", "--max-new-tokens", "32"]),
    );
    assert!(
        stdout.contains("40 images: 40 analysed, 0 already done, 0 failed"),
        "{stdout}"
    );
    // A second run resumes and has nothing left to do.
    let again = run_ok(
        legion()
            .arg("infer")
            .arg("--data")
            .arg(tiny_data())
            .arg("--checkpoint")
            .arg(&model)
            .arg("--out")
            .arg(&pred),
    );
    assert!(again.contains("0 analysed, 40 already done"), "{again}");
    let report = eval_report(&pred);
    let overall = &report["localization"]["overall"];
    assert_eq!(overall["images"], 40);
    assert_eq!(overall["missing_predictions"], 0);
    let miou = overall["miou_per_image"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&miou), "{miou}");
    assert!(report["explanation"].is_object(), "{report}");
}

/// Runs `infer` on the test split with `extra` flags and scores it: (mIoU, F1) per image.
fn infer_and_score(model: &Path, out: &Path, extra: &[&str]) -> (f64, f64) {
    run_ok(
        legion()
            .arg("infer")
            .arg("--data")
            .arg(tiny_data())
            .arg("--checkpoint")
            .arg(model)
            .arg("--out")
            .arg(out)
            .args(["--batch-size", "8", "--max-new-tokens", "32"])
            .args(extra),
    );
    let report = eval_report(out);
    let overall = &report["localization"]["overall"];
    (
        overall["miou_per_image"].as_f64().unwrap(),
        overall["f1_per_image"].as_f64().unwrap(),
    )
}

/// `legion eval` of an `infer` output folder against the tiny test split: the JSON report.
fn eval_report(pred: &Path) -> serde_json::Value {
    let report = pred.join("report.json");
    run_ok(
        legion()
            .args(["eval", "--gt"])
            .arg(tiny_data())
            .arg("--masks")
            .arg(pred.join("masks"))
            .arg("--explanations")
            .arg(pred.join("explanations.jsonl"))
            .arg("--out")
            .arg(&report),
    );
    serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
}

/// `legion infer --perturb` (JPEG 50, noise 25.5, blur 5 and clean) on the tiny test split,
/// each scored by `legion eval` (which carries the perturbation into its report), then `legion
/// tables --kind robustness` lays the four reports out as rows with their mIoU/F1 and the change
/// from the clean row.
#[test]
fn perturbed_infer_runs_make_the_robustness_table() {
    let dir = tempfile::tempdir().unwrap();
    let model = bundle(dir.path());
    let runs: [(&str, &[&str], &str); 4] = [
        ("clean", &[], "none"),
        ("jpeg", &["--perturb", "jpeg:50"], "jpeg:50"),
        (
            "noise",
            &["--perturb", "noise:25.5", "--perturb-seed", "1"],
            "noise:25.5",
        ),
        ("blur", &["--perturb", "blur:5"], "blur:5"),
    ];
    let mut reports = Vec::new();
    let mut scores = Vec::new();
    for (name, flags, spec) in runs {
        let pred = dir.path().join(name);
        run_ok(
            legion()
                .arg("infer")
                .arg("--data")
                .arg(tiny_data())
                .arg("--checkpoint")
                .arg(&model)
                .arg("--out")
                .arg(&pred)
                .args(["--batch-size", "8", "--max-new-tokens", "32"])
                .args(flags),
        );
        let report = dir.path().join(format!("{name}.json"));
        run_ok(
            legion()
                .args(["eval", "--method", "tiny", "--gt"])
                .arg(tiny_data())
                .arg("--masks")
                .arg(pred.join("masks"))
                .arg("--out")
                .arg(&report),
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(json["perturbation"]["spec"], spec, "{json}");
        let overall = &json["localization"]["overall"];
        scores.push((
            overall["miou_per_image"].as_f64().unwrap() * 100.0,
            overall["f1_per_image"].as_f64().unwrap() * 100.0,
        ));
        reports.push(report);
    }
    let noise_report = std::fs::read_to_string(dir.path().join("noise.json")).unwrap();
    assert!(noise_report.contains("\"seed\": 1"), "{noise_report}");
    let csv = run_ok(
        legion()
            .args(["tables", "--kind", "robustness", "--format", "csv"])
            .args(&reports),
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0], "method,mIoU,F1,mIoU vs clean,F1 vs clean",
        "{csv}"
    );
    let labels = [
        "tiny (clean)",
        "tiny (jpeg:50)",
        "tiny (noise:25.5 seed=1)",
        "tiny (blur:5)",
    ];
    for (k, label) in labels.iter().enumerate() {
        let cells: Vec<&str> = lines[k + 1].split(',').collect();
        assert_eq!(cells[0], *label, "{csv}");
        let value = |i: usize| cells[i].parse::<f64>().unwrap();
        let (miou, f1) = scores[k];
        assert!(
            (value(1) - miou).abs() < 1e-9 && (value(2) - f1).abs() < 1e-9,
            "{csv}"
        );
        assert!((value(3) - (miou - scores[0].0)).abs() < 1e-9, "{csv}");
        assert!((value(4) - (f1 - scores[0].1)).abs() < 1e-9, "{csv}");
    }
    let md = run_ok(
        legion()
            .args(["tables", "--kind", "robustness", "--format", "md"])
            .args(&reports),
    );
    assert!(md.contains("| tiny (jpeg:50) |"), "{md}");
    assert!(
        md.contains("blur:5: Gaussian blur, kernel 5x5, sigma 1.10"),
        "{md}"
    );

    // Bad specs are refused before the model loads, naming the flag and the value.
    for (spec, reason) in [
        ("jpeg:abc", "not an integer"),
        ("blur:4", "odd"),
        ("noise:-2", "> 0"),
    ] {
        let out = legion()
            .arg("infer")
            .arg("--data")
            .arg(tiny_data())
            .arg("--checkpoint")
            .arg(dir.path().join("no-such-model"))
            .arg("--out")
            .arg(dir.path().join("bad"))
            .args(["--perturb", spec])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {stderr}");
        assert!(
            stderr.contains("--perturb") && stderr.contains(spec) && stderr.contains(reason),
            "{spec}: {stderr}"
        );
    }
}

/// `legion convert --dtype bf16|f16` (of the f32 bundle's GLaMM export) gives bundles that
/// `infer` runs in half precision and `eval` scores close to the f32 bundle on the 40 test
/// images: mIoU within 0.01, per-image F1 within 2/40 (the scripted bundle's random SAM gives
/// logits near 0, so rounding flips a few pixels, and one image's F1 moves the mean by up to
/// 1/40); `--dtype f32` runs a half-precision bundle upcast.
#[test]
fn half_precision_bundles_infer_and_score_like_f32() {
    let dir = tempfile::tempdir().unwrap();
    let model = bundle(dir.path());
    let exported = dir.path().join("legion.safetensors");
    run_ok(
        legion()
            .arg("export")
            .arg(&model)
            .arg("--out")
            .arg(&exported),
    );
    let (miou, f1) = infer_and_score(&model, &dir.path().join("pred-f32"), &[]);
    println!("f32: mIoU {miou:.4} F1 {f1:.4}");
    let close = |m: f64, f: f64| (m - miou).abs() <= 0.01 && (f - f1).abs() <= 2.0 / 40.0 + 1e-9;
    for dtype in ["bf16", "f16"] {
        let converted = dir.path().join(dtype);
        run_ok(
            legion()
                .arg("convert")
                .arg(&exported)
                .arg("--config")
                .arg(model.join("config.json"))
                .arg("--tokenizer")
                .arg(model.join("tokenizer.json"))
                .args(["--dtype", dtype])
                .arg("--out")
                .arg(&converted),
        );
        let (half_miou, half_f1) =
            infer_and_score(&converted, &dir.path().join(format!("pred-{dtype}")), &[]);
        println!("{dtype}: mIoU {half_miou:.4} F1 {half_f1:.4}");
        assert!(
            close(half_miou, half_f1),
            "{dtype}: {half_miou} / {half_f1} vs f32 {miou} / {f1}"
        );
    }
    let (up_miou, up_f1) = infer_and_score(
        &dir.path().join("bf16"),
        &dir.path().join("pred-up"),
        &["--dtype", "f32"],
    );
    println!("bf16 bundle run in f32: mIoU {up_miou:.4} F1 {up_f1:.4}");
    assert!(
        close(up_miou, up_f1),
        "{up_miou} / {up_f1} vs f32 {miou} / {f1}"
    );
}

#[test]
fn detect_writes_scores_that_legion_eval_reads() {
    let dir = tempfile::tempdir().unwrap();
    let device = burn::tensor::Device::flex();
    let det = dir.path().join("det");
    legion_infer::testing::tiny_detector(&device, 3)
        .unwrap()
        .save(&det)
        .unwrap();
    let scores = dir.path().join("scores.csv");
    run_ok(
        legion()
            .arg("detect")
            .arg(tiny_data().join("test/images"))
            .arg("--detector")
            .arg(&det)
            .args(["--label", "0", "--out"])
            .arg(&scores),
    );
    let text = std::fs::read_to_string(&scores).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "image,label,score,prediction");
    assert_eq!(lines.len(), 41);
    for line in &lines[1..] {
        let score: f64 = line.split(',').nth(2).unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&score), "{line}");
    }
    let report = dir.path().join("det.json");
    run_ok(
        legion()
            .args(["eval", "--gt"])
            .arg(tiny_data())
            .arg("--scores")
            .arg(&scores)
            .arg("--out")
            .arg(&report),
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(report["detection"].is_object(), "{report}");
}

#[test]
fn refine_records_every_round() {
    let dir = tempfile::tempdir().unwrap();
    let model = bundle(dir.path());
    let out = dir.path().join("refine");
    let stdout = run_ok(
        legion()
            .arg("refine")
            .arg(test_image(0))
            .arg("--checkpoint")
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .args(["--rounds", "2", "--dilate", "1", "--max-new-tokens", "32"])
            .args(["--scorer-cmd", "echo 0.5"]),
    );
    assert!(stdout.contains("stopped:"), "{stdout}");
    let summary = run_summary(&out);
    let rounds = summary["rounds"].as_array().unwrap();
    assert!(!rounds.is_empty());
    assert_eq!(rounds[0]["phrases"][0], SCRIPTED_PHRASE);
    assert_eq!(rounds[0]["external_score"], 0.5);
    for file in ["strip.png", "report.html", "final.png", "rounds.jsonl"] {
        assert!(out.join(file).is_file(), "{file}");
    }
}

#[test]
fn regenerate_records_every_round_with_the_rewritten_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let model = bundle(dir.path());
    let out = dir.path().join("regenerate");
    let stdout = run_ok(
        legion()
            .arg("regenerate")
            .args(["--prompt", "a quiet street"])
            .arg("--checkpoint")
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .args(["--rounds", "2", "--max-new-tokens", "32"])
            .arg("--t2i-cmd")
            .arg(format!("cp '{}' {{out}}", test_image(0).display())),
    );
    assert!(stdout.contains("stopped:"), "{stdout}");
    let summary = run_summary(&out);
    let rounds = summary["rounds"].as_array().unwrap();
    // The scripted model always reports its phrase, so both rounds run; the built-in rewriter
    // adds it to the prompt.
    assert_eq!(rounds.len(), 2);
    assert_eq!(rounds[0]["prompt"], "a quiet street");
    assert_eq!(
        rounds[1]["prompt"],
        format!("a quiet street, no {}", SCRIPTED_PHRASE.to_lowercase())
    );
    assert_eq!(summary["stop_reason"], "max_rounds");
    for file in ["strip.png", "report.html", "final.png", "rounds.jsonl"] {
        assert!(out.join(file).is_file(), "{file}");
    }
}

/// `infer --shard K/N` runs disjoint parts; `merge-shards` assembles them into exactly the
/// folder of an unsharded run (same explanations file, same mask bytes), so `legion eval`
/// gives the same numbers.
#[test]
fn sharded_infer_merges_into_exactly_the_unsharded_output() {
    let dir = tempfile::tempdir().unwrap();
    let model = bundle(dir.path());
    let infer = |out: &Path, extra: &[&str]| {
        run_ok(
            legion()
                .arg("infer")
                .arg("--data")
                .arg(tiny_data())
                .arg("--checkpoint")
                .arg(&model)
                .arg("--out")
                .arg(out)
                .args(["--batch-size", "4", "--max-new-tokens", "32"])
                .args(extra),
        )
    };
    let (whole, sharded) = (dir.path().join("whole"), dir.path().join("sharded"));
    infer(&whole, &[]);
    let mut counts = Vec::new();
    for k in 0..3 {
        let shard = format!("{k}/3");
        let stdout = infer(&sharded, &["--shard", &shard]);
        let n: usize = stdout
            .split(&format!("shard {shard}: "))
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{stdout}"));
        counts.push(n);
    }
    // 40 images in batches of 4: batches 0,3,6,9 / 1,4,7 / 2,5,8.
    assert_eq!(counts, vec![16, 12, 12]);
    // Merging before every shard is there reports the missing images and fails.
    let partial = dir.path().join("partial");
    copy_dir(
        &sharded.join("shards/0-of-3"),
        &partial.join("shards/0-of-3"),
    );
    let out = legion()
        .args(["merge-shards", "--data"])
        .arg(tiny_data())
        .arg("--out")
        .arg(&partial)
        .args(["--shards", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("16 of 40 images"));

    let merged = run_ok(
        legion()
            .args(["merge-shards", "--data"])
            .arg(tiny_data())
            .arg("--out")
            .arg(&sharded)
            .args(["--shards", "3"]),
    );
    assert!(
        merged.contains("merged 3 shards: 40 of 40 images"),
        "{merged}"
    );
    assert_eq!(
        std::fs::read_to_string(whole.join("explanations.jsonl")).unwrap(),
        std::fs::read_to_string(sharded.join("explanations.jsonl")).unwrap()
    );
    let mut masks = 0;
    for entry in std::fs::read_dir(whole.join("masks")).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            std::fs::read(entry.path()).unwrap(),
            std::fs::read(sharded.join("masks").join(entry.file_name())).unwrap(),
            "{:?}",
            entry.file_name()
        );
        masks += 1;
    }
    assert_eq!(masks, 40);
    // The same scores: the reports differ only in the prediction folders they name.
    let report = |pred: &Path| {
        eval_report(pred)
            .to_string()
            .replace(&pred.display().to_string(), "PRED")
    };
    assert_eq!(report(&whole), report(&sharded));
}
