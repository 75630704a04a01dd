//! The HTTP API for collections and documents. Every handler asks the store with the caller's
//! id, and the store checks membership inside its statements; a collection or document the
//! caller may not see answers 404 exactly as one that does not exist.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_store::collections::{CollectionRole, MemberCollection};
use cairn_store::documents::{DocumentFilter, DocumentRow};
use cairn_store::{Id, StoreError, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::accounts::admin::{page, Page};
use crate::accounts::context::Ctx;
use crate::app::AppState;
use crate::auth::{ApiRoutes, Rule, Scope};
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;
use crate::http::query::{page_limit, Query};

pub fn routes() -> ApiRoutes {
    let read = Rule::MEMBER.key(Scope::Read);
    let write = Rule::MEMBER.key(Scope::Ingest);
    let admin = Rule::ADMIN.key(Scope::Admin);
    // Deleting a whole collection and changing who may see it need a signed-in person, not a
    // tool's key.
    let manage = Rule::MEMBER;
    ApiRoutes::new()
        .route(Method::GET, "/api/collections", read, list_collections)
        .route(Method::POST, "/api/collections", write, create_collection)
        .route(Method::GET, "/api/collections/{id}", read, show_collection)
        .route(
            Method::PATCH,
            "/api/collections/{id}",
            write,
            update_collection,
        )
        .route(
            Method::DELETE,
            "/api/collections/{id}",
            manage,
            delete_collection,
        )
        .route(
            Method::GET,
            "/api/collections/{id}/members",
            read,
            list_members,
        )
        .route(
            Method::PUT,
            "/api/collections/{id}/members/{user_id}",
            manage,
            share,
        )
        .route(
            Method::DELETE,
            "/api/collections/{id}/members/{user_id}",
            manage,
            unshare,
        )
        .route(
            Method::POST,
            "/api/collections/{id}/documents",
            write.upload(),
            super::upload::upload,
        )
        .route(
            Method::GET,
            "/api/collections/{id}/documents",
            read,
            list_documents,
        )
        .route(Method::GET, "/api/documents/{id}", read, show_document)
        .route(Method::GET, "/api/documents/{id}/chunks", read, list_chunks)
        .route(Method::GET, "/api/documents/{id}/content", read, download)
        .route(
            Method::DELETE,
            "/api/documents/{id}",
            write,
            delete_document,
        )
        .route(Method::POST, "/api/documents/{id}/retry", write, retry)
        .route(Method::POST, "/api/documents/{id}/cancel", write, cancel)
        .route(Method::POST, "/api/documents/{id}/restore", admin, restore)
        .route(Method::GET, "/api/deleted-documents", admin, list_deleted)
        .route(
            Method::POST,
            "/api/documents/reprocess",
            admin,
            reprocess_all,
        )
        .route(Method::GET, "/api/jobs", admin, job_counts)
}

pub fn parse_id(raw: &str) -> ApiResult<Id> {
    // An id that cannot exist is simply not found.
    raw.parse().map_err(|_| ApiError::not_found())
}

fn last_owner() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "last_owner",
        "A collection needs an owner: make someone else owner first.",
    )
}

pub(crate) fn bad_query(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
}

pub(crate) fn cursor(raw: Option<&str>) -> ApiResult<Option<Id>> {
    raw.map(str::parse::<Id>)
        .transpose()
        .map_err(|_| bad_query("`cursor` is not one this API returned."))
}

fn check_text(field: &'static str, value: &str, max: usize, empty_ok: bool) -> ApiResult<String> {
    let v = value.trim();
    if (!empty_ok && v.is_empty()) || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            field,
            if empty_ok {
                "must be at most the allowed length, without control characters"
            } else {
                "must be 1 to the allowed length of characters, without control characters"
            },
        ));
    }
    Ok(v.to_owned())
}

