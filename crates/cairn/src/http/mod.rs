//! HTTP plumbing shared by every capability: the router with its middleware stack, the error
//! body, the JSON extractor, the client address. Capabilities bring their own `routes.rs`;
//! this module only assembles them.
//!
//! Stack, outermost first: request context (id, span, timeout, security headers, metrics,
//! access log) → CORS → panic catcher → authorization (`crate::auth`) → body limit → the route.

pub mod client_ip;
pub mod error;
pub mod json;
pub mod middleware;
pub mod openapi;
pub mod query;
pub mod web;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::IntoResponse;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::AppState;
use crate::auth::ApiRoutes;
use crate::config::{Config, CorsConfig};
use error::ApiError;

/// Content Security Policy for the API and the single-page app served beside it.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; media-src 'self' blob:; \
    object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// Headers added to every response that does not set its own.
pub fn security_headers(config: &Config) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = vec![
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        ),
        (
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("camera=(), geolocation=(), payment=(), usb=()"),
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    // Not for a self-signed certificate: a browser told to insist on HTTPS for `localhost`
    // (and its subdomains) would refuse every other local development server too.
    if config.served_over_https()
        && config.tls.hsts_max_age_secs > 0
        && config.tls.mode != crate::config::TlsMode::SelfSigned
    {
        let value = format!(
            "max-age={}; includeSubDomains",
            config.tls.hsts_max_age_secs
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.push((header::STRICT_TRANSPORT_SECURITY, value));
        }
    }
    headers
}

fn cors_layer(cors: &CorsConfig) -> Option<CorsLayer> {
    if !cors.any_origin && cors.allowed_origins.is_empty() {
        return None;
    }
    let origin = if cors.any_origin && cors.allow_credentials {
        // Development only: production refuses this combination at start.
        AllowOrigin::mirror_request()
    } else if cors.any_origin {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            cors.allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("x-csrf-token"),
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                HeaderName::from_static(middleware::REQUEST_ID_HEADER),
                header::RETRY_AFTER,
                HeaderName::from_static("ratelimit-limit"),
                HeaderName::from_static("ratelimit-remaining"),
                HeaderName::from_static("ratelimit-reset"),
            ])
            .allow_credentials(cors.allow_credentials)
            .max_age(Duration::from_secs(600)),
    )
}

/// The value of cookie `name` in the request, if present.
pub fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| cookie::Cookie::parse(c.trim().to_owned()).ok())
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

async fn method_not_allowed() -> impl IntoResponse {
    ApiError::method_not_allowed()
}

/// Every capability's routes, each with its authorization rule.
pub fn api_routes() -> ApiRoutes {
    ApiRoutes::new()
        .merge(crate::ops::routes::routes())
        .merge(crate::accounts::routes::routes())
        .merge(crate::accounts::admin::routes())
        .merge(crate::accounts::api_keys::routes())
        .merge(crate::accounts::totp::routes())
        .merge(crate::accounts::invites::routes())
        .merge(crate::accounts::preferences::routes())
        .merge(crate::accounts::workspace::routes())
        .merge(crate::documents::routes::routes())
        .merge(crate::search::routes::routes())
        .merge(crate::chat::routes::routes())
        .merge(crate::chat::admin::routes())
        .merge(crate::chat::openai_api::routes())
        .merge(crate::backup::routes::routes())
        .merge(openapi::routes())
}

/// The whole application router: `api` (from [`api_routes`]) plus `extra` (tests mount probes
/// there, outside `/api`), under the shared middleware stack.
pub fn router(state: AppState, api: Router<AppState>, extra: Option<Router<AppState>>) -> Router {
    let mut routes = api;
    if let Some(extra) = extra {
        routes = routes.merge(extra);
    }
    routes
        .fallback(web::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.http.body_limit_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authorize,
        ))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(tower::util::option_layer(cors_layer(&state.config.cors)))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_context,
        ))
        .with_state(state)
}
