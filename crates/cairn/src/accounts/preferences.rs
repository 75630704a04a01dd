//! Per-user preferences over HTTP: small JSON values under short keys (`theme`,
//! `chat.default_model`…), read and written by their owner only. System-wide settings are
//! separate (`system_settings`, changed by admins).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use serde::Deserialize;

use super::context::Ctx;
use crate::app::AppState;
use crate::auth::{ApiRoutes, Principal, Rule, Scope};
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;

/// Largest preference value, as JSON text.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Most preferences one user keeps.
pub const MAX_KEYS: usize = 100;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .route(
            Method::GET,
            "/api/me/preferences",
            Rule::SIGNED_IN.key(Scope::Read),
            list,
        )
        .route(
            Method::PUT,
            "/api/me/preferences/{key}",
            Rule::SIGNED_IN,
            put,
        )
        .route(
            Method::DELETE,
            "/api/me/preferences/{key}",
            Rule::SIGNED_IN,
            delete,
        )
}

fn check_key(key: &str) -> ApiResult<()> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "key",
            "must be 1 to 64 characters of a-z, 0-9, '.', '_' or '-'",
        ))
    }
}

async fn list(
    State(state): State<AppState>,
    axum::extract::Extension(p): axum::extract::Extension<Principal>,
) -> ApiResult<Json<BTreeMap<String, serde_json::Value>>> {
    Ok(Json(
        state
            .store
            .preferences(p.user_id)
            .await?
            .into_iter()
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutPreference {
    value: serde_json::Value,
}

async fn put(
    ctx: Ctx,
    Path(key): Path<String>,
    Json(req): Json<PutPreference>,
) -> ApiResult<StatusCode> {
    check_key(&key)?;
    if req.value.to_string().len() > MAX_VALUE_BYTES {
        return Err(ApiError::invalid_field(
            "value",
            "must be at most 16 KiB of JSON",
        ));
    }
    let user = ctx.actor.user_id;
    let existing = ctx.state.store.preferences(user).await?;
    if existing.len() >= MAX_KEYS && !existing.iter().any(|(k, _)| *k == key) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_preferences",
            "You have reached the limit of 100 preferences; delete some first.",
        ));
    }
    ctx.state
        .store
        .put_preference(user, &key, req.value)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete(ctx: Ctx, Path(key): Path<String>) -> ApiResult<StatusCode> {
    check_key(&key)?;
    if ctx
        .state
        .store
        .delete_preference(ctx.actor.user_id, &key)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}
