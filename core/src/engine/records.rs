//! Where a segment's documents, uris and metadata are, and reading some of them.
//!
//! A loaded segment keeps in memory what searching and filtering need — its ids, log
//! offsets, metadata columns, codes and graph — but not its documents, uris or stored
//! metadata: those stay in the encrypted records object and are read by range
//! ([`crate::segment::ranged`]): the rows a read returns, the rows a log operation
//! updates, the rows a merge rewrites, the documents a `where_document` filter tests. A
//! collection's memory then does not grow with its documents (RAG chunks are often
//! larger than their vectors). On local files the reads are positioned reads served by
//! the page cache; on S3 they are ranged GETs, through the query function's `/tmp`
//! block cache (which the load prefetches the object into). The cold path reads the
//! same way, from the same kind of handle.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use fixedbitset::FixedBitSet;

use super::snapshot::{named_object_error, LogRecord, SegmentView};
use super::vectors::COALESCE_GAP;
use crate::catalog::SegmentRef;
use crate::crypto::envelope::RangeReader;
use crate::crypto::DataKey;
use crate::error::{Error, Result};
use crate::index::sparse::{SparseBuilder, SparsePostings};
use crate::model::packed::PackedStrings;
use crate::model::MetadataColumns;
use crate::model::{Filter, Metadata, Record, WhereDocument};
use crate::segment::ranged::{self, Columns, RecordsFooter};
use crate::segment::DecodedRecords;
use crate::storage::ObjectStore;

/// Envelope chunk size of records objects: a page of a few rows' fields (at most about
/// 16 KiB, see [`crate::segment`]'s writer) is decrypted with at most a chunk on either
/// side, not 64 KiB on each.
pub(crate) const RECORDS_CHUNK: u32 = 4096;

/// Reads of at most this many rows decode on the task that asks (a few pages: handing
/// them to a blocking thread costs more than it saves).
const INLINE_ROWS: usize = 256;

/// A segment's records object, opened: its footer (where every page is) and a reader.
#[derive(Debug, Clone)]
pub(crate) struct StoredRecords {
    footer: RecordsFooter,
    reader: RangeReader,
}

impl StoredRecords {
    /// Opens the records object at `key` (of `object_len` stored bytes, when known) and
    /// reads its footer; it must hold `rows` rows.
    pub(crate) async fn open(
        store: Arc<dyn ObjectStore>,
        key: &str,
        data_key: &DataKey,
        object_len: Option<u64>,
        rows: u64,
    ) -> Result<Self> {
        let reader = RangeReader::open_sized(store, key, data_key, object_len).await?;
        let at = &reader;
        let footer =
            ranged::read_footer(
                at.len(),
                |ranges| async move { at.read_many(&ranges, 0).await },
            )
            .await?;
        if footer.rows() as u64 != rows {
            return Err(Error::internal(format!(
                "segment {key} has {} records, its manifest says {rows}",
                footer.rows()
            )));
        }
        Ok(Self { footer, reader })
    }

    pub(crate) fn footer(&self) -> &RecordsFooter {
        &self.footer
    }

    pub(crate) fn reader(&self) -> &RangeReader {
        &self.reader
    }

