//! Loading Hugging Face BERT checkpoints (`model.safetensors` or `pytorch_model.bin`) into
//! [`BertModel`], strictly.
//!
//! One declarative key table maps `transformers`' `BertModel` naming to this crate's field paths,
//! with or without the `bert.` prefix of `BertFor*` checkpoints. Linear weights are transposed
//! and LayerNorm `weight`/`bias` become `gamma`/`beta` by burn's `PyTorchToBurnAdapter` (old
//! checkpoints that already say `gamma`/`beta`, like the original `bert-base-uncased`, match
//! directly). Everything else must match exactly; see [`UNUSED_ALLOWED`] for the only file
//! tensors that may be left over.

use std::path::Path;

use burn::store::{PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};

use crate::bert::BertModel;
use crate::strict::{Allowances, StrictLoadError, load_strict};

/// `(regex, replacement)` remaps from `transformers` BERT keys to burn paths, applied in order
/// (each rule sees the result of the previous ones).
pub const HF_BERT_REMAPS: &[(&str, &str)] = &[
    // `BertForPreTraining` / `BertForMaskedLM` / ... wrap the encoder as `bert.`.
    (r"^bert\.", ""),
    (r"^embeddings\.LayerNorm\.", "embeddings.layer_norm."),
    (
        r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.",
        "layers.$1.attention.$2.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.",
        "layers.$1.attention.output.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.",
        "layers.$1.attention_norm.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.intermediate\.dense\.",
        "layers.$1.intermediate.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.output\.dense\.",
        "layers.$1.output.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.",
        "layers.$1.output_norm.",
    ),
];

/// File tensors (after remapping) that may be present without being used:
/// - `pooler.*`: the tanh pooler head of `BertModel`; sentence embeddings pool hidden states
///   themselves (and `AutoModel` users take `last_hidden_state`).
/// - `embeddings.position_ids`: an `arange` buffer older `transformers` versions saved.
/// - `cls.predictions.*`, `cls.seq_relationship.*`: the pre-training heads of `BertForPreTraining`
///   checkpoints such as `bert-base-uncased`, which `AutoModel` drops as well.
///
/// Nothing may be missing.
pub const UNUSED_ALLOWED: &[&str] = &[
    r"^pooler\.(dense)\.(weight|bias)$",
    r"^embeddings\.position_ids$",
    r"^cls\.(predictions|seq_relationship)\.",
];

/// Loads a BERT checkpoint into `model`, choosing the reader by file extension:
/// `.safetensors`, or `.bin`/`.pt`/`.pth` (PyTorch zip pickle, read without executing code).
///
/// # Errors
/// [`StrictLoadError::Read`] when the file cannot be read, [`StrictLoadError::Mismatch`] listing
/// every missing, unexpected or mis-shaped tensor.
pub fn load_bert_weights(model: BertModel, path: &Path) -> Result<BertModel, StrictLoadError> {
    // `allow_partial(true)` + `validate(false)` make the store report missing tensors and shape
    // errors in its `ApplyResult` instead of stopping at the first kind; `load_strict` then
    // fails on any of them, listing missing, unexpected and mis-shaped tensors together.
    let allow = Allowances::from_patterns(&[], UNUSED_ALLOWED);
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let model = if extension == "safetensors" {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .allow_partial(true)
            .validate(false);
        for (from, to) in HF_BERT_REMAPS {
            store = store.with_key_remapping(*from, *to);
        }
        load_strict(model, &mut store, path, &allow)?
    } else {
        // PytorchStore applies PyTorchToBurnAdapter by default.
        let mut store = PytorchStore::from_file(path)
            .allow_partial(true)
            .validate(false);
        for (from, to) in HF_BERT_REMAPS {
            store = store.with_key_remapping(*from, *to);
        }
        load_strict(model, &mut store, path, &allow)?
    };
    tracing::info!(path = %path.display(), "loaded BERT weights");
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remap(key: &str) -> String {
        let mut key = key.to_string();
        for (from, to) in HF_BERT_REMAPS {
            key = regex_lite::Regex::new(from)
                .unwrap()
                .replace_all(&key, *to)
                .into_owned();
        }
        key
    }

    #[test]
    fn key_table_maps_hf_names_to_field_paths() {
        let cases = [
            (
                "embeddings.word_embeddings.weight",
                "embeddings.word_embeddings.weight",
            ),
            (
                "bert.embeddings.LayerNorm.gamma",
                "embeddings.layer_norm.gamma",
            ),
            (
                "embeddings.LayerNorm.weight",
                "embeddings.layer_norm.weight",
            ),
            (
                "encoder.layer.3.attention.self.query.weight",
                "layers.3.attention.query.weight",
            ),
            (
                "bert.encoder.layer.11.attention.self.value.bias",
                "layers.11.attention.value.bias",
            ),
            (
                "encoder.layer.0.attention.output.dense.weight",
                "layers.0.attention.output.weight",
            ),
            (
                "encoder.layer.0.attention.output.LayerNorm.bias",
                "layers.0.attention_norm.bias",
            ),
            (
                "encoder.layer.5.intermediate.dense.weight",
                "layers.5.intermediate.weight",
            ),
            ("encoder.layer.5.output.dense.bias", "layers.5.output.bias"),
            (
                "encoder.layer.5.output.LayerNorm.weight",
                "layers.5.output_norm.weight",
            ),
            ("bert.pooler.dense.weight", "pooler.dense.weight"),
        ];
        for (hf, burn) in cases {
            assert_eq!(remap(hf), burn, "{hf}");
        }
    }

    #[test]
    fn only_known_leftovers_are_allowed() {
        let allow = Allowances::from_patterns(&[], UNUSED_ALLOWED);
        let allowed = |key: &str| allow.unexpected.iter().any(|r| r.is_match(&remap(key)));
        assert!(allowed("pooler.dense.weight"));
        assert!(allowed("bert.pooler.dense.bias"));
        assert!(allowed("embeddings.position_ids"));
        assert!(allowed("cls.predictions.transform.dense.weight"));
        assert!(!allowed(
            "encoder.layer.0.attention.self.query.weight_scale"
        ));
        assert!(!allowed("pooler.extra.weight"));
        assert!(!allowed("classifier.weight"));
    }
}
