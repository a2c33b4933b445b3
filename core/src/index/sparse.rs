//! The sparse index of a segment: an inverted index of the sparse vectors in its
//! metadata. Per metadata key, per dimension, the rows with a value there and that value
//! (postings, rows ascending). Compaction builds it with the segment and writes it as the
//! segment's sparse object (when some row has a sparse vector), like the dense index; a
//! load reads it back instead of building it again. Segments written before sparse
//! objects existed get theirs built from their metadata when they load.
//!
//! A row's `q·d` sums `q[dim] · value` (in f64) over the dimensions it shares with the
//! query, in ascending dimension order: the order [`SparseVector::score`] merges them
//! in, so the two agree to the bit. Only rows sharing a dimension with the query are
//! found, which is what an exact sparse search returns.
//!
//! [`SparsePostings::top`] finds the best `k` without scoring every such row (MaxScore,
//! after Turtle and Flood): each posting list knows its largest and smallest value, so
//! each query term has an upper bound on what it adds to a dot product. Rows are visited
//! in ascending order through the lists of the *essential* terms only; once `k` rows
//! are scored, the terms with the smallest bounds whose bounds add up to less than the
//! `k`-th best dot product become non-essential: a row found only in those cannot reach
//! the top `k`, so their lists are no longer walked, only probed (by binary search) for
//! the rows the essential lists bring. The result is exact.
//!
//! # Serialization (little-endian; sealed like every object of a collection)
//! ```text
//! 0   8   magic "CHRSPRS\0"
//! 8   4   version = 1
//! 12  4   n: rows of the segment (every posting's row is below it)
//! 16  4   K: metadata keys, then per key, in ascending key order:
//!         4 key length, the key (UTF-8), 4 D: dimensions, then
//!         D entries (dimension, postings count c ≥ 1, largest value, smallest value),
//!         16 bytes each, dimensions strictly ascending,
//!         then each dimension's c postings in that order, 8 bytes each: row (u32,
//!         strictly ascending), value (f32, finite)
//! ```
//! The table before the postings lets a reader find a dimension's list and its bounds
//! without reading the others. Decoding checks all of it; nothing in a forged object can
//! make a search panic or read out of bounds.

use std::collections::HashMap;
use std::mem::size_of;

use fixedbitset::FixedBitSet;

use super::flat::{Scored, TopK};
use super::graph::{corrupt, put_u32, Reader};

use crate::error::Result;
use crate::model::sparse::SparseVector;
use crate::model::{Metadata, MetadataValue};

/// The postings of every metadata key that holds sparse vectors in some row.
#[derive(Debug, Default, PartialEq)]
pub struct SparsePostings {
    keys: HashMap<String, HashMap<u32, Postings>>,
}

/// Magic bytes of a serialized [`SparsePostings`].
const MAGIC: &[u8; 8] = b"CHRSPRS\0";
/// The version written.
const VERSION: u32 = 1;

/// One dimension's rows (ascending) and values, with the extremes of the values.
#[derive(Debug, Default, PartialEq)]
struct Postings {
    rows: Vec<(u32, f32)>,
    max: f32,
    min: f32,
}

/// A query term during [`SparsePostings::top`]: its weight, its postings and a cursor.
struct Term<'a> {
    q: f64,
    rows: &'a [(u32, f32)],
    at: usize,
    /// The most the term can add to a dot product (0 when it can only subtract).
    bound: f64,
    /// The largest magnitude it can add or subtract.
    size: f64,
    essential: bool,
}

/// Builds [`SparsePostings`] row by row, rows ascending (a segment's load decodes its
/// metadata a batch at a time).
#[derive(Debug, Default)]
pub struct SparseBuilder {
    keys: HashMap<String, HashMap<u32, Postings>>,
}

impl SparseBuilder {
    /// Adds row `row`'s sparse vectors (rows come in ascending order).
    pub fn add(&mut self, row: u32, meta: &Metadata) {
        for (key, value) in meta {
            let MetadataValue::SparseVector(v) = value else {
                continue;
            };
            let dims = self.keys.entry(key.clone()).or_default();
            for (&dim, &x) in v.indices.iter().zip(&v.values) {
                dims.entry(dim).or_default().rows.push((row, x));
            }
        }
    }

    pub fn finish(mut self) -> SparsePostings {
        for dims in self.keys.values_mut() {
            for p in dims.values_mut() {
                p.rows.shrink_to_fit();
                p.max = p.rows.iter().map(|r| r.1).fold(f32::NEG_INFINITY, f32::max);
                p.min = p.rows.iter().map(|r| r.1).fold(f32::INFINITY, f32::min);
            }
        }
        SparsePostings { keys: self.keys }
    }
}

