//! Row-limited writes against concurrent writers, and data keys taken from the key
//! provider every time (so a revocation takes effect).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use async_trait::async_trait;
use chroma_core::auth::rows::RowFilter;
use chroma_core::catalog::sqlite::SqliteCatalog;
use chroma_core::crypto::local::LocalKeyProvider;
use chroma_core::crypto::{DataKey, EncryptionContext, KeyProvider};
use chroma_core::engine::{Engine, GetRequest, Include, Merge};
use chroma_core::error::{Error, ErrorCode, Result};
use chroma_core::jobs::local::LocalJobs;
use chroma_core::model::IfExists;
use chroma_core::model::{
    Collection, CollectionConfiguration, MetadataValue, OpKind, Operation, Record, WriteBatch,
};
use chroma_core::storage::memory::MemoryStore;
use serde_json::json;

use crate::common::{manual_config, open};

fn team(t: &str) -> Option<Vec<Option<chroma_core::model::UpdateMetadata>>> {
    Some(vec![Some(
        [("team".to_owned(), Some(MetadataValue::Str(t.into())))].into(),
    )])
}

async fn collection(engine: &Engine) -> Collection {
    let c = engine
        .create_collection(
            "default_tenant",
            "default_database",
            "rows",
            None,
            CollectionConfiguration::default(),
            IfExists::Fail,
        )
        .await
        .unwrap();
    for id in ["r", "other"] {
        engine
            .add(
                &c,
                WriteBatch {
                    ids: vec![id.into()],
                    embeddings: Some(vec![Some(vec![1.0, 0.0])]),
                    documents: Some(vec![Some("before".into())]),
                    uris: None,
                    metadatas: team("x"),
                },
            )
            .await
            .unwrap();
    }
    c
}

async fn record(engine: &Engine, c: &Collection, id: &str) -> (Option<String>, String) {
    let got = engine
        .get(
            c,
            GetRequest {
                ids: Some(vec![id.into()]),
                include: Include {
                    documents: true,
                    metadatas: true,
                    ..Include::none()
                },
                ..GetRequest::default()
            },
        )
        .await
        .unwrap();
    let doc = got.documents.unwrap()[0].clone();
    let team = match &got.metadatas.unwrap()[0].as_ref().unwrap()["team"] {
        MetadataValue::Str(t) => t.clone(),
        other => panic!("{other:?}"),
    };
    (doc, team)
}

