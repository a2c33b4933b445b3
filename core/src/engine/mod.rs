//! The only orchestration in the crate: writes, reads and compaction of collections over
//! the ports (catalog, object store, key provider, jobs).
//!
//! A collection is log-structured. Each write batch becomes one encrypted Parquet object
//! in the collection's log, made visible by a compare-and-swap of the manifest. Readers
//! combine the immutable segments the manifest names with an exact scan of the log.
//! Compaction folds the log into new segments (records + HNSW index, and the sparse
//! index when some record has a sparse vector) and merges segments, swapping them in
//! with another compare-and-swap.

mod cache;
mod cold;
mod compact;
mod discovery;
mod fork;
mod health;
pub(crate) mod object_keys;
mod read;
pub mod read_ahead;
mod records;
mod search;
mod snapshot;
mod stop;
mod vectors;
mod write;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

pub use compact::{CompactionReport, Merge, SweepReport};
pub use discovery::NewKeys;
pub use health::Health;
pub(crate) use read::query_done;
pub use read::{GetRequest, GetResult, Include, IndexingStatus, QueryRequest, QueryResult};
pub use search::SearchResult;
pub use stop::Stop;
pub(crate) use write::check_collection_dimension;
pub use write::DeleteRequest;

use crate::catalog::{Catalog, CollectionUpdate, Manifest, CONFIGURATION_CAS_ATTEMPTS};
use crate::crypto::{envelope, DataKey, EncryptionContext, KeyProvider};
use crate::error::{Error, ErrorCode, Result};
use crate::jobs::Jobs;
use crate::model::IfExists;
use crate::model::{Collection, CollectionConfiguration, Database, Metadata, Tenant};
use crate::storage::ObjectStore;

use cache::ObjectCache;

/// Tuning of the engine. Defaults suit a local server; Lambda functions use the same.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Ask for compaction once this many operations sit in a collection's log.
    pub compact_log_ops: u64,
    /// ... or once the log's objects add up to this many bytes.
    pub compact_log_bytes: u64,
    /// ... or once the log has this many batches.
    pub compact_log_batches: usize,
    /// A requested compaction starts once the collection has seen no write for this long
    /// (so a bulk load becomes one segment) ...
    pub compact_quiet: Duration,
    /// ... or at the latest this long after it was requested (steady writes).
    pub compact_max_delay: Duration,
    /// A collection with more segments than this has its smallest segments merged.
    pub max_segments: usize,
    /// Folding the log extends (inserts its records into the graph of) the largest
    /// segment with at most this many times the log's records, instead of starting a new
    /// segment: a load that arrives in several folds is indexed once, and rewriting the
    /// extended segment costs at most this many rows copied per row inserted.
    pub extend_ratio: usize,
    /// After this long without writes, a collection's segments are merged into one.
    pub optimize_after_idle: Duration,
    /// A segment holds at most this many rows (one log batch larger than this is still
    /// folded whole): a compaction folds as much of the log as fits and merges or extends
    /// segments only within it, so a build's memory and time are bounded whatever the
    /// collection's size.
    pub max_segment_rows: u64,
    /// ... and at most as many as a build can hold in this many bytes
    /// ([`build_bytes_per_row`]: about 12 KB a row at 384 dimensions).
    pub build_memory_bytes: u64,
    /// How long an object taken out of a manifest stays readable before deletion.
    pub gc_grace: Duration,
    /// Attempts of a manifest compare-and-swap before giving up with `Unavailable`.
    pub commit_attempts: u32,
    /// Bytes of decoded segments and log batches kept in memory.
    pub cache_bytes: usize,
    /// A query scans the codes of a segment's allowed rows (instead of walking its
    /// graph) when at most this many are allowed by the filter; it then re-ranks the
    /// `max(ef, k)` nearest by code exactly (every allowed row when there are no more).
    pub exact_scan_rows: usize,
    /// How long bulk ingest's ledger entries are kept: longer than SQS keeps an event, so
    /// a re-delivered event still finds its entry.
    pub ingest_ledger_retention: Duration,
    /// How long files bulk ingest rejected, and their error reports, are kept.
    pub failed_ingest_retention: Duration,
    /// Threads an index build uses (0: every core). The default leaves one core to
    /// queries, so a build never starves them; a process that only builds (the Lambda
    /// `compact` function) uses every core.
    pub build_threads: usize,
    /// A segment's rows are stored grouped by nearest centroid, about this many per group
    /// (see `index::partition`), so a reader can fetch the rows near a query by range.
    pub rows_per_partition: usize,
    /// A query naming no ids against a collection that is not in memory and holds at
    /// least this many rows in segments reads what it needs of them by range (the cold
    /// path, `cold.rs`) while the collection loads in the background; a smaller one is
    /// loaded first.
    pub cold_query_rows: u64,
    /// Partitions the cold path searches for each `max_segment_rows` of the collection's
    /// rows (one full segment's worth), the nearest to the query across its segments:
    /// a small segment is not read as much of as a full one, and a collection's reads
    /// do not grow with how many segments hold it. 80 (partitions of about 1,000 rows):
    /// 1M × 768 in three segments, 160 probed, recall@10 0.961 (240: 0.975, 80: 0.906);
    /// 1M × 384 in two, 160 probed, 0.969–0.972 (128: 0.955–0.959); 100k rows (one
    /// segment of 98 partitions), 80 probed, 0.997 (`scripts/bench-scale.sh`). A SPANN
    /// collection scales it by its `search_nprobe` (`model::spann`).
    pub cold_nprobe: usize,
    /// Whether a query served by the cold path loads the collection in the background
    /// (so the next queries walk the graph in memory). Off, every query of a collection
    /// that is not in memory reads by range: memory stays at the cold path's few bytes
    /// per vector.
    pub warm_after_cold: bool,
    /// Whether a query of a settled collection starts its search while the catalog is
    /// read, on what the catalog answered before ([`read_ahead`]). For catalogs whose
    /// reads take milliseconds (DynamoDB); off by default.
    pub read_ahead: bool,
}

