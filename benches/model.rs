//! Forward and forward+backward time of the LEGION model components on the CPU `flex` backend.
//!
//! Components (criterion groups): `clip_vision` (CLIP vision tower), `llama` (LLaMA causal LM,
//! logits included), `sam_image_encoder` (SAM ViT image encoder, neck included) and
//! `sam_prompt_mask_decoder` (SAM prompt encoder with LEGION's text prompts + mask decoder,
//! single-mask output, no post-processing). Each has four benchmarks:
//! `{tiny,small}_{forward,forward_backward}`.
//!
//! - `tiny`: the `tiny()` presets of the parity tests.
//! - `small`: CLIP ViT-B/16 at 224 px (hidden 768, 12 layers, 12 heads, MLP 3072), batch 1; a
//!   4-layer LLaMA 1024 wide (16 heads, no GQA, intermediate 2752, vocabulary 32007), batch 1,
//!   256 tokens; SAM ViT-B image encoder at `LEGION_BENCH_SAM_IMG` px (default 512, a quarter of
//!   SAM's 1024 tokens, because ViT-B at 1024 takes seconds per forward on 2 cores; set it to
//!   1024 for the real size); SAM's full prompt encoder + mask decoder (width 256, 64x64 image
//!   embedding) with 3 text prompts, as LEGION prompts it per image.
//!
//! `forward` runs on `Device::flex()` (no graph); `forward_backward` on
//! `Device::flex().autodiff()`, loss = sum of the outputs, `.backward()` (every parameter
//! requires grad; the decoder's text prompts do too, as in LEGION training). Each iteration ends
//! by reading the loss back as a scalar, so nothing is left pending. Weights are random.
//!
//! Threads: `flex` runs on rayon's global pool (its matmuls call `gemm` with rayon), so pin the
//! count with `RAYON_NUM_THREADS`, and give PyTorch the same with `torch.set_num_threads`:
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo bench -p legion-bench --bench model            # everything
//! RAYON_NUM_THREADS=2 cargo bench -p legion-bench --bench model -- llama   # filter by name
//! /work/venv/bin/python scripts/bench_model.py --threads 2   # PyTorch side + this + ratio table
//! ```
//!
//! Criterion's flat sampling with 10 samples keeps the slow cases at ~11 iterations each. On a
//! shared 2-core machine one iteration of `sam_image_encoder/small_forward_backward` took ~35 s
//! (~6 min for that bench alone) and everything else ~5 min together; skip it for a quick run
//! with a filter such as `'^(clip_vision|llama|sam_prompt|sam_image_encoder/(tiny|small_forward$))'`.

use std::cell::OnceCell;
use std::hint::black_box;
use std::time::Duration;

use burn::tensor::{Distribution, Int, Tensor, TensorData};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, criterion_group, criterion_main};
use legion_backend::Device;
use legion_model::clip_vision::ClipVisionConfig;
use legion_model::llama::LlamaConfig;
use legion_model::sam::{
    SamImageEncoderConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamPrompts,
};

/// Side of the SAM image-encoder input of the `small` case.
fn sam_image_size() -> usize {
    std::env::var("LEGION_BENCH_SAM_IMG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512)
}

/// The two sizes of every component.
#[derive(Clone, Copy)]
enum Scale {
    Tiny,
    Small,
}

impl Scale {
    fn name(self) -> &'static str {
        match self {
            Scale::Tiny => "tiny",
            Scale::Small => "small",
        }
    }
}

impl Scale {
    /// Target measurement time per bench (`scripts/bench_model.py` uses the same). The `small`
    /// cases take longer than this anyway: flat sampling then runs 10 single iterations.
    fn measurement_time(self) -> Duration {
        match self {
            Scale::Tiny => Duration::from_secs(1),
            Scale::Small => Duration::from_secs(2),
        }
    }
}

const SCALES: [Scale; 2] = [Scale::Tiny, Scale::Small];

/// Runs `forward` (which returns the scalar loss) on a plain and on an autodiff device: the
/// first bench reads the loss, the second also back-propagates it.
///
/// `build` makes the model and inputs for a device; it runs lazily (once per device), so a
/// filtered-out bench builds nothing.
fn bench_pair<M>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    scale: Scale,
    build: impl Fn(&Device) -> M,
    forward: impl Fn(&M) -> Tensor<1>,
) {
    group.measurement_time(scale.measurement_time());
    let plain = OnceCell::new();
    group.bench_function(format!("{}_forward", scale.name()), |b| {
        let state = plain.get_or_init(|| build(&Device::flex()));
        b.iter(|| forward(state).into_scalar::<f32>())
    });
    let tracked = OnceCell::new();
    group.bench_function(format!("{}_forward_backward", scale.name()), |b| {
        let state = tracked.get_or_init(|| build(&Device::flex().autodiff()));
        b.iter(|| {
            let loss = forward(state);
            let grads = loss.backward();
            black_box(grads);
            loss.into_scalar::<f32>()
        })
    });
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    // Flat sampling: 10 samples of equal iteration counts, so a case of a few seconds runs
    // ~11 times (warm-up included) instead of criterion's linear 55.
    group.sampling_mode(SamplingMode::Flat);
    group
}

