//! Checkpoint layouts through the strict loader: every layout of the same weights gives the same
//! model, and broken / foreign checkpoints give errors naming the file and the problem.
//!
//! Fixtures under `tests/fixtures/checkpoints/` are made by `scripts/fixtures/checkpoints.py`
//! (`/work/venv/bin/python scripts/fixtures/checkpoints.py` from the repository root; its
//! docstring lists every file): the tiny HF CLIP of `tests/fixtures/clip/clip_vision_hf.safetensors`
//! re-sharded as safetensors and as `torch.save` files with HF index JSONs, and a micro CLIP in
//! the single-file layouts (bf16, `.bin` folder, legacy `.pth`, wrapped training checkpoints,
//! truncated files, a PEFT adapter). Inconsistent indexes are made here, in a temporary folder.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor};
use legion_model::clip_vision::{
    ClipCheckpointLayout, ClipVisionConfig, ClipVisionTransformer, HF_CLIP_REMAP, load_clip_vision,
};
use legion_model::sam::{Sam, SamConfig};
use legion_model::weights::{
    Allowances, CheckpointSource, FloatDTypePolicy, LoadOptions, RemapTable, SourceLayout,
    TopLevelKey, WeightsError, load_from_source, load_weights,
};

/// Identical weights must give identical outputs; this only absorbs nothing but float noise.
const LAYOUT_TOLERANCE: f32 = 1e-6;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn checkpoint(name: &str) -> PathBuf {
    fixtures().join("checkpoints").join(name)
}

/// The tiny HF tower of `clip_vision_hf.safetensors`: image 42, patch 14, hidden 32, 3 layers.
fn tiny_config() -> ClipVisionConfig {
    ClipVisionConfig::tiny()
}

/// The micro tower of `micro_clip*`: image 4, patch 2, hidden 8, 1 layer, 2 heads, MLP 16.
fn micro_config() -> ClipVisionConfig {
    ClipVisionConfig::new(4, 2, 8, 1, 2, 16)
}

fn load_layout(
    config: &ClipVisionConfig,
    path: &Path,
    options: &LoadOptions<'_>,
) -> Result<ClipVisionTransformer, WeightsError> {
    let device = Device::flex();
    load_weights(
        config.init(&device),
        path,
        HF_CLIP_REMAP,
        &ClipCheckpointLayout::HfClip.allowances(),
        options,
    )
    .map(|(model, _)| model)
}

/// Max |a - b| over the last hidden state and the pooled output, on fixed random pixels.
fn output_diff(
    config: &ClipVisionConfig,
    a: &ClipVisionTransformer,
    b: &ClipVisionTransformer,
) -> f32 {
    let device = Device::flex();
    device.seed(5);
    let pixels = Tensor::<4>::random(
        [2, 3, config.image_size, config.image_size],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let out_a = a.forward(pixels.clone()).unwrap();
    let out_b = b.forward(pixels).unwrap();
    let hidden = (out_a.last_hidden_state - out_b.last_hidden_state)
        .abs()
        .max()
        .into_scalar::<f32>();
    let pooled = (out_a.pooled - out_b.pooled)
        .abs()
        .max()
        .into_scalar::<f32>();
    hidden.max(pooled)
}

/// Every float parameter, in traversal order, as `(dtype, values widened to f32)`.
#[derive(Default)]
struct FloatParams(Vec<(DType, Vec<f32>)>);

impl ModuleVisitor for FloatParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let dtype = tensor.dtype();
        let values = tensor
            .cast(FloatDType::F32)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        self.0.push((dtype, values));
    }
}

fn float_params(model: &ClipVisionTransformer) -> Vec<(DType, Vec<f32>)> {
    let mut visitor = FloatParams::default();
    model.visit(&mut visitor);
    visitor.0
}

