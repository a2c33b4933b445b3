//! Scale benchmark: `scripts/bench-scale.sh N` (or `CHROMA_SCALE_N=N cargo bench -p
//! chroma-core --bench scale`).
//!
//! Makes an N-vector set from the real-embedding dataset (its rows first, then
//! normalised mixes of two of its rows plus a little noise, with the first row's
//! document and metadata; deterministic), computes the exact top-100 of every query
//! once (cached in `CHROMA_SCALE_CACHE`, default `~/.cache/chroma-scale`), and reports
//! over the local backends: ingest rate; time to fully indexed; build CPU against one
//! bare hnsw_rs build of the same vectors; peak RSS during the build, RSS after it and
//! after a restart; disk bytes per vector after garbage collection; warm query p50/p99
//! and recall@10; the first query after a restart with the page cache dropped, and with
//! every object read through a modelled S3 (25 ms p50 / 80 ms p99 first byte, 90 MB/s
//! per stream), and the cold path alone (every query against a collection not in memory,
//! by partitions probed) through the modelled S3.
//!
//! `CHROMA_SCALE_BUILD_THREADS` sets the engine's build threads (default: every core but
//! one); `CHROMA_SCALE_SKIP_BARE=1` skips the reference build (long at 1M);
//! `CHROMA_SCALE_DIM=768` widens every vector to 768 dimensions (see `widened`);
//! `CHROMA_SCALE_OPEN=DIR` only runs the warm and cold queries over a collection an
//! earlier run built (see `reopened`; with `CHROMA_SCALE_COLD_ONLY=1` only its cold
//! queries), and `CHROMA_SCALE_KEEP=1` keeps the directory a run builds in (its path is
//! printed) for that;
//! `CHROMA_SCALE_PROBES=64,128` sets the partitions the cold passes probe;
//! `CHROMA_SCALE_TRACE=1` prints the modelled S3's requests of a few cold queries, in waves
//! of requests that overlap (the round trips); `CHROMA_SCALE_TRACE=requests` prints each
//! request of each wave too.

#[path = "../tests/engine/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../tests/engine/dataset.rs"]
#[allow(dead_code)]
mod dataset;
#[path = "support/measure.rs"]
mod measure;
#[path = "support/modelled_s3.rs"]
mod modelled_s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chroma_core::catalog::sqlite::SqliteCatalog;
use chroma_core::crypto::local::LocalKeyProvider;
use chroma_core::engine::{release_memory, Engine, EngineConfig, Include, QueryRequest};
use chroma_core::index::beam_for;
use chroma_core::jobs::local::LocalJobs;
use chroma_core::model::Collection;
use chroma_core::storage::disk_cache::DiskCache;
use chroma_core::storage::hedged::{HedgePolicy, HedgedReads};
use chroma_core::storage::local::LocalStore;
use dataset::{run_cold_queries, run_default_queries, run_queries, Dataset};
use measure::{cpu_seconds, peak_rss_mib, reset_peak_rss, rss_mib};
use modelled_s3::ModelledS3;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

const BATCH: usize = 1000;
const TOP: usize = 100;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_usize("CHROMA_SCALE_N").unwrap_or(100_000);
    // As the `chroma` binary and the Lambda functions do.
    chroma_core::engine::tune_allocator();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench(n));
}

