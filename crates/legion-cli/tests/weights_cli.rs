//! `legion convert` / `legion export` on the tiny LEGION fixture of legion-model
//! (`crates/legion-model/tests/fixtures/legion`, `scripts/fixtures/legion.py`) and its PEFT
//! adapter (`tests/fixtures/peft`, `scripts/fixtures/lora_adapters.py`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use legion_model::weights::{CheckpointSource, TopLevelKey};

fn legion() -> Command {
    Command::new(env!("CARGO_BIN_EXE_legion"))
}

fn model_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../legion-model/tests/fixtures")
}

fn run(command: &mut Command) -> Output {
    let out = command.output().expect("legion runs");
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Key -> (shape, raw bytes) of a safetensors file.
fn tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let source = CheckpointSource::resolve(path).unwrap();
    source
        .read_shard(0, &TopLevelKey::Auto)
        .unwrap()
        .into_iter()
        .map(|t| {
            let bytes = t.to_bytes().unwrap().to_vec();
            (t.name.clone(), (t.shape.to_vec(), bytes))
        })
        .collect()
}

#[test]
fn convert_with_adapter_then_export_gives_the_merged_glamm_file() {
    let tmp = tempfile::tempdir().unwrap();
    let native = tmp.path().join("native");
    let original = model_fixtures().join("legion/legion_tiny.safetensors");
    let out = run(legion()
        .arg("convert")
        .arg(&original)
        .arg("--out")
        .arg(&native)
        .args(["--preset", "fixture", "--no-tokenizer"])
        .arg("--adapter")
        .arg(model_fixtures().join("peft/legion_adapter")));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("merged 4 LoRA pairs and replaced 4 tensors"),
        "{stderr}"
    );
    assert!(native.join("model.bpk").is_file() && native.join("config.json").is_file());

    let exported = tmp.path().join("legion.safetensors");
    let out = run(legion()
        .arg("export")
        .arg(&native)
        .arg("--out")
        .arg(&exported));
    assert!(out.status.success());
    // Again without --force: refused.
    let out = run(legion()
        .arg("export")
        .arg(&native)
        .arg("--out")
        .arg(&exported));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));

    // The export = the original file with the adapter's merged tensors, minus region_encoder.
    let mut expected = tensors(&original);
    expected.remove("model.region_encoder.mlvl_fuse.0.weight");
    let merged = tensors(&model_fixtures().join("peft/legion_merged.safetensors"));
    let got = tensors(&exported);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (key, (shape, bytes)) in &got {
        match merged.get(key) {
            // Merged q/v weights: f32 sums in another order than PyTorch, so compare values.
            Some((want_shape, want)) if key.contains("_proj") => {
                assert_eq!(shape, want_shape);
                let err = f32s(bytes)
                    .zip(f32s(want))
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(err <= 1e-6, "{key}: {err}");
            }
            Some(want) => assert!((shape, bytes) == (&want.0, &want.1), "{key}"),
            None => assert!(
                (shape, bytes) == (&expected[key].0, &expected[key].1),
                "{key}"
            ),
        }
    }
}

fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

#[test]
fn convert_copies_the_tokenizer_and_refuses_sentencepiece_only() {
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = tmp.path().join("glamm");
    std::fs::create_dir_all(&checkpoint).unwrap();
    std::fs::copy(
        model_fixtures().join("legion/legion_tiny.safetensors"),
        checkpoint.join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(checkpoint.join("tokenizer.model"), b"sentencepiece").unwrap();
    let native = tmp.path().join("native");
    let convert = || {
        let mut command = legion();
        command
            .arg("convert")
            .arg(&checkpoint)
            .arg("--out")
            .arg(&native)
            .args(["--preset", "fixture"]);
        command
    };
    let out = run(&mut convert());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tokenizer.model") && stderr.contains("scripts/convert_tokenizer.py"),
        "{stderr}"
    );
    assert!(
        !native.exists(),
        "nothing written before the tokenizer check"
    );

    std::fs::copy(
        model_fixtures().join("tokenizer/tokenizer.json"),
        checkpoint.join("tokenizer.json"),
    )
    .unwrap();
    let out = run(&mut convert());
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(native.join("tokenizer.json")).unwrap(),
        std::fs::read(checkpoint.join("tokenizer.json")).unwrap()
    );
    // A checkpoint of another size is a strict-loading error naming the file.
    let out = run(legion()
        .arg("convert")
        .arg(&checkpoint)
        .arg("--out")
        .arg(tmp.path().join("other"))
        .args(["--preset", "tiny", "--no-tokenizer"]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("do not match the model") && stderr.contains("shape mismatch"),
        "{stderr}"
    );
}
