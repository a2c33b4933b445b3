//! `where` and `where_document` filters: parsing from Chroma's JSON and evaluation.
//!
//! Grammar (api §8, see [`crate::api`]): every object has exactly one key; `{"k": scalar}` is
//! `$eq`; `$eq`/`$ne` take a bool, int, float or string; `$gt`/`$gte`/`$lt`/`$lte` take a
//! number; `$in`/`$nin` take a non-empty homogeneous list (ints and floats mix); `$contains`
//! /`$not_contains` take a scalar and test membership in array metadata;
//! `{"#document": {op: str}}` embeds a document operator in `where`; `$and`/`$or` take a
//! non-empty list. Parse errors are `InvalidArgument` with messages starting
//! `Invalid where clause` / `Invalid where document clause`, or `Regex syntax errror: `.
//!
//! Semantics: ints and floats compare numerically (int with int exactly, otherwise as
//! `f64`); strings never equal numbers; bools equal only bools. The negated operators
//! (`$ne`, `$nin`, `$not_contains`, `$not_regex`) are exact complements of their positive
//! forms, so they match records lacking the key, without metadata or without a document.
//! `$eq`/`$ne`/`$in`/`$nin`/`$gt`... see only scalar values (an array value never equals a
//! scalar); `$contains` sees only array values.
//!
//! The same semantics are implemented column-wise in [`columns`] (over a segment's
//! metadata columns); a property test there keeps the two identical.

pub mod columns;

use std::cmp::Ordering;
use std::fmt;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::record::{Metadata, MetadataValue};

/// Deepest accepted nesting of `$and`/`$or` (and operator objects).
pub const MAX_FILTER_DEPTH: usize = 64;
/// Compiled size limit of one regex (`RegexBuilder::size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Lazy-DFA cache limit of one regex (`RegexBuilder::dfa_size_limit`).
pub const REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;

/// The key that addresses the document inside a `where` clause.
pub const DOCUMENT_KEY: &str = "#document";
/// The key that addresses the record id inside a search filter.
pub const ID_KEY: &str = "#id";

/// A parsed `where` clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Where {
    /// Every child matches (at least one child).
    And(Vec<Where>),
    /// Some child matches (at least one child).
    Or(Vec<Where>),
    /// A comparison on one metadata key.
    Metadata { key: String, op: MetadataOp },
    /// `{"#document": {...}}`: a document operator inside `where`.
    Document(WhereDocument),
    /// `{"#id": {...}}` (search filters only): whether the record's id is one of `ids`
    /// (`$eq`, `$in`), or is none of them (`$ne`, `$nin`) when `negated`.
    Id { ids: Vec<String>, negated: bool },
}

/// A comparison against one metadata key.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataOp {
    Eq(Scalar),
    Ne(Scalar),
    /// `$gt`/`$gte`/`$lt`/`$lte` against a number.
    Cmp(CmpOp, Number),
    /// Non-empty, all bools, all numbers or all strings.
    In(Vec<Scalar>),
    Nin(Vec<Scalar>),
    /// Membership in an array value.
    Contains(Scalar),
    NotContains(Scalar),
}

/// An ordering operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl CmpOp {
    /// Whether `ord` (value compared to operand) satisfies the operator.
    #[inline]
    pub fn accepts(self, ord: Option<Ordering>) -> bool {
        matches!(
            (self, ord),
            (CmpOp::Gt, Some(Ordering::Greater))
                | (CmpOp::Gte, Some(Ordering::Greater | Ordering::Equal))
                | (CmpOp::Lt, Some(Ordering::Less))
                | (CmpOp::Lte, Some(Ordering::Less | Ordering::Equal))
        )
    }
}

/// A number operand; ints stay exact when compared with ints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    #[inline]
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }

    /// Numeric comparison: exact between ints, `f64` otherwise (`None` with NaN).
    #[inline]
    pub fn compare(self, other: Number) -> Option<Ordering> {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }
}

