//! LEGION's tokenizer and prompt format: a `tokenizer.json` (HF `tokenizers`) with GLaMM's
//! added tokens, the `llava_v1` conversation template, image-placeholder tokenization and the
//! training label mask.
//!
//! Reference (groundingLMM / LEGION, read, not copied):
//! - `model/llava/conversation.py` `conv_llava_v1`: system prompt, roles `USER`/`ASSISTANT`,
//!   separators `" "` after a user turn and `"</s>"` after an assistant turn; an empty assistant
//!   message renders as `"ASSISTANT:"` (generation prompt).
//! - `model/llava/mm_utils.py` `tokenizer_image_token`: the prompt is split on `<image>`, each
//!   chunk tokenized with BOS, BOS kept once, chunks joined by `IMAGE_TOKEN_INDEX = -200`.
//!   `<image>` is not a vocabulary token in GLaMM; `<im_start>`/`<im_end>` around it are.
//! - LEGION `dataset/dataset.py` `custom_collate_fn` / `_process_conversation`: labels = ids
//!   with `-100` on BOS, on every instruction part and after the last round; sequences are
//!   right-padded with `pad = unk` and `attention_mask = ids != pad`.
//!
//! Special-token ids are resolved by vocabulary lookup (`token_to_id`) and must be added
//! tokens, so that they are matched whole inside text.
//!
//! GLaMM tokenizes with the slow (sentencepiece) `LlamaTokenizer` (`use_fast=False`); this
//! module uses the `tokenizer.json` (fast) form. Check a converted tokenizer against the slow
//! one on the LEGION prompt before training on it.

use std::path::Path;

/// Replaces `<image>` in token-id sequences; the model splices the image features there.
pub const IMAGE_TOKEN_INDEX: i64 = -200;
/// Label value ignored by the cross-entropy loss.
pub const IGNORE_INDEX: i64 = -100;
/// Image placeholder in prompt text (split out before tokenization, not a token).
pub const IMAGE_PLACEHOLDER: &str = "<image>";
/// Start-of-image token written before `<image>`.
pub const IM_START: &str = "<im_start>";
/// End-of-image token written after `<image>`.
pub const IM_END: &str = "<im_end>";
/// Segmentation token: its hidden state prompts SAM.
pub const SEG: &str = "[SEG]";
/// Phrase start.
pub const PHRASE_START: &str = "<p>";
/// Phrase end.
pub const PHRASE_END: &str = "</p>";
/// Region token (GLaMM; unused by the artifact task).
pub const BBOX: &str = "<bbox>";

/// `conv_llava_v1.system`.
pub const LLAVA_V1_SYSTEM: &str = "A chat between a curious human and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the human's questions.";
/// The text LEGION puts before the question (`GCGBaseDataset.begin_str`, `infer.py`).
pub const LEGION_IMAGE_PREFIX: &str = "The <image> provides an overview of the picture.\n";
/// LEGION's single artifact-analysis question (`scripts/loc_exp/infer.py`, `GCG_QUESTIONS`).
pub const LEGION_QUESTION: &str = "Please provide a detailed analysis of artifacts in this photo, considering \
physical artifacts (e.g., optical display issues, violations of physical laws, and spatial/perspective errors), \
structural artifacts (e.g., deformed objects, asymmetry, or distorted text), and distortion artifacts (e.g., \
color/texture distortion, noise/blur, artistic style errors, and material misrepresentation). Output with \
interleaved segmentation masks for the corresponding parts of the answer.";