/// Memory a compaction uses per row of the segment it builds, at its peak: the row's f32
/// vector about four times over (the folded record's, the index's resident copy,
/// hnsw_rs's own, the serialized object) and about 6 KB whatever the dimension
/// (hnsw_rs's graph, the records, the allocator's overhead). Measured at 384 dimensions
/// by `scripts/bench-scale.sh 1000000` (a 465k-row segment: 11 KB a row while building,
/// 14 KB while serializing before objects were sealed in place).
pub fn build_bytes_per_row(dim: usize) -> u64 {
    dim as u64 * 4 * 4 + 6144
}

/// Half the machine's physical memory, at most 8 GiB (8 GiB where it cannot be told).
fn default_build_memory() -> u64 {
    const MAX: u64 = 8 << 30;
    #[cfg(unix)]
    #[allow(unsafe_code)]
    {
        // SAFETY: sysconf only reads system configuration values.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && page > 0 {
            return (pages as u64)
                .saturating_mul(page as u64)
                .div_ceil(2)
                .min(MAX);
        }
    }
    MAX
}

/// Rows one segment may hold in a collection of dimension `dim` under `config`.
pub(crate) fn segment_rows_cap(config: &EngineConfig, dim: usize) -> u64 {
    let fits = config.build_memory_bytes / build_bytes_per_row(dim);
    config.max_segment_rows.min(fits).max(1)
}

/// Every core but one (at least one).
pub fn build_threads_leaving_a_core() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            compact_log_ops: 1_000,
            compact_log_bytes: 64 << 20,
            compact_log_batches: 64,
            compact_quiet: Duration::from_millis(100),
            compact_max_delay: Duration::from_secs(2),
            max_segments: 8,
            extend_ratio: 8,
            optimize_after_idle: Duration::from_secs(2),
            max_segment_rows: 500_000,
            build_memory_bytes: default_build_memory(),
            gc_grace: Duration::from_secs(600),
            commit_attempts: 40,
            cache_bytes: 2 << 30,
            exact_scan_rows: 2_048,
            ingest_ledger_retention: Duration::from_secs(15 * 86_400),
            failed_ingest_retention: Duration::from_secs(30 * 86_400),
            build_threads: build_threads_leaving_a_core(),
            rows_per_partition: 1_024,
            cold_query_rows: 50_000,
            cold_nprobe: 80,
            warm_after_cold: true,
            read_ahead: false,
        }
    }
}

