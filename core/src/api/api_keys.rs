//! API key administration: `POST/GET /api/v2/admin/keys`, `DELETE /api/v2/admin/keys/{id}`.
//!
//! Needs the admin action; what a caller may mint, list and revoke is
//! [`crate::auth::delegation`]'s rule. The secret is returned once, by the create call;
//! listings show ids, names, grants, row filters and times only.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::errors::{ApiError, ErrorResponse};
use super::extract::ApiJson;
use super::{ApiResult, AppState};
use crate::auth::api_keys;
use crate::auth::delegation::KeyRequest;
use crate::auth::grants::Action;
use crate::catalog::ApiKeyRecord;
use crate::clock::now_ms;
use crate::error::ErrorCode;

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

fn require_admin(caller: &Caller) -> ApiResult<()> {
    if caller.principal.is_admin_somewhere() {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "managing keys needs the admin action",
        ))
    }
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
    let request = KeyRequest {
        grants: body.grants,
        name: body.name,
        row_filter: body.row_filter,
        expires_at_ms: body.expires_at_ms,
    };
    let new = caller.principal.mint_key(request, now_ms())?;
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
            .filter(|k| caller.principal.may_manage(k))
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
    api_keys::validate_key_id(&id)?;
    let catalog = state.engine.catalog();
    let missing = || ApiError::not_found(format!("key {id} does not exist"));
    let record = match catalog.get_api_key(&id).await {
        Ok(r) => r,
        Err(e) if e.code() == ErrorCode::NotFound => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    if !caller.principal.may_manage(&record) {
        return Err(missing());
    }
    let revoked = catalog.revoke_api_key(&id, now_ms()).await?;
    if let Some(auth) = &state.config.auth {
        auth.forget(&id);
    }
    caller.audit("key_revoked", Action::Admin, "*", &id);
    Ok(Json(revoked.into()))
}