/// Errors of the tokenizer wrapper.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// `tokenizer.json` could not be read or parsed.
    #[error("cannot load tokenizer {path}: {source}")]
    Load {
        path: String,
        #[source]
        source: tokenizers::Error,
    },
    /// A checkpoint folder has neither `tokenizer.json` nor `tokenizer.model`.
    #[error(
        "cannot load tokenizer {dir}: the folder has no tokenizer.json (nor a tokenizer.model)"
    )]
    NoTokenizerFile { dir: String },
    /// Training a tokenizer failed at `stage`.
    #[error("training a tokenizer: {stage}: {source}")]
    Train {
        stage: &'static str,
        #[source]
        source: tokenizers::Error,
    },
    /// The requested vocabulary of a trained tokenizer cannot hold its fixed tokens.
    #[error(
        "training a tokenizer: vocab_size {vocab_size} leaves no room for merges (the fixed \
         tokens take {fixed})"
    )]
    TrainVocabSize { vocab_size: usize, fixed: usize },
    /// Only a SentencePiece `tokenizer.model` is there; the `tokenizers` crate reads
    /// `tokenizer.json` only.
    #[error(
        "{model}: only a SentencePiece tokenizer.model, no tokenizer.json; the Rust `tokenizers` \
         crate reads tokenizer.json only. Convert it once (transformers' LlamaTokenizerFast, \
         keeps GLaMM's added tokens): `python scripts/convert_tokenizer.py {dir}` writes \
         {dir}/tokenizer.json (needs `pip install transformers sentencepiece protobuf`)"
    )]
    SentencePieceOnly {
        /// The `tokenizer.model` file.
        model: String,
        /// Its folder, where `tokenizer.json` is expected.
        dir: String,
    },
    /// A required token is not in the vocabulary.
    #[error("tokenizer {source_name}: required token `{token}` is not in the vocabulary")]
    MissingToken { source_name: String, token: String },
    /// A required token is in the vocabulary but not an added token, so text containing it
    /// would not tokenize to that single id.
    #[error(
        "tokenizer {source_name}: `{token}` (id {id}) is not an added token; it would not be \
         matched as a single token in text"
    )]
    NotAddedToken {
        source_name: String,
        token: String,
        id: u32,
    },
    /// Encoding or decoding failed.
    #[error("tokenizer failed on {what}: {source}")]
    Codec {
        what: String,
        #[source]
        source: tokenizers::Error,
    },
    /// A conversation does not have the `llava_v1` structure.
    #[error("conversation round {round} has {parts} parts around \" ASSISTANT: \" (expected 2)")]
    Template { round: usize, parts: usize },
    /// The label mask does not cover the sequence exactly (GLaMM asserts this).
    #[error("label mask covers {covered} tokens but the sequence has {total} non-pad tokens")]
    LabelLength { covered: usize, total: usize },
}

/// Ids of the tokens LEGION needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokenIds {
    /// `<s>`
    pub bos: u32,
    /// `</s>`
    pub eos: u32,
    /// `<unk>`, also the padding token (`pad_token = unk_token`).
    pub unk: u32,
    /// `[SEG]`
    pub seg: u32,
    /// `<p>`
    pub phrase_start: u32,
    /// `</p>`
    pub phrase_end: u32,
    /// `<im_start>`
    pub im_start: u32,
    /// `<im_end>`
    pub im_end: u32,
    /// `<bbox>`
    pub bbox: u32,
}

/// A tokenized training sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingExample {
    /// Token ids with [`IMAGE_TOKEN_INDEX`] at the image position.
    pub input_ids: Vec<i64>,
    /// Targets: the id where supervised, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
}

/// A right-padded batch, as GLaMM's `custom_collate_fn` makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedBatch {
    /// `[batch * seq]` row-major ids, padded with the pad (unk) id.
    pub input_ids: Vec<i64>,
    /// `[batch * seq]` labels, [`IGNORE_INDEX`] on padding.
    pub labels: Vec<i64>,
    /// `[batch * seq]` 1 where `input_ids != pad`, else 0.
    pub attention_mask: Vec<i64>,
    /// Batch size.
    pub batch: usize,
    /// Padded length.
    pub seq: usize,
}

/// `tokenizers::Tokenizer` plus LEGION's special tokens.
#[derive(Debug, Clone)]
pub struct LegionTokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokenIds,
}

