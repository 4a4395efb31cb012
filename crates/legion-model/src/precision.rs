//! Compute dtype: every component computes in the dtype of its own weights.
//!
//! A bundle converted with `--dtype bf16` (or f16) keeps its weights in that dtype in memory,
//! while the data pipeline hands the model f32 pixels and the device creates f32 tensors. As
//! the reference after `model.to(torch.bfloat16)` (LLaVA's `CLIPVisionTower.forward` casts
//! `images.to(dtype=self.dtype)`, GLaMM builds SAM's grid in the Gaussian matrix's dtype and
//! calls `pred_mask.float()` before post-processing, transformers' Llama casts its rotary tables
//! to the activations' dtype, upcasts the softmax and returns `logits.float()`), each component
//! casts its floating inputs to its weights' dtype at its boundary, so that no operation meets
//! two dtypes (burn's CPU backend panics on a matmul of two dtypes and only debug-asserts
//! elementwise ones). Outputs that leave the model for a loss or a decision (LLM logits, mask
//! logits) are returned in f32. With f32 weights every cast is a no-op: f32 numbers do not move.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, FloatDType, Tensor};

/// `module` with every float parameter cast to `dtype` (ids and trainability kept), one
/// parameter at a time: the peak is the result plus one parameter, not two whole models.
pub fn cast_params<M: Module>(module: M, dtype: FloatDType) -> M {
    struct CastParams(FloatDType);
    impl ModuleMapper for CastParams {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dtype = self.0;
            param.map(|t| cast_to(t, dtype.into()))
        }
    }
    module.map(&mut CastParams(dtype))
}

/// The dtype `param` holds, without materialising a LoRA reparameterisation (`val` would).
pub(crate) fn param_dtype<const D: usize>(param: &Param<Tensor<D>>) -> DType {
    param.base().dtype()
}

/// `tensor` in `dtype`; the tensor itself when it already is.
pub(crate) fn cast_to<const D: usize>(tensor: Tensor<D>, dtype: DType) -> Tensor<D> {
    if tensor.dtype() == dtype {
        tensor
    } else {
        tensor.cast(FloatDType::from(dtype))
    }
}

/// `tensor` in f32 (losses, decisions and post-processing run in f32, as in the reference).
pub(crate) fn to_f32<const D: usize>(tensor: Tensor<D>) -> Tensor<D> {
    cast_to(tensor, DType::F32)
}
