//! The DynamoDB catalog against moto: the catalog conformance suite (also with every
//! manifest in the overflow store), oversized manifests, read-after-commit consistency.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use chroma_core::aws::dynamodb::{table_names, DynamoCatalog};
use chroma_core::aws::{AwsClients, AwsConfig};
use chroma_core::catalog::conformance::new_collection as collection;
use chroma_core::catalog::{
    conformance, ApiKeyRecord, ApiKeys, LogBatchRef, Manifest, Manifests, Names, DEFAULT_DATABASE,
    DEFAULT_TENANT,
};
use chroma_core::error::{ErrorCode, Result};
use chroma_core::model::IfExists;
use chroma_core::storage::memory::MemoryStore;
use chroma_core::storage::{ObjectMeta, ObjectStore};
use futures::future::BoxFuture;
use uuid::Uuid;

use crate::common;

/// DynamoDB's item size limit.
const ITEM_LIMIT: usize = 400 * 1024;

struct Fixture {
    config: AwsConfig,
    clients: AwsClients,
    store: Arc<MemoryStore>,
}

impl Fixture {
    /// Fresh tables (created here) and an empty overflow store.
    async fn new() -> Self {
        let config = common::config();
        let clients = common::clients(&config).await;
        let fixture = Self {
            config,
            clients,
            store: Arc::new(MemoryStore::new()),
        };
        let created = fixture
            .catalog(None)
            .ensure_tables()
            .await
            .expect("ensure tables");
        assert_eq!(created, table_names(&fixture.config.table_prefix));
        fixture
    }

    /// A catalog on the fixture's tables and store, with this overflow threshold.
    fn catalog(&self, threshold: Option<usize>) -> DynamoCatalog {
        let catalog = DynamoCatalog::new(&self.clients, &self.config, self.store.clone());
        match threshold {
            Some(t) => catalog.with_overflow_threshold(t),
            None => catalog,
        }
    }

