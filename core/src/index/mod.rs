//! The vector index: an immutable HNSW graph per segment, plus exact search.
//!
//! [`HnswIndex::build`] inserts the rows with hnsw_rs (in parallel on rayon's pool),
//! then reads the finished graph out into flat arrays and drops hnsw_rs's structure:
//! a built segment never changes, and a flat layout is about 3× faster to search than
//! hnsw_rs's reference-counted, lock-guarded nodes (`scripts/bench.sh` measures both:
//! 0.42 ms against 1.26 ms p50 on the 20k dev set). It is also what [`HnswIndex::to_bytes`]
//! writes, so loading an index rebuilds nothing.
//!
//! [`HnswIndex::extend_with`] adds rows to a built index by inserting only them: the
//! flat graph is handed back to hnsw_rs (through its own dump format), the new rows are
//! inserted as a build inserts them, and the result is flattened again.
//!
//! Distances are Chroma's ([`distance`]): `l2` is squared Euclidean, `cosine` is
//! `1 − cos`, `ip` is `1 − a·b`. Cosine keeps the original vectors (returned to users)
//! and `1/‖v‖` per row.
//!
//! # Search
//! A greedy descent through the upper layers, then a beam search of width
//! `max(ef, k)` on layer 0 with a per-thread visited-stamp array. Filters (`allow`
//! bitsets over row ids) are applied during the walk: every row is walked through, only
//! allowed rows are collected, and the walk ends once `ef` allowed rows are closer than
//! every open lead. When few rows are allowed, scanning them exactly is cheaper and
//! [`HnswIndex::search`] does that instead.
//!
//! The walk compares 8-bit codes of the vectors (`quant.rs`): a 384-dimension row is 6
//! cache lines instead of 24, and memory traffic is what a graph walk spends its time
//! on. The rows the beam ends with are re-scored with the f32 vectors, so returned
//! distances are exact; recall on the dev set is unchanged (0.985 at ef 100).
//!
//! # Memory: codes and graph resident, f32 vectors read by range
//! A loaded segment keeps only the head of its index in memory — codes (`dim + 4`
//! bytes per row, `+ 4` for l2) and graph (about `8·M + 4` bytes per row) — not the f32
//! vectors (`4·dim` bytes per row, three quarters of the index at 384 dimensions). A
//! query asks the index for [`HnswIndex::candidates`] (the beam's rows, from codes alone),
//! the caller reads those rows' f32 vectors from the index object by range (they are the
//! last section, at [`HnswIndex::vector_range`] past the head), and
//! [`HnswIndex::rerank`] orders them exactly. [`HnswIndex::search`] and
//! [`HnswIndex::exact`] do the same over resident vectors (a freshly built index, tests,
//! format 1 objects).
//!
//! # Partitions: rows stored near their neighbours
//! A segment's rows are numbered in partition order ([`HnswIndex::partitioned`],
//! `partition.rs`): k-means centroids over a sample, each row assigned to its nearest
//! centroid, rows of one partition consecutive. The graph is the same graph over
//! renumbered rows, so a warm search is unchanged; what changes is the object: the
//! codes and the f32 vectors of the rows near a query lie together, one range per
//! partition. That is what a reader without the segment in memory fetches — the header
//! and centroids, the codes of the few partitions nearest the query, then the f32
//! vectors of the best candidates — instead of the whole head (the cold path, reading
//! O(probe) rather than O(collection); see `cold.rs`).
//!
//! # Serialization (little-endian)
//! Format 5 (written since the vectors are packed):
//! ```text
//! offset  size  field
//! 0       8     magic "CHRHNSW\0"
//! 8       4     version = 5
//! 12      4     space: byte 0: 0 = l2, 1 = cosine, 2 = ip; byte 1: B, the bits of a
//!               vector value's top-byte index (0 to 8, see `packed.rs`); bytes 2–3: 0
//! 16      4     dim
//! 20      4     n (rows)
//! 24      4     max_neighbors
//! 28      4     entry point row (u32::MAX when n = 0)
//! 32      4     L = number of layers above 0
//! 36      4     P = number of partitions (1 ≤ P ≤ max(n, 1))
//! 40      8     head_len: bytes of the head (everything up to the vectors)
//! 48            partitions: centroids (4·P·dim, row-major f32), bounds (4·(P+1) u32: rows
//!               bounds[p]..bounds[p+1] are partition p; 0 first, n last, non-decreasing)
//!               the vectors' top-byte table (2^B bytes)
//!               codes: scales (4·n), squared norms (4·n, l2 only), codes (n·dim i8)
//!               graph: layer 0 packed — per row, its neighbour count, then its
//!               neighbours in increasing order, all unsigned LEB128 varints: the first
//!               as the zigzag-coded difference from the row (0, −1, 1, −2 … → 0, 1, 2,
//!               3 …), each next one as its distance from the previous minus one; then
//!               per upper layer (layer 1 first) m, node rows (4·m, strictly increasing,
//!               a subset of the layer below), CSR offsets (4·(m+1)), neighbours as
//!               indices into the layer's node rows
//!               zero padding to a multiple of 8
//! head_len−8  8 checksum (u64) of every head byte before it
//! head_len    n·w   vectors (as given to build), w = 3·dim + ceil(B·dim / 8) bytes a
//!               row: each value's low three bytes, then the indices of their top
//!               bytes in the table, B bits each, least significant bit first
//! ```
//! Every section's offset up to the graph follows from the first 48 bytes, and the
//! vectors start at `head_len`, so a reader can fetch one partition's scales, norms,
//! codes or vectors by range. The vectors are lossless: a value's top byte is its sign
//! and most of its exponent, and a segment's embedding values use a few dozen of the
//! 256 (`scripts/bench-scale.sh 100000`: 6 bits' worth, a row takes 1,440 bytes at
//! 384 dimensions instead of 1,536). Rows are numbered in partition order, so most of a row's
//! neighbours are a few rows away: packed, layer 0 takes about 1.2 bytes a neighbour
//! instead of 4 (with the offsets, a 1M-row graph at `max_neighbors` 16 shrinks from
//! about 0.09× to about 0.03× of the f32 vectors at 384 dimensions; measured numbers in
//! the closing note of the change and `scripts/bench-scale.sh`). The graph is unpacked
//! into the CSR arrays above when the head is loaded.
//!
//! Format 4 (still read): format 5 with plain f32 vectors (4·dim bytes a row) and no
//! table; the space word is the space code alone.
//!
//! Format 3 (still read): format 4 with layer 0 as plain CSR — offsets (4·(n+1)), then
//! the neighbour rows (4 each).
//!
//! Format 2 (still read): format 3 without partitions — word 36 is reserved (0) and the
//! codes follow the header. Format 1 (still read, as a whole): the same first 40 bytes
//! with version = 1, then the vectors, then the graph, then the checksum of everything
//! before it; its codes are derived when it is loaded.
//!
//! [`HnswIndex::from_bytes`] and [`HnswIndex::from_head`] validate everything they read
//! and return an error, never panic. The vectors section has no checksum of its own: the
//! envelope's per-chunk authentication covers it, and values are checked to be finite
//! when read.

