//! The training configuration: one TOML file (`configs/*.toml`), every field overridable from
//! the command line with `--set section.field=value`, saved resolved next to the checkpoints.
//!
//! Defaults are the reference recipe (`scripts/loc_exp/train.sh`, see
//! `shared/reference/LEGION.md`): AdamW lr 1e-4, betas (0.9, 0.95), weight decay 0, 100 linear
//! warmup steps then linear decay over the planned steps, gradient clipping 1.0, loss weights
//! 1.0 / 0.4 / 0.2, LoRA r 8 alpha 16 on `q_proj,v_proj`, SAM input 512.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// What the run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Grounded artifact explanation: token CE + mask BCE + Dice (`LegionForCausalLM`).
    Segment,
    /// Image-level real/fake head on CLIP (`LegionForCls`), CE on image labels.
    Detect,
    /// Pretraining the preset's CLIP vision tower on a generated dataset's labels
    /// ([`crate::clip_pretrain`]), for `model.clip`.
    Clip,
}

/// The model to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Named preset: `tiny`, `small`, `fixture` or `legion-7b`.
    pub preset: String,
    /// Start from this model bundle (fine-tuning) instead of random weights; its config
    /// replaces the preset.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// Start the preset's CLIP tower from this pretrained tower folder (`task = "clip"`'s
    /// output) instead of random weights; list every other module in
    /// `trainable.fully_trained` to keep it frozen, as LEGION keeps its pretrained CLIP. Not
    /// read when `init` names a bundle (its tower is the one it was trained with; a warning
    /// says so), so a run of a config with both continues from the bundle.
    #[serde(default)]
    pub clip: Option<PathBuf>,
}

/// Where the data comes from and how it is prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Dataset root in the SynthScars layout (or a folder-format dataset converted with
    /// `legion data import-folder`).
    pub root: PathBuf,
    /// Training split.
    #[serde(default = "default_train_split")]
    pub train_split: String,
    /// Held-out split for validation and the final evaluation.
    #[serde(default = "default_val_split")]
    pub val_split: String,
    /// `tokenizer.json` with GLaMM's special tokens; not needed (and ignored) when
    /// `model.init` is a bundle, which carries its own.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Longest side of the SAM input during training (512 in the reference; the canvas is
    /// the SAM encoder's input size).
    #[serde(default)]
    pub sam_longest_side: Option<u32>,
    /// `model_max_length` (1536 in the reference): text is cut to this minus the image tokens.
    #[serde(default = "default_max_length")]
    pub model_max_length: usize,
    /// Skip unreadable images and bad records (reported) instead of stopping.
    #[serde(default)]
    pub skip_bad: bool,
    /// Fine-tuning: a second dataset (e.g. the original SynthScars) mixed in.
    #[serde(default)]
    pub mix_root: Option<PathBuf>,
    /// Fraction of training samples drawn from `mix_root` (0 = none).
    #[serde(default)]
    pub mix_ratio: f64,
}

/// Optimiser and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// AdamW decoupled weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// AdamW beta1.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// AdamW beta2.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// AdamW epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Linear warmup steps from 0 to `lr`.
    #[serde(default = "default_warmup")]
    pub warmup_steps: u64,
    /// Steps over which the rate decays linearly to 0 (the reference plans 3 x 703 and
    /// stops after 703); `None` = the run's `steps`.
    #[serde(default)]
    pub decay_steps: Option<u64>,
    /// Global gradient-norm clip (0 = off).
    #[serde(default = "default_clip")]
    pub grad_clip: f64,
    /// Micro-batches per optimiser step.
    #[serde(default = "default_one")]
    pub grad_accum: usize,
}

/// Loss weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSection {
    /// Token cross-entropy weight.
    #[serde(default = "default_ce")]
    pub ce_weight: f64,
    /// Mask sigmoid-BCE weight.
    #[serde(default = "default_bce")]
    pub bce_weight: f64,
    /// Mask Dice weight.
    #[serde(default = "default_dice")]
    pub dice_weight: f64,
}

