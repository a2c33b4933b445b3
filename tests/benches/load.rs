//! Load benchmark (`scripts/bench-load.sh`): a `chroma run` process (`CHROMA_BIN`, a
//! release build) over a fresh data directory, loaded with the dataset's vectors
//! (`CHROMA_DEV_DATA`, else the repository's sample) and indexed, then
//! `CHROMA_LOAD_CONNECTIONS` (64) concurrent connections of mixed requests for
//! `CHROMA_LOAD_SECONDS` (60): queries for the top 10 of a dataset query (every fourth with
//! a metadata filter) and, one request in `CHROMA_LOAD_WRITE_EVERY` (10), an upsert of 10
//! records. Reports throughput, p50/p99 per kind, every answer that was not a success, the
//! server's memory (before, peak, after) and how long SIGTERM takes to stop it. Fails if
//! any request failed or the server did not stop cleanly.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const DB: &str = "/api/v2/tenants/default_tenant/databases/default_database";
const MASTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn data_dir() -> PathBuf {
    match std::env::var("CHROMA_DEV_DATA") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample"),
    }
}

/// A 2-d f32 `.npy` file: its row width and values.
fn npy_f32(path: &Path) -> (usize, Vec<f32>) {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let file = npyz::NpyFile::new(&bytes[..]).expect("npy header");
    let dim = file.shape()[1] as usize;
    (dim, file.into_vec::<f32>().expect("npy data"))
}

