//! The training loop.
//!
//! One optimiser step = `batch_size * grad_accum` samples from the data stream
//! ([`crate::rng::EpochSampler`]: sample `k` of the run is a pure function of `k` and the
//! seed), split into `grad_accum` micro-batches, each split over the devices. Every device runs
//! forward + backward on its shard with a replica of the model; the gradients are moved to the
//! first device and summed. Each loss term is a sum divided by a count over the *whole* step
//! ([`crate::loss::Normalisers`]), so accumulation and data parallelism compute exactly the
//! gradient of the whole batch's loss (up to float summation order).
//!
//! Then: a non-finite loss or gradient norm skips the step (reported; after
//! `max_bad_steps` in a row the run stops, keeping the last good checkpoint); otherwise global
//! clipping and AdamW at the scheduled rate. Checkpoints every `checkpoint_every` steps and at
//! the end; `resume` continues from the newest one exactly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use rayon::prelude::*;
use serde::Serialize;

use legion_backend::DeviceSpec;
use legion_data::batch::masks_tensor;
use legion_data::dataset::{OpenOptions, Sample, SampleConfig, SynthScarsSplit};
use legion_data::error::BadInputPolicy;
use legion_data::preprocess::{ClipPreprocessConfig, SamPreprocessConfig};
use legion_model::bundle::{BundleMeta, ModelBundle};
use legion_model::legion::{Legion, LegionConfig};
use legion_model::tokenizer::{
    LEGION_QUESTION, LegionTokenizer, TrainingExample, legion_training_conversation,
};

use crate::TrainError;
use crate::checkpoint::{TrainerState, latest_checkpoint, load_checkpoint, save_checkpoint};
use crate::config::{Task, TrainConfig};
use crate::evaluation::{EvalSummary, evaluate, legion_images};
use crate::grads::clip_global_norm;
use crate::loss::{LossWeights, Normalisers, legion_loss, supervised_tokens};
use crate::rng::{EpochSampler, random_unit};
use crate::schedule::warmup_decay_lr;
use crate::trainable::{configure_trainable, count_trainable};

/// What the loop reports after every optimiser step (also one line of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// 1-based step just finished.
    pub step: u64,
    /// Steps of the run.
    pub total_steps: u64,
    /// Weighted loss.
    pub loss: f64,
    /// Token cross-entropy.
    pub ce: f64,
    /// Mask BCE.
    pub bce: f64,
    /// Mask Dice.
    pub dice: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Whether the update was skipped (non-finite loss or gradient).
    pub skipped: bool,
    /// Seconds this step took.
    pub seconds: f64,
}

/// Receives progress; the CLI draws a progress bar with it.
pub trait TrainObserver: Sync {
    /// The run starts at `first_step` (0, or the resumed step) of `total_steps`.
    fn on_start(&self, first_step: u64, total_steps: u64);
    /// A step finished.
    fn on_step(&self, record: &StepRecord);
    /// A notable event (checkpoint written, step skipped, validation result).
    fn on_message(&self, message: &str);
}

/// An observer that only logs through `tracing`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogObserver;

impl TrainObserver for LogObserver {
    fn on_start(&self, first_step: u64, total_steps: u64) {
        tracing::info!(first_step, total_steps, "training starts");
    }
    fn on_step(&self, record: &StepRecord) {
        tracing::debug!(step = record.step, loss = record.loss, "step");
    }
    fn on_message(&self, message: &str) {
        tracing::info!("{message}");
    }
}

