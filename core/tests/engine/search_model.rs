//! Search against a brute-force model over random collections: random records (some
//! folded into segments, some still in the log, some with a sparse vector), random
//! payloads — filters with `#id` and document conditions, rank trees of dense and sparse
//! `$knn` (limits, defaults, return_rank), `$val` and arithmetic, `group_by`,
//! offset/limit, select — and the engine's answer compared with one computed record by
//! record here.
//!
//! The model evaluates a rank expression per record, with its own rule for which records
//! an expression ranks (a `$knn` its candidates; `$val` none; an operation over two sides
//! the records of both when both have a default, of the side without a default when one
//! has one, of both sides at once when neither has), where the engine folds maps of
//! candidates: the two must agree.

use std::collections::HashMap;

use chroma_core::engine::{Merge, SearchResult};
use chroma_core::model::schema::{self, Schema};
use chroma_core::model::search::Search;
use chroma_core::model::sparse::SparseVector;
use chroma_core::model::validate::WriteBatch;
use chroma_core::model::IfExists;
use chroma_core::model::{CollectionConfiguration, KnnIndex, Metadata, MetadataValue};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::common;

const DOCS: [&str; 3] = ["apple", "banana split", "cherry pie"];

#[derive(Debug, Clone)]
struct Rec {
    embedding: [i8; 3],
    c: Option<i64>,
    p: i64,
    doc: Option<usize>,
    /// A sparse vector under `s`: (dimension, value), dimensions ascending.
    sparse: Option<Vec<(u32, f32)>>,
}

#[derive(Debug, Clone)]
enum Query {
    Dense([i8; 3]),
    /// Against `s`'s sparse index.
    Sparse(Vec<(u32, f32)>),
}

#[derive(Debug, Clone)]
enum Expr {
    Knn {
        query: Query,
        limit: u32,
        default: Option<i8>,
        return_rank: bool,
    },
    Val(i8),
    Sum(Vec<Expr>),
    Mul(Vec<Expr>),
    Max(Vec<Expr>),
    Min(Vec<Expr>),
    Sub(Box<Expr>, Box<Expr>),
    Abs(Box<Expr>),
}

#[derive(Debug, Clone)]
enum FilterSpec {
    CEq(i64),
    IdIn(Vec<usize>),
    OrIdNin(i64, Vec<usize>),
    DocContains(usize),
}

#[derive(Debug, Clone)]
struct Plan {
    filter: Option<FilterSpec>,
    rank: Option<Expr>,
    /// (k, max, by p first)
    group_by: Option<(u32, bool, bool)>,
    offset: u32,
    limit: Option<u32>,
}

/// A small sparse vector: few dimensions, values that make ties and distinct sums.
fn sparse() -> impl Strategy<Value = Vec<(u32, f32)>> {
    proptest::collection::btree_map(
        0u32..6,
        prop::sample::select(vec![0.5f32, 1.0, 2.0, -1.0]),
        1..4,
    )
    .prop_map(|m| m.into_iter().collect())
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        any::<[i8; 3]>(),
        proptest::option::weighted(0.8, 0i64..3),
        0i64..4,
        proptest::option::of(0..DOCS.len()),
        proptest::option::weighted(0.7, sparse()),
    )
        .prop_map(|(embedding, c, p, doc, sparse)| Rec {
            embedding,
            c,
            p,
            doc,
            sparse,
        })
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        3 => (any::<[i8; 3]>(), 1u32..8, proptest::option::of(-3i8..100), any::<bool>())
            .prop_map(|(q, limit, default, return_rank)| Expr::Knn { query: Query::Dense(q), limit, default, return_rank }),
        2 => (sparse(), 1u32..8, proptest::option::of(-3i8..100), any::<bool>())
            .prop_map(|(q, limit, default, return_rank)| Expr::Knn { query: Query::Sparse(q), limit, default, return_rank }),
        1 => (-3i8..4).prop_map(Expr::Val),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..4).prop_map(Expr::Sum),
            proptest::collection::vec(inner.clone(), 1..3).prop_map(Expr::Mul),
            proptest::collection::vec(inner.clone(), 1..3).prop_map(Expr::Max),
            proptest::collection::vec(inner.clone(), 1..3).prop_map(Expr::Min),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Sub(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Expr::Abs(Box::new(a))),
        ]
    })
}

