//! The composed LEGION model against a PyTorch reference built from the reference modules.
//!
//! Fixtures: `scripts/fixtures/legion.py` (writes `tests/fixtures/legion/`); the `LegionForCls`
//! test reuses `scripts/fixtures/clip.py`'s `legion_cls_glamm.safetensors`, the `analyze` test
//! `scripts/fixtures/tokenizer.py`'s `tokenizer.json`, and the `debug_forward` tests the CLIP,
//! LLaMA and SAM fixtures of their own scripts.
//!
//! ```text
//! /work/venv/bin/python scripts/fixtures/legion.py
//! cargo test -p legion-model --test legion_parity
//! ```

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{DType, Device, FloatDType, Int, Tensor, TensorData};
use legion_backend::test_device;
use legion_model::generation::{FinishReason, GenerationConfig, Sampling};
use legion_model::legion::{
    ClipWeights, Legion, LegionClsConfig, LegionConfig, LegionError, LegionImages,
    LegionParamCount, causal_lm_loss,
};
use legion_model::precision::cast_params;
use legion_model::tokenizer::{
    IMAGE_TOKEN_INDEX, LEGION_QUESTION, LegionTokenizer, PaddedBatch, legion_inference_prompt,
};

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn legion_fixture(name: &str) -> PathBuf {
    fixtures().join("legion").join(name)
}

fn read_npy<T: npyz::Deserialize>(path: &Path) -> (Vec<usize>, Vec<T>) {
    let file = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fixtures/legion.py)", path.display()));
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).expect("valid npy");
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec().expect("npy data"))
}

fn tensor<const D: usize>(path: &Path, device: &Device) -> Tensor<D> {
    let (shape, data) = read_npy::<f32>(path);
    assert_eq!(shape.len(), D, "{}: rank", path.display());
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn max_abs_diff<const D: usize>(what: &str, got: Tensor<D>, want: Tensor<D>) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let diff = (got - want).abs().max().into_scalar::<f32>();
    println!("{what}: max abs diff {diff:.3e}");
    diff
}

struct Fixture {
    images: LegionImages,
    tokens: PaddedBatch,
    seg: u32,
}

