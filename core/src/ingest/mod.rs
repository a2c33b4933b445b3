//! Bulk ingestion: Parquet and JSON Lines files dropped into the object store under
//! `ingest/{tenant}/{database}/{collection}/…` are validated whole and then upserted
//! into the named collection through the engine's normal write path.
//!
//! [`Engine::ingest_file`] handles one file, as named by a storage event:
//!
//! 1. The key names the collection, which must exist; the extension picks the format
//!    ([`Format`]).
//! 2. The ledger ([`ledger`]) is consulted: a file (bucket, key, etag, collection)
//!    already handled, ingested or rejected, is a no-op ([`IngestOutcome::AlreadyIngested`]),
//!    so re-delivered events are harmless.
//! 3. Exactly the version of the object the event names is read (an overwrite in between
//!    has an event of its own); its size is bounded by [`MAX_INGEST_FILE_BYTES`]. Every
//!    record is decoded ([`parse`]) and validated exactly like an upsert of the HTTP API,
//!    plus the checks that span the file: unique ids and one embedding dimension, matching
//!    the collection's ([`check`]). Nothing is written unless the whole file is valid.
//! 4. The records are upserted in batches of [`INGEST_BATCH_SIZE`] (each one a logged,
//!    encrypted write that may trigger compaction, as for API writes), then the ledger
//!    entry is written. A crash in between is safe: the event is retried, and upserting
//!    the same records again changes nothing.
//!
//! A bad file changes no collection: it is moved to `ingest-failed/{rest of the key}`
//! beside an error report `ingest-failed/{rest of the key}.error.json` naming the reason,
//! and the line (JSON Lines, 1-based) or row (Parquet, 0-based) and field at fault; the
//! rejection is recorded in the ledger too. So is a file whose collection is deleted
//! while it is being ingested. Everything ingest writes (copies, reports, ledger entries)
//! is sealed with a data key of its own ([`crate::crypto::sealed`]; read it back with
//! [`Engine::read_ingest_object`] or `chroma ingest failures`), and is collected after
//! its retention ([`Engine::collect_ingest_garbage`]). Failures of the backends
//! (unavailable storage or catalog) are returned as errors for the caller to retry the
//! event.
//!
//! The same parser and validator serve `chroma import` for local files
//! ([`validate_file`] and [`Engine::upsert_file`]).

mod check;
mod export;
#[cfg(test)]
mod fixtures;
mod key;
mod ledger;
mod parse;

use std::fmt;

use bytes::Bytes;
use serde::Serialize;

use uuid::Uuid;

use crate::clock::now_ms;
use crate::crypto::sealed;
use crate::engine::{Engine, NewKeys};
use crate::error::{Error, ErrorCode, Result};
use crate::model::{Collection, Operation};

pub use check::{check_file_size, validate_file, ValidatedFile};
pub use export::{ExportedFile, EXPORT_FILE_BYTES, EXPORT_PAGE_ROWS};
pub use key::decode_event_key;
pub use parse::Format;

/// Where files to ingest are dropped, relative to the store's root.
pub const INGEST_PREFIX: &str = "ingest/";
/// Where rejected files and their error reports are moved.
pub const FAILED_PREFIX: &str = "ingest-failed/";
/// Where the ledger of handled files is kept.
pub const LEDGER_PREFIX: &str = "ingest-ledger/";
/// Suffix of an error report's key, after the rejected file's key.
pub const REPORT_SUFFIX: &str = ".error.json";
/// Largest file accepted, in bytes; larger files are rejected unread.
pub const MAX_INGEST_FILE_BYTES: u64 = 256 << 20;
/// The most bytes a Parquet file may declare its row groups decode to, so a small
/// compressed file cannot expand without bound.
pub const MAX_INGEST_DECODED_BYTES: u64 = 4 * MAX_INGEST_FILE_BYTES;
/// Records per upserted batch (one log batch each).
pub const INGEST_BATCH_SIZE: usize = 5_000;

