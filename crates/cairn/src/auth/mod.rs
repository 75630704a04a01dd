//! The one authorization layer. Every API route is registered through [`ApiRoutes`] with a
//! [`Rule`]; the [`authorize`] middleware finds the matched route's rule, authenticates the
//! caller (bearer token or session cookie), and allows or refuses before any handler runs. A
//! matched route that was registered without a rule is refused, so forgetting one fails closed;
//! the rule table is also what the authorization-matrix test walks.
//!
//! Handlers receive the caller as an [`Principal`] extension. What a handler may then touch
//! (whose documents, whose conversations) is enforced in the store queries it calls.

pub mod limits;
pub mod principal;
pub mod standing_feed;

use std::collections::{HashMap, HashSet};

use axum::extract::{MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;

pub use principal::{Principal, Via};

use crate::accounts::State as AccountState;
use crate::app::AppState;
use crate::http::error::ApiError;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in account, including one still pending approval.
    SignedIn,
    /// An active account.
    Member,
    /// An active admin or owner.
    Admin,
    /// The active owner.
    Owner,
}

/// What an API key may be used for. Keys carry one or more; each route names the one it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Scope {
    #[serde(rename = "read")]
    Read,
    #[serde(rename = "chat")]
    Chat,
    #[serde(rename = "ingest")]
    Ingest,
    #[serde(rename = "traces:write")]
    TracesWrite,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Chat,
        Scope::Ingest,
        Scope::TracesWrite,
        Scope::Admin,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Chat => "chat",
            Scope::Ingest => "ingest",
            Scope::TracesWrite => "traces:write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A route's authorization rule: who may call it, and which API-key scope (if any) lets a key
/// call it. Routes with no scope refuse API keys (managing sessions, passwords, keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub access: Access,
    pub api_key: Option<Scope>,
    pub limit: limits::Limit,
    /// Open to accounts that must enrol in two-factor sign-in and have not yet.
    pub enrolment: bool,
    /// A streamed upload: no request-body limit (the handler enforces its own while reading)
    /// and `uploads.timeout_secs` instead of the request timeout.
    pub upload: bool,
    /// Answers with a Server-Sent Events stream (documented as `text/event-stream`).
    pub stream: bool,
}

impl Rule {
    pub const PUBLIC: Rule = Rule::new(Access::Public);
    pub const SIGNED_IN: Rule = Rule::new(Access::SignedIn);
    pub const MEMBER: Rule = Rule::new(Access::Member);
    pub const ADMIN: Rule = Rule::new(Access::Admin);
    pub const OWNER: Rule = Rule::new(Access::Owner);

    const fn new(access: Access) -> Rule {
        Rule {
            access,
            api_key: None,
            limit: limits::Limit::General,
            enrolment: false,
            upload: false,
            stream: false,
        }
    }

    /// The same rule for a route that answers with an event stream.
    pub const fn streamed(self) -> Rule {
        Rule {
            stream: true,
            ..self
        }
    }

    /// The same rule for a streamed upload route.
    pub const fn upload(self) -> Rule {
        Rule {
            upload: true,
            ..self
        }
    }

    /// The same rule, also open to accounts that still have to enrol in two-factor sign-in.
    pub const fn for_enrolment(self) -> Rule {
        Rule {
            enrolment: true,
            ..self
        }
    }

    /// The same rule, also open to API keys with `scope`.
    pub const fn key(self, scope: Scope) -> Rule {
        Rule {
            api_key: Some(scope),
            ..self
        }
    }

    /// The same rule under the stricter per-address limit of authentication routes.
    pub const fn auth_limited(self) -> Rule {
        Rule {
            limit: limits::Limit::Auth,
            ..self
        }
    }

    /// The same rule, not rate-limited.
    pub const fn exempt(self) -> Rule {
        Rule {
            limit: limits::Limit::Exempt,
            ..self
        }
    }
}

/// One registered route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub method: Method,
    pub path: &'static str,
    pub rule: Rule,
}

/// The rules of every registered route, looked up by method and matched path.
#[derive(Debug, Default)]
pub struct RouteTable {
    rules: HashMap<(Method, &'static str), Rule>,
    paths: HashSet<&'static str>,
    entries: Vec<RouteEntry>,
}

impl RouteTable {
    pub fn rule(&self, method: &Method, path: &str) -> Option<Rule> {
        // `HEAD` is served by `GET` handlers.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.paths
            .get(path)
            .and_then(|p| self.rules.get(&(method.clone(), *p)))
            .copied()
    }

    pub fn knows_path(&self, path: &str) -> bool {
        self.paths.contains(path)
    }

    /// Every registered route, in registration order.
    pub fn entries(&self) -> &[RouteEntry] {
        &self.entries
    }
}

/// Builds the API router and its rule table together, so no route exists without a rule.
pub struct ApiRoutes {
    router: Router<AppState>,
    table: RouteTable,
}

impl Default for ApiRoutes {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiRoutes {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            table: RouteTable::default(),
        }
    }

