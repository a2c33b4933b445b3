//! The engine under injected backend failures: every Nth call of each kind to the object
//! store and the catalog fails, before or after it took effect, while writers and
//! background compaction run. Afterwards every acknowledged write must be there, every
//! acknowledged delete gone, and every object the manifest names must exist.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chroma_core::catalog::Catalog;
use chroma_core::crypto::KeyProvider;
use chroma_core::engine::{DeleteRequest, Engine, EngineConfig, GetRequest, Include, Merge};
use chroma_core::faults::{Faults, FaultyCatalog, FaultyStore};
use chroma_core::jobs::local::LocalJobs;
use chroma_core::model::validate::WriteBatch;
use chroma_core::model::IfExists;
use chroma_core::model::{Collection, CollectionConfiguration};
use chroma_core::storage::ObjectStore;
use chroma_core::ErrorCode;

const WRITERS: usize = 4;
const BATCHES_PER_WRITER: usize = 30;
const BATCH: usize = 4;
const DIM: usize = 8;

fn embedding(id: &str) -> Vec<f32> {
    let h = id.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1099511628211)
    });
    (0..DIM)
        .map(|i| ((h >> (i * 8)) & 0xff) as f32 / 255.0 + i as f32)
        .collect()
}

/// Retries `f` until it succeeds (injected faults are transient), up to 50 times.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = chroma_core::Result<T>>,
{
    for _ in 0..50 {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("{what}: {e:?}"),
        }
    }
    panic!("{what}: still failing after 50 attempts");
}

/// Runs the scenario with failures on every `every`th call of each kind, over the given
/// (undecorated) backends. Returns the number of injected failures.
pub async fn acknowledged_writes_survive(
    store: Arc<dyn ObjectStore>,
    catalog: Arc<dyn Catalog>,
    keys: Arc<dyn KeyProvider>,
    every: u64,
) -> u64 {
    let faults = Faults::every(every);
    let faulty_store: Arc<dyn ObjectStore> =
        Arc::new(FaultyStore::new(store.clone(), faults.clone()));
    let faulty_catalog: Arc<dyn Catalog> =
        Arc::new(FaultyCatalog::new(catalog.clone(), faults.clone()));
    let (jobs, receiver) = LocalJobs::new();
    let jobs = Arc::new(jobs);
    let config = EngineConfig {
        compact_log_ops: 24,
        compact_quiet: Duration::from_millis(20),
        compact_max_delay: Duration::from_millis(200),
        max_segments: 3,
        optimize_after_idle: Duration::from_millis(300),
        ..EngineConfig::default()
    };
    let engine = Engine::new(faulty_catalog, faulty_store, keys, jobs, config);
    let background = engine.spawn_background(receiver);
    let name = format!("faults-{}", ulid::Ulid::new().to_string().to_lowercase());
    let collection: Collection = retry("create collection", || {
        engine.create_collection(
            "default_tenant",
            "default_database",
            &name,
            None,
            CollectionConfiguration::default(),
            IfExists::Get,
        )
    })
    .await;

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let engine = engine.clone();
        let collection = collection.clone();
        writers.push(tokio::spawn(async move {
            let mut added = BTreeSet::new();
            let mut deleted = BTreeSet::new();
            let mut failed = 0usize;
            for b in 0..BATCHES_PER_WRITER {
                if b % 5 == 4 && !added.is_empty() {
                    // Delete the oldest acknowledged record of this writer.
                    let victim: String = added.iter().next().cloned().unwrap();
                    let request = DeleteRequest {
                        ids: Some(vec![victim.clone()]),
                        filter: None,
                        limit: None,
                    };
                    match engine.delete(&collection, request).await {
                        Ok(_) => {
                            added.remove(&victim);
                            deleted.insert(victim);
                        }
                        Err(e) => {
                            // A failed delete may still have been applied.
                            assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}");
                            added.remove(&victim);
                            failed += 1;
                        }
                    }
                    continue;
                }
                let ids: Vec<String> = (0..BATCH).map(|i| format!("w{w}-b{b}-{i}")).collect();
                let batch = WriteBatch {
                    embeddings: Some(ids.iter().map(|id| Some(embedding(id))).collect()),
                    documents: Some(ids.iter().map(|id| Some(format!("doc {id}"))).collect()),
                    uris: None,
                    metadatas: None,
                    ids: ids.clone(),
                };
                match engine.upsert(&collection, batch).await {
                    Ok(()) => added.extend(ids),
                    Err(e) => {
                        assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}");
                        failed += 1;
                    }
                }
            }
            (added, deleted, failed)
        }));
    }
    let mut added = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let mut failed = 0;
    for w in writers {
        let (a, d, f) = w.await.expect("writer task");
        added.extend(a);
        deleted.extend(d);
        failed += f;
    }
    // Let background compaction run into faults too.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let injected = faults.injected();
    faults.disable();
    background.abort();
    retry("final compaction", || {
        engine.compact(collection.id, Merge::All)
    })
    .await;

    let got = engine
        .get(
            &collection,
            GetRequest {
                ids: None,
                filter: None,
                limit: None,
                offset: 0,
                include: Include {
                    embeddings: true,
                    documents: true,
                    ..Include::none()
                },
            },
        )
        .await
        .expect("read everything back");
    let found: BTreeMap<&str, usize> = got
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    for id in &added {
        let i = *found
            .get(id.as_str())
            .unwrap_or_else(|| panic!("acknowledged record {id} lost ({failed} writes failed)"));
        assert_eq!(got.embeddings.as_ref().unwrap()[i], embedding(id), "{id}");
        assert_eq!(
            got.documents.as_ref().unwrap()[i].as_deref(),
            Some(format!("doc {id}").as_str())
        );
    }
    for id in &deleted {
        assert!(
            !found.contains_key(id.as_str()),
            "deleted record {id} is back"
        );
    }
    let manifest = catalog.get_manifest(collection.id).await.expect("manifest");
    for key in manifest.referenced_keys() {
        store
            .head(key)
            .await
            .unwrap_or_else(|e| panic!("the manifest names {key}, which is missing: {e:?}"));
    }
    assert!(
        failed > 0,
        "no write failed: the faults never reached the write path"
    );
    injected
}
