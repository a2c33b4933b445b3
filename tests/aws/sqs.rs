//! The SQS jobs queue: FIFO queues, one message group per collection, a burst for one log
//! head merged into one message, the message body the compact Lambda reads, and the jobs
//! conformance suite.

use chroma_core::aws::sqs::{ensure_queue, parse_compaction_message, SqsJobs};
use chroma_core::aws::AwsClients;
use chroma_core::error::ErrorCode;
use chroma_core::jobs::conformance::{self, Case, Deliveries};
use chroma_core::jobs::{CompactionRequest, Jobs};
use uuid::Uuid;

use crate::common;

/// A received message: its collection (parsed from the body) and its message group.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Received {
    collection: Uuid,
    group: String,
}

async fn setup() -> (AwsClients, String, SqsJobs) {
    let config = common::config();
    let clients = common::clients(&config).await;
    let url = ensure_queue(&clients, &format!("{}.fifo", common::unique("jobs")))
        .await
        .expect("ensure queue");
    let jobs = SqsJobs::new(&clients, url.clone());
    (clients, url, jobs)
}

/// Receives every visible message (waiting up to a second for more), with its receipt
/// handle; received messages stay in flight until deleted.
async fn receive_all(clients: &AwsClients, url: &str) -> Vec<(Received, String)> {
    let mut received = Vec::new();
    loop {
        let out = clients
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names("MessageGroupId".into())
            .send()
            .await
            .expect("receive");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return received;
        }
        for m in messages {
            let group = m
                .attributes
                .as_ref()
                .and_then(|a| a.iter().find(|(k, _)| k.as_str() == "MessageGroupId"))
                .map(|(_, v)| v.clone())
                .expect("message group id");
            let message = Received {
                collection: parse_compaction_message(m.body().expect("body")).expect("parses"),
                group,
            };
            received.push((message, m.receipt_handle.expect("receipt handle")));
        }
    }
}

async fn delete(clients: &AwsClients, url: &str, receipt_handle: &str) {
    clients
        .sqs
        .delete_message()
        .queue_url(url)
        .receipt_handle(receipt_handle)
        .send()
        .await
        .expect("delete");
}

/// Receives and deletes every visible message.
async fn drain(clients: &AwsClients, url: &str) -> Vec<Received> {
    let mut received = Vec::new();
    for (message, receipt_handle) in receive_all(clients, url).await {
        delete(clients, url, &receipt_handle).await;
        received.push(message);
    }
    received.sort();
    received
}

/// The compact Lambda's end of the queue, for the conformance suite: a received message
/// is taken, and deleted once handled: at once, or with `handling` only at the next
/// take (as when a request comes while a compaction runs).
struct Compactor<'a> {
    clients: &'a AwsClients,
    url: &'a str,
    handling: Option<Vec<String>>,
}

impl Deliveries for Compactor<'_> {
    async fn take_all(&mut self) -> Vec<Uuid> {
        let Some(handling) = &mut self.handling else {
            let drained = drain(self.clients, self.url).await;
            return drained.into_iter().map(|r| r.collection).collect();
        };
        for receipt_handle in handling.drain(..) {
            delete(self.clients, self.url, &receipt_handle).await;
        }
        let mut taken = Vec::new();
        for (message, receipt_handle) in receive_all(self.clients, self.url).await {
            handling.push(receipt_handle);
            taken.push(message.collection);
        }
        taken
    }
}

#[tokio::test]
async fn conformance() {
    let (clients, url, jobs) = setup().await;
    let mut compactor = Compactor {
        clients: &clients,
        url: &url,
        handling: None,
    };
    conformance::suite(&jobs, &mut compactor).await;
}

/// A request made while the previous one for its collection is being handled names a
/// later log head, so it is a new message, not dropped as a repeat of the one in hand.
#[tokio::test]
async fn conformance_request_while_handling() {
    let (clients, url, jobs) = setup().await;
    let mut compactor = Compactor {
        clients: &clients,
        url: &url,
        handling: Some(Vec::new()),
    };
    conformance::cases(&jobs, &mut compactor, &[Case::RequestAfterTaken]).await;
}

/// A request for `collection` made when its log started at batch `batch`.
fn request(collection: Uuid, batch: &str) -> CompactionRequest {
    CompactionRequest {
        collection,
        log_head: format!("c/{collection}/log/{batch}.parquet"),
    }
}