fn sizes(meta: &serde_json::Value, key: &str) -> Vec<(usize, usize)> {
    meta[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|hw| {
            (
                hw[0].as_u64().unwrap() as usize,
                hw[1].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

fn load_fixture(device: &Device) -> Fixture {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(legion_fixture("meta.json")).unwrap())
            .unwrap();
    let (shape, input_ids) = read_npy::<i64>(&legion_fixture("input_ids.npy"));
    let (_, labels) = read_npy::<i64>(&legion_fixture("labels.npy"));
    let (_, attention_mask) = read_npy::<i64>(&legion_fixture("attention_mask.npy"));
    Fixture {
        images: LegionImages {
            clip_pixels: tensor(&legion_fixture("clip_pixels.npy"), device),
            sam_pixels: tensor(&legion_fixture("sam_pixels.npy"), device),
            sam_resized_hw: sizes(&meta, "resize_list"),
            original_hw: sizes(&meta, "orig_sizes"),
        },
        tokens: PaddedBatch {
            input_ids,
            labels,
            attention_mask,
            batch: shape[0],
            seq: shape[1],
        },
        seg: meta["seg"].as_u64().unwrap() as u32,
    }
}

fn fixture_model(device: &Device) -> Legion {
    LegionConfig::fixture()
        .init(device)
        .unwrap()
        .load_glamm(
            &legion_fixture("legion_tiny.safetensors"),
            ClipWeights::InCheckpoint,
        )
        .unwrap()
}

#[test]
fn forward_train_matches_the_pytorch_reference() {
    let device = test_device();
    let model = fixture_model(&device);
    let fx = load_fixture(&device);
    let out = model.forward_train(&fx.images, &fx.tokens, fx.seg).unwrap();

    let logits_diff = max_abs_diff(
        "logits",
        out.logits.clone(),
        tensor(&legion_fixture("logits.npy"), &device),
    );
    assert!(logits_diff <= TOLERANCE);
    let (_, want_labels) = read_npy::<i64>(&legion_fixture("labels_expanded.npy"));
    let got_labels: Vec<i64> = out
        .labels
        .clone()
        .into_data()
        .try_into_vec_as::<i64>()
        .unwrap();
    assert_eq!(got_labels, want_labels);

    let (_, counts) = read_npy::<i64>(&legion_fixture("seg_counts.npy"));
    let got_counts: Vec<i64> = out.seg_positions.iter().map(|p| p.len() as i64).collect();
    assert_eq!(got_counts, counts);
    assert_eq!(counts, vec![2, 0, 1], "the fixture covers 2, 0 and 1 [SEG]");
    let seg = Tensor::cat(out.seg_embeddings.clone(), 0);
    let seg_diff = max_abs_diff(
        "seg embeddings",
        seg,
        tensor(&legion_fixture("seg_embeddings.npy"), &device),
    );
    assert!(seg_diff <= TOLERANCE);

    for (row, masks) in out.pred_masks.iter().enumerate() {
        let (h, w) = fx.images.original_hw[row];
        if counts[row] == 0 {
            assert_eq!(masks.dims(), [0, h, w]);
            continue;
        }
        let want = tensor::<3>(&legion_fixture(&format!("masks_{row}.npy")), &device);
        let diff = max_abs_diff(&format!("masks row {row}"), masks.clone(), want.clone());
        assert!(diff <= TOLERANCE);
        // Also report how many pixels change side of the 0 threshold.
        let flips = masks
            .clone()
            .greater_elem(0.0)
            .not_equal(want.greater_elem(0.0))
            .int()
            .sum()
            .into_scalar::<i64>();
        println!("masks row {row}: {flips} pixels differ in sign");
        assert_eq!(flips, 0);
    }

    let (_, want_loss) = read_npy::<f32>(&legion_fixture("ce_loss.npy"));
    let loss = causal_lm_loss(out.logits, out.labels).into_scalar::<f32>();
    println!("ce loss {loss} vs {}", want_loss[0]);
    assert!((loss - want_loss[0]).abs() <= TOLERANCE);
}

/// Max |got - want| relative to max |want|, printed.
fn relative_error<const D: usize>(what: &str, got: Tensor<D>, want: Tensor<D>) -> f32 {
    let scale = want.clone().abs().max().into_scalar::<f32>();
    let err = max_abs_diff(what, got, want) / scale;
    println!("{what}: relative error {err:.3e} (max |ref| {scale:.3})");
    err
}

/// Half-precision weights (what `legion convert --dtype bf16|f16` writes) on f32 inputs: the
/// model computes in its weights' dtype (`legion_model::precision`), returns f32 logits and
/// masks, and stays within a stated distance of PyTorch's f32 reference. Tolerances, relative
/// to the largest reference value: bf16 (8-bit mantissa) 3e-2 for logits and `[SEG]`
/// embeddings, 1e-1 for the masks (the tiny random SAM's logits are ~0.05 at most, so the
/// rounding of its ~1-sized intermediate values weighs more); f16 (11-bit) 1e-2 and 2e-2.
#[test]
fn half_precision_weights_run_close_to_the_f32_reference() {
    let device = Device::flex();
    let fx = load_fixture(&device);
    for (dtype, tolerance, mask_tolerance) in [
        (FloatDType::BF16, 3e-2, 1e-1),
        (FloatDType::F16, 1e-2, 2e-2),
    ] {
        let model = cast_params(fixture_model(&device), dtype);
        assert_eq!(model.llm.dtype(), DType::from(dtype));
        let out = model.forward_train(&fx.images, &fx.tokens, fx.seg).unwrap();
        assert_eq!(
            out.logits.dtype(),
            DType::F32,
            "{dtype:?}: logits leave in f32"
        );
        let err = relative_error(
            &format!("{dtype:?} logits"),
            out.logits,
            tensor(&legion_fixture("logits.npy"), &device),
        );
        assert!(err <= tolerance, "{dtype:?} logits: {err} > {tolerance}");
        // The `[SEG]` prompts stay in the weights' dtype, as in the reference.
        let seg = Tensor::cat(out.seg_embeddings.clone(), 0).cast(FloatDType::F32);
        let err = relative_error(
            &format!("{dtype:?} seg embeddings"),
            seg,
            tensor(&legion_fixture("seg_embeddings.npy"), &device),
        );
        assert!(
            err <= tolerance,
            "{dtype:?} seg embeddings: {err} > {tolerance}"
        );
        for (row, masks) in out.pred_masks.iter().enumerate() {
            if masks.dims()[0] == 0 {
                continue;
            }
            assert_eq!(masks.dtype(), DType::F32, "{dtype:?}: masks leave in f32");
            let want = tensor::<3>(&legion_fixture(&format!("masks_{row}.npy")), &device);
            let err = relative_error(&format!("{dtype:?} masks row {row}"), masks.clone(), want);
            assert!(
                err <= mask_tolerance,
                "{dtype:?} masks row {row}: {err} > {mask_tolerance}"
            );
        }
    }
}

#[test]
fn clip_from_a_separate_hf_file_gives_the_same_model() {
    let device = test_device();
    let fx = load_fixture(&device);
    let combined = fixture_model(&device);
    let separate = LegionConfig::fixture()
        .init(&device)
        .unwrap()
        .load_glamm(
            &legion_fixture("legion_tiny.safetensors"),
            ClipWeights::HfFile(&legion_fixture("clip_hf.safetensors")),
        )
        .unwrap();
    let a = combined
        .encode_images(fx.images.clip_pixels.clone())
        .unwrap();
    let b = separate.encode_images(fx.images.clip_pixels).unwrap();
    assert_eq!(max_abs_diff("image tokens", a, b), 0.0);
}

#[test]
fn strict_loading_rejects_a_mismatched_config() {
    let device = test_device();
    let err = LegionConfig::tiny()
        .init(&device)
        .unwrap()
        .load_glamm(
            &legion_fixture("legion_tiny.safetensors"),
            ClipWeights::InCheckpoint,
        )
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, LegionError::Weights(_)), "{message}");
    assert!(message.contains("do not match"), "{message}");
}

/// One row of the fixture batch, without padding.
fn single_row(fx: &Fixture, row: usize, device: &Device) -> (LegionImages, PaddedBatch) {
    let seq = fx.tokens.seq;
    let ids = &fx.tokens.input_ids[row * seq..(row + 1) * seq];
    let len = fx.tokens.attention_mask[row * seq..(row + 1) * seq]
        .iter()
        .filter(|&&m| m == 1)
        .count();
    let pick = |t: &Tensor<4>| t.clone().narrow(0, row, 1).to_device(device);
    (
        LegionImages {
            clip_pixels: pick(&fx.images.clip_pixels),
            sam_pixels: pick(&fx.images.sam_pixels),
            sam_resized_hw: vec![fx.images.sam_resized_hw[row]],
            original_hw: vec![fx.images.original_hw[row]],
        },
        PaddedBatch {
            input_ids: ids[..len].to_vec(),
            labels: fx.tokens.labels[row * seq..row * seq + len].to_vec(),
            attention_mask: vec![1; len],
            batch: 1,
            seq: len,
        },
    )
}

#[test]
fn batched_forward_with_padding_equals_per_sample() {
    let device = test_device();
    let model = fixture_model(&device);
    let fx = load_fixture(&device);
    let batched = model.forward_train(&fx.images, &fx.tokens, fx.seg).unwrap();
    let n_img = model.num_image_tokens();
    for row in 0..fx.tokens.batch {
        let (images, tokens) = single_row(&fx, row, &device);
        let single = model.forward_train(&images, &tokens, fx.seg).unwrap();
        let valid = tokens.seq + n_img - 1;
        let vocab = batched.logits.dims()[2];
        let batched_logits = batched
            .logits
            .clone()
            .narrow(0, row, 1)
            .narrow(1, 0, valid)
            .reshape([valid, vocab]);
        let single_logits = single.logits.reshape([valid, vocab]);
        let diff = max_abs_diff(&format!("row {row} logits"), batched_logits, single_logits);
        assert!(diff <= 1e-5);
        assert_eq!(single.seg_positions[0], batched.seg_positions[row]);
        if !single.seg_positions[0].is_empty() {
            let d = max_abs_diff(
                &format!("row {row} seg"),
                single.seg_embeddings[0].clone(),
                batched.seg_embeddings[row].clone(),
            );
            assert!(d <= 1e-5);
            let d = max_abs_diff(
                &format!("row {row} masks"),
                single.pred_masks[0].clone(),
                batched.pred_masks[row].clone(),
            );
            assert!(d <= 1e-4);
        }
    }
}

#[test]
fn legion_for_cls_matches_the_clip_fixture() {
    let device = test_device();
    let config = LegionClsConfig::new(
        legion_model::clip_vision::ClipVisionConfig::new(28, 14, 16, 2, 2, 32),
        legion_model::detection_head::DetectionHeadConfig::new(16, 32),
    );
    let model = config
        .init(&device)
        .unwrap()
        .load_glamm(&fixtures().join("clip/legion_cls_glamm.safetensors"))
        .unwrap();
    let logits = model
        .forward(tensor(&fixtures().join("clip/glamm_pixels.npy"), &device))
        .unwrap();
    let want = tensor(&fixtures().join("clip/glamm_logits.npy"), &device);
    assert!(max_abs_diff("cls logits", logits, want) <= TOLERANCE);
}

/// Makes the tiny LLM a bigram machine that emits `script` after the prompt's last token:
/// identity decoder layers (zero attention and MLP outputs), one-hot embeddings for the script's
/// tokens and an `lm_head` mapping each to its successor.
fn scripted_llm(model: &mut Legion, last_prompt_token: u32, script: &[u32], device: &Device) {
    let llm = &mut model.llm;
    let [vocab, hidden] = llm.embed_tokens.weight.dims();
    let chain: Vec<u32> = std::iter::once(last_prompt_token)
        .chain(script.iter().copied())
        .collect();
    assert!(chain.len() <= hidden);
    let mut embedding = vec![0f32; vocab * hidden];
    let mut head = vec![0f32; hidden * vocab]; // burn Linear weight: [d_in, d_out]
    for (k, pair) in chain.windows(2).enumerate() {
        let (current, next) = (pair[0] as usize, pair[1] as usize);
        assert!(
            embedding[current * hidden..(current + 1) * hidden]
                .iter()
                .all(|&v| v == 0.0),
            "script tokens must be distinct"
        );
        embedding[current * hidden + k] = 1.0;
        head[k * vocab + next] = 10.0;
    }
    llm.embed_tokens.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(embedding, [vocab, hidden]),
        device,
    ));
    llm.lm_head.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(head, [hidden, vocab]),
        device,
    ));
    llm.norm.gamma = Param::from_tensor(Tensor::ones([hidden], device));
    for layer in &mut llm.layers {
        let o = layer.self_attn.o_proj.weight.dims();
        layer.self_attn.o_proj.weight = Param::from_tensor(Tensor::zeros(o, device));
        let d = layer.mlp.down_proj.weight.dims();
        layer.mlp.down_proj.weight = Param::from_tensor(Tensor::zeros(d, device));
    }
}