/// `v` scaled to unit length.
fn unit(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// The source dataset grown to `n` rows.
fn scaled(source: Dataset, n: usize) -> Dataset {
    let dim = source.dim;
    let src = source.len();
    let mut data = source;
    data.gt.clear();
    data.gt_year_2024.clear();
    data.base.reserve(n.saturating_sub(src) * dim);
    let mut rng = StdRng::seed_from_u64(0x5ca1e);
    for i in src..n {
        let (a, b) = (rng.gen_range(0..src), rng.gen_range(0..src));
        let t: f32 = rng.gen_range(0.3..0.7);
        let mut v: Vec<f32> = (0..dim)
            .map(|d| {
                t * data.base[a * dim + d]
                    + (1.0 - t) * data.base[b * dim + d]
                    + rng.gen_range(-0.01f32..0.01)
            })
            .collect();
        unit(&mut v);
        data.base.extend_from_slice(&v);
        data.ids.push(format!("scale-{i}"));
        data.texts.push(data.texts[a].clone());
        data.years.push(data.years[a]);
        data.categories.push(data.categories[a].clone());
        data.ranked.push(data.ranked[a]);
    }
    data.base.truncate(n * dim);
    for column in [&mut data.ids, &mut data.texts, &mut data.categories] {
        column.truncate(n);
    }
    data.years.truncate(n);
    data.ranked.truncate(n);
    data
}

/// Every base and query vector `x` widened to `[x, Px, P²x, …]` (`dim` a multiple of
/// the source's dimension) and scaled back to unit length, `P` a fixed signed permutation of the coordinates: each copy is
/// an orthogonal image of `x`, so every pair of vectors keeps its cosine (the same
/// neighbours, the same ground truth) while a vector takes `dim / source dim` times the
/// bytes and the distance work. A stand-in for wider embedding models (768 dimensions:
/// `CHROMA_SCALE_DIM=768`), whose own vectors spread over more directions.
fn widened(mut data: Dataset, dim: usize) -> Dataset {
    let from = data.dim;
    assert!(
        dim > from && dim.is_multiple_of(from),
        "CHROMA_SCALE_DIM must be a multiple of the source's {from} dimensions"
    );
    let mut rng = StdRng::seed_from_u64(0x3d1de);
    let mut order: Vec<usize> = (0..from).collect();
    for i in (1..from).rev() {
        order.swap(i, rng.gen_range(0..=i));
    }
    let signs: Vec<f32> = (0..from)
        .map(|_| if rng.gen_bool(0.5) { 1.0 } else { -1.0 })
        .collect();
    let widen = |flat: &[f32]| -> Vec<f32> {
        let mut out = Vec::with_capacity(flat.len() / from * dim);
        for x in flat.chunks_exact(from) {
            let start = out.len();
            let mut copy = x.to_vec();
            while out.len() - start < dim {
                out.extend_from_slice(&copy);
                copy = order
                    .iter()
                    .zip(&signs)
                    .map(|(&i, s)| s * copy[i])
                    .collect();
            }
            unit(&mut out[start..]);
        }
        out
    };
    data.base = widen(&data.base);
    data.queries = widen(&data.queries);
    data.dim = dim;
    data
}

/// Exact top-100 by cosine of every query, from the cache or computed (and cached).
fn ground_truth(data: &Dataset) -> Vec<Vec<u32>> {
    let (n, q, dim) = (data.len(), data.query_count(), data.dim);
    let cache = std::env::var_os("CHROMA_SCALE_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("chroma-scale")))
        .unwrap_or_else(|| std::env::temp_dir().join("chroma-scale"));
    let source = dataset::data_dir();
    let tag = std::fs::metadata(source.join("base.npy")).map_or(0, |m| m.len());
    let file = cache.join(format!("gt-n{n}-q{q}-d{dim}-src{tag}.u32"));
    if let Ok(bytes) = std::fs::read(&file) {
        if bytes.len() == q * TOP.min(n) * 4 {
            let ids: Vec<u32> = bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            return ids.chunks(TOP.min(n)).map(<[u32]>::to_vec).collect();
        }
    }
    let started = Instant::now();
    let inv_norms: Vec<f32> = (0..n)
        .into_par_iter()
        .map(|r| {
            1.0 / dot(data.vector(r), data.vector(r))
                .sqrt()
                .max(f32::MIN_POSITIVE)
        })
        .collect();
    let gt: Vec<Vec<u32>> = (0..q)
        .into_par_iter()
        .map(|qi| {
            let query = data.query(qi);
            let mut scored: Vec<(f32, u32)> = (0..n)
                .map(|r| (dot(query, data.vector(r)) * inv_norms[r], r as u32))
                .collect();
            let top = TOP.min(n);
            scored.select_nth_unstable_by(top - 1, |a, b| b.0.total_cmp(&a.0));
            scored.truncate(top);
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            scored.into_iter().map(|(_, r)| r).collect()
        })
        .collect();
    println!(
        "ground truth: top-{TOP} of {q} queries over {n} vectors computed in {:.1} s, cached in {}",
        started.elapsed().as_secs_f64(),
        file.display()
    );
    if std::fs::create_dir_all(&cache).is_ok() {
        let bytes: Vec<u8> = gt.iter().flatten().flat_map(|r| r.to_le_bytes()).collect();
        let _ = std::fs::write(&file, bytes);
    }
    gt
}

/// Dot product in eight independent lanes (so the compiler vectorizes it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Asks the kernel to drop its cached pages of every file under `dir` (what
/// `echo 1 > /proc/sys/vm/drop_caches` does, for these files, without root).
fn drop_page_cache(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            drop_page_cache(&path);
        } else if let Ok(file) = std::fs::File::open(&path) {
            use std::os::fd::AsRawFd;
            #[allow(unsafe_code)]
            // SAFETY: the descriptor is open for the duration of the call; the advice
            // only drops clean cached pages.
            unsafe {
                libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            }
        }
    }
}

