//! Records of a collection (addressed by UUID): count, add, update, upsert, delete, get,
//! query; search answers 501 like local Chroma.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;

use super::auth::Caller;
use super::collections::scoped_collection;
use super::errors::{ApiError, ErrorResponse};
use super::extract::ApiJson;
use super::types::{
    include_of, AddCollectionRecordsPayload, CountParams, DeleteCollectionRecordsPayload,
    DeleteCollectionRecordsResponse, Empty, GetRequestPayload, GetResponse, IncludeField,
    QueryRequestPayload, QueryResponse, UpdateCollectionRecordsPayload,
    UpsertCollectionRecordsPayload,
};
use super::{ApiResult, AppState};
use crate::auth::grants::Action;
use crate::auth::rows::RowFilter;
use crate::engine::{
    DeleteRequest, Engine, GetRequest, GetResult, Include, QueryRequest, QueryResult,
};
use crate::model::{Collection, Filter, Metadata, OpKind, Record, UpdateMetadata, WriteBatch};

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

/// The records of one collection as one caller may see and change them: every read and
/// delete goes through [`Rows`], so the caller's row filter (if any) is ANDed into it, and
/// every write is checked against it before anything is written.
struct Rows<'a> {
    engine: &'a Engine,
    caller: &'a Caller,
    collection: Collection,
}

impl<'a> Rows<'a> {
    /// The collection `id` checked for `action` (see [`scoped_collection`]).
    async fn open(
        state: &'a AppState,
        caller: &'a Caller,
        action: Action,
        (tenant, database, id): &(String, String, String),
    ) -> ApiResult<Self> {
        let collection = scoped_collection(state, caller, action, tenant, database, id).await?;
        Ok(Self {
            engine: &state.engine,
            caller,
            collection,
        })
    }

    fn row_filter(&self) -> Option<&'a RowFilter> {
        self.caller.principal.row_filter.as_ref()
    }

    /// `filter` AND the caller's row filter.
    fn restrict(&self, filter: Option<Filter>) -> Option<Filter> {
        match self.row_filter() {
            Some(rf) => Some(rf.restrict(filter)),
            None => filter,
        }
    }

    async fn count(&self) -> ApiResult<u64> {
        if self.row_filter().is_none() {
            return Ok(self.engine.count(&self.collection).await?);
        }
        let visible = self
            .get(GetRequest {
                include: Include::none(),
                ..GetRequest::default()
            })
            .await?;
        Ok(visible.ids.len() as u64)
    }

    async fn get(&self, mut request: GetRequest) -> ApiResult<GetResult> {
        request.filter = self.restrict(request.filter);
        Ok(self.engine.get(&self.collection, request).await?)
    }

    async fn query(&self, mut request: QueryRequest) -> ApiResult<QueryResult> {
        request.filter = self.restrict(request.filter);
        Ok(self.engine.query(&self.collection, request).await?)
    }

    async fn delete(&self, mut request: DeleteRequest) -> ApiResult<u64> {
        // Requests the engine answers without reading records (`{}` deletes nothing, a
        // limit without a filter is an error) keep their meaning.
        let selects = request.filter.is_some()
            || (request.limit.is_none() && request.ids.as_ref().is_some_and(|i| !i.is_empty()));
        if selects {
            request.filter = self.restrict(request.filter);
        }
        Ok(self.engine.delete(&self.collection, request).await?)
    }

    /// Validates `batch`, checks it against the caller's row filter (reading the records
    /// it touches) and commits it as one log batch, or refuses it whole.
    async fn write(&self, batch: WriteBatch, kind: OpKind) -> ApiResult<()> {
        let (ops, dim) = batch.into_operations(kind)?;
        if ops.is_empty() {
            return Ok(());
        }
        if let Some(rf) = self.row_filter() {
            let touched = GetRequest {
                ids: Some(ops.iter().map(|o| o.id.clone()).collect()),
                include: Include {
                    documents: true,
                    metadatas: true,
                    ..Include::none()
                },
                ..GetRequest::default()
            };
            let found = self.engine.get(&self.collection, touched).await?;
            let existing = records_by_id(found);
            if let Err(e) = rf.check_writes(&ops, &existing) {
                let c = &self.collection;
                self.caller.audit_denied(
                    Action::Write,
                    &c.tenant,
                    Some(&c.database),
                    Some(&c.name),
                );
                return Err(e.into());
            }
        }
        Ok(self.engine.commit_ops(&self.collection, ops, dim).await?)
    }
}