// ---- collections ------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_collections(
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<MemberCollection>>> {
    let limit = page_limit(q.limit)?;
    let after = cursor(q.cursor.as_deref())?;
    // Everyone has a personal collection, made on first sight.
    ctx.state
        .store
        .personal_collection(ctx.actor.user_id)
        .await?;
    let rows = ctx
        .state
        .store
        .collections_of(ctx.actor.user_id, after, limit + 1)
        .await?;
    Ok(Json(page(rows, limit, |c| c.collection.id, |c| c)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCollection {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create_collection(ctx: Ctx, Json(req): Json<NewCollection>) -> ApiResult<Response> {
    let name = check_text("name", &req.name, 100, false)?;
    let description = check_text("description", &req.description, 2000, true)?;
    let user = ctx.actor.user_id;
    let row = ctx
        .state
        .store
        .create_collection(user, &name, &description)
        .await?;
    let view = ctx
        .state
        .store
        .collection_for(user, row.id, CollectionRole::Owner)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/collections/{}", row.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn show_collection(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<MemberCollection>> {
    let id = parse_id(&id)?;
    ctx.state
        .store
        .collection_for(ctx.actor.user_id, id, CollectionRole::Viewer)
        .await?
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectionUpdate {
    name: Option<String>,
    description: Option<String>,
}

/// 404 when the caller cannot see the collection, 403 when they see it but lack `role`.
async fn require(ctx: &Ctx, id: Id, role: CollectionRole) -> ApiResult<MemberCollection> {
    let user = ctx.actor.user_id;
    let store = &ctx.state.store;
    if let Some(c) = store.collection_for(user, id, role).await? {
        return Ok(c);
    }
    if store
        .collection_for(user, id, CollectionRole::Viewer)
        .await?
        .is_some()
    {
        return Err(ApiError::forbidden(match role {
            CollectionRole::Owner => "Only the collection's owners may do this.",
            _ => "You may read this collection but not change it.",
        }));
    }
    Err(ApiError::not_found())
}

async fn update_collection(
    ctx: Ctx,
    Path(id): Path<String>,
    Json(req): Json<CollectionUpdate>,
) -> ApiResult<Json<MemberCollection>> {
    let id = parse_id(&id)?;
    let current = require(&ctx, id, CollectionRole::Owner).await?;
    let name = match &req.name {
        Some(n) => check_text("name", n, 100, false)?,
        None => current.collection.name,
    };
    let description = match &req.description {
        Some(d) => check_text("description", d, 2000, true)?,
        None => current.collection.description,
    };
    let user = ctx.actor.user_id;
    ctx.state
        .store
        .update_collection(user, id, &name, &description)
        .await?;
    show_collection(ctx, Path(id.to_string())).await
}

async fn delete_collection(ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    let c = require(&ctx, id, CollectionRole::Owner).await?;
    if c.collection.personal_of.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "personal_collection",
            "Your personal collection cannot be deleted; delete its documents instead.",
        ));
    }
    let blobs = ctx
        .state
        .store
        .delete_collection(ctx.actor.user_id, id)
        .await?;
    for key in blobs {
        if let Err(e) = ctx.state.blobs.delete(&key).await {
            // The orphan sweep removes it later.
            tracing::warn!(error = %e, key, "could not remove a deleted collection's blob");
        }
    }
    ctx.record(
        "collection.deleted",
        Some(("collection", id.to_string())),
        Some(json!({ "name": c.collection.name })),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_members(
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<Json<Page<cairn_store::collections::MemberRow>>> {
    let id = parse_id(&id)?;
    require(&ctx, id, CollectionRole::Viewer).await?;
    let items = ctx
        .state
        .store
        .collection_members(ctx.actor.user_id, id)
        .await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Share {
    role: String,
}

async fn share(
    ctx: Ctx,
    Path((id, user_id)): Path<(String, String)>,
    Json(req): Json<Share>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    let target = parse_id(&user_id)?;
    let role = CollectionRole::parse(&req.role)
        .ok_or_else(|| ApiError::invalid_field("role", "must be viewer, editor or owner"))?;
    let c = require(&ctx, id, CollectionRole::Owner).await?;
    if c.collection.personal_of.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "personal_collection",
            "A personal collection cannot be shared; create a shared collection.",
        ));
    }
    // Only accounts in good standing can be given access.
    match ctx.state.store.user(target).await? {
        Some(u) if u.state == "active" => {}
        _ => return Err(ApiError::not_found()),
    }
    match ctx
        .state
        .store
        .share_collection(ctx.actor.user_id, id, target, role)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict { .. }) => return Err(last_owner()),
        Err(e) => return Err(e.into()),
    }
    ctx.record(
        "collection.shared",
        Some(("collection", id.to_string())),
        Some(json!({ "user_id": target, "role": role.as_str() })),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn unshare(ctx: Ctx, Path((id, user_id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    let target = parse_id(&user_id)?;
    // Anyone may leave; only owners remove others.
    let role = if target == ctx.actor.user_id {
        CollectionRole::Viewer
    } else {
        CollectionRole::Owner
    };
    require(&ctx, id, role).await?;
    match ctx
        .state
        .store
        .unshare_collection(ctx.actor.user_id, id, target)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict { .. }) => return Err(last_owner()),
        Err(e) => return Err(e.into()),
    }
    ctx.record(
        "collection.unshared",
        Some(("collection", id.to_string())),
        Some(json!({ "user_id": target })),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- documents --------------------------------------------------------------------------

/// A document as the API shows it.
#[derive(Serialize)]
pub struct DocumentView {
    #[serde(flatten)]
    row: DocumentRow,
    progress: Progress,
    /// The ingestion job, while there is one to show.
    job: Option<JobView>,
}

#[derive(Serialize)]
struct Progress {
    done: i64,
    total: i64,
}

#[derive(Serialize)]
struct JobView {
    id: Id,
    status: String,
    attempts: i32,
    max_attempts: i32,
    last_error: Option<String>,
    run_at: Timestamp,
}

pub async fn document_view(state: &AppState, row: DocumentRow) -> ApiResult<DocumentView> {
    let job = state
        .store
        .latest_job_for(&row.id.to_string())
        .await?
        .map(|j| JobView {
            id: j.id,
            status: j.status,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            last_error: j.last_error,
            run_at: j.run_at,
        });
    Ok(DocumentView {
        progress: Progress {
            done: row.progress_done,
            total: row.progress_total,
        },
        row,
        job,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentQuery {
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

const STATUSES: [&str; 7] = [
    "queued",
    "parsing",
    "chunking",
    "indexing",
    "ready",
    "failed",
    "cancelled",
];

async fn list_documents(
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<DocumentQuery>,
) -> ApiResult<Json<Page<DocumentRow>>> {
    let id = parse_id(&id)?;
    let limit = page_limit(q.limit)?;
    // One status or several, comma-separated (`?status=queued,parsing,chunking,indexing`).
    let statuses: Option<Vec<String>> = q
        .status
        .as_deref()
        .map(|list| list.split(',').map(|s| s.trim().to_owned()).collect());
    if statuses
        .as_ref()
        .is_some_and(|l| l.iter().any(|s| !STATUSES.contains(&s.as_str())))
    {
        return Err(bad_query(
            "`status` must be one or more (comma-separated) of queued, parsing, chunking, \
             indexing, ready, failed and cancelled.",
        ));
    }
    require(&ctx, id, CollectionRole::Viewer).await?;
    let filter = DocumentFilter {
        statuses,
        after: cursor(q.cursor.as_deref())?,
        limit: limit + 1,
    };
    let rows = ctx
        .state
        .store
        .documents_in(ctx.actor.user_id, id, &filter)
        .await?;
    Ok(Json(page(rows, limit, |d| d.id, |d| d)))
}

/// The document if the caller may see it with `role` (404 otherwise, 403 for a reader asking
/// to write).
async fn document_as(ctx: &Ctx, id: &str, role: CollectionRole) -> ApiResult<DocumentRow> {
    let id = parse_id(id)?;
    let store = &ctx.state.store;
    let user = ctx.actor.user_id;
    if let Some(d) = store.document_for(user, id, role).await? {
        return Ok(d);
    }
    if role > CollectionRole::Viewer
        && store
            .document_for(user, id, CollectionRole::Viewer)
            .await?
            .is_some()
    {
        return Err(ApiError::forbidden(
            "You may read this document but not change it.",
        ));
    }
    Err(ApiError::not_found())
}

async fn show_document(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<DocumentView>> {
    let d = document_as(&ctx, &id, CollectionRole::Viewer).await?;
    Ok(Json(document_view(&ctx.state, d).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_chunks(
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<ChunkQuery>,
) -> ApiResult<Json<Page<cairn_store::documents::ChunkRow>>> {
    let d = document_as(&ctx, &id, CollectionRole::Viewer).await?;
    let limit = page_limit(q.limit)?;
    let after = q
        .cursor
        .as_deref()
        .map(str::parse::<i32>)
        .transpose()
        .map_err(|_| bad_query("`cursor` is not one this API returned."))?;
    let mut rows = ctx
        .state
        .store
        .chunks_of(ctx.actor.user_id, d.id, after, limit + 1)
        .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|c| c.ordinal.to_string()))
        .flatten();
    Ok(Json(Page {
        items: rows,
        next_cursor,
    }))
}

async fn download(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    let d = document_as(&ctx, &id, CollectionRole::Viewer).await?;
    // An office container whose exact kind ingestion has not confirmed (or refused) is not
    // served: the upload check saw only that it was a zip.
    if d.kind == super::upload::ZIP_KIND {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_verified",
            "This file's type has not been confirmed; it can be downloaded once it is ingested.",
        ));
    }
    let key = super::ingest::open_file_key(&ctx.state, &d).map_err(ApiError::internal)?;
    // Streamed out a segment at a time, never whole; a blob that fails to open mid-way ends
    // the response early rather than sending altered bytes.
    let stream = ctx
        .state
        .blobs
        .reader(&d.blob_key, &key)
        .await
        .map_err(ApiError::internal)?;
    let mime = d
        .kind
        .parse::<cairn_ingest::Kind>()
        .map(|k| k.mime())
        .unwrap_or("application/octet-stream");
    let mut response = axum::body::Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&d.size_bytes.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    // Never rendered inline: an uploaded HTML file must not run in Cairn's origin.
    let disposition = format!(
        "attachment; filename=\"{}\"",
        d.filename.replace(['"', '\\'], "_")
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    } else {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    h.insert(
        header::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

async fn delete_document(ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let d = document_as(&ctx, &id, CollectionRole::Editor).await?;
    let state = &ctx.state;
    let row = state.store.delete_document(ctx.actor.user_id, d.id).await?;
    if let Some(job) = state.store.latest_job_for(&d.id.to_string()).await? {
        state.store.cancel_job(job.id).await?;
    }
    if state.config.ingest.deleted_retention.is_none() {
        super::worker::purge_one(state, &row).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn retry(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    let d = document_as(&ctx, &id, CollectionRole::Editor).await?;
    if !matches!(d.status.as_str(), "failed" | "cancelled") {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            "Only a failed or cancelled document can be retried.",
        )
        .with_details(json!({ "status": d.status })));
    }
    requeue(&ctx.state, d.id).await?;
    let d = ctx
        .state
        .store
        .document(d.id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(document_view(&ctx.state, d).await?),
    )
        .into_response())
}

async fn requeue(state: &AppState, id: Id) -> ApiResult<()> {
    if let Some(job) = state.store.latest_job_for(&id.to_string()).await? {
        // A job still queued or running is superseded by the new one.
        state.store.cancel_job(job.id).await?;
    }
    state
        .store
        .requeue_document(id, &super::ingest_job(&state.config, id))
        .await?;
    state.jobs_ready.notify_waiters();
    Ok(())
}

async fn cancel(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<DocumentView>> {
    let d = document_as(&ctx, &id, CollectionRole::Editor).await?;
    if !ctx.state.store.cancel_document(d.id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            "Only a document being ingested can be cancelled.",
        )
        .with_details(json!({ "status": d.status })));
    }
    if let Some(job) = ctx.state.store.latest_job_for(&d.id.to_string()).await? {
        ctx.state.store.cancel_job(job.id).await?;
    }
    let d = ctx
        .state
        .store
        .document(d.id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(document_view(&ctx.state, d).await?))
}

async fn restore(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let state = &ctx.state;
    match state
        .store
        .restore_document(id, &super::ingest_job(&state.config, id))
        .await
    {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "duplicate_document",
                "The collection has a document with this content again; delete it first.",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    state.jobs_ready.notify_waiters();
    ctx.record(
        "document.restored",
        Some(("document", id.to_string())),
        None,
    )
    .await;
    let d = state
        .store
        .document(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok((StatusCode::ACCEPTED, Json(document_view(state, d).await?)).into_response())
}

async fn list_deleted(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<DocumentRow>>> {
    let limit = page_limit(q.limit)?;
    let rows = state
        .store
        .deleted_documents(cursor(q.cursor.as_deref())?, limit + 1)
        .await?;
    Ok(Json(page(rows, limit, |d| d.id, |d| d)))
}

/// Queue every live document for ingestion again (after a parser or chunking change).
async fn reprocess_all(ctx: Ctx) -> ApiResult<Response> {
    let state = &ctx.state;
    let mut after = None;
    let mut queued = 0u64;
    loop {
        let ids = state.store.live_document_ids(after, 500).await?;
        let Some(last) = ids.last().copied() else {
            break;
        };
        for id in ids {
            requeue(state, id).await?;
            queued += 1;
        }
        after = Some(last);
    }
    ctx.record(
        "documents.reprocessed",
        None,
        Some(json!({ "documents": queued })),
    )
    .await;
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": queued }))).into_response())
}

#[derive(Serialize)]
struct JobCount {
    kind: String,
    status: String,
    count: i64,
}

async fn job_counts(State(state): State<AppState>) -> ApiResult<Json<Page<JobCount>>> {
    let items = state
        .store
        .job_counts()
        .await?
        .into_iter()
        .map(|(kind, status, count)| JobCount {
            kind,
            status,
            count,
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}
