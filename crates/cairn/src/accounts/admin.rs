//! The admin API for people: list and search accounts, approve or deny sign-ups, suspend and
//! reactivate, change roles (owner only), end someone's sessions, and read the audit log.
//! Beyond the route rule, who may act on whom: admins manage members; only the owner manages
//! admins; nobody suspends, denies or re-roles themselves or the owner.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use cairn_store::accounts::UserRow;
use cairn_store::audit::{AuditEntry, AuditFilter};
use cairn_store::{Id, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::context::Ctx;
use super::routes::UserView;
use super::{Role, State as AccountState};
use crate::app::AppState;
use crate::auth::{ApiRoutes, Principal, Rule, Scope};
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;
use crate::http::query::{page_limit, Query};

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .route(
            Method::GET,
            "/api/users",
            Rule::ADMIN.key(Scope::Admin),
            list_users,
        )
        .route(
            Method::GET,
            "/api/users/{id}",
            Rule::ADMIN.key(Scope::Admin),
            get_user,
        )
        .route(
            Method::POST,
            "/api/users/{id}/approve",
            Rule::ADMIN.key(Scope::Admin),
            approve,
        )
        .route(
            Method::POST,
            "/api/users/{id}/deny",
            Rule::ADMIN.key(Scope::Admin),
            deny,
        )
        .route(
            Method::POST,
            "/api/users/{id}/suspend",
            Rule::ADMIN.key(Scope::Admin),
            suspend,
        )
        .route(
            Method::POST,
            "/api/users/{id}/reactivate",
            Rule::ADMIN.key(Scope::Admin),
            reactivate,
        )
        .route(
            Method::POST,
            "/api/users/{id}/revoke-sessions",
            Rule::ADMIN.key(Scope::Admin),
            revoke_sessions,
        )
        .route(
            Method::PUT,
            "/api/users/{id}/role",
            Rule::OWNER.key(Scope::Admin),
            set_role,
        )
        .route(
            Method::GET,
            "/api/audit",
            Rule::ADMIN.key(Scope::Admin),
            list_audit,
        )
}

#[derive(Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserQuery {
    q: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn bad_query(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
}

async fn list_users(
    State(state): State<AppState>,
    Query(q): Query<UserQuery>,
) -> ApiResult<Json<Page<UserView>>> {
    let limit = page_limit(q.limit)?;
    if let Some(s) = &q.state {
        s.parse::<AccountState>()
            .map_err(|_| bad_query("`state` must be pending, active, suspended or denied."))?;
    }
    let after = q
        .cursor
        .as_deref()
        .map(str::parse::<Id>)
        .transpose()
        .map_err(|_| bad_query("`cursor` is not one this API returned."))?;
    let query = q.q.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if query.is_some_and(|s| s.chars().count() > 254) {
        return Err(bad_query("`q` is longer than 254 characters."));
    }
    let rows = state
        .store
        .list_users(query, q.state.as_deref(), after, limit + 1)
        .await?;
    Ok(Json(page(rows, limit, |u| u.id, |u| UserView::from(&u))))
}

/// A page of `limit` items, with a cursor when a further item was fetched.
pub fn page<R, T>(
    mut rows: Vec<R>,
    limit: u32,
    id: impl Fn(&R) -> Id,
    view: impl Fn(R) -> T,
) -> Page<T> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| id(r).to_string()))
        .flatten();
    Page {
        items: rows.into_iter().map(view).collect(),
        next_cursor,
    }
}

async fn target(state: &AppState, id: &str) -> ApiResult<UserRow> {
    let id: Id = id.parse().map_err(|_| ApiError::not_found())?;
    state.store.user(id).await?.ok_or_else(ApiError::not_found)
}

/// May `actor` change `target`'s standing?
pub(crate) fn may_manage(actor: &Principal, target: &UserRow) -> ApiResult<()> {
    if actor.user_id == target.id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cannot_change_self",
            "You cannot do this to your own account.",
        ));
    }
    let target_role: Role = target.role.parse().unwrap_or(Role::Owner);
    match (actor.role, target_role) {
        (_, Role::Owner) => Err(ApiError::forbidden(
            "The owner's account cannot be changed by others.",
        )),
        (Role::Owner, _) | (Role::Admin, Role::Member) => Ok(()),
        _ => Err(ApiError::forbidden(
            "Only the owner can change administrators.",
        )),
    }
}

fn invalid_state(target: &UserRow, wanted: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "invalid_state",
        format!(
            "The account is {}; it must be {wanted} for this.",
            target.state
        ),
    )
    .with_details(json!({ "state": target.state }))
}

