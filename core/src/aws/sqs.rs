//! The jobs port on an SQS FIFO queue: compaction requests for the compact Lambda.
//!
//! Every collection is a message group of its own (`MessageGroupId` = collection id), so
//! the queue never hands out two requests for one collection at the same time. The
//! deduplication id is the collection id and the current [`DEDUP_WINDOW`] bucket: a burst
//! of writes collapses into one message per window, and a request in a later window is a
//! new message (SQS drops a repeated deduplication id for 5 minutes, so the id alone would
//! lose requests). A request merged into one the compactor already took is caught by the
//! next write's request, as the port's contract allows.
//!
//! The message body is `{"collection": "<uuid>"}`; [`parse_compaction_message`] reads it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::QueueAttributeName;
use uuid::Uuid;

use super::{sdk_error, AwsClients};
use crate::error::{Error, ErrorCode, Result};
use crate::jobs::Jobs;

/// Requests for one collection within one such window are merged into one message.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(10);

/// How long a received request stays invisible to other consumers: the longest a Lambda
/// function may run, so a compaction in progress is never handed out twice.
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(900);

/// Sends compaction requests to an SQS FIFO queue.
#[derive(Debug, Clone)]
pub struct SqsJobs {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsJobs {
    /// Requests go to the FIFO queue at `queue_url` (see [`ensure_queue`]).
    pub fn new(clients: &AwsClients, queue_url: String) -> Self {
        Self {
            sqs: clients.sqs.clone(),
            queue_url,
        }
    }
}

/// The deduplication id of a request for `collection` made at `now`.
fn deduplication_id(collection: Uuid, now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    format!("{collection}-{}", secs / DEDUP_WINDOW.as_secs())
}

/// Maps an SQS failure: throttling is `Unavailable`, a missing queue is a configuration
/// problem, anything else as [`sdk_error`] does.
fn sqs_error<E>(operation: &str, queue: &str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err.code().unwrap_or_default() {
        "RequestThrottled" | "ThrottlingException" | "KmsThrottled" => Error::with_source(
            ErrorCode::Unavailable,
            format!("SQS {operation} on {queue} was throttled"),
            err,
        ),
        "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist" => Error::with_source(
            ErrorCode::FailedPrecondition,
            format!("SQS queue {queue} does not exist (check CHROMA_COMPACTION_QUEUE_URL)"),
            err,
        ),
        _ => sdk_error(&format!("SQS {operation} on {queue}"), err),
    }
}

#[async_trait]
impl Jobs for SqsJobs {
    async fn enqueue_compaction(&self, collection: Uuid) -> Result<()> {
        let body = serde_json::json!({ "collection": collection.to_string() }).to_string();
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(collection.to_string())
            .message_deduplication_id(deduplication_id(collection, SystemTime::now()))
            .send()
            .await
            .map_err(|e| sqs_error("SendMessage", &self.queue_url, e))?;
        Ok(())
    }
}

/// The collection a compaction request names; `InvalidArgument` naming the problem for
/// anything but `{"collection": "<uuid>"}` (other fields are ignored).
pub fn parse_compaction_message(body: &str) -> Result<Uuid> {
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| Error::invalid(format!("compaction message is not JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(Error::invalid("compaction message is not a JSON object"));
    };
    let Some(field) = object.get("collection") else {
        return Err(Error::invalid(
            "compaction message has no \"collection\" field",
        ));
    };
    let Some(text) = field.as_str() else {
        return Err(Error::invalid(format!(
            "compaction message's \"collection\" must be a string, got {field}"
        )));
    };
    Uuid::parse_str(text).map_err(|_| {
        Error::invalid(format!(
            "compaction message's \"collection\" {text:?} is not a UUID"
        ))
    })
}

/// Returns the URL of the FIFO queue `name` (which must end in `.fifo`), creating it if
/// missing; fails with `FailedPrecondition` if a queue of that name exists but is not FIFO.
pub async fn ensure_queue(clients: &AwsClients, name: &str) -> Result<String> {
    if !name.ends_with(".fifo") {
        return Err(Error::invalid(format!(
            "SQS queue name {name:?} must end in \".fifo\" (a FIFO queue)"
        )));
    }
    let sqs = &clients.sqs;
    let url = match sqs.get_queue_url().queue_name(name).send().await {
        Ok(out) => out.queue_url,
        Err(e) if is_missing_queue(&e) => None,
        Err(e) => return Err(sqs_error("GetQueueUrl", name, e)),
    };
    let url = match url {
        Some(url) => url,
        None => create_queue(clients, name).await?,
    };
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::FifoQueue)
        .send()
        .await
        .map_err(|e| sqs_error("GetQueueAttributes", name, e))?;
    let fifo = attributes
        .attributes
        .as_ref()
        .and_then(|a| a.get(&QueueAttributeName::FifoQueue))
        .is_some_and(|v| v == "true");
    if !fifo {
        return Err(Error::new(
            ErrorCode::FailedPrecondition,
            format!("SQS queue {name} exists but is not a FIFO queue"),
        ));
    }
    Ok(url)
}

async fn create_queue(clients: &AwsClients, name: &str) -> Result<String> {
    let created = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            VISIBILITY_TIMEOUT.as_secs().to_string(),
        )
        .send()
        .await;
    match created {
        Ok(out) => out
            .queue_url
            .ok_or_else(|| Error::internal("SQS CreateQueue returned no queue URL")),
        // Created concurrently, or it exists with other attributes: use it as it is.
        Err(e)
            if e.code()
                .is_some_and(|c| c.contains("QueueAlreadyExists") || c == "QueueNameExists") =>
        {
            clients
                .sqs
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| sqs_error("GetQueueUrl", name, e))?
                .queue_url
                .ok_or_else(|| Error::internal("SQS GetQueueUrl returned no queue URL"))
        }
        Err(e) => Err(sqs_error("CreateQueue", name, e)),
    }
}

fn is_missing_queue<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(
        err.code(),
        Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deduplication_ids_change_with_the_window_and_collection() {
        let a = Uuid::from_u128(1);
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            deduplication_id(a, t),
            deduplication_id(a, t + Duration::from_secs(9))
        );
        assert_ne!(
            deduplication_id(a, t),
            deduplication_id(a, t + DEDUP_WINDOW)
        );
        assert_ne!(
            deduplication_id(a, t),
            deduplication_id(Uuid::from_u128(2), t)
        );
        assert!(deduplication_id(a, t).len() <= 128);
    }
}
