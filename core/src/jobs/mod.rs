//! The jobs port: asks for a collection to be compacted, at least once.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod local;

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;

/// A request to compact `collection`, made when its log started at the batch
/// `log_head` (that batch's object key).
///
/// The log head tells requests for the same work from requests for new work: a
/// compaction folds the log from its head, so once it has committed, the log starts at a
/// later batch and a new request names that one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompactionRequest {
    pub collection: Uuid,
    pub log_head: String,
}

/// A queue of compaction requests.
///
/// Contract: a request is delivered at least once. Requests for a collection that is
/// pending (sent and not yet taken) may be merged into one; a request may also be merged
/// into a taken one with the same collection and log head, because the compactor that
/// took it asks again for whatever log is left once it has committed (see
/// [`crate::engine::Engine::compact_until`]). A request with a log head not requested
/// before is never merged into a taken one. Handling a request twice is harmless
/// (compaction is idempotent and fenced by the manifest version).
#[async_trait]
pub trait Jobs: Send + Sync + std::fmt::Debug {
    async fn enqueue_compaction(&self, request: CompactionRequest) -> Result<()>;
}
