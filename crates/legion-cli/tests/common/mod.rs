//! Helpers shared by the CLI end-to-end tests: the shipped tiny data, a scripted bundle, the
//! `legion` binary, short training runs and their logs.
// Each test binary uses a subset of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use legion_infer::testing::scripted_bundle;

pub fn tiny_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/synthscars-tiny")
}

pub fn test_image(k: usize) -> PathBuf {
    tiny_data().join(format!("test/images/test_{k:05}.png"))
}

/// A bundle with random CLIP/SAM and an LLM scripted to name one artifact, saved in `dir`.
pub fn bundle(dir: &Path) -> PathBuf {
    let device = burn::tensor::Device::flex();
    let target = dir.join("model");
    scripted_bundle(&device, 7).unwrap().save(&target).unwrap();
    target
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `legion` binary, run from the repository root.
pub fn legion() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_legion"));
    command.current_dir(repo());
    command
}

/// `path` as a TOML string, for `--set`.
pub fn quoted(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// A short tiny run on one CPU device (whatever configs/tiny.toml's device plan): no warmup,
/// batch 2, no evaluation, a checkpoint every step.
pub fn short_run(out: &Path, steps: u64, extra: &[&str]) -> Command {
    let mut command = legion();
    command.args(["train", "--config", "configs/tiny.toml"]);
    for set in [
        format!("run.out_dir={}", quoted(out)),
        format!("run.steps={steps}"),
        "run.batch_size=2".into(),
        "run.evaluate=false".into(),
        "run.checkpoint_every=1".into(),
        "run.keep_checkpoints=50".into(),
        "run.validate_every=0".into(),
        "optim.warmup_steps=0".into(),
        "run.devices=[\"cpu\"]".into(),
    ] {
        command.args(["--set", &set]);
    }
    for set in extra {
        command.args(["--set", set]);
    }
    command
}

/// stdout and stderr of a run that must have succeeded.
pub fn check(output: &Output) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "legion failed:\n{text}");
    text
}

/// `(step, loss)` of every train line of a run's metrics log.
pub fn train_losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let train = v.get("train")?;
            Some((train["step"].as_u64()?, train["loss"].as_f64()?))
        })
        .collect()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The `summary.json` a run (`legion train`, `legion refine`) wrote into `out`.
pub fn run_summary(out: &Path) -> serde_json::Value {
    let path = out.join("summary.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