fn engine_over(
    dir: &Path,
    store: Arc<dyn chroma_core::storage::ObjectStore>,
    config: EngineConfig,
) -> Arc<Engine> {
    let catalog = Arc::new(SqliteCatalog::open(&dir.join("catalog.sqlite3")).expect("catalog"));
    let keys = Arc::new(LocalKeyProvider::from_bytes(common::TEST_MASTER_KEY));
    let (jobs, _requests) = LocalJobs::new();
    Engine::new(catalog, store, keys, Arc::new(jobs), config)
}

/// The modelled S3 with reads hedged as the S3 deployments hedge them.
fn hedged(s3: &Arc<ModelledS3>) -> Arc<dyn chroma_core::storage::ObjectStore> {
    Arc::new(HedgedReads::new(s3.clone(), HedgePolicy::S3))
}

async fn first_query(engine: &Engine, data: &Dataset) -> (Collection, Duration) {
    let start = Instant::now();
    let c = engine
        .get_collection("default_tenant", "default_database", "scale")
        .await
        .unwrap();
    let request = QueryRequest {
        embeddings: vec![data.query(0).to_vec()],
        n_results: 10,
        // What Chroma's clients ask for by default.
        include: Include {
            documents: true,
            metadatas: true,
            distances: true,
            ..Include::none()
        },
        ..Default::default()
    };
    engine.query(&c, request).await.unwrap();
    (c, start.elapsed())
}

/// Warm queries at the collection's `ef_search`, then at 32, 50 and 150 (each segment is
/// walked with a beam that grows with it, `beam_for`), after a pass that warms the page
/// cache.
async fn warm_passes(engine: &Engine, c: &Collection, data: &Dataset) {
    let manifest = engine.catalog().get_manifest(c.id).await.unwrap();
    let largest = manifest.segments.iter().map(|s| s.rows).max().unwrap_or(0) as usize;
    let own = c.configuration.hnsw.ef_search;
    // One pass unmeasured: the vectors the queries re-rank come into the page cache (a
    // reopened collection's files may not be there), as they stay in a server's.
    run_queries(engine, c, data, None, |q| data.gt[q].clone()).await;
    for ef in [own, 32, 50, 150] {
        let mut other = c.clone();
        other.configuration.hnsw.ef_search = ef;
        let stats = run_queries(engine, &other, data, None, |q| data.gt[q].clone()).await;
        println!(
            "warm query, ef_search {ef} (beam {} on the largest segment): p50 {:.3} ms, p99 {:.3} ms, recall@10 {:.4}",
            beam_for(ef, largest),
            stats.percentile_ms(0.5),
            stats.percentile_ms(0.99),
            stats.recall
        );
    }
    let stats = run_default_queries(engine, c, data, |q| data.gt[q].clone()).await;
    println!(
        "warm query, ef_search {own}, with documents and metadata (the clients' default include): p50 {:.3} ms, p99 {:.3} ms, recall@10 {:.4}",
        stats.percentile_ms(0.5),
        stats.percentile_ms(0.99),
        stats.recall
    );
}

