//! The streaming converter (`convert_glamm_to_native`, what `legion convert` runs) against the
//! in-memory path it replaces (`load_glamm_with` [+ `merge_peft_adapter`] + `save_native`), on
//! the tiny LEGION of `tests/fixtures/legion` (`scripts/fixtures/legion.py`) and its PEFT
//! adapter (`scripts/fixtures/lora_adapters.py`): the same tensors (names, dtypes, shapes,
//! bytes), the same errors, and a folder `load_native` reads back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::store::{BurnpackStore, ModuleStore, bridge};
use burn::tensor::{Device, FloatDType};
use legion_model::legion::{
    ClipWeights, ConvertRequest, ExportOptions, Legion, LegionConfig, LegionError,
    LegionParamCount, convert_glamm_to_native, export_glamm_safetensors, load_native, save_native,
};
use legion_model::weights::{Allowances, FloatDTypePolicy, LoadOptions, WeightsError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

/// Every tensor of a native `.bpk`: dtype, shape and raw bytes, by name.
fn bpk_tensors(dir: &Path) -> Tensors {
    let mut store = BurnpackStore::from_file(dir.join("model.bpk"));
    store
        .get_all_tensors()
        .unwrap()
        .iter()
        .map(|(name, t)| {
            let data = bridge::to_data(t).unwrap();
            (
                name.clone(),
                (
                    format!("{:?}", data.dtype()),
                    data.shape().to_vec(),
                    data.bytes().to_vec(),
                ),
            )
        })
        .collect()
}

struct Case<'a> {
    clip: ClipWeights<'a>,
    adapter: Option<PathBuf>,
    dtype: FloatDTypePolicy,
}

