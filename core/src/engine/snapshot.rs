//! A collection as of one manifest version: its loaded segments, which of their rows are
//! live, and the log folded over them.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use fixedbitset::FixedBitSet;

use super::records::{FetchedRecords, LoadedRows, StoredRecords};
use super::vectors::{Fetched, SegmentVectors};
use super::Engine;
use crate::catalog::{LogBatchRef, Manifest, SegmentRef};
use crate::crypto::envelope::RangeReader;
use crate::crypto::DataKey;
use crate::error::{Error, ErrorCode, Result};
use crate::index::sparse::SparsePostings;
use crate::index::{HnswIndex, IndexLayout};
use crate::model::packed::PackedStrings;
use crate::model::MetadataColumns;
use crate::model::{Collection, OpKind, Operation, Record};
use crate::segment;
use crate::segment::ranged::Columns;

/// Loading a segment of at least this many rows returns freed memory to the system.
const RELEASE_AFTER_LOADING_ROWS: usize = 10_000;

/// A segment decoded into memory: what searching and filtering its rows need (ids,
/// offsets, metadata columns, sparse postings, the index's codes and graph). Its f32
/// vectors and its documents, uris and stored metadata stay in its objects and are read
/// by range (see [`super::vectors`] and [`super::records`]).
#[derive(Debug)]
pub(crate) struct LoadedSegment {
    pub offsets: Vec<u64>,
    /// Every row has an id.
    ids: PackedStrings,
    /// Row of each id (the ids are not stored twice).
    rows_by_id: RowsById,
    pub columns: MetadataColumns,
    /// The sparse vectors of the metadata, inverted (for sparse `$knn`).
    pub sparse: SparsePostings,
    pub index: HnswIndex,
    pub vectors: SegmentVectors,
    /// The records object: documents, uris and metadata as stored.
    pub records: StoredRecords,
}

impl LoadedSegment {
    /// The segment of `rows` (built from its records: `index` has the vectors, `stored`
    /// the rest), with `sparse` postings when `rows` has none (stored beside it).
    pub fn new(
        rows: LoadedRows,
        sparse: Option<SparsePostings>,
        index: HnswIndex,
        vectors: SegmentVectors,
        stored: StoredRecords,
    ) -> Result<Self> {
        let LoadedRows {
            offsets,
            ids,
            columns,
            sparse: built,
        } = rows;
        let sparse = built
            .or(sparse)
            .ok_or_else(|| Error::internal("a segment loaded without its sparse postings"))?;
        let rows_by_id = RowsById::new(&ids);
        Ok(Self {
            offsets,
            ids,
            rows_by_id,
            columns,
            sparse,
            index,
            vectors,
            records: stored,
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// The row of `id`, if the segment has it (live or not).
    pub fn row_of(&self, id: &str) -> Option<u32> {
        self.rows_by_id.get(&self.ids, id)
    }

    /// The id of `row`. Panics if `row >= len()`.
    pub fn id(&self, row: u32) -> &str {
        id_of(&self.ids, row)
    }

    /// Heap bytes held, estimated.
    pub fn memory_bytes(&self) -> usize {
        self.index.memory_bytes()
            + self.ids.memory_bytes()
            + self.rows_by_id.memory_bytes()
            + self.records.memory_bytes()
            + self.columns.memory_bytes()
            + self.sparse.memory_bytes()
            + self.offsets.len() * 8
    }
}

/// The id of `row` (every row of a segment has one).
fn id_of(ids: &PackedStrings, row: u32) -> &str {
    ids.get(row as usize).unwrap_or_default()
}

/// The row of each of a segment's ids: a hash table of row numbers, hashed and compared
/// through the ids themselves, so each id is held once (about 5 bytes a row instead of a
/// second copy of the id and a map entry).
#[derive(Debug, Default)]
struct RowsById {
    table: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl RowsById {
    /// When an id repeats, its last row wins.
    fn new(ids: &PackedStrings) -> Self {
        let hasher = std::hash::RandomState::new();
        let mut table = hashbrown::HashTable::with_capacity(ids.len());
        for row in 0..ids.len() as u32 {
            let id = id_of(ids, row);
            let hash = hasher.hash_one(id);
            match table.entry(
                hash,
                |&r: &u32| id_of(ids, r) == id,
                |&r: &u32| hasher.hash_one(id_of(ids, r)),
            ) {
                hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = row,
                hashbrown::hash_table::Entry::Vacant(e) => {
                    e.insert(row);
                }
            }
        }
        Self { table, hasher }
    }

    fn get(&self, ids: &PackedStrings, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.table.find(hash, |&r| id_of(ids, r) == id).copied()
    }

    fn memory_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<u32>() + 1)
    }
}

/// One segment as seen by a snapshot.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    pub reference: SegmentRef,
    pub segment: Arc<LoadedSegment>,
    /// Rows that are live (not deleted by compaction, not shadowed by the log); `None`
    /// when every row is.
    pub live: Option<FixedBitSet>,
    pub live_count: usize,
}

impl SegmentView {
    pub fn is_live(&self, row: u32) -> bool {
        self.live.as_ref().is_none_or(|l| l.contains(row as usize))
    }
}

/// A record that lives in the log (not, or no longer, as it is in a segment).
#[derive(Debug, Clone)]
pub(crate) struct LogRecord {
    pub offset: u64,
    pub record: Record,
}

/// The collection's contents as of one manifest version.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub segments: Vec<SegmentView>,
    /// Live records whose latest state comes from the log, in insertion order.
    pub log: Vec<LogRecord>,
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        (self.segments.iter().map(|s| s.live_count).sum::<usize>() + self.log.len()) as u64
    }
}

