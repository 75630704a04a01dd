//! Two-factor sign-in with TOTP (RFC 6238: SHA-1, 6 digits, 30-second steps, one step of clock
//! skew either way). Enrolment returns the secret and an `otpauth://` URI for QR codes; the
//! secret is sealed with the data key; confirming with a first code turns it on and returns ten
//! single-use backup codes (stored hashed). A code's time step is accepted once only.

use axum::extract::{Extension, Path, State};
use axum::http::{Method, StatusCode};
use cairn_store::accounts::UserRow;
use cairn_store::Id;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use super::context::Ctx;
use super::tokens::token_hash;
use crate::app::AppState;
use crate::auth::{ApiRoutes, Principal, Rule, Scope};
use crate::crypto;
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;

const STEP_SECS: u64 = 30;
const BACKUP_CODES: usize = 10;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .route(
            Method::POST,
            "/api/me/totp",
            Rule::MEMBER.for_enrolment(),
            start,
        )
        .route(
            Method::POST,
            "/api/me/totp/confirm",
            Rule::MEMBER.for_enrolment(),
            confirm,
        )
        .route(Method::DELETE, "/api/me/totp", Rule::MEMBER, disable)
        .route(
            Method::POST,
            "/api/users/{id}/reset-2fa",
            Rule::ADMIN.key(Scope::Admin),
            admin_reset,
        )
}

fn totp_for(secret: Vec<u8>, email: &str) -> ApiResult<TOTP> {
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        STEP_SECS,
        secret,
        Some("Cairn".into()),
        email.to_owned(),
    )
    .map_err(|e| ApiError::internal(anyhow::anyhow!("totp: {e:?}")))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn secret_of(state: &AppState, user: &UserRow) -> ApiResult<Vec<u8>> {
    let sealed = user.totp_secret.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "totp_not_started",
            "Start two-factor enrolment first.",
        )
    })?;
    crypto::open(&state.keys.data_key, sealed, user.id.to_string().as_bytes())
        .map_err(ApiError::internal)
}

/// The time step `code` matches (now, or one step either side), if any.
fn matching_step(totp: &TOTP, code: &str) -> Option<u64> {
    let now = now_secs();
    let code = code.trim();
    [now.saturating_sub(STEP_SECS), now, now + STEP_SECS]
        .into_iter()
        .find(|t| bool::from(totp.generate(*t).as_bytes().ct_eq(code.as_bytes())))
        .map(|t| t / STEP_SECS)
}

/// Check a second factor at sign-in: a TOTP code (each step once) or an unused backup code.
pub async fn check_second_factor(
    state: &AppState,
    user: &UserRow,
    code: Option<&str>,
    backup: Option<&str>,
) -> ApiResult<bool> {
    if let Some(backup) = backup {
        let normalized: String = backup
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_lowercase();
        return Ok(state
            .store
            .use_backup_code(user.id, &token_hash(&normalized))
            .await?);
    }
    let Some(code) = code else { return Ok(false) };
    let totp = totp_for(secret_of(state, user)?, &user.email)?;
    match matching_step(&totp, code) {
        Some(step) => Ok(state.store.claim_totp_step(user.id, step as i64).await?),
        None => Ok(false),
    }
}

#[derive(Serialize)]
struct Enrolment {
    secret: String,
    otpauth_uri: String,
}

async fn start(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Enrolment>> {
    if p.user.totp_enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "totp_already_enabled",
            "Two-factor sign-in is already on; turn it off first.",
        ));
    }
    let mut secret = vec![0u8; 20];
    getrandom::fill(&mut secret).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    let totp = totp_for(secret.clone(), &p.user.email)?;
    let sealed = crypto::seal(
        &state.keys.data_key,
        &secret,
        p.user_id.to_string().as_bytes(),
    )
    .map_err(ApiError::internal)?;
    if !state.store.set_pending_totp(p.user_id, &sealed).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "totp_already_enabled",
            "Two-factor sign-in is already on.",
        ));
    }
    Ok(Json(Enrolment {
        secret: totp.get_secret_base32(),
        otpauth_uri: totp.get_url(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    code: String,
}

#[derive(Serialize)]
struct BackupCodes {
    backup_codes: Vec<String>,
}

fn backup_code() -> ApiResult<String> {
    let mut b = [0u8; 5];
    getrandom::fill(&mut b).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    let hex = hex::encode(b);
    Ok(format!("{}-{}", &hex[..5], &hex[5..]))
}

async fn confirm(ctx: Ctx, Json(req): Json<Confirm>) -> ApiResult<Json<BackupCodes>> {
    let (state, p) = (&ctx.state, &ctx.actor);
    if p.user.totp_enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "totp_already_enabled",
            "Two-factor sign-in is already on.",
        ));
    }
    let totp = totp_for(secret_of(state, &p.user)?, &p.user.email)?;
    let step = matching_step(&totp, &req.code).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_totp_code",
            "That code does not match; check the device's clock.",
        )
    })?;
    let codes: Vec<String> = (0..BACKUP_CODES)
        .map(|_| backup_code())
        .collect::<ApiResult<_>>()?;
    let hashes: Vec<String> = codes
        .iter()
        .map(|c| token_hash(&c.replace('-', "")))
        .collect();
    state
        .store
        .enable_totp(p.user_id, step as i64, &hashes)
        .await?;
    ctx.record("auth.totp.enabled", None, None).await;
    Ok(Json(BackupCodes {
        backup_codes: codes,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Disable {
    password: String,
}

async fn disable(ctx: Ctx, Json(req): Json<Disable>) -> ApiResult<StatusCode> {
    let (state, p) = (&ctx.state, &ctx.actor);
    if req.password.len() > 1024
        || !state
            .hasher
            .verify(req.password, Some(p.user.password_hash.clone()))
            .await
            .map_err(ApiError::internal)?
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_credentials",
            "The password is wrong.",
        ));
    }
    state.store.disable_totp(p.user_id).await?;
    ctx.record("auth.totp.disabled", None, None).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_reset(ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let (state, p) = (&ctx.state, &ctx.actor);
    let id: Id = id.parse().map_err(|_| ApiError::not_found())?;
    let target = state
        .store
        .user(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    super::admin::may_manage(p, &target)?;
    state.store.disable_totp(id).await?;
    ctx.record(
        "admin.user.totp_reset",
        Some(("user", id.to_string())),
        Some(json!({ "by": "admin" })),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
