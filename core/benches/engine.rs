//! Engine benchmark on a real-embedding dataset (`CHROMA_DEV_DATA`, see `scripts/bench.sh`), in process, over the local
//! backends (filesystem store with fsync, SQLite catalog, encryption on):
//! ingest rate, time until indexed against a bare hnsw_rs build of the same vectors,
//! query latency p50/p99, recall@10 (unfiltered, `year >= 2024`, ~1% selective), cold
//! open and peak memory; sparse search (BM25 of the texts) p50 and recall against exact
//! scores, and a hybrid dense + sparse search.
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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chroma_core::engine::{Engine, EngineConfig, Include, Merge, QueryRequest};
use chroma_core::index::sparse::SparsePostings;
use chroma_core::index::{HnswIndex, HnswParams};
use chroma_core::model::schema::{self, Schema};
use chroma_core::model::search::Search;
use chroma_core::model::sparse::SparseVector;
use chroma_core::model::IfExists;
use chroma_core::model::{
    Collection, CollectionConfiguration, KnnIndex, Metadata, MetadataValue, Space,
};
use dataset::{run_queries, Dataset};
use measure::{cpu_seconds, peak_rss_mib, rss_mib};
use serde_json::{json, Value};

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
    // Only the sparse and hybrid figures (a quick look at that path).
    if std::env::var_os("CHROMA_BENCH_SPARSE_ONLY").is_some() {
        sparse_and_hybrid(&data).await;
        return;
    }
    // Only the cost of a fork.
    if std::env::var_os("CHROMA_BENCH_FORK_ONLY").is_some() {
        fork_cost(&data).await;
        return;
    }
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
    let background = engine.spawn_background(opened.requests);
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
    sparse_and_hybrid(&data).await;
    fork_cost(&data).await;
    println!(
        "peak memory (VmHWM)                                {:>8.0} MiB",
        peak_rss_mib()
    );
}

/// BM25 vectors of the dataset's texts (computed here): per document `idf · tf·(k1+1) /
/// (tf + k1·(1 − b + b·len/avg))` over its lowercase alphanumeric tokens, dimensions
/// numbered by first appearance; the vocabulary maps tokens to dimensions.
fn bm25(texts: &[String]) -> (Vec<SparseVector>, HashMap<String, u32>) {
    let tokens = |t: &str| -> Vec<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 1)
            .map(str::to_lowercase)
            .collect()
    };
    let docs: Vec<Vec<String>> = texts.iter().map(|t| tokens(t)).collect();
    let mut vocab: HashMap<String, u32> = HashMap::new();
    let mut df: HashMap<u32, f64> = HashMap::new();
    for d in &docs {
        let mut seen = std::collections::HashSet::new();
        for w in d {
            let next = vocab.len() as u32;
            let dim = *vocab.entry(w.clone()).or_insert(next);
            if seen.insert(dim) {
                *df.entry(dim).or_default() += 1.0;
            }
        }
    }
    let n = docs.len() as f64;
    let avg = docs.iter().map(Vec::len).sum::<usize>() as f64 / n;
    let (k1, b) = (1.2, 0.75);
    let vectors = docs
        .iter()
        .map(|d| {
            let mut tf: std::collections::BTreeMap<u32, f64> = Default::default();
            for w in d {
                *tf.entry(vocab[w]).or_default() += 1.0;
            }
            let len = d.len() as f64;
            let (indices, values) = tf
                .into_iter()
                .map(|(dim, f)| {
                    let idf = (1.0 + (n - df[&dim] + 0.5) / (df[&dim] + 0.5)).ln();
                    (
                        dim,
                        (idf * f * (k1 + 1.0) / (f + k1 * (1.0 - b + b * len / avg))) as f32,
                    )
                })
                .unzip();
            SparseVector {
                indices,
                values,
                tokens: None,
            }
        })
        .collect();
    (vectors, vocab)
}

