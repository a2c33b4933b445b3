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
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::{ObjectMeta, ObjectStore};
use crate::error::{Error, Result};

/// Size of a cached block of a ranged read.
pub const BLOCK: u64 = 256 * 1024;
/// Ranged reads over more blocks than this are not cached.
pub const MAX_BLOCKS_PER_READ: u64 = 16;
/// Blocks a prefetch asks the store for in one request (16 MiB).
const PREFETCH_BLOCKS: u64 = 64;
/// Prefetch requests in flight at once.
const PREFETCH_REQUESTS: usize = 4;

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

    /// A capacity for a cache in `dir`: `share` (0 to 1) of the free space of `dir`'s
    /// file system (or of its nearest existing parent's). On Lambda, `/tmp` is the
    /// function's ephemeral storage, so the cache is sized by it, as the engine's memory
    /// cache is by the function's memory. `None` where the file system cannot say.
    pub fn capacity_from_free_space(dir: &Path, share: f64) -> Option<u64> {
        let mut probe = dir;
        while !probe.exists() {
            probe = probe.parent()?;
        }
        free_bytes(probe).map(|free| (free as f64 * share.clamp(0.0, 1.0)) as u64)
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

    /// Marks `name` used; its size if it is cached.
    fn touch(&self, name: &str) -> Option<u64> {
        let mut index = self.index.lock().expect("disk cache lock");
        index.tick += 1;
        let tick = index.tick;
        let entry = index.entries.get_mut(name)?;
        entry.1 = tick;
        Some(entry.0)
    }

    async fn read_cached(&self, name: &str) -> Option<Bytes> {
        self.touch(name)?;
        match tokio::fs::read(self.dir.join(name)).await {
            Ok(data) => Some(Bytes::from(data)),
            Err(e) => {
                tracing::warn!(error = %e, "disk cache: a cached file cannot be read; dropping it");
                self.forget(name).await;
                None
            }
        }
    }

    /// Bytes `range` (within its size) of the cached file `name`, by one positioned read:
    /// a re-rank reads a few KiB of a block, not the whole block. `None` (and the file
    /// forgotten) if it cannot be read.
    async fn read_cached_range(&self, name: &str, range: Range<u64>) -> Option<Bytes> {
        let path = self.dir.join(name);
        let read = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path)?;
            let mut buf = vec![0; (range.end - range.start) as usize];
            super::local::read_exact_at(&file, &mut buf, range.start)?;
            Ok::<_, std::io::Error>(buf)
        })
        .await;
        match read {
            Ok(Ok(data)) => Some(Bytes::from(data)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "disk cache: a cached file cannot be read; dropping it");
                self.forget(name).await;
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "disk cache: a read task failed");
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

    /// The file of block `block` of the object whose [`DiskCache::file_name`] is `file`.
    fn block_name(file: &str, block: u64) -> String {
        format!("{file}-{block}")
    }

    /// Bytes `part` (offsets within the block, clamped to it) of block `block` of `key`,
    /// and the block's length (shorter than [`BLOCK`] only at the object's end).
    async fn block_part(
        &self,
        key: &str,
        file: &str,
        block: u64,
        part: Range<u64>,
    ) -> Result<(Bytes, u64)> {
        let name = Self::block_name(file, block);
        if let Some(len) = self.touch(&name) {
            let within = part.start.min(len)..part.end.min(len);
            if let Some(data) = self.read_cached_range(&name, within).await {
                crate::metrics::cache_lookup("disk", true);
                return Ok((data, len));
            }
        }
        crate::metrics::cache_lookup("disk", false);
        let data = self
            .inner
            .get_range(key, block * BLOCK..(block + 1) * BLOCK)
            .await?;
        self.store(&name, &data).await;
        let len = data.len() as u64;
        let within = part.start.min(len) as usize..part.end.min(len) as usize;
        Ok((data.slice(within), len))
    }

    /// Fetches the blocks of `blocks` that are not cached, one request per run of
    /// missing blocks, and keeps them; returns them too (a read needs not read back
    /// what it just wrote). Nothing is asked for past the object's end, once a short
    /// block (cached or fetched) shows where it is.
    async fn fetch_missing(
        &self,
        key: &str,
        file: &str,
        blocks: Range<u64>,
    ) -> Result<HashMap<u64, Bytes>> {
        let mut runs: Vec<Range<u64>> = Vec::new();
        {
            let index = self.index.lock().expect("disk cache lock");
            for b in blocks {
                match index.entries.get(&Self::block_name(file, b)) {
                    Some(&(size, _)) if size < BLOCK => break,
                    Some(_) => {}
                    None => match runs.last_mut() {
                        Some(run) if run.end == b => run.end = b + 1,
                        _ => runs.push(b..b + 1),
                    },
                }
            }
        }
        let mut fetched = HashMap::new();
        for run in runs {
            let data = self
                .inner
                .get_range(key, run.start * BLOCK..run.end * BLOCK)
                .await?;
            let short = (data.len() as u64) < (run.end - run.start) * BLOCK;
            for (i, piece) in (0..data.len()).step_by(BLOCK as usize).enumerate() {
                let block = data.slice(piece..(piece + BLOCK as usize).min(data.len()));
                let b = run.start + i as u64;
                crate::metrics::cache_lookup("disk", false);
                self.store(&Self::block_name(file, b), &block).await;
                fetched.insert(b, block);
            }
            if short {
                break;
            }
        }
        Ok(fetched)
    }

    /// A ranged read assembled from cached blocks.
    async fn get_range_blocks(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let file = Self::file_name(key);
        let first = range.start / BLOCK;
        let last = (range.end - 1) / BLOCK;
        // The missing blocks of a read over several, in as few requests as they run.
        let mut fetched = if last > first {
            self.fetch_missing(key, &file, first..last + 1).await?
        } else {
            HashMap::new()
        };
        let mut out = Vec::new();
        for b in first..=last {
            let base = b * BLOCK;
            let from = range.start.max(base) - base;
            let to = (range.end - base).min(BLOCK);
            let (data, len) = match fetched.remove(&b) {
                Some(block) => {
                    let len = block.len() as u64;
                    (
                        block.slice(from.min(len) as usize..to.min(len) as usize),
                        len,
                    )
                }
                None => self.block_part(key, &file, b, from..to).await?,
            };
            if from > len {
                return Err(Error::invalid(format!(
                    "range starts at {} past the end of {key} ({} bytes)",
                    range.start,
                    base + len
                )));
            }
            if first == last || (b == first && len < BLOCK) {
                // One block: its part is the answer, without a copy.
                return Ok(data);
            }
            out.extend_from_slice(&data);
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

/// Bytes an unprivileged process may still write on `path`'s file system.
#[cfg(unix)]
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    #[allow(unsafe_code)]
    // SAFETY: `c_path` is a NUL-terminated path and `stat` is a buffer of the type
    // `statvfs` fills; it is read only after the call reports success.
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    #[allow(clippy::unnecessary_cast)] // the fields' widths differ between platforms
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_bytes(_path: &Path) -> Option<u64> {
    None
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
            // The object cached whole (read whole once): the range from its file.
            let name = Self::file_name(key);
            if let Some(len) = self.touch(&name) {
                if range.start >= len && !(range.start == 0 && len == 0) {
                    return Err(Error::invalid(format!(
                        "range starts at {} past the end of {key} ({len} bytes)",
                        range.start
                    )));
                }
                let within = range.start..range.end.min(len).max(range.start);
                if let Some(data) = self.read_cached_range(&name, within).await {
                    crate::metrics::cache_lookup("disk", true);
                    return Ok(data);
                }
            }
            let blocks = range.end.saturating_sub(range.start).div_ceil(BLOCK) + 1;
            if range.start < range.end && blocks <= MAX_BLOCKS_PER_READ {
                return self.get_range_blocks(key, range).await;
            }
        }
        self.inner.get_range(key, range).await
    }

    /// Every range held by one cached file (the object whole, or the one block it lies
    /// in) is read in one blocking task, each file opened once: a query's re-rank and
    /// result rows are dozens of small reads, which one task and one thread hand-off
    /// each would cost more than the reads. The others as [`ObjectStore::get_range`].
    async fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if !self.cacheable(key) {
            return self.inner.get_ranges(key, ranges).await;
        }
        let file = Self::file_name(key);
        // (range index, cached file, part of it)
        let mut cached: Vec<(usize, String, Range<u64>)> = Vec::new();
        let whole = self.touch(&file);
        for (i, r) in ranges.iter().enumerate() {
            if r.start >= r.end {
                continue;
            }
            if let Some(len) = whole {
                if r.start < len {
                    cached.push((i, file.clone(), r.start..r.end.min(len)));
                }
                continue;
            }
            let block = r.start / BLOCK;
            if (r.end - 1) / BLOCK != block {
                continue;
            }
            let name = Self::block_name(&file, block);
            let base = block * BLOCK;
            if self.touch(&name).is_some_and(|len| r.end - base <= len) {
                cached.push((i, name, r.start - base..r.end - base));
            }
        }
        let dir = self.dir.clone();
        let read = tokio::task::spawn_blocking(move || {
            cached.sort_by(|a, b| a.1.cmp(&b.1));
            let mut out = Vec::with_capacity(cached.len());
            let mut open: Option<(&str, std::io::Result<std::fs::File>)> = None;
            for (i, name, part) in &cached {
                if open.as_ref().is_none_or(|(n, _)| n != name) {
                    open = Some((name, std::fs::File::open(dir.join(name))));
                }
                let Some((_, file)) = &open else { continue };
                let data = file.as_ref().map_err(|e| e.kind()).and_then(|file| {
                    let mut buf = vec![0; (part.end - part.start) as usize];
                    super::local::read_exact_at(file, &mut buf, part.start)
                        .map_err(|e| e.kind())?;
                    Ok(buf)
                });
                out.push((*i, name.clone(), data));
            }
            out
        })
        .await
        .map_err(|e| Error::internal(format!("disk cache: a read task failed: {e}")))?;
        let mut out: Vec<Option<Bytes>> = vec![None; ranges.len()];
        for (i, name, data) in read {
            match data {
                Ok(data) => {
                    crate::metrics::cache_lookup("disk", true);
                    out[i] = Some(Bytes::from(data));
                }
                Err(kind) => {
                    tracing::warn!(error = %kind, "disk cache: a cached file cannot be read; dropping it");
                    self.forget(&name).await;
                }
            }
        }
        let rest = futures::future::try_join_all(
            out.iter()
                .enumerate()
                .filter(|(_, got)| got.is_none())
                .map(|(i, _)| async move {
                    Ok::<_, Error>((i, self.get_range(key, ranges[i].clone()).await?))
                }),
        )
        .await?;
        for (i, data) in rest {
            out[i] = Some(data);
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Fetches the blocks of `range` that are not cached, in requests of 16 MiB, four at
    /// a time — only when they all fit beside what is cached already (a prefetch never
    /// evicts what reads use).
    async fn prefetch(&self, key: &str, range: Range<u64>) -> Result<()> {
        if !self.cacheable(key) || range.start >= range.end {
            return Ok(());
        }
        if self.bytes() + (range.end - range.start) > self.capacity {
            return Ok(());
        }
        let (first, end) = (range.start / BLOCK, (range.end - 1) / BLOCK + 1);
        let chunks = (first..end)
            .step_by(PREFETCH_BLOCKS as usize)
            .map(|from| from..(from + PREFETCH_BLOCKS).min(end));
        let file = Self::file_name(key);
        futures::stream::iter(chunks.map(|blocks| self.fetch_missing(key, &file, blocks)))
            .buffer_unordered(PREFETCH_REQUESTS)
            // What each request fetched is on disk: dropped at once.
            .try_for_each(|_fetched| futures::future::ok(()))
            .await
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
        // Across blocks 0-3, clamped at the end: block 0, then blocks 2 and 3, fetched in
        // one request each.
        let got = cache.get_range("c/big", BLOCK - 1..10 * BLOCK).await;
        // 10 blocks' span is within MAX_BLOCKS_PER_READ: served from blocks.
        assert_eq!(got.unwrap(), data[BLOCK as usize - 1..]);
        assert_eq!(inner.gets.load(Ordering::SeqCst), 3);
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
    async fn ranges_read_from_cached_blocks_and_objects_match_the_object() {
        use rand::{Rng, SeedableRng};
        let (inner, cache, dir) = cache(1 << 30);
        let len = 5 * BLOCK + 777;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
        cache.put("c/v", Bytes::from(data.clone())).await.unwrap();
        cache
            .put("c/small", Bytes::from(data[..5000].to_vec()))
            .await
            .unwrap();
        cache.get("c/small").await.unwrap(); // cached whole
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let ranges: Vec<Range<u64>> = (0..200)
            .map(|_| {
                let start = rng.gen_range(0..len);
                start..(start + rng.gen_range(1..3 * BLOCK)).min(len + 10)
            })
            .collect();
        for pass in 0..2 {
            for r in &ranges {
                let want = &data[r.start as usize..r.end.min(len) as usize];
                assert_eq!(
                    cache.get_range("c/v", r.clone()).await.unwrap(),
                    want,
                    "{r:?}"
                );
                let small = r.start % 5000..(r.start % 5000 + r.end - r.start).min(6000);
                let want = &data[small.start as usize..small.end.min(5000) as usize];
                assert_eq!(cache.get_range("c/small", small).await.unwrap(), want);
            }
            // Every block was fetched once (runs of blocks in one request), in the first
            // pass; the second reads disk only.
            let gets = inner.gets.load(Ordering::SeqCst);
            assert!((2..=7).contains(&gets), "pass {pass}: {gets}");
            assert_eq!(cache.bytes(), len + 5000, "pass {pass}");
        }
        // The same ranges asked for at once (from cached blocks, and from the object
        // cached whole): the same bytes, from disk only.
        let smalls: Vec<Range<u64>> = ranges
            .iter()
            .map(|r| r.start % 5000..(r.start % 5000 + r.end - r.start).min(6000))
            .collect();
        let before = inner.gets.load(Ordering::SeqCst);
        let at_once = |key: &'static str, ranges: Vec<Range<u64>>, end: u64| {
            let (cache, data) = (&cache, &data);
            async move {
                let got = cache.get_ranges(key, &ranges).await.unwrap();
                for (r, got) in ranges.iter().zip(&got) {
                    assert_eq!(
                        got,
                        &data[r.start as usize..r.end.min(end) as usize],
                        "{r:?}"
                    );
                }
            }
        };
        at_once("c/v", ranges.clone(), len).await;
        at_once("c/small", smalls.clone(), 5000).await;
        assert_eq!(inner.gets.load(Ordering::SeqCst), before);
        // A block file lost under the cache: read from the store again, and kept again.
        for f in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        let r = 2 * BLOCK + 3..2 * BLOCK + 3000;
        let before = inner.gets.load(Ordering::SeqCst);
        assert_eq!(
            cache.get_range("c/v", r.clone()).await.unwrap(),
            data[r.start as usize..r.end as usize]
        );
        assert_eq!(inner.gets.load(Ordering::SeqCst), before + 1);
        cache.get_range("c/v", r).await.unwrap();
        assert_eq!(inner.gets.load(Ordering::SeqCst), before + 1);
        // Lost files under many ranges at once: each read from the store instead.
        for f in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        let before = inner.gets.load(Ordering::SeqCst);
        at_once("c/v", ranges, len).await;
        at_once("c/small", smalls, 5000).await;
        assert!(inner.gets.load(Ordering::SeqCst) > before);
    }

    #[tokio::test]
    async fn a_read_past_the_end_asks_for_no_block_beyond_it() {
        let (inner, cache, _dir) = cache(1 << 30);
        let len = 3 * BLOCK + 100;
        let data: Vec<u8> = (0..len).map(|i| (i % 13) as u8).collect();
        cache.put("c/v", Bytes::from(data.clone())).await.unwrap();
        // The short last block is cached first; a read from block 2 to far past the end
        // then fetches block 2 alone, and nothing after the end.
        cache
            .get_range("c/v", 3 * BLOCK..3 * BLOCK + 50)
            .await
            .unwrap();
        let got = cache
            .get_range("c/v", 2 * BLOCK + 1..10 * BLOCK)
            .await
            .unwrap();
        assert_eq!(got, data[2 * BLOCK as usize + 1..]);
        assert_eq!(inner.gets.load(Ordering::SeqCst), 2);
        // All missing: one request, clamped by the store.
        let (inner, cache, _dir) = super::tests::cache(1 << 30);
        cache.put("c/v", Bytes::from(data.clone())).await.unwrap();
        let got = cache.get_range("c/v", 5..12 * BLOCK).await.unwrap();
        assert_eq!(got, data[5..]);
        assert_eq!(inner.gets.load(Ordering::SeqCst), 1);
        assert_eq!(cache.bytes(), len);
    }

    #[tokio::test]
    async fn a_prefetch_fetches_in_large_requests_what_fits() {
        let (inner, cache, _dir) = cache(200 * BLOCK);
        let len = 150 * BLOCK + 10;
        let data: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
        cache.put("c/v", Bytes::from(data.clone())).await.unwrap();
        cache.put("c/w", Bytes::from(data.clone())).await.unwrap();
        cache.get_range("c/v", 5..10).await.unwrap(); // block 0 cached
        let before = inner.gets.load(Ordering::SeqCst);
        cache.prefetch("c/v", 3..len).await.unwrap();
        // Blocks 1-150 in 64-block requests: 1-63 (block 0 is there), 64-127, 128-150.
        assert_eq!(inner.gets.load(Ordering::SeqCst), before + 3);
        assert_eq!(cache.bytes(), len);
        for r in [0..len, 7 * BLOCK + 1..7 * BLOCK + 2000, len - 5..len] {
            let r = r.start..r.end.min(r.start + 14 * BLOCK);
            assert_eq!(
                cache.get_range("c/v", r.clone()).await.unwrap(),
                data[r.start as usize..r.end as usize]
            );
        }
        assert_eq!(
            inner.gets.load(Ordering::SeqCst),
            before + 3,
            "reads hit the cache"
        );
        // What does not fit beside what is cached is not fetched (nothing is evicted).
        cache.prefetch("c/w", 0..len).await.unwrap();
        assert_eq!(inner.gets.load(Ordering::SeqCst), before + 3);
        assert_eq!(cache.bytes(), len);
        // Keys that are not cached are not prefetched.
        cache.prefetch("ingest/x", 0..10).await.unwrap();
        assert_eq!(inner.gets.load(Ordering::SeqCst), before + 3);
    }

    #[test]
    fn capacity_comes_from_the_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let not_yet = dir.path().join("chroma-cache").join("deeper");
        let all = DiskCache::capacity_from_free_space(&not_yet, 1.0).expect("a file system");
        assert!(all > 0);
        let most = DiskCache::capacity_from_free_space(&not_yet, 0.9).unwrap();
        assert!(
            most < all && most as f64 > all as f64 * 0.8,
            "{most} of {all}"
        );
        assert_eq!(
            DiskCache::capacity_from_free_space(dir.path(), 0.0),
            Some(0)
        );
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
