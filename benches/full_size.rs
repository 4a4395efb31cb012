//! Full-size LEGION components on the CPU `flex` backend, one per process, for
//! `scripts/bench_full_size.py` (which runs the PyTorch reference the same way and prints the
//! ratios). Random weights; prints one JSON line with the timings and the process's peak RSS.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo bench --profile dev -p legion-bench --bench full_size -- sam-vit-h
//! ```
//!
//! Components (`--repeats N` timed runs after one warm-up, which also creates burn's lazily
//! initialised parameters; default 2):
//! - `sam-vit-h`: SAM ViT-H image encoder (neck included), f32, one 1024 x 1024 image.
//! - `clip-vit-l-336`: CLIP ViT-L/14-336 vision tower, all 24 layers, bf16 weights, one
//!   336 x 336 image (f32 pixels, cast at the tower's boundary as in LEGION).
//! - `vicuna-7b`: Vicuna-7B (vocabulary 32007) with bf16 weights: a 600-token prefill into an
//!   empty KV cache (logits of every position, as `LlamaForCausalLM.forward`), then one decode
//!   step of one token on a copy of that 600-token cache (timed `--repeats` times, each on a
//!   fresh copy). No warm-up prefill: one prefill is 7.8 TFLOP.
//!
//! bf16 components build their weights directly in bf16 (the device's default float dtype),
//! so the 7B model never exists in f32 (27 GB). Peak RSS is `VmHWM` of `/proc/self/status`.

use std::time::Instant;

use burn::tensor::{
    DType, Device, DeviceConfig, Distribution, FloatDType, Int, Tensor, TensorData,
};
use legion_model::clip_vision::ClipVisionConfig;
use legion_model::llama::LlamaConfig;
use legion_model::sam::SamImageEncoderConfig;

/// Tokens of the prefill and of the decode step's cache (LEGION's prompt: 576 image tokens and
/// the question).
const PROMPT_TOKENS: usize = 600;

fn main() {
    // `cargo bench` appends `--bench`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut repeats = 2usize;
    let mut component = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--repeats" => {
                repeats = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--repeats takes a count")
            }
            name => component = Some(name.to_string()),
        }
    }
    let component = component.expect("usage: full_size <sam-vit-h|clip-vit-l-336|vicuna-7b>");
    let json = match component.as_str() {
        "sam-vit-h" => sam_vit_h(repeats),
        "clip-vit-l-336" => clip_vit_l_336(repeats),
        "vicuna-7b" => vicuna_7b(repeats),
        other => panic!("unknown component {other}"),
    };
    println!(
        "{{\"component\": \"{component}\", \"threads\": {}, {json}, \"peak_rss_kib\": {}}}",
        rayon::current_num_threads(),
        peak_rss_kib()
    );
}

/// A CPU device whose new float tensors are `dtype`.
fn device(dtype: FloatDType) -> Device {
    let mut device = Device::flex();
    device
        .configure(DeviceConfig::default().float_dtype(dtype))
        .expect("a fresh device takes a float dtype");
    device.seed(7);
    assert_eq!(Tensor::<1>::zeros([1], &device).dtype(), DType::from(dtype));
    device
}

/// Seconds of `run` (which must read its result back, so that nothing is left pending).
fn seconds(run: impl FnOnce()) -> f64 {
    let start = Instant::now();
    run();
    start.elapsed().as_secs_f64()
}

/// One warm-up run of `run` (which also creates burn's lazily initialised parameters), then
/// `repeats` timed runs, as the JSON field `"forward_s"`.
fn warm_then_time(repeats: usize, run: impl Fn()) -> String {
    seconds(&run);
    let times: Vec<f64> = (0..repeats).map(|_| seconds(&run)).collect();
    format!("\"forward_s\": {}", list(&times))
}

fn list(values: &[f64]) -> String {
    let items: Vec<String> = values.iter().map(|v| format!("{v:.4}")).collect();
    format!("[{}]", items.join(", "))
}

fn sam_vit_h(repeats: usize) -> String {
    let device = device(FloatDType::F32);
    let config = SamImageEncoderConfig::vit_h();
    let encoder = config.init(&device);
    let image = Tensor::<4>::random(
        [1, config.in_chans, config.img_size, config.img_size],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let run = || {
        let out = encoder.forward(image.clone());
        assert_eq!(out.dims(), [1, 256, 64, 64]);
        out.sum().into_scalar::<f32>();
    };
    warm_then_time(repeats, run)
}

fn clip_vit_l_336(repeats: usize) -> String {
    let device = device(FloatDType::BF16);
    let config = ClipVisionConfig::clip_vit_l_336();
    let tower = config.init(&device);
    let size = config.image_size;
    let pixels: Vec<f32> = (0..3 * size * size)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let pixels = Tensor::<4>::from_data(
        TensorData::new(pixels, [1, 3, size, size]),
        (&device, DType::F32),
    );
    let run = || {
        let out = tower
            .forward(pixels.clone())
            .expect("input built for this config");
        out.last_hidden_state.sum().into_scalar::<f32>();
    };
    warm_then_time(repeats, run)
}

fn vicuna_7b(repeats: usize) -> String {
    let device = device(FloatDType::BF16);
    let config = LlamaConfig::vicuna_7b();
    let model = config.init(&device);
    assert_eq!(model.dtype(), DType::BF16);
    // burn creates parameters on first use: a one-token forward creates them all, so that the
    // prefill's time is the prefill's.
    let mut warm_up = model.new_cache();
    let one = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64], [1, 1]), &device);
    model
        .forward(one, None, Some(&mut warm_up))
        .logits
        .sum()
        .into_scalar::<f32>();
    // The same deterministic ids as the Python side, spread over the vocabulary.
    let ids: Vec<i64> = (0..PROMPT_TOKENS)
        .map(|i| ((i * 7919) % config.vocab_size) as i64)
        .collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, PROMPT_TOKENS]), &device);
    let mut cache = model.new_cache();
    let prefill = seconds(|| {
        let out = model.forward(ids, None, Some(&mut cache));
        assert_eq!(out.logits.dims(), [1, PROMPT_TOKENS, config.vocab_size]);
        out.logits
            .narrow(1, PROMPT_TOKENS - 1, 1)
            .sum()
            .into_scalar::<f32>();
    });
    assert_eq!(cache.seq_len(), PROMPT_TOKENS);
    let next = Tensor::<2, Int>::from_data(TensorData::new(vec![29871i64], [1, 1]), &device);
    let decode: Vec<f64> = (0..repeats)
        .map(|_| {
            let mut step_cache = cache.clone();
            seconds(|| {
                let out = model.forward(next.clone(), None, Some(&mut step_cache));
                out.logits.sum().into_scalar::<f32>();
            })
        })
        .collect();
    format!(
        "\"prefill_s\": {prefill:.4}, \"decode_s\": {}",
        list(&decode)
    )
}

/// Peak resident set size of this process (`VmHWM`), KiB; 0 where `/proc` is missing.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
