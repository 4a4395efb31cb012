//! LoRA adapters on the LLM, with burn's built-in reparameterisation (`burn::module::Lora`).
//!
//! LEGION's recipe (`scripts/loc_exp/train.py`, PEFT): r = 8, alpha = 16, dropout 0.05 on the
//! LLM's `q_proj` and `v_proj`; `embed_tokens` and `lm_head` are trained fully.
//!
//! How burn's LoRA differs from PEFT's `LoraLayer`, and what this module does about it:
//! - **Form.** PEFT adds a side branch `y = W x + (alpha / r) * B(A(dropout(x)))`; burn
//!   reparameterises the weight, `W_eff = W + (alpha / r) * a @ b` (burn `Linear` weights are
//!   `[d_in, d_out]`, so `a: [d_in, r]` = PEFT `lora_A.weight^T`, `b: [r, d_out]` =
//!   `lora_B.weight^T`). Same scaling `alpha / r`; same function without dropout.
//! - **Dropout.** burn has no adapter dropout, and weight reparameterisation cannot express
//!   PEFT's dropout on the adapter's input. Training here is LoRA without dropout (recipe: 0.05).
//! - **Init.** Both start with `B = 0` (the adapted model equals the base). PEFT draws `A` from
//!   `kaiming_uniform(a = sqrt(5))` = U(-1/sqrt(d_in), 1/sqrt(d_in)), std `1/sqrt(3 d_in)`; burn
//!   draws `a ~ N(0, 1/r)` by default (std 0.125 at r = 8, ~14x PEFT's 0.009 at d_in = 4096).
//!   [`LlamaLoraConfig::init_std`] defaults to PEFT's std for `d_in = hidden_size` (exact for
//!   q/k/v/o/gate/up projections) with a normal instead of a uniform law.
//! - **Freezing.** `apply_lora` freezes every float parameter; the fully trained modules are
//!   unfrozen again by [`LlamaLoraConfig::fully_trained`].
//! - **Merge.** [`merge_lora`] = burn's `materialize`: `W + (alpha / r) a @ b`, adapters removed.

use burn::module::{Lora, Module, ParamGroup};

use super::Llama;

/// Errors of the LoRA helpers.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// A module name is empty or makes an invalid pattern.
    #[error("invalid LoRA module name `{name}`: {message}")]
    InvalidModuleName { name: String, message: String },
    /// The rank is zero or alpha is not finite.
    #[error("invalid LoRA hyper-parameters: rank {rank}, alpha {alpha}")]
    InvalidHyperParameters { rank: usize, alpha: f64 },
}

/// LoRA settings for [`apply_lora`].
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaLoraConfig {
    /// Rank `r`.
    pub rank: usize,
    /// Scaling numerator: the update is `alpha / r * a @ b`.
    pub alpha: f64,
    /// Linear layers (last path component, PEFT-style names) that get adapters.
    pub target_modules: Vec<String>,
    /// Top-level modules trained fully (unfrozen after LoRA froze everything).
    pub fully_trained: Vec<String>,
    /// Std of the normal init of `a`; `None` = PEFT's std for `d_in = hidden_size`.
    pub init_std: Option<f64>,
    /// Recorded for the run configuration; NOT applied (see the module docs).
    pub dropout: f64,
}

impl LlamaLoraConfig {
    /// LEGION's recipe: r = 8, alpha = 16, `q_proj,v_proj`, `embed_tokens` and `lm_head` fully
    /// trained, dropout 0.05 recorded (not applied).
    pub fn legion() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            fully_trained: vec!["embed_tokens".into(), "lm_head".into()],
            init_std: None,
            dropout: 0.05,
        }
    }

    /// Parses PEFT's comma-separated `--lora_target_modules` (e.g. `"q_proj,v_proj"`).
    pub fn with_target_modules_csv(mut self, csv: &str) -> Self {
        self.target_modules = csv
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        self
    }
}

fn module_regex(names: &[String], suffix: &str) -> Result<Vec<String>, LoraError> {
    names
        .iter()
        .map(|name| {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(LoraError::InvalidModuleName {
                    name: name.clone(),
                    message: "expected a module name like `q_proj`".into(),
                });
            }
            Ok(format!(r"(^|\.){name}\.{suffix}$"))
        })
        .collect()
}

/// Attaches LoRA adapters to the weights of the target linear layers of every decoder layer,
/// freezes all other parameters except [`LlamaLoraConfig::fully_trained`].
///
/// # Errors
/// [`LoraError`] on a zero rank, a non-finite alpha or an invalid module name.
pub fn apply_lora(model: Llama, config: &LlamaLoraConfig) -> Result<Llama, LoraError> {
    if config.rank == 0 || !config.alpha.is_finite() {
        return Err(LoraError::InvalidHyperParameters {
            rank: config.rank,
            alpha: config.alpha,
        });
    }
    let to_err = |e: burn::module::ParamGroupError| LoraError::InvalidModuleName {
        name: config.target_modules.join(","),
        message: format!("{e:?}"),
    };
    let targets = ParamGroup::from_any_regexes(module_regex(&config.target_modules, "weight")?)
        .map_err(to_err)?;
    let hidden = model.embed_tokens.weight.shape().dims::<2>()[1];
    let mut lora = Lora::new(config.rank, config.alpha).set_param_group(targets.clone());
    lora.init_std = Some(
        config
            .init_std
            .unwrap_or(1.0 / (3.0 * hidden as f64).sqrt()),
    );
    let model = model.apply_lora(lora);
    if config.fully_trained.is_empty() {
        return Ok(model);
    }
    let full: Vec<String> = module_regex(&config.fully_trained, ".+")?
        .into_iter()
        .map(|r| r.replacen("(^|\\.)", "^", 1))
        .collect();
    let full = ParamGroup::from_any_regexes(full).map_err(to_err)?;
    Ok(model.unfreeze_group(full.exclude(targets)))
}

/// Merges every LoRA adapter into its base weight (`W + alpha / r * a @ b`) and removes the
/// adapters; the result is a plain [`Llama`] that saves in the HF layout.
pub fn merge_lora(model: Llama) -> Llama {
    model.materialize()
}
