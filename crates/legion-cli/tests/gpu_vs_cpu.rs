//! The GPU code path (burn's CubeCL kernels, on wgpu or cuda) against the f32 CPU reference, end
//! to end through the `legion` binary: a short tiny training run (every step's loss and the
//! final weights), a checkpoint written on one backend and resumed on the other, and `infer`
//! masks in f32 and f16. Compiled with the `wgpu` or `cuda` feature only. CI runs it on Mesa's
//! lavapipe (a Vulkan implementation on the CPU) through the `wgpu:cpu` device; on a machine
//! with a GPU, `LEGION_TEST_DEVICE=wgpu` or `cuda:0` points it at the real one
//! (`scripts/gpu_acceptance.sh`).
#![cfg(any(feature = "wgpu", feature = "cuda"))]

mod common;

use std::path::Path;

use common::{bundle, check, copy_dir, legion, quoted, short_run, tiny_data, train_losses};
use legion_backend::Device;
use legion_model::bundle::ModelBundle;
use legion_train::compare::{max_abs_difference, relative_l2_difference};

/// The GPU-style device under test: `LEGION_TEST_DEVICE` when it names one, otherwise wgpu's
/// software adapter (the only one on a machine without a GPU) or, in a cuda-only build,
/// `cuda:0`.
fn gpu() -> String {
    std::env::var(legion_backend::TEST_DEVICE_VAR)
        .ok()
        .filter(|spec| !legion_backend::testing_on_cpu() && !spec.is_empty())
        .unwrap_or_else(|| {
            if cfg!(feature = "wgpu") {
                "wgpu:cpu".into()
            } else {
                "cuda:0".into()
            }
        })
}

const STEPS: u64 = 4;

/// A tiny run of `steps` steps on `device` from the bundle `init` (random weights without):
/// batch 2, no warmup, no evaluation, a checkpoint every step.
fn train(out: &Path, device: &str, steps: u64, init: Option<&Path>, resume: bool) -> String {
    let init = init.map(|init| format!("model.init={}", quoted(init)));
    let extra: Vec<&str> = init.iter().map(String::as_str).collect();
    let mut command = short_run(out, steps, &extra);
    command.args(["--devices", device]);
    if resume {
        command.arg("--resume");
    }
    check(&command.output().unwrap())
}

fn final_weights(out: &Path) -> ModelBundle {
    ModelBundle::load(&out.join("final"), &Device::flex()).expect("final bundle loads strictly")
}

/// A copy of a finished run rewound to its checkpoint after `step`, as if the run had been
/// killed there: later checkpoints and the final bundle are gone.
fn rewound_copy(run: &Path, to: &Path, step: u64) {
    copy_dir(run, to);
    std::fs::remove_dir_all(to.join("final")).unwrap();
    let checkpoints = to.join("checkpoints");
    let mut kept = None;
    for entry in std::fs::read_dir(&checkpoints).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix("step-")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if n > step {
            std::fs::remove_dir_all(checkpoints.join(&name)).unwrap();
        } else if n == step {
            kept = Some(name);
        }
    }
    let kept = kept.unwrap_or_else(|| panic!("no checkpoint of step {step} in {}", run.display()));
    std::fs::write(checkpoints.join("latest"), kept).unwrap();
}

/// Largest relative difference between two loss logs of the same steps.
fn loss_gap(a: &[(u64, f64)], b: &[(u64, f64)]) -> f64 {
    assert_eq!(
        a.iter().map(|&(s, _)| s).collect::<Vec<_>>(),
        b.iter().map(|&(s, _)| s).collect::<Vec<_>>(),
        "both logs have the same steps"
    );
    a.iter()
        .zip(b)
        .map(|(&(_, x), &(_, y))| (x - y).abs() / x.abs().max(1e-6))
        .fold(0.0, f64::max)
}

/// `||a - b|| / ||a||` over all the weights of two bundles.
fn relative_l2(a: &ModelBundle, b: &ModelBundle) -> f64 {
    relative_l2_difference(&a.model, &b.model).unwrap()
}

/// Tolerances, measured on lavapipe (see the README, "GPU builds"): the backends differ only in
/// float summation order. Weights are compared as relative L2 over the whole model: Adam moves
/// every weight by ~lr per step whatever its gradient's size, so a near-zero gradient whose sign
/// flips with the summation order moves that one weight the other way.
const LOSS_RELATIVE: f64 = 1e-4;
const WEIGHTS_RELATIVE: f64 = 1e-3;

