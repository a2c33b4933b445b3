//! In-process job queue: a channel drained by a background task of the same process.

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::Jobs;
use crate::error::{Error, Result};

/// Pending requests are deduplicated: a collection is queued at most once until the
/// consumer takes it.
#[derive(Debug)]
pub struct LocalJobs {
    tx: mpsc::UnboundedSender<Uuid>,
    pending: Mutex<HashSet<Uuid>>,
}

/// The consuming end of a [`LocalJobs`] queue.
#[derive(Debug)]
pub struct LocalJobsReceiver {
    rx: mpsc::UnboundedReceiver<Uuid>,
}

impl LocalJobs {
    pub fn new() -> (Self, LocalJobsReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                pending: Mutex::new(HashSet::new()),
            },
            LocalJobsReceiver { rx },
        )
    }

    /// Marks a collection as taken by the consumer, so a new request queues it again.
    pub fn taken(&self, collection: Uuid) {
        self.pending.lock().expect("jobs lock").remove(&collection);
    }
}

impl LocalJobsReceiver {
    /// The next requested collection, or `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Uuid> {
        self.rx.recv().await
    }
}

#[async_trait]
impl Jobs for LocalJobs {
    async fn enqueue_compaction(&self, collection: Uuid) -> Result<()> {
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
    use super::*;
    use crate::jobs::conformance::{self, Deliveries};

    /// What the compaction worker does: receive, then mark as taken.
    struct Worker<'a> {
        jobs: &'a LocalJobs,
        rx: LocalJobsReceiver,
    }

    impl Deliveries for Worker<'_> {
        async fn take_all(&mut self) -> Vec<Uuid> {
            // A request is in the channel once `enqueue_compaction` returned.
            let mut taken = Vec::new();
            while let Ok(id) = self.rx.rx.try_recv() {
                self.jobs.taken(id);
                taken.push(id);
            }
            taken
        }
    }

    #[tokio::test]
    async fn conformance() {
        let (jobs, rx) = LocalJobs::new();
        let mut worker = Worker { jobs: &jobs, rx };
        conformance::suite(&jobs, &mut worker).await;
    }

    #[tokio::test]
    async fn pending_requests_are_merged_until_taken() {
        let (jobs, mut rx) = LocalJobs::new();
        let id = Uuid::new_v4();
        jobs.enqueue_compaction(id).await.unwrap();
        jobs.enqueue_compaction(id).await.unwrap();
        assert_eq!(rx.recv().await, Some(id));
        jobs.taken(id);
        jobs.enqueue_compaction(id).await.unwrap();
        assert_eq!(rx.recv().await, Some(id));
        assert!(rx.rx.try_recv().is_err());
    }
}
