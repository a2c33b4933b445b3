//! The SQS jobs queue: FIFO queues, one message group per collection, bursts merged into
//! one message per window, and the message body the compact Lambda reads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chroma_core::aws::sqs::{ensure_queue, parse_compaction_message, SqsJobs, DEDUP_WINDOW};
use chroma_core::aws::AwsClients;
use chroma_core::error::ErrorCode;
use chroma_core::jobs::Jobs;
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

/// Receives (waiting up to a second) and deletes every visible message.
async fn drain(clients: &AwsClients, url: &str) -> Vec<Received> {
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
    let mut received = Vec::new();
    for m in out.messages.unwrap_or_default() {
        let group = m
            .attributes
            .as_ref()
            .and_then(|a| a.iter().find(|(k, _)| k.as_str() == "MessageGroupId"))
            .map(|(_, v)| v.clone())
            .expect("message group id");
        received.push(Received {
            collection: parse_compaction_message(m.body().expect("body")).expect("parses"),
            group,
        });
        clients
            .sqs
            .delete_message()
            .queue_url(url)
            .receipt_handle(m.receipt_handle().expect("receipt handle"))
            .send()
            .await
            .expect("delete");
    }
    received.sort();
    received
}

/// Sleeps until the start of the next deduplication window.
async fn next_window() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let window = DEDUP_WINDOW.as_millis();
    let left = window - now.as_millis() % window;
    tokio::time::sleep(Duration::from_millis(left as u64 + 50)).await;
}

/// Sleeps into the next window if less than 3 seconds of this one are left, so a
/// few requests sent now fall into one window.
async fn window_with_room() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let window = DEDUP_WINDOW.as_millis();
    if window - now.as_millis() % window < 3_000 {
        next_window().await;
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
async fn a_burst_for_one_collection_is_one_message() {
    let (clients, url, jobs) = setup().await;
    let id = Uuid::new_v4();
    window_with_room().await;
    for _ in 0..3 {
        jobs.enqueue_compaction(id).await.unwrap();
    }
    let expected = vec![Received {
        collection: id,
        group: id.to_string(),
    }];
    assert_eq!(drain(&clients, &url).await, expected);
    assert_eq!(drain(&clients, &url).await, []);
}

#[tokio::test]
async fn a_request_in_a_later_window_is_a_new_message() {
    let (clients, url, jobs) = setup().await;
    let id = Uuid::new_v4();
    jobs.enqueue_compaction(id).await.unwrap();
    assert_eq!(drain(&clients, &url).await.len(), 1);
    next_window().await;
    jobs.enqueue_compaction(id).await.unwrap();
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
    window_with_room().await;
    jobs.enqueue_compaction(a).await.unwrap();
    jobs.enqueue_compaction(b).await.unwrap();
    jobs.enqueue_compaction(a).await.unwrap();
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
    let e = jobs.enqueue_compaction(Uuid::new_v4()).await.unwrap_err();
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
