//! Forks: a fork holds the source's records without copying an object, both sides
//! diverge, compaction and garbage collection on either side never take an object the
//! other still needs, deleting the root leaves its forks readable (its data key
//! included), and deleting the last member leaves nothing behind.

use std::collections::BTreeMap;

use chroma_core::engine::{DeleteRequest, Engine, GetRequest, Include, Merge, QueryRequest};
use chroma_core::error::ErrorCode;
use chroma_core::model::validate::WriteBatch;
use chroma_core::model::Collection;

use crate::common;

const DIM: usize = 8;

fn embedding(n: u64) -> Vec<f32> {
    (0..DIM)
        .map(|i| ((n * 37 + i as u64 * 11) % 101) as f32 / 101.0 + 0.01)
        .collect()
}

fn batch(range: std::ops::Range<u64>, tag: &str) -> WriteBatch {
    WriteBatch {
        ids: range.clone().map(|i| format!("r{i}")).collect(),
        embeddings: Some(range.clone().map(|i| Some(embedding(i))).collect()),
        documents: Some(range.map(|i| Some(format!("{tag} {i}"))).collect()),
        uris: None,
        metadatas: None,
    }
}

/// Every record of the collection: id → (embedding, document).
async fn records(engine: &Engine, c: &Collection) -> BTreeMap<String, (Vec<f32>, String)> {
    let got = engine
        .get(
            c,
            GetRequest {
                include: Include::records(),
                ..Default::default()
            },
        )
        .await
        .expect("get");
    let embeddings = got.embeddings.expect("embeddings");
    let documents = got.documents.expect("documents");
    got.ids
        .into_iter()
        .zip(embeddings.into_iter().zip(documents))
        .map(|(id, (e, d))| (id, (e, d.unwrap_or_default())))
        .collect()
}

async fn nearest(engine: &Engine, c: &Collection, n: u64) -> Vec<String> {
    engine
        .query(
            c,
            QueryRequest {
                embeddings: vec![embedding(n)],
                n_results: 5,
                include: Include::none(),
                ..Default::default()
            },
        )
        .await
        .expect("query")
        .ids
        .remove(0)
}

