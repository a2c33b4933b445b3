//! The ledger of handled files: one object per (bucket, key, etag), written once with
//! `put_if_absent` after the file was ingested or rejected. Its presence makes a
//! re-delivered event a no-op; its content is for people (what happened, when).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{IngestFile, LEDGER_PREFIX};
use crate::engine::now_ms;
use crate::error::{Error, ErrorCode, Result};
use crate::storage::ObjectStore;

/// What was done with a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub(crate) enum Outcome {
    Ingested { records: usize, batches: usize },
    Rejected { report_key: String },
}

/// One ledger object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub bucket: String,
    pub key: String,
    pub etag: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub at_ms: u64,
}

/// `ingest-ledger/{sha256 of the JSON array [bucket, key, etag], hex}.json`: fixed length
/// whatever the key, and unambiguous (no separator can be forged).
pub(crate) fn ledger_key(file: &IngestFile) -> String {
    let identity = serde_json::json!([file.bucket, file.key, file.etag]).to_string();
    let digest = Sha256::digest(identity.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{LEDGER_PREFIX}{hex}.json")
}

/// Whether the file was handled before.
pub(crate) async fn exists(store: &dyn ObjectStore, file: &IngestFile) -> Result<bool> {
    match store.head(&ledger_key(file)).await {
        Ok(_) => Ok(true),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Records what was done with the file. A concurrent handler of the same event may have
/// recorded it first; its entry is kept.
pub(crate) async fn record(
    store: &dyn ObjectStore,
    file: &IngestFile,
    outcome: Outcome,
) -> Result<()> {
    let entry = Entry {
        bucket: file.bucket.clone(),
        key: file.key.clone(),
        etag: file.etag.clone(),
        outcome,
        at_ms: now_ms(),
    };
    let body = serde_json::to_vec(&entry)
        .map_err(|e| Error::internal_from("cannot encode the ingest ledger entry", e))?;
    match store
        .put_if_absent(&ledger_key(file), Bytes::from(body))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.code() == ErrorCode::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads a file's entry, if any.
#[cfg(test)]
pub(crate) async fn read(store: &dyn ObjectStore, file: &IngestFile) -> Result<Option<Entry>> {
    match store.get(&ledger_key(file)).await {
        Ok(body) => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Error::internal_from("corrupt ingest ledger entry", e)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    fn file(key: &str, etag: &str) -> IngestFile {
        IngestFile {
            bucket: "b".into(),
            key: key.into(),
            etag: etag.into(),
        }
    }

    #[test]
    fn keys_differ_by_bucket_key_and_etag() {
        let a = ledger_key(&file("ingest/t/d/c/f.jsonl", "e1"));
        assert!(a.starts_with(LEDGER_PREFIX) && a.ends_with(".json"));
        assert_eq!(a.len(), LEDGER_PREFIX.len() + 64 + 5);
        assert_eq!(a, ledger_key(&file("ingest/t/d/c/f.jsonl", "e1")));
        assert_ne!(a, ledger_key(&file("ingest/t/d/c/f.jsonl", "e2")));
        assert_ne!(a, ledger_key(&file("ingest/t/d/c/g.jsonl", "e1")));
        let mut other_bucket = file("ingest/t/d/c/f.jsonl", "e1");
        other_bucket.bucket = "b2".into();
        assert_ne!(a, ledger_key(&other_bucket));
        // No separator ambiguity: moving text between fields changes the key.
        assert_ne!(
            ledger_key(&file("a\",\"b", "c")),
            ledger_key(&file("a", "b\",\"c"))
        );
    }

    #[tokio::test]
    async fn the_first_record_wins() {
        let store = MemoryStore::new();
        let f = file("ingest/t/d/c/f.jsonl", "e1");
        assert!(!exists(&store, &f).await.unwrap());
        record(
            &store,
            &f,
            Outcome::Ingested {
                records: 3,
                batches: 1,
            },
        )
        .await
        .unwrap();
        record(
            &store,
            &f,
            Outcome::Rejected {
                report_key: "r".into(),
            },
        )
        .await
        .unwrap();
        assert!(exists(&store, &f).await.unwrap());
        let entry = read(&store, &f).await.unwrap().unwrap();
        assert_eq!(
            entry.outcome,
            Outcome::Ingested {
                records: 3,
                batches: 1
            }
        );
        assert_eq!(
            (entry.key.as_str(), entry.etag.as_str()),
            (f.key.as_str(), "e1")
        );
    }
}
