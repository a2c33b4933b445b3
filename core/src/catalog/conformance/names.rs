//! The [`Names`](crate::catalog::Names) checks of the catalog conformance suite:
//! tenants, databases, collections, listings, updates, deletes, forks and `reset`.

use super::*;
use crate::model::IfExists;

pub(super) async fn defaults_exist(catalog: &dyn Catalog) {
    assert_eq!(
        catalog
            .get_tenant(DEFAULT_TENANT)
            .await
            .expect("default tenant")
            .name,
        DEFAULT_TENANT
    );
    let db = catalog
        .get_database(DEFAULT_TENANT, DEFAULT_DATABASE)
        .await
        .expect("default db");
    assert_eq!(
        (db.tenant.as_str(), db.name.as_str()),
        (DEFAULT_TENANT, DEFAULT_DATABASE)
    );
}

pub(super) async fn tenants(catalog: &dyn Catalog) {
    let name = unique("conformance");
    assert_code(
        catalog.get_tenant(&name).await,
        ErrorCode::NotFound,
        "missing tenant",
    );
    assert_eq!(
        catalog
            .create_tenant(&name)
            .await
            .expect("create tenant")
            .name,
        name
    );
    assert_eq!(
        catalog.get_tenant(&name).await.expect("get tenant").name,
        name
    );
    assert_code(
        catalog.create_tenant(&name).await,
        ErrorCode::AlreadyExists,
        "tenant twice",
    );
    assert_code(
        catalog.create_tenant(DEFAULT_TENANT).await,
        ErrorCode::AlreadyExists,
        "default tenant again",
    );

    // The resource name: set once, the same again is no change, another is refused.
    assert_eq!(catalog.get_tenant(&name).await.unwrap().resource_name, None);
    assert_code(
        catalog
            .set_tenant_resource_name(&unique("conformance-missing"), "r")
            .await,
        ErrorCode::NotFound,
        "resource name of a missing tenant",
    );
    let set = catalog
        .set_tenant_resource_name(&name, "org/project")
        .await
        .expect("set resource name");
    assert_eq!(set.resource_name.as_deref(), Some("org/project"));
    catalog
        .set_tenant_resource_name(&name, "org/project")
        .await
        .expect("the same resource name again");
    assert_code(
        catalog.set_tenant_resource_name(&name, "org/other").await,
        ErrorCode::AlreadyExists,
        "another resource name",
    );
    assert_eq!(
        catalog
            .get_tenant(&name)
            .await
            .unwrap()
            .resource_name
            .as_deref(),
        Some("org/project")
    );
}

pub(super) async fn databases(catalog: &dyn Catalog) {
    let missing = unique("conformance-missing");
    assert_code(
        catalog.create_database(&missing, "db").await,
        ErrorCode::NotFound,
        "database in a missing tenant",
    );
    assert_code(
        catalog.get_database(&missing, "db").await,
        ErrorCode::NotFound,
        "missing tenant",
    );
    assert_code(
        catalog.list_databases(&missing, None, 0).await,
        ErrorCode::NotFound,
        "list in a missing tenant",
    );

    let (t1, t2) = (unique("conformance"), unique("conformance"));
    catalog.create_tenant(&t1).await.expect("tenant 1");
    catalog.create_tenant(&t2).await.expect("tenant 2");
    let db = catalog
        .create_database(&t1, "shared-name")
        .await
        .expect("create database");
    assert_eq!(
        (db.tenant.as_str(), db.name.as_str()),
        (t1.as_str(), "shared-name")
    );
    assert_eq!(
        catalog
            .get_database(&t1, "shared-name")
            .await
            .expect("get database"),
        db
    );
    assert_code(
        catalog.create_database(&t1, "shared-name").await,
        ErrorCode::AlreadyExists,
        "database twice",
    );
    // Names are unique per tenant only.
    let other = catalog
        .create_database(&t2, "shared-name")
        .await
        .expect("same name elsewhere");
    assert_ne!(other.id, db.id);
    assert_code(
        catalog.get_database(&t1, "nope").await,
        ErrorCode::NotFound,
        "missing db",
    );
    assert_code(
        catalog.delete_database(&t1, "nope").await,
        ErrorCode::NotFound,
        "delete missing database",
    );
}