/// What is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainableSection {
    /// Train every parameter (small configs); otherwise the recipe below.
    #[serde(default)]
    pub full: bool,
    /// LoRA on the LLM.
    #[serde(default = "default_true")]
    pub lora: bool,
    /// LoRA rank.
    #[serde(default = "default_rank")]
    pub lora_rank: usize,
    /// LoRA alpha (update scaled by alpha / rank).
    #[serde(default = "default_alpha")]
    pub lora_alpha: f64,
    /// LoRA dropout: recorded; burn's weight-reparameterised LoRA cannot apply it (a value
    /// other than 0 is reported as not applied).
    #[serde(default = "default_lora_dropout")]
    pub lora_dropout: f64,
    /// LLM linear layers with adapters (PEFT names).
    #[serde(default = "default_targets")]
    pub lora_targets: Vec<String>,
    /// Modules trained fully (paths in the model, matched as prefixes):
    /// `llm.embed_tokens`, `llm.lm_head`, `grounding_encoder.mask_decoder`, `text_hidden_fcs`.
    #[serde(default = "default_fully_trained")]
    pub fully_trained: Vec<String>,
}

/// The run itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// What to train.
    #[serde(default = "default_task")]
    pub task: Task,
    /// Optimiser steps.
    pub steps: u64,
    /// Samples per micro-batch (split across devices).
    pub batch_size: usize,
    /// Seed of the initialisation and the data order.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Output folder (checkpoints, logs, curves, final model).
    pub out_dir: PathBuf,
    /// Checkpoint every N steps (0 = only at the end).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Checkpoints kept (older ones are deleted).
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Validation loss every N steps (0 = never).
    #[serde(default)]
    pub validate_every: u64,
    /// With each validation, also generate and score the held-out split with the evaluator's
    /// mIoU / F1 / ROUGE-L (greedy decoding: costly for large models).
    #[serde(default = "default_true")]
    pub validate_metrics: bool,
    /// Held-out samples used for the periodic validation loss (0 = all).
    #[serde(default)]
    pub validate_samples: usize,
    /// Evaluate (generate, segment, score mIoU/F1/ROUGE-L) the untrained model first and the
    /// trained one at the end.
    #[serde(default = "default_true")]
    pub evaluate: bool,
    /// Greedy generation budget of the evaluation.
    #[serde(default = "default_new_tokens")]
    pub max_new_tokens: usize,
    /// Consecutive non-finite steps tolerated before the run stops.
    #[serde(default = "default_bad_steps")]
    pub max_bad_steps: u32,
    /// Devices (`cpu`, `wgpu:0`, `cuda:1`...); several = data parallel in one process.
    #[serde(default = "default_devices")]
    pub devices: Vec<String>,
    /// Recompute activations in the backward pass instead of storing them (less memory).
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// The dtype forward and backward compute in (`"f32"`, `"bf16"`, `"f16"`). With a half
    /// dtype the weights stay in f32 (the master copy the optimiser updates, with its moments)
    /// and each step computes on a half-precision cast of them, whose gradients flow back
    /// through the cast in f32: mixed precision as DeepSpeed's bf16 mode.
    #[serde(default)]
    pub dtype: ComputeDtype,
}

/// The dtype a training step computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    /// Everything in f32.
    #[default]
    F32,
    /// bfloat16 forward and backward on f32 master weights (the paper's training precision).
    Bf16,
    /// float16 forward and backward on f32 master weights.
    F16,
}

impl ComputeDtype {
    /// The half dtype the step casts the weights to; `None` for f32 (no cast).
    pub fn half(self) -> Option<burn::tensor::FloatDType> {
        match self {
            Self::F32 => None,
            Self::Bf16 => Some(burn::tensor::FloatDType::BF16),
            Self::F16 => Some(burn::tensor::FloatDType::F16),
        }
    }
}

