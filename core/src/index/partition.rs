//! Partitions of a segment's vectors (the IVF idea behind SPANN): centroids found by
//! k-means on a sample, every row assigned to its nearest centroid, and rows stored in
//! partition order so that each partition is one contiguous range of rows — of 8-bit
//! codes and of f32 vectors alike. A query against a segment that is not in memory reads
//! the centroids, then only the few partitions nearest to it.
//!
//! Assigning a million rows to a thousand centroids by brute force would cost as much as a
//! fair part of the HNSW build; instead the centroids get a small HNSW graph of their own
//! and each row walks it (a few dozen distances instead of a thousand). Distances are the
//! collection's space (cosine centroids are unit vectors).

use std::ops::Range;

use rayon::prelude::*;

use super::distance::{distance, normalized};
use super::hnsw::{HnswIndex, HnswParams};
use crate::error::{Error, Result};
use crate::model::Space;

/// k-means iterations over the sample.
const ITERATIONS: usize = 6;
/// Sample rows per centroid for k-means.
const SAMPLE_PER_CENTROID: usize = 48;
/// Beam width when a row looks for its nearest centroid.
const ASSIGN_EF: usize = 24;
/// Below this many centroids, rows compare with every centroid.
const BRUTE_FORCE_CENTROIDS: usize = 64;
/// Up to this many centroids, partitions are stored nearest after nearest ([`chained`]).
const MAX_CHAINED: usize = 2048;

/// A segment's partitions: centroid `p` and the rows `bounds[p]..bounds[p + 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Partitions {
    pub dim: usize,
    /// `count() × dim`, row-major.
    pub centroids: Vec<f32>,
    /// `count() + 1` row numbers, from 0, non-decreasing.
    pub bounds: Vec<u32>,
}

impl Partitions {
    /// One partition holding all `n` rows (and a zero centroid).
    pub fn single(dim: usize, n: u32) -> Self {
        Self {
            dim,
            centroids: vec![0.0; dim],
            bounds: vec![0, n],
        }
    }

    pub fn count(&self) -> usize {
        self.bounds.len().saturating_sub(1)
    }

    pub fn rows(&self, p: usize) -> Range<u32> {
        self.bounds[p]..self.bounds[p + 1]
    }

    pub fn centroid(&self, p: usize) -> &[f32] {
        &self.centroids[p * self.dim..(p + 1) * self.dim]
    }

