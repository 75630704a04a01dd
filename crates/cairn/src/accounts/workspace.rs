//! Workspace settings over HTTP: what everyone signed in may read (the workspace's name) and
//! admins change at run time. Stored as one versioned system setting (`workspace`), so two
//! admins editing at once cannot overwrite each other unseen: send the `version` you read and a
//! stale one is refused with 409 `version_conflict`. Every change is audited with its before and
//! after values.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use cairn_store::settings::{Expect, SystemSetting};
use cairn_store::{Id, StoreError, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::context::Ctx;
use crate::app::AppState;
use crate::auth::{ApiRoutes, Rule, Scope};
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;

/// The system-settings key holding the workspace settings.
pub const KEY: &str = "workspace";
/// Longest workspace name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .route(
            Method::GET,
            "/api/workspace",
            Rule::SIGNED_IN.key(Scope::Read),
            show,
        )
        .route(
            Method::PATCH,
            "/api/workspace",
            Rule::ADMIN.key(Scope::Admin),
            update,
        )
}

/// The stored settings; fields absent from storage take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub name: Option<String>,
}

#[derive(Serialize)]
struct View {
    #[serde(flatten)]
    settings: Settings,
    /// Send it back with a change to refuse overwriting someone else's edit.
    version: i64,
    updated_at: Option<Timestamp>,
    updated_by: Option<Id>,
}

fn view(row: Option<SystemSetting>) -> View {
    match row {
        Some(row) => View {
            settings: serde_json::from_value(row.value.0).unwrap_or_default(),
            version: row.version,
            updated_at: Some(row.updated_at),
            updated_by: row.updated_by,
        },
        None => View {
            settings: Settings::default(),
            version: 0,
            updated_at: None,
            updated_by: None,
        },
    }
}

/// The workspace name, checked: trimmed, 1 to [`MAX_NAME_CHARS`] characters, no control
/// characters.
pub fn check_name(field: &'static str, raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_field(
            field,
            "must be 1 to 100 characters, without control characters",
        ));
    }
    Ok(name.to_owned())
}

async fn show(State(state): State<AppState>) -> ApiResult<Json<View>> {
    Ok(Json(view(state.store.setting(KEY).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    /// The version read; omitted: overwrite whatever is there.
    version: Option<i64>,
    /// `null` clears the name.
    #[serde(default, deserialize_with = "present")]
    name: Option<Option<String>>,
}

async fn update(ctx: Ctx, Json(req): Json<Update>) -> ApiResult<Json<View>> {
    let current = ctx.state.store.setting(KEY).await?;
    let before: Settings = current
        .as_ref()
        .and_then(|r| serde_json::from_value(r.value.0.clone()).ok())
        .unwrap_or_default();
    let mut after = before.clone();
    if let Some(name) = req.name {
        after.name = name.map(|n| check_name("name", &n)).transpose()?;
    }
    let expect = match (req.version, &current) {
        (None, _) => Expect::Any,
        (Some(0), None) => Expect::Absent,
        (Some(v), Some(_)) => Expect::Version(v),
        (Some(_), None) => return Err(conflict()),
    };
    if after == before && current.is_some() {
        return Ok(Json(view(current)));
    }
    let value = serde_json::to_value(&after).map_err(ApiError::internal)?;
    let row = match ctx
        .state
        .store
        .put_setting(KEY, value, expect, Some(ctx.actor.user_id))
        .await
    {
        Ok(row) => row,
        Err(StoreError::Conflict { .. }) => return Err(conflict()),
        Err(e) => return Err(e.into()),
    };
    ctx.record(
        "settings.changed",
        Some(("setting", KEY.to_owned())),
        Some(json!({ "before": before, "after": after, "version": row.version })),
    )
    .await;
    Ok(Json(view(Some(row))))
}

/// A field that is present (possibly `null`), as opposed to absent (`None` via the default).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn conflict() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "version_conflict",
        "The workspace settings changed since you read them; reload and try again.",
    )
}