/// A file to ingest, as a storage event names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestFile {
    /// The bucket the event came from (recorded in the ledger; the engine's store is the
    /// one read).
    pub bucket: String,
    /// The object's key relative to the store's root, already decoded
    /// ([`decode_event_key`]).
    pub key: String,
    /// The object's entity tag: the version of its content the event is about.
    pub etag: String,
}

/// What became of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Every record was upserted, in `batches` writes.
    Ingested { records: usize, batches: usize },
    /// The ledger shows this file (bucket, key, etag) was handled before: nothing done.
    AlreadyIngested,
    /// The file is bad: nothing was written, the file was moved under [`FAILED_PREFIX`]
    /// and an error report written at `report_key`.
    Rejected { report_key: String, reason: String },
}

/// Where in a file a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// A line of a JSON Lines file, counted from 1.
    Line(usize),
    /// A row of a Parquet file, counted from 0 across row groups.
    Row(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// Why a file is rejected: the first problem found, where it is and in which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub location: Option<Location>,
    /// The record's field (`id`, `embedding`, `document`, `uri`, `metadata`) or the
    /// file's column at fault, when the problem is in one.
    pub field: Option<String>,
}

impl Rejection {
    /// A problem with the file as a whole.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            location: None,
            field: None,
        }
    }

    /// A problem with one field (or column).
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            location: None,
            field: Some(field.into()),
        }
    }

    pub(crate) fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.location, &self.field) {
            (Some(l), Some(field)) => write!(f, "{l}, field {field}: ")?,
            (Some(l), None) => write!(f, "{l}: ")?,
            (None, Some(field)) => write!(f, "field {field}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Rejection {}

/// What an upsert of a validated file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub records: usize,
    pub batches: usize,
}

/// The error report written beside a rejected file.
#[derive(Debug, Serialize)]
struct Report<'a> {
    bucket: &'a str,
    key: &'a str,
    etag: &'a str,
    failed_key: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    row: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    rejected_at_ms: u64,
}

impl Engine {
    /// Ingests one file dropped under [`INGEST_PREFIX`] (see the module documentation).
    ///
    /// Errors: `InvalidArgument` when the key is not under [`INGEST_PREFIX`] (the event
    /// was misrouted; nothing is moved); `NotFound` when the version of the object the
    /// event names no longer exists (deleted, or written again: the newer version has an
    /// event of its own) and was never handled; otherwise the backends' errors
    /// (`Unavailable`, `Internal`…), after which handling the same event again is safe. A
    /// bad file is not an error but [`IngestOutcome::Rejected`].
    pub async fn ingest_file(&self, file: &IngestFile) -> Result<IngestOutcome> {
        let outcome = self.ingest_file_once(file).await?;
        match &outcome {
            IngestOutcome::Ingested { .. } => crate::metrics::ingest_file(true),
            IngestOutcome::Rejected { .. } => crate::metrics::ingest_file(false),
            _ => {}
        }
        Ok(outcome)
    }

