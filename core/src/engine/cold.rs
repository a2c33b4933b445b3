//! The cold path: a query over segments that are not in memory, answered by reading
//! what it needs of their objects instead of loading them.
//!
//! Loading a segment reads its whole head (codes, graph) and records, so the first query
//! after a restart — or on a fresh Lambda instance — costs time proportional to the
//! collection (about 1.5 GB of reads at 1M × 384 on S3). A query that names no ids,
//! against a collection whose snapshot is not cached, with at least
//! [`EngineConfig::cold_query_rows`](super::EngineConfig) rows in segments, is served
//! here instead, while the snapshot loads in the background for the queries after it
//! (the warm path, `read.rs`). Per segment (all at once, and cached between queries
//! until the snapshot is loaded):
//! 1. the index object's header and partitions (`index::cold`) and the records file's
//!    footer and offset index (`segment::ranged`): two and one round trips;
//! 2. per query, the codes of the partitions nearest to it — `nprobe` for each full
//!    segment's worth of rows, the nearest across the segments (`index::cold::probe_across`),
//!    so a small segment far from the query is read little or not at all — then the f32
//!    vectors of the best candidates by code, re-ranked exactly: two round trips;
//! 3. the ids, documents, uris and metadata of the results: one round trip.
//!
//! A filter (`where`, `where_document`) adds one round trip before step 2: the ids and
//! the columns the filter reads ([`Filter::reads`]) of the rows of the probed partitions
//! — a few partitions' metadata, not the collection's — so that only the rows passing it
//! are scored. When the probed partitions of some query hold fewer passing rows than the
//! re-rank width (a selective filter), the nearest matches may lie elsewhere: the query
//! then loads the collection and searches it whole (the warm path), as before.
//!
//! The log is folded over the segments as the snapshot does it (`snapshot::fold_ops`):
//! the segment rows the log names are found by reading the segments' id columns (a few
//! bytes per row, only when the log is not empty) and read whole; the rows it shadows
//! and the rows compaction deleted are left out of the search, and the log's records are
//! scored exactly, as on the warm path.
//!
//! Each round trip waits for its slowest request, so on S3 the latency tail sets the
//! query's latency: the S3 deployments hedge their reads (`storage::hedged`: a read not
//! answered by S3's p95 is sent again), a read of a megabyte or more is decrypted span
//! by span as it arrives (`RangeReader::read_many`), and the probed partitions' codes
//! are scored on every core (`ColdIndex::candidates`).
//!
//! Segments written before partitioned indexes (formats 1 and 2) have no cold path: a
//! manifest holding one takes the warm path.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use fixedbitset::FixedBitSet;

use super::read::{QueryRequest, QueryResult};
use super::records::{record_at, StoredRecords};
use super::snapshot::{fold_ops, named_object_error, snapshot_key, LogRecord};
use super::vectors::read_vectors_at;
use super::Engine;
use crate::catalog::{LogBatchRef, Manifest, SegmentRef};
use crate::crypto::envelope::RangeReader;
use crate::crypto::DataKey;
use crate::error::{Error, Result};
use crate::index::cold::probe_across;
use crate::index::partition::Partitions;
use crate::index::{distance, nearest_across, rerank_width, ColdIndex};
use crate::model::{Collection, Filter, Operation};
use crate::segment::ranged::{self, Columns};

/// The cache key of a segment opened for the cold path, by its index object.
pub(crate) fn cold_key(index_key: &str) -> String {
    format!("cold/{index_key}")
}

/// A segment's index opened for the cold path: its header and partitions, and a reader
/// of the object.
#[derive(Debug)]
pub(crate) struct ColdIndexPart {
    index: Arc<ColdIndex>,
    reader: RangeReader,
}

/// Gaps up to this are read through when a cold query fetches its probed partitions'
/// code ranges. A partition's scales (and l2 norms) are 4 bytes a row, a few KiB in a
/// section that holds every partition's, so the probed partitions' scales come in a few
/// requests instead of one each (S3 bills and waits per request); their codes, `dim`
/// bytes a row, lie further apart and are still read one range per partition.
const CODES_GAP: u64 = 256 * 1024;

