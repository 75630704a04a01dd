//! HTTP routes for accounts: first-run setup, sign-in, token refresh, sign-out, the caller's
//! profile, password and sessions. Every route is registered with its authorization rule.
//!
//! Sessions come two ways: `"session": "token"` (the default, for API clients) returns the access
//! and refresh tokens in the body; `"session": "cookie"` (for browsers) sets them as HttpOnly
//! cookies and returns only the CSRF token, which state-changing requests must echo in
//! `X-CSRF-Token`.

use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_store::accounts::{NewUser, Refresh, SessionRow, UserRow};
use cairn_store::audit::AuditEntry;
use cairn_store::settings::Expect;
use cairn_store::{Id, StoreError, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::context::Ctx;
use super::tokens::{random_token, token_hash, REFRESH_PREFIX};
use super::{email, setup, Role, State as AccountState};
use crate::app::AppState;
use crate::auth::{ApiRoutes, Principal, Rule, Scope, Via};
use crate::config::Config;
use crate::http::client_ip::ClientIp;
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .route(Method::GET, "/api/setup", Rule::PUBLIC, setup_status)
        .route(
            Method::POST,
            "/api/setup",
            Rule::PUBLIC.auth_limited(),
            setup_workspace,
        )
        .route(
            Method::POST,
            "/api/auth/sign-up",
            Rule::PUBLIC.auth_limited(),
            sign_up,
        )
        .route(
            Method::POST,
            "/api/auth/sign-in",
            Rule::PUBLIC.auth_limited(),
            sign_in,
        )
        .route(
            Method::POST,
            "/api/auth/refresh",
            Rule::PUBLIC.auth_limited(),
            refresh,
        )
        .route(
            Method::POST,
            "/api/auth/sign-out",
            Rule::SIGNED_IN,
            sign_out,
        )
        .route(
            Method::POST,
            "/api/auth/sign-out-everywhere",
            Rule::SIGNED_IN,
            sign_out_everywhere,
        )
        .route(Method::GET, "/api/me", Rule::SIGNED_IN.key(Scope::Read), me)
        .route(Method::PATCH, "/api/me", Rule::MEMBER, update_me)
        .route(
            Method::GET,
            "/api/users/lookup",
            Rule::MEMBER.key(Scope::Read),
            lookup_user,
        )
        .route(
            Method::PUT,
            "/api/me/password",
            Rule::MEMBER,
            change_password,
        )
        .route(
            Method::GET,
            "/api/me/sessions",
            Rule::SIGNED_IN,
            my_sessions,
        )
        .route(
            Method::DELETE,
            "/api/me/sessions/{id}",
            Rule::SIGNED_IN,
            revoke_my_session,
        )
}

/// Longest password accepted at all (hashing cost is bounded by it).
const MAX_PASSWORD_BYTES: usize = 1024;
const MAX_NAME_CHARS: usize = 100;

pub fn access_cookie_name(config: &Config) -> &'static str {
    if config.served_over_https() {
        "__Host-cairn_access"
    } else {
        "cairn_access"
    }
}

fn refresh_cookie_name(config: &Config) -> &'static str {
    if config.served_over_https() {
        "__Host-cairn_refresh"
    } else {
        "cairn_refresh"
    }
}

const CSRF_COOKIE: &str = "cairn_csrf";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionMode {
    #[default]
    Token,
    Cookie,
}

/// An account as its owner and admins see it.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: Id,
    pub email: String,
    pub display_name: String,
    pub role: String,
    pub state: String,
    pub totp_enabled: bool,
    pub created_at: Timestamp,
    pub last_sign_in_at: Option<Timestamp>,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            role: u.role.clone(),
            state: u.state.clone(),
            totp_enabled: u.totp_enabled,
            created_at: u.created_at,
            last_sign_in_at: u.last_sign_in_at,
        }
    }
}

#[derive(Debug, Serialize)]
struct SessionResponse {
    user: UserView,
    session_id: Id,
    token_type: &'static str,
    expires_in_secs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    csrf_token: String,
}

/// Who asked, for sessions and the audit log.
pub(crate) struct Caller {
    ip: String,
    user_agent: Option<String>,
}

