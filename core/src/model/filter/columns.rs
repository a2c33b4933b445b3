//! Column-wise metadata of an immutable segment, and filter evaluation over it.
//!
//! [`MetadataColumns`] stores, per metadata key, one typed column per value type that
//! occurs under the key: bools as two bitsets, ints as `Vec<i64>` and floats as `Vec<f64>`
//! with a presence bitset, strings dictionary-encoded as `Vec<u32>` codes, and array values
//! flattened to `(row, element)` pairs. [`Filter::select`] evaluates a filter over all rows
//! at once with tight loops over those vectors, with exactly the semantics of
//! [`Filter::matches`] (see [`super`]); a property test below keeps them equal.

use std::collections::HashMap;
use std::mem::size_of;

use fixedbitset::FixedBitSet;

use super::{CmpOp, Filter, MetadataOp, Number, Scalar, Where, WhereDocument};
use crate::model::packed::PackedStrings;
use crate::model::record::{Metadata, MetadataValue};

/// Sentinel string code of a row without a string value.
const NO_CODE: u32 = u32::MAX;
const BLOCK_BITS: usize = usize::BITS as usize;

/// The metadata of `len()` rows, one column set per key.
#[derive(Debug, Clone, Default)]
pub struct MetadataColumns {
    rows: usize,
    keys: HashMap<String, KeyColumns>,
}

/// Every value stored under one key; each row is in at most one of the typed columns.
#[derive(Debug, Clone, Default)]
struct KeyColumns {
    bools: Option<BoolColumn>,
    ints: Option<NumColumn<i64>>,
    floats: Option<NumColumn<f64>>,
    strs: Option<StrColumn>,
    bool_arrays: Option<Elements<bool>>,
    int_arrays: Option<Elements<i64>>,
    float_arrays: Option<Elements<f64>>,
    /// Elements are codes in `dict`.
    str_arrays: Option<Elements<u32>>,
    /// Codes of every string under this key, scalar or array element.
    dict: HashMap<String, u32>,
}

#[derive(Debug, Clone)]
struct BoolColumn {
    present: FixedBitSet,
    value: FixedBitSet,
}

#[derive(Debug, Clone)]
struct NumColumn<T> {
    present: FixedBitSet,
    /// One per row; 0 where absent.
    values: Vec<T>,
}

#[derive(Debug, Clone)]
struct StrColumn {
    /// One per row; `NO_CODE` where absent.
    codes: Vec<u32>,
}

/// Array elements as `(row, element)` pairs.
#[derive(Debug, Clone)]
struct Elements<T> {
    rows: Vec<u32>,
    values: Vec<T>,
}

impl<T> Default for Elements<T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<T: Copy> Elements<T> {
    fn push(&mut self, row: usize, items: impl IntoIterator<Item = T>) {
        for v in items {
            self.rows.push(row as u32);
            self.values.push(v);
        }
    }

    /// Rows having an element satisfying `pred`.
    fn rows_where(&self, n: usize, pred: impl Fn(T) -> bool) -> FixedBitSet {
        let mut out = FixedBitSet::with_capacity(n);
        for (&r, &v) in self.rows.iter().zip(&self.values) {
            if pred(v) {
                out.insert(r as usize);
            }
        }
        out
    }

    fn bytes(&self) -> usize {
        self.rows.capacity() * size_of::<u32>() + self.values.capacity() * size_of::<T>()
    }
}

impl<T: Copy + Default> NumColumn<T> {
    fn new(n: usize) -> Self {
        Self {
            present: FixedBitSet::with_capacity(n),
            values: vec![T::default(); n],
        }
    }

    fn set(&mut self, row: usize, v: T) {
        self.present.insert(row);
        self.values[row] = v;
    }

    /// Rows with a value satisfying `pred`.
    fn rows_where(&self, pred: impl Fn(T) -> bool) -> FixedBitSet {
        let mut out = bits_where(&self.values, pred);
        out.intersect_with(&self.present);
        out
    }

    fn bytes(&self) -> usize {
        self.values.capacity() * size_of::<T>() + bitset_bytes(&self.present)
    }
}

