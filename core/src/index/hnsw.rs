//! Building an [`HnswIndex`] with hnsw_rs, flattening its graph, and our own
//! serialization of the result.

mod extend;

use std::time::Instant;

use fixedbitset::FixedBitSet;
use hnsw_rs::anndists::dist::{DistL2, Distance};
use hnsw_rs::hnsw::Hnsw;

use super::distance::{dot, inv_norm, normalized, sort_key, Query};
use super::flat::{self, Scored, TopK, Vectors};
use super::graph::{corrupt, put_u32, put_u32s, Graph, Reader, UpperLayer};
use super::packed::VectorCodec;
use super::partition::{self, Partitions};
use super::quant::{Codes, QuantQuery};
use crate::error::{Error, Result};
use crate::model::validate::{MAX_DIMENSION, MAX_HNSW_NEIGHBORS};
use crate::model::{HnswConfiguration, Space};

pub use extend::MAX_EXTENDABLE_NEIGHBORS;

/// Parameters of a build. `max_neighbors` is HNSW's `M` (layer 0 keeps up to `2·M`
/// neighbours per node), `ef_construction` the beam width while inserting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    pub space: Space,
    pub max_neighbors: usize,
    pub ef_construction: usize,
}

impl Default for HnswParams {
    /// A collection's default HNSW settings ([`HnswConfiguration::default`]).
    fn default() -> Self {
        Self::from(&HnswConfiguration::default())
    }
}

impl From<&HnswConfiguration> for HnswParams {
    /// What a build uses of a collection's HNSW settings.
    fn from(c: &HnswConfiguration) -> Self {
        Self {
            space: c.space,
            max_neighbors: c.max_neighbors,
            ef_construction: c.ef_construction,
        }
    }
}

/// How [`HnswIndex::candidates`] finds the rows to re-score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidates {
    /// Walk the graph (scanning instead when few rows are allowed).
    Walk,
    /// Scan every allowed row by code: exact up to the codes' error.
    Scan,
}

/// How a build runs: on how many threads, and when to give up.
#[derive(Clone, Copy)]
pub struct BuildOptions<'a> {
    /// Threads inserting in parallel; 0 = rayon's global pool (every core).
    pub threads: usize,
    /// Checked between chunks of [`INSERT_CHUNK`] rows: once it returns true the build
    /// stops with `Cancelled`.
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
}

impl std::fmt::Debug for BuildOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl Default for BuildOptions<'_> {
    fn default() -> Self {
        Self {
            threads: 0,
            cancelled: &|| false,
        }
    }
}

/// Rows inserted between two checks of [`BuildOptions::cancelled`] (about a second of
/// work on one core at 384 dimensions).
pub const INSERT_CHUNK: usize = 2048;

/// hnsw_rs's layer count (its own maximum).
const HNSW_RS_MAX_LAYERS: usize = 16;

/// A built, immutable HNSW graph with the 8-bit codes of its rows, and their f32
/// vectors when those are resident, searched from a compact flat layout.
///
/// An index is *resident* when built here or read whole ([`HnswIndex::from_bytes`]);
/// one loaded from its head alone ([`HnswIndex::from_head`]) holds no f32 vectors: its
/// callers walk it for [`HnswIndex::candidates`] and re-score those with
/// [`HnswIndex::rerank`] from vectors they read by range.
///
/// Rows are numbered `0..len()` in the order given to [`HnswIndex::build`]. Searching
/// takes `&self` and is safe from many threads at once.
#[derive(Debug, Clone)]
pub struct HnswIndex {
    space: Space,
    max_neighbors: usize,
    dim: usize,
    codes: Codes,
    /// `None` when only the head was loaded.
    vectors: Option<Vectors>,
    graph: Graph,
    /// Rows grouped by nearest centroid (formats 3 to 5); `None` until
    /// [`HnswIndex::partitioned`] (or for a format 1 or 2 object).
    partitions: Option<Partitions>,
    /// How the object this index was read from (or written to, once its vectors are
    /// dropped) stores the f32 vectors; plain f32 while the vectors are resident.
    codec: VectorCodec,
}

impl HnswIndex {
    /// Builds over `n = vectors.len()/dim` rows (row i = vectors[i*dim..(i+1)*dim]) with
    /// hnsw_rs (parallel insertion on all cores), then flattens the built graph and drops
    /// hnsw_rs's structure.
    ///
    /// Errors (`InvalidArgument`): `dim` is 0 while `vectors` is not empty, `vectors.len()`
    /// is not a multiple of `dim`, a value is not finite, `max_neighbors` is 0 or above
    /// 256, or there are `u32::MAX` rows or more. `max_neighbors = 1` builds with 2 (hnsw_rs
    /// samples levels with scale `1/ln M`); `ef_construction` below `max_neighbors` is
    /// raised to it, as hnswlib does.
    pub fn build(vectors: &[f32], dim: usize, params: &HnswParams) -> Result<Self> {
        Self::build_with(vectors, dim, params, &BuildOptions::default())
    }

    /// [`HnswIndex::build`] on `options.threads` threads, stopping with `Cancelled` when
    /// `options.cancelled` says so.
    pub fn build_with(
        vectors: &[f32],
        dim: usize,
        params: &HnswParams,
        options: &BuildOptions<'_>,
    ) -> Result<Self> {
        Self::build_owned(vectors.to_vec(), dim, params, options)
    }

    /// [`HnswIndex::build_with`] taking the vectors: the index keeps them as its resident
    /// vectors, so a build holds its input once (plus hnsw_rs's own copy while it runs).
    pub fn build_owned(
        vectors: Vec<f32>,
        dim: usize,
        params: &HnswParams,
        options: &BuildOptions<'_>,
    ) -> Result<Self> {
        on_build_threads(options.threads, || {
            Self::build_timed(vectors, dim, params, options.cancelled)
        })?
        .map(|(index, _)| index)
    }