    /// The `nprobe` partitions whose centroids are nearest to `query` (nearest first),
    /// empty ones left out.
    pub fn nearest(&self, space: Space, query: &[f32], nprobe: usize) -> Vec<usize> {
        self.nearest_scored(space, query, nprobe)
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// [`Partitions::nearest`] with each partition's centroid distance: the distances of
    /// two segments' partitions (of one collection, in one space) compare.
    pub fn nearest_scored(&self, space: Space, query: &[f32], nprobe: usize) -> Vec<(f32, usize)> {
        let q = match space {
            Space::Cosine => normalized(query),
            _ => query.to_vec(),
        };
        let mut scored: Vec<(f32, usize)> = (0..self.count())
            .filter(|&p| !self.rows(p).is_empty())
            .map(|p| (distance(space, &q, self.centroid(p)), p))
            .collect();
        let by_distance =
            |a: &(f32, usize), b: &(f32, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        if nprobe < scored.len() {
            scored.select_nth_unstable_by(nprobe, by_distance);
            scored.truncate(nprobe);
        }
        scored.sort_by(by_distance);
        scored
    }

    /// Bytes of the serialized directory (centroids, then bounds) of `count` partitions.
    pub fn serialized_len_of(count: usize, dim: usize) -> usize {
        4 * count * dim + 4 * (count + 1)
    }

    pub fn serialized_len(&self) -> usize {
        Self::serialized_len_of(self.count(), self.dim)
    }

    /// Checks the invariants readers rely on for `n` rows.
    pub fn check(&self, n: u32) -> Result<()> {
        let corrupt = |what: &str| Err(Error::internal(format!("corrupt partitions: {what}")));
        if self.bounds.first() != Some(&0) || self.bounds.last() != Some(&n) {
            return corrupt("bounds do not cover the rows");
        }
        if self.bounds.windows(2).any(|w| w[0] > w[1]) {
            return corrupt("bounds decrease");
        }
        if self.centroids.len() != self.count() * self.dim {
            return corrupt("centroid count");
        }
        if self.centroids.iter().any(|x| !x.is_finite()) {
            return corrupt("non-finite centroid");
        }
        Ok(())
    }
}

/// Finds the nearest centroid of rows, exactly (few centroids) or through a graph.
enum Assigner {
    Exact {
        space: Space,
        dim: usize,
        centroids: Vec<f32>,
    },
    Graph(Box<HnswIndex>),
}

impl Assigner {
    fn new(space: Space, dim: usize, centroids: &[f32]) -> Result<Self> {
        let k = centroids.len() / dim;
        if k <= BRUTE_FORCE_CENTROIDS {
            return Ok(Self::Exact {
                space,
                dim,
                centroids: centroids.to_vec(),
            });
        }
        let params = HnswParams {
            space,
            max_neighbors: 16,
            ef_construction: 64,
        };
        Ok(Self::Graph(Box::new(HnswIndex::build(
            centroids, dim, &params,
        )?)))
    }

    fn nearest(&self, v: &[f32]) -> u32 {
        match self {
            Self::Exact {
                space,
                dim,
                centroids,
            } => centroids
                .chunks_exact(*dim)
                .enumerate()
                .map(|(p, c)| (distance(*space, v, c), p as u32))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                .map_or(0, |(_, p)| p),
            Self::Graph(index) => index
                .search(v, 1, ASSIGN_EF, None)
                .first()
                .map_or(0, |(p, _)| *p),
        }
    }
}

/// Splits `vectors` (`n × dim`) into partitions (assigning rows on rayon's current pool) of about `rows_per_partition` rows.
/// Returns the partitions and the row order: row `i` of the partitioned segment is row
/// `order[i]` of `vectors` (stable within a partition). Deterministic for given input.
/// `stop` is asked between iterations; when it says so, `Cancelled`.
pub fn partition(
    space: Space,
    dim: usize,
    vectors: &[f32],
    rows_per_partition: usize,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<(Partitions, Vec<u32>)> {
    if dim == 0 || !vectors.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!(
            "vectors of length {} are not rows of dimension {dim}",
            vectors.len()
        )));
    }
    let n = vectors.len() / dim;
    let n32 = u32::try_from(n).map_err(|_| Error::invalid("too many rows to partition"))?;
    let k = n.div_ceil(rows_per_partition.max(1)).max(1);
    if k == 1 {
        let mut p = Partitions::single(dim, n32);
        if n > 0 {
            p.centroids = mean(space, dim, vectors, 0..n32);
        }
        return Ok((p, (0..n32).collect()));
    }
    let row = |i: usize| &vectors[i * dim..(i + 1) * dim];
    // A deterministic sample, spread over the rows.
    let sample_len = (k * SAMPLE_PER_CENTROID).min(n);
    let sample: Vec<usize> = (0..sample_len).map(|i| i * n / sample_len).collect();
    // Initial centroids: evenly spaced sample rows.
    let mut centroids: Vec<f32> = (0..k)
        .flat_map(|c| prepared(space, row(sample[c * sample_len / k])))
        .collect();
    for _ in 0..ITERATIONS {
        if stop() {
            return Err(Error::cancelled("partitioning stopped"));
        }
        let assigner = Assigner::new(space, dim, &centroids)?;
        let nearest: Vec<u32> = sample
            .par_iter()
            .map(|&i| assigner.nearest(&prepared(space, row(i))))
            .collect();
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (&i, &c) in sample.iter().zip(&nearest) {
            let v = prepared(space, row(i));
            let c = c as usize;
            counts[c] += 1;
            for (s, x) in sums[c * dim..(c + 1) * dim].iter_mut().zip(&v) {
                *s += f64::from(*x);
            }
        }
        for c in 0..k {
            let target = &mut centroids[c * dim..(c + 1) * dim];
            if counts[c] == 0 {
                // An empty cluster takes a sample row of the largest one's neighbourhood:
                // the sample row at a position derived from its number (deterministic).
                let donor = row(sample[(c * 7919) % sample_len]);
                target.copy_from_slice(&prepared(space, donor));
                continue;
            }
            for (t, s) in target.iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                *t = (*s / counts[c] as f64) as f32;
            }
            if space == Space::Cosine {
                let unit = normalized(target);
                target.copy_from_slice(&unit);
            }
        }
    }
    if stop() {
        return Err(Error::cancelled("partitioning stopped"));
    }
    let centroids = chained(space, dim, centroids);
    let assigner = Assigner::new(space, dim, &centroids)?;
    let assigned: Vec<u32> = (0..n)
        .into_par_iter()
        .map(|i| assigner.nearest(&prepared(space, row(i))))
        .collect();
    let (partitions, order) = arrange(dim, centroids, &assigned);
    Ok((partitions, order))
}

