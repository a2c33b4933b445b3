//! The ledger of handled files: one object per (bucket, key, etag, collection), written
//! once with `put_if_absent` after the file was ingested or rejected. Its presence makes a
//! re-delivered event a no-op; its content (sealed, like everything ingest writes) says
//! what happened and when. The collection is part of the identity: a file uploaded again
//! into a collection deleted and created anew under the same name is ingested again.
//! Entries older than [`crate::engine::EngineConfig::ingest_ledger_retention`] are
//! collected (longer than SQS keeps a message, so no event outlives its entry).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{IngestFile, LEDGER_PREFIX};
use crate::clock::now_ms;
use crate::crypto::{sealed, KeyProvider};
use crate::error::{Error, ErrorCode, Result};
use crate::storage::{bare_etag, ObjectStore};

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
    /// The collection the file went to (the nil UUID when it named none that exists).
    pub collection: Uuid,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub at_ms: u64,
}

/// Where a file's entry is: `ingest-ledger/{sha256 of the JSON array [bucket, key, etag,
/// collection], hex}`: fixed length whatever the key, and unambiguous (no separator can be
/// forged). The etag is taken without S3's quotes.
pub(crate) fn ledger_key(file: &IngestFile, collection: Uuid) -> String {
    let identity =
        serde_json::json!([file.bucket, file.key, bare_etag(&file.etag), collection]).to_string();
    let digest = Sha256::digest(identity.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{LEDGER_PREFIX}{hex}")
}

/// Whether the file was handled before (for this collection).
pub(crate) async fn exists(
    store: &dyn ObjectStore,
    file: &IngestFile,
    collection: Uuid,
) -> Result<bool> {
    match store.head(&ledger_key(file, collection)).await {
        Ok(_) => Ok(true),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Records what was done with the file, sealed for `tenant`/`database`. A concurrent
/// handler of the same event may have recorded it first; its entry is kept.
pub(crate) async fn record(
    store: &dyn ObjectStore,
    keys: &dyn KeyProvider,
    (tenant, database): (&str, &str),
    file: &IngestFile,
    collection: Uuid,
    outcome: Outcome,
) -> Result<()> {
    let entry = Entry {
        bucket: file.bucket.clone(),
        key: file.key.clone(),
        etag: bare_etag(&file.etag).to_owned(),
        collection,
        outcome,
        at_ms: now_ms(),
    };
    let body = serde_json::to_vec(&entry)
        .map_err(|e| Error::internal_from("cannot encode the ingest ledger entry", e))?;
    let key = ledger_key(file, collection);
    let body = sealed::seal(keys, tenant, database, &key, &body).await?;
    match store.put_if_absent(&key, Bytes::from(body)).await {
        Ok(()) => Ok(()),
        Err(e) if e.code() == ErrorCode::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads a file's entry, if any.
#[cfg(test)]
pub(crate) async fn read(
    store: &dyn ObjectStore,
    keys: &dyn KeyProvider,
    file: &IngestFile,
    collection: Uuid,
) -> Result<Option<Entry>> {
    let key = ledger_key(file, collection);
    match store.get(&key).await {
        Ok(body) => {
            let body = sealed::open(keys, &key, &body).await?;
            serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| Error::internal_from("corrupt ingest ledger entry", e))
        }
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::local::LocalKeyProvider;
    use crate::storage::memory::MemoryStore;

    fn file(key: &str, etag: &str) -> IngestFile {
        IngestFile {
            bucket: "b".into(),
            key: key.into(),
            etag: etag.into(),
        }
    }

    #[test]
    fn keys_differ_by_bucket_key_etag_and_collection() {
        let c = Uuid::from_u128(1);
        let a = ledger_key(&file("ingest/t/d/c/f.jsonl", "e1"), c);
        assert!(a.starts_with(LEDGER_PREFIX));
        assert_eq!(a.len(), LEDGER_PREFIX.len() + 64);
        assert_eq!(a, ledger_key(&file("ingest/t/d/c/f.jsonl", "e1"), c));
        assert_eq!(
            a,
            ledger_key(&file("ingest/t/d/c/f.jsonl", "\"e1\""), c),
            "quoted or not, one etag"
        );
        assert_ne!(a, ledger_key(&file("ingest/t/d/c/f.jsonl", "e2"), c));
        assert_ne!(a, ledger_key(&file("ingest/t/d/c/g.jsonl", "e1"), c));
        assert_ne!(
            a,
            ledger_key(&file("ingest/t/d/c/f.jsonl", "e1"), Uuid::from_u128(2)),
            "a collection created anew under the same name"
        );
        let mut other_bucket = file("ingest/t/d/c/f.jsonl", "e1");
        other_bucket.bucket = "b2".into();
        assert_ne!(a, ledger_key(&other_bucket, c));
        // No separator ambiguity: moving text between fields changes the key.
        assert_ne!(
            ledger_key(&file("a\",\"b", "c"), c),
            ledger_key(&file("a", "b\",\"c"), c)
        );
    }

    #[tokio::test]
    async fn the_first_record_wins_and_is_sealed() {
        let store = MemoryStore::new();
        let keys = LocalKeyProvider::from_bytes([5u8; 32]);
        let f = file("ingest/t/d/c/f.jsonl", "e1");
        let c = Uuid::from_u128(7);
        assert!(!exists(&store, &f, c).await.unwrap());
        let ingested = Outcome::Ingested {
            records: 3,
            batches: 1,
        };
        record(&store, &keys, ("t", "d"), &f, c, ingested.clone())
            .await
            .unwrap();
        let rejected = Outcome::Rejected {
            report_key: "r".into(),
        };
        record(&store, &keys, ("t", "d"), &f, c, rejected)
            .await
            .unwrap();
        assert!(exists(&store, &f, c).await.unwrap());
        let entry = read(&store, &keys, &f, c).await.unwrap().unwrap();
        assert_eq!(entry.outcome, ingested);
        assert_eq!(
            (entry.key.as_str(), entry.etag.as_str(), entry.collection),
            (f.key.as_str(), "e1", c)
        );
        let raw = store.get(&ledger_key(&f, c)).await.unwrap();
        assert!(
            !raw.windows(6).any(|w| w == b"ingest"),
            "nothing in plaintext"
        );
    }
}
