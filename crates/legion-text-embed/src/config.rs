//! BERT encoder configuration: burn `Config` with named presets, and the reader for a Hugging Face
//! `config.json` (the `BertConfig` of `transformers`, whose field names this struct keeps).
//!
//! Only the absolute-position, exact-GELU BERT of Devlin et al. (arXiv 1810.04805) is supported;
//! a checkpoint asking for anything else (`hidden_act = "gelu_new"`, relative positions, another
//! `model_type`) is rejected when its config is read instead of silently giving other numbers.

use std::path::Path;

use burn::config::Config;
use serde::Deserialize;

use crate::error::EmbedError;

/// Sizes of a BERT encoder (`transformers.BertConfig` naming).
#[derive(Config, Debug, PartialEq)]
pub struct BertConfig {
    /// Word-piece vocabulary size.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; must divide `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Rows of the learned absolute position table: the longest input the encoder accepts.
    #[config(default = 512)]
    pub max_position_embeddings: usize,
    /// Rows of the segment (token type) table.
    #[config(default = 2)]
    pub type_vocab_size: usize,
    /// Epsilon of every LayerNorm.
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    /// Token id used for padding.
    #[config(default = 0)]
    pub pad_token_id: usize,
}

impl BertConfig {
    /// `sentence-transformers/all-MiniLM-L6-v2`: 6 layers, hidden 384, 12 heads.
    pub fn all_minilm_l6_v2() -> Self {
        Self::new(30522, 384, 6, 12, 1536)
    }

    /// `bert-base-uncased` (used by GLaMM's GCG evaluator): 12 layers, hidden 768, 12 heads.
    pub fn bert_base_uncased() -> Self {
        Self::new(30522, 768, 12, 12, 3072)
    }

    /// A tiny random-weight config for tests (matches `scripts/fixtures/minilm.py`'s sizes except
    /// the vocabulary, which the fixture takes from its tokenizer).
    pub fn tiny() -> Self {
        Self::new(64, 32, 2, 4, 64).with_max_position_embeddings(64)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the sizes are usable (non-zero, heads divide the width).
    ///
    /// # Errors
    /// [`EmbedError::Config`] naming the offending field; `source` names where the config came from.
    pub fn validate(&self, source: &Path) -> Result<(), EmbedError> {
        let bad = |field: &str, message: String| EmbedError::Config {
            path: source.to_path_buf(),
            field: field.to_string(),
            message,
        };
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value == 0 {
                return Err(bad(field, "must be positive".into()));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(bad(
                "num_attention_heads",
                format!(
                    "{} heads do not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if self.pad_token_id >= self.vocab_size {
            return Err(bad(
                "pad_token_id",
                format!(
                    "{} is outside the vocabulary ({})",
                    self.pad_token_id, self.vocab_size
                ),
            ));
        }
        Ok(())
    }

    /// Reads a Hugging Face BERT `config.json`.
    ///
    /// # Errors
    /// [`EmbedError::Io`] / [`EmbedError::Json`] when the file cannot be read or parsed,
    /// [`EmbedError::Config`] when it describes a model this encoder does not implement.
    pub fn from_hf_json(path: &Path) -> Result<Self, EmbedError> {
        let raw: HfBertConfig = read_json(path)?;
        let unsupported = |field: &str, value: &str, expected: &str| EmbedError::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            message: format!("`{value}` is not supported (expected {expected})"),
        };
        if let Some(model_type) = raw.model_type.as_deref()
            && model_type != "bert"
        {
            return Err(unsupported("model_type", model_type, "`bert`"));
        }
        // transformers' "gelu" is the exact erf form, which is what the encoder computes.
        if raw.hidden_act != "gelu" {
            return Err(unsupported("hidden_act", &raw.hidden_act, "`gelu`"));
        }
        if raw.position_embedding_type != "absolute" {
            return Err(unsupported(
                "position_embedding_type",
                &raw.position_embedding_type,
                "`absolute`",
            ));
        }
        let config = Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps,
            pad_token_id: raw.pad_token_id.unwrap_or(0),
        };
        config.validate(path)?;
        Ok(config)
    }
}

/// The fields of a Hugging Face BERT `config.json` this crate reads; the rest (dropout, init
/// range, architectures, ...) do not affect inference and are ignored. Defaults are
/// `transformers.BertConfig`'s.
#[derive(Deserialize)]
struct HfBertConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    /// `null` in some configs; transformers then pads with id 0 as well.
    #[serde(default)]
    pad_token_id: Option<usize>,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default = "default_position_embedding_type")]
    position_embedding_type: String,
}

fn default_max_position_embeddings() -> usize {
    512
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

/// Reads and parses a JSON file, naming the file in errors.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|source| EmbedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| EmbedError::Json {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for config in [
            BertConfig::all_minilm_l6_v2(),
            BertConfig::bert_base_uncased(),
            BertConfig::tiny(),
        ] {
            config.validate(Path::new("<preset>")).unwrap();
        }
        assert_eq!(BertConfig::all_minilm_l6_v2().head_dim(), 32);
        assert_eq!(BertConfig::bert_base_uncased().head_dim(), 64);
    }

    #[test]
    fn reads_hf_config_and_rejects_other_activations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let json = r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 384,
            "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "layer_norm_eps": 1e-12}"#;
        std::fs::write(&path, json).unwrap();
        assert_eq!(
            BertConfig::from_hf_json(&path).unwrap(),
            BertConfig::all_minilm_l6_v2()
        );

        std::fs::write(&path, json.replace("\"gelu\"", "\"gelu_new\"")).unwrap();
        let err = BertConfig::from_hf_json(&path).unwrap_err().to_string();
        assert!(
            err.contains("hidden_act") && err.contains("gelu_new"),
            "{err}"
        );

        std::fs::write(
            &path,
            json.replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 7"),
        )
        .unwrap();
        let err = BertConfig::from_hf_json(&path).unwrap_err().to_string();
        assert!(err.contains("num_attention_heads"), "{err}");
    }
}
