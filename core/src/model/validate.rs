//! Validation of names, ids, embeddings, metadata, write batches and HNSW configuration.
//!
//! Every failure is `InvalidArgument` with a message naming the offending field and value;
//! where Chroma has a fixed message (api §2–3, see [`crate::api`]) that text is used verbatim,
//! since clients and tests match it.
//!
//! Limits beyond Chroma's own rules are the `MAX_*` constants below.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::collection::{HnswConfiguration, Space};
use super::record::{Metadata, MetadataValue, OpKind, Operation, UpdateMetadata};
use crate::error::{Error, Result};

/// Longest tenant, database or collection name, in characters.
pub const MAX_NAME_LEN: usize = 512;
/// Shortest tenant, database or collection name, in characters.
pub const MIN_NAME_LEN: usize = 3;
/// Longest record id, in UTF-8 bytes.
pub const MAX_ID_BYTES: usize = 4096;
/// Most dimensions of one embedding.
pub const MAX_DIMENSION: usize = 65_536;
/// Most records in one write batch (Chroma's client advertises 5461 by default).
pub const MAX_RECORDS_PER_WRITE: usize = 100_000;
/// Most keys in one metadata map.
pub const MAX_METADATA_KEYS: usize = 1024;
/// Longest metadata key, in UTF-8 bytes.
pub const MAX_METADATA_KEY_BYTES: usize = 1024;
/// Longest metadata string value (or string array element), in UTF-8 bytes.
pub const MAX_METADATA_STRING_BYTES: usize = 64 * 1024;
/// Most elements of a metadata array value.
pub const MAX_METADATA_ARRAY_LEN: usize = 4096;
/// Longest document, in UTF-8 bytes.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// Longest URI, in UTF-8 bytes.
pub const MAX_URI_BYTES: usize = 64 * 1024;
/// Largest `ef_construction` / `ef_search`.
pub const MAX_HNSW_EF: usize = 10_000;
/// Largest `max_neighbors`: the most the index builder supports (a larger value would be
/// accepted here and then fail every compaction of the collection).
pub const MAX_HNSW_NEIGHBORS: usize = crate::index::MAX_NEIGHBORS_LIMIT;
/// Largest `num_threads`.
pub const MAX_HNSW_THREADS: usize = 1024;
/// Largest `batch_size`.
pub const MAX_HNSW_BATCH_SIZE: usize = 1_000_000;
/// Largest `sync_threshold`.
pub const MAX_HNSW_SYNC_THRESHOLD: usize = 10_000_000;
/// Largest `resize_factor`.
pub const MAX_HNSW_RESIZE_FACTOR: f64 = 100.0;

/// How much of a user-supplied value an error message quotes.
const QUOTE_CHARS: usize = 100;

/// `s` cut to a readable length for an error message.
fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

fn show(v: &Value) -> String {
    quote(&v.to_string())
}

// ---------------------------------------------------------------------------------------
// Names and ids

/// Chroma's `validate_name`: 3–512 characters from `[a-zA-Z0-9._-]`, starting and ending
/// with `[a-zA-Z0-9]`, no `..`, not an IP address.
pub fn validate_collection_name(name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    let shape_ok = (MIN_NAME_LEN..=MAX_NAME_LEN).contains(&bytes.len())
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !shape_ok {
        return Err(Error::invalid(format!(
            "Validation error: name: Expected a name containing 3-512 characters from \
             [a-zA-Z0-9._-], starting and ending with a character in [a-zA-Z0-9]. Got: {}",
            quote(name)
        )));
    }
    if name.contains("..") {
        return Err(Error::invalid(format!(
            "Validation error: name: Expected a name that does not contains two consecutive \
             periods (..). Got {name}"
        )));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(Error::invalid(format!(
            "Validation error: name: Expected a name that is not a valid ip address. Got {name}"
        )));
    }
    Ok(())
}

/// Databases follow Chroma's collection-name rules (`validate_name`).
pub fn validate_database_name(name: &str) -> Result<()> {
    validate_collection_name(name)
}

/// Tenants: 3–512 characters (Chroma requires at least 3), no `/` (names travel in URL
/// paths) and no control characters.
pub fn validate_tenant_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if !(MIN_NAME_LEN..=MAX_NAME_LEN).contains(&chars) {
        return Err(Error::invalid(format!(
            "Validation error: name: Expected a tenant name containing 3-512 characters. Got: {}",
            quote(name)
        )));
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return Err(Error::invalid(format!(
            "Validation error: name: Expected a tenant name without '/' or control characters. \
             Got: {}",
            quote(&name.escape_debug().to_string())
        )));
    }
    Ok(())
}

/// A tenant's resource name: 1–512 characters, no control characters.
pub fn validate_resource_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if !(1..=MAX_NAME_LEN).contains(&chars) {
        return Err(Error::invalid(format!(
            "Validation error: resource_name: Expected a resource name containing 1-512 \
             characters. Got: {chars} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "Validation error: resource_name: Expected a resource name without control characters",
        ));
    }
    Ok(())
}

/// A record id: any non-empty UTF-8 string of at most [`MAX_ID_BYTES`] bytes.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(
            "Empty ID, ID must have at least one character",
        ));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::invalid(format!(
            "ID {} is {} bytes long, the limit is {MAX_ID_BYTES}",
            quote(id),
            id.len()
        )));
    }
    Ok(())
}

/// An embedding: 1..=[`MAX_DIMENSION`] finite values.
pub fn validate_embedding(embedding: &[f32]) -> Result<()> {
    if embedding.is_empty() {
        return Err(Error::invalid(
            "Each embedding must have at least 1 dimension",
        ));
    }
    if embedding.len() > MAX_DIMENSION {
        return Err(Error::invalid(format!(
            "embedding dimension {} exceeds the limit of {MAX_DIMENSION}",
            embedding.len()
        )));
    }
    if embedding.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "Embeddings must not contain NaN or Infinity values",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Metadata

fn validate_metadata_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("Metadata key cannot be empty"));
    }
    if key.starts_with('#') || key.starts_with('$') {
        return Err(Error::invalid(format!(
            "Metadata key cannot start with '#' or '$': {}",
            quote(key)
        )));
    }
    if key.len() > MAX_METADATA_KEY_BYTES {
        return Err(Error::invalid(format!(
            "metadata key {} is {} bytes long, the limit is {MAX_METADATA_KEY_BYTES}",
            quote(key),
            key.len()
        )));
    }
    Ok(())
}

