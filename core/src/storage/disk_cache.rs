//! A read-through cache of whole objects on local disk, in front of a remote store.
//!
//! Made for Lambda functions: `/tmp` survives between warm invocations of one execution
//! environment, so a segment fetched from S3 once is read from local disk afterwards.
//! Objects are immutable (the port's contract), so a cached copy never goes stale; only
//! keys under the given prefixes (the collections' data) are cached — never objects that
//! users write, such as ingest files. Bytes are kept exactly as the store returned them,
//! i.e. still encrypted: nothing decoded touches the disk.
//!
//! Ranged reads are cached by aligned blocks of [`BLOCK`] bytes: a segment's index is
//! read as its head plus a few vectors per query, so only the blocks queries touch are
//! fetched and kept, never the whole (up to gigabytes of) vectors. A read spanning more
//! than [`MAX_BLOCKS_PER_READ`] blocks (a compaction reading a segment whole) goes
//! straight to the store.
//!
//! The cache holds at most `capacity` bytes; the least recently used files (objects or
//! blocks) leave first. The directory is emptied when the cache is created (its index
//! lives in memory).

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{ObjectMeta, ObjectStore};
use crate::error::{Error, Result};

/// Size of a cached block of a ranged read.
pub const BLOCK: u64 = 256 * 1024;
/// Ranged reads over more blocks than this are not cached.
pub const MAX_BLOCKS_PER_READ: u64 = 16;

/// An [`ObjectStore`] that keeps copies of the objects it reads in a local directory.
#[derive(Debug)]
pub struct DiskCache {
    inner: std::sync::Arc<dyn ObjectStore>,
    dir: PathBuf,
    capacity: u64,
    prefixes: Vec<String>,
    index: Mutex<Index>,
}

#[derive(Debug, Default)]
struct Index {
    /// File name → (size, last use).
    entries: HashMap<String, (u64, u64)>,
    bytes: u64,
    tick: u64,
}