/// Result of [`train`].
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Output folder.
    pub out_dir: PathBuf,
    /// The final model bundle.
    pub final_model: PathBuf,
    /// Steps completed (including earlier runs when resumed).
    pub steps: u64,
    /// Steps skipped for non-finite values.
    pub skipped_steps: u64,
    /// Training samples dropped by the bad-input policy.
    pub dropped_samples: u64,
    /// Wall-clock seconds of training (all sessions of a resumed run).
    pub train_seconds: f64,
    /// Steps per second of this session.
    pub steps_per_second: f64,
    /// `(trainable, total)` parameters.
    pub parameters: (usize, usize),
    /// Held-out evaluation of the untrained model (when `run.evaluate` and not resumed).
    pub before: Option<EvalSummary>,
    /// Held-out evaluation of the trained model (when `run.evaluate`).
    pub after: Option<EvalSummary>,
    /// `task = "detect"`: held-out accuracy of the untrained classifier.
    pub detect_before: Option<crate::detect::DetectEval>,
    /// `task = "detect"`: held-out accuracy of the trained classifier.
    pub detect_after: Option<crate::detect::DetectEval>,
}

/// The `LegionConfig` of a named preset.
///
/// # Errors
/// [`TrainError::Config`] for an unknown preset.
pub fn preset_config(preset: &str) -> Result<LegionConfig, TrainError> {
    match preset {
        "tiny" => Ok(LegionConfig::tiny()),
        "small" => Ok(LegionConfig::small()),
        "fixture" => Ok(LegionConfig::fixture()),
        "legion-7b" => Ok(LegionConfig::legion_7b()),
        other => Err(TrainError::Config {
            source_name: "model.preset".into(),
            message: format!("unknown preset `{other}` (tiny, small, fixture, legion-7b)"),
        }),
    }
}

/// Preprocessing of a model config: CLIP at the tower's input size, SAM on the encoder's
/// canvas with the longest side `sam_longest_side` (default: the canvas).
pub fn sample_config(model: &LegionConfig, sam_longest_side: Option<u32>) -> SampleConfig {
    let clip = model.clip.image_size as u32;
    let canvas = model.sam.image_encoder.img_size as u32;
    SampleConfig {
        clip: ClipPreprocessConfig::new(clip, clip),
        sam: SamPreprocessConfig::new(sam_longest_side.unwrap_or(canvas).min(canvas), canvas),
    }
}

/// Everything a step needs about the data.
struct TrainData {
    primary: Arc<SynthScarsSplit>,
    primary_indices: Vec<usize>,
    mix: Option<(Arc<SynthScarsSplit>, Vec<usize>)>,
    sample_config: SampleConfig,
}

fn open_split(root: &Path, split: &str, skip_bad: bool) -> Result<SynthScarsSplit, TrainError> {
    let options = OpenOptions {
        bad_input: if skip_bad {
            BadInputPolicy::Skip
        } else {
            BadInputPolicy::Error
        },
        ..OpenOptions::default()
    };
    let opened = SynthScarsSplit::open(root, split, &options)?;
    for problem in opened.problems() {
        tracing::warn!(location = %problem.location, "{}", problem.message);
    }
    Ok(opened)
}

/// Records the reference training loader keeps: at least one grounded phrase.
fn trainable_indices(split: &SynthScarsSplit) -> Vec<usize> {
    (0..split.len())
        .filter(|&i| !split.entries()[i].grounding.spans.is_empty())
        .collect()
}

impl TrainData {
    /// `(split, record index)` of stream position `k`.
    fn locate(
        &self,
        sampler: &mut EpochSampler,
        seed: u64,
        ratio: f64,
        k: u64,
    ) -> (Arc<SynthScarsSplit>, usize) {
        if let Some((split, indices)) = &self.mix
            && random_unit(seed, 1, k) < ratio
        {
            // Mixed-in data is drawn with replacement, a pure function of k.
            let pick = (crate::rng::random_u64(seed, 2, k) % indices.len() as u64) as usize;
            return (split.clone(), indices[pick]);
        }
        (self.primary.clone(), self.primary_indices[sampler.item(k)])
    }
}

/// One tokenised sample of a step.
struct Prepared {
    sample: Sample,
    example: TrainingExample,
}