impl Caller {
    pub(crate) fn new(ip: ClientIp, headers: &HeaderMap) -> Self {
        Self {
            ip: ip.0.to_string(),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(256).collect()),
        }
    }

    pub(crate) fn audit(&self, action: &str, actor: Option<Id>) -> AuditEntry {
        let mut e = AuditEntry::new(action);
        e.actor_id = actor;
        e.ip = Some(self.ip.clone());
        e.user_agent = self.user_agent.clone();
        e
    }
}

pub(crate) async fn audit(state: &AppState, entry: AuditEntry) {
    if let Err(e) = state.store.append_audit(&entry).await {
        tracing::error!(error = %e, action = %entry.action, "could not write the audit log");
    }
}

fn cookie(
    config: &Config,
    name: &str,
    value: &str,
    max_age_secs: i64,
    http_only: bool,
    same_site: &str,
) -> HeaderValue {
    let secure = if config.served_over_https() {
        "; Secure"
    } else {
        ""
    };
    let http_only = if http_only { "; HttpOnly" } else { "" };
    let text = format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; SameSite={same_site}{http_only}{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Start a session for `user` and answer with its tokens, as the caller asked.
async fn start_session(
    state: &AppState,
    user: &UserRow,
    caller: &Caller,
    mode: SessionMode,
    status: StatusCode,
) -> ApiResult<Response> {
    let now = Timestamp::now();
    let auth = &state.config.auth;
    let session = SessionRow {
        id: Id::new(),
        user_id: user.id,
        created_at: now,
        last_used_at: now,
        expires_at: now.plus_millis(auth.session_ttl.as_millis() as i64),
        revoked_at: None,
        revoked_reason: None,
        user_agent: caller.user_agent.clone(),
        ip: Some(caller.ip.clone()),
    };
    let refresh =
        random_token(REFRESH_PREFIX).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    state
        .store
        .create_session(&session, &token_hash(&refresh))
        .await?;
    session_response(state, user, session.id, refresh, mode, status)
}

fn session_response(
    state: &AppState,
    user: &UserRow,
    session_id: Id,
    refresh: String,
    mode: SessionMode,
    status: StatusCode,
) -> ApiResult<Response> {
    let auth = &state.config.auth;
    let access = state
        .tokens
        .issue(
            user.id,
            session_id,
            Timestamp::now(),
            auth.access_token_ttl.as_secs() as i64,
        )
        .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
    let csrf = state.tokens.csrf_token(session_id);
    let body = SessionResponse {
        user: UserView::from(user),
        session_id,
        token_type: "Bearer",
        expires_in_secs: auth.access_token_ttl.as_secs(),
        access_token: (mode == SessionMode::Token).then(|| access.clone()),
        refresh_token: (mode == SessionMode::Token).then(|| refresh.clone()),
        csrf_token: csrf.clone(),
    };
    let mut response = (status, axum::Json(body)).into_response();
    if mode == SessionMode::Cookie {
        let c = &state.config;
        let h = response.headers_mut();
        h.append(
            header::SET_COOKIE,
            cookie(
                c,
                access_cookie_name(c),
                &access,
                auth.access_token_ttl.as_secs() as i64,
                true,
                "Lax",
            ),
        );
        h.append(
            header::SET_COOKIE,
            cookie(
                c,
                refresh_cookie_name(c),
                &refresh,
                auth.session_ttl.as_secs() as i64,
                true,
                "Strict",
            ),
        );
        h.append(
            header::SET_COOKIE,
            cookie(
                c,
                CSRF_COOKIE,
                &csrf,
                auth.session_ttl.as_secs() as i64,
                false,
                "Strict",
            ),
        );
    }
    Ok(response)
}

fn clear_cookies(state: &AppState, mut response: Response) -> Response {
    let c = &state.config;
    for (name, http_only) in [
        (access_cookie_name(c), true),
        (refresh_cookie_name(c), true),
        (CSRF_COOKIE, false),
    ] {
        response.headers_mut().append(
            header::SET_COOKIE,
            cookie(c, name, "", 0, http_only, "Strict"),
        );
    }
    response
}

fn check_password_size(field: &str, password: &str) -> ApiResult<()> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::invalid_field(field, "is too long"));
    }
    Ok(())
}

fn check_new_password(state: &AppState, field: &str, password: &str, email: &str) -> ApiResult<()> {
    check_password_size(field, password)?;
    let problems = state.password_policy.check(password, email);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
            "The password does not meet the password policy.",
        )
        .with_details(json!({ "field": field, "problems": problems })))
    }
}

