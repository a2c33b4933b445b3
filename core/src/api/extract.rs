//! The JSON body extractor: Chroma's statuses for bad bodies instead of axum's plain-text
//! rejections.
//!
//! - a `Content-Type` other than JSON: 415 (a missing one counts as JSON, as in Chroma);
//! - a body over the limit: 413 (the limit layer stops reading at the limit);
//! - malformed JSON: 400 `InvalidArgumentError`;
//! - valid JSON of the wrong shape: 422 `ChromaError`, naming the field's path.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::errors::ApiError;

/// A JSON request body of type `T`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        check_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            let status = r.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(format!("request body too large: {}", r.body_text()))
            } else {
                ApiError::invalid(format!("cannot read request body: {}", r.body_text()))
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type())
    }
}

/// Parses a whole JSON document, classifying errors as above.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data if path == "." => {
                ApiError::unprocessable(format!("invalid request body: {inner}"))
            }
            Category::Data => {
                ApiError::unprocessable(format!("invalid request body: {path}: {inner}"))
            }
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::invalid(format!("malformed JSON body: {inner}"))
            }
        }
    })?;
    de.end()
        .map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::GetRequestPayload;

    #[test]
    fn classifies_body_errors() {
        let e = parse_json::<GetRequestPayload>(b"{").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_json::<GetRequestPayload>(br#"{"include": ["data"]}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("include[0]"), "{}", e.message);
        let ok = parse_json::<GetRequestPayload>(br#"{"where": null, "limit": 2}"#).unwrap();
        assert_eq!(ok.limit, Some(2));
        assert!(ok.where_.is_none());
    }
}