#[test]
fn tiny_training_on_wgpu_follows_the_cpu_and_resumes_across_backends() {
    let dir = tempfile::tempdir().unwrap();
    let (cpu_run, gpu_run) = (dir.path().join("cpu"), dir.path().join("gpu"));
    // Both backends start from the same weights: random initialisation draws from each
    // device's own generator.
    let start = dir.path().join("start");
    train(&start, "cpu", 1, None, false);
    let init = start.join("final");
    train(&cpu_run, "cpu", STEPS, Some(&init), false);
    let text = train(&gpu_run, &gpu(), STEPS, Some(&init), false);
    for probe in ["XDG_RUNTIME_DIR", "eglInitialize"] {
        assert!(
            !text.contains(probe),
            "a headless display probe reached the user's log:\n{text}"
        );
    }
    let (cpu_losses, gpu_losses) = (train_losses(&cpu_run), train_losses(&gpu_run));
    assert_eq!(cpu_losses.len() as u64, STEPS);
    let gap = loss_gap(&cpu_losses, &gpu_losses);
    let (cpu_final, gpu_final) = (final_weights(&cpu_run), final_weights(&gpu_run));
    let (max_diff, at) = max_abs_difference(&cpu_final.model, &gpu_final.model).unwrap();
    let relative = relative_l2(&cpu_final, &gpu_final);
    let moved = relative_l2(&final_weights(&start), &cpu_final);
    println!(
        "wgpu vs cpu over {STEPS} steps: loss {gap:.2e} relative, weights {relative:.2e} \
         relative L2 (max {max_diff:.2e} at {at}); training moved them {moved:.2e}"
    );
    assert!(
        gap <= LOSS_RELATIVE,
        "losses {cpu_losses:?} vs {gpu_losses:?}"
    );
    assert!(relative <= WEIGHTS_RELATIVE, "weights differ by {relative}");
    assert!(
        moved > 10.0 * relative,
        "training moved the weights by only {moved}"
    );

    // A CPU checkpoint resumed on the GPU, and the other way round, end where the uninterrupted
    // run ends.
    for (run, other, finish_on) in [
        (&cpu_run, &cpu_final, gpu()),
        (&gpu_run, &gpu_final, "cpu".to_string()),
    ] {
        let resumed = dir
            .path()
            .join(format!("resumed-on-{}", finish_on.replace(':', "-")));
        rewound_copy(run, &resumed, STEPS / 2);
        let text = train(&resumed, &finish_on, STEPS, Some(&init), true);
        assert!(text.contains("resumed from"), "{text}");
        let relative = relative_l2(other, &final_weights(&resumed));
        let gap = loss_gap(&train_losses(run), &train_losses(&resumed));
        println!(
            "resumed on {finish_on}: loss {gap:.2e} relative, weights {relative:.2e} relative L2"
        );
        assert!(
            gap <= LOSS_RELATIVE && relative <= WEIGHTS_RELATIVE,
            "resumed on {finish_on}: loss {gap}, weights {relative}"
        );
    }
}

/// Runs `infer` with a model on `device`, returns the predicted masks (name -> pixels).
fn infer_masks(model: &Path, out: &Path, device: &str, dtype: &str) -> Vec<(String, Vec<u8>)> {
    check(
        &legion()
            .arg("infer")
            .arg("--data")
            .arg(tiny_data())
            .arg("--checkpoint")
            .arg(model)
            .arg("--out")
            .arg(out)
            .args(["--device", device, "--dtype", dtype])
            .args(["--batch-size", "8", "--max-new-tokens", "32"])
            .output()
            .unwrap(),
    );
    let mut masks: Vec<(String, Vec<u8>)> = std::fs::read_dir(out.join("masks"))
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let pixels = image::open(&path).unwrap().to_luma8().into_raw();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                pixels,
            )
        })
        .collect();
    masks.sort();
    masks
}

/// Mask pixels that differ between two runs over the same images, and the pixels compared.
fn differing_pixels(a: &[(String, Vec<u8>)], b: &[(String, Vec<u8>)]) -> (usize, usize) {
    assert_eq!(
        a.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        b.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    a.iter()
        .zip(b)
        .fold((0, 0), |(diff, all), ((_, x), (_, y))| {
            assert_eq!(x.len(), y.len());
            (
                diff + x
                    .iter()
                    .zip(y)
                    .filter(|(p, q)| (**p > 0) != (**q > 0))
                    .count(),
                all + x.len(),
            )
        })
}

/// `infer` on wgpu gives the CPU's masks: in f32 up to a few pixels on mask borders (the random
/// SAM's logits sit near 0 there); in f16 (lavapipe has `shaderFloat16`; WGSL has no bf16)
/// within the spread the CPU's own f16 run shows.
#[test]
fn infer_on_wgpu_gives_the_cpu_masks() {
    let dir = tempfile::tempdir().unwrap();
    let model = bundle(dir.path());
    let cpu = infer_masks(&model, &dir.path().join("cpu"), "cpu", "f32");
    let gpu_f32 = infer_masks(&model, &dir.path().join("gpu-f32"), &gpu(), "f32");
    let gpu_f16 = infer_masks(&model, &dir.path().join("gpu-f16"), &gpu(), "f16");
    let cpu_f16 = infer_masks(&model, &dir.path().join("cpu-f16"), "cpu", "f16");
    let (f32_diff, all) = differing_pixels(&cpu, &gpu_f32);
    let (f16_diff, _) = differing_pixels(&cpu, &gpu_f16);
    let (cpu_f16_diff, _) = differing_pixels(&cpu, &cpu_f16);
    println!(
        "of {all} mask pixels, wgpu differs from cpu by {f32_diff} (f32) and {f16_diff} (f16); \
         cpu f16 differs from cpu f32 by {cpu_f16_diff}"
    );
    assert!(
        f32_diff as f64 <= 1e-4 * all as f64,
        "f32: {f32_diff} of {all} pixels differ"
    );
    assert!(
        f16_diff as f64 <= 1e-3 * all as f64 + 2.0 * cpu_f16_diff as f64,
        "f16: {f16_diff} of {all} pixels differ (cpu f16: {cpu_f16_diff})"
    );
}
