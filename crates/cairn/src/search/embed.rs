//! Vectors for chunks: during ingestion (the `indexing` stage, after the keyword index) and
//! in `embed` jobs that re-embed documents when the configured model changes.
//!
//! Each batch is embedded off the runtime and stored in its own transaction, so an interrupted
//! run resumes where it stopped; chunks that already have a vector from the current model are
//! never embedded twice.

use cairn_embed::Embedder;
use cairn_store::jobs::NewJob;
use cairn_store::{Id, Store, StoreError};

use crate::app::AppState;
use crate::config::Config;

/// The job kind that (re-)embeds one document's chunks.
pub const EMBED_JOB: &str = "embed";

/// Chunks embedded and stored per round.
const ROUND: u32 = 64;

pub fn embed_job(config: &Config, document: Id) -> NewJob {
    NewJob {
        kind: EMBED_JOB.into(),
        subject: Some(document.to_string()),
        payload: serde_json::json!({ "document_id": document }),
        max_attempts: i32::try_from(config.ingest.max_attempts).unwrap_or(3),
        timeout_secs: i32::try_from(config.ingest.job_timeout_secs).unwrap_or(300),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedFailure {
    #[error("{0}")]
    Embedding(#[from] cairn_embed::EmbedError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Embed the chunks of `document` that lack a vector from `embedder`'s model. With
/// `show_progress`, the document's `indexing` progress is updated after each round; `alive`
/// false stops between rounds. True when every chunk has its vector.
pub async fn embed_document(
    store: &Store,
    embedder: &Embedder,
    document: Id,
    alive: &(dyn Fn() -> bool + Sync),
    show_progress: bool,
    metrics: Option<&crate::ops::metrics::Metrics>,
) -> Result<bool, EmbedFailure> {
    let model = embedder.model_id();
    loop {
        if !alive() {
            return Ok(false);
        }
        let pending = store
            .chunks_needing_vectors(document, &model, ROUND)
            .await?;
        if pending.is_empty() {
            return Ok(true);
        }
        let texts: Vec<String> = pending.iter().map(|c| c.text.clone()).collect();
        let vectors = embedder.embed(texts).await?;
        let pairs: Vec<(i64, Vec<f32>)> = pending.iter().map(|c| c.seq).zip(vectors).collect();
        let stored = store.store_vectors(&model, &pairs).await?;
        if let Some(m) = metrics {
            m.observe_embedded(stored);
        }
        if show_progress {
            let (done, total) = store.vector_progress(document, &model).await?;
            if !store
                .set_document_stage(document, "indexing", (done, total))
                .await?
            {
                return Ok(false);
            }
        }
        if stored == 0 {
            // Every chunk of the round vanished (reprocessed or deleted meanwhile).
            return Ok(false);
        }
    }
}

/// Record the model on a collection that has none yet (its first embedded document).
pub async fn claim_collection(
    store: &Store,
    embedder: &Embedder,
    collection: Id,
) -> Result<(), StoreError> {
    if store.collection_embedding(collection).await?.is_none() {
        store
            .set_collection_embedding(collection, &embedder.model_id(), embedder.dimensions())
            .await?;
    }
    Ok(())
}

/// Queue `embed` jobs for every ready document whose chunks lack vectors from the configured
/// model (the model changed, or embeddings were just turned on), and record the new model on
/// their collections. Returns how many jobs were queued.
pub async fn queue_reembedding(state: &AppState) -> Result<usize, StoreError> {
    let Some(embedder) = &state.embedder else {
        return Ok(0);
    };
    let model = embedder.model_id();
    let mut queued = 0;
    for (collection, previous) in state.store.collections_to_embed(&model).await? {
        for document in state.store.documents_to_embed(collection, &model).await? {
            let pending = state
                .store
                .latest_job_for(&document.to_string())
                .await?
                .is_some_and(|j| {
                    j.kind == EMBED_JOB && matches!(j.status.as_str(), "queued" | "running")
                });
            if !pending {
                state
                    .store
                    .enqueue_job(&embed_job(&state.config, document))
                    .await?;
                queued += 1;
            }
        }
        state
            .store
            .set_collection_embedding(collection, &model, embedder.dimensions())
            .await?;
        tracing::info!(
            collection = %collection, from = previous.as_deref().unwrap_or("none"), to = %model,
            "collection re-embedding queued"
        );
    }
    if queued > 0 {
        state.jobs_ready.notify_waiters();
    }
    Ok(queued)
}