/// A whole training configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Model.
    pub model: ModelSection,
    /// Data.
    pub data: DataSection,
    /// Optimiser.
    #[serde(default)]
    pub optim: OptimSection,
    /// Loss weights.
    #[serde(default)]
    pub loss: LossSection,
    /// Trainable parameters.
    #[serde(default)]
    pub trainable: TrainableSection,
    /// Run.
    pub run: RunSection,
}

/// serde's `default = "..."` functions, one line each so that a default reads beside its name.
macro_rules! serde_defaults {
    ($($name:ident: $ty:ty = $value:expr;)*) => {
        $(fn $name() -> $ty { $value })*
    };
}

serde_defaults! {
    default_train_split: String = "train".into();
    default_val_split: String = "test".into();
    default_max_length: usize = 1536;
    default_lr: f64 = 1e-4;
    default_beta1: f64 = 0.9;
    default_beta2: f64 = 0.95;
    default_eps: f64 = 1e-8;
    default_warmup: u64 = 100;
    default_clip: f64 = 1.0;
    default_one: usize = 1;
    default_ce: f64 = 1.0;
    default_bce: f64 = 0.4;
    default_dice: f64 = 0.2;
    default_true: bool = true;
    default_rank: usize = 8;
    default_alpha: f64 = 16.0;
    default_lora_dropout: f64 = 0.05;
    default_targets: Vec<String> = vec!["q_proj".into(), "v_proj".into()];
    default_fully_trained: Vec<String> = [
        "llm.embed_tokens",
        "llm.lm_head",
        "grounding_encoder.mask_decoder",
        "text_hidden_fcs",
    ]
    .map(String::from)
    .to_vec();
    default_task: Task = Task::Segment;
    default_seed: u64 = 42;
    default_keep: usize = 2;
    default_new_tokens: usize = 512;
    default_bad_steps: u32 = 5;
    default_devices: Vec<String> = vec!["cpu".into()];
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            lr: default_lr(),
            weight_decay: 0.0,
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            warmup_steps: default_warmup(),
            decay_steps: None,
            grad_clip: default_clip(),
            grad_accum: 1,
        }
    }
}

impl Default for LossSection {
    fn default() -> Self {
        Self {
            ce_weight: default_ce(),
            bce_weight: default_bce(),
            dice_weight: default_dice(),
        }
    }
}

impl Default for TrainableSection {
    fn default() -> Self {
        Self {
            full: false,
            lora: true,
            lora_rank: default_rank(),
            lora_alpha: default_alpha(),
            lora_dropout: default_lora_dropout(),
            lora_targets: default_targets(),
            fully_trained: default_fully_trained(),
        }
    }
}

