//! The sparse index is built by compaction and written with the segment: a segment whose
//! rows carry sparse vectors gets a sparse object, a load reads it instead of building the
//! postings again (a damaged one is an error, not silently rebuilt), and a merge
//! retires it with the rest of the segment.

use chroma_core::engine::{Engine, Merge};
use chroma_core::model::schema::{self, Schema};
use chroma_core::model::search::Search;
use chroma_core::model::sparse::SparseVector;
use chroma_core::model::validate::WriteBatch;
use chroma_core::model::IfExists;
use chroma_core::model::{Collection, CollectionConfiguration, KnnIndex, MetadataValue};
use serde_json::json;

use crate::common;

/// A SPANN collection with a sparse vector index on `s`.
async fn collection(engine: &Engine, name: &str) -> Collection {
    let requested = CollectionConfiguration::default_for(KnnIndex::Spann);
    let mut schema = serde_json::to_value(requested.schema()).unwrap();
    schema["keys"]["s"] = json!({"sparse_vector": {"sparse_vector_index": {
        "enabled": true, "config": {"embedding_function": {"type": "unknown"}}}}});
    let schema: Schema = serde_json::from_value(schema).unwrap();
    let configuration = CollectionConfiguration::from_schema(
        schema::reconcile(Some(&schema), &requested, KnnIndex::Spann).unwrap(),
    );
    engine
        .create_collection(
            "default_tenant",
            "default_database",
            name,
            None,
            configuration,
            IfExists::Fail,
        )
        .await
        .unwrap()
}

/// Records `range`, each with a sparse vector under `s` when `sparse`.
fn batch(range: std::ops::Range<u32>, sparse: bool) -> WriteBatch {
    WriteBatch {
        ids: range.clone().map(|i| format!("r{i}")).collect(),
        embeddings: Some(
            range
                .clone()
                .map(|i| Some(vec![i as f32 + 1.0, 1.0, 0.5]))
                .collect(),
        ),
        documents: None,
        uris: None,
        metadatas: Some(
            range
                .map(|i| {
                    let mut m = std::collections::HashMap::new();
                    m.insert("n".to_string(), Some(MetadataValue::Int(i64::from(i))));
                    if sparse {
                        let v = SparseVector {
                            indices: vec![i % 5, 10 + i % 3],
                            values: vec![1.0 + i as f32 / 10.0, 0.5],
                            tokens: None,
                        };
                        m.insert("s".to_string(), Some(MetadataValue::SparseVector(v)));
                    }
                    Some(m.into_iter().collect())
                })
                .collect(),
        ),
    }
}

/// The ids a sparse search for dimensions 1 and 11 ranks first.
async fn sparse_top(engine: &Engine, c: &Collection) -> chroma_core::error::Result<Vec<String>> {
    let search = Search::parse(&json!({
        "rank": {"$knn": {"query": {"indices": [1, 11], "values": [1.0, 2.0]}, "key": "s", "limit": 4}},
        "limit": {"limit": 4},
        "select": {"keys": ["#score"]},
    }))
    .unwrap();
    Ok(engine.search(c, vec![search]).await?.remove(0).ids)
}

#[tokio::test]
async fn compaction_writes_the_sparse_index_and_a_load_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open(dir.path(), common::manual_config()).engine;
    let c = collection(&engine, "sparse").await;
    engine.add(&c, batch(0..40, true)).await.unwrap();
    engine.compact(c.id, Merge::All).await.unwrap();
    let manifest = engine.catalog().get_manifest(c.id).await.unwrap();
    let [segment] = manifest.segments.as_slice() else {
        panic!("one segment: {:?}", manifest.segments);
    };
    let sparse_key = segment.sparse_key.clone().expect("a sparse object");
    assert!(engine.store().head(&sparse_key).await.is_ok());
    let built = sparse_top(&engine, &c).await.unwrap();
    assert_eq!(built.len(), 4);

    // A fresh engine loads the segment with the stored postings: the same answer.
    let reopened = common::open(dir.path(), common::manual_config()).engine;
    assert_eq!(sparse_top(&reopened, &c).await.unwrap(), built);

    // The load really reads the object: a damaged one fails the search.
    let sealed = engine.store().get(&sparse_key).await.unwrap();
    let mut damaged = sealed.to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    engine
        .store()
        .put(&sparse_key, damaged.into())
        .await
        .unwrap();
    let fresh = common::open(dir.path(), common::manual_config()).engine;
    let e = sparse_top(&fresh, &c).await.unwrap_err();
    assert!(e.to_string().contains("failed authentication"), "{e}");
    engine.store().put(&sparse_key, sealed).await.unwrap();

    // A merge writes a new sparse object and retires the old one, which garbage
    // collection deletes (at once here: no grace period).
    engine.add(&c, batch(40..50, true)).await.unwrap();
    engine.compact(c.id, Merge::All).await.unwrap();
    let manifest = engine.catalog().get_manifest(c.id).await.unwrap();
    let new_key = manifest.segments[0]
        .sparse_key
        .clone()
        .expect("a sparse object");
    assert_ne!(new_key, sparse_key);
    assert!(manifest
        .segments
        .iter()
        .all(|s| s.sparse_key.as_ref() != Some(&sparse_key)));
    engine.collect_garbage(c.id).await.unwrap();
    assert!(engine.store().head(&sparse_key).await.is_err());
    assert!(engine.store().head(&new_key).await.is_ok());
}

#[tokio::test]
async fn a_segment_without_sparse_vectors_has_no_sparse_object() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open(dir.path(), common::manual_config()).engine;
    let c = collection(&engine, "dense").await;
    engine.add(&c, batch(0..20, false)).await.unwrap();
    engine.compact(c.id, Merge::All).await.unwrap();
    let manifest = engine.catalog().get_manifest(c.id).await.unwrap();
    assert_eq!(manifest.segments.len(), 1);
    assert_eq!(manifest.segments[0].sparse_key, None);
    let reopened = common::open(dir.path(), common::manual_config()).engine;
    assert!(sparse_top(&reopened, &c).await.unwrap().is_empty());
}
