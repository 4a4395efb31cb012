//! The one training loop, shared by every task (segmentation, detection).
//!
//! A task says what a sample is, how it is loaded, and what the loss of a shard of samples is
//! ([`TrainTask`], as burn's `TrainStep`/`InferenceStep` split the model's step from the
//! learner); the loop owns everything else: resume, accumulation, devices, the NaN guard,
//! logging, validation, checkpoints and the summary.
//!
//! One optimiser step = `batch_size * grad_accum` samples from the data stream
//! ([`crate::rng::EpochSampler`]: sample `k` of the run is a pure function of `k` and the
//! seed), split into `grad_accum` micro-batches, each split over the devices. Every device runs
//! forward + backward on its shard with a replica of the model; the gradients are moved to the
//! first device and summed. A task normalises each shard's loss by counts over the *whole*
//! step ([`TrainTask::step_context`]), so accumulation and data parallelism compute exactly the
//! gradient of the whole batch's loss (up to float summation order).
//!
//! Across processes ([`crate::distributed`], `legion train --distributed mpi`), every rank
//! takes its slice of each micro-batch, the step's counts are summed over the ranks before
//! the forward passes, and the gradients and loss terms after them (host-staged): the same
//! objective again. Every rank keeps a full replica and steps its own optimiser on the same
//! summed gradients; rank 0 alone writes checkpoints, logs, curves and the final model.
//!
//! Then: a non-finite loss or gradient norm skips the step (reported; after
//! `max_bad_steps` in a row the run stops, keeping the last good checkpoint); otherwise global
//! clipping and AdamW at the scheduled rate. Checkpoints every `checkpoint_every` steps and at
//! the end; `resume` continues from the newest one exactly.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use rayon::prelude::*;
use serde::Serialize;

use legion_backend::DeviceSpec;
use legion_model::precision::cast_params;

use crate::checkpoint::{TrainerState, latest_checkpoint, load_checkpoint, save_checkpoint};
use crate::config::{Task, TrainConfig};
use crate::distributed::{Collective, ReduceOp, all_reduce_gradients, check_replicas, rank_slice};
use crate::error::TrainError;
use crate::evaluation::TaskEval;
use crate::grads::clip_global_norm;
use crate::metrics_log::MetricsLog;
use crate::rng::EpochSampler;
use crate::schedule::warmup_decay_lr;
use crate::trainable::count_trainable;

/// What a task adds to the loop: its samples, its loss and its held-out evaluation.
pub trait TrainTask: Sync {
    /// The trained module.
    type Model: Module + Sync;
    /// Where a sample comes from (a record of a split, an image file).
    type Position: Send + Sync;
    /// A sample ready for the model (decoded, preprocessed, tokenised).
    type Item: Send + Sync;
    /// What a shard's loss needs to know about the whole step (its normalisers).
    type StepContext: Copy + Send + Sync;

    /// Distinct samples of one training epoch.
    fn epoch_len(&self) -> usize;
    /// Position `k` of the training stream (`sampler` orders each epoch).
    fn locate(&self, sampler: &mut EpochSampler, k: u64) -> Self::Position;
    /// The held-out samples of the periodic validation loss, in order.
    fn validation_positions(&self) -> Vec<Self::Position>;
    /// Loads one sample (called in parallel).
    ///
    /// # Errors
    /// A sample that cannot be read; the loop drops it under `data.skip_bad`.
    fn load(&self, position: &Self::Position) -> Result<Self::Item, TrainError>;
    /// The normalisers of a step made of `items`.
    fn step_context(&self, items: &[Self::Item]) -> Self::StepContext;
    /// `context` as additive counts: a run over several processes sums them over the ranks,
    /// so that every rank normalises by the whole step.
    fn context_counts(&self, context: &Self::StepContext) -> Vec<f64>;
    /// The context of (summed) `counts` from [`TrainTask::context_counts`].
    fn context_from_counts(&self, counts: &[f64]) -> Self::StepContext;
    /// The loss of `shard` (a part of a step) on `device`, where `model` lives.
    ///
    /// # Errors
    /// The model rejects the input.
    fn shard_loss(
        &self,
        model: &Self::Model,
        shard: &[Self::Item],
        context: Self::StepContext,
        device: &Device,
    ) -> Result<ShardLoss, TrainError>;
    /// Scores `model` (on a plain device) on the held-out split.
    ///
    /// # Errors
    /// The data cannot be read or the model fails.
    fn evaluate(&self, model: &Self::Model) -> Result<TaskEval, TrainError>;
    /// Writes the final model to `dir` and returns it as evaluated (plain device, adapters
    /// merged).
    ///
    /// # Errors
    /// The model cannot be written.
    fn save_final(
        &self,
        model: Self::Model,
        steps: u64,
        dir: &Path,
    ) -> Result<Self::Model, TrainError>;
}