    /// [`HnswIndex::build_owned`], also reporting where the time went.
    pub(crate) fn build_timed(
        vectors: Vec<f32>,
        dim: usize,
        params: &HnswParams,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<(Self, BuildTimings)> {
        let m = params.max_neighbors;
        let n = check_input(&vectors, dim, m)?;
        let codes = Codes::new(params.space, dim, &vectors);
        if n == 0 {
            let graph = Graph {
                entry: u32::MAX,
                offsets0: vec![0],
                ..Graph::default()
            };
            let index = Self {
                space: params.space,
                max_neighbors: m,
                dim,
                codes,
                vectors: Some(Vectors::new(params.space, dim, vectors)),
                graph,
                partitions: None,
                codec: VectorCodec::plain(dim),
            };
            return Ok((index, BuildTimings::default()));
        }

        let m_build = m.max(2);
        let ef_c = params.ef_construction.max(m_build);
        let input = GraphInput::new(params.space, &vectors, dim);
        let (graph, timings) = match params.space {
            Space::L2 | Space::Cosine => build_graph(input, m_build, ef_c, DistL2, cancelled)?,
            Space::Ip => {
                let dist = ShiftedDot::over(&vectors, dim);
                build_graph(input, m_build, ef_c, dist, cancelled)?
            }
        };
        tracing::debug!(
            rows = n,
            dim,
            insert_ms = timings.insert.as_millis() as u64,
            flatten_ms = timings.flatten.as_millis() as u64,
            drop_ms = timings.drop.as_millis() as u64,
            "hnsw index built"
        );
        let index = Self {
            space: params.space,
            max_neighbors: m,
            dim,
            codes,
            vectors: Some(Vectors::new(params.space, dim, vectors)),
            graph,
            partitions: None,
            codec: VectorCodec::plain(dim),
        };
        Ok((index, timings))
    }

    pub fn len(&self) -> usize {
        self.codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn space(&self) -> Space {
        self.space
    }

    /// The `max_neighbors` the index was built with.
    pub fn max_neighbors(&self) -> usize {
        self.max_neighbors
    }

    /// Whether the f32 vectors are in memory.
    pub fn has_vectors(&self) -> bool {
        self.vectors.is_some()
    }

    /// Serializes as [`HnswIndex::to_bytes`] does, then frees the f32 vectors: from then
    /// on the index is searched through [`HnswIndex::candidates`] and
    /// [`HnswIndex::rerank`], and [`HnswIndex::vector_range`] and [`HnswIndex::codec`]
    /// say where and how the returned object stores them. Panics when the vectors are
    /// not resident.
    pub fn seal(&mut self) -> Vec<u8> {
        let (bytes, codec) = self.write(V5);
        self.codec = codec;
        self.vectors = None;
        bytes
    }

    /// Frees the f32 vectors, as [`HnswIndex::seal`] does, without keeping the object.
    #[cfg(test)]
    pub(crate) fn drop_vectors(&mut self) {
        self.seal();
    }

    /// How the index object stores the f32 vectors [`HnswIndex::vector_range`] points
    /// at.
    pub fn codec(&self) -> &VectorCodec {
        &self.codec
    }

    /// The rows' partitions, when the index has them (built here and
    /// [`HnswIndex::partitioned`], or read from a format 3 to 5 object).
    pub fn partitions(&self) -> Option<&Partitions> {
        self.partitions.as_ref()
    }

    /// This index with its rows renumbered in partition order
    /// ([`partition::partition`], about `rows_per_partition` rows each): rows nearest to
    /// one centroid become one contiguous range — of codes, of graph rows and of f32
    /// vectors in the serialized object — so a reader can fetch a partition with one
    /// ranged read. Returns the order too: new row `i` is old row `order[i]` (the caller
    /// renumbers whatever it keeps per row the same way). The graph is the same graph;
    /// searches return the same rows under their new numbers.
    ///
    /// Needs the resident vectors (a freshly built or extended index). Runs on
    /// `options.threads` threads; `Cancelled` when `options.cancelled` says so.
    pub fn partitioned(
        self,
        rows_per_partition: usize,
        options: &BuildOptions<'_>,
    ) -> Result<(Self, Vec<u32>)> {
        let vectors = self.resident_for_partitioning()?;
        let (partitions, order) = on_build_threads(options.threads, || {
            partition::partition(
                self.space,
                self.dim,
                &vectors.data,
                rows_per_partition,
                options.cancelled,
            )
        })??;
        let index = self.renumbered(partitions, &order);
        Ok((index, order))
    }

    /// [`HnswIndex::partitioned`] for an index extended from rows partitioned as `base`
    /// (its first `base`'s rows, in that order): the centroids stay, only the added rows
    /// are assigned to their nearest, and rows are renumbered so that each partition is
    /// contiguous again (rows keep their relative order within a partition). Extending
    /// a large segment with a few rows so costs a few assignments, not a k-means over
    /// all of it. Once partitions would hold more than twice `rows_per_partition` rows
    /// on average (or `base` does not describe this index's first rows), the rows are
    /// partitioned afresh.
    pub fn partitioned_after(
        self,
        base: &Partitions,
        rows_per_partition: usize,
        options: &BuildOptions<'_>,
    ) -> Result<(Self, Vec<u32>)> {
        let n = self.len();
        let n_base = base.bounds.last().map_or(0, |&b| b as usize);
        let crowded = n > 2 * rows_per_partition.max(1) * base.count();
        if base.dim != self.dim || n_base > n || base.count() == 0 || crowded {
            return self.partitioned(rows_per_partition, options);
        }
        let vectors = self.resident_for_partitioning()?;
        let added = on_build_threads(options.threads, || {
            partition::assign(self.space, base, &vectors.data[n_base * self.dim..])
        })??;
        let mut assigned = Vec::with_capacity(n);
        for p in 0..base.count() {
            assigned.extend(std::iter::repeat_n(p as u32, base.rows(p).len()));
        }
        assigned.extend(added);
        let (partitions, order) = partition::arrange(self.dim, base.centroids.clone(), &assigned);
        let index = self.renumbered(partitions, &order);
        Ok((index, order))
    }

    fn resident_for_partitioning(&self) -> Result<&Vectors> {
        self.vectors
            .as_ref()
            .ok_or_else(|| Error::internal("partitioning an index whose vectors are not resident"))
    }

    /// This index over rows renumbered by `order` (new row `i` is old row `order[i]`).
    /// The f32 vectors are moved in place (the largest part: no second copy).
    fn renumbered(mut self, partitions: Partitions, order: &[u32]) -> Self {
        if let Some(vectors) = &mut self.vectors {
            vectors.permute(order);
        }
        Self {
            codes: self.codes.permuted(order),
            graph: self.graph.permuted(order),
            partitions: Some(partitions),
            ..self
        }
    }

    /// The resident vector of a row exactly as given to build (not normalized); `None`
    /// when the vectors are not resident.
    ///
    /// Panics if `row >= len()`.
    pub fn vector(&self, row: u32) -> Option<&[f32]> {
        assert!(
            (row as usize) < self.len(),
            "row {row} out of range for {} rows",
            self.len()
        );
        self.vectors.as_ref().map(|v| v.row(row))
    }

    /// The resident vectors; panics when they are not (a caller's bug: an index loaded
    /// from its head is searched through `candidates` and `rerank`).
    fn resident(&self) -> &Vectors {
        self.vectors
            .as_ref()
            .expect("exact search over an index whose vectors are not resident")
    }

    /// k nearest rows by Chroma's distance (ascending, ties by row id), beam width
    /// `max(ef, k)`. With `allow`, only rows whose bit is set are returned (the walk still
    /// passes through others); it may then return fewer than `k` rows even though more
    /// are allowed — callers fall back to [`HnswIndex::exact`]. When so few rows are
    /// allowed that scanning them is cheaper than the walk, this is exact.
    ///
    /// A query whose length is not `dim()` returns nothing. Panics when the vectors are
    /// not resident.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&FixedBitSet>,
    ) -> Vec<(u32, f32)> {
        let vectors = self.resident();
        let n = self.len();
        if k == 0 || n == 0 || query.len() != self.dim() {
            return Vec::new();
        }
        let q = Query::new(self.space, query);
        if let Some(allow) = allow {
            let allowed = allow.count_ones(..n.min(allow.len()));
            if allowed == 0 {
                return Vec::new();
            }
            if scan_is_cheaper(allowed, n, ef.max(k)) {
                return flat::exact(vectors, &q, k, Some(allow));
            }
        }
        let mut top = TopK::new(k);
        for row in self.walk(&q, k, ef, allow) {
            top.offer(Scored {
                dist: vectors.distance(&q, row),
                row,
            });
        }
        top.into_sorted()
    }

    /// The rows worth re-scoring exactly from a beam of width `max(ef, k)`: its
    /// [`rerank_width`] nearest by coded distance.
    fn walk(&self, q: &Query<'_>, k: usize, ef: usize, allow: Option<&FixedBitSet>) -> Vec<u32> {
        self.walk_scored(q, k, ef, allow)
            .into_iter()
            .map(|s| s.row)
            .collect()
    }

    /// [`HnswIndex::walk`] with the rows' coded distances, nearest first.
    fn walk_scored(
        &self,
        q: &Query<'_>,
        k: usize,
        ef: usize,
        allow: Option<&FixedBitSet>,
    ) -> Vec<Scored> {
        let mut beam = self.graph.search(&self.codes, q, k, ef, allow);
        beam.sort_unstable();
        beam.truncate(rerank_width(k, ef));
        beam
    }

    /// Exact k nearest among the allowed rows (all rows if None), ascending by distance,
    /// ties by row id. A query whose length is not `dim()` returns nothing. Panics when
    /// the vectors are not resident.
    pub fn exact(&self, query: &[f32], k: usize, allow: Option<&FixedBitSet>) -> Vec<(u32, f32)> {
        let vectors = self.resident();
        if query.len() != self.dim() {
            return Vec::new();
        }
        flat::exact(vectors, &Query::new(self.space, query), k, allow)
    }

    /// The rows to re-score for the `k` nearest allowed rows, found from the codes
    /// alone (no f32 vector is read): with [`Candidates::Walk`], the [`rerank_width`]
    /// nearest by code of the rows a beam of width `w = max(ef, k)` ends with; with
    /// [`Candidates::Scan`] (or when so few rows are allowed that scanning is cheaper
    /// than the walk), every allowed row when there are at most `w`, else the `w`
    /// nearest by coded distance. Ascending by row.
    ///
    /// Re-scoring these with [`HnswIndex::rerank`] gives what [`HnswIndex::search`]
    /// (walking) or [`HnswIndex::exact`] (scanning, up to the codes' error when more
    /// than `w` rows are allowed) gives. A query whose length is not `dim()` returns
    /// nothing.
    pub fn candidates(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&FixedBitSet>,
        how: Candidates,
    ) -> Vec<u32> {
        self.candidates_scored(query, k, ef, allow, how)
            .into_iter()
            .map(|(row, _)| row)
            .collect()
    }

    /// [`HnswIndex::candidates`] with each row's coded distance (an estimate of its
    /// distance to `query`, comparable across segments).
    pub fn candidates_scored(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&FixedBitSet>,
        how: Candidates,
    ) -> Vec<(u32, f32)> {
        let n = self.len();
        if k == 0 || n == 0 || query.len() != self.dim() {
            return Vec::new();
        }
        let width = ef.max(k);
        let allowed = allow.map_or(n, |a| a.count_ones(..n.min(a.len())));
        if allowed == 0 {
            return Vec::new();
        }
        let q = Query::new(self.space, query);
        let scan =
            how == Candidates::Scan || (allow.is_some() && scan_is_cheaper(allowed, n, width));
        let mut rows: Vec<(u32, f32)> = if !scan {
            self.walk_scored(&q, k, ef, allow)
                .into_iter()
                .map(|s| (s.row, s.dist))
                .collect()
        } else {
            let every: Box<dyn Iterator<Item = u32>> = match allow {
                Some(a) => Box::new(a.ones().take_while(move |&r| r < n).map(|r| r as u32)),
                None => Box::new(0..n as u32),
            };
            let coded = QuantQuery::new(self.space, q.values());
            let scored = every.map(|row| Scored {
                dist: sort_key(self.codes.distance(&coded, row)),
                row,
            });
            if allowed <= width {
                scored.map(|s| (s.row, s.dist)).collect()
            } else {
                let mut top = TopK::new(width);
                for s in scored {
                    top.offer(s);
                }
                top.into_sorted()
            }
        };
        rows.sort_unstable_by_key(|&(row, _)| row);
        rows
    }

    /// The `k` nearest of `rows` by exact distance (ascending, ties by row id), given
    /// their f32 vectors row-major in the same order. Distances are bit-identical to
    /// those of [`HnswIndex::search`] and [`super::distance`].
    ///
    /// Returns nothing when the query or `vectors` has the wrong length.
    pub fn rerank(
        &self,
        query: &[f32],
        k: usize,
        rows: &[u32],
        vectors: &[f32],
    ) -> Vec<(u32, f32)> {
        rerank_exact(self.space, self.dim, query, k, rows, vectors)
    }

    /// Heap bytes held (codes, graph, resident vectors), plus the struct itself.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.codes.memory_bytes()
            + self.vectors.as_ref().map_or(0, Vectors::memory_bytes)
            + self.graph.memory_bytes()
            + self
                .partitions
                .as_ref()
                .map_or(0, |p| (p.centroids.capacity() + p.bounds.capacity()) * 4)
    }

    /// Where a row's f32 vector lies within the vectors section of formats 2 to 5
    /// (which starts at [`IndexLayout::Head`]'s `head_len`), stored as
    /// [`HnswIndex::codec`] says.
    pub fn vector_range(&self, row: u32) -> std::ops::Range<u64> {
        let width = self.codec.row_len() as u64;
        let start = row as u64 * width;
        start..start + width
    }

