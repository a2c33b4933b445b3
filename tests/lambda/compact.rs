//! The `compact` function: the write path's compaction requests through the FIFO queue,
//! and the scheduled sweep.

use chroma_core::aws::AwsClients;
use chroma_functions::lambda::compact::{self, handle, Outcome};
use chroma_functions::lambda::Function;
use serde_json::{json, Value};

use super::common::{call, count, create_collection, fixture, sqs_event, Stack};

async fn add(stack: &Stack, ingest: &axum::Router, id: &str, from: usize, n: usize) {
    let ids: Vec<String> = (from..from + n).map(|i| format!("r{i}")).collect();
    let embeddings: Vec<Vec<f32>> = (from..from + n)
        .map(|i| vec![i as f32, (i % 7) as f32, 1.0])
        .collect();
    let body = json!({"ids": ids, "embeddings": embeddings});
    let a = call(ingest, &stack.key, "POST", id, "add", Some(body)).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
}

async fn indexing_status(stack: &Stack, query: &axum::Router, id: &str) -> Value {
    let a = call(query, &stack.key, "GET", id, "indexing_status", None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body
}

fn failures(outcome: &Outcome) -> Vec<String> {
    match outcome {
        Outcome::Batch(b) => b
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect(),
        Outcome::Sweep(_) => panic!("an SQS batch was answered as a sweep"),
    }
}

#[tokio::test]
async fn the_write_paths_request_folds_the_log() {
    let stack = Stack::new().await;
    let ingest = stack.router(Function::Ingest).await;
    let query = stack.router(Function::Query).await;
    let id = create_collection(&ingest, &stack.key, "busy").await;
    // Past the log threshold (1,000 operations) in batches Lambda accepts.
    for b in 0..4 {
        add(&stack, &ingest, &id, b * 275, 275).await;
    }
    let before = indexing_status(&stack, &query, &id).await;
    assert_eq!(before["num_unindexed_ops"], json!(1100), "{before}");

    // The request the write path sent, as moto delivers it.
    let clients = AwsClients::connect(&stack.config).await;
    let queue = stack.compaction_queue();
    let received = clients
        .sqs
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .send()
        .await
        .expect("receive");
    let messages = received.messages();
    assert!(
        !messages.is_empty(),
        "the write path sent no compaction request"
    );
    for m in messages {
        let body: Value = serde_json::from_str(m.body().unwrap()).unwrap();
        assert_eq!(body["collection"], json!(id));
    }
    let compact = stack.function(Function::Compact).await;
    let outcome = handle(
        &compact,
        sqs_event("arn:aws:sqs:us-east-1:123456789012:c.fifo", messages),
    )
    .await
    .expect("handled");
    assert!(failures(&outcome).is_empty(), "{outcome:?}");

    let after = indexing_status(&stack, &query, &id).await;
    assert_eq!(after["num_unindexed_ops"], json!(0), "{after}");
    assert_eq!(after["total_ops"], json!(1100));
    assert_eq!(count(&query, &stack.key, &id).await, json!(1100));
}

#[tokio::test]
async fn the_committed_request_fixture_compacts_and_bad_requests_fail_in_order() {
    let stack = Stack::new().await;
    let ingest = stack.router(Function::Ingest).await;
    let query = stack.router(Function::Query).await;
    let id = create_collection(&ingest, &stack.key, "quiet").await;
    add(&stack, &ingest, &id, 0, 10).await;
    let compact = stack.function(Function::Compact).await;

    let event = fixture("sqs-compact.json", &[("__COLLECTION_ID__", &id)]);
    let outcome = handle(&compact, event.clone()).await.expect("handled");
    assert!(failures(&outcome).is_empty(), "{outcome:?}");
    assert_eq!(
        indexing_status(&stack, &query, &id).await["num_unindexed_ops"],
        json!(0)
    );

    // A request for a collection deleted meanwhile is done, not retried.
    let gone = fixture(
        "sqs-compact.json",
        &[("__COLLECTION_ID__", &uuid::Uuid::new_v4().to_string())],
    );
    assert!(failures(&handle(&compact, gone).await.unwrap()).is_empty());

    // A malformed request fails, and so does every later message of the batch (FIFO order).
    let mut batch = event.clone();
    let good = batch["Records"][0].clone();
    let mut bad = good.clone();
    bad["messageId"] = json!("bad");
    bad["body"] = json!("{\"collection\": 42}");
    let mut later = good.clone();
    later["messageId"] = json!("later");
    batch["Records"] = json!([good, bad, later]);
    let outcome = handle(&compact, batch).await.unwrap();
    assert_eq!(
        failures(&outcome),
        vec!["bad".to_owned(), "later".to_owned()]
    );
    let serialized = serde_json::to_value(&outcome).unwrap();
    assert_eq!(
        serialized,
        json!({"batchItemFailures": [{"itemIdentifier": "bad"}, {"itemIdentifier": "later"}]})
    );
}

#[tokio::test]
async fn the_schedule_sweeps_every_collection() {
    let stack = Stack::new().await;
    let ingest = stack.router(Function::Ingest).await;
    let query = stack.router(Function::Query).await;
    let a = create_collection(&ingest, &stack.key, "one").await;
    let b = create_collection(&ingest, &stack.key, "two").await;
    add(&stack, &ingest, &a, 0, 20).await;
    add(&stack, &ingest, &b, 0, 30).await;
    add(&stack, &ingest, &b, 30, 30).await;

    let compact = stack.function(Function::Compact).await;
    let outcome = handle(&compact, fixture("schedule-compact.json", &[]))
        .await
        .expect("swept");
    let Outcome::Sweep(report) = outcome else {
        panic!("a scheduled event was answered as an SQS batch: {outcome:?}");
    };
    assert_eq!(report.collections, 2, "{report:?}");
    assert_eq!(report.folded_batches, 3, "{report:?}");
    for id in [&a, &b] {
        assert_eq!(
            indexing_status(&stack, &query, id).await["num_unindexed_ops"],
            json!(0)
        );
    }
    // Anything else is refused, naming what the function takes.
    let e = handle(&compact, json!({"hello": "world"}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("scheduled"), "{e}");
}

#[tokio::test]
async fn one_broken_collection_does_not_stop_the_sweep() {
    let stack = Stack::new().await;
    let ingest = stack.router(Function::Ingest).await;
    let query = stack.router(Function::Query).await;
    let broken = create_collection(&ingest, &stack.key, "broken").await;
    let fine = create_collection(&ingest, &stack.key, "fine").await;
    add(&stack, &ingest, &broken, 0, 10).await;
    add(&stack, &ingest, &fine, 0, 10).await;
    // The broken collection's manifest names a segment that is not there.
    let compact = stack.function(Function::Compact).await;
    chroma_core::faults::lose_a_segment(compact.engine.catalog().as_ref(), broken.parse().unwrap())
        .await
        .unwrap();

    let e = handle(&compact, fixture("schedule-compact.json", &[]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&broken), "the failure names it: {e}");
    // The other collection was swept all the same.
    assert_eq!(
        indexing_status(&stack, &query, &fine).await["num_unindexed_ops"],
        json!(0)
    );
}

#[tokio::test]
async fn work_stops_before_the_invocation_runs_out_of_time() {
    let stack = Stack::new().await;
    let ingest = stack.router(Function::Ingest).await;
    let query = stack.router(Function::Query).await;
    let id = create_collection(&ingest, &stack.key, "late").await;
    add(&stack, &ingest, &id, 0, 20).await;
    let compact = stack.function(Function::Compact).await;
    // Less time left than the margin: everything stops at once.
    let deadline = Some(std::time::SystemTime::now() + compact::DEADLINE_MARGIN / 2);
    let request = fixture("sqs-compact.json", &[("__COLLECTION_ID__", &id)]);
    let outcome = compact::handle_until(&compact, request.clone(), deadline)
        .await
        .unwrap();
    assert_eq!(
        failures(&outcome).len(),
        1,
        "to be delivered again: {outcome:?}"
    );
    let Outcome::Sweep(report) =
        compact::handle_until(&compact, fixture("schedule-compact.json", &[]), deadline)
            .await
            .unwrap()
    else {
        panic!("a sweep");
    };
    assert_eq!(report.collections, 0, "{report:?}");
    // Nothing was lost: the log is still there, and the next request folds it.
    assert_eq!(
        indexing_status(&stack, &query, &id).await["num_unindexed_ops"],
        json!(20)
    );
    assert!(failures(&handle(&compact, request).await.unwrap()).is_empty());
    assert_eq!(
        indexing_status(&stack, &query, &id).await["num_unindexed_ops"],
        json!(0)
    );
}
