//! The BERT encoder (Devlin et al., arXiv 1810.04805): embeddings followed by a stack of
//! post-LayerNorm transformer layers, returning the last hidden states (`transformers`'
//! `BertModel(...).last_hidden_state`; the pooler head is not part of it — sentence embeddings
//! pool the hidden states themselves, see [`crate::pooling`]).

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use crate::config::BertConfig;
use crate::embeddings::BertEmbeddings;
use crate::layer::{BertLayer, key_padding_bias};

/// BERT encoder without task heads.
#[derive(Module, Debug)]
pub struct BertModel {
    /// Word, position and token-type embeddings.
    pub embeddings: BertEmbeddings,
    /// Encoder layers, applied in order.
    pub layers: Vec<BertLayer>,
}

impl BertConfig {
    /// Creates a BERT encoder with random weights (load real ones with [`crate::weights`]).
    pub fn init(&self, device: &Device) -> BertModel {
        BertModel {
            embeddings: self.init_embeddings(device),
            layers: (0..self.num_hidden_layers)
                .map(|_| self.init_layer(device))
                .collect(),
        }
    }
}

impl BertModel {
    /// Encodes a right-padded batch of token ids (single-segment inputs: token type 0).
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`
    /// - `attention_mask`: `[batch, seq]`, 1 for real tokens and 0 for padding
    /// - returns the last hidden states `[batch, seq, hidden]`
    ///
    /// # Panics
    /// If the shapes differ, `seq` exceeds `max_position_embeddings`, or an id is outside the
    /// vocabulary.
    pub fn forward(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Tensor<3> {
        let token_type_ids = input_ids.zeros_like();
        let key_bias = key_padding_bias(attention_mask.equal_elem(0));
        let mut hidden = self.embeddings.forward(input_ids, token_type_ids);
        for layer in &self.layers {
            hidden = layer.forward(hidden, key_bias.clone());
        }
        hidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// Padding must not change the hidden states of real tokens: the same sentence alone and
    /// padded in a batch gives the same outputs on its real positions.
    #[test]
    fn padding_does_not_leak_into_real_tokens() {
        let device = Device::flex();
        device.seed(7);
        let model = BertConfig::tiny().init(&device);
        let short = [2i64, 17, 33, 3];
        let ids = Tensor::<2, Int>::from_data(TensorData::new(short.to_vec(), [1, 4]), &device);
        let mask = Tensor::<2, Int>::ones([1, 4], &device);
        let alone = model.forward(ids, mask);

        let padded_ids = [2i64, 17, 33, 3, 0, 0, 2, 5, 6, 7, 8, 3];
        let padded_mask = [1i64, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1];
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(padded_ids.to_vec(), [2, 6]), &device);
        let mask =
            Tensor::<2, Int>::from_data(TensorData::new(padded_mask.to_vec(), [2, 6]), &device);
        let batched = model.forward(ids, mask);
        assert_eq!(batched.dims(), [2, 6, 32]);

        let real = batched.slice([0..1, 0..4]);
        let diff = (real - alone).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "padding changed real tokens by {diff}");
    }
}
