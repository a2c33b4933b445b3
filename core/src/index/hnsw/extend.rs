//! Extending a built index by inserting more rows, instead of building over all rows
//! again: merging a small segment into a large one costs the small one's inserts.
//!
//! hnsw_rs inserts into any graph it holds, but builds one only by inserting or by
//! reloading its own dump (`hnswio`, dump format 4). So the flat graph is written out in
//! that format (a graph file and a data file in a temporary directory), reloaded, the
//! new rows are inserted in parallel exactly as a build inserts them, and the result is
//! flattened again. Writing and reloading costs a few microseconds per existing row,
//! against about a millisecond per inserted row at 384 dimensions.
//!
//! Every field is written as hnsw_rs reads it (native byte order, `usize` counts). Two
//! details of hnsw_rs 0.3.5 matter: its reload multiplies the default level scale by the
//! dumped one (so a factor of 1.0 is written to keep the default `1/ln M`), and it sets
//! "extend candidates" on, which a build has off (so it is turned off again).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use hnsw_rs::anndists::dist::{DistL2, Distance};
use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::hnswio::HnswIo;

use super::{
    check_input, flatten, insert_rows, on_build_threads, BuildOptions, GraphInput, HnswIndex,
    HnswParams, ShiftedDot, HNSW_RS_MAX_LAYERS,
};
use crate::error::{Error, Result};
use crate::index::flat::Vectors;
use crate::index::graph::Graph;
use crate::index::packed::VectorCodec;
use crate::index::quant::Codes;
use crate::model::Space;

const MAGIC_DESCRIPTION_4: u32 = 0x002a_6779;
const MAGIC_LAYER: u32 = 0x000a_676f;
const MAGIC_POINT: u32 = 0x000a_678f;
const MAGIC_DATA: u32 = 0xa67f_0000;
/// Dump mode "full": neighbours are written with their layer and rank.
const DUMP_FULL: u8 = 1;
const DUMP_NAME: &str = "segment";

/// The largest `max_neighbors` hnsw_rs's dump can describe (it stores it in one byte).
pub const MAX_EXTENDABLE_NEIGHBORS: usize = u8::MAX as usize;

impl HnswIndex {
    /// A new index over this index's rows (row i keeps number i) followed by the rows of
    /// `more` (numbered from `len()` on), built by inserting only `more` into this graph.
    /// `base` holds this index's f32 vectors (row-major, as given to its build), which a
    /// loaded index does not keep in memory.
    ///
    /// Errors (`InvalidArgument`): `params` differ from this index's space or
    /// `max_neighbors`, or that is above [`MAX_EXTENDABLE_NEIGHBORS`]; `base` is not
    /// `len() × dim` values; `more` is not a whole number of rows; a value is not finite.
    /// `Cancelled` once `options.cancelled` says so.
    pub fn extend_with(
        &self,
        base: &[f32],
        more: &[f32],
        params: &HnswParams,
        options: &BuildOptions<'_>,
    ) -> Result<Self> {
        let dim = self.dim;
        if base.len() != self.len() * dim {
            return Err(Error::invalid(format!(
                "{} base values for {} rows of dimension {dim}",
                base.len(),
                self.len()
            )));
        }
        let mut all = Vec::with_capacity(base.len() + more.len());
        all.extend_from_slice(base);
        all.extend_from_slice(more);
        self.extend_owned(all, params, options)
    }

