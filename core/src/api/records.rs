//! Records of a collection (addressed by UUID): count, add, update, upsert, delete, get,
//! query (search is [`super::search`]).

use std::collections::HashSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use uuid::Uuid;

use super::auth::Caller;
use super::errors::{ApiError, ErrorResponse};
use super::extract::ApiJson;
use super::types::{
    include_of, AddCollectionRecordsPayload, CountParams, DeleteCollectionRecordsPayload,
    DeleteCollectionRecordsResponse, Empty, GetRequestPayload, GetResponse, IncludeField,
    QueryRequestPayload, QueryResponse, UpdateCollectionRecordsPayload,
    UpsertCollectionRecordsPayload,
};
use super::{ApiResult, AppState};
use crate::access::ScopedCollection;
use crate::auth::grants::Action;
use crate::engine::{DeleteRequest, GetRequest, QueryRequest};
use crate::model::{Filter, KnnIndex, Metadata, MetadataValue, OpKind, UpdateMetadata, WriteBatch};

/// `n_results` when the request gives none.
pub const DEFAULT_N_RESULTS: u32 = 10;

/// The largest `n_results` a query may ask for.
pub const MAX_N_RESULTS: u32 = 100_000;

const DEFAULT_GET_INCLUDE: [IncludeField; 2] = [IncludeField::Documents, IncludeField::Metadatas];
const DEFAULT_QUERY_INCLUDE: [IncludeField; 3] = [
    IncludeField::Documents,
    IncludeField::Metadatas,
    IncludeField::Distances,
];

type CollectionPath = Path<(String, String, String)>;

/// Add metadata as a merge: every key set. An empty map is no metadata.
fn add_metadatas(m: Option<Vec<Option<Metadata>>>) -> Option<Vec<Option<UpdateMetadata>>> {
    m.map(|list| {
        list.into_iter()
            .map(|m| {
                m.filter(|m| !m.is_empty())
                    .map(|m| m.into_iter().map(|(k, v)| (k, Some(v))).collect())
            })
            .collect()
    })
}

/// Update/upsert metadata: an empty map changes nothing.
fn merge_metadatas(m: Option<Vec<Option<UpdateMetadata>>>) -> Option<Vec<Option<UpdateMetadata>>> {
    m.map(|list| {
        list.into_iter()
            .map(|m| m.filter(|m| !m.is_empty()))
            .collect()
    })
}

/// The collection a record route names, as the caller may see and change it.
async fn scoped<'a>(
    state: &'a AppState,
    caller: &'a Caller,
    action: Action,
    (tenant, database, id): &(String, String, String),
) -> ApiResult<ScopedCollection<'a>> {
    super::collections::scoped(state, caller, action, tenant, database, id).await
}

/// With the HNSW index setting, a sparse vector in a write's metadata is refused as local
/// Chroma refuses it (501); with SPANN it is stored like any metadata value.
fn check_sparse_vectors(state: &AppState, batch: &WriteBatch) -> ApiResult<()> {
    if state.config.knn_index != KnnIndex::Hnsw {
        return Ok(());
    }
    let sparse_key = batch.metadatas.iter().flatten().flatten().find_map(|m| {
        m.iter()
            .find(|(_, v)| matches!(v, Some(MetadataValue::SparseVector(_))))
            .map(|(k, _)| k.clone())
    });
    match sparse_key {
        Some(key) => Err(ApiError::unimplemented(format!(
            "Sparse vector is not supported for local chroma: {key}"
        ))),
        None => Ok(()),
    }
}

/// The metadata a write of `kind` will actually write, when the batch brings a key or
/// value type the collection's schema lacks (api §3): add writes only new ids, update only
/// existing ones, upsert all. Read before the write; empty when there is nothing to add
/// (the common case costs no read).
async fn metadata_to_discover(
    scope: &ScopedCollection<'_>,
    batch: &WriteBatch,
    kind: OpKind,
) -> Vec<UpdateMetadata> {
    let Some(metadatas) = &batch.metadatas else {
        return Vec::new();
    };
    let schema = scope.collection().configuration.schema();
    if metadatas.len() != batch.ids.len() || !schema.has_new_keys(metadatas.iter().flatten()) {
        return Vec::new();
    }
    let existing: HashSet<String> = if kind == OpKind::Upsert {
        HashSet::new()
    } else {
        let request = GetRequest {
            ids: Some(batch.ids.clone()),
            ..Default::default()
        };
        match scope.get(request).await {
            Ok(found) => found.ids.into_iter().collect(),
            // The write then fails the same way.
            Err(_) => return Vec::new(),
        }
    };
    batch
        .ids
        .iter()
        .zip(metadatas)
        .filter(|(id, _)| match kind {
            OpKind::Add => !existing.contains(*id),
            OpKind::Update => existing.contains(*id),
            _ => true,
        })
        .filter_map(|(_, m)| m.clone())
        .collect()
}

