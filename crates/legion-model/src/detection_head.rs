//! The real/fake detection head of `LegionForCls`.
//!
//! LEGION (arXiv 2503.15264) also reports image-level detection (UniversalFakeDetect): the CLS
//! token of CLIP hidden layer -2 (1024 wide, see [`crate::clip_vision::ClipFeatures::cls`]) goes
//! through `prediction_head = nn.Sequential(Linear(mm_hidden, 2 * mm_hidden), ReLU(),
//! Linear(2 * mm_hidden, 2))`, trained with cross-entropy (opendatalab/LEGION `model/Legion.py`,
//! `LegionForCls`). Labels: real = 1, fake = 0 (`scripts/cls/eval.py`). The head sits at the top
//! level of the model, so its state-dict keys are `prediction_head.{0,2}.{weight,bias}`
//! ([`LEGION_CLS_HEAD_REMAP`]).
//!
//! Parity with PyTorch: `cargo test -p legion-model --test clip_parity`.

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor};

use crate::linear;
use crate::precision::{cast_to, param_dtype, to_f32};
use crate::weights::{self, Allowances, KeyRemap, WeightsError, compile_patterns};

/// Class index of a real image (LEGION's convention).
pub const REAL_LABEL: i64 = 1;
/// Class index of a generated (fake) image.
pub const FAKE_LABEL: i64 = 0;

/// Key remaps from `LegionForCls` naming (`prediction_head.0` = first Linear, `.1` = ReLU,
/// `.2` = second Linear; a PEFT-wrapped state dict adds `base_model.model.`) to
/// [`DetectionHead`] field paths.
pub const LEGION_CLS_HEAD_REMAP: &[KeyRemap] = &[
    (r"^(?:base_model\.model\.)?prediction_head\.0\.", "fc1."),
    (r"^(?:base_model\.model\.)?prediction_head\.2\.", "fc2."),
];

/// File tensors (after [`LEGION_CLS_HEAD_REMAP`]) that a head-only load of a combined state dict
/// ignores.
pub const LEGION_CLS_HEAD_IGNORED: &[&str] = &[r"^(model|lm_head|base_model)\."];

/// Configuration of the detection head.
#[derive(Config, Debug)]
pub struct DetectionHeadConfig {
    /// Width of the CLS feature (`mm_hidden_size`).
    pub input_size: usize,
    /// Width of the hidden layer (`2 * mm_hidden_size` in LEGION).
    pub hidden_size: usize,
    /// Number of classes (2: fake = 0, real = 1).
    #[config(default = 2)]
    pub num_classes: usize,
}

impl DetectionHeadConfig {
    /// `LegionForCls.prediction_head` on CLIP ViT-L: 1024 -> 2048 -> ReLU -> 2.
    pub fn legion_cls() -> Self {
        Self {
            input_size: 1024,
            hidden_size: 2048,
            num_classes: 2,
        }
    }

    /// A tiny head for tests: 16 -> 32 -> 2.
    pub fn tiny() -> Self {
        Self {
            input_size: 16,
            hidden_size: 32,
            ..Self::legion_cls()
        }
    }

    /// Initialises a head with random weights.
    pub fn init(&self, device: &Device) -> DetectionHead {
        DetectionHead {
            fc1: LinearConfig::new(self.input_size, self.hidden_size).init(device),
            fc2: LinearConfig::new(self.hidden_size, self.num_classes).init(device),
        }
    }
}

/// Linear -> ReLU -> Linear, producing class logits.
#[derive(Module, Debug)]
pub struct DetectionHead {
    /// `prediction_head.0`.
    pub fc1: Linear,
    /// `prediction_head.2`.
    pub fc2: Linear,
}

impl DetectionHead {
    /// Class logits (index [`FAKE_LABEL`] = fake, [`REAL_LABEL`] = real).
    ///
    /// # Shapes
    /// `cls` `[B, input_size]` -> `[B, num_classes]`.
    ///
    /// # Panics
    /// If the last dimension is not `input_size`.
    pub fn forward(&self, cls: Tensor<2>) -> Tensor<2> {
        let cls = cast_to(cls, param_dtype(&self.fc1.weight));
        to_f32(linear::forward(
            &self.fc2,
            relu(linear::forward(&self.fc1, cls)),
        ))
    }

    /// Predicted class per image (argmax of the logits, as `torch.max(logits, dim=1)`).
    ///
    /// # Shapes
    /// `logits` `[B, num_classes]` -> `[B]`.
    ///
    /// # Panics
    /// Never for a rank-2 input.
    pub fn predict(logits: Tensor<2>) -> Tensor<1, Int> {
        let [batch, _] = logits.dims();
        logits.argmax(1).reshape([batch])
    }
}

/// Loads the head from a `LegionForCls` state dict in safetensors, strictly for the head's own
/// tensors (other components are ignored per [`LEGION_CLS_HEAD_IGNORED`]).
///
/// # Errors
/// [`WeightsError`] listing every missing / unexpected tensor and shape error.
pub fn load_detection_head(
    model: DetectionHead,
    path: &Path,
) -> Result<DetectionHead, WeightsError> {
    let allow = Allowances {
        missing: Vec::new(),
        unexpected: compile_patterns(LEGION_CLS_HEAD_IGNORED),
    };
    weights::load_safetensors(model, path, LEGION_CLS_HEAD_REMAP, &allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_prediction() {
        let device = Device::flex();
        device.seed(3);
        let head = DetectionHeadConfig::new(6, 10).init(&device);
        let logits = head.forward(Tensor::<2>::ones([3, 6], &device));
        assert_eq!(logits.dims(), [3, 2]);
        let logits = Tensor::<2>::from_data([[0.5, -1.0], [-0.2, 0.9]], &device);
        let predicted = DetectionHead::predict(logits)
            .into_data()
            .try_to_vec_as::<i64>()
            .unwrap();
        assert_eq!(predicted, vec![FAKE_LABEL, REAL_LABEL]);
        assert_eq!(compile_patterns(LEGION_CLS_HEAD_IGNORED).len(), 1);
    }
}