fn tokenize(
    tokenizer: &LegionTokenizer,
    sample: Sample,
    max_length: usize,
) -> Result<Prepared, TrainError> {
    let conversation = legion_training_conversation(LEGION_QUESTION, &sample.answer);
    let example = tokenizer.training_example(&conversation, max_length)?;
    Ok(Prepared { sample, example })
}

/// The starting point of a run on `device` (autodiff): the model config, the tokenizer and the
/// weights with the trainable plan applied. Weights are random from the seed, or, with
/// `model.init`, the bundle's (read once, config and tokenizer included).
fn initial_model(
    config: &TrainConfig,
    device: &Device,
) -> Result<(LegionConfig, LegionTokenizer, Legion), TrainError> {
    device.seed(config.run.seed);
    let (model_config, tokenizer, model) = match &config.model.init {
        Some(init) => {
            let bundle = ModelBundle::load(init, device)?;
            (bundle.config, bundle.tokenizer, bundle.model)
        }
        None => {
            let path = config
                .data
                .tokenizer
                .as_ref()
                .ok_or_else(|| TrainError::Config {
                    source_name: "data.tokenizer".into(),
                    message: "no tokenizer given".into(),
                })?;
            let tokenizer = LegionTokenizer::from_file(path)?;
            let model_config = preset_config(&config.model.preset)?;
            let model = model_config.init(device)?;
            (model_config, tokenizer, model)
        }
    };
    let model = configure_trainable(model, &config.trainable)?;
    Ok((model_config, tokenizer, model))
}

/// AdamW with the run's betas, epsilon and weight decay.
pub(crate) fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(config.optim.beta1 as f32)
        .with_beta_2(config.optim.beta2 as f32)
        .with_epsilon(config.optim.eps as f32)
        .with_weight_decay(config.optim.weight_decay as f32)
        .init()
}

fn resolve_devices(config: &TrainConfig) -> Result<Vec<Device>, TrainError> {
    config
        .run
        .devices
        .iter()
        .map(|spec| {
            let spec: DeviceSpec = spec.parse().map_err(|e: legion_backend::BackendError| e)?;
            let device = spec.device()?;
            Ok(if config.run.gradient_checkpointing {
                device.autodiff().gradient_checkpointing()
            } else {
                device.autodiff()
            })
        })
        .collect()
}

