//! Errors as Chroma renders them: `{"error": NAME, "message": TEXT}` with the status the
//! error code maps to, in exactly one place ([`status_and_name`]).
//!
//! The Python client picks its exception type from `error` alone (CHROMA-API.md §0), so
//! the names are Chroma's: `InvalidArgumentError`, `NotFoundError`, `InternalError`, the
//! legacy auth names, and `ChromaError` for everything else.

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Error, ErrorCode};

/// Chroma's catch-all error name.
pub const CHROMA_ERROR: &str = "ChromaError";

/// Largest plain-text error body the rewriting middleware reads.
const MAX_PLAIN_ERROR_BYTES: usize = 16 * 1024;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorResponse {
    /// The error's name, which the client maps to an exception type.
    pub error: String,
    pub message: String,
}

/// An error on its way to becoming an HTTP response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub name: &'static str,
    pub message: String,
}

/// The one mapping from error code to HTTP status and Chroma error name.
pub fn status_and_name(code: ErrorCode) -> (StatusCode, &'static str) {
    match code {
        ErrorCode::InvalidArgument => (StatusCode::BAD_REQUEST, "InvalidArgumentError"),
        ErrorCode::NotFound => (StatusCode::NOT_FOUND, "NotFoundError"),
        ErrorCode::AlreadyExists => (StatusCode::CONFLICT, CHROMA_ERROR),
        ErrorCode::Conflict => (StatusCode::CONFLICT, CHROMA_ERROR),
        ErrorCode::Unauthenticated => (StatusCode::UNAUTHORIZED, "AuthorizationError"),
        ErrorCode::PermissionDenied => (StatusCode::FORBIDDEN, "AuthError"),
        ErrorCode::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, CHROMA_ERROR),
        ErrorCode::FailedPrecondition => (StatusCode::PRECONDITION_FAILED, CHROMA_ERROR),
        ErrorCode::Unimplemented => (StatusCode::NOT_IMPLEMENTED, CHROMA_ERROR),
        ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, CHROMA_ERROR),
        ErrorCode::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let (status, name) = status_and_name(code);
        Self {
            status,
            name,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unimplemented, message)
    }

    /// A body that is valid JSON but does not fit the request's schema (missing field,
    /// wrong type, unknown enum value): 422 like axum's `Json` rejection in Chroma.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            name: CHROMA_ERROR,
            message: message.into(),
        }
    }

    pub fn unsupported_media_type() -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            name: CHROMA_ERROR,
            message: "Expected request with `Content-Type: application/json`".into(),
        }
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            name: CHROMA_ERROR,
            message: message.into(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        if e.code() == ErrorCode::Internal {
            // The message may lack the backend detail; log the whole chain.
            tracing::error!(error = %e, "internal error");
        }
        let message = match e.code() {
            ErrorCode::Internal => e.to_string(),
            _ => e.message().to_string(),
        };
        Self::new(e.code(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: self.name.to_string(),
            message: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// The name a rewritten plain-text error gets, by status.
fn name_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "InvalidArgumentError",
        StatusCode::NOT_FOUND => "NotFoundError",
        StatusCode::INTERNAL_SERVER_ERROR => "InternalError",
        _ => CHROMA_ERROR,
    }
}

/// Middleware: rewrites error responses that are not JSON (axum's plain-text rejections,
/// the body-limit layer's 413, empty 404/405) into Chroma's JSON error body.
pub async fn json_errors(request: Request<Body>, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_PLAIN_ERROR_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut rewritten = ApiError {
        status,
        name: name_for_status(status),
        message,
    }
    .into_response();
    // Keep headers such as `Allow` on a 405.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_chroma_names() {
        assert_eq!(
            status_and_name(ErrorCode::InvalidArgument),
            (StatusCode::BAD_REQUEST, "InvalidArgumentError")
        );
        assert_eq!(
            status_and_name(ErrorCode::NotFound),
            (StatusCode::NOT_FOUND, "NotFoundError")
        );
        assert_eq!(
            status_and_name(ErrorCode::AlreadyExists),
            (StatusCode::CONFLICT, "ChromaError")
        );
        assert_eq!(
            status_and_name(ErrorCode::Internal),
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
        );
    }
}
