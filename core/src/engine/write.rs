//! The write path: validate → encode one Parquet batch → encrypt → put → append it to the
//! manifest by compare-and-swap (retried with backoff on conflict).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::Rng;
use uuid::Uuid;

use super::read::{GetRequest, Include};
use super::Engine;
use crate::catalog::{LogBatchRef, Manifest};
use crate::error::{Error, ErrorCode, Result};
use crate::jobs::CompactionRequest;
use crate::model::validate::WriteBatch;
use crate::model::{Collection, Filter, OpKind, Operation, Record};
use crate::segment;

/// Which records to delete: `ids` AND the filter. With neither, nothing is deleted.
#[derive(Debug, Clone, Default)]
pub struct DeleteRequest {
    pub ids: Option<Vec<String>>,
    pub filter: Option<Filter>,
    /// Delete at most this many matching records (only with a filter).
    pub limit: Option<u32>,
}

/// A log batch written to the object store, not yet committed.
struct PendingBatch {
    object: String,
    ops: Vec<Operation>,
    /// Bytes of the stored (encrypted) object.
    bytes: u64,
    plaintext_len: usize,
    dim: Option<usize>,
}

impl PendingBatch {
    /// `m` with this batch appended.
    fn append_to(&self, m: &Manifest) -> Result<Manifest> {
        check_dimension(m, self.dim)?;
        let n = self.ops.len() as u64;
        let mut next = m.clone();
        next.version += 1;
        next.log.push(LogBatchRef {
            seq: m.next_seq,
            key: self.object.clone(),
            ops: n,
            bytes: self.bytes,
            first_offset: m.next_offset,
        });
        next.next_seq += 1;
        next.next_offset += n;
        next.total_ops += n;
        if next.dimension.is_none() {
            next.dimension = self.dim.map(|d| d as u32);
        }
        Ok(next)
    }

