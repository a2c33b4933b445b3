//! Authentication of every request and the audit log.
//!
//! The [`authenticate`] middleware runs before every route. With authentication off (a
//! loopback-only server) every caller is [`Principal::local`]. With it on, every route
//! except heartbeat and version needs an API key, as `Authorization: Bearer <key>` or
//! `X-Chroma-Token: <key>`; a missing or bad one is 401 `AuthorizationError`. Handlers
//! take the [`Caller`] and check the resource they actually touch (403 `AuthError`).
//!
//! Audit records go to the `audit` tracing target, one per authentication failure,
//! authorization denial and change of keys or collections: principal, tenant, action,
//! resource, outcome, request id. Never a secret, key, token, document or embedding.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;
use super::AppState;
use crate::auth::grants::Action;
use crate::auth::{denied, resource_name, Principal};
use crate::error::ErrorCode;

/// Routes that answer without credentials (liveness and version probes).
const OPEN_PATHS: [&str; 3] = ["/api/v2", "/api/v2/heartbeat", "/api/v2/version"];

/// The id of a request, echoed in `x-request-id` and in audit records.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub request_id: String,
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
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        Ok(Caller {
            principal,
            request_id,
        })
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
        self.principal
            .require(action, tenant, database, collection)
            .map_err(|e| {
                self.audit_denied(action, tenant, database, collection);
                ApiError::from(e)
            })
    }

    /// Records an authorization denial in the audit log.
    /// Changes to a whole collection (modify, delete) reach rows outside any row filter:
    /// refused to callers limited to some rows.
    pub fn require_all_rows(
        &self,
        action: Action,
        tenant: &str,
        database: &str,
        collection: &str,
    ) -> Result<(), ApiError> {
        if self.principal.row_filter.is_none() {
            return Ok(());
        }
        self.audit_denied(action, tenant, Some(database), Some(collection));
        Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!(
                "a key limited to some rows (row_filter) cannot modify or delete the whole \
                 collection {tenant}/{database}/{collection}"
            ),
        ))
    }

    pub fn audit_denied(
        &self,
        action: Action,
        tenant: &str,
        database: Option<&str>,
        collection: Option<&str>,
    ) {
        let resource = resource_name(tenant, database, collection);
        tracing::warn!(
            target: "audit",
            event = "authorization_denied",
            principal = %self.principal.id,
            tenant,
            action = action.as_str(),
            resource,
            outcome = "denied",
            request_id = %self.request_id,
        );
    }

    /// Records a change (collection created, key revoked, …) in the audit log.
    pub fn audit(&self, event: &str, action: Action, tenant: &str, resource: &str) {
        tracing::info!(
            target: "audit",
            event,
            principal = %self.principal.id,
            tenant,
            action = action.as_str(),
            resource,
            outcome = "allowed",
            request_id = %self.request_id,
        );
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
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let principal = match &state.config.auth {
        None => Some(Principal::local()),
        Some(_) if OPEN_PATHS.contains(&path.as_str()) => None,
        Some(auth) => {
            let outcome = match credential(request.headers()) {
                None => Err(denied()),
                Some(c) => auth.authenticate(c, crate::engine::now_ms()).await,
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
                        tracing::warn!(
                            target: "audit",
                            event = "authentication_failed",
                            principal = "",
                            tenant,
                            action = "authenticate",
                            resource = %path,
                            outcome = "denied",
                            request_id = %request_id,
                        );
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

fn set_request_id(response: &mut Response, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert("x-request-id", v);
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
