//! Search (see [`crate::model::search`]) over one snapshot: every payload of a request
//! reads the same manifest, and each step runs through the engine's own reads, so a
//! search sees what get and query see, at their speed and recall:
//! - without a rank: the filter, then offset/limit in storage order (a get);
//! - with one: each dense `$knn` is a query (its `limit` nearest records that pass the
//!   filter, warm or cold path alike); each sparse `$knn` scores the records that pass
//!   the filter and carry a sparse vector under its key sharing a dimension with the
//!   query, `1 − q·d`, and keeps its `limit` best — exactly, from each segment's sparse
//!   index and the log; then the rank expression, `group_by` (the candidates' metadata read
//!   by id), offset/limit, and one read by id of the selected fields of the page.

use std::collections::HashMap;

use super::read::{
    allowed_rows, filter_documents, log_candidates, GetRequest, Include, QueryRequest,
};
use super::{check_collection_dimension, Engine};
use crate::catalog::Manifest;
use crate::error::Result;
use crate::model::search::{Knn, KnnQuery, Search, Select};
use crate::model::sparse::SparseVector;
use crate::model::{Collection, Filter, Metadata, MetadataValue};

/// One payload's answer, column-major; a column is `None` when not selected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchResult {
    pub ids: Vec<String>,
    pub documents: Option<Vec<Option<String>>>,
    pub embeddings: Option<Vec<Option<Vec<f32>>>>,
    pub metadatas: Option<Vec<Option<Metadata>>>,
    pub scores: Option<Vec<Option<f32>>>,
    /// The selected keys, in the order the response echoes them.
    pub select: Vec<String>,
}

/// The record fields `select` needs read.
fn include_of(select: &Select) -> Include {
    Include {
        embeddings: select.embedding,
        documents: select.document,
        metadatas: select.any_metadata(),
        ..Include::none()
    }
}

impl Engine {
    /// Runs every payload against one snapshot of the collection. Nothing is read before
    /// every payload has been checked against the collection (dimension, schema).
    pub async fn search(
        &self,
        collection: &Collection,
        searches: Vec<Search>,
    ) -> Result<Vec<SearchResult>> {
        let manifest = self.catalog.get_manifest(collection.id).await?;
        self.search_as_of(collection, &manifest, searches).await
    }

    /// [`Engine::search`] as of `manifest`, read with the collection
    /// ([`Engine::get_collection_with_manifest`]).
    pub async fn search_as_of(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        searches: Vec<Search>,
    ) -> Result<Vec<SearchResult>> {
        let started = std::time::Instant::now();
        let schema = collection.configuration.schema();
        for s in &searches {
            if let Some(filter) = &s.filter {
                schema.check_filter(filter)?;
            }
            for knn in s.rank.iter().flat_map(|r| &r.knns) {
                match &knn.query {
                    KnnQuery::Dense(q) => {
                        crate::model::validate::validate_embedding(q)?;
                        check_collection_dimension(manifest.dimension, Some(q.len()))?;
                    }
                    KnnQuery::Sparse(_) => schema.check_sparse_search(&knn.key)?,
                }
            }
        }
        let mut out = Vec::with_capacity(searches.len());
        for s in searches {
            crate::metrics::segments_searched(manifest.segments.len());
            out.push(self.search_one(collection, manifest, s).await?);
        }
        let rows = out.iter().map(|r| r.ids.len()).sum();
        crate::metrics::read_done("search", started, rows);
        Ok(out)
    }

    async fn search_one(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        s: Search,
    ) -> Result<SearchResult> {
        let include = include_of(&s.select);
        let Some(rank) = &s.rank else {
            let mut page = self
                .get_at(
                    collection,
                    manifest,
                    GetRequest {
                        ids: None,
                        filter: s.filter.clone(),
                        limit: s.limit,
                        offset: s.offset,
                        include,
                    },
                )
                .await?;
            // The page is the read: its rows are in page order already.
            let ids = std::mem::take(&mut page.ids);
            let rows: Vec<Option<usize>> = (0..ids.len()).map(Some).collect();
            return Ok(assemble(
                &s.select,
                ids,
                &rows,
                vec![None; rows.len()],
                page,
            ));
        };

        // Every $knn's candidates, side by side (each is a search of the snapshot), then
        // numbered in the rank's order as (candidate number, value).
        let lists = futures::future::try_join_all(
            rank.knns
                .iter()
                .map(|knn| self.knn_candidates(collection, manifest, &s.filter, knn)),
        )
        .await?;
        let mut candidates: Vec<String> = Vec::new();
        let mut number: HashMap<String, u32> = HashMap::new();
        let mut results = Vec::with_capacity(rank.knns.len());
        for (knn, found) in rank.knns.iter().zip(lists) {
            let values: Vec<(u32, f32)> = found
                .into_iter()
                .enumerate()
                .map(|(position, (id, value))| {
                    let n = *number.entry(id.clone()).or_insert_with(|| {
                        candidates.push(id);
                        (candidates.len() - 1) as u32
                    });
                    (
                        n,
                        if knn.return_rank {
                            position as f32
                        } else {
                            value
                        },
                    )
                })
                .collect();
            results.push(values);
        }
        let mut ranked = rank.evaluate(&results);

        if let Some(group_by) = &s.group_by {
            let ids: Vec<String> = ranked
                .iter()
                .map(|(n, _)| candidates[*n as usize].clone())
                .collect();
            let read = self
                .get_at(
                    collection,
                    manifest,
                    GetRequest {
                        ids: Some(ids.clone()),
                        include: Include {
                            metadatas: true,
                            ..Include::none()
                        },
                        ..Default::default()
                    },
                )
                .await?;
            let metadatas = read.metadatas.unwrap_or_default();
            let by_id: HashMap<&str, Option<&Metadata>> = read
                .ids
                .iter()
                .map(String::as_str)
                .zip(metadatas.iter().map(Option::as_ref))
                .collect();
            ranked = group_by.apply(&ranked, |i| by_id.get(ids[i].as_str()).copied().flatten());
        }

        let page: Vec<(u32, f32)> = ranked
            .into_iter()
            .skip(s.offset as usize)
            .take(s.limit.map_or(usize::MAX, |l| l as usize))
            .collect();
        let ids: Vec<String> = page
            .iter()
            .map(|(n, _)| candidates[*n as usize].clone())
            .collect();
        let scores = page.iter().map(|(_, score)| Some(*score)).collect();
        let fields = if include == Include::none() || ids.is_empty() {
            Default::default()
        } else {
            self.get_at(
                collection,
                manifest,
                GetRequest {
                    ids: Some(ids.clone()),
                    include,
                    ..Default::default()
                },
            )
            .await?
        };
        let row: HashMap<&str, usize> = fields
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let rows: Vec<Option<usize>> = ids.iter().map(|id| row.get(id.as_str()).copied()).collect();
        Ok(assemble(&s.select, ids, &rows, scores, fields))
    }

