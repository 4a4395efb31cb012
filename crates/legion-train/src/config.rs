//! The training configuration: one TOML file (`configs/*.toml`), every field overridable from
//! the command line with `--set section.field=value`, saved resolved next to the checkpoints.
//!
//! Defaults are the reference recipe (`scripts/loc_exp/train.sh`, see
//! `shared/reference/LEGION.md`): AdamW lr 1e-4, betas (0.9, 0.95), weight decay 0, 100 linear
//! warmup steps then linear decay over the planned steps, gradient clipping 1.0, loss weights
//! 1.0 / 0.4 / 0.2, LoRA r 8 alpha 16 on `q_proj,v_proj`, SAM input 512.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// What the run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Grounded artifact explanation: token CE + mask BCE + Dice (`LegionForCausalLM`).
    Segment,
    /// Image-level real/fake head on CLIP (`LegionForCls`), CE on image labels.
    Detect,
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
    /// Image-level labels for `task = "detect"`: JSONL `{"image": ..., "real": bool}`.
    #[serde(default)]
    pub detect_labels: Option<PathBuf>,
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

fn default_train_split() -> String {
    "train".into()
}
fn default_val_split() -> String {
    "test".into()
}
fn default_max_length() -> usize {
    1536
}
fn default_lr() -> f64 {
    1e-4
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_eps() -> f64 {
    1e-8
}
fn default_warmup() -> u64 {
    100
}
fn default_clip() -> f64 {
    1.0
}
fn default_one() -> usize {
    1
}
fn default_ce() -> f64 {
    1.0
}
fn default_bce() -> f64 {
    0.4
}
fn default_dice() -> f64 {
    0.2
}
fn default_true() -> bool {
    true
}
fn default_rank() -> usize {
    8
}
fn default_alpha() -> f64 {
    16.0
}
fn default_lora_dropout() -> f64 {
    0.05
}
fn default_targets() -> Vec<String> {
    vec!["q_proj".into(), "v_proj".into()]
}
fn default_fully_trained() -> Vec<String> {
    [
        "llm.embed_tokens",
        "llm.lm_head",
        "grounding_encoder.mask_decoder",
        "text_hidden_fcs",
    ]
    .map(String::from)
    .to_vec()
}
fn default_task() -> Task {
    Task::Segment
}
fn default_seed() -> u64 {
    42
}
fn default_keep() -> usize {
    2
}
fn default_new_tokens() -> usize {
    512
}
fn default_bad_steps() -> u32 {
    5
}
fn default_devices() -> Vec<String> {
    vec!["cpu".into()]
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
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Config {
            source_name: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// As [`TrainConfig::load`] from TOML text; `source_name` names it in errors.
    ///
    /// # Errors
    /// [`TrainError::Config`].
    pub fn from_toml(
        text: &str,
        source_name: &str,
        overrides: &[String],
    ) -> Result<Self, TrainError> {
        let err = |message: String| TrainError::Config {
            source_name: source_name.to_string(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        for assignment in overrides {
            apply_override(&mut table, assignment)
                .map_err(|m| err(format!("--set {assignment}: {m}")))?;
        }
        let config: TrainConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| err(e.to_string()))?;
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// The resolved configuration as TOML (saved next to the checkpoints).
    pub fn to_toml(&self) -> String {
        // Plain data: serialisation cannot fail.
        toml::to_string_pretty(self).expect("serialisable config")
    }

    fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.run.steps == 0 {
            problems.push("run.steps must be > 0".to_string());
        }
        if self.run.batch_size == 0 {
            problems.push("run.batch_size must be > 0".to_string());
        }
        if self.optim.grad_accum == 0 {
            problems.push("optim.grad_accum must be > 0".to_string());
        }
        if !(self.optim.lr.is_finite() && self.optim.lr > 0.0) {
            problems.push(format!(
                "optim.lr must be a positive number, got {}",
                self.optim.lr
            ));
        }
        if !(0.0..=1.0).contains(&self.data.mix_ratio) {
            problems.push(format!(
                "data.mix_ratio must be in [0, 1], got {}",
                self.data.mix_ratio
            ));
        }
        if self.data.mix_ratio > 0.0 && self.data.mix_root.is_none() {
            problems.push("data.mix_ratio > 0 needs data.mix_root".to_string());
        }
        if self.model.init.is_none() && self.data.tokenizer.is_none() {
            problems.push("data.tokenizer is needed unless model.init names a bundle".to_string());
        }
        if self.run.devices.is_empty() {
            problems.push("run.devices is empty".to_string());
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
}
