//! Writes the scripted tiny bundle of `legion_infer::testing` (random CLIP/SAM, an LLM that
//! always names one artifact) to a folder, to try the inference commands without a trained
//! model:
//!
//! ```text
//! cargo run -p legion-infer --example scripted_bundle -- /tmp/scripted
//! legion analyze data/synthscars-tiny/test/images/test_00000.png --checkpoint /tmp/scripted
//! ```

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "scripted-bundle".into());
    let device = burn::tensor::Device::flex();
    let bundle = legion_infer::testing::scripted_bundle(&device, 7).expect("tiny bundle");
    bundle
        .save(std::path::Path::new(&dir))
        .expect("bundle written");
    eprintln!("wrote {dir}");
}
