//! Recall on the shipped dataset through the whole engine: ingest, compact, query with
//! and without a filter, against the exact ground truth.

use std::collections::HashMap;

use chroma_core::engine::{Engine, EngineConfig, Include, QueryRequest};
use chroma_core::model::{CollectionConfiguration, Filter, HnswConfiguration, Space};
use serde_json::json;
use uuid::Uuid;

use crate::common;
use crate::dataset::{recall_at, Dataset};

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
            .add(c.id, data.batch(start..(start + 1000).min(data.len())))
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
