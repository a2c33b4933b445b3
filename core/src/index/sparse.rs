//! The sparse index of a segment: an inverted index of the sparse vectors in its
//! metadata. Per metadata key, per dimension, the rows with a value there and that value
//! (postings, rows ascending). Built with the segment's filter columns when the segment is
//! loaded (after a compaction wrote it, or from storage), from the same metadata.
//!
//! A sparse query accumulates `q·d` term at a time: for each of its dimensions in
//! ascending order, each posting adds `q[dim] · value` (in f64) to its row. A row's sum
//! therefore takes its terms in the same order as [`SparseVector::score`] merges them,
//! and the two agree to the bit. Only rows sharing a dimension with the query are found,
//! which is what an exact sparse search returns.

use std::collections::HashMap;
use std::mem::size_of;

use fixedbitset::FixedBitSet;

use crate::model::sparse::SparseVector;
use crate::model::{Metadata, MetadataValue};

/// The postings of every metadata key that holds sparse vectors in some row.
#[derive(Debug, Default)]
pub struct SparsePostings {
    keys: HashMap<String, HashMap<u32, Vec<(u32, f32)>>>,
}

impl SparsePostings {
    /// The postings of `rows` (row `i` is `rows[i]`).
    pub fn build(rows: &[Option<Metadata>]) -> Self {
        let mut keys: HashMap<String, HashMap<u32, Vec<(u32, f32)>>> = HashMap::new();
        for (row, meta) in rows.iter().enumerate() {
            for (key, value) in meta.iter().flatten() {
                let MetadataValue::SparseVector(v) = value else {
                    continue;
                };
                let dims = keys.entry(key.clone()).or_default();
                for (&dim, &x) in v.indices.iter().zip(&v.values) {
                    dims.entry(dim).or_default().push((row as u32, x));
                }
            }
        }
        for dims in keys.values_mut() {
            dims.values_mut().for_each(Vec::shrink_to_fit);
        }
        Self { keys }
    }

    /// Heap bytes held, estimated.
    pub fn memory_bytes(&self) -> usize {
        self.keys
            .iter()
            .map(|(k, dims)| {
                k.capacity()
                    + dims
                        .values()
                        .map(|p| p.capacity() * size_of::<(u32, f32)>() + 32)
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
            for &(row, x) in dims.get(dim).map(Vec::as_slice).unwrap_or_default() {
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

    proptest! {
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
