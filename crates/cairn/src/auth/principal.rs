//! Who is calling: the access token from `Authorization: Bearer` or the session cookie,
//! verified, then checked against the database in one query — the session must be live, the
//! token issued after the user's `tokens_valid_after`, and the account neither suspended nor
//! denied — so logging out, revoking and suspending take effect on the next request.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use cairn_store::accounts::UserRow;
use cairn_store::{Id, Timestamp};

use crate::accounts::api_keys;
use crate::accounts::tokens::TokenError;
use crate::accounts::{Role, State as AccountState};
use crate::app::AppState;
use crate::auth::Scope;
use crate::http::error::ApiError;

/// How the caller presented its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Cookie,
    ApiKey,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Id,
    /// The session, for access tokens; `None` for API keys.
    pub session_id: Option<Id>,
    /// What an API key may do; empty for sessions (whose reach is their role's).
    pub scopes: Vec<Scope>,
    pub role: Role,
    pub state: AccountState,
    pub via: Via,
    /// Two-factor sign-in is required of this account and it has not enrolled.
    pub must_enrol_2fa: bool,
    /// The user row as read while authenticating, so handlers need not read it again.
    pub user: UserRow,
}

pub(crate) fn invalid(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", message).with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    )
}

/// The access token and how it came, if the request carries one.
fn presented(state: &AppState, headers: &HeaderMap) -> Option<(String, Via)> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = auth.strip_prefix("Bearer ") {
            return Some((token.trim().to_owned(), Via::Bearer));
        }
    }
    let name = crate::accounts::routes::access_cookie_name(&state.config);
    crate::http::cookie_value(headers, name).map(|v| (v, Via::Cookie))
}

/// The caller, `None` when no credentials were presented, or an error for bad ones.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    let Some((token, via)) = presented(state, headers) else {
        return Ok(None);
    };
    if via == Via::Bearer && token.starts_with(api_keys::KEY_PREFIX) {
        return api_keys::authenticate(state, &token).await.map(Some);
    }
    let claims = state.tokens.verify(&token).map_err(|e| match e {
        TokenError::Expired => invalid("The access token has expired; refresh it."),
        _ => invalid("The access token is not valid."),
    })?;
    let Some(found) = state.store.auth_context(claims.sub, claims.sid).await? else {
        return Err(invalid("The session no longer exists."));
    };
    let (user, session) = &*found;
    let now = Timestamp::now();
    if session.revoked_at.is_some() || session.expires_at <= now {
        return Err(invalid("The session has ended; sign in again."));
    }
    if claims.iat_ms < user.tokens_valid_after.as_millis() {
        return Err(invalid("The access token was revoked; sign in again."));
    }
    let (role, account_state) = standing(user)?;
    Ok(Some(Principal {
        must_enrol_2fa: must_enrol_2fa(state, role, user),
        user_id: user.id,
        session_id: Some(session.id),
        scopes: Vec::new(),
        role,
        state: account_state,
        via,
        user: user.clone(),
    }))
}

/// Whether the configuration requires two-factor sign-in of this user, who lacks it.
pub fn must_enrol_2fa(state: &AppState, role: Role, user: &UserRow) -> bool {
    use crate::config::Require2fa;
    let required = match state.config.auth.require_2fa {
        Require2fa::Off => false,
        Require2fa::Admins => role.is_admin(),
        Require2fa::Everyone => true,
    };
    required && !user.totp_enabled
}

/// The user's role and state, refusing suspended and denied accounts.
pub fn standing(user: &UserRow) -> Result<(Role, AccountState), ApiError> {
    let role: Role = user
        .role
        .parse()
        .map_err(|_| ApiError::internal(anyhow::anyhow!("bad role {}", user.role)))?;
    let account_state: AccountState = user
        .state
        .parse()
        .map_err(|_| ApiError::internal(anyhow::anyhow!("bad state {}", user.state)))?;
    if matches!(
        account_state,
        AccountState::Suspended | AccountState::Denied
    ) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_suspended",
            "This account is suspended.",
        ));
    }
    Ok((role, account_state))
}