/// The tiny LEGION with a scripted LLM that answers `<p> hand</p>[SEG]:Fused</s>`, its tokenizer,
/// the scripted tokens, the inference prompt and a greedy generation config.
fn scripted_legion(
    device: &Device,
) -> (
    Legion,
    LegionTokenizer,
    Vec<u32>,
    Vec<i64>,
    GenerationConfig,
) {
    let tokenizer =
        LegionTokenizer::from_file(&fixtures().join("tokenizer/tokenizer.json")).unwrap();
    let mut config = LegionConfig::tiny();
    config.llm.vocab_size = tokenizer.vocab_size();
    let mut model = config.init(device).unwrap();

    let special = *tokenizer.special();
    // Distinct tokens only (a bigram machine cannot repeat one): `<p>`, "▁ha", "nd", `</p>`,
    // `[SEG]`, ":", "F" (byte fallback), "used", `</s>`.
    let id = |t: &str| tokenizer.inner().token_to_id(t).unwrap();
    let script = vec![
        special.phrase_start,
        id("▁ha"),
        id("nd"),
        special.phrase_end,
        special.seg,
        id(":"),
        id("<0x46>"),
        id("used"),
        special.eos,
    ];
    let prompt = tokenizer
        .tokenize_with_image(&legion_inference_prompt(LEGION_QUESTION))
        .unwrap();
    let last = *prompt.last().unwrap();
    assert_ne!(last, IMAGE_TOKEN_INDEX);
    scripted_llm(&mut model, last as u32, &script, device);

    let generation = GenerationConfig {
        max_new_tokens: 20,
        eos_token_id: Some(special.eos),
        stop_token_ids: Vec::new(),
        pad_token_id: special.unk,
        sampling: Sampling::Greedy,
        return_hidden_states: false,
    };
    (model, tokenizer, script, prompt, generation)
}

