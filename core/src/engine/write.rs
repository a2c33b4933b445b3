//! The write path: validate → encode one Parquet batch → encrypt → put → append it to the
//! manifest by compare-and-swap (retried with backoff on conflict).

use std::time::Duration;

use rand::Rng;
use uuid::Uuid;

use super::read::{GetRequest, Include};
use super::Engine;
use crate::catalog::{LogBatchRef, Manifest};
use crate::error::{Error, ErrorCode, Result};
use crate::model::validate::WriteBatch;
use crate::model::{Collection, Filter, OpKind, Operation};
use crate::segment;

/// Which records to delete: `ids` AND the filter. With neither, nothing is deleted.
#[derive(Debug, Clone, Default)]
pub struct DeleteRequest {
    pub ids: Option<Vec<String>>,
    pub filter: Option<Filter>,
    /// Delete at most this many matching records (only with a filter).
    pub limit: Option<u32>,
}

impl Engine {
    /// Adds records; ids that already exist are left unchanged.
    pub async fn add(&self, collection: &Collection, batch: WriteBatch) -> Result<()> {
        self.write(collection, batch, OpKind::Add).await
    }

    /// Inserts missing records and merges into existing ones.
    pub async fn upsert(&self, collection: &Collection, batch: WriteBatch) -> Result<()> {
        self.write(collection, batch, OpKind::Upsert).await
    }

    /// Merges into existing records; missing ids are ignored.
    pub async fn update(&self, collection: &Collection, batch: WriteBatch) -> Result<()> {
        self.write(collection, batch, OpKind::Update).await
    }

    /// Deletes records, returning how many were named (for ids) or matched (for a filter).
    pub async fn delete(&self, collection: &Collection, request: DeleteRequest) -> Result<u64> {
        if request.limit.is_some() && request.filter.is_none() {
            return Err(Error::invalid(
                "limit can only be specified when a where clause is provided",
            ));
        }
        let ids: Vec<String> = match (&request.ids, &request.filter) {
            (None, None) => return Ok(0),
            (Some(ids), None) => {
                if ids.is_empty() {
                    return Err(Error::invalid("Either ids or where must be specified"));
                }
                for id in ids {
                    crate::model::validate::validate_id(id)?;
                }
                ids.clone()
            }
            (_, Some(_)) => {
                let found = self
                    .get(
                        collection,
                        GetRequest {
                            ids: request.ids.clone(),
                            filter: request.filter.clone(),
                            limit: request.limit,
                            offset: 0,
                            include: Include::none(),
                        },
                    )
                    .await?;
                found.ids
            }
        };
        if ids.is_empty() {
            return Ok(0);
        }
        let count = ids.len() as u64;
        let ops: Vec<Operation> = ids.into_iter().map(Operation::delete).collect();
        self.commit_ops(collection, ops, None).await?;
        Ok(count)
    }

    async fn write(&self, collection: &Collection, batch: WriteBatch, kind: OpKind) -> Result<()> {
        let (ops, dim) = batch.into_operations(kind)?;
        if ops.is_empty() {
            return Ok(());
        }
        self.commit_ops(collection, ops, dim).await
    }

