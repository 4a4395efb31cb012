//! Training a small LLaMA-layout tokenizer for the tiny configs, in Rust.
//!
//! The real LEGION tokenizer (Vicuna's 32k SentencePiece vocabulary plus GLaMM's added tokens)
//! cannot be shipped; the tiny model needs a vocabulary that fits its 640-entry embedding and
//! keeps the prompt short. This builds one with the same *layout* as the LLaMA `tokenizer.json`
//! (so [`LegionTokenizer`]'s label arithmetic, which relies on LLaMA's "`▁` before every word,
//! trailing space = its own token" behaviour, holds unchanged):
//! - BPE with byte fallback (`<0x00>`..`<0xFF>` in the vocabulary), ids 0/1/2 = `<unk>`, `<s>`,
//!   `</s>`; trained per word (a Metaspace pre-tokenizer during training, so merges never cross
//!   a word start);
//! - then the legacy LLaMA pipeline: normalizer `Prepend("▁")` + `Replace(" ", "▁")`, no
//!   pre-tokenizer, post-processor `<s> $A`, decoder `Replace("▁", " ")`, `ByteFallback`,
//!   `Fuse`, `Strip(" ", 1, 0)`;
//! - GLaMM's added special tokens in GLaMM's order (`<im_start>`, `<im_end>`, `<bbox>`,
//!   `<point>`, `[SEG]`, `<p>`, `</p>`).
//!
//! `scripts/fixtures/tokenizer.py` builds the same layout with Python `tokenizers`; the test
//! fixture made there checks [`LegionTokenizer`] against Python's ids.

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{AddedToken, TokenizerBuilder};

use crate::tokenizer::{
    BBOX, IM_END, IM_START, LEGION_IMAGE_PREFIX, LEGION_QUESTION, LLAVA_V1_SYSTEM, LegionTokenizer,
    PHRASE_END, PHRASE_START, SEG, TokenizerError,
};

/// GLaMM's added tokens, in the order GLaMM adds them.
pub const GLAMM_ADDED_TOKENS: [&str; 7] = [
    IM_START,
    IM_END,
    BBOX,
    "<point>",
    SEG,
    PHRASE_START,
    PHRASE_END,
];