/// A row-limited upsert of `r` (staying in team x) checked while, in between its check
/// and its commit, another writer changes `concurrent` (moving it to team y).
/// Returns the result and how many times the records were checked.
async fn race(concurrent: &'static str) -> (Result<()>, usize, Arc<Engine>, Collection) {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), manual_config()).engine;
    let c = collection(&engine).await;
    let ops = vec![Operation {
        kind: OpKind::Upsert,
        id: "r".into(),
        embedding: Some(vec![0.0, 1.0]),
        document: Some("after".into()),
        uri: None,
        metadata: team("x").unwrap().pop().unwrap(),
    }];
    let rf = RowFilter::parse(&json!({"team": "x"})).unwrap();
    let (checked_tx, checked_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let pause = Mutex::new(Some((checked_tx, go_rx)));
    let calls = AtomicUsize::new(0);
    let checked_ops = ops.clone();
    let check = |existing: &HashMap<String, Record>| {
        calls.fetch_add(1, Ordering::SeqCst);
        // The first check: let the other writer commit before this write does.
        if let Some((checked, go)) = pause.lock().unwrap().take() {
            checked.send(()).unwrap();
            go.recv().unwrap();
        }
        rf.check_writes(&checked_ops, existing)
    };
    let other = {
        let (engine, c) = (engine.clone(), c.clone());
        tokio::spawn(async move {
            tokio::task::spawn_blocking(move || checked_rx.recv().unwrap())
                .await
                .unwrap();
            engine
                .update(
                    &c,
                    WriteBatch {
                        ids: vec![concurrent.into()],
                        embeddings: None,
                        documents: None,
                        uris: None,
                        metadatas: team("y"),
                    },
                )
                .await
                .unwrap();
            go_tx.send(()).unwrap();
        })
    };
    let result = engine.commit_ops_checked(&c, ops, Some(2), check).await;
    other.await.unwrap();
    let calls = calls.load(Ordering::SeqCst);
    std::mem::forget(dir);
    (result, calls, engine, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_write_cannot_slip_a_row_out_of_the_filter() {
    let (result, calls, engine, c) = race("r").await;
    let e = result.unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e}");
    assert!(e.message().contains("exists outside"), "{e}");
    assert_eq!(calls, 2, "checked again after the conflicting commit");
    // The other writer's change stands; this write left nothing.
    assert_eq!(
        record(&engine, &c, "r").await,
        (Some("before".into()), "y".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_write_to_other_records_needs_no_new_check() {
    let (result, calls, engine, c) = race("other").await;
    result.unwrap();
    assert_eq!(calls, 1);
    assert_eq!(
        record(&engine, &c, "r").await,
        (Some("after".into()), "x".into())
    );
    assert_eq!(record(&engine, &c, "other").await.1, "y");
}

/// A key provider whose access can be revoked, like a KMS key policy.
#[derive(Debug)]
struct Revocable {
    inner: LocalKeyProvider,
    revoked: AtomicBool,
    unwraps: AtomicUsize,
}

#[async_trait]
impl KeyProvider for Revocable {
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<(DataKey, Vec<u8>)> {
        self.inner.generate_data_key(ctx).await
    }

    async fn unwrap_data_key(&self, wrapped: &[u8], ctx: &EncryptionContext) -> Result<DataKey> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        if self.revoked.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorCode::PermissionDenied, "access revoked"));
        }
        self.inner.unwrap_data_key(wrapped, ctx).await
    }
}

#[tokio::test]
async fn revoking_key_access_takes_effect_in_a_warm_engine() {
    let keys = Arc::new(Revocable {
        inner: LocalKeyProvider::from_bytes([9u8; 32]),
        revoked: AtomicBool::new(false),
        unwraps: AtomicUsize::new(0),
    });
    let (jobs, _requests) = LocalJobs::new();
    let engine = Engine::new(
        Arc::new(SqliteCatalog::in_memory().unwrap()),
        Arc::new(MemoryStore::new()),
        keys.clone(),
        Arc::new(jobs),
        manual_config(),
    );
    let c = collection(&engine).await;
    assert_eq!(engine.count(&c).await.unwrap(), 2);
    let before = keys.unwraps.load(Ordering::SeqCst);
    assert!(before > 0, "the key was unwrapped by the provider");

    keys.revoked.store(true, Ordering::SeqCst);
    let writes = engine
        .add(
            &c,
            WriteBatch {
                ids: vec!["new".into()],
                embeddings: Some(vec![Some(vec![1.0, 1.0])]),
                documents: None,
                uris: None,
                metadatas: None,
            },
        )
        .await;
    assert_eq!(writes.unwrap_err().code(), ErrorCode::PermissionDenied);
    // Reads too, though the collection is in memory already.
    assert_eq!(
        engine.count(&c).await.unwrap_err().code(),
        ErrorCode::PermissionDenied
    );
    engine.compact(c.id, Merge::All).await.unwrap_err();

    keys.revoked.store(false, Ordering::SeqCst);
    assert_eq!(engine.count(&c).await.unwrap(), 2);
}

/// The `chroma_reads_ahead_total` counts rendered so far: (used, dropped).
fn reads_ahead() -> (u64, u64) {
    let text = chroma_core::metrics::render_prometheus().unwrap_or_default();
    let count = |outcome: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "chroma_reads_ahead_total{{outcome=\"{outcome}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    (count("used"), count("dropped"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_reads_ahead_answers_only_what_the_catalog_confirms() {
    use chroma_core::access::ScopedCollection;
    use chroma_core::auth::grants::Grant;
    use chroma_core::auth::Principal;
    use chroma_core::engine::{EngineConfig, QueryRequest};

    chroma_core::metrics::install_prometheus();
    let (jobs, _requests) = LocalJobs::new();
    let engine = Engine::new(
        Arc::new(SqliteCatalog::in_memory().unwrap()),
        Arc::new(MemoryStore::new()),
        Arc::new(LocalKeyProvider::from_bytes([9u8; 32])),
        Arc::new(jobs),
        EngineConfig {
            read_ahead: true,
            ..manual_config()
        },
    );
    let c = collection(&engine).await;
    engine.compact(c.id, Merge::All).await.unwrap();
    let admin = Principal::local();
    let id = c.id.to_string();
    let query = |principal: &'static Principal| {
        let (engine, id) = (engine.clone(), id.clone());
        async move {
            let request = QueryRequest {
                embeddings: vec![vec![0.0, 1.0]],
                n_results: 5,
                ..QueryRequest::default()
            };
            ScopedCollection::open_and_query(
                &engine,
                principal,
                "default_tenant",
                "default_database",
                &id,
                request,
            )
            .await
            .map(|r| r.ids[0].clone())
        }
    };
    let admin: &'static Principal = Box::leak(Box::new(admin));

    // Not settled yet: the catalog is read first, twice alike.
    for _ in 0..2 {
        assert_eq!(query(admin).await.unwrap(), ["r", "other"]);
    }
    assert_eq!(reads_ahead(), (0, 0));
    assert!(engine.settled(c.id).is_some());
    // Settled: searched while the catalog is read, and confirmed.
    assert_eq!(query(admin).await.unwrap(), ["r", "other"]);
    assert_eq!(reads_ahead(), (1, 0));

    // A write since: the search ahead is of the old manifest, and dropped; the answer
    // has the new record.
    engine
        .add(
            &c,
            WriteBatch {
                ids: vec!["up".into()],
                embeddings: Some(vec![Some(vec![0.0, 1.0])]),
                documents: None,
                uris: None,
                metadatas: team("y"),
            },
        )
        .await
        .unwrap();
    assert_eq!(query(admin).await.unwrap(), ["up", "r", "other"]);
    assert_eq!(reads_ahead(), (1, 1));
    assert!(
        engine.settled(c.id).is_none(),
        "one answer of the new manifest"
    );

    // Settled again; a principal who may not see the collection learns nothing of it.
    assert_eq!(query(admin).await.unwrap(), ["up", "r", "other"]);
    let stranger: &'static Principal = Box::leak(Box::new(Principal {
        id: "key:stranger".into(),
        grants: vec![Grant::parse("default_tenant/default_database/elsewhere:read").unwrap()],
        row_filter: None,
    }));
    assert_eq!(
        query(stranger).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    // One limited to some rows gets only those, ahead or not.
    let limited: &'static Principal = Box::leak(Box::new(Principal {
        id: "key:limited".into(),
        grants: vec![Grant::parse("*/*/*:read").unwrap()],
        row_filter: Some(RowFilter::parse(&json!({"team": "x"})).unwrap()),
    }));
    assert_eq!(query(limited).await.unwrap(), ["r", "other"]);
    assert_eq!(reads_ahead().0, 2, "the limited key's query read ahead");
}
