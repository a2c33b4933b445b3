//! Engine benchmark on a real-embedding dataset (`CHROMA_DEV_DATA`, see `scripts/bench.sh`), in process, over the local
//! backends (filesystem store with fsync, SQLite catalog, encryption on):
//! ingest rate, time until indexed against a bare hnsw_rs build of the same vectors,
//! query latency p50/p99, recall@10 (unfiltered, `year >= 2024`, ~1% selective), cold
//! open and peak memory.
//!
//! Run with `scripts/bench.sh` (or `cargo bench -p chroma-core --bench engine`).

#[path = "../tests/engine/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../tests/engine/dataset.rs"]
#[allow(dead_code)]
mod dataset;
#[path = "support/measure.rs"]
#[allow(dead_code)]
mod measure;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chroma_core::engine::{Engine, EngineConfig, Include, Merge, QueryRequest};
use chroma_core::index::{HnswIndex, HnswParams};
use chroma_core::model::{Collection, Space};
use dataset::{run_queries, Dataset};
use measure::{cpu_seconds, peak_rss_mib, rss_mib};
use serde_json::json;

const BATCH: usize = 1000;

/// p50 of `search(q)` over every query, in milliseconds.
fn search_p50_ms(data: &Dataset, mut search: impl FnMut(&[f32])) -> f64 {
    let mut times: Vec<Duration> = (0..data.query_count())
        .map(|q| {
            let start = Instant::now();
            search(data.query(q));
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

/// hnsw_rs alone on the same vectors, with the same parameters (M 16, ef_construction
/// 100): build time and its own search p50 at ef 100.
fn bare_hnsw(data: &Dataset) -> (Duration, f64, f64) {
    use hnsw_rs::prelude::*;
    let cpu = cpu_seconds();
    let start = Instant::now();
    let n = data.len();
    let hnsw: Hnsw<f32, DistDot> = Hnsw::new(16, n, 16, 100, DistDot {});
    let rows: Vec<(&[f32], usize)> = (0..n).map(|r| (data.vector(r), r)).collect();
    hnsw.parallel_insert_slice(&rows);
    let build = start.elapsed();
    let build_cpu = cpu_seconds() - cpu;
    let p50 = search_p50_ms(data, |q| {
        std::hint::black_box(hnsw.search(q, 10, 100));
    });
    (build, build_cpu, p50)
}

/// Our index alone (build + flattened search), no engine around it.
fn bare_index(data: &Dataset) -> f64 {
    let params = HnswParams {
        space: Space::Cosine,
        max_neighbors: 16,
        ef_construction: 100,
    };
    let index = HnswIndex::build(&data.base, data.dim, &params).unwrap();
    search_p50_ms(data, |q| {
        std::hint::black_box(index.search(q, 10, 100, None));
    })
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing else useful.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

async fn bench() {
    let data = Dataset::load();
    let n = data.len();
    println!(
        "dataset: {n} vectors x {} dims, {} queries",
        data.dim,
        data.query_count()
    );
    let (bare, bare_cpu, bare_p50) = bare_hnsw(&data);
    println!(
        "reference: bare hnsw_rs build (parallel insert)     {:>8.2} s ({bare_cpu:.1} CPU s)",
        bare.as_secs_f64()
    );
    println!("reference: bare hnsw_rs search p50 (ef 100)         {bare_p50:>8.3} ms");
    let index_p50 = bare_index(&data);
    println!(
        "index alone: flattened graph search p50 (ef 100)   {index_p50:>8.3} ms = {:.2}x hnsw_rs search",
        index_p50 / bare_p50
    );

    let dir = tempfile::tempdir().unwrap();
    let opened = common::open(dir.path(), EngineConfig::default());
    let engine = opened.engine.clone();
    let background = engine.spawn_background(opened.jobs.clone(), opened.requests);
    let c = common::cosine_collection(&engine, "bench").await;

    let cpu = cpu_seconds();
    let start = Instant::now();
    for first in (0..n).step_by(BATCH) {
        engine
            .add(&c, data.batch(first..(first + BATCH).min(n)))
            .await
            .unwrap();
    }
    let acked = start.elapsed();
    loop {
        if engine.indexing_status(&c).await.unwrap().unindexed_ops == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let indexed = start.elapsed();
    while !engine.is_settled(c.id).await.unwrap() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let settled = start.elapsed();
    let ingest_cpu = cpu_seconds() - cpu;
    println!(
        "ingest: acknowledged                               {:>8.0} vectors/s ({:.2} s)",
        n as f64 / acked.as_secs_f64(),
        acked.as_secs_f64()
    );
    println!(
        "ingest: first write to fully indexed               {:>8.2} s = {:.2}x bare hnsw_rs build ({:.0} vectors/s)",
        indexed.as_secs_f64(),
        indexed.as_secs_f64() / bare.as_secs_f64(),
        n as f64 / indexed.as_secs_f64()
    );
    println!(
        "ingest: first write to one merged segment          {:>8.2} s = {:.2}x bare build",
        settled.as_secs_f64(),
        settled.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "ingest: CPU from first write to one segment        {ingest_cpu:>8.1} s = {:.2}x the bare build's CPU (builds use {} threads)",
        ingest_cpu / bare_cpu,
        EngineConfig::default().build_threads
    );

    println!(
        "memory after indexing: engine cache {:>6.0} bytes/vector, process RSS {:.0} MiB",
        engine.cached_bytes() as f64 / n as f64,
        rss_mib()
    );
    let manifest = engine.catalog().get_manifest(c.id).await.unwrap();
    let segment_bytes: u64 = manifest.segments.iter().map(|s| s.bytes).sum();
    println!(
        "disk: live segments {:>6.0} bytes/vector = {:.2}x the raw f32 vectors ({} segments)",
        segment_bytes as f64 / n as f64,
        segment_bytes as f64 / (n * data.dim * 4) as f64,
        manifest.segments.len()
    );

    let unfiltered = run_queries(&engine, &c, &data, None, |q| data.gt[q].clone()).await;
    let year = run_queries(
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
    for (name, s) in [
        ("unfiltered", &unfiltered),
        ("year >= 2024 (62%)", &year),
        ("category == science (0.75%)", &science),
    ] {
        println!(
            "query {name:<30} p50 {:>6.3} ms  p99 {:>6.3} ms  recall@10 {:.4}  p50 vs unfiltered {:.2}x",
            s.percentile_ms(0.5),
            s.percentile_ms(0.99),
            s.recall,
            s.percentile_ms(0.5) / unfiltered.percentile_ms(0.5)
        );
    }
    // The read path without a search: manifest read, snapshot lookup, result.
    let mut floor: Vec<Duration> = (0..data.query_count()).map(|_| Duration::ZERO).collect();
    for t in floor.iter_mut() {
        let start = Instant::now();
        engine.count(&c).await.unwrap();
        *t = start.elapsed();
    }
    floor.sort();
    println!(
        "read path floor (count) p50                        {:>8.3} ms",
        floor[floor.len() / 2].as_secs_f64() * 1e3
    );
    background.abort();
    merge_while_querying(&engine, &c, &data, unfiltered.percentile_ms(0.5), bare_cpu).await;
    drop(engine);
    drop(opened.engine);

    // Cold open: a new engine on the same directory, first query loads and decrypts
    // the segment.
    let start = Instant::now();
    let reopened = common::open(dir.path(), EngineConfig::default());
    let c = reopened
        .engine
        .get_collection("default_tenant", "default_database", "bench")
        .await
        .unwrap();
    let request = QueryRequest {
        embeddings: vec![data.query(0).to_vec()],
        n_results: 10,
        include: Include::none(),
        ..Default::default()
    };
    reopened.engine.query(&c, request).await.unwrap();
    println!(
        "cold open + first query                            {:>8.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "memory after restart: engine cache {:>6.0} bytes/vector (the dataset's f32 vectors alone: {} bytes/vector)",
        reopened.engine.cached_bytes() as f64 / n as f64,
        data.dim * 4
    );
    println!(
        "peak memory (VmHWM)                                {:>8.0} MiB",
        peak_rss_mib()
    );
}

/// A second collection is loaded in two halves: the first is folded into a segment, then
/// the second half extends it while queries run against the first collection. Reports
/// the query p50 during that build against idle, and the two builds' CPU against one
/// bare build of every vector.
async fn merge_while_querying(
    engine: &Arc<Engine>,
    c: &Collection,
    data: &Dataset,
    idle_p50: f64,
    bare_cpu: f64,
) {
    let n = data.len();
    let half = n / 2;
    let load = |name: &'static str, range: std::ops::Range<usize>| async move {
        let c = common::cosine_collection(engine, name).await;
        for first in range.clone().step_by(BATCH) {
            engine
                .add(&c, data.batch(first..(first + BATCH).min(range.end)))
                .await
                .unwrap();
        }
        c
    };
    // Build CPU alone (nothing else runs).
    let cpu = cpu_seconds();
    let alone = load("halves-alone", 0..half).await;
    engine.compact(alone.id, Merge::AsNeeded).await.unwrap();
    load("halves-alone", half..n).await;
    let report = engine.compact(alone.id, Merge::AsNeeded).await.unwrap();
    let cpu = cpu_seconds() - cpu;
    println!(
        "load in two halves: build CPU {cpu:>6.1} s = {:.2}x the bare build's; the second half merged {} segment(s) into {} ({} rows)",
        cpu / bare_cpu,
        report.merged_segments,
        report.segments,
        report.new_segment_rows
    );
    // The same again, querying the first collection while the second half is inserted.
    let halves = load("halves", 0..half).await;
    engine.compact(halves.id, Merge::AsNeeded).await.unwrap();
    load("halves", half..n).await;
    let extending = {
        let engine = engine.clone();
        let id = halves.id;
        tokio::spawn(async move { engine.compact(id, Merge::AsNeeded).await })
    };
    let mut during: Vec<Duration> = Vec::new();
    let mut q = 0;
    while !extending.is_finished() {
        let request = QueryRequest {
            embeddings: vec![data.query(q % data.query_count()).to_vec()],
            n_results: 10,
            include: Include::none(),
            ..Default::default()
        };
        let start = Instant::now();
        engine.query(c, request).await.unwrap();
        during.push(start.elapsed());
        q += 1;
    }
    extending.await.unwrap().unwrap();
    during.sort();
    let p50 = during
        .get(during.len() / 2)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    println!(
        "query p50 while the second half extends the graph {p50:>8.3} ms = {:.2}x idle ({} queries)",
        p50 / idle_p50,
        during.len()
    );
    let extended = run_queries(engine, &halves, data, None, |q| data.gt[q].clone()).await;
    println!(
        "query on the extended graph: p50 {:>6.3} ms  recall@10 {:.4}",
        extended.percentile_ms(0.5),
        extended.recall
    );
}