/// `centroids` reordered so that neighbours follow each other: from the first, each
/// next is the nearest of those not yet placed. Partitions are stored in this order, so
/// the partitions near a query — those a cold query reads — more often lie side by side
/// in the object and come in one ranged read (on the dev set, 32 of 200 partitions
/// probed are 16 runs instead of 27). Quadratic in the centroids: more than
/// [`MAX_CHAINED`] keep k-means' order.
fn chained(space: Space, dim: usize, centroids: Vec<f32>) -> Vec<f32> {
    let k = centroids.len() / dim.max(1);
    if k <= 2 || k > MAX_CHAINED {
        return centroids;
    }
    let centroid = |c: usize| &centroids[c * dim..(c + 1) * dim];
    let mut placed = vec![false; k];
    let mut order = Vec::with_capacity(k);
    let mut at = 0;
    placed[0] = true;
    order.push(0);
    for _ in 1..k {
        let here = centroid(at);
        let next = (0..k)
            .into_par_iter()
            .filter(|&c| !placed[c])
            .map(|c| (distance(space, here, centroid(c)), c))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|(_, c)| c)
            .expect("a centroid is left to place");
        placed[next] = true;
        order.push(next);
        at = next;
    }
    order
        .iter()
        .flat_map(|&c| centroid(c).iter().copied())
        .collect()
}

/// Assigns `vectors` to the nearest of `partitions`' centroids.
pub fn assign(space: Space, partitions: &Partitions, vectors: &[f32]) -> Result<Vec<u32>> {
    let dim = partitions.dim;
    let assigner = Assigner::new(space, dim, &partitions.centroids)?;
    Ok(vectors
        .par_chunks_exact(dim)
        .map(|v| assigner.nearest(&prepared(space, v)))
        .collect())
}

/// Partitions from per-row assignments: the centroids as given, the bounds counted, and
/// the order that sorts rows by partition (stable).
pub fn arrange(dim: usize, centroids: Vec<f32>, assigned: &[u32]) -> (Partitions, Vec<u32>) {
    let k = centroids.len() / dim.max(1);
    let mut counts = vec![0u32; k];
    for &a in assigned {
        counts[a as usize] += 1;
    }
    let mut bounds = Vec::with_capacity(k + 1);
    bounds.push(0u32);
    for c in &counts {
        bounds.push(bounds.last().copied().unwrap_or(0) + c);
    }
    let mut next: Vec<u32> = bounds[..k].to_vec();
    let mut order = vec![0u32; assigned.len()];
    for (row, &a) in assigned.iter().enumerate() {
        order[next[a as usize] as usize] = row as u32;
        next[a as usize] += 1;
    }
    (
        Partitions {
            dim,
            centroids,
            bounds,
        },
        order,
    )
}

/// A row as the space compares it with centroids (unit length for cosine).
fn prepared(space: Space, v: &[f32]) -> Vec<f32> {
    match space {
        Space::Cosine => normalized(v),
        _ => v.to_vec(),
    }
}