    /// One `$knn`'s candidates, nearest first: (id, distance or sparse score).
    async fn knn_candidates(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        filter: &Option<Filter>,
        knn: &Knn,
    ) -> Result<Vec<(String, f32)>> {
        match &knn.query {
            KnnQuery::Dense(q) => {
                let r = self
                    .query_at(
                        collection,
                        manifest,
                        QueryRequest {
                            embeddings: vec![q.clone()],
                            n_results: knn.limit,
                            ids: None,
                            filter: filter.clone(),
                            include: Include {
                                distances: true,
                                ..Include::none()
                            },
                        },
                    )
                    .await?;
                let ids = r.ids.into_iter().next().unwrap_or_default();
                let distances = r
                    .distances
                    .and_then(|d| d.into_iter().next())
                    .unwrap_or_default();
                Ok(ids.into_iter().zip(distances).collect())
            }
            KnnQuery::Sparse(q) => {
                self.sparse_knn(collection, manifest, filter, &knn.key, q, knn.limit)
                    .await
            }
        }
    }

    /// The `limit` records passing `filter` whose sparse vector under `key` is nearest
    /// to `query` (`1 − q·d`, ascending; ties in insertion order), among those sharing a
    /// dimension with it: each segment's sparse index (postings of the query's
    /// dimensions, see [`crate::index::sparse`]) and the log's records, exactly.
    async fn sparse_knn(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        filter: &Option<Filter>,
        key: &str,
        query: &SparseVector,
        limit: u32,
    ) -> Result<Vec<(String, f32)>> {
        let snap = self.snapshot(collection, manifest).await?;
        let documents = filter_documents(&snap.segments, &None, filter).await?;
        let (filter, query, key) = (filter.clone(), query.clone(), key.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut hits: Vec<(f32, u64, String)> = Vec::new();
            for (view, documents) in snap.segments.iter().zip(&documents) {
                let allowed = allowed_rows(view, &None, &filter, documents.as_ref())?;
                if allowed.count == 0 {
                    continue;
                }
                let seg = &view.segment;
                let scored = seg
                    .sparse
                    .top(&key, &query, allowed.rows.as_ref(), limit as usize);
                hits.extend(scored.into_iter().map(|(row, score)| {
                    (score, seg.offsets[row as usize], seg.id(row).to_owned())
                }));
            }
            for i in log_candidates(&snap, &None, &filter) {
                let r = &snap.log[i];
                let stored = r.record.metadata.as_ref().and_then(|m| m.get(&key));
                if let Some(MetadataValue::SparseVector(v)) = stored {
                    if let Some(score) = query.score(v) {
                        hits.push((score, r.offset, r.record.id.clone()));
                    }
                }
            }
            hits.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            hits.truncate(limit as usize);
            Ok(hits.into_iter().map(|(score, _, id)| (id, score)).collect())
        })
        .await
        .map_err(|e| crate::error::Error::internal_from("search task failed", e))?
    }
}

/// The page's records `ids`, in page order, with the selected columns from `fields`:
/// `rows[i]` is the row of `ids[i]` in `fields`.
fn assemble(
    select: &Select,
    ids: Vec<String>,
    rows: &[Option<usize>],
    scores: Vec<Option<f32>>,
    fields: super::read::GetResult,
) -> SearchResult {
    let column = |on: bool| on.then(|| rows.iter().copied());
    let documents = column(select.document).map(|rows| {
        rows.map(|r| r.and_then(|r| fields.documents.as_ref().and_then(|d| d[r].clone())))
            .collect()
    });
    let embeddings = column(select.embedding).map(|rows| {
        rows.map(|r| r.and_then(|r| fields.embeddings.as_ref().map(|e| e[r].clone())))
            .collect()
    });
    let metadatas = column(select.any_metadata()).map(|rows| {
        rows.map(|r| {
            r.and_then(|r| select.project(fields.metadatas.as_ref().and_then(|m| m[r].clone())))
        })
        .collect()
    });
    SearchResult {
        documents,
        embeddings,
        metadatas,
        scores: select.score.then_some(scores),
        select: select.keys(),
        ids,
    }
}
