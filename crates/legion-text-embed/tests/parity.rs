//! Parity of the sentence encoder with sentence-transformers on a tiny random BERT.
//!
//! Fixture: `tests/fixtures/tiny_sbert/`, made by `scripts/fixtures/minilm.py` (random
//! `transformers.BertModel`, WordPiece `tokenizer.json`, sentence-transformers files, and the
//! embeddings `SentenceTransformer(dir).encode` returns). Everything goes through the real load
//! path: config.json, sentence_bert_config.json, modules.json, 1_Pooling, tokenizer.json,
//! model.safetensors.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use legion_text_embed::strict::StrictLoadError;
use legion_text_embed::weights::load_bert_weights;
use legion_text_embed::{BertConfig, EmbedError, SentenceEncoder};
use serde::Deserialize;

const TOLERANCE: f32 = 1e-5;

#[derive(Deserialize)]
struct Reference {
    max_seq_length: usize,
    sentences: Vec<String>,
    input_ids: Vec<Vec<i64>>,
    embeddings: Vec<Vec<f32>>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_sbert")
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(fixture_dir().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn max_abs_error(actual: &[Vec<f32>], expected: &[Vec<f32>]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .flat_map(|(a, e)| {
            assert_eq!(a.len(), e.len());
            a.iter().zip(e).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn tokenizer_matches_sentence_transformers_ids() {
    let reference = reference();
    let encoder = SentenceEncoder::load(&fixture_dir(), &Device::flex()).unwrap();
    // sentence_bert_config.json says 16; tokenizer.json's own "truncate at 8, pad to 24" must
    // not win.
    assert_eq!(
        encoder.tokenizer().max_seq_length(),
        reference.max_seq_length
    );
    for (sentence, expected) in reference.sentences.iter().zip(&reference.input_ids) {
        let batch = encoder
            .tokenizer()
            .encode_batch(&[sentence.as_str()])
            .unwrap();
        assert_eq!(&batch.input_ids, expected, "{sentence:?}");
        assert!(batch.attention_mask.iter().all(|&m| m == 1));
    }

    // Batched: right padding to the longest sentence, mask 0 on padding.
    let pair = [
        reference.sentences[5].as_str(),
        reference.sentences[0].as_str(),
    ];
    let batch = encoder.tokenizer().encode_batch(&pair).unwrap();
    let (short, long) = (&reference.input_ids[5], &reference.input_ids[0]);
    assert_eq!((batch.batch, batch.seq), (2, long.len()));
    assert_eq!(&batch.input_ids[..short.len()], short.as_slice());
    assert!(
        batch.input_ids[short.len()..batch.seq]
            .iter()
            .all(|&id| id == 0)
    );
    let mask_row: Vec<i64> = batch.attention_mask[..batch.seq].to_vec();
    let expected_mask: Vec<i64> = (0..batch.seq).map(|i| i64::from(i < short.len())).collect();
    assert_eq!(mask_row, expected_mask);
}

#[test]
fn embeddings_match_sentence_transformers() {
    let reference = reference();
    let device = Device::flex();
    let encoder = SentenceEncoder::load(&fixture_dir(), &device)
        .unwrap()
        .with_batch_size(4);
    assert_eq!(encoder.name(), "tiny_sbert (mean pooling, normalized)");

    let embeddings = encoder.encode(&reference.sentences).unwrap();
    let error = max_abs_error(&embeddings, &reference.embeddings);
    println!("tiny BERT vs sentence-transformers: max abs error {error:.3e} (batch 4)");
    assert!(error <= TOLERANCE, "max abs error {error}");

    // Batch composition must not matter (padding is masked out).
    let one_by_one = encoder
        .with_batch_size(1)
        .encode(&reference.sentences)
        .unwrap();
    let error = max_abs_error(&one_by_one, &reference.embeddings);
    println!("tiny BERT vs sentence-transformers: max abs error {error:.3e} (batch 1)");
    assert!(error <= TOLERANCE, "max abs error {error}");

    for vector in &embeddings {
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    // CSS on a pair, compared with the reference embeddings' cosine.
    let ours = SentenceEncoder::cosine(&embeddings[0], &embeddings[1]).unwrap();
    let theirs =
        SentenceEncoder::cosine(&reference.embeddings[0], &reference.embeddings[1]).unwrap();
    assert!(
        (ours - theirs).abs() <= 2.0 * TOLERANCE,
        "{ours} vs {theirs}"
    );
}

fn hidden_states(config: &BertConfig, weights: &Path, device: &Device) -> Vec<f32> {
    let model = load_bert_weights(config.init(device), weights).unwrap();
    let ids = [2i64, 5, 58, 23, 73, 3, 0, 2, 27, 102, 3, 0];
    let mask = [1i64, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0];
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [2, 6]), device);
    let mask = Tensor::<2, Int>::from_data(TensorData::new(mask.to_vec(), [2, 6]), device);
    model
        .forward(ids, mask)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
}

/// The same weights as a PyTorch pickle in `BertForPreTraining` naming (`bert.` prefix,
/// LayerNorm gamma/beta, a `cls.*` head, the `position_ids` buffer) load to the same model.
#[test]
fn pytorch_checkpoint_with_prefix_and_legacy_names_loads_identically() {
    let device = Device::flex();
    let config = BertConfig::from_hf_json(&fixture_dir().join("config.json")).unwrap();
    let from_safetensors =
        hidden_states(&config, &fixture_dir().join("model.safetensors"), &device);
    let from_pickle = hidden_states(
        &config,
        &fixture_dir().join("pytorch_model_prefixed.bin"),
        &device,
    );
    assert_eq!(from_safetensors, from_pickle);
}

#[test]
fn mismatched_config_is_an_error_listing_the_tensors() {
    let device = Device::flex();
    let config = BertConfig::from_hf_json(&fixture_dir().join("config.json")).unwrap();
    let weights = fixture_dir().join("model.safetensors");

    // One layer more than the file: the third layer's tensors are missing.
    let deeper = BertConfig {
        num_hidden_layers: 3,
        ..config.clone()
    };
    let err = load_bert_weights(deeper.init(&device), &weights).unwrap_err();
    match &err {
        StrictLoadError::Mismatch {
            missing,
            unexpected,
            ..
        } => {
            assert_eq!(missing.len(), 16, "{err}");
            assert!(missing.iter().all(|p| p.starts_with("layers.2.")), "{err}");
            assert!(unexpected.is_empty(), "{err}");
        }
        other => panic!("expected a mismatch, got {other}"),
    }

    // One layer fewer: the file's second layer is unexpected, not silently dropped.
    let shallower = BertConfig {
        num_hidden_layers: 1,
        ..config.clone()
    };
    let err = load_bert_weights(shallower.init(&device), &weights).unwrap_err();
    match &err {
        StrictLoadError::Mismatch { unexpected, .. } => {
            assert_eq!(unexpected.len(), 16, "{err}");
            assert!(
                unexpected.iter().all(|p| p.starts_with("layers.1.")),
                "{err}"
            );
        }
        other => panic!("expected a mismatch, got {other}"),
    }

    // A wider model: shape errors.
    let wider = BertConfig {
        intermediate_size: 48,
        ..config
    };
    let err = load_bert_weights(wider.init(&device), &weights).unwrap_err();
    assert!(
        matches!(&err, StrictLoadError::Mismatch { errors, .. } if !errors.is_empty()),
        "{err}"
    );
}

#[test]
fn missing_directory_names_the_file() {
    let err =
        SentenceEncoder::load(Path::new("/nonexistent/model-dir"), &Device::flex()).unwrap_err();
    assert!(matches!(err, EmbedError::Io { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("/nonexistent/model-dir/config.json"),
        "{err}"
    );
}