    /// The overflow objects of one collection.
    async fn objects(&self, id: Uuid) -> Vec<String> {
        self.store
            .list(&format!("manifests/{id}/"))
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    async fn all_objects(&self) -> usize {
        self.store.list("").await.unwrap().len()
    }
}

/// A manifest at `version` with `batches` log batches of about 170 bytes of JSON each.
fn manifest(version: u64, batches: u64, tag: &str) -> Manifest {
    let mut m = Manifest::new(vec![7; 60]);
    m.version = version;
    m.dimension = Some(8);
    for i in 0..batches {
        m.log.push(LogBatchRef {
            seq: i + 1,
            key: format!("c/{tag}/log/{i:08}-{}", "k".repeat(80)),
            ops: 10,
            bytes: 1000,
            first_offset: 10 * i,
        });
    }
    m.next_seq = batches + 1;
    m.next_offset = 10 * batches;
    m
}

fn json_len(m: &Manifest) -> usize {
    serde_json::to_string(m).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite() {
    let fixture = Fixture::new().await;
    conformance::suite(&fixture.catalog(None)).await;
    assert_eq!(
        fixture.all_objects().await,
        0,
        "small manifests stay inline"
    );
}

/// Two processes (two catalogs, each with its own client and record cache) on the same
/// tables: what one changes, the other reads, whatever it cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_across_two_processes() {
    let fixture = Fixture::new().await;
    let other = common::clients(&fixture.config).await;
    let reader = DynamoCatalog::new(&other, &fixture.config, fixture.store.clone());
    conformance::across_handles(&fixture.catalog(None), &reader).await;
}

/// Once a catalog has read a collection, reading it with its manifest again reads the
/// manifest item alone (one read unit): with the record item removed behind the catalogs'
/// backs, the catalog that knows the collection still answers, and one that does not
/// must read the record and finds none. A change of the record through a catalog names
/// a new revision, which every reader reads afresh.
#[tokio::test]
async fn a_known_collection_is_read_with_its_manifest_item_alone() {
    let fixture = Fixture::new().await;
    let catalog = fixture.catalog(None);
    let c = collection(DEFAULT_TENANT, DEFAULT_DATABASE, "known");
    catalog
        .create_collection(&c, &manifest(1, 0, "k"), IfExists::Fail)
        .await
        .unwrap();
    let (read, _) = catalog.get_collection_with_manifest(c.id).await.unwrap();
    assert_eq!((read.id, read.name.as_str()), (c.id, "known"));
    let renamed = catalog
        .update_collection(
            c.id,
            &chroma_core::catalog::CollectionUpdate {
                name: Some("known2".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        catalog.get_collection_with_manifest(c.id).await.unwrap().0,
        renamed
    );
    let record_table = &table_names(&fixture.config.table_prefix)[0];
    fixture
        .clients
        .dynamodb
        .delete_item()
        .table_name(record_table)
        .key("pk", AttributeValue::S(format!("COLLECTION#{}", c.id)))
        .key("sk", AttributeValue::S("COLLECTION".into()))
        .send()
        .await
        .unwrap();
    let (cached, m) = catalog.get_collection_with_manifest(c.id).await.unwrap();
    assert_eq!((cached, m.version), (renamed, 1));
    let stranger = fixture.catalog(None);
    assert_eq!(
        stranger
            .get_collection_with_manifest(c.id)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
}

/// The whole contract again with every manifest in the overflow store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_with_every_manifest_overflowed() {
    let fixture = Fixture::new().await;
    let catalog = fixture.catalog(Some(0));
    let c = collection(DEFAULT_TENANT, DEFAULT_DATABASE, "probe");
    catalog
        .create_collection(&c, &Manifest::new(vec![1]), IfExists::Fail)
        .await
        .unwrap();
    assert_eq!(
        fixture.objects(c.id).await.len(),
        1,
        "the manifest overflowed"
    );
    conformance::suite(&catalog).await;
    assert_eq!(
        fixture.all_objects().await,
        0,
        "reset removed every overflow object"
    );
}

#[tokio::test]
async fn ensure_tables_is_idempotent_and_creates_the_defaults() {
    let fixture = Fixture::new().await;
    let catalog = fixture.catalog(None);
    assert!(catalog.ensure_tables().await.unwrap().is_empty());
    assert_eq!(
        catalog
            .get_database(DEFAULT_TENANT, DEFAULT_DATABASE)
            .await
            .unwrap()
            .id,
        Uuid::nil()
    );
    assert_eq!(
        catalog
            .list_databases(DEFAULT_TENANT, None, 0)
            .await
            .unwrap()
            .len(),
        1
    );
    // Tables that exist are not reported; missing ones are created again.
    for name in &table_names(&fixture.config.table_prefix)[..2] {
        fixture
            .clients
            .dynamodb
            .delete_table()
            .table_name(name)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        catalog.ensure_tables().await.unwrap(),
        table_names(&fixture.config.table_prefix)[..2]
    );
    catalog
        .get_tenant(DEFAULT_TENANT)
        .await
        .expect("defaults recreated");
}

#[tokio::test]
async fn oversized_manifests_go_to_the_overflow_store() {
    let fixture = Fixture::new().await;
    let threshold = 4_000;
    let catalog = fixture.catalog(Some(threshold));
    let c = collection(DEFAULT_TENANT, DEFAULT_DATABASE, "big");
    catalog
        .create_collection(&c, &manifest(1, 0, "a"), IfExists::Fail)
        .await
        .unwrap();
    assert!(fixture.objects(c.id).await.is_empty(), "small stays inline");

    let m2 = manifest(2, 60, "a");
    assert!(json_len(&m2) > threshold);
    catalog.commit_manifest(c.id, &m2).await.unwrap();
    assert_eq!(catalog.get_manifest(c.id).await.unwrap(), m2);
    assert_eq!(
        catalog.get_collection_by_id(c.id).await.unwrap().dimension,
        Some(8)
    );
    let first = fixture.objects(c.id).await;
    assert_eq!(first.len(), 1);

    // A losing overflowed commit conflicts, changes nothing and leaves no object behind.
    let mut stale = manifest(2, 70, "b");
    stale.next_seq = 999;
    let err = catalog.commit_manifest(c.id, &stale).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err:?}");
    assert_eq!(catalog.get_manifest(c.id).await.unwrap(), m2);
    assert_eq!(fixture.objects(c.id).await, first);

    // A newer overflowed version replaces the previous object.
    let m3 = manifest(3, 80, "c");
    catalog.commit_manifest(c.id, &m3).await.unwrap();
    assert_eq!(catalog.get_manifest(c.id).await.unwrap(), m3);
    let second = fixture.objects(c.id).await;
    assert_eq!(second.len(), 1);
    assert_ne!(second, first, "the previous version's object is deleted");

    // Back below the threshold: inline again, the object gone.
    let mut m4 = manifest(4, 2, "d");
    m4.dimension = None;
    catalog.commit_manifest(c.id, &m4).await.unwrap();
    assert_eq!(catalog.get_manifest(c.id).await.unwrap(), m4);
    assert_eq!(
        catalog.get_collection_by_id(c.id).await.unwrap().dimension,
        None
    );
    assert!(fixture.objects(c.id).await.is_empty());

    // And above it again.
    let m5 = manifest(5, 90, "e");
    catalog.commit_manifest(c.id, &m5).await.unwrap();
    assert_eq!(catalog.get_manifest(c.id).await.unwrap(), m5);
    assert_eq!(fixture.objects(c.id).await.len(), 1);

    // A commit to a missing collection leaves no object behind.
    let before = fixture.all_objects().await;
    let err = catalog
        .commit_manifest(Uuid::new_v4(), &manifest(2, 90, "f"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err:?}");
    assert_eq!(fixture.all_objects().await, before);

    // Deleting the collection deletes its object.
    assert_eq!(catalog.delete_collection(c.id).await.unwrap(), m5);
    assert!(fixture.objects(c.id).await.is_empty());
    assert_eq!(
        catalog.get_manifest(c.id).await.unwrap_err().code(),
        ErrorCode::NotFound
    );

    // So does deleting a database, for each of its collections.
    catalog
        .create_database(DEFAULT_TENANT, "gone")
        .await
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..3 {
        let c = collection(DEFAULT_TENANT, "gone", &format!("c{i}"));
        let m = manifest(1, 50 + i, "g");
        catalog
            .create_collection(&c, &m, IfExists::Fail)
            .await
            .unwrap();
        expected.push((c.id, m));
    }
    assert_eq!(fixture.all_objects().await, 3, "first manifests overflowed");
    let mut removed = catalog
        .delete_database(DEFAULT_TENANT, "gone")
        .await
        .unwrap();
    removed.sort_by_key(|(id, _)| *id);
    expected.sort_by_key(|(id, _)| *id);
    assert_eq!(removed, expected);
    assert_eq!(fixture.all_objects().await, 0);
}

/// Forks with every manifest overflowed: a fork's manifest and the source's next one go
/// to the store, the source's replaced object is deleted, a failed fork leaves nothing
/// behind, forks racing the source's commits each hold one committed version, and
/// deleting every member leaves no object and no lineage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forks_keep_only_live_overflow_objects() {
    let fixture = Fixture::new().await;
    let catalog = fixture.catalog(Some(0));
    catalog
        .create_database(DEFAULT_TENANT, "forks")
        .await
        .unwrap();
    let source = collection(DEFAULT_TENANT, "forks", "source");
    let m1 = manifest(1, 3, "s");
    catalog
        .create_collection(&source, &m1, IfExists::Fail)
        .await
        .unwrap();
    let first = fixture.objects(source.id).await;
    assert_eq!(first.len(), 1);

    let fork = catalog
        .fork_collection(source.id, Uuid::new_v4(), "fork")
        .await
        .unwrap();
    let rooted = fixture.objects(source.id).await;
    assert_eq!(rooted.len(), 1);
    assert_ne!(rooted, first, "the source's previous object is deleted");
    assert_eq!(fixture.objects(fork.id).await.len(), 1);
    assert_eq!(
        catalog.get_manifest(fork.id).await.unwrap(),
        m1.forked(source.id)
    );
    assert_eq!(
        catalog.get_manifest(source.id).await.unwrap().lineage,
        Some(source.id)
    );

    // Failed forks change nothing and leave no object behind.
    let before = fixture.all_objects().await;
    for (id, name) in [
        (Uuid::new_v4(), "fork"),
        (Uuid::new_v4(), "source"),
        (fork.id, "other"),
        (source.id, "other"),
    ] {
        let err = catalog
            .fork_collection(source.id, id, name)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::AlreadyExists, "{err:?}");
    }
    assert_eq!(fixture.all_objects().await, before);

    // Forks racing the source's commits: each holds one committed version.
    let mut committed = vec![catalog.get_manifest(source.id).await.unwrap()];
    for v in 3..=10 {
        let mut m = manifest(v, v, "s");
        m.lineage = Some(source.id);
        committed.push(m);
    }
    let commits = async {
        for m in &committed[1..] {
            catalog.commit_manifest(source.id, m).await.unwrap();
        }
    };
    let forks = futures::future::join_all((0..4).map(|i| {
        let catalog = &catalog;
        async move {
            catalog
                .fork_collection(source.id, Uuid::new_v4(), &format!("race-{i}"))
                .await
                .unwrap()
        }
    }));
    let ((), forks) = futures::join!(commits, forks);
    for f in &forks {
        let forked = catalog.get_manifest(f.id).await.unwrap();
        assert!(
            committed.iter().any(|m| m.forked(source.id) == forked),
            "{forked:?}"
        );
        assert_eq!(fixture.objects(f.id).await.len(), 1);
    }
    assert_eq!(
        catalog.get_manifest(source.id).await.unwrap(),
        committed[committed.len() - 1],
        "forks never bump a manifest with a lineage"
    );
    let lineage = catalog.get_lineage(source.id).await.unwrap().unwrap();
    assert_eq!(lineage.forks, 5);
    let mut members: Vec<Uuid> = [source.id, fork.id]
        .into_iter()
        .chain(forks.iter().map(|f| f.id))
        .collect();
    members.sort();
    assert_eq!(lineage.members, members);
    // The lineage item is in no listing.
    let mut listed: Vec<Uuid> = catalog
        .list_all_collections()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.database == "forks")
        .map(|c| c.id)
        .collect();
    listed.sort();
    assert_eq!(listed, members);
    assert_eq!(
        catalog
            .list_collections(DEFAULT_TENANT, "forks", None, 0)
            .await
            .unwrap()
            .len(),
        6
    );