impl ColdIndexPart {
    /// The f32 vectors of `rows`, row-major in the order given.
    async fn vectors(&self, rows: &[u32]) -> Result<Vec<f32>> {
        let dim = self.index.dim();
        let ranges: Vec<Range<u64>> = rows.iter().map(|&r| self.index.vector_range(r)).collect();
        let mut out = Vec::with_capacity(rows.len() * dim);
        read_vectors_at(&self.reader, &ranges, self.index.codec(), &mut out).await?;
        Ok(out)
    }

    /// The rows to re-rank for `query`: the best by code among the allowed rows of the
    /// `probed` partitions (its nearest, [`ColdIndex::probe`]), ascending, with their
    /// coded distances.
    async fn candidates(
        &self,
        query: &[f32],
        width: usize,
        probed: &[usize],
        allow: Option<&FixedBitSet>,
    ) -> Result<Vec<(u32, f32)>> {
        if width == 0 || self.index.is_empty() {
            return Ok(Vec::new());
        }
        let probed = probed.to_vec();
        let ranges: Vec<Range<u64>> = probed
            .iter()
            .flat_map(|&p| self.index.code_ranges(p))
            .collect();
        let codes = self.reader.read_many(&ranges, CODES_GAP).await?;
        // Scored on rayon's pool: a few megabytes of codes a segment at 1M rows.
        let (index, query, allow) = (self.index.clone(), query.to_vec(), allow.cloned());
        crate::cpu::on_cpu(move || {
            index.candidates_scored(&query, width, &probed, &codes, allow.as_ref())
        })
        .await
    }
}

/// Every query's candidates in every segment (`[query][segment]`), among each segment's
/// `allow`ed rows of its `probes` (`[segment][query]`): a query's `width` nearest by code
/// across the segments (see `nearest_across`).
fn search_codes<'a>(
    indexes: &'a [&'a ColdIndexPart],
    probes: &'a [Vec<Vec<usize>>],
    queries: &'a [Vec<f32>],
    width: usize,
    allow: &'a [Option<FixedBitSet>],
) -> impl std::future::Future<Output = Result<Vec<Vec<Vec<u32>>>>> + 'a {
    futures::future::try_join_all(
        queries
            .iter()
            .enumerate()
            .map(move |(q, query)| async move {
                let per_segment =
                    futures::future::try_join_all(indexes.iter().zip(probes).zip(allow).map(
                        move |((index, probes), allow)| {
                            index.candidates(query, width, &probes[q], allow.as_ref())
                        },
                    ))
                    .await?;
                Ok::<_, Error>(nearest_across(per_segment, width))
            }),
    )
}

/// Where a result comes from.
#[derive(Debug, Clone, Copy)]
enum Hit {
    /// Segment, and index into that segment's rows read.
    Segment(usize, usize),
    Log(usize),
}

impl Engine {
    /// Whether `query` should take the cold path: it names no ids, the collection's
    /// snapshot of `manifest` is not in memory, and its segments are large enough for a
    /// load to cost more than the cold path's reads.
    pub(crate) fn takes_cold_path(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        request: &QueryRequest,
    ) -> bool {
        let rows: u64 = manifest.segments.iter().map(|s| s.rows).sum();
        request.ids.is_none()
            && !manifest.segments.is_empty()
            && rows >= self.config.cold_query_rows
            && !self
                .cache
                .is_loaded(&snapshot_key(collection.id, manifest.version))
    }