impl TrainConfig {
    /// Reads a TOML config and applies `overrides` (`section.field=value`, the value in TOML
    /// syntax, bare words taken as strings). Relative paths in the file stay relative to the
    /// working directory (the configs under `configs/` are written for the repository root).
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the file and the bad field or override.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// As [`TrainConfig::load`] from TOML text; `source_name` names it in errors.
    ///
    /// # Errors
    /// [`TrainError::ConfigSyntax`] for TOML that does not fit the schema,
    /// [`TrainError::Config`] for a malformed override or a value [`TrainConfig::validate`]
    /// refuses.
    pub fn from_toml(
        text: &str,
        source_name: &str,
        overrides: &[String],
    ) -> Result<Self, TrainError> {
        let syntax = |source| TrainError::ConfigSyntax {
            source_name: source_name.to_string(),
            source,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(syntax)?;
        for assignment in overrides {
            apply_override(&mut table, assignment).map_err(|m| TrainError::Config {
                source_name: source_name.to_string(),
                message: format!("--set {assignment}: {m}"),
            })?;
        }
        let config: TrainConfig = toml::Value::Table(table).try_into().map_err(syntax)?;
        config.validate().map_err(|message| TrainError::Config {
            source_name: source_name.to_string(),
            message,
        })?;
        Ok(config)
    }

    /// The resolved configuration as TOML (saved next to the checkpoints).
    pub fn to_toml(&self) -> String {
        // Plain data: serialisation cannot fail.
        toml::to_string_pretty(self).expect("serialisable config")
    }

    /// Every problem of the config, `; `-separated: values no run can use, and options the
    /// run's task cannot honour (which must keep their defaults).
    ///
    /// # Errors
    /// The problems, naming each field.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        self.data.check(&mut problems);
        self.optim.check(&mut problems);
        self.loss.check(&mut problems);
        self.trainable.check(&mut problems);
        self.run.check(&mut problems);
        match self.run.task {
            Task::Segment => {
                if self.model.init.is_none() && self.data.tokenizer.is_none() {
                    problems
                        .push("data.tokenizer is needed unless model.init names a bundle".into());
                }
            }
            Task::Detect | Task::Clip => {
                let task = match self.run.task {
                    Task::Detect => "detect",
                    _ => "clip",
                };
                problems.extend(self.segment_only_fields_set().into_iter().map(|field| {
                    format!(
                        "{field} does not apply to run.task = \"{task}\" (leave it at its default)"
                    )
                }))
            }
        }
        if self.model.clip.is_some() && self.run.task != Task::Segment {
            problems.push("model.clip applies to run.task = \"segment\" only".into());
        }
        if self.run.task == Task::Clip && self.model.init.is_some() {
            problems.push("model.init does not apply to run.task = \"clip\"".into());
        }
        if self.run.batch_size < self.run.devices.len() {
            problems.push(format!(
                "run.batch_size {} is smaller than the {} devices it is split over",
                self.run.batch_size,
                self.run.devices.len()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The fields only `task = "segment"` reads that differ from their defaults.
    fn segment_only_fields_set(&self) -> Vec<&'static str> {
        let (data, loss, trainable) = (&self.data, &self.loss, &self.trainable);
        let defaults = TrainableSection::default();
        [
            ("data.tokenizer", data.tokenizer.is_some()),
            ("data.sam_longest_side", data.sam_longest_side.is_some()),
            (
                "data.model_max_length",
                data.model_max_length != default_max_length(),
            ),
            ("data.mix_root", data.mix_root.is_some()),
            ("data.mix_ratio", data.mix_ratio != 0.0),
            ("loss.bce_weight", loss.bce_weight != default_bce()),
            ("loss.dice_weight", loss.dice_weight != default_dice()),
            ("trainable.lora", trainable.lora != defaults.lora),
            (
                "trainable.lora_rank",
                trainable.lora_rank != defaults.lora_rank,
            ),
            (
                "trainable.lora_alpha",
                trainable.lora_alpha != defaults.lora_alpha,
            ),
            (
                "trainable.lora_dropout",
                trainable.lora_dropout != defaults.lora_dropout,
            ),
            (
                "trainable.lora_targets",
                trainable.lora_targets != defaults.lora_targets,
            ),
            (
                "trainable.fully_trained",
                trainable.fully_trained != defaults.fully_trained,
            ),
            (
                "run.max_new_tokens",
                self.run.max_new_tokens != default_new_tokens(),
            ),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }

    /// Whether a checkpoint written under `other` (its resolved TOML) may be resumed with this
    /// config: everything but where the run lives (`run.out_dir`) and which devices compute
    /// it (`run.devices`) must be equal.
    pub fn resumable_from(&self, other_toml: &str) -> bool {
        let Ok(other) = TrainConfig::from_toml(other_toml, "checkpoint", &[]) else {
            return false;
        };
        let normalise = |c: &TrainConfig| {
            let mut c = c.clone();
            c.run.out_dir = PathBuf::new();
            c.run.devices.clear();
            c
        };
        normalise(self) == normalise(&other)
    }

    /// Whether a checkpoint is written after step `step` (1-based): every `checkpoint_every`
    /// steps and after the last.
    pub fn checkpoint_due(&self, step: u64) -> bool {
        (self.run.checkpoint_every > 0 && step.is_multiple_of(self.run.checkpoint_every))
            || step == self.run.steps
    }

    /// Steps of the linear decay.
    pub fn decay_steps(&self) -> u64 {
        self.optim.decay_steps.unwrap_or(self.run.steps)
    }
}

/// `problem` when `ok` is false.
fn require(problems: &mut Vec<String>, ok: bool, problem: impl FnOnce() -> String) {
    if !ok {
        problems.push(problem());
    }
}

/// Whether `value` is finite and at least 0.
fn non_negative(value: f64) -> bool {
    value.is_finite() && value >= 0.0
}

impl DataSection {
    fn check(&self, problems: &mut Vec<String>) {
        require(problems, !self.train_split.is_empty(), || {
            "data.train_split is empty".into()
        });
        require(problems, !self.val_split.is_empty(), || {
            "data.val_split is empty".into()
        });
        require(problems, self.sam_longest_side != Some(0), || {
            "data.sam_longest_side must be > 0".into()
        });
        require(problems, self.model_max_length > 0, || {
            "data.model_max_length must be > 0".into()
        });
        require(problems, (0.0..=1.0).contains(&self.mix_ratio), || {
            format!("data.mix_ratio must be in [0, 1], got {}", self.mix_ratio)
        });
        require(
            problems,
            self.mix_ratio == 0.0 || self.mix_root.is_some(),
            || "data.mix_ratio > 0 needs data.mix_root".into(),
        );
    }
}

impl OptimSection {
    fn check(&self, problems: &mut Vec<String>) {
        require(problems, self.lr.is_finite() && self.lr > 0.0, || {
            format!("optim.lr must be a positive number, got {}", self.lr)
        });
        require(problems, non_negative(self.weight_decay), || {
            format!("optim.weight_decay must be >= 0, got {}", self.weight_decay)
        });
        for (name, beta) in [("optim.beta1", self.beta1), ("optim.beta2", self.beta2)] {
            require(problems, (0.0..1.0).contains(&beta), || {
                format!("{name} must be in [0, 1), got {beta}")
            });
        }
        require(problems, self.eps.is_finite() && self.eps > 0.0, || {
            format!("optim.eps must be a positive number, got {}", self.eps)
        });
        require(problems, self.decay_steps != Some(0), || {
            "optim.decay_steps must be > 0 (leave it out for the run's steps)".into()
        });
        require(problems, non_negative(self.grad_clip), || {
            format!(
                "optim.grad_clip must be >= 0 (0 = off), got {}",
                self.grad_clip
            )
        });
        require(problems, self.grad_accum > 0, || {
            "optim.grad_accum must be > 0".into()
        });
    }
}

impl LossSection {
    fn check(&self, problems: &mut Vec<String>) {
        for (name, weight) in [
            ("loss.ce_weight", self.ce_weight),
            ("loss.bce_weight", self.bce_weight),
            ("loss.dice_weight", self.dice_weight),
        ] {
            require(problems, non_negative(weight), || {
                format!("{name} must be >= 0, got {weight}")
            });
        }
    }
}

impl TrainableSection {
    fn check(&self, problems: &mut Vec<String>) {
        require(problems, !self.lora || self.lora_rank > 0, || {
            "trainable.lora_rank must be > 0".into()
        });
        require(problems, self.lora_alpha.is_finite(), || {
            format!(
                "trainable.lora_alpha must be a number, got {}",
                self.lora_alpha
            )
        });
        require(problems, (0.0..1.0).contains(&self.lora_dropout), || {
            format!(
                "trainable.lora_dropout must be in [0, 1), got {}",
                self.lora_dropout
            )
        });
    }
}

impl RunSection {
    fn check(&self, problems: &mut Vec<String>) {
        require(problems, self.steps > 0, || "run.steps must be > 0".into());
        require(problems, self.batch_size > 0, || {
            "run.batch_size must be > 0".into()
        });
        require(problems, self.max_bad_steps > 0, || {
            "run.max_bad_steps must be > 0".into()
        });
        require(problems, !self.devices.is_empty(), || {
            "run.devices is empty".into()
        });
    }
}

/// Sets `a.b.c = value` in a TOML table, creating intermediate tables.
fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), String> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| "expected section.field=value".to_string())?;
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(format!("bad key `{key}`"));
    }
    let raw = raw.trim();
    let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a section"))?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[model]
preset = "tiny"
[data]
root = "data/synthscars-tiny"
tokenizer = "data/tokenizers/synthscars-tiny.json"
[run]
steps = 10
batch_size = 2
out_dir = "runs/x"
"#;