pub(super) async fn collections(catalog: &dyn Catalog) {
    let (tenant, db) = scope(catalog).await;
    assert_code(
        catalog
            .create_collection(
                &new_collection(&tenant, "nope", "c"),
                &manifest(),
                IfExists::Fail,
            )
            .await,
        ErrorCode::NotFound,
        "collection in a missing database",
    );
    assert_code(
        catalog
            .create_collection(
                &new_collection(&tenant, "nope", "c"),
                &manifest(),
                IfExists::Get,
            )
            .await,
        ErrorCode::NotFound,
        "get_or_create in a missing database",
    );

    let mut c = new_collection(&tenant, &db, "first");
    c.metadata = Some(BTreeMap::from([
        ("s".to_owned(), MetadataValue::Str("x".into())),
        ("i".to_owned(), MetadataValue::Int(-3)),
        ("f".to_owned(), MetadataValue::Float(2.5)),
        ("b".to_owned(), MetadataValue::Bool(true)),
        (
            "a".to_owned(),
            MetadataValue::StrArray(vec!["p".into(), "q".into()]),
        ),
    ]));
    c.configuration.hnsw.space = Space::Cosine;
    c.configuration.hnsw.ef_search = 77;
    c.configuration.embedding_function = Some(serde_json::json!({"name": "default"}));
    let (created, fresh) = catalog
        .create_collection(&c, &manifest(), IfExists::Fail)
        .await
        .expect("create collection");
    assert!(fresh);
    assert_eq!(created, c);
    assert_eq!(
        catalog
            .get_collection(&tenant, &db, "first")
            .await
            .expect("get"),
        c
    );
    assert_eq!(
        catalog.get_collection_by_id(c.id).await.expect("get by id"),
        c
    );
    assert_eq!(
        catalog.get_manifest(c.id).await.expect("first manifest"),
        manifest()
    );

    let mut dup = new_collection(&tenant, &db, "first");
    assert_code(
        catalog
            .create_collection(&dup, &manifest(), IfExists::Fail)
            .await,
        ErrorCode::AlreadyExists,
        "collection name twice",
    );
    assert_code(
        catalog.get_collection_by_id(dup.id).await,
        ErrorCode::NotFound,
        "nothing stored",
    );
    // The same id under another name is taken too.
    dup.id = c.id;
    dup.name = "other".into();
    assert_code(
        catalog
            .create_collection(&dup, &manifest(), IfExists::Fail)
            .await,
        ErrorCode::AlreadyExists,
        "collection id twice",
    );

    // Names are unique per database only.
    catalog
        .create_database(&tenant, "db2")
        .await
        .expect("second database");
    create(catalog, &tenant, "db2", "first").await;

    // The manifest's dimension shows on the collection.
    let mut m = manifest();
    m.dimension = Some(3);
    let c2 = new_collection(&tenant, &db, "with-dimension");
    let (created, _) = catalog
        .create_collection(&c2, &m, IfExists::Fail)
        .await
        .expect("create");
    assert_eq!(created.dimension, Some(3));
    assert_eq!(
        catalog
            .get_collection_by_id(c2.id)
            .await
            .expect("get")
            .dimension,
        Some(3)
    );

    assert_code(
        catalog.get_collection(&tenant, &db, "nope").await,
        ErrorCode::NotFound,
        "name",
    );
    assert_code(
        catalog.get_collection("nope", &db, "first").await,
        ErrorCode::NotFound,
        "tenant",
    );
    assert_code(
        catalog.get_collection(&tenant, "nope", "first").await,
        ErrorCode::NotFound,
        "db",
    );
    assert_code(
        catalog.get_collection_by_id(Uuid::new_v4()).await,
        ErrorCode::NotFound,
        "id",
    );
    assert_code(
        catalog.get_manifest(Uuid::new_v4()).await,
        ErrorCode::NotFound,
        "manifest",
    );
}

