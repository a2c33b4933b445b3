//! Collections of a database: create (or get-or-create), read by name or id, list,
//! count, modify, delete, fork, fork count, indexing status; the cloud-only routes that
//! remain (attached functions, lookup by resource name) answer 501.
//!
//! `GET` and `DELETE .../collections/{x}` take the collection's *name*; `PUT` and every
//! record route take its UUID (api §9, see [`super`]).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::json;

use super::auth::Caller;
use super::errors::{ApiError, ErrorResponse};
use super::extract::ApiJson;
use super::types::{
    CollectionResponse, CreateCollectionPayload, Empty, ForkCollectionPayload, ForkCountResponse,
    IndexStatusResponse, ListParams, UpdateCollectionConfigurationPayload, UpdateCollectionPayload,
};
use super::{ApiResult, AppState};
use crate::access::{self, ScopedCollection};
use crate::auth::grants::Action;
use crate::catalog::CollectionUpdate;
use crate::model::configuration::creation_configuration;
use crate::model::schema::{HnswUpdate, SpannUpdate};
use crate::model::validate::{collection_metadata_from_json, hnsw_update_from_json};
use crate::model::{Collection, CollectionConfiguration, IfExists, KnnIndex, Metadata};

/// The collection `id` of `tenant`/`database` as the caller may see and change it,
/// checked for `action` (see [`ScopedCollection::open`]).
pub(super) async fn scoped<'a>(
    state: &'a AppState,
    caller: &'a Caller,
    action: Action,
    tenant: &str,
    database: &str,
    id: &str,
) -> ApiResult<ScopedCollection<'a>> {
    Ok(ScopedCollection::open(
        &state.engine,
        &caller.principal,
        action,
        tenant,
        database,
        id,
    )
    .await?)
}

/// Collection metadata through the model's validation (`{}` is rejected).
fn collection_metadata(m: Option<Metadata>) -> ApiResult<Option<Metadata>> {
    match m {
        None => Ok(None),
        Some(m) => {
            let v = serde_json::to_value(m)
                .map_err(|e| ApiError::invalid(format!("invalid metadata: {e}")))?;
            Ok(collection_metadata_from_json(&v)?)
        }
    }
}

#[utoipa::path(get, path = "/api/v2/tenants/{tenant}/databases/{database}/collections",
    tag = "collections",
    params(("tenant" = String, Path), ("database" = String, Path), ListParams),
    responses((status = 200, body = Vec<CollectionResponse>), (status = 404, body = ErrorResponse)))]
pub async fn list_collections(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, database)): Path<(String, String)>,
    Query(page): Query<ListParams>,
) -> ApiResult<Json<Vec<CollectionResponse>>> {
    caller.require(Action::Read, &tenant, Some(&database), None)?;
    let offset = page.offset.unwrap_or(0);
    let list =
        if caller
            .principal
            .allows_everything_under(Action::Read, Some(&tenant), Some(&database))
        {
            state
                .engine
                .list_collections(&tenant, &database, page.limit, offset)
                .await?
        } else {
            // Only what the caller may read, paged after filtering.
            readable_collections(&state, &caller, &tenant, &database)
                .await?
                .into_iter()
                .skip(offset as usize)
                .take(page.limit.map_or(usize::MAX, |l| l as usize))
                .collect()
        };
    let responses = futures::future::try_join_all(list.into_iter().map(|c| respond(&state, c)));
    Ok(Json(responses.await?))
}

/// A collection as a response. With `--knn-index spann` its `version` is Chroma Cloud's:
/// the compactions that have changed its index (one manifest read); local Chroma always
/// answers 0.
async fn respond(state: &AppState, c: Collection) -> ApiResult<CollectionResponse> {
    let version = match state.config.knn_index {
        KnnIndex::Spann => state.engine.index_version(&c).await?,
        KnnIndex::Hnsw => 0,
    };
    let mut r = CollectionResponse::from(c);
    r.version = i32::try_from(version).unwrap_or(i32::MAX);
    Ok(r)
}

async fn readable_collections(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    database: &str,
) -> ApiResult<Vec<Collection>> {
    Ok(state
        .engine
        .list_collections(tenant, database, None, 0)
        .await?
        .into_iter()
        .filter(|c| {
            caller
                .principal
                .allows(Action::Read, tenant, Some(database), Some(&c.name))
        })
        .collect())
}

#[utoipa::path(get, path = "/api/v2/tenants/{tenant}/databases/{database}/collections_count",
    tag = "collections",
    params(("tenant" = String, Path), ("database" = String, Path)),
    responses((status = 200, body = u64, content_type = "application/json"), (status = 404, body = ErrorResponse)))]
pub async fn count_collections(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, database)): Path<(String, String)>,
) -> ApiResult<Json<u64>> {
    caller.require(Action::Read, &tenant, Some(&database), None)?;
    if caller
        .principal
        .allows_everything_under(Action::Read, Some(&tenant), Some(&database))
    {
        return Ok(Json(
            state.engine.count_collections(&tenant, &database).await?,
        ));
    }
    let visible = readable_collections(&state, &caller, &tenant, &database).await?;
    Ok(Json(visible.len() as u64))
}