fn filter(n: usize) -> impl Strategy<Value = FilterSpec> {
    prop_oneof![
        (0i64..3).prop_map(FilterSpec::CEq),
        proptest::collection::vec(0..n + 2, 0..4).prop_map(FilterSpec::IdIn),
        ((0i64..3), proptest::collection::vec(0..n + 2, 1..4))
            .prop_map(|(c, ids)| FilterSpec::OrIdNin(c, ids)),
        (0..DOCS.len()).prop_map(FilterSpec::DocContains),
    ]
}

fn plan(n: usize) -> impl Strategy<Value = Plan> {
    (
        proptest::option::of(filter(n)),
        proptest::option::weighted(0.85, expr()),
        proptest::option::of((1u32..3, any::<bool>(), any::<bool>())),
        0u32..3,
        proptest::option::of(1u32..8),
    )
        .prop_map(|(filter, rank, group_by, offset, limit)| Plan {
            filter,
            group_by: group_by.filter(|_| rank.is_some()),
            rank,
            offset,
            limit,
        })
}

fn id(i: usize) -> String {
    format!("r{i}")
}

fn emb(e: [i8; 3]) -> Vec<f32> {
    e.iter().map(|&v| f32::from(v)).collect()
}

fn filter_json(f: &FilterSpec) -> Value {
    let ids = |ids: &[usize]| ids.iter().map(|&i| id(i)).collect::<Vec<_>>();
    match f {
        FilterSpec::CEq(c) => json!({"c": {"$eq": c}}),
        FilterSpec::IdIn(list) => json!({"#id": {"$in": ids(list)}}),
        FilterSpec::OrIdNin(c, list) => {
            json!({"$or": [{"c": c}, {"#id": {"$nin": ids(list)}}]})
        }
        FilterSpec::DocContains(d) => json!({"#document": {"$contains": DOCS[*d]}}),
    }
}

fn expr_json(e: &Expr) -> Value {
    let list = |items: &[Expr]| items.iter().map(expr_json).collect::<Vec<_>>();
    match e {
        Expr::Knn {
            query,
            limit,
            default,
            return_rank,
        } => {
            let mut k = match query {
                Query::Dense(q) => json!({"query": emb(*q)}),
                Query::Sparse(q) => json!({"key": "s", "query": {
                    "indices": q.iter().map(|d| d.0).collect::<Vec<_>>(),
                    "values": q.iter().map(|d| d.1).collect::<Vec<_>>()}}),
            };
            k["limit"] = json!(limit);
            k["return_rank"] = json!(return_rank);
            if let Some(d) = default {
                k["default"] = json!(d);
            }
            json!({ "$knn": k })
        }
        Expr::Val(v) => json!({ "$val": v }),
        Expr::Sum(items) => json!({ "$sum": list(items) }),
        Expr::Mul(items) => json!({ "$mul": list(items) }),
        Expr::Max(items) => json!({ "$max": list(items) }),
        Expr::Min(items) => json!({ "$min": list(items) }),
        Expr::Sub(a, b) => json!({"$sub": {"left": expr_json(a), "right": expr_json(b)}}),
        Expr::Abs(a) => json!({ "$abs": expr_json(a) }),
    }
}

fn plan_json(p: &Plan) -> Value {
    let mut v = json!({
        "filter": p.filter.as_ref().map(filter_json),
        "rank": p.rank.as_ref().map(expr_json),
        "limit": {"offset": p.offset, "limit": p.limit},
        "select": {"keys": ["#document", "#score", "#metadata"]},
    });
    if let Some((k, max, by_p)) = p.group_by {
        let keys = if by_p {
            json!(["p", "#score"])
        } else {
            json!(["#score"])
        };
        let op = if max { "$max_k" } else { "$min_k" };
        v["group_by"] = json!({"keys": ["c"], "aggregate": { op: {"keys": keys, "k": k} }});
    }
    v
}

/// The model's answer: (id, score) in order.
struct Model<'a> {
    records: &'a [Rec],
}