/// Sparse search (BM25 over the texts, exact top 10 computed here) and a hybrid Rrf of
/// dense and sparse, on a SPANN collection with a sparse index, p50 over queries made of
/// the first four words of every 50th text.
async fn sparse_and_hybrid(data: &Dataset) {
    let (vectors, vocab) = bm25(&data.texts);
    let dir = tempfile::tempdir().unwrap();
    let opened = common::open(dir.path(), EngineConfig::default());
    let engine = opened.engine.clone();
    let requested = CollectionConfiguration::default_for(KnnIndex::Spann);
    let mut schema_json = serde_json::to_value(requested.schema()).unwrap();
    schema_json["keys"]["bm25"] = json!({"sparse_vector": {"sparse_vector_index": {
        "enabled": true, "config": {"embedding_function": {"type": "unknown"}, "bm25": true}}}});
    let schema: Schema = serde_json::from_value(schema_json).unwrap();
    let configuration = CollectionConfiguration::from_schema(
        schema::reconcile(Some(&schema), &requested, KnnIndex::Spann).unwrap(),
    );
    let c = engine
        .create_collection(
            "default_tenant",
            "default_database",
            "bm25",
            None,
            configuration,
            IfExists::Fail,
        )
        .await
        .unwrap();
    let n = data.len();
    let start = Instant::now();
    for first in (0..n).step_by(BATCH) {
        let mut batch = data.batch(first..(first + BATCH).min(n));
        for (i, m) in batch.metadatas.iter_mut().flatten().enumerate() {
            let m = m.get_or_insert_with(Default::default);
            m.insert(
                "bm25".into(),
                Some(MetadataValue::SparseVector(vectors[first + i].clone())),
            );
        }
        engine.add(&c, batch).await.unwrap();
    }
    engine.compact(c.id, Merge::All).await.unwrap();
    let nnz: usize = vectors.iter().map(|v| v.indices.len()).sum();
    println!(
        "sparse: {n} BM25 vectors ({:.1} dimensions each, {} distinct) added and indexed in {:.2} s",
        nnz as f64 / n as f64,
        vocab.len(),
        start.elapsed().as_secs_f64()
    );
    let queries: Vec<SparseVector> = (0..n)
        .step_by(50)
        .map(|row| {
            let mut dims: Vec<u32> = data.texts[row]
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() > 1)
                .take(4)
                .map(|w| vocab[&w.to_lowercase()])
                .collect();
            dims.sort_unstable();
            dims.dedup();
            SparseVector {
                values: vec![1.0; dims.len()],
                indices: dims,
                tokens: None,
            }
        })
        .collect();
    let search =
        |rank: Value| Search::parse(&json!({"rank": rank, "limit": {"limit": 10}})).unwrap();
    let sparse_knn = |q: &SparseVector| json!({"$knn": {"query": {"indices": q.indices, "values": q.values}, "key": "bm25", "limit": 10}});
    let (mut times, mut scans, mut recall) = (Vec::new(), Vec::new(), 0.0);
    for q in &queries {
        let started = Instant::now();
        let got = engine
            .search(&c, vec![search(sparse_knn(q))])
            .await
            .unwrap();
        times.push(started.elapsed());
        // Exact: every text's score, ties by row (insertion order); timed as the
        // reference (a scan of resident vectors, no engine around it).
        let started = Instant::now();
        let mut exact: Vec<(f32, usize)> = vectors
            .iter()
            .enumerate()
            .filter_map(|(r, v)| q.score(v).map(|s| (s, r)))
            .collect();
        exact.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        scans.push(started.elapsed());
        let truth: Vec<&str> = exact
            .iter()
            .take(10)
            .map(|(_, r)| data.ids[*r].as_str())
            .collect();
        let found = got[0]
            .ids
            .iter()
            .filter(|id| truth.contains(&id.as_str()))
            .count();
        recall += found as f64 / truth.len().max(1) as f64;
    }
    times.sort();
    scans.sort();
    let p50 = times[times.len() / 2].as_secs_f64() * 1e3;
    let scan_p50 = scans[scans.len() / 2].as_secs_f64() * 1e3;
    println!(
        "sparse search (BM25, top 10) p50 {p50:>6.3} ms  p99 {:>6.3} ms  recall@10 {:.4} against the exact scores ({} queries)",
        times[times.len() * 99 / 100].as_secs_f64() * 1e3,
        recall / queries.len() as f64,
        queries.len()
    );
    println!(
        "reference: exact scan of every resident vector p50 {scan_p50:>6.3} ms (search = {:.2}x the scan, engine included)",
        p50 / scan_p50
    );
    // The sparse index as compaction writes it, read back as a load reads it, against
    // building it from the metadata (what a load did before it was stored); then a fresh
    // engine's first sparse search (segment loaded from its objects).
    let metas: Vec<Option<Metadata>> = vectors
        .iter()
        .map(|v| {
            Some(Metadata::from([(
                "bm25".to_string(),
                MetadataValue::SparseVector(v.clone()),
            )]))
        })
        .collect();
    let started = Instant::now();
    let built = SparsePostings::build(&metas);
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    let bytes = built.to_bytes(n);
    let started = Instant::now();
    let read = SparsePostings::from_bytes(&bytes, n).unwrap();
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(read == built);
    println!(
        "sparse index: {:.0} KB, read back in {read_ms:.2} ms = {:.2}x building it from the metadata ({build_ms:.2} ms)",
        bytes.len() as f64 / 1024.0,
        read_ms / build_ms
    );
    let reopened = common::open(dir.path(), EngineConfig::default()).engine;
    let started = Instant::now();
    reopened
        .search(&c, vec![search(sparse_knn(&queries[0]))])
        .await
        .unwrap();
    println!(
        "cold open + first sparse search                       {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let mut times = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let dense = data.vector(i * 50).to_vec();
        let rrf = json!({"$mul": [{"$val": -1}, {"$sum": [
            {"$div": {"left": {"$val": 1}, "right": {"$sum": [{"$val": 60},
                {"$knn": {"query": dense, "limit": 50, "return_rank": true, "default": 1000}}]}}},
            {"$div": {"left": {"$val": 1}, "right": {"$sum": [{"$val": 60},
                {"$knn": {"query": {"indices": q.indices, "values": q.values}, "key": "bm25",
                          "limit": 50, "return_rank": true, "default": 1000}}]}}}]}]});
        let started = Instant::now();
        engine.search(&c, vec![search(rrf)]).await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "hybrid search (Rrf of dense and BM25, 50 each) p50 {:>6.3} ms  p99 {:>6.3} ms",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() * 99 / 100].as_secs_f64() * 1e3
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