/// Trains as `config` says, writing everything under `config.run.out_dir`; with `resume`,
/// continues from the newest checkpoint there.
///
/// # Errors
/// [`TrainError`]: bad config, data (per the bad-input policy), I/O, or divergence.
pub fn train(
    config: &TrainConfig,
    resume: bool,
    observer: &dyn TrainObserver,
) -> Result<TrainSummary, TrainError> {
    if config.run.task == Task::Detect {
        return crate::detect::train_detector(config, resume, observer);
    }
    // Saturated mask logits produce subnormal floats, ~25x slower on x86 (measured).
    legion_backend::flush_denormals();
    let out_dir = config.run.out_dir.clone();
    std::fs::create_dir_all(&out_dir).map_err(|e| TrainError::Io {
        path: out_dir.clone(),
        message: e.to_string(),
    })?;
    let config_toml = config.to_toml();
    let checkpoints = out_dir.join("checkpoints");
    let devices = resolve_devices(config)?;
    let main_device = devices[0].clone();
    let (model_config, tokenizer, mut model) = initial_model(config, &main_device)?;
    if tokenizer.vocab_size() > model_config.llm.vocab_size {
        return Err(TrainError::Config {
            source_name: "data.tokenizer / model.init".into(),
            message: format!(
                "the tokenizer has {} tokens, the model's vocabulary {}",
                tokenizer.vocab_size(),
                model_config.llm.vocab_size
            ),
        });
    }
    let sample_config = sample_config(&model_config, config.data.sam_longest_side);
    let primary = Arc::new(open_split(
        &config.data.root,
        &config.data.train_split,
        config.data.skip_bad,
    )?);
    let primary_indices = trainable_indices(&primary);
    if primary_indices.is_empty() {
        return Err(TrainError::Config {
            source_name: config.data.root.display().to_string(),
            message: format!(
                "split `{}` has no record with a grounded artifact phrase to train on",
                config.data.train_split
            ),
        });
    }
    let mix = match (&config.data.mix_root, config.data.mix_ratio > 0.0) {
        (Some(root), true) => {
            let split = Arc::new(open_split(
                root,
                &config.data.train_split,
                config.data.skip_bad,
            )?);
            let indices = trainable_indices(&split);
            Some((split, indices))
        }
        _ => None,
    };
    let data = TrainData {
        primary,
        primary_indices,
        mix,
        sample_config: sample_config.clone(),
    };
    let val_split = open_split(
        &config.data.root,
        &config.data.val_split,
        config.data.skip_bad,
    )?;
    let eval_samples = sample_config_for_eval(&model_config);

    let mut optim = optimizer(config);
    let mut state = TrainerState {
        config_toml: config_toml.clone(),
        ..TrainerState::default()
    };
    let mut before = None;
    if resume {
        match latest_checkpoint(&checkpoints)? {
            Some(dir) => {
                let (m, o, s) = load_checkpoint(&dir, model, optim)?;
                if !config.resumable_from(&s.config_toml) {
                    return Err(TrainError::Config {
                        source_name: dir.join("train_config.toml").display().to_string(),
                        message: "the checkpoint was written with another config; resume with \
                                  the same config (see train_config.toml there)"
                            .into(),
                    });
                }
                (model, optim, state) = (m, o, s);
                observer.on_message(&format!(
                    "resumed from {} (step {})",
                    dir.display(),
                    state.step
                ));
            }
            None => observer.on_message("no checkpoint to resume from; starting fresh"),
        }
    }
    let parameters = count_trainable(&model);
    std::fs::write(out_dir.join("train_config.toml"), &config_toml).map_err(|e| {
        TrainError::Io {
            path: out_dir.join("train_config.toml"),
            message: e.to_string(),
        }
    })?;
    if config.run.evaluate && state.step == 0 {
        observer.on_message("evaluating the untrained model on the held-out split");
        let summary = evaluate(
            &model.valid(),
            &tokenizer,
            &val_split,
            &eval_samples,
            config.run.max_new_tokens,
        )?;
        observer.on_message(&format!("untrained: {}", summary.one_line()));
        before = Some(summary);
    }

    let mut metrics = MetricsLog::open(&out_dir, state.step)?;
    let weights = LossWeights {
        ce: config.loss.ce_weight,
        bce: config.loss.bce_weight,
        dice: config.loss.dice_weight,
    };
    let mut sampler = EpochSampler::new(data.primary_indices.len(), config.run.seed);
    let per_step = (config.run.batch_size * config.optim.grad_accum) as u64;
    let max_text = config
        .data
        .model_max_length
        .saturating_sub(model_config.num_image_tokens() - 1)
        .max(1);
    let session_start = Instant::now();
    let first_step = state.step;
    let mut last_checkpoint = String::from("(none)");
    observer.on_start(first_step, config.run.steps);
    while state.step < config.run.steps {
        let started = Instant::now();
        let lr = warmup_decay_lr(
            config.optim.lr,
            state.step,
            config.optim.warmup_steps,
            config.decay_steps(),
        );
        // The step's samples, decoded in parallel.
        let positions: Vec<(Arc<SynthScarsSplit>, usize)> = (0..per_step)
            .map(|i| {
                data.locate(
                    &mut sampler,
                    config.run.seed,
                    config.data.mix_ratio,
                    state.step * per_step + i,
                )
            })
            .collect();
        let loaded: Vec<Result<Prepared, TrainError>> = positions
            .par_iter()
            .map(|(split, index)| {
                let sample = split.load(*index, &data.sample_config)?;
                tokenize(&tokenizer, sample, config.data.model_max_length)
            })
            .collect();
        let mut prepared = Vec::with_capacity(loaded.len());
        for item in loaded {
            match item {
                Ok(p) => prepared.push(p),
                Err(e) if config.data.skip_bad => {
                    state.dropped_samples += 1;
                    observer.on_message(&format!("skipped a bad sample: {e}"));
                }
                Err(e) => return Err(e),
            }
        }
        let record = if prepared.is_empty() {
            None
        } else {
            Some(run_step(
                &model, &prepared, &devices, &tokenizer, weights, config, max_text,
            )?)
        };
        let (terms, mut grads) = match record {
            Some(r) => r,
            None => (StepLosses::nan(), GradientsParams::new()),
        };
        let grad_norm = clip_global_norm(&model, &mut grads, config.optim.grad_clip);
        let finite = terms.total.is_finite() && grad_norm.is_finite();
        if finite {
            model = optim.step(lr, model, grads);
            state.bad_steps_in_a_row = 0;
        } else {
            state.skipped_steps += 1;
            state.bad_steps_in_a_row += 1;
            observer.on_message(&format!(
                "step {}: non-finite loss {} / gradient norm {grad_norm}: update skipped",
                state.step + 1,
                terms.total
            ));
        }
        let diverged = state.bad_steps_in_a_row >= config.run.max_bad_steps;
        state.step += 1;
        let seconds = started.elapsed().as_secs_f64();
        state.elapsed_seconds += seconds;
        let record = StepRecord {
            step: state.step,
            total_steps: config.run.steps,
            loss: terms.total,
            ce: terms.ce,
            bce: terms.bce,
            dice: terms.dice,
            lr,
            grad_norm,
            skipped: !finite,
            seconds,
        };
        metrics.write(&serde_json::json!({"train": &record}))?;
        observer.on_step(&record);
        if diverged {
            // No checkpoint of this state: the last one written stays the newest.
            return Err(TrainError::Diverged {
                step: state.step,
                count: state.bad_steps_in_a_row,
                detail: format!("loss {}, gradient norm {grad_norm}", terms.total),
                last_checkpoint,
            });
        }

        if config.run.validate_every > 0 && state.step.is_multiple_of(config.run.validate_every) {
            let val = validation_loss(
                &model,
                &val_split,
                &data.sample_config,
                &tokenizer,
                &devices,
                weights,
                config,
                max_text,
            )?;
            metrics.write(
                &serde_json::json!({"validation": {"step": state.step, "loss": val.total,
                    "ce": val.ce, "bce": val.bce, "dice": val.dice}}),
            )?;
            observer.on_message(&format!(
                "step {}: validation loss {:.4} (ce {:.4}, bce {:.4}, dice {:.4})",
                state.step, val.total, val.ce, val.bce, val.dice
            ));
            if config.run.validate_metrics {
                let scores = evaluate(
                    &model.valid(),
                    &tokenizer,
                    &val_split,
                    &eval_samples,
                    config.run.max_new_tokens,
                )?;
                metrics.write(&serde_json::json!({"validation_metrics": {"step": state.step, "scores": &scores}}))?;
                observer.on_message(&format!(
                    "step {}: held-out {}",
                    state.step,
                    scores.one_line()
                ));
            }
        }
        if config.checkpoint_due(state.step) {
            let path = save_checkpoint(
                &checkpoints,
                &model,
                &optim,
                &state,
                config.run.keep_checkpoints,
            )?;
            last_checkpoint = path.display().to_string();
            tracing::debug!(checkpoint = %last_checkpoint, "checkpoint written");
        }
    }
    let session_steps = state.step - first_step;
    let session_seconds = session_start.elapsed().as_secs_f64();

    // The final model: LoRA merged, gradients off, on the plain device.
    let trained = model.valid().materialize();
    let final_dir = out_dir.join("final");
    let mut meta = BundleMeta::new(
        &model_config,
        format!("legion train ({})", config.model.preset),
    );
    meta.trained_steps = Some(state.step);
    let bundle = ModelBundle {
        config: model_config.clone(),
        model: trained,
        tokenizer,
        meta,
    };
    bundle.save(&final_dir)?;
    crate::curve::write_curves(&metrics.path, &out_dir)?;
    let after = if config.run.evaluate {
        observer.on_message("evaluating the trained model on the held-out split");
        let summary = evaluate(
            &bundle.model,
            &bundle.tokenizer,
            &val_split,
            &eval_samples,
            config.run.max_new_tokens,
        )?;
        metrics.write(&serde_json::json!({"evaluation": &summary}))?;
        Some(summary)
    } else {
        None
    };
    let summary = TrainSummary {
        out_dir: out_dir.clone(),
        final_model: final_dir,
        steps: state.step,
        skipped_steps: state.skipped_steps,
        dropped_samples: state.dropped_samples,
        train_seconds: state.elapsed_seconds,
        steps_per_second: if session_seconds > 0.0 {
            session_steps as f64 / session_seconds
        } else {
            0.0
        },
        parameters,
        before,
        after,
        detect_before: None,
        detect_after: None,
    };
    let summary_path = out_dir.join("summary.json");
    std::fs::write(
        &summary_path,
        serde_json::to_string_pretty(&summary).expect("plain struct serialises"),
    )
    .map_err(|e| TrainError::Io {
        path: summary_path,
        message: e.to_string(),
    })?;
    Ok(summary)
}