impl Model<'_> {
    fn passes(&self, i: usize, f: &Option<FilterSpec>) -> bool {
        let r = &self.records[i];
        match f {
            None => true,
            Some(FilterSpec::CEq(c)) => r.c == Some(*c),
            Some(FilterSpec::IdIn(ids)) => ids.contains(&i),
            Some(FilterSpec::OrIdNin(c, ids)) => r.c == Some(*c) || !ids.contains(&i),
            Some(FilterSpec::DocContains(d)) => {
                r.doc.is_some_and(|doc| DOCS[doc].contains(DOCS[*d]))
            }
        }
    }

    /// A knn's candidates: record → value (distance, or position with return_rank).
    fn knn(
        &self,
        query: &Query,
        limit: u32,
        return_rank: bool,
        f: &Option<FilterSpec>,
    ) -> Vec<(usize, f32)> {
        let passing = (0..self.records.len()).filter(|&i| self.passes(i, f));
        let mut all: Vec<(f32, usize)> = match query {
            Query::Dense(q) => {
                let q = emb(*q);
                passing
                    .map(|i| {
                        let e = emb(self.records[i].embedding);
                        (e.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum(), i)
                    })
                    .collect()
            }
            // `1 − q·d` over the dimensions both have, summed in f64 in ascending order;
            // only vectors sharing a dimension are found.
            Query::Sparse(q) => passing
                .filter_map(|i| {
                    let d = self.records[i].sparse.as_ref()?;
                    let shared: Vec<f64> = q
                        .iter()
                        .filter_map(|(dim, x)| {
                            let (_, y) = d.iter().find(|(e, _)| e == dim)?;
                            Some(f64::from(*x) * f64::from(*y))
                        })
                        .collect();
                    if shared.is_empty() {
                        return None;
                    }
                    let dot = shared.iter().fold(0f64, |acc, v| acc + v);
                    Some((1.0 - dot as f32, i))
                })
                .collect(),
        };
        // Insertion order breaks ties (ids are inserted in index order).
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        all.truncate(limit as usize);
        all.into_iter()
            .enumerate()
            .map(|(pos, (d, i))| (i, if return_rank { pos as f32 } else { d }))
            .collect()
    }

    fn has_default(e: &Expr) -> bool {
        match e {
            Expr::Knn { default, .. } => default.is_some(),
            Expr::Val(_) => true,
            Expr::Sum(items) | Expr::Mul(items) | Expr::Max(items) | Expr::Min(items) => {
                items.iter().all(Self::has_default)
            }
            Expr::Sub(a, b) => Self::has_default(a) && Self::has_default(b),
            Expr::Abs(a) => Self::has_default(a),
        }
    }

    /// The value of `e` for record `i`, and whether `e` ranks `i`.
    fn value(&self, e: &Expr, i: usize, f: &Option<FilterSpec>) -> (Option<f32>, bool) {
        let fold = |items: &[Expr], op: fn(f32, f32) -> f32| {
            let (mut acc, mut ranked) = self.value(&items[0], i, f);
            let mut acc_default = Self::has_default(&items[0]);
            for item in &items[1..] {
                let (v, r) = self.value(item, i, f);
                let d = Self::has_default(item);
                ranked = match (acc_default, d) {
                    (true, true) => ranked || r,
                    (true, false) => r,
                    (false, true) => ranked,
                    (false, false) => ranked && r,
                };
                // A side without a default has a value only where it ranks; one with a
                // default has one everywhere.
                acc = match (acc, v) {
                    (Some(a), Some(b)) => Some(op(a, b)),
                    _ => None,
                };
                acc_default = acc_default && d;
            }
            (acc, ranked)
        };
        match e {
            Expr::Knn {
                query,
                limit,
                default,
                return_rank,
            } => {
                let found = self
                    .knn(query, *limit, *return_rank, f)
                    .into_iter()
                    .find(|(j, _)| *j == i);
                match found {
                    Some((_, v)) => (Some(v), true),
                    None => (default.map(f32::from), false),
                }
            }
            Expr::Val(v) => (Some(f32::from(*v)), false),
            Expr::Sum(items) => fold(items, |a, b| a + b),
            Expr::Mul(items) => fold(items, |a, b| a * b),
            Expr::Max(items) => fold(items, f32::max),
            Expr::Min(items) => fold(items, f32::min),
            Expr::Sub(a, b) => fold(&[(**a).clone(), (**b).clone()], |a, b| a - b),
            Expr::Abs(a) => {
                let (v, r) = self.value(a, i, f);
                (v.map(f32::abs), r)
            }
        }
    }

    /// Every knn of `e`, in the order the payload lists them.
    fn knns<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
        match e {
            Expr::Knn { .. } => out.push(e),
            Expr::Val(_) => {}
            Expr::Sum(items) | Expr::Mul(items) | Expr::Max(items) | Expr::Min(items) => {
                items.iter().for_each(|i| Self::knns(i, out))
            }
            Expr::Sub(a, b) => {
                Self::knns(a, out);
                Self::knns(b, out);
            }
            Expr::Abs(a) => Self::knns(a, out),
        }
    }

    fn answer(&self, p: &Plan) -> Vec<(usize, Option<f32>)> {
        let f = &p.filter;
        let Some(rank) = &p.rank else {
            return (0..self.records.len())
                .filter(|&i| self.passes(i, f))
                .skip(p.offset as usize)
                .take(p.limit.map_or(usize::MAX, |l| l as usize))
                .map(|i| (i, None))
                .collect();
        };
        // Candidates numbered by first appearance, knn by knn (the engine's tie-break).
        let mut knns = Vec::new();
        Self::knns(rank, &mut knns);
        let mut order: Vec<usize> = Vec::new();
        for k in knns {
            if let Expr::Knn {
                query,
                limit,
                return_rank,
                ..
            } = k
            {
                for (i, _) in self.knn(query, *limit, *return_rank, f) {
                    if !order.contains(&i) {
                        order.push(i);
                    }
                }
            }
        }
        let mut ranked: Vec<(usize, usize, f32)> = order
            .iter()
            .enumerate()
            .filter_map(|(n, &i)| match self.value(rank, i, f) {
                (Some(v), true) => Some((n, i, v)),
                _ => None,
            })
            .collect();
        ranked.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
        if let Some((k, max, by_p)) = p.group_by {
            let mut groups: HashMap<Option<i64>, Vec<usize>> = HashMap::new();
            for (pos, &(_, i, _)) in ranked.iter().enumerate() {
                groups.entry(self.records[i].c).or_default().push(pos);
            }
            let mut kept: Vec<usize> = Vec::new();
            for members in groups.values() {
                let mut members = members.clone();
                members.sort_by(|&x, &y| {
                    let key = |pos: usize| {
                        let (_, i, score) = ranked[pos];
                        (
                            if by_p {
                                self.records[i].p as f32
                            } else {
                                score
                            },
                            score,
                        )
                    };
                    let (kx, ky) = (key(x), key(y));
                    let o = kx.0.total_cmp(&ky.0).then(kx.1.total_cmp(&ky.1));
                    (if max { o.reverse() } else { o }).then(x.cmp(&y))
                });
                kept.extend(members.into_iter().take(k as usize));
            }
            kept.sort_unstable();
            ranked = kept.into_iter().map(|pos| ranked[pos]).collect();
        }
        ranked
            .into_iter()
            .skip(p.offset as usize)
            .take(p.limit.map_or(usize::MAX, |l| l as usize))
            .map(|(_, i, v)| (i, Some(v)))
            .collect()
    }
}

