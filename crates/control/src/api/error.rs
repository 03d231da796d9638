//! API errors: a stable code and a precise public message in JSON; internal
//! details go to the log, never to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use outpost_api::Diagnostics;
use outpost_api::wire::{ErrorBody, ErrorInfo};

use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    /// The caller's role may not do this (its own object, or a route).
    Forbidden(String),
    /// Credentials other than a token were refused (a sign-in's ID token).
    BadCredentials(String),
    /// A service the control plane relies on did not answer (the identity
    /// provider).
    Unavailable(String),
    BadRequest(String),
    UnsupportedMediaType(String),
    PayloadTooLarge,
    NotFound(String),
    MethodNotAllowed,
    Conflict(String),
    Invalid(Diagnostics),
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Invalid(diagnostics) => ApiError::Invalid(diagnostics),
            StoreError::NotFound { .. }
            | StoreError::HostNotFound { .. }
            | StoreError::SecretNotFound { .. } => ApiError::NotFound(err.to_string()),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Database(_)
            | StoreError::Migration(_)
            | StoreError::Damaged(_)
            | StoreError::Unreadable(_) => ApiError::Internal(err.detail()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, diagnostics) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or invalid API token (send Authorization: Bearer TOKEN)".to_string(),
                Vec::new(),
            ),
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, "forbidden", message, Vec::new()),
            ApiError::BadCredentials(message) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", message, Vec::new())
            }
            ApiError::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                message,
                Vec::new(),
            ),
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, "bad_request", message, Vec::new()),
            ApiError::UnsupportedMediaType(message) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message,
                Vec::new(),
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {} MiB", super::BODY_LIMIT >> 20),
                Vec::new(),
            ),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message, Vec::new()),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method (see /api/v1/openapi.json)".to_string(),
                Vec::new(),
            ),
            ApiError::Conflict(message) => (StatusCode::CONFLICT, "conflict", message, Vec::new()),
            ApiError::Invalid(diagnostics) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_manifest",
                diagnostics.summary(),
                diagnostics.0,
            ),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the control plane's log has the details".to_string(),
                    Vec::new(),
                )
            }
        };
        let body = ErrorBody {
            error: ErrorInfo {
                code: code.to_string(),
                message,
                diagnostics,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
