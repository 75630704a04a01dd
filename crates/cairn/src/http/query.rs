//! [`Query`]: axum's query-string extractor with its rejection turned into Cairn's error body
//! (400 `invalid_query`), and the paging parameters every list shares.

use axum::extract::{FromRequestParts, Query as AxumQuery};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::ApiError;

pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match AxumQuery::<T>::from_request_parts(parts, state).await {
            Ok(AxumQuery(v)) => Ok(Query(v)),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "The query string has an unknown or malformed parameter.",
            )
            .with_details(json!({ "reason": e.body_text() }))),
        }
    }
}

/// Lists return at most this many items a page, whatever `limit` asks.
pub const MAX_PAGE: u32 = 200;
pub const DEFAULT_PAGE: u32 = 50;

/// The page size a request asked for, checked.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(n),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "`limit` must be between 1 and 200.",
        )
        .with_details(json!({ "max": MAX_PAGE }))),
    }
}
