//! `text_hidden_fcs`: the bridge from the LLM's `[SEG]` hidden states to SAM prompt embeddings.
//!
//! GLaMM / LEGION (`model/Legion.py`, `LegionBaseModel._initialize_text_projection_layer`):
//! `nn.ModuleList([nn.Sequential(Linear(H, H), ReLU(inplace=True), Linear(H, out_dim),
//! Dropout(0.0))])`, so the state-dict keys are `model.text_hidden_fcs.0.0.{weight,bias}` (first
//! Linear) and `model.text_hidden_fcs.0.2.{weight,bias}` (second Linear). The dropout has
//! probability 0 and is the identity. LEGION: H = 4096, out_dim = 256 (SAM's prompt width).
//! It is fully trained in LEGION's recipe.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::linear;
use crate::precision::{cast_to, param_dtype};
use crate::weights::KeyRemap;

/// Key remaps from the GLaMM / LEGION naming to [`TextHiddenFcs`] field paths inside
/// [`super::Legion`] (`text_hidden_fcs.fc1` / `.fc2`).
pub const GLAMM_TEXT_HIDDEN_FCS_REMAP: &[KeyRemap] = &[
    (r"^model\.text_hidden_fcs\.0\.0\.", "text_hidden_fcs.fc1."),
    (r"^model\.text_hidden_fcs\.0\.2\.", "text_hidden_fcs.fc2."),
];

/// Configuration of [`TextHiddenFcs`].
#[derive(Config, Debug)]
pub struct TextHiddenFcsConfig {
    /// LLM hidden size (input and inner width).
    pub hidden_size: usize,
    /// SAM prompt width (`out_dim`, 256 for SAM).
    pub out_dim: usize,
}

impl TextHiddenFcsConfig {
    /// LEGION on Vicuna-7B and SAM: 4096 -> 4096 -> 256.
    pub fn legion_7b() -> Self {
        Self {
            hidden_size: 4096,
            out_dim: 256,
        }
    }

    /// Initialises with random weights.
    pub fn init(&self, device: &Device) -> TextHiddenFcs {
        TextHiddenFcs {
            fc1: LinearConfig::new(self.hidden_size, self.hidden_size).init(device),
            fc2: LinearConfig::new(self.hidden_size, self.out_dim).init(device),
        }
    }
}

/// Linear -> ReLU -> Linear (-> Dropout(0.0) = identity).
#[derive(Module, Debug)]
pub struct TextHiddenFcs {
    /// `text_hidden_fcs.0.0`, `H -> H`.
    pub fc1: Linear,
    /// `text_hidden_fcs.0.2`, `H -> out_dim`.
    pub fc2: Linear,
}

impl TextHiddenFcs {
    /// # Shapes
    /// `hidden` `[..., H]` -> `[..., out_dim]`.
    ///
    /// # Panics
    /// If the last dimension is not `H`.
    pub fn forward<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        let hidden = cast_to(hidden, param_dtype(&self.fc1.weight));
        linear::forward(&self.fc2, relu(linear::forward(&self.fc1, hidden)))
    }
}
