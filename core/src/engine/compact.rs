//! Compaction: fold the log into a new immutable segment (records + HNSW index), merge
//! segments, and collect objects no manifest needs any more.
//!
//! A new segment's graph is built once per vector: when the rows to write include a
//! whole segment (every row live, the collection's space and `M`), its graph is extended
//! with the other rows ([`HnswIndex::extend_with`]) instead of built over all of them.
//! Folding a log picks such a segment itself when one is at most
//! [`super::EngineConfig::extend_ratio`] times the log, so a load that arrives in several
//! folds grows one graph.
//!
//! Fencing: a compaction commits only if the manifest still has the segments it read and
//! the log batches it folded (writes appended meanwhile are kept), so two concurrent
//! compactions of one collection cannot both win and no write is lost.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use uuid::Uuid;

use super::records::{into_log_records, LoadedRows, StoredRecords, RECORDS_CHUNK};
use super::snapshot::{encode_rows, fold_reading, LoadedSegment, LogRecord, SegmentView};
use super::vectors::{SegmentVectors, VECTOR_CHUNK};
use super::{object_keys, release_memory, Engine, Stop};
use crate::catalog::{Manifest, RetiredObject, SegmentRef};
use crate::clock::now_ms;
use crate::crypto::envelope::RangeReader;
use crate::crypto::DataKey;
use crate::error::{Error, ErrorCode, Result};
use crate::index::{BuildOptions, HnswIndex, HnswParams, IndexLayout, MAX_EXTENDABLE_NEIGHBORS};
use crate::model::Collection;
use crate::segment;
use crate::segment::ranged::Columns;

/// What a sweep of every collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// Collections compacted.
    pub collections: usize,
    pub folded_batches: usize,
    pub folded_ops: u64,
    pub merged_segments: usize,
    /// Objects deleted: garbage of collections, of deleted collections and of bulk ingest.
    pub collected_objects: usize,
    /// Collections that failed (the nil id for the collection of orphans and of ingest
    /// objects), with the error.
    pub failures: Vec<(Uuid, String)>,
}

impl SweepReport {
    /// Adds what another sweep (of other collections) did.
    pub fn add(&mut self, other: SweepReport) {
        self.collections += other.collections;
        self.folded_batches += other.folded_batches;
        self.folded_ops += other.folded_ops;
        self.merged_segments += other.merged_segments;
        self.collected_objects += other.collected_objects;
        self.failures.extend(other.failures);
    }
}

/// What one compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Log batches folded into segments.
    pub folded_batches: usize,
    pub folded_ops: u64,
    /// Existing segments rebuilt into the new one.
    pub merged_segments: usize,
    /// Rows of the new segment (0 when none was written).
    pub new_segment_rows: u64,
    /// Segments after the compaction.
    pub segments: usize,
    /// Whether a concurrent compaction won and this one changed nothing.
    pub superseded: bool,
}

impl CompactionReport {
    /// Adds a later round's report to this one.
    fn absorb(&mut self, later: CompactionReport) {
        self.folded_batches += later.folded_batches;
        self.folded_ops += later.folded_ops;
        self.merged_segments += later.merged_segments;
        self.new_segment_rows += later.new_segment_rows;
        self.segments = later.segments;
        self.superseded |= later.superseded;
    }
}

/// A segment's rows as the merge policy sees them.
#[derive(Debug, Clone, Copy)]
struct SegmentSize {
    live: usize,
    rows: usize,
}

impl SegmentSize {
    fn of_view(v: &SegmentView) -> Self {
        Self {
            live: v.live_count,
            rows: v.segment.len(),
        }
    }

    fn of_ref(r: &SegmentRef) -> Self {
        Self {
            live: r.rows.saturating_sub(r.deleted) as usize,
            rows: r.rows as usize,
        }
    }
}

/// How many of the log's first batches one compaction folds: as many as hold at most
/// `max_rows` operations together, and at least one.
fn log_prefix(log: &[crate::catalog::LogBatchRef], max_rows: u64) -> usize {
    let mut ops = 0u64;
    let fitting = log
        .iter()
        .take_while(|l| {
            ops = ops.saturating_add(l.ops);
            ops <= max_rows
        })
        .count();
    fitting.max(1).min(log.len())
}

/// How far a compaction merges a collection's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// As the merge policy requires (mostly-dead and small segments).
    AsNeeded,
    /// Every segment into one, when the collection's live rows fit one segment
    /// (`chroma compact`; the background compactor once a collection is idle).
    All,
}

impl Engine {
    /// Compacts one collection: folds its whole log into new segments (as many as its
    /// size needs: see [`super::EngineConfig::max_segment_rows`]) and merges segments as
    /// `merge` says.
    pub async fn compact(&self, id: Uuid, merge: Merge) -> Result<CompactionReport> {
        self.compact_until(id, merge, Stop::never()).await
    }

