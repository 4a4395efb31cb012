//! The tokenizer wrapper against Python: ids, the `llava_v1` template, image-token splitting and
//! the label mask.
//!
//! Fixtures: `tests/fixtures/tokenizer/{tokenizer.json,expected.json}`, made by
//! `scripts/fixtures/tokenizer.py` (a small LLaMA-like BPE/byte-fallback tokenizer with GLaMM's
//! added tokens, ids from Python `tokenizers`, template/labels reimplemented from the
//! groundingLMM/LEGION reference text).

use std::path::{Path, PathBuf};

use legion_model::tokenizer::{
    Conversation, IGNORE_INDEX, IMAGE_TOKEN_INDEX, LEGION_QUESTION, LegionTokenizer, Role,
    TokenizerError, legion_inference_prompt, legion_training_conversation,
};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn tokenizer() -> LegionTokenizer {
    LegionTokenizer::from_file(&dir().join("tokenizer.json")).expect("fixture tokenizer loads")
}

#[test]
fn special_tokens_are_resolved_by_vocabulary_lookup() {
    let tok = tokenizer();
    let exp = expected();
    let ids = &exp["special_ids"];
    let s = tok.special();
    let id = |name: &str| ids[name].as_u64().unwrap() as u32;
    assert_eq!(
        [
            s.unk,
            s.bos,
            s.eos,
            s.im_start,
            s.im_end,
            s.bbox,
            s.seg,
            s.phrase_start,
            s.phrase_end
        ],
        [
            id("<unk>"),
            id("<s>"),
            id("</s>"),
            id("<im_start>"),
            id("<im_end>"),
            id("<bbox>"),
            id("[SEG]"),
            id("<p>"),
            id("</p>")
        ]
    );
    assert!(
        ids["<image>"].is_null(),
        "<image> is not a token in GLaMM's vocabulary"
    );
    assert_eq!(tok.vocab_size() as u64, exp["vocab_size"].as_u64().unwrap());
}

#[test]
fn missing_or_non_added_special_tokens_are_errors() {
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("tokenizer.json")).unwrap())
            .unwrap();
    // Without `[SEG]` in the added tokens and vocabulary: MissingToken.
    let mut missing = json.clone();
    missing["added_tokens"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["content"] != "[SEG]");
    let inner = tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&missing).unwrap()).unwrap();
    match LegionTokenizer::new(inner, "no-seg") {
        Err(TokenizerError::MissingToken { token, .. }) => assert_eq!(token, "[SEG]"),
        other => panic!("expected MissingToken, got {other:?}"),
    }
    // `<p>` present in the model vocabulary but not as an added token: NotAddedToken.
    let mut plain = json;
    let id = plain["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["content"] == "<p>")
        .unwrap()["id"]
        .clone();
    plain["added_tokens"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["content"] != "<p>");
    plain["model"]["vocab"]["<p>"] = id;
    let inner = tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&plain).unwrap()).unwrap();
    match LegionTokenizer::new(inner, "plain-p") {
        Err(TokenizerError::NotAddedToken { token, .. }) => assert_eq!(token, "<p>"),
        other => panic!("expected NotAddedToken, got {other:?}"),
    }
}

#[test]
fn ids_match_python_tokenizers() {
    let tok = tokenizer();
    for case in expected()["encodings"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let with_bos: Vec<i64> = tok
            .encode(text, true)
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect();
        let without: Vec<u32> = tok.encode(text, false).unwrap();
        assert_eq!(with_bos, ints(&case["ids_with_bos"]), "{text:?} with BOS");
        assert_eq!(
            without.iter().map(|&t| t as i64).collect::<Vec<_>>(),
            ints(&case["ids_without_bos"]),
            "{text:?}"
        );
        assert_eq!(
            tok.decode(&without, false).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{text:?} decoded"
        );
    }
}

#[test]
fn llava_v1_templates_match_the_reference_strings() {
    let exp = expected();
    assert_eq!(exp["training_question"].as_str().unwrap(), LEGION_QUESTION);
    assert_eq!(
        legion_inference_prompt(LEGION_QUESTION),
        exp["inference_prompt"].as_str().unwrap()
    );
    let answer = exp["training_answer"].as_str().unwrap();
    assert_eq!(
        legion_training_conversation(LEGION_QUESTION, answer),
        exp["training_conversation"].as_str().unwrap()
    );
    let mut two_rounds = Conversation::llava_v1();
    two_rounds
        .push(Role::User, Some("What is wrong?"))
        .push(Role::Assistant, Some("The shadow."))
        .push(Role::User, Some("Where?"))
        .push(Role::Assistant, Some("Left of the table."));
    assert_eq!(
        two_rounds.prompt(),
        exp["text_conversation"].as_str().unwrap()
    );
}

