//! The catalog port: tenants, databases, collections and each collection's manifest.
//!
//! The manifest is the single source of truth of a collection's contents: which log
//! batches and segments are live, the wrapped data key, the dimension. Every change to it
//! is a compare-and-swap on its version.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::IfExists;
use crate::model::{Collection, CollectionConfiguration, Database, Metadata, Tenant};

/// One log batch: a Parquet file of operations, committed at `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBatchRef {
    pub seq: u64,
    pub key: String,
    pub ops: u64,
    pub bytes: u64,
    /// The insertion-order offset of the batch's first operation; operation `i` has
    /// offset `first_offset + i`.
    pub first_offset: u64,
}

/// One immutable segment: a records Parquet file and its HNSW index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    pub id: String,
    pub records_key: String,
    pub index_key: String,
    /// Rows in the records file.
    pub rows: u64,
    /// Bytes of the segment's objects.
    pub bytes: u64,
    /// Rows deleted or replaced since the segment was written: an object listing their
    /// row numbers (the segment itself never changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes_key: Option<String>,
    #[serde(default)]
    pub deleted: u64,
    /// The stored size of the records object, when its writer recorded it: a reader by
    /// range then needs no `HEAD` request first (absent in older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_len: Option<u64>,
    /// The stored size of the index object, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_len: Option<u64>,
    /// The segment's sparse index (`index::sparse`), when some row has a sparse vector
    /// and compaction wrote it (absent in segments written before: they build theirs from
    /// their metadata when they load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_key: Option<String>,
}

/// An object taken out of the manifest, deleted once the grace period has passed (readers
/// holding an older manifest may still fetch it until then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredObject {
    pub key: String,
    pub retired_at_ms: u64,
}

/// A collection's manifest. Serialized as JSON by the catalogs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Incremented by every commit; the compare-and-swap token.
    pub version: u64,
    /// Embedding dimension, fixed by the first write.
    pub dimension: Option<u32>,
    /// The collection's data key, wrapped by the key provider (base64 in JSON).
    #[serde(with = "crate::serde_base64")]
    pub wrapped_key: Vec<u8>,
    /// Sequence number the next log batch gets.
    pub next_seq: u64,
    /// Insertion-order offset the next operation gets.
    pub next_offset: u64,
    /// Live log batches, in sequence order.
    pub log: Vec<LogBatchRef>,
    /// Live segments; together with the log, the collection's contents.
    pub segments: Vec<SegmentRef>,
    /// Operations ever committed.
    pub total_ops: u64,
    /// Operations folded into segments.
    pub indexed_ops: u64,
    /// Objects no longer referenced, awaiting deletion.
    #[serde(default)]
    pub retired: Vec<RetiredObject>,
    /// Compactions committed (each changed the index: folded the log, merged segments):
    /// the collection's `version` as Chroma's cloud reports it (absent in older
    /// manifests).
    #[serde(default)]
    pub compactions: u64,
    /// The root of the collection's lineage, once it has been forked or is a fork (see
    /// [`Lineage`]); absent for a collection never forked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Uuid>,
}

impl Manifest {
    pub fn new(wrapped_key: Vec<u8>) -> Self {
        Self {
            version: 1,
            dimension: None,
            wrapped_key,
            next_seq: 1,
            next_offset: 0,
            log: Vec::new(),
            segments: Vec::new(),
            total_ops: 0,
            indexed_ops: 0,
            retired: Vec::new(),
            compactions: 0,
            lineage: None,
        }
    }

    /// The collection whose prefix holds the objects of collection `id` (this manifest's)
    /// and whose encryption context wraps its data key: the root of its lineage, or the
    /// collection itself. It never changes over a collection's life: a fork gets its
    /// root at creation, and a root is its own.
    pub fn owner(&self, id: Uuid) -> Uuid {
        self.lineage.unwrap_or(id)
    }

