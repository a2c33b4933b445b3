//! Where a loaded segment's f32 vectors are, and reading them for one request.
//!
//! A loaded segment keeps its index's codes and graph in memory, not its f32 vectors
//! (see [`crate::index`]): those stay in the encrypted index object, after its head, and
//! are read by range — the re-rank candidates of a query, the embeddings a read returns,
//! the rows a log operation updates, the rows a compaction rewrites. Index objects are
//! written with small envelope chunks ([`VECTOR_CHUNK`]) so that reading one vector
//! decrypts a few KiB, not 64. On local files the reads are positioned reads served by
//! the page cache; on S3 they are ranged GETs (through the query function's `/tmp` block
//! cache, [`crate::storage::disk_cache::DiskCache`]).
//!
//! Segments written before this layout (index format 1) hold their vectors in memory,
//! and are read the same way.

use std::ops::Range;

use super::snapshot::{LoadedSegment, SegmentView};
use crate::crypto::envelope::RangeReader;
use crate::error::{Error, Result};
use crate::index::VectorCodec;

/// Envelope chunk size of index objects: one 384-dimension vector (1.5 KiB) spans at
/// most two chunks.
pub(crate) const VECTOR_CHUNK: u32 = 4096;

/// Ranges closer than this are fetched with one read (local: one `pread`; S3: one GET).
pub(crate) const COALESCE_GAP: u64 = 16 * 1024;

/// Where a segment's f32 vectors are.
#[derive(Debug)]
pub(crate) enum SegmentVectors {
    /// In memory, inside the index (format 1 objects).
    Resident,
    /// In the index object, from plaintext offset `offset` on.
    Stored {
        reader: Box<RangeReader>,
        offset: u64,
    },
}

impl LoadedSegment {
    /// The f32 vectors of `rows`, row-major in the order given.
    pub(crate) async fn read_vectors(&self, rows: &[u32]) -> Result<Vec<f32>> {
        let dim = self.index.dim();
        let mut out = Vec::with_capacity(rows.len() * dim);
        match &self.vectors {
            SegmentVectors::Resident => {
                for &row in rows {
                    let v = self
                        .index
                        .vector(row)
                        .ok_or_else(|| Error::internal("resident segment without vectors"))?;
                    out.extend_from_slice(v);
                }
            }
            SegmentVectors::Stored { reader, offset } => {
                let ranges: Vec<Range<u64>> = rows
                    .iter()
                    .map(|&row| {
                        let r = self.index.vector_range(row);
                        offset + r.start..offset + r.end
                    })
                    .collect();
                read_vectors_at(reader, &ranges, self.index.codec(), &mut out).await?;
            }
        }
        Ok(out)
    }
}

