//! Tiny model bundles for tests and demos, made in code (no weights to download).
//!
//! [`scripted_bundle`] is the tiny LEGION config with random CLIP / SAM weights and an LLM
//! rewired into a deterministic "bigram machine" (each token's embedding is a one-hot that
//! `lm_head` maps to the next token of a script; attention and MLP outputs are zeroed) that
//! always answers `<p> PHRASE</p>[SEG] :EXPLANATION</s>`. So every analysis has exactly one
//! artifact whose mask comes from the (random) SAM decoder: the whole pipeline — generation,
//! `[SEG]` -> mask, parsing, records, overlays, eval — runs on real tensors, with a known
//! answer. It says nothing about the quality of a trained model.

use std::sync::Mutex;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use legion_model::bundle::{BundleMeta, ModelBundle};
use legion_model::legion::LegionConfig;
use legion_model::tokenizer::{LEGION_QUESTION, legion_inference_prompt};
use legion_model::tokenizer_train::train_llama_like_tokenizer;

use crate::error::InferError;

/// The phrase the scripted model names.
pub const SCRIPTED_PHRASE: &str = "hand";
/// The explanation the scripted model gives.
pub const SCRIPTED_EXPLANATION: &str = "Fused fingers";

/// The tiny bundle with a scripted LLM (see the module docs); `seed` fixes the random CLIP /
/// SAM weights.
///
/// # Errors
/// [`InferError::Config`] when the tokenizer cannot express the script with distinct tokens,
/// [`InferError::Tokenizer`] when training or using it fails.
pub fn scripted_bundle(device: &Device, seed: u64) -> Result<ModelBundle, InferError> {
    // The script's words are repeated so BPE merges each into one token: a bigram machine
    // cannot emit a token twice, and a lone ":" would repeat the prompt's last token.
    let mut corpus: Vec<String> = vec![format!("{SCRIPTED_PHRASE} :{SCRIPTED_EXPLANATION}"); 64];
    corpus.push("the shadow falls the wrong way; the text on the sign is garbled".into());
    let tokenizer = train_llama_like_tokenizer(&corpus, 640)?;
    let mut config = LegionConfig::tiny();
    config.llm.vocab_size = config.llm.vocab_size.max(tokenizer.vocab_size());
    let mut model = seeded_init(device, seed, || config.init(device))?;

    let special = *tokenizer.special();
    let encode = |text: &str| tokenizer.encode(text, false);
    let mut script = vec![special.phrase_start];
    script.extend(encode(SCRIPTED_PHRASE)?);
    script.extend([special.phrase_end, special.seg]);
    script.extend(encode(&format!(":{SCRIPTED_EXPLANATION}"))?);
    script.push(special.eos);
    let prompt = tokenizer.tokenize_with_image(&legion_inference_prompt(LEGION_QUESTION))?;
    let last = *prompt.last().expect("the prompt is not empty");
    let last = u32::try_from(last)
        .map_err(|_| InferError::Config("the prompt ends with the image".into()))?;

    let llm = &mut model.llm;
    let [vocab, hidden] = llm.embed_tokens.weight.dims();
    let chain: Vec<u32> = std::iter::once(last)
        .chain(script.iter().copied())
        .collect();
    if chain.len() > hidden {
        return Err(InferError::Config(format!(
            "script of {} tokens does not fit the hidden size {hidden}",
            chain.len()
        )));
    }
    let mut embedding = vec![0f32; vocab * hidden];
    let mut head = vec![0f32; hidden * vocab];
    for (k, pair) in chain.windows(2).enumerate() {
        let (current, next) = (pair[0] as usize, pair[1] as usize);
        if embedding[current * hidden..(current + 1) * hidden]
            .iter()
            .any(|&v| v != 0.0)
        {
            return Err(InferError::Config(format!(
                "token {current} occurs twice in the script {chain:?}"
            )));
        }
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
    Ok(ModelBundle {
        meta: BundleMeta::new(&config, "legion_infer::testing::scripted_bundle"),
        config,
        model,
        tokenizer,
    })
}

/// A `LegionForCls` detector on the tiny CLIP tower (`LegionConfig::tiny().clip`) with random
/// weights fixed by `seed`; its scores are arbitrary but deterministic.
///
/// # Errors
/// [`InferError::Model`] if the tiny configs stop fitting together.
pub fn tiny_detector(device: &Device, seed: u64) -> Result<crate::detect::Detector, InferError> {
    let clip = LegionConfig::tiny().clip;
    let head = legion_model::detection_head::DetectionHeadConfig::new(
        clip.hidden_size,
        2 * clip.hidden_size,
    );
    let config = legion_model::legion::LegionClsConfig::new(clip, head);
    let model = seeded_init(device, seed, || config.init(device))?;
    Ok(crate::detect::Detector::new(config, model, device.clone()))
}

/// Seeds `device` and runs `init` under one process-wide lock, and draws every parameter's
/// values before releasing it. Why: the backend's RNG is process-global, and burn draws a
/// parameter's values lazily, when it is first used; tests running in parallel threads then
/// interleaved their draws, so "seeded" weights changed from run to run (a pipeline test's
/// random SAM decoder gave an empty mask in one of six runs of the whole suite).
fn seeded_init<M: Module, E>(
    device: &Device,
    seed: u64,
    init: impl FnOnce() -> Result<M, E>,
) -> Result<M, E> {
    static SEEDED: Mutex<()> = Mutex::new(());
    let _guard = SEEDED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    device.seed(seed);
    let model = init()?;
    model.visit(&mut DrawValues);
    Ok(model)
}

/// Reads every float parameter once, which runs its lazy initializer.
struct DrawValues;

impl ModuleVisitor for DrawValues {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}
