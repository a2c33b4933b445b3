//! Fault injection for tests: decorators of the [`ObjectStore`] and [`Catalog`] ports
//! that fail every Nth call of each kind.
//!
//! A failure is injected in one of two ways, alternating per kind: *before* the call (the
//! backend never sees it) or *after* it (the backend applied it, the caller gets an error —
//! a lost response). The second kind is what makes a commit ambiguous, and what the
//! engine must survive without losing an acknowledged write or leaving a manifest that
//! names a missing object. Injected errors are `Unavailable`, as a throttled or
//! unreachable backend reports.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use crate::catalog::{
    ApiKeyRecord, ApiKeys, Catalog, CollectionUpdate, Lineage, Manifest, Manifests, Names,
};
use crate::error::{Error, Result};
use crate::model::IfExists;
use crate::model::{Collection, Database, Tenant};
use crate::storage::{ObjectMeta, ObjectStore};

/// When an injected failure strikes relative to the real call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strike {
    Before,
    After,
}

/// The shared plan: which call of which kind fails.
#[derive(Debug)]
pub struct Faults {
    every: u64,
    enabled: AtomicBool,
    calls: Mutex<HashMap<&'static str, u64>>,
    injected: AtomicU64,
}

impl Faults {
    /// Fails every `n`th call of each kind (`n` ≥ 2).
    pub fn every(n: u64) -> Arc<Self> {
        assert!(n >= 2, "failing every call leaves nothing to test");
        Arc::new(Self {
            every: n,
            enabled: AtomicBool::new(true),
            calls: Mutex::new(HashMap::new()),
            injected: AtomicU64::new(0),
        })
    }

    /// Stops injecting (to check the final state through the same decorators).
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }

    /// How many failures were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    fn strike(&self, kind: &'static str) -> Option<(Strike, u64)> {
        if !self.enabled.load(Ordering::SeqCst) {
            return None;
        }
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let n = calls.entry(kind).or_insert(0);
        *n += 1;
        if !n.is_multiple_of(self.every) {
            return None;
        }
        self.injected.fetch_add(1, Ordering::SeqCst);
        let strike = if (*n / self.every) % 2 == 1 {
            Strike::Before
        } else {
            Strike::After
        };
        Some((strike, *n))
    }

    /// Runs `call`, failing it before or after as planned for `kind`.
    async fn run<T, F>(&self, kind: &'static str, call: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        match self.strike(kind) {
            None => call.await,
            Some((Strike::Before, n)) => Err(injected(kind, n, "before")),
            Some((Strike::After, n)) => {
                let _ = call.await;
                Err(injected(kind, n, "after"))
            }
        }
    }
}

fn injected(kind: &str, n: u64, when: &str) -> Error {
    Error::unavailable(format!(
        "injected fault: {kind} call #{n} ({when} the call)"
    ))
}

/// An object store whose calls fail as [`Faults`] plans.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn get_version(&self, key: &str, etag: &str) -> Result<Bytes> {
        self.faults
            .run("get_version", self.inner.get_version(key, etag))
            .await
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.faults.run("get", self.inner.get(key)).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.faults
            .run("get_range", self.inner.get_range(key, range))
            .await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.faults.run("head", self.inner.head(key)).await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.faults.run("put", self.inner.put(key, data)).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()> {
        self.faults
            .run("put_if_absent", self.inner.put_if_absent(key, data))
            .await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.faults.run("delete", self.inner.delete(key)).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.faults.run("list", self.inner.list(prefix)).await
    }
}

/// A catalog whose calls fail as [`Faults`] plans.
#[derive(Debug)]
pub struct FaultyCatalog {
    inner: Arc<dyn Catalog>,
    faults: Arc<Faults>,
}

impl FaultyCatalog {
    pub fn new(inner: Arc<dyn Catalog>, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }
}