    catalog
        .delete_database(DEFAULT_TENANT, "forks")
        .await
        .unwrap();
    assert_eq!(catalog.get_lineage(source.id).await.unwrap(), None);
    assert_eq!(fixture.all_objects().await, 0);
}

#[tokio::test]
async fn manifests_above_the_item_limit_round_trip() {
    let fixture = Fixture::new().await;
    let catalog = fixture.catalog(None);
    let big = manifest(1, 2_600, "big");
    assert!(json_len(&big) > ITEM_LIMIT, "{} bytes", json_len(&big));

    // Inline, such a manifest does not fit in an item.
    let inline_only = fixture.catalog(Some(usize::MAX));
    let c = collection(DEFAULT_TENANT, DEFAULT_DATABASE, "inline");
    let err = inline_only
        .create_collection(&c, &big, IfExists::Fail)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal, "{err:?}");
    assert_eq!(
        catalog.get_collection_by_id(c.id).await.unwrap_err().code(),
        ErrorCode::NotFound
    );

    let c = collection(DEFAULT_TENANT, DEFAULT_DATABASE, "big");
    let (created, fresh) = catalog
        .create_collection(&c, &big, IfExists::Fail)
        .await
        .unwrap();
    assert!(fresh);
    assert_eq!(created.dimension, Some(8));
    assert_eq!(catalog.get_manifest(c.id).await.unwrap(), big);
    assert_eq!(fixture.objects(c.id).await.len(), 1);

    let bigger = manifest(2, 3_000, "bigger");
    catalog.commit_manifest(c.id, &bigger).await.unwrap();
    assert_eq!(catalog.get_manifest(c.id).await.unwrap(), bigger);
    let err = catalog.commit_manifest(c.id, &bigger).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err:?}");
    assert_eq!(fixture.objects(c.id).await.len(), 1);

    assert_eq!(catalog.delete_collection(c.id).await.unwrap(), bigger);
    assert_eq!(fixture.all_objects().await, 0);
}

