//! Compaction requests: a write whose log needs compaction asks for it, naming the log's
//! head, and a compaction that leaves a log needing one (written while it ran) asks again,
//! so a request merged into the one being handled is never lost.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chroma_core::catalog::sqlite::SqliteCatalog;
use chroma_core::crypto::local::LocalKeyProvider;
use chroma_core::engine::{Engine, EngineConfig, Merge, Stop};
use chroma_core::error::Result;
use chroma_core::jobs::{CompactionRequest, Jobs};
use chroma_core::model::validate::WriteBatch;
use chroma_core::storage::local::LocalStore;
use chroma_core::storage::{ObjectMeta, ObjectStore};
use tokio::sync::Notify;

use crate::common;

/// Every request, in order.
#[derive(Debug, Default)]
struct Recorded(Mutex<Vec<CompactionRequest>>);

impl Recorded {
    fn take(&self) -> Vec<CompactionRequest> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

#[async_trait]
impl Jobs for Recorded {
    async fn enqueue_compaction(&self, request: CompactionRequest) -> Result<()> {
        self.0.lock().unwrap().push(request);
        Ok(())
    }
}

/// A local store whose first put of a segment's records waits, once armed, until the
/// test lets it go: a compaction held between reading the log and committing.
#[derive(Debug)]
struct HeldStore {
    inner: LocalStore,
    armed: Mutex<bool>,
    reached: Notify,
    released: Notify,
}

#[async_trait]
impl ObjectStore for HeldStore {
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_version(&self, key: &str, etag: &str) -> Result<Bytes> {
        self.inner.get_version(key, etag).await
    }
    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let hold =
            key.ends_with("/records.parquet") && std::mem::take(&mut *self.armed.lock().unwrap());
        if hold {
            self.reached.notify_one();
            self.released.notified().await;
        }
        self.inner.put(key, data).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()> {
        self.inner.put_if_absent(key, data).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
}

fn batch(first: usize) -> WriteBatch {
    WriteBatch {
        ids: vec![format!("r{first}")],
        embeddings: Some(vec![Some(vec![first as f32, 1.0, 0.5])]),
        documents: None,
        uris: None,
        metadatas: None,
    }
}

#[tokio::test]
async fn a_compaction_asks_again_for_the_log_written_while_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(HeldStore {
        inner: LocalStore::new(dir.path().join("objects")).unwrap(),
        armed: Mutex::new(false),
        reached: Notify::new(),
        released: Notify::new(),
    });
    let jobs = Arc::new(Recorded::default());
    let config = EngineConfig {
        // Two batches in the log need a compaction.
        compact_log_batches: 2,
        ..common::manual_config()
    };
    let engine = Engine::new(
        Arc::new(SqliteCatalog::open(&dir.path().join("catalog.sqlite3")).unwrap()),
        store.clone(),
        Arc::new(LocalKeyProvider::from_bytes(common::TEST_MASTER_KEY)),
        jobs.clone(),
        config,
    );
    let c = common::cosine_collection(&engine, "held").await;

    // One batch: no request. Two: a request naming the log's first batch.
    engine.add(&c, batch(0)).await.unwrap();
    assert_eq!(jobs.take(), []);
    engine.add(&c, batch(1)).await.unwrap();
    let log = engine.catalog().get_manifest(c.id).await.unwrap().log;
    let first = CompactionRequest {
        collection: c.id,
        log_head: log[0].key.clone(),
    };
    assert_eq!(jobs.take(), std::slice::from_ref(&first));

    // The compactor takes that request; two writes land while it builds. Their requests
    // name the same head (the log still starts there): a queue that drops repeats, as
    // SQS does, merges them into the request in hand.
    *store.armed.lock().unwrap() = true;
    let compaction = tokio::spawn({
        let engine = engine.clone();
        async move { engine.compact(c.id, Merge::AsNeeded).await }
    });
    store.reached.notified().await;
    engine.add(&c, batch(2)).await.unwrap();
    engine.add(&c, batch(3)).await.unwrap();
    assert_eq!(jobs.take(), [first.clone(), first.clone()]);
    store.released.notify_one();
    let report = compaction.await.unwrap().unwrap();
    assert_eq!(report.folded_batches, 2);

    // Once committed, the compactor asks for the log those writes left, naming its new
    // head: a request no queue merges into the one it handled.
    let log = engine.catalog().get_manifest(c.id).await.unwrap().log;
    assert_eq!(log.len(), 2);
    let again = CompactionRequest {
        collection: c.id,
        log_head: log[0].key.clone(),
    };
    assert_ne!(again, first);
    assert_eq!(jobs.take(), [again]);

    // A compaction that leaves no such log asks for nothing.
    engine.compact(c.id, Merge::AsNeeded).await.unwrap();
    assert!(engine
        .catalog()
        .get_manifest(c.id)
        .await
        .unwrap()
        .log
        .is_empty());
    assert_eq!(jobs.take(), []);
}

#[tokio::test]
async fn sweeping_one_collection_folds_its_log_and_collects_its_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let opened = common::open(dir.path(), common::manual_config());
    let engine = opened.engine.clone();
    let c = common::cosine_collection(&engine, "swept").await;
    // An object no manifest references (left by a write that never committed).
    let stray = dir
        .path()
        .join(format!("objects/c/{}/seg/stray/records.parquet", c.id));
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"left behind").unwrap();
    engine.add(&c, batch(0)).await.unwrap();
    let first = engine
        .sweep_collection(c.id, Merge::All, &Stop::never())
        .await
        .unwrap();
    assert_eq!((first.collections, first.folded_batches), (1, 1));
    assert!(first.failures.is_empty());
    assert!(!stray.exists(), "the sweep left an unreferenced object");
    engine.add(&c, batch(1)).await.unwrap();
    let second = engine
        .sweep_collection(c.id, Merge::All, &Stop::never())
        .await
        .unwrap();
    assert_eq!((second.folded_batches, second.merged_segments), (1, 1));
    let mut total = first.clone();
    total.add(second.clone());
    assert_eq!((total.collections, total.folded_batches), (2, 2));
    assert_eq!(engine.count(&c).await.unwrap(), 2);
    // A deleted collection is not found (the sweep of every collection skips it).
    engine
        .delete_collection("default_tenant", "default_database", "swept")
        .await
        .unwrap();
    let gone = engine
        .sweep_collection(c.id, Merge::All, &Stop::never())
        .await
        .unwrap_err();
    assert_eq!(gone.code(), chroma_core::error::ErrorCode::NotFound);
}