#[utoipa::path(post, path = "/api/v2/tenants/{tenant}/databases/{database}/collections",
    tag = "collections",
    params(("tenant" = String, Path), ("database" = String, Path)),
    request_body = CreateCollectionPayload,
    responses((status = 200, body = CollectionResponse), (status = 400, body = ErrorResponse),
              (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn create_collection(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, database)): Path<(String, String)>,
    ApiJson(body): ApiJson<CreateCollectionPayload>,
) -> ApiResult<Json<CollectionResponse>> {
    caller.require(Action::Write, &tenant, Some(&database), Some(&body.name))?;
    let metadata = collection_metadata(body.metadata)?;
    let configuration = creation_configuration(
        body.configuration.unwrap_or_default(),
        body.schema.as_ref(),
        metadata.as_ref(),
        state.config.knn_index,
    )?;
    let c = state
        .engine
        .create_collection(
            &tenant,
            &database,
            &body.name,
            metadata,
            configuration,
            if body.get_or_create.unwrap_or(false) {
                IfExists::Get
            } else {
                IfExists::Fail
            },
        )
        .await?;
    caller.audit(
        "collection_created",
        Action::Write,
        &tenant,
        &format!("{tenant}/{database}/{}", c.name),
    );
    Ok(Json(respond(&state, c).await?))
}

/// By name.
#[utoipa::path(get,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_name}",
    tag = "collections",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_name" = String, Path)),
    responses((status = 200, body = CollectionResponse), (status = 404, body = ErrorResponse)))]
pub async fn get_collection(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, database, name)): Path<(String, String, String)>,
) -> ApiResult<Json<CollectionResponse>> {
    caller.require(Action::Read, &tenant, Some(&database), Some(&name))?;
    let c = state
        .engine
        .get_collection(&tenant, &database, &name)
        .await?;
    Ok(Json(respond(&state, c).await?))
}

#[utoipa::path(get,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/by-id/{collection_id}",
    tag = "collections",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path)),
    responses((status = 200, body = CollectionResponse), (status = 400, body = ErrorResponse),
              (status = 404, body = ErrorResponse)))]
pub async fn get_collection_by_id(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, database, id)): Path<(String, String, String)>,
) -> ApiResult<Json<CollectionResponse>> {
    let collection = match scoped(&state, &caller, Action::Read, &tenant, &database, &id).await {
        Ok(c) => c.into_collection(),
        // Chroma's text here has no period, unlike on the collection's other routes.
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            return Err(ApiError::not_found(format!(
                "Collection [{id}] does not exist"
            )))
        }
        Err(e) => return Err(e),
    };
    Ok(Json(respond(&state, collection).await?))
}

/// `current` with a modify's `new_configuration`: the HNSW fields given (checked), the
/// SPANN fields given (checked; a SPANN collection's graph follows them) and the
/// embedding function, in the configuration and both vector indexes of the schema.
fn modified_configuration(
    current: &CollectionConfiguration,
    cfg: &UpdateCollectionConfigurationPayload,
) -> ApiResult<CollectionConfiguration> {
    let mut next = current.clone();
    let mut hnsw_update = HnswUpdate::default();
    if let Some(h) = &cfg.hnsw {
        next.hnsw = hnsw_update_from_json(&json!({ "hnsw": h }), &current.hnsw)?;
        hnsw_update = HnswUpdate {
            ef_search: h.ef_search,
            max_neighbors: h.max_neighbors,
            num_threads: h.num_threads,
            resize_factor: h.resize_factor,
            sync_threshold: h.sync_threshold,
            batch_size: h.batch_size,
        };
    }
    let spann_update = cfg
        .spann
        .as_ref()
        .map(SpannUpdate::from)
        .unwrap_or_default();
    spann_update.check()?;
    if let Some(spann) = next.spann.as_mut() {
        // A SPANN collection's graph follows its SPANN settings only.
        spann_update.apply(spann);
        next.hnsw = spann.hnsw_configuration(next.hnsw.space);
    }
    if let Some(ef) = &cfg.embedding_function {
        next.embedding_function = Some(ef.clone());
    }
    // Both vector indexes of the schema change with it (api §3).
    if let Some(schema) = next.schema.as_mut() {
        schema.apply_update(&hnsw_update, &spann_update, cfg.embedding_function.as_ref());
    }
    Ok(next)
}

/// By id: rename, replace the metadata, change the mutable HNSW settings or the
/// embedding function.
#[utoipa::path(put,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}",
    tag = "collections",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path)),
    request_body = UpdateCollectionPayload,
    responses((status = 200, body = Empty), (status = 400, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse),
              (status = 422, body = ErrorResponse)))]