/// One image for the tiny config (CLIP 32 px, SAM 64 px canvas holding a 48x64 resize of a
/// 30x40 original) with fixed pseudo-random pixels: not drawn from the device's RNG, which
/// tests running in parallel share, so every run sees the same image.
fn test_images(device: &Device) -> LegionImages {
    let pixels = |shape: [usize; 4], salt: u64| {
        let n = shape.iter().product::<usize>() as u64;
        // SplitMix64, mapped to [-2, 2).
        let values: Vec<f32> = (0..n)
            .map(|i| {
                let mut z = (i + salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect();
        Tensor::<4>::from_data(TensorData::new(values, shape), device)
    };
    LegionImages {
        clip_pixels: pixels([1, 3, 32, 32], 1),
        sam_pixels: pixels([1, 3, 64, 64], 1 << 20),
        sam_resized_hw: vec![(48, 64)],
        original_hw: vec![(30, 40)],
    }
}

#[test]
fn analyze_runs_end_to_end_with_a_scripted_llm() {
    let device = test_device();
    device.seed(11);
    let (model, tokenizer, script, prompt, generation) = scripted_legion(&device);
    let special = *tokenizer.special();
    let images = test_images(&device);
    let analyses = model.analyze(&images, &tokenizer, &generation).unwrap();
    assert_eq!(analyses.len(), 1);
    let analysis = &analyses[0];
    println!("text {:?} clean {:?}", analysis.text, analysis.clean_text);
    assert_eq!(analysis.generated_tokens, script);
    assert_eq!(analysis.finish_reason, FinishReason::Eos);
    assert_eq!(analysis.phrases, vec!["hand"]);
    assert_eq!(analysis.artifacts.len(), 1);
    let artifact = &analysis.artifacts[0];
    assert_eq!(artifact.phrase.as_deref(), Some("hand"));
    assert_eq!(artifact.explanation.as_deref(), Some("Fused"));
    assert_eq!(artifact.mask_logits.dims(), [30, 40]);
    assert_eq!(artifact.binary_mask().dims(), [30, 40]);
    assert!((0.0..=1.0).contains(&artifact.score));
    assert!(artifact.area <= 30 * 40);
    assert_eq!(analysis.text, "<p> hand</p>[SEG]:Fused");
    assert_eq!(analysis.clean_text, "hand:Fused");

    // The [SEG] mask equals the training path's mask for the same sequence: teacher-force the
    // prompt + generated answer and compare.
    let mut ids = prompt.clone();
    ids.extend(script.iter().map(|&t| t as i64));
    let seq = ids.len();
    let tokens = PaddedBatch {
        labels: vec![-100; seq],
        attention_mask: vec![1; seq],
        input_ids: ids,
        batch: 1,
        seq,
    };
    let train = model.forward_train(&images, &tokens, special.seg).unwrap();
    let teacher = train.pred_masks[0].clone().reshape([30, 40]);
    let diff = max_abs_diff(
        "analyze vs teacher-forced mask",
        artifact.mask_logits.clone(),
        teacher,
    );
    assert!(diff <= 1e-4);
}

/// The scripted model with bf16 and f16 weights generates the same answer, and its masks stay
/// within 1e-1 (bf16) / 5e-2 (f16) of the f32 model's, relative to their largest value. The
/// random tiny SAM's mask logits are small (~0.08 at most), and its initial weights come from
/// the device RNG that parallel tests share, so the error varies from run to run (seen:
/// bf16 2.4e-2 to 5.9e-2, f16 1.2e-3 to 2.8e-2).
#[test]
fn analyze_with_half_precision_weights_gives_the_same_answer() {
    let device = Device::flex();
    device.seed(11);
    let (model, tokenizer, script, _, mut generation) = scripted_legion(&device);
    generation.return_hidden_states = false;
    let images = test_images(&device);
    let reference = model.analyze(&images, &tokenizer, &generation).unwrap();
    for (dtype, tolerance) in [(FloatDType::BF16, 1e-1), (FloatDType::F16, 5e-2)] {
        let half = cast_params(model.clone(), dtype);
        let analyses = half.analyze(&images, &tokenizer, &generation).unwrap();
        assert_eq!(analyses[0].generated_tokens, script, "{dtype:?}");
        assert_eq!(analyses[0].text, reference[0].text, "{dtype:?}");
        let err = relative_error(
            &format!("{dtype:?} analyze mask logits"),
            analyses[0].artifacts[0].mask_logits.clone(),
            reference[0].artifacts[0].mask_logits.clone(),
        );
        assert!(err <= tolerance, "{dtype:?}: {err} > {tolerance}");
    }
}

#[test]
fn legion_7b_parameter_count_without_allocating() {
    let device = Device::flex();
    let rss = || -> Option<usize> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    };
    let before = rss();
    let model = LegionConfig::legion_7b().init(&device).unwrap();
    let counts = LegionParamCount::of(&model);
    let after = rss();
    println!("{counts:?}");
    println!(
        "total {} = {:.3} B params; f32 {:.2} GiB, bf16 {:.2} GiB",
        counts.total(),
        counts.total() as f64 / 1e9,
        counts.bytes(4) as f64 / (1u64 << 30) as f64,
        counts.bytes(2) as f64 / (1u64 << 30) as f64
    );
    // Vicuna-7B (LLaMA-2-7B, 6,738,415,616 at 32000 tokens) + 7 added tokens in embed and head.
    assert_eq!(counts.llm, 6_738_415_616 + 2 * 7 * 4096);
    // 1024 -> 4096 -> 4096 with biases.
    assert_eq!(counts.mm_projector, 1024 * 4096 + 4096 + 4096 * 4096 + 4096);
    assert_eq!(
        counts.text_hidden_fcs,
        4096 * 4096 + 4096 + 4096 * 256 + 256
    );
    // segment_anything's ViT-H, counted by scripts/fixtures/sam.py.
    let sam_counts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("sam/param_counts.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        counts.grounding_encoder as u64,
        sam_counts["vit_h"]["elements"].as_u64().unwrap()
    );
    // CLIP ViT-L/14-336 vision tower (transformers CLIPVisionModel).
    assert_eq!(counts.vision_tower, 303_507_456);
    if let (Some(before), Some(after)) = (before, after) {
        let grown = after.saturating_sub(before);
        println!(
            "resident memory grew by {:.1} MiB",
            grown as f64 / (1 << 20) as f64
        );
        // Lazy parameters: only SAM's eager buffers (pos_embed 21 MB, rel-pos tables) exist.
        assert!(
            grown < 256 << 20,
            "building the 7B model allocated {grown} bytes"
        );
    }
}

#[test]
fn bad_inputs_are_errors() {
    let device = test_device();
    let model = fixture_model(&device);
    let fx = load_fixture(&device);
    let mut short = fx.images.clone();
    short.original_hw.pop();
    assert!(matches!(
        model.forward_train(&short, &fx.tokens, fx.seg),
        Err(LegionError::Input(_))
    ));
    let mut wrong_id = fx.tokens.clone();
    wrong_id.input_ids[1] = 4800;
    assert!(matches!(
        model.forward_train(&fx.images, &wrong_id, fx.seg),
        Err(LegionError::Input(_))
    ));
    let _: Tensor<2, Int> = Tensor::zeros([1, 1], &device);
}

mod debug_forward {
    //! `legion_model::debug` on the committed fixtures of every component.

    use super::*;
    use burn::config::Config;
    use legion_model::debug::{
        DebugComponent, DebugError, debug_forward, read_npy_f32, write_npy_f32,
    };
    use legion_model::sam::SamConfig;

    /// A fresh checkpoint directory under the system temp dir holding `weights` as
    /// `model.safetensors`.
    fn checkpoint_dir(name: &str, weights: &Path) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("legion-model-debug-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(weights, dir.join("model.safetensors")).unwrap();
        dir
    }

    fn compare(what: &str, got: &Path, want_shape: &[usize], want: &[f32]) -> f32 {
        let got = read_npy_f32(got).unwrap();
        assert_eq!(got.shape, want_shape, "{what}: shape");
        let diff = got
            .data
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{what}: max abs diff {diff:.3e}");
        diff
    }

    #[test]
    fn clip_vision() {
        let dir = checkpoint_dir("clip", &fixtures().join("clip/clip_vision_hf.safetensors"));
        std::fs::write(
            dir.join("config.json"),
            r#"{"model_type": "clip_vision_model", "image_size": 42, "patch_size": 14,
                "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
                "intermediate_size": 64, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}"#,
        )
        .unwrap();
        let out = dir.join("out.npy");
        let shape = debug_forward(
            DebugComponent::ClipVision,
            &dir,
            &[fixtures().join("clip/clip_hf_pixels.npy")],
            &out,
            &test_device(),
        )
        .unwrap();
        assert_eq!(shape, vec![2, 9, 32]);
        // hidden_states [4, 2, 10, 32]: index 2 (= -2), CLS dropped.
        let states = read_npy_f32(&fixtures().join("clip/clip_hf_hidden_states.npy")).unwrap();
        let layer = &states.data[2 * 2 * 10 * 32..3 * 2 * 10 * 32];
        let want: Vec<f32> = (0..2)
            .flat_map(|b| layer[b * 320 + 32..(b + 1) * 320].iter().copied())
            .collect();
        assert!(compare("clip-vision", &out, &[2, 9, 32], &want) <= TOLERANCE);
    }

    #[test]
    fn llama() {
        let dir = checkpoint_dir("llama", &fixtures().join("llama/model.safetensors"));
        std::fs::copy(
            fixtures().join("llama/config.json"),
            dir.join("config.json"),
        )
        .unwrap();
        let out = dir.join("out.npy");
        debug_forward(
            DebugComponent::Llama,
            &dir,
            &[
                fixtures().join("llama/input_ids.npy"),
                fixtures().join("llama/attention_mask.npy"),
            ],
            &out,
            &test_device(),
        )
        .unwrap();
        let want = read_npy_f32(&fixtures().join("llama/logits.npy")).unwrap();
        // Compare the real (unpadded) positions only: padded query rows are unused.
        let mask = legion_model::debug::read_npy_i64(&fixtures().join("llama/attention_mask.npy"))
            .unwrap();
        let got = read_npy_f32(&out).unwrap();
        assert_eq!(got.shape, want.shape);
        let vocab = want.shape[2];
        let mut diff = 0f32;
        for (pos, &m) in mask.data.iter().enumerate() {
            if m == 1 {
                for v in 0..vocab {
                    let i = pos * vocab + v;
                    diff = diff.max((got.data[i] - want.data[i]).abs());
                }
            }
        }
        println!("llama: max abs diff {diff:.3e}");
        assert!(diff <= TOLERANCE);
    }

    #[test]
    fn sam_image_encoder_and_mask_decoder() {
        let dir = checkpoint_dir("sam", &fixtures().join("sam/sam_tiny.safetensors"));
        SamConfig::tiny().save(dir.join("config.json")).unwrap();
        let out = dir.join("embedding.npy");
        let sam = |name: &str| fixtures().join("sam").join(name);
        debug_forward(
            DebugComponent::SamImageEncoder,
            &dir,
            &[sam("encoder_in.npy")],
            &out,
            &test_device(),
        )
        .unwrap();
        let want = read_npy_f32(&sam("encoder_out.npy")).unwrap();
        assert!(compare("sam-image-encoder", &out, &want.shape, &want.data) <= TOLERANCE);

        let masks = dir.join("masks.npy");
        debug_forward(
            DebugComponent::SamMaskDecoder,
            &dir,
            &[sam("encoder_out.npy"), sam("legion_seg.npy")],
            &masks,
            &test_device(),
        )
        .unwrap();
        let want = read_npy_f32(&sam("legion_low_res.npy")).unwrap();
        assert!(compare("sam-mask-decoder", &masks, &want.shape, &want.data) <= TOLERANCE);
    }

    #[test]
    fn legion() {
        let dir = checkpoint_dir("legion", &legion_fixture("legion_tiny.safetensors"));
        LegionConfig::fixture()
            .save(dir.join("config.json"))
            .unwrap();
        let out = dir.join("out.npy");
        debug_forward(
            DebugComponent::Legion,
            &dir,
            &[
                legion_fixture("clip_pixels.npy"),
                legion_fixture("input_ids.npy"),
                legion_fixture("attention_mask.npy"),
            ],
            &out,
            &test_device(),
        )
        .unwrap();
        let want = read_npy_f32(&legion_fixture("logits.npy")).unwrap();
        assert!(compare("legion", &out, &want.shape, &want.data) <= TOLERANCE);

        // With CLIP in a separate HF file next to the combined one.
        std::fs::copy(
            legion_fixture("clip_hf.safetensors"),
            dir.join("clip.safetensors"),
        )
        .unwrap();
        debug_forward(
            DebugComponent::Legion,
            &dir,
            &[
                legion_fixture("clip_pixels.npy"),
                legion_fixture("input_ids.npy"),
                legion_fixture("attention_mask.npy"),
            ],
            &out,
            &test_device(),
        )
        .unwrap();
        assert!(compare("legion (separate CLIP)", &out, &want.shape, &want.data) <= TOLERANCE);
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(
            "sam".parse::<DebugComponent>(),
            Err(DebugError::UnknownComponent(_))
        ));
        for c in DebugComponent::ALL {
            assert_eq!(c.name().parse::<DebugComponent>().unwrap(), c);
        }
        let dir = checkpoint_dir("errors", &fixtures().join("sam/sam_tiny.safetensors"));
        SamConfig::tiny().save(dir.join("config.json")).unwrap();
        let err = debug_forward(
            DebugComponent::SamImageEncoder,
            &dir,
            &[],
            &dir.join("out.npy"),
            &test_device(),
        )
        .unwrap_err();
        assert!(matches!(err, DebugError::Inputs { got: 0, .. }), "{err}");
        // An int array where floats are expected.
        let ids = dir.join("ids.npy");
        std::fs::copy(fixtures().join("llama/input_ids.npy"), &ids).unwrap();
        let err = debug_forward(
            DebugComponent::SamImageEncoder,
            &dir,
            &[ids],
            &dir.join("out.npy"),
            &test_device(),
        )
        .unwrap_err();
        assert!(matches!(err, DebugError::Npy { .. }), "{err}");
        // Round trip of the writer.
        let path = dir.join("rt.npy");
        write_npy_f32(&path, &[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.5]).unwrap();
        let back = read_npy_f32(&path).unwrap();
        assert_eq!(back.shape, vec![2, 3]);
        assert_eq!(back.data[5], 5.5);
    }
}

