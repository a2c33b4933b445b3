//! A ceiling on response size, for deployments whose transport has one: a Lambda
//! function's response (the whole API Gateway payload, body JSON-escaped inside it) is at
//! most 6 MB. Without this, an oversized answer would make the invocation fail and the
//! client see an opaque 502; with it, the client gets a 400 telling it to ask for less.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Lambda's limit on a synchronous invocation's response payload.
pub const LAMBDA_MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// Room left in [`LAMBDA_MAX_PAYLOAD_BYTES`] for the status, headers and the envelope
/// around the body.
pub const LAMBDA_ENVELOPE_BYTES: usize = 64 * 1024;

/// Middleware: buffers the response and replaces it with a 400 when its body, escaped as a
/// JSON string (as it travels in the Lambda response payload), exceeds the limit.
pub async fn limit_response(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let too_large = |size: String| {
        tracing::warn!(limit, size, "response too large for the transport");
        ApiError::invalid(format!(
            "the response ({size}) exceeds this deployment's limit of {limit} bytes; ask for \
             fewer records (`limit`, `n_results`, fewer query embeddings) or leave embeddings \
             out of `include`"
        ))
        .into_response()
    };
    // Escaping only lengthens the body: reading past the limit is never needed.
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => return too_large(format!("more than {limit} bytes")),
    };
    let escaped = escaped_len(&bytes);
    if escaped > limit {
        return too_large(format!("{escaped} bytes once escaped"));
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The length of `bytes` written as the contents of a JSON string.
fn escaped_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .map(|&b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::escaped_len;

    #[test]
    fn escaped_length_matches_serde_json() {
        for text in [
            "plain",
            r#"{"ids":[["a","b"]],"distances":[[0.1]]}"#,
            "back\\slash\nnew\tline\u{1}\u{1f}é漢",
        ] {
            let quoted = serde_json::to_string(text).unwrap();
            assert_eq!(escaped_len(text.as_bytes()), quoted.len() - 2, "{text:?}");
        }
    }
}
