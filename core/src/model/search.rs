//! Search (Chroma Cloud's `POST …/search`): what one search payload asks for, parsed from
//! its JSON, and the parts of its evaluation that need no storage — the rank expression
//! over the candidates of its `$knn` terms, `group_by`, and the `select` projection.
//!
//! A payload is `{"filter", "rank", "group_by", "limit", "select"}`, each optional:
//! - `filter`: the `where` grammar plus `#id` conditions (see [`super::filter`]);
//! - `rank`: an expression, lower is better. `{"$knn": {query, key, limit, default,
//!   return_rank}}` yields its top-`limit` records (after the filter) with their distance
//!   (dense: the collection's space; sparse: `1 − q·d`), or their 0-based position with
//!   `return_rank`, plus its `default` for records it did not find; `$val` is a constant;
//!   `$sum`/`$mul`/`$max`/`$min` (n-ary), `$sub`/`$div` (`left`, `right`) and
//!   `$abs`/`$exp`/`$log` (unary) combine them. A binary operation over two sides takes
//!   the union of their records when both have a default (a missing record takes that
//!   side's default), the records of the side without a default when one has one, and
//!   the intersection when neither has: so no record outside every `$knn` is returned;
//! - `group_by` `{"keys": [...], "aggregate": {"$min_k"|"$max_k": {"keys": [...], "k"}}}`:
//!   records partitioned by their values of `keys` (a missing key is a value of its own);
//!   each group keeps its `k` records with the smallest (largest) aggregate-key tuple;
//! - `limit` `{"offset", "limit"}` after ranking and grouping; without a rank, records
//!   come in storage order;
//! - `select` `{"keys": [...]}`: `#document`, `#embedding`, `#metadata`, `#score`, and
//!   any other string names a metadata field. Ids always come back.
//!
//! Bounds, so that one request cannot ask for unbounded work: at most [`MAX_SEARCHES`]
//! payloads, [`MAX_KNNS`] `$knn` terms and [`MAX_RANK_NODES`] nodes per rank, nesting
//! [`MAX_FILTER_DEPTH`] deep, and limits up to [`MAX_SEARCH_LIMIT`].

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value};

use super::filter::{Filter, MAX_FILTER_DEPTH};
use super::record::{Metadata, MetadataValue};
use super::sparse::SparseVector;
use crate::error::{Error, Result};

/// The key of the collection's dense embedding.
pub const EMBEDDING_KEY: &str = "#embedding";
/// Candidates of a `$knn` that gives no `limit`.
pub const DEFAULT_KNN_LIMIT: u32 = 16;
/// The largest `$knn` limit, and the largest `limit` of a payload.
pub const MAX_SEARCH_LIMIT: u32 = 100_000;
/// The most payloads one request may carry.
pub const MAX_SEARCHES: usize = 64;
/// The most `$knn` terms in one rank: each is a search of the collection.
pub const MAX_KNNS: usize = 32;
/// The most operators and operands in one rank expression.
pub const MAX_RANK_NODES: usize = 1024;

/// One search payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Search {
    pub filter: Option<Filter>,
    pub rank: Option<Rank>,
    pub group_by: Option<GroupBy>,
    pub offset: u32,
    pub limit: Option<u32>,
    pub select: Select,
}

/// A rank expression and the `$knn` terms it refers to (by position).
#[derive(Debug, Clone, PartialEq)]
pub struct Rank {
    pub knns: Vec<Knn>,
    pub expr: RankExpr,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RankExpr {
    /// `knns[i]`.
    Knn(usize),
    Val(f32),
    Sum(Vec<RankExpr>),
    Mul(Vec<RankExpr>),
    Max(Vec<RankExpr>),
    Min(Vec<RankExpr>),
    Sub(Box<RankExpr>, Box<RankExpr>),
    Div(Box<RankExpr>, Box<RankExpr>),
    Abs(Box<RankExpr>),
    Exp(Box<RankExpr>),
    Log(Box<RankExpr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Knn {
    pub query: KnnQuery,
    /// `#embedding` for the dense embedding, else the metadata key of a sparse index.
    pub key: String,
    pub limit: u32,
    pub default: Option<f32>,
    pub return_rank: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KnnQuery {
    Dense(Vec<f32>),
    Sparse(SparseVector),
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupBy {
    /// Metadata keys.
    pub keys: Vec<String>,
    /// Ordered within a group, lexicographically.
    pub aggregate_keys: Vec<AggregateKey>,
    pub k: u32,
    /// `$max_k` (keep the largest) rather than `$min_k`.
    pub max: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregateKey {
    Score,
    Field(String),
}

/// What a search returns besides ids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Select {
    pub document: bool,
    pub embedding: bool,
    /// Every metadata field.
    pub metadata: bool,
    pub score: bool,
    /// Metadata fields, by name.
    pub fields: BTreeSet<String>,
}

fn invalid(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::invalid(format!("Invalid search {what}: {detail}"))
}

/// A JSON value for an error message, cut to a readable length.
fn show(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(100) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s,
    }
}

fn object<'a>(what: &str, v: &'a Value) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| invalid(what, format!("expected an object, got {}", show(v))))
}

fn no_other_fields(what: &str, o: &Map<String, Value>, known: &[&str]) -> Result<()> {
    match o.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(invalid(
            what,
            format!("unknown field {k:?} (expected {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn u32_field(what: &str, o: &Map<String, Value>, name: &str) -> Result<Option<u32>> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                invalid(
                    what,
                    format!("{name} must be an integer in 0..2^32, got {}", show(v)),
                )
            }),
    }
}

