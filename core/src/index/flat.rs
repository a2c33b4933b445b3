//! Resident f32 vectors and exact (brute-force) k-nearest search over them.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use fixedbitset::FixedBitSet;

use super::distance::{inv_norm, sort_key, Query};
use crate::model::Space;

/// Row-major vectors exactly as given to build, plus `1/‖v‖` per row for cosine (so
/// cosine is one dot product and one multiply, without a second, normalized copy).
#[derive(Debug, Clone)]
pub(crate) struct Vectors {
    pub(crate) dim: usize,
    pub(crate) data: Vec<f32>,
    /// Empty unless the space is cosine.
    inv_norms: Vec<f32>,
}

impl Vectors {
    /// `data.len()` must be a multiple of `dim` (callers check).
    pub(crate) fn new(space: Space, dim: usize, data: Vec<f32>) -> Self {
        let inv_norms = match space {
            Space::Cosine if dim > 0 => data.chunks_exact(dim).map(inv_norm).collect(),
            _ => Vec::new(),
        };
        Self {
            dim,
            data,
            inv_norms,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    #[inline]
    pub(crate) fn row(&self, row: u32) -> &[f32] {
        let start = row as usize * self.dim;
        &self.data[start..start + self.dim]
    }

    /// Chroma's distance from a prepared query to a row, NaN mapped to +∞.
    #[inline]
    pub(crate) fn distance(&self, query: &Query<'_>, row: u32) -> f32 {
        let inv = self.inv_norms.get(row as usize).copied().unwrap_or(1.0);
        sort_key(query.distance_to(self.row(row), inv))
    }

    /// Renumbers the rows in place: new row `i` is old row `order[i]` (a permutation of
    /// `0..len()`; callers check). Each cycle of the permutation is followed with one
    /// row of scratch space, so no second copy of the vectors is made.
    pub(crate) fn permute(&mut self, order: &[u32]) {
        let dim = self.dim;
        debug_assert_eq!(order.len(), self.len());
        let mut done = FixedBitSet::with_capacity(order.len());
        let mut first = vec![0f32; dim];
        for start in 0..order.len() {
            if done.contains(start) {
                continue;
            }
            first.copy_from_slice(self.row(start as u32));
            let mut at = start;
            loop {
                done.insert(at);
                let from = order[at] as usize;
                if from == start {
                    self.data[at * dim..(at + 1) * dim].copy_from_slice(&first);
                    break;
                }
                self.data
                    .copy_within(from * dim..(from + 1) * dim, at * dim);
                at = from;
            }
        }
        if !self.inv_norms.is_empty() {
            self.inv_norms = order
                .iter()
                .map(|&old| self.inv_norms[old as usize])
                .collect();
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        (self.data.capacity() + self.inv_norms.capacity()) * std::mem::size_of::<f32>()
    }
}

/// A row with its distance, ordered by distance then row id (a total order: distances
/// never hold NaN here, and −0 equals +0).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scored {
    pub(crate) dist: f32,
    pub(crate) row: u32,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .partial_cmp(&other.dist)
            .unwrap_or(Ordering::Equal)
            .then(self.row.cmp(&other.row))
    }
}

/// Keeps the `k` smallest of what it is offered.
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Scored>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k.saturating_add(1).min(1 << 16)),
        }
    }

    #[inline]
    pub(crate) fn offer(&mut self, item: Scored) {
        if self.heap.len() < self.k {
            self.heap.push(item);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if item < *worst {
                *worst = item;
            }
        }
    }

    /// The largest distance kept, once `k` items are kept.
    pub(crate) fn worst(&self) -> Option<f32> {
        (self.heap.len() == self.k)
            .then(|| self.heap.peek().map(|s| s.dist))
            .flatten()
    }

    /// Ascending by distance, ties by row id.
    pub(crate) fn into_sorted(self) -> Vec<(u32, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|s| (s.row, s.dist))
            .collect()
    }
}

/// Exact `k` nearest rows among the allowed ones (all rows if `allow` is None).
pub(crate) fn exact(
    vectors: &Vectors,
    query: &Query<'_>,
    k: usize,
    allow: Option<&FixedBitSet>,
) -> Vec<(u32, f32)> {
    let n = vectors.len();
    if k == 0 || n == 0 {
        return Vec::new();
    }
    let mut top = TopK::new(k);
    let mut offer = |row: usize| {
        let row = row as u32;
        top.offer(Scored {
            dist: vectors.distance(query, row),
            row,
        });
    };
    match allow {
        Some(allow) => allow.ones().take_while(|&r| r < n).for_each(&mut offer),
        None => (0..n).for_each(&mut offer),
    }
    top.into_sorted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sorts_by_distance_then_row_and_honours_the_filter() {
        // Rows 0 and 2 are duplicates: equal distance, so row order decides.
        let data = vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, -1.0, 0.0];
        let v = Vectors::new(Space::L2, 2, data);
        let q = Query::new(Space::L2, &[1.0, 0.0]);
        assert_eq!(
            exact(&v, &q, 10, None),
            vec![(0, 0.0), (2, 0.0), (1, 2.0), (3, 4.0)]
        );
        assert_eq!(exact(&v, &q, 1, None), vec![(0, 0.0)]);
        assert!(exact(&v, &q, 0, None).is_empty());
        let mut allow = FixedBitSet::with_capacity(100);
        allow.insert(3);
        allow.insert(1);
        allow.insert(50); // beyond the rows: ignored
        assert_eq!(exact(&v, &q, 10, Some(&allow)), vec![(1, 2.0), (3, 4.0)]);
        assert!(exact(&v, &q, 10, Some(&FixedBitSet::new())).is_empty());
    }

    #[test]
    fn permute_moves_every_row_and_its_norm() {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let (n, dim) = (257usize, 3usize);
        let data: Vec<f32> = (0..n * dim).map(|i| (i + 1) as f32).collect();
        let original = Vectors::new(Space::Cosine, dim, data);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Identity, one long cycle, a random permutation (cycles of every length).
        let identity: Vec<u32> = (0..n as u32).collect();
        let rotated: Vec<u32> = (0..n as u32).map(|i| (i + 1) % n as u32).collect();
        let mut shuffled = identity.clone();
        shuffled.shuffle(&mut rng);
        for order in [identity, rotated, shuffled] {
            let mut v = original.clone();
            v.permute(&order);
            for (new, &old) in order.iter().enumerate() {
                assert_eq!(v.row(new as u32), original.row(old));
                assert_eq!(v.inv_norms[new], original.inv_norms[old as usize]);
            }
        }
    }
}