    async fn ingest_file_once(&self, file: &IngestFile) -> Result<IngestOutcome> {
        let target = key::IngestKey::parse(&file.key)?;
        let collection = self.ingest_target(file, &target).await?;
        let ledger_id = collection.as_ref().map_or(Uuid::nil(), |c| c.id);
        if ledger::exists(self.store().as_ref(), file, ledger_id).await? {
            tracing::info!(key = %file.key, etag = %file.etag, "file already handled");
            return Ok(IngestOutcome::AlreadyIngested);
        }
        let collection = match collection {
            Ok(c) => c,
            Err(rejection) => return self.reject(file, &target, None, None, rejection).await,
        };
        let size = self.store().head(&file.key).await?.size;
        if let Err(rejection) = check_file_size(size) {
            return self
                .reject(file, &target, Some(&collection), None, rejection)
                .await;
        }
        // Exactly the version the event is about: an overwrite in between has an event of
        // its own.
        let data = self.store().get_version(&file.key, &file.etag).await?;
        let (name, bytes, dimension) = (file.key.clone(), data.clone(), collection.dimension);
        let validated = tokio::task::spawn_blocking(move || validate_file(&name, bytes, dimension))
            .await
            .map_err(|e| Error::internal_from("ingest validation task failed", e))?;
        let validated = match validated {
            Ok(v) => v,
            Err(rejection) => {
                return self
                    .reject(file, &target, Some(&collection), Some(data), rejection)
                    .await
            }
        };
        let imported = match self.upsert_file(&collection, validated).await {
            Ok(imported) => imported,
            // Deleted while the file was being ingested: nothing of it is left.
            Err(e) if e.code() == ErrorCode::NotFound => {
                let rejection = Rejection::new(format!(
                    "collection {} was deleted while the file was being ingested",
                    collection.name
                ));
                return self
                    .reject(file, &target, Some(&collection), Some(data), rejection)
                    .await;
            }
            Err(e) => return Err(e),
        };
        drop(data);
        ledger::record(
            self.store().as_ref(),
            self.key_provider().as_ref(),
            (&collection.tenant, &collection.database),
            file,
            collection.id,
            ledger::Outcome::Ingested {
                records: imported.records,
                batches: imported.batches,
            },
        )
        .await?;
        tracing::info!(
            key = %file.key,
            collection = %collection.id,
            records = imported.records,
            batches = imported.batches,
            "file ingested"
        );
        Ok(IngestOutcome::Ingested {
            records: imported.records,
            batches: imported.batches,
        })
    }