    /// [`Engine::compact`], stopped early (`Cancelled`, nothing committed) when `stop` is
    /// set, the engine shuts down or the collection is deleted. Once it has committed, it
    /// asks for another compaction when writes made meanwhile left a log that needs one.
    pub async fn compact_until(
        &self,
        id: Uuid,
        merge: Merge,
        stop: Stop,
    ) -> Result<CompactionReport> {
        let running = self.running.start(id, &self.shutdown);
        let stop = stop.or(running.token.clone());
        let lock = self
            .compaction_locks
            .lock()
            .expect("compaction lock")
            .entry(id)
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        let collection = self.catalog.get_collection_by_id(id).await?;
        // A log longer than one segment may hold is folded a segment's worth at a time,
        // each round committed on its own.
        let mut total = CompactionReport::default();
        loop {
            let manifest = self.catalog.get_manifest(id).await?;
            let started = Instant::now();
            let report = self
                .compact_manifest(&collection, &manifest, merge, &stop)
                .await;
            match &report {
                Ok(r) if r.folded_batches > 0 || r.merged_segments > 0 => {
                    crate::metrics::compaction_done(started.elapsed(), true)
                }
                Err(e) if !matches!(e.code(), ErrorCode::Cancelled | ErrorCode::NotFound) => {
                    crate::metrics::compaction_done(started.elapsed(), false)
                }
                _ => {}
            }
            // A build frees hundreds of bytes per vector (hnsw_rs's graph, the f32
            // vectors, the records being written), and so does a superseded segment: give
            // the pages back rather than keep them in the allocator's free lists.
            release_memory();
            let report = report?;
            let done = report.superseded || report.folded_batches >= manifest.log.len();
            total.absorb(report);
            if done {
                break;
            }
        }
        // Writes committed while this ran asked for a compaction that the queue may have
        // merged into the request being handled (it names the same log head): ask again
        // for the log they left, which starts at a batch no request named yet.
        match self.catalog.get_manifest(id).await {
            Ok(left) => self.request_compaction_if_needed(id, &left).await,
            Err(e) => {
                tracing::warn!(collection = %id, error = %e, "could not read the log left by compaction")
            }
        }
        if let Err(e) = self.collect_garbage(id).await {
            tracing::warn!(collection = %id, error = %e, "garbage collection failed");
        }
        Ok(total)
    }

