//! Which parameters a run trains.
//!
//! The reference recipe (`train.py`): every parameter frozen, LoRA adapters on the LLM's
//! `q_proj` / `v_proj`, and the modules whose names contain `lm_head`, `embed_tokens`,
//! `mask_decoder`, `text_hidden_fcs` trained fully; CLIP, `mm_projector`, SAM's image and
//! prompt encoders stay frozen. `full = true` trains everything (small configs).

use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::tensor::Tensor;

use legion_model::legion::Legion;
use legion_model::llama::lora::{LlamaLoraConfig, apply_lora};

use crate::config::TrainableSection;
use crate::error::TrainError;

/// Parameters that are registered buffers in the reference (never trained): SAM's random
/// Fourier-feature matrix. Even `full = true` keeps them frozen.
pub const REFERENCE_BUFFERS: &[&str] = &[r"positional_encoding_gaussian_matrix$"];

/// Applies the trainable-parameter plan to `model` (which must live on an autodiff device
/// for the gradients to exist).
///
/// # Errors
/// [`TrainError::Lora`] on an invalid LoRA setting, [`TrainError::Config`] on an invalid
/// module path.
pub fn configure_trainable(model: Legion, plan: &TrainableSection) -> Result<Legion, TrainError> {
    let bad = |message: String| TrainError::Config {
        source_name: "trainable".into(),
        message,
    };
    let buffers = ParamGroup::from_any_regexes(
        REFERENCE_BUFFERS
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
    )
    .map_err(|e| bad(format!("{e:?}")))?;
    if plan.full {
        return Ok(model
            .set_require_grad(true)
            .set_require_grad_group(buffers, false));
    }
    let mut model = model.no_grad();
    if plan.lora {
        if plan.lora_dropout != 0.0 {
            tracing::warn!(
                dropout = plan.lora_dropout,
                "LoRA dropout is recorded but not applied: burn's LoRA reparameterises the \
                 weight and has no adapter-input dropout"
            );
        }
        let lora = LlamaLoraConfig {
            rank: plan.lora_rank,
            alpha: plan.lora_alpha,
            target_modules: plan.lora_targets.clone(),
            fully_trained: Vec::new(),
            init_std: None,
            dropout: plan.lora_dropout,
        };
        model.llm = apply_lora(model.llm, &lora).map_err(TrainError::Lora)?;
    }
    if !plan.fully_trained.is_empty() {
        let patterns: Vec<String> = plan
            .fully_trained
            .iter()
            .map(|prefix| {
                if prefix.is_empty()
                    || !prefix
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    return Err(bad(format!(
                        "fully_trained entry `{prefix}` is not a module path like `llm.lm_head`"
                    )));
                }
                Ok(format!("^{}\\.", prefix.replace('.', "\\.")))
            })
            .collect::<Result<_, _>>()?;
        let group = ParamGroup::from_any_regexes(patterns).map_err(|e| bad(format!("{e:?}")))?;
        // A module path such as `grounding_encoder` holds a buffer; it stays frozen.
        model = model
            .set_require_grad_group(group, true)
            .set_require_grad_group(buffers, false);
    }
    Ok(model)
}

struct TrainableCount {
    trainable: usize,
    total: usize,
}

impl ModuleVisitor for TrainableCount {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let n = param.shape().num_elements();
        self.total += n;
        if param.is_require_grad() {
            self.trainable += n;
        }
    }
}

/// `(trainable, total)` parameter counts of `module` (LoRA factors included).
pub fn count_trainable<M: Module>(module: &M) -> (usize, usize) {
    let mut counter = TrainableCount {
        trainable: 0,
        total: 0,
    };
    module.visit(&mut counter);
    (counter.trainable, counter.total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use legion_model::legion::LegionConfig;

    /// The fixture-size model on an autodiff device with `plan` applied.
    fn configured(plan: &TrainableSection) -> Legion {
        let device = Device::flex().autodiff();
        configure_trainable(LegionConfig::fixture().init(&device).unwrap(), plan).unwrap()
    }

    /// The size of SAM's Fourier matrix (a buffer), after checking it is frozen.
    fn frozen_fourier_matrix(model: &Legion) -> usize {
        let gaussian = &model
            .grounding_encoder
            .prompt_encoder
            .pe_layer
            .positional_encoding_gaussian_matrix;
        assert!(!gaussian.is_require_grad());
        gaussian.shape().num_elements()
    }

    #[test]
    fn full_training_keeps_buffers_frozen_and_the_recipe_trains_only_its_modules() {
        let model = configured(&TrainableSection {
            full: true,
            ..TrainableSection::default()
        });
        let (trainable, total) = count_trainable(&model);
        assert_eq!(total - trainable, frozen_fourier_matrix(&model));

        let recipe = configured(&TrainableSection::default());
        assert!(
            !recipe
                .vision_tower
                .embeddings
                .patch_embedding
                .weight
                .is_require_grad()
        );
        assert!(
            !recipe
                .grounding_encoder
                .image_encoder
                .patch_embed
                .proj
                .weight
                .is_require_grad()
        );
        assert!(recipe.llm.lm_head.weight.is_require_grad());
        assert!(recipe.text_hidden_fcs.fc1.weight.is_require_grad());
        let (trainable, total) = count_trainable(&recipe);
        assert!(trainable > 0 && trainable < total, "{trainable} of {total}");
    }

    /// configs/tiny.toml's plan: everything but the (pretrained) tower, buffers still frozen.
    #[test]
    fn fully_trained_modules_keep_their_buffers_frozen() {
        let model = configured(&TrainableSection {
            full: false,
            lora: false,
            fully_trained: [
                "mm_projector",
                "llm",
                "grounding_encoder",
                "text_hidden_fcs",
            ]
            .map(String::from)
            .to_vec(),
            ..TrainableSection::default()
        });
        let (trainable, total) = count_trainable(&model);
        let (tower, _) = count_trainable(&model.vision_tower.clone().set_require_grad(true));
        assert_eq!(total - trainable, tower + frozen_fourier_matrix(&model));
    }
}
