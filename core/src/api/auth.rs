//! Authentication of every request and the audit log.
//!
//! The [`authenticate`] middleware runs before every route. With authentication off (a
//! loopback-only server) every caller is [`Principal::local`]. With it on, every route
//! except heartbeat and version needs an API key, as `Authorization: Bearer <key>` or
//! `X-Chroma-Token: <key>`; a missing or bad one is 401 `AuthorizationError`. Handlers
//! take the [`Caller`] and check the resource they actually touch (403 `AuthError`).
//!
//! Authentication failures, denials and changes are audited ([`crate::auth::audit`]).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;
use super::AppState;
use crate::auth::grants::Action;
use crate::auth::{audit, denied, Principal};
use crate::error::ErrorCode;

/// Routes that answer without credentials (liveness and version probes).
pub(crate) const OPEN_PATHS: [&str; 3] = ["/api/v2", "/api/v2/heartbeat", "/api/v2/version"];

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        // Fail closed: a route reached without the middleware has no caller.
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::from(denied()))?;
        Ok(Caller { principal })
    }
}

impl Caller {
    /// `require` of the principal, audited when denied.
    pub fn require(
        &self,
        action: Action,
        tenant: &str,
        database: Option<&str>,
        collection: Option<&str>,
    ) -> Result<(), ApiError> {
        Ok(crate::access::require(
            &self.principal,
            action,
            tenant,
            database,
            collection,
        )?)
    }

    /// Records a change (collection created, key revoked, …) in the audit log.
    pub fn audit(&self, event: &str, action: Action, tenant: &str, resource: &str) {
        audit::changed(&self.principal.id, event, action, tenant, resource);
    }
}

/// The credential of a request: `Authorization: Bearer <key>` or `X-Chroma-Token`.
fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    headers
        .get("x-chroma-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Gives every request an id and a principal, or answers 401. Everything the request does
/// runs with its id in [`crate::request`].
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let request_id = ulid::Ulid::new().to_string();
    crate::request::scope(
        request_id.clone(),
        authenticated(state, request, next, request_id),
    )
    .await
}

async fn authenticated(
    state: AppState,
    mut request: Request,
    next: Next,
    request_id: String,
) -> Response {
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let principal = match &state.config.auth {
        None => Some(Principal::local()),
        Some(_) if OPEN_PATHS.contains(&path.as_str()) => None,
        Some(auth) => {
            let outcome = match credential(request.headers()) {
                None => Err(denied()),
                Some(c) => auth.authenticate(c, crate::clock::now_ms()).await,
            };
            match outcome {
                Ok(p) => Some(p),
                Err(e) => {
                    if e.code() == ErrorCode::Unauthenticated {
                        // The tenant the request names, if any: who was knocked at.
                        let tenant = path
                            .strip_prefix("/api/v2/tenants/")
                            .and_then(|rest| rest.split('/').next())
                            .unwrap_or("");
                        audit::unauthenticated(tenant, &path);
                    }
                    let mut response = ApiError::from(e).into_response();
                    set_request_id(&mut response, &request_id);
                    return response;
                }
            }
        }
    };
    if let Some(p) = principal {
        if let Some(limits) = &state.config.rate_limits {
            if let Err(wait) = limits.check(&p.id) {
                crate::metrics::throttled();
                let mut response = rate_limited(wait);
                set_request_id(&mut response, &request_id);
                return response;
            }
        }
        request.extensions_mut().insert(p);
    }
    let mut response = next.run(request).await;
    set_request_id(&mut response, &request_id);
    response
}

/// 429 `RateLimitError` with `Retry-After` in whole seconds (at least 1).
fn rate_limited(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut response = ApiError {
        status: axum::http::StatusCode::TOO_MANY_REQUESTS,
        name: "RateLimitError",
        message: format!("rate limit exceeded: retry after {secs} s"),
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// The header that carries a request's id on its response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

fn set_request_id(response: &mut Response, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_header_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h), None);
        h.insert("x-chroma-token", HeaderValue::from_static("abc"));
        assert_eq!(credential(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(credential(&h), Some("xyz"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(credential(&h), None, "another scheme is not a key");
    }
}