/// A bitset with bit `i` set iff `pred(values[i])`, built a machine word at a time.
fn bits_where<T: Copy>(values: &[T], pred: impl Fn(T) -> bool) -> FixedBitSet {
    let mut out = FixedBitSet::with_capacity(values.len());
    for (block, chunk) in out.as_mut_slice().iter_mut().zip(values.chunks(BLOCK_BITS)) {
        let mut bits = 0usize;
        for (j, &v) in chunk.iter().enumerate() {
            bits |= usize::from(pred(v)) << j;
        }
        *block = bits;
    }
    out
}

fn bitset_bytes(b: &FixedBitSet) -> usize {
    std::mem::size_of_val(b.as_slice())
}

fn complement(mut b: FixedBitSet) -> FixedBitSet {
    b.toggle_range(..);
    b
}

/// Builds [`MetadataColumns`] row by row (a segment's load decodes its metadata a batch
/// at a time, and does not hold every row's map at once).
#[derive(Debug)]
pub struct ColumnsBuilder {
    rows: usize,
    keys: HashMap<String, KeyColumns>,
}

impl ColumnsBuilder {
    /// Sets row `row`'s metadata (rows left unset have none). Panics if `row` is not
    /// below the builder's rows.
    pub fn add(&mut self, row: usize, meta: &Metadata) {
        assert!(row < self.rows, "row {row} of {}", self.rows);
        for (key, value) in meta {
            let col = match self.keys.get_mut(key) {
                Some(col) => col,
                None => self.keys.entry(key.clone()).or_default(),
            };
            col.push(self.rows, row, value);
        }
    }

    pub fn finish(mut self) -> MetadataColumns {
        for col in self.keys.values_mut() {
            col.dict.shrink_to_fit();
        }
        MetadataColumns {
            rows: self.rows,
            keys: self.keys,
        }
    }
}

impl MetadataColumns {
    /// A builder of the columns of `rows` rows.
    pub fn builder(rows: usize) -> ColumnsBuilder {
        assert!(
            rows < u32::MAX as usize,
            "a segment holds fewer than 2^32 rows"
        );
        ColumnsBuilder {
            rows,
            keys: HashMap::new(),
        }
    }

    /// Builds the columns of `rows` (row `i` is `rows[i]`).
    pub fn build(rows: &[Option<Metadata>]) -> Self {
        let mut builder = Self::builder(rows.len());
        for (row, meta) in rows.iter().enumerate() {
            if let Some(meta) = meta {
                builder.add(row, meta);
            }
        }
        builder.finish()
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Same as [`MetadataColumns::estimated_bytes`].
    pub fn memory_bytes(&self) -> usize {
        self.estimated_bytes()
    }

    /// An estimate of the heap bytes held, for cache accounting.
    pub fn estimated_bytes(&self) -> usize {
        size_of::<Self>()
            + self
                .keys
                .iter()
                .map(|(k, c)| k.capacity() + size_of::<(String, KeyColumns)>() + c.bytes())
                .sum::<usize>()
    }
}

impl KeyColumns {
    fn code(&mut self, s: &str) -> u32 {
        if let Some(&c) = self.dict.get(s) {
            return c;
        }
        let c = self.dict.len() as u32;
        self.dict.insert(s.to_owned(), c);
        c
    }

    fn push(&mut self, n: usize, row: usize, value: &MetadataValue) {
        match value {
            MetadataValue::Bool(b) => {
                let col = self.bools.get_or_insert_with(|| BoolColumn {
                    present: FixedBitSet::with_capacity(n),
                    value: FixedBitSet::with_capacity(n),
                });
                col.present.insert(row);
                col.value.set(row, *b);
            }
            MetadataValue::Int(i) => self
                .ints
                .get_or_insert_with(|| NumColumn::new(n))
                .set(row, *i),
            MetadataValue::Float(f) => self
                .floats
                .get_or_insert_with(|| NumColumn::new(n))
                .set(row, *f),
            MetadataValue::Str(s) => {
                let code = self.code(s);
                self.strs
                    .get_or_insert_with(|| StrColumn {
                        codes: vec![NO_CODE; n],
                    })
                    .codes[row] = code;
            }
            MetadataValue::BoolArray(a) => self
                .bool_arrays
                .get_or_insert_with(Default::default)
                .push(row, a.iter().copied()),
            MetadataValue::IntArray(a) => self
                .int_arrays
                .get_or_insert_with(Default::default)
                .push(row, a.iter().copied()),
            MetadataValue::FloatArray(a) => self
                .float_arrays
                .get_or_insert_with(Default::default)
                .push(row, a.iter().copied()),
            MetadataValue::StrArray(a) => {
                let codes: Vec<u32> = a.iter().map(|s| self.code(s)).collect();
                self.str_arrays
                    .get_or_insert_with(Default::default)
                    .push(row, codes);
            }
            // No filter operator matches a sparse vector (its negations match it, as
            // they match a missing key): it needs no column.
            MetadataValue::SparseVector(_) => {}
        }
    }