fn mean(space: Space, dim: usize, vectors: &[f32], rows: Range<u32>) -> Vec<f32> {
    let mut sum = vec![0f64; dim];
    let count = (rows.end - rows.start) as f64;
    for r in rows {
        let v = prepared(space, &vectors[r as usize * dim..(r as usize + 1) * dim]);
        for (s, x) in sum.iter_mut().zip(&v) {
            *s += f64::from(*x);
        }
    }
    let m: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
    match space {
        Space::Cosine => normalized(&m),
        _ => m,
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// `clusters` tight groups of `per` points around random centres.
    fn clustered(clusters: usize, per: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..clusters)
            .map(|_| (0..dim).map(|_| rng.gen_range(-10.0f32..10.0)).collect())
            .collect();
        (0..clusters * per)
            .flat_map(|i| {
                let c = &centres[i % clusters];
                c.iter()
                    .map(|x| x + rng.gen_range(-0.1f32..0.1))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn rows_end_up_grouped_and_in_a_partition_order() {
        let dim = 8;
        for space in [Space::L2, Space::Cosine, Space::Ip] {
            let vectors = clustered(10, 100, dim, 3);
            let never = || false;
            let (p, order) = partition(space, dim, &vectors, 100, &never).unwrap();
            p.check(1000).unwrap();
            assert_eq!(p.count(), 10);
            let mut seen = order.clone();
            seen.sort();
            assert_eq!(seen, (0..1000).collect::<Vec<u32>>(), "a permutation");
            // Each partition is sorted by original row (stable).
            for q in 0..p.count() {
                let rows = &order[p.rows(q).start as usize..p.rows(q).end as usize];
                assert!(rows.windows(2).all(|w| w[0] < w[1]));
            }
            if space != Space::Ip {
                // Tight clusters: every row's nearest partition holds it.
                for (i, &row) in order.iter().enumerate() {
                    let v = &vectors[row as usize * dim..(row as usize + 1) * dim];
                    let home = p.nearest(space, v, 1)[0];
                    assert!(p.rows(home).contains(&(i as u32)), "{space:?} row {row}");
                }
            }
            // Deterministic.
            assert_eq!(
                partition(space, dim, &vectors, 100, &never).unwrap(),
                (p, order)
            );
        }
    }

    /// Centroids are stored nearest after nearest: points on a line, shuffled with an
    /// end first, come out in line order; a partitioning's consecutive centroids lie
    /// closer together than k-means leaves them.
    #[test]
    fn partitions_are_stored_nearest_after_nearest() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut xs: Vec<f32> = (1..40).map(|x| x as f32).collect();
        for i in (1..xs.len()).rev() {
            xs.swap(i, rng.gen_range(0..=i));
        }
        xs.insert(0, 0.0);
        let line: Vec<f32> = xs.iter().flat_map(|&x| [x, 0.5]).collect();
        let chained = chained(Space::L2, 2, line);
        let order: Vec<f32> = chained.chunks_exact(2).map(|c| c[0]).collect();
        assert_eq!(order, (0..40).map(|x| x as f32).collect::<Vec<_>>());

        let path = |p: &Partitions| -> f32 {
            (1..p.count())
                .map(|i| distance(Space::L2, p.centroid(i - 1), p.centroid(i)))
                .sum()
        };
        let dim = 8;
        let vectors = clustered(60, 20, dim, 8);
        let never = || false;
        let (p, _) = partition(Space::L2, dim, &vectors, 20, &never).unwrap();
        let unchained = Partitions {
            centroids: {
                // The same centroids in an order that ignores where they lie.
                let mut c: Vec<&[f32]> = p.centroids.chunks_exact(dim).collect();
                for i in (1..c.len()).rev() {
                    c.swap(i, rng.gen_range(0..=i));
                }
                c.concat()
            },
            ..p.clone()
        };
        let (chained, shuffled) = (path(&p), path(&unchained));
        assert!(chained < 0.6 * shuffled, "{chained} vs {shuffled}");
    }

    #[test]
    fn small_inputs_are_one_partition_and_bad_input_an_error() {
        let never = || false;
        let (p, order) = partition(Space::L2, 2, &[1.0, 2.0, 3.0, 4.0], 100, &never).unwrap();
        assert_eq!((p.count(), order), (1, vec![0, 1]));
        assert_eq!(p.centroid(0), &[2.0, 3.0]);
        let (p, order) = partition(Space::L2, 2, &[], 100, &never).unwrap();
        assert_eq!((p.count(), order.len()), (1, 0));
        assert!(partition(Space::L2, 2, &[1.0], 100, &never).is_err());
        let stop = || true;
        let e = partition(Space::L2, 2, &clustered(4, 50, 2, 1), 10, &stop).unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::Cancelled);
    }

    #[test]
    fn new_rows_are_assigned_to_the_nearest_centroid() {
        let dim = 4;
        let vectors = clustered(100, 40, dim, 9);
        let never = || false;
        let (p, _) = partition(Space::L2, dim, &vectors, 40, &never).unwrap();
        let assigned = assign(Space::L2, &p, &vectors).unwrap();
        let agree = assigned
            .iter()
            .enumerate()
            .filter(|(i, &a)| {
                let v = &vectors[i * dim..(i + 1) * dim];
                p.nearest(Space::L2, v, 1)[0] == a as usize
            })
            .count();
        // Through the centroids' graph, nearly always the exact nearest.
        assert!(
            agree * 100 >= 98 * assigned.len(),
            "{agree} of {}",
            assigned.len()
        );
    }
}