    async fn compact_manifest(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        mode: Merge,
        stop: &Stop,
    ) -> Result<CompactionReport> {
        stop.check("compaction")?;
        let started = Instant::now();
        let id = collection.id;
        let key = self.data_key(collection, manifest).await?;
        let views = self.segment_views(&key, &manifest.segments).await?;
        // As much of the log as one segment holds (at least one batch).
        let cap = self.segment_rows(manifest);
        let log = &manifest.log[..log_prefix(&manifest.log, cap)];
        let batches = self.log_batches_to_fold(&key, log).await?;
        let folded_ops: u64 = log.iter().map(|l| l.ops).sum();
        let mut folded = fold_reading(views, batches).await?;
        // The fold copied what it needs of the batches: a build should not also hold the
        // decoded embeddings of those queries had cached (about 1.5 KB a row). A failed
        // compaction reads them again.
        for l in log {
            self.cache.remove(&l.key);
        }

        let sizes: Vec<SegmentSize> = folded.segments.iter().map(SegmentSize::of_view).collect();
        let merge = self.plan_merge(&sizes, folded.log.len(), mode, cap);
        let base = self.plan_base(collection, &folded.segments, &merge);
        let empties = folded.segments.iter().any(|v| v.live_count == 0);
        if log.is_empty() && merge.is_empty() && !empties {
            return Ok(CompactionReport {
                segments: manifest.segments.len(),
                ..Default::default()
            });
        }

        // Rows of the new segment: the folded log plus the live rows of merged segments,
        // the base's rows first and in their order (the base's graph is extended).
        let mut rows: Vec<LogRecord> = std::mem::take(&mut folded.log);
        let mut base_rows: Vec<LogRecord> = Vec::new();
        for &s in &merge {
            stop.check("compaction")?;
            let view = &folded.segments[s];
            let live: Vec<u32> = (0..view.segment.len() as u32)
                .filter(|&row| view.is_live(row))
                .collect();
            let (vectors, records) = futures::try_join!(
                view.segment.read_vectors(&live),
                view.segment.records.read_rows(&live, Columns::ALL)
            )?;
            let dim = view.segment.index.dim();
            let into = if base == Some(s) {
                &mut base_rows
            } else {
                &mut rows
            };
            into.extend(into_log_records(records, &vectors, dim)?);
        }
        rows.sort_by_key(|r| r.offset);
        let base = base.map(|s| folded.segments[s].segment.clone());
        if base.is_some() {
            base_rows.append(&mut rows);
            rows = base_rows;
        }
        let mut written: Vec<String> = Vec::new();
        let new_segment = if rows.is_empty() {
            None
        } else {
            let dim = manifest.dimension.ok_or_else(|| {
                Error::internal(format!("collection {id} has records but no dimension"))
            })? as usize;
            let built = self
                .write_segment(collection, manifest.owner(id), &key, rows, base, dim, stop)
                .await?;
            written.push(built.0.records_key.clone());
            written.push(built.0.index_key.clone());
            written.extend(built.0.sparse_key.clone());
            Some(built)
        };

        // Segments kept: those not merged and not emptied, with new tombstones.
        let merged: HashSet<usize> = merge.iter().copied().collect();
        let mut kept: Vec<SegmentRef> = Vec::new();
        let mut retired: Vec<String> = Vec::new();
        for (s, view) in folded.segments.iter().enumerate() {
            let old = &view.reference;
            if merged.contains(&s) || view.live_count == 0 {
                retired.extend(
                    [
                        Some(old.records_key.clone()),
                        Some(old.index_key.clone()),
                        old.deletes_key.clone(),
                        old.sparse_key.clone(),
                    ]
                    .into_iter()
                    .flatten(),
                );
                continue;
            }
            if folded.shadowed[s].is_empty() {
                kept.push(old.clone());
                continue;
            }
            let dead: Vec<u32> = (0..view.segment.len() as u32)
                .filter(|&r| !view.is_live(r))
                .collect();
            let object = object_keys::segment_deletes(manifest.owner(id), &old.id);
            self.put_encrypted(&key, &object, encode_rows(&dead))
                .await?;
            written.push(object.clone());
            if let Some(previous) = &old.deletes_key {
                retired.push(previous.clone());
            }
            kept.push(SegmentRef {
                deletes_key: Some(object),
                deleted: dead.len() as u64,
                ..old.clone()
            });
        }
        let new_rows = new_segment.as_ref().map_or(0, |(r, _)| r.rows);
        if let Some((r, _)) = &new_segment {
            kept.push(r.clone());
        }
        retired.extend(log.iter().map(|l| l.key.clone()));

        let folded_keys: Vec<&str> = log.iter().map(|l| l.key.as_str()).collect();
        let now = now_ms();
        let committed = self
            .commit_with_retry(id, Some(manifest.clone()), |current| {
                let log_kept = current.log.len() >= folded_keys.len()
                    && current
                        .log
                        .iter()
                        .zip(&folded_keys)
                        .all(|(l, k)| l.key == *k);
                if current.segments != manifest.segments || !log_kept {
                    return Ok(None);
                }
                let mut next = current.clone();
                next.version += 1;
                next.log = current.log[folded_keys.len()..].to_vec();
                next.segments = kept.clone();
                next.indexed_ops += folded_ops;
                next.compactions += 1;
                next.retired.extend(retired.iter().map(|k| RetiredObject {
                    key: k.clone(),
                    retired_at_ms: now,
                }));
                Ok(Some(next))
            })
            .await;
        let committed = match committed {
            Ok(c) => c,
            Err(e) => {
                self.delete_unreferenced(id, &written).await;
                return Err(e);
            }
        };
        let Some(next) = committed else {
            self.delete_unreferenced(id, &written).await;
            tracing::info!(collection = %id, "compaction superseded by a concurrent one");
            return Ok(CompactionReport {
                superseded: true,
                segments: manifest.segments.len(),
                ..Default::default()
            });
        };
        // Nothing reads the replaced objects through the cache any more (readers of an
        // older snapshot hold their own references).
        for k in &retired {
            self.cache.retire(k);
            self.cache.retire(&super::cold::cold_key(k));
        }
        if let Some((r, loaded)) = new_segment {
            // The reader would decode exactly this: keep the built segment warm.
            let size = loaded.1;
            let segment = loaded.0;
            self.cache
                .get_or_load(&r.records_key, || async move { Ok((segment, size)) })
                .await?;
        }
        let report = CompactionReport {
            folded_batches: log.len(),
            folded_ops,
            merged_segments: merge.len(),
            new_segment_rows: new_rows,
            segments: next.segments.len(),
            superseded: false,
        };
        tracing::info!(
            collection = %id,
            folded_ops,
            merged = merge.len(),
            new_rows,
            segments = next.segments.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            cached_bytes = self.cached_bytes(),
            "compacted"
        );
        Ok(report)
    }

    /// Rows one segment of this collection may hold ([`super::segment_rows_cap`]).
    fn segment_rows(&self, manifest: &Manifest) -> u64 {
        let dim = manifest.dimension.unwrap_or(0) as usize;
        super::segment_rows_cap(&self.config, dim)
    }