/// Copies a fixture folder to a fresh temporary one.
fn temp_copy(name: &str, tag: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("legion_weights_{tag}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(checkpoint(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    dst
}

fn read_index(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn mismatch(err: WeightsError) -> (Vec<String>, Vec<String>, Vec<String>, Option<String>) {
    match err {
        WeightsError::Mismatch {
            missing,
            errors,
            details,
            ..
        } => (missing, details.unexpected_file_keys, errors, details.hint),
        other => panic!("expected a mismatch, got: {other}"),
    }
}

#[test]
fn sharded_layouts_load_like_the_single_file() {
    let config = tiny_config();
    let device = Device::flex();
    let reference = load_clip_vision(
        config.init(&device),
        &fixtures().join("clip/clip_vision_hf.safetensors"),
        ClipCheckpointLayout::HfClip,
    )
    .unwrap();
    let reference_params = float_params(&reference);
    let num_tensors = reference_params.len();

    for (folder, index) in [
        ("clip_sharded_safetensors", "model.safetensors.index.json"),
        ("clip_sharded_bin", "pytorch_model.bin.index.json"),
    ] {
        // The folder and its index JSON resolve to the same three shards.
        for path in [checkpoint(folder), checkpoint(folder).join(index)] {
            let source = CheckpointSource::resolve(&path).unwrap();
            assert!(matches!(source.layout(), SourceLayout::Sharded { .. }));
            assert_eq!(source.shards().len(), 3, "{}", path.display());
            let calls = RefCell::new(Vec::new());
            let progress = |done: usize, total: usize| calls.borrow_mut().push((done, total));
            let options = LoadOptions {
                progress: Some(&progress),
                ..LoadOptions::default()
            };
            let (model, report) = load_from_source(
                config.init(&device),
                &source,
                &RemapTable::new(HF_CLIP_REMAP).unwrap(),
                &ClipCheckpointLayout::HfClip.allowances(),
                &options,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(calls.into_inner(), vec![(1, 3), (2, 3), (3, 3)]);
            // Every tensor applied exactly once over the shards, none converted (all f32).
            assert_eq!(
                (report.files, report.applied, report.converted),
                (3, num_tensors, 0)
            );
            // Tensors applied from an earlier shard keep their values through later shards.
            assert!(
                float_params(&model) == reference_params,
                "{}: parameters differ",
                path.display()
            );
            let err = output_diff(&config, &reference, &model);
            eprintln!("{}: max abs output difference {err:.3e}", path.display());
            assert!(err <= LAYOUT_TOLERANCE);
        }
    }
}

#[test]
fn single_file_pytorch_layouts_load_like_safetensors() {
    let config = micro_config();
    let reference = load_layout(
        &config,
        &checkpoint("micro_clip.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    let reference_params = float_params(&reference);
    for (name, top_level_key) in [
        ("micro_clip_single", TopLevelKey::Auto),
        ("micro_clip_single/pytorch_model.bin", TopLevelKey::Auto),
        ("micro_clip_legacy.pth", TopLevelKey::Auto),
        ("micro_clip_wrapped_model.pth", TopLevelKey::Auto),
        ("micro_clip_wrapped_state_dict.pth", TopLevelKey::Auto),
        (
            "micro_clip_wrapped_state_dict.pth",
            TopLevelKey::Key("state_dict".into()),
        ),
    ] {
        let options = LoadOptions {
            top_level_key: top_level_key.clone(),
            ..LoadOptions::default()
        };
        let model = load_layout(&config, &checkpoint(name), &options)
            .unwrap_or_else(|e| panic!("{name} ({top_level_key:?}): {e}"));
        assert!(float_params(&model) == reference_params, "{name}");
        let err = output_diff(&config, &reference, &model);
        eprintln!("{name} ({top_level_key:?}): max abs output difference {err:.3e}");
        assert!(err <= LAYOUT_TOLERANCE);
    }

    // Read from the root, a wrapped checkpoint's keys keep their wrapper: nothing matches.
    let err = load_layout(
        &config,
        &checkpoint("micro_clip_wrapped_state_dict.pth"),
        &LoadOptions {
            top_level_key: TopLevelKey::Root,
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    let message = err.to_string();
    let (missing, unexpected, _, hint) = mismatch(err);
    assert!(!missing.is_empty());
    assert!(
        unexpected
            .iter()
            .any(|k| k == "state_dict.vision_model.pre_layrnorm.weight"),
        "{unexpected:?}"
    );
    assert!(hint.unwrap().contains("none of the file's"), "{message}");
    // A key that is not there names the available ones.
    let err = load_layout(
        &config,
        &checkpoint("micro_clip_wrapped_model.pth"),
        &LoadOptions {
            top_level_key: TopLevelKey::Key("ema".into()),
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, WeightsError::Read { .. }));
    assert!(message.contains("micro_clip_wrapped_model.pth") && message.contains("ema"));
}

#[test]
fn bf16_checkpoint_loads_widened_into_an_f32_module() {
    let config = micro_config();
    let reference = load_layout(
        &config,
        &checkpoint("micro_clip.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    let path = checkpoint("micro_clip_bf16.safetensors");
    let device = Device::flex();
    let (model, report) = load_weights(
        config.init(&device),
        &path,
        HF_CLIP_REMAP,
        &ClipCheckpointLayout::HfClip.allowances(),
        &LoadOptions::default(),
    )
    .unwrap();
    let params = float_params(&model);
    assert_eq!(report.converted, params.len());
    assert_eq!(report.file_dtypes.get("BF16"), Some(&params.len()));
    // Every parameter is f32 and equals the f32 reference rounded to bf16 (what the script
    // stored) and widened back: widening is exact.
    for ((dtype, values), (_, reference_values)) in params.iter().zip(float_params(&reference)) {
        assert_eq!(*dtype, DType::F32);
        let rounded: Vec<f32> = Tensor::<1>::from_floats(reference_values.as_slice(), &device)
            .cast(FloatDType::BF16)
            .cast(FloatDType::F32)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(*values, rounded);
    }
    // The tower runs in f32; its outputs differ from the f32 weights' by bf16 rounding only.
    let err = output_diff(&config, &reference, &model);
    eprintln!("bf16 weights vs f32 weights: max abs output difference {err:.3e}");
    assert!(
        err > 0.0 && err <= 5e-2,
        "bf16 rounding should show, but only at the percent level: {err}"
    );

    // Keeping the file dtype is burn-store's own behaviour: bf16 parameters.
    let (kept, report) = load_weights(
        config.init(&device),
        &path,
        HF_CLIP_REMAP,
        &ClipCheckpointLayout::HfClip.allowances(),
        &LoadOptions {
            float_dtype: FloatDTypePolicy::KeepFile,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(report.converted, 0);
    assert!(
        float_params(&kept)
            .iter()
            .all(|(dtype, _)| *dtype == DType::BF16)
    );
    // An explicit cast of an f32 file.
    let (cast, _) = load_weights(
        config.init(&device),
        &checkpoint("micro_clip.safetensors"),
        HF_CLIP_REMAP,
        &ClipCheckpointLayout::HfClip.allowances(),
        &LoadOptions {
            float_dtype: FloatDTypePolicy::Cast(FloatDType::BF16),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert!(
        float_params(&cast)
            .iter()
            .zip(float_params(&kept))
            .all(|(a, b)| *a == b)
    );
}

#[test]
fn truncated_and_corrupt_files_are_read_errors_naming_the_file() {
    let config = micro_config();
    for name in [
        "micro_clip_truncated.safetensors",
        "micro_clip_truncated.bin",
    ] {
        let err = load_layout(&config, &checkpoint(name), &LoadOptions::default()).unwrap_err();
        let message = err.to_string();
        eprintln!("{name}: {message}");
        assert!(matches!(err, WeightsError::Read { .. }), "{message}");
        assert!(message.contains(name), "{message}");
        assert!(message.contains("not a readable"), "{message}");
    }
    // Not a checkpoint at all (a JSON file with a weights extension).
    let dst = std::env::temp_dir().join(format!("legion_weights_notes_{}.pth", std::process::id()));
    std::fs::write(&dst, b"{\"not\": \"a checkpoint\"}").unwrap();
    let err = load_layout(&config, &dst, &LoadOptions::default()).unwrap_err();
    let _ = std::fs::remove_file(&dst);
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, WeightsError::Read { .. }) && message.contains("legion_weights_notes"));
    // Nothing there.
    let err = load_layout(
        &config,
        &checkpoint("does_not_exist.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, WeightsError::SourceIo { .. }));
    assert!(err.to_string().contains("does_not_exist.safetensors"));
}

/// A pickle (protocol 2) of `{"w": <global>(<argument>)}`: GLOBAL, argument tuple, REDUCE.
fn pickle_calling(global_module: &str, global_name: &str, argument: &str) -> Vec<u8> {
    let mut p = b"\x80\x02}q\x00X\x01\x00\x00\x00w".to_vec();
    p.extend(format!("c{global_module}\n{global_name}\n").bytes());
    p.push(b'X');
    p.extend((argument.len() as u32).to_le_bytes());
    p.extend(argument.bytes());
    p.extend(b"\x85Rs.");
    p
}

#[test]
fn a_pickle_naming_os_system_or_eval_is_refused_and_nothing_runs() {
    let dir = std::env::temp_dir().join(format!("legion_pickle_globals_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("pwned");
    let command = format!("touch {}", marker.display());
    for (module, name, argument) in [
        ("os", "system", command.as_str()),
        ("posix", "system", command.as_str()),
        ("__builtin__", "eval", "__import__('os').system('true')"),
        ("subprocess", "check_call", command.as_str()),
    ] {
        let path = dir.join(format!("{module}_{name}.pth"));
        std::fs::write(&path, pickle_calling(module, name, argument)).unwrap();
        let err = load_layout(&micro_config(), &path, &LoadOptions::default()).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, WeightsError::ForeignGlobals { .. }),
            "{message}"
        );
        assert!(
            message.contains(&format!("{module}.{name}")) && message.contains("restricted"),
            "{message}"
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
    assert!(!marker.exists(), "a pickled command ran");
    let _ = std::fs::remove_dir_all(&dir);
    // The allow-list keeps real checkpoints (legacy pickle and zip) loading.
    for name in [
        "micro_clip_legacy.pth",
        "micro_clip_single/pytorch_model.bin",
    ] {
        load_layout(&micro_config(), &checkpoint(name), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn wrong_shapes_name_the_file_key_and_both_shapes() {
    // MLP width 24 instead of 16: fc1 / fc2 shapes differ.
    let config = ClipVisionConfig::new(4, 2, 8, 1, 2, 24);
    let path = checkpoint("micro_clip_single/pytorch_model.bin");
    let err = load_layout(&config, &path, &LoadOptions::default()).unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(message.contains("pytorch_model.bin"));
    let (missing, unexpected, errors, _) = mismatch(err);
    assert!(missing.is_empty() && unexpected.is_empty());
    assert_eq!(errors.len(), 3, "{errors:?}"); // fc1.weight, fc1.bias, fc2.weight
    let fc1 = errors
        .iter()
        .find(|e| e.contains("'layers.0.mlp.fc1.weight'"))
        .expect("fc1.weight shape error");
    assert!(
        fc1.contains("file key vision_model.encoder.layers.0.mlp.fc1.weight")
            && fc1.contains("file shape [16, 8]"),
        "{fc1}"
    );
}

#[test]
fn another_models_checkpoint_is_a_clear_mismatch() {
    let device = Device::flex();
    // SAM's checkpoint given to the CLIP loader.
    let sam_file = fixtures().join("sam/sam_tiny.safetensors");
    let err = load_layout(&micro_config(), &sam_file, &LoadOptions::default()).unwrap_err();
    let message = err.to_string();
    eprintln!("{}", message.lines().take(2).collect::<Vec<_>>().join("\n"));
    assert!(message.contains("sam_tiny.safetensors"));
    let (_, unexpected, _, hint) = mismatch(err);
    assert!(unexpected.iter().any(|k| k.starts_with("image_encoder.")));
    assert!(hint.unwrap().contains("another model"));

    // A CLIP checkpoint given to the SAM loader.
    let clip_file = checkpoint("micro_clip_single");
    let err = Sam::load(&SamConfig::tiny(), &clip_file, &device)
        .map(|_| ())
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("micro_clip_single") && message.contains("another model"));
    let (missing, unexpected, _, _) = mismatch(err);
    assert!(missing.iter().any(|p| p.starts_with("image_encoder.")));
    assert!(
        unexpected
            .iter()
            .any(|k| k == "vision_model.embeddings.class_embedding")
    );

    // A PEFT adapter is not a model.
    let err = load_layout(
        &micro_config(),
        &checkpoint("micro_clip_lora"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    let message = err.to_string();
    eprintln!("{}", message.lines().take(2).collect::<Vec<_>>().join("\n"));
    assert!(message.contains("adapter_model.safetensors") || message.contains("micro_clip_lora"));
    assert!(
        message.contains("PEFT/LoRA adapter (4 unmerged"),
        "{message}"
    );
}

#[test]
fn inconsistent_indexes_are_errors() {
    let config = tiny_config();
    let options = LoadOptions::default();

    // The index names a shard that is not there.
    let dir = temp_copy("clip_sharded_safetensors", "missing_shard");
    std::fs::remove_file(dir.join("model-00002-of-00003.safetensors")).unwrap();
    let err = load_layout(&config, &dir, &options).unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, WeightsError::Index { .. }));
    assert!(
        message.contains("model-00002-of-00003.safetensors") && message.contains("does not exist")
    );
    let _ = std::fs::remove_dir_all(&dir);

    // A shard holds a key the index does not list.
    let dir = temp_copy("clip_sharded_bin", "unlisted_key");
    let index_path = dir.join("pytorch_model.bin.index.json");
    let mut index = read_index(&index_path);
    let weight_map = index["weight_map"].as_object_mut().unwrap();
    let dropped = "vision_model.post_layernorm.bias";
    let shard = weight_map.remove(dropped).unwrap();
    std::fs::write(&index_path, serde_json::to_string(&index).unwrap()).unwrap();
    let err = load_layout(&config, &dir, &options).unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, WeightsError::Index { .. }));
    assert!(
        message.contains(dropped)
            && message.contains(shard.as_str().unwrap())
            && message.contains("does not assign")
    );
    let _ = std::fs::remove_dir_all(&dir);

    // The index lists a key its shard does not hold.
    let dir = temp_copy("clip_sharded_safetensors", "absent_key");
    let index_path = dir.join("model.safetensors.index.json");
    let mut index = read_index(&index_path);
    index["weight_map"]["vision_model.extra.weight"] =
        serde_json::Value::String("model-00001-of-00003.safetensors".into());
    std::fs::write(&index_path, serde_json::to_string(&index).unwrap()).unwrap();
    let err = load_layout(&config, &dir, &options).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, WeightsError::Index { .. }));
    assert!(message.contains("vision_model.extra.weight") && message.contains("does not hold"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn strictness_is_over_the_union_of_shards() {
    let config = tiny_config();
    // Drop the last shard from the checkpoint (file and index entries): exactly its tensors
    // are missing; none of those applied from shards 1 and 2 are.
    let dir = temp_copy("clip_sharded_safetensors", "two_shards");
    let index_path = dir.join("model.safetensors.index.json");
    let mut index = read_index(&index_path);
    let last = "model-00003-of-00003.safetensors";
    let weight_map = index["weight_map"].as_object_mut().unwrap();
    let dropped: Vec<String> = weight_map
        .iter()
        .filter(|(_, shard)| shard.as_str() == Some(last))
        .map(|(key, _)| key.clone())
        .collect();
    weight_map.retain(|_, shard| shard.as_str() != Some(last));
    std::fs::write(&index_path, serde_json::to_string(&index).unwrap()).unwrap();
    std::fs::remove_file(dir.join(last)).unwrap();

    let remaps = RemapTable::new(HF_CLIP_REMAP).unwrap();
    let mut expected_missing: Vec<String> = dropped
        .iter()
        .map(|key| {
            let path = remaps.apply(key);
            // burn names LayerNorm parameters gamma / beta.
            let is_norm = path.contains("norm");
            match path.rsplit_once('.') {
                Some((module, "weight")) if is_norm => format!("{module}.gamma"),
                Some((module, "bias")) if is_norm => format!("{module}.beta"),
                _ => path,
            }
        })
        .collect();
    expected_missing.sort();
    let err = load_layout(&config, &dir, &LoadOptions::default()).unwrap_err();
    let (missing, unexpected, errors, _) = mismatch(err);
    assert_eq!(missing, expected_missing);
    assert!(unexpected.is_empty() && errors.is_empty());

    // The same holes, allowed by user patterns, load (and the report lists them).
    let patterns: Vec<String> = expected_missing
        .iter()
        .map(|p| format!("^{}$", p.replace('.', r"\.")))
        .collect();
    let allow = Allowances::from_patterns(&patterns, &[] as &[&str]).unwrap();
    let (_, report) = load_weights(
        config.init(&Device::flex()),
        &dir,
        HF_CLIP_REMAP,
        &allow,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(report.allowed_missing, expected_missing);
    assert_eq!(report.files, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unexpected_tensors_are_listed_by_their_file_keys() {
    // The existing corrupt fixture: fc2.bias missing, an extra fc3.weight.
    let device = Device::flex();
    let path = fixtures().join("clip/clip_vision_corrupt.safetensors");
    let err = load_weights(
        micro_config().init(&device),
        &path,
        HF_CLIP_REMAP,
        &Allowances::strict(),
        &LoadOptions::default(),
    )
    .map(|_| ())
    .unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(
        message
            .contains("vision_model.encoder.layers.0.mlp.fc3.weight (as layers.0.mlp.fc3.weight)")
    );
    match err {
        WeightsError::Mismatch {
            unexpected,
            details,
            ..
        } => {
            assert_eq!(unexpected, vec!["layers.0.mlp.fc3.weight".to_string()]);
            assert_eq!(
                details.unexpected_file_keys,
                vec!["vision_model.encoder.layers.0.mlp.fc3.weight".to_string()]
            );
        }
        other => panic!("expected a mismatch, got {other}"),
    }
}

#[test]
fn bad_patterns_and_ambiguous_remaps_are_errors_not_panics() {
    let device = Device::flex();
    let path = checkpoint("micro_clip.safetensors");
    let err = load_weights(
        micro_config().init(&device),
        &path,
        &[(r"^vision_model\.(", "")],
        &Allowances::strict(),
        &LoadOptions::default(),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(
        matches!(err, WeightsError::Pattern { what: "remap", .. }),
        "{err}"
    );
    assert!(err.to_string().contains(r"^vision_model\.("));

    let err = Allowances::from_patterns(&["[unclosed"], &[] as &[&str]).unwrap_err();
    assert!(matches!(
        err,
        WeightsError::Pattern {
            what: "allow-missing",
            ..
        }
    ));
    let err = Allowances::from_patterns(&[] as &[&str], &["*bad"]).unwrap_err();
    assert!(matches!(
        err,
        WeightsError::Pattern {
            what: "allow-unexpected",
            ..
        }
    ));

    // A rule that sends every layer-norm bias to one name.
    let err = load_weights(
        micro_config().init(&device),
        &path,
        &[(r"^.*layer_?norm.*\.bias$", "pre_layernorm.bias")],
        &Allowances::strict(),
        &LoadOptions::default(),
    )
    .map(|_| ())
    .unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, WeightsError::RemapCollision { .. }));
    assert!(message.contains("pre_layernorm.bias") && message.contains("micro_clip.safetensors"));
}

#[test]
fn burn_store_reports_per_apply_missing_so_shards_need_aggregating() {
    // Why `load_from_source` intersects the per-shard missing sets: applying shard 2 after
    // shard 1 through a plain burn-store store lists shard 1's tensors as missing again.
    use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
    let dir = checkpoint("clip_sharded_safetensors");
    let mut model = tiny_config().init(&Device::flex());
    let mut apply = |shard: &str| {
        let mut store = SafetensorsStore::from_file(dir.join(shard))
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping(r"^vision_model\.", "")
            .with_key_remapping(r"^encoder\.layers\.", "layers.")
            .with_key_remapping(r"^pre_layrnorm\.", "pre_layernorm.")
            .allow_partial(true);
        model.load_from(&mut store).unwrap()
    };
    let first = apply("model-00001-of-00003.safetensors");
    let second = apply("model-00002-of-00003.safetensors");
    assert!(
        first
            .applied
            .iter()
            .any(|p| p == "embeddings.class_embedding")
    );
    assert!(
        second
            .missing
            .iter()
            .any(|(p, _)| p == "embeddings.class_embedding"),
        "burn-store no longer reports earlier shards' tensors as missing"
    );
}
