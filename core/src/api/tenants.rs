//! Tenants: create, read and set the resource name.

use axum::extract::{Path, State};
use axum::Json;

use super::auth::Caller;
use super::errors::ErrorResponse;
use super::extract::ApiJson;
use super::types::{CreateTenantPayload, Empty, GetTenantResponse, UpdateTenantPayload};
use super::{ApiResult, AppState};
use crate::auth::grants::Action;

#[utoipa::path(post, path = "/api/v2/tenants", tag = "tenants",
    request_body = CreateTenantPayload,
    responses((status = 200, body = Empty), (status = 400, body = ErrorResponse),
              (status = 409, body = ErrorResponse)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTenantPayload>,
) -> ApiResult<Json<Empty>> {
    caller.require(Action::Admin, &body.name, None, None)?;
    state.engine.create_tenant(&body.name).await?;
    caller.audit("tenant_created", Action::Admin, &body.name, &body.name);
    Ok(Json(Empty {}))
}

#[utoipa::path(get, path = "/api/v2/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 200, body = GetTenantResponse), (status = 404, body = ErrorResponse)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<GetTenantResponse>> {
    caller.require(Action::Read, &tenant, None, None)?;
    let t = state.engine.get_tenant(&tenant).await?;
    Ok(Json(GetTenantResponse {
        name: t.name,
        resource_name: t.resource_name,
    }))
}

/// Sets the tenant's resource name, once (Chroma's `update_tenant`; not used by the 1.5.9
/// Python client). The same name again is no change; another one is 409.
#[utoipa::path(patch, path = "/api/v2/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path)),
    request_body = UpdateTenantPayload,
    responses((status = 200, body = Empty), (status = 404, body = ErrorResponse),
              (status = 409, body = ErrorResponse)))]
pub async fn update_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    ApiJson(body): ApiJson<UpdateTenantPayload>,
) -> ApiResult<Json<Empty>> {
    caller.require(Action::Admin, &tenant, None, None)?;
    crate::access::require_all_rows(&caller.principal, Action::Admin, &tenant, None, None)?;
    state
        .engine
        .set_tenant_resource_name(&tenant, &body.resource_name)
        .await?;
    caller.audit("tenant_updated", Action::Admin, &tenant, &tenant);
    Ok(Json(Empty {}))
}