/// The query function's warm path: the collection loaded in memory, its objects read
/// through the `/tmp` block cache ([`DiskCache`], sized as on Lambda: big enough for the
/// vectors) in front of the modelled S3. One pass of the queries fills the cache (its S3
/// requests are what a new instance pays once); the next is measured, and reads the
/// vectors it re-ranks from the cache's files (here in the page cache; on Lambda, from
/// its ephemeral storage).
async fn through_disk_cache(dir: &Path, c: &Collection, data: &Dataset) {
    let s3 = Arc::new(ModelledS3::new(Arc::new(
        LocalStore::new(dir.join("objects")).unwrap(),
    )));
    let root = std::env::var_os("CHROMA_SCALE_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let files = tempfile::tempdir_in(root).unwrap();
    let cache =
        Arc::new(DiskCache::new(hedged(&s3), files.path(), 64 << 30, vec!["c/".into()]).unwrap());
    let config = EngineConfig {
        cold_query_rows: u64::MAX,
        ..EngineConfig::default()
    };
    let engine = engine_over(dir, cache.clone(), config);
    let (_, load) = first_query(&engine, data).await;
    // The segments' vectors come into the cache in the background (the engine prefetches
    // them): wait until the store has been idle for a second.
    let (mut seen, _) = s3.traffic();
    let waited = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (now, _) = s3.traffic();
        if now == seen {
            break;
        }
        seen = now;
    }
    let (loaded_requests, _) = s3.traffic();
    println!(
        "query function's load: {:.1} s to the first answer, then {:.1} s of prefetching the vectors and records into /tmp; {loaded_requests} S3 requests in all",
        load.as_secs_f64(),
        waited.elapsed().as_secs_f64(),
    );
    let fill = run_queries(&engine, c, data, None, |q| data.gt[q].clone()).await;
    let (filled_requests, _) = s3.traffic();
    let stats = run_queries(&engine, c, data, None, |q| data.gt[q].clone()).await;
    let (requests, _) = s3.traffic();
    println!(
        "query function's warm path (/tmp block cache over the modelled S3): load {:.1} s; a first pass of {} queries made {} S3 requests (p50 {:.1} ms) and cached {:.0} MB; then p50 {:.3} ms, p99 {:.3} ms, recall@10 {:.4}, {} S3 requests",
        load.as_secs_f64(),
        fill.times.len(),
        filled_requests - loaded_requests,
        fill.percentile_ms(0.5),
        cache.bytes() as f64 / 1e6,
        stats.percentile_ms(0.5),
        stats.percentile_ms(0.99),
        stats.recall,
        requests - filled_requests,
    );
    // A narrower beam re-ranks rows the first pass may not have cached.
    let mut narrow = c.clone();
    narrow.configuration.hnsw.ef_search = 50;
    run_queries(&engine, &narrow, data, None, |q| data.gt[q].clone()).await;
    let (filled, _) = s3.traffic();
    let stats = run_queries(&engine, &narrow, data, None, |q| data.gt[q].clone()).await;
    let (requests, _) = s3.traffic();
    println!(
        "query function's warm path, ef_search 50: p50 {:.3} ms, p99 {:.3} ms, recall@10 {:.4}, {} S3 requests",
        stats.percentile_ms(0.5),
        stats.percentile_ms(0.99),
        stats.recall,
        requests - filled,
    );
    // What the clients ask for by default: each result's document and metadata are read
    // from the records object (through the cache, which the load prefetched it into).
    for (name, c) in [("", c), (", ef_search 50", &narrow)] {
        let (before, _) = s3.traffic();
        let stats = run_default_queries(&engine, c, data, |q| data.gt[q].clone()).await;
        let (after, _) = s3.traffic();
        println!(
            "query function's warm path{name}, with documents and metadata: p50 {:.3} ms, p99 {:.3} ms, recall@10 {:.4}, {} S3 requests",
            stats.percentile_ms(0.5),
            stats.percentile_ms(0.99),
            stats.recall,
            after - before,
        );
    }
}