    /// Reads ranges of the records object.
    pub(crate) fn fetch<'a>(
        &'a self,
    ) -> impl FnMut(Vec<Range<u64>>) -> futures::future::BoxFuture<'a, Result<Vec<Bytes>>> + 'a
    {
        let reader = &self.reader;
        move |ranges| Box::pin(async move { reader.read_many(&ranges, COALESCE_GAP).await })
    }

    /// The records of `rows` (ascending, distinct), with the columns `columns` names.
    /// A few rows (a query's results) are decoded here; more (a merge reads every row)
    /// on a blocking thread.
    pub(crate) async fn read_rows(&self, rows: &[u32], columns: Columns) -> Result<DecodedRecords> {
        if rows.len() <= INLINE_ROWS {
            return ranged::read_rows(&self.footer, rows, columns, self.fetch()).await;
        }
        let this = self.clone();
        let rows = rows.to_vec();
        blocking(move |runtime| {
            runtime.block_on(ranged::read_rows(
                &this.footer,
                &rows,
                columns,
                this.fetch(),
            ))
        })
        .await
    }

    /// What a loaded segment holds of its records (see [`LoadedRows`]), built from their
    /// offsets, ids and metadata as they are decoded, a batch at a time (a segment's
    /// every metadata map decoded at once would take more memory than the segment
    /// keeps); its sparse postings too when `build_sparse` (a segment written before
    /// sparse objects existed).
    pub(crate) async fn load_rows(&self, build_sparse: bool) -> Result<LoadedRows> {
        let n = self.footer.rows();
        let wanted = Columns {
            metadatas: true,
            ..Columns::KEYS
        };
        let start = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            MetadataColumns::builder(n),
            build_sparse.then(SparseBuilder::default),
        );
        let (offsets, ids, columns, sparse) = self
            .fold_batches(
                wanted,
                start,
                |(offsets, ids, columns, sparse), first, batch| {
                    for (i, meta) in batch.metadatas.iter().enumerate() {
                        if let Some(meta) = meta {
                            columns.add(first + i, meta);
                            if let Some(sparse) = sparse {
                                sparse.add((first + i) as u32, meta);
                            }
                        }
                    }
                    offsets.extend_from_slice(&batch.offsets);
                    ids.extend(batch.ids);
                },
            )
            .await?;
        let ids = PackedStrings::pack(ids.iter().map(|id: &String| Some(id.as_str())));
        Ok(LoadedRows {
            offsets,
            ids,
            columns: columns.finish(),
            sparse: sparse.map(SparseBuilder::finish),
        })
    }

    /// The rows whose document passes `test`, every row's document read a batch at a
    /// time and dropped as it is tested (a segment's every document is never held at
    /// once).
    pub(crate) async fn documents_passing(&self, test: &WhereDocument) -> Result<FixedBitSet> {
        let columns = Columns {
            documents: true,
            ..Columns::default()
        };
        let test = test.clone();
        let start = FixedBitSet::with_capacity(self.footer.rows());
        self.fold_batches(columns, start, move |passing, first, batch| {
            for (i, document) in batch.documents.iter().enumerate() {
                if test.matches(document.as_deref()) {
                    passing.insert(first + i);
                }
            }
        })
        .await
    }

    /// The rows among `rows` (ascending, distinct) whose record passes `filter`, tested
    /// one by one on the ids, metadata and documents read for them: a few named rows,
    /// or the probed partitions' rows of a cold query.
    pub(crate) async fn matching(&self, rows: &[u32], filter: &Filter) -> Result<FixedBitSet> {
        let reads = filter.reads();
        let columns = Columns {
            documents: reads.documents,
            metadatas: reads.metadata,
            ..Columns::KEYS
        };
        let decoded = self.read_rows(rows, columns).await?;
        let mut passing = FixedBitSet::with_capacity(self.footer.rows());
        for (i, &row) in rows.iter().enumerate() {
            let metadata = decoded.metadatas.get(i).and_then(Option::as_ref);
            let document = decoded.documents.get(i).and_then(Option::as_deref);
            if filter.matches(&decoded.ids[i], metadata, document) {
                passing.insert(row as usize);
            }
        }
        Ok(passing)
    }

    /// Every row's document, one slot per row: what a `where` clause that tests
    /// documents (`#document`) selects over.
    pub(crate) async fn documents(&self) -> Result<PackedStrings> {
        let columns = Columns {
            documents: true,
            ..Columns::default()
        };
        let all = self
            .fold_batches(
                columns,
                Vec::with_capacity(self.footer.rows()),
                |all, _, batch| all.extend(batch.documents),
            )
            .await?;
        Ok(PackedStrings::pack(all.iter().map(Option::as_deref)))
    }

    /// Folds every row's columns `columns` names into `state`, a batch at a time on a
    /// blocking thread: `each` gets the row a batch starts at (batches never run past the
    /// rows the footer declares, see [`ranged::for_each_batch`]).
    async fn fold_batches<S: Send + 'static>(
        &self,
        columns: Columns,
        mut state: S,
        mut each: impl FnMut(&mut S, usize, DecodedRecords) + Send + 'static,
    ) -> Result<S> {
        let this = self.clone();
        blocking(move |runtime| {
            runtime.block_on(ranged::for_each_batch(
                &this.footer,
                columns,
                this.fetch(),
                |first, batch| {
                    each(&mut state, first, batch);
                    Ok(())
                },
            ))?;
            Ok(state)
        })
        .await
    }

    /// Heap bytes held, estimated.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.footer.memory_bytes() + std::mem::size_of::<Self>()
    }
}

impl super::Engine {
    /// Opens the records object of segment `r`.
    pub(crate) async fn open_records(
        &self,
        key: &DataKey,
        r: &SegmentRef,
    ) -> Result<StoredRecords> {
        StoredRecords::open(
            self.store.clone(),
            &r.records_key,
            key,
            r.records_len,
            r.rows,
        )
        .await
        .map_err(|e| named_object_error(&r.records_key, e))
    }
}

