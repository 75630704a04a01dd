//! [`ApiError`]: the one error body every route returns,
//! `{"error":{"code":"stable_code","message":"…","details":…}}`, with the right status.
//! Internal errors are logged with the request id and returned opaque, naming only that id.

use std::borrow::Cow;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_store::StoreError;
use serde_json::{json, Value};

use super::middleware::current_request_id;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    details: Option<Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
    internal: Option<anyhow::Error>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            headers: Vec::new(),
            internal: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A bug or an unexpected failure: logged in full, shown to the client as `internal`.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong on the server. It has been logged; quote the request id when reporting it.",
        );
        e.internal = Some(err.into());
        e
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "There is nothing at this address.",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "This address does not accept that method.",
        )
    }

    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("The request body is larger than the limit of {limit_bytes} bytes."),
        )
        .with_details(json!({ "limit_bytes": limit_bytes }))
    }

    pub fn request_timeout(limit_secs: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!("The request took longer than the limit of {limit_secs} s."),
        )
        .with_details(json!({ "timeout_secs": limit_secs }))
    }

    /// 422 `invalid_fields` naming one field and what is wrong with it.
    pub fn invalid_field(field: &str, problem: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_fields",
            "Some fields are not valid.",
        )
        .with_details(json!({ "fields": { field: problem } }))
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Conflict { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "The change conflicts with the current state; reload and try again.",
            ),
            StoreError::IndexBuilding => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "search_index_building",
                "The search index is still being built after a start; try again in a few seconds.",
            ),
            other => ApiError::internal(other),
        }
    }
}

impl ApiError {
    /// The message people read.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The details, when there are any.
    pub fn details(&self) -> Option<&Value> {
        self.details.as_ref()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        let mut details = self.details;
        if let Some(err) = &self.internal {
            tracing::error!(error = format!("{err:#}"), "internal error");
            details = Some(json!({ "request_id": request_id }));
        }
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let (Some(d), Some(obj)) = (details, body["error"].as_object_mut()) {
            obj.insert("details".into(), d);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_stable_statuses_and_codes() {
        let cases = [
            (StoreError::NotFound, StatusCode::NOT_FOUND, "not_found"),
            (
                StoreError::Conflict { constraint: None },
                StatusCode::CONFLICT,
                "conflict",
            ),
            (
                StoreError::SchemaTooNew {
                    database: 9,
                    binary: 1,
                },
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ),
            (
                StoreError::Other(sqlx::Error::PoolTimedOut),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ),
            (
                StoreError::IndexBuilding,
                StatusCode::SERVICE_UNAVAILABLE,
                "search_index_building",
            ),
        ];
        for (err, status, code) in cases {
            let api = ApiError::from(err);
            assert_eq!((api.status(), api.code()), (status, code));
        }
    }

    #[test]
    fn helper_errors_have_their_documented_statuses() {
        assert_eq!(
            ApiError::payload_too_large(10).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ApiError::request_timeout(1).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::method_not_allowed().status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(ApiError::forbidden("no").status(), StatusCode::FORBIDDEN);
    }
}
