//! Text embeddings for Cairn's semantic search.
//!
//! Three providers behind one [`Embedder`]:
//! - [`local`]: a sentence-transformers BERT-family model (all-MiniLM-L6-v2 by default) run
//!   in-process on the CPU with candle, loaded from a model directory;
//! - [`openai`]: any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, Ollama, vLLM,
//!   llama.cpp);
//! - none: no embedder at all; search is then keyword-only.
//!
//! Every vector that leaves this crate is L2-normalised, so a dot product is the cosine.

pub mod bert;
pub mod local;
pub mod openai;

use std::sync::Arc;

/// Why texts could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model directory is missing a file or holds something unreadable.
    #[error("embedding model: {0}")]
    Model(String),
    /// The model failed while running.
    #[error("embedding failed: {0}")]
    Compute(String),
    /// The remote endpoint could not be reached or answered with an error.
    #[error("embedding endpoint: {0}")]
    Remote(String),
    /// The remote endpoint answered with something that is not a set of embeddings.
    #[error("embedding endpoint answered unexpectedly: {0}")]
    Protocol(String),
}

/// An embedding model ready to use.
#[derive(Clone)]
pub enum Embedder {
    Local(Arc<local::LocalModel>),
    OpenAi(Arc<openai::OpenAiEmbedder>),
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &self.model_id())
            .field("dimensions", &self.dimensions())
            .finish()
    }
}

impl Embedder {
    /// A stable name for the model, recorded with every collection embedded with it, so
    /// vectors from two models are never compared (e.g. `local/all-MiniLM-L6-v2`).
    pub fn model_id(&self) -> String {
        match self {
            Embedder::Local(m) => format!("local/{}", m.name()),
            Embedder::OpenAi(m) => format!("openai/{}", m.model()),
        }
    }

    /// Length of every vector this model produces.
    pub fn dimensions(&self) -> usize {
        match self {
            Embedder::Local(m) => m.dimensions(),
            Embedder::OpenAi(m) => m.dimensions(),
        }
    }

    /// Embed `texts` (documents or queries), in order, as unit vectors. Work is split into
    /// batches; local inference runs off the async runtime with bounded concurrency.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Embedder::Local(m) => m.embed(texts).await,
            Embedder::OpenAi(m) => m.embed(texts).await,
        }
    }

    /// Embed one query.
    pub async fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embed(vec![text.to_owned()])
            .await?
            .pop()
            .ok_or_else(|| EmbedError::Compute("no vector returned".into()))
    }
}

/// Scale `v` to unit length in place (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
}

/// Dot product: the cosine similarity of two unit vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_makes_unit_vectors_and_leaves_zero_alone() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert!((dot(&v, &v) - 1.0).abs() < 1e-6);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0; 3];
        normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }
}
