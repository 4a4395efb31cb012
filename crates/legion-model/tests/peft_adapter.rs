//! PEFT LoRA adapters merged into a loaded base, against real `peft`.
//!
//! Fixtures under `tests/fixtures/peft/` are made by `scripts/fixtures/lora_adapters.py`
//! (`/work/venv/bin/python scripts/fixtures/lora_adapters.py`): adapters saved by
//! `PeftModel.save_pretrained` on the tiny LLaMA of `tests/fixtures/llama` and on the LLM and
//! `text_hidden_fcs` of the tiny LEGION of `tests/fixtures/legion` (GLaMM naming), with the
//! logits / tensors of PEFT's `merge_and_unload()`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, SafetensorsStore, bridge};
use burn::tensor::{Device, Int, Tensor, TensorData};
use legion_model::legion::{ClipWeights, LegionConfig, glamm_legion_remaps};
use legion_model::llama::{LLAMA_HF_REMAP, Llama, LlamaConfig};
use legion_model::weights::{
    LoadOptions, PeftAdapter, RemapTable, WeightsError, merge_peft_adapter,
};

/// Merged weights give the merged model's logits up to float summation order (the LLaMA
/// parity test itself is at 2e-6 on these weights).
const LOGITS_TOLERANCE: f32 = 2e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_npy<T: npyz::Deserialize>(path: &Path) -> (Vec<usize>, Vec<T>) {
    let bytes = std::fs::read(path).expect("fixture exists");
    let npy = npyz::NpyFile::new(&bytes[..]).expect("valid npy");
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (
        shape,
        npy.into_vec::<T>().expect("npy of the expected dtype"),
    )
}

fn base_llama(device: &Device) -> Llama {
    LlamaConfig::tiny()
        .init(device)
        .load_hf_safetensors(&fixtures().join("llama/model.safetensors"))
        .expect("base loads")
}

/// Max |logits - expected| over the positions the attention mask keeps.
fn logits_error(model: &Llama, expected: &str) -> f32 {
    let device = Device::flex();
    let (shape, ids) = read_npy::<i64>(&fixtures().join("llama/input_ids.npy"));
    let (_, mask) = read_npy::<i64>(&fixtures().join("llama/attention_mask.npy"));
    let (eshape, expected) = read_npy::<f32>(&fixtures().join("peft").join(expected));
    let [batch, seq] = [shape[0], shape[1]];
    let ids_t = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, seq]), &device);
    let mask_t = Tensor::<2, Int>::from_data(TensorData::new(mask.clone(), [batch, seq]), &device);
    let logits = model.forward(ids_t, Some(mask_t), None).logits;
    assert_eq!(logits.dims().to_vec(), eshape);
    let got = logits.into_data().try_into_vec_as::<f32>().unwrap();
    let vocab = eshape[2];
    got.chunks(vocab)
        .zip(expected.chunks(vocab))
        .zip(&mask)
        .filter(|(_, m)| **m == 1)
        .flat_map(|((a, b), _)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn llama_adapter_merges_like_peft_merge_and_unload() {
    let device = Device::flex();
    let remaps = RemapTable::new(LLAMA_HF_REMAP).unwrap();
    for (adapter, logits, merged_pairs, replaced) in [
        ("llama_adapter", "llama_logits_merged.npy", 4, 1),
        ("llama_adapter_patterns", "llama_logits_patterns.npy", 6, 0),
    ] {
        let base = base_llama(&device);
        let before = logits_error(&base, logits);
        let adapter = PeftAdapter::open(&fixtures().join("peft").join(adapter)).unwrap();
        let (model, report) =
            merge_peft_adapter(base, &adapter, &remaps, &LoadOptions::default()).unwrap();
        assert_eq!(report.merged.len(), merged_pairs, "{adapter:?}");
        assert_eq!(report.replaced.len(), replaced);
        let err = logits_error(&model, logits);
        eprintln!(
            "{}: max abs logit error {err:.3e} (base model vs merged: {before:.3})",
            adapter.weights_path.display()
        );
        // The adapter matters (the base is far off), and the merge matches PEFT's.
        assert!(before > 0.5, "{before}");
        assert!(err <= LOGITS_TOLERANCE, "{err}");
    }
    // rank_pattern / alpha_pattern / rslora as PEFT reads them.
    let adapter = PeftAdapter::open(&fixtures().join("peft/llama_adapter_patterns")).unwrap();
    let (_, report) = merge_peft_adapter(
        base_llama(&device),
        &adapter,
        &remaps,
        &LoadOptions::default(),
    )
    .unwrap();
    let scales: HashMap<String, (usize, f64)> = report
        .merged
        .into_iter()
        .map(|(path, rank, scale)| (path, (rank, scale)))
        .collect();
    assert_eq!(
        scales["layers.1.self_attn.v_proj.weight"],
        (3, 4.0 / 3f64.sqrt())
    );
    assert_eq!(
        scales["layers.0.self_attn.q_proj.weight"],
        (2, 6.0 / 2f64.sqrt())
    );
    assert_eq!(
        scales["layers.0.self_attn.o_proj.weight"],
        (2, 4.0 / 2f64.sqrt())
    );
}

#[test]
fn glamm_adapter_merges_into_legion() {
    let device = Device::flex();
    let model = LegionConfig::fixture()
        .init(&device)
        .unwrap()
        .load_glamm(
            &fixtures().join("legion/legion_tiny.safetensors"),
            ClipWeights::InCheckpoint,
        )
        .unwrap();
    let remaps = RemapTable::new(&glamm_legion_remaps()).unwrap();
    let adapter = PeftAdapter::open(&fixtures().join("peft/legion_adapter")).unwrap();
    assert_eq!((adapter.config.r, adapter.config.lora_alpha), (4, 16.0));
    let (model, report) =
        merge_peft_adapter(model, &adapter, &remaps, &LoadOptions::default()).unwrap();
    assert_eq!(report.merged.len(), 4);
    assert!(
        report
            .merged
            .iter()
            .all(|(p, r, s)| p.starts_with("llm.layers.") && *r == 4 && *s == 4.0)
    );
    assert_eq!(
        report.replaced,
        vec![
            "text_hidden_fcs.fc1.bias",
            "text_hidden_fcs.fc1.weight",
            "text_hidden_fcs.fc2.bias",
            "text_hidden_fcs.fc2.weight"
        ]
    );

    // The model's tensors in PyTorch layout, by burn path.
    let ours: HashMap<String, Vec<f32>> = model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|t| {
            let values = bridge::to_data(&t)
                .unwrap()
                .try_into_vec_as::<f32>()
                .unwrap();
            (t.name, values)
        })
        .collect();
    let mut expected =
        SafetensorsStore::from_file(fixtures().join("peft/legion_merged.safetensors"));
    let expected = expected.get_all_tensors().unwrap().clone();
    assert_eq!(expected.len(), 8);
    let mut worst = 0f32;
    for (key, tensor) in expected {
        let path = remaps.apply(&key);
        let want = bridge::to_data(&tensor)
            .unwrap()
            .try_into_vec_as::<f32>()
            .unwrap();
        let got = ours
            .get(&path)
            .unwrap_or_else(|| panic!("{key} -> {path} not in the model"));
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        if key.contains("text_hidden_fcs") {
            // Replaced, not computed: bit-exact.
            assert_eq!(got, &want, "{key}");
        }
        worst = worst.max(err);
    }
    eprintln!("legion adapter: max abs error of merged q/v weights {worst:.3e}");
    assert!(worst <= 1e-6, "{worst}");
}