pub(super) async fn get_or_create(catalog: &dyn Catalog) {
    let (tenant, db) = scope(catalog).await;
    let c = new_collection(&tenant, &db, "goc");
    let (created, fresh) = catalog
        .create_collection(&c, &manifest(), IfExists::Get)
        .await
        .expect("create");
    assert!(fresh);
    assert_eq!(created, c);

    // The existing collection is returned unchanged, its manifest untouched.
    let mut again = new_collection(&tenant, &db, "goc");
    again.metadata = Some(BTreeMap::from([("new".to_owned(), MetadataValue::Int(1))]));
    let mut other_manifest = manifest();
    other_manifest.wrapped_key = vec![9; 60];
    let (existing, fresh) = catalog
        .create_collection(&again, &other_manifest, IfExists::Get)
        .await
        .expect("get_or_create");
    assert!(!fresh);
    assert_eq!(existing, c);
    assert_eq!(
        catalog.get_manifest(c.id).await.expect("manifest"),
        manifest()
    );
    assert_code(
        catalog.get_collection_by_id(again.id).await,
        ErrorCode::NotFound,
        "not stored",
    );

    // Racing get_or_create calls: exactly one creates, all see the same collection.
    let racers: Vec<Collection> = (0..6)
        .map(|_| new_collection(&tenant, &db, "raced"))
        .collect();
    let m = manifest();
    let results = join_all(
        racers
            .iter()
            .map(|c| catalog.create_collection(c, &m, IfExists::Get)),
    )
    .await;
    let results: Vec<(Collection, bool)> = results
        .into_iter()
        .map(|r| r.expect("racing get_or_create"))
        .collect();
    assert_eq!(
        results.iter().filter(|(_, fresh)| *fresh).count(),
        1,
        "one creator"
    );
    let winner = results[0].0.id;
    assert!(
        results.iter().all(|(c, _)| c.id == winner),
        "all see the winner"
    );
    assert_eq!(
        catalog
            .count_collections(&tenant, &db)
            .await
            .expect("count"),
        2
    );

    // Racing plain creates: exactly one succeeds.
    let racers: Vec<Collection> = (0..6)
        .map(|_| new_collection(&tenant, &db, "raced-2"))
        .collect();
    let results = join_all(
        racers
            .iter()
            .map(|c| catalog.create_collection(c, &m, IfExists::Fail)),
    )
    .await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "one creator"
    );
    for r in results.into_iter().filter(|r| r.is_err()) {
        assert_code(r, ErrorCode::AlreadyExists, "losing create");
    }
}

