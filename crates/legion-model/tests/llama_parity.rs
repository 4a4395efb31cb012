//! Parity of the burn LLaMA with transformers' `LlamaForCausalLM` on a tiny random model.
//!
//! Fixtures: `tests/fixtures/llama/`, made by `scripts/fixtures/llama.py` (seeded; HF naming,
//! eager attention, f32). Weights go through the real strict loader
//! (`Llama::load_hf_safetensors` -> `weights::load_safetensors` with `LLAMA_HF_REMAP`).
//!
//! Also checks, on the same weights: KV-cache incremental decoding == full recomputation,
//! left/right-padded batches == per-sample runs, greedy generation == HF `generate`, and LoRA
//! (zero B leaves outputs unchanged; merged == unmerged).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use legion_backend::test_device;
use legion_model::generation::{GenerationConfig, Sampling, generate};
use legion_model::llama::lora::{LlamaLoraConfig, apply_lora, merge_lora};
use legion_model::llama::{Llama, LlamaConfig};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama")
}

fn read_npy_f32(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture_dir().join(name)).expect("fixture exists");
    let npy = npyz::NpyFile::new(&bytes[..]).expect("valid npy");
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<f32>().expect("f32 npy"))
}

fn read_npy_i64(name: &str) -> (Vec<usize>, Vec<i64>) {
    let bytes = std::fs::read(fixture_dir().join(name)).expect("fixture exists");
    let npy = npyz::NpyFile::new(&bytes[..]).expect("valid npy");
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<i64>().expect("i64 npy"))
}

fn load_model(device: &Device) -> Llama {
    LlamaConfig::tiny()
        .init(device)
        .load_hf_safetensors(&fixture_dir().join("model.safetensors"))
        .expect("fixture weights load strictly")
}

