//! HTTP routes for operators: `/api/health`, `/api/health/live`, `/api/health/ready` and
//! `/metrics`. Health is public (load balancers and orchestrators call it unauthenticated);
//! metrics are served to allow-listed networks, to holders of the metrics token, or to everyone
//! only when explicitly opened.

use std::sync::atomic::Ordering;

use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::health;
use crate::app::AppState;
use crate::auth::{ApiRoutes, Rule};
use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;

/// Public for load balancers and orchestrators; `/metrics` checks its own allow-list and token.
pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .route(
            Method::GET,
            "/api/health",
            Rule::PUBLIC.exempt(),
            health_report,
        )
        .route(Method::GET, "/api/health/live", Rule::PUBLIC.exempt(), live)
        .route(
            Method::GET,
            "/api/health/ready",
            Rule::PUBLIC.exempt(),
            ready,
        )
        .route(Method::GET, "/metrics", Rule::PUBLIC.exempt(), metrics)
}

async fn health_report(State(state): State<AppState>) -> Response {
    let report = health::report(&state).await;
    let status = if report.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

/// The process is up and serving HTTP. Orchestrators restart it when this fails.
async fn live() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// The process should receive traffic: its required dependencies answer and it is not
/// shutting down.
async fn ready(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "draining" })),
        )
            .into_response();
    }
    let checks = health::checks(&state).await;
    if checks.values().all(|c| c.ok) {
        axum::Json(json!({ "status": "ok" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "unavailable", "checks": *checks })),
        )
            .into_response()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

async fn metrics(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
) -> Response {
    let m = &state.config.metrics;
    if !m.enabled {
        return ApiError::not_found().into_response();
    }
    let token_ok = match (&m.token, bearer(&headers)) {
        (Some(expected), Some(given)) => {
            bool::from(expected.expose().as_bytes().ct_eq(given.as_bytes()))
        }
        _ => false,
    };
    let network_ok = m.allow_networks.iter().any(|n| n.contains(&client.0));
    if !(m.public || token_ok || network_ok) {
        return ApiError::forbidden(
            "Metrics are served to allow-listed networks or with the metrics token.",
        )
        .into_response();
    }
    let jobs = match state.store.job_counts().await {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(error = %e, "could not count jobs for metrics");
            Vec::new()
        }
    };
    let body = state.metrics.render(
        state.store.db().pool_stats(),
        &jobs,
        state.store.search_index_stats(),
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}
