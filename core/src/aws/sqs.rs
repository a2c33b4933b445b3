//! The jobs port on an SQS FIFO queue: compaction requests for the compact Lambda.
//!
//! Every collection is a message group of its own (`MessageGroupId` = collection id), so
//! the queue never hands out two requests for one collection at the same time. The
//! deduplication id is the collection id and the request's log head (the oldest log
//! batch when the request was made): a burst of writes to one log collapses into one
//! message, and a request made after a compaction moved the log's head on is a new
//! message. SQS drops a repeated deduplication id for 5 minutes, even after the first
//! message was handled; so a request made while a compaction runs, before it commits,
//! is dropped as a repeat of the one being handled, and the compactor asks again for
//! whatever log is left once it has committed (as the [`Jobs`] contract says).
//!
//! The message body is `{"collection": "<uuid>"}`; [`parse_compaction_message`] reads it.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::QueueAttributeName;
use uuid::Uuid;

use super::{sdk_error, AwsClients};
use crate::error::{Error, ErrorCode, Result};
use crate::jobs::{CompactionRequest, Jobs};

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

/// SQS's longest deduplication id.
const MAX_DEDUPLICATION_ID: usize = 128;

/// The deduplication id of `request`: its collection and the name of its log head's
/// batch (a ULID, unique per log), within SQS's 128 characters of its allowed alphabet.
fn deduplication_id(request: &CompactionRequest) -> String {
    let batch = request
        .log_head
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".parquet");
    let mut id = format!("{}-{batch}", request.collection);
    // Keys are ASCII (`object_keys::log_batch`), but a deduplication id must never fail the send.
    id.retain(|c| c.is_ascii_alphanumeric() || c.is_ascii_punctuation());
    id.truncate(MAX_DEDUPLICATION_ID);
    id
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
    async fn enqueue_compaction(&self, request: CompactionRequest) -> Result<()> {
        let collection = request.collection;
        let body = serde_json::json!({ "collection": collection.to_string() }).to_string();
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(collection.to_string())
            .message_deduplication_id(deduplication_id(&request))
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
    fn deduplication_ids_name_the_collection_and_the_log_head() {
        let request = |collection: u128, head: &str| CompactionRequest {
            collection: Uuid::from_u128(collection),
            log_head: head.to_string(),
        };
        let head = "c/00000000-0000-0000-0000-000000000001/log/01JD8X3Q2ZP5V7K9M4N6R8T0WB.parquet";
        let id = deduplication_id(&request(1, head));
        assert_eq!(
            id,
            "00000000-0000-0000-0000-000000000001-01JD8X3Q2ZP5V7K9M4N6R8T0WB"
        );
        // The same log head is the same request; another head or collection is not.
        assert_eq!(id, deduplication_id(&request(1, head)));
        assert_ne!(
            id,
            deduplication_id(&request(
                1,
                "c/00000000-0000-0000-0000-000000000001/log/01JD8X3Q2ZP5V7K9M4N6R8T0WC.parquet"
            ))
        );
        assert_ne!(id, deduplication_id(&request(2, head)));
        // Whatever the key, the id is one SQS accepts.
        let odd = deduplication_id(&request(1, &format!("c/x/log/é {}", "z".repeat(300))));
        assert!(odd.len() <= MAX_DEDUPLICATION_ID, "{odd}");
        assert!(odd.chars().all(|c| c.is_ascii_graphic()), "{odd}");
    }
}