/// The loss of a shard: the tensor to differentiate and its terms as numbers.
pub struct ShardLoss {
    /// Weighted total (what backward runs on).
    pub total: Tensor<1>,
    /// The terms' values.
    pub terms: StepLosses,
}

/// Scalar loss terms of a step (a task without mask terms leaves `bce`/`dice` at 0).
#[derive(Debug, Clone, Copy)]
pub struct StepLosses {
    /// Weighted total.
    pub total: f64,
    /// Cross-entropy (tokens, or image labels).
    pub ce: f64,
    /// Mask BCE.
    pub bce: f64,
    /// Mask Dice.
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

/// What the loop reports after every optimiser step (also one line of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// 1-based step just finished.
    pub step: u64,
    /// Steps of the run.
    pub total_steps: u64,
    /// Weighted loss.
    pub loss: f64,
    /// Cross-entropy.
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
    /// Seconds of this step spent summing gradients over the processes (host staging and
    /// all-reduce; 0 in a single-process run).
    pub allreduce_seconds: f64,
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

/// Result of [`crate::train`] (also `<out>/summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// What was trained.
    pub task: Task,
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
    /// Processes that trained together (ranks; 1 without `--distributed`).
    pub ranks: usize,
    /// Mean seconds per step of this session spent summing gradients over the processes.
    pub allreduce_seconds_per_step: f64,
    /// `(trainable, total)` parameters.
    pub parameters: (usize, usize),
    /// Held-out evaluation of the untrained model (when `run.evaluate` and not resumed).
    pub before: Option<TaskEval>,
    /// Held-out evaluation of the trained model (when `run.evaluate`).
    pub after: Option<TaskEval>,
}

/// AdamW with the run's betas, epsilon and weight decay.
fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(config.optim.beta1 as f32)
        .with_beta_2(config.optim.beta2 as f32)
        .with_epsilon(config.optim.eps as f32)
        .with_weight_decay(config.optim.weight_decay as f32)
        .init()
}