/// Inference preprocessing of a model config: SAM fills its canvas (1024 for LEGION).
pub fn sample_config_for_eval(model: &LegionConfig) -> SampleConfig {
    sample_config(model, None)
}

/// `<out>/metrics.jsonl`, appended one JSON object per line as the run goes.
pub(crate) struct MetricsLog {
    file: std::fs::File,
    /// The log file.
    pub path: PathBuf,
}

impl MetricsLog {
    /// Opens `<out_dir>/metrics.jsonl` for appending a run that continues after step
    /// `from_step`. Entries an earlier session logged after that step (a run killed after its
    /// last checkpoint) are dropped first, atomically, so a resumed run logs each step once.
    pub(crate) fn open(out_dir: &Path, from_step: u64) -> Result<Self, TrainError> {
        let path = out_dir.join("metrics.jsonl");
        let io_error = |e: std::io::Error| TrainError::Io {
            path: path.clone(),
            message: e.to_string(),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let kept = lines_up_to_step(&text, from_step);
                if kept.len() < text.len() {
                    tracing::info!(
                        path = %path.display(),
                        from_step,
                        "dropping metrics logged after the resumed step"
                    );
                    legion_data::fsutil::write_atomic(&path, kept.as_bytes()).map_err(io_error)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e)),
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::Io {
                path: path.clone(),
                message: e.to_string(),
            })?;
        Ok(Self { file, path })
    }

    /// Appends one line.
    pub(crate) fn write(&mut self, value: &serde_json::Value) -> Result<(), TrainError> {
        writeln!(self.file, "{value}").map_err(|e| TrainError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}

/// The metrics log `text` up to (not including) its first entry for a step after `step`: every
/// entry is one JSON line `{"<kind>": {"step": N, ..}}`, in the order it was logged; a line
/// without a step (the final evaluation) belongs to the steps logged before it. A torn last
/// line (no newline) is dropped.
fn lines_up_to_step(text: &str, step: u64) -> &str {
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') {
            break;
        }
        let line_step = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.as_object()?.values().next()?.get("step")?.as_u64());
        if line_step.is_some_and(|s| s > step) {
            break;
        }
        end += line.len();
    }
    &text[..end]
}