/// A scalar operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Scalar {
    fn number(&self) -> Option<Number> {
        match self {
            Scalar::Int(i) => Some(Number::Int(*i)),
            Scalar::Float(f) => Some(Number::Float(*f)),
            _ => None,
        }
    }

    /// Equality with Chroma's cross-type rules.
    fn eq_scalar(&self, other: &Scalar) -> bool {
        match (self, other) {
            (Scalar::Bool(a), Scalar::Bool(b)) => a == b,
            (Scalar::Str(a), Scalar::Str(b)) => a == b,
            _ => match (self.number(), other.number()) {
                (Some(a), Some(b)) => a.compare(b) == Some(Ordering::Equal),
                _ => false,
            },
        }
    }

    /// Whether a scalar metadata value equals this operand (array values never do).
    pub fn matches_value(&self, value: &MetadataValue) -> bool {
        match value {
            MetadataValue::Bool(b) => self.eq_scalar(&Scalar::Bool(*b)),
            MetadataValue::Int(i) => self.eq_scalar(&Scalar::Int(*i)),
            MetadataValue::Float(f) => self.eq_scalar(&Scalar::Float(*f)),
            MetadataValue::Str(s) => matches!(self, Scalar::Str(q) if q == s),
            _ => false,
        }
    }

    /// Whether an array metadata value contains this operand (scalar values never do).
    pub fn is_element_of(&self, value: &MetadataValue) -> bool {
        match value {
            MetadataValue::BoolArray(a) => a.iter().any(|b| self.eq_scalar(&Scalar::Bool(*b))),
            MetadataValue::IntArray(a) => a.iter().any(|i| self.eq_scalar(&Scalar::Int(*i))),
            MetadataValue::FloatArray(a) => a.iter().any(|f| self.eq_scalar(&Scalar::Float(*f))),
            MetadataValue::StrArray(a) => matches!(self, Scalar::Str(q) if a.contains(q)),
            _ => false,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Scalar::Bool(_) => "bool",
            Scalar::Int(_) | Scalar::Float(_) => "number",
            Scalar::Str(_) => "string",
        }
    }
}

/// A compiled document regex; equal when the patterns are equal.
#[derive(Clone)]
pub struct DocRegex(Regex);

impl DocRegex {
    /// Compiles `pattern` with bounded size; a bad pattern is `Regex syntax errror: ...`.
    pub fn new(pattern: &str) -> Result<Self> {
        RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .build()
            .map(DocRegex)
            .map_err(|e| Error::invalid(format!("Regex syntax errror: {e}")))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    #[inline]
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

impl PartialEq for DocRegex {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for DocRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocRegex({:?})", self.as_str())
    }
}

/// A parsed `where_document` clause.
#[derive(Debug, Clone, PartialEq)]
pub enum WhereDocument {
    And(Vec<WhereDocument>),
    Or(Vec<WhereDocument>),
    /// Case-sensitive substring.
    Contains(String),
    NotContains(String),
    Regex(DocRegex),
    NotRegex(DocRegex),
}

/// The columns a filter reads besides the id ([`Filter::reads`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    pub documents: bool,
    pub metadata: bool,
}

impl Reads {
    fn or(self, other: Reads) -> Reads {
        Reads {
            documents: self.documents || other.documents,
            metadata: self.metadata || other.metadata,
        }
    }
}

/// `where` AND `where_document`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    pub where_: Option<Where>,
    pub where_document: Option<WhereDocument>,
}

fn where_err(detail: impl fmt::Display) -> Error {
    Error::invalid(format!("Invalid where clause: {detail}"))
}

fn where_doc_err(detail: impl fmt::Display) -> Error {
    Error::invalid(format!("Invalid where document clause: {detail}"))
}

/// A JSON value for an error message, cut to a readable length.
fn show(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// The single `(key, value)` of a one-key object.
fn single_entry<'a>(
    v: &'a Value,
    what: &str,
    err: fn(String) -> Error,
) -> Result<(&'a String, &'a Value)> {
    let obj: &Map<String, Value> = v
        .as_object()
        .ok_or_else(|| err(format!("expected an object, got {}", show(v))))?;
    let mut it = obj.iter();
    match (it.next(), it.next()) {
        (Some(entry), None) => Ok(entry),
        _ => Err(err(format!(
            "expected exactly one {what} in {}, got {}",
            show(v),
            obj.len()
        ))),
    }
}

fn scalar_from_json(v: &Value) -> Option<Scalar> {
    match v {
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        Value::String(s) => Some(Scalar::Str(s.clone())),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Some(Scalar::Int(i)),
            None => n.as_f64().map(Scalar::Float),
        },
        _ => None,
    }
}

impl Where {
    /// Parses Chroma's `where` JSON.
    pub fn parse(v: &Value) -> Result<Self> {
        Self::parse_at(v, 1, false)
    }

    /// Parses a search `filter`: the `where` grammar, plus `#id` conditions.
    pub fn parse_search(v: &Value) -> Result<Self> {
        Self::parse_at(v, 1, true)
    }

