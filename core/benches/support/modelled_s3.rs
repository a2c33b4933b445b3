//! An object store that answers like S3 seen from a Lambda function in the same region:
//! every request waits a first-byte latency drawn from a log-normal distribution (p50
//! 25 ms, p99 80 ms), then its bytes arrive at 90 MB/s per stream. Requests run
//! concurrently, as the S3 backend sends them. Used only by benchmarks, over a local
//! directory the data was written to.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chroma_core::error::Result;
use chroma_core::storage::{ObjectMeta, ObjectStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FIRST_BYTE_P50_MS: f64 = 25.0;
const FIRST_BYTE_P99_MS: f64 = 80.0;
const BYTES_PER_SECOND: f64 = 90e6;

/// A request traced: start and end since the trace began, bytes, key.
type Traced = (Duration, Duration, usize, String);

#[derive(Debug)]
pub struct ModelledS3 {
    inner: Arc<dyn ObjectStore>,
    rng: Mutex<StdRng>,
    requests: AtomicU64,
    bytes: AtomicU64,
    /// With `CHROMA_SCALE_TRACE`: every request's (start, end, bytes, key) since `epoch`.
    trace: Option<Mutex<Vec<Traced>>>,
    epoch: Mutex<std::time::Instant>,
}

impl ModelledS3 {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            rng: Mutex::new(StdRng::seed_from_u64(25)),
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            trace: std::env::var_os("CHROMA_SCALE_TRACE").map(|_| Mutex::new(Vec::new())),
            epoch: Mutex::new(std::time::Instant::now()),
        }
    }

    /// Whether requests are traced (`CHROMA_SCALE_TRACE` is set).
    pub fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    /// Prints the requests traced since the last call (with `CHROMA_SCALE_TRACE` set),
    /// grouped in waves of requests that overlap, and starts a new trace.
    pub fn print_trace(&self, what: &str) {
        let Some(trace) = &self.trace else { return };
        let mut all = std::mem::take(&mut *trace.lock().unwrap());
        *self.epoch.lock().unwrap() = std::time::Instant::now();
        all.sort_by_key(|t| t.0);
        println!("trace: {what}: {} requests", all.len());
        // CHROMA_SCALE_TRACE=requests: every request of every wave too.
        let verbose = std::env::var("CHROMA_SCALE_TRACE").is_ok_and(|v| v == "requests");
        let mut wave: Vec<&Traced> = Vec::new();
        let mut end = Duration::ZERO;
        let flush = |wave: &mut Vec<&Traced>| {
            if let (Some(first), Some(last)) = (wave.first(), wave.iter().map(|t| t.1).max()) {
                let bytes: usize = wave.iter().map(|t| t.2).sum();
                let mut keys: Vec<&str> = wave
                    .iter()
                    .map(|t| t.3.rsplit('/').next().unwrap_or(""))
                    .collect();
                keys.sort();
                keys.dedup();
                println!(
                    "  {:7.1} .. {:7.1} ms: {:4} requests, {:9} bytes: {}",
                    first.0.as_secs_f64() * 1e3,
                    last.as_secs_f64() * 1e3,
                    wave.len(),
                    bytes,
                    keys.join(" ")
                );
                if verbose {
                    let mut each: Vec<&&Traced> = wave.iter().collect();
                    each.sort_by_key(|t| t.1);
                    for t in each {
                        println!(
                            "      {:7.1} .. {:7.1} ms {:9} bytes {}",
                            t.0.as_secs_f64() * 1e3,
                            t.1.as_secs_f64() * 1e3,
                            t.2,
                            t.3.rsplit('/').next().unwrap_or("")
                        );
                    }
                }
            }
            wave.clear();
        };
        for t in &all {
            if !wave.is_empty() && t.0 > end {
                flush(&mut wave);
            }
            end = end.max(t.1);
            wave.push(t);
        }
        flush(&mut wave);
    }

    /// Requests answered and bytes returned so far.
    pub fn traffic(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    fn first_byte(&self) -> Duration {
        // ln(latency) ~ N(mu, sigma) with exp(mu) the p50 and exp(mu + 2.326 sigma) the p99.
        let mu = FIRST_BYTE_P50_MS.ln();
        let sigma = (FIRST_BYTE_P99_MS / FIRST_BYTE_P50_MS).ln() / 2.326;
        let (u1, u2): (f64, f64) = {
            let mut rng = self.rng.lock().unwrap();
            (rng.gen_range(f64::EPSILON..1.0), rng.gen_range(0.0..1.0))
        };
        let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        Duration::from_secs_f64((mu + sigma * normal).exp() / 1e3)
    }

    /// Answers a request that arrived at `arrived` for `bytes` bytes once its modelled
    /// latency has passed since then: reading the local copy is part of that time, not
    /// added to it.
    async fn answer(&self, arrived: std::time::Instant, key: &str, bytes: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let transfer = Duration::from_secs_f64(bytes as f64 / BYTES_PER_SECOND);
        let epoch = *self.epoch.lock().unwrap();
        let start = arrived.saturating_duration_since(epoch);
        tokio::time::sleep_until((arrived + self.first_byte() + transfer).into()).await;
        if let Some(trace) = &self.trace {
            let end = epoch.elapsed();
            trace
                .lock()
                .unwrap()
                .push((start, end, bytes, key.to_string()));
        }
    }
}

#[async_trait]
impl ObjectStore for ModelledS3 {
    async fn get(&self, key: &str) -> Result<Bytes> {
        let arrived = std::time::Instant::now();
        let data = self.inner.get(key).await?;
        self.answer(arrived, key, data.len()).await;
        Ok(data)
    }

    async fn get_version(&self, key: &str, etag: &str) -> Result<Bytes> {
        let arrived = std::time::Instant::now();
        let data = self.inner.get_version(key, etag).await?;
        self.answer(arrived, key, data.len()).await;
        Ok(data)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let arrived = std::time::Instant::now();
        let data = self.inner.get_range(key, range).await?;
        self.answer(arrived, key, data.len()).await;
        Ok(data)
    }

    // get_ranges: the trait's default, one concurrent request per range, as on S3.

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let arrived = std::time::Instant::now();
        let meta = self.inner.head(key).await?;
        self.answer(arrived, key, 0).await;
        Ok(meta)
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.answer(std::time::Instant::now(), key, 0).await;
        self.inner.put(key, data).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()> {
        self.answer(std::time::Instant::now(), key, 0).await;
        self.inner.put_if_absent(key, data).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.answer(std::time::Instant::now(), key, 0).await;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let arrived = std::time::Instant::now();
        let list = self.inner.list(prefix).await?;
        self.answer(arrived, prefix, 0).await;
        Ok(list)
    }
}