impl DiskCache {
    /// Caches reads of keys starting with one of `prefixes` in `dir` (created, and emptied
    /// of earlier cache files), up to `capacity` bytes.
    pub fn new(
        inner: std::sync::Arc<dyn ObjectStore>,
        dir: impl Into<PathBuf>,
        capacity: u64,
        prefixes: Vec<String>,
    ) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        for entry in std::fs::read_dir(&dir).map_err(|e| io_error(&dir, e))? {
            let path = entry.map_err(|e| io_error(&dir, e))?.path();
            if path.is_file() {
                std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
            }
        }
        Ok(Self {
            inner,
            dir,
            capacity,
            prefixes,
            index: Mutex::new(Index::default()),
        })
    }

    /// Bytes currently cached on disk.
    pub fn bytes(&self) -> u64 {
        self.index.lock().expect("disk cache lock").bytes
    }

    fn cacheable(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    fn file_name(key: &str) -> String {
        let digest = Sha256::digest(key.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Marks `name` used; whether it is cached.
    fn touch(&self, name: &str) -> bool {
        let mut index = self.index.lock().expect("disk cache lock");
        index.tick += 1;
        let tick = index.tick;
        match index.entries.get_mut(name) {
            Some(entry) => {
                entry.1 = tick;
                true
            }
            None => false,
        }
    }

    async fn read_cached(&self, name: &str) -> Option<Bytes> {
        if !self.touch(name) {
            return None;
        }
        match tokio::fs::read(self.dir.join(name)).await {
            Ok(data) => Some(Bytes::from(data)),
            Err(e) => {
                tracing::warn!(error = %e, "disk cache: a cached file cannot be read; dropping it");
                self.forget(name).await;
                None
            }
        }
    }

    /// Stores `data` under `name`, evicting the least recently used files beyond the
    /// capacity. Failures only cost the caching, never the read.
    async fn store(&self, name: &str, data: &Bytes) {
        let size = data.len() as u64;
        if size > self.capacity {
            return;
        }
        let tmp = self.dir.join(format!("{name}.tmp-{}", ulid::Ulid::new()));
        let written = async {
            tokio::fs::write(&tmp, data).await?;
            tokio::fs::rename(&tmp, self.dir.join(name)).await
        }
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "disk cache: cannot write a cached copy");
            let _ = tokio::fs::remove_file(&tmp).await;
            return;
        }
        let evicted = {
            let mut index = self.index.lock().expect("disk cache lock");
            index.tick += 1;
            let tick = index.tick;
            if let Some((old, _)) = index.entries.insert(name.to_owned(), (size, tick)) {
                index.bytes -= old;
            }
            index.bytes += size;
            let mut evicted = Vec::new();
            while index.bytes > self.capacity {
                let Some(oldest) = index
                    .entries
                    .iter()
                    .filter(|(n, _)| n.as_str() != name)
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(n, _)| n.clone())
                else {
                    break;
                };
                if let Some((size, _)) = index.entries.remove(&oldest) {
                    index.bytes -= size;
                }
                evicted.push(oldest);
            }
            evicted
        };
        for old in evicted {
            let _ = tokio::fs::remove_file(self.dir.join(old)).await;
        }
    }

    fn block_name(key: &str, block: u64) -> String {
        format!("{}-{block}", Self::file_name(key))
    }

    /// Block `block` of `key` (shorter than [`BLOCK`] only at the object's end).
    async fn block(&self, key: &str, block: u64) -> Result<Bytes> {
        let name = Self::block_name(key, block);
        if let Some(data) = self.read_cached(&name).await {
            return Ok(data);
        }
        let data = self
            .inner
            .get_range(key, block * BLOCK..(block + 1) * BLOCK)
            .await?;
        self.store(&name, &data).await;
        Ok(data)
    }

    /// A ranged read assembled from cached blocks.
    async fn get_range_blocks(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let first = range.start / BLOCK;
        let last = (range.end - 1) / BLOCK;
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for b in first..=last {
            let data = self.block(key, b).await?;
            let base = b * BLOCK;
            let len = data.len() as u64;
            let from = range.start.max(base) - base;
            if from > len {
                return Err(Error::invalid(format!(
                    "range starts at {} past the end of {key} ({} bytes)",
                    range.start,
                    base + len
                )));
            }
            let to = (range.end - base).min(len);
            if from < to {
                out.extend_from_slice(&data[from as usize..to as usize]);
            }
            if len < BLOCK {
                break;
            }
        }
        Ok(Bytes::from(out))
    }

    async fn forget_key(&self, key: &str) {
        if self.cacheable(key) {
            let whole = Self::file_name(key);
            let blocks = format!("{whole}-");
            let names: Vec<String> = {
                let index = self.index.lock().expect("disk cache lock");
                index
                    .entries
                    .keys()
                    .filter(|n| **n == whole || n.starts_with(&blocks))
                    .cloned()
                    .collect()
            };
            for name in names {
                self.forget(&name).await;
            }
        }
    }

    async fn forget(&self, name: &str) {
        let removed = {
            let mut index = self.index.lock().expect("disk cache lock");
            match index.entries.remove(name) {
                Some((size, _)) => {
                    index.bytes -= size;
                    true
                }
                None => false,
            }
        };
        if removed {
            let _ = tokio::fs::remove_file(self.dir.join(name)).await;
        }
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("disk cache {}: {e}", path.display()))
}

