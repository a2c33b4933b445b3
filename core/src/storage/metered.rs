//! An [`ObjectStore`] decorator that counts requests and bytes (see [`crate::metrics`]).
//! The engine wraps its store in one, so every backend is measured the same way.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectMeta, ObjectStore};
use crate::error::Result;
use crate::metrics;

#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn ObjectStore>,
}

impl Metered {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

/// Counts a read's bytes when it succeeded.
fn read(result: Result<Bytes>) -> Result<Bytes> {
    if let Ok(b) = &result {
        metrics::storage_read(b.len());
    }
    result
}

#[async_trait]
impl ObjectStore for Metered {
    async fn get(&self, key: &str) -> Result<Bytes> {
        metrics::storage_request("get");
        read(self.inner.get(key).await)
    }

    async fn get_version(&self, key: &str, etag: &str) -> Result<Bytes> {
        metrics::storage_request("get");
        read(self.inner.get_version(key, etag).await)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        metrics::storage_request("get_range");
        read(self.inner.get_range(key, range).await)
    }

    async fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        for _ in ranges {
            metrics::storage_request("get_range");
        }
        let pieces = self.inner.get_ranges(key, ranges).await?;
        metrics::storage_read(pieces.iter().map(Bytes::len).sum());
        Ok(pieces)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        metrics::storage_request("head");
        self.inner.head(key).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        metrics::storage_request("put");
        let len = data.len();
        self.inner.put(key, data).await?;
        metrics::storage_written(len);
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()> {
        metrics::storage_request("put");
        let len = data.len();
        self.inner.put_if_absent(key, data).await?;
        metrics::storage_written(len);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        metrics::storage_request("delete");
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        metrics::storage_request("list");
        self.inner.list(prefix).await
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        let store = super::Metered::new(std::sync::Arc::new(
            crate::storage::memory::MemoryStore::new(),
        ));
        crate::storage::conformance::suite(&store).await;
    }
}
