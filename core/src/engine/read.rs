//! The read path: get, query and count over a snapshot (segments + folded log).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use fixedbitset::FixedBitSet;
use rayon::prelude::*;

use super::records::FetchedRecords;
use super::snapshot::{SegmentView, Snapshot};
use super::vectors::Fetched;
use super::{check_collection_dimension, Engine};
use crate::catalog::Manifest;
use crate::error::{Error, Result};
use crate::index::{beam_for, distance, nearest_across, rerank_width, Candidates};
use crate::model::packed::PackedStrings;
use crate::model::{Collection, Filter, Metadata, Space};
use crate::segment::ranged::Columns;

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

    /// The stored columns these fields are read from (not the keys).
    pub(crate) fn columns(&self) -> Columns {
        Columns {
            keys: false,
            documents: self.documents,
            uris: self.uris,
            metadatas: self.metadatas,
        }
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

    /// Every field of a record (what a get can return).
    pub fn records() -> Self {
        Self {
            distances: false,
            ..Self::all()
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
pub(super) struct Allowed {
    /// `None`: every row (all live, no restriction).
    pub rows: Option<FixedBitSet>,
    pub count: usize,
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
        let m = self.catalog.get_manifest(collection.id).await?;
        self.count_as_of(collection, &m).await
    }

    /// [`Engine::count`] as of `manifest`, read with the collection
    /// ([`Engine::get_collection_with_manifest`]).
    pub async fn count_as_of(&self, collection: &Collection, manifest: &Manifest) -> Result<u64> {
        let started = Instant::now();
        let snap = self.snapshot(collection, manifest).await?;
        crate::metrics::read_done("count", started, 1);
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

    /// How many compactions have changed the collection's index (Chroma Cloud's
    /// collection `version`: it grows as writes get indexed).
    pub async fn index_version(&self, collection: &Collection) -> Result<u64> {
        Ok(self.catalog.get_manifest(collection.id).await?.compactions)
    }

    pub async fn get(&self, collection: &Collection, request: GetRequest) -> Result<GetResult> {
        let m = self.catalog.get_manifest(collection.id).await?;
        self.get_as_of(collection, &m, request).await
    }

    /// [`Engine::get`] as of `manifest`, read with the collection
    /// ([`Engine::get_collection_with_manifest`]).
    pub async fn get_as_of(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        request: GetRequest,
    ) -> Result<GetResult> {
        let started = Instant::now();
        let got = self.get_at(collection, manifest, request).await?;
        crate::metrics::read_done("get", started, got.ids.len());
        Ok(got)
    }

    /// [`Engine::get`] as of `manifest` rather than the current manifest.
    pub(crate) async fn get_at(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        request: GetRequest,
    ) -> Result<GetResult> {
        check_indexes(collection, request.filter.as_ref())?;
        if let Some(ids) = &request.ids {
            for id in ids {
                crate::model::validate::validate_id(id)?;
            }
        }
        let snap = self.snapshot(collection, manifest).await?;
        let documents = filter_documents(&snap.segments, &request.ids, &request.filter).await?;
        let (snap, request, page) = tokio::task::spawn_blocking(move || {
            let page = get_page(&snap, &request, &documents);
            (snap, request, page)
        })
        .await
        .map_err(|e| Error::internal_from("get task failed", e))?;
        let page = page?;
        let rows = segment_rows(&snap, &page);
        let vectors = async {
            if request.include.embeddings {
                Fetched::read(&snap.segments, rows.clone()).await
            } else {
                Ok(Fetched::default())
            }
        };
        let (fetched, records) = futures::try_join!(
            vectors,
            FetchedRecords::read(&snap.segments, rows.clone(), request.include.columns())
        )?;
        tokio::task::spawn_blocking(move || {
            let mut out = Fields::new(&request.include);
            for source in page {
                out.push(&snap, source, &fetched, &records)?;
            }
            Ok(GetResult {
                ids: out.ids,
                embeddings: out.embeddings,
                documents: out.documents,
                uris: out.uris,
                metadatas: out.metadatas,
            })
        })
        .await
        .map_err(|e| Error::internal_from("get task failed", e))?
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
        let filter = Some(filter);
        let documents = filter_documents(&snap.segments, &None, &filter).await?;
        tokio::task::spawn_blocking(move || {
            let mut indexed = 0;
            for (v, documents) in snap.segments.iter().zip(&documents) {
                indexed += allowed_rows(v, &None, &filter, documents.as_ref())?.count;
            }
            let unindexed = log_candidates(&snap, &None, &filter).len();
            Ok((indexed as u64, unindexed as u64))
        })
        .await
        .map_err(|e| Error::internal_from("count task failed", e))?
    }

    pub async fn query(
        &self,
        collection: &Collection,
        request: QueryRequest,
    ) -> Result<QueryResult> {
        let manifest = self.catalog.get_manifest(collection.id).await?;
        self.query_as_of(collection, &manifest, request).await
    }

    /// [`Engine::query`] as of `manifest`, read with the collection
    /// ([`Engine::get_collection_with_manifest`]).
    pub async fn query_as_of(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        request: QueryRequest,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        let result = self.query_at(collection, manifest, request).await?;
        query_done(started, manifest, &result);
        Ok(result)
    }

    /// [`Engine::query`] as of `manifest` rather than the current manifest.
    pub(crate) async fn query_at(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        request: QueryRequest,
    ) -> Result<QueryResult> {
        for e in &request.embeddings {
            crate::model::validate::validate_embedding(e)?;
        }
        for e in &request.embeddings {
            check_collection_dimension(manifest.dimension, Some(e.len()))?;
        }
        // After the dimension, as Chroma orders its checks.
        check_indexes(collection, request.filter.as_ref())?;
        if self.takes_cold_path(collection, manifest, &request) {
            if let Some(result) = self.query_cold(collection, manifest, &request).await? {
                self.warm_in_background(collection, manifest);
                return Ok(result);
            }
        }
        let snap = self.snapshot(collection, manifest).await?;
        let space = collection.configuration.hnsw.space;
        let ef = collection.configuration.hnsw.ef_search;
        let exact_rows = self.config.exact_scan_rows;
        let documents = filter_documents(&snap.segments, &request.ids, &request.filter).await?;
        // The walk (codes only), then one read of every candidate's f32 vector, then the
        // exact re-rank, then one read of the results' stored fields.
        let (snap, request, plan) = tokio::task::spawn_blocking(move || {
            let plan = query_candidates(&snap, &request, ef, exact_rows, &documents);
            (snap, request, plan)
        })
        .await
        .map_err(|e| Error::internal_from("query task failed", e))?;
        let plan = plan?;
        let mut wanted = vec![Vec::new(); snap.segments.len()];
        for per_query in &plan.candidates {
            for (s, rows) in per_query.iter().enumerate() {
                wanted[s].extend_from_slice(rows);
            }
        }
        let fetched = Fetched::read(&snap.segments, wanted).await?;
        let (snap, request, fetched, hits) = tokio::task::spawn_blocking(move || {
            let hits = query_hits(&snap, &request, space, &plan, &fetched);
            (snap, request, fetched, hits)
        })
        .await
        .map_err(|e| Error::internal_from("query task failed", e))?;
        let hits = hits?;
        let sources: Vec<Source> = hits.iter().flatten().map(|h| h.2).collect();
        let records = FetchedRecords::read(
            &snap.segments,
            segment_rows(&snap, &sources),
            request.include.columns(),
        )
        .await?;
        query_result(&snap, &request, hits, &fetched, &records)
    }
}

/// Records a query's metrics: it started at `started` and read `manifest`'s segments.
pub(crate) fn query_done(started: Instant, manifest: &Manifest, result: &QueryResult) {
    crate::metrics::segments_searched(manifest.segments.len());
    crate::metrics::read_done("query", started, result.ids.iter().map(Vec::len).sum());
}

fn id_set(ids: &Option<Vec<String>>) -> Option<HashSet<&str>> {
    ids.as_ref()
        .map(|ids| ids.iter().map(String::as_str).collect())
}

/// Refuses a filter that needs an index the collection's schema disables (api §3); reads
/// and deletes by ids alone are never checked.
fn check_indexes(collection: &Collection, filter: Option<&Filter>) -> Result<()> {
    match filter {
        Some(filter) => collection.configuration.schema().check_filter(filter),
        None => Ok(()),
    }
}

/// The rows of `view` that are live, among `ids` (if given), and pass `filter`;
/// `documents` is what [`filter_documents`] read for the segment (when the filter tests
/// documents).
pub(super) fn allowed_rows(
    view: &SegmentView,
    ids: &Option<HashSet<&str>>,
    filter: &Option<Filter>,
    documents: Option<&FilterDocuments>,
) -> Result<Allowed> {
    let seg = &view.segment;
    let mut rows = match ids {
        Some(ids) => {
            let mut bits = FixedBitSet::with_capacity(seg.len());
            for id in ids {
                if let Some(row) = seg.row_of(id) {
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
        let none = PackedStrings::default();
        let row_of = |id: &str| seg.row_of(id);
        let mut bits = match documents {
            Some(FilterDocuments::All(documents)) => {
                filter.select(&seg.columns, documents, &row_of)
            }
            Some(FilterDocuments::Passing(passing)) => {
                let mut bits = passing.clone();
                if let Some(w) = &filter.where_ {
                    bits.intersect_with(&w.select(&seg.columns, &none, &row_of));
                }
                bits
            }
            Some(FilterDocuments::Matched(matched)) => matched.clone(),
            None if filter.reads().documents => {
                return Err(Error::internal("a document filter without the documents"));
            }
            None => filter.select(&seg.columns, &none, &row_of),
        };
        if let Some(r) = &rows {
            bits.intersect_with(r);
        }
        rows = Some(bits);
    }
    let count = rows.as_ref().map_or(seg.len(), |r| r.count_ones(..));
    Ok(Allowed { rows, count })
}

/// What a filter that tests documents needs of a segment's, read from its records
/// object (documents are not held in memory, see [`super::records`]).
pub(super) enum FilterDocuments {
    /// The rows whose document passes the filter's `where_document`, its only clause
    /// that tests documents (their documents tested a batch at a time).
    Passing(FixedBitSet),
    /// Every row's document (a `where` clause tests documents too, `#document`).
    All(PackedStrings),
    /// The rows among the ids a request names that pass the whole filter, each tested
    /// on its record (a few rows: no column of the segment is scanned).
    Matched(FixedBitSet),
}

/// Per segment, what `filter` needs of its documents (see [`FilterDocuments`]): the live
/// rows among `ids` that pass it when ids are given, else what every row's documents
/// tell; `None` when the filter tests no document.
pub(super) async fn filter_documents(
    segments: &[SegmentView],
    ids: &Option<Vec<String>>,
    filter: &Option<Filter>,
) -> Result<Vec<Option<FilterDocuments>>> {
    let Some(filter) = filter.as_ref().filter(|f| f.reads().documents) else {
        return Ok(segments.iter().map(|_| None).collect());
    };
    let in_where = filter.where_.as_ref().is_some_and(|w| w.reads().documents);
    futures::future::try_join_all(segments.iter().map(|view| async move {
        let rows: Option<Vec<u32>> = ids.as_ref().map(|ids| {
            let mut rows: Vec<u32> = ids
                .iter()
                .filter_map(|id| view.segment.row_of(id))
                .filter(|&row| view.is_live(row))
                .collect();
            rows.sort_unstable();
            rows.dedup();
            rows
        });
        let records = &view.segment.records;
        Ok(Some(match (rows, &filter.where_document) {
            (Some(rows), _) => FilterDocuments::Matched(records.matching(&rows, filter).await?),
            (None, Some(test)) if !in_where => {
                FilterDocuments::Passing(records.documents_passing(test).await?)
            }
            (None, _) => FilterDocuments::All(records.documents().await?),
        }))
    }))
    .await
}

/// The log records (indices into `snap.log`) among `ids` (if given) that pass `filter`.
pub(super) fn log_candidates(
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
            filter.as_ref().is_none_or(|f| {
                f.matches(
                    &r.record.id,
                    r.record.metadata.as_ref(),
                    r.record.document.as_deref(),
                )
            })
        })
        .map(|(i, _)| i)
        .collect()
}

/// The records a get returns, in order.
fn get_page(
    snap: &Snapshot,
    request: &GetRequest,
    documents: &[Option<FilterDocuments>],
) -> Result<Vec<Source>> {
    let ids = id_set(&request.ids);
    let mut found: Vec<(u64, Source)> = Vec::new();
    for (s, view) in snap.segments.iter().enumerate() {
        let allowed = allowed_rows(view, &ids, &request.filter, documents[s].as_ref())?;
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
    Ok(found
        .into_iter()
        .skip(request.offset as usize)
        .take(request.limit.map_or(usize::MAX, |l| l as usize))
        .map(|(_, source)| source)
        .collect())
}

/// Per segment, the rows among `sources`.
fn segment_rows(snap: &Snapshot, sources: &[Source]) -> Vec<Vec<u32>> {
    let mut rows = vec![Vec::new(); snap.segments.len()];
    for source in sources {
        if let Source::Segment(s, row) = *source {
            rows[s].push(row);
        }
    }
    rows
}

/// What a query re-ranks: per query embedding, per segment, the candidate rows found
/// from the codes.
struct QueryPlan {
    candidates: Vec<Vec<Vec<u32>>>,
}

fn query_candidates(
    snap: &Snapshot,
    request: &QueryRequest,
    ef: usize,
    exact_rows: usize,
    documents: &[Option<FilterDocuments>],
) -> Result<QueryPlan> {
    let ids = id_set(&request.ids);
    let k = request.n_results as usize;
    let allowed: Vec<Allowed> = snap
        .segments
        .iter()
        .zip(documents)
        .map(|(v, documents)| allowed_rows(v, &ids, &request.filter, documents.as_ref()))
        .collect::<Result<_>>()?;
    // A segment's candidates, with their coded distances, and whether it scanned its
    // allowed rows (then every row it found is re-ranked: few rows pass the filter).
    let walk = |(q, s): (usize, usize)| {
        let (view, allowed) = (&snap.segments[s], &allowed[s]);
        if k == 0 || allowed.count == 0 {
            return (Vec::new(), false);
        }
        let q = &request.embeddings[q];
        let index = &view.segment.index;
        let ef = beam_for(ef, index.len());
        let rows = allowed.rows.as_ref();
        if allowed.count <= exact_rows.max(k) {
            return (
                index.candidates_scored(q, k, ef, rows, Candidates::Scan),
                true,
            );
        }
        let found = index.candidates_scored(q, k, ef, rows, Candidates::Walk);
        if found.len() < k.min(allowed.count) {
            // The walk missed matches: scan so nothing is lost.
            (
                index.candidates_scored(q, k, ef, rows, Candidates::Scan),
                true,
            )
        } else {
            (found, false)
        }
    };
    // Every (query, segment) walk; side by side on rayon's pool when there are several,
    // so a query's latency is its largest segment's (one walk stays on this thread:
    // handing it to the pool costs more than it saves).
    let segments = snap.segments.len();
    let pairs: Vec<(usize, usize)> = (0..request.embeddings.len())
        .flat_map(|q| (0..segments).map(move |s| (q, s)))
        .collect();
    let found: Vec<(Vec<(u32, f32)>, bool)> = if pairs.len() > 1 {
        pairs.into_par_iter().map(walk).collect()
    } else {
        pairs.into_iter().map(walk).collect()
    };
    // The walks' candidates of one query are cut to the re-rank width of the largest
    // segment across all segments, not per segment (see `nearest_across`).
    let width = snap
        .segments
        .iter()
        .map(|v| rerank_width(k, beam_for(ef, v.segment.index.len())))
        .max()
        .unwrap_or(0);
    let mut found = found.into_iter();
    let candidates = request
        .embeddings
        .iter()
        .map(|_| {
            let mut scanned = Vec::with_capacity(segments);
            let walked = found
                .by_ref()
                .take(segments)
                .map(|(rows, scan)| {
                    if scan {
                        scanned.push(Some(rows));
                        Vec::new()
                    } else {
                        scanned.push(None);
                        rows
                    }
                })
                .collect();
            nearest_across(walked, width)
                .into_iter()
                .zip(scanned)
                .map(|(kept, scanned)| match scanned {
                    Some(rows) => rows.into_iter().map(|(row, _)| row).collect(),
                    None => kept,
                })
                .collect()
        })
        .collect();
    Ok(QueryPlan { candidates })
}

/// A query's results before their fields are read: distance, offset, where.
type Hit = (f32, u64, Source);

/// Per query embedding, its `n_results` nearest: the re-rank of its candidates (whose
/// vectors are in `fetched`) and the log's matching records.
fn query_hits(
    snap: &Snapshot,
    request: &QueryRequest,
    space: Space,
    plan: &QueryPlan,
    fetched: &Fetched,
) -> Result<Vec<Vec<Hit>>> {
    let ids = id_set(&request.ids);
    let k = request.n_results as usize;
    let log = log_candidates(snap, &ids, &request.filter);
    let mut all = Vec::with_capacity(request.embeddings.len());
    for (q, candidates) in request.embeddings.iter().zip(&plan.candidates) {
        let mut hits: Vec<Hit> = Vec::new();
        if k > 0 {
            for (s, (view, rows)) in snap.segments.iter().zip(candidates).enumerate() {
                if rows.is_empty() {
                    continue;
                }
                let vectors = fetched
                    .gather(s, rows)
                    .ok_or_else(|| Error::internal("a candidate's vector was not read"))?;
                let found = view.segment.index.rerank(q, k, rows, &vectors);
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
        all.push(hits);
    }
    Ok(all)
}

/// A query's result: its `hits` with the included fields (vectors from `fetched`,
/// stored fields from `records`).
fn query_result(
    snap: &Snapshot,
    request: &QueryRequest,
    hits: Vec<Vec<Hit>>,
    fetched: &Fetched,
    records: &FetchedRecords,
) -> Result<QueryResult> {
    let mut result = QueryResult {
        ids: Vec::with_capacity(request.embeddings.len()),
        distances: request.include.distances.then(Vec::new),
        embeddings: request.include.embeddings.then(Vec::new),
        documents: request.include.documents.then(Vec::new),
        uris: request.include.uris.then(Vec::new),
        metadatas: request.include.metadatas.then(Vec::new),
    };
    for hits in hits {
        let mut out = Fields::new(&request.include);
        for &(_, _, source) in &hits {
            out.push(snap, source, fetched, records)?;
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
    Ok(result)
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

    /// Adds a record; a segment row's vector comes from `fetched` and its stored fields
    /// from `records` (when included).
    fn push(
        &mut self,
        snap: &Snapshot,
        source: Source,
        fetched: &Fetched,
        records: &FetchedRecords,
    ) -> Result<()> {
        match source {
            Source::Segment(s, row) => {
                let seg = &snap.segments[s].segment;
                self.ids.push(seg.id(row).to_string());
                if let Some(v) = &mut self.embeddings {
                    let vector = fetched
                        .get(s, row)
                        .ok_or_else(|| Error::internal("a returned row's vector was not read"))?;
                    v.push(vector.to_vec());
                }
                if self.documents.is_some() || self.uris.is_some() || self.metadatas.is_some() {
                    let fields = records.fields(s, row)?;
                    if let Some(v) = &mut self.documents {
                        v.push(fields.document);
                    }
                    if let Some(v) = &mut self.uris {
                        v.push(fields.uri);
                    }
                    if let Some(v) = &mut self.metadatas {
                        v.push(fields.metadata);
                    }
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
        Ok(())
    }
}