    /// The first manifest of a fork of collection `source`, whose manifest this is: the
    /// same contents (log, segments, counters, dimension, wrapped data key) at version
    /// 1, in the source's lineage, without the source's retired objects (the source
    /// still collects those).
    pub fn forked(&self, source: Uuid) -> Manifest {
        Manifest {
            version: 1,
            retired: Vec::new(),
            lineage: Some(self.owner(source)),
            ..self.clone()
        }
    }

    /// Every object key the manifest references (live or retired).
    pub fn referenced_keys(&self) -> impl Iterator<Item = &str> {
        self.log
            .iter()
            .map(|l| l.key.as_str())
            .chain(self.segments.iter().flat_map(|s| {
                [
                    Some(s.records_key.as_str()),
                    Some(s.index_key.as_str()),
                    s.deletes_key.as_deref(),
                    s.sparse_key.as_deref(),
                ]
                .into_iter()
                .flatten()
            }))
            .chain(self.retired.iter().map(|r| r.key.as_str()))
    }

    /// Log operations not yet folded into segments (saturating: a corrupt manifest must not
    /// overflow).
    pub fn unindexed_ops(&self) -> u64 {
        self.log.iter().fold(0, |sum, l| sum.saturating_add(l.ops))
    }
}

/// A lineage: a collection that has been forked, and every fork made from it or from its
/// forks. Members are copy-on-write copies of one another: their manifests name objects
/// under the root's prefix, sealed under the root's data key (each member's manifest
/// holds a copy of it, wrapped with the root's encryption context). An object stays
/// while any member's manifest references it, and the key is shredded when the last
/// member is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    pub root: Uuid,
    /// Forks ever made in the lineage (Chroma's fork count: the same from every member;
    /// deleting a fork does not lower it).
    pub forks: u64,
    /// The members that exist (the root while it does), sorted.
    pub members: Vec<Uuid>,
}

/// An API key as the catalog keeps it: never the secret, only its digest.
///
/// The secret is random with full entropy, so a fast digest (SHA-256) is as strong as a
/// slow password hash and affordable on every request; it is compared in constant time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// The public key id (the prefix of the key a client sends).
    pub id: String,
    /// A label for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SHA-256 of the secret (base64 in JSON).
    #[serde(with = "crate::serde_base64")]
    pub digest: Vec<u8>,
    /// Grants as `tenant/database/collection:actions` strings.
    pub grants: Vec<String>,
    /// A row-level filter (a `where` document) ANDed into the key's reads and writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_filter: Option<serde_json::Value>,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
}

/// Changes to a collection's catalog entry; `None` leaves a field unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectionUpdate {
    pub name: Option<String>,
    pub metadata: Option<Metadata>,
    pub configuration: Option<CollectionConfiguration>,
    /// Compare-and-set: apply the update only if the stored configuration is still this
    /// one (read earlier by the caller); otherwise fail with `Conflict` and change
    /// nothing, so that read-modify-write updates (key discovery) never lose each other's
    /// changes.
    pub expected_configuration: Option<CollectionConfiguration>,
}

/// Rounds of read, change and compare-and-set a read-modify-write of a collection's
/// configuration tries before giving up (each lost round means another change landed).
pub const CONFIGURATION_CAS_ATTEMPTS: u32 = 16;

/// The `Conflict` of a compare-and-set update whose expected configuration is stale.
pub fn configuration_changed(id: Uuid) -> Error {
    Error::conflict(format!(
        "the configuration of collection {id} changed meanwhile"
    ))
}

