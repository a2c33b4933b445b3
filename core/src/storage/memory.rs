//! An object store in memory, for tests and ephemeral servers.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{clamp_range, ObjectMeta, ObjectStore};
use crate::error::{Error, Result};

/// Objects live in one sorted map, so a listing is a range scan. Every operation holds the
/// lock only for a map access (payloads are reference-counted `Bytes`), so `put` and
/// `put_if_absent` are trivially atomic.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Entry>>,
    /// Counts puts: each one's number is its object's version.
    puts: std::sync::atomic::AtomicU64,
}

/// One object.
#[derive(Debug, Clone)]
struct Entry {
    data: Bytes,
    modified: SystemTime,
    version: u64,
}

impl Entry {
    fn etag(&self) -> String {
        format!("m{}", self.version)
    }

    fn meta(&self, key: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.to_owned(),
            size: self.data.len() as u64,
            last_modified: self.modified,
            etag: self.etag(),
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated (every critical
        // section is a single map operation), so a poisoned lock is still usable.
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn entry(&self, key: &str) -> Result<Entry> {
        self.lock().get(key).cloned().ok_or_else(|| not_found(key))
    }

    fn new_entry(&self, data: Bytes) -> Entry {
        Entry {
            data,
            modified: SystemTime::now(),
            version: self.puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

fn not_found(key: &str) -> Error {
    Error::not_found(format!("object {key} not found"))
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn get_version(&self, key: &str, etag: &str) -> Result<Bytes> {
        let entry = self.entry(key)?;
        if entry.etag() != super::bare_etag(etag) {
            return Err(super::version_gone(key, etag));
        }
        Ok(entry.data)
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        Ok(self.entry(key)?.data)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let data = self.entry(key)?.data;
        let r = clamp_range(key, &range, data.len() as u64)?;
        Ok(data.slice(r.start as usize..r.end as usize))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        Ok(self.entry(key)?.meta(key))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let entry = self.new_entry(data);
        self.lock().insert(key.to_owned(), entry);
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()> {
        use std::collections::btree_map::Entry as Slot;
        match self.lock().entry(key.to_owned()) {
            Slot::Occupied(_) => Err(Error::already_exists(format!(
                "object {key} already exists"
            ))),
            Slot::Vacant(slot) => {
                slot.insert(self.new_entry(data));
                Ok(())
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.lock().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let objects = self.lock();
        Ok(objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, entry)| entry.meta(k))
            .collect())
    }
}

/// A [`MemoryStore`] that counts the reads sent to it: for tests of what a cache or a
/// reader spares the store.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Counting {
    pub(crate) inner: MemoryStore,
    /// Whole, versioned and ranged gets.
    pub(crate) gets: std::sync::atomic::AtomicUsize,
    pub(crate) heads: std::sync::atomic::AtomicUsize,
    /// Bytes returned by ranged gets.
    pub(crate) range_bytes: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
#[async_trait]
impl ObjectStore for Counting {
    async fn get_version(&self, key: &str, etag: &str) -> Result<Bytes> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get_version(key, etag).await
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let bytes = self.inner.get_range(key, range).await?;
        self.range_bytes
            .fetch_add(bytes.len(), std::sync::atomic::Ordering::SeqCst);
        Ok(bytes)
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.heads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let store = MemoryStore::new();
        crate::storage::conformance::suite(&store).await;
    }

    #[tokio::test]
    async fn list_is_a_prefix_range() {
        let store = MemoryStore::new();
        for k in ["a", "ab", "abc", "b", "a/x"] {
            store.put(k, Bytes::from_static(b"1")).await.unwrap();
        }
        let keys: Vec<_> = store
            .list("a")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["a", "a/x", "ab", "abc"]);
        assert_eq!(store.list("").await.unwrap().len(), 5);
        assert!(store.list("c").await.unwrap().is_empty());
    }
}