    fn bytes(&self) -> usize {
        // Per dictionary entry: the string, the slot, about one control byte per slot.
        let mut b = self
            .dict
            .keys()
            .map(|k| k.capacity() + size_of::<(String, u32)>() + 1)
            .sum();
        if let Some(c) = &self.bools {
            b += bitset_bytes(&c.present) + bitset_bytes(&c.value);
        }
        b += self.ints.as_ref().map_or(0, NumColumn::bytes);
        b += self.floats.as_ref().map_or(0, NumColumn::bytes);
        b += self
            .strs
            .as_ref()
            .map_or(0, |c| c.codes.capacity() * size_of::<u32>());
        b += self.bool_arrays.as_ref().map_or(0, Elements::bytes);
        b += self.int_arrays.as_ref().map_or(0, Elements::bytes);
        b += self.float_arrays.as_ref().map_or(0, Elements::bytes);
        b += self.str_arrays.as_ref().map_or(0, Elements::bytes);
        b
    }

    /// Rows whose scalar value equals `q` (the semantics of `Scalar::matches_value`).
    fn eq(&self, n: usize, q: &Scalar) -> FixedBitSet {
        match q {
            Scalar::Bool(b) => match &self.bools {
                Some(c) => {
                    let mut out = c.present.clone();
                    if *b {
                        out.intersect_with(&c.value);
                    } else {
                        out.difference_with(&c.value);
                    }
                    out
                }
                None => FixedBitSet::with_capacity(n),
            },
            Scalar::Str(s) => match (&self.strs, self.dict.get(s)) {
                (Some(c), Some(&code)) => bits_where(&c.codes, |v| v == code),
                _ => FixedBitSet::with_capacity(n),
            },
            Scalar::Int(_) | Scalar::Float(_) => self.cmp_num(n, num(q), NumPred::Eq),
        }
    }

    /// Rows whose int or float value `v` satisfies `pred` against `q`, with the
    /// comparison rules of `Number::compare`.
    fn cmp_num(&self, n: usize, q: Number, pred: NumPred) -> FixedBitSet {
        // One specialized loop per operator: `year >= 2024` is a plain scan of a `Vec<i64>`.
        macro_rules! scan {
            ($col:expr, |$v:ident| $lhs:expr, $q:expr) => {
                match pred {
                    NumPred::Eq => $col.rows_where(|$v| $lhs == $q),
                    NumPred::Cmp(CmpOp::Gt) => $col.rows_where(|$v| $lhs > $q),
                    NumPred::Cmp(CmpOp::Gte) => $col.rows_where(|$v| $lhs >= $q),
                    NumPred::Cmp(CmpOp::Lt) => $col.rows_where(|$v| $lhs < $q),
                    NumPred::Cmp(CmpOp::Lte) => $col.rows_where(|$v| $lhs <= $q),
                }
            };
        }
        let mut out = match (&self.ints, q) {
            (Some(c), Number::Int(q)) => scan!(c, |v| v, q),
            (Some(c), Number::Float(q)) => scan!(c, |v| v as f64, q),
            (None, _) => FixedBitSet::with_capacity(n),
        };
        if let Some(c) = &self.floats {
            let q = q.as_f64();
            out.union_with(&scan!(c, |v| v, q));
        }
        out
    }