fn validate_metadata_string(key: &str, s: &str) -> Result<()> {
    if s.len() > MAX_METADATA_STRING_BYTES {
        return Err(Error::invalid(format!(
            "metadata value of key {} is {} bytes long, the limit is {MAX_METADATA_STRING_BYTES}",
            quote(key),
            s.len()
        )));
    }
    Ok(())
}

/// Checks one metadata value against the limits (arrays non-empty and bounded, strings
/// bounded, floats finite).
fn validate_metadata_value(key: &str, value: &MetadataValue) -> Result<()> {
    let array_len = match value {
        MetadataValue::Bool(_) | MetadataValue::Int(_) => None,
        MetadataValue::Float(f) => {
            if !f.is_finite() {
                return Err(Error::invalid(format!(
                    "metadata value of key {} must be finite, got {f}",
                    quote(key)
                )));
            }
            None
        }
        MetadataValue::Str(s) => {
            validate_metadata_string(key, s)?;
            None
        }
        MetadataValue::BoolArray(a) => Some(a.len()),
        MetadataValue::IntArray(a) => Some(a.len()),
        MetadataValue::FloatArray(a) => {
            if a.iter().any(|f| !f.is_finite()) {
                return Err(Error::invalid(format!(
                    "metadata array of key {} must contain only finite numbers",
                    quote(key)
                )));
            }
            Some(a.len())
        }
        MetadataValue::StrArray(a) => {
            for s in a {
                validate_metadata_string(key, s)?;
            }
            Some(a.len())
        }
    };
    match array_len {
        Some(0) => Err(Error::invalid(format!(
            "metadata value of key {} cannot be an empty array",
            quote(key)
        ))),
        Some(n) if n > MAX_METADATA_ARRAY_LEN => Err(Error::invalid(format!(
            "metadata array of key {} has {n} elements, the limit is {MAX_METADATA_ARRAY_LEN}",
            quote(key)
        ))),
        _ => Ok(()),
    }
}

/// Checks already-typed metadata: keys, values, limits; `None` values (key removals) only
/// when `allow_null`.
pub fn validate_update_metadata(metadata: &UpdateMetadata, allow_null: bool) -> Result<()> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(Error::invalid(format!(
            "metadata has {} keys, the limit is {MAX_METADATA_KEYS}",
            metadata.len()
        )));
    }
    for (key, value) in metadata {
        validate_metadata_key(key)?;
        match value {
            Some(v) => validate_metadata_value(key, v)?,
            None if allow_null => {}
            None => {
                return Err(Error::invalid(format!(
                    "metadata value of key {} cannot be null",
                    quote(key)
                )))
            }
        }
    }
    Ok(())
}

/// Checks stored-shape metadata (no `None` values possible).
pub fn validate_metadata(metadata: &Metadata) -> Result<()> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(Error::invalid(format!(
            "metadata has {} keys, the limit is {MAX_METADATA_KEYS}",
            metadata.len()
        )));
    }
    for (key, value) in metadata {
        validate_metadata_key(key)?;
        validate_metadata_value(key, value)?;
    }
    Ok(())
}

/// One JSON metadata value. Numbers that fit `i64` are ints, all others floats; an array
/// mixing ints and floats is a `FloatArray` (as Chroma's untagged deserialization does).
fn metadata_value_from_json(key: &str, v: &Value) -> Result<MetadataValue> {
    let bad = |what: &str| {
        Error::invalid(format!(
            "metadata value of key {} must be a bool, number, string or non-empty array of \
             one of those types, got {what}: {}",
            quote(key),
            show(v)
        ))
    };
    let value = match v {
        Value::Bool(b) => MetadataValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => MetadataValue::Int(i),
            None => MetadataValue::Float(n.as_f64().ok_or_else(|| bad("a number"))?),
        },
        Value::String(s) => MetadataValue::Str(s.clone()),
        Value::Object(_) => return Err(bad("an object")),
        Value::Null => return Err(bad("null")),
        Value::Array(items) => {
            let Some(first) = items.first() else {
                return Err(Error::invalid(format!(
                    "metadata value of key {} cannot be an empty array",
                    quote(key)
                )));
            };
            let mixed = || bad("a mixed or nested array");
            match first {
                Value::Bool(_) => MetadataValue::BoolArray(
                    items
                        .iter()
                        .map(|i| i.as_bool().ok_or_else(mixed))
                        .collect::<Result<_>>()?,
                ),
                Value::String(_) => MetadataValue::StrArray(
                    items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned).ok_or_else(mixed))
                        .collect::<Result<_>>()?,
                ),
                Value::Number(_) => {
                    if items.iter().all(|i| i.as_i64().is_some()) {
                        MetadataValue::IntArray(items.iter().filter_map(Value::as_i64).collect())
                    } else {
                        MetadataValue::FloatArray(
                            items
                                .iter()
                                .map(|i| i.as_f64().ok_or_else(mixed))
                                .collect::<Result<_>>()?,
                        )
                    }
                }
                _ => return Err(mixed()),
            }
        }
    };
    validate_metadata_value(key, &value)?;
    Ok(value)
}

