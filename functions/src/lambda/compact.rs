//! The `compact` function: compaction requests from the FIFO queue (one message group per
//! collection, sent by the write path through the `Jobs` port) and a scheduled sweep.
//!
//! A request compacts its collection and collects its garbage. The sweep (an EventBridge
//! schedule, [`chroma_core::engine::Engine::sweep`]) compacts every collection with log
//! left or too many segments, collects garbage everywhere and deletes what deleted
//! collections and bulk ingest left behind — so nothing depends on a message having been
//! delivered. A broken collection does not stop the sweep of the others.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chroma_core::aws::sqs::parse_compaction_message;
use std::time::{Duration, SystemTime};

use chroma_core::engine::{Merge, Stop, SweepReport};
use chroma_core::ErrorCode;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Deployment;

/// What one invocation did.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Outcome {
    /// An SQS batch: the messages to deliver again (`ReportBatchItemFailures`).
    Batch(SqsBatchResponse),
    /// A sweep.
    Sweep(SweepReport),
}

/// How long before the invocation's deadline work stops, so that it ends cleanly (the log
/// stays as it is; the next request or sweep goes on from there).
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(20);

/// Handles an SQS batch of compaction requests or a scheduled event, with no deadline.
pub async fn handle(deployment: &Deployment, event: Value) -> anyhow::Result<Outcome> {
    handle_until(deployment, event, None).await
}

/// Handles an event, stopping [`DEADLINE_MARGIN`] before `deadline` (the invocation's,
/// from the Lambda context): a compaction stopped then commits nothing and its request is
/// reported failed, to be delivered again; a sweep stopped then leaves the rest to the
/// next one.
pub async fn handle_until(
    deployment: &Deployment,
    event: Value,
    deadline: Option<SystemTime>,
) -> anyhow::Result<Outcome> {
    let token = CancellationToken::new();
    let timer = deadline.map(|d| {
        let token = token.clone();
        let left = d
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .saturating_sub(DEADLINE_MARGIN);
        tokio::spawn(async move {
            tokio::time::sleep(left).await;
            tracing::warn!("the invocation's time is nearly up: stopping");
            token.cancel();
        })
    });
    let stop = Stop::on(token);
    let outcome = async {
        if event.get("Records").is_some() {
            let batch: SqsEvent = serde_json::from_value(event)?;
            return Ok(Outcome::Batch(
                handle_requests(deployment, batch, &stop).await,
            ));
        }
        if event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
            return Ok(Outcome::Sweep(sweep(deployment, &stop).await?));
        }
        anyhow::bail!(
            "the compact function takes SQS batches of compaction requests or scheduled events"
        )
    }
    .await;
    if let Some(timer) = timer {
        timer.abort();
    }
    outcome
}

/// Compacts the collection each message names, in order. On a FIFO queue, a failed
/// message and every one after it are reported failed, so a collection's requests stay in
/// order; a malformed message fails (and reaches the dead-letter queue after its retries).
pub async fn handle_requests(
    deployment: &Deployment,
    batch: SqsEvent,
    stop: &Stop,
) -> SqsBatchResponse {
    let engine = &deployment.engine;
    let mut failures = Vec::new();
    for message in batch.records {
        let id = message.message_id.clone().unwrap_or_default();
        if !failures.is_empty() {
            failures.push(failure(id));
            continue;
        }
        let result = async {
            let collection = parse_compaction_message(message.body.as_deref().unwrap_or(""))?;
            match engine.sweep_collection(collection, Merge::AsNeeded, stop).await {
                Ok(report) => {
                    tracing::info!(%collection, folded_batches = report.folded_batches, folded_ops = report.folded_ops, merged_segments = report.merged_segments, collected = report.collected_objects, "compacted");
                    Ok(())
                }
                // Deleted since the request was sent: nothing to do.
                Err(e) if e.code() == ErrorCode::NotFound => {
                    tracing::info!(%collection, "compaction request for a deleted collection");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        .await;
        if let Err(e) = result {
            tracing::error!(message_id = %id, error = %e, "compaction request failed");
            failures.push(failure(id));
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}

fn failure(id: String) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id;
    f
}

/// Compacts and collects garbage in every collection, then removes what deleted
/// collections and bulk ingest left behind. Every collection is swept even if some fail;
/// the invocation then fails (so the failure shows in the function's error metric and its
/// alarm) after naming each one in the log.
pub async fn sweep(deployment: &Deployment, stop: &Stop) -> anyhow::Result<SweepReport> {
    let report = deployment
        .engine
        .sweep(Merge::AsNeeded, stop, &mut |_, _| {})
        .await?;
    if !report.failures.is_empty() {
        anyhow::bail!(
            "the sweep failed for {} collections: {:?}",
            report.failures.len(),
            report.failures
        );
    }
    Ok(report)
}
