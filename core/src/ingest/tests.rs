//! Ingestion through the engine, over the in-memory and the local object store.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, StructArray};
use arrow_schema::{DataType, Field};
use serde_json::{json, Value};

use super::fixtures::{dense, ids, jsonl, parquet};
use super::*;
use crate::catalog::sqlite::SqliteCatalog;
use crate::crypto::local::LocalKeyProvider;
use crate::engine::{EngineConfig, GetRequest, Include};
use crate::faults::{Faults, FaultyStore};
use crate::jobs::local::{LocalJobs, LocalJobsReceiver};
use crate::model::IfExists;
use crate::model::{CollectionConfiguration, MetadataValue};
use crate::storage::local::LocalStore;
use crate::storage::memory::MemoryStore;
use crate::storage::ObjectStore;
use uuid::Uuid;

const KEY: &str = "ingest/default_tenant/default_database/docs/2024/part-0.jsonl";

struct Fixture {
    engine: Arc<Engine>,
    /// The store without fault injection, to look at what the engine left.
    store: Arc<dyn ObjectStore>,
    collection: Collection,
    _requests: LocalJobsReceiver,
    _dir: Option<tempfile::TempDir>,
}

enum Backend {
    Memory,
    Local,
}

async fn fixture_on(backend: Backend, faults: Option<Arc<Faults>>) -> Fixture {
    let (store, dir): (Arc<dyn ObjectStore>, _) = match backend {
        Backend::Memory => (Arc::new(MemoryStore::new()), None),
        Backend::Local => {
            let dir = tempfile::tempdir().unwrap();
            (
                Arc::new(LocalStore::new(dir.path().join("objects")).unwrap()),
                Some(dir),
            )
        }
    };
    let engine_store: Arc<dyn ObjectStore> = match faults {
        Some(f) => Arc::new(FaultyStore::new(store.clone(), f)),
        None => store.clone(),
    };
    let (jobs, requests) = LocalJobs::new();
    let engine = Engine::new(
        Arc::new(SqliteCatalog::in_memory().unwrap()),
        engine_store,
        Arc::new(LocalKeyProvider::from_bytes([9u8; 32])),
        Arc::new(jobs),
        EngineConfig::default(),
    );
    // The catalog starts with Chroma's default tenant and database.
    let collection = engine
        .create_collection(
            "default_tenant",
            "default_database",
            "docs",
            None,
            CollectionConfiguration::default(),
            IfExists::Fail,
        )
        .await
        .unwrap();
    Fixture {
        engine,
        store,
        collection,
        _requests: requests,
        _dir: dir,
    }
}

async fn fixture() -> Fixture {
    fixture_on(Backend::Memory, None).await
}

/// An event for `key` naming version `etag`.
fn event(key: &str, etag: &str) -> IngestFile {
    IngestFile {
        bucket: "bucket".into(),
        key: key.into(),
        etag: etag.into(),
    }
}

fn line(id: &str, embedding: &[f32]) -> Value {
    json!({"id": id, "embedding": embedding})
}

impl Fixture {
    /// Writes a file and returns the event of that version (with S3's quotes).
    async fn drop_file(&self, key: &str, data: Bytes) -> IngestFile {
        self.store.put(key, data).await.unwrap();
        let etag = self.store.head(key).await.unwrap().etag;
        event(key, &format!("\"{etag}\""))
    }

    async fn count(&self) -> u64 {
        self.engine.count(&self.collection).await.unwrap()
    }

    async fn manifest_version(&self) -> u64 {
        self.engine
            .catalog()
            .get_manifest(self.collection.id)
            .await
            .unwrap()
            .version
    }

    async fn keys(&self, prefix: &str) -> Vec<String> {
        let objects = self.store.list(prefix).await.unwrap();
        objects.into_iter().map(|o| o.key).collect()
    }

