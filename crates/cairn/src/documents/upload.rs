//! The streamed upload: `POST /api/collections/{id}/documents` with a multipart `file` field.
//! The file is never held whole in memory: its first bytes decide its type (the client's
//! content type and the extension are not trusted), then every piece is hashed, counted against
//! the size cap and the uploader's quota, encrypted and sent to blob storage as it arrives. A
//! refused upload leaves nothing behind; an accepted one is stored with its ingestion job in one
//! transaction and answered `202`.

use axum::extract::{Multipart, Path};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_ingest::detect::{self, Sniffed};
use cairn_store::collections::CollectionRole;
use cairn_store::documents::DocumentRow;
use cairn_store::{Id, StoreError};
use serde_json::json;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

use super::routes::{document_view, parse_id};
use crate::accounts::context::Ctx;
use crate::blobs::{BlobWriter, FileKey};
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;

/// Bytes read before deciding the file's type.
const SNIFF_BYTES: usize = 8 * 1024;
/// The kind stored for an office container until ingestion tells which one it is.
pub const ZIP_KIND: &str = "zip";

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_multipart",
        "The upload is not valid multipart/form-data.",
    )
    .with_details(json!({ "reason": e.body_text() }))
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "file_too_large",
        "The file is larger than uploads may be.",
    )
    .with_details(json!({ "limit_bytes": limit }))
}

fn over_quota(quota: u64, used: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "quota_exceeded",
        "This upload would exceed your storage quota; delete some documents first.",
    )
    .with_details(json!({ "quota_bytes": quota, "used_bytes": used }))
}

fn unsupported(message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_type",
        message,
    )
}

fn not_allowed(kind: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "type_not_allowed",
        "This workspace does not accept files of this type.",
    )
    .with_details(json!({ "kind": kind }))
}

/// A filename safe to store and show: the last path component, NFC, without control or
/// direction-override characters or characters filesystems reserve, at most 255 bytes.
pub fn sanitize_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut out: String = last
        .nfc()
        .filter(|c| !c.is_control())
        .filter(|c| !matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'))
        .map(|c| match c {
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c => c,
        })
        .collect();
    out = out.trim().trim_start_matches('.').trim().to_owned();
    while out.len() > 255 {
        out.pop();
    }
    if out.is_empty() {
        "upload".into()
    } else {
        out
    }
}

/// The upload in progress. Until [`Incoming::keep`] is called, leaving — by an error, or by the
/// request being dropped (client gone, upload timeout) — aborts the partial upload and removes
/// the blob, so a refused upload leaves nothing behind.
struct Incoming {
    writer: Option<BlobWriter>,
    key: String,
    /// Set while the blob must be cleaned up on leaving.
    armed: Option<crate::app::AppState>,
}

impl Incoming {
    async fn abandon(&mut self, state: &crate::app::AppState) {
        self.armed = None;
        if let Some(w) = self.writer.take() {
            w.abort().await;
        }
        let _ = state.blobs.delete(&self.key).await;
    }

    /// The document row now owns the blob.
    fn keep(&mut self) {
        self.armed = None;
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let Some(state) = self.armed.take() else {
            return;
        };
        let writer = self.writer.take();
        let key = std::mem::take(&mut self.key);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(w) = writer {
                    w.abort().await;
                }
                let _ = state.blobs.delete(&key).await;
            });
        }
    }
}

