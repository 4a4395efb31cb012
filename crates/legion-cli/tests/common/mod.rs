//! Helpers shared by the CLI end-to-end tests: the shipped tiny data and a scripted bundle.

use std::path::{Path, PathBuf};

use legion_infer::testing::scripted_bundle;

pub fn tiny_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/synthscars-tiny")
}

pub fn test_image(k: usize) -> PathBuf {
    tiny_data().join(format!("test/images/test_{k:05}.png"))
}

/// A bundle with random CLIP/SAM and an LLM scripted to name one artifact, saved in `dir`.
pub fn bundle(dir: &Path) -> PathBuf {
    let device = burn::tensor::Device::flex();
    let target = dir.join("model");
    scripted_bundle(&device, 7).unwrap().save(&target).unwrap();
    target
}
