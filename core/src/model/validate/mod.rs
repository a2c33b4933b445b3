//! Validation of names, ids, embeddings ([`names`]), metadata ([`metadata`]), write batches
//! ([`batch`]) and HNSW configuration ([`hnsw`]).
//!
//! Every failure is `InvalidArgument` with a message naming the offending field and value;
//! where Chroma has a fixed message (api §2–3, see [`crate::api`]) that text is used verbatim,
//! since clients and tests match it.
//!
//! Limits beyond Chroma's own rules are the `MAX_*` constants below.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::collection::{HnswConfiguration, Space};
use super::record::{Metadata, MetadataValue, OpKind, Operation, UpdateMetadata};
use super::sparse::SparseVector;
use crate::error::{Error, Result};

/// Longest tenant, database or collection name, in characters.
pub const MAX_NAME_LEN: usize = 512;
/// Shortest tenant, database or collection name, in characters.
pub const MIN_NAME_LEN: usize = 3;
/// Longest record id, in UTF-8 bytes.
pub const MAX_ID_BYTES: usize = 4096;
/// Most dimensions of one embedding.
pub const MAX_DIMENSION: usize = 65_536;
/// Most records in one write batch (Chroma's client advertises 5461 by default).
pub const MAX_RECORDS_PER_WRITE: usize = 100_000;
/// Most keys in one metadata map.
pub const MAX_METADATA_KEYS: usize = 1024;
/// Longest metadata key, in UTF-8 bytes.
pub const MAX_METADATA_KEY_BYTES: usize = 1024;
/// Longest metadata string value (or string array element), in UTF-8 bytes.
pub const MAX_METADATA_STRING_BYTES: usize = 64 * 1024;
/// Most elements of a metadata array value.
pub const MAX_METADATA_ARRAY_LEN: usize = 4096;
/// Most dimensions of one sparse vector (a SPLADE vector of a long text has a few hundred
/// to a few thousand).
pub const MAX_SPARSE_VECTOR_LEN: usize = 65_536;
/// Longest document, in UTF-8 bytes.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// Longest URI, in UTF-8 bytes.
pub const MAX_URI_BYTES: usize = 64 * 1024;
/// Largest `ef_construction` / `ef_search`.
pub const MAX_HNSW_EF: usize = 10_000;
/// Largest `max_neighbors`: the most hnsw_rs supports. The index builder refuses more
/// with this same constant, so nothing accepted here can fail a compaction later.
pub const MAX_HNSW_NEIGHBORS: usize = 256;
/// Largest `num_threads`.
pub const MAX_HNSW_THREADS: usize = 1024;
/// Largest `batch_size`.
pub const MAX_HNSW_BATCH_SIZE: usize = 1_000_000;
/// Largest `sync_threshold`.
pub const MAX_HNSW_SYNC_THRESHOLD: usize = 10_000_000;
/// Largest `resize_factor`.
pub const MAX_HNSW_RESIZE_FACTOR: f64 = 100.0;

/// How much of a user-supplied value an error message quotes.
const QUOTE_CHARS: usize = 100;

/// `s` cut to a readable length for an error message.
fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

/// `InvalidArgument` when `len` bytes are over `limit`; `subject` names what is too long
/// (only called then: valid input costs no formatting).
fn check_bytes(len: usize, limit: usize, subject: impl FnOnce() -> String) -> Result<()> {
    if len > limit {
        return Err(Error::invalid(format!(
            "{} is {len} bytes long, the limit is {limit}",
            subject()
        )));
    }
    Ok(())
}

fn show(v: &Value) -> String {
    quote(&v.to_string())
}

mod batch;
mod hnsw;
mod metadata;
mod names;

pub use batch::*;
pub use hnsw::*;
pub use metadata::*;
pub use names::*;

/// Helpers of the tests of this module's parts.
#[cfg(test)]
mod test_helpers {
    use serde_json::{Map, Value};

    use crate::error::{ErrorCode, Result};
    use crate::model::Metadata;

    #[track_caller]
    pub fn fails<T: std::fmt::Debug>(r: Result<T>, needle: &str) {
        let e = r.expect_err("should fail");
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains(needle),
            "{:?} lacks {needle:?}",
            e.message()
        );
    }

    pub fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    pub fn meta(v: Value) -> Metadata {
        serde_json::from_value(v).unwrap()
    }
}
