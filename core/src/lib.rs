//! The engine of a Chroma-compatible embedding database.
//!
//! Everything that decides anything lives here: the data model and its validation
//! ([`model`]), the ports to the outside world ([`storage`], [`catalog`], [`crypto`],
//! [`jobs`]) with their local implementations, the on-disk formats ([`segment`]), the
//! vector index ([`index`]), the orchestration of writes, reads and compaction
//! ([`engine`]) and bulk ingestion of files dropped into the object store ([`ingest`]).
//! Entry points (the local server, Lambda functions) are thin adapters.

pub mod access;
pub mod api;
pub mod auth;
#[cfg(feature = "aws")]
pub mod aws;
pub mod catalog;
pub mod clock;
pub mod cpu;
pub mod crypto;
pub mod engine;
pub mod error;
#[cfg(any(test, feature = "testing"))]
pub mod faults;
pub mod index;
pub mod ingest;
pub mod jobs;
#[cfg(test)]
mod layering;
pub mod metrics;
#[cfg(feature = "sqlite")]
pub mod migrate;
pub mod model;
pub mod request;
pub mod segment;
pub mod serde_base64;
pub mod storage;

pub use error::{Error, ErrorCode, Result};