fn display_name(raw: &str, email: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "display_name",
            "must be at most 100 characters, without control characters",
        ));
    }
    Ok(if name.is_empty() {
        email.split('@').next().unwrap_or(email).to_owned()
    } else {
        name.to_owned()
    })
}

#[derive(Serialize)]
struct SetupStatus {
    needed: bool,
}

async fn setup_status(State(state): State<AppState>) -> ApiResult<Json<SetupStatus>> {
    Ok(Json(SetupStatus {
        needed: !state.store.has_owner().await?,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupRequest {
    setup_token: String,
    email: String,
    password: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    workspace_name: Option<String>,
    #[serde(default)]
    session: SessionMode,
}

fn already_set_up() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "already_set_up",
        "This workspace already has an owner; sign in instead.",
    )
}

async fn setup_workspace(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    Json(req): Json<SetupRequest>,
) -> ApiResult<Response> {
    let caller = Caller::new(ip, &headers);
    if state.store.has_owner().await? {
        return Err(already_set_up());
    }
    if !setup::token_ok(&state.store, &req.setup_token).await? {
        let mut e = caller.audit("setup.refused", None);
        e.details = Some(cairn_store::Json(
            json!({ "reason": "invalid_setup_token" }),
        ));
        audit(&state, e).await;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_setup_token",
            "The setup token is wrong. It is in the server's log and in the data directory's setup-token file.",
        ));
    }
    let email =
        email::normalize(&req.email).map_err(|e| ApiError::invalid_field("email", e.message()))?;
    let name = display_name(&req.display_name, &email)?;
    let workspace = req
        .workspace_name
        .as_deref()
        .map(|w| super::workspace::check_name("workspace_name", w))
        .transpose()?;
    check_new_password(&state, "password", &req.password, &email)?;
    let hash = state
        .hasher
        .hash(req.password)
        .await
        .map_err(ApiError::internal)?;
    let user = match state
        .store
        .create_user(&NewUser {
            email,
            display_name: name,
            password_hash: hash,
            role: Role::Owner.as_str().into(),
            state: AccountState::Active.as_str().into(),
        })
        .await
    {
        Ok(u) => u,
        // Another request won the race: exactly one owner exists.
        Err(StoreError::Conflict { .. }) => return Err(already_set_up()),
        Err(e) => return Err(e.into()),
    };
    if let Some(w) = workspace {
        state
            .store
            .put_setting(
                super::workspace::KEY,
                json!(super::workspace::Settings {
                    name: Some(w),
                    ..Default::default()
                }),
                Expect::Any,
                Some(user.id),
            )
            .await?;
    }
    setup::consume(&state.store, &state.config).await;
    let mut e = caller.audit("setup.completed", Some(user.id));
    e.target_type = Some("user".into());
    e.target_id = Some(user.id.to_string());
    audit(&state, e).await;
    tracing::info!(user_id = %user.id, "first run complete: the owner account exists");
    start_session(&state, &user, &caller, req.session, StatusCode::CREATED).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignUpRequest {
    email: String,
    password: String,
    #[serde(default)]
    display_name: String,
    /// An admin's invitation: the account is active at once, with the invitation's role.
    #[serde(default)]
    invite_token: Option<String>,
    #[serde(default)]
    session: SessionMode,
}

/// Create an account under the registration policy: pending approval by default (the new user
/// can sign in only to see that status), active at once when registration is open or the
/// request carries a live invitation.
async fn sign_up(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    Json(req): Json<SignUpRequest>,
) -> ApiResult<Response> {
    use crate::config::Registration;
    let caller = Caller::new(ip, &headers);
    let policy = state.config.auth.registration;
    if policy == Registration::Closed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "registration_closed",
            "Sign-up is closed here; ask an administrator for an account.",
        ));
    }
    if policy == Registration::Invite && req.invite_token.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invite_required",
            "Sign-up here needs an invitation from an administrator.",
        ));
    }
    let email =
        email::normalize(&req.email).map_err(|e| ApiError::invalid_field("email", e.message()))?;
    let name = display_name(&req.display_name, &email)?;
    check_new_password(&state, "password", &req.password, &email)?;
    // The invitation is counted before the account exists, and given back if creating it fails.
    let invite = match &req.invite_token {
        Some(t) => Some(
            state
                .store
                .use_invite(&token_hash(t.trim()), Timestamp::now())
                .await?
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "invalid_invite",
                        "This invitation is not valid, was used up, or has expired.",
                    )
                })?,
        ),
        None => None,
    };
    let (role, account_state) = match &invite {
        Some(i) => (i.role.clone(), AccountState::Active),
        None if policy == Registration::Open => {
            (Role::Member.as_str().to_owned(), AccountState::Active)
        }
        None => (Role::Member.as_str().to_owned(), AccountState::Pending),
    };
    let hash = state
        .hasher
        .hash(req.password)
        .await
        .map_err(ApiError::internal)?;
    let created = state
        .store
        .create_user(&NewUser {
            email,
            display_name: name,
            password_hash: hash,
            role,
            state: account_state.as_str().into(),
        })
        .await;
    if let (Err(_), Some(i)) = (&created, &invite) {
        state.store.release_invite(i.id).await?;
    }
    let user = match created {
        Ok(u) => u,
        Err(StoreError::Conflict { .. }) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "email_taken",
                "An account with this email already exists; sign in instead.",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let mut e = caller.audit("auth.sign_up", Some(user.id));
    e.details = Some(cairn_store::Json(
        json!({ "state": user.state, "invite": invite.map(|i| i.id) }),
    ));
    audit(&state, e).await;
    start_session(&state, &user, &caller, req.session, StatusCode::CREATED).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInRequest {
    email: String,
    password: String,
    /// The current code from the authenticator app, when two-factor sign-in is on.
    #[serde(default)]
    totp_code: Option<String>,
    /// Or one of the backup codes.
    #[serde(default)]
    backup_code: Option<String>,
    #[serde(default)]
    session: SessionMode,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "The email or password is wrong.",
    )
}