type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A store that runs a hook before serving its next `get`.
#[derive(Default)]
struct HookedStore {
    inner: MemoryStore,
    before_get: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for HookedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookedStore")
    }
}

// The trait is declared with `async_trait`; this is what that macro expands to.
impl ObjectStore for HookedStore {
    fn get_version<'a, 'b, 'c, 't>(
        &'a self,
        key: &'b str,
        etag: &'c str,
    ) -> BoxFuture<'t, Result<Bytes>>
    where
        'a: 't,
        'b: 't,
        'c: 't,
        Self: 't,
    {
        self.inner.get_version(key, etag)
    }
    fn get<'a, 'b, 't>(&'a self, key: &'b str) -> BoxFuture<'t, Result<Bytes>>
    where
        'a: 't,
        'b: 't,
        Self: 't,
    {
        Box::pin(async move {
            let hook = self.before_get.lock().unwrap().take();
            if let Some(hook) = hook {
                hook().await;
            }
            self.inner.get(key).await
        })
    }
    fn get_range<'a, 'b, 't>(
        &'a self,
        key: &'b str,
        range: Range<u64>,
    ) -> BoxFuture<'t, Result<Bytes>>
    where
        'a: 't,
        'b: 't,
        Self: 't,
    {
        self.inner.get_range(key, range)
    }
    fn head<'a, 'b, 't>(&'a self, key: &'b str) -> BoxFuture<'t, Result<ObjectMeta>>
    where
        'a: 't,
        'b: 't,
        Self: 't,
    {
        self.inner.head(key)
    }
    fn put<'a, 'b, 't>(&'a self, key: &'b str, data: Bytes) -> BoxFuture<'t, Result<()>>
    where
        'a: 't,
        'b: 't,
        Self: 't,
    {
        self.inner.put(key, data)
    }
    fn put_if_absent<'a, 'b, 't>(&'a self, key: &'b str, data: Bytes) -> BoxFuture<'t, Result<()>>
    where
        'a: 't,
        'b: 't,
        Self: 't,
    {
        self.inner.put_if_absent(key, data)
    }
    fn delete<'a, 'b, 't>(&'a self, key: &'b str) -> BoxFuture<'t, Result<()>>
    where
        'a: 't,
        'b: 't,
        Self: 't,
    {
        self.inner.delete(key)
    }
    fn list<'a, 'b, 't>(&'a self, prefix: &'b str) -> BoxFuture<'t, Result<Vec<ObjectMeta>>>
    where
        'a: 't,
        'b: 't,
        Self: 't,
    {
        self.inner.list(prefix)
    }
}

