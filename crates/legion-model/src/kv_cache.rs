//! Key/value cache for incremental (token-by-token) decoding of the LLaMA LLM.
//!
//! Same role as HF's `DynamicCache`: each decoder layer appends the keys (after RoPE) and values
//! of the new positions and attends over everything cached so far, so a decoding step costs one
//! position instead of the whole sequence. Keys and values are stored per layer with
//! `num_key_value_heads` heads (before the grouped-query repeat), `[batch, kv_heads, seq, head_dim]`.

use burn::tensor::Tensor;

/// The cached keys and values of one decoder layer.
#[derive(Debug, Clone, Default)]
pub struct LayerKvCache {
    keys: Option<Tensor<4>>,
    values: Option<Tensor<4>>,
}

impl LayerKvCache {
    /// Number of cached positions.
    pub fn seq_len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.dims()[2])
    }

    /// Appends new keys and values and returns the full cached ones.
    ///
    /// # Shapes
    /// - `keys`, `values`: `[batch, kv_heads, new_seq, head_dim]`
    /// - returned: `[batch, kv_heads, cached_seq + new_seq, head_dim]`
    ///
    /// # Panics
    /// If batch, heads or head_dim differ from what is cached.
    pub fn append(&mut self, keys: Tensor<4>, values: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (keys, values) = match (self.keys.take(), self.values.take()) {
            (Some(k), Some(v)) => (
                Tensor::cat(vec![k, keys], 2),
                Tensor::cat(vec![v, values], 2),
            ),
            _ => (keys, values),
        };
        self.keys = Some(keys.clone());
        self.values = Some(values.clone());
        (keys, values)
    }
}

/// The cache of a whole model: one [`LayerKvCache`] per decoder layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKvCache>,
}

impl KvCache {
    /// An empty cache for a model with `num_layers` decoder layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![LayerKvCache::default(); num_layers],
        }
    }

    /// Number of decoder layers this cache is for.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Number of positions already cached (those of the first layer; all layers agree after a
    /// complete forward call).
    pub fn seq_len(&self) -> usize {
        self.layers.first().map_or(0, LayerKvCache::seq_len)
    }

    /// Drops everything cached.
    pub fn clear(&mut self) {
        for layer in &mut self.layers {
            *layer = LayerKvCache::default();
        }
    }

    /// The cache of layer `index`.
    ///
    /// # Panics
    /// If `index >= num_layers()`.
    pub fn layer_mut(&mut self, index: usize) -> &mut LayerKvCache {
        &mut self.layers[index]
    }
}