/// Tenants, databases and collections by name, with forks and their lineages.
///
/// Contract, for every implementation:
/// - Names are unique: a tenant per deployment, a database per tenant, a collection per
///   database. Creating a taken name fails with `AlreadyExists` and changes nothing.
/// - Reads of a missing tenant, database or collection fail with `NotFound`.
/// - Creating a database in a missing tenant, or a collection in a missing database,
///   fails with `NotFound`.
/// - `create_collection` stores the collection and its first manifest atomically. With
///   `IfExists::Get` and a taken name it returns the existing collection unchanged and
///   `false`.
/// - Reads are strongly consistent: a read after a successful write sees it.
/// - Listings are ordered by creation (oldest first), then paged by `offset`/`limit`.
/// - Returned collections have `dimension` filled from their manifest.
/// - `fork_collection(source, id, name)` creates collection `id` named `name` in the
///   source's database with the source's metadata, configuration and
///   [`Manifest::forked`] manifest, and records the fork in the source's [`Lineage`]
///   (created at the first fork with the source as root, when the source's manifest also
///   gets its `lineage` in a commit of the next version), all atomically: the fork holds
///   exactly what the source held at one version. A missing source fails with
///   `NotFound`, a taken name with `AlreadyExists`, and change nothing.
/// - Deleting a collection (alone or with its database) removes it and its manifest, and
///   removes it from its lineage; the lineage goes with its last member.
#[async_trait]
pub trait Names: Send + Sync + std::fmt::Debug {
    async fn create_tenant(&self, name: &str) -> Result<Tenant>;
    async fn get_tenant(&self, name: &str) -> Result<Tenant>;
    /// Sets a tenant's resource name, once: `NotFound` for a missing tenant,
    /// `AlreadyExists` when it has another one already (the same one again changes nothing).
    async fn set_tenant_resource_name(&self, name: &str, resource_name: &str) -> Result<Tenant>;

