//! The jobs port: asks for a collection to be compacted, at least once.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod local;

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;

/// A queue of compaction requests.
///
/// Contract: a request is delivered at least once; requests for a collection that is
/// already pending may be merged into one; handling a request twice is harmless
/// (compaction is idempotent and fenced by the manifest version).
#[async_trait]
pub trait Jobs: Send + Sync + std::fmt::Debug {
    async fn enqueue_compaction(&self, collection: Uuid) -> Result<()>;
}