/// The result of folding log batches over segments.
pub(crate) struct Fold {
    pub segments: Vec<SegmentView>,
    pub log: Vec<LogRecord>,
    /// Per segment, rows the fold shadowed (deleted or replaced by the log).
    pub shadowed: Vec<Vec<u32>>,
}

/// The segment row holding the live record `id`, if any: (segment index, row).
fn find(segments: &[SegmentView], id: &str) -> Option<(usize, u32)> {
    segments.iter().enumerate().find_map(|(s, view)| {
        view.segment
            .row_of(id)
            .filter(|&row| view.is_live(row))
            .map(|row| (s, row))
    })
}

/// Per segment, the live rows whose ids `batches` name: the records a fold starts from,
/// whose vectors it needs.
pub(crate) fn rows_named_by(
    segments: &[SegmentView],
    batches: &[(LogBatchRef, Arc<Vec<Operation>>)],
) -> Vec<Vec<u32>> {
    let mut wanted = vec![Vec::new(); segments.len()];
    let mut seen = std::collections::HashSet::new();
    for op in batches.iter().flat_map(|(_, ops)| ops.iter()) {
        if seen.insert(op.id.as_str()) {
            if let Some((s, row)) = find(segments, &op.id) {
                wanted[s].push(row);
            }
        }
    }
    wanted
}

/// Applies `batches` (in sequence order) over `segments` (whose `live` already excludes
/// rows deleted by earlier compactions), reading the vectors and records of the segment
/// rows they name first.
pub(crate) async fn fold_reading(
    segments: Vec<SegmentView>,
    batches: Vec<(LogBatchRef, Arc<Vec<Operation>>)>,
) -> Result<Fold> {
    let (segments, batches, wanted) = tokio::task::spawn_blocking(move || {
        let wanted = rows_named_by(&segments, &batches);
        (segments, batches, wanted)
    })
    .await
    .map_err(|e| Error::internal_from("fold task failed", e))?;
    let (fetched, records) = futures::try_join!(
        Fetched::read(&segments, wanted.clone()),
        FetchedRecords::read(&segments, wanted, Columns::ALL)
    )?;
    tokio::task::spawn_blocking(move || fold(segments, &batches, &fetched, &records))
        .await
        .map_err(|e| Error::internal_from("fold task failed", e))?
}