    /// Serializes to format version 5 (see the module docs of [`super`]): the head
    /// (header, partitions, the vectors' top-byte table, codes, packed graph, checksum),
    /// then the f32 vectors, packed. An index that was not [`HnswIndex::partitioned`] is
    /// written as one partition. Panics when the vectors are not resident.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.write(V5).0
    }

    /// Format 4 (format 5 with plain f32 vectors), as written before format 5 (kept to
    /// test that it is still read).
    #[cfg(test)]
    pub(crate) fn to_bytes_v4(&self) -> Vec<u8> {
        self.write(V4).0
    }

    /// Format 3 (format 4 with the graph's layer 0 as plain CSR), as written before
    /// format 4 (kept to test that it is still read).
    #[cfg(test)]
    pub(crate) fn to_bytes_v3(&self) -> Vec<u8> {
        self.write(V3).0
    }

    /// Format 2 (format 3 without partitions), as written before format 3 (kept to test
    /// that it is still read).
    #[cfg(test)]
    pub(crate) fn to_bytes_v2(&self) -> Vec<u8> {
        self.write(V2).0
    }

    /// The object in format `version`, and how it stores the vectors.
    fn write(&self, version: u32) -> (Vec<u8>, VectorCodec) {
        let vectors = self.resident();
        let n = self.len();
        let single;
        let partitions = match &self.partitions {
            Some(p) => p,
            None => {
                single = Partitions::single(self.dim, n as u32);
                &single
            }
        };
        let codec = match version {
            V5 => VectorCodec::fit(self.dim, &vectors.data),
            _ => VectorCodec::plain(self.dim),
        };
        let mut out = Vec::with_capacity(
            V2_HEADER_LEN
                + partitions.serialized_len()
                + 256
                + Codes::serialized_len(self.space, n, self.dim)
                + self.graph.memory_bytes()
                + 16
                + n * codec.row_len(),
        );
        let partitioned = version >= V3;
        let count = if partitioned { partitions.count() } else { 0 };
        self.write_header(&mut out, version, count as u32, codec.bits());
        put_u64(&mut out, 0); // head_len, set below
        debug_assert_eq!(out.len(), V2_HEADER_LEN);
        if partitioned {
            for x in &partitions.centroids {
                out.extend_from_slice(&x.to_le_bytes());
            }
            put_u32s(&mut out, &partitions.bounds);
        }
        codec.write_table(&mut out);
        self.codes.write(&mut out);
        if version >= V4 {
            self.graph.write_packed(&mut out);
        } else {
            self.graph.write(&mut out);
        }
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let head_len = (out.len() + 8) as u64;
        out[40..48].copy_from_slice(&head_len.to_le_bytes());
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        codec.encode(&vectors.data, &mut out);
        (out, codec)
    }

    /// The fixed header; `partitions` goes where formats 1 and 2 have a reserved word,
    /// and format 5 keeps the vectors' top-byte index bits in the space word's second
    /// byte.
    fn write_header(
        &self,
        out: &mut Vec<u8>,
        version: u32,
        partitions: u32,
        vector_bits: Option<u32>,
    ) {
        out.extend_from_slice(&MAGIC);
        put_u32(out, version);
        put_u32(out, space_code(self.space) | vector_bits.unwrap_or(0) << 8);
        put_u32(out, self.dim() as u32);
        put_u32(out, self.len() as u32);
        put_u32(out, self.max_neighbors as u32);
        put_u32(out, self.graph.entry);
        put_u32(out, self.graph.upper.len() as u32);
        put_u32(out, partitions);
    }

    /// Reads a whole index (format 1, 2 or 3): resident. Checks the magic, version and
    /// checksum, then every length, offset and neighbour id, and that vectors are
    /// finite; returns an `Internal` error on anything corrupt, never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        match IndexLayout::parse(bytes)? {
            IndexLayout::Whole => Self::from_v1(bytes),
            IndexLayout::Head {
                head_len,
                vectors_len,
            } => {
                let head_len = head_len as usize;
                let expected = head_len as u64 + vectors_len;
                if bytes.len() as u64 != expected {
                    return Err(corrupt(format!(
                        "{} bytes, expected {expected}",
                        bytes.len()
                    )));
                }
                let mut index = Self::from_head(&bytes[..head_len])?;
                let mut data = Vec::new();
                index.codec.decode(&bytes[head_len..], &mut data)?;
                index.vectors = Some(vectors_from(index.space, index.dim, data)?);
                Ok(index)
            }
        }
    }

    /// Reads the head of a format 2 or 3 index (exactly its first `head_len` bytes, see
    /// [`IndexLayout`]): the codes and the graph, without the f32 vectors. Validates
    /// like [`HnswIndex::from_bytes`].
    pub fn from_head(head: &[u8]) -> Result<Self> {
        let IndexLayout::Head { head_len, .. } = IndexLayout::parse(head)? else {
            return Err(corrupt("format 1 has no separate head"));
        };
        if head.len() as u64 != head_len {
            return Err(corrupt(format!(
                "head of {} bytes, expected {head_len}",
                head.len()
            )));
        }
        let mut r = Reader::new(checked_body(head)?);
        let h = Header::read(&mut r)?;
        r.take(8, "head length")?;
        let partitions = match h.version {
            V3 | V4 | V5 => Some(read_partitions(&mut r, &h)?),
            _ => None,
        };
        let codec = h.codec(&mut r)?;
        let codes = Codes::read(&mut r, h.space, h.n, h.dim)?;
        let graph = match h.version {
            V4 | V5 => Graph::read_packed(&mut r, h.n, h.entry, h.layers)?,
            _ => Graph::read(&mut r, h.n, h.entry, h.layers)?,
        };
        if r.remaining() >= 8 || r.take(r.remaining(), "padding")?.iter().any(|&b| b != 0) {
            return Err(corrupt("trailing bytes in the head"));
        }
        Ok(Self {
            space: h.space,
            max_neighbors: h.max_neighbors,
            dim: h.dim,
            codes,
            vectors: None,
            graph,
            partitions,
            codec,
        })
    }

    /// Format 1: the vectors inside, codes derived here.
    fn from_v1(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < V1_HEADER_LEN + 8 {
            return Err(corrupt(format!(
                "{} bytes is shorter than the header",
                bytes.len()
            )));
        }
        let mut r = Reader::new(checked_body(bytes)?);
        let h = Header::read(&mut r)?;
        let values =
            h.n.checked_mul(h.dim)
                .ok_or_else(|| corrupt("vector data too large"))?;
        let data = r.f32s(values, "vectors")?;
        let vectors = vectors_from(h.space, h.dim, data)?;
        let graph = Graph::read(&mut r, h.n, h.entry, h.layers)?;
        if r.remaining() != 0 {
            return Err(corrupt(format!("{} trailing bytes", r.remaining())));
        }
        Ok(Self {
            space: h.space,
            max_neighbors: h.max_neighbors,
            dim: h.dim,
            codes: Codes::new(h.space, h.dim, &vectors.data),
            vectors: Some(vectors),
            graph,
            partitions: None,
            codec: VectorCodec::plain(h.dim),
        })
    }

    /// Format 1, as written before format 2 (kept to test that it is still read).
    #[cfg(test)]
    pub(crate) fn to_bytes_v1(&self) -> Vec<u8> {
        let vectors = self.resident();
        let mut out = Vec::new();
        self.write_header(&mut out, V1, 0, None);
        for x in &vectors.data {
            out.extend_from_slice(&x.to_le_bytes());
        }
        self.graph.write(&mut out);
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }
}

/// How an index object is laid out, from its first [`IndexLayout::PREFIX`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexLayout {
    /// Format 1: read the object whole ([`HnswIndex::from_bytes`]).
    Whole,
    /// Format 2: the head is the first `head_len` bytes ([`HnswIndex::from_head`]), the
    /// f32 vectors the `vectors_len` bytes after it.
    Head { head_len: u64, vectors_len: u64 },
}

impl IndexLayout {
    /// Bytes [`IndexLayout::parse`] needs.
    pub const PREFIX: usize = V2_HEADER_LEN;

    /// Reads the magic, version, sizes and (format 2) head length.
    pub fn parse(prefix: &[u8]) -> Result<Self> {
        if prefix.len() < V1_HEADER_LEN {
            return Err(corrupt(format!(
                "{} bytes is shorter than the header",
                prefix.len()
            )));
        }
        let h = Header::read(&mut Reader::new(prefix))?;
        if h.version == V1 {
            return Ok(Self::Whole);
        }
        if prefix.len() < V2_HEADER_LEN {
            return Err(corrupt("truncated format 2 header"));
        }
        let head_len = u64::from_le_bytes(prefix[40..48].try_into().expect("8 bytes"));
        let codes = Codes::serialized_len(h.space, h.n, h.dim) as u64;
        // At least the header, the codes, layer 0's offsets (formats 4 and 5: a count
        // byte per row) and the checksum.
        let layer0 = match h.version {
            V4 | V5 => h.n as u64,
            _ => 4 * (h.n as u64 + 1),
        };
        let least = (V2_HEADER_LEN + 8) as u64 + h.directory_len() as u64 + codes + layer0;
        if head_len < least || !head_len.is_multiple_of(8) || head_len > MAX_HEAD_LEN {
            return Err(corrupt(format!("bad head length {head_len}")));
        }
        Ok(Self::Head {
            head_len,
            vectors_len: h.n as u64 * VectorCodec::row_len_of(h.dim, h.vector_bits) as u64,
        })
    }
}

/// The fixed header every format starts with.
pub(super) struct Header {
    pub(super) version: u32,
    pub(super) space: Space,
    pub(super) dim: usize,
    pub(super) n: usize,
    max_neighbors: usize,
    entry: u32,
    layers: usize,
    /// Formats 3 to 5 (reserved before).
    pub(super) partitions: usize,
    /// Format 5: bits of the vectors' top-byte index (see `packed.rs`); `None` for
    /// plain f32.
    pub(super) vector_bits: Option<u32>,
}

impl Header {
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self> {
        if r.take(8, "magic")? != MAGIC {
            return Err(corrupt("bad magic bytes"));
        }
        let version = r.u32("version")?;
        if !matches!(version, V1 | V2 | V3 | V4 | V5) {
            return Err(corrupt(format!("unsupported format version {version}")));
        }
        let word = r.u32("space")?;
        let (space, vector_bits) = match version {
            V5 => (word & 0xff, Some(word >> 8)),
            _ => (word, None),
        };
        if vector_bits.is_some_and(|b| b > 8) {
            return Err(corrupt(format!("space word {word:#x}")));
        }
        let space = match space {
            0 => Space::L2,
            1 => Space::Cosine,
            2 => Space::Ip,
            other => return Err(corrupt(format!("unknown space code {other}"))),
        };
        let dim = r.u32("dimension")? as usize;
        let n = r.u32("row count")? as usize;
        let max_neighbors = r.u32("max_neighbors")? as usize;
        let entry = r.u32("entry point")?;
        let layers = r.u32("layer count")? as usize;
        let partitions = r.u32("partition count")? as usize;
        if n >= u32::MAX as usize {
            return Err(corrupt(format!("row count {n} too large")));
        }
        if n > 0 && dim == 0 {
            return Err(corrupt("dimension 0 with rows"));
        }
        // No embedding is longer (validation refuses it), and the bound keeps every size
        // derived from the header (n × dim codes, 4 × n × dim vector bytes) far from overflow.
        if dim > MAX_DIMENSION {
            return Err(corrupt(format!("dimension {dim} too large")));
        }
        if layers > HNSW_RS_MAX_LAYERS {
            return Err(corrupt(format!("{layers} upper layers")));
        }
        Ok(Self {
            version,
            space,
            dim,
            n,
            max_neighbors,
            entry,
            layers,
            partitions,
            vector_bits,
        })
    }

    /// Bytes between the header and the codes: the partitions (formats 3 to 5) and the
    /// vectors' top-byte table (format 5).
    pub(super) fn directory_len(&self) -> usize {
        let partitions = match self.version {
            V3 | V4 | V5 => Partitions::serialized_len_of(self.partitions, self.dim),
            _ => 0,
        };
        partitions + self.vector_bits.map_or(0, VectorCodec::table_len)
    }