/// The run's devices, autodiff (with gradient checkpointing when asked); the first one holds
/// the model and sums the gradients.
///
/// # Errors
/// [`TrainError::Backend`] for a device that cannot be parsed or opened.
pub(crate) fn resolve_devices(config: &TrainConfig) -> Result<Vec<Device>, TrainError> {
    config
        .run
        .devices
        .iter()
        .map(|spec| {
            let device = spec.parse::<DeviceSpec>()?.device()?;
            Ok(if config.run.gradient_checkpointing {
                device.autodiff().gradient_checkpointing()
            } else {
                device.autodiff()
            })
        })
        .collect()
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

fn write_file(path: &Path, contents: &str) -> Result<(), TrainError> {
    std::fs::write(path, contents).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Trains `model` for `task` as `config` says, on `devices` (from [`resolve_devices`]), writing
/// everything under `config.run.out_dir`; with `resume`, continues from the newest checkpoint
/// there. `comm` is the group of processes that train together (each takes its slice of every
/// step; rank 0 alone writes); [`crate::distributed::SingleProcess`] for a plain run.
///
/// # Errors
/// [`TrainError`]: data (per the bad-input policy), I/O, a checkpoint of another config,
/// divergence, or a failed collective.
pub(crate) fn run<T: TrainTask>(
    config: &TrainConfig,
    resume: bool,
    observer: &dyn TrainObserver,
    devices: &[Device],
    comm: &dyn Collective,
    task: &T,
    model: T::Model,
) -> Result<TrainSummary, TrainError> {
    let ranks = comm.size();
    if !config.run.batch_size.is_multiple_of(ranks) {
        return Err(TrainError::Config {
            source_name: "run.batch_size".into(),
            message: format!(
                "{} is not divisible by the {ranks} processes: every rank takes an equal slice \
                 of each batch",
                config.run.batch_size
            ),
        });
    }
    Learner {
        config,
        task,
        devices,
        comm,
        observer,
    }
    .run(model, resume)
}

/// The loop's fixed inputs.
struct Learner<'a, T> {
    config: &'a TrainConfig,
    task: &'a T,
    devices: &'a [Device],
    /// The processes training together; rank 0 writes the checkpoints, logs and results.
    comm: &'a dyn Collective,
    observer: &'a dyn TrainObserver,
}

/// The loop's state between steps.
struct Progress {
    optim: ModuleOptimizer,
    state: TrainerState,
    sampler: EpochSampler,
    /// The metrics log (rank 0 only).
    metrics: Option<MetricsLog>,
    last_checkpoint: String,
    /// Seconds this session spent summing gradients over the processes.
    allreduce_seconds: f64,
}

impl Progress {
    fn log(&mut self, value: &serde_json::Value) -> Result<(), TrainError> {
        match &mut self.metrics {
            Some(metrics) => metrics.write(value),
            None => Ok(()),
        }
    }
}

impl<T: TrainTask> Learner<'_, T> {
    /// Whether this process writes (rank 0).
    fn lead(&self) -> bool {
        self.comm.rank() == 0
    }

    /// Checks that every rank holds the same weights at the same step (a no-op alone).
    fn check_replicas(&self, model: &T::Model, step: u64) -> Result<(), TrainError> {
        match check_replicas(self.comm, model, step)
            .map_err(|source| TrainError::Collective { step, source })?
        {
            None => Ok(()),
            Some(mismatch) => Err(TrainError::Replicas {
                step,
                detail: mismatch.to_string(),
            }),
        }
    }

    fn run(&self, model: T::Model, resume: bool) -> Result<TrainSummary, TrainError> {
        let out_dir = &self.config.run.out_dir;
        if self.lead() {
            std::fs::create_dir_all(out_dir).map_err(|source| TrainError::Io {
                path: out_dir.clone(),
                source,
            })?;
        }
        let checkpoints = out_dir.join("checkpoints");
        let (mut model, optim, state) = self.start(model, resume, &checkpoints)?;
        self.check_replicas(&model, state.step)?;
        let parameters = count_trainable(&model);
        if self.lead() {
            write_file(&out_dir.join("train_config.toml"), &state.config_toml)?;
        }
        let before = if self.lead() && self.config.run.evaluate && state.step == 0 {
            self.observer
                .on_message("evaluating the untrained model on the held-out split");
            let scores = self.task.evaluate(&model.valid())?;
            self.observer
                .on_message(&format!("untrained: {}", scores.one_line()));
            Some(scores)
        } else {
            None
        };

        let mut progress = Progress {
            optim,
            metrics: if self.lead() {
                Some(MetricsLog::open(out_dir, state.step)?)
            } else {
                None
            },
            sampler: EpochSampler::new(self.task.epoch_len(), self.config.run.seed),
            state,
            last_checkpoint: String::from("(none)"),
            allreduce_seconds: 0.0,
        };
        let session_start = Instant::now();
        let first_step = progress.state.step;
        self.observer.on_start(first_step, self.config.run.steps);
        while progress.state.step < self.config.run.steps {
            model = self.step(model, &mut progress)?;
            let step = progress.state.step;
            if self.lead()
                && self.config.run.validate_every > 0
                && step.is_multiple_of(self.config.run.validate_every)
            {
                self.validate(&model, step, &mut progress)?;
            }
            if self.config.checkpoint_due(step) {
                self.check_replicas(&model, step)?;
            }
            if self.lead() && self.config.checkpoint_due(step) {
                let path = save_checkpoint(
                    &checkpoints,
                    &model,
                    &progress.optim,
                    &progress.state,
                    self.config.run.keep_checkpoints,
                )?;
                progress.last_checkpoint = path.display().to_string();
                tracing::debug!(checkpoint = %progress.last_checkpoint, "checkpoint written");
            }
        }
        let session_steps = progress.state.step - first_step;
        let session_seconds = session_start.elapsed().as_secs_f64();

        let final_dir = out_dir.join("final");
        let after = if let Some(metrics_path) = progress.metrics.as_ref().map(|m| m.path.clone()) {
            let trained = self
                .task
                .save_final(model, progress.state.step, &final_dir)?;
            crate::curve::write_curves(&metrics_path, out_dir)?;
            if self.config.run.evaluate {
                self.observer
                    .on_message("evaluating the trained model on the held-out split");
                let scores = self.task.evaluate(&trained)?;
                progress.log(&serde_json::json!({"evaluation": &scores}))?;
                Some(scores)
            } else {
                None
            }
        } else {
            None
        };
        let state = &progress.state;
        let summary = TrainSummary {
            task: self.config.run.task,
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
            ranks: self.comm.size(),
            allreduce_seconds_per_step: if session_steps > 0 {
                progress.allreduce_seconds / session_steps as f64
            } else {
                0.0
            },
            parameters,
            before,
            after,
        };
        if self.lead() {
            write_file(
                &out_dir.join("summary.json"),
                &serde_json::to_string_pretty(&summary).expect("plain struct serialises"),
            )?;
        }
        Ok(summary)
    }

    /// The optimiser and the counters of a fresh run, or those of the newest checkpoint (with
    /// its weights) when resuming.
    fn start(
        &self,
        model: T::Model,
        resume: bool,
        checkpoints: &Path,
    ) -> Result<(T::Model, ModuleOptimizer, TrainerState), TrainError> {
        let optim = optimizer(self.config);
        let state = TrainerState {
            config_toml: self.config.to_toml(),
            ..TrainerState::default()
        };
        if !resume {
            return Ok((model, optim, state));
        }
        let Some(dir) = latest_checkpoint(checkpoints)? else {
            self.observer
                .on_message("no checkpoint to resume from; starting fresh");
            return Ok((model, optim, state));
        };
        let (model, optim, state) = load_checkpoint(&dir, model, optim)?;
        if !self.config.resumable_from(&state.config_toml) {
            return Err(TrainError::Config {
                source_name: dir.join("train_config.toml").display().to_string(),
                message: "the checkpoint was written with another config; resume with the same \
                          config (see train_config.toml there)"
                    .into(),
            });
        }
        self.observer.on_message(&format!(
            "resumed from {} (step {})",
            dir.display(),
            state.step
        ));
        Ok((model, optim, state))
    }

    /// One optimiser step: load, gradients, NaN guard, update, log.
    fn step(&self, mut model: T::Model, progress: &mut Progress) -> Result<T::Model, TrainError> {
        let config = self.config;
        let state = &mut progress.state;
        let started = Instant::now();
        let lr = warmup_decay_lr(
            config.optim.lr,
            state.step,
            config.optim.warmup_steps,
            config.decay_steps(),
        );
        let (items, dropped) = self.load_step(&mut progress.sampler, state.step)?;
        // The step's counts over every rank: the normalisers, the samples, the dropped ones.
        let step = state.step;
        let collective = |source| TrainError::Collective { step, source };
        let mut counts = self.task.context_counts(&self.task.step_context(&items));
        counts.extend([items.len() as f64, dropped as f64]);
        self.comm
            .reduce_f64(&mut counts, ReduceOp::Sum)
            .map_err(collective)?;
        let (step_items, step_dropped) = (counts[counts.len() - 2], counts[counts.len() - 1]);
        state.dropped_samples += step_dropped as u64;
        let context = self.task.context_from_counts(&counts[..counts.len() - 2]);
        let (mut terms, mut grads) = if items.is_empty() {
            (StepLosses::zero(), GradientsParams::new())
        } else {
            self.gradients(&model, &items, context)?
        };
        // `grads` and `terms` are this rank's part of the step: sum them over the processes
        // (host-staged), before clipping sees them.
        let mut allreduce_seconds = 0.0;
        if self.comm.size() > 1 {
            let main = self.devices[0].clone().inner();
            allreduce_seconds =
                all_reduce_gradients(self.comm, &model, &mut grads, &main).map_err(collective)?;
            let mut values = [terms.total, terms.ce, terms.bce, terms.dice];
            self.comm
                .reduce_f64(&mut values, ReduceOp::Sum)
                .map_err(collective)?;
            let [total, ce, bce, dice] = values;
            terms = StepLosses {
                total,
                ce,
                bce,
                dice,
            };
            progress.allreduce_seconds += allreduce_seconds;
        }
        if step_items == 0.0 {
            terms = StepLosses::nan();
        }
        let grad_norm = clip_global_norm(&model, &mut grads, config.optim.grad_clip);
        let finite = terms.total.is_finite() && grad_norm.is_finite();
        if finite {
            model = progress.optim.step(lr, model, grads);
            state.bad_steps_in_a_row = 0;
        } else {
            state.skipped_steps += 1;
            state.bad_steps_in_a_row += 1;
            self.observer.on_message(&format!(
                "step {}: non-finite loss {} / gradient norm {grad_norm}: update skipped",
                state.step + 1,
                terms.total
            ));
        }
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
            allreduce_seconds,
        };
        if let Some(metrics) = &mut progress.metrics {
            metrics.write(&serde_json::json!({"train": &record}))?;
        }
        self.observer.on_step(&record);
        if state.bad_steps_in_a_row >= config.run.max_bad_steps {
            // No checkpoint of this state: the last one written stays the newest.
            return Err(TrainError::Diverged {
                step: state.step,
                count: state.bad_steps_in_a_row,
                detail: format!("loss {}, gradient norm {grad_norm}", terms.total),
                last_checkpoint: progress.last_checkpoint.clone(),
            });
        }
        Ok(model)
    }

    /// This rank's samples of step `step` (its slice of every micro-batch), loaded in parallel;
    /// bad ones are dropped under `data.skip_bad` and counted (the second value).
    fn load_step(
        &self,
        sampler: &mut EpochSampler,
        step: u64,
    ) -> Result<(Vec<T::Item>, u64), TrainError> {
        let batch = self.config.run.batch_size;
        let per_step = (batch * self.config.optim.grad_accum) as u64;
        let mine = rank_slice(batch, self.comm.rank(), self.comm.size());
        let positions: Vec<T::Position> = (0..per_step)
            .filter(|i| mine.contains(&((i % batch as u64) as usize)))
            .map(|i| self.task.locate(sampler, step * per_step + i))
            .collect();
        let loaded: Vec<Result<T::Item, TrainError>> = positions
            .par_iter()
            .map(|position| self.task.load(position))
            .collect();
        let mut items = Vec::with_capacity(loaded.len());
        let mut dropped = 0;
        for item in loaded {
            match item {
                Ok(item) => items.push(item),
                Err(e) if self.config.data.skip_bad => {
                    dropped += 1;
                    self.observer
                        .on_message(&format!("skipped a bad sample: {e}"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((items, dropped))
    }

    /// The summed loss terms and gradients (on the first device) of this rank's `items`,
    /// normalised by the whole step's `context`: `grad_accum` micro-batches one after the
    /// other, each split over the devices.
    fn gradients(
        &self,
        model: &T::Model,
        items: &[T::Item],
        context: T::StepContext,
    ) -> Result<(StepLosses, GradientsParams), TrainError> {
        // Forward + backward of one shard on `device`, where `model` lives. With a half
        // `run.dtype` the step computes on a cast of the f32 weights: the cast is part of the
        // autodiff graph, so the gradients reach the f32 parameters (the master copy), in f32.
        let half = self.config.run.dtype.half();
        let shard_gradients = |model: &T::Model, shard: &[T::Item], device: &Device| {
            let loss = match half {
                None => self.task.shard_loss(model, shard, context, device)?,
                Some(dtype) => {
                    let compute = cast_params(model.clone(), dtype);
                    self.task.shard_loss(&compute, shard, context, device)?
                }
            };
            let grads = GradientsParams::from_grads(loss.total.backward(), model);
            Ok::<_, TrainError>((loss.terms, grads))
        };
        let main = &self.devices[0];
        let mut accumulator = GradientsAccumulator::<T::Model>::new();
        let mut losses = StepLosses::zero();
        let micro = items.len().div_ceil(self.config.optim.grad_accum).max(1);
        for micro_batch in items.chunks(micro) {
            let parts = shards(micro_batch, self.devices.len());
            let results: Vec<Result<(StepLosses, GradientsParams), TrainError>> =
                if parts.len() == 1 {
                    vec![shard_gradients(model, parts[0], main)]
                } else {
                    let shard_gradients = &shard_gradients;
                    std::thread::scope(|scope| {
                        let handles: Vec<_> = parts
                            .iter()
                            .zip(self.devices)
                            .map(|(shard, device)| {
                                let replica = model.clone().fork(device);
                                // One replica per core already: its products stay on its
                                // own thread, as the replicas were measured.
                                scope.spawn(move || {
                                    legion_model::matmul::on_calling_thread(|| {
                                        shard_gradients(&replica, *shard, device)
                                            .map(|(l, g)| (l, g.to_device(main, &replica)))
                                    })
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
                accumulator.accumulate(model, grads);
            }
        }
        Ok((losses, accumulator.grads()))
    }

    /// Logs the loss on (a prefix of) the held-out split, without gradients, and, with
    /// `run.validate_metrics`, the task's held-out scores.
    fn validate(
        &self,
        model: &T::Model,
        step: u64,
        progress: &mut Progress,
    ) -> Result<(), TrainError> {
        let mut positions = self.task.validation_positions();
        if self.config.run.validate_samples > 0 {
            positions.truncate(self.config.run.validate_samples);
        }
        let items: Vec<T::Item> = positions
            .par_iter()
            .map(|position| self.task.load(position))
            .collect::<Result<_, _>>()?;
        let context = self.task.step_context(&items);
        let inference = model.valid();
        let device = self.devices[0].clone().inner();
        let mut val = StepLosses::zero();
        for chunk in items.chunks(self.config.run.batch_size) {
            let loss = self.task.shard_loss(&inference, chunk, context, &device)?;
            val.add(&loss.terms);
        }
        progress.log(
            &serde_json::json!({"validation": {"step": step, "loss": val.total,
            "ce": val.ce, "bce": val.bce, "dice": val.dice}}),
        )?;
        self.observer.on_message(&format!(
            "step {step}: validation loss {:.4} (ce {:.4}, bce {:.4}, dice {:.4})",
            val.total, val.ce, val.bce, val.dice
        ));
        if self.config.run.validate_metrics {
            let scores = self.task.evaluate(&inference)?;
            progress.log(
                &serde_json::json!({"validation_metrics": {"step": step, "scores": &scores}}),
            )?;
            self.observer
                .on_message(&format!("step {step}: held-out {}", scores.one_line()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_contiguous_and_even() {
        let items: Vec<u32> = (0..7).collect();
        let parts = shards(&items, 3);
        assert_eq!(parts, vec![&items[0..3], &items[3..5], &items[5..7]]);
        assert_eq!(shards(&items[..1], 4).len(), 1);
    }
}