#[async_trait]
impl ObjectStore for DiskCache {
    async fn get_version(&self, key: &str, etag: &str) -> Result<Bytes> {
        // Versioned reads are for objects others write (ingest files): never cached.
        self.inner.get_version(key, etag).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        if !self.cacheable(key) {
            return self.inner.get(key).await;
        }
        let name = Self::file_name(key);
        if let Some(data) = self.read_cached(&name).await {
            crate::metrics::cache_lookup("disk", true);
            return Ok(data);
        }
        crate::metrics::cache_lookup("disk", false);
        let data = self.inner.get(key).await?;
        self.store(&name, &data).await;
        Ok(data)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if self.cacheable(key) {
            let cached = self.read_cached(&Self::file_name(key)).await;
            crate::metrics::cache_lookup("disk", cached.is_some());
            if let Some(data) = cached {
                let len = data.len() as u64;
                if range.start >= len && !(range.start == 0 && len == 0) {
                    return Err(Error::invalid(format!(
                        "range starts at {} past the end of {key} ({len} bytes)",
                        range.start
                    )));
                }
                let end = range.end.min(len);
                return Ok(data.slice(range.start as usize..end.max(range.start) as usize));
            }
            let blocks = range.end.saturating_sub(range.start).div_ceil(BLOCK) + 1;
            if range.start < range.end && blocks <= MAX_BLOCKS_PER_READ {
                return self.get_range_blocks(key, range).await;
            }
        }
        self.inner.get_range(key, range).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.inner.put(key, data).await?;
        // The engine never rewrites a key; other writers of the store might.
        self.forget_key(key).await;
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()> {
        self.inner.put_if_absent(key, data).await?;
        self.forget_key(key).await;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await?;
        self.forget_key(key).await;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::*;
    use crate::storage::memory::{Counting, MemoryStore};

    fn cache(capacity: u64) -> (Arc<Counting>, DiskCache, tempfile::TempDir) {
        let inner = Arc::new(Counting::default());
        let dir = tempfile::tempdir().unwrap();
        let cache =
            DiskCache::new(inner.clone(), dir.path(), capacity, vec!["c/".into()]).expect("cache");
        (inner, cache, dir)
    }

    #[tokio::test]
    async fn second_read_comes_from_disk() {
        let (inner, cache, dir) = cache(1 << 20);
        cache
            .put("c/a", Bytes::from_static(b"segment"))
            .await
            .unwrap();
        assert_eq!(cache.get("c/a").await.unwrap(), "segment");
        assert_eq!(cache.get("c/a").await.unwrap(), "segment");
        assert_eq!(inner.gets.load(Ordering::SeqCst), 1);
        assert_eq!(cache.get_range("c/a", 1..4).await.unwrap(), "egm");
        assert_eq!(cache.get_range("c/a", 3..100).await.unwrap(), "ment");
        assert_eq!(
            cache.get_range("c/a", 8..9).await.unwrap_err().code(),
            crate::ErrorCode::InvalidArgument
        );
        assert_eq!(inner.gets.load(Ordering::SeqCst), 1);
        assert_eq!(cache.bytes(), 7);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn ranged_reads_are_cached_by_block() {
        let (inner, cache, _dir) = cache(1 << 30);
        let len = 3 * BLOCK as usize + 100;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        cache.put("c/big", Bytes::from(data.clone())).await.unwrap();
        // A vector's worth inside block 1: one block fetched and kept.
        let r = BLOCK + 10..BLOCK + 1546;
        assert_eq!(
            cache.get_range("c/big", r.clone()).await.unwrap(),
            data[r.start as usize..r.end as usize]
        );
        assert_eq!(inner.gets.load(Ordering::SeqCst), 1);
        assert_eq!(cache.bytes(), BLOCK);
        // Another range of the same block: from disk.
        let r = BLOCK + 5000..BLOCK + 6000;
        assert_eq!(
            cache.get_range("c/big", r.clone()).await.unwrap(),
            data[r.start as usize..r.end as usize]
        );
        assert_eq!(inner.gets.load(Ordering::SeqCst), 1);
        // Across blocks 1-3, clamped at the end: blocks 2 and 3 fetched.
        let got = cache.get_range("c/big", BLOCK - 1..10 * BLOCK).await;
        // 10 blocks' span is within MAX_BLOCKS_PER_READ: served from blocks.
        assert_eq!(got.unwrap(), data[BLOCK as usize - 1..]);
        assert_eq!(inner.gets.load(Ordering::SeqCst), 4);
        assert_eq!(cache.bytes(), len as u64);
        // At the end: empty; past it: an error, as from the store.
        assert!(cache
            .get_range("c/big", len as u64..len as u64 + 5)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            cache
                .get_range("c/big", len as u64 + 1..len as u64 + 5)
                .await
                .unwrap_err()
                .code(),
            crate::ErrorCode::InvalidArgument
        );
        // A read over many blocks goes to the store and caches nothing more.
        let before = (inner.gets.load(Ordering::SeqCst), cache.bytes());
        let all = cache.get_range("c/big", 0..u64::MAX).await.unwrap();
        assert_eq!(all, data);
        assert_eq!(inner.gets.load(Ordering::SeqCst), before.0 + 1);
        assert_eq!(cache.bytes(), before.1);
        // Deleting the object forgets its blocks.
        cache.delete("c/big").await.unwrap();
        assert_eq!(cache.bytes(), 0);
    }

    #[tokio::test]
    async fn only_data_prefixes_are_cached() {
        let (inner, cache, _dir) = cache(1 << 20);
        cache
            .put("ingest/t/d/c/f.jsonl", Bytes::from_static(b"v1"))
            .await
            .unwrap();
        assert_eq!(cache.get("ingest/t/d/c/f.jsonl").await.unwrap(), "v1");
        // Ingest files may be overwritten by users: never served from the cache.
        cache
            .put("ingest/t/d/c/f.jsonl", Bytes::from_static(b"v2"))
            .await
            .unwrap();
        assert_eq!(cache.get("ingest/t/d/c/f.jsonl").await.unwrap(), "v2");
        assert_eq!(inner.gets.load(Ordering::SeqCst), 2);
        assert_eq!(cache.bytes(), 0);
    }

    #[tokio::test]
    async fn least_recently_used_leave_first() {
        let (inner, cache, dir) = cache(10);
        for key in ["c/1", "c/2", "c/3"] {
            cache.put(key, Bytes::from_static(b"four")).await.unwrap();
        }
        cache.get("c/1").await.unwrap();
        cache.get("c/2").await.unwrap();
        cache.get("c/1").await.unwrap(); // c/1 is now the most recently used
        cache.get("c/3").await.unwrap(); // evicts c/2
        assert_eq!(cache.bytes(), 8);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        let before = inner.gets.load(Ordering::SeqCst);
        cache.get("c/1").await.unwrap();
        cache.get("c/3").await.unwrap();
        assert_eq!(inner.gets.load(Ordering::SeqCst), before);
        cache.get("c/2").await.unwrap();
        assert_eq!(inner.gets.load(Ordering::SeqCst), before + 1);
        // Larger than the whole cache: served, not kept.
        cache
            .put("c/big", Bytes::from(vec![0u8; 11]))
            .await
            .unwrap();
        assert_eq!(cache.get("c/big").await.unwrap().len(), 11);
        assert!(cache.bytes() <= 10);
    }

    #[tokio::test]
    async fn deletes_and_lost_files_fall_back_to_the_store() {
        let (inner, cache, dir) = cache(1 << 20);
        cache.put("c/a", Bytes::from_static(b"x")).await.unwrap();
        cache.get("c/a").await.unwrap();
        cache.delete("c/a").await.unwrap();
        assert_eq!(cache.bytes(), 0);
        assert_eq!(
            cache.get("c/a").await.unwrap_err().code(),
            crate::ErrorCode::NotFound
        );
        cache.put("c/b", Bytes::from_static(b"y")).await.unwrap();
        cache.get("c/b").await.unwrap();
        for f in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        let before = inner.gets.load(Ordering::SeqCst);
        assert_eq!(cache.get("c/b").await.unwrap(), "y");
        assert_eq!(inner.gets.load(Ordering::SeqCst), before + 1);
    }

    #[tokio::test]
    async fn conforms_to_the_port() {
        let inner: Arc<dyn ObjectStore> = Arc::new(MemoryStore::default());
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(inner, dir.path(), 1 << 20, vec![String::new()]).unwrap();
        crate::storage::conformance::suite(&cache).await;
    }
}
