//! One training step of the tiny LEGION (`LegionConfig::tiny()`) on the CPU `flex` backend:
//! forward (`Legion::forward_train`), LEGION's loss (1.0 CE + 0.4 BCE + 0.2 Dice,
//! `legion_train::loss`), backward, global gradient-norm clipping at 1.0 and an AdamW update
//! (betas 0.9/0.95, weight decay 0), every parameter trained, as `legion train --config
//! configs/tiny.toml` does a step.
//!
//! The batch is fixed and synthetic but shaped like the shipped data: 8 images (CLIP 32 px, SAM
//! 64 px, original 64x64), 8 token rows of 414 ids (the mean padded length of
//! `configs/tiny.toml`'s batches; the `<image>` placeholder after a 40-token prompt, the prompt
//! masked from the labels), two `[SEG]` per row and two random binary GT masks per image. No data
//! loading: `scripts/bench_train.py` times whole `legion train` steps on the real data against
//! PyTorch.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo bench -p legion-bench --bench train_step
//! ```

use std::time::Duration;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use legion_backend::Device;
use legion_model::legion::{Legion, LegionConfig, LegionImages};
use legion_model::tokenizer::{IGNORE_INDEX, IMAGE_TOKEN_INDEX, PaddedBatch};
use legion_train::grads::clip_global_norm;
use legion_train::loss::{LossWeights, Normalisers, legion_loss, supervised_tokens};

const BATCH: usize = 8;
const SEQ: usize = 414;
const PROMPT: usize = 40;
/// A `[SEG]` id inside the tiny vocabulary (640).
const SEG: u32 = 600;
const MASKS_PER_IMAGE: usize = 2;
const ORIGINAL: usize = 64;

/// The fixed batch: tokens, images and GT masks.
struct Batch {
    tokens: PaddedBatch,
    images: LegionImages,
    gt: Vec<Tensor<3>>,
    norm: Normalisers,
}

fn batch(config: &LegionConfig, device: &Device) -> Batch {
    let mut input_ids = Vec::with_capacity(BATCH * SEQ);
    let mut labels = Vec::with_capacity(BATCH * SEQ);
    for row in 0..BATCH {
        for t in 0..SEQ {
            let id = match t {
                0 => 1,
                PROMPT => IMAGE_TOKEN_INDEX,
                // Two `[SEG]`s in the answer, at row-dependent places.
                t if t == 150 + row || t == 300 + 3 * row => i64::from(SEG),
                t => (3 + (t * 7919 + row * 131) % 590) as i64,
            };
            input_ids.push(id);
            labels.push(if t <= PROMPT + 20 { IGNORE_INDEX } else { id });
        }
    }
    let tokens = PaddedBatch {
        attention_mask: vec![1; BATCH * SEQ],
        input_ids,
        labels,
        batch: BATCH,
        seq: SEQ,
    };
    let clip = config.clip.image_size;
    let sam = config.sam.image_encoder.img_size;
    let images = LegionImages {
        clip_pixels: Tensor::random(
            [BATCH, 3, clip, clip],
            Distribution::Normal(0.0, 1.0),
            device,
        ),
        sam_pixels: Tensor::random([BATCH, 3, sam, sam], Distribution::Normal(0.0, 1.0), device),
        sam_resized_hw: vec![(sam, sam); BATCH],
        original_hw: vec![(ORIGINAL, ORIGINAL); BATCH],
    };
    let gt = (0..BATCH)
        .map(|_| {
            Tensor::<3>::random(
                [MASKS_PER_IMAGE, ORIGINAL, ORIGINAL],
                Distribution::Bernoulli(0.2),
                device,
            )
        })
        .collect();
    let norm = Normalisers {
        tokens: supervised_tokens(&tokens.labels, SEQ) as f64,
        masks: (BATCH * MASKS_PER_IMAGE) as f64,
    };
    Batch {
        tokens,
        images,
        gt,
        norm,
    }
}

/// Forward, loss, backward, clipping and the AdamW update; returns the loss.
fn step(
    model: Legion,
    optim: &mut ModuleOptimizer,
    batch: &Batch,
    weights: LossWeights,
) -> (Legion, f32) {
    let out = model
        .forward_train(&batch.images, &batch.tokens, SEG)
        .expect("batch built for this config");
    let pairs = out
        .pred_masks
        .into_iter()
        .zip(&batch.gt)
        .map(|(pred, gt)| (pred, gt.clone()))
        .collect();
    let terms = legion_loss(out.logits, out.labels, pairs, batch.norm, weights);
    let loss = terms.total.clone().into_scalar::<f32>();
    let mut grads = GradientsParams::from_grads(terms.total.backward(), &model);
    clip_global_norm(&model, &mut grads, 1.0);
    (optim.step(2e-3, model, grads), loss)
}

fn train_step(c: &mut Criterion) {
    legion_backend::flush_denormals();
    // As `legion_train::train` sets it.
    legion_backend::heap::reuse_freed_buffers();
    let device = Device::flex().autodiff();
    device.seed(42);
    let config = LegionConfig::tiny();
    let mut model = Some(
        config
            .init(&device)
            .expect("tiny preset is consistent")
            .set_require_grad(true),
    );
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init();
    let batch = batch(&config, &device);
    let weights = LossWeights {
        ce: 1.0,
        bce: 0.4,
        dice: 0.2,
    };
    let mut group = c.benchmark_group("train_step");
    // Flat sampling: 10 samples of equal iteration counts (a step takes a few hundred ms).
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("tiny_batch8", |b| {
        b.iter(|| {
            let (next, loss) = step(
                model.take().expect("model put back"),
                &mut optim,
                &batch,
                weights,
            );
            model = Some(next);
            loss
        })
    });
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