    async fn create_database(&self, tenant: &str, name: &str) -> Result<Database>;
    async fn get_database(&self, tenant: &str, name: &str) -> Result<Database>;
    async fn list_databases(
        &self,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Database>>;
    /// Deletes the database and every collection in it, returning those collections'
    /// last manifests so their objects can be collected.
    async fn delete_database(&self, tenant: &str, name: &str) -> Result<Vec<(Uuid, Manifest)>>;

    async fn create_collection(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        if_exists: IfExists,
    ) -> Result<(Collection, bool)>;
    async fn get_collection(&self, tenant: &str, database: &str, name: &str) -> Result<Collection>;
    async fn get_collection_by_id(&self, id: Uuid) -> Result<Collection>;
    /// The collection with its current manifest, both as of one moment: what a read of
    /// its records starts from. `NotFound` as [`Names::get_collection_by_id`]. Backends
    /// answer it in as few reads as they can (DynamoDB: one read of the manifest item
    /// once the process knows the collection).
    async fn get_collection_with_manifest(&self, id: Uuid) -> Result<(Collection, Manifest)>;
    async fn list_collections(
        &self,
        tenant: &str,
        database: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Collection>>;
    async fn count_collections(&self, tenant: &str, database: &str) -> Result<u64>;
    /// Every collection of every tenant (for background compaction and collection).
    async fn list_all_collections(&self) -> Result<Vec<Collection>>;
    /// Renaming onto a taken name fails with `AlreadyExists`.
    async fn update_collection(&self, id: Uuid, update: &CollectionUpdate) -> Result<Collection>;
    /// Removes the collection and its manifest (and so its wrapped data key), returning
    /// the last manifest.
    async fn delete_collection(&self, id: Uuid) -> Result<Manifest>;

    /// Forks collection `source` into a new collection `id` named `name` (see the
    /// contract above) and returns it.
    async fn fork_collection(&self, source: Uuid, id: Uuid, name: &str) -> Result<Collection>;
    /// The lineage rooted at collection `root`; `None` when no fork was ever made of it
    /// (or when every member has been deleted).
    async fn get_lineage(&self, root: Uuid) -> Result<Option<Lineage>>;

    /// Removes every tenant, database and collection, then recreates the default tenant
    /// and database. API keys are kept.
    async fn reset(&self) -> Result<()>;
}

/// Each collection's current [`Manifest`], replaced only by compare-and-swap: the commit
/// point of every write, compaction and garbage collection.
///
/// Commit protocol (the engine's side is `Engine::commit_with_retry`):
/// 1. Read the manifest; say it has version `v`.
/// 2. Write the new objects (a log batch, a segment's objects) under fresh keys that no
///    manifest names yet. Nothing reads them until step 3 succeeds.
/// 3. `commit_manifest(id, m)` with `m.version == v + 1`, naming the new objects (and
///    listing the ones it replaces as retired).
///
/// Contract, for every implementation:
/// - `commit_manifest(id, m)` replaces the manifest only if the stored one has version
///   `m.version - 1`, atomically with that check; otherwise it fails with `Conflict`
///   (retryable: read again, derive the change again, commit again) and changes nothing.
///   `NotFound` if the collection is gone.
/// - Reads are strongly consistent: a read after a successful commit sees it.
/// - A commit whose outcome is unknown (a lost response) may have been applied: the
///   writer reads the manifest again and checks whether it holds its change before trying
///   again, and deletes its objects only when no manifest names them. Objects a commit
///   retires stay until garbage collection, after a grace period, so a reader of an older
///   version still finds them.
#[async_trait]
pub trait Manifests: Send + Sync + std::fmt::Debug {
    async fn get_manifest(&self, id: Uuid) -> Result<Manifest>;
    async fn commit_manifest(&self, id: Uuid, manifest: &Manifest) -> Result<()>;
}

/// The API keys of the deployment (never their secrets: see [`ApiKeyRecord`]).
#[async_trait]
pub trait ApiKeys: Send + Sync + std::fmt::Debug {
    /// Stores a new API key; an id already taken fails with `AlreadyExists`.
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<()>;
    /// The key with this id (revoked or expired ones included); `NotFound` if none.
    async fn get_api_key(&self, id: &str) -> Result<ApiKeyRecord>;
    /// Every key, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>>;
    /// Marks the key revoked at `at_ms` (a key already revoked keeps its first time) and
    /// returns it; `NotFound` if none.
    async fn revoke_api_key(&self, id: &str, at_ms: u64) -> Result<ApiKeyRecord>;
}

/// The catalog: [`Names`], [`Manifests`] and [`ApiKeys`], kept by one backend (a SQLite
/// file, DynamoDB tables), because creating, forking and deleting a collection change
/// its name and its manifest in one transaction. Implemented by every type that
/// implements the three.
pub trait Catalog: Names + Manifests + ApiKeys {}

impl<T: Names + Manifests + ApiKeys + ?Sized> Catalog for T {}

/// The error of [`Names::set_tenant_resource_name`] for a tenant that has another one.
#[cfg(any(feature = "sqlite", feature = "aws"))]
pub(crate) fn tenant_has_resource_name(tenant: &str) -> Error {
    Error::already_exists(format!("tenant {tenant} already has a resource name"))
}

pub const DEFAULT_TENANT: &str = "default_tenant";
pub const DEFAULT_DATABASE: &str = "default_database";

/// Chroma's 404 text for a collection id that names no collection. (Routes on a
/// collection's records add a period: see [`crate::access::ScopedCollection::open`].)
pub fn collection_id_missing(id: Uuid) -> Error {
    Error::not_found(format!("Collection [{id}] does not exist"))
}

/// Chroma's 409 text for a collection name already taken in its database.
pub fn collection_name_taken(name: &str) -> Error {
    Error::already_exists(format!("Collection [{name}] already exists"))
}

/// Chroma's 404 text for a collection name that names no collection of a database.
pub fn collection_name_missing(name: &str) -> Error {
    Error::not_found(format!("Collection [{name}] does not exist"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unindexed_ops_saturates() {
        let mut m = Manifest::new(vec![1, 2, 3]);
        let batch = |ops| LogBatchRef {
            seq: 1,
            key: "k".into(),
            ops,
            bytes: 1,
            first_offset: 0,
        };
        m.log = vec![batch(3), batch(4)];
        assert_eq!(m.unindexed_ops(), 7);
        m.log = vec![batch(u64::MAX), batch(1)];
        assert_eq!(m.unindexed_ops(), u64::MAX);
    }
}
