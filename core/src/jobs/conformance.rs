//! The conformance suite every [`Jobs`] implementation must pass.
//!
//! Built for tests of this crate and, with the `testing` feature, of other crates (the
//! SQS queue runs it against an emulator). The port only sends requests; how they are
//! received is each implementation's own, so the suite takes them through
//! [`Deliveries`]. It needs a queue of its own, empty at the start, and leaves it empty.
//!
//! Only what the contract promises is checked: every request is delivered, and only
//! requested collections are; requests for a pending collection may be merged, and a
//! request may be delivered more than once, so neither counts nor order are checked.
//! Each request names a log head of its own unless a check says otherwise, so none may
//! be merged into a request already taken.

use std::collections::HashSet;
use std::future::Future;

use futures::future::join_all;
use uuid::Uuid;

use super::{CompactionRequest, Jobs};

/// The receiving end of a queue under test.
pub trait Deliveries {
    /// Takes every request delivered by now (waiting as long as a delivery may take),
    /// and returns their collections, in any order. A taken request is no longer
    /// pending: a later request for its collection is a new one.
    fn take_all(&mut self) -> impl Future<Output = Vec<Uuid>>;
}

/// One check of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// A queue nobody sent to delivers nothing.
    EmptyQueue,
    /// One request is delivered.
    OneRequest,
    /// Repeated requests for one pending collection are delivered (maybe merged).
    RepeatedRequests,
    /// Requests for several collections, interleaved, are each delivered.
    SeveralCollections,
    /// A request for a collection whose earlier request was taken is delivered too (the
    /// earlier one may still be in hand: deleted from the queue only at the next take).
    RequestAfterTaken,
    /// Requests sent concurrently are each delivered.
    ConcurrentRequests,
}

impl Case {
    pub const ALL: [Case; 6] = [
        Case::EmptyQueue,
        Case::OneRequest,
        Case::RepeatedRequests,
        Case::SeveralCollections,
        Case::RequestAfterTaken,
        Case::ConcurrentRequests,
    ];
}

/// Runs every check of the [`Jobs`] contract; panics on the first violation.
pub async fn suite(jobs: &dyn Jobs, deliveries: &mut impl Deliveries) {
    cases(jobs, deliveries, &Case::ALL).await;
}

/// Runs the given checks, in the order given.
pub async fn cases(jobs: &dyn Jobs, deliveries: &mut impl Deliveries, which: &[Case]) {
    let mut queue = Queue {
        jobs,
        deliveries,
        requested: HashSet::new(),
    };
    for case in which {
        match case {
            Case::EmptyQueue => empty_queue(&mut queue).await,
            Case::OneRequest => one_request(&mut queue).await,
            Case::RepeatedRequests => repeated_requests(&mut queue).await,
            Case::SeveralCollections => several_collections(&mut queue).await,
            Case::RequestAfterTaken => request_after_taken(&mut queue).await,
            Case::ConcurrentRequests => concurrent_requests(&mut queue).await,
        }
    }
}

/// The queue under test and every collection the suite requested so far: a delivery may
/// repeat one of an earlier check (at least once), never name any other.
struct Queue<'a, D> {
    jobs: &'a dyn Jobs,
    deliveries: &'a mut D,
    requested: HashSet<Uuid>,
}

impl<D: Deliveries> Queue<'_, D> {
    /// Requests `collection`, naming a new log head.
    async fn enqueue(&mut self, collection: Uuid) {
        self.requested.insert(collection);
        self.jobs
            .enqueue_compaction(request(collection))
            .await
            .expect("enqueue compaction");
    }

    /// Takes everything delivered, checking each delivery was requested.
    async fn take(&mut self) -> HashSet<Uuid> {
        let delivered = self.deliveries.take_all().await;
        for id in &delivered {
            assert!(
                self.requested.contains(id),
                "delivered {id}, which nobody requested"
            );
        }
        delivered.into_iter().collect()
    }

    /// Takes everything delivered, checking every one of `expected` is among it.
    async fn take_expecting(&mut self, expected: &[Uuid], what: &str) {
        let delivered = self.take().await;
        let missing: Vec<&Uuid> = expected
            .iter()
            .filter(|id| !delivered.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "{what}: requests for {missing:?} were not delivered (delivered {delivered:?})"
        );
    }
}

/// A request for `collection` naming a log head no other request names (a batch key as
/// the engine writes them).
fn request(collection: Uuid) -> CompactionRequest {
    CompactionRequest {
        collection,
        log_head: format!("c/{collection}/log/{}.parquet", Uuid::new_v4().simple()),
    }
}

async fn empty_queue(q: &mut Queue<'_, impl Deliveries>) {
    let delivered = q.take().await;
    assert!(
        delivered.is_empty(),
        "an empty queue delivered {delivered:?}"
    );
}

async fn one_request(q: &mut Queue<'_, impl Deliveries>) {
    let id = Uuid::new_v4();
    q.enqueue(id).await;
    q.take_expecting(&[id], "one request").await;
}

async fn repeated_requests(q: &mut Queue<'_, impl Deliveries>) {
    let id = Uuid::new_v4();
    // A burst of writes to one log: the same head, three times; then two more heads.
    let same = request(id);
    q.requested.insert(id);
    for _ in 0..3 {
        q.jobs
            .enqueue_compaction(same.clone())
            .await
            .expect("enqueue compaction");
    }
    for _ in 0..2 {
        q.enqueue(id).await;
    }
    q.take_expecting(&[id], "five requests for one collection")
        .await;
}

async fn several_collections(q: &mut Queue<'_, impl Deliveries>) {
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for i in [0, 1, 0, 2, 1, 0] {
        q.enqueue(ids[i]).await;
    }
    q.take_expecting(&ids, "interleaved requests for three collections")
        .await;
}

async fn request_after_taken(q: &mut Queue<'_, impl Deliveries>) {
    let id = Uuid::new_v4();
    q.enqueue(id).await;
    q.take_expecting(&[id], "the first request").await;
    q.enqueue(id).await;
    q.take_expecting(&[id], "a request after the first was taken")
        .await;
}

async fn concurrent_requests(q: &mut Queue<'_, impl Deliveries>) {
    let ids: Vec<Uuid> = (0..24).map(|_| Uuid::new_v4()).collect();
    q.requested.extend(ids.iter().copied());
    let jobs = q.jobs;
    // Each collection twice, all at once.
    let sent = join_all(
        ids.iter()
            .chain(&ids)
            .map(|&id| jobs.enqueue_compaction(request(id))),
    )
    .await;
    for result in sent {
        result.expect("concurrent enqueue");
    }
    q.take_expecting(&ids, "concurrent requests for 24 collections")
        .await;
}
