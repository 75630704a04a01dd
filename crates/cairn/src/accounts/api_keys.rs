//! API keys over HTTP: a member creates scoped keys for their tools (the key is shown once),
//! lists and revokes them; [`authenticate`] turns a presented key into a [`Principal`]. A key
//! acts for its owner and never beyond the owner's role: suspending the owner stops their keys
//! at once, and an `admin`-scoped key of a member opens no admin route.

use axum::extract::{Extension, Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_store::api_keys::ApiKeyRow;
use cairn_store::{Id, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::context::Ctx;
use super::tokens::token_hash;
use crate::app::AppState;
use crate::auth::principal::{invalid, standing};
use crate::auth::{ApiRoutes, Principal, Rule, Scope, Via};
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;

/// Every key starts with this, so a key is recognised (and so are leaked keys, by scanners).
pub const KEY_PREFIX: &str = "cairn_";

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .route(Method::POST, "/api/me/api-keys", Rule::MEMBER, create)
        .route(Method::GET, "/api/me/api-keys", Rule::SIGNED_IN, list)
        .route(
            Method::DELETE,
            "/api/me/api-keys/{id}",
            Rule::SIGNED_IN,
            revoke,
        )
}

/// `cairn_<lookup prefix>_<secret>` → (prefix, secret).
fn split(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    (prefix.len() == 12 && !secret.is_empty()).then_some((prefix, secret))
}

/// The caller behind an API key.
pub async fn authenticate(state: &AppState, key: &str) -> Result<Principal, ApiError> {
    let (prefix, secret) = split(key).ok_or_else(|| invalid("The API key is malformed."))?;
    let Some(found) = state.store.api_key_with_owner(prefix).await? else {
        return Err(invalid("The API key is not valid."));
    };
    let (row, user) = &*found;
    let matches = bool::from(
        row.secret_hash
            .as_bytes()
            .ct_eq(token_hash(secret).as_bytes()),
    );
    let now = Timestamp::now();
    if !matches || row.revoked_at.is_some() || row.expires_at.is_some_and(|t| t <= now) {
        return Err(invalid("The API key is not valid, revoked or expired."));
    }
    let (role, account_state) = standing(user)?;
    // Recorded at most once a minute, and only written when due: no write per request.
    if row
        .last_used_at
        .is_none_or(|t| t.plus_millis(60_000) <= now)
    {
        state.store.touch_api_key(row.id, user.id, now).await?;
    }
    Ok(Principal {
        // A key of an account that must enrol is refused until it has.
        must_enrol_2fa: crate::auth::principal::must_enrol_2fa(state, role, user),
        user_id: user.id,
        session_id: None,
        scopes: row.scopes.split(' ').filter_map(Scope::parse).collect(),
        role,
        state: account_state,
        via: Via::ApiKey,
        user: user.clone(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    expires_in_days: Option<u32>,
}

#[derive(Serialize)]
struct KeyView {
    id: Id,
    name: String,
    prefix: String,
    scopes: Vec<String>,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
    last_used_at: Option<Timestamp>,
    revoked_at: Option<Timestamp>,
    /// The whole key, present only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl KeyView {
    fn of(row: ApiKeyRow, key: Option<String>) -> Self {
        Self {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            scopes: row.scopes.split(' ').map(str::to_owned).collect(),
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
            key,
        }
    }
}

fn random_hex(bytes: usize) -> ApiResult<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    Ok(hex::encode(b))
}

async fn create(ctx: Ctx, Json(req): Json<NewKey>) -> ApiResult<Response> {
    let (state, p) = (&ctx.state, &ctx.actor);
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 100 characters",
        ));
    }
    let mut scopes = Vec::new();
    for s in &req.scopes {
        let scope = Scope::parse(s).ok_or_else(|| {
            ApiError::invalid_field(
                "scopes",
                "must be among read, chat, ingest, traces:write, admin",
            )
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(ApiError::invalid_field(
            "scopes",
            "must name at least one scope",
        ));
    }
    if scopes.contains(&Scope::Admin) && !p.role.is_admin() {
        return Err(ApiError::invalid_field(
            "scopes",
            "admin needs an administrator's account",
        ));
    }
    let now = Timestamp::now();
    let expires_at = match req.expires_in_days {
        None => None,
        Some(d @ 1..=3650) => Some(now.plus_millis(i64::from(d) * 86_400_000)),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "expires_in_days",
                "must be 1 to 3650",
            ))
        }
    };
    let prefix = random_hex(6)?;
    let secret =
        super::tokens::random_token("").map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    let row = ApiKeyRow {
        id: Id::new(),
        user_id: p.user_id,
        name: name.to_owned(),
        prefix: prefix.clone(),
        secret_hash: token_hash(&secret),
        scopes: scopes
            .iter()
            .map(Scope::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        created_at: now,
        expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    state.store.create_api_key(&row).await?;
    ctx.record(
        "api_key.created",
        Some(("api_key", row.id.to_string())),
        Some(json!({ "name": row.name, "scopes": row.scopes })),
    )
    .await;
    let key = format!("{KEY_PREFIX}{prefix}_{secret}");
    Ok((StatusCode::CREATED, axum::Json(KeyView::of(row, Some(key)))).into_response())
}

#[derive(Serialize)]
struct KeyList {
    items: Vec<KeyView>,
    next_cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<KeyList>> {
    let items = state
        .store
        .api_keys_of(p.user_id)
        .await?
        .into_iter()
        .map(|r| KeyView::of(r, None))
        .collect();
    Ok(Json(KeyList {
        items,
        next_cursor: None,
    }))
}

async fn revoke(ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id: Id = id.parse().map_err(|_| ApiError::not_found())?;
    ctx.state
        .store
        .revoke_api_key(id, ctx.actor.user_id)
        .await?;
    ctx.record("api_key.revoked", Some(("api_key", id.to_string())), None)
        .await;
    Ok(StatusCode::NO_CONTENT)
}
