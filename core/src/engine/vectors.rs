//! Where a loaded segment's f32 vectors are, and reading them for one request.
//!
//! A loaded segment keeps its index's codes and graph in memory, not its f32 vectors
//! (see [`crate::index`]): those stay in the encrypted index object, after its head, and
//! are read by range — the re-rank candidates of a query, the embeddings a read returns,
//! the rows a log operation updates, the rows a compaction rewrites. Index objects are
//! written with small envelope chunks ([`VECTOR_CHUNK`]) so that reading one vector
//! decrypts a few KiB, not 64. On local files the reads are positioned reads served by
//! the page cache; on S3 they are ranged GETs (through the query function's `/tmp` block
//! cache, [`crate::storage::DiskCache`]).
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