/// Applies `batches` (in sequence order) over `segments` (whose `live` already excludes
/// rows deleted by earlier compactions); `fetched` and `records` hold the vectors and
/// the stored fields of the rows [`rows_named_by`] returns.
pub(crate) fn fold(
    mut segments: Vec<SegmentView>,
    batches: &[(LogBatchRef, Arc<Vec<Operation>>)],
    fetched: &Fetched,
    records: &FetchedRecords,
) -> Result<Fold> {
    let (log, shadowed) = fold_ops(
        segments.len(),
        batches,
        |id| find(&segments, id),
        |s, row| {
            let embedding = fetched
                .get(s, row)
                .ok_or_else(|| Error::internal(format!("vector of row {row} was not read")))?;
            Ok(LogRecord {
                offset: segments[s].segment.offsets[row as usize],
                record: records
                    .fields(s, row)?
                    .into_record(segments[s].segment.id(row).to_string(), embedding.to_vec()),
            })
        },
    )?;
    for (view, rows) in segments.iter_mut().zip(&shadowed) {
        if rows.is_empty() {
            continue;
        }
        let n = view.segment.len();
        let live = view.live.get_or_insert_with(|| {
            let mut all = FixedBitSet::with_capacity(n);
            all.insert_range(..);
            all
        });
        for &row in rows {
            live.set(row as usize, false);
        }
        view.live_count = live.count_ones(..);
    }
    Ok(Fold {
        segments,
        log,
        shadowed,
    })
}

/// The fold itself, over segments seen through two functions: `find` gives the
/// (segment, row) holding an id's live record, `base` that row's record. Returns the
/// records whose latest state is in the log (in insertion order) and, per segment, the
/// rows the log shadows.
pub(crate) fn fold_ops(
    segment_count: usize,
    batches: &[(LogBatchRef, Arc<Vec<Operation>>)],
    find: impl Fn(&str) -> Option<(usize, u32)>,
    base: impl Fn(usize, u32) -> Result<LogRecord>,
) -> Result<(Vec<LogRecord>, Vec<Vec<u32>>)> {
    let mut state: HashMap<&str, Option<LogRecord>> = HashMap::new();
    let mut shadowed: Vec<Vec<u32>> = vec![Vec::new(); segment_count];
    for (batch, ops) in batches {
        for (i, op) in ops.iter().enumerate() {
            let current: Option<LogRecord> = match state.get(op.id.as_str()) {
                Some(s) => s.clone(),
                None => match find(&op.id) {
                    None => None,
                    Some((s, row)) => Some(base(s, row)?),
                },
            };
            let skip = match op.kind {
                OpKind::Add => current.is_some(),
                OpKind::Update => current.is_none(),
                OpKind::Upsert | OpKind::Delete => false,
            };
            if skip {
                continue;
            }
            if !state.contains_key(op.id.as_str()) {
                if let Some((s, row)) = find(&op.id) {
                    shadowed[s].push(row);
                }
            }
            let offset = current
                .as_ref()
                .map_or(batch.first_offset + i as u64, |c| c.offset);
            let next = op
                .apply(current.map(|c| c.record))
                .map(|record| LogRecord { offset, record });
            state.insert(op.id.as_str(), next);
        }
    }
    let mut log: Vec<LogRecord> = state.into_values().flatten().collect();
    log.sort_by_key(|r| r.offset);
    Ok((log, shadowed))
}

impl Engine {
    /// The snapshot of `manifest`, built once per manifest version.
    ///
    /// The collection's data key is asked for every time, also when the snapshot is in
    /// memory already: reading plaintext needs the key provider's consent, so a revoked
    /// key stops reads within the provider's cache bound.
    pub(crate) async fn snapshot(
        &self,
        collection: &Collection,
        manifest: &Manifest,
    ) -> Result<Arc<Snapshot>> {
        let key = self.data_key(collection, manifest).await?;
        let cache_key = snapshot_key(collection.id, manifest.version);
        let snapshot = self
            .cache
            .get_or_load(&cache_key, || async {
                let segments = self.segment_views(&key, &manifest.segments).await?;
                let batches = self.log_batches(&key, &manifest.log).await?;
                let fold = fold_reading(segments, batches).await?;
                let size = fold
                    .log
                    .iter()
                    .map(|r| r.record.embedding.len() * 4 + r.record.id.len() + 64)
                    .sum::<usize>()
                    + fold
                        .segments
                        .iter()
                        .map(|s| s.segment.len() / 8)
                        .sum::<usize>();
                Ok((
                    Snapshot {
                        segments: fold.segments,
                        log: fold.log,
                    },
                    size,
                ))
            })
            .await?;
        // Only the newest snapshot of a collection stays cached: older ones would keep
        // segments that compaction replaced alive (readers still holding one keep it).
        // A reader that read the manifest before a newer one was seen here (a slow
        // request while writes and compactions go on) gets its snapshot, but it leaves
        // the cache at once, whichever of the two finished first.
        let older = {
            let mut latest = self.latest_snapshot.lock().expect("snapshot lock");
            match latest.get(&collection.id) {
                Some(&v) if v == manifest.version => None,
                Some(&v) if v > manifest.version => Some(manifest.version),
                _ => latest.insert(collection.id, manifest.version),
            }
        };
        if let Some(old) = older {
            self.cache.retire(&snapshot_key(collection.id, old));
        }
        Ok(snapshot)
    }

