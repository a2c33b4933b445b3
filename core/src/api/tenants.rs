//! Tenants: create and read.

use axum::extract::{Path, State};
use axum::Json;

use super::auth::Caller;
use super::errors::{ApiError, ErrorResponse};
use super::extract::ApiJson;
use super::types::{CreateTenantPayload, Empty, GetTenantResponse};
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
        resource_name: None,
    }))
}

/// Not part of the 1.5.9 client; tenants have no mutable fields here.
pub async fn update_tenant(Path(_tenant): Path<String>) -> ApiError {
    ApiError::unimplemented("updating a tenant is not supported")
}