fn to_vec(t: Tensor<3>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// Max |a - b| over positions where `keep[b * seq + t]` is true; each position has `width` values.
fn max_abs_diff_masked(a: &[f32], b: &[f32], keep: &[bool], width: usize) -> f32 {
    assert_eq!(a.len(), b.len());
    a.chunks(width)
        .zip(b.chunks(width))
        .zip(keep)
        .filter(|(_, k)| **k)
        .flat_map(|((x, y), _)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

struct Inputs {
    ids: Vec<i64>,
    mask: Vec<i64>,
    batch: usize,
    seq: usize,
}

fn inputs() -> Inputs {
    let (shape, ids) = read_npy_i64("input_ids.npy");
    let (_, mask) = read_npy_i64("attention_mask.npy");
    Inputs {
        ids,
        mask,
        batch: shape[0],
        seq: shape[1],
    }
}

fn int2(data: Vec<i64>, shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

#[test]
fn logits_and_hidden_states_match_transformers() {
    let device = test_device();
    let model = load_model(&device);
    let inp = inputs();
    let ids = int2(inp.ids.clone(), [inp.batch, inp.seq], &device);
    let mask = int2(inp.mask.clone(), [inp.batch, inp.seq], &device);
    let out = model.forward(ids, Some(mask), None);

    let (lshape, logits_ref) = read_npy_f32("logits.npy");
    let (hshape, hidden_ref) = read_npy_f32("last_hidden_state.npy");
    assert_eq!(out.logits.dims().to_vec(), lshape);
    assert_eq!(out.last_hidden_state.dims().to_vec(), hshape);
    // Padded query positions attend to nothing; their outputs are not defined by either side.
    let keep: Vec<bool> = inp.mask.iter().map(|&m| m == 1).collect();
    let logits_err = max_abs_diff_masked(&to_vec(out.logits), &logits_ref, &keep, lshape[2]);
    let hidden_err = max_abs_diff_masked(
        &to_vec(out.last_hidden_state),
        &hidden_ref,
        &keep,
        hshape[2],
    );
    let logits_scale = logits_ref.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    eprintln!(
        "llama parity: max abs err logits {logits_err:.3e} (max |logit| {logits_scale:.2}), \
         last hidden {hidden_err:.3e}"
    );
    assert!(logits_err <= 1e-4, "logits max abs error {logits_err}");
    assert!(
        hidden_err <= 1e-4,
        "last hidden state max abs error {hidden_err}"
    );
}

/// Full forward of one unpadded row vs. prefill + token-by-token decoding with the KV cache.
#[test]
fn incremental_decoding_with_cache_matches_full_recomputation() {
    let device = test_device();
    let model = load_model(&device);
    let inp = inputs();
    let row: Vec<i64> = inp.ids[..inp.seq].to_vec(); // row 0 has no padding
    let full = model.forward(int2(row.clone(), [1, inp.seq], &device), None, None);
    let full_logits = to_vec(full.logits);
    let full_hidden = to_vec(full.last_hidden_state);

    let prefill = 3;
    let mut cache = model.new_cache();
    let mut logits = Vec::new();
    let mut hidden = Vec::new();
    let out = model.forward(
        int2(row[..prefill].to_vec(), [1, prefill], &device),
        None,
        Some(&mut cache),
    );
    logits.extend(to_vec(out.logits));
    hidden.extend(to_vec(out.last_hidden_state));
    for &token in &row[prefill..] {
        let out = model.forward(int2(vec![token], [1, 1], &device), None, Some(&mut cache));
        logits.extend(to_vec(out.logits));
        hidden.extend(to_vec(out.last_hidden_state));
    }
    assert_eq!(cache.seq_len(), inp.seq);
    let keep = vec![true; inp.seq];
    let vocab = LlamaConfig::tiny().vocab_size;
    let err_logits = max_abs_diff_masked(&logits, &full_logits, &keep, vocab);
    let err_hidden = max_abs_diff_masked(
        &hidden,
        &full_hidden,
        &keep,
        LlamaConfig::tiny().hidden_size,
    );
    eprintln!("kv cache: max abs err logits {err_logits:.3e}, hidden {err_hidden:.3e}");
    assert!(err_logits <= 1e-4 && err_hidden <= 1e-4);
}

/// Positions `cumsum(mask) - 1` as HF generate uses them.
fn positions_from_mask(mask: &[i64], batch: usize, seq: usize) -> Vec<i64> {
    (0..batch)
        .flat_map(|b| {
            let mut c = -1;
            mask[b * seq..(b + 1) * seq]
                .iter()
                .map(move |&m| {
                    c += m;
                    c.max(0)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Left-padded (with mask-derived positions) and right-padded (default positions) batches give
/// each row the same outputs as running it alone, including cached decoding after prefill.
#[test]
fn padded_batches_match_per_sample_inference() {
    let device = test_device();
    let model = load_model(&device);
    let vocab = LlamaConfig::tiny().vocab_size;
    let prompts: Vec<Vec<i64>> = vec![
        vec![1, 17, 42, 5, 33, 8],
        vec![1, 9, 60],
        vec![1, 30, 31, 32, 12],
    ];
    let seq = prompts.iter().map(Vec::len).max().unwrap();
    let batch = prompts.len();

    let single: Vec<Vec<f32>> = prompts
        .iter()
        .map(|p| {
            to_vec(
                model
                    .forward(int2(p.clone(), [1, p.len()], &device), None, None)
                    .logits,
            )
        })
        .collect();

    let mut worst_left = 0.0f32;
    let mut worst_right = 0.0f32;
    for left in [true, false] {
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for p in &prompts {
            let pad = seq - p.len();
            let (pad_ids, pad_mask) = (vec![0i64; pad], vec![0i64; pad]);
            if left {
                ids.extend(pad_ids.iter().chain(p));
                mask.extend(pad_mask.iter().chain(&vec![1; p.len()]));
            } else {
                ids.extend(p.iter().chain(&pad_ids));
                mask.extend(vec![1; p.len()].iter().chain(&pad_mask));
            }
        }
        let positions = left.then(|| {
            int2(
                positions_from_mask(&mask, batch, seq),
                [batch, seq],
                &device,
            )
        });
        let embeds = model.embed(int2(ids, [batch, seq], &device));
        let out = model.forward_embeds(
            embeds,
            Some(int2(mask.clone(), [batch, seq], &device)),
            positions,
            None,
        );
        let logits = to_vec(out.logits);
        for (b, p) in prompts.iter().enumerate() {
            let offset = if left { seq - p.len() } else { 0 };
            let batched = &logits[(b * seq + offset) * vocab..(b * seq + offset + p.len()) * vocab];
            let err = max_abs_diff_masked(batched, &single[b], &vec![true; p.len()], vocab);
            if left {
                worst_left = worst_left.max(err);
            } else {
                worst_right = worst_right.max(err);
            }
        }
    }
    eprintln!(
        "batching: max abs err vs per-sample, left pad {worst_left:.3e}, right pad {worst_right:.3e}"
    );
    assert!(worst_left <= 1e-4 && worst_right <= 1e-4);

    // Batched greedy decoding (left padding + cache) == per-sample decoding, token for token.
    let config = GenerationConfig {
        max_new_tokens: 6,
        eos_token_id: None,
        stop_token_ids: vec![],
        pad_token_id: 0,
        sampling: Sampling::Greedy,
        return_hidden_states: true,
    };
    let prompts_u32: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| p.iter().map(|&t| t as u32).collect())
        .collect();
    let batched = generate(&model, &prompts_u32, &config).unwrap();
    let mut worst_hidden = 0.0f32;
    for (b, p) in prompts_u32.iter().enumerate() {
        let alone = generate(&model, std::slice::from_ref(p), &config).unwrap();
        assert_eq!(batched.tokens[b], alone.tokens[0], "row {b}");
        let hb = batched.hidden_states.as_ref().unwrap()[b]
            .clone()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        let ha = alone.hidden_states.as_ref().unwrap()[0]
            .clone()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        worst_hidden = worst_hidden.max(max_abs_diff_masked(&hb, &ha, &vec![true; hb.len()], 1));
    }
    eprintln!(
        "batched generation: tokens equal per row, hidden states max abs err {worst_hidden:.3e}"
    );
    assert!(worst_hidden <= 1e-4);
}

#[test]
fn greedy_generation_matches_transformers_generate() {
    let device = test_device();
    let model = load_model(&device);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("meta.json")).unwrap())
            .unwrap();
    let config = GenerationConfig {
        max_new_tokens: 6,
        eos_token_id: None,
        stop_token_ids: vec![],
        pad_token_id: 0,
        sampling: Sampling::Greedy,
        return_hidden_states: false,
    };
    for case in meta["greedy"].as_array().unwrap() {
        let to_ids = |v: &serde_json::Value| -> Vec<u32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        };
        let prompt = to_ids(&case["prompt"]);
        let expected = to_ids(&case["new_tokens"]);
        let out = generate(&model, &[prompt], &config).unwrap();
        assert_eq!(out.tokens[0], expected);
    }
}

#[test]
fn stop_conditions_and_seeded_sampling() {
    let device = test_device();
    let model = load_model(&device);
    let prompt = vec![vec![1u32, 17, 42, 5, 33]];
    let greedy = GenerationConfig {
        max_new_tokens: 6,
        eos_token_id: None,
        stop_token_ids: vec![],
        pad_token_id: 0,
        sampling: Sampling::Greedy,
        return_hidden_states: false,
    };
    let free = generate(&model, &prompt, &greedy).unwrap();
    assert_eq!(free.tokens[0].len(), 6);
    // Stopping on the 2nd greedy token as EOS, then as a stop token, keeps it and ends there.
    let stop = free.tokens[0][1];
    let as_eos = GenerationConfig {
        eos_token_id: Some(stop),
        ..greedy.clone()
    };
    let out = generate(&model, &prompt, &as_eos).unwrap();
    assert_eq!(out.tokens[0], free.tokens[0][..2].to_vec());
    assert_eq!(
        out.finish_reasons[0],
        legion_model::generation::FinishReason::Eos
    );
    let as_stop = GenerationConfig {
        stop_token_ids: vec![stop],
        ..greedy.clone()
    };
    let out = generate(&model, &prompt, &as_stop).unwrap();
    assert_eq!(
        out.finish_reasons[0],
        legion_model::generation::FinishReason::StopToken
    );

    let sampled = |seed| GenerationConfig {
        sampling: Sampling::TopP {
            temperature: 1.5,
            top_p: 0.9,
            seed,
        },
        max_new_tokens: 12,
        ..greedy.clone()
    };
    let a = generate(&model, &prompt, &sampled(7)).unwrap();
    let b = generate(&model, &prompt, &sampled(7)).unwrap();
    assert_eq!(a.tokens, b.tokens, "same seed, same tokens");
    let others: Vec<_> = (8..14)
        .map(|s| generate(&model, &prompt, &sampled(s)).unwrap().tokens)
        .collect();
    assert!(
        others.iter().any(|t| *t != a.tokens),
        "different seeds should sample differently"
    );
    // top_p -> 0 keeps only the best token: greedy.
    let nucleus_of_one = GenerationConfig {
        sampling: Sampling::TopP {
            temperature: 1.0,
            top_p: 1e-9,
            seed: 3,
        },
        ..greedy.clone()
    };
    assert_eq!(
        generate(&model, &prompt, &nucleus_of_one).unwrap().tokens,
        free.tokens
    );
    let nothing = GenerationConfig {
        max_new_tokens: 0,
        return_hidden_states: true,
        ..greedy.clone()
    };
    let out = generate(&model, &prompt, &nothing).unwrap();
    assert!(out.tokens[0].is_empty());
    assert_eq!(
        out.hidden_states.unwrap()[0].dims(),
        [0, LlamaConfig::tiny().hidden_size]
    );
    assert!(generate(&model, &[vec![]], &greedy).is_err());
    assert!(generate(&model, &[vec![1, 999]], &greedy).is_err());
}

/// Sets every LoRA `b` factor to random values, so that adapters change the outputs.
struct RandomizeLoraB {
    path: Vec<String>,
    seen: usize,
}

impl burn::module::ModuleMapper for RandomizeLoraB {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        if self.path.ends_with(&["lora".to_string(), "b".to_string()]) {
            self.seen += 1;
            return param.map(|t| {
                Tensor::random(
                    t.shape(),
                    burn::tensor::Distribution::Normal(0.0, 0.5),
                    &t.device(),
                )
            });
        }
        param
    }
}

#[test]
fn lora_zero_b_is_identity_and_merge_matches_unmerged() {
    use burn::module::Module;
    let device = test_device();
    device.seed(11);
    let model = load_model(&device);
    let inp = inputs();
    let ids = || int2(inp.ids.clone(), [inp.batch, inp.seq], &device);
    let mask = || Some(int2(inp.mask.clone(), [inp.batch, inp.seq], &device));
    let keep: Vec<bool> = inp.mask.iter().map(|&m| m == 1).collect();
    let vocab = LlamaConfig::tiny().vocab_size;
    let base = to_vec(model.forward(ids(), mask(), None).logits);

    let config = LlamaLoraConfig::legion();
    let lora = apply_lora(model, &config).unwrap();
    for layer in &lora.layers {
        assert!(layer.self_attn.q_proj.weight.adapter().is_some());
        assert!(layer.self_attn.v_proj.weight.adapter().is_some());
        assert!(layer.self_attn.k_proj.weight.adapter().is_none());
        assert!(layer.self_attn.o_proj.weight.adapter().is_none());
        assert!(layer.mlp.gate_proj.weight.adapter().is_none());
    }
    let adapter = lora.layers[0].self_attn.q_proj.weight.adapter().unwrap();
    assert_eq!(adapter.scale, 2.0, "alpha / r = 16 / 8");
    assert_eq!(adapter.a.val().dims(), [32, 8]);

    let zero_b = to_vec(lora.forward(ids(), mask(), None).logits);
    let err_zero = max_abs_diff_masked(&zero_b, &base, &keep, vocab);

    let mut randomize = RandomizeLoraB {
        path: vec![],
        seen: 0,
    };
    let lora = lora.map(&mut randomize);
    assert_eq!(randomize.seen, 2 * LlamaConfig::tiny().num_hidden_layers);
    let unmerged = to_vec(lora.forward(ids(), mask(), None).logits);
    let merged_model = merge_lora(lora);
    assert!(
        merged_model.layers[0]
            .self_attn
            .q_proj
            .weight
            .adapter()
            .is_none()
    );
    let merged = to_vec(merged_model.forward(ids(), mask(), None).logits);
    let err_merge = max_abs_diff_masked(&merged, &unmerged, &keep, vocab);
    let changed = max_abs_diff_masked(&unmerged, &base, &keep, vocab);
    eprintln!(
        "lora: zero-B vs base max abs err {err_zero:.3e}; merged vs unmerged {err_merge:.3e}; \
         random-B change vs base {changed:.3e}"
    );
    assert!(err_zero <= 1e-6);
    assert!(err_merge <= 1e-4);
    assert!(changed > 1e-2, "random adapters must change the outputs");
}

/// LoRA freezing on an autodiff device: adapters and the fully trained modules (embed_tokens,
/// lm_head) train; base weights, other projections and norms are frozen.
#[test]
fn lora_trains_adapters_and_fully_trained_modules_only() {
    let device = test_device().autodiff();
    let model = apply_lora(
        LlamaConfig::tiny().init(&device),
        &LlamaLoraConfig::legion(),
    )
    .unwrap();
    let layer = &model.layers[0];
    let adapter = layer.self_attn.q_proj.weight.adapter().unwrap();
    assert!(adapter.a.val().is_require_grad() && adapter.b.val().is_require_grad());
    assert!(!layer.self_attn.q_proj.weight.base().is_require_grad());
    assert!(!layer.self_attn.k_proj.weight.val().is_require_grad());
    assert!(!layer.mlp.down_proj.weight.val().is_require_grad());
    assert!(!layer.input_layernorm.gamma.val().is_require_grad());
    assert!(!model.norm.gamma.val().is_require_grad());
    assert!(model.embed_tokens.weight.val().is_require_grad());
    assert!(model.lm_head.weight.val().is_require_grad());
    // PEFT-matched init std 1/sqrt(3 * hidden) for `a`, B = 0.
    let a = adapter
        .a
        .val()
        .inner()
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap();
    let std = (a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32).sqrt();
    let target = 1.0 / (3.0f32 * 32.0).sqrt();
    assert!(
        (std - target).abs() < 0.35 * target,
        "a std {std} vs {target}"
    );
    let b = adapter
        .b
        .val()
        .inner()
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap();
    assert!(b.iter().all(|&v| v == 0.0));
}

#[test]
fn hf_config_json_and_strict_loading() {
    use legion_model::llama::LlamaError;
    let config = LlamaConfig::from_hf_config_json(&fixture_dir().join("config.json")).unwrap();
    assert_eq!(config, LlamaConfig::tiny());
    let vicuna = LlamaConfig::vicuna_7b();
    assert_eq!(
        (
            vicuna.vocab_size,
            vicuna.hidden_size,
            vicuna.num_hidden_layers
        ),
        (32007, 4096, 32)
    );
    assert_eq!(
        (
            vicuna.num_attention_heads,
            vicuna.num_key_value_heads,
            vicuna.intermediate_size
        ),
        (32, 32, 11008)
    );

    let device = test_device();
    let weights = fixture_dir().join("model.safetensors");
    // One layer more than the file: its tensors are reported missing.
    let deeper = LlamaConfig {
        num_hidden_layers: 3,
        ..LlamaConfig::tiny()
    }
    .init(&device);
    match deeper.load_hf_safetensors(&weights) {
        Err(LlamaError::Weights(e)) => assert!(e.to_string().contains("layers.2."), "{e}"),
        other => panic!("expected a weights error, got {:?}", other.map(|_| ())),
    }
    // A different vocabulary: shape errors.
    let wider = LlamaConfig {
        vocab_size: 65,
        ..LlamaConfig::tiny()
    }
    .init(&device);
    assert!(wider.load_hf_safetensors(&weights).is_err());
}
