//! Recall on the shipped dataset through the whole engine: ingest, compact, query with
//! and without a filter, against the exact ground truth.

use chroma_core::engine::{EngineConfig, Merge};
use serde_json::json;

use crate::common;
use crate::dataset::{run_cold_queries, run_queries, Dataset};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_on_dev_dataset() {
    let data = Dataset::load();
    let dir = tempfile::tempdir().unwrap();
    // 32 partitions, for the cold path at the end.
    let opened = open_without_automatic_compaction(dir.path(), data.len().div_ceil(32));
    let engine = opened.engine.clone();
    let c = common::cosine_collection(&engine, "dev").await;
    for start in (0..data.len()).step_by(1000) {
        engine
            .add(&c, data.batch(start..(start + 1000).min(data.len())))
            .await
            .unwrap();
    }
    engine.compact(c.id, Merge::All).await.unwrap();
    assert_eq!(engine.count(&c).await.unwrap(), data.len() as u64);
    let unfiltered = run_queries(&engine, &c, &data, None, |q| data.gt[q].clone()).await;
    let filtered = run_queries(
        &engine,
        &c,
        &data,
        Some(json!({"year": {"$gte": 2024}})),
        |q| data.gt_year_2024[q].clone(),
    )
    .await;
    let science = run_queries(
        &engine,
        &c,
        &data,
        Some(json!({"category": "science"})),
        |q| data.brute_force(q, 10, |r| data.categories[r] == "science"),
    )
    .await;
    for (name, stats) in [
        ("unfiltered", &unfiltered),
        ("year >= 2024", &filtered),
        ("science", &science),
    ] {
        eprintln!(
            "{name}: recall@10 {:.4}, p50 {:.3} ms (dev profile)",
            stats.recall,
            stats.percentile_ms(0.5)
        );
    }
    assert!(
        unfiltered.recall >= 0.95,
        "unfiltered recall@10 {}",
        unfiltered.recall
    );
    assert!(
        filtered.recall >= 0.95,
        "filtered recall@10 {}",
        filtered.recall
    );
    assert!(
        science.recall >= 0.99,
        "selective filter recall@10 {}",
        science.recall
    );

    // The f32 vectors (1,536 bytes a row here) are not held in memory, right after the
    // build nor after a restart: codes, graph, ids and metadata are.
    let per_row = engine.cached_bytes() / data.len();
    eprintln!("cached after build: {per_row} bytes per row");
    assert!(
        per_row < 1_200,
        "{per_row} bytes per row cached after the build"
    );
    drop(opened);
    let reopened = common::open(dir.path(), EngineConfig::default());
    let engine = reopened.engine.clone();
    let again = run_queries(&engine, &c, &data, None, |q| data.gt[q].clone()).await;
    assert_eq!(again.recall, unfiltered.recall, "recall after a restart");
    let per_row = engine.cached_bytes() / data.len();
    eprintln!("cached after restart: {per_row} bytes per row");
    assert!(
        per_row < 1_200,
        "{per_row} bytes per row cached after a restart"
    );
    // Returned embeddings are the stored f32 values, read by range.
    let got = engine
        .get(
            &c,
            chroma_core::engine::GetRequest {
                ids: Some(vec![
                    data.ids[7].clone(),
                    data.ids[19_000.min(data.len() - 1)].clone(),
                ]),
                include: chroma_core::engine::Include::all(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let embeddings = got.embeddings.unwrap();
    assert_eq!(embeddings[0], data.vector(7));
    assert_eq!(embeddings[1], data.vector(19_000.min(data.len() - 1)));
    drop(reopened);

    // Cold: every query against a collection not in memory, read by range from 16 of
    // the segment's 32 partitions (nothing loaded in the background).
    let cold = common::open(
        dir.path(),
        EngineConfig {
            cold_query_rows: 0,
            cold_nprobe: 16,
            warm_after_cold: false,
            ..EngineConfig::default()
        },
    );
    let engine = cold.engine.clone();
    let stats = run_cold_queries(&engine, &c, &data, 200, None, |q| data.gt[q].clone()).await;
    eprintln!(
        "cold path, 16 of 32 partitions: recall@10 {:.4}, p50 {:.3} ms (dev profile); cached {} bytes per row",
        stats.recall,
        stats.percentile_ms(0.5),
        engine.cached_bytes() / data.len()
    );
    assert!(stats.recall >= 0.95, "cold recall@10 {}", stats.recall);
    // Filtered: the probed partitions' metadata is read and only passing rows scored (or,
    // where too few pass there, the collection is loaded), with the same recall floor.
    let year = serde_json::json!({"year": {"$gte": 2024}});
    let stats = run_cold_queries(&engine, &c, &data, 200, Some(year), |q| {
        data.gt_year_2024[q].clone()
    })
    .await;
    eprintln!(
        "cold path, filtered (year >= 2024): recall@10 {:.4}, p50 {:.3} ms (dev profile)",
        stats.recall,
        stats.percentile_ms(0.5)
    );
    assert!(
        stats.recall >= 0.95,
        "filtered cold recall@10 {}",
        stats.recall
    );
    // What the cold path keeps between queries (centroids, footers) is small.
    assert!(engine.cached_bytes() < data.len() * 200);
}

/// A load indexed in two folds is one segment whose graph the second fold extended (its
/// rows inserted into the first fold's graph, not a second build over everything), with
/// the recall of a single build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_in_two_folds_extends_one_graph() {
    let data = Dataset::load();
    let dir = tempfile::tempdir().unwrap();
    let opened = open_without_automatic_compaction(dir.path(), 1_024);
    let engine = opened.engine.clone();
    let c = common::cosine_collection(&engine, "folds").await;
    let first = data.len() * 3 / 10;
    engine.add(&c, data.batch(0..first)).await.unwrap();
    let report = engine.compact(c.id, Merge::AsNeeded).await.unwrap();
    assert_eq!((report.merged_segments, report.segments), (0, 1));
    engine.add(&c, data.batch(first..data.len())).await.unwrap();
    let report = engine.compact(c.id, Merge::AsNeeded).await.unwrap();
    assert_eq!(
        (
            report.merged_segments,
            report.segments,
            report.new_segment_rows
        ),
        (1, 1, data.len() as u64),
        "the second fold extends the first segment"
    );
    // Nothing is left to merge.
    let report = engine.compact(c.id, Merge::All).await.unwrap();
    assert_eq!((report.merged_segments, report.segments), (0, 1));
    let unfiltered = run_queries(&engine, &c, &data, None, |q| data.gt[q].clone()).await;
    let filtered = run_queries(
        &engine,
        &c,
        &data,
        Some(json!({"year": {"$gte": 2024}})),
        |q| data.gt_year_2024[q].clone(),
    )
    .await;
    eprintln!(
        "extended: recall@10 {:.4} unfiltered, {:.4} year >= 2024",
        unfiltered.recall, filtered.recall
    );
    assert!(
        unfiltered.recall >= 0.95,
        "unfiltered recall@10 {}",
        unfiltered.recall
    );
    assert!(
        filtered.recall >= 0.95,
        "filtered recall@10 {}",
        filtered.recall
    );
    // Rows of both folds come back whole.
    for row in [0, first - 1, first, data.len() - 1] {
        let got = engine
            .get(
                &c,
                chroma_core::engine::GetRequest {
                    ids: Some(vec![data.ids[row].clone()]),
                    include: chroma_core::engine::Include::all(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(got.embeddings.unwrap()[0], data.vector(row));
    }
}

/// An engine on `dir` that compacts only when asked.
fn open_without_automatic_compaction(
    dir: &std::path::Path,
    rows_per_partition: usize,
) -> common::Opened {
    let config = EngineConfig {
        compact_log_ops: u64::MAX,
        rows_per_partition,
        ..EngineConfig::default()
    };
    common::open(dir, config)
}