fn strings(what: &str, v: &Value) -> Result<Vec<String>> {
    let list = v
        .as_array()
        .ok_or_else(|| invalid(what, format!("keys must be a list, got {}", show(v))))?;
    list.iter()
        .map(|k| {
            k.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(what, format!("keys must be strings, got {}", show(k))))
        })
        .collect()
}

impl Search {
    /// Parses one payload (`{"filter", "rank", "group_by", "limit", "select"}`).
    pub fn parse(v: &Value) -> Result<Self> {
        let o = object("payload", v)?;
        no_other_fields(
            "payload",
            o,
            &["filter", "rank", "group_by", "limit", "select"],
        )?;
        let filter = Filter::parse_search(o.get("filter"))?;
        let rank = match o.get("rank") {
            None | Some(Value::Null) => None,
            Some(r) => Some(Rank::parse(r)?),
        };
        let group_by = match o.get("group_by") {
            None | Some(Value::Null) => None,
            Some(g) => GroupBy::parse(g)?,
        };
        if group_by.is_some() && rank.is_none() {
            return Err(invalid("group_by", "group_by requires a rank"));
        }
        let (offset, limit) = match o.get("limit") {
            None | Some(Value::Null) => (0, None),
            Some(l) => {
                let lo = object("limit", l)?;
                no_other_fields("limit", lo, &["offset", "limit"])?;
                let offset = u32_field("limit", lo, "offset")?.unwrap_or(0);
                let limit = u32_field("limit", lo, "limit")?;
                if let Some(limit) = limit {
                    if limit == 0 || limit > MAX_SEARCH_LIMIT {
                        return Err(invalid(
                            "limit",
                            format!("limit must be in 1..={MAX_SEARCH_LIMIT}, got {limit}"),
                        ));
                    }
                }
                (offset, limit)
            }
        };
        let select = match o.get("select") {
            None | Some(Value::Null) => Select::default(),
            Some(s) => Select::parse(s)?,
        };
        Ok(Search {
            filter,
            rank,
            group_by,
            offset,
            limit,
            select,
        })
    }
}

impl Rank {
    pub fn parse(v: &Value) -> Result<Self> {
        let mut knns = Vec::new();
        let expr = RankExpr::parse(v, 1, &mut knns)?;
        if knns.len() > MAX_KNNS {
            return Err(invalid(
                "rank",
                format!(
                    "at most {MAX_KNNS} $knn terms in one rank, got {}",
                    knns.len()
                ),
            ));
        }
        let nodes = expr.nodes();
        if nodes > MAX_RANK_NODES {
            return Err(invalid(
                "rank",
                format!("at most {MAX_RANK_NODES} operators and operands in one rank, got {nodes}"),
            ));
        }
        Ok(Rank { knns, expr })
    }

    /// The ranked records: each candidate (an index into the caller's candidate list)
    /// with its score, ascending (ties by candidate index). `knn_results[i]` holds the
    /// value of `knns[i]` for each candidate it found.
    pub fn evaluate(&self, knn_results: &[Vec<(u32, f32)>]) -> Vec<(u32, f32)> {
        let scores = self.expr.eval(&self.knns, knn_results);
        let mut out: Vec<(u32, f32)> = scores.values.into_iter().collect();
        out.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        out
    }
}

/// The value of an expression: per candidate, plus the value of the candidates it has
/// no entry for (`None`: those are not in its domain).
#[derive(Debug, Clone)]
struct Scores {
    values: HashMap<u32, f32>,
    default: Option<f32>,
}

impl Scores {
    fn map(mut self, f: impl Fn(f32) -> f32) -> Self {
        for v in self.values.values_mut() {
            *v = f(*v);
        }
        self.default = self.default.map(f);
        self
    }

