//! Hedged reads: a ranged read (or a `head`) that has not answered when most requests
//! would have is sent a second time, and the first answer wins.
//!
//! A query on the cold path waits for the slowest of a few dozen ranged GETs per round
//! trip, so S3's latency tail — not its median — sets the query's latency: with a first
//! byte of 25 ms at p50 and 80 ms at p99, the slowest of 50 requests takes about 75 ms.
//! AWS's performance guidance for latency-sensitive reads is to retry those that are
//! slow; a second request draws a fresh latency, so the slowest of 50 hedged requests
//! takes little more than the hedge delay plus a median, for a few percent more requests.
//!
//! Only reads are hedged (they have no effect to repeat), and only once each. The hedge
//! delay grows with the bytes asked for, so a long transfer is not taken for a slow
//! start. A read that fails before its hedge is sent fails at once (the S3 client has
//! retried it already); once both are out, the first success wins and an error is
//! returned only when both fail. The losing request is dropped (cancelled).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::Either;

use super::{ObjectMeta, ObjectStore};
use crate::error::Result;

/// When a read is sent again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgePolicy {
    /// A read with nothing to transfer is hedged after this long.
    pub delay: Duration,
    /// Plus the time its bytes take at this rate.
    pub bytes_per_second: f64,
}

impl HedgePolicy {
    /// For S3 from a function in the same region: the first byte's p95 is about 50–60 ms,
    /// and one stream delivers about 90 MB/s (counted at half that, so that only reads
    /// that are really late are sent again).
    pub const S3: HedgePolicy = HedgePolicy {
        delay: Duration::from_millis(55),
        bytes_per_second: 45e6,
    };

    /// How long a read of `bytes` gets before it is sent again.
    pub fn delay_for(&self, bytes: u64) -> Duration {
        let transfer = if self.bytes_per_second > 0.0 {
            bytes as f64 / self.bytes_per_second
        } else {
            0.0
        };
        self.delay + Duration::from_secs_f64(transfer)
    }
}

/// An [`ObjectStore`] whose reads are hedged (see the module's documentation); writes,
/// listings and whole-object reads go straight to the inner store.
#[derive(Debug)]
pub struct HedgedReads {
    inner: Arc<dyn ObjectStore>,
    policy: HedgePolicy,
    hedges: AtomicU64,
}

impl HedgedReads {
    pub fn new(inner: Arc<dyn ObjectStore>, policy: HedgePolicy) -> Self {
        Self {
            inner,
            policy,
            hedges: AtomicU64::new(0),
        }
    }

    /// Reads sent a second time so far.
    pub fn hedges(&self) -> u64 {
        self.hedges.load(Ordering::Relaxed)
    }

    /// `read()`, sent again if it has not answered after `delay`.
    async fn hedged<T, F, Fut>(&self, delay: Duration, read: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let first = std::pin::pin!(read());
        let timer = std::pin::pin!(tokio::time::sleep(delay));
        let first = match futures::future::select(first, timer).await {
            Either::Left((answer, _)) => return answer,
            Either::Right(((), first)) => first,
        };
        self.hedges.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(?delay, "hedging a slow read");
        let second = std::pin::pin!(read());
        match futures::future::select(first, second).await {
            Either::Left((Ok(v), _)) | Either::Right((Ok(v), _)) => Ok(v),
            Either::Left((Err(_), other)) => other.await,
            Either::Right((Err(_), other)) => other.await,
        }
    }
}