    /// [`HnswIndex::extend_with`] taking this index's rows and the new ones in one buffer
    /// (`all`: `len()` rows, then the rows to insert), which the new index keeps as its
    /// resident vectors: no copy of them is made.
    pub fn extend_owned(
        &self,
        all: Vec<f32>,
        params: &HnswParams,
        options: &BuildOptions<'_>,
    ) -> Result<Self> {
        let (space, m, dim) = (self.space, self.max_neighbors, self.dim);
        if params.space != space || params.max_neighbors != m {
            return Err(Error::invalid(format!(
                "cannot extend an index of space {space:?} and max_neighbors {m} with \
                 space {:?} and max_neighbors {}",
                params.space, params.max_neighbors
            )));
        }
        if all.len() < self.len() * dim {
            return Err(Error::invalid(format!(
                "{} values for an index of {} rows of dimension {dim}",
                all.len(),
                self.len()
            )));
        }
        if m > MAX_EXTENDABLE_NEIGHBORS {
            return Err(Error::invalid(format!(
                "an index with max_neighbors {m} cannot be extended (at most \
                 {MAX_EXTENDABLE_NEIGHBORS})"
            )));
        }
        if self.is_empty() || dim == 0 {
            return Self::build_owned(all, dim, params, options);
        }
        check_input(&all, dim, m)?;
        let n_base = self.len();
        let m_build = m.max(2);
        let ef_c = params.ef_construction.max(m_build);
        let cancelled = options.cancelled;
        let input = GraphInput::new(space, &all, dim);
        let graph = on_build_threads(options.threads, || match space {
            Space::L2 | Space::Cosine => {
                extend_graph(&self.graph, input, n_base, m_build, ef_c, DistL2, cancelled)
            }
            Space::Ip => {
                let dist = ShiftedDot::over(&all, dim);
                extend_graph(&self.graph, input, n_base, m_build, ef_c, dist, cancelled)
            }
        })??;
        Ok(Self {
            space,
            max_neighbors: m,
            dim,
            codes: Codes::new(space, dim, &all),
            vectors: Some(Vectors::new(space, dim, all)),
            graph,
            partitions: None,
            codec: VectorCodec::plain(dim),
        })
    }
}