    #[test]
    fn defaults_are_the_reference_recipe_and_overrides_apply() {
        let c = TrainConfig::from_toml(MINIMAL, "m", &[]).unwrap();
        assert_eq!(c.optim.lr, 1e-4);
        assert_eq!((c.optim.beta1, c.optim.beta2), (0.9, 0.95));
        assert_eq!(c.optim.warmup_steps, 100);
        assert_eq!(
            (c.loss.ce_weight, c.loss.bce_weight, c.loss.dice_weight),
            (1.0, 0.4, 0.2)
        );
        assert_eq!((c.trainable.lora_rank, c.trainable.lora_alpha), (8, 16.0));
        assert_eq!(c.trainable.lora_targets, ["q_proj", "v_proj"]);
        let c = TrainConfig::from_toml(
            MINIMAL,
            "m",
            &[
                "optim.lr=3e-3".into(),
                "run.devices=[\"cpu\", \"cpu\"]".into(),
                "data.train_split=val".into(),
                "trainable.full=true".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.optim.lr, 3e-3);
        assert_eq!(c.run.devices.len(), 2);
        assert_eq!(c.data.train_split, "val");
        assert!(c.trainable.full);
        // The resolved TOML reads back to the same config.
        assert_eq!(TrainConfig::from_toml(&c.to_toml(), "r", &[]).unwrap(), c);
    }

    #[test]
    fn bad_fields_and_overrides_are_named() {
        let e = TrainConfig::from_toml(MINIMAL, "m.toml", &["optim.lrr=1".into()]).unwrap_err();
        assert!(
            e.to_string().contains("lrr") && e.to_string().contains("m.toml"),
            "{e}"
        );
        let e = TrainConfig::from_toml(MINIMAL, "m.toml", &["run.steps=0".into()]).unwrap_err();
        assert!(e.to_string().contains("run.steps"), "{e}");
        let e = TrainConfig::from_toml(MINIMAL, "m.toml", &["nonsense".into()]).unwrap_err();
        assert!(e.to_string().contains("section.field=value"), "{e}");
    }

    #[test]
    fn every_bad_value_is_refused_naming_its_field() {
        for (assignment, field) in [
            ("data.train_split=\"\"", "data.train_split"),
            ("data.val_split=\"\"", "data.val_split"),
            ("data.sam_longest_side=0", "data.sam_longest_side"),
            ("data.model_max_length=0", "data.model_max_length"),
            ("data.mix_ratio=1.5", "data.mix_ratio"),
            ("data.mix_ratio=nan", "data.mix_ratio"),
            ("data.mix_ratio=0.5", "data.mix_root"),
            ("optim.lr=0", "optim.lr"),
            ("optim.lr=nan", "optim.lr"),
            ("optim.weight_decay=-1", "optim.weight_decay"),
            ("optim.beta1=1.0", "optim.beta1"),
            ("optim.beta2=-0.5", "optim.beta2"),
            ("optim.eps=0", "optim.eps"),
            ("optim.decay_steps=0", "optim.decay_steps"),
            ("optim.grad_clip=inf", "optim.grad_clip"),
            ("optim.grad_accum=0", "optim.grad_accum"),
            ("loss.ce_weight=-1", "loss.ce_weight"),
            ("loss.bce_weight=nan", "loss.bce_weight"),
            ("loss.dice_weight=inf", "loss.dice_weight"),
            ("trainable.lora_rank=0", "trainable.lora_rank"),
            ("trainable.lora_alpha=nan", "trainable.lora_alpha"),
            ("trainable.lora_dropout=1.0", "trainable.lora_dropout"),
            ("run.steps=0", "run.steps"),
            ("run.batch_size=0", "run.batch_size"),
            ("run.max_bad_steps=0", "run.max_bad_steps"),
            ("run.devices=[]", "run.devices"),
            ("run.devices=[\"cpu\", \"cpu\", \"cpu\"]", "run.batch_size"),
            ("data.tokenizer=false", "tokenizer"),
            ("run.steps=-1", "-1"),
            ("run.task=\"classify\"", "classify"),
        ] {
            let e = TrainConfig::from_toml(MINIMAL, "m.toml", &[assignment.into()]).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains(field) && text.contains("m.toml"),
                "{assignment}: {text}"
            );
        }
    }