    /// Reads the vectors' codec where it lies, right after the partitions (format 5), or
    /// plain f32.
    pub(super) fn codec(&self, r: &mut Reader<'_>) -> Result<VectorCodec> {
        match self.vector_bits {
            Some(bits) => VectorCodec::read_table(r, self.dim, bits),
            None => Ok(VectorCodec::plain(self.dim)),
        }
    }
}

/// Reads the partitions of formats 3 to 5 (after the header) and checks them for `h.n` rows: at
/// least one partition, at most one per row (or one for no rows).
pub(super) fn read_partitions(r: &mut Reader<'_>, h: &Header) -> Result<Partitions> {
    if h.partitions == 0 || h.partitions > h.n.max(1) {
        return Err(corrupt(format!(
            "{} partitions for {} rows",
            h.partitions, h.n
        )));
    }
    let values = h
        .partitions
        .checked_mul(h.dim)
        .ok_or_else(|| corrupt("partition centroids too large"))?;
    let partitions = Partitions {
        dim: h.dim,
        centroids: r.f32s(values, "partition centroids")?,
        bounds: r.u32s(h.partitions + 1, "partition bounds")?,
    };
    partitions
        .check(h.n as u32)
        .map_err(|e| corrupt(e.message()))?;
    Ok(partitions)
}

/// `bytes` without its trailing checksum, once the checksum matches.
fn checked_body(bytes: &[u8]) -> Result<&[u8]> {
    let at = bytes
        .len()
        .checked_sub(8)
        .ok_or_else(|| corrupt("no checksum"))?;
    let (body, sum) = bytes.split_at(at);
    let stored = u64::from_le_bytes(sum.try_into().map_err(|_| corrupt("checksum"))?);
    if checksum(body) != stored {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(body)
}

fn vectors_from(space: Space, dim: usize, data: Vec<f32>) -> Result<Vectors> {
    if data.iter().any(|x| !x.is_finite()) {
        return Err(corrupt("non-finite vector value"));
    }
    Ok(Vectors::new(space, dim, data))
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

const MAGIC: [u8; 8] = *b"CHRHNSW\0";
const V1: u32 = 1;
const V2: u32 = 2;
pub(super) const V3: u32 = 3;
pub(super) const V4: u32 = 4;
pub(super) const V5: u32 = 5;
const V1_HEADER_LEN: usize = 40;
pub(super) const V2_HEADER_LEN: usize = 48;
/// A head (codes and graph) larger than this is corrupt: 4 GiB rows of codes.
const MAX_HEAD_LEN: u64 = 1 << 40;

fn space_code(space: Space) -> u32 {
    match space {
        Space::L2 => 0,
        Space::Cosine => 1,
        Space::Ip => 2,
    }
}

/// A 64-bit checksum over little-endian words: each step `h ← rotl((h ⊕ w)·K, 29)` is a
/// bijection of `h` for any word, so any change confined to one word is always detected.
fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0xC0FF_EE00_D15E_A5E5 ^ bytes.len() as u64;
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    for w in words {
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h = ((h ^ w).wrapping_mul(K)).rotate_left(29);
    }
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    h = ((h ^ u64::from_le_bytes(last)).wrapping_mul(K)).rotate_left(29);
    h ^ (h >> 31)
}

/// The `k` nearest of `rows` by exact distance in `space` (see [`HnswIndex::rerank`]).
pub(super) fn rerank_exact(
    space: Space,
    dim: usize,
    query: &[f32],
    k: usize,
    rows: &[u32],
    vectors: &[f32],
) -> Vec<(u32, f32)> {
    if k == 0 || query.len() != dim || vectors.len() != rows.len() * dim || dim == 0 {
        return Vec::new();
    }
    let q = Query::new(space, query);
    let mut top = TopK::new(k);
    for (&row, v) in rows.iter().zip(vectors.chunks_exact(dim)) {
        let inv = match space {
            Space::Cosine => inv_norm(v),
            Space::L2 | Space::Ip => 1.0,
        };
        top.offer(Scored {
            dist: sort_key(q.distance_to(v, inv)),
            row,
        });
    }
    top.into_sorted()
}

/// Rows of a graph at which a beam of `ef_search` is walked as given; larger graphs get
/// a wider one (see [`beam_for`]).
const BEAM_REFERENCE_ROWS: f64 = 50_000.0;

/// The beam a segment of `rows` rows is walked with for a collection's `ef_search`.
///
/// At a fixed beam, recall falls as a graph grows: on the scale benchmark's data (M 16,
/// ef_construction 100, recall@10) a beam of 100 finds 0.986 at 20k rows, 0.973 at 100k
/// and 0.940 over two segments of 500k; 150 finds 0.985 at 100k, and 300 finds 0.983
/// over 500k. A collection's segments grow to `max_segment_rows`, so the beam grows
/// with them — `ef · sqrt(rows / 50k)` above 50k rows (×1.4 at 100k, ×3.2 at 500k) — and
/// `ef_search` keeps meaning the recall it buys on a small collection instead of less
/// and less as the collection grows. The walk's cost grows more slowly than the beam
/// (most of it is reaching the neighbourhood): at 1M rows, p50 3.8 ms at a beam of 100
/// and 4.5 ms at 300.
pub fn beam_for(ef: usize, rows: usize) -> usize {
    let scale = (rows as f64 / BEAM_REFERENCE_ROWS).sqrt().max(1.0);
    ((ef as f64 * scale).ceil() as usize).max(ef)
}

/// How many of a beam's rows are re-scored exactly: `4·k` (at least 32), at most the
/// beam. The coded distance orders rows almost as the exact one does (its error is
/// about 1% of a distance), so the true `k` nearest of the beam are among its `4·k`
/// nearest by code; re-scoring the whole beam would read `ef` vectors per segment
/// instead (recall@10 on the dev set is the same either way).
pub(crate) fn rerank_width(k: usize, ef: usize) -> usize {
    (4 * k).max(32).min(ef.max(k))
}

/// Of one query's candidates in each segment (row, coded distance), the `width` nearest
/// by coded distance across all segments, as rows per segment (ascending). Coded
/// distances estimate the same exact distance in every segment, so the `k` nearest of
/// the collection are among its `width` nearest by code as they are among a segment's
/// (see [`rerank_width`]): re-ranking these reads `width` vectors a query, not `width`
/// per segment. Ties at the cut go by segment, then row.
pub(crate) fn nearest_across(per_segment: Vec<Vec<(u32, f32)>>, width: usize) -> Vec<Vec<u32>> {
    let total: usize = per_segment.iter().map(Vec::len).sum();
    if total <= width {
        return per_segment
            .into_iter()
            .map(|rows| rows.into_iter().map(|(row, _)| row).collect())
            .collect();
    }
    let mut all: Vec<(f32, usize, u32)> = Vec::with_capacity(total);
    for (s, rows) in per_segment.iter().enumerate() {
        all.extend(rows.iter().map(|&(row, dist)| (sort_key(dist), s, row)));
    }
    let by_distance = |a: &(f32, usize, u32), b: &(f32, usize, u32)| {
        a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
    };
    if width > 0 {
        all.select_nth_unstable_by(width - 1, by_distance);
    }
    all.truncate(width);
    let mut kept = vec![Vec::new(); per_segment.len()];
    for (_, s, row) in all {
        kept[s].push(row);
    }
    for rows in &mut kept {
        rows.sort_unstable();
    }
    kept
}

/// Whether scanning the `allowed` rows exactly costs less than a filtered walk, which
/// evaluates roughly `WALK_COST · ef / fraction` distances to collect `ef` allowed rows.
fn scan_is_cheaper(allowed: usize, n: usize, ef: usize) -> bool {
    const WALK_COST: f64 = 16.0;
    let fraction = allowed as f64 / n as f64;
    (allowed as f64) < WALK_COST * ef as f64 / fraction
}

/// The inner-product construction distance: `shift − a·b`, where `shift` bounds every
/// `a·b` between stored vectors (the largest squared norm), so it is non-negative as
/// hnsw_rs requires and orders like Chroma's `1 − a·b`. Never NaN.
#[derive(Debug, Clone, Copy)]
struct ShiftedDot {
    shift: f32,
}

impl ShiftedDot {
    /// Shifted by the largest squared norm of `vectors`' rows.
    fn over(vectors: &[f32], dim: usize) -> Self {
        let shift = vectors
            .chunks_exact(dim)
            .map(|v| dot(v, v))
            .fold(0f32, f32::max);
        Self { shift }
    }
}

impl Distance<f32> for ShiftedDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let d = self.shift - dot(a, b);
        if d.is_nan() {
            f32::INFINITY
        } else {
            d.max(0.0)
        }
    }
}

/// Rows as hnsw_rs is given them: for cosine the unit vectors (on unit vectors squared
/// L2 = 2 − 2·cos, the same order as cosine distance), otherwise the vectors as stored.
/// Unit vectors are made a chunk at a time (hnsw_rs copies what it is given), so a build
/// never holds a second full copy of its vectors.
#[derive(Debug, Clone, Copy)]
pub(super) struct GraphInput<'a> {
    vectors: &'a [f32],
    dim: usize,
    unit: bool,
}

impl<'a> GraphInput<'a> {
    /// `vectors.len()` is a multiple of `dim > 0` (callers check).
    pub(super) fn new(space: Space, vectors: &'a [f32], dim: usize) -> Self {
        Self {
            vectors,
            dim,
            unit: space == Space::Cosine,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.vectors.len() / self.dim
    }

    pub(super) fn dim(&self) -> usize {
        self.dim
    }

    /// Row `row` into `out` (replacing its contents): for reading many single rows
    /// without an allocation each.
    pub(super) fn row_into(&self, row: usize, out: &mut Vec<f32>) {
        let values = &self.vectors[row * self.dim..(row + 1) * self.dim];
        out.clear();
        if self.unit {
            let inv = inv_norm(values);
            out.extend(values.iter().map(|x| x * inv));
        } else {
            out.extend_from_slice(values);
        }
    }

    /// Rows `rows`, row-major.
    pub(super) fn rows(&self, rows: std::ops::Range<usize>) -> std::borrow::Cow<'a, [f32]> {
        let values = &self.vectors[rows.start * self.dim..rows.end * self.dim];
        if self.unit {
            values
                .chunks_exact(self.dim)
                .flat_map(normalized)
                .collect::<Vec<f32>>()
                .into()
        } else {
            values.into()
        }
    }
}