    fn parse_at(v: &Value, depth: usize, ids: bool) -> Result<Self> {
        if depth > MAX_FILTER_DEPTH {
            return Err(where_err(format!(
                "nested deeper than {MAX_FILTER_DEPTH} levels"
            )));
        }
        let (key, value) = single_entry(v, "key", where_err)?;
        match key.as_str() {
            "$and" | "$or" => {
                let children = value.as_array().ok_or_else(|| {
                    where_err(format!("{key} expects a list, got {}", show(value)))
                })?;
                if children.is_empty() {
                    return Err(where_err(format!("{key} expects at least one clause")));
                }
                let children = children
                    .iter()
                    .map(|c| Self::parse_at(c, depth + 1, ids))
                    .collect::<Result<Vec<_>>>()?;
                Ok(if key == "$and" {
                    Where::And(children)
                } else {
                    Where::Or(children)
                })
            }
            DOCUMENT_KEY => {
                if !value.is_object() {
                    return Err(where_err(format!(
                        "{DOCUMENT_KEY} expects an operator object, got {}",
                        show(value)
                    )));
                }
                let (op, operand) = single_entry(value, "operator", where_err)?;
                WhereDocument::leaf(op, operand, where_err).map(Where::Document)
            }
            ID_KEY if ids => Self::parse_id(value),
            k if k.starts_with('$') => Err(where_err(format!("unknown operator {k}"))),
            k if k.starts_with('#') => Err(where_err(format!(
                "unknown key {k}: keys starting with '#' are reserved"
            ))),
            _ => Ok(Where::Metadata {
                key: key.clone(),
                op: MetadataOp::parse(key, value)?,
            }),
        }
    }

    /// `{"#id": {"$eq"|"$ne": id}}` or `{"#id": {"$in"|"$nin": [ids]}}`.
    fn parse_id(value: &Value) -> Result<Self> {
        if !value.is_object() {
            return Err(where_err(format!(
                "{ID_KEY} expects an operator object, got {}",
                show(value)
            )));
        }
        let (op, operand) = single_entry(value, "operator", where_err)?;
        let id = |v: &Value| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                where_err(format!(
                    "{op} on {ID_KEY} expects ids (strings), got {}",
                    show(v)
                ))
            })
        };
        let (ids, negated) = match op.as_str() {
            "$eq" | "$ne" => (vec![id(operand)?], op == "$ne"),
            "$in" | "$nin" => {
                let items = operand.as_array().ok_or_else(|| {
                    where_err(format!(
                        "{op} on {ID_KEY} expects a list, got {}",
                        show(operand)
                    ))
                })?;
                (items.iter().map(id).collect::<Result<_>>()?, op == "$nin")
            }
            other => {
                return Err(where_err(format!(
                    "unknown operator {other} on {ID_KEY}: expected $eq, $ne, $in or $nin"
                )))
            }
        };
        Ok(Where::Id { ids, negated })
    }

    /// Whether evaluating this clause reads documents (`#document`) or metadata.
    pub fn reads(&self) -> Reads {
        match self {
            Where::And(children) | Where::Or(children) => children
                .iter()
                .fold(Reads::default(), |a, c| a.or(c.reads())),
            Where::Document(_) => Reads {
                documents: true,
                metadata: false,
            },
            Where::Metadata { .. } => Reads {
                documents: false,
                metadata: true,
            },
            Where::Id { .. } => Reads::default(),
        }
    }

    /// Whether the record `id` with this metadata and document matches.
    pub fn matches(&self, id: &str, metadata: Option<&Metadata>, document: Option<&str>) -> bool {
        match self {
            Where::And(children) => children.iter().all(|c| c.matches(id, metadata, document)),
            Where::Or(children) => children.iter().any(|c| c.matches(id, metadata, document)),
            Where::Document(d) => d.matches(document),
            Where::Metadata { key, op } => op.matches(metadata.and_then(|m| m.get(key))),
            Where::Id { ids, negated } => ids.iter().any(|i| i == id) != *negated,
        }
    }
}