    /// Loads every segment with its tombstones applied; then has the vectors and records
    /// of the segments it loaded (not those the cache held) prefetched, once all are
    /// loaded (prefetching while segments load would slow the load).
    pub(crate) async fn segment_views(
        &self,
        key: &DataKey,
        refs: &[SegmentRef],
    ) -> Result<Vec<SegmentView>> {
        let mut views = Vec::with_capacity(refs.len());
        let loaded = Mutex::new(Vec::new());
        for r in refs {
            let segment = self.load_segment(key, r, &loaded).await?;
            let live = self.live_rows(key, r, segment.len()).await?;
            let live_count = live.as_ref().map_or(segment.len(), |l| l.count_ones(..));
            views.push(SegmentView {
                reference: r.clone(),
                segment,
                live,
                live_count,
            });
        }
        self.prefetch_segments(loaded.into_inner().expect("loaded segments lock"));
        Ok(views)
    }

    /// A segment from the cache, or loaded into it (its stored vectors and records then
    /// noted in `loaded`).
    async fn load_segment(
        &self,
        key: &DataKey,
        r: &SegmentRef,
        loaded: &Mutex<Vec<(Box<RangeReader>, u64)>>,
    ) -> Result<Arc<LoadedSegment>> {
        self.cache
            .get_or_load(&r.records_key, || async {
                // The records object's footer, then its ids, offsets and metadata (not
                // its documents and uris: they are read by range when asked for).
                let records = async {
                    let stored = self.open_records(key, r).await?;
                    let rows = stored
                        .load_rows(r.sparse_key.is_none())
                        .await
                        .map_err(|e| named_object_error(&r.records_key, e))?;
                    Ok::<_, Error>((stored, rows))
                };
                let sparse = async {
                    match &r.sparse_key {
                        Some(object) => Ok(Some((
                            object.clone(),
                            self.get_decrypted(key, object)
                                .await
                                .map_err(|e| named_object_error(object, e))?,
                        ))),
                        None => Ok::<Option<(String, Vec<u8>)>, Error>(None),
                    }
                };
                let ((stored, rows), (index, vectors), sparse) = futures::try_join!(
                    records,
                    self.open_index(key, &r.index_key, r.index_len),
                    sparse
                )?;
                {
                    let mut loaded = loaded.lock().expect("loaded segments lock");
                    if let SegmentVectors::Stored { reader, offset } = &vectors {
                        loaded.push((reader.clone(), *offset));
                    }
                    loaded.push((Box::new(stored.reader().clone()), 0));
                }
                let records_key = r.records_key.clone();
                tokio::task::spawn_blocking(move || {
                    let n = rows.ids.len();
                    if index.len() != n {
                        return Err(Error::internal(format!(
                            "segment {records_key} has {n} records but its index has {} vectors",
                            index.len()
                        )));
                    }
                    let sparse = sparse
                        .map(|(object, bytes)| {
                            SparsePostings::from_bytes(&bytes, n).map_err(|e| {
                                Error::internal_from(format!("sparse index {object}"), e)
                            })
                        })
                        .transpose()?;
                    let loaded = LoadedSegment::new(rows, sparse, index, vectors, stored)?;
                    let size = loaded.memory_bytes();
                    // Decoding a large segment leaves its buffers (the object, the
                    // parquet pages, the metadata maps) free in the allocator: give the
                    // pages back.
                    if loaded.len() >= RELEASE_AFTER_LOADING_ROWS {
                        super::release_memory();
                    }
                    Ok((loaded, size))
                })
                .await
                .map_err(|e| Error::internal_from("segment load task failed", e))?
            })
            .await
    }