/// Adds the metadata keys a successful write brought to the collection's schema,
/// so the next read shows them (api §3). The write stands whatever happens here.
async fn discover_keys(state: &AppState, id: Uuid, written: Vec<UpdateMetadata>) {
    if written.is_empty() {
        return;
    }
    if let Err(e) = state.engine.discover_keys(id, &written).await {
        tracing::warn!(collection = %id, error = %e, "discovered metadata keys not stored");
    }
}

/// 400 unless the batch fits the size this deployment enforces (Lambda: what fits its
/// payload limit; the local server enforces none, like Chroma's).
fn check_batch_size(state: &AppState, ids: &[String]) -> ApiResult<()> {
    match state.config.enforced_batch_size {
        Some(max) if ids.len() > max as usize => Err(ApiError::invalid(format!(
            "Batch size {} exceeds maximum batch size {max}",
            ids.len()
        ))),
        _ => Ok(()),
    }
}

#[utoipa::path(get,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/count",
    tag = "records",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path), CountParams),
    responses((status = 200, body = u64, content_type = "application/json"), (status = 404, body = ErrorResponse)))]
pub async fn count(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): CollectionPath,
    Query(_params): Query<CountParams>,
) -> ApiResult<Json<u64>> {
    let scope = scoped(&state, &caller, Action::Read, &path).await?;
    Ok(Json(scope.count().await?))
}

/// Adds records; ids that already exist are left unchanged. 201 on success.
#[utoipa::path(post,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/add",
    tag = "records",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path)),
    request_body = AddCollectionRecordsPayload,
    responses((status = 201, body = Empty), (status = 400, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): CollectionPath,
    ApiJson(body): ApiJson<AddCollectionRecordsPayload>,
) -> ApiResult<(StatusCode, Json<Empty>)> {
    let scope = scoped(&state, &caller, Action::Write, &path).await?;
    check_batch_size(&state, &body.ids)?;
    let batch = WriteBatch {
        ids: body.ids,
        embeddings: Some(body.embeddings.0),
        documents: body.documents,
        uris: body.uris,
        metadatas: add_metadatas(body.metadatas),
    };
    check_sparse_vectors(&state, &batch)?;
    let discovered = metadata_to_discover(&scope, &batch, OpKind::Add).await;
    scope.write(batch, OpKind::Add).await?;
    discover_keys(&state, scope.collection().id, discovered).await;
    Ok((StatusCode::CREATED, Json(Empty {})))
}

/// Merges into existing records (metadata keys set to `null` are removed); missing ids
/// are ignored.
#[utoipa::path(post,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/update",
    tag = "records",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path)),
    request_body = UpdateCollectionRecordsPayload,
    responses((status = 200, body = Empty), (status = 400, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): CollectionPath,
    ApiJson(body): ApiJson<UpdateCollectionRecordsPayload>,
) -> ApiResult<Json<Empty>> {
    let scope = scoped(&state, &caller, Action::Write, &path).await?;
    check_batch_size(&state, &body.ids)?;
    let batch = WriteBatch {
        ids: body.ids,
        embeddings: body.embeddings.map(|e| e.0),
        documents: body.documents,
        uris: body.uris,
        metadatas: merge_metadatas(body.metadatas),
    };
    check_sparse_vectors(&state, &batch)?;
    let discovered = metadata_to_discover(&scope, &batch, OpKind::Update).await;
    scope.write(batch, OpKind::Update).await?;
    discover_keys(&state, scope.collection().id, discovered).await;
    Ok(Json(Empty {}))
}

/// Inserts missing records and merges into existing ones.
#[utoipa::path(post,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/upsert",
    tag = "records",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path)),
    request_body = UpsertCollectionRecordsPayload,
    responses((status = 200, body = Empty), (status = 400, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn upsert(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): CollectionPath,
    ApiJson(body): ApiJson<UpsertCollectionRecordsPayload>,
) -> ApiResult<Json<Empty>> {
    let scope = scoped(&state, &caller, Action::Write, &path).await?;
    check_batch_size(&state, &body.ids)?;
    let batch = WriteBatch {
        ids: body.ids,
        embeddings: Some(body.embeddings.0),
        documents: body.documents,
        uris: body.uris,
        metadatas: merge_metadatas(body.metadatas),
    };
    check_sparse_vectors(&state, &batch)?;
    let discovered = metadata_to_discover(&scope, &batch, OpKind::Upsert).await;
    scope.write(batch, OpKind::Upsert).await?;
    discover_keys(&state, scope.collection().id, discovered).await;
    Ok(Json(Empty {}))
}

/// Deletes by ids AND filter; `{}` deletes nothing.
#[utoipa::path(post,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/delete",
    tag = "records",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path)),
    request_body = DeleteCollectionRecordsPayload,
    responses((status = 200, body = DeleteCollectionRecordsResponse),
              (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): CollectionPath,
    ApiJson(body): ApiJson<DeleteCollectionRecordsPayload>,
) -> ApiResult<Json<DeleteCollectionRecordsResponse>> {
    let scope = scoped(&state, &caller, Action::Write, &path).await?;
    let filter = Filter::parse(body.where_.as_ref(), body.where_document.as_ref())?;
    let request = DeleteRequest {
        ids: body.ids,
        filter,
        limit: body.limit,
    };
    let deleted = scope.delete(request).await?;
    Ok(Json(DeleteCollectionRecordsResponse { deleted }))
}