#[test]
fn image_token_ids_and_label_mask_match_the_reference() {
    let tok = tokenizer();
    let exp = expected();
    let inference_ids = tok
        .tokenize_with_image(exp["inference_prompt"].as_str().unwrap())
        .unwrap();
    assert_eq!(inference_ids, ints(&exp["inference_ids"]));
    assert_eq!(
        inference_ids
            .iter()
            .filter(|&&t| t == IMAGE_TOKEN_INDEX)
            .count(),
        1
    );
    // `<im_start>` right before and `<im_end>` right after the image placeholder.
    let at = inference_ids
        .iter()
        .position(|&t| t == IMAGE_TOKEN_INDEX)
        .unwrap();
    assert_eq!(inference_ids[at - 1], tok.special().im_start as i64);
    assert_eq!(inference_ids[at + 1], tok.special().im_end as i64);

    let example = tok
        .training_example(exp["training_conversation"].as_str().unwrap(), 1536)
        .unwrap();
    assert_eq!(example.input_ids, ints(&exp["training_ids"]));
    assert_eq!(example.labels, ints(&exp["training_labels"]));
    // Supervised tokens are exactly the answer and its closing </s>.
    let supervised: Vec<u32> = example
        .labels
        .iter()
        .filter(|&&l| l != IGNORE_INDEX)
        .map(|&l| l as u32)
        .collect();
    assert_eq!(*supervised.last().unwrap(), tok.special().eos);
    let text = tok.decode(&supervised, false).unwrap();
    assert!(text.starts_with("Upon examining"), "{text}");
    assert!(supervised.contains(&tok.special().seg));

    let text_ids: Vec<i64> = tok
        .encode(exp["text_conversation"].as_str().unwrap(), true)
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    assert_eq!(text_ids, ints(&exp["text_ids"]));
    let labels = tok
        .training_labels(exp["text_conversation"].as_str().unwrap(), &text_ids, 1536)
        .unwrap();
    assert_eq!(labels, ints(&exp["text_labels"]));

    // Collate: right padding with unk, ignored labels and mask 0 on padding.
    let short = tok
        .training_example(
            &legion_training_conversation("Q?", "A <p> x </p> [SEG]."),
            1536,
        )
        .unwrap();
    let batch = tok.collate(&[example.clone(), short.clone()], None);
    assert_eq!(batch.seq, example.input_ids.len());
    let row = &batch.input_ids[batch.seq..];
    assert_eq!(&row[..short.input_ids.len()], short.input_ids.as_slice());
    assert!(
        row[short.input_ids.len()..]
            .iter()
            .all(|&t| t == tok.special().unk as i64)
    );
    assert!(
        batch.labels[batch.seq + short.input_ids.len()..]
            .iter()
            .all(|&l| l == IGNORE_INDEX)
    );
    assert_eq!(
        batch.attention_mask[batch.seq..].iter().sum::<i64>() as usize,
        short.input_ids.len()
    );
    assert_eq!(tok.collate(&[example], Some(100)).seq, 100);
    // A conversation without " ASSISTANT: " is a template error.
    assert!(matches!(
        tok.training_labels("USER: hi</s>", &[1, 5, 6], 1536),
        Err(TokenizerError::Template { .. })
    ));
}

#[test]
fn sentencepiece_only_folder_says_how_to_convert() {
    let tmp = std::env::temp_dir().join(format!("legion_spm_only_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    // Content does not matter: the file is never parsed.
    std::fs::write(tmp.join("tokenizer.model"), b"\x0a\x0bnot parsed").unwrap();
    for path in [tmp.clone(), tmp.join("tokenizer.model")] {
        let err = LegionTokenizer::from_file(&path).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, TokenizerError::SentencePieceOnly { .. }),
            "{message}"
        );
        assert!(message.contains(&tmp.join("tokenizer.model").display().to_string()));
        assert!(message.contains(&format!(
            "python scripts/convert_tokenizer.py {}",
            tmp.display()
        )));
    }
    // With a tokenizer.json beside it, the folder loads that.
    std::fs::copy(dir().join("tokenizer.json"), tmp.join("tokenizer.json")).unwrap();
    let tok = LegionTokenizer::from_file(&tmp).unwrap();
    assert_eq!(tok.special().seg, tokenizer().special().seg);
    // A folder with neither names the folder.
    std::fs::remove_file(tmp.join("tokenizer.json")).unwrap();
    std::fs::remove_file(tmp.join("tokenizer.model")).unwrap();
    let err = LegionTokenizer::from_file(&tmp).unwrap_err().to_string();
    assert!(err.contains("no tokenizer.json"), "{err}");
    let _ = std::fs::remove_dir_all(&tmp);
}
