//! The cold path's index half: answering a query from a format 3 to 5 index object that is
//! not in memory, by reading a few ranges of it instead of its whole head.
//!
//! A segment's rows are stored in partition order (`partition.rs`), so the rows near a
//! query are a few contiguous ranges of the object. A reader
//! 1. reads the first [`ColdIndex::HEADER`] bytes, learns from them how long the
//!    partitions' directory is ([`ColdIndex::prefix_len`]) and reads it
//!    ([`ColdIndex::parse`]: about `4·dim` bytes per partition — 1.5 MiB at 1M × 384 —
//!    and, format 5, the vectors' top-byte table);
//! 2. picks the `nprobe` partitions whose centroids are nearest ([`ColdIndex::probe`])
//!    and reads their codes ([`ColdIndex::code_ranges`]: `dim + 4` bytes per row, `+ 4`
//!    for l2, two or three ranges per partition);
//! 3. scores those rows by code ([`ColdIndex::candidates`], the same 8-bit codes and
//!    distance the warm walk uses) and reads the f32 vectors of the best few
//!    ([`ColdIndex::vector_range`]) to rank them exactly ([`ColdIndex::rerank`]).
//!
//! Three round trips, whatever the collection's size: the bytes read grow with `nprobe`
//! and the partition size, not with the segment. The graph is not read at all; a
//! reader that keeps serving the segment loads its head in the background and walks
//! the graph from then on (the warm path).
//!
//! Nothing read here is covered by the head's checksum (that needs the whole head);
//! the envelope's per-chunk authentication covers every byte, and every value is
//! checked as the warm path checks it (bounds cover the rows, centroids and scales
//! finite), so a corrupt object is an error, never a panic.

use std::ops::Range;

use fixedbitset::FixedBitSet;
use rayon::prelude::*;

use super::distance::{sort_key, Query};
use super::flat::{Scored, TopK};
use super::graph::{corrupt, Reader};
use super::hnsw::{read_partitions, rerank_exact, Header, V2_HEADER_LEN, V3, V4, V5};
use super::packed::VectorCodec;
use super::partition::Partitions;
use super::quant::{Codes, CodesRef, QuantQuery};
use super::IndexLayout;
use crate::error::Result;
use crate::model::Space;

/// What a reader of an index object learns from its header and partitions: enough to
/// read the codes and vectors of the rows near a query by range.
#[derive(Debug, Clone)]
pub struct ColdIndex {
    space: Space,
    dim: usize,
    n: usize,
    /// Object offset of the codes section (right after the partitions).
    codes_at: u64,
    /// Object offset of the f32 vectors.
    head_len: u64,
    partitions: Partitions,
    /// How the object stores the f32 vectors.
    codec: VectorCodec,
}

impl ColdIndex {
    /// Bytes of the fixed header at the start of every index object.
    pub const HEADER: usize = V2_HEADER_LEN;

    /// From an object's first [`ColdIndex::HEADER`] bytes: how many bytes from its start
    /// [`ColdIndex::parse`] needs (the header and the partitions), or `None` for a format
    /// 1 or 2 object, which has no partitions (it is loaded whole instead).
    pub fn prefix_len(header: &[u8]) -> Result<Option<u64>> {
        IndexLayout::parse(header)?;
        let h = Header::read(&mut Reader::new(header))?;
        if !matches!(h.version, V3 | V4 | V5) {
            return Ok(None);
        }
        Ok(Some(Self::HEADER as u64 + h.directory_len() as u64))
    }

    /// Reads the header and partitions: exactly the first
    /// [`ColdIndex::prefix_len`] bytes of a format 3, 4 or 5 object.
    pub fn parse(prefix: &[u8]) -> Result<Self> {
        let IndexLayout::Head { head_len, .. } = IndexLayout::parse(prefix)? else {
            return Err(corrupt("format 1 has no partitions"));
        };
        let mut r = Reader::new(prefix);
        let h = Header::read(&mut r)?;
        if !matches!(h.version, V3 | V4 | V5) {
            return Err(corrupt(format!("format {} has no partitions", h.version)));
        }
        r.take(8, "head length")?;
        let partitions = read_partitions(&mut r, &h)?;
        let codec = h.codec(&mut r)?;
        if r.remaining() != 0 {
            return Err(corrupt(format!(
                "{} bytes after the partitions and the vectors' table",
                r.remaining()
            )));
        }
        let codes_at = prefix.len() as u64;
        let codes_end = codes_at + Codes::serialized_len(h.space, h.n, h.dim) as u64;
        if codes_end > head_len {
            return Err(corrupt(format!("codes end past the head at {head_len}")));
        }
        Ok(Self {
            space: h.space,
            dim: h.dim,
            n: h.n,
            codes_at,
            head_len,
            partitions,
            codec,
        })
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn partitions(&self) -> &Partitions {
        &self.partitions
    }

    /// Heap bytes held (the centroids and bounds).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + (self.partitions.centroids.capacity() + self.partitions.bounds.capacity()) * 4
    }

