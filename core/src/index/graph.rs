//! The compact, read-only HNSW graph: layer 0 as CSR over row ids, the few upper-layer
//! nodes per layer as their own small CSR, searched with a greedy descent and a beam
//! search that marks visited rows in a reusable per-thread stamp array.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use fixedbitset::FixedBitSet;

use super::distance::{sort_key, Query};
use super::flat::Scored;
use super::quant::{Codes, QuantQuery};
use crate::error::{Error, Result};

/// One layer above 0: its nodes (row ids, strictly increasing) and, per node, its
/// neighbours as indices into `rows` (so the descent needs no lookup per edge).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UpperLayer {
    pub(crate) rows: Vec<u32>,
    pub(crate) offsets: Vec<u32>,
    pub(crate) neighbors: Vec<u32>,
}

impl UpperLayer {
    #[inline]
    pub(crate) fn neighbors(&self, local: usize) -> &[u32] {
        &self.neighbors[self.offsets[local] as usize..self.offsets[local + 1] as usize]
    }

    pub(crate) fn local_index(&self, row: u32) -> Option<usize> {
        self.rows.binary_search(&row).ok()
    }
}

/// The whole graph. Invariants (established by flattening, checked by [`Graph::read`]):
/// `offsets0` has `n + 1` non-decreasing entries ending at `neighbors0.len()`, every
/// neighbour is `< n`; each upper layer's rows are a subset of the layer below; the entry
/// point is a node of the top layer (any row when there is no upper layer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Graph {
    pub(crate) entry: u32,
    pub(crate) offsets0: Vec<u32>,
    pub(crate) neighbors0: Vec<u32>,
    /// Layer 1 first.
    pub(crate) upper: Vec<UpperLayer>,
}

/// Marks visited rows by writing the current search's stamp; a new search only bumps
/// the stamp, so nothing is cleared between searches.
#[derive(Default)]
struct Visited {
    stamps: Vec<u32>,
    current: u32,
    /// Scratch: the unvisited neighbours of the node being expanded.
    fresh: Vec<u32>,
}

impl Visited {
    fn begin(&mut self, n: usize) {
        if self.stamps.len() < n {
            self.stamps.resize(n, 0);
        }
        self.current = self.current.wrapping_add(1);
        if self.current == 0 {
            self.stamps.fill(0);
            self.current = 1;
        }
    }

    /// True the first time a row is seen in this search.
    #[inline]
    fn insert(&mut self, row: u32) -> bool {
        let slot = &mut self.stamps[row as usize];
        let fresh = *slot != self.current;
        *slot = self.current;
        fresh
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::new(Visited::default());
}

impl Graph {
    #[inline]
    pub(crate) fn neighbors0(&self, row: u32) -> &[u32] {
        let r = row as usize;
        &self.neighbors0[self.offsets0[r] as usize..self.offsets0[r + 1] as usize]
    }