fn metadata(r: &Rec) -> Metadata {
    let mut m = Metadata::new();
    if let Some(c) = r.c {
        m.insert("c".into(), MetadataValue::Int(c));
    }
    m.insert("p".into(), MetadataValue::Int(r.p));
    if let Some(v) = &r.sparse {
        m.insert(
            "s".into(),
            MetadataValue::SparseVector(SparseVector {
                indices: v.iter().map(|d| d.0).collect(),
                values: v.iter().map(|d| d.1).collect(),
                tokens: None,
            }),
        );
    }
    m
}

/// A SPANN collection's configuration with a sparse vector index on `s`.
fn with_sparse_index() -> CollectionConfiguration {
    let requested = CollectionConfiguration::default_for(KnnIndex::Spann);
    let mut schema = serde_json::to_value(requested.schema()).unwrap();
    schema["keys"]["s"] = json!({"sparse_vector": {"sparse_vector_index": {
        "enabled": true, "config": {"embedding_function": {"type": "unknown"}}}}});
    let schema: Schema = serde_json::from_value(schema).unwrap();
    CollectionConfiguration::from_schema(
        schema::reconcile(Some(&schema), &requested, KnnIndex::Spann).unwrap(),
    )
}

async fn run(records: Vec<Rec>, split: usize, plans: Vec<Plan>) {
    let dir = tempfile::tempdir().unwrap();
    let opened = common::open(dir.path(), common::manual_config());
    let engine = opened.engine.clone();
    let collection = engine
        .create_collection(
            "default_tenant",
            "default_database",
            "searched",
            None,
            with_sparse_index(),
            IfExists::Fail,
        )
        .await
        .unwrap();
    let split = split.min(records.len());
    for (part, range) in [(0, 0..split), (1, split..records.len())] {
        if range.is_empty() {
            continue;
        }
        let batch = WriteBatch {
            ids: range.clone().map(id).collect(),
            embeddings: Some(
                range
                    .clone()
                    .map(|i| Some(emb(records[i].embedding)))
                    .collect(),
            ),
            documents: Some(
                range
                    .clone()
                    .map(|i| records[i].doc.map(|d| DOCS[d].to_string()))
                    .collect(),
            ),
            uris: None,
            metadatas: Some(
                range
                    .clone()
                    .map(|i| {
                        Some(
                            metadata(&records[i])
                                .into_iter()
                                .map(|(k, v)| (k, Some(v)))
                                .collect(),
                        )
                    })
                    .collect(),
            ),
        };
        engine.add(&collection, batch).await.unwrap();
        if part == 0 {
            engine.compact(collection.id, Merge::All).await.unwrap();
        }
    }
    let model = Model { records: &records };
    let searches: Vec<Search> = plans
        .iter()
        .map(|p| Search::parse(&plan_json(p)).unwrap())
        .collect();
    // The engine that compacted holds the segment it built; a fresh one on the same
    // directory reads it back from its objects (the sparse index from its own).
    let reopened = common::open(dir.path(), common::manual_config()).engine;
    for engine in [&engine, &reopened] {
        let got = engine.search(&collection, searches.clone()).await.unwrap();
        check(&model, &plans, got);
    }
}