/// What a loaded segment holds of its records: every row's log offset and id, the
/// metadata columns filters run over, and (when built here) the sparse postings.
#[derive(Debug)]
pub(crate) struct LoadedRows {
    pub offsets: Vec<u64>,
    pub ids: PackedStrings,
    pub columns: MetadataColumns,
    pub sparse: Option<SparsePostings>,
}

impl LoadedRows {
    /// The rows of records decoded whole (a segment just built), with their sparse
    /// postings.
    pub(crate) fn of(records: DecodedRecords) -> Self {
        let ids = PackedStrings::pack(records.ids.iter().map(|id| Some(id.as_str())));
        let columns = MetadataColumns::build(&records.metadatas);
        let sparse = SparsePostings::build(&records.metadatas);
        Self {
            offsets: records.offsets,
            ids,
            columns,
            sparse: Some(sparse),
        }
    }
}

/// Runs `work` (CPU work that drives reads through the runtime it is given) on a
/// blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce(&tokio::runtime::Handle) -> Result<T> + Send + 'static,
) -> Result<T> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || work(&runtime))
        .await
        .map_err(|e| Error::internal_from("records read task failed", e))?
}

/// Row `i` of `records` (decoded with every column) as a record with `embedding`.
pub(crate) fn record_at(records: &DecodedRecords, i: usize, embedding: Vec<f32>) -> Record {
    Record {
        id: records.ids[i].clone(),
        embedding,
        document: records.documents[i].clone(),
        uri: records.uris[i].clone(),
        metadata: records.metadatas[i].clone(),
    }
}

/// The stored fields of some rows of a snapshot's segments, read for one request.
#[derive(Debug, Default)]
pub(crate) struct FetchedRecords {
    /// Per segment: rows, ascending and distinct, and their records.
    segments: Vec<(Vec<u32>, DecodedRecords)>,
}

/// A row's stored fields, as a read returns them.
pub(crate) struct StoredFields {
    pub document: Option<String>,
    pub uri: Option<String>,
    pub metadata: Option<Metadata>,
}

impl StoredFields {
    /// The record of `id` with these fields (read with every column) and `embedding`.
    pub(crate) fn into_record(self, id: String, embedding: Vec<f32>) -> Record {
        Record {
            id,
            embedding,
            document: self.document,
            uri: self.uri,
            metadata: self.metadata,
        }
    }
}

impl FetchedRecords {
    /// Reads the columns `columns` names of `wanted[s]` (rows of segment `s`, in any
    /// order, repeats allowed) of every segment, the segments concurrently; nothing when
    /// `columns` names none.
    pub(crate) async fn read(
        segments: &[SegmentView],
        wanted: Vec<Vec<u32>>,
        columns: Columns,
    ) -> Result<Self> {
        if columns == Columns::default() {
            return Ok(Self::default());
        }
        let reads = segments
            .iter()
            .zip(wanted)
            .map(|(view, mut rows)| async move {
                rows.sort_unstable();
                rows.dedup();
                let records = view.segment.records.read_rows(&rows, columns).await?;
                Ok::<_, Error>((rows, records))
            });
        let segments = futures::future::try_join_all(reads).await?;
        Ok(Self { segments })
    }

    /// Where row `row` of segment `s` is among what was read.
    fn at(&self, s: usize, row: u32) -> Result<(&DecodedRecords, usize)> {
        self.segments
            .get(s)
            .and_then(|(rows, records)| Some((records, rows.binary_search(&row).ok()?)))
            .ok_or_else(|| Error::internal(format!("the stored fields of row {row} were not read")))
    }

    /// The stored fields of row `row` of segment `s` (those not read: `None`).
    pub(crate) fn fields(&self, s: usize, row: u32) -> Result<StoredFields> {
        let (records, i) = self.at(s, row)?;
        Ok(StoredFields {
            document: records.documents[i].clone(),
            uri: records.uris[i].clone(),
            metadata: records.metadatas[i].clone(),
        })
    }
}