/// Inserts every row into hnsw_rs (row 0 alone first: hnsw_rs links nothing to points
/// inserted concurrently into an empty graph), in parallel chunks of [`INSERT_CHUNK`]
/// rows with a check of `cancelled` between them, then flattens the graph.
fn build_graph<D>(
    input: GraphInput<'_>,
    m: usize,
    ef_construction: usize,
    dist: D,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<(Graph, BuildTimings)>
where
    D: Distance<f32> + Send + Sync,
{
    let n = input.len();
    let started = Instant::now();
    let hnsw: Hnsw<'_, f32, D> = Hnsw::new(m, n, HNSW_RS_MAX_LAYERS, ef_construction, dist);
    hnsw.insert_slice((&input.rows(0..1), 0));
    insert_rows(&hnsw, input, 1, cancelled)?;
    let insert = started.elapsed();
    let started = Instant::now();
    let graph = flatten(&hnsw, n);
    let flatten = started.elapsed();
    let started = Instant::now();
    drop(hnsw);
    let timings = BuildTimings {
        insert,
        flatten,
        drop: started.elapsed(),
    };
    Ok((graph?, timings))
}

/// Inserts rows `first..` of `input` into hnsw_rs (data id = row), in parallel chunks
/// of [`INSERT_CHUNK`] rows with a check of `cancelled` before each.
pub(super) fn insert_rows<D>(
    hnsw: &Hnsw<'_, f32, D>,
    input: GraphInput<'_>,
    first: usize,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<()>
where
    D: Distance<f32> + Send + Sync,
{
    let n = input.len();
    let dim = input.dim;
    for start in (first..n).step_by(INSERT_CHUNK) {
        if cancelled() {
            return Err(Error::cancelled("index build stopped"));
        }
        let end = (start + INSERT_CHUNK).min(n);
        let values = input.rows(start..end);
        let chunk: Vec<(&[f32], usize)> = values.chunks_exact(dim).zip(start..end).collect();
        hnsw.parallel_insert_slice(&chunk);
    }
    Ok(())
}

/// Runs `work` on a rayon pool of `threads` threads (0 = rayon's global pool).
pub(super) fn on_build_threads<R: Send>(
    threads: usize,
    work: impl FnOnce() -> R + Send,
) -> Result<R> {
    if threads == 0 {
        return Ok(work());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("index-build-{i}"))
        .build()
        .map_err(|e| Error::internal_from("cannot start the index build's threads", e))?;
    Ok(pool.install(work))
}

/// Checks what a build is given; returns the number of rows.
pub(super) fn check_input(vectors: &[f32], dim: usize, max_neighbors: usize) -> Result<usize> {
    let m = max_neighbors;
    if m == 0 || m > MAX_HNSW_NEIGHBORS {
        return Err(Error::invalid(format!(
            "max_neighbors must be between 1 and {MAX_HNSW_NEIGHBORS}, got {m}"
        )));
    }
    if dim == 0 {
        if !vectors.is_empty() {
            return Err(Error::invalid("dimension 0 with non-empty vectors"));
        }
    } else if !vectors.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!(
            "vectors length {} is not a multiple of dimension {dim}",
            vectors.len()
        )));
    }
    if let Some(pos) = vectors.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(format!(
            "embedding value {} at row {} is not finite",
            vectors[pos],
            pos / dim.max(1)
        )));
    }
    let n = vectors.len().checked_div(dim).unwrap_or(0);
    if n >= u32::MAX as usize {
        return Err(Error::invalid(format!("too many rows for one index: {n}")));
    }
    Ok(n)
}

/// Where a build's time went.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BuildTimings {
    /// Inserting every row into hnsw_rs.
    pub(crate) insert: std::time::Duration,
    /// Reading the graph out of hnsw_rs.
    pub(crate) flatten: std::time::Duration,
    /// Dropping hnsw_rs's structure.
    pub(crate) drop: std::time::Duration,
}