/// Records in insertion order, filtered, then paged.
#[utoipa::path(post,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/get",
    tag = "records",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path)),
    request_body = GetRequestPayload,
    responses((status = 200, body = GetResponse), (status = 400, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): CollectionPath,
    ApiJson(body): ApiJson<GetRequestPayload>,
) -> ApiResult<Json<GetResponse>> {
    let scope = scoped(&state, &caller, Action::Read, &path).await?;
    let filter = Filter::parse(body.where_.as_ref(), body.where_document.as_ref())?;
    let include = body.include.unwrap_or_else(|| DEFAULT_GET_INCLUDE.to_vec());
    let request = GetRequest {
        ids: body.ids,
        filter,
        limit: body.limit,
        offset: body.offset.unwrap_or(0),
        include: include_of(&include),
    };
    let r = scope.get(request).await?;
    Ok(Json(GetResponse {
        ids: r.ids,
        embeddings: r.embeddings,
        documents: r.documents,
        uris: r.uris,
        metadatas: r.metadatas,
        include,
    }))
}

/// The engine's query from a query body (its `include` resolved).
fn query_request(body: QueryRequestPayload, include: &[IncludeField]) -> ApiResult<QueryRequest> {
    let filter = Filter::parse(body.where_.as_ref(), body.where_document.as_ref())?;
    let n_results = body.n_results.unwrap_or(DEFAULT_N_RESULTS);
    if n_results > MAX_N_RESULTS {
        return Err(ApiError::invalid(format!(
            "n_results must be at most {MAX_N_RESULTS}, got {n_results}"
        )));
    }
    Ok(QueryRequest {
        embeddings: body.query_embeddings,
        n_results,
        ids: body.ids,
        filter,
        include: include_of(include),
    })
}

/// The `n_results` nearest records to each query embedding that pass the filter.
#[utoipa::path(post,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/query",
    tag = "records",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path)),
    request_body = QueryRequestPayload,
    responses((status = 200, body = QueryResponse), (status = 400, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn query(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): CollectionPath,
    ApiJson(mut body): ApiJson<QueryRequestPayload>,
) -> ApiResult<Json<QueryResponse>> {
    let include = body
        .include
        .take()
        .unwrap_or_else(|| DEFAULT_QUERY_INCLUDE.to_vec());
    let parsed = query_request(body, &include);
    // Chroma's local executor fails a query whose `ids`, without a `where` or
    // `where_document`, name a record that is not (or no longer) there — once the
    // collection has records at all (api §6): such a query reads them first.
    let reads_ids = parsed
        .as_ref()
        .is_ok_and(|r| r.filter.is_none() && r.ids.as_ref().is_some_and(|ids| !ids.is_empty()));
    let r = match parsed {
        Ok(request) if !reads_ids => {
            let (tenant, database, id) = &path;
            ScopedCollection::open_and_query(
                &state.engine,
                &caller.principal,
                tenant,
                database,
                id,
                request,
            )
            .await?
        }
        // The collection's errors come before the request's, as Chroma orders them.
        parsed => {
            let scope = scoped(&state, &caller, Action::Read, &path).await?;
            let request = parsed?;
            if let Some(ids) = request.ids.as_ref().filter(|_| reads_ids) {
                if scope.collection().dimension.is_some() {
                    let found = scope
                        .get(GetRequest {
                            ids: Some(ids.clone()),
                            ..Default::default()
                        })
                        .await?;
                    let found: HashSet<&str> = found.ids.iter().map(String::as_str).collect();
                    if ids.iter().any(|id| !found.contains(id.as_str())) {
                        return Err(ApiError {
                            status: StatusCode::INTERNAL_SERVER_ERROR,
                            name: "InternalError",
                            message: "Error executing plan: Internal error: Error finding id"
                                .into(),
                        });
                    }
                }
            }
            scope.query(request).await?
        }
    };
    Ok(Json(QueryResponse {
        ids: r.ids,
        embeddings: r.embeddings,
        documents: r.documents,
        uris: r.uris,
        metadatas: r.metadatas,
        distances: r.distances,
        include,
    }))
}