    /// The `nprobe` non-empty partitions nearest to `query`, nearest first.
    pub fn probe(&self, query: &[f32], nprobe: usize) -> Vec<usize> {
        self.probe_scored(query, nprobe)
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// [`ColdIndex::probe`] with each partition's centroid distance, which compares with
    /// another segment's of the same collection ([`Partitions::nearest_scored`]).
    pub fn probe_scored(&self, query: &[f32], nprobe: usize) -> Vec<(f32, usize)> {
        if query.len() != self.dim {
            return Vec::new();
        }
        self.partitions.nearest_scored(self.space, query, nprobe)
    }

    /// The object ranges holding partition `p`'s codes, in order: its scales, its
    /// squared norms (l2 only) and its codes. Panics if `p` is not a partition.
    pub fn code_ranges(&self, p: usize) -> Vec<Range<u64>> {
        let rows = self.partitions.rows(p);
        let (start, end) = (rows.start as u64, rows.end as u64);
        let n = self.n as u64;
        let mut at = self.codes_at;
        let mut ranges = Vec::with_capacity(3);
        ranges.push(at + 4 * start..at + 4 * end);
        at += 4 * n;
        if self.space == Space::L2 {
            ranges.push(at + 4 * start..at + 4 * end);
            at += 4 * n;
        }
        let dim = self.dim as u64;
        ranges.push(at + dim * start..at + dim * end);
        ranges
    }

    /// The `width` rows of the `probed` partitions nearest to `query` by code (ascending
    /// row numbers), among `allow` when given. `read` holds the bytes of every probed
    /// partition's [`ColdIndex::code_ranges`], partition after partition.
    pub fn candidates<B: AsRef<[u8]> + Sync>(
        &self,
        query: &[f32],
        width: usize,
        probed: &[usize],
        read: &[B],
        allow: Option<&FixedBitSet>,
    ) -> Result<Vec<u32>> {
        let scored = self.candidates_scored(query, width, probed, read, allow)?;
        Ok(scored.into_iter().map(|(row, _)| row).collect())
    }

    /// [`ColdIndex::candidates`] with each row's coded distance, as
    /// `HnswIndex::candidates_scored` gives them.
    pub fn candidates_scored<B: AsRef<[u8]> + Sync>(
        &self,
        query: &[f32],
        width: usize,
        probed: &[usize],
        read: &[B],
        allow: Option<&FixedBitSet>,
    ) -> Result<Vec<(u32, f32)>> {
        if width == 0 || query.len() != self.dim || self.dim == 0 {
            return Ok(Vec::new());
        }
        let per = if self.space == Space::L2 { 3 } else { 2 };
        if read.len() != probed.len() * per {
            return Err(corrupt(format!(
                "{} code ranges read for {} partitions",
                read.len(),
                probed.len()
            )));
        }
        let q = Query::new(self.space, query);
        let coded = QuantQuery::new(self.space, q.values());
        // Partition by partition on rayon's pool (a megabyte of codes or more each at
        // 1M rows), each keeping its best `width`.
        let tops = probed
            .par_iter()
            .zip(read.par_chunks_exact(per))
            .map(|(&p, parts)| {
                let rows = self.partitions.rows(p);
                let count = (rows.end - rows.start) as usize;
                let (scales, sq_norms, bytes) = match parts {
                    [scales, codes] => (scales.as_ref(), &[][..], codes.as_ref()),
                    [scales, sq_norms, codes] => {
                        (scales.as_ref(), sq_norms.as_ref(), codes.as_ref())
                    }
                    _ => unreachable!("chunks of `per` ranges"),
                };
                // (The error names what is wrong with the codes, not the partition.)
                let codes = CodesRef::new(self.space, count, self.dim, scales, sq_norms, bytes)?;
                let mut top = TopK::new(width);
                for (local, row) in rows.enumerate() {
                    if allow.is_some_and(|a| !a.contains(row as usize)) {
                        continue;
                    }
                    top.offer(Scored {
                        dist: sort_key(codes.distance(&coded, local)),
                        row,
                    });
                }
                Ok(top)
            })
            .collect::<Result<Vec<TopK>>>()?;
        let mut top = TopK::new(width);
        for part in tops {
            for (row, dist) in part.into_sorted() {
                top.offer(Scored { dist, row });
            }
        }
        let mut rows = top.into_sorted();
        rows.sort_unstable_by_key(|&(row, _)| row);
        Ok(rows)
    }

    /// How the object stores the f32 vectors.
    pub fn codec(&self) -> &VectorCodec {
        &self.codec
    }

    /// Where `row`'s f32 vector lies in the object (stored as [`ColdIndex::codec`] says).
    pub fn vector_range(&self, row: u32) -> Range<u64> {
        let width = self.codec.row_len() as u64;
        let start = self.head_len + row as u64 * width;
        start..start + width
    }

    /// The `k` nearest of `rows` by exact distance (ascending, ties by row id), given
    /// their f32 vectors in the same order: as `HnswIndex::rerank`.
    pub fn rerank(
        &self,
        query: &[f32],
        k: usize,
        rows: &[u32],
        vectors: &[f32],
    ) -> Vec<(u32, f32)> {
        rerank_exact(self.space, self.dim, query, k, rows, vectors)
    }
}

/// Per segment, per query (`[segment][query]`): the partitions a query probes, its
/// `nprobe` nearest among every segment's partitions by centroid distance (the
/// segments of one collection share its space, so their centroids' distances compare).
/// A segment whose partitions lie far from the query is probed less, or not at all,
/// where one `nprobe` a segment would read as much of a small segment as of a full one.
pub fn probe_across(
    indexes: &[&ColdIndex],
    queries: &[Vec<f32>],
    nprobe: usize,
) -> Vec<Vec<Vec<usize>>> {
    let mut probes = vec![vec![Vec::new(); queries.len()]; indexes.len()];
    for (q, query) in queries.iter().enumerate() {
        // (distance, segment, partition), nearest first.
        let mut nearest: Vec<(f32, usize, usize)> = indexes
            .iter()
            .enumerate()
            .flat_map(|(s, i)| {
                i.probe_scored(query, nprobe)
                    .into_iter()
                    .map(move |(d, p)| (d, s, p))
            })
            .collect();
        nearest.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        for &(_, s, p) in nearest.iter().take(nprobe) {
            probes[s][q].push(p);
        }
    }
    probes
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::index::hnsw::tests::{params, random_vectors};
    use crate::index::{BuildOptions, HnswIndex};

    fn object(space: Space, n: usize, dim: usize, per_partition: usize) -> (HnswIndex, Vec<u8>) {
        let data = random_vectors(n, dim, 41);
        let (index, _) = HnswIndex::build(&data, dim, &params(space))
            .unwrap()
            .partitioned(per_partition, &BuildOptions::default())
            .unwrap();
        let bytes = index.to_bytes();
        (index, bytes)
    }

    fn open(bytes: &[u8]) -> ColdIndex {
        let len = ColdIndex::prefix_len(&bytes[..ColdIndex::HEADER])
            .unwrap()
            .unwrap();
        ColdIndex::parse(&bytes[..len as usize]).unwrap()
    }

    fn ranges(bytes: &[u8], ranges: &[Range<u64>]) -> Vec<Bytes> {
        ranges
            .iter()
            .map(|r| Bytes::copy_from_slice(&bytes[r.start as usize..r.end as usize]))
            .collect()
    }

    /// Probes go to the partitions nearest to the query across the segments: none to a
    /// segment whose rows all lie far away, and as the nearest of all the partitions
    /// when they mix.
    #[test]
    fn probes_are_the_nearest_partitions_across_segments() {
        let (n, dim) = (600, 8);
        // Rows of `seed`, moved by `shift` on every axis, in partitions of 50.
        let segment = |seed: u64, shift: f32| {
            let rows: Vec<f32> = random_vectors(n, dim, seed)
                .iter()
                .map(|x| x + shift)
                .collect();
            let (index, _) = HnswIndex::build(&rows, dim, &params(Space::L2))
                .unwrap()
                .partitioned(50, &BuildOptions::default())
                .unwrap();
            index.to_bytes()
        };
        let (near, far, mixed) = (segment(41, 0.0), segment(43, 100.0), segment(45, 0.0));
        let (near, far, mixed) = (open(&near), open(&far), open(&mixed));
        let queries = random_vectors(5, dim, 44);
        let queries: Vec<Vec<f32>> = queries.chunks_exact(dim).map(<[f32]>::to_vec).collect();

        let probes = probe_across(&[&near, &far], &queries, 6);
        for q in 0..queries.len() {
            assert_eq!(probes[0][q], near.probe(&queries[q], 6), "query {q}");
            assert!(probes[1][q].is_empty(), "query {q} probed the far segment");
        }

        let probes = probe_across(&[&near, &mixed], &queries, 6);
        let mut mixes = 0;
        for (q, query) in queries.iter().enumerate() {
            let mut all: Vec<(f32, usize, usize)> = [&near, &mixed]
                .iter()
                .enumerate()
                .flat_map(|(s, i)| {
                    (0..i.partitions().count()).map(move |p| {
                        let d = super::super::distance::distance(
                            Space::L2,
                            query,
                            i.partitions().centroid(p),
                        );
                        (d, s, p)
                    })
                })
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut expected = vec![Vec::new(), Vec::new()];
            for &(_, s, p) in &all[..6] {
                expected[s].push(p);
            }
            assert_eq!(vec![probes[0][q].clone(), probes[1][q].clone()], expected);
            assert_eq!(probes[0][q].len() + probes[1][q].len(), 6);
            mixes += usize::from(!probes[0][q].is_empty() && !probes[1][q].is_empty());
        }
        assert!(mixes > 0, "no query probed both segments");
    }

    /// Cold search through every partition, scoring every row by code and re-ranking
    /// them all, is the exact answer; through a few partitions, it reads a fraction of
    /// the object and finds only rows of those partitions.
    #[test]
    fn cold_search_by_ranges_answers_from_the_object() {
        let (n, dim) = (1200, 16);
        let queries = random_vectors(20, dim, 42);
        for space in [Space::L2, Space::Cosine, Space::Ip] {
            let (index, bytes) = object(space, n, dim, 100);
            let cold = open(&bytes);
            assert_eq!((cold.len(), cold.dim()), (n, dim));
            assert_eq!(Some(cold.partitions()), index.partitions());
            let count = cold.partitions().count();
            assert!(count >= 10);
            for q in queries.chunks_exact(dim) {
                let all = cold.probe(q, count);
                assert_eq!(all.len(), count);
                let wanted: Vec<_> = all.iter().flat_map(|&p| cold.code_ranges(p)).collect();
                let rows = cold
                    .candidates(q, n, &all, &ranges(&bytes, &wanted), None)
                    .unwrap();
                assert_eq!(rows, (0..n as u32).collect::<Vec<_>>());
                let mut vectors = Vec::new();
                for &row in &rows {
                    let r = cold.vector_range(row);
                    cold.codec()
                        .decode(&bytes[r.start as usize..r.end as usize], &mut vectors)
                        .unwrap();
                }
                assert_eq!(
                    cold.rerank(q, 10, &rows, &vectors),
                    index.exact(q, 10, None)
                );

                let few = cold.probe(q, 2);
                let wanted: Vec<_> = few.iter().flat_map(|&p| cold.code_ranges(p)).collect();
                let read: u64 = wanted.iter().map(|r| r.end - r.start).sum();
                assert!(read * 4 < bytes.len() as u64, "{read} of {}", bytes.len());
                let mut allow = FixedBitSet::with_capacity(n);
                allow.insert_range(..);
                allow.set(cold.partitions().rows(few[0]).start as usize, false);
                let rows = cold
                    .candidates(q, 32, &few, &ranges(&bytes, &wanted), Some(&allow))
                    .unwrap();
                assert_eq!(rows.len(), 32);
                assert!(rows.iter().all(|&row| allow.contains(row as usize)
                    && few
                        .iter()
                        .any(|&p| cold.partitions().rows(p).contains(&row))));
            }
        }
    }

    #[test]
    fn objects_without_partitions_and_corrupt_prefixes_are_told_apart() {
        let (index, bytes) = object(Space::L2, 300, 3, 50);
        let v2 = index.to_bytes_v2();
        assert_eq!(
            ColdIndex::prefix_len(&v2[..ColdIndex::HEADER]).unwrap(),
            None
        );
        assert!(ColdIndex::parse(&v2[..200]).is_err());
        let len = ColdIndex::prefix_len(&bytes[..ColdIndex::HEADER])
            .unwrap()
            .unwrap() as usize;
        for short in [0, 20, ColdIndex::HEADER, len - 1] {
            assert!(ColdIndex::parse(&bytes[..short]).is_err(), "{short}");
        }
        assert!(ColdIndex::parse(&bytes[..len + 4]).is_err());
        // A bound past the rows (the checksum is not what catches it here): the last
        // bound comes before the vectors' table.
        let mut forged = bytes[..len].to_vec();
        let last_bound = ColdIndex::HEADER + index.partitions().unwrap().serialized_len() - 4;
        forged[last_bound..last_bound + 4].copy_from_slice(&301u32.to_le_bytes());
        assert!(ColdIndex::parse(&forged).is_err());
        // Codes of the wrong size for the partition.
        let cold = open(&bytes);
        let wanted = cold.code_ranges(0);
        let mut read = ranges(&bytes, &wanted);
        read[2] = read[2].slice(1..);
        assert!(cold.candidates(&[0.0; 3], 5, &[0], &read, None).is_err());
        assert!(cold.candidates(&[0.0; 3], 5, &[0, 1], &read, None).is_err());
        // A negative scale.
        let mut read = ranges(&bytes, &wanted);
        let mut scales = read[0].to_vec();
        scales[..4].copy_from_slice(&(-1.0f32).to_le_bytes());
        read[0] = Bytes::from(scales);
        assert!(cold.candidates(&[0.0; 3], 5, &[0], &read, None).is_err());
    }
}
