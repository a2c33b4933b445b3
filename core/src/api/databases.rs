//! Databases of a tenant: create, list, read, delete.

use axum::extract::{Path, Query, State};
use axum::Json;

use super::auth::Caller;
use super::errors::ErrorResponse;
use super::extract::ApiJson;
use super::types::{CreateDatabasePayload, DatabaseResponse, Empty, ListParams};
use super::{ApiResult, AppState};
use crate::auth::grants::Action;

#[utoipa::path(post, path = "/api/v2/tenants/{tenant}/databases", tag = "databases",
    params(("tenant" = String, Path)),
    request_body = CreateDatabasePayload,
    responses((status = 200, body = Empty), (status = 400, body = ErrorResponse),
              (status = 409, body = ErrorResponse)))]
pub async fn create_database(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    ApiJson(body): ApiJson<CreateDatabasePayload>,
) -> ApiResult<Json<Empty>> {
    caller.require(Action::Admin, &tenant, Some(&body.name), None)?;
    state.engine.create_database(&tenant, &body.name).await?;
    caller.audit(
        "database_created",
        Action::Admin,
        &tenant,
        &format!("{tenant}/{}", body.name),
    );
    Ok(Json(Empty {}))
}

#[utoipa::path(get, path = "/api/v2/tenants/{tenant}/databases", tag = "databases",
    params(("tenant" = String, Path), ListParams),
    responses((status = 200, body = Vec<DatabaseResponse>), (status = 404, body = ErrorResponse)))]
pub async fn list_databases(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(page): Query<ListParams>,
) -> ApiResult<Json<Vec<DatabaseResponse>>> {
    caller.require(Action::Read, &tenant, None, None)?;
    let whole_tenant = caller.principal.grants.iter().any(|g| {
        g.allows(Action::Read, &tenant, None, None) && g.database == crate::auth::grants::Part::Any
    });
    let offset = page.offset.unwrap_or(0);
    let dbs = if whole_tenant {
        state
            .engine
            .list_databases(&tenant, page.limit, offset)
            .await?
    } else {
        // Only the databases the caller may read, paged after filtering.
        state
            .engine
            .list_databases(&tenant, None, 0)
            .await?
            .into_iter()
            .filter(|d| {
                caller
                    .principal
                    .allows(Action::Read, &tenant, Some(&d.name), None)
            })
            .skip(offset as usize)
            .take(page.limit.map_or(usize::MAX, |l| l as usize))
            .collect()
    };
    Ok(Json(dbs.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/api/v2/tenants/{tenant}/databases/{database}", tag = "databases",
    params(("tenant" = String, Path), ("database" = String, Path)),
    responses((status = 200, body = DatabaseResponse), (status = 404, body = ErrorResponse)))]
pub async fn get_database(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, database)): Path<(String, String)>,
) -> ApiResult<Json<DatabaseResponse>> {
    caller.require(Action::Read, &tenant, Some(&database), None)?;
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
    caller: Caller,
    Path((tenant, database)): Path<(String, String)>,
) -> ApiResult<Json<Empty>> {
    caller.require(Action::Admin, &tenant, Some(&database), None)?;
    crate::access::require_all_rows(
        &caller.principal,
        Action::Admin,
        &tenant,
        Some(&database),
        None,
    )?;
    state.engine.delete_database(&tenant, &database).await?;
    caller.audit(
        "database_deleted",
        Action::Admin,
        &tenant,
        &format!("{tenant}/{database}"),
    );
    Ok(Json(Empty {}))
}