impl super::Engine {
    /// Brings the objects of segments just loaded close (each a reader and the offset
    /// in its plaintext from which on: the stored vectors of an index object, a whole
    /// records object), one after another in the background: the query function's `/tmp`
    /// cache fetches them from S3 in large requests (see
    /// [`crate::storage::disk_cache::DiskCache`]'s prefetch), so the re-ranks and the
    /// results of the first queries after a load do not each fetch a block. Other stores
    /// do nothing; stopped at shutdown.
    pub(crate) fn prefetch_segments(&self, segments: Vec<(Box<RangeReader>, u64)>) {
        if segments.is_empty() {
            return;
        }
        let stop = self.shutdown.clone();
        tokio::spawn(async move {
            let all = async {
                for (reader, offset) in segments {
                    if let Err(e) = reader.prefetch(offset..reader.len()).await {
                        tracing::warn!(error = %e, "prefetching a segment's objects failed");
                    }
                }
            };
            tokio::select! {
                () = all => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// Reads the f32 vectors at `ranges` of an index object (one row each, stored as `codec`
/// says; all finite) onto `out`, in the order given: the warm path's re-rank and the
/// cold path's.
pub(crate) async fn read_vectors_at(
    reader: &RangeReader,
    ranges: &[Range<u64>],
    codec: &VectorCodec,
    out: &mut Vec<f32>,
) -> Result<()> {
    let corrupt = || Error::internal(format!("segment vectors in {reader:?} are corrupt"));
    for bytes in reader.read_many(ranges, COALESCE_GAP).await? {
        if bytes.len() != codec.row_len() {
            return Err(corrupt());
        }
        codec.decode(&bytes, out).map_err(|_| corrupt())?;
    }
    Ok(())
}

/// The f32 vectors of some rows of a snapshot's segments, read for one request.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    /// Per segment: rows, ascending and distinct, their vectors row-major, and the
    /// dimension.
    segments: Vec<(Vec<u32>, Vec<f32>, usize)>,
}

impl Fetched {
    /// Reads the vectors of `wanted[s]` (rows of segment `s`, in any order, repeats
    /// allowed) of every segment, the segments concurrently.
    pub(crate) async fn read(segments: &[SegmentView], wanted: Vec<Vec<u32>>) -> Result<Self> {
        let reads = segments
            .iter()
            .zip(wanted)
            .map(|(view, mut rows)| async move {
                rows.sort_unstable();
                rows.dedup();
                let vectors = if rows.is_empty() {
                    Vec::new()
                } else {
                    view.segment.read_vectors(&rows).await?
                };
                Ok::<_, Error>((rows, vectors, view.segment.index.dim()))
            });
        let segments = futures::future::try_join_all(reads).await?;
        Ok(Self { segments })
    }

    /// The vector of `row` of segment `s`, if it was read.
    pub(crate) fn get(&self, s: usize, row: u32) -> Option<&[f32]> {
        let (rows, vectors, dim) = self.segments.get(s)?;
        let i = rows.binary_search(&row).ok()?;
        vectors.get(i * dim..(i + 1) * dim)
    }

    /// The vectors of `rows` of segment `s` row-major, in the order given; `None` if one
    /// was not read.
    pub(crate) fn gather(&self, s: usize, rows: &[u32]) -> Option<Vec<f32>> {
        let mut out = Vec::new();
        for &row in rows {
            out.extend_from_slice(self.get(s, row)?);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::catalog::sqlite::SqliteCatalog;
    use crate::crypto::local::LocalKeyProvider;
    use crate::engine::{Engine, EngineConfig, Merge, QueryRequest};
    use crate::jobs::local::LocalJobs;
    use crate::model::{CollectionConfiguration, IfExists, WriteBatch};
    use crate::storage::disk_cache::DiskCache;
    use crate::storage::memory::Counting;

    /// A collection loaded through a disk cache has its vectors fetched into the cache in
    /// large requests, in the background; the warm queries after that send none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loaded_segments_vectors_are_prefetched_into_the_disk_cache() {
        let counting = Arc::new(Counting::default());
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(
            DiskCache::new(counting.clone(), dir.path(), 1 << 30, vec![String::new()]).unwrap(),
        );
        let (jobs, _requests) = LocalJobs::new();
        let engine = Engine::new(
            Arc::new(SqliteCatalog::in_memory().unwrap()),
            cache.clone(),
            Arc::new(LocalKeyProvider::from_bytes([3u8; 32])),
            Arc::new(jobs),
            EngineConfig {
                compact_log_ops: u64::MAX,
                cold_query_rows: u64::MAX,
                ..EngineConfig::default()
            },
        );
        let c = engine
            .create_collection(
                "default_tenant",
                "default_database",
                "prefetched",
                None,
                CollectionConfiguration::default(),
                IfExists::Fail,
            )
            .await
            .unwrap();
        // 3,000 rows of 64 dimensions: about 750 KB of vectors, three blocks or more.
        let dim = 64;
        let vector = |i: usize| -> Vec<f32> {
            (0..dim as u64)
                .map(|d| {
                    let x = (i as u64 * dim as u64 + d)
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ((x >> 33) % 1000) as f32 / 1000.0 - 0.5
                })
                .collect()
        };
        let rows = 3000;
        engine
            .add(
                &c,
                WriteBatch {
                    ids: (0..rows).map(|i| format!("id-{i}")).collect(),
                    embeddings: Some((0..rows).map(|i| Some(vector(i))).collect()),
                    documents: None,
                    uris: None,
                    metadatas: None,
                },
            )
            .await
            .unwrap();
        engine.compact(c.id, Merge::All).await.unwrap();
        engine.evict_all();

        let query = |i: usize| QueryRequest {
            embeddings: vec![vector(i)],
            n_results: 5,
            ..QueryRequest::default()
        };
        let found = engine.query(&c, query(0)).await.unwrap();
        assert_eq!(found.ids[0][0], "id-0");
        // The prefetch runs in the background: wait until the store sees no more reads.
        let mut gets = counting.gets.load(SeqCst);
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = counting.gets.load(SeqCst);
            if now == gets && cache.bytes() > 750_000 {
                break;
            }
            gets = now;
        }
        assert!(
            cache.bytes() > 750_000,
            "the vectors were cached: {}",
            cache.bytes()
        );
        for i in (0..rows).step_by(97) {
            let found = engine.query(&c, query(i)).await.unwrap();
            assert_eq!(found.ids[0][0], format!("id-{i}"));
        }
        assert_eq!(
            counting.gets.load(SeqCst),
            gets,
            "a warm query read the store"
        );
    }
}
