//! Documents in: collections and their members, streamed uploads into encrypted blob storage,
//! and ingestion (parse → chunk → index) through the durable job queue.
//!
//! - [`routes`] — the HTTP API for collections and documents.
//! - [`upload`] — the streamed multipart upload: type from content, limits while reading.
//! - [`import`] — `cairn import`: folders in through the same pipeline.
//! - [`ingest`] — the ingestion job: decrypt, parse off the runtime with bounds, chunk, store.
//! - [`worker`] — the queue workers (inside `cairn serve`, or alone in `cairn worker`), the
//!   watchdog, and the maintenance sweeps (purge, orphans, temporary files).

pub mod import;
pub mod ingest;
pub mod routes;
pub mod upload;
pub mod worker;

use cairn_ingest::Kind;
use cairn_store::documents::DocumentRow;
use cairn_store::jobs::NewJob;
use cairn_store::Id;

use crate::config::{Config, UploadProfile};

/// The queue's name for ingestion jobs.
pub const INGEST_JOB: &str = "ingest";

/// The ingestion job for a document.
pub fn ingest_job(config: &Config, document: Id) -> NewJob {
    NewJob {
        kind: INGEST_JOB.into(),
        subject: Some(document.to_string()),
        payload: serde_json::json!({ "document_id": document }),
        max_attempts: i32::try_from(config.ingest.max_attempts).unwrap_or(3),
        timeout_secs: i32::try_from(config.ingest.job_timeout_secs).unwrap_or(300),
    }
}

/// Whether uploads of `kind` are allowed: the explicit list when set, else the profile's.
pub fn allowed(config: &Config, kind: Kind) -> bool {
    let u = &config.uploads;
    if !u.allowed_kinds.is_empty() {
        return u.allowed_kinds.iter().any(|k| k == kind.as_str());
    }
    match u.profile {
        UploadProfile::Safe => matches!(kind, Kind::Text | Kind::Markdown | Kind::Pdf),
        UploadProfile::Office => matches!(
            kind,
            Kind::Text
                | Kind::Markdown
                | Kind::Pdf
                | Kind::Docx
                | Kind::Xlsx
                | Kind::Pptx
                | Kind::Odt
                | Kind::Csv
        ),
        UploadProfile::All => true,
    }
}

/// Whether any office container kind is allowed (before the exact kind is known).
pub fn any_office_allowed(config: &Config) -> bool {
    [Kind::Docx, Kind::Xlsx, Kind::Pptx, Kind::Odt]
        .into_iter()
        .any(|k| allowed(config, k))
}

/// The parser limits this configuration sets.
/// How documents are cut into chunks (`ingest.chunk_*`).
pub fn chunk_options(config: &Config) -> cairn_ingest::chunk::ChunkOptions {
    cairn_ingest::chunk::ChunkOptions {
        target_tokens: config.ingest.chunk_tokens,
        overlap_tokens: config
            .ingest
            .chunk_overlap_tokens
            .min(config.ingest.chunk_tokens / 2),
        ..cairn_ingest::chunk::ChunkOptions::default()
    }
}

pub fn limits(config: &Config) -> cairn_ingest::Limits {
    cairn_ingest::Limits {
        max_zip_entries: config.uploads.zip_max_entries,
        max_uncompressed_bytes: config.uploads.zip_max_uncompressed_bytes,
        max_compression_ratio: config.uploads.zip_max_ratio,
        max_text_bytes: config.ingest.max_text_bytes,
    }
}

/// The uploader's quota for [`cairn_store::Store::insert_document`]: `None` when unlimited.
pub fn quota_limit(config: &Config) -> Option<i64> {
    let q = config.uploads.user_quota_bytes;
    (q > 0).then(|| i64::try_from(q).unwrap_or(i64::MAX))
}

/// What is known of a file once it is stored: the row to insert for it.
pub struct NewFile {
    pub id: Id,
    pub collection: Id,
    pub uploader: Id,
    pub filename: String,
    pub kind: &'static str,
    pub size: u64,
    pub sha256: String,
}

/// The document row for a stored file, queued for ingestion, its file key sealed by the data
/// key (bound to the document id).
pub fn new_document(
    state: &crate::app::AppState,
    file: NewFile,
    key: &crate::blobs::FileKey,
) -> Result<DocumentRow, crate::crypto::SealError> {
    let sealed = crate::crypto::seal(&state.keys.data_key, &key.0, file.id.to_string().as_bytes())?;
    Ok(DocumentRow {
        size_bytes: i64::try_from(file.size).unwrap_or(i64::MAX),
        content_sha256: file.sha256,
        blob_key: blob_key(file.id),
        sealed_key: sealed,
        ..DocumentRow::queued(
            file.id,
            file.collection,
            file.uploader,
            file.filename,
            file.kind,
        )
    })
}

/// The blob key of a document.
pub fn blob_key(document: Id) -> String {
    format!("documents/{document}")
}
