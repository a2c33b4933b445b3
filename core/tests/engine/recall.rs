//! Recall on the shipped dataset through the whole engine: ingest, compact, query with
//! and without a filter, against the exact ground truth.

use std::collections::HashMap;

use chroma_core::engine::{Engine, EngineConfig, Include, QueryRequest};
use chroma_core::model::validate::WriteBatch;
use chroma_core::model::{
    CollectionConfiguration, Filter, HnswConfiguration, Metadata, MetadataValue, Space,
};
use serde_json::json;
use uuid::Uuid;

use crate::common;
use crate::dataset::{recall_at, Dataset};

pub fn metadata(data: &Dataset, row: usize) -> Metadata {
    Metadata::from([
        ("year".to_string(), MetadataValue::Int(data.years[row])),
        (
            "category".to_string(),
            MetadataValue::Str(data.categories[row].clone()),
        ),
        ("ranked".to_string(), MetadataValue::Bool(data.ranked[row])),
    ])
}

fn batch(data: &Dataset, rows: std::ops::Range<usize>) -> WriteBatch {
    WriteBatch {
        ids: rows.clone().map(|r| data.ids[r].clone()).collect(),
        embeddings: Some(
            rows.clone()
                .map(|r| Some(data.vector(r).to_vec()))
                .collect(),
        ),
        documents: Some(rows.clone().map(|r| Some(data.texts[r].clone())).collect()),
        uris: None,
        metadatas: Some(
            rows.map(|r| {
                Some(
                    metadata(data, r)
                        .into_iter()
                        .map(|(k, v)| (k, Some(v)))
                        .collect(),
                )
            })
            .collect(),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_on_dev_dataset() {
    let data = Dataset::load();
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        compact_log_ops: u64::MAX,
        ..EngineConfig::default()
    };
    let opened = common::open(dir.path(), config);
    let engine = opened.engine.clone();
    let configuration = CollectionConfiguration {
        hnsw: HnswConfiguration {
            space: Space::Cosine,
            ..HnswConfiguration::default()
        },
        embedding_function: None,
    };
    let c = engine
        .create_collection(
            "default_tenant",
            "default_database",
            "dev",
            None,
            configuration,
            false,
        )
        .await
        .unwrap();
    for start in (0..data.len()).step_by(1000) {
        engine
            .add(c.id, batch(&data, start..(start + 1000).min(data.len())))
            .await
            .unwrap();
    }
    engine.compact(c.id, true).await.unwrap();
    assert_eq!(engine.count(c.id).await.unwrap(), data.len() as u64);
    let row_of: HashMap<&str, u32> = data
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u32))
        .collect();

    let unfiltered = measure(&engine, c.id, &data, &row_of, None, |q| data.gt[q].clone()).await;
    let filtered = measure(
        &engine,
        c.id,
        &data,
        &row_of,
        Some(json!({"year": {"$gte": 2024}})),
        |q| data.gt_year_2024[q].clone(),
    )
    .await;
    let science = measure(
        &engine,
        c.id,
        &data,
        &row_of,
        Some(json!({"category": "science"})),
        |q| data.brute_force(q, 10, |r| data.categories[r] == "science"),
    )
    .await;
    eprintln!(
        "recall@10: unfiltered {unfiltered:.4}, year>=2024 {filtered:.4}, science {science:.4}"
    );
    assert!(unfiltered >= 0.95, "unfiltered recall@10 {unfiltered}");
    assert!(filtered >= 0.95, "filtered recall@10 {filtered}");
    assert!(science >= 0.99, "selective filter recall@10 {science}");
}

async fn measure(
    engine: &Engine,
    id: Uuid,
    data: &Dataset,
    row_of: &HashMap<&str, u32>,
    filter: Option<serde_json::Value>,
    truth: impl Fn(usize) -> Vec<u32>,
) -> f64 {
    let filter = filter.map(|w| Filter::parse(Some(&w), None).unwrap().unwrap());
    let n = data.query_count();
    let mut total = 0.0;
    for q in 0..n {
        let got = engine
            .query(
                id,
                QueryRequest {
                    embeddings: vec![data.query(q).to_vec()],
                    n_results: 10,
                    ids: None,
                    filter: filter.clone(),
                    include: Include::none(),
                },
            )
            .await
            .unwrap();
        let rows: Vec<u32> = got.ids[0].iter().map(|id| row_of[id.as_str()]).collect();
        assert_eq!(rows.len(), 10);
        total += recall_at(&rows, &truth(q), 10);
    }
    total / n as f64
}
