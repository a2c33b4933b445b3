//! Export: a collection written out in exactly the bulk-ingest format (see [`super::parse`]:
//! `id`, `embedding` as float32, `document`, `uri`, `metadata` as a JSON object), so that
//! export → `chroma import` (or → a drop under `ingest/`) gives the same records back, bit
//! for bit.
//!
//! The records are read a page at a time ([`EXPORT_PAGE_ROWS`]) from one manifest, so the
//! export is one consistent view of the collection whatever is written meanwhile, and
//! memory stays bounded at any size. They are written into numbered files
//! (`part-00000.parquet`, …), each closed before it would outgrow `file_bytes`, so each
//! stays within what bulk ingest accepts ([`super::MAX_INGEST_FILE_BYTES`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{json, Map, Value};

use super::Format;
use crate::engine::{Engine, GetRequest, GetResult, Include};
use crate::error::{Error, Result};
use crate::model::{Collection, Metadata};

/// Records read per page.
pub const EXPORT_PAGE_ROWS: u32 = 2_000;
/// Default size at which a file is closed and the next begun: under bulk ingest's limit
/// by more than a page of 2,000 records of 4,096 dimensions.
pub const EXPORT_FILE_BYTES: u64 = 192 << 20;

/// One file written by an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFile {
    pub path: PathBuf,
    pub records: u64,
    pub bytes: u64,
}

fn io_error(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::internal_from(format!("cannot write {}", path.display()), e)
}

/// The file being written.
enum Sink {
    Jsonl(BufWriter<File>),
    Parquet(Box<ArrowWriter<File>>),
}

struct Part {
    path: PathBuf,
    sink: Sink,
    records: u64,
    /// Bytes written so far (JSON Lines: exact; Parquet: flushed plus buffered).
    bytes: u64,
}

fn parquet_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new(
            "embedding",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            true,
        ),
        Field::new("document", DataType::Utf8, true),
        Field::new("uri", DataType::Utf8, true),
        Field::new("metadata", DataType::Utf8, true),
    ]))
}

/// The page's records as (id, embedding, document, uri, metadata JSON).
struct PageRows<'a>(&'a GetResult);

impl PageRows<'_> {
    fn embedding(&self, i: usize) -> Option<&[f32]> {
        self.0
            .embeddings
            .as_ref()
            .and_then(|e| e.get(i))
            .map(Vec::as_slice)
    }
    fn document(&self, i: usize) -> Option<&str> {
        self.0.documents.as_ref()?.get(i)?.as_deref()
    }
    fn uri(&self, i: usize) -> Option<&str> {
        self.0.uris.as_ref()?.get(i)?.as_deref()
    }
    fn metadata(&self, i: usize) -> Option<&Metadata> {
        self.0.metadatas.as_ref()?.get(i)?.as_ref()
    }
}

impl Part {
    fn create(dir: &Path, n: usize, format: Format) -> Result<Self> {
        let ext = match format {
            Format::Parquet => "parquet",
            Format::Jsonl => "jsonl",
        };
        let path = dir.join(format!("part-{n:05}.{ext}"));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        let sink = match format {
            Format::Jsonl => Sink::Jsonl(BufWriter::new(file)),
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(EXPORT_PAGE_ROWS as usize * 8))
                    .build();
                let writer = ArrowWriter::try_new(file, parquet_schema(), Some(props))
                    .map_err(|e| io_error(&path, e))?;
                Sink::Parquet(Box::new(writer))
            }
        };
        Ok(Self {
            path,
            sink,
            records: 0,
            bytes: 0,
        })
    }

    /// JSON Lines: one record's line.
    fn jsonl_line(rows: &PageRows<'_>, i: usize) -> Result<Vec<u8>> {
        let mut record = Map::new();
        record.insert("id".into(), json!(rows.0.ids[i]));
        if let Some(e) = rows.embedding(i) {
            record.insert("embedding".into(), json!(e));
        }
        if let Some(d) = rows.document(i) {
            record.insert("document".into(), json!(d));
        }
        if let Some(u) = rows.uri(i) {
            record.insert("uri".into(), json!(u));
        }
        if let Some(m) = rows.metadata(i) {
            record.insert("metadata".into(), json!(m));
        }
        let mut line = serde_json::to_vec(&Value::Object(record))
            .map_err(|e| Error::internal_from("a record did not serialize", e))?;
        line.push(b'\n');
        Ok(line)
    }

    /// Parquet: the page as one record batch (metadata as JSON text).
    fn batch(rows: &PageRows<'_>) -> Result<RecordBatch> {
        let mut ids = StringBuilder::new();
        let mut embeddings = ListBuilder::new(Float32Builder::new());
        let (mut documents, mut uris, mut metadatas) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        for i in 0..rows.0.ids.len() {
            ids.append_value(&rows.0.ids[i]);
            match rows.embedding(i) {
                Some(e) => {
                    embeddings.values().append_slice(e);
                    embeddings.append(true);
                }
                None => embeddings.append(false),
            }
            documents.append_option(rows.document(i));
            uris.append_option(rows.uri(i));
            match rows.metadata(i) {
                Some(m) => metadatas.append_value(serde_json::to_string(m).map_err(|e| {
                    Error::internal_from("a record's metadata did not serialize", e)
                })?),
                None => metadatas.append_null(),
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ids.finish()),
            Arc::new(embeddings.finish()),
            Arc::new(documents.finish()),
            Arc::new(uris.finish()),
            Arc::new(metadatas.finish()),
        ];
        RecordBatch::try_new(parquet_schema(), columns)
            .map_err(|e| Error::internal_from("an export batch did not build", e))
    }

    fn finish(self) -> Result<ExportedFile> {
        let path = self.path;
        let file = match self.sink {
            Sink::Jsonl(w) => w
                .into_inner()
                .map_err(|e| io_error(&path, e.into_error()))?,
            Sink::Parquet(w) => w.into_inner().map_err(|e| io_error(&path, e))?,
        };
        file.sync_all().map_err(|e| io_error(&path, e))?;
        let bytes = file.metadata().map_err(|e| io_error(&path, e))?.len();
        Ok(ExportedFile {
            path,
            records: self.records,
            bytes,
        })
    }
}

