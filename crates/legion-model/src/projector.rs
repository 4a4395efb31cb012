//! The multimodal projector (`mm_projector`): CLIP patch features into the LLM's embedding space.
//!
//! LEGION (arXiv 2503.15264) inherits LLaVA-1.5's `mlp2x_gelu` projector through GLaMM:
//! `nn.Sequential(Linear(mm_hidden, hidden), GELU(), Linear(hidden, hidden))` with PyTorch's
//! default exact (erf) GELU (groundingLMM `model/llava/llava_with_region_arch.py`,
//! `LlavaMetaModel.__init__`). It is frozen in LEGION's training recipe. In a GLaMM/LEGION state
//! dict its tensors are `model.mm_projector.{0,2}.{weight,bias}` ([`GLAMM_PROJECTOR_REMAP`]).
//!
//! Parity with PyTorch: `cargo test -p legion-model --test clip_parity`.

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::cpu_inference::gelu;
use crate::linear;
use crate::precision::{cast_to, param_dtype};
use crate::weights::{self, Allowances, KeyRemap, WeightsError, compile_patterns};

/// Key remaps from the GLaMM / LEGION / LLaVA naming (`model.mm_projector.0` = first Linear,
/// `.2` = second; `.1` is the parameter-free GELU) to [`MlpProjector`] field paths. Also covers a
/// LLaVA `mm_projector.bin` pretrain adapter (same keys) and a PEFT-wrapped state dict
/// (`base_model.model.` prefix).
pub const GLAMM_PROJECTOR_REMAP: &[KeyRemap] = &[
    (r"^(?:base_model\.model\.)?model\.mm_projector\.0\.", "fc1."),
    (r"^(?:base_model\.model\.)?model\.mm_projector\.2\.", "fc2."),
];

/// File tensors (after [`GLAMM_PROJECTOR_REMAP`]) that a projector-only load of a combined
/// state dict ignores: everything else keeps its `model.` / `lm_head.` / `prediction_head.` /
/// `base_model.` prefix.
pub const GLAMM_PROJECTOR_IGNORED: &[&str] = &[r"^(model|lm_head|prediction_head|base_model)\."];

/// Configuration of the two-layer GELU MLP projector.
#[derive(Config, Debug)]
pub struct MlpProjectorConfig {
    /// Vision feature width (`mm_hidden_size`, 1024 for CLIP ViT-L).
    pub input_size: usize,
    /// LLM hidden size (4096 for Vicuna-7B); both Linear layers output this width.
    pub hidden_size: usize,
}

impl MlpProjectorConfig {
    /// LLaVA-1.5 / GLaMM / LEGION `mlp2x_gelu`: 1024 -> 4096 -> 4096.
    pub fn llava_mlp2x_gelu() -> Self {
        Self {
            input_size: 1024,
            hidden_size: 4096,
        }
    }

    /// A tiny projector for tests: 16 -> 32 -> 32.
    pub fn tiny() -> Self {
        Self {
            input_size: 16,
            hidden_size: 32,
        }
    }

    /// Initialises a projector with random weights.
    pub fn init(&self, device: &Device) -> MlpProjector {
        MlpProjector {
            fc1: LinearConfig::new(self.input_size, self.hidden_size).init(device),
            fc2: LinearConfig::new(self.hidden_size, self.hidden_size).init(device),
        }
    }
}

/// Linear -> GELU (erf) -> Linear.
#[derive(Module, Debug)]
pub struct MlpProjector {
    /// `mm_projector.0`.
    pub fc1: Linear,
    /// `mm_projector.2`.
    pub fc2: Linear,
}

impl MlpProjector {
    /// # Shapes
    /// `features` `[..., input_size]` -> `[..., hidden_size]` (LEGION: `[B, 576, 1024]` ->
    /// `[B, 576, 4096]`).
    ///
    /// # Panics
    /// If the last dimension is not `input_size`.
    pub fn forward<const D: usize>(&self, features: Tensor<D>) -> Tensor<D> {
        let features = cast_to(features, param_dtype(&self.fc1.weight));
        linear::forward(&self.fc2, gelu(linear::forward(&self.fc1, features)))
    }
}

/// Loads the projector from a GLaMM/LEGION/LLaVA state dict in safetensors, strictly for the
/// projector's own tensors (other components are ignored per [`GLAMM_PROJECTOR_IGNORED`]).
///
/// # Errors
/// [`WeightsError`] listing every missing / unexpected tensor and shape error.
pub fn load_projector(model: MlpProjector, path: &Path) -> Result<MlpProjector, WeightsError> {
    let allow = Allowances {
        missing: Vec::new(),
        unexpected: compile_patterns(GLAMM_PROJECTOR_IGNORED),
    };
    weights::load_safetensors(model, path, GLAMM_PROJECTOR_REMAP, &allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_at_a_random_config() {
        let device = Device::flex();
        device.seed(7);
        let projector = MlpProjectorConfig::new(12, 20).init(&device);
        let out = projector.forward(Tensor::<3>::ones([2, 5, 12], &device));
        assert_eq!(out.dims(), [2, 5, 20]);
        assert!(compile_patterns(GLAMM_PROJECTOR_IGNORED).len() == 1);
    }
}