    pub fn route<H, T>(mut self, method: Method, path: &'static str, rule: Rule, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        let mut method_router = on(filter, handler);
        if rule.upload {
            method_router = method_router.layer(axum::extract::DefaultBodyLimit::disable());
        }
        self.router = self.router.route(path, method_router);
        self.table.rules.insert((method.clone(), path), rule);
        self.table.paths.insert(path);
        self.table.entries.push(RouteEntry { method, path, rule });
        self
    }

    pub fn merge(mut self, other: ApiRoutes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.rules.extend(other.table.rules);
        self.table.paths.extend(other.table.paths);
        self.table.entries.extend(other.table.entries);
        self
    }

    pub fn into_parts(self) -> (Router<AppState>, RouteTable) {
        (self.router, self.table)
    }
}

fn unauthenticated(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message).with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"cairn\""),
    )
}

/// Decide whether `principal` may call a route with `rule` using `method`.
pub fn decide(
    rule: Rule,
    principal: Option<&Principal>,
    method: &Method,
    csrf_ok: bool,
) -> Result<(), ApiError> {
    if rule.access == Access::Public {
        return Ok(());
    }
    let Some(p) = principal else {
        return Err(unauthenticated("Sign in to do this."));
    };
    if let Via::ApiKey = p.via {
        match rule.api_key {
            None => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "api_key_not_allowed",
                    "API keys cannot be used for this; sign in instead.",
                ))
            }
            Some(scope) if !p.scopes.contains(&scope) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    format!("This API key lacks the `{}` scope.", scope.as_str()),
                )
                .with_details(serde_json::json!({ "required_scope": scope.as_str() })))
            }
            Some(_) => {}
        }
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if p.via == Via::Cookie && !safe && !csrf_ok {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "This request needs the X-CSRF-Token header from your session.",
        ));
    }
    if p.must_enrol_2fa && rule.access != Access::SignedIn && !rule.enrolment {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "totp_enrolment_required",
            "This workspace requires two-factor sign-in: set it up first.",
        ));
    }
    match (rule.access, p.state) {
        (Access::SignedIn, _) => Ok(()),
        (_, AccountState::Pending) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_pending",
            "Your account is waiting for an administrator's approval.",
        )),
        (Access::Member, AccountState::Active) => Ok(()),
        (Access::Admin, AccountState::Active) if p.role.is_admin() => Ok(()),
        (Access::Owner, AccountState::Active) if p.role == crate::accounts::Role::Owner => Ok(()),
        _ => Err(ApiError::forbidden("You are not allowed to do this.")),
    }
}

/// The middleware: authenticate, look up the rule, decide.
pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(path) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    let rule = match state.routes.rule(req.method(), &path) {
        Some(rule) => rule,
        // The path is known but not with this method: let the router answer 405.
        None if state.routes.knows_path(&path) => return next.run(req).await,
        // Outside the API (the web app's files, test probes) there is nothing to authorize.
        None if !path.starts_with("/api/") && !path.starts_with("/v1/") && path != "/metrics" => {
            return next.run(req).await
        }
        None => {
            return ApiError::internal(anyhow::anyhow!("route {path} has no authorization rule"))
                .into_response()
        }
    };
    let client = req
        .extensions()
        .get::<crate::http::client_ip::ClientIp>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let mut decision = None;
    if rule.limit == limits::Limit::Auth {
        if let Some(q) = state.limiter.quota(rule.limit) {
            decision = state.limiter.check(&format!("auth:{client}"), q).await;
            if let Some(d) = decision.filter(|d| !d.allowed) {
                return limits::refused(&d).into_response();
            }
        }
    }
    let principal = match principal::authenticate(&state, req.headers()).await {
        Ok(p) => p,
        // A bad token on a public route is ignored; elsewhere it is refused.
        Err(_) if rule.access == Access::Public => None,
        Err(e) => return e.into_response(),
    };
    let csrf_ok = principal.as_ref().is_some_and(|p| {
        req.headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| p.session_id.is_some_and(|sid| state.tokens.csrf_ok(sid, t)))
    });
    if let Err(e) = decide(rule, principal.as_ref(), req.method(), csrf_ok) {
        return e.into_response();
    }
    if rule.limit == limits::Limit::General {
        let key = match &principal {
            Some(p) => format!("user:{}", p.user_id),
            None => format!("ip:{client}"),
        };
        if let Some(q) = state.limiter.quota(rule.limit) {
            decision = state.limiter.check(&key, q).await;
            if let Some(d) = decision.filter(|d| !d.allowed) {
                return limits::refused(&d).into_response();
            }
        }
    }
    if let Some(p) = principal {
        req.extensions_mut().insert(p);
    }
    let mut response = next.run(req).await;
    if let Some(d) = decision {
        limits::headers(&d, response.headers_mut());
    }
    response
}