/// The in-memory path: load, merge, save.
fn in_memory(case: &Case<'_>, checkpoint: &Path, out: &Path) -> Result<(), String> {
    let options = LoadOptions {
        float_dtype: case.dtype,
        ..LoadOptions::default()
    };
    let model = LegionConfig::fixture().init(&Device::flex()).unwrap();
    let (mut model, _) = model
        .load_glamm_with(checkpoint, case.clip, &Allowances::strict(), &options)
        .map_err(|e| e.to_string())?;
    if let Some(adapter) = &case.adapter {
        model = model
            .merge_peft_adapter(adapter, &options)
            .map_err(|e| e.to_string())?
            .0;
    }
    save_native(
        &model,
        &LegionConfig::fixture(),
        out,
        &BTreeMap::new(),
        false,
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

fn streamed(case: &Case<'_>, checkpoint: &Path, out: &Path) -> Result<(), String> {
    let request = ConvertRequest {
        checkpoint,
        clip: case.clip,
        adapter: case.adapter.as_deref(),
        allow: &Allowances::strict(),
        options: LoadOptions {
            float_dtype: case.dtype,
            ..LoadOptions::default()
        },
        out,
        metadata: &BTreeMap::new(),
        overwrite: false,
        progress: None,
    };
    convert_glamm_to_native(&LegionConfig::fixture(), &request)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn streamed_folders_equal_the_in_memory_ones_tensor_for_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = fixtures().join("legion/legion_tiny.safetensors");
    let clip = fixtures().join("legion/clip_hf.safetensors");
    let cases = [
        (
            "f32",
            Case {
                clip: ClipWeights::InCheckpoint,
                adapter: None,
                dtype: FloatDTypePolicy::Module,
            },
        ),
        (
            "bf16",
            Case {
                clip: ClipWeights::InCheckpoint,
                adapter: None,
                dtype: FloatDTypePolicy::Cast(FloatDType::BF16),
            },
        ),
        (
            "clip-file-f16",
            Case {
                clip: ClipWeights::HfFile(&clip),
                adapter: None,
                dtype: FloatDTypePolicy::Cast(FloatDType::F16),
            },
        ),
        (
            "adapter",
            Case {
                clip: ClipWeights::InCheckpoint,
                adapter: Some(fixtures().join("peft/legion_adapter")),
                dtype: FloatDTypePolicy::Module,
            },
        ),
        (
            "adapter-bf16",
            Case {
                clip: ClipWeights::HfFile(&clip),
                adapter: Some(fixtures().join("peft/legion_adapter")),
                dtype: FloatDTypePolicy::Cast(FloatDType::BF16),
            },
        ),
    ];
    for (name, case) in &cases {
        let (memory_dir, stream_dir) = (
            tmp.path().join(format!("{name}-memory")),
            tmp.path().join(format!("{name}-stream")),
        );
        in_memory(case, &checkpoint, &memory_dir).unwrap();
        streamed(case, &checkpoint, &stream_dir).unwrap();
        let (want, got) = (bpk_tensors(&memory_dir), bpk_tensors(&stream_dir));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (key, tensor) in &got {
            assert!(tensor == &want[key], "{name}: {key} differs");
        }
        assert_eq!(
            std::fs::read_to_string(stream_dir.join("config.json")).unwrap(),
            std::fs::read_to_string(memory_dir.join("config.json")).unwrap()
        );
        // A native folder like any other.
        load_native(&stream_dir, &Device::flex(), FloatDTypePolicy::KeepFile).unwrap();
        eprintln!("{name}: {} tensors equal", got.len());
    }
}

#[test]
fn streamed_errors_are_the_loaders_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let case = Case {
        clip: ClipWeights::InCheckpoint,
        adapter: None,
        dtype: FloatDTypePolicy::Module,
    };
    // Another model's file: everything missing, everything unexpected, with the hint.
    let wrong = fixtures().join("legion/clip_hf.safetensors");
    let want = in_memory(&case, &wrong, &tmp.path().join("memory")).unwrap_err();
    let got = streamed(&case, &wrong, &tmp.path().join("stream")).unwrap_err();
    assert_eq!(got, want);
    assert!(got.contains("do not match the model"), "{got}");
    assert!(!tmp.path().join("stream/model.bpk").exists());

    // An adapter that does not fit (the fixture's broken one).
    let case = Case {
        adapter: Some(fixtures().join("peft/bad_adapter")),
        ..case
    };
    let checkpoint = fixtures().join("legion/legion_tiny.safetensors");
    let got = streamed(&case, &checkpoint, &tmp.path().join("bad")).unwrap_err();
    eprintln!("{got}");
    assert!(
        got.contains("bad_adapter/adapter_model.safetensors"),
        "{got}"
    );
    assert!(!tmp.path().join("bad/model.bpk").exists());
}

#[test]
fn allowed_missing_tensors_are_written_with_their_initial_values() {
    let tmp = tempfile::tempdir().unwrap();
    // A merged GLaMM file without its vision tower (as `merge_lora_weights.py` writes them).
    let checkpoint = fixtures().join("legion/legion_tiny.safetensors");
    let model = LegionConfig::fixture()
        .init(&Device::flex())
        .unwrap()
        .load_glamm(&checkpoint, ClipWeights::InCheckpoint)
        .unwrap();
    let no_tower = tmp.path().join("no_tower.safetensors");
    let options = ExportOptions {
        skip_vision_tower: true,
        ..ExportOptions::default()
    };
    export_glamm_safetensors(&model, &no_tower, &options).unwrap();

    let out = tmp.path().join("native");
    let allow = Allowances::from_patterns(&[r"^vision_tower\."], &[] as &[&str]).unwrap();
    let request = ConvertRequest {
        checkpoint: &no_tower,
        clip: ClipWeights::InCheckpoint,
        adapter: None,
        allow: &allow,
        options: LoadOptions::default(),
        out: &out,
        metadata: &BTreeMap::new(),
        overwrite: false,
        progress: None,
    };
    let report = convert_glamm_to_native(&LegionConfig::fixture(), &request).unwrap();
    assert!(
        !report.load.allowed_missing.is_empty()
            && report
                .load
                .allowed_missing
                .iter()
                .all(|p| p.starts_with("vision_tower.")),
        "{:?}",
        report.load.allowed_missing
    );
    let (back, _) = load_native(&out, &Device::flex(), FloatDTypePolicy::KeepFile).unwrap();
    assert_eq!(LegionParamCount::of(&back).total(), report.parameters);
    // Everything but the tower is the checkpoint's; the tower is there, at its init.
    let (want, got) = (bpk_tensors_of(&model), bpk_tensors(&out));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (key, (dtype, shape, bytes)) in &got {
        let (want_dtype, want_shape, want_bytes) = &want[key];
        assert_eq!((dtype, shape), (want_dtype, want_shape), "{key}");
        assert_eq!(
            bytes == want_bytes,
            !key.starts_with("vision_tower."),
            "{key}"
        );
    }

    // Again without overwrite: refused before anything is read, naming the file.
    let err = convert_glamm_to_native(&LegionConfig::fixture(), &request).unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");
    assert!(matches!(
        err,
        LegionError::Weights(WeightsError::Source { .. })
    ));
}

/// [`bpk_tensors`] of a model saved in memory.
fn bpk_tensors_of(model: &Legion) -> Tensors {
    let dir = tempfile::tempdir().unwrap();
    save_native(
        model,
        &LegionConfig::fixture(),
        dir.path(),
        &BTreeMap::new(),
        false,
    )
    .unwrap();
    bpk_tensors(dir.path())
}