    /// Whether `m` holds this batch already (an earlier attempt was applied although its
    /// answer was lost).
    fn committed_in(&self, m: &Manifest) -> bool {
        m.referenced_keys().any(|k| k == self.object)
    }
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
        let ops = self.delete_operations(collection, request).await?;
        let count = ops.len() as u64;
        if count > 0 {
            self.commit_ops(collection, ops, None).await?;
        }
        Ok(count)
    }

    /// The deletes `request` stands for: one per id named (without a filter) or per
    /// record matched (with one). Checks the request; writes nothing.
    pub async fn delete_operations(
        &self,
        collection: &Collection,
        request: DeleteRequest,
    ) -> Result<Vec<Operation>> {
        if request.limit.is_some() && request.filter.is_none() {
            return Err(Error::invalid(
                "limit can only be specified when a where clause is provided",
            ));
        }
        let ids: Vec<String> = match (request.ids, request.filter) {
            (None, None) => Vec::new(),
            (Some(ids), None) => {
                if ids.is_empty() {
                    return Err(Error::invalid("Either ids or where must be specified"));
                }
                for id in &ids {
                    crate::model::validate::validate_id(id)?;
                }
                ids
            }
            (ids, Some(filter)) => {
                self.get(
                    collection,
                    GetRequest {
                        ids,
                        filter: Some(filter),
                        limit: request.limit,
                        offset: 0,
                        include: Include::none(),
                    },
                )
                .await?
                .ids
            }
        };
        Ok(ids.into_iter().map(Operation::delete).collect())
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
        let (manifest, batch) = self.put_batch(collection, ops, dim).await?;
        let committed = self
            .commit_with_retry(collection.id, Some(manifest), |m| {
                if batch.committed_in(m) {
                    return Ok(None);
                }
                batch.append_to(m).map(Some)
            })
            .await;
        self.finish_commit(collection, batch, committed).await
    }

    /// Like [`Engine::commit_ops`], but commits only on top of a manifest version in which
    /// `check` accepts the records the operations touch, as they are in that version
    /// (by id; an id absent from the map does not exist; documents and metadata only).
    /// When a concurrent commit changed one of those records in between, the records are
    /// read and checked again; commits that touch none of them (and compactions, which
    /// change no record) do not force a new check. `check`'s error is returned and
    /// nothing is written.
    pub async fn commit_ops_checked<C>(
        &self,
        collection: &Collection,
        ops: Vec<Operation>,
        dim: Option<usize>,
        check: C,
    ) -> Result<()>
    where
        C: Fn(&HashMap<String, Record>) -> Result<()> + Send + Sync,
    {
        let (manifest, batch) = self.put_batch(collection, ops, dim).await?;
        let committed = self
            .commit_if_checked(collection, manifest, &batch, &check)
            .await;
        self.finish_commit(collection, batch, committed).await
    }

    /// Encodes, encrypts and stores `ops` as a log batch; returns it with the manifest it
    /// was checked against.
    async fn put_batch(
        &self,
        collection: &Collection,
        ops: Vec<Operation>,
        dim: Option<usize>,
    ) -> Result<(Manifest, PendingBatch)> {
        let manifest = self.catalog.get_manifest(collection.id).await?;
        check_dimension(&manifest, dim)?;
        let key = self.data_key(collection, &manifest).await?;
        let (plaintext, ops) = tokio::task::spawn_blocking(move || {
            segment::encode_log_batch(&ops).map(|bytes| (bytes, ops))
        })
        .await
        .map_err(|e| Error::internal_from("log encode task failed", e))??;
        let plaintext_len = plaintext.len();
        let object = super::object_keys::log_batch(manifest.owner(collection.id));
        let bytes = self.put_encrypted(&key, &object, plaintext).await?;
        Ok((
            manifest,
            PendingBatch {
                object,
                ops,
                bytes,
                plaintext_len,
                dim,
            },
        ))
    }

    /// After the commit of `batch` (`committed`: the new manifest, `None` when it was in
    /// already): removes the batch if the commit failed, else keeps its operations warm
    /// and asks for compaction when the log is long.
    async fn finish_commit(
        &self,
        collection: &Collection,
        batch: PendingBatch,
        committed: Result<Option<Manifest>>,
    ) -> Result<()> {
        let manifest = match committed {
            Ok(m) => m,
            Err(e) => {
                // Remove the batch now rather than at collection, unless the commit was
                // applied after all.
                self.delete_unreferenced(collection.id, std::slice::from_ref(&batch.object))
                    .await;
                return Err(e);
            }
        };
        // Readers and compaction would decode exactly these operations: keep them.
        let PendingBatch {
            object,
            ops,
            plaintext_len,
            ..
        } = batch;
        self.cache
            .get_or_load(&object, || async move { Ok((ops, plaintext_len)) })
            .await?;
        self.note_write(collection.id);
        if let Some(manifest) = manifest {
            self.request_compaction_if_needed(collection.id, &manifest)
                .await;
        }
        Ok(())
    }

    /// The commit loop of [`Engine::commit_ops_checked`].
    async fn commit_if_checked(
        &self,
        collection: &Collection,
        mut current: Manifest,
        batch: &PendingBatch,
        check: &(dyn Fn(&HashMap<String, Record>) -> Result<()> + Send + Sync),
    ) -> Result<Option<Manifest>> {
        let ids: HashSet<&str> = batch.ops.iter().map(|o| o.id.as_str()).collect();
        // The manifest whose records were last checked, once they have been.
        let mut checked: Option<Manifest> = None;
        let mut delay = Duration::from_millis(2);
        for attempt in 1..=self.config.commit_attempts {
            if batch.committed_in(&current) {
                return Ok(None);
            }
            let stale = match &checked {
                None => true,
                Some(old) => self.touched_since(collection, old, &current, &ids).await?,
            };
            if stale {
                let existing = self.records_at(collection, &current, &ids).await?;
                check(&existing)?;
            }
            checked = Some(current.clone());
            let next = batch.append_to(&current)?;
            match self.catalog.commit_manifest(collection.id, &next).await {
                Ok(()) => return Ok(Some(next)),
                Err(e) if e.code() == ErrorCode::Conflict => {
                    tracing::debug!(collection = %collection.id, attempt, "manifest commit conflict, checking again");
                    backoff(&mut delay).await;
                    current = self.catalog.get_manifest(collection.id).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::unavailable(format!(
            "collection {} is too busy: manifest commit lost {} times",
            collection.id, self.config.commit_attempts
        )))
    }

    /// Whether a record among `ids` may have changed between manifests `old` and `new` of
    /// one collection: a batch committed in between names one of them, or some batch
    /// committed in between was already folded away by a compaction (so it cannot be
    /// read from the log: assume it did).
    async fn touched_since(
        &self,
        collection: &Collection,
        old: &Manifest,
        new: &Manifest,
        ids: &HashSet<&str>,
    ) -> Result<bool> {
        let since: Vec<LogBatchRef> = new
            .log
            .iter()
            .filter(|b| b.seq >= old.next_seq)
            .cloned()
            .collect();
        if since.len() as u64 != new.next_seq.saturating_sub(old.next_seq) {
            return Ok(true);
        }
        if since.is_empty() {
            return Ok(false);
        }
        let key = self.data_key(collection, new).await?;
        let batches = self.log_batches(&key, &since).await?;
        Ok(batches
            .iter()
            .any(|(_, ops)| ops.iter().any(|op| ids.contains(op.id.as_str()))))
    }

    /// The records `ids` name as of `manifest` (documents and metadata, no embeddings),
    /// by id; ids that do not exist are absent.
    async fn records_at(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        ids: &HashSet<&str>,
    ) -> Result<HashMap<String, Record>> {
        let request = GetRequest {
            ids: Some(ids.iter().map(|s| s.to_string()).collect()),
            include: Include {
                documents: true,
                metadatas: true,
                ..Include::none()
            },
            ..GetRequest::default()
        };
        let found = self.get_at(collection, manifest, request).await?;
        let n = found.ids.len();
        let mut documents = found.documents.unwrap_or_else(|| vec![None; n]).into_iter();
        let mut metadatas = found.metadatas.unwrap_or_else(|| vec![None; n]).into_iter();
        Ok(found
            .ids
            .into_iter()
            .map(|id| {
                let record = Record {
                    id: id.clone(),
                    embedding: Vec::new(),
                    document: documents.next().flatten(),
                    uri: None,
                    metadata: metadatas.next().flatten(),
                };
                (id, record)
            })
            .collect())
    }

    /// Asks for a compaction of collection `id` when `manifest`'s log needs one, naming
    /// the log's head (see [`CompactionRequest`]). A failure is logged, not returned: the
    /// write it follows is committed, and the scheduled sweep compacts what a lost
    /// request leaves.
    pub(crate) async fn request_compaction_if_needed(&self, id: Uuid, manifest: &Manifest) {
        let Some(head) = manifest.log.first() else {
            return;
        };
        if !self.needs_compaction(manifest) {
            return;
        }
        let request = CompactionRequest {
            collection: id,
            log_head: head.key.clone(),
        };
        if let Err(e) = self.jobs.enqueue_compaction(request).await {
            tracing::warn!(collection = %id, error = %e, "could not enqueue compaction");
        }
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
                Ok(()) => {
                    crate::metrics::unindexed_ops(id, next.unindexed_ops());
                    return Ok(Some(next));
                }
                Err(e) if e.code() == ErrorCode::Conflict => {
                    tracing::debug!(collection = %id, attempt, "manifest commit conflict, retrying");
                    backoff(&mut delay).await;
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

/// Sleeps a jittered `delay` and doubles it (up to 200 ms).
async fn backoff(delay: &mut Duration) {
    let jitter = rand::thread_rng().gen_range(0..=delay.as_micros() as u64);
    tokio::time::sleep(Duration::from_micros(jitter) + *delay / 2).await;
    *delay = (*delay * 2).min(Duration::from_millis(200));
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