    /// The collection a file goes to, or why it goes nowhere (a key that names no
    /// collection, an unknown format, a collection that does not exist).
    async fn ingest_target(
        &self,
        file: &IngestFile,
        target: &key::IngestKey<'_>,
    ) -> Result<Result<Collection, Rejection>> {
        let names = match target.names() {
            Ok(names) => names,
            Err(rejection) => return Ok(Err(rejection)),
        };
        if let Err(rejection) = Format::from_name(&file.key) {
            return Ok(Err(rejection));
        }
        match self
            .get_collection(names.tenant, names.database, names.collection)
            .await
        {
            Ok(c) => Ok(Ok(c)),
            Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::InvalidArgument) => {
                Ok(Err(Rejection::new(format!(
                    "collection {} does not exist in database {} of tenant {}",
                    names.collection, names.database, names.tenant
                ))))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads an object bulk ingest wrote (a copy of a rejected file, an error report, a
    /// ledger entry), decrypted.
    pub async fn read_ingest_object(&self, key: &str) -> Result<Vec<u8>> {
        let bytes = self.store().get(key).await?;
        crate::crypto::sealed::open(self.key_provider().as_ref(), key, &bytes).await
    }

    /// Upserts a validated file into `collection` in batches of [`INGEST_BATCH_SIZE`],
    /// each through the normal write path, then adds the metadata keys it brought to the
    /// collection's schema. Not atomic: after an error some batches may be written, and
    /// upserting the same file again completes it.
    pub async fn upsert_file(
        &self,
        collection: &Collection,
        file: ValidatedFile,
    ) -> Result<Imported> {
        self.upsert_in_batches(collection, file, INGEST_BATCH_SIZE)
            .await
    }

    async fn upsert_in_batches(
        &self,
        collection: &Collection,
        file: ValidatedFile,
        batch_size: usize,
    ) -> Result<Imported> {
        let records = file.records();
        let dimension = file.dimension();
        // Validated already (as upserts, whole file): committed as they are, not
        // rebuilt into request batches to be validated a second time.
        let mut ops = file.into_operations().into_iter();
        let mut batches = 0;
        let mut new_keys = NewKeys::new(collection.configuration.schema().into_owned());
        loop {
            let chunk: Vec<Operation> = ops.by_ref().take(batch_size.max(1)).collect();
            if chunk.is_empty() {
                break;
            }
            chunk
                .iter()
                .filter_map(|op| op.metadata.as_ref())
                .for_each(|m| new_keys.note(m));
            self.commit_ops(collection, chunk, dimension).await?;
            batches += 1;
        }
        // The records stand whatever happens here (as after an HTTP write).
        if let Err(e) = self
            .discover_keys(collection.id, &new_keys.into_written())
            .await
        {
            tracing::warn!(collection = %collection.id, error = %e, "discovered metadata keys not stored");
        }
        Ok(Imported { records, batches })
    }

    /// Moves a bad file under [`FAILED_PREFIX`] with its error report and records the
    /// rejection in the ledger, all sealed for the tenant and database the key names.
    /// `data` is the file's content when already read. Only the version the event names
    /// is moved: if the key was written again meanwhile, the newer file stays for its own
    /// event and only the report is written.
    async fn reject(
        &self,
        file: &IngestFile,
        target: &key::IngestKey<'_>,
        collection: Option<&Collection>,
        data: Option<Bytes>,
        rejection: Rejection,
    ) -> Result<IngestOutcome> {
        let store = self.store();
        let keys = self.key_provider().as_ref();
        let (tenant, database) = target
            .names()
            .map(|n| (n.tenant, n.database))
            .unwrap_or(("", ""));
        let failed_key = target.failed_key();
        let report_key = format!("{failed_key}{REPORT_SUFFIX}");
        let data = match data {
            Some(d) => Some(d),
            None => match store.get_version(&file.key, &file.etag).await {
                Ok(d) => Some(d),
                Err(e) if e.code() == ErrorCode::NotFound => None,
                Err(e) => return Err(e),
            },
        };
        if let Some(data) = &data {
            let copy = sealed::seal(keys, tenant, database, &failed_key, data).await?;
            store.put(&failed_key, Bytes::from(copy)).await?;
        }
        let (line, row) = match rejection.location {
            Some(Location::Line(n)) => (Some(n), None),
            Some(Location::Row(n)) => (None, Some(n)),
            None => (None, None),
        };
        let report = Report {
            bucket: &file.bucket,
            key: &file.key,
            etag: &file.etag,
            failed_key: &failed_key,
            reason: &rejection.reason,
            line,
            row,
            field: rejection.field.as_deref(),
            rejected_at_ms: now_ms(),
        };
        let report = serde_json::to_vec_pretty(&report)
            .map_err(|e| Error::internal_from("cannot encode the error report", e))?;
        let report = sealed::seal(keys, tenant, database, &report_key, &report).await?;
        store.put(&report_key, Bytes::from(report)).await?;
        ledger::record(
            store.as_ref(),
            keys,
            (tenant, database),
            file,
            collection.map_or(Uuid::nil(), |c| c.id),
            ledger::Outcome::Rejected {
                report_key: report_key.clone(),
            },
        )
        .await?;
        if data.is_some() {
            store.delete(&file.key).await?;
        }
        let reason = rejection.to_string();
        tracing::warn!(key = %file.key, report = %report_key, %reason, "file rejected");
        Ok(IngestOutcome::Rejected { report_key, reason })
    }

    /// Deletes ledger entries, rejected files and their reports older than their
    /// retention ([`crate::engine::EngineConfig`]); returns how many.
    pub async fn collect_ingest_garbage(&self) -> Result<usize> {
        let config = self.config();
        let now = std::time::SystemTime::now();
        let mut deleted = 0;
        for (prefix, retention) in [
            (LEDGER_PREFIX, config.ingest_ledger_retention),
            (FAILED_PREFIX, config.failed_ingest_retention),
        ] {
            let cutoff = now - retention;
            for o in self.store().list(prefix).await? {
                if o.last_modified <= cutoff {
                    self.store().delete(&o.key).await?;
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests;
