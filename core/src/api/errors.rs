//! Errors as Chroma renders them: `{"error": NAME, "message": TEXT}` with the status the
//! error code maps to, in exactly one place ([`status_and_name`]).
//!
//! The Python client picks its exception type from `error` alone (api §0, see [`super`]), so
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
        // Work stopped by a shutdown: the client may retry elsewhere or later.
        ErrorCode::Unavailable | ErrorCode::Cancelled => {
            (StatusCode::SERVICE_UNAVAILABLE, CHROMA_ERROR)
        }
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
    /// Failures of the server itself (`Internal`), of its configuration
    /// (`FailedPrecondition`) and of its backends (`Unavailable`) are told to the client as
    /// a fixed message with the request id; what went wrong (the whole error chain, which
    /// may name buckets, tables, keys, object keys and SDK errors) goes to the log under
    /// that id only. Every other code is the caller's business and keeps its message.
    fn from(e: Error) -> Self {
        let message = match e.code() {
            ErrorCode::Internal | ErrorCode::FailedPrecondition => {
                let id = crate::request::current_id();
                tracing::error!(request_id = %id, code = ?e.code(), error = %e, "server error");
                format!("internal error; the server's log has the details under request id {id}")
            }
            ErrorCode::Unavailable | ErrorCode::Cancelled => {
                let id = crate::request::current_id();
                tracing::warn!(request_id = %id, error = %e, "backend unavailable");
                format!("temporarily unavailable, retry later (request id {id})")
            }
            _ => e.message().to_string(),
        };
        Self::new(e.code(), message)
    }
}

/// Seconds a client is asked to wait before retrying a 503.
const RETRY_AFTER_SECS: u32 = 1;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: self.name.to_string(),
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
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

/// The header Chroma sets on every error response: its client copies it into the raised
/// exception's `trace_id`.
pub const TRACE_ID_HEADER: &str = "chroma-trace-id";

/// Sets [`TRACE_ID_HEADER`] to the request id (a ULID, see [`super::auth::authenticate`])
/// as 32 lowercase hex digits — Chroma's trace id format — so that the id a client reports
/// finds the request in the server's log. A response that never reached the request-id
/// layer (a body over the size limit) gets a fresh id.
fn set_trace_id(response: &mut Response) {
    let id = response
        .headers()
        .get(super::auth::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| ulid::Ulid::from_string(v).ok())
        .unwrap_or_else(ulid::Ulid::new);
    if let Ok(v) = HeaderValue::from_str(&format!("{:032x}", id.0)) {
        response.headers_mut().insert(TRACE_ID_HEADER, v);
    }
}

/// Middleware: gives every error response Chroma's trace id header, and rewrites those
/// that are not JSON (axum's plain-text rejections, the body-limit layer's 413, empty
/// 404/405) into Chroma's JSON error body.
pub async fn json_errors(request: Request<Body>, next: Next) -> Response {
    let mut response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    set_trace_id(&mut response);
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

    #[tokio::test]
    async fn server_failures_name_the_request_not_the_cause() {
        let cause = std::io::Error::other("bucket secret-bucket key c/1/log/x.parquet");
        let internal = Error::internal_from("cannot read object c/1/log/x.parquet", cause);
        let unavailable = Error::unavailable("table acme-catalog did not answer");
        let (a, b) = crate::request::scope("01REQUEST".to_owned(), async {
            (ApiError::from(internal), ApiError::from(unavailable))
        })
        .await;
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(b.status, StatusCode::SERVICE_UNAVAILABLE);
        for e in [&a, &b] {
            assert!(e.message.contains("01REQUEST"), "{}", e.message);
            for secret in ["bucket", "c/1/log", "acme-catalog", "object"] {
                assert!(!e.message.contains(secret), "{}", e.message);
            }
        }
        let response = b.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        // The caller's own mistakes keep their message.
        let invalid = ApiError::from(Error::invalid("ids: expected a list"));
        assert_eq!(invalid.message, "ids: expected a list");
    }

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
