//! API key administration: `POST/GET /api/v2/admin/keys`, `DELETE /api/v2/admin/keys/{id}`.
//!
//! Needs the admin action: a caller mints keys only within its own admin grants, and
//! lists or revokes only keys whose grants all lie within them. The secret is returned
//! once, by the create call; listings show ids, names, grants and times only.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::errors::{ApiError, ErrorResponse};
use super::extract::ApiJson;
use super::{ApiResult, AppState};
use crate::auth::grants::{Action, Grant};
use crate::auth::keys;
use crate::catalog::ApiKeyRecord;
use crate::engine::now_ms;
use crate::error::ErrorCode;

/// The most grants one key may carry.
pub const MAX_GRANTS: usize = 64;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyPayload {
    /// `tenant/database/collection:actions` strings, e.g. `acme/*/*:read,write`.
    pub grants: Vec<String>,
    pub name: Option<String>,
    /// A `where` document ANDed into the key's reads and required of its writes.
    #[schema(value_type = Option<Object>)]
    pub row_filter: Option<serde_json::Value>,
    /// Milliseconds since the epoch after which the key stops working.
    pub expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyResponse {
    pub id: String,
    pub name: Option<String>,
    pub grants: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub row_filter: Option<serde_json::Value>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
}

impl From<ApiKeyRecord> for KeyResponse {
    fn from(r: ApiKeyRecord) -> Self {
        Self {
            id: r.id,
            name: r.name,
            grants: r.grants,
            row_filter: r.row_filter,
            created_at_ms: r.created_at_ms,
            expires_at_ms: r.expires_at_ms,
            revoked_at_ms: r.revoked_at_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedKeyResponse {
    #[serde(flatten)]
    pub info: KeyResponse,
    /// The key to send as `Authorization: Bearer …`; shown only here.
    pub key: String,
}

/// Parses and checks the grants of a new key (shared with the command line).
pub fn parse_grants(grants: &[String]) -> crate::Result<Vec<Grant>> {
    if grants.is_empty() {
        return Err(crate::Error::invalid(
            "grants: a key needs at least one grant, e.g. 'acme/*/*:read'",
        ));
    }
    if grants.len() > MAX_GRANTS {
        return Err(crate::Error::invalid(format!(
            "grants: at most {MAX_GRANTS} grants per key, got {}",
            grants.len()
        )));
    }
    grants.iter().map(|g| Grant::parse(g)).collect()
}

/// Checks a row filter by parsing it as a `where` document.
pub fn check_row_filter(filter: &Option<serde_json::Value>) -> crate::Result<()> {
    if let Some(f) = filter {
        crate::auth::rows::RowFilter::parse(f)?;
    }
    Ok(())
}

fn require_admin(caller: &Caller) -> ApiResult<()> {
    if caller
        .principal
        .grants
        .iter()
        .any(|g| g.allows_action(Action::Admin))
    {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "managing keys needs the admin action",
        ))
    }
}

/// Whether every grant of `record` is within the caller's admin grants.
fn manageable(caller: &Caller, record: &ApiKeyRecord) -> bool {
    record
        .grants
        .iter()
        .map(|g| Grant::parse(g))
        .collect::<crate::Result<Vec<_>>>()
        .is_ok_and(|grants| caller.principal.may_delegate(&grants))
}

#[utoipa::path(post, path = "/api/v2/admin/keys", tag = "admin",
    request_body = CreateKeyPayload,
    responses((status = 200, body = CreatedKeyResponse), (status = 400, body = ErrorResponse),
              (status = 403, body = ErrorResponse)))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateKeyPayload>,
) -> ApiResult<Json<CreatedKeyResponse>> {
    require_admin(&caller)?;
    let grants = parse_grants(&body.grants)?;
    if !caller.principal.may_delegate(&grants) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "grants: a key can only be given grants within the caller's own admin grants",
        ));
    }
    check_row_filter(&body.row_filter)?;
    if let Some(name) = &body.name {
        if name.len() > 128 || name.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "name: at most 128 characters, no control characters",
            ));
        }
    }
    let new = keys::mint(
        body.name,
        grants.iter().map(ToString::to_string).collect(),
        body.row_filter,
        now_ms(),
        body.expires_at_ms,
    );
    state.engine.catalog().create_api_key(&new.record).await?;
    caller.audit("key_created", Action::Admin, "*", &new.record.id);
    Ok(Json(CreatedKeyResponse {
        info: new.record.into(),
        key: new.key.to_string(),
    }))
}

#[utoipa::path(get, path = "/api/v2/admin/keys", tag = "admin",
    responses((status = 200, body = Vec<KeyResponse>), (status = 403, body = ErrorResponse)))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<KeyResponse>>> {
    require_admin(&caller)?;
    let keys = state.engine.catalog().list_api_keys().await?;
    Ok(Json(
        keys.into_iter()
            .filter(|k| manageable(&caller, k))
            .map(Into::into)
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v2/admin/keys/{key_id}", tag = "admin",
    params(("key_id" = String, Path)),
    responses((status = 200, body = KeyResponse), (status = 403, body = ErrorResponse),
              (status = 404, body = ErrorResponse)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyResponse>> {
    require_admin(&caller)?;
    keys::validate_key_id(&id)?;
    let catalog = state.engine.catalog();
    let missing = || ApiError::not_found(format!("key {id} does not exist"));
    let record = match catalog.get_api_key(&id).await {
        Ok(r) => r,
        Err(e) if e.code() == ErrorCode::NotFound => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    if !manageable(&caller, &record) {
        return Err(missing());
    }
    let revoked = catalog.revoke_api_key(&id, now_ms()).await?;
    if let Some(auth) = &state.config.auth {
        auth.forget(&id);
    }
    caller.audit("key_revoked", Action::Admin, "*", &id);
    Ok(Json(revoked.into()))
}
