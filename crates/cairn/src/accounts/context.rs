//! [`Ctx`]: what a handler acting for a signed-in caller needs — the state, the caller (as the
//! authorization layer established it) and where the request came from — with [`Ctx::record`]
//! to write the audit entry for what it did.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use cairn_store::audit::AuditEntry;

use super::routes::{audit, Caller};
use crate::app::AppState;
use crate::auth::Principal;
use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;

pub(crate) struct Ctx {
    pub(crate) state: AppState,
    pub(crate) actor: Principal,
    pub(crate) caller: Caller,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let actor = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("route reached without a principal"))
            })?;
        let ip = parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no client address")))?;
        Ok(Self {
            state: state.clone(),
            actor,
            caller: Caller::new(ip, &parts.headers),
        })
    }
}

impl Ctx {
    /// Write the audit entry for `action` by the caller, on `target` (its type and id).
    pub async fn record(
        &self,
        action: &str,
        target: Option<(&str, String)>,
        details: Option<serde_json::Value>,
    ) {
        let mut e: AuditEntry = self.caller.audit(action, Some(self.actor.user_id));
        if let Some((kind, id)) = target {
            e.target_type = Some(kind.to_owned());
            e.target_id = Some(id);
        }
        e.details = details.map(cairn_store::Json);
        audit(&self.state, e).await;
    }
}