    /// Opens a segment's index object (of `object_len` stored bytes, when the manifest
    /// knows): a format 2 object by its head alone (its vectors stay in the object, read
    /// by range), a format 1 object whole.
    pub(crate) async fn open_index(
        &self,
        key: &DataKey,
        object: &str,
        object_len: Option<u64>,
    ) -> Result<(HnswIndex, SegmentVectors)> {
        let (reader, prefix) = RangeReader::open_with_prefix(
            self.store.clone(),
            object,
            key,
            object_len,
            IndexLayout::PREFIX as u64,
        )
        .await
        .map_err(|e| named_object_error(object, e))?;
        let layout = IndexLayout::parse(&prefix)?;
        let (bytes, stored) = match layout {
            IndexLayout::Whole => (reader.read(0..reader.len()).await?, None),
            IndexLayout::Head {
                head_len,
                vectors_len,
            } => {
                if reader.len() != head_len + vectors_len {
                    return Err(Error::internal(format!(
                        "index {object} has {} bytes, its header says {}",
                        reader.len(),
                        head_len + vectors_len
                    )));
                }
                (
                    reader.read(0..head_len).await?,
                    Some((Box::new(reader), head_len)),
                )
            }
        };
        tokio::task::spawn_blocking(move || match stored {
            None => Ok((HnswIndex::from_bytes(&bytes)?, SegmentVectors::Resident)),
            Some((reader, offset)) => Ok((
                HnswIndex::from_head(&bytes)?,
                SegmentVectors::Stored { reader, offset },
            )),
        })
        .await
        .map_err(|e| Error::internal_from("index load task failed", e))?
    }

    /// The live rows of a segment of `n` rows (`None`: all of them), from its deletes
    /// object.
    pub(crate) async fn live_rows(
        &self,
        key: &DataKey,
        r: &SegmentRef,
        n: usize,
    ) -> Result<Option<FixedBitSet>> {
        let Some(deletes) = &r.deletes_key else {
            return Ok(None);
        };
        let dead = self.load_deletes(key, deletes).await?;
        let mut live = FixedBitSet::with_capacity(n);
        live.insert_range(..);
        for &row in dead.iter() {
            if (row as usize) < n {
                live.set(row as usize, false);
            }
        }
        Ok(Some(live))
    }

    async fn load_deletes(&self, key: &DataKey, object: &str) -> Result<Arc<Vec<u32>>> {
        self.cache
            .get_or_load(object, || async {
                let bytes = self.get_decrypted(key, object).await?;
                let rows = decode_rows(&bytes).ok_or_else(|| {
                    Error::internal(format!("deletes object {object} is corrupt"))
                })?;
                let size = rows.len() * 4;
                Ok((rows, size))
            })
            .await
    }

    pub(crate) async fn log_batches(
        &self,
        key: &DataKey,
        refs: &[LogBatchRef],
    ) -> Result<Vec<(LogBatchRef, Arc<Vec<Operation>>)>> {
        self.read_log_batches(key, refs, true).await
    }

    /// [`Engine::log_batches`] for a compaction: batches already cached come from the
    /// cache, the others are decoded for this fold alone (they are about to be folded
    /// away; caching them would only evict segments queries use).
    pub(crate) async fn log_batches_to_fold(
        &self,
        key: &DataKey,
        refs: &[LogBatchRef],
    ) -> Result<Vec<(LogBatchRef, Arc<Vec<Operation>>)>> {
        self.read_log_batches(key, refs, false).await
    }

    async fn read_log_batches(
        &self,
        key: &DataKey,
        refs: &[LogBatchRef],
        cache: bool,
    ) -> Result<Vec<(LogBatchRef, Arc<Vec<Operation>>)>> {
        let loads = refs.iter().map(|r| async move {
            let load = || async {
                let bytes = self.get_decrypted(key, &r.key).await?;
                let size = bytes.len();
                let ops = tokio::task::spawn_blocking(move || segment::decode_log_batch(&bytes))
                    .await
                    .map_err(|e| Error::internal_from("log decode task failed", e))??;
                Ok((ops, size))
            };
            let ops = if cache || self.cache.is_loaded(&r.key) {
                self.cache.get_or_load(&r.key, load).await?
            } else {
                Arc::new(load().await?.0)
            };
            Ok::<_, Error>((r.clone(), ops))
        });
        futures::future::try_join_all(loads).await
    }
}