impl SparsePostings {
    /// The postings of `rows` (row `i` is `rows[i]`).
    pub fn build(rows: &[Option<Metadata>]) -> Self {
        let mut builder = SparseBuilder::default();
        for (row, meta) in rows.iter().enumerate() {
            if let Some(meta) = meta {
                builder.add(row as u32, meta);
            }
        }
        builder.finish()
    }

    /// No row has a sparse vector.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The postings serialized (see the module documentation) for a segment of `rows`
    /// rows. Keys and dimensions are written in ascending order, so equal postings give
    /// equal bytes.
    pub fn to_bytes(&self, rows: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.memory_bytes());
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, VERSION);
        put_u32(&mut out, rows as u32);
        put_u32(&mut out, self.keys.len() as u32);
        let mut keys: Vec<(&String, &HashMap<u32, Postings>)> = self.keys.iter().collect();
        keys.sort_unstable_by_key(|k| k.0);
        for (key, dims) in keys {
            put_u32(&mut out, key.len() as u32);
            out.extend_from_slice(key.as_bytes());
            put_u32(&mut out, dims.len() as u32);
            let mut dims: Vec<(&u32, &Postings)> = dims.iter().collect();
            dims.sort_unstable_by_key(|d| *d.0);
            for (&dim, p) in &dims {
                put_u32(&mut out, dim);
                put_u32(&mut out, p.rows.len() as u32);
                out.extend_from_slice(&p.max.to_le_bytes());
                out.extend_from_slice(&p.min.to_le_bytes());
            }
            for (_, p) in &dims {
                for &(row, x) in &p.rows {
                    put_u32(&mut out, row);
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        out
    }

    /// Reads what [`SparsePostings::to_bytes`] wrote for a segment of `rows` rows; any
    /// structural fault is an error.
    pub fn from_bytes(bytes: &[u8], rows: usize) -> Result<Self> {
        let mut r = Reader::new(bytes);
        if r.take(MAGIC.len(), "sparse postings magic")? != MAGIC {
            return Err(corrupt("not sparse postings (bad magic)"));
        }
        let version = r.u32("sparse postings version")?;
        if version != VERSION {
            return Err(corrupt(format!(
                "sparse postings version {version} is not supported"
            )));
        }
        let n = r.u32("sparse postings row count")? as usize;
        if n != rows {
            return Err(corrupt(format!(
                "sparse postings of {n} rows for a segment of {rows}"
            )));
        }
        let key_count = r.u32("sparse postings key count")?;
        let mut keys: HashMap<String, HashMap<u32, Postings>> = HashMap::new();
        let mut previous_key: Option<String> = None;
        for _ in 0..key_count {
            let len = r.u32("sparse postings key length")? as usize;
            let key = std::str::from_utf8(r.take(len, "sparse postings key")?)
                .map_err(|_| corrupt("a sparse postings key is not UTF-8"))?
                .to_owned();
            if previous_key.as_ref().is_some_and(|p| *p >= key) {
                return Err(corrupt("sparse postings keys are not strictly ascending"));
            }
            let dim_count = r.u32("sparse postings dimension count")? as usize;
            let table = r.take(
                dim_count
                    .checked_mul(16)
                    .ok_or_else(|| corrupt("sparse postings table too long"))?,
                "sparse postings table",
            )?;
            let mut dims = HashMap::with_capacity(dim_count);
            let mut previous_dim: Option<u32> = None;
            for entry in table.chunks_exact(16) {
                let word = |i: usize| [entry[i], entry[i + 1], entry[i + 2], entry[i + 3]];
                let dim = u32::from_le_bytes(word(0));
                let count = u32::from_le_bytes(word(4)) as usize;
                let (max, min) = (f32::from_le_bytes(word(8)), f32::from_le_bytes(word(12)));
                if previous_dim.is_some_and(|p| p >= dim) {
                    return Err(corrupt(
                        "sparse postings dimensions are not strictly ascending",
                    ));
                }
                previous_dim = Some(dim);
                let list = read_postings(&mut r, count, n)?;
                let p = Postings {
                    max: list.iter().map(|e| e.1).fold(f32::NEG_INFINITY, f32::max),
                    min: list.iter().map(|e| e.1).fold(f32::INFINITY, f32::min),
                    rows: list,
                };
                if p.max.to_bits() != max.to_bits() || p.min.to_bits() != min.to_bits() {
                    return Err(corrupt(format!(
                        "the bounds of sparse dimension {dim} do not match its postings"
                    )));
                }
                dims.insert(dim, p);
            }
            previous_key = Some(key.clone());
            keys.insert(key, dims);
        }
        if r.remaining() != 0 {
            return Err(corrupt(format!(
                "{} bytes after the sparse postings",
                r.remaining()
            )));
        }
        Ok(Self { keys })
    }

    /// Heap bytes held, estimated.
    pub fn memory_bytes(&self) -> usize {
        self.keys
            .iter()
            .map(|(k, dims)| {
                k.capacity()
                    + dims
                        .values()
                        .map(|p| p.rows.capacity() * size_of::<(u32, f32)>() + 40)
                        .sum::<usize>()
            })
            .sum()
    }

    /// Every row of `allowed` (all rows when `None`) whose vector under `key` shares a
    /// dimension with `query`, with its score `1 − q·d`; rows ascending.
    pub fn scores(
        &self,
        key: &str,
        query: &SparseVector,
        allowed: Option<&FixedBitSet>,
    ) -> Vec<(u32, f32)> {
        let Some(dims) = self.keys.get(key) else {
            return Vec::new();
        };
        // Every posting of the query's dimensions, then summed per row: work in the
        // postings read, not in the segment's rows. The sort is stable, so a row's terms
        // stay in dimension order.
        let mut terms: Vec<(u32, f64)> = Vec::new();
        for (dim, &q) in query.indices.iter().zip(&query.values) {
            for &(row, x) in dims.get(dim).map(|p| p.rows.as_slice()).unwrap_or_default() {
                if allowed.is_none_or(|a| a.contains(row as usize)) {
                    terms.push((row, f64::from(q) * f64::from(x)));
                }
            }
        }
        terms.sort_by_key(|t| t.0);
        let mut out: Vec<(u32, f32)> = Vec::new();
        let mut i = 0;
        while i < terms.len() {
            let row = terms[i].0;
            let mut dot = 0f64;
            while i < terms.len() && terms[i].0 == row {
                dot += terms[i].1;
                i += 1;
            }
            out.push((row, 1.0 - dot as f32));
        }
        out
    }

    /// The rows [`SparsePostings::scores`] finds whose score is at most the `k`-th best
    /// (lowest) one, with their scores (every row tied with the `k`-th is kept, so that a
    /// caller ordering ties its own way gets the same `k` as from every score); see the
    /// module documentation.
    pub fn top(
        &self,
        key: &str,
        query: &SparseVector,
        allowed: Option<&FixedBitSet>,
        k: usize,
    ) -> Vec<(u32, f32)> {
        let Some(dims) = self.keys.get(key) else {
            return Vec::new();
        };
        if k == 0 {
            return Vec::new();
        }
        let mut terms: Vec<Term<'_>> = query
            .indices
            .iter()
            .zip(&query.values)
            .filter_map(|(dim, &q)| {
                let p = dims.get(dim)?;
                let q = f64::from(q);
                let (high, low) = (q * f64::from(p.max), q * f64::from(p.min));
                Some(Term {
                    q,
                    rows: &p.rows,
                    at: 0,
                    bound: high.max(low).max(0.0),
                    size: high.abs().max(low.abs()),
                    essential: true,
                })
            })
            .collect();
        // The bounds in ascending order and their running sums, each raised by more than
        // any rounding of a dot product over these terms can add (sums in another order,
        // terms of both signs), so that a bound is never below a computed dot product.
        let slack = terms.iter().map(|t| t.size).sum::<f64>() * 1e-9 + f64::MIN_POSITIVE;
        let mut by_bound: Vec<usize> = (0..terms.len()).collect();
        by_bound.sort_by(|&a, &b| terms[a].bound.total_cmp(&terms[b].bound));
        let mut sum = 0.0;
        let reach: Vec<f32> = by_bound
            .iter()
            .map(|&t| {
                sum += terms[t].bound;
                // The best score a row found only in this term and those before can get.
                1.0 - (sum + slack) as f32
            })
            .collect();
        let mut non_essential = 0;
        let mut best = TopK::new(k);
        let mut found: Vec<(u32, f32)> = Vec::new();
        // The next row of an essential term's list.
        let next = |terms: &[Term<'_>]| {
            terms
                .iter()
                .filter(|t| t.essential)
                .filter_map(|t| t.rows.get(t.at).map(|r| r.0))
                .min()
        };
        while let Some(row) = next(&terms) {
            // Every term in dimension order, as `scores` sums them.
            let mut dot = 0f64;
            for t in terms.iter_mut() {
                if t.rows.get(t.at).is_some_and(|r| r.0 < row) {
                    t.at += t.rows[t.at..].partition_point(|r| r.0 < row);
                }
                if let Some(&(r, x)) = t.rows.get(t.at) {
                    if r == row {
                        dot += t.q * f64::from(x);
                        t.at += 1;
                    }
                }
            }
            if allowed.is_some_and(|a| !a.contains(row as usize)) {
                continue;
            }
            let score = 1.0 - dot as f32;
            found.push((row, score));
            best.offer(Scored { dist: score, row });
            if let Some(theta) = best.worst() {
                while non_essential < by_bound.len() && reach[non_essential] > theta {
                    terms[by_bound[non_essential]].essential = false;
                    non_essential += 1;
                }
            }
        }
        let Some(theta) = best.worst() else {
            return found;
        };
        found.retain(|&(_, score)| score.total_cmp(&theta).is_le());
        found
    }
}

/// One dimension's `count` postings: rows strictly ascending below `rows`, values finite.
fn read_postings(r: &mut Reader<'_>, count: usize, rows: usize) -> Result<Vec<(u32, f32)>> {
    if count == 0 {
        return Err(corrupt("a sparse dimension without postings"));
    }
    let bytes = r.take(
        count
            .checked_mul(8)
            .ok_or_else(|| corrupt("sparse postings too long"))?,
        "sparse postings",
    )?;
    let mut list = Vec::with_capacity(count);
    let mut previous: Option<u32> = None;
    for e in bytes.chunks_exact(8) {
        let row = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let x = f32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        if row as usize >= rows || previous.is_some_and(|p| p >= row) {
            return Err(corrupt(format!(
                "sparse posting row {row} is out of order or past the segment's {rows} rows"
            )));
        }
        if !x.is_finite() {
            return Err(corrupt("a sparse posting value is not finite"));
        }
        previous = Some(row);
        list.push((row, x));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sparse(pairs: &[(u32, f32)]) -> SparseVector {
        SparseVector {
            indices: pairs.iter().map(|p| p.0).collect(),
            values: pairs.iter().map(|p| p.1).collect(),
            tokens: None,
        }
    }

    fn row(key: &str, v: SparseVector) -> Option<Metadata> {
        Some([(key.to_string(), MetadataValue::SparseVector(v))].into())
    }

    #[test]
    fn finds_rows_sharing_a_dimension_and_skips_others() {
        let rows = vec![
            row("s", sparse(&[(1, 0.5), (4, 0.5)])),
            None,
            row("s", sparse(&[(2, 1.0)])),
            row("t", sparse(&[(1, 1.0)])),
            row("s", sparse(&[(1, 0.25)])),
        ];
        let p = SparsePostings::build(&rows);
        let q = sparse(&[(1, 1.0), (4, 2.0)]);
        assert_eq!(p.scores("s", &q, None), vec![(0, -0.5), (4, 0.75)]);
        assert_eq!(p.scores("t", &q, None), vec![(3, 0.0)]);
        assert!(p.scores("u", &q, None).is_empty());
        let mut allowed = FixedBitSet::with_capacity(5);
        allowed.insert(4);
        assert_eq!(p.scores("s", &q, Some(&allowed)), vec![(4, 0.75)]);
        assert!(p.memory_bytes() > 0);
    }

    fn vector() -> impl Strategy<Value = SparseVector> {
        proptest::collection::btree_map(0u32..40, -2.0f32..2.0, 0..8).prop_map(|m| SparseVector {
            indices: m.keys().copied().collect(),
            values: m.values().copied().collect(),
            tokens: None,
        })
    }

    #[test]
    fn forged_postings_are_errors_never_panics() {
        let rows = vec![
            row("s", sparse(&[(1, 0.5), (4, -0.5)])),
            row("t", sparse(&[(2, 1.0)])),
            row("s", sparse(&[(1, 0.25), (9, 3.0)])),
        ];
        let p = SparsePostings::build(&rows);
        let bytes = p.to_bytes(rows.len());
        assert_eq!(SparsePostings::from_bytes(&bytes, 3).unwrap(), p);
        for len in 0..bytes.len() {
            assert!(
                SparsePostings::from_bytes(&bytes[..len], 3).is_err(),
                "{len} bytes"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SparsePostings::from_bytes(&longer, 3).is_err());
        let wrong_rows = SparsePostings::from_bytes(&bytes, 2).unwrap_err();
        assert!(
            wrong_rows.to_string().contains("segment of 2"),
            "{wrong_rows}"
        );
        // Every single flipped bit is caught or decodes to well-formed postings.
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut forged = bytes.clone();
                forged[i] ^= 1 << bit;
                if let Ok(q) = SparsePostings::from_bytes(&forged, 3) {
                    for dims in q.keys.values() {
                        for list in dims.values() {
                            assert!(list.rows.windows(2).all(|w| w[0].0 < w[1].0));
                            assert!(list.rows.iter().all(|r| r.0 < 3 && r.1.is_finite()));
                        }
                    }
                }
            }
        }
        let mut bad_bound = bytes.clone();
        // The first key is "s" (ascending), its first table entry is dimension 1, whose
        // largest value sits 8 bytes into the entry.
        let entry = 20 + 4 + 1 + 4;
        bad_bound[entry + 8..entry + 12].copy_from_slice(&7.0f32.to_le_bytes());
        let e = SparsePostings::from_bytes(&bad_bound, 3).unwrap_err();
        assert!(
            e.to_string().contains("bounds of sparse dimension 1"),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn postings_round_trip_through_their_bytes(
            rows in proptest::collection::vec(proptest::option::of(vector()), 0..40),
            other in proptest::collection::vec(proptest::option::of(vector()), 0..40),
        ) {
            let metas: Vec<Option<Metadata>> = rows
                .iter()
                .zip(other.iter().chain(std::iter::repeat(&None)))
                .map(|(a, b)| {
                    let mut m = Metadata::new();
                    if let Some(a) = a {
                        m.insert("s".into(), MetadataValue::SparseVector(a.clone()));
                    }
                    if let Some(b) = b {
                        m.insert("other".into(), MetadataValue::SparseVector(b.clone()));
                    }
                    (!m.is_empty()).then_some(m)
                })
                .collect();
            let p = SparsePostings::build(&metas);
            let bytes = p.to_bytes(metas.len());
            let back = SparsePostings::from_bytes(&bytes, metas.len()).unwrap();
            prop_assert_eq!(back.to_bytes(metas.len()), bytes);
            prop_assert_eq!(back, p);
        }

        #[test]
        fn top_keeps_exactly_the_rows_at_or_below_the_kth_score(
            rows in proptest::collection::vec(proptest::option::of(vector()), 0..60),
            query in vector(),
            k in 1usize..12,
            mask in proptest::collection::vec(any::<bool>(), 60),
        ) {
            let metas: Vec<Option<Metadata>> =
                rows.iter().map(|v| v.clone().and_then(|v| row("s", v))).collect();
            let p = SparsePostings::build(&metas);
            let mut allowed = FixedBitSet::with_capacity(rows.len());
            for (i, on) in mask.iter().take(rows.len()).enumerate() {
                allowed.set(i, *on);
            }
            for allowed in [None, Some(&allowed)] {
                let all = p.scores("s", &query, allowed);
                let mut sorted: Vec<f32> = all.iter().map(|s| s.1).collect();
                sorted.sort_by(f32::total_cmp);
                let want: Vec<(u32, u32)> = match sorted.get(k - 1) {
                    Some(&theta) => all
                        .iter()
                        .filter(|s| s.1.total_cmp(&theta).is_le())
                        .map(|(r, s)| (*r, s.to_bits()))
                        .collect(),
                    None => all.iter().map(|(r, s)| (*r, s.to_bits())).collect(),
                };
                let mut got: Vec<(u32, u32)> = p
                    .top("s", &query, allowed, k)
                    .into_iter()
                    .map(|(r, s)| (r, s.to_bits()))
                    .collect();
                got.sort_unstable();
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn scores_equal_the_per_vector_scores_to_the_bit(
            rows in proptest::collection::vec(proptest::option::of(vector()), 0..30),
            query in vector(),
        ) {
            let metas: Vec<Option<Metadata>> =
                rows.iter().map(|v| v.clone().and_then(|v| row("s", v))).collect();
            let got = SparsePostings::build(&metas).scores("s", &query, None);
            let want: Vec<(u32, f32)> = rows
                .iter()
                .enumerate()
                .filter_map(|(i, v)| query.score(v.as_ref()?).map(|s| (i as u32, s)))
                .collect();
            prop_assert_eq!(
                got.iter().map(|(r, s)| (*r, s.to_bits())).collect::<Vec<_>>(),
                want.iter().map(|(r, s)| (*r, s.to_bits())).collect::<Vec<_>>()
            );
        }
    }
}