/// Writes pages into numbered files, starting a new one before a file outgrows
/// `file_bytes`.
struct Files<'a> {
    dir: &'a Path,
    format: Format,
    file_bytes: u64,
    current: Option<Part>,
    done: Vec<ExportedFile>,
}

impl Files<'_> {
    fn part(&mut self) -> Result<&mut Part> {
        if self.current.is_none() {
            self.current = Some(Part::create(self.dir, self.done.len(), self.format)?);
        }
        Ok(self.current.as_mut().expect("just set"))
    }

    fn roll(&mut self) -> Result<()> {
        if let Some(part) = self.current.take() {
            self.done.push(part.finish()?);
        }
        Ok(())
    }

    fn write_page(&mut self, page: &GetResult) -> Result<()> {
        let rows = PageRows(page);
        match self.format {
            Format::Jsonl => {
                for i in 0..page.ids.len() {
                    let line = Part::jsonl_line(&rows, i)?;
                    let full = self.current.as_ref().is_some_and(|p| {
                        p.records > 0 && p.bytes + line.len() as u64 > self.file_bytes
                    });
                    if full {
                        self.roll()?;
                    }
                    let part = self.part()?;
                    let Sink::Jsonl(w) = &mut part.sink else {
                        unreachable!("a JSON Lines export writes JSON Lines files")
                    };
                    w.write_all(&line).map_err(|e| io_error(&part.path, e))?;
                    part.bytes += line.len() as u64;
                    part.records += 1;
                }
            }
            Format::Parquet => {
                let batch = Part::batch(&rows)?;
                let part = self.part()?;
                let Sink::Parquet(w) = &mut part.sink else {
                    unreachable!("a Parquet export writes Parquet files")
                };
                w.write(&batch).map_err(|e| io_error(&part.path, e))?;
                part.records += page.ids.len() as u64;
                part.bytes = (w.bytes_written() + w.in_progress_size()) as u64;
                if part.bytes >= self.file_bytes {
                    self.roll()?;
                }
            }
        }
        Ok(())
    }
}