pub(super) async fn listing(catalog: &dyn Catalog) {
    let tenant = unique("conformance");
    catalog.create_tenant(&tenant).await.expect("tenant");
    // Names deliberately not in alphabetical order: listings follow creation.
    let names = ["zeta", "alpha", "mid", "beta"];
    for name in names {
        catalog
            .create_database(&tenant, name)
            .await
            .expect("database");
    }
    let db_names = |dbs: Vec<crate::model::Database>| -> Vec<String> {
        dbs.into_iter().map(|d| d.name).collect()
    };
    assert_eq!(
        db_names(catalog.list_databases(&tenant, None, 0).await.unwrap()),
        names
    );
    assert_eq!(
        db_names(catalog.list_databases(&tenant, Some(2), 1).await.unwrap()),
        ["alpha", "mid"]
    );
    assert_eq!(
        db_names(catalog.list_databases(&tenant, None, 3).await.unwrap()),
        ["beta"]
    );
    assert_eq!(
        db_names(catalog.list_databases(&tenant, Some(0), 0).await.unwrap()),
        [""; 0]
    );
    assert!(catalog
        .list_databases(&tenant, Some(10), 4)
        .await
        .unwrap()
        .is_empty());
    assert!(catalog
        .list_databases(&tenant, None, 100)
        .await
        .unwrap()
        .is_empty());

    let db = "zeta";
    assert!(catalog
        .list_collections(&tenant, db, None, 0)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(catalog.count_collections(&tenant, db).await.unwrap(), 0);
    let mut ids = Vec::new();
    for name in ["c3", "c1", "c4", "c2", "c0"] {
        ids.push(create(catalog, &tenant, db, name).await.id);
    }
    let list_ids = |cs: Vec<Collection>| -> Vec<Uuid> { cs.into_iter().map(|c| c.id).collect() };
    assert_eq!(
        list_ids(
            catalog
                .list_collections(&tenant, db, None, 0)
                .await
                .unwrap()
        ),
        ids
    );
    assert_eq!(
        list_ids(
            catalog
                .list_collections(&tenant, db, Some(2), 0)
                .await
                .unwrap()
        ),
        ids[..2]
    );
    assert_eq!(
        list_ids(
            catalog
                .list_collections(&tenant, db, Some(2), 2)
                .await
                .unwrap()
        ),
        ids[2..4]
    );
    assert_eq!(
        list_ids(
            catalog
                .list_collections(&tenant, db, None, 4)
                .await
                .unwrap()
        ),
        ids[4..]
    );
    assert!(catalog
        .list_collections(&tenant, db, Some(3), 5)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(catalog.count_collections(&tenant, db).await.unwrap(), 5);
    // Other databases' collections are not listed.
    create(catalog, &tenant, "alpha", "c9").await;
    assert_eq!(catalog.count_collections(&tenant, db).await.unwrap(), 5);
    assert_eq!(
        catalog.count_collections(&tenant, "alpha").await.unwrap(),
        1
    );

    assert_code(
        catalog.list_collections(&tenant, "nope", None, 0).await,
        ErrorCode::NotFound,
        "list in a missing database",
    );
    assert_code(
        catalog.count_collections(&tenant, "nope").await,
        ErrorCode::NotFound,
        "count in a missing database",
    );

    let all = catalog.list_all_collections().await.expect("list all");
    for id in &ids {
        assert!(
            all.iter().any(|c| c.id == *id),
            "list_all_collections has {id}"
        );
    }
}

pub(super) async fn updates(catalog: &dyn Catalog) {
    let (tenant, db) = scope(catalog).await;
    let a = create(catalog, &tenant, &db, "a").await;
    let b = create(catalog, &tenant, &db, "b").await;

    let renamed = catalog
        .update_collection(
            a.id,
            &CollectionUpdate {
                name: Some("a2".into()),
                ..Default::default()
            },
        )
        .await
        .expect("rename");
    assert_eq!(
        renamed,
        Collection {
            name: "a2".into(),
            ..a.clone()
        }
    );
    assert_eq!(
        catalog
            .get_collection(&tenant, &db, "a2")
            .await
            .expect("new name")
            .id,
        a.id
    );
    assert_code(
        catalog.get_collection(&tenant, &db, "a").await,
        ErrorCode::NotFound,
        "old name",
    );
    // The old name is free again.
    create(catalog, &tenant, &db, "a").await;

    assert_code(
        catalog
            .update_collection(
                a.id,
                &CollectionUpdate {
                    name: Some("b".into()),
                    ..Default::default()
                },
            )
            .await,
        ErrorCode::AlreadyExists,
        "rename onto a taken name",
    );
    assert_eq!(
        catalog
            .get_collection_by_id(b.id)
            .await
            .expect("b untouched"),
        b
    );
    assert_eq!(
        catalog
            .get_collection_by_id(a.id)
            .await
            .expect("a untouched")
            .name,
        "a2"
    );
    // Renaming to its own name is fine.
    catalog
        .update_collection(
            a.id,
            &CollectionUpdate {
                name: Some("a2".into()),
                ..Default::default()
            },
        )
        .await
        .expect("rename to itself");

    let metadata = BTreeMap::from([("k".to_owned(), MetadataValue::IntArray(vec![1, 2]))]);
    let mut configuration = CollectionConfiguration::default();
    configuration.hnsw.ef_search = 200;
    let updated = catalog
        .update_collection(
            a.id,
            &CollectionUpdate {
                name: None,
                metadata: Some(metadata.clone()),
                configuration: Some(configuration.clone()),
                expected_configuration: None,
            },
        )
        .await
        .expect("update metadata and configuration");
    assert_eq!(updated.name, "a2");
    assert_eq!(updated.metadata, Some(metadata.clone()));
    assert_eq!(updated.configuration, configuration);
    assert_eq!(
        catalog.get_collection_by_id(a.id).await.expect("get"),
        updated
    );

    // Compare-and-set: against a stale configuration it conflicts and changes nothing
    // (a rename included); against the stored one it applies.
    let mut next = configuration.clone();
    next.hnsw.ef_search = 300;
    for name in [None, Some("a3".to_owned())] {
        assert_code(
            catalog
                .update_collection(
                    a.id,
                    &CollectionUpdate {
                        name,
                        configuration: Some(next.clone()),
                        expected_configuration: Some(CollectionConfiguration::default()),
                        ..Default::default()
                    },
                )
                .await,
            ErrorCode::Conflict,
            "compare-and-set against a stale configuration",
        );
    }
    assert_eq!(
        catalog.get_collection_by_id(a.id).await.expect("get"),
        updated
    );
    let swapped = catalog
        .update_collection(
            a.id,
            &CollectionUpdate {
                configuration: Some(next.clone()),
                expected_configuration: Some(configuration.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("compare-and-set against the stored configuration");
    assert_eq!(swapped.configuration, next);
    let updated = catalog
        .update_collection(
            a.id,
            &CollectionUpdate {
                configuration: Some(configuration.clone()),
                expected_configuration: Some(next),
                ..Default::default()
            },
        )
        .await
        .expect("and back");

    // An empty update changes nothing.
    let same = catalog
        .update_collection(a.id, &CollectionUpdate::default())
        .await
        .expect("noop");
    assert_eq!(same, updated);

    assert_code(
        catalog
            .update_collection(Uuid::new_v4(), &CollectionUpdate::default())
            .await,
        ErrorCode::NotFound,
        "update a missing collection",
    );
}

pub(super) async fn deletes(catalog: &dyn Catalog) {
    let (tenant, db) = scope(catalog).await;
    let c = create(catalog, &tenant, &db, "doomed").await;
    let mut m = manifest();
    m.version = 2;
    m.next_seq = 5;
    catalog.commit_manifest(c.id, &m).await.expect("commit");

    assert_eq!(
        catalog.delete_collection(c.id).await.expect("delete"),
        m,
        "last manifest"
    );
    assert_code(
        catalog.get_collection_by_id(c.id).await,
        ErrorCode::NotFound,
        "by id",
    );
    assert_code(
        catalog.get_collection(&tenant, &db, "doomed").await,
        ErrorCode::NotFound,
        "name",
    );
    assert_code(
        catalog.get_manifest(c.id).await,
        ErrorCode::NotFound,
        "manifest",
    );
    let mut next = m.clone();
    next.version = 3;
    assert_code(
        catalog.commit_manifest(c.id, &next).await,
        ErrorCode::NotFound,
        "commit",
    );
    assert_code(
        catalog.delete_collection(c.id).await,
        ErrorCode::NotFound,
        "delete twice",
    );
    assert_eq!(
        catalog
            .count_collections(&tenant, &db)
            .await
            .expect("count"),
        0
    );
    // The name can be used again.
    create(catalog, &tenant, &db, "doomed").await;

    // Deleting a database deletes its collections and returns their manifests.
    catalog
        .create_database(&tenant, "gone")
        .await
        .expect("database");
    let x = create(catalog, &tenant, "gone", "x").await;
    let y = create(catalog, &tenant, "gone", "y").await;
    let mut my = manifest();
    my.version = 2;
    my.dimension = Some(8);
    catalog.commit_manifest(y.id, &my).await.expect("commit");
    let mut removed = catalog
        .delete_database(&tenant, "gone")
        .await
        .expect("delete database");
    removed.sort_by_key(|(id, _)| (*id != x.id, *id));
    assert_eq!(removed, vec![(x.id, manifest()), (y.id, my)]);
    assert_code(
        catalog.get_database(&tenant, "gone").await,
        ErrorCode::NotFound,
        "database",
    );
    assert_code(
        catalog.get_collection_by_id(x.id).await,
        ErrorCode::NotFound,
        "its collection",
    );
    assert_code(
        catalog.get_manifest(y.id).await,
        ErrorCode::NotFound,
        "its manifest",
    );
    assert_code(
        catalog.list_collections(&tenant, "gone", None, 0).await,
        ErrorCode::NotFound,
        "list in a deleted database",
    );
    assert_code(
        catalog.delete_database(&tenant, "gone").await,
        ErrorCode::NotFound,
        "twice",
    );
    // Other databases are untouched; the name can be used again, empty.
    assert_eq!(
        catalog
            .count_collections(&tenant, &db)
            .await
            .expect("count"),
        1
    );
    catalog
        .create_database(&tenant, "gone")
        .await
        .expect("recreate");
    assert_eq!(
        catalog
            .count_collections(&tenant, "gone")
            .await
            .expect("count"),
        0
    );
    assert!(catalog
        .delete_database(&tenant, "gone")
        .await
        .expect("delete empty")
        .is_empty());
}

pub(super) async fn forks(catalog: &dyn Catalog) {
    let (tenant, db) = scope(catalog).await;
    let mut source = new_collection(&tenant, &db, "source");
    source.metadata = Some(BTreeMap::from([(
        "topic".to_owned(),
        MetadataValue::Str("forks".to_owned()),
    )]));
    source.configuration.hnsw.space = Space::Ip;
    catalog
        .create_collection(&source, &manifest(), IfExists::Fail)
        .await
        .expect("create");
    let mut m = manifest();
    m.version = 2;
    m.dimension = Some(3);
    m.next_seq = 2;
    m.total_ops = 10;
    m.log.push(crate::catalog::LogBatchRef {
        seq: 1,
        key: format!("c/{}/log/1", source.id),
        ops: 10,
        bytes: 100,
        first_offset: 0,
    });
    m.retired.push(crate::catalog::RetiredObject {
        key: format!("c/{}/log/0", source.id),
        retired_at_ms: 1,
    });
    catalog
        .commit_manifest(source.id, &m)
        .await
        .expect("commit");
    assert_eq!(
        catalog.get_lineage(source.id).await.expect("lineage"),
        None,
        "never forked"
    );

    let fork_id = Uuid::new_v4();
    let fork = catalog
        .fork_collection(source.id, fork_id, "fork")
        .await
        .expect("fork");
    assert_eq!(
        fork,
        Collection {
            id: fork_id,
            name: "fork".to_owned(),
            dimension: Some(3),
            ..source.clone()
        },
        "the source's database, metadata, configuration and dimension"
    );
    assert_eq!(
        catalog.get_collection_by_id(fork_id).await.expect("get"),
        fork
    );
    assert_eq!(
        catalog
            .get_collection(&tenant, &db, "fork")
            .await
            .expect("by name"),
        fork
    );
    // The source's manifest now names its lineage, at the next version.
    let mut rooted = m.clone();
    rooted.version = 3;
    rooted.lineage = Some(source.id);
    assert_eq!(
        catalog.get_manifest(source.id).await.expect("source"),
        rooted
    );
    let forked = catalog.get_manifest(fork_id).await.expect("fork manifest");
    assert_eq!(forked, m.forked(source.id));
    assert_eq!(forked.version, 1);
    assert_eq!(forked.log, m.log, "the same objects");
    assert!(forked.retired.is_empty(), "the source collects its retired");
    assert_eq!(forked.lineage, Some(source.id));
    assert_eq!(
        catalog
            .count_collections(&tenant, &db)
            .await
            .expect("count"),
        2
    );
    let lineage = |forks, mut members: Vec<Uuid>| {
        members.sort();
        Some(Lineage {
            root: source.id,
            forks,
            members,
        })
    };
    assert_eq!(
        catalog.get_lineage(source.id).await.expect("lineage"),
        lineage(1, vec![source.id, fork_id])
    );
    assert_eq!(
        catalog.get_lineage(fork_id).await.expect("not a root"),
        None
    );

    // Taken names and missing sources fail and change nothing.
    assert_code(
        catalog
            .fork_collection(source.id, Uuid::new_v4(), "fork")
            .await,
        ErrorCode::AlreadyExists,
        "fork onto a taken name",
    );
    assert_code(
        catalog
            .fork_collection(source.id, Uuid::new_v4(), "source")
            .await,
        ErrorCode::AlreadyExists,
        "fork onto the source's name",
    );
    assert_code(
        catalog
            .fork_collection(Uuid::new_v4(), Uuid::new_v4(), "x")
            .await,
        ErrorCode::NotFound,
        "fork of a missing collection",
    );
    assert_eq!(
        catalog.get_lineage(source.id).await.expect("lineage"),
        lineage(1, vec![source.id, fork_id])
    );
    assert_eq!(
        catalog
            .count_collections(&tenant, &db)
            .await
            .expect("count"),
        2
    );

    // A fork of a fork joins the root's lineage; a second fork of the source does not
    // bump the source's manifest again.
    let grandchild = Uuid::new_v4();
    catalog
        .fork_collection(fork_id, grandchild, "grandchild")
        .await
        .expect("fork of a fork");
    assert_eq!(
        catalog
            .get_manifest(grandchild)
            .await
            .expect("manifest")
            .lineage,
        Some(source.id)
    );
    assert_eq!(
        catalog
            .get_manifest(fork_id)
            .await
            .expect("unchanged")
            .version,
        1
    );
    let sibling = Uuid::new_v4();
    catalog
        .fork_collection(source.id, sibling, "sibling")
        .await
        .expect("second fork");
    assert_eq!(
        catalog.get_manifest(source.id).await.expect("unchanged"),
        rooted
    );
    assert_eq!(
        catalog.get_lineage(source.id).await.expect("lineage"),
        lineage(3, vec![source.id, fork_id, grandchild, sibling])
    );

    // Deleting members leaves the count; the lineage goes with its last member.
    catalog
        .delete_collection(source.id)
        .await
        .expect("delete root");
    assert_eq!(
        catalog.get_lineage(source.id).await.expect("lineage"),
        lineage(3, vec![fork_id, grandchild, sibling])
    );
    catalog
        .delete_collection(fork_id)
        .await
        .expect("delete fork");
    catalog
        .delete_collection(grandchild)
        .await
        .expect("delete grandchild");
    assert_eq!(
        catalog.get_lineage(source.id).await.expect("lineage"),
        lineage(3, vec![sibling])
    );
    catalog
        .delete_collection(sibling)
        .await
        .expect("delete last");
    assert_eq!(
        catalog.get_lineage(source.id).await.expect("lineage"),
        None,
        "gone with its last member"
    );

    // Deleting a database removes its lineages.
    catalog
        .create_database(&tenant, "forked")
        .await
        .expect("database");
    let a = create(catalog, &tenant, "forked", "a").await;
    catalog
        .fork_collection(a.id, Uuid::new_v4(), "b")
        .await
        .expect("fork");
    catalog
        .delete_database(&tenant, "forked")
        .await
        .expect("delete database");
    assert_eq!(catalog.get_lineage(a.id).await.expect("lineage"), None);
}

/// Forks racing one another onto three names: one per name wins, the others fail with
/// `AlreadyExists`, and the lineage's count and members are exact.
pub(super) async fn concurrent_forks(catalog: &dyn Catalog) {
    let (tenant, db) = scope(catalog).await;
    let source = create(catalog, &tenant, &db, "busy").await;
    let forks = join_all((0..6).map(|i| {
        let name = format!("fork-{}", i % 3);
        async move {
            catalog
                .fork_collection(source.id, Uuid::new_v4(), &name)
                .await
        }
    }))
    .await;
    let made = forks.iter().filter(|f| f.is_ok()).count();
    for f in &forks {
        if let Err(e) = f {
            assert_eq!(e.code(), ErrorCode::AlreadyExists, "{e:?}");
        }
    }
    assert_eq!(made, 3, "one per name");
    let lineage = catalog
        .get_lineage(source.id)
        .await
        .expect("lineage")
        .expect("made");
    assert_eq!(lineage.forks, 3);
    assert_eq!(lineage.members.len(), 4);
    assert_eq!(
        catalog
            .get_manifest(source.id)
            .await
            .expect("source")
            .version,
        2,
        "the lineage is recorded once"
    );
}

pub(super) async fn reset(catalog: &dyn Catalog) {
    let (tenant, db) = scope(catalog).await;
    let c = create(catalog, &tenant, &db, "c").await;
    let d = create(catalog, DEFAULT_TENANT, DEFAULT_DATABASE, &unique("c")).await;
    let key = api_key(&unique("ck"), 7);
    catalog.create_api_key(&key).await.expect("create key");
    catalog.reset().await.expect("reset");
    assert_eq!(
        catalog
            .get_api_key(&key.id)
            .await
            .expect("key kept by reset"),
        key
    );

    assert_code(
        catalog.get_tenant(&tenant).await,
        ErrorCode::NotFound,
        "tenant after reset",
    );
    assert_code(
        catalog.get_collection_by_id(c.id).await,
        ErrorCode::NotFound,
        "collection",
    );
    assert_code(
        catalog.get_collection_by_id(d.id).await,
        ErrorCode::NotFound,
        "default's",
    );
    assert_code(
        catalog.get_manifest(d.id).await,
        ErrorCode::NotFound,
        "manifest",
    );
    assert!(catalog
        .list_all_collections()
        .await
        .expect("list all")
        .is_empty());
    defaults_exist(catalog).await;
    assert!(catalog
        .list_collections(DEFAULT_TENANT, DEFAULT_DATABASE, None, 0)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        catalog
            .list_databases(DEFAULT_TENANT, None, 0)
            .await
            .expect("dbs")
            .len(),
        1
    );
    // Everything works as before.
    catalog.create_tenant(&tenant).await.expect("tenant again");
    create(catalog, DEFAULT_TENANT, DEFAULT_DATABASE, "after-reset").await;
    catalog.reset().await.expect("second reset");
    defaults_exist(catalog).await;
}

/// `get_collection_with_manifest` through `reader` answers what `writer` last stored —
/// the collection and its manifest — after every kind of change: a commit, a rename,
/// new metadata, a new configuration, a fork, a deletion. (`writer` and `reader` may be
/// one catalog, or two on the same backend: what one caches must never hide what the
/// other wrote.)
pub(super) async fn collection_with_manifest(writer: &dyn Catalog, reader: &dyn Catalog) {
    let (tenant, db) = scope(writer).await;
    let c = create(writer, &tenant, &db, "read").await;
    let both = |id| async move {
        let (collection, manifest) = reader
            .get_collection_with_manifest(id)
            .await
            .expect("collection with manifest");
        assert_eq!(
            collection,
            writer.get_collection_by_id(id).await.expect("collection"),
            "the reader's collection"
        );
        assert_eq!(
            manifest,
            writer.get_manifest(id).await.expect("manifest"),
            "the reader's manifest"
        );
        (collection, manifest)
    };
    let (read, m) = both(c.id).await;
    assert_eq!(read, c);
    let mut next = m.clone();
    next.version += 1;
    next.dimension = Some(3);
    writer.commit_manifest(c.id, &next).await.expect("commit");
    let (read, m) = both(c.id).await;
    assert_eq!((read.dimension, m.version), (Some(3), next.version));
    for update in [
        CollectionUpdate {
            name: Some("renamed".into()),
            ..Default::default()
        },
        CollectionUpdate {
            metadata: Some(BTreeMap::from([("k".to_owned(), MetadataValue::Int(1))])),
            ..Default::default()
        },
        CollectionUpdate {
            configuration: Some(CollectionConfiguration {
                hnsw: crate::model::HnswConfiguration {
                    ef_search: 77,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        },
    ] {
        let updated = writer
            .update_collection(c.id, &update)
            .await
            .expect("update");
        let (read, _) = both(c.id).await;
        assert_eq!(read, updated);
        // The reader's other reads agree.
        assert_eq!(reader.get_collection_by_id(c.id).await.unwrap(), updated);
    }
    let (read, _) = both(c.id).await;
    assert_eq!(
        (read.name.as_str(), read.configuration.hnsw.ef_search),
        ("renamed", 77)
    );
    let fork = Uuid::new_v4();
    writer
        .fork_collection(c.id, fork, "fork")
        .await
        .expect("fork");
    let (forked, _) = both(fork).await;
    assert_eq!(
        (forked.name.as_str(), &forked.metadata),
        ("fork", &read.metadata)
    );
    // The source's record is unchanged by the fork's commit of its manifest.
    assert_eq!(both(c.id).await.0, read);
    writer.delete_collection(c.id).await.expect("delete");
    assert_code(
        reader.get_collection_with_manifest(c.id).await,
        ErrorCode::NotFound,
        "a deleted collection",
    );
    assert_code(
        reader.get_collection_with_manifest(Uuid::new_v4()).await,
        ErrorCode::NotFound,
        "an unknown id",
    );
}
