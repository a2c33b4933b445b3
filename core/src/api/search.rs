//! `POST …/collections/{id}/search` (Chroma Cloud's search, served self-hosted): a list
//! of payloads answered column-major, one entry per payload in request order. The
//! grammar and evaluation are [`crate::model::search`] and [`crate::engine`]'s search.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Caller;
use super::errors::{ApiError, ErrorResponse};
use super::extract::ApiJson;
use super::types::ReadLevel;
use super::{ApiResult, AppState};
use crate::auth::grants::Action;
use crate::model::search::{Search, MAX_SEARCHES};
use crate::model::Metadata;

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SearchRequestPayload {
    /// Each `{"filter", "rank", "group_by", "limit", "select"}`.
    #[schema(value_type = Vec<Object>)]
    pub searches: Vec<Value>,
    /// Every level reads the log too: a search sees every acknowledged write.
    pub read_level: Option<ReadLevel>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchResponse {
    pub ids: Vec<Vec<String>>,
    pub documents: Vec<Option<Vec<Option<String>>>>,
    pub embeddings: Vec<Option<Vec<Option<Vec<f32>>>>>,
    #[schema(value_type = Vec<Option<Vec<Option<Object>>>>)]
    pub metadatas: Vec<Option<Vec<Option<Metadata>>>>,
    pub scores: Vec<Option<Vec<Option<f32>>>>,
    /// Per payload, its selected keys: `#document`, `#embedding`, `#metadata`,
    /// `#score`, then metadata fields by name.
    pub select: Vec<Vec<String>>,
}

/// Runs every payload against one snapshot of the collection.
#[utoipa::path(post,
    path = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/search",
    tag = "records",
    params(("tenant" = String, Path), ("database" = String, Path),
           ("collection_id" = String, Path)),
    request_body = SearchRequestPayload,
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorResponse),
              (status = 404, body = ErrorResponse)))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, database, id)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<SearchRequestPayload>,
) -> ApiResult<Json<SearchResponse>> {
    let scope =
        super::collections::scoped(&state, &caller, Action::Read, &tenant, &database, &id).await?;
    if body.searches.len() > MAX_SEARCHES {
        return Err(ApiError::invalid(format!(
            "searches: at most {MAX_SEARCHES} payloads per request, got {}",
            body.searches.len()
        )));
    }
    let several = body.searches.len() > 1;
    let searches = body
        .searches
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Search::parse(s).map_err(|e| {
                if several {
                    ApiError::invalid(format!("searches[{i}]: {}", e.message()))
                } else {
                    e.into()
                }
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let results = scope.search(searches).await?;
    let mut out = SearchResponse {
        ids: Vec::with_capacity(results.len()),
        documents: Vec::with_capacity(results.len()),
        embeddings: Vec::with_capacity(results.len()),
        metadatas: Vec::with_capacity(results.len()),
        scores: Vec::with_capacity(results.len()),
        select: Vec::with_capacity(results.len()),
    };
    for r in results {
        out.ids.push(r.ids);
        out.documents.push(r.documents);
        out.embeddings.push(r.embeddings);
        out.metadatas.push(r.metadatas);
        out.scores.push(r.scores);
        out.select.push(r.select);
    }
    Ok(Json(out))
}
