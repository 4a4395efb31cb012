//! LEGION's training loss (GLaMM `compute_loss`, LISA `dice_loss` / `sigmoid_ce_loss`):
//!
//! `loss = ce_weight * CE + bce_weight * BCE + dice_weight * Dice`, where
//! - CE: token cross-entropy over the answer tokens (labels `-100` elsewhere), mean over the
//!   supervised tokens of the batch;
//! - BCE: per mask, the pixel mean of BCE-with-logits; summed over masks, divided by the
//!   number of masks in the batch (`+1e-8`);
//! - Dice: per mask `1 - (2 sum(s g)/1000 + 1e-6) / (sum(s)/1000 + sum(g)/1000 + 1e-6)` with
//!   `s = sigmoid(logits)`; summed over masks, divided by the number of masks (`+1e-8`).
//!
//! Every term is written as a *sum* divided by a batch-wide count ([`Normalisers`]), so the
//! contributions of micro-batches and devices add up to exactly the loss of the whole batch
//! (gradient accumulation and data parallelism do not change the objective).
//!
//! Golden values: `scripts/fixtures/losses.py` (PyTorch) -> `tests/fixtures/losses/`.

use burn::tensor::activation::{sigmoid, softplus};
use burn::tensor::{Int, Tensor};

use legion_model::legion::causal_lm_loss_sum;
use legion_model::tokenizer::IGNORE_INDEX;

/// Batch-wide denominators of the loss terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalisers {
    /// Supervised tokens in the whole batch (the loss divides by at least 1).
    pub tokens: f64,
    /// Masks in the whole batch.
    pub masks: f64,
}

/// Loss weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossWeights {
    /// Token cross-entropy.
    pub ce: f64,
    /// Mask BCE.
    pub bce: f64,
    /// Mask Dice.
    pub dice: f64,
}

/// The terms of one (micro-)batch, each already divided by its [`Normalisers`] count.
#[derive(Debug, Clone)]
pub struct LossTerms {
    /// Weighted sum, `[1]`: what is differentiated.
    pub total: Tensor<1>,
    /// Cross-entropy contribution (unweighted), `[1]`.
    pub ce: Tensor<1>,
    /// BCE contribution (unweighted), `[1]`.
    pub bce: Tensor<1>,
    /// Dice contribution (unweighted), `[1]`.
    pub dice: Tensor<1>,
}

/// Number of supervised next-token targets of `labels` (`[B, T]`, flattened row-major):
/// positions `t >= 1` of each row whose label is not [`IGNORE_INDEX`].
pub fn supervised_tokens(labels: &[i64], seq: usize) -> usize {
    labels
        .chunks(seq.max(1))
        .map(|row| row.iter().skip(1).filter(|&&l| l != IGNORE_INDEX).count())
        .sum()
}

/// Sum over supervised positions of `-log p(label_{t+1} | x_{<=t})`
/// ([`legion_model::legion::causal_lm_loss_sum`]).
///
/// # Shapes
/// `logits` `[B, T, V]`, `labels` `[B, T]` -> `[1]`.
///
/// # Panics
/// If the shapes disagree.
pub fn token_ce_sum(logits: Tensor<3>, labels: Tensor<2, Int>) -> Tensor<1> {
    causal_lm_loss_sum(logits, labels).0
}

/// Sum over masks of the per-mask pixel mean of BCE-with-logits.
///
/// # Shapes
/// `logits`, `targets` `[N, H, W]` -> `[1]`.
pub fn mask_bce_sum(logits: Tensor<3>, targets: Tensor<3>) -> Tensor<1> {
    let [n, h, w] = logits.dims();
    // BCE(x, y) = softplus(x) - x y, stable for any x.
    let loss = softplus(logits.clone(), 1.0) - logits * targets;
    loss.reshape([n, h * w]).mean_dim(1).sum()
}

/// Sum over masks of LISA's Dice loss (scale 1000, eps 1e-6).
///
/// # Shapes
/// `logits`, `targets` `[N, H, W]` -> `[1]`.
pub fn mask_dice_sum(logits: Tensor<3>, targets: Tensor<3>) -> Tensor<1> {
    const SCALE: f64 = 1000.0;
    const EPS: f64 = 1e-6;
    let [n, h, w] = logits.dims();
    let s = sigmoid(logits).reshape([n, h * w]);
    let g = targets.reshape([n, h * w]);
    let numerator = (s.clone() * g.clone())
        .div_scalar(SCALE)
        .sum_dim(1)
        .mul_scalar(2.0);
    let denominator = s.div_scalar(SCALE).sum_dim(1) + g.div_scalar(SCALE).sum_dim(1);
    let dice = numerator.add_scalar(EPS) / denominator.add_scalar(EPS);
    dice.neg().add_scalar(1.0).sum()
}

/// The weighted loss of one (micro-)batch.
///
/// `masks` pairs each image's predicted logits with its GT masks (both `[N_i, H_i, W_i]`);
/// images without artifacts contribute no pair (their text is still trained).
///
/// # Shapes
/// `logits` `[B, T, V]`, `labels` `[B, T]`.
pub fn legion_loss(
    logits: Tensor<3>,
    labels: Tensor<2, Int>,
    masks: Vec<(Tensor<3>, Tensor<3>)>,
    norm: Normalisers,
    weights: LossWeights,
) -> LossTerms {
    let device = logits.device();
    let ce = token_ce_sum(logits, labels).div_scalar(norm.tokens.max(1.0));
    let mask_count = norm.masks + 1e-8;
    let mut bce = Tensor::<1>::zeros([1], &device);
    let mut dice = Tensor::<1>::zeros([1], &device);
    for (pred, gt) in masks {
        bce = bce + mask_bce_sum(pred.clone(), gt.clone());
        dice = dice + mask_dice_sum(pred, gt);
    }
    let bce = bce.div_scalar(mask_count);
    let dice = dice.div_scalar(mask_count);
    let total = ce.clone().mul_scalar(weights.ce)
        + bce.clone().mul_scalar(weights.bce)
        + dice.clone().mul_scalar(weights.dice);
    LossTerms {
        total,
        ce,
        bce,
        dice,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn perfect_masks_have_near_zero_dice_and_bce() {
        let device = Device::flex();
        let gt = Tensor::<3>::from_data(
            TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [1, 2, 2]),
            &device,
        );
        let logits = gt.clone().mul_scalar(40.0).sub_scalar(20.0);
        let bce = mask_bce_sum(logits.clone(), gt.clone()).into_scalar::<f32>();
        let dice = mask_dice_sum(logits, gt).into_scalar::<f32>();
        assert!(bce < 1e-8 && dice < 1e-6, "{bce} {dice}");
        // Zero logits: BCE = ln 2 per pixel.
        let zero = Tensor::<3>::zeros([1, 2, 2], &device);
        let ones = Tensor::<3>::ones([1, 2, 2], &device);
        let bce = mask_bce_sum(zero, ones).into_scalar::<f32>();
        assert!((bce - 2f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn supervised_tokens_skip_the_first_position_and_ignored_labels() {
        let labels = [5, 6, IGNORE_INDEX, 7, IGNORE_INDEX, 8];
        assert_eq!(supervised_tokens(&labels, 3), 2);
    }
}
