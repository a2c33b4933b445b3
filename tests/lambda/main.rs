//! The Lambda functions in-process: API Gateway (HTTP API, payload 2.0), SQS and
//! EventBridge events fed to the same handlers the binaries run, over S3, DynamoDB, KMS
//! and SQS on moto's server. The events are the committed fixtures of `tests/events/`
//! (placeholders filled in) and messages moto itself produced: S3 notifications of
//! uploaded ingest files, and the compaction requests the write path sent.
//!
//! Needs `AWS_ENDPOINT_URL` pointing at moto on loopback (`scripts/test.sh` starts it).

mod common;
mod compact;
mod http;
mod ingest_events;