/// The cold path alone through the modelled S3: every query against a collection not in
/// memory, nothing loaded in the background, by partitions probed.
async fn cold_passes(dir: &Path, c: &Collection, data: &Dataset, probes: &[usize]) {
    for &nprobe in probes {
        let config = EngineConfig {
            cold_query_rows: 0,
            cold_nprobe: nprobe,
            warm_after_cold: false,
            ..EngineConfig::default()
        };
        let s3 = Arc::new(ModelledS3::new(Arc::new(
            LocalStore::new(dir.join("objects")).unwrap(),
        )));
        let remote = engine_over(dir, hedged(&s3), config);
        let queries = 100;
        if s3.tracing() && Some(&nprobe) == probes.first() {
            // With CHROMA_SCALE_TRACE: the requests of three queries, wave by wave.
            for q in 0..3 {
                s3.print_trace("before");
                run_cold_queries(&remote, c, data, 1, None, |q| data.gt[q].clone()).await;
                s3.print_trace(&format!("cold query {q}, {nprobe} partitions probed"));
            }
        }
        let (requests_before, bytes_before) = s3.traffic();
        let stats = run_cold_queries(&remote, c, data, queries, None, |q| data.gt[q].clone()).await;
        let (requests, bytes) = s3.traffic();
        let (requests, bytes) = (requests - requests_before, bytes - bytes_before);
        let done = stats.times.len() as f64;
        println!(
            "cold path, modelled S3, {nprobe} partitions a full segment's rows ({} probed): p50 {:.1} ms, p99 {:.1} ms, recall@10 {:.4}; per query {:.0} requests, {:.2} MB read",
            nprobe as u64 * (data.len() as u64).div_ceil(EngineConfig::default().max_segment_rows),
            stats.percentile_ms(0.5),
            stats.percentile_ms(0.99),
            stats.recall,
            requests as f64 / done,
            bytes as f64 / 1e6 / done,
        );
    }
}

/// `CHROMA_SCALE_OPEN=DIR`: the warm queries, then the cold path with the default probes,
/// over the collection an earlier run built (a copy of its directory under
/// `CHROMA_SCALE_DIR`, made while it ran), loaded whole first. Measures the query paths
/// without rebuilding (an hour at 1M x 768).
async fn reopened(dir: &Path, data: &Dataset) {
    let engine = engine_over(
        dir,
        Arc::new(LocalStore::new(dir.join("objects")).unwrap()),
        EngineConfig {
            cold_query_rows: u64::MAX,
            ..EngineConfig::default()
        },
    );
    let rss_before = rss_mib();
    reset_peak_rss();
    let (c, first) = first_query(&engine, data).await;
    println!(
        "opened {}: first query (loading the collection) {:.1} ms; engine cache {:.0} bytes/vector; RSS {:+.0} MiB after the load, peak {:+.0} MiB during it",
        dir.display(),
        first.as_secs_f64() * 1e3,
        engine.cached_bytes() as f64 / data.len() as f64,
        rss_mib() - rss_before,
        peak_rss_mib() - rss_before,
    );
    let cold_only = std::env::var_os("CHROMA_SCALE_COLD_ONLY").is_some();
    if !cold_only {
        warm_passes(&engine, &c, data).await;
    }
    drop(engine);
    release_memory();
    if !cold_only {
        through_disk_cache(dir, &c, data).await;
    }
    release_memory();
    cold_passes(
        dir,
        &c,
        data,
        &cold_probes(&[EngineConfig::default().cold_nprobe]),
    )
    .await;
}