async fn object_keys(engine: &Engine) -> Vec<String> {
    let mut keys: Vec<String> = engine
        .store()
        .list("c/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_fork_shares_objects_diverges_and_outlives_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let opened = common::open(dir.path(), common::manual_config());
    let engine = opened.engine;
    let src = common::cosine_collection(&engine, "source").await;
    engine.add(&src, batch(0..30, "first")).await.unwrap();
    engine.compact(src.id, Merge::All).await.unwrap();
    engine.add(&src, batch(30..40, "log")).await.unwrap();
    let before = object_keys(&engine).await;
    let expected = records(&engine, &src).await;
    assert_eq!(expected.len(), 40);

    let fork = engine.fork_collection(src.id, "fork").await.unwrap();
    assert_eq!(fork.name, "fork");
    assert_eq!(fork.dimension, Some(DIM as u32));
    assert_eq!(fork.configuration, src.configuration);
    assert_eq!(object_keys(&engine).await, before, "no object written");
    assert_eq!(records(&engine, &fork).await, expected);
    assert_eq!(
        nearest(&engine, &fork, 3).await,
        nearest(&engine, &src, 3).await
    );
    assert_eq!(engine.fork_count(src.id).await.unwrap(), 1);
    assert_eq!(engine.fork_count(fork.id).await.unwrap(), 1);

    // Each side's writes are its own.
    engine.add(&fork, batch(100..105, "fork")).await.unwrap();
    engine.upsert(&fork, batch(1..2, "changed")).await.unwrap();
    engine
        .delete(
            &src,
            DeleteRequest {
                ids: Some(vec!["r0".into(), "r35".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut src_expected = expected.clone();
    src_expected.remove("r0");
    src_expected.remove("r35");
    let mut fork_expected = expected.clone();
    for i in 100..105 {
        fork_expected.insert(format!("r{i}"), (embedding(i), format!("fork {i}")));
    }
    fork_expected.insert("r1".into(), (embedding(1), "changed 1".into()));
    assert_eq!(records(&engine, &src).await, src_expected);
    assert_eq!(records(&engine, &fork).await, fork_expected);

    // Compaction retires shared objects on one side; garbage collection (no grace
    // period here) must leave what the other side references, read cold.
    for c in [&src, &fork] {
        engine.compact(c.id, Merge::All).await.unwrap();
        engine.collect_garbage(c.id).await.unwrap();
    }
    engine.collect_orphaned_collections().await.unwrap();
    engine.evict_all();
    assert_eq!(records(&engine, &src).await, src_expected);
    assert_eq!(records(&engine, &fork).await, fork_expected);

    // Deleting the root: the fork still reads everything (the root's data key is in its
    // manifest, wrapped with the root's context), also after every sweep.
    engine
        .delete_collection("default_tenant", "default_database", "source")
        .await
        .unwrap();
    engine.collect_garbage(fork.id).await.unwrap();
    engine.collect_orphaned_collections().await.unwrap();
    engine.evict_all();
    assert_eq!(records(&engine, &fork).await, fork_expected);
    assert_eq!(engine.fork_count(fork.id).await.unwrap(), 1);
    engine.add(&fork, batch(200..201, "after")).await.unwrap();
    engine.compact(fork.id, Merge::All).await.unwrap();
    engine.collect_garbage(fork.id).await.unwrap();
    engine.evict_all();
    fork_expected.insert("r200".into(), (embedding(200), "after 200".into()));
    assert_eq!(records(&engine, &fork).await, fork_expected);
    assert_eq!(nearest(&engine, &fork, 200).await[0], "r200");

    // The last member takes every object of the lineage with it.
    engine
        .delete_collection("default_tenant", "default_database", "fork")
        .await
        .unwrap();
    assert_eq!(object_keys(&engine).await, Vec::<String>::new());
    assert_eq!(
        engine.catalog().get_lineage(src.id).await.unwrap(),
        None,
        "gone with its last member"
    );
}

#[tokio::test]
async fn deleting_a_fork_keeps_what_the_source_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let opened = common::open(dir.path(), common::manual_config());
    let engine = opened.engine;
    let src = common::cosine_collection(&engine, "source").await;
    engine.add(&src, batch(0..20, "first")).await.unwrap();
    let fork = engine.fork_collection(src.id, "fork").await.unwrap();
    engine.add(&fork, batch(50..60, "fork")).await.unwrap();
    engine.compact(fork.id, Merge::All).await.unwrap();
    let expected = records(&engine, &src).await;
    engine
        .delete_collection("default_tenant", "default_database", "fork")
        .await
        .unwrap();
    engine.collect_garbage(src.id).await.unwrap();
    engine.evict_all();
    assert_eq!(records(&engine, &src).await, expected);
    // Only the source's objects are left: its one log batch.
    let manifest = engine.catalog().get_manifest(src.id).await.unwrap();
    let mut referenced: Vec<String> = manifest.referenced_keys().map(str::to_owned).collect();
    referenced.sort();
    assert_eq!(object_keys(&engine).await, referenced);
    assert_eq!(
        engine.fork_count(src.id).await.unwrap(),
        1,
        "forks made, ever"
    );
}

#[tokio::test]
async fn forks_count_across_the_lineage_and_refuse_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let opened = common::open(dir.path(), common::manual_config());
    let engine = opened.engine;
    let src = common::cosine_collection(&engine, "root").await;
    assert_eq!(engine.fork_count(src.id).await.unwrap(), 0);
    let mut members = vec![src.clone()];
    for i in 0..5 {
        members.push(
            engine
                .fork_collection(src.id, &format!("fork-{i}"))
                .await
                .unwrap(),
        );
    }
    for m in &members {
        assert_eq!(engine.fork_count(m.id).await.unwrap(), 5, "{}", m.name);
    }
    let grandchild = engine
        .fork_collection(members[3].id, "grandchild")
        .await
        .unwrap();
    assert_eq!(engine.fork_count(grandchild.id).await.unwrap(), 6);
    assert_eq!(engine.fork_count(src.id).await.unwrap(), 6);

    let taken = engine
        .fork_collection(src.id, "fork-1")
        .await
        .expect_err("taken");
    assert_eq!(taken.code(), ErrorCode::AlreadyExists);
    assert_eq!(taken.message(), "Collection [fork-1] already exists");
    let missing = engine
        .fork_collection(uuid::Uuid::new_v4(), "xyz")
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), ErrorCode::NotFound);
    let bad = engine
        .fork_collection(src.id, "a")
        .await
        .expect_err("too short");
    assert_eq!(bad.code(), ErrorCode::InvalidArgument);
    assert_eq!(engine.fork_count(src.id).await.unwrap(), 6);
}
