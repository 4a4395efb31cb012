//! Training and fine-tuning LEGION (arXiv 2503.15264) with burn: the reference recipe's mask
//! and text losses ([`loss`]), LoRA and frozen towers ([`trainable`]), AdamW with warmup and
//! linear decay ([`schedule`]), global gradient clipping ([`grads`]), gradient accumulation,
//! data parallelism over several devices in one process and over processes and nodes
//! ([`distributed`], MPI with the `mpi` feature), crash-safe checkpoints with exact
//! resume ([`checkpoint`]), a NaN guard, JSONL metrics and loss curves ([`curve`]), and the
//! held-out evaluation with the evaluator's metrics ([`evaluation`]).
//!
//! One loop ([`learner`]) runs every task; a task ([`segment`], [`detect`], [`clip_pretrain`]) supplies its
//! samples, its loss and its evaluation.
//!
//! ```text
//! legion train --config configs/tiny.toml
//! legion finetune --from runs/tiny/final --data my-generator/ --set run.steps=200
//! ```

pub mod checkpoint;
pub mod clip_pretrain;
pub mod compare;
pub mod config;
pub mod curve;
pub mod detect;
pub mod distributed;
pub mod error;
pub mod evaluation;
pub mod grads;
pub mod learner;
pub mod loss;
mod metrics_log;
pub mod rng;
pub mod schedule;
pub mod segment;
pub mod trainable;

pub use config::{ComputeDtype, Task, TrainConfig};
pub use error::TrainError;
pub use learner::{StepRecord, TrainObserver, TrainSummary};

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
    train_with(config, resume, observer, &distributed::SingleProcess)
}

/// [`train`] as one rank of the processes of `comm` (`legion train --distributed mpi`): each
/// takes its slice of every batch on its own `run.devices`; rank 0 alone writes.
///
/// # Errors
/// [`TrainError`]: as [`train`], and a failed exchange between the ranks.
pub fn train_with(
    config: &TrainConfig,
    resume: bool,
    observer: &dyn TrainObserver,
    comm: &dyn distributed::Collective,
) -> Result<TrainSummary, TrainError> {
    config.validate().map_err(|message| TrainError::Config {
        source_name: "run config".into(),
        message,
    })?;
    // Saturated mask logits produce subnormal floats, ~25x slower on x86 (measured).
    legion_backend::flush_denormals();
    // Each step's large buffers reuse the last step's pages instead of faulting in new ones.
    legion_backend::heap::reuse_freed_buffers();
    let devices = learner::resolve_devices(config)?;
    match config.run.task {
        Task::Segment => {
            let (task, model) = segment::SegmentTask::new(config, &devices[0])?;
            learner::run(config, resume, observer, &devices, comm, &task, model)
        }
        Task::Detect => {
            let (task, model) = detect::DetectTask::new(config, &devices[0])?;
            learner::run(config, resume, observer, &devices, comm, &task, model)
        }
        Task::Clip => {
            let (task, model) = clip_pretrain::ClipPretrainTask::new(config, &devices[0])?;
            learner::run(config, resume, observer, &devices, comm, &task, model)
        }
    }
}
