//! CSS: cosine similarity of sentence embeddings between a predicted explanation and the GT
//! caption (LEGION paper, explanation table). The paper does not name the embedding model, so
//! the model is a parameter ([`SentenceEncoder`]) and its name is recorded in every report.
//! Without an encoder CSS is reported as unavailable (`None`), never approximated.

/// Error type of encoders (any error, so implementations can use their own).
pub type EncoderError = Box<dyn std::error::Error + Send + Sync>;

/// Turns sentences into embedding vectors (e.g. the burn MiniLM of another crate).
pub trait SentenceEncoder: Send + Sync {
    /// A name that identifies the model and pooling, recorded in reports
    /// (e.g. `sentence-transformers/all-MiniLM-L6-v2 mean-pooled`).
    fn name(&self) -> String;
    /// One embedding per text, all of the same length.
    fn encode(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EncoderError>;
}

/// Cosine similarity in f64; 0 when either vector has zero norm (as sklearn's
/// `cosine_similarity`).
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_hand_computed() {
        assert!((cosine_similarity(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-12);
        assert!((cosine_similarity(&[1.0, 2.0], &[-1.0, -2.0]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine_similarity(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }
}
