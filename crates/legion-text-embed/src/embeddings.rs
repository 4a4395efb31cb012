//! BERT input embeddings: word + learned absolute position + token type, then LayerNorm
//! (Devlin et al., arXiv 1810.04805, section 3; `transformers`' `BertEmbeddings`). Dropout is
//! omitted: this crate only runs inference.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Int, Tensor};

use crate::config::BertConfig;

/// The embedding block of a BERT encoder.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// `[vocab_size, hidden]` word-piece table.
    pub word_embeddings: Embedding,
    /// `[max_position_embeddings, hidden]` absolute position table.
    pub position_embeddings: Embedding,
    /// `[type_vocab_size, hidden]` segment table.
    pub token_type_embeddings: Embedding,
    /// LayerNorm over the summed embeddings.
    pub layer_norm: LayerNorm,
}

impl BertConfig {
    /// Creates the embedding block with random weights.
    pub fn init_embeddings(&self, device: &Device) -> BertEmbeddings {
        BertEmbeddings {
            word_embeddings: EmbeddingConfig::new(self.vocab_size, self.hidden_size).init(device),
            position_embeddings: EmbeddingConfig::new(
                self.max_position_embeddings,
                self.hidden_size,
            )
            .init(device),
            token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, self.hidden_size)
                .init(device),
            layer_norm: LayerNormConfig::new(self.hidden_size)
                .with_epsilon(self.layer_norm_eps)
                .init(device),
        }
    }
}

impl BertEmbeddings {
    /// Embeds token ids; positions are `0..seq` (right padding, as the tokenizer produces).
    ///
    /// # Shapes
    /// - `input_ids`, `token_type_ids`: `[batch, seq]`
    /// - returns `[batch, seq, hidden]`
    ///
    /// # Panics
    /// If `seq` exceeds `max_position_embeddings` or an id is outside its table (burn's
    /// embedding lookup does not check); the sentence encoder truncates inputs beforehand.
    pub fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, seq] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device).unsqueeze::<2>();
        let summed = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(positions)
            + self.token_type_embeddings.forward(token_type_ids);
        self.layer_norm.forward(summed)
    }
}