/// Scalar loss terms of a step.
#[derive(Debug, Clone, Copy)]
pub struct StepLosses {
    /// Weighted total.
    pub total: f64,
    /// CE.
    pub ce: f64,
    /// BCE.
    pub bce: f64,
    /// Dice.
    pub dice: f64,
}

impl StepLosses {
    fn nan() -> Self {
        Self {
            total: f64::NAN,
            ce: f64::NAN,
            bce: f64::NAN,
            dice: f64::NAN,
        }
    }
    fn zero() -> Self {
        Self {
            total: 0.0,
            ce: 0.0,
            bce: 0.0,
            dice: 0.0,
        }
    }
    fn add(&mut self, other: &StepLosses) {
        self.total += other.total;
        self.ce += other.ce;
        self.bce += other.bce;
        self.dice += other.dice;
    }
}

/// Normalisers of a whole step: supervised tokens after truncation, masks that have a
/// `[SEG]` left after truncation.
fn normalisers(prepared: &[Prepared], max_text: usize, seg_id: u32) -> Normalisers {
    let mut tokens = 0usize;
    let mut masks = 0usize;
    for p in prepared {
        let len = p.example.input_ids.len().min(max_text);
        tokens += supervised_tokens(&p.example.labels[..len], len);
        let segs = p.example.input_ids[..len]
            .iter()
            .filter(|&&t| t == seg_id as i64)
            .count();
        masks += segs.min(p.sample.masks.len());
    }
    Normalisers {
        tokens: tokens.max(1) as f64,
        masks: masks as f64,
    }
}

