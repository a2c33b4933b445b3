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

#[derive(Debug)]
pub struct ModelledS3 {
    inner: Arc<dyn ObjectStore>,
    rng: Mutex<StdRng>,
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl ModelledS3 {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            rng: Mutex::new(StdRng::seed_from_u64(25)),
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
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

    async fn answer(&self, bytes: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let transfer = Duration::from_secs_f64(bytes as f64 / BYTES_PER_SECOND);
        tokio::time::sleep(self.first_byte() + transfer).await;
    }
}

#[async_trait]
impl ObjectStore for ModelledS3 {
    async fn get(&self, key: &str) -> Result<Bytes> {
        let data = self.inner.get(key).await?;
        self.answer(data.len()).await;
        Ok(data)
    }

    async fn get_version(&self, key: &str, etag: &str) -> Result<Bytes> {
        let data = self.inner.get_version(key, etag).await?;
        self.answer(data.len()).await;
        Ok(data)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let data = self.inner.get_range(key, range).await?;
        self.answer(data.len()).await;
        Ok(data)
    }

    // get_ranges: the trait's default, one concurrent request per range, as on S3.

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let meta = self.inner.head(key).await?;
        self.answer(0).await;
        Ok(meta)
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.answer(0).await;
        self.inner.put(key, data).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()> {
        self.answer(0).await;
        self.inner.put_if_absent(key, data).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.answer(0).await;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let list = self.inner.list(prefix).await?;
        self.answer(0).await;
        Ok(list)
    }
}
