//! The engine under injected backend failures, over the local backends.

use std::sync::Arc;

use chroma_core::catalog::sqlite::SqliteCatalog;
use chroma_core::crypto::local::LocalKeyProvider;
use chroma_core::storage::local::LocalStore;
use chroma_tests::faults::acknowledged_writes_survive;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_write_is_lost_when_every_7th_call_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::new(dir.path().join("objects")).unwrap());
    let catalog = Arc::new(SqliteCatalog::open(&dir.path().join("catalog.sqlite3")).unwrap());
    let keys = Arc::new(LocalKeyProvider::from_bytes([3; 32]));
    let injected = acknowledged_writes_survive(store, catalog, keys, 7).await;
    assert!(injected > 20, "only {injected} faults injected");
}
