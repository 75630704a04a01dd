//! The request context around every route: a request id (echoed in `X-Request-Id` and in every
//! log line through the request span), the client address, the request timeout, security
//! headers, the access log line and the HTTP metrics. One middleware rather than a stack of
//! small ones, because it runs on every request.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::client_ip;
use super::error::ApiError;
use crate::app::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served by this task, or `-` outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(|id| id.clone())
        .unwrap_or_else(|_| "-".to_owned())
}

/// A forwarded id is kept only from a trusted proxy, and only if it looks like an id.
fn acceptable_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then(|| s.to_owned())
}

/// The outer bound of a streamed route.
const STREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub async fn request_context(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let proxies = &state.config.http.trusted_proxies;
    let (client, https) = client_ip::resolve(peer, req.headers(), proxies);
    let from_proxy = client.0 != peer || proxies.iter().any(|n| n.contains(&peer));
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .filter(|_| from_proxy)
        .and_then(acceptable_request_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    req.extensions_mut().insert(client);
    req.extensions_mut().insert(https);

    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let is_api = req.uri().path().starts_with("/api/");
    let span = tracing::info_span!("request", request_id = %request_id);
    let rule = route.as_deref().and_then(|r| state.routes.rule(&method, r));
    let timeout = match rule {
        Some(r) if r.upload => state.config.uploads.timeout,
        // Answers (streamed or awaited whole on `/v1`) are bounded by the provider's idle
        // timeout and `chat.max_answer_chars` instead.
        Some(r) if r.stream => STREAM_TIMEOUT,
        _ => state.config.http.request_timeout,
    };
    let path = req.uri().path().to_owned();
    let mut response = REQUEST_ID
        .scope(request_id.clone(), async {
            match tokio::time::timeout(timeout, next.run(req)).await {
                Ok(response) => response,
                Err(_) => ApiError::request_timeout(timeout.as_secs()).into_response(),
            }
        })
        .instrument(span.clone())
        .await;

    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID_HEADER, v);
    }
    for (name, value) in state.security_headers.iter() {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    if is_api && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let route_label = route.as_deref().unwrap_or("<unmatched>");
    state
        .metrics
        .observe_request(method.as_str(), route_label, status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            target: "cairn::http",
            method = %method,
            route = route_label,
            path = %path,
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            client_ip = %client.0,
            "request"
        )
    });
    response
}

/// What the panic-catching layer answers: a plain internal error (the panic is logged).
pub fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".to_owned());
    ApiError::internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}