impl Engine {
    /// Writes every record of `collection` into new files under `dir` (which must exist)
    /// in `format`, each under `file_bytes` (but at least one record), calling `progress`
    /// with the records written so far after each page. Returns the files written; an
    /// empty collection writes none. On error, files already written stay: callers write
    /// into a directory of their own and remove it (see `chroma export`).
    pub async fn export_collection(
        &self,
        collection: &Collection,
        format: Format,
        dir: &Path,
        file_bytes: u64,
        mut progress: impl FnMut(u64),
    ) -> Result<Vec<ExportedFile>> {
        // One manifest for every page: a consistent view.
        let manifest = self.catalog().get_manifest(collection.id).await?;
        let mut files = Files {
            dir,
            format,
            file_bytes: file_bytes.max(1),
            current: None,
            done: Vec::new(),
        };
        let mut offset = 0u32;
        loop {
            let request = GetRequest {
                limit: Some(EXPORT_PAGE_ROWS),
                offset,
                include: Include::records(),
                ..GetRequest::default()
            };
            let page = self.get_at(collection, &manifest, request).await?;
            if page.ids.is_empty() {
                break;
            }
            let n = page.ids.len() as u32;
            files.write_page(&page)?;
            offset = offset.saturating_add(n);
            progress(u64::from(offset));
            if n < EXPORT_PAGE_ROWS {
                break;
            }
        }
        files.roll()?;
        Ok(files.done)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::catalog::sqlite::SqliteCatalog;
    use crate::crypto::local::LocalKeyProvider;
    use crate::engine::{EngineConfig, Merge};
    use crate::ingest::validate_file;
    use crate::jobs::local::LocalJobs;
    use crate::model::IfExists;
    use crate::model::{CollectionConfiguration, MetadataValue, Operation};
    use crate::storage::memory::MemoryStore;

    fn engine() -> Arc<Engine> {
        let (jobs, _requests) = LocalJobs::new();
        Engine::new(
            Arc::new(SqliteCatalog::in_memory().unwrap()),
            Arc::new(MemoryStore::new()),
            Arc::new(LocalKeyProvider::from_bytes([5u8; 32])),
            Arc::new(jobs),
            EngineConfig {
                compact_log_ops: u64::MAX,
                ..EngineConfig::default()
            },
        )
    }

    async fn collection(engine: &Engine, name: &str) -> Collection {
        engine
            .create_collection(
                "default_tenant",
                "default_database",
                name,
                None,
                CollectionConfiguration::default(),
                IfExists::Fail,
            )
            .await
            .unwrap()
    }

    /// Records with every kind of field and metadata value, awkward floats included.
    fn record(i: usize) -> Operation {
        let mut metadata = BTreeMap::from([
            ("int".to_owned(), Some(MetadataValue::Int(i as i64 - 5))),
            (
                "float".to_owned(),
                Some(MetadataValue::Float(i as f64 / 3.0)),
            ),
            ("whole".to_owned(), Some(MetadataValue::Float(2.0))),
            (
                "flag".to_owned(),
                Some(MetadataValue::Bool(i.is_multiple_of(2))),
            ),
            (
                "text".to_owned(),
                Some(MetadataValue::Str(format!("é \"{i}\"\n"))),
            ),
            (
                "ints".to_owned(),
                Some(MetadataValue::IntArray(vec![1, -2, i as i64])),
            ),
        ]);
        if i.is_multiple_of(3) {
            metadata.clear();
        }
        Operation {
            kind: crate::model::OpKind::Upsert,
            id: format!("id-{i:04}"),
            embedding: Some(vec![i as f32 * 0.1, 1.0 / (i as f32 + 3.0), -1e-30, 3.4e38]),
            document: (!i.is_multiple_of(4)).then(|| format!("doc {i}")),
            uri: i.is_multiple_of(5).then(|| format!("s3://b/{i}")),
            metadata: (!i.is_multiple_of(7)).then_some(metadata),
        }
    }

    async fn everything(engine: &Engine, c: &Collection) -> GetResult {
        let c = engine.get_collection_by_id(c.id).await.unwrap();
        engine
            .get(
                &c,
                GetRequest {
                    include: Include::records(),
                    ..GetRequest::default()
                },
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_export_imports_back_bit_for_bit_in_both_formats() {
        let engine = engine();
        let source = collection(&engine, "source").await;
        let ops: Vec<Operation> = (0..4500).map(record).collect();
        engine
            .commit_ops(&source, ops[..3000].to_vec(), Some(4))
            .await
            .unwrap();
        engine.compact(source.id, Merge::All).await.unwrap();
        let source = engine.get_collection_by_id(source.id).await.unwrap();
        engine
            .commit_ops(&source, ops[3000..].to_vec(), Some(4))
            .await
            .unwrap();
        let want = everything(&engine, &source).await;
        assert_eq!(want.ids.len(), 4500);

        for (format, file_bytes) in [
            (Format::Jsonl, EXPORT_FILE_BYTES),
            (Format::Parquet, EXPORT_FILE_BYTES),
            (Format::Jsonl, 100_000),
            (Format::Parquet, 50_000),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut seen = vec![];
            let files = engine
                .export_collection(&source, format, dir.path(), file_bytes, |n| seen.push(n))
                .await
                .unwrap();
            assert_eq!(seen, vec![2000, 4000, 4500]);
            assert_eq!(files.iter().map(|f| f.records).sum::<u64>(), 4500);
            if file_bytes < EXPORT_FILE_BYTES {
                assert!(files.len() > 1, "{format:?}: {files:?}");
            }
            let target = collection(&engine, &format!("target-{format:?}-{file_bytes}")).await;
            for f in &files {
                assert!(f.bytes <= file_bytes + 200_000, "{f:?}");
                let data = std::fs::read(&f.path).unwrap();
                assert_eq!(data.len() as u64, f.bytes);
                let name = f.path.to_string_lossy().into_owned();
                let target = engine.get_collection_by_id(target.id).await.unwrap();
                let validated = validate_file(&name, data, target.dimension).unwrap();
                engine.upsert_file(&target, validated).await.unwrap();
            }
            let got = everything(&engine, &target).await;
            assert_eq!(got, want, "{format:?}");
            // f32 values compared bit for bit, not as numbers.
            let bits = |r: &GetResult| -> Vec<Vec<u32>> {
                r.embeddings
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|e| e.iter().map(|x| x.to_bits()).collect())
                    .collect()
            };
            assert_eq!(bits(&got), bits(&want));
        }
    }

    #[tokio::test]
    async fn an_empty_collection_exports_no_file() {
        let engine = engine();
        let c = collection(&engine, "empty").await;
        let dir = tempfile::tempdir().unwrap();
        let files = engine
            .export_collection(&c, Format::Parquet, dir.path(), EXPORT_FILE_BYTES, |_| {})
            .await
            .unwrap();
        assert!(files.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