    /// Which segments to rewrite together with the log's `log_records` records. The new
    /// segment stays within `cap` rows: what would not fit is left for later.
    fn plan_merge(
        &self,
        segments: &[SegmentSize],
        log_records: usize,
        mode: Merge,
        cap: u64,
    ) -> Vec<usize> {
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        let has_log = log_records > 0;
        let live: usize = segments.iter().map(|s| s.live).sum();
        if mode == Merge::All
            && segments.len() + has_log as usize > 1
            && live.saturating_add(log_records) <= cap
        {
            return (0..segments.len())
                .filter(|&s| segments[s].live > 0)
                .collect();
        }
        // Rows of the new segment so far.
        let mut size = log_records;
        let mut merge: Vec<usize> = Vec::new();
        // Mostly-dead segments are rewritten.
        for (s, seg) in segments.iter().enumerate() {
            if seg.live > 0 && seg.live * 2 < seg.rows && size + seg.live <= cap {
                merge.push(s);
                size += seg.live;
            }
        }
        // Too many segments: fold in the smallest ones.
        let mut by_size: Vec<usize> = (0..segments.len())
            .filter(|s| !merge.contains(s) && segments[*s].live > 0)
            .collect();
        by_size.sort_by_key(|&s| segments[s].live);
        let mut count = by_size.len() + usize::from(has_log || !merge.is_empty());
        for &s in &by_size {
            if count <= self.config.max_segments || size + segments[s].live > cap {
                break;
            }
            merge.push(s);
            size += segments[s].live;
            count -= 1;
        }
        // The log extends the largest whole segment not much larger than itself.
        let ratio = self.config.extend_ratio;
        if has_log && ratio > 0 {
            let extend = by_size.iter().rev().copied().find(|&s| {
                let seg = &segments[s];
                seg.live == seg.rows
                    && seg.live <= log_records.saturating_mul(ratio)
                    && size + seg.live <= cap
            });
            if let Some(s) = extend.filter(|s| !merge.contains(s)) {
                merge.push(s);
            }
        }
        merge
    }

    /// Of the segments to merge, the one whose graph the others' rows are inserted into
    /// (instead of building over every row again): the largest with every row live, built
    /// with the collection's space and `max_neighbors`.
    fn plan_base(
        &self,
        collection: &Collection,
        segments: &[SegmentView],
        merge: &[usize],
    ) -> Option<usize> {
        let hnsw = &collection.configuration.hnsw;
        merge
            .iter()
            .copied()
            .filter(|&s| {
                let v = &segments[s];
                let index = &v.segment.index;
                v.live_count > 0
                    && v.live_count == v.segment.len()
                    && index.space() == hnsw.space
                    && index.max_neighbors() == hnsw.max_neighbors
                    && index.max_neighbors() <= MAX_EXTENDABLE_NEIGHBORS
            })
            .max_by_key(|&s| segments[s].live_count)
    }