    async fn report(&self, key: &str) -> Value {
        serde_json::from_slice(&self.engine.read_ingest_object(key).await.unwrap()).unwrap()
    }

    async fn ledger(&self, file: &IngestFile, collection: Uuid) -> Option<ledger::Entry> {
        let keys = self.engine.key_provider().clone();
        ledger::read(self.store.as_ref(), keys.as_ref(), file, collection)
            .await
            .unwrap()
    }

    /// Upserts a valid file directly, so a collection has data and a dimension.
    async fn seed(&self, lines: &[Value]) {
        let file = validate_file("seed.jsonl", jsonl(lines), None).unwrap();
        self.engine
            .upsert_file(&self.collection, file)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_jsonl_file_is_upserted_and_recorded_on_both_stores() {
    for backend in [Backend::Memory, Backend::Local] {
        let f = fixture_on(backend, None).await;
        f.seed(&[json!({"id": "a", "embedding": [0.0, 0.0], "document": "old", "metadata": {"keep": 1, "drop": 2}})])
            .await;
        let data = jsonl(&[
            json!({"id": "a", "embedding": [1.0, 0.0], "metadata": {"drop": null, "new": "x"}}),
            json!({"id": "b", "embedding": [0.0, 1.0], "document": "doc b", "uri": "s3://b"}),
        ]);
        let file = f.drop_file(KEY, data.clone()).await;
        let outcome = f.engine.ingest_file(&file).await.unwrap();
        assert_eq!(
            outcome,
            IngestOutcome::Ingested {
                records: 2,
                batches: 1
            }
        );
        assert_eq!(f.count().await, 2);
        let got = f
            .engine
            .get(
                &f.collection,
                GetRequest {
                    ids: Some(vec!["a".into(), "b".into()]),
                    include: Include::all(),
                    ..GetRequest::default()
                },
            )
            .await
            .unwrap();
        let a = got.ids.iter().position(|i| i == "a").unwrap();
        let b = 1 - a;
        // Upsert semantics: the document is kept, metadata keys merged and removed.
        assert_eq!(got.documents.as_ref().unwrap()[a].as_deref(), Some("old"));
        let meta = got.metadatas.as_ref().unwrap()[a].clone().unwrap();
        assert_eq!(meta.get("keep"), Some(&MetadataValue::Int(1)));
        assert_eq!(meta.get("new"), Some(&MetadataValue::Str("x".into())));
        assert!(!meta.contains_key("drop"));
        assert_eq!(got.embeddings.as_ref().unwrap()[a], vec![1.0, 0.0]);
        // The keys the files brought are in the schema, with the defaults of their type.
        let schema = f
            .engine
            .get_collection_by_id(f.collection.id)
            .await
            .unwrap()
            .configuration
            .schema
            .expect("a stored schema");
        let keys = serde_json::to_value(&schema.keys).unwrap();
        let on = json!({"enabled": true, "config": {}});
        assert_eq!(keys["keep"], json!({"int": {"int_inverted_index": on}}));
        assert_eq!(keys["drop"], json!({"int": {"int_inverted_index": on}}));
        assert_eq!(
            keys["new"],
            json!({"string": {"string_inverted_index": on,
                                                  "fts_index": {"enabled": false, "config": {}}}})
        );
        assert_eq!(got.uris.as_ref().unwrap()[b].as_deref(), Some("s3://b"));

        // The file stays where it was; the ledger says what happened.
        assert_eq!(f.store.get(KEY).await.unwrap(), data);
        let entry = f.ledger(&file, f.collection.id).await.unwrap();
        assert_eq!(
            entry.outcome,
            ledger::Outcome::Ingested {
                records: 2,
                batches: 1
            }
        );
        assert_eq!(entry.etag, crate::storage::bare_etag(&file.etag));
        assert!(f.keys(FAILED_PREFIX).await.is_empty());
    }
}

#[tokio::test]
async fn a_redelivered_event_is_a_no_op() {
    let f = fixture().await;
    let file = f
        .drop_file(KEY, jsonl(&[line("a", &[1.0]), line("b", &[2.0])]))
        .await;
    let first = f.engine.ingest_file(&file).await.unwrap();
    assert!(matches!(first, IngestOutcome::Ingested { records: 2, .. }));
    let version = f.manifest_version().await;
    assert_eq!(
        f.engine.ingest_file(&file).await.unwrap(),
        IngestOutcome::AlreadyIngested
    );
    assert_eq!(f.manifest_version().await, version, "nothing was written");
    // A new version of the same key (another etag) is ingested again.
    let changed = f.drop_file(KEY, jsonl(&[line("c", &[3.0])])).await;
    assert_ne!(changed.etag, file.etag);
    assert!(matches!(
        f.engine.ingest_file(&changed).await.unwrap(),
        IngestOutcome::Ingested { records: 1, .. }
    ));
    assert_eq!(f.count().await, 3);
}

#[tokio::test]
async fn a_parquet_file_with_struct_metadata_is_upserted() {
    let f = fixture_on(Backend::Local, None).await;
    let metadata = StructArray::from(vec![(
        Arc::new(Field::new("year", DataType::Int64, true)),
        Arc::new(Int64Array::from(vec![Some(2020), None])) as ArrayRef,
    )]);
    let data = parquet(vec![
        ("id", ids(&["p", "q"])),
        (
            "embedding",
            dense(&[vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]),
        ),
        ("metadata", Arc::new(metadata)),
    ]);
    let key = "ingest/default_tenant/default_database/docs/batch.parquet";
    let file = f.drop_file(key, data).await;
    assert_eq!(
        f.engine.ingest_file(&file).await.unwrap(),
        IngestOutcome::Ingested {
            records: 2,
            batches: 1
        }
    );
    let got = f
        .engine
        .get(
            &f.collection,
            GetRequest {
                ids: Some(vec!["p".into()]),
                include: Include::all(),
                ..GetRequest::default()
            },
        )
        .await
        .unwrap();
    let meta = got.metadatas.unwrap()[0].clone().unwrap();
    assert_eq!(meta.get("year"), Some(&MetadataValue::Int(2020)));
    let collection = f
        .engine
        .get_collection_by_id(f.collection.id)
        .await
        .unwrap();
    assert_eq!(collection.dimension, Some(3));
}

#[tokio::test]
async fn a_bad_file_is_moved_with_a_report_and_changes_nothing() {
    for backend in [Backend::Memory, Backend::Local] {
        let f = fixture_on(backend, None).await;
        f.seed(&[line("a", &[1.0, 1.0]), line("b", &[2.0, 2.0])])
            .await;
        let version = f.manifest_version().await;
        let data = jsonl(&[
            line("c", &[3.0, 3.0]),
            json!({"id": "d", "embedding": [4.0, 4.0], "metadata": {"nested": {"no": 1}}}),
        ]);
        let file = f.drop_file(KEY, data.clone()).await;
        let outcome = f.engine.ingest_file(&file).await.unwrap();
        let failed = "ingest-failed/default_tenant/default_database/docs/2024/part-0.jsonl";
        let report_key = format!("{failed}.error.json");
        let IngestOutcome::Rejected {
            report_key: got,
            reason,
        } = outcome
        else {
            panic!("expected a rejection, got {outcome:?}");
        };
        assert_eq!(got, report_key);
        assert!(reason.starts_with("line 2, field metadata: "), "{reason}");

        assert_eq!(f.count().await, 2, "the valid first line was not written");
        assert_eq!(f.manifest_version().await, version);
        assert!(matches!(f.store.get(KEY).await, Err(e) if e.code() == ErrorCode::NotFound));
        assert_eq!(f.engine.read_ingest_object(failed).await.unwrap(), data);
        let report = f.report(&report_key).await;
        assert_eq!(report["key"], KEY);
        assert_eq!(report["bucket"], "bucket");
        assert_eq!(report["etag"], file.etag.as_str());
        assert_eq!(report["failed_key"], failed);
        assert_eq!(report["line"], 2);
        assert_eq!(report["field"], "metadata");
        assert!(report.get("row").is_none());
        assert!(
            report["reason"].as_str().unwrap().contains("nested"),
            "{report}"
        );
        assert_eq!(
            f.keys(FAILED_PREFIX).await,
            vec![failed.to_string(), report_key.clone()]
        );
        assert_eq!(f.keys(INGEST_PREFIX).await, Vec::<String>::new());

        // The rejection is recorded: the same event again does nothing.
        let entry = f.ledger(&file, f.collection.id).await.unwrap();
        assert_eq!(entry.outcome, ledger::Outcome::Rejected { report_key });
        assert_eq!(
            f.engine.ingest_file(&file).await.unwrap(),
            IngestOutcome::AlreadyIngested
        );
    }
}

#[tokio::test]
async fn a_parquet_report_names_the_row() {
    let f = fixture().await;
    f.seed(&[line("a", &[1.0, 1.0])]).await;
    let data = parquet(vec![
        ("id", ids(&["x", "y", "z"])),
        (
            "embedding",
            dense(&[vec![1.0, 2.0], vec![1.0, 2.0], vec![1.0, 2.0, 3.0]]),
        ),
    ]);
    let key = "ingest/default_tenant/default_database/docs/x.parquet";
    let file = f.drop_file(key, data).await;
    let IngestOutcome::Rejected { report_key, .. } = f.engine.ingest_file(&file).await.unwrap()
    else {
        panic!("expected a rejection");
    };
    let report = f.report(&report_key).await;
    assert_eq!(report["row"], 2);
    assert_eq!(report["field"], "embedding");
    assert_eq!(
        report["reason"],
        "Collection expecting embedding with dimension of 2, got 3"
    );
    assert!(report.get("line").is_none());
    assert_eq!(f.count().await, 1);
}

/// Rejections decided before the content is read: each file is moved and reported.
#[tokio::test]
async fn files_that_cannot_be_ingested_are_rejected_with_a_reason() {
    let f = fixture().await;
    let ok = jsonl(&[line("a", &[1.0])]);
    let cases = [
        (
            "ingest/default_tenant/default_database/nope/f.jsonl",
            "collection nope does not exist in database default_database of tenant default_tenant",
        ),
        (
            "ingest/default_tenant/other_db/docs/f.jsonl",
            "collection docs does not exist in database other_db",
        ),
        (
            "ingest/default_tenant/default_database/docs/f.csv",
            "unsupported file extension .csv",
        ),
        ("ingest/default_tenant/docs/f.jsonl", "does not name a file"),
    ];
    for (key, reason) in cases {
        let file = f.drop_file(key, ok.clone()).await;
        let outcome = f.engine.ingest_file(&file).await.unwrap();
        let IngestOutcome::Rejected {
            report_key,
            reason: got,
        } = outcome
        else {
            panic!("{key}: expected a rejection, got {outcome:?}");
        };
        assert!(got.contains(reason), "{key}: {got}");
        let rest = key.strip_prefix(INGEST_PREFIX).unwrap();
        assert_eq!(report_key, format!("{FAILED_PREFIX}{rest}{REPORT_SUFFIX}"));
        assert_eq!(
            f.engine
                .read_ingest_object(&format!("{FAILED_PREFIX}{rest}"))
                .await
                .unwrap(),
            ok
        );
        assert!(f.report(&report_key).await["reason"]
            .as_str()
            .unwrap()
            .contains(reason));
        assert!(f.store.head(key).await.is_err(), "{key} was moved");
    }
    assert_eq!(f.count().await, 0);
}

#[tokio::test]
async fn a_file_over_the_size_limit_is_rejected_unread() {
    let f = fixture().await;
    let data = Bytes::from(vec![b'\n'; MAX_INGEST_FILE_BYTES as usize + 1]);
    let file = f.drop_file(KEY, data).await;
    let outcome = f.engine.ingest_file(&file).await.unwrap();
    let IngestOutcome::Rejected { reason, .. } = outcome else {
        panic!("expected a rejection, got {outcome:?}");
    };
    assert!(
        reason.contains("exceeds the limit of 268435456"),
        "{reason}"
    );
}

#[tokio::test]
async fn keys_outside_the_prefix_and_missing_files_are_errors() {
    let f = fixture().await;
    let e = f
        .engine
        .ingest_file(&event(
            "uploads/default_tenant/default_database/docs/f.jsonl",
            "e",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    let e = f.engine.ingest_file(&event(KEY, "e")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(f.keys("").await.is_empty(), "nothing was written");
}

#[tokio::test]
async fn a_file_larger_than_one_batch_is_upserted_in_batches() {
    let f = fixture().await;
    let n = INGEST_BATCH_SIZE + 1;
    let lines: Vec<Value> = (0..n)
        .map(|i| line(&format!("r{i}"), &[i as f32, 1.0]))
        .collect();
    let file = f.drop_file(KEY, jsonl(&lines)).await;
    assert_eq!(
        f.engine.ingest_file(&file).await.unwrap(),
        IngestOutcome::Ingested {
            records: n,
            batches: 2
        }
    );
    assert_eq!(f.count().await, n as u64);
    let manifest = f
        .engine
        .catalog()
        .get_manifest(f.collection.id)
        .await
        .unwrap();
    let sizes: Vec<u64> = manifest.log.iter().map(|b| b.ops).collect();
    assert_eq!(sizes, vec![INGEST_BATCH_SIZE as u64, 1]);

    let lines: Vec<Value> = (0..10)
        .map(|i| line(&format!("s{i}"), &[1.0, 2.0]))
        .collect();
    let validated = validate_file("f.jsonl", jsonl(&lines), Some(2)).unwrap();
    let imported = f
        .engine
        .upsert_in_batches(&f.collection, validated, 3)
        .await
        .unwrap();
    assert_eq!(
        imported,
        Imported {
            records: 10,
            batches: 4
        }
    );
    assert_eq!(f.count().await, n as u64 + 10);
}

#[tokio::test]
async fn transient_failures_are_errors_and_a_retry_completes() {
    // Every third call of each kind fails; one `head` is spent here so that the first
    // attempt's second `head` (of the file, after the ledger's) fails.
    let faults = Faults::every(3);
    let f = fixture_on(Backend::Memory, Some(faults.clone())).await;
    assert!(f.engine.store().head("absent").await.is_err());
    let lines: Vec<Value> = (0..5).map(|i| line(&format!("r{i}"), &[1.0])).collect();
    // Written to the store directly: faults strike only the engine's calls.
    let file = f.drop_file(KEY, jsonl(&lines)).await;
    let mut errors = 0;
    let outcome = loop {
        match f.engine.ingest_file(&file).await {
            Ok(outcome) => break outcome,
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                errors += 1;
                assert!(errors < 20, "no progress: {e:?}");
            }
        }
    };
    assert!(errors > 0, "a fault was injected");
    assert!(
        matches!(
            outcome,
            IngestOutcome::Ingested { records: 5, .. } | IngestOutcome::AlreadyIngested
        ),
        "{outcome:?}"
    );
    faults.disable();
    assert_eq!(f.count().await, 5);
    assert!(f.keys(FAILED_PREFIX).await.is_empty());
    assert!(f.ledger(&file, f.collection.id).await.is_some());
}

#[tokio::test]
async fn only_the_version_an_event_names_is_ingested() {
    let f = fixture().await;
    let first = f.drop_file(KEY, jsonl(&[line("a", &[1.0])])).await;
    // Written again before the first event is handled.
    let second = f.drop_file(KEY, jsonl(&[line("b", &[2.0])])).await;
    let e = f.engine.ingest_file(&first).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert_eq!(
        f.count().await,
        0,
        "the newer content was not taken for the old event"
    );
    assert!(matches!(
        f.engine.ingest_file(&second).await.unwrap(),
        IngestOutcome::Ingested { records: 1, .. }
    ));
    let got = f
        .engine
        .get(&f.collection, GetRequest::default())
        .await
        .unwrap();
    assert_eq!(got.ids, ["b"]);
    // A bad file written again meanwhile: the newer file is left for its own event.
    let bad = f.drop_file(KEY, Bytes::from_static(b"not json\n")).await;
    let newer = f.drop_file(KEY, jsonl(&[line("c", &[3.0])])).await;
    let e = f.engine.ingest_file(&bad).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(matches!(
        f.engine.ingest_file(&newer).await.unwrap(),
        IngestOutcome::Ingested { records: 1, .. }
    ));
}

#[tokio::test]
async fn a_collection_created_anew_under_the_same_name_gets_the_file_again() {
    let f = fixture().await;
    let file = f.drop_file(KEY, jsonl(&[line("a", &[1.0])])).await;
    assert!(matches!(
        f.engine.ingest_file(&file).await.unwrap(),
        IngestOutcome::Ingested { .. }
    ));
    f.engine
        .delete_collection("default_tenant", "default_database", "docs")
        .await
        .unwrap();
    let again = f
        .engine
        .create_collection(
            "default_tenant",
            "default_database",
            "docs",
            None,
            CollectionConfiguration::default(),
            IfExists::Fail,
        )
        .await
        .unwrap();
    // The same event (same bucket, key and etag) is a new file for the new collection.
    assert!(matches!(
        f.engine.ingest_file(&file).await.unwrap(),
        IngestOutcome::Ingested { records: 1, .. }
    ));
    assert_eq!(f.engine.count(&again).await.unwrap(), 1);
    assert_eq!(
        f.engine.ingest_file(&file).await.unwrap(),
        IngestOutcome::AlreadyIngested
    );
}

/// A store that runs a hook once, after the next versioned read.
#[derive(Debug)]
struct AfterRead {
    inner: MemoryStore,
    hook: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    done: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

#[async_trait::async_trait]
impl ObjectStore for AfterRead {
    async fn get_version(&self, key: &str, etag: &str) -> crate::Result<Bytes> {
        let data = self.inner.get_version(key, etag).await?;
        let hook = self.hook.lock().unwrap().take();
        if let Some(tx) = hook {
            let _ = tx.send(());
            // Wait until the hook's work is done.
            if let Some(rx) = self.done.lock().await.take() {
                let _ = rx.await;
            }
        }
        Ok(data)
    }
    async fn get(&self, key: &str) -> crate::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> crate::Result<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &str) -> crate::Result<crate::storage::ObjectMeta> {
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, data: Bytes) -> crate::Result<()> {
        self.inner.put(key, data).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> crate::Result<()> {
        self.inner.put_if_absent(key, data).await
    }
    async fn delete(&self, key: &str) -> crate::Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> crate::Result<Vec<crate::storage::ObjectMeta>> {
        self.inner.list(prefix).await
    }
}

#[tokio::test]
async fn a_collection_deleted_while_its_file_is_ingested_is_reported() {
    let (read_tx, read_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let store = Arc::new(AfterRead {
        inner: MemoryStore::new(),
        hook: std::sync::Mutex::new(Some(read_tx)),
        done: tokio::sync::Mutex::new(Some(done_rx)),
    });
    let (jobs, _requests) = LocalJobs::new();
    let engine = Engine::new(
        Arc::new(SqliteCatalog::in_memory().unwrap()),
        store.clone(),
        Arc::new(LocalKeyProvider::from_bytes([9u8; 32])),
        Arc::new(jobs),
        EngineConfig::default(),
    );
    engine
        .create_collection(
            "default_tenant",
            "default_database",
            "docs",
            None,
            CollectionConfiguration::default(),
            IfExists::Fail,
        )
        .await
        .unwrap();
    store.put(KEY, jsonl(&[line("a", &[1.0])])).await.unwrap();
    let etag = store.head(KEY).await.unwrap().etag;
    let deleter = {
        let engine = engine.clone();
        tokio::spawn(async move {
            read_rx.await.unwrap();
            engine
                .delete_collection("default_tenant", "default_database", "docs")
                .await
                .unwrap();
            done_tx.send(()).unwrap();
        })
    };
    let outcome = engine.ingest_file(&event(KEY, &etag)).await.unwrap();
    deleter.await.unwrap();
    let IngestOutcome::Rejected { report_key, reason } = outcome else {
        panic!("expected a rejection, got {outcome:?}");
    };
    assert!(
        reason.contains("was deleted while the file was being ingested"),
        "{reason}"
    );
    let report = engine.read_ingest_object(&report_key).await.unwrap();
    assert!(String::from_utf8_lossy(&report).contains("was deleted"));
}

#[tokio::test]
async fn what_ingest_writes_is_sealed_and_collected_after_its_retention() {
    for backend in [Backend::Memory, Backend::Local] {
        let f = fixture_on(backend, None).await;
        let secret = "top-secret-document-text";
        let data = jsonl(&[
            json!({"id": "marker-id-1", "embedding": [1.0], "document": secret}),
            json!({"id": "marker-id-2", "embedding": "not a list"}),
        ]);
        let file = f.drop_file(KEY, data).await;
        assert!(matches!(
            f.engine.ingest_file(&file).await.unwrap(),
            IngestOutcome::Rejected { .. }
        ));
        let good = f
            .drop_file(
                "ingest/default_tenant/default_database/docs/good.jsonl",
                jsonl(&[line("fine", &[1.0])]),
            )
            .await;
        assert!(matches!(
            f.engine.ingest_file(&good).await.unwrap(),
            IngestOutcome::Ingested { .. }
        ));
        let written: Vec<String> = [FAILED_PREFIX, LEDGER_PREFIX]
            .iter()
            .map(|p| async { f.keys(p).await })
            .collect::<futures::future::JoinAll<_>>()
            .await
            .concat();
        assert_eq!(
            written.len(),
            4,
            "copy, report and two ledger entries: {written:?}"
        );
        for key in &written {
            let raw = f.store.get(key).await.unwrap();
            for plain in [
                secret.as_bytes(),
                b"marker-id",
                b"default_database/docs",
                b"reason",
            ] {
                assert!(
                    !raw.windows(plain.len()).any(|w| w == plain),
                    "{key} holds {:?} in plaintext",
                    String::from_utf8_lossy(plain)
                );
            }
        }
        // Nothing is old enough yet; with no retention, all of it goes.
        assert_eq!(f.engine.collect_ingest_garbage().await.unwrap(), 0);
        let mut config = f.engine.config().clone();
        config.ingest_ledger_retention = std::time::Duration::ZERO;
        config.failed_ingest_retention = std::time::Duration::ZERO;
        let (jobs, _requests) = LocalJobs::new();
        let impatient = Engine::new(
            f.engine.catalog().clone(),
            f.store.clone(),
            f.engine.key_provider().clone(),
            Arc::new(jobs),
            config,
        );
        assert_eq!(impatient.collect_ingest_garbage().await.unwrap(), 4);
        assert!(f.keys(FAILED_PREFIX).await.is_empty());
        assert!(f.keys(LEDGER_PREFIX).await.is_empty());
        assert_eq!(f.count().await, 1, "the collection's data is untouched");
    }
}