    /// Rows with an array value containing `q` (the semantics of `Scalar::is_element_of`).
    fn contains(&self, n: usize, q: &Scalar) -> FixedBitSet {
        let empty = || FixedBitSet::with_capacity(n);
        match q {
            Scalar::Bool(b) => self.bool_arrays.as_ref().map_or_else(empty, |e| {
                let b = *b;
                e.rows_where(n, |v| v == b)
            }),
            Scalar::Str(s) => match (&self.str_arrays, self.dict.get(s)) {
                (Some(e), Some(&code)) => e.rows_where(n, |v| v == code),
                _ => empty(),
            },
            Scalar::Int(_) | Scalar::Float(_) => {
                let q = num(q);
                let eq = |v: Number| v.compare(q) == Some(std::cmp::Ordering::Equal);
                let mut out = self
                    .int_arrays
                    .as_ref()
                    .map_or_else(empty, |e| e.rows_where(n, |v| eq(Number::Int(v))));
                if let Some(e) = &self.float_arrays {
                    out.union_with(&e.rows_where(n, |v| eq(Number::Float(v))));
                }
                out
            }
        }
    }
}

/// A numeric predicate against an operand.
#[derive(Debug, Clone, Copy)]
enum NumPred {
    Eq,
    Cmp(CmpOp),
}

fn num(q: &Scalar) -> Number {
    match q {
        Scalar::Int(i) => Number::Int(*i),
        Scalar::Float(f) => Number::Float(*f),
        _ => unreachable!("only called with numbers"),
    }
}

impl MetadataOp {
    fn select(&self, col: Option<&KeyColumns>, n: usize) -> FixedBitSet {
        let Some(col) = col else {
            // No row has the key: only the negated operators match, and they match all.
            return match self {
                MetadataOp::Ne(_) | MetadataOp::Nin(_) | MetadataOp::NotContains(_) => {
                    complement(FixedBitSet::with_capacity(n))
                }
                _ => FixedBitSet::with_capacity(n),
            };
        };
        match self {
            MetadataOp::Eq(q) => col.eq(n, q),
            MetadataOp::Ne(q) => complement(col.eq(n, q)),
            MetadataOp::In(list) => in_list(col, n, list),
            MetadataOp::Nin(list) => complement(in_list(col, n, list)),
            MetadataOp::Contains(q) => col.contains(n, q),
            MetadataOp::NotContains(q) => complement(col.contains(n, q)),
            MetadataOp::Cmp(op, q) => col.cmp_num(n, *q, NumPred::Cmp(*op)),
        }
    }
}

fn in_list(col: &KeyColumns, n: usize, list: &[Scalar]) -> FixedBitSet {
    // Strings: one pass over the codes against the set of wanted codes.
    if list.iter().all(|s| matches!(s, Scalar::Str(_))) {
        let Some(c) = &col.strs else {
            return FixedBitSet::with_capacity(n);
        };
        let mut wanted = FixedBitSet::with_capacity(col.dict.len());
        for s in list {
            if let Scalar::Str(s) = s {
                if let Some(&code) = col.dict.get(s) {
                    wanted.insert(code as usize);
                }
            }
        }
        return bits_where(&c.codes, |v| v != NO_CODE && wanted.contains(v as usize));
    }
    let mut out = FixedBitSet::with_capacity(n);
    for q in list {
        out.union_with(&col.eq(n, q));
    }
    out
}

/// The row of a record id in the rows being filtered (`None`: not among them).
pub type RowOf<'a> = &'a dyn Fn(&str) -> Option<u32>;

impl Where {
    /// The rows (`0..cols.len()`) that match, as [`Where::matches`] would decide;
    /// `row_of` finds an id's row (for `#id` conditions).
    pub fn select(
        &self,
        cols: &MetadataColumns,
        documents: &PackedStrings,
        row_of: RowOf<'_>,
    ) -> FixedBitSet {
        let n = cols.rows;
        match self {
            Where::And(children) => {
                let mut it = children.iter();
                let mut out = match it.next() {
                    Some(c) => c.select(cols, documents, row_of),
                    None => return complement(FixedBitSet::with_capacity(n)),
                };
                for c in it {
                    if out.is_clear() {
                        break;
                    }
                    out.intersect_with(&c.select(cols, documents, row_of));
                }
                out
            }
            Where::Or(children) => {
                let mut out = FixedBitSet::with_capacity(n);
                for c in children {
                    out.union_with(&c.select(cols, documents, row_of));
                }
                out
            }
            Where::Document(d) => d.select_n(n, documents),
            Where::Metadata { key, op } => op.select(cols.keys.get(key), n),
            Where::Id { ids, negated } => {
                let mut out = FixedBitSet::with_capacity(n);
                for row in ids.iter().filter_map(|id| row_of(id)) {
                    if (row as usize) < n {
                        out.insert(row as usize);
                    }
                }
                if *negated {
                    complement(out)
                } else {
                    out
                }
            }
        }
    }
}

impl WhereDocument {
    /// The rows (`0..documents.len()`) whose document matches, as [`WhereDocument::matches`].
    pub fn select(&self, documents: &PackedStrings) -> FixedBitSet {
        self.select_n(documents.len(), documents)
    }