    /// Writes `ops` as one log batch and commits it. `dim` is the batch's embedding
    /// dimension, checked against (or fixing) the collection's.
    pub(crate) async fn commit_ops(
        &self,
        collection: &Collection,
        ops: Vec<Operation>,
        dim: Option<usize>,
    ) -> Result<()> {
        let manifest = self.catalog.get_manifest(collection.id).await?;
        check_dimension(&manifest, dim)?;
        let key = self.data_key(collection, &manifest).await?;
        let n = ops.len() as u64;
        let (plaintext, ops) = tokio::task::spawn_blocking(move || {
            segment::encode_log_batch(&ops).map(|bytes| (bytes, ops))
        })
        .await
        .map_err(|e| Error::internal_from("log encode task failed", e))??;
        let plaintext_len = plaintext.len();
        let object = super::keys::log_batch(collection.id);
        let bytes = self.put_encrypted(&key, &object, plaintext).await?;

        let committed = self
            .commit_with_retry(collection.id, Some(manifest), |m| {
                // An earlier attempt may have been applied although its answer was lost.
                if m.referenced_keys().any(|k| k == object) {
                    return Ok(None);
                }
                check_dimension(m, dim)?;
                let mut next = m.clone();
                next.version += 1;
                next.log.push(LogBatchRef {
                    seq: m.next_seq,
                    key: object.clone(),
                    ops: n,
                    bytes,
                    first_offset: m.next_offset,
                });
                next.next_seq += 1;
                next.next_offset += n;
                next.total_ops += n;
                if next.dimension.is_none() {
                    next.dimension = dim.map(|d| d as u32);
                }
                Ok(Some(next))
            })
            .await;
        let manifest = match committed {
            Ok(m) => m,
            Err(e) => {
                // Remove the batch now rather than at collection, unless the commit was
                // applied after all.
                self.delete_unreferenced(collection.id, std::slice::from_ref(&object))
                    .await;
                return Err(e);
            }
        };
        // Readers and compaction would decode exactly these operations: keep them.
        self.cache
            .get_or_load(&object, || async move { Ok((ops, plaintext_len)) })
            .await?;
        self.note_write(collection.id);
        if manifest.is_some_and(|m| self.needs_compaction(&m)) {
            if let Err(e) = self.jobs.enqueue_compaction(collection.id).await {
                tracing::warn!(collection = %collection.id, error = %e, "could not enqueue compaction");
            }
        }
        Ok(())
    }

    pub(crate) fn needs_compaction(&self, m: &Manifest) -> bool {
        m.unindexed_ops() >= self.config.compact_log_ops
            || m.log.iter().map(|l| l.bytes).sum::<u64>() >= self.config.compact_log_bytes
            || m.log.len() >= self.config.compact_log_batches
    }

    /// Lets `change` derive the next manifest from the current one (or `None` to stop)
    /// and commits it by compare-and-swap, re-reading and retrying on conflict with
    /// jittered exponential backoff. `known` is a manifest the caller already read, tried
    /// first instead of reading it again. Returns the committed manifest.
    pub(crate) async fn commit_with_retry<F>(
        &self,
        id: Uuid,
        mut known: Option<Manifest>,
        mut change: F,
    ) -> Result<Option<Manifest>>
    where
        F: FnMut(&Manifest) -> Result<Option<Manifest>>,
    {
        let mut delay = Duration::from_millis(2);
        for attempt in 1..=self.config.commit_attempts {
            let current = match known.take() {
                Some(m) => m,
                None => self.catalog.get_manifest(id).await?,
            };
            let Some(next) = change(&current)? else {
                return Ok(None);
            };
            debug_assert_eq!(next.version, current.version + 1);
            match self.catalog.commit_manifest(id, &next).await {
                Ok(()) => return Ok(Some(next)),
                Err(e) if e.code() == ErrorCode::Conflict => {
                    tracing::debug!(collection = %id, attempt, "manifest commit conflict, retrying");
                    let jitter = rand::thread_rng().gen_range(0..=delay.as_micros() as u64);
                    tokio::time::sleep(Duration::from_micros(jitter) + delay / 2).await;
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::unavailable(format!(
            "collection {id} is too busy: manifest commit lost {} times",
            self.config.commit_attempts
        )))
    }
}

fn check_dimension(m: &Manifest, dim: Option<usize>) -> Result<()> {
    check_collection_dimension(m.dimension, dim)
}

/// Fails when a write of embeddings of dimension `dim` cannot go into a collection of
/// dimension `expected` (`None`: not fixed yet).
pub(crate) fn check_collection_dimension(expected: Option<u32>, dim: Option<usize>) -> Result<()> {
    match (expected, dim) {
        (Some(expected), Some(got)) if expected as usize != got => Err(Error::invalid(format!(
            "Collection expecting embedding with dimension of {expected}, got {got}"
        ))),
        _ => Ok(()),
    }
}
