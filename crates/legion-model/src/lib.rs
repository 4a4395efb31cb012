//! The LEGION model (arXiv 2503.15264) in burn 0.22: CLIP ViT-L/14-336 vision tower, MLP projector,
//! LLaMA-architecture LLM (Vicuna-7B), SAM ViT-H grounding encoder with prompt encoder and mask
//! decoder, and the `text_hidden_fcs` bridge from `[SEG]` hidden states to SAM prompts.
//!
//! One file per block. Each block has a `#[derive(Config)]` with named presets and `init(&device)`,
//! and is checked against the PyTorch reference on tiny random configs (fixtures under
//! `tests/fixtures/`, made by the scripts named in each test's header).

pub mod bundle;
pub mod clip_vision;
pub mod config_check;
mod cpu_inference;
pub mod debug;
pub mod detection_head;
pub mod fused_attention;
pub mod generation;
pub mod kv_cache;
pub mod layer_norm;
pub mod legion;
pub mod linear;
pub mod llama;
pub mod matmul;
pub mod precision;
pub mod projector;
pub mod sam;
mod softmax;
pub mod tokenizer;
pub mod tokenizer_train;
pub mod weights;
