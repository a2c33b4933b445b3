//! The read path: get, query and count over a snapshot (segments + folded log).

use std::collections::HashSet;
use std::sync::Arc;

use fixedbitset::FixedBitSet;

use super::snapshot::{SegmentView, Snapshot};
use super::Engine;
use crate::catalog::Manifest;
use crate::error::{Error, Result};
use crate::index::distance;
use crate::model::{Collection, Filter, Metadata, Space};

/// Which fields a read returns besides ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Include {
    pub embeddings: bool,
    pub documents: bool,
    pub metadatas: bool,
    pub uris: bool,
    pub distances: bool,
}

impl Include {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn all() -> Self {
        Self {
            embeddings: true,
            documents: true,
            metadatas: true,
            uris: true,
            distances: true,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct GetRequest {
    /// Only these ids (`Some(vec![])` matches nothing).
    pub ids: Option<Vec<String>>,
    pub filter: Option<Filter>,
    pub limit: Option<u32>,
    pub offset: u32,
    pub include: Include,
}

/// Records in insertion order; a field is `None` unless included.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetResult {
    pub ids: Vec<String>,
    pub embeddings: Option<Vec<Vec<f32>>>,
    pub documents: Option<Vec<Option<String>>>,
    pub uris: Option<Vec<Option<String>>>,
    pub metadatas: Option<Vec<Option<Metadata>>>,
}

#[derive(Debug, Clone, Default)]
pub struct QueryRequest {
    pub embeddings: Vec<Vec<f32>>,
    pub n_results: u32,
    pub ids: Option<Vec<String>>,
    pub filter: Option<Filter>,
    pub include: Include,
}

/// One inner list per query embedding, nearest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResult {
    pub ids: Vec<Vec<String>>,
    pub distances: Option<Vec<Vec<f32>>>,
    pub embeddings: Option<Vec<Vec<Vec<f32>>>>,
    pub documents: Option<Vec<Vec<Option<String>>>>,
    pub uris: Option<Vec<Vec<Option<String>>>>,
    pub metadatas: Option<Vec<Vec<Option<Metadata>>>>,
}

/// Where a candidate record lives in a snapshot.
#[derive(Debug, Clone, Copy)]
enum Source {
    Segment(usize, u32),
    Log(usize),
}

/// Operation counts for the indexing status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexingStatus {
    pub indexed_ops: u64,
    pub unindexed_ops: u64,
    pub total_ops: u64,
}

/// The rows of one segment a read may return.
struct Allowed {
    /// `None`: every row (all live, no restriction).
    rows: Option<FixedBitSet>,
    count: usize,
}

impl Engine {
    /// Reads the current snapshot of a collection (read-after-write consistent: the
    /// manifest is read afresh) and its dimension.
    async fn current(&self, collection: &Collection) -> Result<(Option<u32>, Arc<Snapshot>)> {
        let m = self.catalog.get_manifest(collection.id).await?;
        let snap = self.snapshot(collection, &m).await?;
        Ok((m.dimension, snap))
    }

    pub async fn count(&self, collection: &Collection) -> Result<u64> {
        let (_, snap) = self.current(collection).await?;
        Ok(snap.count())
    }

    pub async fn indexing_status(&self, collection: &Collection) -> Result<IndexingStatus> {
        let m = self.catalog.get_manifest(collection.id).await?;
        let unindexed = m.unindexed_ops();
        Ok(IndexingStatus {
            indexed_ops: m.total_ops.saturating_sub(unindexed),
            unindexed_ops: unindexed,
            total_ops: m.total_ops,
        })
    }

    pub async fn get(&self, collection: &Collection, request: GetRequest) -> Result<GetResult> {
        let m = self.catalog.get_manifest(collection.id).await?;
        self.get_at(collection, &m, request).await
    }

    /// [`Engine::get`] as of `manifest` rather than the current manifest.
    pub(crate) async fn get_at(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        request: GetRequest,
    ) -> Result<GetResult> {
        if let Some(ids) = &request.ids {
            for id in ids {
                crate::model::validate::validate_id(id)?;
            }
        }
        let snap = self.snapshot(collection, manifest).await?;
        tokio::task::spawn_blocking(move || get_blocking(&snap, &request))
            .await
            .map_err(|e| Error::internal_from("get task failed", e))
    }

    /// How many records `filter` selects.
    pub async fn count_matching(&self, collection: &Collection, filter: Filter) -> Result<u64> {
        let (indexed, unindexed) = self.count_by_place(collection, filter).await?;
        Ok(indexed + unindexed)
    }

    /// [`Engine::indexing_status`] counted in the records `filter` selects rather than in
    /// operations: those whose latest state is in a segment are indexed, those whose
    /// latest state is still in the log are not.
    pub async fn indexing_status_of_matching(
        &self,
        collection: &Collection,
        filter: Filter,
    ) -> Result<IndexingStatus> {
        let (indexed, unindexed) = self.count_by_place(collection, filter).await?;
        Ok(IndexingStatus {
            indexed_ops: indexed,
            unindexed_ops: unindexed,
            total_ops: indexed + unindexed,
        })
    }