pub async fn update_collection(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, database, id)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<UpdateCollectionPayload>,
) -> ApiResult<Json<Empty>> {
    let scope = scoped(&state, &caller, Action::Write, &tenant, &database, &id).await?;
    scope.require_all_rows(Action::Write)?;
    let current = scope.into_collection();
    if let Some(new_name) = &body.new_name {
        caller.require(Action::Write, &tenant, Some(&database), Some(new_name))?;
    }
    let metadata = collection_metadata(body.new_metadata)?;
    state
        .engine
        .modify_collection(current.id, |current| {
            let configuration = body
                .new_configuration
                .as_ref()
                .map(|cfg| modified_configuration(&current.configuration, cfg))
                .transpose()?;
            ApiResult::Ok(Some(CollectionUpdate {
                name: body.new_name.clone(),
                metadata: metadata.clone(),
                configuration,
                expected_configuration: None,
            }))
        })
        .await?;
    caller.audit(
        "collection_modified",
        Action::Write,
        &tenant,
        &format!("{tenant}/{database}/{}", current.name),
    );
    Ok(Json(Empty {}))
}

/// By name; the collection's data key and objects are destroyed.
#[utoipa::path(delete,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_name}",
    tag = "collections",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_name" = String, Path)),
    responses((status = 200, body = Empty), (status = 404, body = ErrorResponse)))]
pub async fn delete_collection(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, database, name)): Path<(String, String, String)>,
) -> ApiResult<Json<Empty>> {
    caller.require(Action::Write, &tenant, Some(&database), Some(&name))?;
    access::require_all_rows(
        &caller.principal,
        Action::Write,
        &tenant,
        Some(&database),
        Some(&name),
    )?;
    state
        .engine
        .delete_collection(&tenant, &database, &name)
        .await?;
    caller.audit(
        "collection_deleted",
        Action::Write,
        &tenant,
        &format!("{tenant}/{database}/{name}"),
    );
    Ok(Json(Empty {}))
}

/// Operations still in the log (`num_unindexed_ops`) versus folded into segments.
#[utoipa::path(get,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/indexing_status",
    tag = "collections",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path)),
    responses((status = 200, body = IndexStatusResponse), (status = 404, body = ErrorResponse)))]
pub async fn indexing_status(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, database, id)): Path<(String, String, String)>,
) -> ApiResult<Json<IndexStatusResponse>> {
    let scope = scoped(&state, &caller, Action::Read, &tenant, &database, &id).await?;
    let s = scope.indexing_status().await?;
    let op_indexing_progress = if s.total_ops == 0 {
        1.0
    } else {
        s.indexed_ops as f32 / s.total_ops as f32
    };
    Ok(Json(IndexStatusResponse {
        num_indexed_ops: s.indexed_ops,
        num_unindexed_ops: s.unindexed_ops,
        total_ops: s.total_ops,
        op_indexing_progress,
    }))
}

/// A copy-on-write copy of the collection, as Chroma's cloud makes one: the same
/// configuration, metadata and records under a new name, sharing the source's objects
/// (see `engine/fork.rs`). The caller must read every row of the source (a key limited
/// to some rows may not copy the others out) and may write the new name.
#[utoipa::path(post,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/fork",
    tag = "collections",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path)),
    request_body = ForkCollectionPayload,
    responses((status = 200, body = CollectionResponse), (status = 400, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
pub async fn fork_collection(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, database, id)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<ForkCollectionPayload>,
) -> ApiResult<Json<CollectionResponse>> {
    let scope = scoped(&state, &caller, Action::Read, &tenant, &database, &id).await?;
    scope.require_all_rows(Action::Read)?;
    caller.require(
        Action::Write,
        &tenant,
        Some(&database),
        Some(&body.new_name),
    )?;
    access::require_all_rows(
        &caller.principal,
        Action::Write,
        &tenant,
        Some(&database),
        Some(&body.new_name),
    )?;
    let source = scope.into_collection();
    let fork = state
        .engine
        .fork_collection(source.id, &body.new_name)
        .await?;
    caller.audit(
        "collection_forked",
        Action::Write,
        &tenant,
        &format!("{tenant}/{database}/{} from {}", fork.name, source.name),
    );
    Ok(Json(respond(&state, fork).await?))
}

/// Forks made in the collection's lineage: the same from the source and from each fork.
#[utoipa::path(get,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/fork_count",
    tag = "collections",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path)),
    responses((status = 200, body = ForkCountResponse), (status = 404, body = ErrorResponse)))]
pub async fn fork_count(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, database, id)): Path<(String, String, String)>,
) -> ApiResult<Json<ForkCountResponse>> {
    let scope = scoped(&state, &caller, Action::Read, &tenant, &database, &id).await?;
    let count = state.engine.fork_count(scope.collection().id).await?;
    Ok(Json(ForkCountResponse { count }))
}

pub async fn attach_function(Path(_p): Path<(String, String, String)>) -> ApiError {
    ApiError::unimplemented("attached functions are not supported")
}

pub async fn get_attached_function(Path(_p): Path<(String, String, String, String)>) -> ApiError {
    ApiError::unimplemented("attached functions are not supported")
}

pub async fn detach_function(Path(_p): Path<(String, String, String, String)>) -> ApiError {
    ApiError::unimplemented("attached functions are not supported")
}

pub async fn get_collection_by_crn(Path(_crn): Path<String>) -> ApiError {
    ApiError::unimplemented("getting a collection by CRN is not supported")
}