/// `records` (decoded with every column) with `vectors` (theirs, row-major, `dim`
/// each), as log records, taken apart rather than copied (a merge rewrites every row).
pub(crate) fn into_log_records(
    records: DecodedRecords,
    vectors: &[f32],
    dim: usize,
) -> Result<Vec<LogRecord>> {
    let n = records.len();
    let lengths = [
        records.offsets.len(),
        records.documents.len(),
        records.uris.len(),
        records.metadatas.len(),
    ];
    let whole = lengths.iter().all(|&len| len == n) && vectors.len() == n * dim;
    if !whole {
        return Err(Error::internal(
            "a segment's records and vectors do not match",
        ));
    }
    let DecodedRecords {
        offsets,
        ids,
        documents,
        uris,
        metadatas,
        ..
    } = records;
    let mut out = Vec::with_capacity(n);
    let fields = offsets
        .into_iter()
        .zip(ids)
        .zip(documents)
        .zip(uris)
        .zip(metadatas);
    for (i, ((((offset, id), document), uri), metadata)) in fields.enumerate() {
        out.push(LogRecord {
            offset,
            record: Record {
                id,
                embedding: vectors[i * dim..(i + 1) * dim].to_vec(),
                document,
                uri,
                metadata,
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use crate::catalog::sqlite::SqliteCatalog;
    use crate::crypto::local::LocalKeyProvider;
    use crate::engine::{Engine, EngineConfig, GetRequest, Include, Merge, QueryRequest};
    use crate::jobs::local::LocalJobs;
    use crate::model::{Collection, CollectionConfiguration, Filter, IfExists, WriteBatch};
    use crate::storage::memory::MemoryStore;

    const DIM: usize = 16;
    const ROWS: usize = 2000;

    fn vector(i: usize) -> Vec<f32> {
        (0..DIM as u64)
            .map(|d| {
                let x = (i as u64 * DIM as u64 + d)
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((x >> 33) % 1000) as f32 / 1000.0 - 0.5
            })
            .collect()
    }

    /// Row `i`'s document: about 2 KB, `even` or `odd` in it.
    fn document(i: usize) -> String {
        let parity = if i.is_multiple_of(2) { "even" } else { "odd" };
        format!("{parity} row {i} {}", "lorem ipsum ".repeat(170))
    }

    fn engine() -> (Arc<Engine>, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::default());
        let (jobs, _requests) = LocalJobs::new();
        let engine = Engine::new(
            Arc::new(SqliteCatalog::in_memory().unwrap()),
            store.clone(),
            Arc::new(LocalKeyProvider::from_bytes([5u8; 32])),
            Arc::new(jobs),
            EngineConfig {
                compact_log_ops: u64::MAX,
                cold_query_rows: u64::MAX,
                ..EngineConfig::default()
            },
        );
        (engine, store)
    }

    /// A compacted collection of [`ROWS`] rows, with documents and metadata or without.
    async fn collection(engine: &Engine, name: &str, with_fields: bool) -> Collection {
        let c = engine
            .create_collection(
                "default_tenant",
                "default_database",
                name,
                None,
                CollectionConfiguration::default(),
                IfExists::Fail,
            )
            .await
            .unwrap();
        let batch = WriteBatch {
            ids: (0..ROWS).map(|i| format!("id-{i}")).collect(),
            embeddings: Some((0..ROWS).map(|i| Some(vector(i))).collect()),
            documents: with_fields.then(|| (0..ROWS).map(|i| Some(document(i))).collect()),
            uris: with_fields.then(|| (0..ROWS).map(|i| Some(format!("s3://b/{i}"))).collect()),
            metadatas: with_fields.then(|| {
                (0..ROWS)
                    .map(|i| Some(serde_json::from_value(json!({"i": i, "tens": i / 10})).unwrap()))
                    .collect()
            }),
        };
        engine.add(&c, batch).await.unwrap();
        engine.compact(c.id, Merge::All).await.unwrap();
        c
    }

    fn filter(where_: Option<serde_json::Value>, document: Option<serde_json::Value>) -> Filter {
        Filter::parse(where_.as_ref(), document.as_ref())
            .unwrap()
            .unwrap()
    }

    /// The memory a loaded collection takes does not grow with its documents (4 MB of
    /// them here), and every read that returns or tests them reads them from the
    /// records object.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loaded_segment_reads_its_documents_from_the_records_object() {
        let (engine, _store) = engine();
        let bare = collection(&engine, "bare", false).await;
        let full = collection(&engine, "full", true).await;
        let query = |i: usize| QueryRequest {
            embeddings: vec![vector(i)],
            n_results: 3,
            include: Include {
                documents: true,
                metadatas: true,
                uris: true,
                distances: true,
                ..Include::none()
            },
            ..QueryRequest::default()
        };
        engine.evict_all();
        engine.query(&bare, query(0)).await.unwrap();
        let bare_bytes = engine.cached_bytes();
        engine.evict_all();
        let found = engine.query(&full, query(7)).await.unwrap();
        let full_bytes = engine.cached_bytes();
        assert!(
            full_bytes < bare_bytes + ROWS * 100,
            "{full_bytes} bytes cached with documents, {bare_bytes} without"
        );
        assert_eq!(found.ids[0][0], "id-7");
        assert_eq!(found.documents.unwrap()[0][0], Some(document(7)));
        assert_eq!(found.uris.unwrap()[0][0].as_deref(), Some("s3://b/7"));
        assert_eq!(
            found.metadatas.unwrap()[0][0],
            Some(serde_json::from_value(json!({"i": 7, "tens": 0})).unwrap())
        );

        // A document filter reads the segment's documents; with ids, only theirs.
        let odd_tens = GetRequest {
            filter: Some(filter(
                Some(json!({"tens": 12})),
                Some(json!({"$contains": "odd row"})),
            )),
            include: Include {
                documents: true,
                ..Include::none()
            },
            ..GetRequest::default()
        };
        let got = engine.get(&full, odd_tens).await.unwrap();
        let want: Vec<String> = (121..130).step_by(2).map(|i| format!("id-{i}")).collect();
        assert_eq!(got.ids, want);
        assert_eq!(got.documents.unwrap()[1], Some(document(123)));
        let by_ids = GetRequest {
            ids: Some(vec![
                "id-4".into(),
                "id-5".into(),
                "id-6".into(),
                "gone".into(),
            ]),
            filter: Some(filter(None, Some(json!({"$contains": "even row"})))),
            ..GetRequest::default()
        };
        assert_eq!(
            engine.get(&full, by_ids).await.unwrap().ids,
            vec!["id-4", "id-6"]
        );
        let count = engine
            .count_matching(&full, filter(None, Some(json!({"$not_contains": "odd"}))))
            .await
            .unwrap();
        assert_eq!(count, ROWS as u64 / 2);

        // An update of a stored row keeps the fields it does not change; the fold reads
        // them, and so does the merge that rewrites the segment.
        engine
            .update(
                &full,
                WriteBatch {
                    ids: vec!["id-9".into()],
                    embeddings: None,
                    documents: Some(vec![Some("nine".into())]),
                    uris: None,
                    metadatas: None,
                },
            )
            .await
            .unwrap();
        for merged in [false, true] {
            if merged {
                engine.compact(full.id, Merge::All).await.unwrap();
                engine.evict_all();
            }
            let got = engine
                .get(
                    &full,
                    GetRequest {
                        ids: Some(vec!["id-9".into(), "id-10".into()]),
                        include: Include::all(),
                        ..GetRequest::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(got.ids, vec!["id-9", "id-10"], "merged: {merged}");
            let documents = got.documents.unwrap();
            assert_eq!(documents[0].as_deref(), Some("nine"));
            assert_eq!(documents[1], Some(document(10)));
            assert_eq!(got.uris.unwrap()[0].as_deref(), Some("s3://b/9"));
            let metadatas = got.metadatas.unwrap();
            assert_eq!(
                metadatas[0],
                Some(serde_json::from_value(json!({"i": 9, "tens": 0})).unwrap())
            );
            assert_eq!(got.embeddings.unwrap()[1], vector(10));
        }
    }

    /// A records object lost after its segment was loaded fails the reads that need its
    /// fields, with an error, and not those that do not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_records_object_fails_only_the_reads_that_need_it() {
        let (engine, store) = engine();
        let full = collection(&engine, "full", true).await;
        let ids_only = QueryRequest {
            embeddings: vec![vector(3)],
            n_results: 2,
            include: Include {
                distances: true,
                ..Include::none()
            },
            ..QueryRequest::default()
        };
        engine.query(&full, ids_only.clone()).await.unwrap();
        let manifest = engine.catalog().get_manifest(full.id).await.unwrap();
        for segment in &manifest.segments {
            crate::storage::ObjectStore::delete(store.as_ref(), &segment.records_key)
                .await
                .unwrap();
        }
        let found = engine.query(&full, ids_only.clone()).await.unwrap();
        assert_eq!(found.ids[0][0], "id-3");
        let with_documents = QueryRequest {
            include: Include {
                documents: true,
                ..Include::none()
            },
            ..ids_only
        };
        assert!(engine.query(&full, with_documents).await.is_err());
        let filtered = GetRequest {
            filter: Some(filter(None, Some(json!({"$contains": "row 3 "})))),
            ..GetRequest::default()
        };
        assert!(engine.get(&full, filtered).await.is_err());
    }
}