/// The engine, shared in an `Arc` ([`Engine::new`] makes one).
#[derive(Debug)]
pub struct Engine {
    /// Itself, for background work a request starts (loading a segment the cold path
    /// served).
    me: std::sync::Weak<Engine>,
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn ObjectStore>,
    key_provider: Arc<dyn KeyProvider>,
    jobs: Arc<dyn Jobs>,
    config: EngineConfig,
    cache: ObjectCache,
    compaction_locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    /// Cancelled at shutdown: background work and builds stop.
    shutdown: tokio_util::sync::CancellationToken,
    /// Work running per collection, stopped when the collection is deleted.
    running: stop::Running,
    last_write: Mutex<HashMap<Uuid, Instant>>,
    /// The manifest version of each collection's cached snapshot.
    latest_snapshot: Mutex<HashMap<Uuid, u64>>,
    /// The last health check and when it was made.
    health: Mutex<Option<(Instant, Health)>>,
    /// Snapshots being loaded in the background, by cache key.
    warming: Mutex<std::collections::HashSet<String>>,
    /// What the catalog last answered per collection, for queries that read ahead.
    answers: read_ahead::Answers,
}

impl Engine {
    pub fn new(
        catalog: Arc<dyn Catalog>,
        store: Arc<dyn ObjectStore>,
        key_provider: Arc<dyn KeyProvider>,
        jobs: Arc<dyn Jobs>,
        config: EngineConfig,
    ) -> Arc<Self> {
        let cache = ObjectCache::new(config.cache_bytes);
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            catalog,
            store,
            key_provider,
            jobs,
            config,
            cache,
            compaction_locks: Mutex::new(HashMap::new()),
            shutdown: tokio_util::sync::CancellationToken::new(),
            running: stop::Running::default(),
            last_write: Mutex::new(HashMap::new()),
            latest_snapshot: Mutex::new(HashMap::new()),
            health: Mutex::new(None),
            warming: Mutex::new(std::collections::HashSet::new()),
            answers: read_ahead::Answers::default(),
        })
    }

    /// Bytes of decoded objects held in memory (loaded segments, log batches,
    /// snapshots), as counted against [`EngineConfig::cache_bytes`].
    pub fn cached_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Drops every decoded object held in memory: the next read of each collection
    /// starts cold (as after a restart), and memory goes back to the allocator.
    pub fn evict_all(&self) {
        self.cache.clear();
        self.latest_snapshot.lock().expect("snapshot lock").clear();
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Stops background work: the compaction loop ends and running compactions (builds
    /// included) stop within about a second, committing nothing. Requests still work.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// The object store the engine writes to (bulk ingestion reads its input files from
    /// the same store).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The key provider the engine's data keys come from.
    pub(crate) fn key_provider(&self) -> &Arc<dyn KeyProvider> {
        &self.key_provider
    }

    // ----- tenants and databases -------------------------------------------------------

    pub async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        crate::model::validate::validate_tenant_name(name)?;
        self.catalog.create_tenant(name).await
    }

    pub async fn get_tenant(&self, name: &str) -> Result<Tenant> {
        self.catalog.get_tenant(name).await
    }

    /// Sets a tenant's resource name, once (see [`crate::catalog::Names::set_tenant_resource_name`]).
    pub async fn set_tenant_resource_name(
        &self,
        name: &str,
        resource_name: &str,
    ) -> Result<Tenant> {
        crate::model::validate::validate_resource_name(resource_name)?;
        self.catalog
            .set_tenant_resource_name(name, resource_name)
            .await
    }

    pub async fn create_database(&self, tenant: &str, name: &str) -> Result<Database> {
        crate::model::validate::validate_database_name(name)?;
        self.catalog.create_database(tenant, name).await
    }

    pub async fn get_database(&self, tenant: &str, name: &str) -> Result<Database> {
        self.catalog.get_database(tenant, name).await
    }

    pub async fn list_databases(
        &self,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Database>> {
        self.catalog.get_tenant(tenant).await?;
        self.catalog.list_databases(tenant, limit, offset).await
    }

    /// Deletes a database with all its collections (and their keys and objects).
    pub async fn delete_database(&self, tenant: &str, name: &str) -> Result<()> {
        let removed = self.catalog.delete_database(tenant, name).await?;
        for (id, manifest) in removed {
            self.delete_collection_data(id, &manifest).await;
        }
        Ok(())
    }

    // ----- collections -----------------------------------------------------------------

    /// Creates a collection with a fresh data key; with `IfExists::Get`, returns the
    /// existing collection of that name unchanged.
    pub async fn create_collection(
        &self,
        tenant: &str,
        database: &str,
        name: &str,
        metadata: Option<Metadata>,
        configuration: CollectionConfiguration,
        if_exists: IfExists,
    ) -> Result<Collection> {
        crate::model::validate::validate_collection_name(name)?;
        if if_exists == IfExists::Get {
            match self.catalog.get_collection(tenant, database, name).await {
                Ok(existing) => return Ok(existing),
                Err(e) if e.code() == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.catalog
            .get_database(tenant, database)
            .await
            .map_err(|e| {
                if e.code() == ErrorCode::NotFound {
                    Error::invalid(format!("Database [{database}] does not exist"))
                } else {
                    e
                }
            })?;
        let collection = Collection {
            id: Uuid::new_v4(),
            name: name.to_string(),
            tenant: tenant.to_string(),
            database: database.to_string(),
            metadata,
            configuration,
            dimension: None,
        };
        let ctx = context_of(&collection);
        let (_key, wrapped) = self.key_provider.generate_data_key(&ctx).await?;
        let manifest = Manifest::new(wrapped);
        let (stored, _created) = self
            .catalog
            .create_collection(&collection, &manifest, if_exists)
            .await?;
        Ok(stored)
    }

    pub async fn get_collection(
        &self,
        tenant: &str,
        database: &str,
        name: &str,
    ) -> Result<Collection> {
        self.catalog.get_collection(tenant, database, name).await
    }

    pub async fn get_collection_by_id(&self, id: Uuid) -> Result<Collection> {
        self.catalog.get_collection_by_id(id).await
    }

    /// The collection with its current manifest, both as of one moment: where a read of
    /// its records starts (the `*_as_of` reads), in one catalog read where the backend
    /// can (see [`crate::catalog::Names::get_collection_with_manifest`]).
    pub async fn get_collection_with_manifest(&self, id: Uuid) -> Result<(Collection, Manifest)> {
        let (collection, manifest) = self.catalog.get_collection_with_manifest(id).await?;
        self.note_answer(&collection, &manifest);
        Ok((collection, manifest))
    }

    pub async fn list_collections(
        &self,
        tenant: &str,
        database: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Collection>> {
        self.catalog.get_database(tenant, database).await?;
        self.catalog
            .list_collections(tenant, database, limit, offset)
            .await
    }

    pub async fn count_collections(&self, tenant: &str, database: &str) -> Result<u64> {
        self.catalog.get_database(tenant, database).await?;
        self.catalog.count_collections(tenant, database).await
    }

    /// Renames, replaces metadata or changes the configuration of a collection.
    pub async fn update_collection(
        &self,
        id: Uuid,
        update: CollectionUpdate,
    ) -> Result<Collection> {
        if let Some(name) = &update.name {
            crate::model::validate::validate_collection_name(name)?;
        }
        self.catalog.update_collection(id, &update).await
    }

    /// Read-modify-write of collection `id`'s catalog entry: `change` maps the collection
    /// as read to an update (`None`: nothing to do). A change of the configuration is
    /// written with a compare-and-set against the configuration read; when another change
    /// landed first, the collection is read again and `change` applied anew (a key
    /// discovery and a modify never overwrite each other).
    pub async fn modify_collection<E: From<Error>>(
        &self,
        id: Uuid,
        mut change: impl FnMut(&Collection) -> std::result::Result<Option<CollectionUpdate>, E>,
    ) -> std::result::Result<(), E> {
        let mut attempt = 0;
        loop {
            let current = self.catalog.get_collection_by_id(id).await?;
            let Some(mut update) = change(&current)? else {
                return Ok(());
            };
            if update.configuration.is_some() {
                update.expected_configuration = Some(current.configuration);
            }
            match self.update_collection(id, update).await {
                Err(e)
                    if e.code() == ErrorCode::Conflict && attempt < CONFIGURATION_CAS_ATTEMPTS =>
                {
                    attempt += 1;
                }
                done => return Ok(done.map(drop)?),
            }
        }
    }

    /// Deletes a collection: its catalog entry and manifest (and with it the only copy of
    /// its wrapped data key, so every object becomes unreadable), then its objects.
    pub async fn delete_collection(&self, tenant: &str, database: &str, name: &str) -> Result<()> {
        let collection = self.catalog.get_collection(tenant, database, name).await?;
        let manifest = self.catalog.delete_collection(collection.id).await?;
        self.delete_collection_data(collection.id, &manifest).await;
        Ok(())
    }

    /// Removes every tenant, database and collection.
    pub async fn reset(&self) -> Result<()> {
        let all = self.catalog.list_all_collections().await?;
        self.catalog.reset().await?;
        for c in all {
            self.running.cancel(c.id);
        }
        // Every collection's objects, those of forks' lineages and of interrupted
        // deletions included.
        self.delete_prefix(object_keys::COLLECTIONS).await;
        self.cache.clear();
        self.latest_snapshot.lock().expect("snapshot lock").clear();
        Ok(())
    }

    /// Deletes what a deleted collection left: cancels its compaction, drops its cached
    /// objects and snapshot, and deletes its objects (those other members of its lineage
    /// do not share: see `fork.rs`).
    async fn delete_collection_data(&self, id: Uuid, manifest: &Manifest) {
        self.running.cancel(id);
        for key in manifest.referenced_keys() {
            self.cache.remove(&cold::cold_key(key));
            self.cache.remove(key);
        }
        self.last_write.lock().expect("write lock").remove(&id);
        if let Some(v) = self
            .latest_snapshot
            .lock()
            .expect("snapshot lock")
            .remove(&id)
        {
            self.cache.remove(&snapshot::snapshot_key(id, v));
        }
        self.delete_member_objects(id, manifest).await;
    }

    /// Best effort: whatever is left is collected by [`Engine::collect_garbage`].
    async fn delete_prefix(&self, prefix: &str) {
        match self.store.list(prefix).await {
            Ok(objects) => {
                for o in objects {
                    if let Err(e) = self.store.delete(&o.key).await {
                        tracing::warn!(key = %o.key, error = %e, "failed to delete object");
                    }
                }
            }
            Err(e) => tracing::warn!(prefix, error = %e, "failed to list objects for deletion"),
        }
    }

    // ----- keys and encrypted objects ---------------------------------------------------

    /// The collection's data key, from the key provider every time: whether and how long
    /// an unwrapped key may be reused is the provider's decision alone (the KMS provider
    /// keeps one for `CHROMA_DATA_KEY_TTL_SECS`), so revoking access to the master key
    /// takes effect within that bound. A refusal is audited.
    ///
    /// The key of a lineage's members is the root's, wrapped with the root's context
    /// ([`Manifest::owner`]).
    async fn data_key(&self, collection: &Collection, manifest: &Manifest) -> Result<DataKey> {
        let ctx = EncryptionContext {
            collection: manifest.owner(collection.id),
            ..context_of(collection)
        };
        self.key_provider
            .unwrap_data_key(&manifest.wrapped_key, &ctx)
            .await
            .inspect_err(|e| {
                if e.code() == ErrorCode::PermissionDenied {
                    tracing::warn!(
                        target: "audit",
                        event = "data_key_refused",
                        principal = "",
                        tenant = %ctx.tenant,
                        action = "unwrap_data_key",
                        resource = %format!("{}/{}", ctx.database, ctx.collection),
                        outcome = "denied",
                        request_id = %crate::request::current_id(),
                        error = %e,
                    );
                }
            })
    }

    async fn put_encrypted(&self, key: &DataKey, object: &str, plaintext: Vec<u8>) -> Result<u64> {
        self.put_encrypted_chunked(key, object, plaintext, envelope::DEFAULT_CHUNK_SIZE)
            .await
    }

    /// [`Engine::put_encrypted`] with envelope chunks of `chunk_size` bytes (smaller
    /// chunks make ranged reads of small pieces cheaper).
    async fn put_encrypted_chunked(
        &self,
        key: &DataKey,
        object: &str,
        plaintext: Vec<u8>,
        chunk_size: u32,
    ) -> Result<u64> {
        let (k, aad) = (key.clone(), object.to_string());
        let sealed = tokio::task::spawn_blocking(move || {
            envelope::encrypt_owned(&k, aad.as_bytes(), plaintext, chunk_size)
        })
        .await
        .map_err(|e| Error::internal_from("encryption task failed", e))??;
        let len = sealed.len() as u64;
        self.store.put(object, Bytes::from(sealed)).await?;
        Ok(len)
    }

    /// Reads and decrypts an object a manifest names. Its absence is corrupted state (an
    /// `Internal` error), not a missing resource of the caller's.
    async fn get_decrypted(&self, key: &DataKey, object: &str) -> Result<Vec<u8>> {
        let sealed = self
            .store
            .get(object)
            .await
            .map_err(|e| snapshot::named_object_error(object, e))?;
        let (k, aad) = (key.clone(), object.to_string());
        tokio::task::spawn_blocking(move || envelope::decrypt(&k, aad.as_bytes(), &sealed))
            .await
            .map_err(|e| Error::internal_from("decryption task failed", e))?
    }

    fn note_write(&self, id: Uuid) {
        self.last_write
            .lock()
            .expect("write lock")
            .insert(id, Instant::now());
    }
}

fn context_of(collection: &Collection) -> EncryptionContext {
    EncryptionContext {
        tenant: collection.tenant.clone(),
        database: collection.database.clone(),
        collection: collection.id,
    }
}

/// Tunes glibc's allocator for a process that serves requests and builds indexes. Call
/// before the process starts its threads.
///
/// - Arenas are capped at two per core (glibc's own bound is eight per core). A server
///   runs its requests on many threads at once; each thread gets an arena of its own
///   while arenas may still be created, and memory freed in one arena is not reused by
///   another, so resident memory grows with concurrency rather than with data
///   (`scripts/bench-load.sh`, 64 connections on 2 cores, 20k vectors: 778–835 MiB with
///   glibc's bound, 459 MiB with this one, 264 MiB with two arenas in all at 18% less
///   throughput).
/// - Blocks of 256 KiB and more are always mapped on their own (glibc raises this
///   threshold up to 32 MiB as such blocks are freed, after which a build's large buffers
///   — vectors, codes, serialized objects — are carved from the heap among small live
///   blocks and stay resident). A 30k-vector load (`scripts/bench-scale.sh 30000`)
///   peaked at 14.4 KB per vector over the start and kept 4.0 KB per vector afterwards
///   with glibc's default; with this, 11.7–12.3 KB and 0.8–1.3 KB.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = i32::try_from(cores.saturating_mul(2)).unwrap_or(i32::MAX);
        #[allow(unsafe_code)]
        // SAFETY: mallopt only sets tuning parameters of the allocator; M_ARENA_MAX
        // bounds the arenas created from then on, M_MMAP_THRESHOLD applies to later
        // allocations.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        }
    }
}

/// Returns the allocator's free memory to the operating system (glibc keeps freed
/// pages of its main heap and arenas until told to trim them).
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only releases memory that is free in the allocator; it may be
    // called at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