/// A reader that read the old pointer and finds its object deleted by a newer commit
/// reads the item again; an object missing for good is an internal error.
#[tokio::test]
async fn readers_follow_a_replaced_overflow_object() {
    let fixture = Fixture::new().await;
    let store = Arc::new(HookedStore::default());
    let reader = DynamoCatalog::new(&fixture.clients, &fixture.config, store.clone())
        .with_overflow_threshold(0);
    let writer = Arc::new(
        DynamoCatalog::new(&fixture.clients, &fixture.config, store.clone())
            .with_overflow_threshold(0),
    );
    let c = collection(DEFAULT_TENANT, DEFAULT_DATABASE, "hooked");
    let m1 = manifest(1, 3, "one");
    writer
        .create_collection(&c, &m1, IfExists::Fail)
        .await
        .unwrap();
    assert_eq!(reader.get_manifest(c.id).await.unwrap(), m1);

    // Between the reader's item read and its object read, a commit replaces the object.
    let m2 = manifest(2, 5, "two");
    let (w, id, next) = (writer.clone(), c.id, m2.clone());
    *store.before_get.lock().unwrap() = Some(Box::new(move || {
        Box::pin(async move { w.commit_manifest(id, &next).await.unwrap() })
    }));
    assert_eq!(reader.get_manifest(c.id).await.unwrap(), m2);
    assert!(store.before_get.lock().unwrap().is_none(), "the hook ran");
    assert_eq!(store.inner.list("").await.unwrap().len(), 1);

    // An object deleted behind the catalog's back is corruption, not "not found".
    let key = store.inner.list("").await.unwrap().remove(0).key;
    store.inner.delete(&key).await.unwrap();
    let err = reader.get_manifest(c.id).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal, "{err:?}");
}