/// How long sign-in stays locked after the `failures`-th failure.
fn lock_secs(failures: u32, free: u32) -> Option<u64> {
    let over = failures.checked_sub(free)?;
    Some((30u64 << over.min(10)).min(900))
}

async fn sign_in(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    Json(req): Json<SignInRequest>,
) -> ApiResult<Response> {
    let caller = Caller::new(ip, &headers);
    check_password_size("password", &req.password)?;
    let email = email::normalize(&req.email).ok();
    // Per account, from every address together: guessing one account's password from many
    // addresses is slowed down as much as from one.
    let account_key = format!("account:{}", email.as_deref().unwrap_or(req.email.as_str()));
    if let Some(d) = state
        .limiter
        .check(&account_key, state.limiter.account_per_minute())
        .await
    {
        if !d.allowed {
            return Err(crate::auth::limits::refused(&d));
        }
    }
    let user = match &email {
        Some(e) => state.store.user_by_email(e).await?,
        None => None,
    };
    let now = Timestamp::now();
    if let Some(until) = user
        .as_ref()
        .and_then(|u| u.locked_until)
        .filter(|t| *t > now)
    {
        let secs = ((until.as_millis() - now.as_millis()) / 1000 + 1).max(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "sign_in_locked",
            "Too many failed sign-ins for this account; try again later.",
        )
        .with_details(json!({ "retry_after_secs": secs }))
        .with_header(header::RETRY_AFTER, HeaderValue::from(secs as u64)));
    }
    let ok = state
        .hasher
        .verify(req.password, user.as_ref().map(|u| u.password_hash.clone()))
        .await
        .map_err(ApiError::internal)?;
    let user = match user {
        Some(u) if ok => u,
        known => {
            let mut e = caller.audit("auth.sign_in.failed", None);
            e.details = Some(cairn_store::Json(
                json!({ "email": req.email.chars().take(254).collect::<String>() }),
            ));
            if let Some(u) = known {
                let failures = u32::try_from(u.failed_sign_ins).unwrap_or(0) + 1;
                let lock = lock_secs(failures, state.config.auth.sign_in_free_failures)
                    .map(|s| now.plus_millis(s as i64 * 1000));
                state.store.record_failed_sign_in(u.id, lock).await?;
                e.target_type = Some("user".into());
                e.target_id = Some(u.id.to_string());
            }
            audit(&state, e).await;
            return Err(invalid_credentials());
        }
    };
    let account_state: AccountState = user.state.parse().unwrap_or(AccountState::Suspended);
    if matches!(
        account_state,
        AccountState::Suspended | AccountState::Denied
    ) {
        let mut e = caller.audit("auth.sign_in.refused", Some(user.id));
        e.details = Some(cairn_store::Json(json!({ "state": user.state })));
        audit(&state, e).await;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_suspended",
            "This account is suspended or was not approved.",
        ));
    }
    if user.totp_enabled {
        if req.totp_code.is_none() && req.backup_code.is_none() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "totp_required",
                "Enter the code from your authenticator app, or a backup code.",
            ));
        }
        let ok = super::totp::check_second_factor(
            &state,
            &user,
            req.totp_code.as_deref(),
            req.backup_code.as_deref(),
        )
        .await?;
        if !ok {
            let failures = u32::try_from(user.failed_sign_ins).unwrap_or(0) + 1;
            let lock = lock_secs(failures, state.config.auth.sign_in_free_failures)
                .map(|s| now.plus_millis(s as i64 * 1000));
            state.store.record_failed_sign_in(user.id, lock).await?;
            audit(
                &state,
                caller.audit("auth.sign_in.totp_failed", Some(user.id)),
            )
            .await;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_totp_code",
                "That code is wrong or was already used.",
            ));
        }
    }
    state.store.record_sign_in(user.id).await?;
    audit(&state, caller.audit("auth.sign_in", Some(user.id))).await;
    start_session(&state, &user, &caller, req.session, StatusCode::OK).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    #[serde(default)]
    refresh_token: Option<String>,
}