    /// Builds and writes a segment's records and index. With a `base` segment, the first
    /// `base.len()` rows are its rows in its order and the index extends its graph with
    /// the others; without, the index is built over every row. Returns the new segment's
    /// reference and the decoded form readers would load.
    /// The segment's objects go under the prefix of collection `owner` (see
    /// [`Manifest::owner`]).
    #[allow(clippy::too_many_arguments)]
    async fn write_segment(
        &self,
        collection: &Collection,
        owner: Uuid,
        key: &DataKey,
        mut rows: Vec<LogRecord>,
        base: Option<Arc<LoadedSegment>>,
        dim: usize,
        stop: &Stop,
    ) -> Result<(SegmentRef, (LoadedSegment, usize))> {
        stop.check("compaction")?;
        let stop = stop.clone();
        let threads = self.config.build_threads;
        let rows_per_partition = self.config.rows_per_partition;
        let params = HnswParams::from(&collection.configuration.hnsw);
        let (records_bytes, index_bytes, head_len, sparse_bytes, built) =
            tokio::task::spawn_blocking(move || {
                // The embeddings move into one buffer (not copied: a build of N rows
                // holds each vector in as few places as it can).
                let mut vectors = Vec::with_capacity(rows.len() * dim);
                for r in &mut rows {
                    if r.record.embedding.len() != dim {
                        return Err(Error::internal(format!(
                            "record {} has dimension {} in a collection of dimension {dim}",
                            r.record.id,
                            r.record.embedding.len()
                        )));
                    }
                    vectors.extend_from_slice(&std::mem::take(&mut r.record.embedding));
                }
                // The records' own vectors and the decoded log are freed small blocks
                // by now (1.5 KB a row at 384 dimensions): give them back before the
                // build allocates its graph on other threads' arenas.
                release_memory();
                let cancelled = || stop.is_set();
                let options = BuildOptions {
                    threads,
                    cancelled: &cancelled,
                };
                // The index keeps the buffer as its resident vectors.
                let index = match &base {
                    Some(base) => base.index.extend_owned(vectors, &params, &options)?,
                    None => HnswIndex::build_owned(vectors, dim, &params, &options)?,
                };
                let base_partitions = base.as_ref().and_then(|b| b.index.partitions().cloned());
                drop(base);
                // hnsw_rs's graph (millions of small blocks) is gone.
                release_memory();
                // Rows in partition order: the index renumbers its own, the records
                // follow (see `index::partition`). An extended segment keeps its base's
                // centroids.
                let (mut index, order) = match &base_partitions {
                    Some(p) => index.partitioned_after(p, rows_per_partition, &options)?,
                    None => index.partitioned(rows_per_partition, &options)?,
                };
                let mut slots: Vec<Option<LogRecord>> = rows.into_iter().map(Some).collect();
                let rows: Vec<LogRecord> = order
                    .iter()
                    .map(|&row| slots[row as usize].take())
                    .collect::<Option<_>>()
                    .ok_or_else(|| Error::internal("partition order is not a permutation"))?;
                drop(slots);
                stop.check("compaction")?;
                let pairs: Vec<(u64, &crate::model::Record)> =
                    rows.iter().map(|r| (r.offset, &r.record)).collect();
                let records_bytes = segment::encode_records_without_embeddings(&pairs)?;
                drop(pairs);
                // The written object holds the vectors from here on (read by range).
                let index_bytes = index.seal();
                let IndexLayout::Head { head_len, .. } = IndexLayout::parse(&index_bytes)? else {
                    return Err(Error::internal("a new index has no separate head"));
                };
                // What the loaded segment holds in memory: the rows' offsets, ids and
                // metadata (for its columns); their documents and uris are read from the
                // records object when asked for.
                let mut offsets = Vec::with_capacity(rows.len());
                let mut ids = Vec::with_capacity(rows.len());
                let mut metadatas = Vec::with_capacity(rows.len());
                for r in rows {
                    offsets.push(r.offset);
                    ids.push(r.record.id);
                    metadatas.push(r.record.metadata);
                }
                let records = segment::DecodedRecords {
                    offsets,
                    ids,
                    metadatas,
                    embeddings: None,
                    dim,
                    ..segment::DecodedRecords::default()
                };
                // The sparse index is built here with the segment, and written beside it.
                let n = records.len();
                let rows = LoadedRows::of(records);
                let sparse_bytes = rows
                    .sparse
                    .as_ref()
                    .filter(|sparse| !sparse.is_empty())
                    .map(|sparse| sparse.to_bytes(n));
                Ok((
                    records_bytes,
                    index_bytes,
                    head_len,
                    sparse_bytes,
                    (rows, index),
                ))
            })
            .await
            .map_err(|e| Error::internal_from("segment build task failed", e))??;
        let segment_id = ulid::Ulid::new().to_string();
        let records_key = object_keys::segment_records(owner, &segment_id);
        let index_key = object_keys::segment_index(owner, &segment_id);
        let rows = built.0.ids.len() as u64;
        let records_len = self
            .put_encrypted_chunked(key, &records_key, records_bytes, RECORDS_CHUNK)
            .await?;
        let index_len = self
            .put_encrypted_chunked(key, &index_key, index_bytes, VECTOR_CHUNK)
            .await?;
        let (sparse_key, sparse_len) = match sparse_bytes {
            Some(bytes) => {
                let sparse_key = object_keys::segment_sparse(owner, &segment_id);
                let len = self.put_encrypted(key, &sparse_key, bytes).await?;
                (Some(sparse_key), len)
            }
            None => (None, 0),
        };
        let (stored, index_reader) = futures::try_join!(
            StoredRecords::open(
                self.store.clone(),
                &records_key,
                key,
                Some(records_len),
                rows
            ),
            RangeReader::open_sized(self.store.clone(), &index_key, key, Some(index_len))
        )?;
        let vectors = SegmentVectors::Stored {
            reader: Box::new(index_reader),
            offset: head_len,
        };
        let (segment_rows, index) = built;
        // Hashing every id is CPU work.
        let loaded = tokio::task::spawn_blocking(move || {
            LoadedSegment::new(segment_rows, None, index, vectors, stored)
        })
        .await
        .map_err(|e| Error::internal_from("segment build task failed", e))??;
        let size = loaded.memory_bytes();
        let reference = SegmentRef {
            id: segment_id,
            records_key,
            index_key,
            rows,
            bytes: records_len + index_len + sparse_len,
            deletes_key: None,
            deleted: 0,
            records_len: Some(records_len),
            index_len: Some(index_len),
            sparse_key,
        };
        Ok((reference, (loaded, size)))
    }

    /// Deletes those of `keys` (objects this process wrote for a commit that failed or was
    /// superseded) that the collection's current manifest does not reference.
    ///
    /// A failed commit is not always a commit that did not happen: a response lost after
    /// the catalog applied it (and the SDK's retry of the same request then losing its
    /// condition) looks like a failure. So the manifest is read again first; if that read
    /// fails too, nothing is deleted and garbage collection takes the objects later.
    pub(crate) async fn delete_unreferenced(&self, id: Uuid, keys: &[String]) {
        match self.catalog.get_manifest(id).await {
            Ok(m) => {
                let referenced: HashSet<&str> = m.referenced_keys().collect();
                let unreferenced: Vec<String> = keys
                    .iter()
                    .filter(|k| !referenced.contains(k.as_str()))
                    .cloned()
                    .collect();
                self.delete_objects(&unreferenced).await;
            }
            Err(e) if e.code() == ErrorCode::NotFound => self.delete_objects(keys).await,
            Err(e) => {
                tracing::warn!(collection = %id, error = %e, "cannot tell whether objects of a failed commit are referenced; leaving them to garbage collection");
            }
        }
    }

    pub(super) async fn delete_objects(&self, keys: &[String]) {
        for k in keys {
            if let Err(e) = self.store.delete(k).await {
                tracing::warn!(key = %k, error = %e, "failed to delete object");
            }
        }
    }