/// Every commit is visible to an immediate read from another instance (its own client).
#[tokio::test]
async fn reads_see_the_latest_commit() {
    let fixture = Fixture::new().await;
    let writer = fixture.catalog(Some(3_000));
    let other = common::clients(&fixture.config).await;
    let reader = DynamoCatalog::new(&other, &fixture.config, fixture.store.clone());
    let c = collection(DEFAULT_TENANT, DEFAULT_DATABASE, "fresh");
    writer
        .create_collection(&c, &manifest(1, 0, "x"), IfExists::Fail)
        .await
        .unwrap();
    for version in 2..=51u64 {
        // Odd versions overflow, even ones stay inline.
        let batches = if version % 2 == 1 { 40 } else { 1 };
        let mut m = manifest(version, batches, &format!("v{version}"));
        m.dimension = Some(version as u32);
        writer.commit_manifest(c.id, &m).await.unwrap();
        assert_eq!(
            reader.get_manifest(c.id).await.unwrap(),
            m,
            "version {version}"
        );
        assert_eq!(
            reader.get_collection_by_id(c.id).await.unwrap().dimension,
            Some(version as u32)
        );
    }
    assert_eq!(
        fixture.objects(c.id).await.len(),
        1,
        "only the latest object"
    );
}

#[tokio::test]
async fn api_keys_list_by_creation_time_then_insertion() {
    let fixture = Fixture::new().await;
    let catalog = fixture.catalog(None);
    let key = |id: &str, created_at_ms: u64| ApiKeyRecord {
        id: id.to_owned(),
        name: None,
        digest: vec![1; 32],
        grants: vec!["*/*/*:read".to_owned()],
        row_filter: None,
        created_at_ms,
        expires_at_ms: None,
        revoked_at_ms: None,
    };
    for (id, at) in [
        ("k-late", 3_000),
        ("k-early", 1_000),
        ("k-tie-1", 2_000),
        ("k-tie-2", 2_000),
    ] {
        catalog.create_api_key(&key(id, at)).await.unwrap();
    }
    let mut revoked = key("k-revoked", 4_000);
    revoked.revoked_at_ms = Some(4_500);
    catalog.create_api_key(&revoked).await.unwrap();
    assert_eq!(
        catalog.revoke_api_key("k-revoked", 9_000).await.unwrap(),
        revoked,
        "revoked at creation keeps that time"
    );
    let ids: Vec<String> = catalog
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(
        ids,
        ["k-early", "k-tie-1", "k-tie-2", "k-late", "k-revoked"]
    );
    catalog.reset().await.unwrap();
    assert_eq!(
        catalog.list_api_keys().await.unwrap().len(),
        5,
        "reset keeps keys"
    );
}
