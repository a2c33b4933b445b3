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
/// neighbour is `< n` (a built graph's layer-0 lists are in increasing row order, which
/// the beam search does not depend on and format 4's packing uses); each upper layer's rows are a subset of the layer below; the entry
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
    /// a permutation of `0..n`). Layer 0's lists are sorted by the new rows (see
    /// [`Graph`]); the upper layers' keep their order.
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
            let start = neighbors0.len();
            neighbors0.extend(self.neighbors0(old).iter().map(|&nb| new_of[nb as usize]));
            neighbors0[start..].sort_unstable();
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

    /// Appends the graph as format 3 writes it: `offsets0` (n+1 u32), `neighbors0`
    /// (offsets0[n] u32), then the upper layers ([`Graph::write_upper`]). The entry point
    /// and layer count are in the caller's header.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        put_u32s(out, &self.offsets0);
        put_u32s(out, &self.neighbors0);
        self.write_upper(out);
    }

    /// Appends the graph as format 4 writes it: layer 0 packed (per row, its neighbour
    /// count, then its neighbours in increasing order as LEB128 varints: the first as the
    /// zigzag-coded difference from the row itself, each next one as its distance from the
    /// previous minus one), then the upper layers ([`Graph::write_upper`]). Rows are
    /// numbered in partition order, so most neighbours are a few rows away and take one
    /// byte instead of four.
    pub(crate) fn write_packed(&self, out: &mut Vec<u8>) {
        let mut sorted = Vec::new();
        for row in 0..self.offsets0.len().saturating_sub(1) {
            sorted.clear();
            sorted.extend_from_slice(self.neighbors0(row as u32));
            sorted.sort_unstable();
            sorted.dedup();
            put_varint(out, sorted.len() as u64);
            let mut previous = None;
            for &nb in &sorted {
                let code = match previous {
                    None => zigzag(i64::from(nb) - row as i64),
                    Some(p) => u64::from(nb - p - 1),
                };
                put_varint(out, code);
                previous = Some(nb);
            }
        }
        self.write_upper(out);
    }

    /// Appends the upper layers (layer 1 first): per layer `m`, `rows` (m), `offsets`
    /// (m+1), `neighbors` (offsets[m]), all u32.
    fn write_upper(&self, out: &mut Vec<u8>) {
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
        Self::read_upper(r, n, entry, layers, offsets0, neighbors0)
    }

    /// Reads what [`Graph::write_packed`] wrote, checking it as [`Graph::read`] does;
    /// every count is checked against the bytes left before anything is allocated for it.
    pub(crate) fn read_packed(
        r: &mut Reader<'_>,
        n: usize,
        entry: u32,
        layers: usize,
    ) -> Result<Self> {
        // Every row takes at least its count byte.
        if n > r.remaining() {
            return Err(corrupt(format!(
                "truncated layer 0: {n} rows, {} bytes left",
                r.remaining()
            )));
        }
        let mut offsets0 = Vec::with_capacity(n + 1);
        // Every neighbour takes at least a byte: what is left bounds their number.
        let mut neighbors0 = Vec::with_capacity(r.remaining());
        offsets0.push(0u32);
        for row in 0..n {
            let count = r.varint("layer 0 neighbour count")?;
            // Each neighbour takes at least a byte, and a row's distinct neighbours are
            // at most the rows (itself among them: formats 1 to 3 allow that).
            if count > r.remaining() as u64 || count > n as u64 {
                return Err(corrupt(format!("row {row} has {count} layer 0 neighbours")));
            }
            let mut previous: Option<u64> = None;
            for _ in 0..count {
                let code = r.varint("layer 0 neighbour")?;
                let nb = match previous {
                    None => i128::from(row as u64) + i128::from(unzigzag(code)),
                    Some(p) => i128::from(p) + i128::from(code) + 1,
                };
                if nb < 0 || nb >= n as i128 {
                    return Err(corrupt(format!(
                        "layer 0 neighbour {nb} of row {row} out of range for {n} rows"
                    )));
                }
                neighbors0.push(nb as u32);
                previous = Some(nb as u64);
            }
            offsets0.push(
                u32::try_from(neighbors0.len())
                    .map_err(|_| corrupt("too many layer 0 neighbours"))?,
            );
        }
        // Give back the slack (a loaded graph lives as long as its segment is cached).
        neighbors0.shrink_to_fit();
        Self::read_upper(r, n, entry, layers, offsets0, neighbors0)
    }

    /// Reads the upper layers after a checked layer 0 and checks the entry point.
    fn read_upper(
        r: &mut Reader<'_>,
        n: usize,
        entry: u32,
        layers: usize,
        offsets0: Vec<u32>,
        neighbors0: Vec<u32>,
    ) -> Result<Self> {
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

/// Signed to unsigned, small magnitudes to small codes: 0, −1, 1, −2 … → 0, 1, 2, 3 ….
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends `v` as an unsigned LEB128 varint (7 bits a byte, low first, high bit = more).
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
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

    /// An unsigned LEB128 varint of at most 10 bytes (a `u64`); overlong or truncated
    /// ones are errors.
    pub(crate) fn varint(&mut self, what: &str) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.take(1, what)?[0];
            if i == 9 && b > 1 {
                return Err(corrupt(format!("{what}: varint overflows 64 bits")));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt(format!("{what}: varint longer than 10 bytes")))
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

    /// Packing keeps every list (in row order) and upper layer, whatever the distances
    /// between rows, and is smaller than plain CSR when neighbours are near.
    #[test]
    fn packed_graph_round_trips() {
        let n = 70_000u32;
        let lists: Vec<Vec<u32>> = (0..n)
            .map(|row| match row % 5 {
                0 => vec![],
                1 => vec![0, n - 1],
                2 => vec![row.saturating_sub(3), row + 1, (row + 200).min(n - 1)],
                3 => vec![row],
                _ => vec![
                    (row + 1) % n,
                    (row + 2) % n,
                    (row + 9) % n,
                    (row + 60_000) % n,
                ],
            })
            .map(|mut l| {
                l.sort_unstable();
                l.dedup();
                l
            })
            .collect();
        let mut offsets0 = vec![0u32];
        let mut neighbors0 = Vec::new();
        for l in &lists {
            neighbors0.extend(l);
            offsets0.push(neighbors0.len() as u32);
        }
        let graph = Graph {
            entry: 4,
            offsets0,
            neighbors0,
            upper: vec![UpperLayer {
                rows: vec![4, 9, 69_999],
                offsets: vec![0, 2, 3, 4],
                neighbors: vec![1, 2, 0, 0],
            }],
        };
        let mut packed = Vec::new();
        graph.write_packed(&mut packed);
        let mut plain = Vec::new();
        graph.write(&mut plain);
        assert!(
            packed.len() * 2 < plain.len(),
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        let mut r = Reader::new(&packed);
        let back = Graph::read_packed(&mut r, n as usize, 4, 1).unwrap();
        assert_eq!(r.remaining(), 0);
        assert_eq!(back, graph);
        // Every truncation is an error.
        for len in [0, 1, packed.len() / 2, packed.len() - 1] {
            assert!(
                Graph::read_packed(&mut Reader::new(&packed[..len]), n as usize, 4, 1).is_err()
            );
        }
        // Two rows: a neighbour before row 0 or past the last row, a count larger than
        // the rows, row 1's neighbour before row 0.
        for bytes in [
            &[1u8, 1][..],
            &[1, 4],
            &[0, 2, 1, 1],
            &[0, 3, 1, 0, 0],
            &[0, 1, 3],
            &[1, 2, 1, 1, 0],
        ] {
            let read = Graph::read_packed(&mut Reader::new(bytes), 2, 0, 0);
            if bytes.len() == 5 && bytes[0] == 1 {
                // Valid (0 → 1, 1 → 0) with a byte left over for the caller to refuse.
                assert!(read.is_ok());
            } else {
                assert!(read.is_err(), "{bytes:?}");
            }
        }
    }

    /// A row may list itself (formats 1 to 3 allow it): a graph whose rows each list
    /// every row, itself included, packs and reads back (a fuzzed format 2 index once
    /// did not).
    #[test]
    fn a_row_listing_every_row_itself_included_round_trips() {
        let n = 3u32;
        let graph = Graph {
            entry: 0,
            offsets0: vec![0, 3, 6, 9],
            neighbors0: (0..n).flat_map(|_| 0..n).collect(),
            upper: Vec::new(),
        };
        let mut packed = Vec::new();
        graph.write_packed(&mut packed);
        let back = Graph::read_packed(&mut Reader::new(&packed), n as usize, 0, 0).unwrap();
        assert_eq!(back, graph);
    }

    #[test]
    fn varints_round_trip_and_overlong_ones_are_errors() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(Reader::new(&out).varint("v").unwrap(), v);
        }
        for v in [0i64, -1, 1, -70_000, 70_000, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert!(Reader::new(&[0x80; 10]).varint("v").is_err());
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint("v")
                .is_err()
        );
        assert!(Reader::new(&[0x80]).varint("v").is_err());
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