    #[test]
    fn a_pretrained_tower_goes_with_the_segment_task_only() {
        let without_tokenizer = MINIMAL.replace("tokenizer = ", "# tokenizer = ");
        let parse = |toml: &str, overrides: &[&str]| {
            let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
            TrainConfig::from_toml(toml, "m.toml", &overrides)
        };
        parse(MINIMAL, &["model.clip=\"data/clip-tiny\""]).unwrap();
        // A bundle's own tower wins (the segment task warns).
        parse(MINIMAL, &["model.clip=\"c\"", "model.init=\"b\""]).unwrap();
        for (toml, overrides, expected) in [
            (
                without_tokenizer.as_str(),
                &["model.clip=\"c\"", "run.task=\"detect\""][..],
                "model.clip applies",
            ),
            (
                without_tokenizer.as_str(),
                &["model.init=\"b\"", "run.task=\"clip\""][..],
                "model.init does not apply",
            ),
            (MINIMAL, &["run.task=\"clip\""][..], "data.tokenizer"),
        ] {
            let e = parse(toml, overrides).unwrap_err().to_string();
            assert!(e.contains(expected), "{overrides:?}: {e}");
        }
        parse(&without_tokenizer, &["run.task=\"clip\""]).unwrap();
    }

    #[test]
    fn the_detect_task_refuses_what_only_segmentation_reads() {
        let detect = |extra: &[&str]| {
            let mut overrides = vec!["run.task=\"detect\"".to_string()];
            overrides.extend(extra.iter().map(|s| s.to_string()));
            TrainConfig::from_toml(MINIMAL, "m.toml", &overrides)
        };
        // MINIMAL names a tokenizer, which a detector does not read.
        let e = detect(&[]).unwrap_err().to_string();
        assert!(e.contains("data.tokenizer") && e.contains("detect"), "{e}");
        let without_tokenizer = MINIMAL.replace("tokenizer = ", "# tokenizer = ");
        let overrides = ["run.task=\"detect\"".to_string()];
        TrainConfig::from_toml(&without_tokenizer, "m.toml", &overrides).unwrap();
        for (assignment, field) in [
            ("loss.bce_weight=2.0", "loss.bce_weight"),
            ("trainable.lora_rank=4", "trainable.lora_rank"),
            ("data.mix_root=\"x\"", "data.mix_root"),
            ("run.max_new_tokens=10", "run.max_new_tokens"),
        ] {
            let mut overrides = overrides.to_vec();
            overrides.push(assignment.into());
            let e = TrainConfig::from_toml(&without_tokenizer, "m.toml", &overrides)
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{assignment}: {e}");
        }
    }
}