#[async_trait]
impl ObjectStore for HedgedReads {
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.inner.get(key).await
    }

    async fn get_version(&self, key: &str, etag: &str) -> Result<Bytes> {
        self.inner.get_version(key, etag).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let delay = self.policy.delay_for(range.end.saturating_sub(range.start));
        self.hedged(delay, || self.inner.get_range(key, range.clone()))
            .await
    }

    // get_ranges: the trait's default, every range hedged on its own.

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.hedged(self.policy.delay, || self.inner.head(key))
            .await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.inner.put(key, data).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()> {
        self.inner.put_if_absent(key, data).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;
    use crate::error::{Error, ErrorCode};
    use crate::storage::memory::MemoryStore;

    /// Answers the n-th read of any key after `delays[n]` (the last delay after that),
    /// failing those listed in `fail`.
    #[derive(Debug)]
    struct Scripted {
        inner: MemoryStore,
        delays: Vec<Duration>,
        fail: Vec<usize>,
        reads: Mutex<usize>,
    }

    impl Scripted {
        fn new(delays: &[u64], fail: &[usize]) -> Self {
            Self {
                inner: MemoryStore::new(),
                delays: delays.iter().map(|&ms| Duration::from_millis(ms)).collect(),
                fail: fail.to_vec(),
                reads: Mutex::new(0),
            }
        }

        async fn turn(&self) -> Result<()> {
            let n = {
                let mut reads = self.reads.lock().unwrap();
                *reads += 1;
                *reads - 1
            };
            let delay = self.delays[n.min(self.delays.len() - 1)];
            tokio::time::sleep(delay).await;
            if self.fail.contains(&n) {
                return Err(Error::unavailable(format!("read {n} failed")));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl ObjectStore for Scripted {
        async fn get(&self, key: &str) -> Result<Bytes> {
            self.turn().await?;
            self.inner.get(key).await
        }
        async fn get_version(&self, key: &str, etag: &str) -> Result<Bytes> {
            self.inner.get_version(key, etag).await
        }
        async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
            self.turn().await?;
            self.inner.get_range(key, range).await
        }
        async fn head(&self, key: &str) -> Result<ObjectMeta> {
            self.turn().await?;
            self.inner.head(key).await
        }
        async fn put(&self, key: &str, data: Bytes) -> Result<()> {
            self.inner.put(key, data).await
        }
        async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()> {
            self.inner.put_if_absent(key, data).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            self.inner.list(prefix).await
        }
    }

    // Real time, with margins of hundreds of milliseconds for a loaded machine.
    const POLICY: HedgePolicy = HedgePolicy {
        delay: Duration::from_millis(200),
        bytes_per_second: 1e6,
    };

    async fn store(delays: &[u64], fail: &[usize]) -> (Arc<Scripted>, HedgedReads) {
        let scripted = Arc::new(Scripted::new(delays, fail));
        scripted
            .inner
            .put("k", Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        let hedged = HedgedReads::new(scripted.clone(), POLICY);
        (scripted, hedged)
    }

    #[tokio::test]
    async fn a_slow_read_is_sent_again_and_the_first_answer_wins() {
        let (scripted, hedged) = store(&[20_000, 5], &[]).await;
        let start = Instant::now();
        // 2 bytes at 1 MB/s: hedged after 200 ms + 2 µs.
        assert_eq!(&hedged.get_range("k", 2..4).await.unwrap()[..], b"23");
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert_eq!(hedged.hedges(), 1);
        assert_eq!(*scripted.reads.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_read_in_time_is_sent_once() {
        let (scripted, hedged) = store(&[1], &[]).await;
        assert_eq!(&hedged.get_range("k", 0..3).await.unwrap()[..], b"012");
        assert_eq!(hedged.head("k").await.unwrap().size, 10);
        assert_eq!(hedged.hedges(), 0);
        assert_eq!(*scripted.reads.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_long_transfer_gets_its_transfer_time_before_a_hedge() {
        // 1 MB at 1 MB/s: a second of transfer, so a read of 500 ms is not late.
        assert_eq!(POLICY.delay_for(1_000_000), Duration::from_millis(1200));
        let (scripted, hedged) = store(&[500], &[]).await;
        let big = Bytes::from(vec![7u8; 1_000_000]);
        scripted.inner.put("big", big).await.unwrap();
        let got = hedged.get_range("big", 0..1_000_000).await.unwrap();
        assert_eq!(got.len(), 1_000_000);
        assert_eq!(hedged.hedges(), 0);
        assert_eq!(*scripted.reads.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn errors_before_the_hedge_fail_at_once_and_after_it_only_when_both_fail() {
        // The first read fails in time: no hedge, its error.
        let (_, hedged) = store(&[1], &[0]).await;
        let err = hedged.get_range("k", 0..1).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert_eq!(hedged.hedges(), 0);
        // The slow first read fails after the hedge went out: the hedge answers.
        let (_, hedged) = store(&[600, 900], &[0]).await;
        assert_eq!(&hedged.get_range("k", 0..1).await.unwrap()[..], b"0");
        assert_eq!(hedged.hedges(), 1);
        // The hedge fails first: the slow first read still answers.
        let (_, hedged) = store(&[900, 1], &[1]).await;
        assert_eq!(&hedged.get_range("k", 0..1).await.unwrap()[..], b"0");
        assert_eq!(hedged.hedges(), 1);
        // Both fail: an error.
        let (_, hedged) = store(&[900, 1], &[0, 1]).await;
        assert!(hedged.get_range("k", 0..1).await.is_err());
        // A missing key is an error either way.
        let (_, hedged) = store(&[1], &[]).await;
        let err = hedged.get_range("missing", 0..1).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
    }

    #[tokio::test]
    async fn the_store_contract_holds() {
        let store = HedgedReads::new(Arc::new(MemoryStore::new()), HedgePolicy::S3);
        crate::storage::conformance::suite(&store).await;
    }
}