    /// Rows `0..n`; rows beyond `documents` have no document.
    fn select_n(&self, n: usize, documents: &PackedStrings) -> FixedBitSet {
        debug_assert_eq!(n, documents.len(), "one document slot per row");
        match self {
            WhereDocument::And(children) => {
                let mut out = complement(FixedBitSet::with_capacity(n));
                for c in children {
                    out.intersect_with(&c.select_n(n, documents));
                }
                out
            }
            WhereDocument::Or(children) => {
                let mut out = FixedBitSet::with_capacity(n);
                for c in children {
                    out.union_with(&c.select_n(n, documents));
                }
                out
            }
            WhereDocument::Contains(s) => docs_where(n, documents, |d| d.contains(s.as_str())),
            WhereDocument::NotContains(s) => {
                complement(docs_where(n, documents, |d| d.contains(s.as_str())))
            }
            WhereDocument::Regex(r) => docs_where(n, documents, |d| r.is_match(d)),
            WhereDocument::NotRegex(r) => complement(docs_where(n, documents, |d| r.is_match(d))),
        }
    }
}

/// Rows having a document satisfying `pred`.
fn docs_where(n: usize, documents: &PackedStrings, pred: impl Fn(&str) -> bool) -> FixedBitSet {
    let mut out = FixedBitSet::with_capacity(n);
    for (i, d) in documents.iter().take(n).enumerate() {
        if d.is_some_and(&pred) {
            out.insert(i);
        }
    }
    out
}

impl Filter {
    /// The rows (`0..cols.len()`) that match, exactly as [`Filter::matches`] would decide
    /// row by row. `documents[i]` is row `i`'s document; `row_of` finds an id's row.
    pub fn select(
        &self,
        cols: &MetadataColumns,
        documents: &PackedStrings,
        row_of: RowOf<'_>,
    ) -> FixedBitSet {
        let n = cols.rows;
        let mut out = match &self.where_ {
            Some(w) => w.select(cols, documents, row_of),
            None => complement(FixedBitSet::with_capacity(n)),
        };
        if let Some(d) = &self.where_document {
            if !out.is_clear() {
                out.intersect_with(&d.select_n(n, documents));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    fn meta(v: Value) -> Option<Metadata> {
        serde_json::from_value(v).unwrap()
    }

    fn packed(docs: &[Option<String>]) -> PackedStrings {
        PackedStrings::pack(docs.iter().map(Option::as_deref))
    }

    /// Row `i`'s id is `r{i}`.
    fn row_of(id: &str) -> Option<u32> {
        id.strip_prefix('r')?.parse().ok()
    }

    fn check(filter: &Filter, rows: &[Option<Metadata>], docs: &[Option<String>]) {
        let cols = MetadataColumns::build(rows);
        let got = filter.select(&cols, &packed(docs), &row_of);
        assert_eq!(got.len(), rows.len());
        for (i, (m, d)) in rows.iter().zip(docs).enumerate() {
            assert_eq!(
                got.contains(i),
                filter.matches(&format!("r{i}"), m.as_ref(), d.as_deref()),
                "row {i} {m:?} {d:?} under {filter:?}"
            );
        }
    }

    fn filter(w: Value) -> Filter {
        Filter::parse(Some(&w), None).unwrap().unwrap()
    }

    #[test]
    fn selects_like_matches_on_examples() {
        let rows = vec![
            meta(json!({"n": 2, "s": "x", "b": true, "arr": [1, 2]})),
            meta(json!({"n": 2.0, "s": "y", "b": false, "arr": ["x"]})),
            meta(json!({"n": "2", "arr": [1.5, 2.0], "b": 1})),
            None,
            meta(json!({"other": 1})),
            meta(json!({"n": 9007199254740993i64, "arr": [true]})),
        ];
        let docs: Vec<Option<String>> = vec![
            Some("hello".into()),
            None,
            Some("HELLO world".into()),
            None,
            Some("".into()),
            None,
        ];
        for w in [
            json!({"n": 2}),
            json!({"n": 2.0}),
            json!({"n": "2"}),
            json!({"n": {"$ne": 2}}),
            json!({"n": {"$gte": 2}}),
            json!({"n": {"$gt": 9007199254740992i64}}),
            json!({"n": {"$lt": 2.5}}),
            json!({"n": {"$in": [2, 3]}}),
            json!({"s": {"$in": ["x", "q"]}}),
            json!({"s": {"$nin": ["x", "q"]}}),
            json!({"b": true}),
            json!({"b": false}),
            json!({"b": {"$ne": true}}),
            json!({"b": 1}),
            json!({"arr": {"$contains": 2}}),
            json!({"arr": {"$contains": "x"}}),
            json!({"arr": {"$contains": true}}),
            json!({"arr": {"$not_contains": 1}}),
            json!({"missing": {"$ne": 1}}),
            json!({"missing": 1}),
            json!({"missing": {"$not_contains": 1}}),
            json!({"#document": {"$contains": "hello"}}),
            json!({"#document": {"$not_regex": "^H"}}),
            json!({"$or": [{"s": "x"}, {"#document": {"$contains": "world"}}]}),
            json!({"$and": [{"n": {"$gte": 2}}, {"b": true}]}),
        ] {
            check(&filter(w), &rows, &docs);
        }
        let f = Filter::parse(Some(&json!({"n": 2})), Some(&json!({"$not_contains": "x"})))
            .unwrap()
            .unwrap();
        check(&f, &rows, &docs);
        check(&Filter::default(), &rows, &docs);
        check(&Filter::default(), &[], &[]);
    }

    #[test]
    fn len_and_bytes() {
        let rows: Vec<Option<Metadata>> = (0..100)
            .map(|i| meta(json!({"year": 2000 + i, "s": format!("v{i}")})))
            .collect();
        let cols = MetadataColumns::build(&rows);
        assert_eq!(cols.len(), 100);
        assert!(!cols.is_empty());
        assert!(cols.estimated_bytes() > 100 * (8 + 4));
        assert!(MetadataColumns::build(&[]).is_empty());
    }

    #[test]
    fn range_scan_is_fast() {
        let rows: Vec<Option<Metadata>> = (0..20_000)
            .map(|i| meta(json!({"year": 1990 + (i % 40), "title": format!("t{i}")})))
            .collect();
        let docs = vec![None; rows.len()];
        let cols = MetadataColumns::build(&rows);
        let f = filter(json!({"year": {"$gte": 2024}}));
        let expected = rows
            .iter()
            .filter(|m| f.matches("", m.as_ref(), None))
            .count();
        let start = std::time::Instant::now();
        let mut count = 0;
        for _ in 0..100 {
            count = f.select(&cols, &packed(&docs), &row_of).count_ones(..);
        }
        let per_call = start.elapsed() / 100;
        assert_eq!(count, expected);
        // Generous bound for unoptimized, shared CI machines; typically tens of µs.
        assert!(
            per_call < std::time::Duration::from_millis(5),
            "{per_call:?} per select"
        );
    }

    // Small domains so that random filters hit random rows often.
    fn scalar_json() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::from),
            (-3i64..4).prop_map(Value::from),
            prop::sample::select(vec![-1.5, 0.0, 1.0, 2.0, 2.5]).prop_map(Value::from),
            prop::sample::select(vec!["x", "y", "z", "2"]).prop_map(Value::from),
        ]
    }