/// Record metadata from JSON. `null` values are key removals, allowed only when
/// `allow_null` (update/upsert), and become `None`.
pub fn metadata_from_json(map: &Map<String, Value>, allow_null: bool) -> Result<UpdateMetadata> {
    if map.len() > MAX_METADATA_KEYS {
        return Err(Error::invalid(format!(
            "metadata has {} keys, the limit is {MAX_METADATA_KEYS}",
            map.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (key, v) in map {
        validate_metadata_key(key)?;
        let value = match v {
            Value::Null if allow_null => None,
            Value::Null => {
                return Err(Error::invalid(format!(
                    "metadata value of key {} cannot be null",
                    quote(key)
                )))
            }
            v => Some(metadata_value_from_json(key, v)?),
        };
        out.insert(key.clone(), value);
    }
    Ok(out)
}

/// A write's `metadatas` list: each element an object or `null`. Errors carry the index
/// like Chroma's `Validation error: metadatas: Invalid metadata at index i`.
pub fn metadatas_from_json(
    values: &[Value],
    allow_null: bool,
) -> Result<Vec<Option<UpdateMetadata>>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = |detail: &str| {
                Error::invalid(format!(
                    "Validation error: metadatas: Invalid metadata at index {i}: {detail}"
                ))
            };
            match v {
                Value::Null => Ok(None),
                Value::Object(map) => metadata_from_json(map, allow_null)
                    .map(Some)
                    .map_err(|e| at(e.message())),
                other => Err(at(&format!(
                    "expected an object or null, got {}",
                    show(other)
                ))),
            }
        })
        .collect()
}

/// Collection metadata (create, or modify's `new_metadata`): `null` is `None`, `{}` is
/// rejected like Chroma does, `null` values are rejected.
pub fn collection_metadata_from_json(v: &Value) -> Result<Option<Metadata>> {
    match v {
        Value::Null => Ok(None),
        Value::Object(map) if map.is_empty() => Err(Error::invalid(
            "Validation error: metadata: Metadata cannot be empty",
        )),
        Value::Object(map) => {
            let m = metadata_from_json(map, false)?;
            Ok(Some(
                m.into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect(),
            ))
        }
        other => Err(Error::invalid(format!(
            "metadata must be an object or null, got {}",
            show(other)
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Write batches

/// One add/upsert/update/delete request, as parsed from JSON but not yet validated.
/// Absent lists are `None`; a `None` element keeps the old value (update/upsert) or
/// leaves the field empty (add).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub ids: Vec<String>,
    pub embeddings: Option<Vec<Option<Vec<f32>>>>,
    pub documents: Option<Vec<Option<String>>>,
    pub uris: Option<Vec<Option<String>>>,
    pub metadatas: Option<Vec<Option<UpdateMetadata>>>,
}

impl WriteBatch {
    /// Validates the batch and turns it into one operation per id, in order, with the
    /// batch's embedding dimension (`None` when no embedding is given).
    ///
    /// Checks: at most [`MAX_RECORDS_PER_WRITE`] records; every list as long as `ids`; valid and
    /// unique ids; add/upsert carry an embedding for every record; all embeddings valid
    /// and of one dimension; documents and URIs within limits; metadata valid, without
    /// `null` values on add. `Delete` takes only ids.
    pub fn into_operations(self, kind: OpKind) -> Result<(Vec<Operation>, Option<usize>)> {
        let n = self.ids.len();
        if n > MAX_RECORDS_PER_WRITE {
            return Err(Error::invalid(format!(
                "batch of {n} records exceeds the limit of {MAX_RECORDS_PER_WRITE}"
            )));
        }
        let lens = [
            ("embeddings", self.embeddings.as_ref().map(Vec::len)),
            ("documents", self.documents.as_ref().map(Vec::len)),
            ("uris", self.uris.as_ref().map(Vec::len)),
            ("metadatas", self.metadatas.as_ref().map(Vec::len)),
        ];
        for (field, len) in lens {
            if let Some(len) = len.filter(|&l| l != n) {
                return Err(Error::invalid(format!(
                    "Inconsistent number of IDs, embeddings, documents, URIs and metadatas \
                     ({n} ids, {len} {field})"
                )));
            }
        }
        for id in &self.ids {
            validate_id(id)?;
        }
        check_unique(&self.ids)?;

        if kind == OpKind::Delete {
            if let Some((field, _)) = lens.iter().find(|(_, l)| l.is_some()) {
                return Err(Error::invalid(format!(
                    "delete takes only ids, got {field}"
                )));
            }
            return Ok((self.ids.into_iter().map(Operation::delete).collect(), None));
        }

        let verb = match kind {
            OpKind::Add => "add",
            OpKind::Upsert => "upsert",
            _ => "update",
        };
        let embedding_required = matches!(kind, OpKind::Add | OpKind::Upsert);
        if embedding_required && self.embeddings.is_none() && n > 0 {
            return Err(Error::invalid(format!(
                "embeddings are required for {verb}"
            )));
        }
        let mut dim = None;
        if let Some(embeddings) = &self.embeddings {
            for (i, e) in embeddings.iter().enumerate() {
                let Some(e) = e else {
                    if embedding_required {
                        return Err(Error::invalid(format!(
                            "embedding at index {i} is missing: {verb} requires an embedding \
                             for every record"
                        )));
                    }
                    continue;
                };
                match dim {
                    None => dim = Some(e.len()),
                    Some(d) if d != e.len() => {
                        return Err(Error::invalid(
                            "Inconsistent dimensions in provided embeddings",
                        ))
                    }
                    Some(_) => {}
                }
                validate_embedding(e)?;
            }
        }
        for d in self.documents.iter().flatten().flatten() {
            if d.len() > MAX_DOCUMENT_BYTES {
                return Err(Error::invalid(format!(
                    "document of {} bytes exceeds the limit of {MAX_DOCUMENT_BYTES}",
                    d.len()
                )));
            }
        }
        for u in self.uris.iter().flatten().flatten() {
            if u.len() > MAX_URI_BYTES {
                return Err(Error::invalid(format!(
                    "uri of {} bytes exceeds the limit of {MAX_URI_BYTES}",
                    u.len()
                )));
            }
        }
        for (i, m) in self.metadatas.iter().flatten().enumerate() {
            if let Some(m) = m {
                validate_update_metadata(m, kind != OpKind::Add).map_err(|e| {
                    Error::invalid(format!(
                        "Validation error: metadatas: Invalid metadata at index {i}: {}",
                        e.message()
                    ))
                })?;
            }
        }

        let mut embeddings = self.embeddings.map(Vec::into_iter);
        let mut documents = self.documents.map(Vec::into_iter);
        let mut uris = self.uris.map(Vec::into_iter);
        let mut metadatas = self.metadatas.map(Vec::into_iter);
        fn next<T>(it: &mut Option<std::vec::IntoIter<Option<T>>>) -> Option<T> {
            it.as_mut().and_then(Iterator::next).flatten()
        }
        let ops = self
            .ids
            .into_iter()
            .map(|id| Operation {
                kind,
                id,
                embedding: next(&mut embeddings),
                document: next(&mut documents),
                uri: next(&mut uris),
                metadata: next(&mut metadatas),
            })
            .collect();
        Ok((ops, dim))
    }
}

/// Rejects duplicate ids, naming them like Chroma's `DuplicateIDError`.
fn check_unique(ids: &[String]) -> Result<()> {
    let mut seen = HashSet::with_capacity(ids.len());
    let mut dups: Vec<&str> = Vec::new();
    let mut reported = HashSet::new();
    for id in ids {
        if !seen.insert(id.as_str()) && reported.insert(id.as_str()) {
            dups.push(id);
        }
    }
    if dups.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = dups.iter().take(10).map(|d| quote(d)).collect();
    let more = if dups.len() > 10 {
        format!(" and {} more", dups.len() - 10)
    } else {
        String::new()
    };
    Err(Error::invalid(format!(
        "Expected IDs to be unique, found duplicates of: {}{more}",
        shown.join(", ")
    )))
}

// ---------------------------------------------------------------------------------------
// HNSW configuration

fn hnsw_err(detail: impl std::fmt::Display) -> Error {
    Error::invalid(format!("Invalid HNSW parameters: {detail}"))
}

fn parse_space(field: &str, s: &str) -> Result<Space> {
    match s {
        "l2" => Ok(Space::L2),
        "cosine" => Ok(Space::Cosine),
        "ip" => Ok(Space::Ip),
        other => Err(hnsw_err(format!(
            "{field} must be one of l2, cosine, ip, got {}",
            quote(other)
        ))),
    }
}

/// A raw setting, from `configuration.hnsw` JSON or a legacy `hnsw:*` metadata value.
enum Raw<'a> {
    Json(&'a Value),
    Meta(&'a MetadataValue),
}

impl Raw<'_> {
    fn show(&self) -> String {
        match self {
            Raw::Json(v) => show(v),
            Raw::Meta(v) => quote(&serde_json::to_string(v).unwrap_or_default()),
        }
    }

    fn uint(&self, field: &str, min: usize, max: usize) -> Result<usize> {
        let v = match self {
            Raw::Json(v) => v.as_u64(),
            Raw::Meta(MetadataValue::Int(i)) => u64::try_from(*i).ok(),
            Raw::Meta(_) => None,
        };
        match v.and_then(|v| usize::try_from(v).ok()) {
            Some(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(hnsw_err(format!(
                "{field} must be an integer between {min} and {max}, got {}",
                self.show()
            ))),
        }
    }

    fn float(&self, field: &str, min: f64, max: f64) -> Result<f64> {
        let v = match self {
            Raw::Json(v) => v.as_f64(),
            Raw::Meta(MetadataValue::Int(i)) => Some(*i as f64),
            Raw::Meta(MetadataValue::Float(f)) => Some(*f),
            Raw::Meta(_) => None,
        };
        match v {
            Some(v) if v.is_finite() && (min..=max).contains(&v) => Ok(v),
            _ => Err(hnsw_err(format!(
                "{field} must be a number between {min} and {max}, got {}",
                self.show()
            ))),
        }
    }

    fn space(&self, field: &str) -> Result<Space> {
        let s = match self {
            Raw::Json(Value::String(s)) => s.as_str(),
            Raw::Meta(MetadataValue::Str(s)) => s.as_str(),
            _ => {
                return Err(hnsw_err(format!(
                    "{field} must be one of l2, cosine, ip, got {}",
                    self.show()
                )))
            }
        };
        parse_space(field, s)
    }
}

/// The HNSW settings, by their `configuration.hnsw` name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setting {
    Space,
    EfConstruction,
    EfSearch,
    MaxNeighbors,
    NumThreads,
    BatchSize,
    SyncThreshold,
    ResizeFactor,
}

impl Setting {
    const ALL: [(&'static str, &'static str, Setting); 8] = [
        ("space", "hnsw:space", Setting::Space),
        (
            "ef_construction",
            "hnsw:construction_ef",
            Setting::EfConstruction,
        ),
        ("ef_search", "hnsw:search_ef", Setting::EfSearch),
        ("max_neighbors", "hnsw:M", Setting::MaxNeighbors),
        ("num_threads", "hnsw:num_threads", Setting::NumThreads),
        ("batch_size", "hnsw:batch_size", Setting::BatchSize),
        (
            "sync_threshold",
            "hnsw:sync_threshold",
            Setting::SyncThreshold,
        ),
        ("resize_factor", "hnsw:resize_factor", Setting::ResizeFactor),
    ];

    fn mutable(self) -> bool {
        !matches!(self, Setting::Space | Setting::EfConstruction)
    }

    /// Sets `field` (named as the caller spelled it) from `raw`.
    fn apply(self, field: &str, raw: Raw<'_>, cfg: &mut HnswConfiguration) -> Result<()> {
        match self {
            Setting::Space => cfg.space = raw.space(field)?,
            Setting::EfConstruction => cfg.ef_construction = raw.uint(field, 1, MAX_HNSW_EF)?,
            Setting::EfSearch => cfg.ef_search = raw.uint(field, 1, MAX_HNSW_EF)?,
            Setting::MaxNeighbors => cfg.max_neighbors = raw.uint(field, 1, MAX_HNSW_NEIGHBORS)?,
            Setting::NumThreads => cfg.num_threads = Some(raw.uint(field, 1, MAX_HNSW_THREADS)?),
            Setting::BatchSize => cfg.batch_size = raw.uint(field, 2, MAX_HNSW_BATCH_SIZE)?,
            Setting::SyncThreshold => {
                cfg.sync_threshold = raw.uint(field, 2, MAX_HNSW_SYNC_THRESHOLD)?
            }
            Setting::ResizeFactor => {
                cfg.resize_factor = raw.float(field, 1.0, MAX_HNSW_RESIZE_FACTOR)?
            }
        }
        Ok(())
    }
}

/// The `hnsw` member of a `configuration` object: `None` when absent or `null`.
fn hnsw_object<'a>(
    config: Option<&'a Value>,
    what: &str,
) -> Result<Option<&'a Map<String, Value>>> {
    let config = match config {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(c)) => c,
        Some(other) => {
            return Err(Error::invalid(format!(
                "{what} must be an object or null, got {}",
                show(other)
            )))
        }
    };
    match config.get("hnsw") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(h)) => Ok(Some(h)),
        Some(other) => Err(Error::invalid(format!(
            "{what}.hnsw must be an object or null, got {}",
            show(other)
        ))),
    }
}