fn check(model: &Model<'_>, plans: &[Plan], got: Vec<SearchResult>) {
    let records = model.records;
    for (p, got) in plans.iter().zip(got) {
        let want = model.answer(p);
        let ids: Vec<String> = want.iter().map(|(i, _)| id(*i)).collect();
        assert_eq!(got.ids, ids, "{}", plan_json(p));
        let scores: Vec<Option<f32>> = want.iter().map(|w| w.1).collect();
        let same = got
            .scores
            .as_ref()
            .unwrap()
            .iter()
            .zip(&scores)
            .all(|(a, b)| a.map(f32::to_bits) == b.map(f32::to_bits));
        assert!(same, "{:?} vs {scores:?} for {}", got.scores, plan_json(p));
        let docs: Vec<Option<String>> = want
            .iter()
            .map(|(i, _)| records[*i].doc.map(|d| DOCS[d].to_string()))
            .collect();
        assert_eq!(got.documents.unwrap(), docs);
        let metas: Vec<Option<Metadata>> = want
            .iter()
            .map(|(i, _)| Some(metadata(&records[*i])))
            .collect();
        assert_eq!(got.metadatas.unwrap(), metas);
        assert_eq!(got.select, ["#document", "#metadata", "#score"]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn search_answers_as_the_model_does(
        (records, split, plans) in (1usize..24).prop_flat_map(|n| (
            proptest::collection::vec(rec(), n),
            0..=n,
            proptest::collection::vec(plan(n), 1..4),
        )),
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(records, split, plans));
    }
}
