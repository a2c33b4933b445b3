//! Databases of a tenant: create, list, read, delete.

use axum::extract::{Path, Query, State};
use axum::Json;

use super::errors::ErrorResponse;
use super::extract::ApiJson;
use super::types::{CreateDatabasePayload, DatabaseResponse, Empty, ListParams};
use super::{ApiResult, AppState};

#[utoipa::path(post, path = "/api/v2/tenants/{tenant}/databases", tag = "databases",
    params(("tenant" = String, Path)),
    request_body = CreateDatabasePayload,
    responses((status = 200, body = Empty), (status = 400, body = ErrorResponse),
              (status = 409, body = ErrorResponse)))]
pub async fn create_database(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    ApiJson(body): ApiJson<CreateDatabasePayload>,
) -> ApiResult<Json<Empty>> {
    state.engine.create_database(&tenant, &body.name).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(get, path = "/api/v2/tenants/{tenant}/databases", tag = "databases",
    params(("tenant" = String, Path), ListParams),
    responses((status = 200, body = Vec<DatabaseResponse>), (status = 404, body = ErrorResponse)))]
pub async fn list_databases(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Query(page): Query<ListParams>,
) -> ApiResult<Json<Vec<DatabaseResponse>>> {
    let dbs = state
        .engine
        .list_databases(&tenant, page.limit, page.offset.unwrap_or(0))
        .await?;
    Ok(Json(dbs.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/api/v2/tenants/{tenant}/databases/{database}", tag = "databases",
    params(("tenant" = String, Path), ("database" = String, Path)),
    responses((status = 200, body = DatabaseResponse), (status = 404, body = ErrorResponse)))]
pub async fn get_database(
    State(state): State<AppState>,
    Path((tenant, database)): Path<(String, String)>,
) -> ApiResult<Json<DatabaseResponse>> {
    Ok(Json(
        state.engine.get_database(&tenant, &database).await?.into(),
    ))
}

/// Deletes the database and every collection in it.
#[utoipa::path(delete, path = "/api/v2/tenants/{tenant}/databases/{database}", tag = "databases",
    params(("tenant" = String, Path), ("database" = String, Path)),
    responses((status = 200, body = Empty), (status = 404, body = ErrorResponse)))]
pub async fn delete_database(
    State(state): State<AppState>,
    Path((tenant, database)): Path<(String, String)>,
) -> ApiResult<Json<Empty>> {
    state.engine.delete_database(&tenant, &database).await?;
    Ok(Json(Empty {}))
}
