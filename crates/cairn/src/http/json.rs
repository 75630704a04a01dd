//! [`Json`]: axum's JSON extractor with its rejections turned into Cairn's error body —
//! 400 `malformed_json` or `unknown_field`, 415 `unsupported_media_type`, 413
//! `payload_too_large` naming the limit, 422 `invalid_request` for well-formed JSON with
//! wrong values.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::error::ApiError;
use crate::app::AppState;

pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(rejection_to_error(
                rejection,
                state.config.http.body_limit_bytes,
            )),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn rejection_to_error(rejection: JsonRejection, limit_bytes: usize) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as JSON with `Content-Type: application/json`.",
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "The request body is not valid JSON.",
        )
        .with_details(json!({ "reason": e.body_text() })),
        JsonRejection::JsonDataError(e) => {
            let reason = e.body_text();
            if reason.contains("unknown field") {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unknown_field",
                    "The request has a field this endpoint does not accept.",
                )
                .with_details(json!({ "reason": reason }))
            } else {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    "The request's JSON has missing or wrongly typed fields.",
                )
                .with_details(json!({ "reason": reason }))
            }
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::payload_too_large(limit_bytes)
        }
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The request body could not be read.",
        )
        .with_details(json!({ "reason": other.body_text() })),
    }
}