/// A move from one account state to another.
struct Action {
    name: &'static str,
    from: &'static [AccountState],
    from_words: &'static str,
    to: AccountState,
    end_sessions: bool,
}

const APPROVE: Action = Action {
    name: "admin.user.approved",
    from: &[AccountState::Pending],
    from_words: "pending",
    to: AccountState::Active,
    end_sessions: false,
};
const DENY: Action = Action {
    name: "admin.user.denied",
    from: &[AccountState::Pending],
    from_words: "pending",
    to: AccountState::Denied,
    end_sessions: true,
};
const SUSPEND: Action = Action {
    name: "admin.user.suspended",
    from: &[AccountState::Active, AccountState::Pending],
    from_words: "active or pending",
    to: AccountState::Suspended,
    end_sessions: true,
};
const REACTIVATE: Action = Action {
    name: "admin.user.reactivated",
    from: &[AccountState::Suspended, AccountState::Denied],
    from_words: "suspended or denied",
    to: AccountState::Active,
    end_sessions: false,
};

fn user_target(u: &UserRow) -> Option<(&'static str, String)> {
    Some(("user", u.id.to_string()))
}

async fn transition(ctx: &Ctx, id: &str, action: Action) -> ApiResult<Json<UserView>> {
    let t = target(&ctx.state, id).await?;
    may_manage(&ctx.actor, &t)?;
    let current: AccountState = t.state.parse().unwrap_or(AccountState::Suspended);
    if !action.from.contains(&current) {
        return Err(invalid_state(&t, action.from_words));
    }
    let updated = ctx
        .state
        .store
        .set_user_state(t.id, action.to.as_str())
        .await?;
    if action.end_sessions {
        ctx.state
            .store
            .revoke_all_for_user(t.id, action.name)
            .await?;
    }
    ctx.record(
        action.name,
        user_target(&t),
        Some(json!({ "from": t.state, "to": updated.state })),
    )
    .await;
    Ok(Json(UserView::from(&updated)))
}

async fn get_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(UserView::from(&target(&state, &id).await?)))
}

async fn approve(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<UserView>> {
    transition(&ctx, &id, APPROVE).await
}

async fn deny(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<UserView>> {
    transition(&ctx, &id, DENY).await
}

async fn suspend(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<UserView>> {
    transition(&ctx, &id, SUSPEND).await
}

async fn reactivate(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<UserView>> {
    transition(&ctx, &id, REACTIVATE).await
}

async fn revoke_sessions(ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let t = target(&ctx.state, &id).await?;
    may_manage(&ctx.actor, &t)?;
    ctx.state
        .store
        .revoke_all_for_user(t.id, "revoked_by_admin")
        .await?;
    ctx.record("admin.user.sessions_revoked", user_target(&t), None)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleChange {
    role: String,
}

async fn set_role(
    ctx: Ctx,
    Path(id): Path<String>,
    Json(req): Json<RoleChange>,
) -> ApiResult<Json<UserView>> {
    let role = match req.role.parse::<Role>() {
        Ok(r @ (Role::Member | Role::Admin)) => r,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_fields",
                "Some fields are not valid.",
            )
            .with_details(json!({ "fields": { "role": "must be member or admin" } })))
        }
    };
    let t = target(&ctx.state, &id).await?;
    may_manage(&ctx.actor, &t)?;
    let updated = ctx.state.store.set_user_role(t.id, role.as_str()).await?;
    ctx.record(
        "admin.user.role_changed",
        user_target(&t),
        Some(json!({ "from": t.role, "to": updated.role })),
    )
    .await;
    Ok(Json(UserView::from(&updated)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let limit = page_limit(q.limit)?;
    let parse_id = |s: Option<&str>, what: &'static str| -> ApiResult<Option<Id>> {
        s.map(str::parse::<Id>)
            .transpose()
            .map_err(|_| bad_query(what))
    };
    let filter = AuditFilter {
        actor_id: parse_id(q.actor.as_deref(), "`actor` must be a user id.")?,
        action_prefix: q.action.filter(|a| !a.is_empty()),
        target_id: q.target,
        since: q.since,
        until: q.until,
    };
    let before = parse_id(
        q.cursor.as_deref(),
        "`cursor` is not one this API returned.",
    )?;
    let rows = state.store.list_audit(&filter, before, limit + 1).await?;
    Ok(Json(page(rows, limit, |e| e.id, |e| e)))
}
