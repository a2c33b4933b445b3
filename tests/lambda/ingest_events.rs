//! The `ingest-events` function: files uploaded to the emulated bucket, announced by
//! moto's own S3 → SQS notifications, ingested once; bad files set aside with a report.

use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::types::{Message, QueueAttributeName};
use chroma_core::aws::AwsClients;
use chroma_functions::lambda::ingest_events::handle;
use chroma_functions::lambda::Function;
use serde_json::{json, Value};

use super::common::{call, count, create_collection, fixture, sqs_event, Stack};

/// A stack whose bucket notifies an SQS queue of objects created under `ingest/`.
struct Notified {
    stack: Stack,
    clients: AwsClients,
    queue_url: String,
    queue_arn: String,
}

impl Notified {
    async fn new() -> Self {
        let stack = Stack::new().await;
        let clients = AwsClients::connect(&stack.config).await;
        let queue_url = clients
            .sqs
            .create_queue()
            .queue_name(format!("{}-ingest", stack.name))
            .send()
            .await
            .expect("create queue")
            .queue_url()
            .unwrap()
            .to_owned();
        let queue_arn = clients
            .sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .expect("queue arn")
            .clone();
        let filter = NotificationConfigurationFilter::builder()
            .key(
                S3KeyFilter::builder()
                    .filter_rules(
                        FilterRule::builder()
                            .name(FilterRuleName::Prefix)
                            .value("ingest/")
                            .build(),
                    )
                    .build(),
            )
            .build();
        clients
            .s3
            .put_bucket_notification_configuration()
            .bucket(&stack.config.bucket)
            .notification_configuration(
                NotificationConfiguration::builder()
                    .queue_configurations(
                        QueueConfiguration::builder()
                            .queue_arn(&queue_arn)
                            .events(Event::S3ObjectCreated)
                            .filter(filter)
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("bucket notification");
        Self {
            stack,
            clients,
            queue_url,
            queue_arn,
        }
    }

    async fn upload(&self, key: &str, body: &str) {
        self.clients
            .s3
            .put_object()
            .bucket(&self.stack.config.bucket)
            .key(key)
            .body(ByteStream::from(body.as_bytes().to_vec()))
            .send()
            .await
            .expect("upload");
    }

    async fn exists(&self, key: &str) -> bool {
        self.clients
            .s3
            .head_object()
            .bucket(&self.stack.config.bucket)
            .key(key)
            .send()
            .await
            .is_ok()
    }

    /// An object as stored (ingest seals what it writes).
    async fn raw(&self, key: &str) -> Vec<u8> {
        let out = self
            .clients
            .s3
            .get_object()
            .bucket(&self.stack.config.bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        out.body.collect().await.unwrap().to_vec()
    }

    /// An object ingest wrote, decrypted.
    async fn read(&self, key: &str) -> String {
        let deployment = self.stack.function(Function::IngestEvents).await;
        let bytes = deployment
            .engine
            .read_ingest_object(key)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        String::from_utf8(bytes).unwrap()
    }

    /// The notification for an object whose key contains `needle`, as moto sent it.
    async fn notification(&self, needle: &str) -> Message {
        for _ in 0..20 {
            let out = self
                .clients
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive");
            for m in out.messages() {
                if m.body().is_some_and(|b| b.contains(needle)) {
                    return m.clone();
                }
            }
        }
        panic!("no S3 notification for {needle}");
    }

    async fn deliver(&self, messages: &[Message]) -> Vec<String> {
        let d = self.stack.function(Function::IngestEvents).await;
        let event: SqsEvent =
            serde_json::from_value(sqs_event(&self.queue_arn, messages)).expect("an SQS event");
        handle(&d, event)
            .await
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect()
    }

    async fn count(&self, id: &str) -> Value {
        let query = self.stack.router(Function::Query).await;
        count(&query, &self.stack.key, id).await
    }
}

const GOOD: &str = r#"{"id": "a", "embedding": [0.1, 0.2, 0.3], "document": "alpha", "metadata": {"lang": "en"}}
{"id": "b", "embedding": [0.2, 0.1, 0.0], "document": "beta"}

{"id": "c", "embedding": [0.9, 0.9, 0.9], "uri": "s3://docs/c.txt", "metadata": {"n": 3}}
"#;

#[tokio::test]
async fn a_dropped_file_is_ingested_once() {
    let n = Notified::new().await;
    let ingest = n.stack.router(Function::Ingest).await;
    let id = create_collection(&ingest, &n.stack.key, "articles").await;
    let key = "ingest/default_tenant/default_database/articles/first.jsonl";
    n.upload(key, GOOD).await;
    let message = n.notification("first.jsonl").await;
    assert!(n.deliver(std::slice::from_ref(&message)).await.is_empty());
    assert_eq!(n.count(&id).await, json!(3));

    let query = n.stack.router(Function::Query).await;
    let a = call(
        &query,
        &n.stack.key,
        "POST",
        &id,
        "get",
        Some(json!({"ids": ["a", "c"], "include": ["documents", "metadatas", "uris"]})),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["documents"], json!(["alpha", null]));
    assert_eq!(a.body["metadatas"], json!([{"lang": "en"}, {"n": 3}]));
    assert_eq!(a.body["uris"], json!([null, "s3://docs/c.txt"]));

    // SQS delivers at least once: the same event again changes nothing.
    let manifest_before = n.count(&id).await;
    assert!(n.deliver(&[message.clone(), message]).await.is_empty());
    assert_eq!(n.count(&id).await, manifest_before);
}

#[tokio::test]
async fn a_bad_file_is_set_aside_with_a_report_and_changes_nothing() {
    let n = Notified::new().await;
    let ingest = n.stack.router(Function::Ingest).await;
    let id = create_collection(&ingest, &n.stack.key, "articles").await;
    n.upload(
        "ingest/default_tenant/default_database/articles/ok.jsonl",
        GOOD,
    )
    .await;
    let ok = n.notification("ok.jsonl").await;
    assert!(n.deliver(&[ok]).await.is_empty());

    // Line 3 has the wrong dimension: nothing of the file may land.
    let bad = "{\"id\": \"x\", \"embedding\": [1, 2, 3]}\n{\"id\": \"y\", \"embedding\": [1, 2, 3]}\n{\"id\": \"z\", \"embedding\": [1, 2]}\n";
    let key = "ingest/default_tenant/default_database/articles/bad.jsonl";
    n.upload(key, bad).await;
    let message = n.notification("bad.jsonl").await;
    assert!(
        n.deliver(&[message]).await.is_empty(),
        "a rejected file is handled, not retried"
    );
    assert_eq!(n.count(&id).await, json!(3));
    assert!(!n.exists(key).await, "the bad file left the ingest prefix");
    let moved = "ingest-failed/default_tenant/default_database/articles/bad.jsonl";
    assert_eq!(n.read(moved).await, bad);
    let raw = n.raw(moved).await;
    assert!(
        !raw.windows(9).any(|w| w == b"embedding"),
        "sealed, not plaintext"
    );
    let report: Value =
        serde_json::from_str(&n.read(&format!("{moved}.error.json")).await).expect("report");
    let text = report.to_string();
    assert!(
        report["line"] == json!(3) || text.contains("line 3"),
        "{report}"
    );
    assert!(text.contains("dimension"), "{report}");
    // `chroma ingest failures` lists it.
    let deployment = n.stack.function(Function::IngestEvents).await;
    let listed = chroma_functions::ingest::reports(&deployment.engine)
        .await
        .unwrap();
    assert_eq!(listed, vec![report]);
}

#[tokio::test]
async fn the_committed_fixture_with_an_encoded_key_is_understood() {
    let n = Notified::new().await;
    let ingest = n.stack.router(Function::Ingest).await;
    let id = create_collection(&ingest, &n.stack.key, "articles").await;
    // The fixture's key is URL-encoded the way S3 sends it ("batch+0001" for a space).
    let key = "ingest/default_tenant/default_database/articles/batch 0001.jsonl";
    n.upload(key, GOOD).await;
    let etag = n
        .clients
        .s3
        .head_object()
        .bucket(&n.stack.config.bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let event = fixture(
        "sqs-s3-ingest.json",
        &[("__BUCKET__", &n.stack.config.bucket), ("__ETAG__", &etag)],
    );
    let d = n.stack.function(Function::IngestEvents).await;
    let event: SqsEvent = serde_json::from_value(event).unwrap();
    assert!(handle(&d, event).await.batch_item_failures.is_empty());
    assert_eq!(n.count(&id).await, json!(3));
}

#[tokio::test]
async fn messages_that_are_not_s3_events_fail_alone() {
    let n = Notified::new().await;
    let ingest = n.stack.router(Function::Ingest).await;
    let id = create_collection(&ingest, &n.stack.key, "articles").await;
    n.upload(
        "ingest/default_tenant/default_database/articles/fine.jsonl",
        GOOD,
    )
    .await;
    let fine = n.notification("fine.jsonl").await;
    let garbage = Message::builder()
        .message_id("garbage")
        .receipt_handle("r")
        .body("this is not an S3 event")
        .build();
    let test_event = Message::builder()
        .message_id("test-event")
        .receipt_handle("t")
        .body(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-28T02:10:00.000Z","Bucket":"b","RequestId":"1","HostId":"2"}"#)
        .build();
    assert_eq!(
        n.deliver(&[garbage, test_event, fine]).await,
        vec!["garbage".to_owned()]
    );
    assert_eq!(n.count(&id).await, json!(3));
}