fn refresh_cookie(state: &AppState, headers: &HeaderMap) -> Option<String> {
    crate::http::cookie_value(headers, refresh_cookie_name(&state.config))
}

async fn refresh(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let caller = Caller::new(ip, &headers);
    // The body is optional: browsers send the refresh token as a cookie.
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<RefreshRequest>(&body)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    "The request body is not valid JSON for this endpoint.",
                )
                .with_details(json!({ "reason": e.to_string() }))
            })?
            .refresh_token
    };
    let (token, mode) = match (from_body, refresh_cookie(&state, &headers)) {
        (Some(t), _) => (t, SessionMode::Token),
        (None, Some(t)) => (t, SessionMode::Cookie),
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "No refresh token was sent.",
            ))
        }
    };
    let next =
        random_token(REFRESH_PREFIX).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    let outcome = state
        .store
        .rotate_refresh_token(&token_hash(&token), &token_hash(&next), Timestamp::now())
        .await?;
    match outcome {
        Refresh::Rotated(session) => {
            let user = state
                .store
                .user(session.user_id)
                .await?
                .ok_or_else(ApiError::not_found)?;
            if matches!(
                user.state.parse(),
                Ok(AccountState::Suspended | AccountState::Denied)
            ) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "account_suspended",
                    "This account is suspended.",
                ));
            }
            session_response(&state, &user, session.id, next, mode, StatusCode::OK)
        }
        Refresh::Reused {
            session_id,
            user_id,
        } => {
            let mut e = caller.audit("auth.refresh_token.reused", Some(user_id));
            e.target_type = Some("session".into());
            e.target_id = Some(session_id.to_string());
            audit(&state, e).await;
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "refresh_token_reused",
                "This refresh token was already used; the session has been ended for safety. Sign in again.",
            ))
        }
        Refresh::Invalid => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
            "The refresh token is not valid; sign in again.",
        )),
    }
}

/// The caller's session (routes that use it refuse API keys, which have none).
fn session_of(p: &Principal) -> ApiResult<Id> {
    p.session_id.ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!("session route reached without a session"))
    })
}

async fn sign_out(ctx: Ctx) -> ApiResult<Response> {
    let (state, p) = (&ctx.state, &ctx.actor);
    state
        .store
        .revoke_session(session_of(p)?, p.user_id, "signed_out")
        .await?;
    ctx.record("auth.sign_out", None, None).await;
    Ok(clear_cookies(state, StatusCode::NO_CONTENT.into_response()))
}

async fn sign_out_everywhere(ctx: Ctx) -> ApiResult<Response> {
    let (state, p) = (&ctx.state, &ctx.actor);
    state
        .store
        .revoke_all_for_user(p.user_id, "signed_out_everywhere")
        .await?;
    ctx.record("auth.sign_out_everywhere", None, None).await;
    Ok(clear_cookies(state, StatusCode::NO_CONTENT.into_response()))
}