impl MetadataOp {
    fn parse(key: &str, value: &Value) -> Result<Self> {
        if let Some(s) = scalar_from_json(value) {
            return Ok(MetadataOp::Eq(s));
        }
        if !value.is_object() {
            return Err(where_err(format!(
                "value of {key} must be a bool, number, string or operator object, got {}",
                show(value)
            )));
        }
        let (op, operand) = single_entry(value, "operator", where_err)?;
        let scalar = |what: &str| {
            scalar_from_json(operand).ok_or_else(|| {
                where_err(format!(
                    "{op} on {key} expects {what}, got {}",
                    show(operand)
                ))
            })
        };
        match op.as_str() {
            "$eq" => Ok(MetadataOp::Eq(scalar("a bool, number or string")?)),
            "$ne" => Ok(MetadataOp::Ne(scalar("a bool, number or string")?)),
            "$contains" => Ok(MetadataOp::Contains(scalar("a bool, number or string")?)),
            "$not_contains" => Ok(MetadataOp::NotContains(scalar("a bool, number or string")?)),
            "$gt" | "$gte" | "$lt" | "$lte" => {
                let n = scalar("a number")?.number().ok_or_else(|| {
                    where_err(format!(
                        "{op} on {key} expects a number, got {}",
                        show(operand)
                    ))
                })?;
                let cmp = match op.as_str() {
                    "$gt" => CmpOp::Gt,
                    "$gte" => CmpOp::Gte,
                    "$lt" => CmpOp::Lt,
                    _ => CmpOp::Lte,
                };
                Ok(MetadataOp::Cmp(cmp, n))
            }
            "$in" | "$nin" => {
                let items = operand.as_array().ok_or_else(|| {
                    where_err(format!(
                        "{op} on {key} expects a list, got {}",
                        show(operand)
                    ))
                })?;
                if items.is_empty() {
                    return Err(where_err(format!("{op} on {key} expects a non-empty list")));
                }
                let list = items
                    .iter()
                    .map(|i| {
                        scalar_from_json(i).ok_or_else(|| {
                            where_err(format!(
                                "{op} on {key} expects bools, numbers or strings, got {}",
                                show(i)
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let kind = list[0].kind();
                if let Some(other) = list.iter().find(|s| s.kind() != kind) {
                    return Err(where_err(format!(
                        "{op} on {key} expects a list of one type, got a {kind} and a {}",
                        other.kind()
                    )));
                }
                Ok(if op == "$in" {
                    MetadataOp::In(list)
                } else {
                    MetadataOp::Nin(list)
                })
            }
            other => Err(where_err(format!("unknown operator {other} on {key}"))),
        }
    }

    /// Whether the value of the key (`None` when absent) satisfies the operator.
    pub fn matches(&self, value: Option<&MetadataValue>) -> bool {
        match self {
            MetadataOp::Eq(s) => value.is_some_and(|v| s.matches_value(v)),
            MetadataOp::Ne(s) => !value.is_some_and(|v| s.matches_value(v)),
            MetadataOp::In(list) => value.is_some_and(|v| list.iter().any(|s| s.matches_value(v))),
            MetadataOp::Nin(list) => {
                !value.is_some_and(|v| list.iter().any(|s| s.matches_value(v)))
            }
            MetadataOp::Contains(s) => value.is_some_and(|v| s.is_element_of(v)),
            MetadataOp::NotContains(s) => !value.is_some_and(|v| s.is_element_of(v)),
            MetadataOp::Cmp(op, q) => {
                let n = match value {
                    Some(MetadataValue::Int(i)) => Number::Int(*i),
                    Some(MetadataValue::Float(f)) => Number::Float(*f),
                    _ => return false,
                };
                op.accepts(n.compare(*q))
            }
        }
    }
}

impl WhereDocument {
    /// Parses Chroma's `where_document` JSON.
    pub fn parse(v: &Value) -> Result<Self> {
        Self::parse_at(v, 1)
    }

    fn parse_at(v: &Value, depth: usize) -> Result<Self> {
        if depth > MAX_FILTER_DEPTH {
            return Err(where_doc_err(format!(
                "nested deeper than {MAX_FILTER_DEPTH} levels"
            )));
        }
        let (key, value) = single_entry(v, "operator", where_doc_err)?;
        match key.as_str() {
            "$and" | "$or" => {
                let children = value.as_array().ok_or_else(|| {
                    where_doc_err(format!("{key} expects a list, got {}", show(value)))
                })?;
                if children.is_empty() {
                    return Err(where_doc_err(format!("{key} expects at least one clause")));
                }
                let children = children
                    .iter()
                    .map(|c| Self::parse_at(c, depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                Ok(if key == "$and" {
                    WhereDocument::And(children)
                } else {
                    WhereDocument::Or(children)
                })
            }
            _ => Self::leaf(key, value, where_doc_err),
        }
    }

    /// A `$contains`/`$not_contains`/`$regex`/`$not_regex` operator with a string operand.
    fn leaf(op: &str, operand: &Value, err: fn(String) -> Error) -> Result<Self> {
        let text = || {
            operand
                .as_str()
                .ok_or_else(|| err(format!("{op} expects a string, got {}", show(operand))))
        };
        match op {
            "$contains" => Ok(WhereDocument::Contains(text()?.to_owned())),
            "$not_contains" => Ok(WhereDocument::NotContains(text()?.to_owned())),
            "$regex" => Ok(WhereDocument::Regex(DocRegex::new(text()?)?)),
            "$not_regex" => Ok(WhereDocument::NotRegex(DocRegex::new(text()?)?)),
            other => Err(err(format!("unknown document operator {other}"))),
        }
    }

    /// Whether a record with this document (`None` when it has none) matches.
    pub fn matches(&self, document: Option<&str>) -> bool {
        match self {
            WhereDocument::And(children) => children.iter().all(|c| c.matches(document)),
            WhereDocument::Or(children) => children.iter().any(|c| c.matches(document)),
            WhereDocument::Contains(s) => document.is_some_and(|d| d.contains(s.as_str())),
            WhereDocument::NotContains(s) => !document.is_some_and(|d| d.contains(s.as_str())),
            WhereDocument::Regex(r) => document.is_some_and(|d| r.is_match(d)),
            WhereDocument::NotRegex(r) => !document.is_some_and(|d| r.is_match(d)),
        }
    }
}

impl Filter {
    /// `Ok(None)` when both are absent or JSON `null`. An empty object is an error.
    pub fn parse(where_: Option<&Value>, where_document: Option<&Value>) -> Result<Option<Self>> {
        let where_ = where_
            .filter(|v| !v.is_null())
            .map(Where::parse)
            .transpose()?;
        let where_document = where_document
            .filter(|v| !v.is_null())
            .map(WhereDocument::parse)
            .transpose()?;
        if where_.is_none() && where_document.is_none() {
            return Ok(None);
        }
        Ok(Some(Filter {
            where_,
            where_document,
        }))
    }

    /// A search `filter`: `null` and `{}` are no filter; `#id` conditions are allowed.
    pub fn parse_search(filter: Option<&Value>) -> Result<Option<Self>> {
        match filter {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) if o.is_empty() => Ok(None),
            Some(v) => Ok(Some(Filter {
                where_: Some(Where::parse_search(v)?),
                where_document: None,
            })),
        }
    }

    /// Which of a record's columns evaluating the filter reads (besides its id): a
    /// reader that fetches records by column fetches only those.
    pub fn reads(&self) -> Reads {
        let clause = self.where_.as_ref().map(Where::reads).unwrap_or_default();
        clause.or(Reads {
            documents: self.where_document.is_some(),
            metadata: false,
        })
    }

    /// `where` AND `where_document` for the record `id`; an empty filter matches
    /// everything.
    pub fn matches(&self, id: &str, metadata: Option<&Metadata>, document: Option<&str>) -> bool {
        self.where_
            .as_ref()
            .is_none_or(|w| w.matches(id, metadata, document))
            && self
                .where_document
                .as_ref()
                .is_none_or(|d| d.matches(document))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn a_filter_names_the_columns_it_reads() {
        let reads = |w: Option<Value>, d: Option<Value>| {
            Filter::parse(w.as_ref(), d.as_ref())
                .unwrap()
                .unwrap()
                .reads()
        };
        let (meta, docs, both) = (
            Reads {
                documents: false,
                metadata: true,
            },
            Reads {
                documents: true,
                metadata: false,
            },
            Reads {
                documents: true,
                metadata: true,
            },
        );
        assert_eq!(reads(Some(json!({"a": 1})), None), meta);
        assert_eq!(reads(None, Some(json!({"$contains": "x"}))), docs);
        assert_eq!(
            reads(Some(json!({"a": 1})), Some(json!({"$contains": "x"}))),
            both
        );
        assert_eq!(
            reads(
                Some(json!({"$or": [{"a": 1}, {"#document": {"$contains": "x"}}]})),
                None
            ),
            both
        );
        assert_eq!(
            reads(Some(json!({"#document": {"$not_contains": "x"}})), None),
            docs
        );
    }

    fn meta(v: Value) -> Metadata {
        serde_json::from_value(v).unwrap()
    }

    fn w(v: Value) -> Where {
        Where::parse(&v).unwrap_or_else(|e| panic!("{v} should parse: {e}"))
    }

    fn wd(v: Value) -> WhereDocument {
        WhereDocument::parse(&v).unwrap_or_else(|e| panic!("{v} should parse: {e}"))
    }

    fn where_fails(v: Value, needle: &str) {
        let e = Where::parse(&v).expect_err(&format!("{v} should fail"));
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(
            e.message().starts_with("Invalid where clause"),
            "{}",
            e.message()
        );
        assert!(
            e.message().contains(needle),
            "{:?} lacks {needle:?}",
            e.message()
        );
    }

    fn doc_fails(v: Value, needle: &str) {
        let e = WhereDocument::parse(&v).expect_err(&format!("{v} should fail"));
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(
            e.message().contains(needle),
            "{:?} lacks {needle:?}",
            e.message()
        );
    }

    #[test]
    fn parses_the_grammar() {
        assert_eq!(
            w(json!({"a": 1})),
            Where::Metadata {
                key: "a".into(),
                op: MetadataOp::Eq(Scalar::Int(1))
            }
        );
        assert_eq!(
            w(json!({"a": {"$gte": 2.5}})),
            Where::Metadata {
                key: "a".into(),
                op: MetadataOp::Cmp(CmpOp::Gte, Number::Float(2.5))
            }
        );
        assert_eq!(
            w(json!({"a": {"$in": [1, 2.5]}})),
            Where::Metadata {
                key: "a".into(),
                op: MetadataOp::In(vec![Scalar::Int(1), Scalar::Float(2.5)])
            }
        );
        assert_eq!(
            w(json!({"#document": {"$contains": "x"}})),
            Where::Document(WhereDocument::Contains("x".into()))
        );
        assert!(matches!(w(json!({"$or": [{"a": "x"}]})), Where::Or(c) if c.len() == 1));
        for op in ["$eq", "$ne", "$contains", "$not_contains"] {
            for v in [json!(true), json!(1), json!(1.5), json!("s")] {
                w(json!({"a": {op: v}}));
            }
        }
        for op in ["$gt", "$gte", "$lt", "$lte"] {
            w(json!({"a": {op: 1}}));
            w(json!({"a": {op: -1.5}}));
        }
        for op in ["$in", "$nin"] {
            w(json!({"a": {op: [true, false]}}));
            w(json!({"a": {op: ["x", "y"]}}));
        }
        for op in ["$contains", "$not_contains", "$regex", "$not_regex"] {
            w(json!({"#document": {op: "a"}}));
            wd(json!({op: "a"}));
        }
        wd(json!({"$and": [{"$contains": "a"}, {"$or": [{"$regex": "^b"}]}]}));
    }

    #[test]
    fn rejects_bad_where() {
        where_fails(json!({}), "exactly one key");
        where_fails(json!({"a": 1, "b": 2}), "exactly one key");
        where_fails(json!([1]), "expected an object");
        where_fails(json!("a"), "expected an object");
        where_fails(json!({"a": {}}), "exactly one operator");
        where_fails(json!({"a": {"$gt": 1, "$lt": 3}}), "exactly one operator");
        where_fails(json!({"a": null}), "value of a");
        where_fails(json!({"a": [1, 2]}), "value of a");
        where_fails(json!({"a": {"$gt": "x"}}), "$gt on a expects a number");
        where_fails(json!({"a": {"$lte": true}}), "$lte on a expects a number");
        where_fails(json!({"a": {"$lt": [1]}}), "$lt on a");
        where_fails(json!({"a": {"$eq": [1]}}), "$eq on a");
        where_fails(json!({"a": {"$ne": null}}), "$ne on a");
        where_fails(json!({"a": {"$eq": {"x": 1}}}), "$eq on a");
        where_fails(json!({"a": {"$contains": [1]}}), "$contains on a");
        where_fails(json!({"a": {"$in": []}}), "non-empty list");
        where_fails(json!({"a": {"$nin": 3}}), "expects a list");
        where_fails(json!({"a": {"$in": [1, "x"]}}), "one type");
        where_fails(json!({"a": {"$in": [true, 1]}}), "one type");
        where_fails(json!({"a": {"$in": [[1]]}}), "$in on a");
        where_fails(json!({"a": {"$in": [null]}}), "$in on a");
        where_fails(
            json!({"a": {"$regex": "x"}}),
            "unknown operator $regex on a",
        );
        where_fails(json!({"a": {"$like": "x"}}), "unknown operator $like");
        where_fails(json!({"$contains": "x"}), "unknown operator $contains");
        where_fails(json!({"$not": {"a": 1}}), "unknown operator $not");
        where_fails(json!({"$and": []}), "at least one");
        where_fails(json!({"$or": {"a": 1}}), "expects a list");
        where_fails(json!({"$and": [{"a": 1}, {}]}), "exactly one key");
        where_fails(json!({"#document": "x"}), "#document");
        where_fails(
            json!({"#document": {"$eq": "x"}}),
            "unknown document operator $eq",
        );
        where_fails(
            json!({"#document": {"$contains": 1}}),
            "$contains expects a string",
        );
        where_fails(json!({"#id": "x"}), "reserved");
    }

    #[test]
    fn rejects_bad_where_document() {
        doc_fails(json!({}), "Invalid where document clause");
        doc_fails(json!({"$contains": "a", "$regex": "b"}), "exactly one");
        doc_fails(json!({"$contains": 1}), "$contains expects a string");
        doc_fails(json!({"$regex": null}), "$regex expects a string");
        doc_fails(json!({"$eq": "a"}), "unknown document operator $eq");
        doc_fails(json!({"$and": []}), "at least one");
        doc_fails(json!({"$or": "x"}), "expects a list");
        doc_fails(json!({"$and": [{"$contains": "a"}, {"$foo": "b"}]}), "$foo");
        doc_fails(json!("x"), "expected an object");
    }

    #[test]
    fn invalid_regex_uses_chromas_message() {
        for v in [json!({"$regex": "("}), json!({"$not_regex": "[a"})] {
            let e = WhereDocument::parse(&v).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument);
            assert!(
                e.message().starts_with("Regex syntax errror: "),
                "{}",
                e.message()
            );
        }
        let e = Where::parse(&json!({"#document": {"$regex": "(?P<"}})).unwrap_err();
        assert!(e.message().starts_with("Regex syntax errror: "));
        // Exceeds the compiled size limit.
        let e = WhereDocument::parse(&json!({"$regex": "(\\w{1000}){1000}"})).unwrap_err();
        assert!(
            e.message().starts_with("Regex syntax errror: "),
            "{}",
            e.message()
        );
    }

    #[test]
    fn depth_is_limited() {
        let mut v = json!({"a": 1});
        for _ in 0..MAX_FILTER_DEPTH - 1 {
            v = json!({"$and": [v]});
        }
        w(v.clone());
        where_fails(json!({"$and": [v]}), "nested deeper");
        let mut d = json!({"$contains": "a"});
        for _ in 0..MAX_FILTER_DEPTH {
            d = json!({"$or": [d]});
        }
        doc_fails(d, "nested deeper");
    }

    #[test]
    fn numbers_compare_across_int_and_float() {
        let m2 = meta(json!({"n": 2}));
        let m2f = meta(json!({"n": 2.0}));
        let ms = meta(json!({"n": "2"}));
        for f in [
            w(json!({"n": 2})),
            w(json!({"n": 2.0})),
            w(json!({"n": {"$in": [5, 2]}})),
        ] {
            assert!(f.matches("", Some(&m2), None));
            assert!(f.matches("", Some(&m2f), None));
            assert!(!f.matches("", Some(&ms), None));
        }
        assert!(w(json!({"n": "2"})).matches("", Some(&ms), None));
        assert!(!w(json!({"n": "2"})).matches("", Some(&m2), None));
        assert!(w(json!({"n": {"$gt": 1.5}})).matches("", Some(&m2), None));
        assert!(w(json!({"n": {"$gte": 2}})).matches("", Some(&m2f), None));
        assert!(!w(json!({"n": {"$lt": 2}})).matches("", Some(&m2f), None));
        assert!(w(json!({"n": {"$lte": 2}})).matches("", Some(&m2), None));
        // Strings and bools are never ordered.
        assert!(!w(json!({"n": {"$gt": 1}})).matches("", Some(&ms), None));
        assert!(!w(json!({"n": {"$gt": 0}})).matches("", Some(&meta(json!({"n": true}))), None));
        // Int against int is exact beyond f64 precision.
        let big = meta(json!({"n": 9007199254740993i64}));
        assert!(!w(json!({"n": 9007199254740992i64})).matches("", Some(&big), None));
        assert!(w(json!({"n": {"$gt": 9007199254740992i64}})).matches("", Some(&big), None));
    }

    #[test]
    fn bools_equal_only_bools() {
        let t = meta(json!({"b": true}));
        let one = meta(json!({"b": 1}));
        assert!(w(json!({"b": true})).matches("", Some(&t), None));
        assert!(!w(json!({"b": true})).matches("", Some(&one), None));
        assert!(!w(json!({"b": 1})).matches("", Some(&t), None));
        assert!(w(json!({"b": {"$ne": 1}})).matches("", Some(&t), None));
        assert!(w(json!({"b": {"$in": [false, true]}})).matches("", Some(&t), None));
    }

    #[test]
    fn negations_match_missing_keys_and_metadata() {
        let other = meta(json!({"x": 1}));
        for f in [
            w(json!({"a": {"$ne": 1}})),
            w(json!({"a": {"$nin": [1, 2]}})),
            w(json!({"a": {"$not_contains": 1}})),
        ] {
            assert!(f.matches("", Some(&other), None));
            assert!(f.matches("", None, None));
        }
        for f in [
            w(json!({"a": 1})),
            w(json!({"a": {"$in": [1]}})),
            w(json!({"a": {"$gt": 0}})),
            w(json!({"a": {"$lte": 0}})),
            w(json!({"a": {"$contains": 1}})),
        ] {
            assert!(!f.matches("", Some(&other), None));
            assert!(!f.matches("", None, None));
        }
        let a1 = meta(json!({"a": 1}));
        assert!(!w(json!({"a": {"$ne": 1}})).matches("", Some(&a1), None));
        assert!(!w(json!({"a": {"$nin": [3, 1]}})).matches("", Some(&a1), None));
    }

    #[test]
    fn arrays_match_only_contains() {
        let arr = meta(json!({"arr": [1, 2, 3], "s": ["x", "y"], "f": [1.5, 2.0], "b": [true]}));
        assert!(w(json!({"arr": {"$contains": 2}})).matches("", Some(&arr), None));
        assert!(w(json!({"arr": {"$contains": 2.0}})).matches("", Some(&arr), None));
        assert!(!w(json!({"arr": {"$contains": "2"}})).matches("", Some(&arr), None));
        assert!(!w(json!({"arr": {"$contains": 4}})).matches("", Some(&arr), None));
        assert!(w(json!({"arr": {"$not_contains": 4}})).matches("", Some(&arr), None));
        assert!(!w(json!({"arr": {"$not_contains": 1}})).matches("", Some(&arr), None));
        assert!(w(json!({"f": {"$contains": 2}})).matches("", Some(&arr), None));
        assert!(w(json!({"s": {"$contains": "y"}})).matches("", Some(&arr), None));
        assert!(w(json!({"b": {"$contains": true}})).matches("", Some(&arr), None));
        assert!(!w(json!({"b": {"$contains": 1}})).matches("", Some(&arr), None));
        // Scalar operators never see arrays.
        assert!(!w(json!({"arr": 1})).matches("", Some(&arr), None));
        assert!(!w(json!({"arr": {"$in": [1]}})).matches("", Some(&arr), None));
        assert!(!w(json!({"arr": {"$gt": 0}})).matches("", Some(&arr), None));
        assert!(w(json!({"arr": {"$ne": 1}})).matches("", Some(&arr), None));
        // $contains never sees scalars.
        let scalar = meta(json!({"arr": 2, "s": "xy"}));
        assert!(!w(json!({"arr": {"$contains": 2}})).matches("", Some(&scalar), None));
        assert!(!w(json!({"s": {"$contains": "x"}})).matches("", Some(&scalar), None));
        assert!(w(json!({"s": {"$not_contains": "x"}})).matches("", Some(&scalar), None));
    }

    #[test]
    fn document_operators() {
        let d = Some("Hello World");
        assert!(wd(json!({"$contains": "World"})).matches(d));
        assert!(!wd(json!({"$contains": "world"})).matches(d));
        assert!(wd(json!({"$not_contains": "world"})).matches(d));
        assert!(wd(json!({"$regex": "^H.*d$"})).matches(d));
        assert!(!wd(json!({"$not_regex": "o W"})).matches(d));
        assert!(!wd(json!({"$contains": ""})).matches(None));
        assert!(wd(json!({"$not_contains": "x"})).matches(None));
        assert!(!wd(json!({"$regex": ".*"})).matches(None));
        assert!(wd(json!({"$not_regex": ".*"})).matches(None));
        assert!(wd(json!({"$and": [{"$contains": "Hello"}, {"$contains": "World"}]})).matches(d));
        assert!(!wd(json!({"$and": [{"$contains": "Hello"}, {"$contains": "x"}]})).matches(d));
        assert!(wd(json!({"$or": [{"$contains": "x"}, {"$regex": "W"}]})).matches(d));
        // Inside where.
        let f = w(json!({"$and": [{"a": 1}, {"#document": {"$contains": "Hello"}}]}));
        assert!(f.matches("", Some(&meta(json!({"a": 1}))), d));
        assert!(!f.matches("", Some(&meta(json!({"a": 1}))), None));
    }

    #[test]
    fn and_or_combine() {
        let m = meta(json!({"a": 1, "b": "x"}));
        assert!(w(json!({"$and": [{"a": 1}, {"b": "x"}]})).matches("", Some(&m), None));
        assert!(!w(json!({"$and": [{"a": 1}, {"b": "y"}]})).matches("", Some(&m), None));
        assert!(w(json!({"$or": [{"a": 2}, {"b": "x"}]})).matches("", Some(&m), None));
        assert!(!w(json!({"$or": [{"a": 2}, {"b": "y"}]})).matches("", Some(&m), None));
    }

    #[test]
    fn filter_parse_and_matches() {
        assert_eq!(Filter::parse(None, None).unwrap(), None);
        assert_eq!(
            Filter::parse(Some(&Value::Null), Some(&Value::Null)).unwrap(),
            None
        );
        let e = Filter::parse(Some(&json!({})), None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.message().starts_with("Invalid where clause"));
        let e = Filter::parse(None, Some(&json!({}))).unwrap_err();
        assert!(e.message().starts_with("Invalid where document clause"));
        let f = Filter::parse(Some(&json!({"a": 1})), Some(&json!({"$contains": "z"})))
            .unwrap()
            .unwrap();
        let m = meta(json!({"a": 1}));
        assert!(f.matches("", Some(&m), Some("xyz")));
        assert!(!f.matches("", Some(&m), Some("xy")));
        assert!(!f.matches("", None, Some("xyz")));
        let only_doc = Filter::parse(None, Some(&json!({"$contains": "z"})))
            .unwrap()
            .unwrap();
        assert!(only_doc.where_.is_none());
        assert!(only_doc.matches("", None, Some("z")));
        assert!(Filter::default().matches("", None, None));
    }

    #[test]
    fn regexes_compare_by_pattern() {
        assert_eq!(wd(json!({"$regex": "a+"})), wd(json!({"$regex": "a+"})));
        assert_ne!(wd(json!({"$regex": "a+"})), wd(json!({"$regex": "a*"})));
    }
}