/// The cost of forking a collection of `CHROMA_BENCH_FORK_RECORDS` records (default
/// 100,000: the dataset repeated, ids made unique) once it is indexed: the fork's latency
/// (p50 of 5), the objects and bytes it writes (none: it is one catalog transaction),
/// against the collection's own size; then the first query on the fork, warm (the
/// source's segments are in memory and shared) and cold.
async fn fork_cost(data: &Dataset) {
    let records: usize = std::env::var("CHROMA_BENCH_FORK_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let opened = common::open(dir.path(), EngineConfig::default());
    let engine = opened.engine.clone();
    let c = common::cosine_collection(&engine, "fork-source").await;
    let n = data.len();
    let mut added = 0;
    while added < records {
        let rows = (added % n)
            ..((added % n) + BATCH)
                .min(n)
                .min(added % n + records - added);
        let copy = added / n;
        let mut batch = data.batch(rows.clone());
        for id in &mut batch.ids {
            id.push_str(&format!("-{copy}"));
        }
        engine.add(&c, batch).await.unwrap();
        added += rows.len();
    }
    let start = Instant::now();
    while engine.indexing_status(&c).await.unwrap().unindexed_ops > 0 {
        engine.compact(c.id, Merge::All).await.unwrap();
    }
    let indexed = start.elapsed();
    let objects = |engine: Arc<Engine>| async move {
        let listed = engine.store().list("c/").await.unwrap();
        (listed.len(), listed.iter().map(|o| o.size).sum::<u64>())
    };
    let (before, before_bytes) = objects(engine.clone()).await;
    let mut times = Vec::new();
    let mut forks = Vec::new();
    for i in 0..5 {
        let start = Instant::now();
        forks.push(
            engine
                .fork_collection(c.id, &format!("fork-{i}"))
                .await
                .unwrap(),
        );
        times.push(start.elapsed());
    }
    times.sort();
    let (after, after_bytes) = objects(engine.clone()).await;
    let manifest = engine.catalog().get_manifest(forks[0].id).await.unwrap();
    println!(
        "fork of {records} records (indexed in {:.1} s, {before} objects, {:.0} MiB): p50 {:>6.2} ms, max {:.2} ms; \
         objects written {}, bytes written {}; manifest {} bytes",
        indexed.as_secs_f64(),
        before_bytes as f64 / (1 << 20) as f64,
        times[2].as_secs_f64() * 1e3,
        times[4].as_secs_f64() * 1e3,
        after - before,
        after_bytes - before_bytes,
        serde_json::to_vec(&manifest).unwrap().len()
    );
    assert_eq!(engine.count(&forks[0]).await.unwrap(), records as u64);
    let request = QueryRequest {
        embeddings: vec![data.query(0).to_vec()],
        n_results: 10,
        include: Include::none(),
        ..Default::default()
    };
    engine.query(&c, request.clone()).await.unwrap();
    let start = Instant::now();
    engine.query(&forks[1], request.clone()).await.unwrap();
    let warm = start.elapsed();
    engine.evict_all();
    let start = Instant::now();
    engine.query(&forks[2], request).await.unwrap();
    println!(
        "first query on a fork: {:.2} ms with the source in memory, {:.1} ms cold",
        warm.as_secs_f64() * 1e3,
        start.elapsed().as_secs_f64() * 1e3
    );
}