pub(crate) async fn upload(
    ctx: Ctx,
    Path(collection): Path<String>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> ApiResult<Response> {
    let state = &ctx.state;
    let user = ctx.actor.user_id;
    let collection = parse_id(&collection)?;
    match state
        .store
        .collection_for(user, collection, CollectionRole::Viewer)
        .await?
    {
        None => return Err(ApiError::not_found()),
        Some(c) if c.role == "viewer" => {
            return Err(ApiError::forbidden(
                "You may read this collection but not add to it.",
            ))
        }
        Some(_) => {}
    }
    let cap = state.config.uploads.max_file_bytes;
    let quota = state.config.uploads.user_quota_bytes;
    let used = u64::try_from(state.store.storage_used_by(user).await?).unwrap_or(0);
    if quota > 0 && used >= quota {
        return Err(over_quota(quota, used));
    }
    // Refuse early what the client says is too big; the real count is kept while reading.
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > cap.saturating_add(64 * 1024) {
            return Err(too_large(cap));
        }
    }
    let mut field = loop {
        match multipart.next_field().await.map_err(multipart_error)? {
            Some(f) if f.name() == Some("file") => break f,
            Some(_) => continue,
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "missing_file",
                    "Send the file in a multipart field named `file`.",
                ))
            }
        }
    };
    let filename = sanitize_filename(field.file_name().unwrap_or_default());

    // The first bytes decide the type.
    let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
    let mut rest: Option<bytes::Bytes> = None;
    while head.len() < SNIFF_BYTES {
        match field.chunk().await.map_err(multipart_error)? {
            Some(piece) => {
                let take = (SNIFF_BYTES - head.len()).min(piece.len());
                head.extend_from_slice(&piece[..take]);
                if take < piece.len() {
                    rest = Some(piece.slice(take..));
                    break;
                }
            }
            None => break,
        }
    }
    let kind = match detect::sniff(&head, &filename) {
        Ok(Sniffed::Known(kind)) => {
            if !super::allowed(&state.config, kind) {
                return Err(not_allowed(kind.as_str()));
            }
            kind.as_str()
        }
        Ok(Sniffed::Zip) => {
            if !super::any_office_allowed(&state.config) {
                return Err(not_allowed("office document"));
            }
            ZIP_KIND
        }
        Err(detect::DetectError::Empty) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "empty_file",
                "The file is empty.",
            ))
        }
        Err(e) => return Err(unsupported(e.to_string())),
    };

    let id = Id::new();
    let file_key = FileKey::generate().map_err(ApiError::internal)?;
    let mut incoming = Incoming {
        writer: Some(
            state
                .blobs
                .writer(&super::blob_key(id), &file_key)
                .await
                .map_err(ApiError::internal)?,
        ),
        key: super::blob_key(id),
        armed: Some(state.clone()),
    };
    let result = stream_rest(
        &mut incoming,
        &mut field,
        [Some(bytes::Bytes::from(head)), rest],
        cap,
        quota,
        used,
    )
    .await;
    let (size, sha) = match result {
        Ok(v) => v,
        Err(e) => {
            incoming.abandon(state).await;
            return Err(e);
        }
    };
    if let Some(w) = incoming.writer.take() {
        if let Err(e) = w.finish().await {
            incoming.abandon(state).await;
            return Err(ApiError::internal(e));
        }
    }

    // The same content already in this collection: a retried upload gets the original back.
    if let Some(existing) = state.store.document_by_content(collection, &sha).await? {
        incoming.abandon(state).await;
        return duplicate(&ctx, existing, headers.contains_key("idempotency-key")).await;
    }
    let row = super::new_document(
        state,
        super::NewFile {
            id,
            collection,
            uploader: user,
            filename,
            kind,
            size,
            sha256: sha.clone(),
        },
        &file_key,
    )
    .map_err(ApiError::internal)?;
    let job = super::ingest_job(&state.config, id);
    let quota_limit = (quota > 0).then(|| i64::try_from(quota).unwrap_or(i64::MAX));
    match state
        .store
        .insert_document(user, &row, &job, quota_limit)
        .await
    {
        Ok(_) => incoming.keep(),
        Err(e) => {
            incoming.abandon(state).await;
            return match e {
                StoreError::Conflict {
                    constraint: Some(c),
                } if c == "storage_quota" => {
                    let used = u64::try_from(state.store.storage_used_by(user).await?).unwrap_or(0);
                    Err(over_quota(quota, used))
                }
                StoreError::Conflict { .. } => {
                    match state.store.document_by_content(collection, &sha).await? {
                        Some(existing) => {
                            duplicate(&ctx, existing, headers.contains_key("idempotency-key")).await
                        }
                        None => Err(e.into()),
                    }
                }
                other => Err(other.into()),
            };
        }
    }
    state.jobs_ready.notify_waiters();
    let view = document_view(state, row).await?;
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/documents/{id}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Read the rest of the file into the blob writer: size, quota and hash as it goes.
async fn stream_rest(
    incoming: &mut Incoming,
    field: &mut axum::extract::multipart::Field<'_>,
    first: [Option<bytes::Bytes>; 2],
    cap: u64,
    quota: u64,
    used: u64,
) -> ApiResult<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let writer = incoming
        .writer
        .as_mut()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no writer")))?;
    let mut pending = first.into_iter().flatten().collect::<Vec<_>>().into_iter();
    loop {
        let piece = match pending.next() {
            Some(p) => p,
            None => match field.chunk().await.map_err(multipart_error)? {
                Some(p) => p,
                None => break,
            },
        };
        size += piece.len() as u64;
        if size > cap {
            return Err(too_large(cap));
        }
        if quota > 0 && used + size > quota {
            return Err(over_quota(quota, used));
        }
        hasher.update(&piece);
        writer.write(&piece).await.map_err(ApiError::internal)?;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

async fn duplicate(ctx: &Ctx, existing: DocumentRow, idempotent: bool) -> ApiResult<Response> {
    if idempotent && existing.uploaded_by == Some(ctx.actor.user_id) {
        let view = document_view(&ctx.state, existing).await?;
        return Ok((StatusCode::OK, Json(view)).into_response());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "duplicate_document",
        "This collection already has a document with exactly this content.",
    )
    .with_details(json!({ "document_id": existing.id })))
}

#[cfg(test)]
mod tests {
    use super::sanitize_filename;

    #[test]
    fn filenames_are_made_safe() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("C:\\Users\\x\\report.pdf"), "report.pdf");
        assert_eq!(sanitize_filename("..hidden"), "hidden");
        assert_eq!(sanitize_filename("evil\u{202E}fdp.exe"), "evilfdp.exe");
        assert_eq!(sanitize_filename("a<b>c:d|e?.txt"), "a_b_c_d_e_.txt");
        assert_eq!(sanitize_filename("line\nbreak.md"), "linebreak.md");
        assert_eq!(sanitize_filename(""), "upload");
        assert_eq!(sanitize_filename("/"), "upload");
        assert!(sanitize_filename(&"é".repeat(300)).len() <= 255);
        // Decomposed and composed forms end the same.
        assert_eq!(sanitize_filename("e\u{301}.txt"), "\u{e9}.txt");
    }
}
