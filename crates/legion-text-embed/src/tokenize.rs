//! Word-piece tokenisation from a checkpoint's `tokenizer.json`, batched the way
//! sentence-transformers batches: `[CLS] ... [SEP]`, truncated to `max_seq_length` tokens
//! (special tokens included), right-padded to the longest sentence of the batch, with an
//! attention mask.
//!
//! A `tokenizer.json` carries its own truncation/padding settings (all-MiniLM-L6-v2's says
//! "truncate at 128, pad to a fixed 128"); `transformers` overrides them on every call, and so
//! does this module: only `max_seq_length` (from `sentence_bert_config.json`) decides.

use std::path::{Path, PathBuf};

use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use crate::error::EmbedError;

/// A batch of token ids ready for [`crate::BertModel::forward`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Row-major `[batch, seq]` token ids.
    pub input_ids: Vec<i64>,
    /// Row-major `[batch, seq]` mask: 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Number of sentences.
    pub batch: usize,
    /// Padded length (the longest sentence, at most `max_seq_length`).
    pub seq: usize,
}

/// A `tokenizers` tokenizer set up for sentence embedding.
#[derive(Debug, Clone)]
pub struct SentenceTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    max_seq_length: usize,
    lowercase: bool,
}

impl SentenceTokenizer {
    /// Loads `tokenizer.json` and sets truncation to `max_seq_length` and batch-longest padding.
    /// `pad_token_id` is used when the file has no padding settings of its own. `lowercase`
    /// lower-cases inputs before tokenising (sentence-transformers' `do_lower_case`).
    ///
    /// # Errors
    /// [`EmbedError::Tokenizer`] when the file cannot be loaded, [`EmbedError::PadToken`] when
    /// `pad_token_id` is not in its vocabulary, [`EmbedError::Truncation`] when the tokenizer
    /// refuses `max_seq_length`.
    pub fn from_file(
        path: &Path,
        max_seq_length: usize,
        pad_token_id: u32,
        lowercase: bool,
    ) -> Result<Self, EmbedError> {
        let mut tokenizer = Tokenizer::from_file(path).map_err(|source| EmbedError::Tokenizer {
            path: path.to_path_buf(),
            source,
        })?;
        let (pad_id, pad_token) = match tokenizer.get_padding() {
            Some(p) => (p.pad_id, p.pad_token.clone()),
            None => {
                let token =
                    tokenizer
                        .id_to_token(pad_token_id)
                        .ok_or_else(|| EmbedError::PadToken {
                            path: path.to_path_buf(),
                            pad_token_id,
                        })?;
                (pad_token_id, token)
            }
        };
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|source| EmbedError::Truncation {
                path: path.to_path_buf(),
                max_seq_length,
                source,
            })?;
        Ok(Self {
            tokenizer,
            path: path.to_path_buf(),
            max_seq_length,
            lowercase,
        })
    }

    /// The truncation length in tokens, special tokens included.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Size of the vocabulary, added tokens included: every id the tokenizer can emit is below it.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Number of tokens (special tokens included, after truncation) of one sentence.
    ///
    /// # Errors
    /// [`EmbedError::Tokenizer`] if tokenisation fails.
    pub fn token_count(&self, sentence: &str) -> Result<usize, EmbedError> {
        let encoding = self
            .tokenizer
            .encode(self.prepare(sentence), true)
            .map_err(|source| self.fail(source))?;
        Ok(encoding.get_ids().len())
    }

    /// Tokenises a batch, padded to its longest sentence.
    ///
    /// # Errors
    /// [`EmbedError::Tokenizer`] if tokenisation fails, [`EmbedError::Batch`] if `sentences` is
    /// empty or padding gives rows of different lengths.
    pub fn encode_batch(&self, sentences: &[&str]) -> Result<TokenBatch, EmbedError> {
        if sentences.is_empty() {
            return Err(self.batch_error("cannot tokenise an empty batch".into()));
        }
        let inputs: Vec<String> = sentences.iter().map(|s| self.prepare(s)).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|source| self.fail(source))?;
        let seq = encodings[0].get_ids().len();
        let mut input_ids = Vec::with_capacity(sentences.len() * seq);
        let mut attention_mask = Vec::with_capacity(sentences.len() * seq);
        for encoding in &encodings {
            if encoding.get_ids().len() != seq {
                return Err(self.batch_error(format!(
                    "batch padding gave rows of {} and {seq} tokens",
                    encoding.get_ids().len()
                )));
            }
            input_ids.extend(encoding.get_ids().iter().map(|&id| i64::from(id)));
            attention_mask.extend(encoding.get_attention_mask().iter().map(|&m| i64::from(m)));
        }
        Ok(TokenBatch {
            input_ids,
            attention_mask,
            batch: sentences.len(),
            seq,
        })
    }

    fn prepare(&self, sentence: &str) -> String {
        if self.lowercase {
            sentence.to_lowercase()
        } else {
            sentence.to_string()
        }
    }

    fn fail(&self, source: tokenizers::Error) -> EmbedError {
        EmbedError::Tokenizer {
            path: self.path.clone(),
            source,
        }
    }

    fn batch_error(&self, message: String) -> EmbedError {
        EmbedError::Batch {
            path: self.path.clone(),
            message,
        }
    }
}
