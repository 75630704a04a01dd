//! The ingestion job: read the document's blob, decrypt it, tell its exact kind, parse it and
//! chunk it off the async runtime under a time limit and with panics caught, then store the
//! chunks (and with them the keyword index) in one transaction. Every step can run again: the
//! chunks replace whatever an earlier, interrupted attempt stored.
//!
//! A document that cannot be read (damaged, encrypted, a zip bomb, no text) fails with the
//! parser's reason and is not retried; a failure of a dependency (database, blob store) is
//! retried by the queue with backoff.

use std::time::Duration;

use cairn_ingest::chunk;
use cairn_ingest::{detect, Kind};
use cairn_store::documents::{ChunkRow, DocumentRow};
use cairn_store::{Id, Json};

use crate::app::AppState;
use crate::blobs::FileKey;

/// How an attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// Stored, or nothing left to do (deleted or cancelled meanwhile).
    Done,
    /// The document itself is the problem: it is marked failed; do not retry.
    Rejected { code: &'static str, message: String },
}

/// A failure worth retrying (the database or blob store was unavailable…).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transient(pub String);

impl From<cairn_store::StoreError> for Transient {
    fn from(e: cairn_store::StoreError) -> Self {
        Transient(e.to_string())
    }
}

/// Open a document's per-file key with the data key.
pub fn open_file_key(state: &AppState, doc: &DocumentRow) -> anyhow::Result<FileKey> {
    let key = crate::crypto::open(
        &state.keys.data_key,
        &doc.sealed_key,
        doc.id.to_string().as_bytes(),
    )?;
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| anyhow::anyhow!("a document key has the wrong length"))?;
    Ok(FileKey(key))
}

/// What the blocking part hands back.
struct Extracted {
    kind: Kind,
    title: Option<String>,
    chunks: Vec<chunk::Chunk>,
    parse_ms: u128,
    chunk_ms: u128,
}

/// Run one ingestion attempt for `document`. `alive` is polled between stages: false means
/// the job was cancelled or lost, so stop without writing.
pub async fn run(
    state: &AppState,
    document: Id,
    alive: &(dyn Fn() -> bool + Sync),
) -> Result<Outcome, Transient> {
    let store = &state.store;
    let Some(doc) = store.document(document).await? else {
        return Ok(Outcome::Done);
    };
    if doc.deleted_at.is_some() || doc.status == "cancelled" {
        return Ok(Outcome::Done);
    }
    // An earlier attempt stored the chunks and was embedding them: carry on from there.
    if doc.status == "indexing" && doc.chunk_count > 0 && state.embedder.is_some() {
        return add_vectors(state, &doc, alive).await;
    }
    if !store.set_document_stage(doc.id, "parsing", (0, 0)).await? {
        return Ok(Outcome::Done);
    }
    let started = std::time::Instant::now();
    let key = open_file_key(state, &doc).map_err(|e| Transient(e.to_string()))?;
    let bytes = state
        .blobs
        .read_all(
            &doc.blob_key,
            &key,
            state
                .config
                .uploads
                .max_file_bytes
                .max(u64::try_from(doc.size_bytes).unwrap_or(0)),
        )
        .await
        .map_err(|e| Transient(e.to_string()))?;
    if !alive() {
        return Ok(Outcome::Done);
    }
    let read_ms = started.elapsed().as_millis();

    let limits = super::limits(&state.config);
    let options = super::chunk_options(&state.config);
    let declared = doc.kind.clone();
    let config = state.config.clone();
    let limit = state.config.ingest.parse_timeout;
    let parsed = bounded(limit, move || {
        let kind = if declared == super::upload::ZIP_KIND {
            let kind = detect::zip_kind(&bytes).map_err(|e| (e.code(), e.to_string()))?;
            if !super::allowed(&config, kind) {
                return Err((
                    "type_not_allowed",
                    format!("This workspace does not accept {} files.", kind.as_str()),
                ));
            }
            kind
        } else {
            declared
                .parse::<Kind>()
                .map_err(|_| ("unsupported_type", format!("unknown kind {declared}")))?
        };
        let t = std::time::Instant::now();
        let parsed =
            cairn_ingest::parse(kind, &bytes, &limits).map_err(|e| (e.code(), e.to_string()))?;
        Ok((kind, parsed, t.elapsed().as_millis()))
    })
    .await;
    let (kind, parsed, parse_ms) = match parsed {
        Ok(v) => v,
        Err((code, message)) => {
            state
                .metrics
                .observe_ingest(&doc.kind, false, started.elapsed(), 0);
            return reject(state, doc.id, code, message).await;
        }
    };
    if !alive() || !store.set_document_stage(doc.id, "chunking", (0, 0)).await? {
        return Ok(Outcome::Done);
    }
    let chunked = bounded(limit, move || {
        let t = std::time::Instant::now();
        let chunks = chunk::chunk(&parsed, &options);
        if chunks.is_empty() {
            return Err(("no_text", "The document has no text to index.".into()));
        }
        Ok(Extracted {
            kind,
            title: parsed.title,
            chunks,
            parse_ms,
            chunk_ms: t.elapsed().as_millis(),
        })
    })
    .await;
    let extracted = match chunked {
        Ok(v) => v,
        Err((code, message)) => {
            state
                .metrics
                .observe_ingest(kind.as_str(), false, started.elapsed(), 0);
            return reject(state, doc.id, code, message).await;
        }
    };
    if !alive() {
        return Ok(Outcome::Done);
    }
    let total = i64::try_from(extracted.chunks.len()).unwrap_or(i64::MAX);
    if !store
        .set_document_stage(doc.id, "indexing", (0, total))
        .await?
    {
        return Ok(Outcome::Done);
    }
    let rows: Vec<ChunkRow> = extracted
        .chunks
        .into_iter()
        .map(|c| ChunkRow {
            id: Id::new(),
            document_id: doc.id,
            collection_id: doc.collection_id,
            ordinal: i32::try_from(c.ordinal).unwrap_or(i32::MAX),
            token_count: i32::try_from(c.token_count).unwrap_or(i32::MAX),
            location: Json(serde_json::to_value(&c.location).unwrap_or_default()),
            text: c.text,
        })
        .collect();
    if !alive() {
        return Ok(Outcome::Done);
    }
    if doc.kind != extracted.kind.as_str() {
        store
            .set_document_kind(doc.id, extracted.kind.as_str())
            .await?;
    }
    let t = std::time::Instant::now();
    let stored = store
        .store_chunks_then(
            doc.id,
            extracted.title.as_deref(),
            &rows,
            state.embedder.is_none(),
        )
        .await?;
    let store_ms = t.elapsed().as_millis();
    if stored {
        // Fold the new chunks into this process's in-memory index now, while the next
        // document parses, rather than in the next search.
        store.nudge_search_index();
    }
    if stored && state.embedder.is_some() {
        let t = std::time::Instant::now();
        add_vectors(state, &doc, alive).await?;
        tracing::info!(
            document = %doc.id, chunks = rows.len(), embed_ms = t.elapsed().as_millis(),
            "document embedded"
        );
    }
    state.metrics.observe_ingest(
        extracted.kind.as_str(),
        true,
        started.elapsed(),
        u64::try_from(doc.size_bytes).unwrap_or(0),
    );
    tracing::info!(
        document = %doc.id, kind = extracted.kind.as_str(), bytes = doc.size_bytes,
        chunks = rows.len(), read_ms, parse_ms = extracted.parse_ms,
        chunk_ms = extracted.chunk_ms, store_ms,
        total_ms = started.elapsed().as_millis(), "document ingested"
    );
    Ok(Outcome::Done)
}