    /// The records `filter` selects: (in segments, in the log).
    async fn count_by_place(&self, collection: &Collection, filter: Filter) -> Result<(u64, u64)> {
        let (_, snap) = self.current(collection).await?;
        tokio::task::spawn_blocking(move || {
            let filter = Some(filter);
            let indexed: usize = snap
                .segments
                .iter()
                .map(|v| allowed_rows(v, &None, &filter).count)
                .sum();
            let unindexed = log_candidates(&snap, &None, &filter).len();
            (indexed as u64, unindexed as u64)
        })
        .await
        .map_err(|e| Error::internal_from("count task failed", e))
    }

    pub async fn query(
        &self,
        collection: &Collection,
        request: QueryRequest,
    ) -> Result<QueryResult> {
        for e in &request.embeddings {
            crate::model::validate::validate_embedding(e)?;
        }
        let (dimension, snap) = self.current(collection).await?;
        if let Some(dim) = dimension {
            if let Some(bad) = request.embeddings.iter().find(|e| e.len() != dim as usize) {
                return Err(Error::invalid(format!(
                    "Collection expecting embedding with dimension of {dim}, got {}",
                    bad.len()
                )));
            }
        }
        let space = collection.configuration.hnsw.space;
        let ef = collection.configuration.hnsw.ef_search;
        let exact_rows = self.config.exact_scan_rows;
        tokio::task::spawn_blocking(move || query_blocking(&snap, &request, space, ef, exact_rows))
            .await
            .map_err(|e| Error::internal_from("query task failed", e))
    }
}

fn id_set(ids: &Option<Vec<String>>) -> Option<HashSet<&str>> {
    ids.as_ref()
        .map(|ids| ids.iter().map(String::as_str).collect())
}

/// The rows of `view` that are live, among `ids` (if given), and pass `filter`.
fn allowed_rows(
    view: &SegmentView,
    ids: &Option<HashSet<&str>>,
    filter: &Option<Filter>,
) -> Allowed {
    let seg = &view.segment;
    let mut rows = match ids {
        Some(ids) => {
            let mut bits = FixedBitSet::with_capacity(seg.len());
            for id in ids {
                if let Some(&row) = seg.id_to_row.get(*id) {
                    if view.is_live(row) {
                        bits.insert(row as usize);
                    }
                }
            }
            Some(bits)
        }
        None => view.live.clone(),
    };
    if let Some(filter) = filter {
        let selected = match &rows {
            // Few candidates: test them one by one.
            Some(r) if ids.is_some() => {
                let mut bits = FixedBitSet::with_capacity(seg.len());
                for row in r.ones() {
                    if filter.matches(seg.metadatas[row].as_ref(), seg.documents[row].as_deref()) {
                        bits.insert(row);
                    }
                }
                bits
            }
            _ => {
                let mut bits = filter.select(&seg.columns, &seg.documents);
                if let Some(r) = &rows {
                    bits.intersect_with(r);
                }
                bits
            }
        };
        rows = Some(selected);
    }
    let count = rows.as_ref().map_or(seg.len(), |r| r.count_ones(..));
    Allowed { rows, count }
}

fn log_candidates(
    snap: &Snapshot,
    ids: &Option<HashSet<&str>>,
    filter: &Option<Filter>,
) -> Vec<usize> {
    snap.log
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            ids.as_ref()
                .is_none_or(|ids| ids.contains(r.record.id.as_str()))
        })
        .filter(|(_, r)| {
            filter
                .as_ref()
                .is_none_or(|f| f.matches(r.record.metadata.as_ref(), r.record.document.as_deref()))
        })
        .map(|(i, _)| i)
        .collect()
}

fn get_blocking(snap: &Snapshot, request: &GetRequest) -> GetResult {
    let ids = id_set(&request.ids);
    let mut found: Vec<(u64, Source)> = Vec::new();
    for (s, view) in snap.segments.iter().enumerate() {
        let allowed = allowed_rows(view, &ids, &request.filter);
        match allowed.rows {
            None => found.extend(
                (0..view.segment.len() as u32)
                    .map(|row| (view.segment.offsets[row as usize], Source::Segment(s, row))),
            ),
            Some(rows) => found.extend(
                rows.ones()
                    .map(|row| (view.segment.offsets[row], Source::Segment(s, row as u32))),
            ),
        }
    }
    for i in log_candidates(snap, &ids, &request.filter) {
        found.push((snap.log[i].offset, Source::Log(i)));
    }
    found.sort_unstable_by_key(|(offset, _)| *offset);
    let page = found
        .into_iter()
        .skip(request.offset as usize)
        .take(request.limit.map_or(usize::MAX, |l| l as usize));
    let mut out = Fields::new(&request.include);
    for (_, source) in page {
        out.push(snap, source);
    }
    GetResult {
        ids: out.ids,
        embeddings: out.embeddings,
        documents: out.documents,
        uris: out.uris,
        metadatas: out.metadatas,
    }
}

