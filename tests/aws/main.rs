//! The AWS implementations of the ports against moto's server on loopback.
//!
//! Needs `AWS_ENDPOINT_URL` (and dummy credentials) pointing at a running emulator:
//! `scripts/test.sh` starts one, or `source scripts/moto.sh` by hand. Without it every
//! test fails (never skips) and says so. Each test works in a bucket, tables and a KMS
//! key of its own, so tests run in parallel against one emulator.

mod common;
mod dynamodb;
mod faults;
mod kms;
mod provision;
mod s3;
mod sqs;