    /// `f(self, other)` over the domain the two defaults give (see the module doc).
    fn combine(self, other: Scores, f: impl Fn(f32, f32) -> f32) -> Self {
        let (a, b) = (self, other);
        let mut values = HashMap::new();
        match (a.default, b.default) {
            (Some(da), Some(db)) => {
                for (&k, &va) in &a.values {
                    values.insert(k, f(va, b.values.get(&k).copied().unwrap_or(db)));
                }
                for (&k, &vb) in &b.values {
                    if !a.values.contains_key(&k) {
                        values.insert(k, f(da, vb));
                    }
                }
                Scores {
                    values,
                    default: Some(f(da, db)),
                }
            }
            (Some(da), None) => {
                for (&k, &vb) in &b.values {
                    values.insert(k, f(a.values.get(&k).copied().unwrap_or(da), vb));
                }
                Scores {
                    values,
                    default: None,
                }
            }
            (None, Some(db)) => {
                for (&k, &va) in &a.values {
                    values.insert(k, f(va, b.values.get(&k).copied().unwrap_or(db)));
                }
                Scores {
                    values,
                    default: None,
                }
            }
            (None, None) => {
                for (&k, &va) in &a.values {
                    if let Some(&vb) = b.values.get(&k) {
                        values.insert(k, f(va, vb));
                    }
                }
                Scores {
                    values,
                    default: None,
                }
            }
        }
    }
}

impl RankExpr {
    fn parse(v: &Value, depth: usize, knns: &mut Vec<Knn>) -> Result<Self> {
        if depth > MAX_FILTER_DEPTH {
            return Err(invalid(
                "rank",
                format!("nested deeper than {MAX_FILTER_DEPTH} levels"),
            ));
        }
        let o = object("rank", v)?;
        let mut entries = o.iter();
        let (op, arg) = match (entries.next(), entries.next()) {
            (Some(e), None) => e,
            _ => {
                return Err(invalid(
                    "rank",
                    format!("expected exactly one operator in {}", show(v)),
                ))
            }
        };
        let list = |knns: &mut Vec<Knn>| -> Result<Vec<RankExpr>> {
            let items = arg.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                invalid(
                    "rank",
                    format!(
                        "{op} expects a non-empty list of expressions, got {}",
                        show(arg)
                    ),
                )
            })?;
            items
                .iter()
                .map(|i| RankExpr::parse(i, depth + 1, knns))
                .collect()
        };
        let one = |knns: &mut Vec<Knn>| -> Result<Box<RankExpr>> {
            Ok(Box::new(RankExpr::parse(arg, depth + 1, knns)?))
        };
        let pair = |knns: &mut Vec<Knn>| -> Result<(Box<RankExpr>, Box<RankExpr>)> {
            let po = object("rank", arg)?;
            no_other_fields("rank", po, &["left", "right"])?;
            let side = |name: &str, knns: &mut Vec<Knn>| -> Result<Box<RankExpr>> {
                let e = po.get(name).ok_or_else(|| {
                    invalid("rank", format!("{op} expects \"left\" and \"right\""))
                })?;
                Ok(Box::new(RankExpr::parse(e, depth + 1, knns)?))
            };
            Ok((side("left", knns)?, side("right", knns)?))
        };
        Ok(match op.as_str() {
            "$knn" => {
                knns.push(Knn::parse(arg)?);
                RankExpr::Knn(knns.len() - 1)
            }
            "$val" => RankExpr::Val(
                arg.as_f64()
                    .map(|x| x as f32)
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| {
                        invalid("rank", format!("$val expects a number, got {}", show(arg)))
                    })?,
            ),
            "$sum" => RankExpr::Sum(list(knns)?),
            "$mul" => RankExpr::Mul(list(knns)?),
            "$max" => RankExpr::Max(list(knns)?),
            "$min" => RankExpr::Min(list(knns)?),
            "$sub" => {
                let (l, r) = pair(knns)?;
                RankExpr::Sub(l, r)
            }
            "$div" => {
                let (l, r) = pair(knns)?;
                RankExpr::Div(l, r)
            }
            "$abs" => RankExpr::Abs(one(knns)?),
            "$exp" => RankExpr::Exp(one(knns)?),
            "$log" => RankExpr::Log(one(knns)?),
            other => {
                return Err(invalid(
                    "rank",
                    format!(
                        "unknown operator {other} (expected $knn, $val, $sum, $mul, $sub, \
                         $div, $abs, $exp, $log, $max or $min)"
                    ),
                ))
            }
        })
    }

    /// Operators and operands in the expression.
    fn nodes(&self) -> usize {
        1 + match self {
            RankExpr::Knn(_) | RankExpr::Val(_) => 0,
            RankExpr::Sum(items)
            | RankExpr::Mul(items)
            | RankExpr::Max(items)
            | RankExpr::Min(items) => items.iter().map(RankExpr::nodes).sum(),
            RankExpr::Sub(l, r) | RankExpr::Div(l, r) => l.nodes() + r.nodes(),
            RankExpr::Abs(e) | RankExpr::Exp(e) | RankExpr::Log(e) => e.nodes(),
        }
    }

    fn eval(&self, knns: &[Knn], results: &[Vec<(u32, f32)>]) -> Scores {
        let fold = |items: &[RankExpr], f: fn(f32, f32) -> f32| {
            let mut it = items.iter().map(|e| e.eval(knns, results));
            let first = it.next().expect("lists are non-empty");
            it.fold(first, |acc, s| acc.combine(s, f))
        };
        match self {
            RankExpr::Knn(i) => Scores {
                values: results[*i].iter().copied().collect(),
                default: knns[*i].default,
            },
            RankExpr::Val(v) => Scores {
                values: HashMap::new(),
                default: Some(*v),
            },
            RankExpr::Sum(items) => fold(items, |a, b| a + b),
            RankExpr::Mul(items) => fold(items, |a, b| a * b),
            RankExpr::Max(items) => fold(items, f32::max),
            RankExpr::Min(items) => fold(items, f32::min),
            RankExpr::Sub(l, r) => l
                .eval(knns, results)
                .combine(r.eval(knns, results), |a, b| a - b),
            RankExpr::Div(l, r) => l
                .eval(knns, results)
                .combine(r.eval(knns, results), |a, b| a / b),
            RankExpr::Abs(e) => e.eval(knns, results).map(f32::abs),
            RankExpr::Exp(e) => e.eval(knns, results).map(f32::exp),
            RankExpr::Log(e) => e.eval(knns, results).map(f32::ln),
        }
    }
}

