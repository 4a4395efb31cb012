//! Sentence pooling over BERT hidden states, as in Sentence-BERT (Reimers & Gurevych,
//! arXiv 1908.10084) and `sentence_transformers.models.Pooling` / `Normalize`:
//! mean over the tokens the attention mask keeps ([CLS] and [SEP] included), or the [CLS]
//! state, optionally followed by L2 normalisation.

use burn::tensor::{Int, Tensor};

/// How token states become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over non-padding tokens (`pooling_mode_mean_tokens`).
    Mean,
    /// The first token's state (`pooling_mode_cls_token`).
    Cls,
}

impl Pooling {
    /// Name used in [`crate::SentenceEncoder::name`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "CLS",
        }
    }

    /// Pools token states into sentence vectors.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, width]`
    /// - `attention_mask`: `[batch, seq]`, 1 for real tokens, 0 for padding
    /// - returns `[batch, width]`
    ///
    /// # Panics
    /// If the batch or sequence sizes of the two inputs differ.
    pub fn forward(self, hidden: Tensor<3>, attention_mask: Tensor<2, Int>) -> Tensor<2> {
        let [batch, seq, width] = hidden.dims();
        match self {
            Self::Mean => {
                let weights = attention_mask.float().unsqueeze_dim::<3>(2);
                let summed = (hidden * weights.clone())
                    .sum_dim(1)
                    .reshape([batch, width]);
                // sentence-transformers clamps the token count at 1e-9; with at least [CLS]
                // unmasked it is >= 1 anyway.
                let counts = weights.sum_dim(1).reshape([batch, 1]).clamp_min(1e-9);
                summed / counts
            }
            Self::Cls => {
                debug_assert!(seq > 0);
                hidden.slice([0..batch, 0..1]).reshape([batch, width])
            }
        }
    }
}

/// Scales each row to unit L2 norm (`torch.nn.functional.normalize`, eps 1e-12).
///
/// # Shapes
/// - `x`: `[batch, width]`; returns the same shape.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norms = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norms
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn mean_ignores_padding_and_normalize_gives_unit_rows() {
        let device = Device::flex();
        // batch 1, seq 3, width 2: the third token is padding and must not count.
        let hidden = Tensor::<3>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 6.0, 100.0, -100.0], [1, 3, 2]),
            &device,
        );
        let mask = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 1, 0], [1, 3]), &device);
        let mean = Pooling::Mean.forward(hidden.clone(), mask.clone());
        assert_eq!(mean.to_data().try_to_vec::<f32>().unwrap(), vec![2.0, 4.0]);
        let cls = Pooling::Cls.forward(hidden, mask);
        assert_eq!(cls.to_data().try_to_vec::<f32>().unwrap(), vec![1.0, 2.0]);

        let unit = l2_normalize(mean).to_data().try_to_vec::<f32>().unwrap();
        let norm = (unit[0] * unit[0] + unit[1] * unit[1]).sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "norm {norm}");
        assert!((unit[1] / unit[0] - 2.0).abs() < 1e-6);
    }
}