    /// Loads the snapshot of `manifest` in the background (once at a time per version),
    /// so that the queries after a cold one take the warm path.
    pub(crate) fn warm_in_background(&self, collection: &Collection, manifest: &Manifest) {
        if !self.config.warm_after_cold {
            return;
        }
        let Some(engine) = self.me.upgrade() else {
            return;
        };
        let key = snapshot_key(collection.id, manifest.version);
        if !self
            .warming
            .lock()
            .expect("warming lock")
            .insert(key.clone())
        {
            return;
        }
        let (collection, manifest) = (collection.clone(), manifest.clone());
        let stop = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                loaded = engine.snapshot(&collection, &manifest) => {
                    if let Err(e) = loaded {
                        tracing::warn!(collection = %collection.id, error = %e, "loading a collection in the background failed");
                    }
                }
                () = stop.cancelled() => {}
            }
            engine.warming.lock().expect("warming lock").remove(&key);
        });
    }

    /// Answers `request` over `manifest` by ranged reads; `None` when a segment has no
    /// partitions, or the request's filter leaves too few rows in the partitions probed
    /// (the warm path must load the collection).
    ///
    /// Three round trips when the log is empty: the index objects' headers and partitions
    /// (with the deletes and the records files' headers; objects' sizes come from the
    /// manifest, so no `HEAD` requests); the probed partitions' codes (with the records
    /// files' footers); the candidates' vectors and records pages.
    pub(crate) async fn query_cold(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        request: &QueryRequest,
    ) -> Result<Option<QueryResult>> {
        let key = self.data_key(collection, manifest).await?;
        let dim = manifest.dimension.unwrap_or(0) as usize;
        let indexes = futures::future::try_join_all(
            manifest
                .segments
                .iter()
                .map(|r| self.cold_index(&key, r, dim)),
        );
        let lives = futures::future::try_join_all(
            manifest
                .segments
                .iter()
                .map(|r| self.live_rows(&key, r, r.rows as usize)),
        );
        // Started with the rest, awaited once the codes are asked for.
        let records = futures::future::try_join_all(
            manifest.segments.iter().map(|r| self.cold_records(&key, r)),
        );
        let mut records = std::pin::pin!(records);
        let ((indexes, live, batches), early) = {
            let first =
                futures::future::try_join3(indexes, lives, self.log_batches(&key, &manifest.log));
            let mut first = std::pin::pin!(first);
            // Drive the records' opening meanwhile, without waiting for it.
            tokio::select! {
                biased;
                got = &mut first => (got?, None),
                done = &mut records => (first.await?, Some(done?)),
            }
        };
        if indexes.iter().any(|i| i.is_none()) {
            return Ok(None);
        }
        let indexes: Vec<&ColdIndexPart> = indexes
            .iter()
            .map(|i| i.as_ref().as_ref().expect("checked above"))
            .collect();

        let k = request.n_results as usize;
        let hnsw = &collection.configuration.hnsw;
        let width = if k == 0 {
            0
        } else {
            rerank_width(k, hnsw.ef_search)
        };
        // `cold_nprobe` partitions for each full segment's worth of rows, the nearest
        // across the segments.
        let rows: u64 = manifest.segments.iter().map(|s| s.rows).sum();
        let full_segments = rows.div_ceil(self.config.max_segment_rows.max(1)).max(1);
        let nprobe = collection
            .configuration
            .cold_nprobe(self.config.cold_nprobe)
            .saturating_mul(usize::try_from(full_segments).unwrap_or(usize::MAX));
        // Per segment, per query: the partitions probed, found once for the filter (if
        // any) and the codes.
        let cold: Vec<&ColdIndex> = indexes.iter().map(|i| i.index.as_ref()).collect();
        let probes = probe_across(&cold, &request.embeddings, nprobe);
        let search = |allow| search_codes(&indexes, &probes, &request.embeddings, width, allow);
        let (candidates, records, log) = if batches.is_empty() && request.filter.is_none() {
            // The codes while the records' footers are read.
            let candidates = search(&live);
            let (candidates, records) = match early {
                Some(records) => (candidates.await?, records),
                None => futures::try_join!(candidates, records)?,
            };
            (candidates, records, Vec::new())
        } else {
            let records = match early {
                Some(records) => records,
                None => records.await?,
            };
            let parts: Vec<&StoredRecords> = records.iter().map(|r| r.as_ref()).collect();
            let (log, shadowed) = if batches.is_empty() {
                (Vec::new(), vec![Vec::new(); indexes.len()])
            } else {
                self.cold_fold(&indexes, &parts, &live, &batches).await?
            };
            let allow: Vec<Option<FixedBitSet>> = indexes
                .iter()
                .zip(live)
                .zip(&shadowed)
                .map(|((index, live), shadowed)| {
                    if shadowed.is_empty() {
                        return live;
                    }
                    let mut bits = live.unwrap_or_else(|| {
                        let mut all = FixedBitSet::with_capacity(index.index.len());
                        all.insert_range(..);
                        all
                    });
                    for &row in shadowed {
                        bits.set(row as usize, false);
                    }
                    Some(bits)
                })
                .collect();
            // A filter narrows the rows searched to those of the probed partitions
            // that pass it (the log's records too: what they shadow stays shadowed).
            let (log, allow) = match &request.filter {
                None => (log, allow),
                Some(filter) => {
                    let Some(allow) = self
                        .cold_filter(&indexes, &parts, allow, &probes, width, filter)
                        .await?
                    else {
                        return Ok(None);
                    };
                    let log = log
                        .into_iter()
                        .filter(|r| {
                            filter.matches(
                                &r.record.id,
                                r.record.metadata.as_ref(),
                                r.record.document.as_deref(),
                            )
                        })
                        .collect();
                    (log, allow)
                }
            };
            let candidates = search(&allow).await?;
            (candidates, records, log)
        };

        // Every candidate's vector and record at once (a few dozen rows per segment and
        // query): the results are ordered as on the warm path, by exact distance, then by
        // insertion order, which only the records tell.
        let include = request.include;
        let columns = Columns {
            keys: true,
            ..include.columns()
        };
        let read = futures::future::try_join_all(indexes.iter().zip(&records).enumerate().map(
            |(s, (index, part))| {
                let mut rows: Vec<u32> = candidates
                    .iter()
                    .flat_map(|per_segment: &Vec<Vec<u32>>| per_segment[s].iter().copied())
                    .collect();
                rows.sort_unstable();
                rows.dedup();
                async move {
                    let (vectors, decoded) =
                        futures::try_join!(index.vectors(&rows), part.read_rows(&rows, columns))?;
                    Ok::<_, Error>((rows, vectors, decoded))
                }
            },
        ))
        .await?;

        let mut result = QueryResult {
            ids: Vec::with_capacity(candidates.len()),
            distances: include.distances.then(Vec::new),
            embeddings: include.embeddings.then(Vec::new),
            documents: include.documents.then(Vec::new),
            uris: include.uris.then(Vec::new),
            metadatas: include.metadatas.then(Vec::new),
        };
        for (q, per_segment) in request.embeddings.iter().zip(&candidates) {
            // (distance, insertion offset, where)
            let mut hits: Vec<(f32, u64, Hit)> = Vec::new();
            if k > 0 {
                for (s, rows) in per_segment.iter().enumerate() {
                    let (all_rows, vectors, decoded) = &read[s];
                    let dim = indexes[s].index.dim();
                    let mut gathered = Vec::with_capacity(rows.len() * dim);
                    let mut at = Vec::with_capacity(rows.len());
                    for &row in rows {
                        let i = all_rows
                            .binary_search(&row)
                            .map_err(|_| Error::internal("a candidate was not read"))?;
                        gathered.extend_from_slice(&vectors[i * dim..(i + 1) * dim]);
                        at.push(i);
                    }
                    let ranked = indexes[s].index.rerank(q, rows.len(), rows, &gathered);
                    // The k nearest, and any more as near as the k-th (ties go by
                    // insertion order below).
                    let keep = ranked.get(k - 1).map_or(ranked.len(), |&(_, kth)| {
                        ranked.partition_point(|&(_, d)| d <= kth)
                    });
                    for &(row, d) in &ranked[..keep] {
                        let i = rows
                            .binary_search(&row)
                            .map_err(|_| Error::internal("a re-ranked row is no candidate"))?;
                        hits.push((d, decoded.offsets[at[i]], Hit::Segment(s, at[i])));
                    }
                }
                for (i, r) in log.iter().enumerate() {
                    let d = distance(hnsw.space, q, &r.record.embedding);
                    hits.push((d, r.offset, Hit::Log(i)));
                }
            }
            hits.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            hits.truncate(k);
            let mut ids = Vec::with_capacity(hits.len());
            let mut embeddings = Vec::new();
            let mut documents = Vec::new();
            let mut uris = Vec::new();
            let mut metadatas = Vec::new();
            for &(_, _, hit) in &hits {
                let record = match hit {
                    Hit::Segment(s, i) => {
                        let (_, vectors, decoded) = &read[s];
                        let dim = indexes[s].index.dim();
                        record_at(decoded, i, vectors[i * dim..(i + 1) * dim].to_vec())
                    }
                    Hit::Log(i) => log[i].record.clone(),
                };
                ids.push(record.id);
                embeddings.push(record.embedding);
                documents.push(record.document);
                uris.push(record.uri);
                metadatas.push(record.metadata);
            }
            result.ids.push(ids);
            if let Some(all) = &mut result.distances {
                all.push(hits.iter().map(|h| h.0).collect());
            }
            if let Some(all) = &mut result.embeddings {
                all.push(embeddings);
            }
            if let Some(all) = &mut result.documents {
                all.push(documents);
            }
            if let Some(all) = &mut result.uris {
                all.push(uris);
            }
            if let Some(all) = &mut result.metadatas {
                all.push(metadatas);
            }
        }
        Ok(Some(result))
    }

    /// A segment's index opened for the cold path (cached), or `None` when it has no
    /// partitions. One round trip: the object's header is read with as many bytes after
    /// it as the partitions of a segment of its size take (a second read when more).
    async fn cold_index(
        &self,
        key: &DataKey,
        r: &SegmentRef,
        dim: usize,
    ) -> Result<Arc<Option<ColdIndexPart>>> {
        self.cache
            .get_or_load(&cold_key(&r.index_key), || async {
                let partitions = (r.rows as usize).div_ceil(self.config.rows_per_partition.max(1));
                let guess = ColdIndex::HEADER
                    + Partitions::serialized_len_of(partitions + partitions / 4 + 8, dim);
                let (reader, prefix) = RangeReader::open_with_prefix(
                    self.store.clone(),
                    &r.index_key,
                    key,
                    r.index_len,
                    guess as u64,
                )
                .await
                .map_err(|e| named_object_error(&r.index_key, e))?;
                let header = prefix.get(..ColdIndex::HEADER).ok_or_else(|| {
                    Error::internal(format!("index {} is truncated", r.index_key))
                })?;
                let Some(len) = ColdIndex::prefix_len(header)? else {
                    return Ok((None, 64));
                };
                let prefix = if len as usize <= prefix.len() {
                    prefix.slice(..len as usize)
                } else {
                    reader.read(0..len).await?
                };
                let index = tokio::task::spawn_blocking(move || ColdIndex::parse(&prefix))
                    .await
                    .map_err(|e| Error::internal_from("index open task failed", e))??;
                if index.len() as u64 != r.rows {
                    return Err(Error::internal(format!(
                        "segment {} has {} records but its index has {} vectors",
                        r.records_key,
                        r.rows,
                        index.len()
                    )));
                }
                let size = index.memory_bytes() + 256;
                let index = Arc::new(index);
                Ok((Some(ColdIndexPart { index, reader }), size))
            })
            .await
    }

    /// A segment's records file opened for the cold path (cached).
    async fn cold_records(&self, key: &DataKey, r: &SegmentRef) -> Result<Arc<StoredRecords>> {
        self.cache
            .get_or_load(&cold_key(&r.records_key), || async {
                let part = self.open_records(key, r).await?;
                let size = part.memory_bytes() + 256;
                Ok((part, size))
            })
            .await
    }

    /// `allow` (per segment: its live rows, `None` for all) narrowed to the rows of the
    /// partitions the queries probe (`probes`, per segment and query) that pass `filter`. Those rows' ids, and the columns
    /// the filter reads, are fetched in one round trip: a few partitions' metadata, not
    /// the collection's. `None` when some query's probed partitions hold fewer than
    /// `width` passing rows (over every segment): too few for its nearest matches to be
    /// among them, so the caller loads the collection and searches it whole instead.
    async fn cold_filter(
        &self,
        indexes: &[&ColdIndexPart],
        records: &[&StoredRecords],
        allow: Vec<Option<FixedBitSet>>,
        probes: &[Vec<Vec<usize>>],
        width: usize,
        filter: &Filter,
    ) -> Result<Option<Vec<Option<FixedBitSet>>>> {
        let passing =
            futures::future::try_join_all(indexes.iter().zip(records).zip(probes).zip(&allow).map(
                |(((index, part), probes), live)| async move {
                    let mut partitions: Vec<usize> = probes.iter().flatten().copied().collect();
                    partitions.sort_unstable();
                    partitions.dedup();
                    // Partitions' rows are consecutive and in partition order: ascending.
                    let rows: Vec<u32> = partitions
                        .iter()
                        .flat_map(|&p| index.index.partitions().rows(p))
                        .filter(|&r| live.as_ref().is_none_or(|l| l.contains(r as usize)))
                        .collect();
                    part.matching(&rows, filter).await
                },
            ))
            .await?;
        let queries = probes.first().map_or(0, Vec::len);
        for q in 0..queries {
            let found: usize = probes
                .iter()
                .zip(indexes)
                .zip(&passing)
                .map(|((probes, index), bits)| {
                    probes[q]
                        .iter()
                        .map(|&p| {
                            let rows = index.index.partitions().rows(p);
                            bits.count_ones(rows.start as usize..rows.end as usize)
                        })
                        .sum::<usize>()
                })
                .sum();
            if found < width {
                return Ok(None);
            }
        }
        Ok(Some(passing.into_iter().map(Some).collect()))
    }

    /// Folds the log over cold segments: the records whose latest state is in the log,
    /// and per segment the rows it shadows.
    async fn cold_fold(
        &self,
        indexes: &[&ColdIndexPart],
        records: &[&StoredRecords],
        live: &[Option<FixedBitSet>],
        batches: &[(LogBatchRef, Arc<Vec<Operation>>)],
    ) -> Result<(Vec<LogRecord>, Vec<Vec<u32>>)> {
        let named: HashSet<&str> = batches
            .iter()
            .flat_map(|(_, ops)| ops.iter().map(|op| op.id.as_str()))
            .collect();
        let found = futures::future::try_join_all(
            records
                .iter()
                .map(|part| ranged::find_ids(part.footer(), &named, part.fetch())),
        )
        .await?;
        // As in a loaded snapshot: an id's record is in the first segment holding it live.
        let mut place: HashMap<String, (usize, u32)> = HashMap::new();
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); records.len()];
        for (s, found) in found.into_iter().enumerate() {
            for (row, id) in found {
                let alive = live[s].as_ref().is_none_or(|l| l.contains(row as usize));
                if alive && !place.contains_key(&id) {
                    place.insert(id, (s, row));
                    rows[s].push(row);
                }
            }
        }
        let all = Columns::ALL;
        let bases = futures::future::try_join_all(indexes.iter().zip(records).zip(&rows).map(
            |((index, part), rows)| async move {
                futures::try_join!(part.read_rows(rows, all), index.vectors(rows))
            },
        ))
        .await?;
        fold_ops(
            records.len(),
            batches,
            |id| place.get(id).copied(),
            |s, row| {
                let (decoded, vectors) = &bases[s];
                let i = rows[s]
                    .binary_search(&row)
                    .map_err(|_| Error::internal("a folded row was not read"))?;
                let dim = indexes[s].index.dim();
                Ok(LogRecord {
                    offset: decoded.offsets[i],
                    record: record_at(decoded, i, vectors[i * dim..(i + 1) * dim].to_vec()),
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::Arc;

    use super::*;
    use crate::catalog::sqlite::SqliteCatalog;
    use crate::crypto::local::LocalKeyProvider;
    use crate::engine::snapshot::snapshot_key;
    use crate::engine::snapshot::tests::batch;
    use crate::engine::{EngineConfig, Include, Merge, QueryRequest};
    use crate::jobs::local::LocalJobs;
    use crate::model::CollectionConfiguration;
    use crate::model::IfExists;
    use crate::storage::memory::Counting;

    /// An engine over a store that counts reads, whose every query of a collection not
    /// in memory takes the cold path, probing `cold_nprobe` partitions of 16 rows.
    fn cold_engine(cold_nprobe: usize) -> (Arc<Engine>, Arc<Counting>) {
        cold_engine_with(cold_nprobe, 16)
    }

    fn cold_engine_with(
        cold_nprobe: usize,
        rows_per_partition: usize,
    ) -> (Arc<Engine>, Arc<Counting>) {
        let store = Arc::new(Counting::default());
        let (jobs, _requests) = LocalJobs::new();
        let engine = Engine::new(
            Arc::new(SqliteCatalog::in_memory().unwrap()),
            store.clone(),
            Arc::new(LocalKeyProvider::from_bytes([3u8; 32])),
            Arc::new(jobs),
            EngineConfig {
                compact_log_ops: u64::MAX,
                rows_per_partition,
                cold_query_rows: 0,
                cold_nprobe,
                warm_after_cold: false,
                ..EngineConfig::default()
            },
        );
        (engine, store)
    }

    /// A cold query sends no `HEAD` request: the manifest records each segment object's
    /// size. One written before it did (no sizes) is read as well, asking for them.
    #[tokio::test]
    async fn a_cold_query_learns_object_sizes_from_the_manifest() {
        let (engine, store) = cold_engine(usize::MAX);
        let collection = engine
            .create_collection(
                "default_tenant",
                "default_database",
                "sizes",
                None,
                CollectionConfiguration::default(),
                IfExists::Fail,
            )
            .await
            .unwrap();
        let id = collection.id;
        engine.upsert(&collection, batch(0..300)).await.unwrap();
        engine.compact(id, Merge::All).await.unwrap();
        let manifest = engine.catalog.get_manifest(id).await.unwrap();
        let segment = &manifest.segments[0];
        assert_eq!(
            segment.records_len.unwrap() + segment.index_len.unwrap(),
            segment.bytes
        );
        let query = || QueryRequest {
            embeddings: vec![vec![42.0, 1.0, 6.0]],
            n_results: 3,
            include: Include::all(),
            ..Default::default()
        };

        engine.evict_all();
        let heads = store.heads.load(SeqCst);
        let found = engine.query(&collection, query()).await.unwrap();
        assert_eq!(found.ids[0][0], "id-41");
        assert_eq!(store.heads.load(SeqCst), heads, "a HEAD was sent");

        // A manifest from before sizes were recorded.
        let mut old = manifest.clone();
        old.version += 1;
        for s in &mut old.segments {
            (s.records_len, s.index_len) = (None, None);
        }
        engine.catalog.commit_manifest(id, &old).await.unwrap();
        engine.evict_all();
        assert_eq!(engine.query(&collection, query()).await.unwrap(), found);
        assert!(store.heads.load(SeqCst) > heads);
    }

    /// Rows `ids` with vectors as [`batch`] makes them, metadata `{"parity": i % 2,
    /// "tag": "t{i % 10}"}` and document `"doc {i}"`.
    fn tagged(ids: std::ops::Range<usize>) -> crate::model::validate::WriteBatch {
        let mut b = batch(ids.clone());
        b.metadatas = Some(
            ids.clone()
                .map(|i| {
                    let m = serde_json::json!({"parity": i % 2, "tag": format!("t{}", i % 10)});
                    Some(
                        crate::model::validate::metadata_from_json(m.as_object().unwrap(), false)
                            .unwrap(),
                    )
                })
                .collect(),
        );
        b.documents = Some(ids.map(|i| Some(format!("doc {i}"))).collect());
        b
    }

    /// A filtered query of a collection not in memory reads the probed partitions'
    /// metadata (not the collection's), scores only the rows passing the filter, applies
    /// it to the log's records too, and answers as the loaded collection does. A filter
    /// leaving fewer rows than the re-rank width in the probed partitions loads the
    /// collection instead, and still answers right.
    #[tokio::test]
    async fn a_filtered_cold_query_answers_like_the_loaded_collection() {
        let (engine, _) = cold_engine_with(2, 64);
        let collection = engine
            .create_collection(
                "default_tenant",
                "default_database",
                "filtered",
                None,
                CollectionConfiguration::default(),
                IfExists::Fail,
            )
            .await
            .unwrap();
        engine.upsert(&collection, tagged(0..1000)).await.unwrap();
        engine.compact(collection.id, Merge::All).await.unwrap();
        // In the log: row 43 made even (it no longer passes `parity: 1`), row 45 with a
        // new vector right on the query.
        let mut changed = tagged(43..44);
        changed.metadatas = Some(vec![Some(
            crate::model::validate::metadata_from_json(
                serde_json::json!({"parity": 0}).as_object().unwrap(),
                false,
            )
            .unwrap(),
        )]);
        engine.upsert(&collection, changed).await.unwrap();
        let mut moved = tagged(45..46);
        moved.embeddings = Some(vec![Some(vec![42.0, 1.0, 6.0])]);
        engine.upsert(&collection, moved).await.unwrap();
        let manifest = engine.catalog.get_manifest(collection.id).await.unwrap();
        let loaded = || {
            engine
                .cache
                .is_loaded(&snapshot_key(collection.id, manifest.version))
        };
        let query = |where_: serde_json::Value, document: Option<serde_json::Value>| QueryRequest {
            embeddings: vec![vec![42.0, 1.0, 6.0], vec![400.0, 1.0, 2.0]],
            n_results: 3,
            include: Include::all(),
            filter: Filter::parse(Some(&where_), document.as_ref()).unwrap(),
            ..Default::default()
        };
        let cases = [
            (serde_json::json!({"parity": 1}), None),
            (
                serde_json::json!({"tag": {"$in": ["t1", "t3", "t5", "t7", "t9"]}}),
                Some(serde_json::json!({"$not_contains": "doc 41"})),
            ),
        ];
        for (where_, document) in cases {
            engine.evict_all();
            let cold = engine
                .query(&collection, query(where_.clone(), document.clone()))
                .await
                .unwrap();
            assert!(!loaded(), "the cold path loaded the collection");
            engine.snapshot(&collection, &manifest).await.unwrap();
            let warm = engine
                .query(&collection, query(where_, document))
                .await
                .unwrap();
            assert_eq!(cold, warm);
        }
        let cold = engine
            .query(&collection, query(serde_json::json!({"parity": 1}), None))
            .await
            .unwrap();
        // Row 45 moved onto the query ties with row 41, which was written first.
        assert_eq!(cold.ids[0], ["id-41", "id-45", "id-39"]);

        // 10% of the rows pass: about 13 in two partitions, fewer than the width (32).
        engine.evict_all();
        let selective = engine
            .query(
                &collection,
                query(
                    serde_json::json!({"$and": [{"tag": "t3"}, {"parity": 1}]}),
                    None,
                ),
            )
            .await
            .unwrap();
        assert!(loaded(), "a selective filter should load the collection");
        assert_eq!(selective.ids[0], ["id-33", "id-53", "id-23"]);
    }

    /// A SPANN collection's `search_nprobe` scales the partitions a cold query reads: at
    /// 8 (an eighth of Chroma's default) it reads one partition where the default (64)
    /// reads the engine's eight.
    #[tokio::test]
    async fn search_nprobe_sets_how_many_partitions_a_cold_query_reads() {
        use crate::model::{Space, SpannIndexConfig};
        // Partitions of a few hundred rows: each one's codes span several 4 KiB envelope
        // chunks, so reading fewer partitions reads fewer chunks.
        let (engine, store) = cold_engine_with(8, 256);
        let spann = |search_nprobe| {
            CollectionConfiguration::spann(
                SpannIndexConfig {
                    search_nprobe: Some(search_nprobe),
                    ..Default::default()
                },
                Space::L2,
                None,
            )
        };
        let mut read = vec![];
        for (name, configuration) in [("default", spann(64)), ("eighth", spann(8))] {
            let collection = engine
                .create_collection(
                    "default_tenant",
                    "default_database",
                    name,
                    None,
                    configuration,
                    IfExists::Fail,
                )
                .await
                .unwrap();
            engine.upsert(&collection, batch(0..3000)).await.unwrap();
            engine.compact(collection.id, Merge::All).await.unwrap();
            engine.evict_all();
            let before = store.range_bytes.load(SeqCst);
            let found = engine
                .query(
                    &collection,
                    QueryRequest {
                        embeddings: vec![vec![42.0, 1.0, 6.0]],
                        n_results: 1,
                        include: Include::all(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(found.ids[0][0], "id-41", "{name}");
            read.push(store.range_bytes.load(SeqCst) - before);
        }
        // The same header, centroids and records; the codes of 1 partition instead of 8.
        assert!(read[1] < read[0], "bytes read by range (64, 8): {read:?}");
    }
}