/// Forward + backward of one shard on `device`; returns the loss terms and the gradients.
#[allow(clippy::too_many_arguments)]
fn shard_gradients(
    model: &Legion,
    shard: &[Prepared],
    device: &Device,
    tokenizer: &LegionTokenizer,
    norm: Normalisers,
    weights: LossWeights,
    max_text: usize,
    backward: bool,
) -> Result<(StepLosses, Option<GradientsParams>), TrainError> {
    let examples: Vec<TrainingExample> = shard.iter().map(|p| p.example.clone()).collect();
    let tokens = tokenizer.collate(&examples, Some(max_text));
    let samples: Vec<&Sample> = shard.iter().map(|p| &p.sample).collect();
    let images = legion_images(&samples, device);
    let out = model.forward_train(&images, &tokens, tokenizer.special().seg)?;
    let mut pairs = Vec::new();
    for (row, pred) in out.pred_masks.iter().enumerate() {
        let n_pred = pred.dims()[0];
        let gt = &shard[row].sample.masks;
        let n = n_pred.min(gt.len());
        if n == 0 {
            continue;
        }
        // Both in [SEG] order; truncation may have cut the last [SEG]s.
        let gt = masks_tensor(&gt[..n], device).expect("n > 0 masks");
        pairs.push((pred.clone().narrow(0, 0, n), gt));
    }
    let terms = legion_loss(out.logits, out.labels, pairs, norm, weights);
    let scalar = |t: &Tensor<1>| t.clone().into_scalar::<f64>();
    let losses = StepLosses {
        total: scalar(&terms.total),
        ce: scalar(&terms.ce),
        bce: scalar(&terms.bce),
        dice: scalar(&terms.dice),
    };
    if !backward {
        return Ok((losses, None));
    }
    let grads = GradientsParams::from_grads(terms.total.backward(), model);
    Ok((losses, Some(grads)))
}

/// Splits `items` into `parts` contiguous shards as even as possible (no empty shard).
fn shards<T>(items: &[T], parts: usize) -> Vec<&[T]> {
    let parts = parts.min(items.len()).max(1);
    let base = items.len() / parts;
    let extra = items.len() % parts;
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for i in 0..parts {
        let len = base + usize::from(i < extra);
        out.push(&items[start..start + len]);
        start += len;
    }
    out
}