/// The tiny model analyses a shipped image end to end: decode and preprocess with legion-data
/// (CLIP and SAM paths at the tiny sizes), generate, segment every `[SEG]`, parse.
#[test]
fn analyze_runs_on_a_shipped_image() {
    use legion_data::preprocess::{
        ClipPreprocessConfig, SamPreprocessConfig, clip_preprocess, sam_preprocess,
    };
    let device = test_device();
    device.seed(11);
    let (model, tokenizer, script, _prompt, generation) = scripted_legion(&device);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/synthscars-tiny/test/images/test_00000.png");
    let image = legion_data::image_io::decode_rgb(&path).unwrap();
    let clip = clip_preprocess(&image, &ClipPreprocessConfig::new(32, 32)).unwrap();
    let sam = sam_preprocess(&image, &SamPreprocessConfig::new(64, 64)).unwrap();
    let images = LegionImages {
        clip_pixels: clip.to_tensor(&device).unsqueeze_dim(0),
        sam_pixels: sam.to_tensor(&device).unsqueeze_dim(0),
        sam_resized_hw: vec![(sam.resized_hw.0 as usize, sam.resized_hw.1 as usize)],
        original_hw: vec![(image.height() as usize, image.width() as usize)],
    };
    let analyses = model.analyze(&images, &tokenizer, &generation).unwrap();
    let analysis = &analyses[0];
    assert_eq!(analysis.generated_tokens, script);
    assert_eq!(analysis.artifacts.len(), 1);
    let mask = analysis.artifacts[0].binary_mask();
    assert_eq!(
        mask.dims(),
        [image.height() as usize, image.width() as usize]
    );
}