    fn value_json() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => scalar_json(),
            1 => prop::collection::vec(any::<bool>(), 1..3).prop_map(Value::from),
            1 => prop::collection::vec(-3i64..4, 1..4).prop_map(Value::from),
            1 => prop::collection::vec(
                prop::sample::select(vec![-1.5, 0.0, 1.0, 2.0, 2.5]), 1..4
            ).prop_map(Value::from),
            1 => prop::collection::vec(prop::sample::select(vec!["x", "y", "z"]), 1..4)
                .prop_map(Value::from),
            1 => Just(json!({"#type": "sparse_vector", "indices": [1, 2], "values": [0.5, 1.0]})),
        ]
    }

    const KEYS: [&str; 3] = ["a", "b", "c"];

    fn row() -> impl Strategy<Value = Option<Metadata>> {
        prop::option::weighted(
            0.85,
            prop::collection::btree_map(prop::sample::select(KEYS.to_vec()), value_json(), 0..4),
        )
        .prop_map(|m| {
            m.map(|m| {
                let obj: serde_json::Map<String, Value> =
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                serde_json::from_value(Value::Object(obj)).unwrap()
            })
        })
    }

    fn doc() -> impl Strategy<Value = Option<String>> {
        prop::option::weighted(
            0.8,
            prop::sample::select(vec!["", "ab", "abc", "xyz", "Abc"]).prop_map(String::from),
        )
    }

    fn doc_leaf() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec!["$contains", "$not_contains", "$regex", "$not_regex"]),
            prop::sample::select(vec!["a", "b", "bc", "^a", "c$", ""]),
        )
            .prop_map(|(op, s)| json!({ op: s }))
    }

    fn where_leaf() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec!["a", "b", "c", "d"]);
        let homogeneous_list = prop_oneof![
            prop::collection::vec(any::<bool>(), 1..3).prop_map(Value::from),
            prop::collection::vec(
                prop_oneof![
                    (-3i64..4).prop_map(Value::from),
                    prop::sample::select(vec![-1.5, 2.0, 2.5]).prop_map(Value::from)
                ],
                1..4
            )
            .prop_map(Value::from),
            prop::collection::vec(prop::sample::select(vec!["x", "y", "2"]), 1..3)
                .prop_map(Value::from),
        ];
        let number = prop_oneof![
            (-3i64..4).prop_map(Value::from),
            prop::sample::select(vec![-1.5, 0.0, 2.0, 2.5]).prop_map(Value::from),
        ];
        prop_oneof![
            (key.clone(), scalar_json()).prop_map(|(k, v)| json!({ k: v })),
            (
                key.clone(),
                prop::sample::select(vec!["$eq", "$ne", "$contains", "$not_contains"]),
                scalar_json()
            )
                .prop_map(|(k, op, v)| json!({ k: { op: v } })),
            (
                key.clone(),
                prop::sample::select(vec!["$gt", "$gte", "$lt", "$lte"]),
                number
            )
                .prop_map(|(k, op, v)| json!({ k: { op: v } })),
            (
                key,
                prop::sample::select(vec!["$in", "$nin"]),
                homogeneous_list
            )
                .prop_map(|(k, op, v)| json!({ k: { op: v } })),
            doc_leaf().prop_map(|d| json!({ "#document": d })),
            // Ids of rows that may or may not exist (`r90` never does).
            (
                prop::sample::select(vec!["$eq", "$ne"]),
                prop::sample::select(vec!["r0", "r3", "r90"])
            )
                .prop_map(|(op, id)| json!({ "#id": { op: id } })),
            (
                prop::sample::select(vec!["$in", "$nin"]),
                prop::collection::vec(prop::sample::select(vec!["r0", "r1", "r5", "r90"]), 0..3)
            )
                .prop_map(|(op, ids)| json!({ "#id": { op: ids } })),
        ]
    }

    fn where_json() -> impl Strategy<Value = Value> {
        where_leaf().prop_recursive(3, 16, 3, |inner| {
            (
                prop::sample::select(vec!["$and", "$or"]),
                prop::collection::vec(inner, 1..4),
            )
                .prop_map(|(op, children)| json!({ op: children }))
        })
    }

    fn where_document_json() -> impl Strategy<Value = Value> {
        doc_leaf().prop_recursive(2, 8, 3, |inner| {
            (
                prop::sample::select(vec!["$and", "$or"]),
                prop::collection::vec(inner, 1..3),
            )
                .prop_map(|(op, children)| json!({ op: children }))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn select_equals_matches(
            rows_docs in prop::collection::vec((row(), doc()), 0..80),
            where_ in prop::option::of(where_json()),
            where_document in prop::option::of(where_document_json()),
        ) {
            let (rows, docs): (Vec<_>, Vec<_>) = rows_docs.into_iter().unzip();
            let mut filter = Filter::parse(None, where_document.as_ref())
                .unwrap()
                .unwrap_or_default();
            filter.where_ = where_.as_ref().map(|w| Where::parse_search(w).unwrap());
            let cols = MetadataColumns::build(&rows);
            let got = filter.select(&cols, &packed(&docs), &row_of);
            prop_assert_eq!(got.len(), rows.len());
            for (i, (m, d)) in rows.iter().zip(&docs).enumerate() {
                prop_assert_eq!(
                    got.contains(i),
                    filter.matches(&format!("r{i}"), m.as_ref(), d.as_deref()),
                    "row {} {:?} {:?}", i, m, d
                );
            }
        }
    }
}