/// One optimiser step's losses and summed gradients (on the first device).
fn run_step(
    model: &Legion,
    prepared: &[Prepared],
    devices: &[Device],
    tokenizer: &LegionTokenizer,
    weights: LossWeights,
    config: &TrainConfig,
    max_text: usize,
) -> Result<(StepLosses, GradientsParams), TrainError> {
    let norm = normalisers(prepared, max_text, tokenizer.special().seg);
    let main = &devices[0];
    let mut accumulator = GradientsAccumulator::<Legion>::new();
    let mut losses = StepLosses::zero();
    let micro = prepared.len().div_ceil(config.optim.grad_accum).max(1);
    for micro_batch in prepared.chunks(micro) {
        let parts = shards(micro_batch, devices.len());
        let results: Vec<Result<(StepLosses, Option<GradientsParams>), TrainError>> = if parts.len()
            == 1
        {
            vec![shard_gradients(
                model, parts[0], main, tokenizer, norm, weights, max_text, true,
            )]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = parts
                    .iter()
                    .zip(devices)
                    .map(|(shard, device)| {
                        let replica = model.clone().fork(device);
                        scope.spawn(move || {
                            shard_gradients(
                                &replica, shard, device, tokenizer, norm, weights, max_text, true,
                            )
                            .map(|(l, g)| (l, g.map(|g| g.to_device(main, &replica))))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a training thread panicked"))
                    .collect()
            })
        };
        for result in results {
            let (l, grads) = result?;
            losses.add(&l);
            if let Some(grads) = grads {
                accumulator.accumulate(model, grads);
            }
        }
    }
    Ok((losses, accumulator.grads()))
}

/// Teacher-forced loss on (a prefix of) the held-out split, without gradients.
#[allow(clippy::too_many_arguments)]
fn validation_loss(
    model: &Legion,
    split: &SynthScarsSplit,
    sample_config: &SampleConfig,
    tokenizer: &LegionTokenizer,
    devices: &[Device],
    weights: LossWeights,
    config: &TrainConfig,
    max_text: usize,
) -> Result<StepLosses, TrainError> {
    let indices = trainable_indices(split);
    let limit = match config.run.validate_samples {
        0 => indices.len(),
        n => n.min(indices.len()),
    };
    let prepared: Vec<Prepared> = indices[..limit]
        .par_iter()
        .map(|&i| {
            tokenize(
                tokenizer,
                split.load(i, sample_config)?,
                config.data.model_max_length,
            )
        })
        .collect::<Result<_, _>>()?;
    let norm = normalisers(&prepared, max_text, tokenizer.special().seg);
    let inference = model.valid();
    let device = devices[0].clone().inner();
    let mut total = StepLosses::zero();
    for chunk in prepared.chunks(config.run.batch_size) {
        let (l, _) = shard_gradients(
            &inference, chunk, &device, tokenizer, norm, weights, max_text, false,
        )?;
        total.add(&l);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_after_the_resumed_step_are_dropped() {
        let log = concat!(
            "{\"train\":{\"step\":1,\"loss\":2.0}}\n",
            "{\"train\":{\"step\":2,\"loss\":1.5}}\n",
            "{\"validation\":{\"step\":2,\"loss\":1.7}}\n",
            "{\"train\":{\"step\":3,\"loss\":1.2}}\n",
            "{\"evaluation\":{\"miou\":0.5}}\n",
        );
        let through_2 = &log[..log.find("{\"train\":{\"step\":3").unwrap()];
        assert_eq!(lines_up_to_step(log, 2), through_2);
        assert_eq!(lines_up_to_step(log, 0), "");
        assert_eq!(lines_up_to_step(log, 3), log);
        // A line torn by a kill is dropped.
        let torn = format!("{through_2}{{\"train\":{{\"st");
        assert_eq!(lines_up_to_step(&torn, 5), through_2);
    }

    #[test]
    fn shards_are_contiguous_and_even() {
        let items: Vec<u32> = (0..7).collect();
        let parts = shards(&items, 3);
        assert_eq!(parts, vec![&items[0..3], &items[3..5], &items[5..7]]);
        assert_eq!(shards(&items[..1], 4).len(), 1);
    }
}