/// The HNSW configuration of a new collection.
///
/// `config` is the request's `configuration` object (its `hnsw` member is read; other
/// members are not checked here). `legacy_metadata` is the collection metadata, whose
/// `hnsw:*` keys (`hnsw:space`, `hnsw:construction_ef`, `hnsw:search_ef`, `hnsw:M`,
/// `hnsw:num_threads`, `hnsw:batch_size`, `hnsw:sync_threshold`, `hnsw:resize_factor`)
/// apply first; fields set in `configuration.hnsw` override them. Unset fields keep the
/// defaults; a JSON `null` field counts as unset.
pub fn hnsw_configuration_from_json(
    config: Option<&Value>,
    legacy_metadata: Option<&Metadata>,
) -> Result<HnswConfiguration> {
    let mut cfg = HnswConfiguration::default();
    for (key, value) in legacy_metadata.into_iter().flatten() {
        if !key.starts_with("hnsw:") {
            continue;
        }
        let Some(&(_, _, setting)) = Setting::ALL.iter().find(|(_, legacy, _)| legacy == key)
        else {
            return Err(hnsw_err(format!(
                "unknown legacy metadata key {}",
                quote(key)
            )));
        };
        setting.apply(key, Raw::Meta(value), &mut cfg)?;
    }
    if let Some(hnsw) = hnsw_object(config, "configuration")? {
        for (field, value) in hnsw {
            let Some(&(_, _, setting)) = Setting::ALL.iter().find(|(name, _, _)| name == field)
            else {
                return Err(hnsw_err(format!(
                    "unknown field {} in configuration.hnsw",
                    quote(field)
                )));
            };
            if !value.is_null() {
                setting.apply(field, Raw::Json(value), &mut cfg)?;
            }
        }
    }
    Ok(cfg)
}