fn normal<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn clip_vision(c: &mut Criterion) {
    let mut group = group(c, "clip_vision");
    for scale in SCALES {
        let config = match scale {
            Scale::Tiny => ClipVisionConfig::tiny(),
            // openai/clip-vit-base-patch16.
            Scale::Small => ClipVisionConfig::new(224, 16, 768, 12, 12, 3072),
        };
        let build = |device: &Device| {
            device.seed(7);
            let pixels = normal(
                [1, config.num_channels, config.image_size, config.image_size],
                device,
            );
            (config.init(device), pixels)
        };
        bench_pair(&mut group, scale, build, |(model, pixels)| {
            model
                .forward(pixels.clone())
                .expect("input built for this config")
                .last_hidden_state
                .sum()
        });
    }
    group.finish();
}

fn llama(c: &mut Criterion) {
    let mut group = group(c, "llama");
    for scale in SCALES {
        let (config, seq) = match scale {
            Scale::Tiny => (LlamaConfig::tiny(), 16),
            Scale::Small => (LlamaConfig::new(32007, 1024, 2752, 4, 16, 16), 256),
        };
        let build = |device: &Device| {
            device.seed(7);
            // Deterministic ids spread over the whole vocabulary.
            let ids: Vec<i64> = (0..seq)
                .map(|i| ((i * 7919) % config.vocab_size) as i64)
                .collect();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, seq]), device);
            (config.init(device), ids)
        };
        bench_pair(&mut group, scale, build, |(model, ids)| {
            model.forward(ids.clone(), None, None).logits.sum()
        });
    }
    group.finish();
}

fn sam_image_encoder(c: &mut Criterion) {
    let mut group = group(c, "sam_image_encoder");
    for scale in SCALES {
        let config = match scale {
            Scale::Tiny => SamImageEncoderConfig::tiny(),
            Scale::Small => {
                let mut config = SamImageEncoderConfig::vit_b();
                config.img_size = sam_image_size();
                config
            }
        };
        let build = |device: &Device| {
            device.seed(7);
            let images = normal(
                [1, config.in_chans, config.img_size, config.img_size],
                device,
            );
            (config.init(device), images)
        };
        bench_pair(&mut group, scale, build, |(model, images)| {
            model.forward(images.clone()).sum()
        });
    }
    group.finish();
}

/// LEGION's decoder call for one image: 3 `[SEG]` embeddings, each prompting alone.
const NUM_TEXT_PROMPTS: usize = 3;

fn sam_prompt_mask_decoder(c: &mut Criterion) {
    let mut group = group(c, "sam_prompt_mask_decoder");
    for scale in SCALES {
        let (prompt_config, decoder_config) = match scale {
            Scale::Tiny => (SamPromptEncoderConfig::tiny(), SamMaskDecoderConfig::tiny()),
            Scale::Small => (SamPromptEncoderConfig::sam(), SamMaskDecoderConfig::sam()),
        };
        let build = |device: &Device| {
            device.seed(7);
            let [h, w] = prompt_config.image_embedding_size;
            let dim = prompt_config.embed_dim;
            let image_embedding = normal([1, dim, h, w], device);
            // The `text_hidden_fcs` outputs; they carry gradients in LEGION training.
            let seg = normal([NUM_TEXT_PROMPTS, dim], device);
            let seg = if seg.is_autodiff() {
                seg.require_grad()
            } else {
                seg
            };
            (
                prompt_config.init(device),
                decoder_config.init(device),
                image_embedding,
                seg,
            )
        };
        bench_pair(
            &mut group,
            scale,
            build,
            |(prompt_encoder, decoder, image_embedding, seg)| {
                let (sparse, dense) = prompt_encoder.forward(SamPrompts::text(seg.clone()));
                let (masks, iou) = decoder.forward(
                    image_embedding.clone(),
                    prompt_encoder.get_dense_pe(),
                    sparse,
                    dense,
                    false,
                );
                masks.sum() + iou.sum()
            },
        );
    }
    group.finish();
}

fn config() -> Criterion {
    // As `legion_train::train` sets it: the forward_backward benches are training steps (the
    // forward ones measured the same with and without it).
    legion_backend::heap::reuse_freed_buffers();
    eprintln!(
        "legion model bench: rayon threads = {} (set RAYON_NUM_THREADS), SAM encoder input = {} px \
         (set LEGION_BENCH_SAM_IMG)",
        rayon::current_num_threads(),
        sam_image_size()
    );
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = clip_vision, llama, sam_image_encoder, sam_prompt_mask_decoder
}
criterion_main!(benches);