/// The error of reading an object a manifest names: its absence is corrupted state (an
/// `Internal` error), not a missing resource of the caller's.
pub(crate) fn named_object_error(object: &str, e: Error) -> Error {
    if e.code() == ErrorCode::NotFound {
        Error::internal_from(format!("object {object} named by a manifest is missing"), e)
    } else {
        e
    }
}

pub(crate) fn snapshot_key(collection: uuid::Uuid, version: u64) -> String {
    format!("snapshot/{collection}/{version}")
}

/// Row numbers as little-endian u32s.
pub(crate) fn encode_rows(rows: &[u32]) -> Vec<u8> {
    rows.iter().flat_map(|r| r.to_le_bytes()).collect()
}

pub(crate) fn decode_rows(bytes: &[u8]) -> Option<Vec<u32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::catalog::sqlite::SqliteCatalog;
    use crate::crypto::local::LocalKeyProvider;
    use crate::engine::{EngineConfig, Merge};
    use crate::jobs::local::LocalJobs;
    use crate::model::validate::WriteBatch;
    use crate::model::CollectionConfiguration;
    use crate::model::IfExists;
    use crate::storage::memory::MemoryStore;

    /// Records `id-{i}` for `i` in `ids`, embedded as `[i + 1, 1, i mod 7]`.
    pub(crate) fn batch(ids: std::ops::Range<usize>) -> WriteBatch {
        WriteBatch {
            ids: ids.clone().map(|i| format!("id-{i}")).collect(),
            embeddings: Some(
                ids.map(|i| Some(vec![i as f32 + 1.0, 1.0, (i % 7) as f32]))
                    .collect(),
            ),
            documents: None,
            uris: None,
            metadatas: None,
        }
    }

    /// An engine over in-memory backends with one empty collection.
    pub(crate) async fn engine_with_collection(config: EngineConfig) -> (Arc<Engine>, Collection) {
        let (jobs, _requests) = LocalJobs::new();
        let engine = Engine::new(
            Arc::new(SqliteCatalog::in_memory().unwrap()),
            Arc::new(MemoryStore::new()),
            Arc::new(LocalKeyProvider::from_bytes([3u8; 32])),
            Arc::new(jobs),
            config,
        );
        let collection = engine
            .create_collection(
                "default_tenant",
                "default_database",
                "test",
                None,
                CollectionConfiguration::default(),
                IfExists::Fail,
            )
            .await
            .unwrap();
        (engine, collection)
    }

    /// A reader that read the manifest before a write or a compaction replaced it (a slow
    /// request among many) gets the snapshot of that older version — and neither it nor
    /// the segments compaction replaced, which it loads again, stay cached.
    #[tokio::test]
    async fn snapshots_of_older_manifests_and_replaced_segments_are_not_kept() {
        let (engine, collection) = engine_with_collection(EngineConfig {
            compact_log_ops: u64::MAX,
            ..EngineConfig::default()
        })
        .await;
        let id = collection.id;
        engine.upsert(&collection, batch(0..300)).await.unwrap();
        engine.compact(id, Merge::All).await.unwrap();
        let first = engine.catalog.get_manifest(id).await.unwrap();
        engine.upsert(&collection, batch(200..400)).await.unwrap();
        let second = engine.catalog.get_manifest(id).await.unwrap();

        // The newest snapshot stays; one of an older manifest, taken after it, does not.
        assert_eq!(
            engine.snapshot(&collection, &second).await.unwrap().count(),
            400
        );
        let cached = engine.cached_bytes();
        assert_eq!(
            engine.snapshot(&collection, &first).await.unwrap().count(),
            300
        );
        assert_eq!(engine.cached_bytes(), cached);

        // Compaction replaces the first segment; a reader of an older manifest loads it
        // again, for itself.
        engine.compact(id, Merge::All).await.unwrap();
        let third = engine.catalog.get_manifest(id).await.unwrap();
        assert_eq!(
            engine.snapshot(&collection, &third).await.unwrap().count(),
            400
        );
        let cached = engine.cached_bytes();
        assert_eq!(
            engine.snapshot(&collection, &second).await.unwrap().count(),
            400
        );
        assert_eq!(
            engine.snapshot(&collection, &first).await.unwrap().count(),
            300
        );
        assert_eq!(engine.cached_bytes(), cached);
        assert_eq!(
            engine.snapshot(&collection, &third).await.unwrap().count(),
            400
        );
    }
}
