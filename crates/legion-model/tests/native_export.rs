//! Round trips on the tiny LEGION of `tests/fixtures/legion` (made by
//! `scripts/fixtures/legion.py`): GLaMM checkpoint -> native folder -> GLaMM safetensors export
//! -> GLaMM load, every tensor compared bit for bit, and the export compared with the original
//! file key by key. (`scripts/check_export.py` does the last comparison in Python.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{ModuleSnapshot, ModuleStore, SafetensorsStore, bridge};
use burn::tensor::{Device, FloatDType};
use legion_model::legion::{
    ClipWeights, ExportOptions, Legion, LegionConfig, export_glamm_safetensors, load_native,
    save_native,
};
use legion_model::weights::{FloatDTypePolicy, WeightsError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legion")
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("legion_native_{tag}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn original(device: &Device) -> Legion {
    LegionConfig::fixture()
        .init(device)
        .unwrap()
        .load_glamm(
            &fixtures().join("legion_tiny.safetensors"),
            ClipWeights::InCheckpoint,
        )
        .unwrap()
}

/// Every tensor of a module by burn path: dtype, shape and raw bytes.
fn tensors<M: Module>(model: &M) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    model
        .collect(None, None, true)
        .into_iter()
        .map(|t| {
            let data = bridge::to_data(&t).unwrap();
            (
                t.name.clone(),
                (
                    format!("{:?}", data.dtype()),
                    data.shape().to_vec(),
                    data.bytes().to_vec(),
                ),
            )
        })
        .collect()
}

fn file_tensors(path: &Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let mut store = SafetensorsStore::from_file(path);
    store
        .get_all_tensors()
        .unwrap()
        .iter()
        .map(|(k, t)| {
            let data = bridge::to_data(t).unwrap();
            (
                k.clone(),
                (
                    format!("{:?}", data.dtype()),
                    data.shape().to_vec(),
                    data.bytes().to_vec(),
                ),
            )
        })
        .collect()
}

#[test]
fn glamm_native_export_round_trip_is_bit_exact() {
    let device = Device::flex();
    let model = original(&device);
    let reference = tensors(&model);
    assert!(reference.len() > 100, "{}", reference.len());

    // Native folder.
    let dir = temp_dir("round_trip");
    let native = dir.join("native");
    let metadata = BTreeMap::from([("source".to_string(), "legion_tiny".to_string())]);
    let files = save_native(&model, &LegionConfig::fixture(), &native, &metadata, false).unwrap();
    assert!(files.weights.ends_with("model.bpk") && files.config.ends_with("config.json"));
    let (loaded, config) = load_native(&native, &device, FloatDTypePolicy::Module).unwrap();
    assert_eq!(
        config.llm.vocab_size,
        LegionConfig::fixture().llm.vocab_size
    );
    assert!(
        tensors(&loaded) == reference,
        "native round trip changed tensors"
    );
    // Saving over it needs overwrite.
    let err = save_native(&model, &config, &native, &metadata, false).unwrap_err();
    assert!(matches!(err, WeightsError::Source { .. }) && err.to_string().contains("exists"));

    // GLaMM export of the native model, loaded back strictly.
    let exported = dir.join("legion_export.safetensors");
    let report = export_glamm_safetensors(&loaded, &exported, &ExportOptions::default()).unwrap();
    assert_eq!(report.keys.len(), reference.len());
    let back = LegionConfig::fixture()
        .init(&device)
        .unwrap()
        .load_glamm(&exported, ClipWeights::InCheckpoint)
        .unwrap();
    assert!(
        tensors(&back) == reference,
        "export round trip changed tensors"
    );

    // The export holds exactly the original file's tensors, byte for byte, minus what
    // `Legion` does not model (GLaMM's region encoder).
    let original_file = file_tensors(&fixtures().join("legion_tiny.safetensors"));
    let exported_file = file_tensors(&exported);
    let mut left_out = Vec::new();
    for (key, value) in &original_file {
        match exported_file.get(key) {
            Some(exported) => assert!(exported == value, "{key} differs from the original"),
            None => left_out.push(key.as_str()),
        }
    }
    assert_eq!(left_out, vec!["model.region_encoder.mlvl_fuse.0.weight"]);
    assert_eq!(exported_file.len(), original_file.len() - 1);
    // Exists -> error without overwrite.
    let err = export_glamm_safetensors(&loaded, &exported, &ExportOptions::default()).unwrap_err();
    assert!(err.to_string().contains("exists"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn export_without_clip_and_in_bf16() {
    let device = Device::flex();
    let model = original(&device);
    let reference = tensors(&model);
    let dir = temp_dir("no_clip");

    // Without the tower, as GLaMM's merged checkpoints; CLIP then comes from the HF file.
    let path = dir.join("no_clip.safetensors");
    let options = ExportOptions {
        skip_vision_tower: true,
        ..ExportOptions::default()
    };
    let report = export_glamm_safetensors(&model, &path, &options).unwrap();
    assert!(report.keys.iter().all(|k| !k.contains("vision_tower")));
    let err = LegionConfig::fixture()
        .init(&device)
        .unwrap()
        .load_glamm(&path, ClipWeights::InCheckpoint)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing") && err.contains("vision_tower."),
        "{err}"
    );
    let clip = fixtures().join("clip_hf.safetensors");
    let back = LegionConfig::fixture()
        .init(&device)
        .unwrap()
        .load_glamm(&path, ClipWeights::HfFile(&clip))
        .unwrap();
    assert!(tensors(&back) == reference);

    // bf16 export: every float tensor is bf16 in the file and loads back (widened to f32)
    // equal to the f32 weights rounded to bf16.
    let path = dir.join("bf16.safetensors");
    let options = ExportOptions {
        float_dtype: Some(FloatDType::BF16),
        ..ExportOptions::default()
    };
    export_glamm_safetensors(&model, &path, &options).unwrap();
    assert!(
        file_tensors(&path)
            .values()
            .all(|(dtype, _, _)| dtype == "BF16")
    );
    let back = LegionConfig::fixture()
        .init(&device)
        .unwrap()
        .load_glamm(&path, ClipWeights::InCheckpoint)
        .unwrap();
    let rounded = model.clone().map(&mut CastTo(FloatDType::BF16));
    let rounded = rounded.map(&mut CastTo(FloatDType::F32));
    assert!(tensors(&back) == tensors(&rounded));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Casts every float parameter.
struct CastTo(FloatDType);

impl burn::module::ModuleMapper for CastTo {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<burn::tensor::Tensor<D>>,
    ) -> burn::module::Param<burn::tensor::Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}
