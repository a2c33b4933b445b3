//! In-process job queue: a channel drained by a background task of the same process.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::Stream;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{CompactionRequest, Jobs};
use crate::error::{Error, Result};

/// Pending requests are deduplicated: a collection is queued at most once until the
/// consumer takes it, whatever the requests' log heads (the compactor reads the log as it
/// is when it runs).
#[derive(Debug)]
pub struct LocalJobs {
    tx: mpsc::UnboundedSender<Uuid>,
    pending: Arc<Mutex<HashSet<Uuid>>>,
}

/// The consuming end of a [`LocalJobs`] queue: a stream of requested collections, which
/// ends once every sender is gone. A collection the stream yields is taken: a new request
/// for it queues it again.
#[derive(Debug)]
pub struct LocalJobsReceiver {
    rx: mpsc::UnboundedReceiver<Uuid>,
    pending: Arc<Mutex<HashSet<Uuid>>>,
}

impl LocalJobs {
    pub fn new() -> (Self, LocalJobsReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(Mutex::new(HashSet::new()));
        (
            Self {
                tx,
                pending: pending.clone(),
            },
            LocalJobsReceiver { rx, pending },
        )
    }
}

impl Stream for LocalJobsReceiver {
    type Item = Uuid;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Uuid>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(collection)) = polled {
            self.pending.lock().expect("jobs lock").remove(&collection);
        }
        polled
    }
}

#[async_trait]
impl Jobs for LocalJobs {
    async fn enqueue_compaction(&self, request: CompactionRequest) -> Result<()> {
        let collection = request.collection;
        if self.pending.lock().expect("jobs lock").insert(collection) {
            self.tx
                .send(collection)
                .map_err(|_| Error::unavailable("compaction worker has stopped"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt, StreamExt};

    use super::*;
    use crate::jobs::conformance::{self, Deliveries};

    /// What the compaction worker does: take what the stream yields.
    struct Worker {
        rx: LocalJobsReceiver,
    }

    impl Deliveries for Worker {
        async fn take_all(&mut self) -> Vec<Uuid> {
            // A request is in the channel once `enqueue_compaction` returned.
            let mut taken = Vec::new();
            while let Some(Some(id)) = self.rx.next().now_or_never() {
                taken.push(id);
            }
            taken
        }
    }

    #[tokio::test]
    async fn conformance() {
        let (jobs, rx) = LocalJobs::new();
        let mut worker = Worker { rx };
        conformance::suite(&jobs, &mut worker).await;
    }

    #[tokio::test]
    async fn pending_requests_are_merged_until_taken() {
        let (jobs, mut rx) = LocalJobs::new();
        let id = Uuid::new_v4();
        let request = |head: &str| CompactionRequest {
            collection: id,
            log_head: head.to_string(),
        };
        jobs.enqueue_compaction(request("a")).await.unwrap();
        jobs.enqueue_compaction(request("b")).await.unwrap();
        assert_eq!(rx.next().await, Some(id));
        jobs.enqueue_compaction(request("b")).await.unwrap();
        assert_eq!(rx.next().await, Some(id));
        assert_eq!(rx.next().now_or_never(), None);
        drop(jobs);
        assert_eq!(rx.next().await, None);
    }
}
