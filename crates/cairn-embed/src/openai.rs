//! Embeddings from any OpenAI-compatible `POST {base}/embeddings` endpoint: OpenAI, Ollama,
//! vLLM, llama.cpp's server, LiteLLM.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::{normalize, EmbedError};

/// Where and how to call the endpoint.
#[derive(Clone)]
pub struct OpenAiOptions {
    /// Base URL up to and including the version, e.g. `https://api.openai.com/v1` or
    /// `http://127.0.0.1:11434/v1`.
    pub base_url: url::Url,
    pub model: String,
    /// Sent as a bearer token when set.
    pub api_key: Option<String>,
    pub batch_size: usize,
    pub concurrency: usize,
    pub timeout: Duration,
    /// Retries after a 429, a 5xx or a connection failure, with backoff.
    pub retries: u32,
}

impl std::fmt::Debug for OpenAiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiOptions")
            .field("base_url", &self.base_url.as_str())
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

pub struct OpenAiEmbedder {
    options: OpenAiOptions,
    endpoint: url::Url,
    client: reqwest::Client,
    dimensions: usize,
    permits: Arc<Semaphore>,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// Connect and learn the model's dimension by embedding one short text, so a wrong URL,
    /// key or model name is reported at start-up rather than at the first upload.
    pub async fn connect(options: OpenAiOptions) -> Result<OpenAiEmbedder, EmbedError> {
        let mut base = options.base_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let endpoint = base
            .join("embeddings")
            .map_err(|e| EmbedError::Remote(format!("bad endpoint URL: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| EmbedError::Remote(e.to_string()))?;
        let mut me = OpenAiEmbedder {
            permits: Arc::new(Semaphore::new(options.concurrency.max(1))),
            options,
            endpoint,
            client,
            dimensions: 0,
        };
        let probe = me.call(&["dimension probe".to_owned()]).await?;
        me.dimensions = probe.first().map(Vec::len).unwrap_or(0);
        if me.dimensions == 0 {
            return Err(EmbedError::Protocol(
                "the probe returned an empty vector".into(),
            ));
        }
        Ok(me)
    }

    pub fn model(&self) -> &str {
        &self.options.model
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let batches: Vec<&[String]> = texts.chunks(self.options.batch_size.max(1)).collect();
        let calls = batches.into_iter().map(|batch| async move {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|e| EmbedError::Compute(e.to_string()))?;
            self.call(batch).await
        });
        let mut out = Vec::with_capacity(texts.len());
        for result in futures::future::join_all(calls).await {
            out.extend(result?);
        }
        if let Some(bad) = out.iter().find(|v| v.len() != self.dimensions) {
            return Err(EmbedError::Protocol(format!(
                "a vector of {} dimensions, expected {}",
                bad.len(),
                self.dimensions
            )));
        }
        Ok(out)
    }

    async fn call(&self, batch: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body = serde_json::json!({
            "model": self.options.model,
            "input": batch,
            "encoding_format": "float",
        });
        let mut attempt = 0;
        loop {
            let mut req = self.client.post(self.endpoint.clone()).json(&body);
            if let Some(key) = &self.options.api_key {
                req = req.bearer_auth(key);
            }
            let retryable = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let parsed: Response = resp
                        .json()
                        .await
                        .map_err(|e| EmbedError::Protocol(e.to_string()))?;
                    return self.order(parsed, batch.len());
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    let text: String = text.chars().take(300).collect();
                    let err = EmbedError::Remote(format!("HTTP {status}: {text}"));
                    if status.as_u16() == 429 || status.is_server_error() {
                        err
                    } else {
                        return Err(err);
                    }
                }
                Err(e) => EmbedError::Remote(e.without_url().to_string()),
            };
            if attempt >= self.options.retries {
                return Err(retryable);
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(250 << attempt.min(6))).await;
        }
    }

    fn order(&self, resp: Response, expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        if resp.data.len() != expected {
            return Err(EmbedError::Protocol(format!(
                "{} vectors for {expected} inputs",
                resp.data.len()
            )));
        }
        let mut out: Vec<Option<Vec<f32>>> = vec![None; expected];
        for (pos, item) in resp.data.into_iter().enumerate() {
            let i = item.index.unwrap_or(pos);
            let slot = out
                .get_mut(i)
                .ok_or_else(|| EmbedError::Protocol(format!("index {i} out of range")))?;
            let mut v = item.embedding;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(EmbedError::Protocol("a vector with NaN or infinity".into()));
            }
            normalize(&mut v);
            *slot = Some(v);
        }
        out.into_iter()
            .map(|v| v.ok_or_else(|| EmbedError::Protocol("a missing index".into())))
            .collect()
    }
}