async fn me(Extension(p): Extension<Principal>) -> Json<UserView> {
    Json(UserView::from(&p.user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupQuery {
    email: String,
}

#[derive(Serialize)]
struct PersonView {
    id: cairn_store::Id,
    email: String,
    display_name: String,
}

/// One active account by its exact email, so a collection's owner can share it with a
/// colleague: no listing, no partial matches; anything else (no such account, pending,
/// suspended) is the same 404.
async fn lookup_user(
    State(state): State<AppState>,
    crate::http::query::Query(q): crate::http::query::Query<LookupQuery>,
) -> ApiResult<Json<PersonView>> {
    let email = email::normalize(&q.email)
        .map_err(|_| ApiError::invalid_field("email", "must be an email address"))?;
    match state.store.user_by_email(&email).await? {
        Some(u) if u.state == "active" => Ok(Json(PersonView {
            id: u.id,
            email: u.email,
            display_name: u.display_name,
        })),
        _ => Err(ApiError::not_found()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateMe {
    display_name: Option<String>,
}

/// Change what the caller may change about their own account: their display name (1–100
/// characters; blank takes the part of the email before `@`). Audited.
async fn update_me(ctx: Ctx, Json(req): Json<UpdateMe>) -> ApiResult<Json<UserView>> {
    let user = &ctx.actor.user;
    let Some(raw) = req.display_name else {
        return Ok(Json(UserView::from(user)));
    };
    let name = display_name(&raw, &user.email)?;
    if name == user.display_name {
        return Ok(Json(UserView::from(user)));
    }
    let updated = ctx.state.store.set_display_name(user.id, &name).await?;
    ctx.record(
        "account.renamed",
        Some(("user", user.id.to_string())),
        Some(json!({ "from": user.display_name, "to": name })),
    )
    .await;
    Ok(Json(UserView::from(&updated)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePassword {
    current_password: String,
    new_password: String,
}

async fn change_password(ctx: Ctx, Json(req): Json<ChangePassword>) -> ApiResult<Response> {
    let (state, p) = (&ctx.state, &ctx.actor);
    check_password_size("current_password", &req.current_password)?;
    let ok = state
        .hasher
        .verify(req.current_password, Some(p.user.password_hash.clone()))
        .await
        .map_err(ApiError::internal)?;
    if !ok {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_credentials",
            "The current password is wrong.",
        ));
    }
    check_new_password(state, "new_password", &req.new_password, &p.user.email)?;
    let hash = state
        .hasher
        .hash(req.new_password)
        .await
        .map_err(ApiError::internal)?;
    state.store.set_password(p.user_id, &hash).await?;
    let caller = &ctx.caller;
    audit(
        state,
        caller.audit("auth.password.changed", Some(p.user_id)),
    )
    .await;
    // Every session ended with the old password; this one continues as a new session.
    let user = state
        .store
        .user(p.user_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let mode = if p.via == Via::Cookie {
        SessionMode::Cookie
    } else {
        SessionMode::Token
    };
    start_session(state, &user, caller, mode, StatusCode::OK).await
}

#[derive(Serialize)]
struct SessionView {
    id: Id,
    created_at: Timestamp,
    last_used_at: Timestamp,
    expires_at: Timestamp,
    user_agent: Option<String>,
    ip: Option<String>,
    current: bool,
}

#[derive(Serialize)]
struct SessionList {
    items: Vec<SessionView>,
    next_cursor: Option<String>,
}

async fn my_sessions(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<SessionList>> {
    let items = state
        .store
        .active_sessions(p.user_id)
        .await?
        .into_iter()
        .map(|s| SessionView {
            current: Some(s.id) == p.session_id,
            id: s.id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
            user_agent: s.user_agent,
            ip: s.ip,
        })
        .collect();
    Ok(Json(SessionList {
        items,
        next_cursor: None,
    }))
}

async fn revoke_my_session(ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let (state, p) = (&ctx.state, &ctx.actor);
    let id: Id = id.parse().map_err(|_| ApiError::not_found())?;
    if !state
        .store
        .revoke_session(id, p.user_id, "revoked_by_user")
        .await?
    {
        return Err(ApiError::not_found());
    }
    ctx.record(
        "auth.session.revoked",
        Some(("session", id.to_string())),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::lock_secs;

    #[test]
    fn failed_sign_ins_slow_down_exponentially_but_never_lock_for_good() {
        assert_eq!(lock_secs(4, 5), None);
        assert_eq!(lock_secs(5, 5), Some(30));
        assert_eq!(lock_secs(6, 5), Some(60));
        assert_eq!(lock_secs(8, 5), Some(240));
        assert_eq!(lock_secs(50, 5), Some(900));
    }
}