/// A field of `/proc/PID/status` in MiB (VmRSS, VmHWM).
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Starts the server and returns it with its base URL.
fn start(bin: &Path, dir: &Path) -> (Child, String) {
    let mut child = Command::new(bin)
        .arg("run")
        .arg("--path")
        .arg(dir)
        .args(["--port", "0"])
        .env_remove("CHROMA_BACKEND")
        .env_remove("CHROMA_PATH")
        .env_remove("CHROMA_MASTER_KEY_FILE")
        .env("CHROMA_MASTER_KEY", MASTER_KEY)
        .env(
            "RUST_LOG",
            std::env::var("CHROMA_LOAD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("chroma exited before it listened")
            .expect("read chroma's output");
        if let Some((_, rest)) = line.split_once("listening on ") {
            break rest
                .split_whitespace()
                .next()
                .expect("an address")
                .to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, url)
}

async fn call(http: &reqwest::Client, url: String, body: &Value) -> Value {
    let r = http.post(&url).json(body).send().await.expect("request");
    let status = r.status();
    let text = r.text().await.expect("body");
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Latencies of one kind of request, and its failures by status.
#[derive(Default)]
struct Tally {
    micros: Vec<u64>,
    failures: BTreeMap<String, u64>,
}

impl Tally {
    fn percentile(sorted: &[u64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let i = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[i] as f64 / 1000.0
    }
}

#[tokio::main]
async fn main() {
    let bin = PathBuf::from(std::env::var("CHROMA_BIN").expect("CHROMA_BIN: the chroma binary"));
    let seconds: u64 = env_or("CHROMA_LOAD_SECONDS", 60);
    let connections: usize = env_or("CHROMA_LOAD_CONNECTIONS", 64);
    let write_every: u64 = env_or("CHROMA_LOAD_WRITE_EVERY", 10).max(1);

    let dir = data_dir();
    let (dim, base) = npy_f32(&dir.join("base.npy"));
    let (_, queries) = npy_f32(&dir.join("queries.npy"));
    let n = base.len() / dim;
    let n_queries = queries.len() / dim;
    println!(
        "load: {n} vectors x {dim} dims from {}, {n_queries} queries",
        dir.display()
    );

    let data = tempfile::tempdir().expect("temp dir");
    let (mut server, url) = start(&bin, data.path());
    let pid = server.id();
    let started_mib = status_mib(pid, "VmRSS:");
    // reqwest is built on rustls without a default crypto provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");

    let created = call(
        &http,
        format!("{url}{DB}/collections"),
        &json!({"name": "load", "configuration": {"hnsw": {"space": "cosine"}}}),
    )
    .await;
    let id = created["id"].as_str().expect("collection id").to_owned();
    let c = format!("{url}{DB}/collections/{id}");

    let load = Instant::now();
    for start in (0..n).step_by(1000) {
        let rows = start..(start + 1000).min(n);
        let body = json!({
            "ids": rows.clone().map(|i| format!("r{i}")).collect::<Vec<_>>(),
            "embeddings": rows.clone().map(|i| &base[i * dim..(i + 1) * dim]).collect::<Vec<_>>(),
            "metadatas": rows.map(|i| json!({"year": 2000 + (i % 30)})).collect::<Vec<_>>(),
        });
        call(&http, format!("{c}/add"), &body).await;
    }
    let ingested = load.elapsed().as_secs_f64();
    loop {
        let r = http
            .get(format!("{c}/indexing_status"))
            .send()
            .await
            .expect("indexing status");
        let s: Value = r.json().await.expect("indexing status body");
        if s["num_unindexed_ops"].as_u64() == Some(0) {
            break;
        }
        assert!(
            load.elapsed() < Duration::from_secs(1800),
            "not indexed: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "load: ingested in {ingested:.1} s ({:.0} vectors/s), indexed after {:.1} s",
        n as f64 / ingested,
        load.elapsed().as_secs_f64()
    );

    // The peak from here on is the load's.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let before_mib = status_mib(pid, "VmRSS:");
    let base = Arc::new(base);
    let queries = Arc::new(queries);
    let next_id = Arc::new(AtomicU64::new(n as u64));
    let issued = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let began = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let (http, c, base, queries) = (http.clone(), c.clone(), base.clone(), queries.clone());
        let (next_id, issued) = (next_id.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
            let mut i = worker as u64;
            while Instant::now() < deadline {
                let k = issued.fetch_add(1, Ordering::Relaxed);
                let (kind, path, body) = if k % write_every == write_every - 1 {
                    let first = next_id.fetch_add(10, Ordering::Relaxed);
                    let rows: Vec<usize> = (0..10).map(|j| ((first + j) as usize) % n).collect();
                    let body = json!({
                        "ids": (first..first + 10).map(|r| format!("r{r}")).collect::<Vec<_>>(),
                        "embeddings": rows.iter().map(|&r| &base[r * dim..(r + 1) * dim]).collect::<Vec<_>>(),
                        "metadatas": rows.iter().map(|&r| json!({"year": 2000 + (r % 30)})).collect::<Vec<_>>(),
                    });
                    ("upsert", "upsert", body)
                } else {
                    let q = (i as usize) % n_queries;
                    i += connections as u64;
                    let mut body = json!({
                        "query_embeddings": [&queries[q * dim..(q + 1) * dim]],
                        "n_results": 10,
                        "include": ["distances"],
                    });
                    if k % 4 == 0 {
                        body["where"] = json!({"year": {"$gte": 2015}});
                        ("query, filtered", "query", body)
                    } else {
                        ("query", "query", body)
                    }
                };
                let t = Instant::now();
                let result = http.post(format!("{c}/{path}")).json(&body).send().await;
                let tally = tallies.entry(kind).or_default();
                match result {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        tally.micros.push(t.elapsed().as_micros() as u64);
                    }
                    Ok(r) => *tally.failures.entry(r.status().to_string()).or_default() += 1,
                    Err(e) => *tally.failures.entry(format!("error: {e}")).or_default() += 1,
                }
            }
            tallies
        }));
    }
    let mut peak_sampled = before_mib;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak_sampled = peak_sampled.max(status_mib(pid, "VmRSS:"));
    }
    let mut all: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for t in tasks {
        for (kind, tally) in t.await.expect("worker") {
            let into = all.entry(kind).or_default();
            into.micros.extend(tally.micros);
            for (status, count) in tally.failures {
                *into.failures.entry(status).or_default() += count;
            }
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let after_mib = status_mib(pid, "VmRSS:");
    let peak_mib = status_mib(pid, "VmHWM:").max(peak_sampled);

    let total: usize = all.values().map(|t| t.micros.len()).sum();
    println!(
        "load: {connections} connections for {elapsed:.1} s: {total} requests answered, {:.0} per second",
        total as f64 / elapsed
    );
    let mut failed = 0;
    for (kind, tally) in &mut all {
        tally.micros.sort_unstable();
        println!(
            "load: {kind:<16} {:>7} answered, {:>7.0}/s, p50 {:>7.2} ms, p99 {:>7.2} ms",
            tally.micros.len(),
            tally.micros.len() as f64 / elapsed,
            Tally::percentile(&tally.micros, 0.5),
            Tally::percentile(&tally.micros, 0.99),
        );
        for (status, count) in &tally.failures {
            println!("load: {kind:<16} FAILED {count} times: {status}");
            failed += count;
        }
    }
    println!(
        "load: server RSS {started_mib:.0} MiB at start, {before_mib:.0} MiB loaded and indexed, \
         peak {peak_mib:.0} MiB under load, {after_mib:.0} MiB after it"
    );

    let stop = Instant::now();
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill -TERM {pid}: {sent}");
    let status = server.wait().expect("wait for chroma");
    println!(
        "load: SIGTERM stopped the server in {:.2} s ({status})",
        stop.elapsed().as_secs_f64()
    );
    assert_eq!(failed, 0, "requests failed");
    assert!(status.success(), "chroma exited with {status}");
}