/// Reads the graph out of hnsw_rs: per row its level and its neighbour rows per layer
/// (hnsw_rs's data id is the row). Self-loops, duplicates and links to nodes absent
/// from a layer are dropped.
fn flatten<D>(hnsw: &Hnsw<'_, f32, D>, n: usize) -> Result<Graph>
where
    D: Distance<f32> + Send + Sync,
{
    let indexation = hnsw.get_point_indexation();
    let top = indexation.get_max_level_observed() as usize;
    let mut levels: Vec<Option<u8>> = vec![None; n];
    // Per row, per layer 0..=level: neighbour rows, nearest first.
    let mut links: Vec<Vec<Vec<u32>>> = vec![Vec::new(); n];
    let mut entry = None;
    for layer in 0..=top {
        for point in indexation.get_layer_iterator(layer) {
            let row = point.get_origin_id();
            let level = point.get_point_id().0;
            if row >= n || levels[row].is_some() {
                return Err(Error::internal(format!(
                    "hnsw_rs returned row {row} twice or out of range"
                )));
            }
            if layer == top && entry.is_none() {
                entry = Some(row as u32);
            }
            levels[row] = Some(level);
            links[row] = point
                .get_neighborhood_id()
                .into_iter()
                .take(level as usize + 1)
                .map(|nbs| {
                    nbs.into_iter()
                        .map(|nb| nb.get_origin_id() as u32)
                        .collect()
                })
                .collect();
        }
    }
    let levels: Vec<u8> = levels
        .into_iter()
        .enumerate()
        .map(|(row, l)| l.ok_or_else(|| Error::internal(format!("hnsw_rs lost row {row}"))))
        .collect::<Result<_>>()?;
    let entry = entry.ok_or_else(|| Error::internal("hnsw_rs graph has no entry point"))?;

    let mut seen = Vec::new();
    let mut clean = |row: usize, list: Option<&Vec<u32>>, keep: &dyn Fn(u32) -> bool| -> Vec<u32> {
        seen.clear();
        for &nb in list.into_iter().flatten() {
            if nb as usize != row && (nb as usize) < n && keep(nb) && !seen.contains(&nb) {
                seen.push(nb);
            }
        }
        seen.clone()
    };

    let mut offsets0 = Vec::with_capacity(n + 1);
    let mut neighbors0 = Vec::new();
    offsets0.push(0u32);
    for (row, row_links) in links.iter().enumerate() {
        // In row order: what format 4 packs (the beam search takes them in any order).
        let mut list = clean(row, row_links.first(), &|_| true);
        list.sort_unstable();
        neighbors0.extend(list);
        offsets0
            .push(u32::try_from(neighbors0.len()).map_err(|_| Error::internal("too many edges"))?);
    }

    let mut upper = Vec::with_capacity(top);
    for layer in 1..=top {
        let rows: Vec<u32> = (0..n as u32)
            .filter(|&r| levels[r as usize] as usize >= layer)
            .collect();
        let local = |row: u32| rows.binary_search(&row).ok();
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        let mut neighbors = Vec::new();
        offsets.push(0u32);
        for &row in &rows {
            let kept = clean(row as usize, links[row as usize].get(layer), &|nb| {
                local(nb).is_some()
            });
            neighbors.extend(
                kept.into_iter()
                    .filter_map(|nb| local(nb).map(|i| i as u32)),
            );
            offsets.push(neighbors.len() as u32);
        }
        upper.push(UpperLayer {
            rows,
            offsets,
            neighbors,
        });
    }
    Ok(Graph {
        entry,
        offsets0,
        neighbors0,
        upper,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::index::distance;

    #[test]
    fn the_rerank_cut_keeps_the_nearest_by_code_across_segments() {
        // Fewer than the width: everything, rows ascending per segment.
        let few = vec![vec![(3, 0.5), (9, 0.1)], vec![], vec![(1, 0.9)]];
        assert_eq!(nearest_across(few, 3), vec![vec![3, 9], vec![], vec![1]]);
        // More: the width nearest of all segments together, whichever segment they are in.
        let many = vec![
            vec![(0, 0.30), (1, 0.10), (2, 0.70)],
            vec![(5, 0.20), (6, 0.90)],
            vec![(7, 0.05), (8, 0.40), (4, 0.25)],
        ];
        assert_eq!(
            nearest_across(many.clone(), 4),
            vec![vec![1], vec![5], vec![4, 7]]
        );
        assert_eq!(nearest_across(many, 0), vec![Vec::<u32>::new(); 3]);
        // Ties at the cut go to the earlier segment, then the lower row; NaN sorts last.
        let ties = vec![vec![(4, 0.5), (2, 0.5)], vec![(1, 0.5), (0, f32::NAN)]];
        assert_eq!(nearest_across(ties.clone(), 2), vec![vec![2, 4], vec![]]);
        assert_eq!(nearest_across(ties, 3), vec![vec![2, 4], vec![1]]);
    }

    const SPACES: [Space; 3] = [Space::L2, Space::Cosine, Space::Ip];

    pub(crate) fn random_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    pub(crate) fn params(space: Space) -> HnswParams {
        HnswParams {
            space,
            max_neighbors: 16,
            ef_construction: 100,
        }
    }

    fn random_filter(n: usize, fraction: f64, seed: u64) -> FixedBitSet {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut allow = FixedBitSet::with_capacity(n);
        for row in 0..n {
            if rng.gen_bool(fraction) {
                allow.insert(row);
            }
        }
        allow
    }

    fn recall(found: &[(u32, f32)], truth: &[(u32, f32)]) -> f64 {
        let hits = found
            .iter()
            .filter(|(r, _)| truth.iter().any(|(t, _)| t == r))
            .count();
        hits as f64 / truth.len().max(1) as f64
    }

    #[test]
    fn the_beam_grows_with_the_square_root_of_a_large_segment() {
        assert_eq!(beam_for(100, 0), 100);
        assert_eq!(beam_for(100, 20_000), 100);
        assert_eq!(beam_for(100, 50_000), 100);
        assert_eq!(beam_for(100, 100_000), 142);
        assert_eq!(beam_for(100, 500_000), 317);
        assert_eq!(beam_for(10, 500_000), 32);
        assert_eq!(
            beam_for(1, usize::MAX),
            (usize::MAX as f64 / 50_000.0).sqrt().ceil() as usize
        );
        for rows in [1usize, 60_000, 200_000, 499_999] {
            assert!(beam_for(100, rows) <= beam_for(100, rows + 1));
        }
    }

    #[test]
    fn search_agrees_with_exact_in_every_space() {
        let (n, dim, k) = (600, 24, 10);
        let data = random_vectors(n, dim, 1);
        let queries = random_vectors(50, dim, 2);
        for space in SPACES {
            let index = HnswIndex::build(&data, dim, &params(space)).unwrap();
            assert_eq!((index.len(), index.dim(), index.space()), (n, dim, space));
            let mut total = 0.0;
            for q in queries.chunks_exact(dim) {
                let found = index.search(q, k, 64, None);
                let truth = index.exact(q, k, None);
                assert_eq!(found.len(), k);
                assert!(found
                    .windows(2)
                    .all(|w| (w[0].1, w[0].0) <= (w[1].1, w[1].0)));
                for &(row, d) in &found {
                    assert_eq!(
                        d,
                        distance(space, q, index.vector(row).unwrap()),
                        "{space:?} row {row}"
                    );
                }
                total += recall(&found, &truth);
            }
            let mean = total / 50.0;
            assert!(mean >= 0.95, "{space:?}: recall {mean}");
        }
    }

    #[test]
    fn vectors_are_returned_as_given() {
        let data = vec![3.0, 4.0, 0.0, 0.5, -2.0, 1.0];
        let index = HnswIndex::build(&data, 2, &params(Space::Cosine)).unwrap();
        assert_eq!(index.vector(0), Some(&[3.0, 4.0][..]));
        assert_eq!(index.vector(2), Some(&[-2.0, 1.0][..]));
        let found = index.search(&[0.0, 0.5], 3, 10, None);
        assert_eq!(found[0], (1, 0.0));
        assert_eq!(found[1], (0, 0.199_999_99));
    }

    #[test]
    fn tiny_inputs() {
        for space in SPACES {
            let empty = HnswIndex::build(&[], 3, &params(space)).unwrap();
            assert!(empty.is_empty());
            assert!(empty.search(&[1.0, 2.0, 3.0], 5, 10, None).is_empty());
            assert!(empty.exact(&[1.0, 2.0, 3.0], 5, None).is_empty());
            let back = HnswIndex::from_bytes(&empty.to_bytes()).unwrap();
            assert_eq!((back.len(), back.dim()), (0, 3));
            assert!(back.search(&[1.0, 2.0, 3.0], 5, 10, None).is_empty());
            assert!(HnswIndex::build(&[], 0, &params(space)).unwrap().is_empty());

            let one = HnswIndex::build(&[1.0, 2.0, 3.0], 3, &params(space)).unwrap();
            let found = one.search(&[1.0, 2.0, 3.0], 5, 10, None);
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].0, 0);
            assert!(one.search(&[1.0, 2.0, 3.0], 0, 10, None).is_empty());
            assert!(
                one.search(&[1.0, 2.0], 1, 10, None).is_empty(),
                "wrong dimension"
            );

            let few = random_vectors(7, 3, 3);
            let index = HnswIndex::build(&few, 3, &params(space)).unwrap();
            let q = [0.1, 0.2, 0.3];
            assert_eq!(index.search(&q, 10, 1, None), index.exact(&q, 10, None));
            assert_eq!(index.search(&q, 10, 1, None).len(), 7);
        }
    }

    #[test]
    fn duplicates_tie_by_row_id() {
        let v = [0.5f32, -0.25, 1.0, 2.0];
        let mut data = Vec::new();
        for _ in 0..40 {
            data.extend_from_slice(&v);
        }
        data.extend(random_vectors(200, 4, 4));
        for space in SPACES {
            let index = HnswIndex::build(&data, 4, &params(space)).unwrap();
            let found = index.search(&v, 5, 100, None);
            let rows: Vec<u32> = found.iter().map(|r| r.0).collect();
            assert_eq!(rows, vec![0, 1, 2, 3, 4], "{space:?}");
            assert!(found.iter().all(|r| r.1 == found[0].1));
            assert_eq!(found, index.exact(&v, 5, None));
        }
    }

    #[test]
    fn filters_never_return_disallowed_rows() {
        let (n, dim) = (800, 16);
        let data = random_vectors(n, dim, 5);
        let queries = random_vectors(20, dim, 6);
        for space in SPACES {
            let index = HnswIndex::build(&data, dim, &params(space)).unwrap();
            for (i, fraction) in [0.005, 0.05, 0.3, 0.6, 0.95].into_iter().enumerate() {
                let allow = random_filter(n, fraction, 7 + i as u64);
                let allowed = allow.count_ones(..);
                let mut total = 0.0;
                for q in queries.chunks_exact(dim) {
                    let found = index.search(q, 10, 50, Some(&allow));
                    assert!(found.iter().all(|(r, _)| allow.contains(*r as usize)));
                    assert!(found.len() <= 10.min(allowed));
                    let truth = index.exact(q, 10, Some(&allow));
                    assert!(truth.iter().all(|(r, _)| allow.contains(*r as usize)));
                    assert_eq!(truth.len(), 10.min(allowed));
                    total += recall(&found, &truth);
                }
                let mean = total / 20.0;
                assert!(mean >= 0.9, "{space:?} fraction {fraction}: recall {mean}");
            }
            let none = FixedBitSet::with_capacity(n);
            assert!(index
                .search(&queries[..dim], 10, 50, Some(&none))
                .is_empty());
            // A short bitset leaves the rows past its end disallowed.
            let mut short = FixedBitSet::with_capacity(3);
            short.insert(2);
            assert_eq!(index.search(&queries[..dim], 10, 50, Some(&short)).len(), 1);
        }
    }

    #[test]
    fn the_walk_alone_honours_filters() {
        // Drive Graph::search directly so the exact-scan shortcut cannot hide a bug.
        let (n, dim) = (2000, 8);
        let data = random_vectors(n, dim, 8);
        for space in SPACES {
            let index = HnswIndex::build(&data, dim, &params(space)).unwrap();
            for fraction in [0.01, 0.2, 0.6] {
                let allow = random_filter(n, fraction, 9);
                let mut total = 0.0;
                for q in random_vectors(20, dim, 10).chunks_exact(dim) {
                    let query = Query::new(space, q);
                    let rows = index.walk(&query, 10, 40, Some(&allow));
                    assert!(rows.iter().all(|r| allow.contains(*r as usize)));
                    let vectors: Vec<f32> = rows
                        .iter()
                        .flat_map(|&r| index.vector(r).unwrap().to_vec())
                        .collect();
                    let found = index.rerank(q, 10, &rows, &vectors);
                    assert_eq!(found.len(), 10.min(allow.count_ones(..)));
                    total += recall(&found, &index.exact(q, 10, Some(&allow)));
                }
                let mean = total / 20.0;
                assert!(mean >= 0.9, "{space:?} fraction {fraction}: recall {mean}");
            }
        }
    }

    #[test]
    fn inner_product_handles_unnormalized_and_huge_vectors() {
        let mut data = random_vectors(300, 8, 11);
        for (i, x) in data.iter_mut().enumerate() {
            *x *= (i % 13) as f32 * 3.0;
        }
        data[..8].copy_from_slice(&[3e38, -3e38, 3e38, 1.0, 0.0, 0.0, -3e38, 2.0]);
        let index = HnswIndex::build(&data, 8, &params(Space::Ip)).unwrap();
        let q = &data[80..88];
        let found = index.search(q, 5, 50, None);
        assert_eq!(found.len(), 5);
        let l2 = HnswIndex::build(&data, 8, &params(Space::L2)).unwrap();
        assert_eq!(l2.search(q, 5, 50, None).len(), 5);
    }

    #[test]
    fn build_rejects_invalid_input() {
        let p = params(Space::L2);
        assert!(HnswIndex::build(&[1.0, 2.0, 3.0], 2, &p).is_err());
        assert!(HnswIndex::build(&[1.0, 2.0], 0, &p).is_err());
        assert!(HnswIndex::build(&[1.0, f32::NAN], 2, &p).is_err());
        assert!(HnswIndex::build(&[1.0, f32::INFINITY], 2, &p).is_err());
        let m0 = HnswParams {
            max_neighbors: 0,
            ..p
        };
        assert!(HnswIndex::build(&[1.0, 2.0], 2, &m0).is_err());
        let m257 = HnswParams {
            max_neighbors: 257,
            ..p
        };
        assert!(HnswIndex::build(&[1.0, 2.0], 2, &m257).is_err());
        let m1 = HnswParams {
            max_neighbors: 1,
            ef_construction: 0,
            ..p
        };
        let data = random_vectors(100, 4, 12);
        let index = HnswIndex::build(&data, 4, &m1).unwrap();
        assert_eq!(index.search(&data[..4], 3, 20, None).len(), 3);
    }

    #[test]
    fn concurrent_searches_agree() {
        let dim = 16;
        let data = random_vectors(1000, dim, 13);
        let index = HnswIndex::build(&data, dim, &params(Space::Cosine)).unwrap();
        let queries = random_vectors(40, dim, 14);
        let serial: Vec<_> = queries
            .chunks_exact(dim)
            .map(|q| index.search(q, 10, 40, None))
            .collect();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for (q, want) in queries.chunks_exact(dim).zip(&serial) {
                        assert_eq!(&index.search(q, 10, 40, None), want);
                    }
                });
            }
        });
    }

    #[test]
    fn builds_run_on_their_own_threads_and_stop_when_asked() {
        let dim = 4;
        let n = INSERT_CHUNK * 2 + 10;
        let data = random_vectors(n, dim, 31);
        let one = HnswIndex::build_with(
            &data,
            dim,
            &params(Space::L2),
            &BuildOptions {
                threads: 1,
                ..BuildOptions::default()
            },
        )
        .unwrap();
        assert_eq!(one.len(), n);
        let q = &data[..dim];
        assert_eq!(one.search(q, 1, 10, None)[0].0, 0);
        // Asked to stop after the first chunk: no index, a Cancelled error.
        let checks = std::sync::atomic::AtomicUsize::new(0);
        let cancelled = || checks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 1;
        let err = HnswIndex::build_with(
            &data,
            dim,
            &params(Space::Cosine),
            &BuildOptions {
                threads: 2,
                cancelled: &cancelled,
            },
        )
        .unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Cancelled);
        assert_eq!(checks.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn round_trip_preserves_search_results() {
        let dim = 12;
        let data = random_vectors(700, dim, 15);
        let queries = random_vectors(30, dim, 16);
        for space in SPACES {
            let index = HnswIndex::build(&data, dim, &params(space)).unwrap();
            let bytes = index.to_bytes();
            let back = HnswIndex::from_bytes(&bytes).unwrap();
            assert_eq!(back.to_bytes(), bytes);
            assert_eq!(back.graph, index.graph);
            assert_eq!((back.space(), back.dim(), back.len()), (space, dim, 700));
            assert!(index.memory_bytes() >= 700 * dim * 4);
            let allow = random_filter(700, 0.5, 17);
            for q in queries.chunks_exact(dim) {
                assert_eq!(back.search(q, 10, 30, None), index.search(q, 10, 30, None));
                assert_eq!(
                    back.search(q, 10, 30, Some(&allow)),
                    index.search(q, 10, 30, Some(&allow))
                );
                assert_eq!(back.exact(q, 10, None), index.exact(q, 10, None));
            }
            // Format 1 is still read, to the same index.
            let v1 = HnswIndex::from_bytes(&index.to_bytes_v1()).unwrap();
            assert_eq!(v1.to_bytes(), bytes);
        }
    }

    /// An index loaded from its head alone, searched through candidates and rerank
    /// with vectors read by range, answers exactly as the resident index does.
    #[test]
    fn head_with_ranged_vectors_answers_like_the_resident_index() {
        let dim = 12;
        let n = 900;
        let data = random_vectors(n, dim, 21);
        let queries = random_vectors(40, dim, 22);
        for space in SPACES {
            let index = HnswIndex::build(&data, dim, &params(space)).unwrap();
            let bytes = index.to_bytes();
            let IndexLayout::Head {
                head_len,
                vectors_len,
            } = IndexLayout::parse(&bytes[..IndexLayout::PREFIX]).unwrap()
            else {
                panic!("a head expected");
            };
            assert_eq!(head_len + vectors_len, bytes.len() as u64);
            let head = HnswIndex::from_head(&bytes[..head_len as usize]).unwrap();
            assert!(!head.has_vectors());
            assert_eq!(head.graph, index.graph);
            assert!(index.memory_bytes() - head.memory_bytes() >= n * dim * 4);
            let read = |rows: &[u32]| -> Vec<f32> {
                rows.iter()
                    .flat_map(|&row| {
                        let r = head.vector_range(row);
                        let at = head_len as usize;
                        let mut v = Vec::new();
                        head.codec()
                            .decode(&bytes[at + r.start as usize..at + r.end as usize], &mut v)
                            .unwrap();
                        v
                    })
                    .collect()
            };
            let few = random_filter(n, 0.02, 23);
            let half = random_filter(n, 0.5, 24);
            for q in queries.chunks_exact(dim) {
                let rows = head.candidates(q, 10, 40, None, Candidates::Walk);
                assert_eq!(
                    head.rerank(q, 10, &rows, &read(&rows)),
                    index.search(q, 10, 40, None)
                );
                let rows = head.candidates(q, 10, 40, Some(&half), Candidates::Walk);
                assert!(rows.iter().all(|&r| half.contains(r as usize)));
                assert_eq!(
                    head.rerank(q, 10, &rows, &read(&rows)),
                    index.search(q, 10, 40, Some(&half))
                );
                // Few allowed rows: every one is a candidate, so this is exact.
                let rows = head.candidates(q, 10, 40, Some(&few), Candidates::Walk);
                assert_eq!(rows.len(), few.count_ones(..));
                assert_eq!(
                    head.rerank(q, 10, &rows, &read(&rows)),
                    index.exact(q, 10, Some(&few))
                );
                // A coded scan of every row, re-scored: the exact answer here.
                let rows = head.candidates(q, 10, 100, None, Candidates::Scan);
                assert_eq!(rows.len(), 100);
                assert_eq!(
                    head.rerank(q, 10, &rows, &read(&rows)),
                    index.exact(q, 10, None)
                );
            }
            assert!(head.rerank(&queries[..dim], 10, &[0], &[]).is_empty());
            assert!(head
                .candidates(&queries[..dim - 1], 10, 40, None, Candidates::Walk)
                .is_empty());
        }
    }

    #[test]
    fn forged_head_is_an_error() {
        let bytes = small_index_bytes_v2();
        let IndexLayout::Head { head_len, .. } = IndexLayout::parse(&bytes).unwrap() else {
            panic!("format 2 expected");
        };
        let head = &bytes[..head_len as usize];
        assert!(HnswIndex::from_head(head).is_ok());
        for len in 0..head.len() {
            assert!(HnswIndex::from_head(&head[..len]).is_err(), "{len}");
        }
        // A head length that disagrees with the content, with a valid checksum.
        let mut longer = head[..head.len() - 8].to_vec();
        longer.extend_from_slice(&[0; 8]);
        let new_len = (longer.len() + 8) as u64;
        longer[40..48].copy_from_slice(&new_len.to_le_bytes());
        let sum = checksum(&longer);
        longer.extend_from_slice(&sum.to_le_bytes());
        assert!(HnswIndex::from_head(&longer).is_err());
        // A negative code scale.
        let forged = forge(head, V2_HEADER_LEN, (-1.0f32).to_bits());
        assert!(HnswIndex::from_head(&forged).is_err());
        // The whole object with a non-finite vector.
        let mut whole = bytes.clone();
        let at = head_len as usize;
        whole[at..at + 4].copy_from_slice(&f32::NAN.to_bits().to_le_bytes());
        assert!(HnswIndex::from_bytes(&whole).is_err());
        assert!(IndexLayout::parse(&forge(head, 40, 8)).is_err());
        // Sizes from a forged dimension and row count must not overflow (found by fuzzing).
        let huge = forge(&forge(head, 16, u32::MAX - 4), 20, u32::MAX - 2);
        assert!(IndexLayout::parse(&huge).is_err());
        assert!(HnswIndex::from_head(&huge).is_err());
        let wide = forge(head, 16, MAX_DIMENSION as u32 + 1);
        assert!(IndexLayout::parse(&wide).is_err());
    }

    /// Format 5's header names at most 8 bits per top-byte index; a vectors section whose
    /// table turns a value into infinity or NaN is corrupt.
    #[test]
    fn forged_vector_table_is_an_error() {
        let data = random_vectors(300, 3, 18);
        let bytes = HnswIndex::build(&data, 3, &params(Space::Cosine))
            .unwrap()
            .to_bytes();
        let IndexLayout::Head { head_len, .. } = IndexLayout::parse(&bytes).unwrap() else {
            panic!("a head expected");
        };
        let head = &bytes[..head_len as usize];
        let h = Header::read(&mut Reader::new(head)).unwrap();
        let bits = h.vector_bits.unwrap();
        assert!(bits > 0);
        for word in [9 << 8 | 1, 0xff << 8 | 1, 1 << 16 | 1] {
            assert!(
                IndexLayout::parse(&forge(head, 12, word)).is_err(),
                "{word:#x}"
            );
        }
        // Every table entry made 0x7f: exponent 254 or 255 (infinity, NaN).
        let table_at = V2_HEADER_LEN + h.directory_len() - VectorCodec::table_len(bits);
        let mut forged = head.to_vec();
        forged[table_at..table_at + VectorCodec::table_len(bits)].fill(0x7f);
        let body = forged.len() - 8;
        let sum = checksum(&forged[..body]);
        forged[body..].copy_from_slice(&sum.to_le_bytes());
        let read = HnswIndex::from_head(&forged).unwrap();
        let mut whole = forged;
        whole.extend_from_slice(&bytes[head_len as usize..]);
        assert!(HnswIndex::from_bytes(&whole).is_err());
        // (Values whose exponent's low bit is 0 stay finite: 2¹²⁷ and up.)
        let mut out = Vec::new();
        assert!(read
            .codec()
            .decode(&bytes[head_len as usize..], &mut out)
            .is_err());
    }

    /// Any byte of a format 4 head's packed graph changed (with the checksum made to
    /// match) reads as an error or as a graph that passes every check: never a panic,
    /// never an out-of-range neighbour.
    #[test]
    fn forged_packed_graph_is_an_error_or_a_valid_graph() {
        let data = random_vectors(300, 3, 18);
        let (index, _) = HnswIndex::build(&data, 3, &params(Space::L2))
            .unwrap()
            .partitioned(30, &BuildOptions::default())
            .unwrap();
        let bytes = index.to_bytes();
        let IndexLayout::Head { head_len, .. } = IndexLayout::parse(&bytes).unwrap() else {
            panic!("a head expected");
        };
        let head = &bytes[..head_len as usize];
        assert!(HnswIndex::from_head(head).is_ok());
        for len in 0..head.len() {
            assert!(HnswIndex::from_head(&head[..len]).is_err(), "{len}");
        }
        let graph_at = V2_HEADER_LEN
            + Header::read(&mut Reader::new(head))
                .unwrap()
                .directory_len()
            + Codes::serialized_len(Space::L2, 300, 3);
        let mut errors = 0;
        for at in graph_at..head.len() - 8 {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut forged = head.to_vec();
                forged[at] ^= flip;
                let body = forged.len() - 8;
                let sum = checksum(&forged[..body]);
                forged[body..].copy_from_slice(&sum.to_le_bytes());
                match HnswIndex::from_head(&forged) {
                    Err(_) => errors += 1,
                    Ok(read) => {
                        let n = read.len() as u32;
                        assert!(read.graph.neighbors0.iter().all(|&nb| nb < n));
                        assert_eq!(read.graph.offsets0.len(), read.len() + 1);
                    }
                }
            }
        }
        assert!(errors > 0);
    }

    fn small_index_bytes() -> Vec<u8> {
        // Enough rows that hnsw_rs builds at least one upper layer.
        let data = random_vectors(300, 3, 18);
        let index = HnswIndex::build(&data, 3, &params(Space::L2)).unwrap();
        assert!(!index.graph.upper.is_empty());
        index.to_bytes_v1()
    }

    fn small_index_bytes_v2() -> Vec<u8> {
        let data = random_vectors(300, 3, 18);
        HnswIndex::build(&data, 3, &params(Space::L2))
            .unwrap()
            .to_bytes_v2()
    }

    /// A partitioned index is the same index over renumbered rows: every search finds
    /// the same rows (under their new numbers) at the same distances. It is written as
    /// format 5 with its partitions, which come back whole or from the head; format 4 and
    /// 3 objects still load to the same index, format 2 ones without partitions.
    #[test]
    fn partitioned_index_answers_like_the_original() {
        let dim = 12;
        let n = 1000;
        let data = random_vectors(n, dim, 31);
        let queries = random_vectors(20, dim, 32);
        for space in SPACES {
            let index = HnswIndex::build(&data, dim, &params(space)).unwrap();
            let (parted, order) = index
                .clone()
                .partitioned(64, &BuildOptions::default())
                .unwrap();
            let partitions = parted.partitions().unwrap().clone();
            partitions.check(n as u32).unwrap();
            assert!(partitions.count() >= 10, "{}", partitions.count());
            let mut seen = order.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..n as u32).collect::<Vec<_>>());
            for (new, &old) in order.iter().enumerate() {
                assert_eq!(parted.vector(new as u32), index.vector(old));
            }
            let renamed = |found: Vec<(u32, f32)>| -> Vec<(u32, f32)> {
                found
                    .into_iter()
                    .map(|(row, d)| (order[row as usize], d))
                    .collect()
            };
            let allow = random_filter(n, 0.3, 33);
            let mut allow_new = FixedBitSet::with_capacity(n);
            for (new, &old) in order.iter().enumerate() {
                allow_new.set(new, allow.contains(old as usize));
            }
            for q in queries.chunks_exact(dim) {
                assert_eq!(
                    renamed(parted.search(q, 10, 40, None)),
                    index.search(q, 10, 40, None)
                );
                assert_eq!(
                    renamed(parted.search(q, 10, 40, Some(&allow_new))),
                    index.search(q, 10, 40, Some(&allow))
                );
                assert_eq!(renamed(parted.exact(q, 10, None)), index.exact(q, 10, None));
            }
            let bytes = parted.to_bytes();
            assert_eq!(bytes[8..12], V5.to_le_bytes());
            // Format 4 is still read, to the same index with the same vectors; format 5's
            // packed vectors are smaller.
            let v4_bytes = parted.to_bytes_v4();
            assert_eq!(v4_bytes[8..12], V4.to_le_bytes());
            let v4 = HnswIndex::from_bytes(&v4_bytes).unwrap();
            assert_eq!(v4.graph, parted.graph);
            assert_eq!(v4.to_bytes(), bytes);
            assert!(bytes.len() < v4_bytes.len());
            // Format 3 is still read, to the same index; format 4's packed graph is
            // smaller (rows near each other have numbers near each other).
            let v3_bytes = parted.to_bytes_v3();
            assert_eq!(v3_bytes[8..12], V3.to_le_bytes());
            let v3 = HnswIndex::from_bytes(&v3_bytes).unwrap();
            assert_eq!(v3.graph, parted.graph);
            assert_eq!(v3.to_bytes(), bytes);
            assert!(
                bytes.len() < v3_bytes.len(),
                "{} ≥ {}",
                bytes.len(),
                v3_bytes.len()
            );
            let back = HnswIndex::from_bytes(&bytes).unwrap();
            assert_eq!(back.partitions(), Some(&partitions));
            assert_eq!(back.to_bytes(), bytes);
            let IndexLayout::Head { head_len, .. } = IndexLayout::parse(&bytes).unwrap() else {
                panic!("a head expected");
            };
            let head = HnswIndex::from_head(&bytes[..head_len as usize]).unwrap();
            assert_eq!(head.partitions(), Some(&partitions));
            assert_eq!(head.graph, parted.graph);
            // Each row's vector is one range past the head, and comes back exactly.
            for row in [0, n as u32 / 2, n as u32 - 1] {
                let r = head.vector_range(row);
                let mut v = Vec::new();
                head.codec()
                    .decode(
                        &bytes[(head_len + r.start) as usize..(head_len + r.end) as usize],
                        &mut v,
                    )
                    .unwrap();
                assert_eq!(Some(&v[..]), parted.vector(row));
            }
            // An index never partitioned is written as one partition.
            let whole = HnswIndex::from_bytes(&index.to_bytes()).unwrap();
            assert_eq!(whole.partitions().map(Partitions::count), Some(1));
            let v2 = HnswIndex::from_bytes(&index.to_bytes_v2()).unwrap();
            assert_eq!(v2.partitions(), None);
            assert_eq!(v2.graph, index.graph);
            assert_eq!(v2.to_bytes(), index.to_bytes());
        }
    }

    /// An index extended from a partitioned one keeps its centroids: the old rows stay
    /// in their partitions, each added row joins its nearest, and searches find the same
    /// rows as the extended index; once partitions are crowded, it is partitioned afresh.
    #[test]
    fn an_extended_index_is_partitioned_after_its_base() {
        let dim = 8;
        let data = random_vectors(1100, dim, 51);
        let (base, more) = data.split_at(1000 * dim);
        let options = BuildOptions::default();
        let p = params(Space::L2);
        let (index, base_order) = HnswIndex::build(base, dim, &p)
            .unwrap()
            .partitioned(100, &options)
            .unwrap();
        let partitions = index.partitions().unwrap().clone();
        let ordered_base: Vec<f32> = base_order
            .iter()
            .flat_map(|&r| base[r as usize * dim..(r as usize + 1) * dim].to_vec())
            .collect();
        let extended = index
            .extend_with(&ordered_base, more, &p, &options)
            .unwrap();
        let (after, order) = extended
            .clone()
            .partitioned_after(&partitions, 100, &options)
            .unwrap();
        let got = after.partitions().unwrap();
        got.check(1100).unwrap();
        assert_eq!(got.centroids, partitions.centroids);
        for q in 0..got.count() {
            let rows = &order[got.rows(q).start as usize..got.rows(q).end as usize];
            assert!(
                rows.windows(2).all(|w| w[0] < w[1]),
                "stable within a partition"
            );
            for &old in rows {
                if (old as usize) < 1000 {
                    assert!(partitions.rows(q).contains(&old), "an old row moved");
                } else {
                    let v = extended.vector(old).unwrap();
                    assert_eq!(got.nearest(Space::L2, v, 1)[0], q, "row {old}");
                }
            }
        }
        for q in random_vectors(10, dim, 52).chunks_exact(dim) {
            let renamed: Vec<_> = after
                .search(q, 10, 40, None)
                .into_iter()
                .map(|(row, d)| (order[row as usize], d))
                .collect();
            assert_eq!(renamed, extended.search(q, 10, 40, None));
        }
        // Crowded (more than twice 40 rows per partition on average): afresh.
        let (fresh, _) = extended
            .partitioned_after(&partitions, 40, &options)
            .unwrap();
        assert!(fresh.partitions().unwrap().count() > partitions.count());
    }

    #[test]
    fn forged_partitions_are_an_error() {
        let data = random_vectors(300, 3, 18);
        let (index, _) = HnswIndex::build(&data, 3, &params(Space::L2))
            .unwrap()
            .partitioned(50, &BuildOptions::default())
            .unwrap();
        let count = index.partitions().unwrap().count() as u32;
        assert!(count > 1);
        let bytes = index.to_bytes();
        let IndexLayout::Head { head_len, .. } = IndexLayout::parse(&bytes).unwrap() else {
            panic!("a head expected");
        };
        let head = &bytes[..head_len as usize];
        assert!(HnswIndex::from_head(head).is_ok());
        for len in 0..head.len() {
            assert!(HnswIndex::from_head(&head[..len]).is_err(), "{len}");
        }
        let bounds = V2_HEADER_LEN + 4 * 3 * count as usize;
        let cases = [
            (36, 0),                             // no partition
            (36, 301),                           // more partitions than rows
            (36, count + 1),                     // a count the directory disagrees with
            (36, count - 1),                     // ...
            (V2_HEADER_LEN, f32::NAN.to_bits()), // a non-finite centroid
            (bounds, 1),                         // first bound not 0
            (bounds + 4 * count as usize, 299),  // last bound short of the rows
            (bounds + 4, 301),                   // bounds decrease
        ];
        for (at, value) in cases {
            let forged = forge(head, at, value);
            assert!(
                HnswIndex::from_head(&forged).is_err(),
                "u32 {value} at {at}"
            );
        }
    }

    /// Replaces the u32 at `at` and fixes the checksum, as a deliberate forger would.
    fn forge(bytes: &[u8], at: usize, value: u32) -> Vec<u8> {
        let mut b = bytes[..bytes.len() - 8].to_vec();
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let sum = checksum(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = small_index_bytes();
        for len in 0..bytes.len() {
            assert!(
                HnswIndex::from_bytes(&bytes[..len]).is_err(),
                "truncated to {len}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(HnswIndex::from_bytes(&longer).is_err());
        let bytes = small_index_bytes_v2();
        for len in 0..bytes.len() {
            assert!(
                HnswIndex::from_bytes(&bytes[..len]).is_err(),
                "format 2 truncated to {len}"
            );
        }
    }

    #[test]
    fn forged_structure_is_an_error() {
        let bytes = small_index_bytes();
        let index = HnswIndex::from_bytes(&bytes).unwrap();
        let n = index.len() as u32;
        let vectors_end = V1_HEADER_LEN + index.resident().data.len() * 4;
        let neighbors0_start = vectors_end + (n as usize + 1) * 4;
        let cases = [
            (12, 3),                             // space code
            (16, 0),                             // dim 0 with rows
            (16, 4),                             // dim larger than the data
            (20, n + 1),                         // row count
            (20, u32::MAX),                      // row count
            (28, n),                             // entry out of range
            (32, 17),                            // layer count
            (32, 0),                             // layer count: bytes left over
            (V1_HEADER_LEN, f32::NAN.to_bits()), // non-finite vector
            (vectors_end, 1),                    // first offset not 0
            (vectors_end + 4, u32::MAX),         // offset beyond the edges
            (neighbors0_start, n),               // neighbour out of range
        ];
        for (at, value) in cases {
            let forged = forge(&bytes, at, value);
            assert!(
                HnswIndex::from_bytes(&forged).is_err(),
                "u32 {value} at {at}"
            );
        }
        // Upper layer: node rows and neighbour indices out of range.
        let upper_start = neighbors0_start + index.graph.neighbors0.len() * 4;
        let m = index.graph.upper[0].rows.len() as u32;
        assert_eq!(forge(&bytes, upper_start, m), bytes);
        assert!(HnswIndex::from_bytes(&forge(&bytes, upper_start, 0)).is_err());
        assert!(HnswIndex::from_bytes(&forge(&bytes, upper_start + 4, n)).is_err());
        let upper_neighbors = upper_start + 4 + (2 * m as usize + 1) * 4;
        assert!(HnswIndex::from_bytes(&forge(&bytes, upper_neighbors, m)).is_err());
        let mut bad_magic = bytes.clone();
        bad_magic[0] ^= 1;
        assert!(HnswIndex::from_bytes(&bad_magic).is_err());
        assert!(
            HnswIndex::from_bytes(&forge(&bytes, 8, 3)).is_err(),
            "version"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn garbled_bytes_are_an_error(flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
                                      cut in any::<prop::sample::Index>(), truncate in any::<bool>()) {
            let bytes = small_index_bytes_cached();
            let mut garbled = bytes.to_vec();
            for (at, mask) in &flips {
                garbled[at.index(bytes.len())] ^= mask;
            }
            if truncate {
                garbled.truncate(cut.index(bytes.len()));
            }
            if garbled != bytes {
                prop_assert!(HnswIndex::from_bytes(&garbled).is_err());
            }
        }
    }

    fn small_index_bytes_cached() -> &'static [u8] {
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        BYTES.get_or_init(small_index_bytes)
    }
}
