//! The `ingest-events` function: S3 `ObjectCreated` notifications for files dropped under
//! `ingest/{tenant}/{database}/{collection}/`, delivered through an SQS queue.
//!
//! Each file is validated whole and upserted by [`chroma_core::ingest`]; a bad file is
//! moved to `ingest-failed/` with a report, which is a success for the queue. A message
//! fails (and is delivered again, then reaches the dead-letter queue) only when a file
//! could not be processed for a transient reason; the batch reports exactly those
//! (`ReportBatchItemFailures`).

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chroma_core::ingest::{decode_event_key, IngestFile, IngestOutcome, INGEST_PREFIX};
use chroma_core::ErrorCode;

use serde::Deserialize;

use super::Deployment;

/// The parts of an S3 event notification this function reads. (`aws_lambda_events`'
/// `S3Event` also requires `userIdentity`, `requestParameters` and `responseElements`,
/// which S3-compatible emulators omit; nothing here needs them.)
#[derive(Debug, Deserialize)]
struct Notification {
    #[serde(rename = "Records")]
    records: Vec<NotificationRecord>,
}

#[derive(Debug, Deserialize)]
struct NotificationRecord {
    #[serde(rename = "eventName", default)]
    event_name: String,
    s3: Entity,
}

#[derive(Debug, Deserialize)]
struct Entity {
    bucket: Bucket,
    object: Object,
}

#[derive(Debug, Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Debug, Deserialize)]
struct Object {
    key: String,
    #[serde(rename = "eTag", default)]
    e_tag: String,
}

/// Processes every message of the batch; returns the ones to deliver again.
pub async fn handle(deployment: &Deployment, batch: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for message in batch.records {
        let id = message.message_id.clone().unwrap_or_default();
        if let Err(e) = handle_message(deployment, &message).await {
            tracing::error!(message_id = %id, error = %format!("{e:#}"), "ingest event failed; it will be delivered again");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// The files one message announces, ingested one after the other.
async fn handle_message(deployment: &Deployment, message: &SqsMessage) -> anyhow::Result<()> {
    let body = message.body.as_deref().unwrap_or("");
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| anyhow::anyhow!("the message body is not JSON: {e}"))?;
    // S3 sends one test event when a notification is configured.
    if value.get("Event").and_then(|v| v.as_str()) == Some("s3:TestEvent") {
        tracing::info!("S3 test event");
        return Ok(());
    }
    let event: Notification = serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("the message is not an S3 event notification: {e}"))?;
    for record in event.records {
        let name = record.event_name.as_str();
        if !name.starts_with("ObjectCreated") {
            tracing::info!(event = name, "ignoring an S3 event that creates nothing");
            continue;
        }
        let bucket = record.s3.bucket.name;
        if bucket != deployment.aws.bucket {
            tracing::warn!(bucket, expected = %deployment.aws.bucket, "ignoring an object of another bucket");
            continue;
        }
        let full_key = decode_event_key(&record.s3.object.key)?;
        // Keys in the store are relative to the deployment's prefix.
        let Some(key) = full_key.strip_prefix(deployment.aws.prefix.as_str()) else {
            tracing::warn!(key = %full_key, prefix = %deployment.aws.prefix, "ignoring an object outside the deployment's prefix");
            continue;
        };
        if !key.starts_with(INGEST_PREFIX) {
            tracing::warn!(key, "ignoring an object outside the ingest prefix");
            continue;
        }
        let etag = record.s3.object.e_tag.trim_matches('"').to_owned();
        let file = IngestFile {
            bucket,
            key: key.to_owned(),
            etag,
        };
        let outcome = match deployment.engine.ingest_file(&file).await {
            Ok(outcome) => outcome,
            // Deleted (or overwritten and then deleted) before its event was handled.
            Err(e) if e.code() == ErrorCode::NotFound => {
                tracing::warn!(key = %file.key, etag = %file.etag, error = %e, "the file is gone; nothing to ingest");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match outcome {
            IngestOutcome::Ingested { records, batches } => {
                tracing::info!(key = %file.key, etag = %file.etag, records, batches, "ingested");
            }
            IngestOutcome::AlreadyIngested => {
                tracing::info!(key = %file.key, etag = %file.etag, "already ingested");
            }
            IngestOutcome::Rejected { report_key, reason } => {
                tracing::warn!(key = %file.key, etag = %file.etag, report_key, reason, "rejected");
            }
        }
    }
    Ok(())
}