/// The HNSW configuration after a modify. `new_configuration` is the request's
/// `new_configuration` object (its `hnsw` member is read); only `ef_search`,
/// `max_neighbors`, `num_threads`, `resize_factor`, `sync_threshold` and `batch_size` may
/// change. `null` fields and a missing or `null` `hnsw` leave the current values.
pub fn hnsw_update_from_json(
    new_configuration: &Value,
    current: &HnswConfiguration,
) -> Result<HnswConfiguration> {
    let mut cfg = current.clone();
    if let Some(hnsw) = hnsw_object(Some(new_configuration), "new_configuration")? {
        for (field, value) in hnsw {
            let setting = Setting::ALL.iter().find(|(name, _, _)| name == field);
            match setting {
                Some(&(_, _, s)) if s.mutable() => {
                    if !value.is_null() {
                        s.apply(field, Raw::Json(value), &mut cfg)?;
                    }
                }
                Some(_) => {
                    return Err(hnsw_err(format!(
                        "{field} cannot be changed after the collection is created"
                    )))
                }
                None => {
                    return Err(hnsw_err(format!(
                        "unknown field {} in new_configuration.hnsw",
                        quote(field)
                    )))
                }
            }
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::ErrorCode;

    #[track_caller]
    fn fails<T: std::fmt::Debug>(r: Result<T>, needle: &str) {
        let e = r.expect_err("should fail");
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains(needle),
            "{:?} lacks {needle:?}",
            e.message()
        );
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn meta(v: Value) -> Metadata {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn collection_names() {
        for ok in [
            "abc",
            "a-b",
            "a.b_c-1",
            "A1z",
            &"a".repeat(512),
            "1.2.3",
            "a.b.c.d",
        ] {
            validate_collection_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let shape = "Validation error: name: Expected a name containing 3-512 characters from \
                     [a-zA-Z0-9._-], starting and ending with a character in [a-zA-Z0-9]. Got: ";
        for bad in [
            "",
            "ab",
            "-abc",
            "abc-",
            "_abc",
            "ab c",
            "abé",
            "a/b",
            &"a".repeat(513),
        ] {
            fails(validate_collection_name(bad), shape);
        }
        fails(validate_collection_name("ab"), "Got: ab");
        fails(
            validate_collection_name("a..b"),
            "Expected a name that does not contains two consecutive periods (..). Got a..b",
        );
        fails(
            validate_collection_name("192.168.1.1"),
            "Expected a name that is not a valid ip address. Got 192.168.1.1",
        );
        // Long bad names are quoted, not echoed whole.
        let long = format!("-{}", "a".repeat(1000));
        let e = validate_collection_name(&long).unwrap_err();
        assert!(e.message().len() < 400);
    }

    #[test]
    fn database_and_tenant_names() {
        validate_database_name("default_database").unwrap();
        fails(
            validate_database_name("db"),
            "Expected a name containing 3-512",
        );
        fails(validate_database_name("a..b"), "two consecutive periods");
        validate_tenant_name("default_tenant").unwrap();
        validate_tenant_name("ténant with spaces").unwrap();
        fails(
            validate_tenant_name("ab"),
            "tenant name containing 3-512 characters. Got: ab",
        );
        fails(
            validate_tenant_name(&"t".repeat(513)),
            "tenant name containing 3-512",
        );
        fails(validate_tenant_name("a/bc"), "without '/'");
        fails(validate_tenant_name("ab\ncd"), "control characters");
    }

    #[test]
    fn ids() {
        validate_id("a").unwrap();
        validate_id("é/ü?#").unwrap();
        validate_id(&"x".repeat(MAX_ID_BYTES)).unwrap();
        fails(
            validate_id(""),
            "Empty ID, ID must have at least one character",
        );
        fails(
            validate_id(&"x".repeat(MAX_ID_BYTES + 1)),
            "the limit is 4096",
        );
    }

    #[test]
    fn embeddings() {
        validate_embedding(&[0.0, -1.5, f32::MAX]).unwrap();
        fails(
            validate_embedding(&[]),
            "Each embedding must have at least 1 dimension",
        );
        for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            fails(
                validate_embedding(&[1.0, v]),
                "Embeddings must not contain NaN or Infinity values",
            );
        }
        // Out of f32 range: parsed to infinity upstream.
        fails(validate_embedding(&[1e40f64 as f32]), "NaN or Infinity");
        fails(
            validate_embedding(&vec![0.0; MAX_DIMENSION + 1]),
            "embedding dimension",
        );
    }

    #[test]
    fn metadata_values() {
        let m = metadata_from_json(
            &obj(json!({
                "b": true, "i": 3, "f": 2.5, "s": "x", "ba": [true, false], "ia": [1, 2],
                "fa": [1.5, 2], "sa": ["a", "b"], "big": 18446744073709551615u64, "n": null
            })),
            true,
        )
        .unwrap();
        assert_eq!(m["b"], Some(MetadataValue::Bool(true)));
        assert_eq!(m["i"], Some(MetadataValue::Int(3)));
        assert_eq!(m["f"], Some(MetadataValue::Float(2.5)));
        assert_eq!(m["s"], Some(MetadataValue::Str("x".into())));
        assert_eq!(m["ba"], Some(MetadataValue::BoolArray(vec![true, false])));
        assert_eq!(m["ia"], Some(MetadataValue::IntArray(vec![1, 2])));
        assert_eq!(m["fa"], Some(MetadataValue::FloatArray(vec![1.5, 2.0])));
        assert_eq!(
            m["sa"],
            Some(MetadataValue::StrArray(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            m["big"],
            Some(MetadataValue::Float(18446744073709551615u64 as f64))
        );
        assert_eq!(m["n"], None);
        assert!(metadata_from_json(&Map::new(), false).unwrap().is_empty());
    }

    #[test]
    fn metadata_errors() {
        let bad = |v: Value, allow_null: bool, needle: &str| {
            fails(metadata_from_json(&obj(v), allow_null), needle)
        };
        bad(json!({"": 1}), false, "Metadata key cannot be empty");
        bad(
            json!({"#k": 1}),
            false,
            "Metadata key cannot start with '#' or '$': #k",
        );
        bad(
            json!({"$k": 1}),
            true,
            "Metadata key cannot start with '#' or '$': $k",
        );
        bad(
            json!({"k".repeat(MAX_METADATA_KEY_BYTES + 1): 1}),
            false,
            "the limit is 1024",
        );
        bad(json!({"k": null}), false, "key k cannot be null");
        bad(json!({"k": {"a": 1}}), false, "key k must be a bool");
        bad(json!({"k": {"a": 1}}), true, "got an object");
        bad(json!({"k": []}), false, "key k cannot be an empty array");
        bad(json!({"k": [1, "a"]}), false, "mixed or nested array");
        bad(json!({"k": [true, 1]}), false, "mixed or nested array");
        bad(json!({"k": ["a", null]}), false, "mixed or nested array");
        bad(json!({"k": [[1]]}), false, "mixed or nested array");
        bad(json!({"k": [{"a": 1}]}), false, "mixed or nested array");
        bad(json!({"k": [null]}), false, "mixed or nested array");
        bad(
            json!({"k": "x".repeat(MAX_METADATA_STRING_BYTES + 1)}),
            false,
            "key k is",
        );
        bad(
            json!({"k": ["x".repeat(MAX_METADATA_STRING_BYTES + 1)]}),
            false,
            "key k is",
        );
        bad(
            json!({"k": vec![1; MAX_METADATA_ARRAY_LEN + 1]}),
            false,
            "array of key k has",
        );
        let many: Map<String, Value> = (0..=MAX_METADATA_KEYS)
            .map(|i| (format!("k{i}"), json!(1)))
            .collect();
        fails(metadata_from_json(&many, false), "the limit is 1024");
    }

    #[test]
    fn typed_metadata_checks() {
        let mut m = UpdateMetadata::new();
        m.insert("a".into(), None);
        validate_update_metadata(&m, true).unwrap();
        fails(validate_update_metadata(&m, false), "key a cannot be null");
        m.insert("f".into(), Some(MetadataValue::Float(f64::NAN)));
        fails(validate_update_metadata(&m, true), "key f must be finite");
        let mut m = UpdateMetadata::new();
        m.insert(
            "fa".into(),
            Some(MetadataValue::FloatArray(vec![1.0, f64::INFINITY])),
        );
        fails(validate_update_metadata(&m, true), "array of key fa");
        let mut m = UpdateMetadata::new();
        m.insert("e".into(), Some(MetadataValue::StrArray(vec![])));
        fails(
            validate_update_metadata(&m, true),
            "key e cannot be an empty array",
        );
        validate_metadata(&meta(json!({"a": 1, "b": [1.5]}))).unwrap();
        fails(
            validate_metadata(&meta(json!({"#a": 1}))),
            "cannot start with '#'",
        );
        fails(validate_metadata(&meta(json!({"": 1}))), "cannot be empty");
    }

    #[test]
    fn metadata_lists() {
        let list = metadatas_from_json(&[json!({"a": 1}), Value::Null, json!({})], false).unwrap();
        assert_eq!(list.len(), 3);
        assert!(list[1].is_none());
        assert_eq!(list[2].as_ref().map(BTreeMap::len), Some(0));
        fails(
            metadatas_from_json(&[json!({"a": 1}), json!({"#a": 1})], false),
            "Validation error: metadatas: Invalid metadata at index 1: Metadata key cannot",
        );
        fails(
            metadatas_from_json(&[json!(3)], false),
            "at index 0: expected an object or null",
        );
        fails(
            metadatas_from_json(&[json!({"a": null})], false),
            "at index 0",
        );
        metadatas_from_json(&[json!({"a": null})], true).unwrap();
    }

    #[test]
    fn collection_metadata() {
        assert_eq!(collection_metadata_from_json(&Value::Null).unwrap(), None);
        assert_eq!(
            collection_metadata_from_json(&json!({"hnsw:space": "ip", "m": 1})).unwrap(),
            Some(meta(json!({"hnsw:space": "ip", "m": 1})))
        );
        fails(
            collection_metadata_from_json(&json!({})),
            "Metadata cannot be empty",
        );
        fails(
            collection_metadata_from_json(&json!({"a": null})),
            "key a cannot be null",
        );
        fails(
            collection_metadata_from_json(&json!({"$a": 1})),
            "cannot start with",
        );
        fails(
            collection_metadata_from_json(&json!([1])),
            "metadata must be an object or null",
        );
    }

    fn batch(n: usize) -> WriteBatch {
        WriteBatch {
            ids: (0..n).map(|i| format!("id{i}")).collect(),
            embeddings: Some((0..n).map(|i| Some(vec![i as f32, 1.0])).collect()),
            documents: None,
            uris: None,
            metadatas: None,
        }
    }

    #[test]
    fn batch_becomes_operations() {
        let mut b = batch(2);
        b.documents = Some(vec![Some("d0".into()), None]);
        b.uris = Some(vec![None, Some("u1".into())]);
        b.metadatas = Some(vec![
            Some(metadata_from_json(&obj(json!({"a": 1})), false).unwrap()),
            None,
        ]);
        let (ops, dim) = b.into_operations(OpKind::Add).unwrap();
        assert_eq!(dim, Some(2));
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].kind, OpKind::Add);
        assert_eq!(ops[0].id, "id0");
        assert_eq!(ops[0].embedding, Some(vec![0.0, 1.0]));
        assert_eq!(ops[0].document.as_deref(), Some("d0"));
        assert_eq!(ops[0].uri, None);
        assert_eq!(
            ops[0].metadata.as_ref().unwrap()["a"],
            Some(MetadataValue::Int(1))
        );
        assert_eq!(ops[1].document, None);
        assert_eq!(ops[1].uri.as_deref(), Some("u1"));
        assert_eq!(ops[1].metadata, None);

        let (ops, dim) = WriteBatch::default().into_operations(OpKind::Add).unwrap();
        assert!(ops.is_empty());
        assert_eq!(dim, None);
    }

    #[test]
    fn update_allows_missing_embeddings_and_null_metadata() {
        let b = WriteBatch {
            ids: vec!["a".into(), "b".into()],
            embeddings: Some(vec![None, Some(vec![1.0, 2.0, 3.0])]),
            metadatas: Some(vec![
                Some(metadata_from_json(&obj(json!({"x": null})), true).unwrap()),
                None,
            ]),
            ..Default::default()
        };
        let (ops, dim) = b.clone().into_operations(OpKind::Update).unwrap();
        assert_eq!(dim, Some(3));
        assert_eq!(ops[0].embedding, None);
        assert_eq!(ops[0].metadata.as_ref().unwrap()["x"], None);
        let only_ids = WriteBatch {
            ids: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(only_ids.into_operations(OpKind::Update).unwrap().1, None);
        // Upsert allows null metadata values but needs every embedding.
        fails(
            b.clone().into_operations(OpKind::Upsert),
            "embedding at index 0 is missing",
        );
        let mut b2 = b;
        b2.embeddings = Some(vec![Some(vec![0.0; 3]), Some(vec![1.0; 3])]);
        b2.clone().into_operations(OpKind::Upsert).unwrap();
        fails(
            b2.into_operations(OpKind::Add),
            "Invalid metadata at index 0: metadata value of key x cannot be null",
        );
    }

    #[test]
    fn batch_errors() {
        fails(
            WriteBatch {
                ids: vec!["a".into()],
                ..Default::default()
            }
            .into_operations(OpKind::Add),
            "embeddings are required for add",
        );
        fails(
            WriteBatch {
                ids: vec!["a".into()],
                ..Default::default()
            }
            .into_operations(OpKind::Upsert),
            "embeddings are required for upsert",
        );
        let mut b = batch(2);
        b.embeddings.as_mut().unwrap()[1] = None;
        fails(
            b.into_operations(OpKind::Add),
            "embedding at index 1 is missing",
        );

        for field in ["embeddings", "documents", "uris", "metadatas"] {
            let mut b = batch(2);
            match field {
                "embeddings" => b.embeddings = Some(vec![Some(vec![1.0])]),
                "documents" => b.documents = Some(vec![None; 3]),
                "uris" => b.uris = Some(vec![]),
                _ => b.metadatas = Some(vec![None]),
            }
            fails(
                b.into_operations(OpKind::Upsert),
                "Inconsistent number of IDs, embeddings, documents, URIs and metadatas",
            );
        }
        let mut b = batch(2);
        b.uris = Some(vec![None]);
        fails(b.into_operations(OpKind::Add), "(2 ids, 1 uris)");

        let mut b = batch(2);
        b.ids[1] = String::new();
        fails(
            b.into_operations(OpKind::Add),
            "Empty ID, ID must have at least one character",
        );

        let mut b = batch(4);
        b.ids = vec!["a".into(), "b".into(), "a".into(), "a".into()];
        fails(
            b.into_operations(OpKind::Add),
            "Expected IDs to be unique, found duplicates of: a",
        );
        let mut b = batch(4);
        b.ids = vec!["x".into(), "y".into(), "y".into(), "x".into()];
        fails(
            b.into_operations(OpKind::Update),
            "found duplicates of: y, x",
        );

        let mut b = batch(3);
        b.embeddings.as_mut().unwrap()[2] = Some(vec![1.0]);
        fails(
            b.into_operations(OpKind::Add),
            "Inconsistent dimensions in provided embeddings",
        );
        let mut b = batch(2);
        b.embeddings.as_mut().unwrap()[0] = Some(vec![]);
        b.embeddings.as_mut().unwrap()[1] = Some(vec![]);
        fails(
            b.into_operations(OpKind::Add),
            "Each embedding must have at least 1 dimension",
        );
        let mut b = batch(2);
        b.embeddings.as_mut().unwrap()[1] = Some(vec![f32::NAN, 0.0]);
        fails(
            b.into_operations(OpKind::Upsert),
            "Embeddings must not contain NaN or Infinity",
        );

        let mut b = batch(1);
        b.documents = Some(vec![Some("x".repeat(MAX_DOCUMENT_BYTES + 1))]);
        fails(b.into_operations(OpKind::Add), "document of");
        let mut b = batch(1);
        b.uris = Some(vec![Some("x".repeat(MAX_URI_BYTES + 1))]);
        fails(b.into_operations(OpKind::Add), "uri of");

        let mut b = batch(1);
        let mut m = UpdateMetadata::new();
        m.insert("#bad".into(), Some(MetadataValue::Int(1)));
        b.metadatas = Some(vec![Some(m)]);
        fails(
            b.into_operations(OpKind::Upsert),
            "Invalid metadata at index 0: Metadata key",
        );

        let big = WriteBatch {
            ids: (0..=MAX_RECORDS_PER_WRITE).map(|i| i.to_string()).collect(),
            ..Default::default()
        };
        fails(
            big.into_operations(OpKind::Update),
            "exceeds the limit of 100000",
        );
    }

    #[test]
    fn delete_batches() {
        let b = WriteBatch {
            ids: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let (ops, dim) = b.into_operations(OpKind::Delete).unwrap();
        assert_eq!(ops, vec![Operation::delete("a"), Operation::delete("b")]);
        assert_eq!(dim, None);
        fails(
            batch(1).into_operations(OpKind::Delete),
            "delete takes only ids, got embeddings",
        );
        fails(
            WriteBatch {
                ids: vec!["a".into(), "a".into()],
                ..Default::default()
            }
            .into_operations(OpKind::Delete),
            "duplicates of: a",
        );
    }

    #[test]
    fn hnsw_defaults_and_fields() {
        assert_eq!(
            hnsw_configuration_from_json(None, None).unwrap(),
            HnswConfiguration::default()
        );
        assert_eq!(
            hnsw_configuration_from_json(Some(&json!({"hnsw": null, "spann": null})), None)
                .unwrap(),
            HnswConfiguration::default()
        );
        let cfg = hnsw_configuration_from_json(
            Some(&json!({"hnsw": {
                "space": "cosine", "ef_construction": 200, "ef_search": 50,
                "max_neighbors": 32, "num_threads": 4, "batch_size": 10,
                "sync_threshold": 500, "resize_factor": 2
            }, "embedding_function": {"type": "legacy"}})),
            None,
        )
        .unwrap();
        assert_eq!(
            cfg,
            HnswConfiguration {
                space: Space::Cosine,
                ef_construction: 200,
                ef_search: 50,
                max_neighbors: 32,
                num_threads: Some(4),
                batch_size: 10,
                sync_threshold: 500,
                resize_factor: 2.0,
            }
        );
        let cfg = hnsw_configuration_from_json(
            Some(&json!({"hnsw": {"space": "ip", "ef_search": null}})),
            None,
        )
        .unwrap();
        assert_eq!(cfg.space, Space::Ip);
        assert_eq!(cfg.ef_search, 100);
    }

    #[test]
    fn hnsw_legacy_metadata() {
        let legacy = meta(json!({
            "hnsw:space": "ip", "hnsw:construction_ef": 64, "hnsw:search_ef": 20, "hnsw:M": 8,
            "hnsw:num_threads": 2, "hnsw:batch_size": 50, "hnsw:sync_threshold": 100,
            "hnsw:resize_factor": 1.5, "other": "kept"
        }));
        let cfg = hnsw_configuration_from_json(None, Some(&legacy)).unwrap();
        assert_eq!(
            cfg,
            HnswConfiguration {
                space: Space::Ip,
                ef_construction: 64,
                ef_search: 20,
                max_neighbors: 8,
                num_threads: Some(2),
                batch_size: 50,
                sync_threshold: 100,
                resize_factor: 1.5,
            }
        );
        // configuration.hnsw overrides legacy keys field by field.
        let cfg = hnsw_configuration_from_json(
            Some(&json!({"hnsw": {"space": "cosine"}})),
            Some(&legacy),
        )
        .unwrap();
        assert_eq!(cfg.space, Space::Cosine);
        assert_eq!(cfg.max_neighbors, 8);
        let int_resize = meta(json!({"hnsw:resize_factor": 2}));
        assert_eq!(
            hnsw_configuration_from_json(None, Some(&int_resize))
                .unwrap()
                .resize_factor,
            2.0
        );

        for (m, needle) in [
            (
                json!({"hnsw:space": "euclid"}),
                "hnsw:space must be one of l2, cosine, ip",
            ),
            (json!({"hnsw:space": 1}), "hnsw:space must be one of"),
            (
                json!({"hnsw:M": 0}),
                "hnsw:M must be an integer between 1 and 256, got 0",
            ),
            (json!({"hnsw:M": "16"}), "hnsw:M must be an integer"),
            (
                json!({"hnsw:construction_ef": -1}),
                "hnsw:construction_ef must be",
            ),
            (json!({"hnsw:search_ef": 1.5}), "hnsw:search_ef must be"),
            (
                json!({"hnsw:batch_size": 1}),
                "hnsw:batch_size must be an integer between 2",
            ),
            (
                json!({"hnsw:sync_threshold": 1}),
                "hnsw:sync_threshold must be",
            ),
            (
                json!({"hnsw:resize_factor": 0.5}),
                "hnsw:resize_factor must be a number",
            ),
            (json!({"hnsw:num_threads": 0}), "hnsw:num_threads must be"),
            (
                json!({"hnsw:foo": 1}),
                "unknown legacy metadata key hnsw:foo",
            ),
        ] {
            fails(hnsw_configuration_from_json(None, Some(&meta(m))), needle);
        }
    }

    #[test]
    fn hnsw_errors() {
        let bad = |hnsw: Value, needle: &str| {
            fails(
                hnsw_configuration_from_json(Some(&json!({ "hnsw": hnsw })), None),
                needle,
            )
        };
        bad(
            json!({"space": "foo"}),
            "Invalid HNSW parameters: space must be one of l2, cosine, ip",
        );
        bad(json!({"space": 3}), "space must be one of");
        bad(
            json!({"ef_construction": 0}),
            "ef_construction must be an integer between 1 and",
        );
        bad(json!({"ef_construction": 10001}), "ef_construction must be");
        bad(json!({"ef_search": 100000}), "ef_search must be");
        bad(json!({"ef_search": "10"}), "ef_search must be");
        bad(json!({"max_neighbors": 0}), "max_neighbors must be");
        bad(json!({"max_neighbors": 5000}), "max_neighbors must be");
        bad(json!({"max_neighbors": 16.5}), "max_neighbors must be");
        bad(json!({"num_threads": 0}), "num_threads must be");
        bad(
            json!({"batch_size": 1}),
            "batch_size must be an integer between 2",
        );
        bad(json!({"sync_threshold": 0}), "sync_threshold must be");
        bad(
            json!({"resize_factor": 0.9}),
            "resize_factor must be a number between 1",
        );
        bad(json!({"resize_factor": 1000}), "resize_factor must be");
        bad(json!({"resize_factor": "big"}), "resize_factor must be");
        bad(json!({"M": 16}), "unknown field M in configuration.hnsw");
        bad(json!(3), "configuration.hnsw must be an object or null");
        fails(
            hnsw_configuration_from_json(Some(&json!("x")), None),
            "configuration must be an object",
        );
    }

    #[test]
    fn hnsw_updates() {
        let current = HnswConfiguration {
            space: Space::Cosine,
            ..Default::default()
        };
        assert_eq!(
            hnsw_update_from_json(&Value::Null, &current).unwrap(),
            current
        );
        assert_eq!(
            hnsw_update_from_json(&json!({"hnsw": null, "embedding_function": null}), &current)
                .unwrap(),
            current
        );
        let cfg = hnsw_update_from_json(
            &json!({"hnsw": {"ef_search": 200, "max_neighbors": 24, "num_threads": 3,
                             "resize_factor": 1.5, "sync_threshold": 2000, "batch_size": 64}}),
            &current,
        )
        .unwrap();
        assert_eq!(
            cfg,
            HnswConfiguration {
                space: Space::Cosine,
                ef_construction: 100,
                ef_search: 200,
                max_neighbors: 24,
                num_threads: Some(3),
                batch_size: 64,
                sync_threshold: 2000,
                resize_factor: 1.5,
            }
        );
        let keep = hnsw_update_from_json(&json!({"hnsw": {"ef_search": null}}), &cfg).unwrap();
        assert_eq!(keep, cfg);
        let upd = |hnsw: Value| hnsw_update_from_json(&json!({ "hnsw": hnsw }), &current);
        fails(upd(json!({"space": "l2"})), "space cannot be changed");
        fails(
            upd(json!({"ef_construction": 10})),
            "ef_construction cannot be changed",
        );
        fails(
            upd(json!({"foo": 1})),
            "unknown field foo in new_configuration.hnsw",
        );
        fails(upd(json!({"ef_search": 0})), "ef_search must be");
        fails(upd(json!({"batch_size": 1})), "batch_size must be");
        fails(
            hnsw_update_from_json(&json!([]), &current),
            "new_configuration must be an object",
        );
    }
}