#[tokio::test]
async fn ensure_queue_creates_a_fifo_queue_once() {
    let config = common::config();
    let clients = common::clients(&config).await;
    let name = format!("{}.fifo", common::unique("jobs"));
    let url = ensure_queue(&clients, &name).await.unwrap();
    assert!(url.ends_with(&name), "{url}");
    assert_eq!(ensure_queue(&clients, &name).await.unwrap(), url);
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names("FifoQueue".into())
        .send()
        .await
        .unwrap();
    let fifo = attributes
        .attributes
        .unwrap_or_default()
        .into_iter()
        .find(|(k, _)| k.as_str() == "FifoQueue")
        .map(|(_, v)| v);
    assert_eq!(fifo.as_deref(), Some("true"));

    let e = ensure_queue(&clients, &common::unique("jobs"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e:?}");
    assert!(e.message().contains(".fifo"), "{e}");
}

#[tokio::test]
async fn a_burst_for_one_log_head_is_one_message() {
    let (clients, url, jobs) = setup().await;
    let id = Uuid::new_v4();
    for _ in 0..3 {
        jobs.enqueue_compaction(request(id, "01JD8X3Q2ZP5V7K9M4N6R8T0WB"))
            .await
            .unwrap();
    }
    let expected = vec![Received {
        collection: id,
        group: id.to_string(),
    }];
    assert_eq!(drain(&clients, &url).await, expected);
    assert_eq!(drain(&clients, &url).await, []);
}

#[tokio::test]
async fn a_request_for_a_new_log_head_is_a_new_message_at_once() {
    let (clients, url, jobs) = setup().await;
    let id = Uuid::new_v4();
    jobs.enqueue_compaction(request(id, "01JD8X3Q2ZP5V7K9M4N6R8T0WB"))
        .await
        .unwrap();
    assert_eq!(drain(&clients, &url).await.len(), 1);
    // The log moved on: a new request, not a repeat of the one just handled (real SQS
    // drops a repeat for 5 minutes after it; moto only while it is in the queue, which
    // `conformance_request_while_handling` shows).
    jobs.enqueue_compaction(request(id, "01JD8X3Q2ZP5V7K9M4N6R8T0WC"))
        .await
        .unwrap();
    let received = drain(&clients, &url).await;
    assert_eq!(
        received,
        [Received {
            collection: id,
            group: id.to_string(),
        }]
    );
}

#[tokio::test]
async fn collections_are_separate_message_groups() {
    let (clients, url, jobs) = setup().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    jobs.enqueue_compaction(request(a, "01JD8X3Q2ZP5V7K9M4N6R8T0WB"))
        .await
        .unwrap();
    jobs.enqueue_compaction(request(b, "01JD8X3Q2ZP5V7K9M4N6R8T0WB"))
        .await
        .unwrap();
    jobs.enqueue_compaction(request(a, "01JD8X3Q2ZP5V7K9M4N6R8T0WB"))
        .await
        .unwrap();
    let mut expected = vec![
        Received {
            collection: a,
            group: a.to_string(),
        },
        Received {
            collection: b,
            group: b.to_string(),
        },
    ];
    expected.sort();
    assert_eq!(drain(&clients, &url).await, expected);
}

#[tokio::test]
async fn a_missing_queue_is_a_configuration_error() {
    let (clients, url, _) = setup().await;
    let missing = format!("{}-missing.fifo", url.trim_end_matches(".fifo"));
    let jobs = SqsJobs::new(&clients, missing.clone());
    let e = jobs
        .enqueue_compaction(request(Uuid::new_v4(), "01JD8X3Q2ZP5V7K9M4N6R8T0WB"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&missing), "{e}");
}

#[test]
fn compaction_messages_parse() {
    let id = Uuid::new_v4();
    assert_eq!(
        parse_compaction_message(&format!(r#"{{"collection": "{id}"}}"#)).unwrap(),
        id
    );
    assert_eq!(
        parse_compaction_message(&format!(r#"{{"collection": "{id}", "extra": 1}}"#)).unwrap(),
        id
    );
    for (body, names) in [
        ("", "JSON"),
        ("not json", "JSON"),
        (r#"["collection"]"#, "object"),
        ("{}", "\"collection\""),
        (r#"{"collection": 5}"#, "string"),
        (r#"{"collection": null}"#, "string"),
        (r#"{"collection": "abc"}"#, "\"abc\""),
        (r#"{"Collection": "abc"}"#, "\"collection\""),
    ] {
        let e = parse_compaction_message(body).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{body}: {e:?}");
        assert!(e.message().contains(names), "{body}: {e}");
    }
}