    /// The allowed rows a beam of width `max(ef, k)` on layer 0 ends with, with their
    /// approximate (coded) distances, in no particular order: the candidates a caller
    /// re-scores exactly. The walk passes through disallowed rows; only allowed ones
    /// enter the result heap, so it stops only once `ef` allowed rows are closer than
    /// every open lead.
    pub(crate) fn search(
        &self,
        codes: &Codes,
        query: &Query<'_>,
        k: usize,
        ef: usize,
        allow: Option<&FixedBitSet>,
    ) -> Vec<Scored> {
        let n = codes.len();
        if n == 0 || k == 0 {
            return Vec::new();
        }
        let ef = ef.max(k);
        let allowed = |row: u32| allow.is_none_or(|a| a.contains(row as usize));
        let coded = QuantQuery::new(query.space(), query.values());
        let approx = |row: u32| sort_key(codes.distance(&coded, row));

        // Greedy descent through the upper layers.
        let mut cur = Scored {
            dist: approx(self.entry),
            row: self.entry,
        };
        for layer in self.upper.iter().rev() {
            let Some(mut local) = layer.local_index(cur.row) else {
                continue;
            };
            loop {
                let mut moved = false;
                for &nb in layer.neighbors(local) {
                    let row = layer.rows[nb as usize];
                    let cand = Scored {
                        dist: approx(row),
                        row,
                    };
                    if cand < cur {
                        cur = cand;
                        local = nb as usize;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }

        // Beam search on layer 0.
        VISITED.with_borrow_mut(|visited| {
            visited.begin(n);
            let mut candidates = BinaryHeap::with_capacity(ef * 4);
            let mut results: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef + 1);
            visited.insert(cur.row);
            candidates.push(Reverse(cur));
            if allowed(cur.row) {
                results.push(cur);
            }
            while let Some(Reverse(c)) = candidates.pop() {
                if results.len() >= ef && results.peek().is_some_and(|w| c > *w) {
                    break;
                }
                // Collect the unvisited neighbours and prefetch their vectors first, so
                // their loads overlap instead of each distance waiting on memory.
                let mut fresh = std::mem::take(&mut visited.fresh);
                fresh.clear();
                for &row in self.neighbors0(c.row) {
                    if visited.insert(row) {
                        codes.prefetch(row);
                        fresh.push(row);
                    }
                }
                for &row in &fresh {
                    let cand = Scored {
                        dist: approx(row),
                        row,
                    };
                    let full = results.len() >= ef;
                    if !full || results.peek().is_some_and(|w| cand < *w) {
                        candidates.push(Reverse(cand));
                        if allowed(row) {
                            results.push(cand);
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                }
                visited.fresh = fresh;
            }
            results.into_vec()
        })
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        let words = self.offsets0.capacity()
            + self.neighbors0.capacity()
            + self
                .upper
                .iter()
                .map(|l| l.rows.capacity() + l.offsets.capacity() + l.neighbors.capacity())
                .sum::<usize>();
        words * std::mem::size_of::<u32>()
            + self.upper.capacity() * std::mem::size_of::<UpperLayer>()
    }

    /// The same graph over renumbered rows: new row `i` is old row `order[i]` (`order` is
    /// a permutation of `0..n`). Every neighbour list keeps its order (nearest first).
    pub(crate) fn permuted(&self, order: &[u32]) -> Self {
        let n = order.len();
        let mut new_of = vec![0u32; n];
        for (new, &old) in order.iter().enumerate() {
            new_of[old as usize] = new as u32;
        }
        let mut offsets0 = Vec::with_capacity(n + 1);
        let mut neighbors0 = Vec::with_capacity(self.neighbors0.len());
        offsets0.push(0u32);
        for &old in order {
            neighbors0.extend(self.neighbors0(old).iter().map(|&nb| new_of[nb as usize]));
            offsets0.push(neighbors0.len() as u32);
        }
        let upper = self
            .upper
            .iter()
            .map(|layer| {
                // The layer's nodes by new row (rows stay strictly increasing), and where
                // each old local index went.
                let mut nodes: Vec<(u32, usize)> = layer
                    .rows
                    .iter()
                    .enumerate()
                    .map(|(local, &row)| (new_of[row as usize], local))
                    .collect();
                nodes.sort_unstable();
                let mut local_of = vec![0u32; nodes.len()];
                for (new_local, &(_, old_local)) in nodes.iter().enumerate() {
                    local_of[old_local] = new_local as u32;
                }
                let mut offsets = Vec::with_capacity(nodes.len() + 1);
                let mut neighbors = Vec::with_capacity(layer.neighbors.len());
                offsets.push(0u32);
                for &(_, old_local) in &nodes {
                    neighbors.extend(
                        layer
                            .neighbors(old_local)
                            .iter()
                            .map(|&nb| local_of[nb as usize]),
                    );
                    offsets.push(neighbors.len() as u32);
                }
                UpperLayer {
                    rows: nodes.into_iter().map(|(row, _)| row).collect(),
                    offsets,
                    neighbors,
                }
            })
            .collect();
        Self {
            entry: if n == 0 {
                self.entry
            } else {
                new_of[self.entry as usize]
            },
            offsets0,
            neighbors0,
            upper,
        }
    }

    /// Appends the graph: `offsets0` (n+1 u32), `neighbors0` (offsets0[n] u32), then per
    /// upper layer (layer 1 first) `m`, `rows` (m), `offsets` (m+1), `neighbors`
    /// (offsets[m]). The entry point and layer count are in the caller's header.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        put_u32s(out, &self.offsets0);
        put_u32s(out, &self.neighbors0);
        for layer in &self.upper {
            put_u32(out, layer.rows.len() as u32);
            put_u32s(out, &layer.rows);
            put_u32s(out, &layer.offsets);
            put_u32s(out, &layer.neighbors);
        }
    }

    /// Reads what [`Graph::write`] wrote for `n` rows and `layers` upper layers and checks
    /// every invariant the search relies on.
    pub(crate) fn read(r: &mut Reader<'_>, n: usize, entry: u32, layers: usize) -> Result<Self> {
        let offsets0 = r.u32s(n + 1, "layer 0 offsets")?;
        let edges = check_offsets(&offsets0, "layer 0 offsets")?;
        let neighbors0 = r.u32s(edges, "layer 0 neighbours")?;
        if let Some(bad) = neighbors0.iter().find(|&&id| id as usize >= n) {
            return Err(corrupt(format!(
                "layer 0 neighbour {bad} out of range for {n} rows"
            )));
        }
        if n > 0 && entry as usize >= n {
            return Err(corrupt(format!(
                "entry point {entry} out of range for {n} rows"
            )));
        }
        if n == 0 && layers > 0 {
            return Err(corrupt(format!("{layers} upper layers in an empty index")));
        }
        let mut upper: Vec<UpperLayer> = Vec::new();
        for l in 1..=layers {
            let m = r.u32(&format!("layer {l} size"))? as usize;
            if m == 0 {
                return Err(corrupt(format!("layer {l} is empty")));
            }
            let rows = r.u32s(m, &format!("layer {l} rows"))?;
            if rows.windows(2).any(|w| w[0] >= w[1]) {
                return Err(corrupt(format!("layer {l} rows not strictly increasing")));
            }
            if rows[m - 1] as usize >= n {
                return Err(corrupt(format!(
                    "layer {l} row {} out of range",
                    rows[m - 1]
                )));
            }
            if let Some(below) = upper.last() {
                if rows.iter().any(|row| below.local_index(*row).is_none()) {
                    return Err(corrupt(format!(
                        "layer {l} has a row missing from layer {}",
                        l - 1
                    )));
                }
            }
            let offsets = r.u32s(m + 1, &format!("layer {l} offsets"))?;
            let edges = check_offsets(&offsets, &format!("layer {l} offsets"))?;
            let neighbors = r.u32s(edges, &format!("layer {l} neighbours"))?;
            if let Some(bad) = neighbors.iter().find(|&&id| id as usize >= m) {
                return Err(corrupt(format!(
                    "layer {l} neighbour {bad} out of range for {m} nodes"
                )));
            }
            upper.push(UpperLayer {
                rows,
                offsets,
                neighbors,
            });
        }
        if let Some(top) = upper.last() {
            if top.local_index(entry).is_none() {
                return Err(corrupt(format!(
                    "entry point {entry} is not in the top layer"
                )));
            }
        }
        Ok(Self {
            entry,
            offsets0,
            neighbors0,
            upper,
        })
    }
}

/// Checks CSR offsets (start at 0, non-decreasing) and returns the edge count.
fn check_offsets(offsets: &[u32], what: &str) -> Result<usize> {
    if offsets.first() != Some(&0) {
        return Err(corrupt(format!("{what} do not start at 0")));
    }
    if offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(corrupt(format!("{what} decrease")));
    }
    Ok(offsets.last().copied().unwrap_or(0) as usize)
}

/// A structural error in an index object (the HNSW index or the sparse postings).
pub(crate) fn corrupt(message: impl std::fmt::Display) -> Error {
    Error::internal(format!("corrupt index: {message}"))
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32s(out: &mut Vec<u8>, vs: &[u32]) {
    out.reserve(vs.len() * 4);
    for v in vs {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A bounds-checked little-endian cursor that checks a length against the remaining
/// input before allocating for it.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8]> {
        if len > self.remaining() {
            return Err(corrupt(format!(
                "truncated {what}: need {len} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u32s(&mut self, count: usize, what: &str) -> Result<Vec<u32>> {
        let len = count
            .checked_mul(4)
            .ok_or_else(|| corrupt(format!("{what} too long")))?;
        let b = self.take(len, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub(crate) fn f32s(&mut self, count: usize, what: &str) -> Result<Vec<f32>> {
        let len = count
            .checked_mul(4)
            .ok_or_else(|| corrupt(format!("{what} too long")))?;
        let b = self.take(len, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visited_stamps_survive_wraparound() {
        let mut v = Visited::default();
        v.begin(4);
        assert!(v.insert(2));
        assert!(!v.insert(2));
        v.current = u32::MAX;
        v.begin(4);
        assert_eq!(v.current, 1);
        assert!(v.insert(2));
        v.begin(8);
        assert!(v.insert(2) && v.insert(7));
    }

    #[test]
    fn reader_rejects_overlong_counts_without_allocating() {
        let bytes = [1u8, 0, 0, 0, 2, 0];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u32("a").unwrap(), 1);
        assert!(r.u32("b").is_err());
        assert!(r.u32s(usize::MAX, "c").is_err());
        assert!(r.u32s(1 << 40, "d").is_err());
    }
}