    /// Deletes retired objects whose grace period has passed, and objects under the
    /// collection's prefix that no manifest ever referenced (left by failed writes) once
    /// they are older than the grace period; in both cases only objects no other member
    /// of its lineage references (see `fork.rs`).
    pub async fn collect_garbage(&self, id: Uuid) -> Result<usize> {
        let manifest = self.catalog.get_manifest(id).await?;
        // What other members of its lineage still reference is not this one's to delete.
        let shared = self
            .other_members_references(id, &manifest)
            .await?
            .unwrap_or_default();
        let grace = self.config.gc_grace.as_millis() as u64;
        let now = now_ms();
        let expired: Vec<String> = manifest
            .retired
            .iter()
            .filter(|r| now.saturating_sub(r.retired_at_ms) >= grace)
            .map(|r| r.key.clone())
            .collect();
        let mut deleted = 0;
        if !expired.is_empty() {
            let unshared: Vec<String> = expired
                .iter()
                .filter(|k| !shared.contains(k.as_str()))
                .cloned()
                .collect();
            self.delete_objects(&unshared).await;
            for k in &unshared {
                self.cache.remove(k);
                self.cache.remove(&super::cold::cold_key(k));
            }
            deleted += unshared.len();
            let gone: HashSet<&str> = expired.iter().map(String::as_str).collect();
            self.commit_with_retry(id, Some(manifest.clone()), |current| {
                if !current
                    .retired
                    .iter()
                    .any(|r| gone.contains(r.key.as_str()))
                {
                    return Ok(None);
                }
                let mut next = current.clone();
                next.version += 1;
                next.retired.retain(|r| !gone.contains(r.key.as_str()));
                Ok(Some(next))
            })
            .await?;
        }
        // Unreferenced objects: written by a write or compaction that never committed.
        let manifest = self.catalog.get_manifest(id).await?;
        let referenced: HashSet<&str> = manifest.referenced_keys().collect();
        let cutoff = std::time::SystemTime::now() - self.config.gc_grace;
        let orphans: Vec<String> = self
            .store
            .list(&object_keys::collection_prefix(manifest.owner(id)))
            .await?
            .into_iter()
            .filter(|o| {
                !referenced.contains(o.key.as_str())
                    && !shared.contains(&o.key)
                    && o.last_modified <= cutoff
            })
            .map(|o| o.key)
            .collect();
        deleted += orphans.len();
        self.delete_objects(&orphans).await;
        Ok(deleted)
    }

    /// Deletes the objects of collections that no longer exist, once older than the
    /// grace period (left behind when a deletion was interrupted). A prefix whose
    /// collection is gone but whose lineage still has members is theirs, and kept.
    pub async fn collect_orphaned_collections(&self) -> Result<usize> {
        let live: HashSet<Uuid> = self
            .catalog
            .list_all_collections()
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let cutoff = std::time::SystemTime::now() - self.config.gc_grace;
        let mut in_use: HashMap<Uuid, bool> = HashMap::new();
        let mut orphans = Vec::new();
        for o in self.store.list(object_keys::COLLECTIONS).await? {
            let id = o
                .key
                .split('/')
                .nth(1)
                .and_then(|s| Uuid::parse_str(s).ok());
            let Some(id) = id else { continue };
            if live.contains(&id) || o.last_modified > cutoff {
                continue;
            }
            let used = match in_use.get(&id) {
                Some(used) => *used,
                None => *in_use.entry(id).or_insert(self.prefix_in_use(id).await?),
            };
            if !used {
                orphans.push(o.key);
            }
        }
        self.delete_objects(&orphans).await;
        Ok(orphans.len())
    }