#[async_trait]
impl Names for FaultyCatalog {
    async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        self.faults
            .run("create_tenant", self.inner.create_tenant(name))
            .await
    }

    async fn get_tenant(&self, name: &str) -> Result<Tenant> {
        self.faults
            .run("get_tenant", self.inner.get_tenant(name))
            .await
    }

    async fn set_tenant_resource_name(&self, name: &str, resource_name: &str) -> Result<Tenant> {
        self.faults
            .run(
                "set_tenant_resource_name",
                self.inner.set_tenant_resource_name(name, resource_name),
            )
            .await
    }

    async fn create_database(&self, tenant: &str, name: &str) -> Result<Database> {
        self.faults
            .run("create_database", self.inner.create_database(tenant, name))
            .await
    }

    async fn get_database(&self, tenant: &str, name: &str) -> Result<Database> {
        self.faults
            .run("get_database", self.inner.get_database(tenant, name))
            .await
    }

    async fn list_databases(
        &self,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Database>> {
        self.faults
            .run(
                "list_databases",
                self.inner.list_databases(tenant, limit, offset),
            )
            .await
    }

    async fn delete_database(&self, tenant: &str, name: &str) -> Result<Vec<(Uuid, Manifest)>> {
        self.faults
            .run("delete_database", self.inner.delete_database(tenant, name))
            .await
    }

    async fn create_collection(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        if_exists: IfExists,
    ) -> Result<(Collection, bool)> {
        self.faults
            .run(
                "create_collection",
                self.inner
                    .create_collection(collection, manifest, if_exists),
            )
            .await
    }

    async fn get_collection(&self, tenant: &str, database: &str, name: &str) -> Result<Collection> {
        self.faults
            .run(
                "get_collection",
                self.inner.get_collection(tenant, database, name),
            )
            .await
    }

    async fn get_collection_by_id(&self, id: Uuid) -> Result<Collection> {
        self.faults
            .run("get_collection_by_id", self.inner.get_collection_by_id(id))
            .await
    }

    async fn get_collection_with_manifest(&self, id: Uuid) -> Result<(Collection, Manifest)> {
        self.faults
            .run(
                "get_collection_with_manifest",
                self.inner.get_collection_with_manifest(id),
            )
            .await
    }

    async fn list_collections(
        &self,
        tenant: &str,
        database: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Collection>> {
        self.faults
            .run(
                "list_collections",
                self.inner.list_collections(tenant, database, limit, offset),
            )
            .await
    }

    async fn count_collections(&self, tenant: &str, database: &str) -> Result<u64> {
        self.faults
            .run(
                "count_collections",
                self.inner.count_collections(tenant, database),
            )
            .await
    }

    async fn list_all_collections(&self) -> Result<Vec<Collection>> {
        self.faults
            .run("list_all_collections", self.inner.list_all_collections())
            .await
    }

    async fn update_collection(&self, id: Uuid, update: &CollectionUpdate) -> Result<Collection> {
        self.faults
            .run(
                "update_collection",
                self.inner.update_collection(id, update),
            )
            .await
    }

    async fn delete_collection(&self, id: Uuid) -> Result<Manifest> {
        self.faults
            .run("delete_collection", self.inner.delete_collection(id))
            .await
    }

    async fn fork_collection(&self, source: Uuid, id: Uuid, name: &str) -> Result<Collection> {
        self.faults
            .run(
                "fork_collection",
                self.inner.fork_collection(source, id, name),
            )
            .await
    }

    async fn get_lineage(&self, root: Uuid) -> Result<Option<Lineage>> {
        self.faults
            .run("get_lineage", self.inner.get_lineage(root))
            .await
    }

    async fn reset(&self) -> Result<()> {
        self.faults.run("reset", self.inner.reset()).await
    }
}

#[async_trait]
impl Manifests for FaultyCatalog {
    async fn get_manifest(&self, id: Uuid) -> Result<Manifest> {
        self.faults
            .run("get_manifest", self.inner.get_manifest(id))
            .await
    }

    async fn commit_manifest(&self, id: Uuid, manifest: &Manifest) -> Result<()> {
        self.faults
            .run("commit_manifest", self.inner.commit_manifest(id, manifest))
            .await
    }
}

#[async_trait]
impl ApiKeys for FaultyCatalog {
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        self.faults
            .run("create_api_key", self.inner.create_api_key(key))
            .await
    }

    async fn get_api_key(&self, id: &str) -> Result<ApiKeyRecord> {
        self.faults
            .run("get_api_key", self.inner.get_api_key(id))
            .await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        self.faults
            .run("list_api_keys", self.inner.list_api_keys())
            .await
    }

    async fn revoke_api_key(&self, id: &str, at_ms: u64) -> Result<ApiKeyRecord> {
        self.faults
            .run("revoke_api_key", self.inner.revoke_api_key(id, at_ms))
            .await
    }
}

/// Corrupts a collection's state the way a lost object would: commits a manifest that names
/// a segment whose objects do not exist. Reading or compacting the collection then fails.
pub async fn lose_a_segment(catalog: &dyn Catalog, collection: Uuid) -> Result<()> {
    let mut m = catalog.get_manifest(collection).await?;
    m.version += 1;
    m.segments.push(crate::catalog::SegmentRef {
        id: "lost".into(),
        records_key: format!("c/{collection}/seg/lost/records.parquet"),
        index_key: format!("c/{collection}/seg/lost/index.bin"),
        rows: 1,
        bytes: 1,
        deletes_key: None,
        deleted: 0,
        records_len: None,
        index_len: None,
        sparse_key: None,
    });
    catalog.commit_manifest(collection, &m).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    #[tokio::test]
    async fn fails_every_nth_call_of_each_kind_before_then_after() {
        let faults = Faults::every(2);
        let inner = Arc::new(MemoryStore::new());
        let store = FaultyStore::new(inner.clone(), faults.clone());
        store.put("a", Bytes::from_static(b"1")).await.unwrap();
        // The 2nd put fails before reaching the store.
        assert!(store.put("b", Bytes::from_static(b"2")).await.is_err());
        assert!(inner.get("b").await.is_err());
        store.put("c", Bytes::from_static(b"3")).await.unwrap();
        // The 4th put fails after the store applied it.
        assert!(store.put("d", Bytes::from_static(b"4")).await.is_err());
        assert_eq!(inner.get("d").await.unwrap(), Bytes::from_static(b"4"));
        // Other kinds count separately.
        store.get("a").await.unwrap();
        assert!(store.get("a").await.is_err());
        assert_eq!(faults.injected(), 3);
        faults.disable();
        store.get("a").await.unwrap();
        store.get("a").await.unwrap();
    }
}