async fn bench(n: usize) {
    let source = Dataset::load();
    let src = source.len();
    let mut data = scaled(source, n);
    if let Some(wide) = env_usize("CHROMA_SCALE_DIM").filter(|&d| d != data.dim) {
        data = widened(data, wide);
    }
    let n = data.len();
    data.gt = ground_truth(&data);
    if let Some(dir) = std::env::var_os("CHROMA_SCALE_OPEN") {
        return reopened(Path::new(&dir), &data).await;
    }
    let dataset_mib = (n * data.dim * 4) as f64 / (1 << 20) as f64;
    println!(
        "dataset: {n} vectors x {} dims ({src} real, the rest mixed), {} queries; the benchmark holds {dataset_mib:.0} MiB of vectors itself",
        data.dim,
        data.query_count()
    );

    let root = std::env::var_os("CHROMA_SCALE_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let mut dir = tempfile::tempdir_in(root).unwrap();
    if std::env::var_os("CHROMA_SCALE_KEEP").is_some() {
        dir.disable_cleanup(true);
        println!("building in {} (kept)", dir.path().display());
    }
    let defaults = EngineConfig::default();
    let config = EngineConfig {
        gc_grace: Duration::ZERO,
        build_threads: env_usize("CHROMA_SCALE_BUILD_THREADS").unwrap_or(defaults.build_threads),
        ..defaults
    };
    let threads = config.build_threads;
    let opened = common::open(dir.path(), config);
    let engine = opened.engine.clone();
    let background = engine.spawn_background(opened.requests);
    let c = common::cosine_collection(&engine, "scale").await;

    let rss_before = rss_mib();
    reset_peak_rss();
    let cpu = cpu_seconds();
    let start = Instant::now();
    for first in (0..n).step_by(BATCH) {
        engine
            .add(&c, data.batch(first..(first + BATCH).min(n)))
            .await
            .unwrap();
    }
    let acked = start.elapsed();
    while engine.indexing_status(&c).await.unwrap().unindexed_ops > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let indexed = start.elapsed();
    while !engine.is_settled(c.id).await.unwrap() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled = start.elapsed();
    let build_cpu = cpu_seconds() - cpu;
    let peak = peak_rss_mib();
    engine.collect_garbage(c.id).await.unwrap();
    release_memory();
    let rss_built = rss_mib();
    let manifest = engine.catalog().get_manifest(c.id).await.unwrap();
    let disk = disk_bytes(&dir.path().join("objects"));
    println!(
        "ingest: acknowledged {:.0} vectors/s ({:.1} s); fully indexed after {:.1} s, one segment after {:.1} s ({} segment(s))",
        n as f64 / acked.as_secs_f64(),
        acked.as_secs_f64(),
        indexed.as_secs_f64(),
        settled.as_secs_f64(),
        manifest.segments.len()
    );
    println!(
        "memory: RSS before the load {rss_before:.0} MiB, peak during it {peak:.0} MiB, after it {rss_built:.0} MiB ({:.0} bytes/vector over the start); engine cache {:.0} bytes/vector",
        (rss_built - rss_before) * (1 << 20) as f64 / n as f64,
        engine.cached_bytes() as f64 / n as f64
    );
    println!(
        "disk after garbage collection: {:.0} bytes/vector = {:.2}x the raw f32 vectors",
        disk as f64 / n as f64,
        disk as f64 / (n * data.dim * 4) as f64
    );
    warm_passes(&engine, &c, &data).await;
    background.abort();
    // The aborted task holds the engine until it has really stopped.
    let _ = background.await;
    drop(engine);
    drop(opened.engine);
    release_memory();

    // Restart on local files, their pages dropped from the cache.
    let rss_closed = rss_mib();
    drop_page_cache(dir.path());
    let local = engine_over(
        dir.path(),
        Arc::new(LocalStore::new(dir.path().join("objects")).unwrap()),
        EngineConfig::default(),
    );
    let (c, cold) = first_query(&local, &data).await;
    let again = run_queries(&local, &c, &data, None, |q| data.gt[q].clone()).await;
    release_memory();
    let rss_restarted = rss_mib();
    println!(
        "restart, local files, page cache dropped: first query {:.1} ms; then p50 {:.3} ms, recall@10 {:.4}; RSS {:+.0} MiB = {:.0} bytes/vector, engine cache {:.0} bytes/vector",
        cold.as_secs_f64() * 1e3,
        again.percentile_ms(0.5),
        again.recall,
        rss_restarted - rss_closed,
        (rss_restarted - rss_closed) * (1 << 20) as f64 / n as f64,
        local.cached_bytes() as f64 / n as f64
    );
    drop(local);
    release_memory();

    // Restart with every object read through a modelled S3.
    let s3 = Arc::new(ModelledS3::new(Arc::new(
        LocalStore::new(dir.path().join("objects")).unwrap(),
    )));
    let remote = engine_over(dir.path(), hedged(&s3), EngineConfig::default());
    s3.print_trace("opening");
    let (c, cold) = first_query(&remote, &data).await;
    let (requests, bytes) = s3.traffic();
    s3.print_trace("restart, first query");
    let (_, warm_again) = first_query(&remote, &data).await;
    println!(
        "restart, modelled S3: first query {:.1} ms ({requests} requests, {:.1} MB read = {:.0} bytes/vector; {}); the same query again {:.1} ms",
        cold.as_secs_f64() * 1e3,
        bytes as f64 / 1e6,
        bytes as f64 / n as f64,
        if n as u64 >= EngineConfig::default().cold_query_rows {
            "the cold path, loading in the background"
        } else {
            "loaded first"
        },
        warm_again.as_secs_f64() * 1e3
    );
    drop(remote);
    release_memory();

    through_disk_cache(dir.path(), &c, &data).await;
    release_memory();
    cold_passes(
        dir.path(),
        &c,
        &data,
        &cold_probes(&[16, 32, 64, 80, 96, 128]),
    )
    .await;

    // The cold path with a filter (year >= 2024): the probed partitions' metadata is read
    // too, or, for a query whose probed partitions hold too few passing rows, the
    // collection is loaded (that query's reads show it).
    {
        let config = EngineConfig {
            cold_query_rows: 0,
            warm_after_cold: false,
            ..EngineConfig::default()
        };
        let s3 = Arc::new(ModelledS3::new(Arc::new(
            LocalStore::new(dir.path().join("objects")).unwrap(),
        )));
        let remote = engine_over(dir.path(), hedged(&s3), config);
        let queries = 100.min(data.query_count());
        let passing = data.years.iter().filter(|&&y| y >= 2024).count();
        let truth: Vec<Vec<u32>> = (0..queries)
            .map(|q| data.brute_force(q, 10, |r| data.years[r] >= 2024))
            .collect();
        let year = serde_json::json!({"year": {"$gte": 2024}});
        let (requests_before, bytes_before) = s3.traffic();
        let stats = run_cold_queries(&remote, &c, &data, queries, Some(year), |q| {
            truth[q].clone()
        })
        .await;
        let (requests, bytes) = s3.traffic();
        let (requests, bytes) = (requests - requests_before, bytes - bytes_before);
        let done = stats.times.len() as f64;
        println!(
            "cold path, modelled S3, filtered (year >= 2024: {:.0}% of the rows): p50 {:.1} ms, p99 {:.1} ms, recall@10 {:.4}; per query {:.0} requests, {:.2} MB read",
            100.0 * passing as f64 / data.len() as f64,
            stats.percentile_ms(0.5),
            stats.percentile_ms(0.99),
            stats.recall,
            requests as f64 / done,
            bytes as f64 / 1e6 / done,
        );
    }

    // The reference: one bare hnsw_rs build of every vector.
    if std::env::var_os("CHROMA_SCALE_SKIP_BARE").is_some() {
        println!("reference: bare hnsw_rs build skipped (CHROMA_SCALE_SKIP_BARE); the engine's build CPU {build_cpu:.1} s on {threads} thread(s)");
        return;
    }
    let (bare, bare_cpu) = bare_build(&data);
    println!(
        "reference: bare hnsw_rs build {:.1} s, {bare_cpu:.1} CPU s; the engine's build CPU {build_cpu:.1} s = {:.2}x it (builds on {threads} thread(s))",
        bare.as_secs_f64(),
        build_cpu / bare_cpu
    );
}

/// The partitions probed by the cold passes: `CHROMA_SCALE_PROBES` (comma-separated),
/// else `default`.
fn cold_probes(default: &[usize]) -> Vec<usize> {
    std::env::var("CHROMA_SCALE_PROBES")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect::<Vec<usize>>()
        })
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// A number from the environment (`_` separators allowed).
fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
}

/// hnsw_rs alone over every vector (M 16, ef_construction 100, parallel insert).
fn bare_build(data: &Dataset) -> (Duration, f64) {
    use hnsw_rs::prelude::*;
    let cpu = cpu_seconds();
    let start = Instant::now();
    let n = data.len();
    let hnsw: Hnsw<f32, DistDot> = Hnsw::new(16, n, 16, 100, DistDot {});
    let rows: Vec<(&[f32], usize)> = (0..n).map(|r| (data.vector(r), r)).collect();
    hnsw.parallel_insert_slice(&rows);
    (start.elapsed(), cpu_seconds() - cpu)
}