    /// Compacts every collection (folds its log, merges segments as `merge` says) and collects its garbage, then deletes
    /// what deleted collections left behind and what bulk ingest wrote that is past its
    /// retention. A collection that fails does not stop the others: its failure is
    /// reported and the sweep goes on. Fails only when the collections cannot be listed.
    /// Stops between collections, and inside one, when `stop` is set (the Lambda
    /// function's time running out): what is left waits for the next sweep. `progress`
    /// hears (collections done, collections) after each one.
    pub async fn sweep(
        &self,
        merge: Merge,
        stop: &Stop,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let collections = self.catalog.list_all_collections().await?;
        let total = collections.len();
        for (done, c) in collections.into_iter().enumerate() {
            if stop.is_set() {
                tracing::info!("sweep stopped early: the rest waits for the next one");
                break;
            }
            match self.sweep_collection(c.id, merge, stop).await {
                Ok(r) => report.add(r),
                // Deleted meanwhile, or stopped (by the deadline or a deletion).
                Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::Cancelled) => {}
                Err(e) => {
                    tracing::error!(collection = %c.id, error = %e, "sweep: collection failed");
                    report.failures.push((c.id, e.to_string()));
                }
            }
            progress(done + 1, total);
        }
        match self.collect_orphaned_collections().await {
            Ok(n) => report.collected_objects += n,
            Err(e) => report.failures.push((Uuid::nil(), e.to_string())),
        }
        match self.collect_ingest_garbage().await {
            Ok(n) => report.collected_objects += n,
            Err(e) => report.failures.push((Uuid::nil(), e.to_string())),
        }
        tracing::info!(?report, "sweep done");
        Ok(report)
    }

    /// Compacts collection `id` (folds its log, merges segments as `merge` says, stops
    /// when `stop` is set) and collects its garbage: the sweep's step for one collection,
    /// also what `chroma compact --collection` and a compaction request do.
    pub async fn sweep_collection(
        &self,
        id: Uuid,
        merge: Merge,
        stop: &Stop,
    ) -> Result<SweepReport> {
        let compacted = self.compact_until(id, merge, stop.clone()).await?;
        let collected = self.collect_garbage(id).await?;
        Ok(SweepReport {
            collections: 1,
            folded_batches: compacted.folded_batches,
            folded_ops: compacted.folded_ops,
            merged_segments: compacted.merged_segments,
            collected_objects: collected,
            failures: Vec::new(),
        })
    }

    /// Runs compaction in the background of a long-lived process: requests from
    /// `requests` (the collections of an in-process queue, such as
    /// [`crate::jobs::local::LocalJobsReceiver`], taken as they are yielded), collections
    /// idle for a while (fold the rest of the log, merge segments), and garbage
    /// collection.
    pub fn spawn_background(
        self: &Arc<Self>,
        mut requests: impl Stream<Item = Uuid> + Send + Unpin + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            engine.schedule_pending().await;
            // Requested compactions wait until their collection's writes pause (or for at
            // most `compact_max_delay`), so a bulk load is indexed in one build instead of
            // many small segments that would have to be merged again.
            let mut requested: HashMap<Uuid, Instant> = HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut last_sweep = Instant::now();
            loop {
                tokio::select! {
                    _ = engine.shutdown.cancelled() => break,
                    request = requests.next() => {
                        let Some(id) = request else { break };
                        requested.entry(id).or_insert_with(Instant::now);
                    }
                    _ = tick.tick() => {
                        let due: Vec<Uuid> = requested
                            .iter()
                            .filter(|(id, since)| {
                                since.elapsed() >= engine.config.compact_max_delay
                                    || engine.quiet_for(**id) >= engine.config.compact_quiet
                            })
                            .map(|(id, _)| *id)
                            .collect();
                        for id in due {
                            requested.remove(&id);
                            engine.compact_logged(id, Merge::AsNeeded).await;
                        }
                        engine.optimize_idle().await;
                        if last_sweep.elapsed() >= engine.config.gc_grace.min(Duration::from_secs(600)) {
                            last_sweep = Instant::now();
                            if let Err(e) = engine.collect_orphaned_collections().await {
                                tracing::warn!(error = %e, "orphan collection failed");
                            }
                            if let Err(e) = engine.collect_ingest_garbage().await {
                                tracing::warn!(error = %e, "bulk ingest collection failed");
                            }
                        }
                    }
                }
            }
        })
    }

    /// How long since the last write to a collection (by this process).
    fn quiet_for(&self, id: Uuid) -> Duration {
        self.last_write
            .lock()
            .expect("write lock")
            .get(&id)
            .map_or(Duration::MAX, |t| t.elapsed())
    }

    async fn compact_logged(&self, id: Uuid, merge: Merge) {
        match self.compact(id, merge).await {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::NotFound => {}
            Err(e) if e.code() == ErrorCode::Cancelled => {
                tracing::info!(collection = %id, reason = %e, "compaction stopped")
            }
            Err(e) => tracing::error!(collection = %id, error = %e, "compaction failed"),
        }
    }

    /// Collections left with un-compacted logs (e.g. by a restart) are compacted soon.
    async fn schedule_pending(&self) {
        let Ok(all) = self.catalog.list_all_collections().await else {
            return;
        };
        let long_ago = Instant::now() - self.config.optimize_after_idle;
        for c in all {
            if let Ok(m) = self.catalog.get_manifest(c.id).await {
                if !m.log.is_empty() || m.segments.len() > 1 || !m.retired.is_empty() {
                    self.last_write
                        .lock()
                        .expect("write lock")
                        .insert(c.id, long_ago);
                }
            }
        }
    }

    /// Fully compacts collections that have seen no writes for `optimize_after_idle`.
    async fn optimize_idle(&self) {
        let idle: Vec<Uuid> = {
            let mut last = self.last_write.lock().expect("write lock");
            let due: Vec<Uuid> = last
                .iter()
                .filter(|(_, t)| t.elapsed() >= self.config.optimize_after_idle)
                .map(|(id, _)| *id)
                .collect();
            for id in &due {
                last.remove(id);
            }
            due
        };
        for id in idle {
            // Fold what is left of the log first, so everything is indexed as soon as
            // possible; merging the segments (a full rebuild) comes second.
            self.compact_logged(id, Merge::AsNeeded).await;
            self.compact_logged(id, Merge::All).await;
        }
    }

    /// Whether compaction has anything left to do for this collection (log to fold,
    /// segments to merge or drop).
    pub async fn is_settled(&self, id: Uuid) -> Result<bool> {
        let m = self.catalog.get_manifest(id).await?;
        let sizes: Vec<SegmentSize> = m.segments.iter().map(SegmentSize::of_ref).collect();
        Ok(m.log.is_empty()
            && sizes.iter().all(|s| s.live > 0)
            && self
                .plan_merge(&sizes, 0, Merge::All, self.segment_rows(&m))
                .is_empty()
            && !self
                .last_write
                .lock()
                .expect("write lock")
                .contains_key(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::snapshot::tests::{batch, engine_with_collection};
    use crate::engine::{DeleteRequest, EngineConfig, Include, QueryRequest};

    /// The embedding `batch` gives record `id-{i}`.
    fn embedding(i: usize) -> Vec<f32> {
        vec![i as f32 + 1.0, 1.0, (i % 7) as f32]
    }

    #[test]
    fn a_compaction_folds_at_most_a_segments_worth_of_log() {
        let batch = |ops| crate::catalog::LogBatchRef {
            seq: 0,
            key: String::new(),
            first_offset: 0,
            ops,
            bytes: 0,
        };
        let log: Vec<_> = [100, 100, 100, 700].into_iter().map(batch).collect();
        assert_eq!(log_prefix(&log, 250), 2);
        assert_eq!(log_prefix(&log, 300), 3);
        assert_eq!(log_prefix(&log, 10_000), 4);
        // One batch larger than a segment is still folded (alone).
        assert_eq!(log_prefix(&log[3..], 250), 1);
        assert_eq!(log_prefix(&[], 250), 0);
    }

    #[test]
    fn segments_are_sized_by_rows_and_by_build_memory() {
        let config = |max_segment_rows, build_memory_bytes| EngineConfig {
            max_segment_rows,
            build_memory_bytes,
            ..EngineConfig::default()
        };
        let roomy = config(500_000, u64::MAX);
        assert_eq!(crate::engine::segment_rows_cap(&roomy, 384), 500_000);
        let three_gib = config(500_000, 3 << 30);
        let small = crate::engine::segment_rows_cap(&three_gib, 384);
        let wide = crate::engine::segment_rows_cap(&three_gib, 1536);
        assert!(small < 500_000 && wide < small / 2, "{small} {wide}");
        assert!(small * crate::engine::build_bytes_per_row(384) <= 3 << 30);
        assert_eq!(crate::engine::segment_rows_cap(&config(500_000, 0), 384), 1);
    }

    /// A load larger than `max_segment_rows` becomes segments of at most that many rows,
    /// one committed fold each; merging everything stays within it too, and once the
    /// collection is small enough it becomes one segment.
    #[tokio::test]
    async fn segments_never_grow_past_the_cap() {
        let (engine, collection) = engine_with_collection(EngineConfig {
            compact_log_ops: u64::MAX,
            max_segment_rows: 250,
            rows_per_partition: 16,
            optimize_after_idle: Duration::ZERO,
            ..EngineConfig::default()
        })
        .await;
        let id = collection.id;
        for start in (0..800).step_by(100) {
            engine
                .upsert(&collection, batch(start..start + 100))
                .await
                .unwrap();
        }
        let report = engine.compact(id, Merge::AsNeeded).await.unwrap();
        assert_eq!((report.folded_batches, report.folded_ops), (8, 800));
        let rows = |m: &Manifest| m.segments.iter().map(|s| s.rows).collect::<Vec<_>>();
        let manifest = engine.catalog.get_manifest(id).await.unwrap();
        assert!(manifest.log.is_empty());
        assert_eq!(rows(&manifest), [200, 200, 200, 200]);

        // Everything together would exceed the cap: the idle optimizer merges nothing,
        // and the collection counts as settled.
        engine.optimize_idle().await;
        assert!(engine.is_settled(id).await.unwrap());
        let merged = engine.catalog.get_manifest(id).await.unwrap();
        assert_eq!(rows(&merged), [200, 200, 200, 200]);
        assert_eq!(engine.count(&collection).await.unwrap(), 800);
        for i in [0, 199, 200, 555, 799] {
            let found = engine
                .query(
                    &collection,
                    QueryRequest {
                        embeddings: vec![embedding(i)],
                        n_results: 1,
                        include: Include::default(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(found.ids, [[format!("id-{i}")]]);
        }

        // Small enough again (two segments partly live): one segment.
        let doomed = (100..200)
            .chain(280..800)
            .map(|i| format!("id-{i}"))
            .collect();
        engine
            .delete(
                &collection,
                DeleteRequest {
                    ids: Some(doomed),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(!engine.is_settled(id).await.unwrap());
        engine.optimize_idle().await;
        let small = engine.catalog.get_manifest(id).await.unwrap();
        assert_eq!(rows(&small), [180]);
        assert_eq!(engine.count(&collection).await.unwrap(), 180);
        assert!(engine.is_settled(id).await.unwrap());
    }
}