/// Reloads `graph` (over the first `n_base` rows of `input`)
/// into hnsw_rs, inserts the remaining rows and flattens the result.
fn extend_graph<D>(
    graph: &Graph,
    input: GraphInput<'_>,
    n_base: usize,
    m: usize,
    ef_construction: usize,
    dist: D,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Graph>
where
    D: Distance<f32> + Send + Sync,
{
    let n = input.len();
    let dir = tempfile::Builder::new()
        .prefix("chroma-index-extend-")
        .tempdir()
        .map_err(|e| Error::internal_from("cannot create a directory to extend an index", e))?;
    write_dump(dir.path(), graph, input, n_base, m, ef_construction, &dist)
        .map_err(|e| Error::internal_from("cannot write an index to extend it", e))?;
    let io = HnswIo::new(dir.path(), DUMP_NAME);
    let mut hnsw: Hnsw<'_, f32, D> = io
        .load_hnsw_with_dist(dist)
        .map_err(|e| Error::internal(format!("hnsw_rs cannot reload an index: {e}")))?;
    // The reloaded points hold their own copies: the files are not needed any more.
    drop(dir);
    hnsw.set_extend_candidates(false);
    if hnsw.get_nb_point() != n_base {
        return Err(Error::internal(format!(
            "hnsw_rs reloaded {} of {n_base} rows",
            hnsw.get_nb_point()
        )));
    }
    insert_rows(&hnsw, input, n_base, cancelled)?;
    let graph = flatten(&hnsw, n);
    drop(hnsw);
    graph
}

/// The levels of a graph's rows (the highest layer each is a node of).
fn levels(graph: &Graph, n: usize) -> Vec<u8> {
    let mut levels = vec![0u8; n];
    for (i, layer) in graph.upper.iter().enumerate() {
        for &row in &layer.rows {
            levels[row as usize] = (i + 1) as u8;
        }
    }
    levels
}

/// Writes `graph` over the first `n` rows of `input` as hnsw_rs's full dump:
/// `<dir>/segment.hnsw.graph` (description, the points layer by layer with their
/// neighbours per layer, the entry point) and `<dir>/segment.hnsw.data` (each point's
/// vector, in the same order).
fn write_dump<D: Distance<f32>>(
    dir: &Path,
    graph: &Graph,
    input: GraphInput<'_>,
    n: usize,
    m: usize,
    ef_construction: usize,
    dist: &D,
) -> std::io::Result<()> {
    let dim = input.dim();
    let levels = levels(graph, n);
    // A point's id in hnsw_rs: its level and its rank among the points of that level.
    let mut by_level: Vec<Vec<u32>> = vec![Vec::new(); HNSW_RS_MAX_LAYERS];
    let mut rank = vec![0i32; n];
    for (row, &level) in levels.iter().enumerate() {
        let points = &mut by_level[level as usize];
        rank[row] = points.len() as i32;
        points.push(row as u32);
    }
    // A row's vector and a neighbour's, as hnsw_rs sees them, in reused buffers.
    let (mut values, mut neighbour) = (Vec::with_capacity(dim), Vec::with_capacity(dim));

    let mut g = BufWriter::new(File::create(dir.join(format!("{DUMP_NAME}.hnsw.graph")))?);
    let mut d = BufWriter::new(File::create(dir.join(format!("{DUMP_NAME}.hnsw.data")))?);
    // Description.
    g.write_all(&MAGIC_DESCRIPTION_4.to_ne_bytes())?;
    g.write_all(&[DUMP_FULL, m as u8])?;
    g.write_all(&1.0f64.to_ne_bytes())?;
    g.write_all(&[HNSW_RS_MAX_LAYERS as u8])?;
    g.write_all(&ef_construction.to_ne_bytes())?;
    g.write_all(&n.to_ne_bytes())?;
    g.write_all(&dim.to_ne_bytes())?;
    for name in [std::any::type_name::<D>(), std::any::type_name::<f32>()] {
        g.write_all(&name.len().to_ne_bytes())?;
        g.write_all(name.as_bytes())?;
    }
    d.write_all(&MAGIC_DATA.to_ne_bytes())?;
    d.write_all(&dim.to_ne_bytes())?;

    // Points, layer by layer.
    g.write_all(&[HNSW_RS_MAX_LAYERS as u8])?;
    for (level, points) in by_level.iter().enumerate() {
        g.write_all(&MAGIC_LAYER.to_ne_bytes())?;
        g.write_all(&points.len().to_ne_bytes())?;
        for &row in points {
            g.write_all(&MAGIC_POINT.to_ne_bytes())?;
            g.write_all(&(row as usize).to_ne_bytes())?;
            g.write_all(&[level as u8])?;
            g.write_all(&rank[row as usize].to_ne_bytes())?;
            input.row_into(row as usize, &mut values);
            for layer in 0..HNSW_RS_MAX_LAYERS {
                let neighbours: Vec<u32> = match layer {
                    0 => graph.neighbors0(row).to_vec(),
                    l if l <= level => {
                        let upper = &graph.upper[l - 1];
                        let local = upper.local_index(row).ok_or_else(|| {
                            std::io::Error::other(format!("row {row} missing from layer {l}"))
                        })?;
                        upper
                            .neighbors(local)
                            .iter()
                            .map(|&i| upper.rows[i as usize])
                            .collect()
                    }
                    _ => Vec::new(),
                };
                // Nearest first, as hnsw_rs keeps its lists (ours are in row order).
                let mut scored: Vec<(f32, u32)> = neighbours
                    .into_iter()
                    .map(|nb| {
                        input.row_into(nb as usize, &mut neighbour);
                        (dist.eval(&values, &neighbour), nb)
                    })
                    .collect();
                scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                g.write_all(&scored.len().to_ne_bytes())?;
                for (d, nb) in scored {
                    g.write_all(&(nb as usize).to_ne_bytes())?;
                    g.write_all(&[levels[nb as usize]])?;
                    g.write_all(&rank[nb as usize].to_ne_bytes())?;
                    g.write_all(&d.to_ne_bytes())?;
                }
            }
            d.write_all(&MAGIC_DATA.to_ne_bytes())?;
            d.write_all(&(row as u64).to_ne_bytes())?;
            d.write_all(&((values.len() * 4) as u64).to_ne_bytes())?;
            for v in values.iter() {
                d.write_all(&v.to_ne_bytes())?;
            }
        }
    }
    // The entry point.
    let entry = graph.entry;
    g.write_all(&(entry as usize).to_ne_bytes())?;
    g.write_all(&[levels[entry as usize]])?;
    g.write_all(&rank[entry as usize].to_ne_bytes())?;
    g.flush()?;
    d.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{params, random_vectors};
    use super::*;

    /// Mean recall@k of `index.search` against exact search over the same rows.
    fn recall(index: &HnswIndex, queries: &[f32], k: usize) -> f64 {
        let dim = index.dim();
        let mut total = 0.0;
        for q in queries.chunks_exact(dim) {
            let found = index.search(q, k, 64, None);
            let truth = index.exact(q, k, None);
            let hits = found
                .iter()
                .filter(|(r, _)| truth.iter().any(|(t, _)| t == r))
                .count();
            total += hits as f64 / k as f64;
        }
        total / (queries.len() / dim) as f64
    }

    #[test]
    fn an_extended_index_finds_old_and_new_rows_as_well_as_a_full_build() {
        let (dim, k) = (24, 10);
        let base = random_vectors(1_500, dim, 11);
        let more = random_vectors(700, dim, 12);
        let all = [base.as_slice(), more.as_slice()].concat();
        let queries = random_vectors(60, dim, 13);
        for space in [Space::L2, Space::Cosine, Space::Ip] {
            let params = params(space);
            let mut small = HnswIndex::build(&base, dim, &params).unwrap();
            // A loaded segment keeps no vectors: extending must not need them.
            small.drop_vectors();
            let extended = small
                .extend_with(&base, &more, &params, &BuildOptions::default())
                .unwrap();
            assert_eq!(extended.len(), 2_200);
            assert_eq!((extended.dim(), extended.space()), (dim, space));
            // Row numbers are kept: old rows first, then the new ones in order.
            for row in [0u32, 1_499, 1_500, 2_199] {
                assert_eq!(
                    extended.vector(row).unwrap(),
                    &all[row as usize * dim..(row as usize + 1) * dim]
                );
            }
            // Every new row is reachable: searching for it finds it first.
            for row in (1_500..2_200).step_by(7) {
                let v = extended.vector(row).unwrap().to_vec();
                let found = extended.search(&v, 1, 64, None);
                assert_eq!(found[0].0, row, "{space:?}: row {row} not found");
            }
            let full = HnswIndex::build(&all, dim, &params).unwrap();
            let (got, reference) = (recall(&extended, &queries, k), recall(&full, &queries, k));
            assert!(
                got >= reference - 0.03 && got >= 0.9,
                "{space:?}: extended recall {got:.3} vs full build {reference:.3}"
            );
            // It serializes and loads like any index.
            let again = HnswIndex::from_bytes(&extended.to_bytes()).unwrap();
            assert_eq!(again.len(), extended.len());
            let q = &queries[..dim];
            assert_eq!(
                again.search(q, k, 64, None),
                extended.search(q, k, 64, None)
            );
            // And extends again.
            let twice = again
                .extend_with(&all, &more[..dim * 10], &params, &BuildOptions::default())
                .unwrap();
            assert_eq!(twice.len(), 2_210);
        }
    }

    #[test]
    fn extending_checks_its_input_and_stops_when_asked() {
        let dim = 8;
        let base = random_vectors(300, dim, 1);
        let index = HnswIndex::build(&base, dim, &params(Space::L2)).unwrap();
        let more = random_vectors(50, dim, 2);
        let options = BuildOptions::default();
        let other_space = index.extend_with(&base, &more, &params(Space::Cosine), &options);
        assert!(other_space
            .unwrap_err()
            .to_string()
            .contains("cannot extend"));
        let short_base = index.extend_with(&base[dim..], &more, &params(Space::L2), &options);
        assert!(short_base.unwrap_err().to_string().contains("base values"));
        let ragged = index.extend_with(&base, &more[1..], &params(Space::L2), &options);
        assert!(ragged
            .unwrap_err()
            .to_string()
            .contains("multiple of dimension"));
        let mut nan = more.clone();
        nan[3] = f32::NAN;
        let not_finite = index.extend_with(&base, &nan, &params(Space::L2), &options);
        assert!(not_finite.unwrap_err().to_string().contains("not finite"));
        let stop = BuildOptions {
            threads: 1,
            cancelled: &|| true,
        };
        let more = random_vectors(3_000, dim, 3);
        let stopped = index.extend_with(&base, &more, &params(Space::L2), &stop);
        assert_eq!(
            stopped.unwrap_err().code(),
            crate::error::ErrorCode::Cancelled
        );
        // An empty index extends into a plain build.
        let empty = HnswIndex::build(&[], dim, &params(Space::L2)).unwrap();
        let built = empty
            .extend_with(&[], &more[..dim * 20], &params(Space::L2), &options)
            .unwrap();
        assert_eq!(built.len(), 20);
    }
}