/// The `indexing` stage's second half: a vector for every chunk, then `ready`. An embedding
/// failure is retried like a storage failure (the model or its endpoint may come back).
async fn add_vectors(
    state: &AppState,
    doc: &DocumentRow,
    alive: &(dyn Fn() -> bool + Sync),
) -> Result<Outcome, Transient> {
    let Some(embedder) = &state.embedder else {
        return Ok(Outcome::Done);
    };
    crate::search::embed::claim_collection(&state.store, embedder, doc.collection_id).await?;
    let complete = crate::search::embed::embed_document(
        &state.store,
        embedder,
        doc.id,
        alive,
        true,
        Some(&state.metrics),
    )
    .await
    .map_err(|e| Transient(e.to_string()))?;
    if complete {
        state.store.finish_document(doc.id).await?;
    }
    Ok(Outcome::Done)
}

/// Run `f` on the blocking pool with panics caught and a time limit; a failure as an
/// `(error_code, message)` for the document.
async fn bounded<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> Result<T, (&'static str, String)> + Send + 'static,
) -> Result<T, (&'static str, String)> {
    let task = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
    });
    match tokio::time::timeout(limit, task).await {
        // The blocking thread cannot be stopped; it ends on its own and its result is dropped.
        // The time limit protects the document's status and the queue.
        Err(_) => Err((
            "parse_timeout",
            format!(
                "Reading the document took longer than {} s.",
                limit.as_secs()
            ),
        )),
        Ok(Err(join)) => Err(("parser_crashed", format!("The parser stopped: {join}"))),
        Ok(Ok(Err(_panic))) => Err((
            "parser_crashed",
            "The parser failed on this document.".into(),
        )),
        Ok(Ok(Ok(result))) => result,
    }
}

async fn reject(
    state: &AppState,
    id: Id,
    code: &'static str,
    message: String,
) -> Result<Outcome, Transient> {
    state.store.fail_document(id, code, &message).await?;
    Ok(Outcome::Rejected { code, message })
}

/// Backoff before attempt `attempts + 1`: 5 s, 20 s, 80 s… capped at 10 minutes.
pub fn backoff(attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 8)).unwrap_or(0);
    Duration::from_secs((5u64 * 4u64.pow(exp.saturating_sub(1))).min(600))
}