fn query_blocking(
    snap: &Snapshot,
    request: &QueryRequest,
    space: Space,
    ef: usize,
    exact_rows: usize,
) -> QueryResult {
    let ids = id_set(&request.ids);
    let k = request.n_results as usize;
    let allowed: Vec<Allowed> = snap
        .segments
        .iter()
        .map(|v| allowed_rows(v, &ids, &request.filter))
        .collect();
    let log = log_candidates(snap, &ids, &request.filter);
    let mut result = QueryResult {
        ids: Vec::with_capacity(request.embeddings.len()),
        distances: request.include.distances.then(Vec::new),
        embeddings: request.include.embeddings.then(Vec::new),
        documents: request.include.documents.then(Vec::new),
        uris: request.include.uris.then(Vec::new),
        metadatas: request.include.metadatas.then(Vec::new),
    };
    for q in &request.embeddings {
        let mut hits: Vec<(f32, u64, Source)> = Vec::new();
        if k > 0 {
            for (s, (view, allowed)) in snap.segments.iter().zip(&allowed).enumerate() {
                if allowed.count == 0 {
                    continue;
                }
                let index = &view.segment.index;
                let want = k.min(allowed.count);
                let rows = allowed.rows.as_ref();
                let mut found = if allowed.count <= exact_rows.max(k) {
                    index.exact(q, k, rows)
                } else {
                    index.search(q, k, ef, rows)
                };
                if found.len() < want {
                    // The walk missed matches: scan exactly so nothing is lost.
                    found = index.exact(q, k, rows);
                }
                hits.extend(found.into_iter().map(|(row, d)| {
                    (
                        d,
                        view.segment.offsets[row as usize],
                        Source::Segment(s, row),
                    )
                }));
            }
            for &i in &log {
                let r = &snap.log[i];
                hits.push((
                    distance(space, q, &r.record.embedding),
                    r.offset,
                    Source::Log(i),
                ));
            }
        }
        hits.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        hits.truncate(k);
        let mut out = Fields::new(&request.include);
        for &(_, _, source) in &hits {
            out.push(snap, source);
        }
        result.ids.push(out.ids);
        if let Some(d) = &mut result.distances {
            d.push(hits.iter().map(|h| h.0).collect());
        }
        if let (Some(all), Some(v)) = (&mut result.embeddings, out.embeddings) {
            all.push(v);
        }
        if let (Some(all), Some(v)) = (&mut result.documents, out.documents) {
            all.push(v);
        }
        if let (Some(all), Some(v)) = (&mut result.uris, out.uris) {
            all.push(v);
        }
        if let (Some(all), Some(v)) = (&mut result.metadatas, out.metadatas) {
            all.push(v);
        }
    }
    result
}

/// Accumulates the included fields of a list of records.
struct Fields {
    ids: Vec<String>,
    embeddings: Option<Vec<Vec<f32>>>,
    documents: Option<Vec<Option<String>>>,
    uris: Option<Vec<Option<String>>>,
    metadatas: Option<Vec<Option<Metadata>>>,
}

impl Fields {
    fn new(include: &Include) -> Self {
        Self {
            ids: Vec::new(),
            embeddings: include.embeddings.then(Vec::new),
            documents: include.documents.then(Vec::new),
            uris: include.uris.then(Vec::new),
            metadatas: include.metadatas.then(Vec::new),
        }
    }

    fn push(&mut self, snap: &Snapshot, source: Source) {
        match source {
            Source::Segment(s, row) => {
                let seg = &snap.segments[s].segment;
                let r = row as usize;
                self.ids.push(seg.ids[r].clone());
                if let Some(v) = &mut self.embeddings {
                    v.push(seg.index.vector(row).to_vec());
                }
                if let Some(v) = &mut self.documents {
                    v.push(seg.documents[r].clone());
                }
                if let Some(v) = &mut self.uris {
                    v.push(seg.uris[r].clone());
                }
                if let Some(v) = &mut self.metadatas {
                    v.push(seg.metadatas[r].clone());
                }
            }
            Source::Log(i) => {
                let rec = &snap.log[i].record;
                self.ids.push(rec.id.clone());
                if let Some(v) = &mut self.embeddings {
                    v.push(rec.embedding.clone());
                }
                if let Some(v) = &mut self.documents {
                    v.push(rec.document.clone());
                }
                if let Some(v) = &mut self.uris {
                    v.push(rec.uri.clone());
                }
                if let Some(v) = &mut self.metadatas {
                    v.push(rec.metadata.clone());
                }
            }
        }
    }
}