/// Trains a LLaMA-layout BPE tokenizer on `corpus` (plus LEGION's fixed prompt texts) with at
/// most `vocab_size` entries in total (byte tokens and GLaMM's added tokens included).
///
/// Deterministic: the same corpus and size give the same `tokenizer.json`.
///
/// # Errors
/// [`TokenizerError::TrainVocabSize`] when `vocab_size` cannot hold the 3 + 256 + 7 fixed
/// tokens, [`TokenizerError::Train`] when the `tokenizers` training fails.
pub fn train_llama_like_tokenizer(
    corpus: &[String],
    vocab_size: usize,
) -> Result<LegionTokenizer, TokenizerError> {
    const SOURCE: &str = "<trained tokenizer>";
    let fail = |stage: &'static str| {
        move |source: tokenizers::Error| TokenizerError::Train { stage, source }
    };
    let fixed = 3 + 256 + GLAMM_ADDED_TOKENS.len();
    if vocab_size <= fixed {
        return Err(TokenizerError::TrainVocabSize { vocab_size, fixed });
    }
    let byte_tokens: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
    let mut specials: Vec<AddedToken> = ["<unk>", "<s>", "</s>"]
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    specials.extend(
        byte_tokens
            .iter()
            .map(|t| AddedToken::from(t.clone(), true)),
    );
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size - GLAMM_ADDED_TOKENS.len())
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .build();
    let model = BPE::builder()
        .unk_token("<unk>".into())
        .byte_fallback(true)
        .fuse_unk(true)
        .build()
        .map_err(fail("building the BPE model"))?;
    let mut builder = TokenizerBuilder::new()
        .with_model(model)
        .with_normalizer(None::<tokenizers::NormalizerWrapper>)
        .with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::First, true)))
        .with_post_processor(None::<tokenizers::PostProcessorWrapper>)
        .with_decoder(None::<tokenizers::DecoderWrapper>)
        .build()
        .map_err(fail("building the tokenizer"))?;
    // Every training sequence holds the fixed prompt once, so the corpus does too: its words
    // get merged by frequency like the captions' (once only, they would stay byte-level and
    // triple the sequence length).
    let prompt =
        format!("{LLAVA_V1_SYSTEM} USER: {LEGION_IMAGE_PREFIX}{LEGION_QUESTION} ASSISTANT:");
    let texts: Vec<String> = corpus
        .iter()
        .flat_map(|caption| [prompt.clone(), caption.clone()])
        .collect();
    builder
        .train(&mut trainer, texts.iter())
        .map_err(fail("BPE training"))?;

    // Switch to the legacy LLaMA layout through the serialised form, which is the stable API.
    let serialised = builder
        .to_string(false)
        .map_err(fail("serialising the trained tokenizer"))?;
    let mut spec: serde_json::Value = serde_json::from_str(&serialised)
        .map_err(|e| fail("re-reading the trained tokenizer")(e.into()))?;
    spec["pre_tokenizer"] = serde_json::Value::Null;
    spec["normalizer"] = serde_json::json!({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
    ]});
    spec["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
    });
    spec["decoder"] = serde_json::json!({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}
    ]});
    // Byte tokens are ordinary vocabulary entries in LLaMA, not added tokens.
    if let Some(added) = spec["added_tokens"].as_array_mut() {
        added.retain(|t| {
            t["content"]
                .as_str()
                .is_none_or(|c| !byte_tokens.iter().any(|b| b == c))
        });
    }
    let mut inner: tokenizers::Tokenizer = spec
        .to_string()
        .parse()
        .map_err(fail("loading the LLaMA-layout tokenizer"))?;
    let glamm: Vec<AddedToken> = GLAMM_ADDED_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true).normalized(false))
        .collect();
    inner.add_special_tokens(&glamm);
    LegionTokenizer::new(inner, SOURCE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{LEGION_QUESTION, legion_training_conversation};

    fn corpus() -> Vec<String> {
        vec![
            "Upon examining the image. I have found: The image presents a dog.".into(),
            "The snout of the dog:Its contour is warped.The shadow of the dog:It is wrong.".into(),
        ]
    }

    #[test]
    fn trained_tokenizer_has_the_llama_layout_and_is_deterministic() {
        let tok = train_llama_like_tokenizer(&corpus(), 400).unwrap();
        assert!(tok.vocab_size() <= 400, "{}", tok.vocab_size());
        let special = *tok.special();
        assert_eq!((special.unk, special.bos, special.eos), (0, 1, 2));
        // Added tokens follow the trained vocabulary, in GLaMM's order.
        assert_eq!(special.seg, special.im_start + 4);
        let again = train_llama_like_tokenizer(&corpus(), 400).unwrap();
        assert_eq!(
            tok.inner().to_string(false).unwrap(),
            again.inner().to_string(false).unwrap()
        );
        // Round trip and whole special tokens inside text.
        let text = "The snout <p> of </p> [SEG] dog: warped!";
        let ids = tok.encode(text, false).unwrap();
        assert!(ids.contains(&special.seg) && ids.contains(&special.phrase_start));
        // As LLaMA's fast tokenizer, the decoder keeps the space both before and after an
        // added token (`<p>  of`); the answer parser collapses whitespace.
        let decoded = tok.decode(&ids, false).unwrap();
        let collapse = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(collapse(&decoded), text);
        // The label arithmetic of the LLaMA layout holds: a full training example builds.
        let conversation =
            legion_training_conversation(LEGION_QUESTION, "The dog <p> snout </p> [SEG].");
        let example = tok.training_example(&conversation, 4096).unwrap();
        let answer: Vec<u32> = example
            .labels
            .iter()
            .filter(|&&l| l >= 0)
            .map(|&l| l as u32)
            .collect();
        let no_spaces = |s: &str| s.replace(' ', "");
        assert_eq!(
            no_spaces(&tok.decode(&answer, false).unwrap()),
            "Thedog<p>snout</p>[SEG].</s>"
        );
    }

    #[test]
    fn too_small_a_vocabulary_is_an_error() {
        assert!(train_llama_like_tokenizer(&corpus(), 200).is_err());
    }
}
