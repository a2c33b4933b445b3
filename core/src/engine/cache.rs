//! In-memory cache of decoded objects (segments, log batches) by their immutable key.
//!
//! Objects never change once written, so an entry never goes stale; it only leaves the
//! cache when memory is needed (least recently used first), when it is retired (an
//! object compaction replaced, a snapshot of an older manifest) or its collection is
//! deleted. A retired key is remembered: a reader still asking for it (one that read
//! the manifest before the change) gets it loaded for itself, not cached again, so what
//! was replaced does not pile up under the memory bound. Concurrent requests for the
//! same key load it once. Plaintext lives only here, in memory: nothing decoded is
//! written to disk.

use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::error::{Error, Result};

type Value = (Arc<dyn Any + Send + Sync>, usize);

/// Retired keys remembered (the oldest forgotten first): far more than the objects that
/// readers of older manifests can still be asking for at once.
const RETIRED_KEYS: usize = 16_384;

#[derive(Debug)]
pub(crate) struct ObjectCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    tick: u64,
    bytes: usize,
    retired: HashSet<String>,
    retired_order: VecDeque<String>,
}

#[derive(Debug)]
struct Entry {
    cell: Arc<OnceCell<Value>>,
    last_used: u64,
    /// Bytes counted for this entry once loaded.
    counted: usize,
}

impl ObjectCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The cached value of `key`, loading it with `load` (which returns the value and its
    /// size in bytes) when absent.
    pub async fn get_or_load<T, F, Fut>(&self, key: &str, load: F) -> Result<Arc<T>>
    where
        T: Any + Send + Sync,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, usize)>>,
    {
        let cell = {
            let mut inner = self.inner.lock().expect("cache lock");
            if inner.retired.contains(key) {
                None
            } else {
                inner.tick += 1;
                let tick = inner.tick;
                let entry = inner
                    .entries
                    .entry(key.to_string())
                    .or_insert_with(|| Entry {
                        cell: Arc::new(OnceCell::new()),
                        last_used: tick,
                        counted: 0,
                    });
                entry.last_used = tick;
                Some(entry.cell.clone())
            }
        };
        let Some(cell) = cell else {
            let (v, _) = load().await?;
            return Ok(Arc::new(v));
        };
        crate::metrics::cache_lookup("memory", cell.initialized());
        let (value, size) = cell
            .get_or_try_init(|| async {
                let (v, size) = load().await?;
                Ok::<_, Error>((Arc::new(v) as Arc<dyn Any + Send + Sync>, size))
            })
            .await?
            .clone();
        self.account(key, size);
        value
            .downcast::<T>()
            .map_err(|_| Error::internal(format!("cache entry {key} has another type")))
    }

    fn account(&self, key: &str, size: usize) {
        let mut inner = self.inner.lock().expect("cache lock");
        let Some(entry) = inner.entries.get_mut(key) else {
            return;
        };
        if entry.counted == size {
            return;
        }
        let delta = size as isize - entry.counted as isize;
        entry.counted = size;
        inner.bytes = (inner.bytes as isize + delta).max(0) as usize;
        // Evict least recently used loaded entries other than this one.
        while inner.bytes > self.capacity {
            let victim = inner
                .entries
                .iter()
                .filter(|(k, e)| k.as_str() != key && e.counted > 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { break };
            if let Some(e) = inner.entries.remove(&victim) {
                inner.bytes -= e.counted;
            }
        }
    }

    /// Whether `key` is cached and loaded (not only being loaded).
    pub fn is_loaded(&self, key: &str) -> bool {
        let inner = self.inner.lock().expect("cache lock");
        inner.entries.get(key).is_some_and(|e| e.cell.initialized())
    }

    pub fn remove(&self, key: &str) {
        let mut inner = self.inner.lock().expect("cache lock");
        if let Some(e) = inner.entries.remove(key) {
            inner.bytes -= e.counted;
        }
    }

    /// Removes `key` and keeps it out: later loads of it are not cached.
    pub fn retire(&self, key: &str) {
        let mut inner = self.inner.lock().expect("cache lock");
        if let Some(e) = inner.entries.remove(key) {
            inner.bytes -= e.counted;
        }
        if inner.retired.insert(key.to_string()) {
            inner.retired_order.push_back(key.to_string());
            if inner.retired_order.len() > RETIRED_KEYS {
                if let Some(oldest) = inner.retired_order.pop_front() {
                    inner.retired.remove(&oldest);
                }
            }
        }
    }

    pub fn clear(&self) {
        let mut inner = self.inner.lock().expect("cache lock");
        inner.entries.clear();
        inner.bytes = 0;
    }

    /// Bytes the loaded entries are counted for.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("cache lock").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_retired_key_is_loaded_for_its_reader_and_not_cached_again() {
        let cache = ObjectCache::new(1_000);
        let loads = AtomicUsize::new(0);
        let load = |v: u32| {
            loads.fetch_add(1, Ordering::SeqCst);
            async move { Ok((v, 60)) }
        };
        assert_eq!(*cache.get_or_load("a", || load(1)).await.unwrap(), 1);
        assert_eq!(cache.bytes(), 60);
        cache.retire("a");
        assert_eq!(cache.bytes(), 0);
        for _ in 0..2 {
            assert_eq!(*cache.get_or_load("a", || load(2)).await.unwrap(), 2);
            assert_eq!(cache.bytes(), 0);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 3);
        // Only so many retired keys are remembered, the oldest forgotten first.
        for i in 0..RETIRED_KEYS {
            cache.retire(&format!("k{i}"));
        }
        cache.get_or_load("a", || load(3)).await.unwrap();
        assert_eq!(cache.bytes(), 60);
        cache.get_or_load("k1", || load(4)).await.unwrap();
        assert_eq!(cache.bytes(), 60);
    }

    #[tokio::test]
    async fn loads_once_and_evicts_least_recently_used() {
        let cache = ObjectCache::new(100);
        let loads = AtomicUsize::new(0);
        let load = |v: u32| {
            loads.fetch_add(1, Ordering::SeqCst);
            async move { Ok((v, 60)) }
        };
        assert_eq!(*cache.get_or_load("a", || load(1)).await.unwrap(), 1);
        assert_eq!(*cache.get_or_load("a", || load(9)).await.unwrap(), 1);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        // Loading b pushes the total over capacity: a goes.
        assert_eq!(*cache.get_or_load("b", || load(2)).await.unwrap(), 2);
        assert_eq!(cache.bytes(), 60);
        assert_eq!(*cache.get_or_load("a", || load(3)).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn failed_loads_are_retried() {
        let cache = ObjectCache::new(100);
        let err = cache
            .get_or_load::<u32, _, _>("a", || async { Err(Error::unavailable("down")) })
            .await;
        assert!(err.is_err());
        assert_eq!(
            *cache
                .get_or_load("a", || async { Ok((5u32, 1)) })
                .await
                .unwrap(),
            5
        );
    }
}
