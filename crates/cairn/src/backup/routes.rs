//! The backup API: list and request (admins), download and delete (the owner), and the state
//! of any queued job.

use axum::extract::Path;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_store::jobs::{JobRow, NewJob};
use cairn_store::Id;
use serde::Serialize;
use serde_json::json;

use super::{BackupError, BackupInfo, Destination, BACKUP_JOB};
use crate::accounts::context::Ctx;
use crate::auth::{ApiRoutes, Rule, Scope};
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;

pub fn routes() -> ApiRoutes {
    let admin = Rule::ADMIN.key(Scope::Admin);
    let owner = Rule::OWNER.key(Scope::Admin);
    ApiRoutes::new()
        .route(Method::GET, "/api/admin/backups", admin, list)
        .route(Method::POST, "/api/admin/backups", admin, request)
        .route(
            Method::GET,
            "/api/admin/backups/{name}",
            owner.streamed(),
            download,
        )
        .route(Method::DELETE, "/api/admin/backups/{name}", owner, remove)
        .route(Method::GET, "/api/admin/jobs/{id}", admin, job)
}

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::NotFound(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "There is no backup with this name.",
            ),
            BackupError::Corrupt(_)
            | BackupError::WrongKey
            | BackupError::NewerSchema { .. }
            | BackupError::WrongBackend { .. }
            | BackupError::Refused(_) => {
                ApiError::new(StatusCode::CONFLICT, e.code(), e.to_string())
            }
            other => ApiError::internal(anyhow::anyhow!(other.to_string())),
        }
    }
}

#[derive(Serialize)]
struct Listing {
    items: Vec<BackupInfo>,
    destination: String,
    /// The cron expression of scheduled backups, if any.
    schedule: Option<String>,
    /// When the next scheduled backup runs.
    next_run: Option<String>,
}

async fn list(ctx: Ctx) -> ApiResult<Json<Listing>> {
    let config = &ctx.state.config;
    let dest = Destination::from_config(config)?;
    let items = dest.list().await?;
    let schedule = config.backup.schedule.as_ref();
    Ok(Json(Listing {
        items,
        destination: dest.describe.clone(),
        schedule: schedule.map(|c| c.pattern.to_string()),
        next_run: schedule
            .and_then(|c| c.find_next_occurrence(&chrono::Utc::now(), false).ok())
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    }))
}

/// A job as the API shows it.
#[derive(Serialize)]
pub struct JobView {
    id: Id,
    kind: String,
    status: String,
    attempts: i32,
    max_attempts: i32,
    progress: serde_json::Value,
    error: Option<String>,
    payload: serde_json::Value,
    created_at: String,
    finished_at: Option<String>,
}

impl From<JobRow> for JobView {
    fn from(j: JobRow) -> Self {
        Self {
            id: j.id,
            kind: j.kind,
            status: j.status,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            progress: json!({ "done": j.progress_done, "total": j.progress_total }),
            error: j.last_error,
            payload: j.payload.0,
            created_at: j.created_at.to_string(),
            finished_at: j.finished_at.map(|t| t.to_string()),
        }
    }
}

/// The job that makes a backup.
pub fn backup_job(trigger: &str) -> NewJob {
    NewJob {
        kind: BACKUP_JOB.into(),
        subject: None,
        payload: json!({ "trigger": trigger }),
        max_attempts: 2,
        timeout_secs: 600,
    }
}

async fn request(ctx: Ctx) -> ApiResult<Response> {
    let state = &ctx.state;
    // One at a time: a backup already waiting or running is the answer.
    if let Some(j) = state.store.active_job_of_kind(BACKUP_JOB).await? {
        return Ok((StatusCode::ACCEPTED, Json(JobView::from(j))).into_response());
    }
    let id = state.store.enqueue_job(&backup_job("api")).await?;
    state.jobs_ready.notify_waiters();
    ctx.record("backup.requested", Some(("job", id.to_string())), None)
        .await;
    let job = state.store.job(id).await?.ok_or_else(ApiError::not_found)?;
    let mut response = (StatusCode::ACCEPTED, Json(JobView::from(job))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/admin/jobs/{id}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn job(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<JobView>> {
    let id: Id = id.parse().map_err(|_| ApiError::not_found())?;
    let job = ctx
        .state
        .store
        .job(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(job.into()))
}

async fn download(ctx: Ctx, Path(name): Path<String>) -> ApiResult<Response> {
    let dest = Destination::from_config(&ctx.state.config)?;
    let (size, stream) = dest.get(&name).await?;
    ctx.record("backup.downloaded", Some(("backup", name.clone())), None)
        .await;
    let mut response = axum::body::Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&size.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    // `valid_name` allowed only [A-Za-z0-9._-].
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

async fn remove(ctx: Ctx, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let dest = Destination::from_config(&ctx.state.config)?;
    dest.delete(&name).await?;
    ctx.record("backup.deleted", Some(("backup", name)), None)
        .await;
    Ok(StatusCode::NO_CONTENT)
}
