//! The object store port: immutable blobs by key.
//!
//! Keys are `/`-separated paths built by the engine from UUIDs and ULIDs, never from
//! user-supplied names. Objects are written once and never modified; an object that no
//! manifest references is garbage and is deleted after a grace period.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod disk_cache;
pub mod hedged;
pub mod local;
pub mod memory;
pub mod metered;

use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};

/// `etag` without the double quotes S3 puts around it.
pub fn bare_etag(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// The `NotFound` of a [`ObjectStore::get_version`] whose version is gone.
pub fn version_gone(key: &str, etag: &str) -> Error {
    Error::not_found(format!(
        "version {} of object {key} does not exist any more",
        bare_etag(etag)
    ))
}

/// What a listing says of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub last_modified: SystemTime,
    /// Names this version of the object's content: it changes whenever the key is written
    /// again (S3's ETag; the local and in-memory stores make their own).
    pub etag: String,
}

/// Applies the store contract's range rules to an object of `len` bytes.
pub(crate) fn clamp_range(key: &str, range: &Range<u64>, len: u64) -> Result<Range<u64>> {
    if range.start > range.end {
        return Err(Error::invalid(format!(
            "range {}..{} of object {key} is inverted",
            range.start, range.end
        )));
    }
    if range.start > len {
        return Err(Error::invalid(format!(
            "range {}..{} starts past the end of object {key} ({len} bytes)",
            range.start, range.end
        )));
    }
    Ok(range.start..range.end.min(len))
}

/// A store of immutable objects.
///
/// Contract, for every implementation:
/// - `put` is atomic and durable when it returns: a reader sees the whole old object, or
///   the whole new one, never a prefix; after a crash the object is either absent or
///   complete.
/// - `put_if_absent` writes only if no object has the key, atomically with that check;
///   otherwise it fails with `AlreadyExists` and leaves the existing object untouched.
/// - `get`/`get_range`/`head` of a missing key fail with `NotFound`.
/// - `get_version(key, etag)` returns the object only if its current version is `etag`
///   (as `head` or `list` reported it, with or without S3's quotes), atomically with that
///   check; a key written again since, or deleted, fails with `NotFound`.
/// - `get_range` returns exactly the bytes in `range` (clamped to the object's end);
///   a range starting past the end fails with `InvalidArgument`.
/// - `get_ranges` returns what `get_range` would for each range, in order (one read of
///   many small pieces: local files answer it with one open and positioned reads,
///   remote stores with concurrent requests).
/// - `prefetch` changes nothing a read returns: it only asks a store that caches a
///   remote one to fetch a range before it is read (stores that answer every read
///   alike do nothing).
/// - `delete` of a missing key succeeds (deletes are idempotent).
/// - `list` returns every object whose key starts with `prefix`, sorted by key.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    async fn get(&self, key: &str) -> Result<Bytes>;
    async fn get_version(&self, key: &str, etag: &str) -> Result<Bytes>;
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    async fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        futures::future::try_join_all(ranges.iter().map(|r| self.get_range(key, r.clone()))).await
    }
    /// Fetches `range` of `key` ahead of reads (see the contract); by default nothing.
    async fn prefetch(&self, _key: &str, _range: Range<u64>) -> Result<()> {
        Ok(())
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta>;
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()>;
    async fn delete(&self, key: &str) -> Result<()>;
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
}