/// The `tokenizer.json` to load for `path`: the file itself, or `<dir>/tokenizer.json` for a
/// checkpoint folder.
///
/// # Errors
/// [`TokenizerError::SentencePieceOnly`] when `path` is a SentencePiece `*.model` file, or a
/// folder with `tokenizer.model` and no `tokenizer.json` (the message says how to convert);
/// [`TokenizerError::NoTokenizerFile`] when a folder has neither.
pub fn resolve_tokenizer_json(path: &Path) -> Result<std::path::PathBuf, TokenizerError> {
    let sentencepiece = |model: &Path| TokenizerError::SentencePieceOnly {
        model: model.display().to_string(),
        dir: model
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .display()
            .to_string(),
    };
    if path.is_dir() {
        let json = path.join("tokenizer.json");
        if json.is_file() {
            return Ok(json);
        }
        let model = path.join("tokenizer.model");
        if model.is_file() {
            return Err(sentencepiece(&model));
        }
        return Err(TokenizerError::NoTokenizerFile {
            dir: path.display().to_string(),
        });
    }
    if path.extension().is_some_and(|e| e == "model") {
        return Err(sentencepiece(path));
    }
    Ok(path.to_path_buf())
}

impl LegionTokenizer {
    /// Loads a `tokenizer.json` (or the one in a checkpoint folder, see
    /// [`resolve_tokenizer_json`]) and resolves the special tokens.
    ///
    /// # Errors
    /// [`TokenizerError::SentencePieceOnly`] for a SentencePiece-only folder or file,
    /// [`TokenizerError::Load`] when the file cannot be read; see [`LegionTokenizer::new`].
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let path = &resolve_tokenizer_json(path)?;
        let inner =
            tokenizers::Tokenizer::from_file(path).map_err(|source| TokenizerError::Load {
                path: path.display().to_string(),
                source,
            })?;
        Self::new(inner, &path.display().to_string())
    }

    /// Wraps a tokenizer; `source_name` names it in errors.
    ///
    /// # Errors
    /// [`TokenizerError::MissingToken`] when `<s>`, `</s>`, `<unk>`, `[SEG]`, `<p>`, `</p>`,
    /// `<im_start>`, `<im_end>` or `<bbox>` is not in the vocabulary;
    /// [`TokenizerError::NotAddedToken`] when one of GLaMM's tokens is not an added token.
    pub fn new(inner: tokenizers::Tokenizer, source_name: &str) -> Result<Self, TokenizerError> {
        let added = inner.get_added_tokens_decoder();
        let lookup = |token: &str, must_be_added: bool| -> Result<u32, TokenizerError> {
            let id = inner
                .token_to_id(token)
                .ok_or_else(|| TokenizerError::MissingToken {
                    source_name: source_name.to_string(),
                    token: token.to_string(),
                })?;
            if must_be_added && added.get(&id).is_none_or(|t| t.content != token) {
                return Err(TokenizerError::NotAddedToken {
                    source_name: source_name.to_string(),
                    token: token.to_string(),
                    id,
                });
            }
            Ok(id)
        };
        let special = SpecialTokenIds {
            bos: lookup("<s>", false)?,
            eos: lookup("</s>", false)?,
            unk: lookup("<unk>", false)?,
            seg: lookup(SEG, true)?,
            phrase_start: lookup(PHRASE_START, true)?,
            phrase_end: lookup(PHRASE_END, true)?,
            im_start: lookup(IM_START, true)?,
            im_end: lookup(IM_END, true)?,
            bbox: lookup(BBOX, true)?,
        };
        Ok(Self { inner, special })
    }

    /// The resolved special-token ids.
    pub fn special(&self) -> &SpecialTokenIds {
        &self.special
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Vocabulary size including added tokens (the LLM's `vocab_size` must be at least this).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`; with `add_bos`, as HF's `tokenizer(text).input_ids`.
    ///
    /// # Errors
    /// [`TokenizerError::Codec`] if the tokenizer fails.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding =
            self.inner
                .encode(text, add_bos)
                .map_err(|source| TokenizerError::Codec {
                    what: format!("encoding {:?}", excerpt(text)),
                    source,
                })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`.
    ///
    /// # Errors
    /// [`TokenizerError::Codec`] if the tokenizer fails (e.g. an unknown id).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|source| TokenizerError::Codec {
                what: format!("decoding {} ids", ids.len()),
                source,
            })
    }

    /// GLaMM's `tokenizer_image_token`: `prompt` split on `<image>`, every chunk tokenized with
    /// BOS, the BOS kept once at the start, chunks joined by [`IMAGE_TOKEN_INDEX`].
    ///
    /// # Errors
    /// [`TokenizerError::Codec`] if the tokenizer fails.
    pub fn tokenize_with_image(&self, prompt: &str) -> Result<Vec<i64>, TokenizerError> {
        let chunks = prompt
            .split(IMAGE_PLACEHOLDER)
            .map(|chunk| self.encode(chunk, true))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ids = Vec::new();
        // Only a BOS at the very start is kept once and stripped from every chunk.
        let offset = usize::from(chunks.first().and_then(|c| c.first()) == Some(&self.special.bos));
        if offset == 1 {
            ids.push(self.special.bos as i64);
        }
        for (index, chunk) in chunks.iter().enumerate() {
            if index > 0 {
                ids.push(IMAGE_TOKEN_INDEX);
            }
            ids.extend(chunk.iter().skip(offset).map(|&t| t as i64));
        }
        Ok(ids)
    }

    /// GLaMM's label mask (`_process_conversation`) for one unpadded sample: BOS and each
    /// round's instruction (up to and including `"ASSISTANT: "`) are [`IGNORE_INDEX`], the
    /// answers and their `</s>` keep their ids, everything after the last round is ignored.
    /// Instruction and round lengths are measured by tokenizing the pieces separately, exactly
    /// as the reference does (including its `- 2` for BOS and the trailing-space token).
    ///
    /// # Errors
    /// [`TokenizerError::Template`] when a round lacks `" ASSISTANT: "`;
    /// [`TokenizerError::LabelLength`] when the rounds do not add up to the sequence while it
    /// is shorter than `model_max_length` (the reference asserts this).
    pub fn training_labels(
        &self,
        conversation: &str,
        input_ids: &[i64],
        model_max_length: usize,
    ) -> Result<Vec<i64>, TokenizerError> {
        const SEP: &str = " ASSISTANT: ";
        const SEP2: &str = "</s>";
        let pad = self.special.unk as i64;
        let total = input_ids.iter().filter(|&&t| t != pad).count();
        let has_image = conversation.contains(IMAGE_PLACEHOLDER);
        let length = |text: &str| -> Result<usize, TokenizerError> {
            Ok(if has_image {
                self.tokenize_with_image(text)?.len()
            } else {
                self.encode(text, true)?.len()
            })
        };
        let mut labels = input_ids.to_vec();
        let mut ignore = |from: usize, to: usize| {
            let to = to.min(labels.len());
            if from < to {
                labels[from..to].fill(IGNORE_INDEX);
            }
        };
        let mut cur = 1;
        ignore(0, cur);
        for (round, text) in conversation.split(SEP2).enumerate() {
            if text.is_empty() {
                break;
            }
            let parts: Vec<&str> = text.split(SEP).collect();
            if parts.len() != 2 {
                return Err(TokenizerError::Template {
                    round,
                    parts: parts.len(),
                });
            }
            let round_len = length(text)?;
            let instruction_len = length(&format!("{}{SEP}", parts[0]))?.saturating_sub(2);
            ignore(cur, cur + instruction_len);
            cur += round_len;
        }
        ignore(cur, usize::MAX);
        if cur < model_max_length && cur != total {
            return Err(TokenizerError::LabelLength {
                covered: cur,
                total,
            });
        }
        Ok(labels)
    }

    /// Tokenizes a training conversation (already in the `<im_start><image><im_end>` form)
    /// and builds its labels.
    ///
    /// # Errors
    /// As [`LegionTokenizer::tokenize_with_image`] and [`LegionTokenizer::training_labels`].
    pub fn training_example(
        &self,
        conversation: &str,
        model_max_length: usize,
    ) -> Result<TrainingExample, TokenizerError> {
        let input_ids = self.tokenize_with_image(conversation)?;
        let labels = self.training_labels(conversation, &input_ids, model_max_length)?;
        Ok(TrainingExample { input_ids, labels })
    }

    /// GLaMM's collate: right-pads with the pad (unk) id, labels [`IGNORE_INDEX`] on padding,
    /// `attention_mask = ids != pad`, then, when `truncate_to` is given (training:
    /// `model_max_length - 575`), cuts every row to that length.
    pub fn collate(&self, examples: &[TrainingExample], truncate_to: Option<usize>) -> PaddedBatch {
        let pad = self.special.unk as i64;
        let longest = examples
            .iter()
            .map(|e| e.input_ids.len())
            .max()
            .unwrap_or(0);
        let seq = truncate_to.map_or(longest, |t| t.min(longest));
        let mut batch = PaddedBatch {
            input_ids: Vec::with_capacity(examples.len() * seq),
            labels: Vec::with_capacity(examples.len() * seq),
            attention_mask: Vec::with_capacity(examples.len() * seq),
            batch: examples.len(),
            seq,
        };
        for example in examples {
            for t in 0..seq {
                let id = example.input_ids.get(t).copied().unwrap_or(pad);
                batch.input_ids.push(id);
                batch
                    .labels
                    .push(example.labels.get(t).copied().unwrap_or(IGNORE_INDEX));
                batch.attention_mask.push(i64::from(id != pad));
            }
        }
        batch
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Speaker of a conversation turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `USER`
    User,
    /// `ASSISTANT`
    Assistant,
}

/// The `llava_v1` conversation (`SeparatorStyle.TWO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// System prompt.
    pub system: String,
    /// Turns; `None` = an open assistant turn (generation prompt).
    pub messages: Vec<(Role, Option<String>)>,
}

impl Conversation {
    /// An empty `llava_v1` conversation with its system prompt.
    pub fn llava_v1() -> Self {
        Self {
            system: LLAVA_V1_SYSTEM.to_string(),
            messages: Vec::new(),
        }
    }

    /// Appends a turn.
    pub fn push(&mut self, role: Role, message: Option<&str>) -> &mut Self {
        self.messages.push((role, message.map(str::to_string)));
        self
    }

    /// `get_prompt()`: `system + " "`, then `"ROLE: message"` followed by `" "` (even turns) or
    /// `"</s>"` (odd turns), and `"ROLE:"` for an empty turn.
    pub fn prompt(&self) -> String {
        let mut out = format!("{} ", self.system);
        for (index, (role, message)) in self.messages.iter().enumerate() {
            let name = match role {
                Role::User => "USER",
                Role::Assistant => "ASSISTANT",
            };
            match message.as_deref() {
                Some(text) if !text.is_empty() => {
                    out.push_str(&format!(
                        "{name}: {text}{}",
                        if index % 2 == 0 { " " } else { "</s>" }
                    ));
                }
                _ => out.push_str(&format!("{name}:")),
            }
        }
        out
    }
}

/// Writes `<image>` as `<im_start><image><im_end>` (GLaMM's `use_mm_start_end`).
pub fn wrap_image_tokens(text: &str) -> String {
    text.replace(
        IMAGE_PLACEHOLDER,
        &format!("{IM_START}{IMAGE_PLACEHOLDER}{IM_END}"),
    )
}

/// LEGION's inference prompt for `question` (`scripts/loc_exp/infer.py`):
/// `llava_v1` with `USER: The <im_start><image><im_end> provides an overview of the picture.\n
/// {question}` and an open `ASSISTANT:` turn.
pub fn legion_inference_prompt(question: &str) -> String {
    let mut conversation = Conversation::llava_v1();
    conversation
        .push(
            Role::User,
            Some(&wrap_image_tokens(&format!(
                "{LEGION_IMAGE_PREFIX}{question}"
            ))),
        )
        .push(Role::Assistant, None);
    conversation.prompt()
}

/// LEGION's training conversation (`create_conversations` then the collate's image wrapping):
/// `... USER: The <im_start><image><im_end> provides ...\n{question} ASSISTANT: {answer}</s>`.
pub fn legion_training_conversation(question: &str, answer: &str) -> String {
    let mut conversation = Conversation::llava_v1();
    conversation
        .push(
            Role::User,
            Some(&format!("{LEGION_IMAGE_PREFIX}{question}")),
        )
        .push(Role::Assistant, Some(answer));
    wrap_image_tokens(&conversation.prompt())
}
