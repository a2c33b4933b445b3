//! Opening an engine on a directory, as the local server does.

use std::path::Path;
use std::sync::Arc;

use chroma_core::catalog::sqlite::SqliteCatalog;
use chroma_core::crypto::local::LocalKeyProvider;
use chroma_core::engine::{Engine, EngineConfig};
use chroma_core::jobs::local::{LocalJobs, LocalJobsReceiver};
use chroma_core::model::IfExists;
use chroma_core::model::{Collection, CollectionConfiguration, HnswConfiguration, Space};
use chroma_core::storage::local::LocalStore;

pub const TEST_MASTER_KEY: [u8; 32] = [7u8; 32];

pub struct Opened {
    pub engine: Arc<Engine>,
    pub requests: LocalJobsReceiver,
}

pub fn open(dir: &Path, config: EngineConfig) -> Opened {
    let store = Arc::new(LocalStore::new(dir.join("objects")).expect("object store"));
    let catalog = Arc::new(SqliteCatalog::open(&dir.join("catalog.sqlite3")).expect("catalog"));
    let keys = Arc::new(LocalKeyProvider::from_bytes(TEST_MASTER_KEY));
    let (jobs, requests) = LocalJobs::new();
    let engine = Engine::new(catalog, store, keys, Arc::new(jobs), config);
    Opened { engine, requests }
}

/// A configuration that never compacts on its own and searches exactly.
pub fn manual_config() -> EngineConfig {
    EngineConfig {
        compact_log_ops: u64::MAX,
        compact_log_bytes: u64::MAX,
        compact_log_batches: usize::MAX,
        exact_scan_rows: usize::MAX,
        gc_grace: std::time::Duration::ZERO,
        // Segments of a few rows still get several partitions (and rows renumbered).
        rows_per_partition: 4,
        // A query of a collection that is not in memory reads it by range, whatever its
        // size, and searches every partition (so it is exact).
        cold_query_rows: 0,
        cold_nprobe: usize::MAX,
        ..EngineConfig::default()
    }
}

/// Creates (or gets) a cosine collection with default HNSW settings in the default
/// database.
pub async fn cosine_collection(engine: &Engine, name: &str) -> Collection {
    let configuration = CollectionConfiguration {
        hnsw: HnswConfiguration {
            space: Space::Cosine,
            ..HnswConfiguration::default()
        },
        ..CollectionConfiguration::default()
    };
    engine
        .create_collection(
            "default_tenant",
            "default_database",
            name,
            None,
            configuration,
            IfExists::Get,
        )
        .await
        .expect("create collection")
}