/// The records of a get that included documents and metadatas, by id.
fn records_by_id(found: GetResult) -> HashMap<String, Record> {
    let n = found.ids.len();
    let mut documents = found.documents.unwrap_or_else(|| vec![None; n]).into_iter();
    let mut metadatas = found.metadatas.unwrap_or_else(|| vec![None; n]).into_iter();
    found
        .ids
        .into_iter()
        .map(|id| {
            let record = Record {
                id: id.clone(),
                embedding: Vec::new(),
                document: documents.next().flatten(),
                uri: None,
                metadata: metadatas.next().flatten(),
            };
            (id, record)
        })
        .collect()
}

#[utoipa::path(get,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/count",
    tag = "records",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path), CountParams),
    responses((status = 200, body = u64), (status = 404, body = ErrorResponse)))]
pub async fn count(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): CollectionPath,
    Query(_params): Query<CountParams>,
) -> ApiResult<Json<u64>> {
    let rows = Rows::open(&state, &caller, Action::Read, &path).await?;
    Ok(Json(rows.count().await?))
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
    let rows = Rows::open(&state, &caller, Action::Write, &path).await?;
    let batch = WriteBatch {
        ids: body.ids,
        embeddings: Some(body.embeddings.0),
        documents: body.documents,
        uris: body.uris,
        metadatas: add_metadatas(body.metadatas),
    };
    rows.write(batch, OpKind::Add).await?;
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
    let rows = Rows::open(&state, &caller, Action::Write, &path).await?;
    let batch = WriteBatch {
        ids: body.ids,
        embeddings: body.embeddings.map(|e| e.0),
        documents: body.documents,
        uris: body.uris,
        metadatas: merge_metadatas(body.metadatas),
    };
    rows.write(batch, OpKind::Update).await?;
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
    let rows = Rows::open(&state, &caller, Action::Write, &path).await?;
    let batch = WriteBatch {
        ids: body.ids,
        embeddings: Some(body.embeddings.0),
        documents: body.documents,
        uris: body.uris,
        metadatas: merge_metadatas(body.metadatas),
    };
    rows.write(batch, OpKind::Upsert).await?;
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
    let rows = Rows::open(&state, &caller, Action::Write, &path).await?;
    let filter = Filter::parse(body.where_.as_ref(), body.where_document.as_ref())?;
    let request = DeleteRequest {
        ids: body.ids,
        filter,
        limit: body.limit,
    };
    let deleted = rows.delete(request).await?;
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
    let rows = Rows::open(&state, &caller, Action::Read, &path).await?;
    let filter = Filter::parse(body.where_.as_ref(), body.where_document.as_ref())?;
    let include = body.include.unwrap_or_else(|| DEFAULT_GET_INCLUDE.to_vec());
    let request = GetRequest {
        ids: body.ids,
        filter,
        limit: body.limit,
        offset: body.offset.unwrap_or(0),
        include: include_of(&include),
    };
    let r = rows.get(request).await?;
    Ok(Json(GetResponse {
        ids: r.ids,
        embeddings: r.embeddings,
        documents: r.documents,
        uris: r.uris,
        metadatas: r.metadatas,
        include,
    }))
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
    ApiJson(body): ApiJson<QueryRequestPayload>,
) -> ApiResult<Json<QueryResponse>> {
    let rows = Rows::open(&state, &caller, Action::Read, &path).await?;
    let filter = Filter::parse(body.where_.as_ref(), body.where_document.as_ref())?;
    let include = body
        .include
        .unwrap_or_else(|| DEFAULT_QUERY_INCLUDE.to_vec());
    let n_results = body.n_results.unwrap_or(DEFAULT_N_RESULTS);
    if n_results > MAX_N_RESULTS {
        return Err(ApiError::invalid(format!(
            "n_results must be at most {MAX_N_RESULTS}, got {n_results}"
        )));
    }
    let request = QueryRequest {
        embeddings: body.query_embeddings,
        n_results,
        ids: body.ids,
        filter,
        include: include_of(&include),
    };
    let r = rows.query(request).await?;
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

/// 501, like local Chroma.
#[utoipa::path(post,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/search",
    tag = "records",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path)),
    responses((status = 501, body = ErrorResponse)))]
pub async fn search(Path(_p): CollectionPath) -> ApiError {
    ApiError::unimplemented("Search operation is not implemented for local executor")
}