#[test]
fn bad_adapter_lists_every_key_that_does_not_fit() {
    let device = Device::flex();
    let adapter = PeftAdapter::open(&fixtures().join("peft/bad_adapter")).unwrap();
    let err = merge_peft_adapter(
        base_llama(&device),
        &adapter,
        &RemapTable::new(LLAMA_HF_REMAP).unwrap(),
        &LoadOptions::default(),
    )
    .map(|_| ())
    .unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, WeightsError::Adapter { .. }));
    assert!(message.contains("bad_adapter/adapter_model.safetensors"));
    assert!(
        message.contains("3 adapter tensors do not fit"),
        "{message}"
    );
    assert!(
        message
            .contains("base_model.model.model.layers.0.self_attn.k_proj: has lora_A but no lora_B")
    );
    assert!(message.contains("mlp.foo_proj.weight` maps to `layers.0.mlp.foo_proj.weight`"));
    assert!(message.contains("base_model.model.model.extra.weight: maps to `extra.weight`"));

    // A rank that disagrees with the config is a shape error, not a silent rescale.
    let dir = std::env::temp_dir().join(format!("legion_peft_rank_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let source = fixtures().join("peft/llama_adapter");
    std::fs::copy(
        source.join("adapter_model.safetensors"),
        dir.join("adapter_model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(source.join("adapter_config.json"))
        .unwrap()
        .replace("\"r\": 4", "\"r\": 8");
    std::fs::write(dir.join("adapter_config.json"), config).unwrap();
    let adapter = PeftAdapter::open(&dir).unwrap();
    let err = merge_peft_adapter(
        base_llama(&device),
        &adapter,
        &RemapTable::new(LLAMA_HF_REMAP).unwrap(),
        &LoadOptions::default(),
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("4 adapter tensors do not fit") && err.contains("at rank 8"),
        "{err}"
    );

    // DoRA is refused by name; a folder without adapter is a source error.
    let config = std::fs::read_to_string(source.join("adapter_config.json"))
        .unwrap()
        .replace("\"use_dora\": false", "\"use_dora\": true");
    std::fs::write(dir.join("adapter_config.json"), config).unwrap();
    let err = PeftAdapter::open(&dir).unwrap_err().to_string();
    assert!(
        err.contains("DoRA") && err.contains("adapter_config.json"),
        "{err}"
    );
    let err = PeftAdapter::open(&fixtures().join("llama")).unwrap_err();
    assert!(matches!(err, WeightsError::Source { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