impl Knn {
    fn parse(v: &Value) -> Result<Self> {
        let o = object("rank", v)?;
        no_other_fields(
            "rank",
            o,
            &["query", "key", "limit", "default", "return_rank"],
        )?;
        let query = match o.get("query") {
            Some(Value::Array(items)) => KnnQuery::Dense(
                items
                    .iter()
                    .map(|x| {
                        x.as_f64().map(|x| x as f32).ok_or_else(|| {
                            invalid(
                                "rank",
                                format!("$knn query must be numbers, got {}", show(x)),
                            )
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
            Some(q @ Value::Object(_)) => {
                KnnQuery::Sparse(SparseVector::from_json(q).map_err(|e| {
                    Error::invalid(format!(
                        "Invalid sparse vector in KNN query: {}",
                        e.message()
                    ))
                })?)
            }
            Some(Value::String(_)) => {
                return Err(invalid(
                    "rank",
                    "a $knn query must be a vector: text queries are embedded by the client",
                ))
            }
            other => {
                return Err(invalid(
                    "rank",
                    format!(
                        "$knn expects a query (a dense or a sparse vector), got {}",
                        other.map_or("nothing".into(), show)
                    ),
                ))
            }
        };
        let key = match o.get("key") {
            None | Some(Value::Null) => EMBEDDING_KEY.to_owned(),
            Some(Value::String(k)) => k.clone(),
            Some(k) => {
                return Err(invalid(
                    "rank",
                    format!("$knn key must be a string, got {}", show(k)),
                ))
            }
        };
        let limit = u32_field("rank", o, "limit")?.unwrap_or(DEFAULT_KNN_LIMIT);
        if limit == 0 || limit > MAX_SEARCH_LIMIT {
            return Err(invalid(
                "rank",
                format!("$knn limit must be in 1..={MAX_SEARCH_LIMIT}, got {limit}"),
            ));
        }
        let default = match o.get("default") {
            None | Some(Value::Null) => None,
            Some(d) => Some(
                d.as_f64()
                    .map(|x| x as f32)
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| {
                        invalid(
                            "rank",
                            format!("$knn default must be a number, got {}", show(d)),
                        )
                    })?,
            ),
        };
        let return_rank = match o.get("return_rank") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(b) => {
                return Err(invalid(
                    "rank",
                    format!("$knn return_rank must be a bool, got {}", show(b)),
                ))
            }
        };
        if matches!(query, KnnQuery::Dense(_)) && key != EMBEDDING_KEY {
            return Err(invalid(
                "rank",
                format!(
                    "a dense $knn query searches {EMBEDDING_KEY}, got key {key:?} (a metadata \
                     key takes a sparse vector query)"
                ),
            ));
        }
        if matches!(query, KnnQuery::Sparse(_)) && key.starts_with('#') {
            return Err(invalid(
                "rank",
                format!("a sparse $knn query searches a metadata key, got {key:?}"),
            ));
        }
        Ok(Knn {
            query,
            key,
            limit,
            default,
            return_rank,
        })
    }
}

impl GroupBy {
    /// `{}` is no grouping.
    fn parse(v: &Value) -> Result<Option<Self>> {
        let o = object("group_by", v)?;
        no_other_fields("group_by", o, &["keys", "aggregate"])?;
        let (keys, aggregate) = match (o.get("keys"), o.get("aggregate")) {
            (None | Some(Value::Null), None | Some(Value::Null)) => return Ok(None),
            (Some(k), Some(a)) if !k.is_null() && !a.is_null() => (k, a),
            _ => {
                return Err(invalid(
                    "group_by",
                    "keys and aggregate must be given together",
                ))
            }
        };
        let keys = strings("group_by", keys)?;
        if keys.is_empty() {
            return Err(invalid(
                "group_by",
                "keys must name at least one metadata key",
            ));
        }
        if let Some(k) = keys.iter().find(|k| k.starts_with('#')) {
            return Err(invalid(
                "group_by",
                format!("group keys must be metadata keys, got {k:?}"),
            ));
        }
        let ao = object("group_by", aggregate)?;
        let mut entries = ao.iter();
        let (op, arg) = match (entries.next(), entries.next()) {
            (Some(e), None) => e,
            _ => {
                return Err(invalid(
                    "group_by",
                    "aggregate expects exactly one of $min_k or $max_k",
                ))
            }
        };
        let max = match op.as_str() {
            "$min_k" => false,
            "$max_k" => true,
            other => {
                return Err(invalid(
                    "group_by",
                    format!("unknown aggregate {other} (expected $min_k or $max_k)"),
                ))
            }
        };
        let arg = object("group_by", arg)?;
        no_other_fields("group_by", arg, &["keys", "k"])?;
        let aggregate_keys = strings(
            "group_by",
            arg.get("keys")
                .ok_or_else(|| invalid("group_by", format!("{op} expects keys")))?,
        )?;
        if aggregate_keys.is_empty() {
            return Err(invalid("group_by", format!("{op} keys must not be empty")));
        }
        let aggregate_keys = aggregate_keys
            .into_iter()
            .map(|k| match k.as_str() {
                "#score" => Ok(AggregateKey::Score),
                _ if k.starts_with('#') => Err(invalid(
                    "group_by",
                    format!("aggregate keys must be metadata keys or #score, got {k:?}"),
                )),
                _ => Ok(AggregateKey::Field(k)),
            })
            .collect::<Result<_>>()?;
        let k = u32_field("group_by", arg, "k")?
            .ok_or_else(|| invalid("group_by", format!("{op} expects k")))?;
        if k == 0 {
            return Err(invalid("group_by", "k must be at least 1"));
        }
        Ok(Some(GroupBy {
            keys,
            aggregate_keys,
            k,
            max,
        }))
    }

    /// Keeps each group's `k` best records of `ranked` (ascending by score), then
    /// returns them re-sorted by score. `metadata(i)` is the metadata of `ranked[i]`.
    pub fn apply<'m>(
        &self,
        ranked: &[(u32, f32)],
        metadata: impl Fn(usize) -> Option<&'m Metadata>,
    ) -> Vec<(u32, f32)> {
        let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
        for i in 0..ranked.len() {
            let m = metadata(i);
            let group: Vec<Option<&MetadataValue>> =
                self.keys.iter().map(|k| m.and_then(|m| m.get(k))).collect();
            let group = serde_json::to_string(&group).unwrap_or_default();
            groups.entry(group).or_default().push(i);
        }
        let key_of = |i: usize| -> Vec<Option<Sortable>> {
            self.aggregate_keys
                .iter()
                .map(|k| match k {
                    AggregateKey::Score => Some(Sortable::Number(f64::from(ranked[i].1))),
                    AggregateKey::Field(f) => {
                        metadata(i).and_then(|m| m.get(f)).and_then(Sortable::of)
                    }
                })
                .collect()
        };
        let mut kept: Vec<usize> = Vec::new();
        for members in groups.into_values() {
            let mut members: Vec<(Vec<Option<Sortable>>, usize)> =
                members.into_iter().map(|i| (key_of(i), i)).collect();
            members.sort_by(|a, b| compare_keys(&a.0, &b.0, self.max).then(a.1.cmp(&b.1)));
            kept.extend(members.into_iter().take(self.k as usize).map(|(_, i)| i));
        }
        kept.sort_unstable();
        kept.into_iter().map(|i| ranked[i]).collect()
    }
}

/// An aggregate key's value, ordered: numbers < strings < bools (a key mixing types
/// orders by type first); a missing value is the least preferred under both `$min_k`
/// and `$max_k`.
#[derive(Debug, Clone, PartialEq)]
enum Sortable {
    Number(f64),
    Str(String),
    Bool(bool),
}

impl Sortable {
    fn of(v: &MetadataValue) -> Option<Self> {
        match v {
            MetadataValue::Int(i) => Some(Sortable::Number(*i as f64)),
            MetadataValue::Float(f) => Some(Sortable::Number(*f)),
            MetadataValue::Str(s) => Some(Sortable::Str(s.clone())),
            MetadataValue::Bool(b) => Some(Sortable::Bool(*b)),
            _ => None,
        }
    }

    fn cmp(&self, other: &Self) -> Ordering {
        let rank = |s: &Sortable| match s {
            Sortable::Number(_) => 0,
            Sortable::Str(_) => 1,
            Sortable::Bool(_) => 2,
        };
        match (self, other) {
            (Sortable::Number(a), Sortable::Number(b)) => a.total_cmp(b),
            (Sortable::Str(a), Sortable::Str(b)) => a.cmp(b),
            (Sortable::Bool(a), Sortable::Bool(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

/// Which of two aggregate-key tuples is preferred first (`Less`): smaller under
/// `$min_k`, larger under `$max_k`, a missing value last under both.
fn compare_keys(a: &[Option<Sortable>], b: &[Option<Sortable>], max: bool) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Some(x), Some(y)) if max => y.cmp(x),
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

impl Select {
    fn parse(v: &Value) -> Result<Self> {
        let o = object("select", v)?;
        no_other_fields("select", o, &["keys"])?;
        let mut s = Select::default();
        let Some(keys) = o.get("keys").filter(|k| !k.is_null()) else {
            return Ok(s);
        };
        for k in strings("select", keys)? {
            match k.as_str() {
                "#document" => s.document = true,
                "#embedding" => s.embedding = true,
                "#metadata" => s.metadata = true,
                "#score" => s.score = true,
                _ => {
                    s.fields.insert(k);
                }
            }
        }
        Ok(s)
    }

    /// Whether any metadata comes back (all of it, or some fields).
    pub fn any_metadata(&self) -> bool {
        self.metadata || !self.fields.is_empty()
    }

    /// The selected keys as the response echoes them: `#document`, `#embedding`,
    /// `#metadata`, `#score`, then the fields by name.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = [
            (self.document, "#document"),
            (self.embedding, "#embedding"),
            (self.metadata, "#metadata"),
            (self.score, "#score"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, k)| k.to_owned())
        .collect();
        keys.extend(self.fields.iter().cloned());
        keys
    }

    /// The metadata a record returns: all of it, or only the selected fields; `None`
    /// when nothing is left.
    pub fn project(&self, metadata: Option<Metadata>) -> Option<Metadata> {
        let mut m = metadata?;
        if !self.metadata {
            m.retain(|k, _| self.fields.contains(k));
        }
        (!m.is_empty()).then_some(m)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::ErrorCode;

    fn rank(v: Value) -> Rank {
        Rank::parse(&v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    fn knn(q: f32, limit: u32, default: Option<f32>) -> Value {
        let mut k = json!({"query": [q, 1.0], "limit": limit});
        if let Some(d) = default {
            k["default"] = json!(d);
        }
        json!({ "$knn": k })
    }

    fn fails(v: Value, message: &str) {
        let e = Search::parse(&v).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.message().contains(message), "{v}: {}", e.message());
    }

    #[test]
    fn parses_what_the_client_sends() {
        let s = Search::parse(&json!({
            "filter": {"$and": [{"category": {"$eq": "science"}}, {"#document": {"$contains": "ai"}},
                                {"#id": {"$in": ["a", "b"]}}]},
            "rank": {"$sum": [{"$mul": [{"$knn": {"query": [0.1, 0.2], "key": "#embedding", "limit": 50}}, {"$val": 0.7}]},
                              {"$mul": [{"$knn": {"query": {"#type": "sparse_vector", "indices": [1, 5], "values": [0.5, 0.2]},
                                                   "key": "sparse", "limit": 50, "default": 1.0}}, {"$val": 0.3}]}]},
            "group_by": {"keys": ["category"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 2}}},
            "limit": {"offset": 5, "limit": 10},
            "select": {"keys": ["#document", "title", "#score"]}
        }))
        .unwrap();
        let r = s.rank.unwrap();
        assert_eq!(r.knns.len(), 2);
        assert_eq!(r.knns[0].key, "#embedding");
        assert!(matches!(r.knns[1].query, KnnQuery::Sparse(_)));
        assert_eq!(r.knns[1].default, Some(1.0));
        assert_eq!(s.offset, 5);
        assert_eq!(s.limit, Some(10));
        assert_eq!(s.select.keys(), vec!["#document", "#score", "title"]);
        assert_eq!(
            s.group_by.unwrap().aggregate_keys,
            vec![AggregateKey::Score]
        );
        let empty = Search::parse(&json!({"filter": null, "rank": null, "group_by": {},
            "limit": {"offset": 0}, "select": {"keys": []}}))
        .unwrap();
        assert_eq!(empty, Search::default());
        assert!(Search::parse(&json!({"filter": {}}))
            .unwrap()
            .filter
            .is_none());
    }

    #[test]
    fn refuses_malformed_payloads() {
        fails(
            json!({"rank": {"$knn": {"query": [1.0]}, "$val": 1}}),
            "exactly one operator",
        );
        fails(json!({"rank": {"$pow": 2}}), "unknown operator $pow");
        fails(
            json!({"rank": {"$sum": []}}),
            "$sum expects a non-empty list",
        );
        fails(
            json!({"rank": {"$sub": {"left": {"$val": 1}}}}),
            "expects \"left\" and \"right\"",
        );
        fails(
            json!({"rank": {"$knn": {"query": "text"}}}),
            "embedded by the client",
        );
        fails(
            json!({"rank": {"$knn": {"query": [1.0], "limit": 0}}}),
            "$knn limit must be in 1..=100000",
        );
        fails(
            json!({"rank": {"$knn": {"query": [1.0], "key": "title"}}}),
            "a dense $knn query searches #embedding",
        );
        fails(
            json!({"rank": {"$knn": {"query": [1.0], "k": 3}}}),
            "unknown field \"k\"",
        );
        fails(
            json!({"rank": {"$knn": {"query": {"indices": [2, 1], "values": [1, 1]}, "key": "s"}}}),
            "Invalid sparse vector in KNN query: Sparse vector indices must be sorted in strictly ascending order (no duplicates)",
        );
        fails(
            json!({"group_by": {"keys": ["a"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 1}}}}),
            "group_by requires a rank",
        );
        let rank = json!({"$knn": {"query": [1.0]}});
        fails(
            json!({"rank": rank, "group_by": {"keys": ["a"]}}),
            "keys and aggregate must be given together",
        );
        fails(
            json!({"rank": rank, "group_by": {"keys": ["#document"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 1}}}}),
            "group keys must be metadata keys",
        );
        fails(
            json!({"rank": rank, "group_by": {"keys": ["a"], "aggregate": {"$min_k": {"keys": ["#embedding"], "k": 1}}}}),
            "aggregate keys must be metadata keys or #score",
        );
        fails(
            json!({"rank": rank, "group_by": {"keys": ["a"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 0}}}}),
            "k must be at least 1",
        );
        fails(
            json!({"limit": {"limit": 0}}),
            "limit must be in 1..=100000",
        );
        fails(
            json!({"limit": {"limit": 100001}}),
            "limit must be in 1..=100000",
        );
        fails(
            json!({"limit": {"offset": -1}}),
            "offset must be an integer",
        );
        fails(json!({"select": {"keys": [1]}}), "keys must be strings");
        fails(
            json!({"filter": {"#id": {"$gt": "a"}}}),
            "unknown operator $gt on #id",
        );
        fails(json!({"where": {}}), "unknown field \"where\"");
        let mut deep = json!({"$val": 1});
        for _ in 0..70 {
            deep = json!({ "$abs": deep });
        }
        fails(json!({ "rank": deep }), "nested deeper than");
        let knns: Vec<Value> = (0..33).map(|_| json!({"$knn": {"query": [1.0]}})).collect();
        fails(
            json!({"rank": {"$sum": knns}}),
            "at most 32 $knn terms in one rank, got 33",
        );
        let vals: Vec<Value> = (0..1100).map(|_| json!({"$val": 1})).collect();
        fails(
            json!({"rank": {"$sum": vals}}),
            "at most 1024 operators and operands in one rank, got 1101",
        );
    }

    #[test]
    fn defaults_decide_union_intersection_or_one_side() {
        // Two knns: the first finds candidates 0, 1; the second 1, 2.
        let results = vec![vec![(0, 0.1), (1, 0.2)], vec![(1, 0.5), (2, 0.4)]];
        let eval = |a: Option<f32>, b: Option<f32>| {
            let r = rank(json!({"$sum": [knn(0.0, 5, a), knn(1.0, 5, b)]}));
            let mut out = r.evaluate(&results);
            out.iter_mut()
                .for_each(|(_, s)| *s = (*s * 100.0).round() / 100.0);
            out
        };
        assert_eq!(eval(None, None), vec![(1, 0.7)]);
        assert_eq!(
            eval(Some(1.0), Some(2.0)),
            vec![(1, 0.7), (2, 1.4), (0, 2.1)]
        );
        // Only the second has a default: the first's candidates, the second's default.
        assert_eq!(eval(None, Some(2.0)), vec![(1, 0.7), (0, 2.1)]);
        assert_eq!(eval(Some(1.0), None), vec![(1, 0.7), (2, 1.4)]);
        // A constant has a default and no candidates: it scales.
        let r = rank(json!({"$mul": [{"$val": -1}, knn(0.0, 5, None)]}));
        assert_eq!(r.evaluate(&results), vec![(1, -0.2), (0, -0.1)]);
        // A rank of constants alone selects nothing.
        assert!(rank(json!({"$val": 3})).evaluate(&[]).is_empty());
        let r = rank(
            json!({"$log": {"$abs": {"$sub": {"left": {"$val": 0}, "right": knn(0.0, 5, None)}}}}),
        );
        let out = r.evaluate(&results);
        assert_eq!(out[0].0, 0);
        assert!((out[0].1 - 0.1f32.ln()).abs() < 1e-6);
        let r = rank(json!({"$max": [knn(0.0, 5, Some(0.0)), {"$val": 0.15}]}));
        assert_eq!(r.evaluate(&results), vec![(0, 0.15), (1, 0.2)]);
    }

    #[test]
    fn rrf_from_the_client() {
        // Rrf([Knn(q1, return_rank), Knn(q2, return_rank)], k=60, weights=[2, 1]).
        let term = |w: f32, q: f32| {
            json!({"$div": {"left": {"$val": w}, "right": {"$sum": [{"$val": 60},
                {"$knn": {"query": [q], "limit": 3, "return_rank": true, "default": 3}}]}}})
        };
        let r = rank(json!({"$mul": [{"$val": -1}, {"$sum": [term(2.0, 0.0), term(1.0, 1.0)]}]}));
        assert!(r.knns.iter().all(|k| k.return_rank));
        // Positions: first list 0 → 0, 1 → 1; second 1 → 0, 2 → 1.
        let results = vec![vec![(0, 0.0), (1, 1.0)], vec![(1, 0.0), (2, 1.0)]];
        let out = r.evaluate(&results);
        let expect = |a: f32, b: f32| -(2.0 / (60.0 + a) + 1.0 / (60.0 + b));
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![1, 0, 2]);
        assert!((out[0].1 - expect(1.0, 0.0)).abs() < 1e-6);
        assert!((out[1].1 - expect(0.0, 3.0)).abs() < 1e-6);
        assert!((out[2].1 - expect(3.0, 1.0)).abs() < 1e-6);
    }

    #[test]
    fn group_by_keeps_the_best_k_per_group() {
        let metas: Vec<Metadata> = [
            json!({"c": "a", "p": 3}),
            json!({"c": "b", "p": 1}),
            json!({"c": "a", "p": 1}),
            json!({"c": "a"}),
            json!({"p": 2}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        let ranked: Vec<(u32, f32)> = (0..5).map(|i| (i, i as f32 / 10.0)).collect();
        let g = |v: Value| {
            let s = Search::parse(&json!({"rank": {"$val": 1}, "group_by": v})).unwrap();
            s.group_by.unwrap().apply(&ranked, |i| Some(&metas[i]))
        };
        let ids = |v: Vec<(u32, f32)>| v.into_iter().map(|r| r.0).collect::<Vec<_>>();
        // Best score per category (a missing category is a group of its own).
        let by_score =
            json!({"keys": ["c"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 1}}});
        assert_eq!(ids(g(by_score)), vec![0, 1, 4]);
        let two = json!({"keys": ["c"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 2}}});
        assert_eq!(ids(g(two)), vec![0, 1, 2, 4]);
        // Lowest p, then score; a missing p is least preferred.
        let by_p =
            json!({"keys": ["c"], "aggregate": {"$min_k": {"keys": ["p", "#score"], "k": 2}}});
        assert_eq!(ids(g(by_p)), vec![0, 1, 2, 4]);
        let max_p = json!({"keys": ["c"], "aggregate": {"$max_k": {"keys": ["p"], "k": 1}}});
        assert_eq!(ids(g(max_p)), vec![0, 1, 4]);
    }

    #[test]
    fn select_projects_metadata() {
        let s = Search::parse(&json!({"select": {"keys": ["b", "#id"]}}))
            .unwrap()
            .select;
        assert!(s.any_metadata());
        let m: Metadata = serde_json::from_value(json!({"a": 1, "b": 2})).unwrap();
        let p = s.project(Some(m.clone())).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(s.keys(), vec!["#id", "b"]);
        let only_a = Search::parse(&json!({"select": {"keys": ["c"]}}))
            .unwrap()
            .select;
        assert_eq!(only_a.project(Some(m.clone())), None);
        let all = Search::parse(&json!({"select": {"keys": ["#metadata", "#score"]}}))
            .unwrap()
            .select;
        assert_eq!(all.project(Some(m.clone())), Some(m));
        assert_eq!(all.keys(), vec!["#metadata", "#score"]);
    }
}
