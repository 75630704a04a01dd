//! Invitations and password-reset links. An admin creates an invite (a role, an expiry, a number
//! of uses) and hands its link to people; signing up with it creates an active account at once,
//! whatever the registration policy. An admin creates a one-time reset link for someone who
//! cannot sign in — no mail server needed — and that person sets a new password with it, which
//! ends every session of the account.

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_store::invites::InviteRow;
use cairn_store::{Id, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::admin::may_manage;
use super::context::Ctx;
use super::routes::{audit, Caller};
use super::tokens::{random_token, token_hash};
use super::Role;
use crate::app::AppState;
use crate::auth::{ApiRoutes, Rule, Scope};
use crate::http::client_ip::ClientIp;
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;

pub const INVITE_PREFIX: &str = "cairn_inv_";
pub const RESET_PREFIX: &str = "cairn_pwr_";
const RESET_TTL_MS: i64 = 24 * 3_600_000;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .route(
            Method::POST,
            "/api/invites",
            Rule::ADMIN.key(Scope::Admin),
            create_invite,
        )
        .route(
            Method::GET,
            "/api/invites",
            Rule::ADMIN.key(Scope::Admin),
            list_invites,
        )
        .route(
            Method::DELETE,
            "/api/invites/{id}",
            Rule::ADMIN.key(Scope::Admin),
            revoke_invite,
        )
        .route(
            Method::POST,
            "/api/users/{id}/password-reset",
            Rule::ADMIN.key(Scope::Admin),
            create_reset,
        )
        .route(
            Method::POST,
            "/api/auth/password-reset",
            Rule::PUBLIC.auth_limited(),
            use_reset,
        )
}

fn link(state: &AppState, path: &str, token: &str) -> Option<String> {
    state
        .config
        .public_url
        .as_ref()
        .map(|u| format!("{}{path}{token}", u.as_str().trim_end_matches('/')))
}

fn token(prefix: &str) -> ApiResult<String> {
    random_token(prefix).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInvite {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    expires_in_hours: Option<u32>,
    #[serde(default)]
    max_uses: Option<u32>,
}

#[derive(Serialize)]
struct InviteView {
    #[serde(flatten)]
    invite: InviteRow,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

async fn create_invite(ctx: Ctx, Json(req): Json<NewInvite>) -> ApiResult<Response> {
    let (state, p) = (&ctx.state, &ctx.actor);
    let role = match req.role.as_deref().unwrap_or("member") {
        "member" => Role::Member,
        "admin" if p.role == Role::Owner => Role::Admin,
        "admin" => {
            return Err(ApiError::forbidden(
                "Only the owner can invite administrators.",
            ))
        }
        _ => return Err(ApiError::invalid_field("role", "must be member or admin")),
    };
    let hours = req.expires_in_hours.unwrap_or(168);
    if !(1..=720).contains(&hours) {
        return Err(ApiError::invalid_field(
            "expires_in_hours",
            "must be 1 to 720",
        ));
    }
    let max_uses = req.max_uses.unwrap_or(1);
    if !(1..=1000).contains(&max_uses) {
        return Err(ApiError::invalid_field("max_uses", "must be 1 to 1000"));
    }
    let secret = token(INVITE_PREFIX)?;
    let now = Timestamp::now();
    let invite = InviteRow {
        id: Id::new(),
        token_hash: token_hash(&secret),
        role: role.as_str().into(),
        created_by: Some(p.user_id),
        created_at: now,
        expires_at: now.plus_millis(i64::from(hours) * 3_600_000),
        max_uses: max_uses as i32,
        uses: 0,
        revoked_at: None,
    };
    state.store.create_invite(&invite).await?;
    ctx.record(
        "admin.invite.created",
        Some(("invite", invite.id.to_string())),
        Some(json!({ "role": invite.role, "max_uses": max_uses, "expires_at": invite.expires_at })),
    )
    .await;
    let url = link(state, "/invite/", &secret);
    Ok((
        StatusCode::CREATED,
        axum::Json(InviteView {
            invite,
            token: Some(secret),
            url,
        }),
    )
        .into_response())
}

#[derive(Serialize)]
struct InviteList {
    items: Vec<InviteView>,
    next_cursor: Option<String>,
}

async fn list_invites(State(state): State<AppState>) -> ApiResult<Json<InviteList>> {
    let items = state
        .store
        .list_invites()
        .await?
        .into_iter()
        .map(|invite| InviteView {
            invite,
            token: None,
            url: None,
        })
        .collect();
    Ok(Json(InviteList {
        items,
        next_cursor: None,
    }))
}

async fn revoke_invite(ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let state = &ctx.state;
    let id: Id = id.parse().map_err(|_| ApiError::not_found())?;
    state.store.revoke_invite(id).await?;
    ctx.record(
        "admin.invite.revoked",
        Some(("invite", id.to_string())),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct ResetLink {
    token: String,
    url: Option<String>,
    expires_at: Timestamp,
}

async fn create_reset(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    let (state, p) = (&ctx.state, &ctx.actor);
    let id: Id = id.parse().map_err(|_| ApiError::not_found())?;
    let target = state
        .store
        .user(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    may_manage(p, &target)?;
    let secret = token(RESET_PREFIX)?;
    let expires_at = Timestamp::now().plus_millis(RESET_TTL_MS);
    state
        .store
        .create_password_reset(&token_hash(&secret), id, Some(p.user_id), expires_at)
        .await?;
    ctx.record(
        "admin.user.password_reset_link",
        Some(("user", id.to_string())),
        None,
    )
    .await;
    let url = link(state, "/reset-password/", &secret);
    Ok((
        StatusCode::CREATED,
        axum::Json(ResetLink {
            token: secret,
            url,
            expires_at,
        }),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UseReset {
    token: String,
    new_password: String,
}

async fn use_reset(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    Json(req): Json<UseReset>,
) -> ApiResult<StatusCode> {
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_reset_token",
            "This reset link is not valid, was used, or has expired.",
        )
    };
    if req.new_password.len() > 1024 {
        return Err(ApiError::invalid_field("new_password", "is too long"));
    }
    // Check the new password before spending the token, so a weak choice does not burn the link.
    let hash_of = token_hash(req.token.trim());
    let user_id = state
        .store
        .password_reset_user(&hash_of, Timestamp::now())
        .await?
        .ok_or_else(invalid)?;
    let user = state.store.user(user_id).await?.ok_or_else(invalid)?;
    let problems = state.password_policy.check(&req.new_password, &user.email);
    if !problems.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
            "The password does not meet the password policy.",
        )
        .with_details(json!({ "field": "new_password", "problems": problems })));
    }
    // Spending is the conditional update: of two concurrent uses, one wins.
    if state
        .store
        .use_password_reset(&hash_of, Timestamp::now())
        .await?
        != Some(user_id)
    {
        return Err(invalid());
    }
    let hash = state
        .hasher
        .hash(req.new_password)
        .await
        .map_err(ApiError::internal)?;
    state.store.set_password(user_id, &hash).await?;
    let mut e = Caller::new(ip, &headers).audit("auth.password.reset", None);
    e.target_type = Some("user".into());
    e.target_id = Some(user_id.to_string());
    audit(&state, e).await;
    Ok(StatusCode::NO_CONTENT)
}