pub mod cold;
mod distance;
mod flat;
mod graph;
mod hnsw;
mod packed;
pub mod partition;
mod quant;
pub mod sparse;

pub use cold::ColdIndex;
pub use distance::distance;
pub use hnsw::beam_for;
pub(crate) use hnsw::{nearest_across, rerank_width};
pub use hnsw::{
    BuildOptions, Candidates, HnswIndex, HnswParams, IndexLayout, INSERT_CHUNK,
    MAX_EXTENDABLE_NEIGHBORS,
};
pub use packed::VectorCodec;

/// The bitset type of `allow` filters (bit i set = row i may be returned).
pub use fixedbitset::FixedBitSet;

#[cfg(test)]
mod tests {
    //! Recall on real sentence embeddings with exact ground truth: the repository's
    //! sample (`tests/data/sample`, 2,000 × 384), or the set `CHROMA_DEV_DATA` names.

    use std::fs::File;
    use std::path::PathBuf;
    use std::time::Instant;

    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type};
    use arrow_schema::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;

    use super::*;
    use crate::model::Space;

    fn data_dir() -> PathBuf {
        let dir = std::env::var_os("CHROMA_DEV_DATA")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/sample")
            });
        assert!(
            dir.join("base.npy").is_file(),
            "dev data set not found at {} (set CHROMA_DEV_DATA to the directory holding \
             base.npy, queries.npy, gt_ids_top100*.npy and base.parquet)",
            dir.display()
        );
        dir
    }

    /// Returns (shape, values) of a .npy file.
    fn npy<T: npyz::Deserialize>(dir: &std::path::Path, name: &str) -> (Vec<usize>, Vec<T>) {
        let path = dir.join(name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).unwrap();
        let shape = npy.shape().iter().map(|&d| d as usize).collect();
        (shape, npy.into_vec().unwrap())
    }

    fn years(dir: &std::path::Path) -> Vec<i64> {
        let file = File::open(dir.join("base.parquet")).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let column = builder
            .parquet_schema()
            .columns()
            .iter()
            .position(|c| c.name() == "year")
            .expect("base.parquet has no year column");
        let mask = ProjectionMask::leaves(builder.parquet_schema(), [column]);
        let mut years = Vec::new();
        for batch in builder.with_projection(mask).build().unwrap() {
            let array = batch.unwrap().column(0).clone();
            match array.data_type() {
                DataType::Int64 => years.extend(array.as_primitive::<Int64Type>().values()),
                DataType::Int32 => years.extend(
                    array
                        .as_primitive::<Int32Type>()
                        .values()
                        .iter()
                        .map(|&y| y as i64),
                ),
                other => panic!("unexpected year type {other}"),
            }
        }
        years
    }

    fn recall_at(found: &[Vec<(u32, f32)>], gt: &[i32], gt_width: usize, k: usize) -> f64 {
        let hits: usize = found
            .iter()
            .enumerate()
            .map(|(qi, res)| {
                let truth = &gt[qi * gt_width..qi * gt_width + k];
                res.iter()
                    .take(k)
                    .filter(|(row, _)| truth.contains(&(*row as i32)))
                    .count()
            })
            .sum();
        hits as f64 / (found.len() * k) as f64
    }

    #[test]
    fn recall_on_dev_data() {
        let dir = data_dir();
        let (shape, base) = npy::<f32>(&dir, "base.npy");
        let (n, dim) = (shape[0], shape[1]);
        let (qshape, queries) = npy::<f32>(&dir, "queries.npy");
        assert_eq!(qshape[1], dim);
        let (gshape, gt) = npy::<i32>(&dir, "gt_ids_top100.npy");
        let (_, gt_year) = npy::<i32>(&dir, "gt_ids_top100_year_gte_2024.npy");
        let (k, ef) = (10, 100);

        let params = HnswParams {
            space: Space::Cosine,
            max_neighbors: 16,
            ef_construction: 100,
        };
        let started = Instant::now();
        let (index, timings) =
            HnswIndex::build_timed(base.clone(), dim, &params, &|| false).unwrap();
        let build = started.elapsed();

        let mut latencies = Vec::with_capacity(qshape[0]);
        let found: Vec<_> = queries
            .chunks_exact(dim)
            .map(|q| {
                let t = Instant::now();
                let r = index.search(q, k, ef, None);
                latencies.push(t.elapsed());
                r
            })
            .collect();
        latencies.sort();
        let recall = recall_at(&found, &gt, gshape[1], k);

        let years = years(&dir);
        assert_eq!(years.len(), n);
        let mut allow = FixedBitSet::with_capacity(n);
        years
            .iter()
            .enumerate()
            .filter(|(_, &y)| y >= 2024)
            .for_each(|(r, _)| allow.insert(r));
        let mut filtered_latencies = Vec::with_capacity(qshape[0]);
        let filtered: Vec<_> = queries
            .chunks_exact(dim)
            .map(|q| {
                let t = Instant::now();
                let r = index.search(q, k, ef, Some(&allow));
                filtered_latencies.push(t.elapsed());
                r
            })
            .collect();
        filtered_latencies.sort();
        assert!(filtered
            .iter()
            .flatten()
            .all(|(r, _)| allow.contains(*r as usize)));
        let filtered_recall = recall_at(&filtered, &gt_year, gshape[1], k);

        let started = Instant::now();
        let bytes = index.to_bytes();
        let back = HnswIndex::from_bytes(&bytes).unwrap();
        let round_trip = started.elapsed();
        assert_eq!(back.search(&queries[..dim], k, ef, None), found[0]);

        eprintln!(
            "dev data: {n} x {dim}, build {:.2} s ({:.0} vec/s; hnsw_rs insert {:?}, flatten \
             {:?}, drop {:?}), \
             search p50 {:?} p99 {:?}, recall@10 {recall:.4}; year>=2024 ({:.2} allowed) \
             p50 {:?}, recall@10 {filtered_recall:.4}; serialized {} MB, to+from bytes {:?}, \
             memory {} MB",
            build.as_secs_f64(),
            n as f64 / build.as_secs_f64(),
            timings.insert,
            timings.flatten,
            timings.drop,
            latencies[latencies.len() / 2],
            latencies[latencies.len() * 99 / 100],
            allow.count_ones(..) as f64 / n as f64,
            filtered_latencies[filtered_latencies.len() / 2],
            bytes.len() / 1_000_000,
            round_trip,
            index.memory_bytes() / 1_000_000,
        );
        assert!(recall >= 0.95, "recall@10 {recall}");
        assert!(
            filtered_recall >= 0.95,
            "filtered recall@10 {filtered_recall}"
        );

        // The cold path over the same rows in partition order (32 partitions; 4, 8 and 16
        // probed), rows renumbered back to compare with the ground truth. Probing half of
        // them must find the true neighbours and read less than the head.
        let partitions = 32;
        for nprobe in [4usize, 8, 16] {
            let (parted, order) = index
                .clone()
                .partitioned(n.div_ceil(partitions), &BuildOptions::default())
                .unwrap();
            let bytes = parted.to_bytes();
            let prefix = ColdIndex::prefix_len(&bytes[..ColdIndex::HEADER])
                .unwrap()
                .unwrap();
            let cold = ColdIndex::parse(&bytes[..prefix as usize]).unwrap();
            let slice = |r: &std::ops::Range<u64>| &bytes[r.start as usize..r.end as usize];
            let mut read = Vec::new();
            let found: Vec<_> = queries
                .chunks_exact(dim)
                .map(|q| {
                    let probed = cold.probe(q, nprobe);
                    let ranges: Vec<_> = probed.iter().flat_map(|&p| cold.code_ranges(p)).collect();
                    let parts: Vec<_> = ranges
                        .iter()
                        .map(|r| bytes::Bytes::copy_from_slice(slice(r)))
                        .collect();
                    let rows = cold
                        .candidates(q, hnsw::rerank_width(k, ef), &probed, &parts, None)
                        .unwrap();
                    let mut vectors = Vec::new();
                    for &row in &rows {
                        cold.codec()
                            .decode(slice(&cold.vector_range(row)), &mut vectors)
                            .unwrap();
                    }
                    read.push(
                        prefix
                            + ranges.iter().map(|r| r.end - r.start).sum::<u64>()
                            + (rows.len() * cold.codec().row_len()) as u64,
                    );
                    cold.rerank(q, k, &rows, &vectors)
                        .into_iter()
                        .map(|(row, d)| (order[row as usize], d))
                        .collect::<Vec<_>>()
                })
                .collect();
            let cold_recall = recall_at(&found, &gt, gshape[1], k);
            let IndexLayout::Head { head_len, .. } = IndexLayout::parse(&bytes).unwrap() else {
                panic!("a head expected");
            };
            read.sort_unstable();
            eprintln!(
                "cold path: {} partitions, {nprobe} probed: recall@10 {cold_recall:.4}, \
             {} KB read per query (p50; the head is {} KB, the object {} KB)",
                cold.partitions().count(),
                read[read.len() / 2] / 1000,
                head_len / 1000,
                bytes.len() / 1000
            );
            if nprobe == 16 {
                assert!(cold_recall >= 0.95, "cold recall@10 {cold_recall}");
                assert!(read[read.len() / 2] < head_len);
            }
        }
    }
}
