//! A collection's index schema (Chroma 1.x `schema`): which index each metadata key and
//! value type has, the vector index's settings and the embedding function.
//!
//! The JSON grammar is Chroma's (`{"defaults": ValueTypes, "keys": {key: ValueTypes},
//! "cmek"?: …}`); shape errors fail deserialization (422, as in Chroma), the rules of
//! Chroma's `validate_schema` are [`Schema::validate`] (400).
//!
//! A create computes the stored schema with [`reconcile`], as local Chroma 1.5.9 does:
//! 0. the request schema is validated;
//! 1. a non-default request schema together with a non-default configuration is refused;
//! 2. the request schema is merged into the server's default ([`Schema::default_for`]: HNSW
//!    locally, SPANN on a server run with `--knn-index spann`, see [`super::spann`]);
//! 3. a non-default merged schema wins over a default configuration; otherwise the schema is
//!    built from the configuration ([`Schema::from_configuration`]);
//! 4. on an HNSW server, an enabled sparse vector index is refused (local Chroma has none).
//!
//! Reads derive the configuration from the schema ([`Schema::hnsw_configuration`],
//! [`Schema::embedding_function`]); filters on disabled indexes are refused
//! ([`Schema::check_filter`]); writes add the metadata keys they bring
//! ([`Schema::discover_keys`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::collection::{CollectionConfiguration, HnswConfiguration, Space};
use super::filter::{Filter, MetadataOp, Number, Scalar, Where, DOCUMENT_KEY};
use super::record::{MetadataValue, UpdateMetadata};
pub use super::spann::{KnnIndex, SpannIndexConfig, SpannQuantize, SpannUpdate};
use super::validate::apply_hnsw_fields;
use crate::error::{Error, Result};

/// The key that addresses the embedding in a schema.
pub const EMBEDDING_KEY: &str = "#embedding";

/// Metadata keys with this prefix are Chroma's own and never get a schema entry.
const CHROMA_KEY_PREFIX: &str = "chroma:";

/// `num_threads` of a default HNSW block: the server's CPU count, as Chroma's.
pub fn default_num_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A collection's index schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// The indexes of every key without an entry in `keys`, per value type.
    pub defaults: ValueTypes,
    /// Per-key entries (`#document`, `#embedding` and metadata keys).
    #[serde(alias = "key_overrides")]
    pub keys: BTreeMap<String, ValueTypes>,
    /// A customer-managed key (accepted and echoed; local storage does not use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmek: Option<Cmek>,
    /// Set by Chroma Cloud's attached functions only; a request setting it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_attached_function_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmek {
    Gcp(String),
}

/// The indexes of each value type (a missing type: nothing said about it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValueTypes {
    #[serde(default, alias = "#string", skip_serializing_if = "Option::is_none")]
    pub string: Option<StringIndexes>,
    #[serde(
        default,
        alias = "#float_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub float_list: Option<FloatListIndexes>,
    #[serde(
        default,
        alias = "#sparse_vector",
        skip_serializing_if = "Option::is_none"
    )]
    pub sparse_vector: Option<SparseVectorIndexes>,
    #[serde(default, alias = "#int", skip_serializing_if = "Option::is_none")]
    pub int: Option<IntIndexes>,
    #[serde(default, alias = "#float", skip_serializing_if = "Option::is_none")]
    pub float: Option<FloatIndexes>,
    #[serde(
        default,
        rename = "bool",
        alias = "#bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub boolean: Option<BoolIndexes>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StringIndexes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fts_index: Option<Index>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_inverted_index: Option<Index>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FloatListIndexes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_index: Option<Index<VectorIndexConfig>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseVectorIndexes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_vector_index: Option<Index<SparseVectorIndexConfig>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IntIndexes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int_inverted_index: Option<Index>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FloatIndexes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub float_inverted_index: Option<Index>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BoolIndexes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bool_inverted_index: Option<Index>,
}

/// One index: whether it is on, and its settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Index<C = NoConfig> {
    pub enabled: bool,
    pub config: C,
}

impl Index {
    fn on(enabled: bool) -> Self {
        Self {
            enabled,
            config: NoConfig {},
        }
    }
}

/// The `{}` config of inverted and full-text indexes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoConfig {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VectorIndexConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<Space>,
    /// The client's embedding function description, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_function: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hnsw: Option<HnswIndexConfig>,
    /// Accepted and dropped by the merge (a local server builds HNSW).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spann: Option<SpannIndexConfig>,
}

/// The HNSW block of a vector index; a missing field takes the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HnswIndexConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_construction: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_neighbors: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_search: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_threads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_threshold: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_factor: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseVectorIndexConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_function: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bm25: Option<bool>,
    /// Omitted when `wand` (the default), as Chroma does.
    #[serde(default, skip_serializing_if = "is_wand")]
    pub algorithm: Option<SparseAlgorithm>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SparseAlgorithm {
    Wand,
    MaxScore,
}

fn is_wand(a: &Option<SparseAlgorithm>) -> bool {
    matches!(a, None | Some(SparseAlgorithm::Wand))
}

/// The value type of a metadata value or filter operand, spelled as Chroma's error
/// messages spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Str,
    Int,
    Float,
    Bool,
    SparseVector,
}

impl ValueType {
    fn of_scalar(s: &Scalar) -> Self {
        match s {
            Scalar::Bool(_) => ValueType::Bool,
            Scalar::Int(_) => ValueType::Int,
            Scalar::Float(_) => ValueType::Float,
            Scalar::Str(_) => ValueType::Str,
        }
    }

    fn of_value(v: &MetadataValue) -> Self {
        match v {
            MetadataValue::Bool(_) | MetadataValue::BoolArray(_) => ValueType::Bool,
            MetadataValue::Int(_) | MetadataValue::IntArray(_) => ValueType::Int,
            MetadataValue::Float(_) | MetadataValue::FloatArray(_) => ValueType::Float,
            MetadataValue::Str(_) | MetadataValue::StrArray(_) => ValueType::Str,
            MetadataValue::SparseVector(_) => ValueType::SparseVector,
        }
    }

    /// The operand type of a metadata predicate; a list of ints and floats is floats.
    fn of_op(op: &MetadataOp) -> Self {
        match op {
            MetadataOp::Eq(s)
            | MetadataOp::Ne(s)
            | MetadataOp::Contains(s)
            | MetadataOp::NotContains(s) => Self::of_scalar(s),
            MetadataOp::Cmp(_, Number::Int(_)) => ValueType::Int,
            MetadataOp::Cmp(_, Number::Float(_)) => ValueType::Float,
            MetadataOp::In(list) | MetadataOp::Nin(list) => {
                if list.iter().any(|s| matches!(s, Scalar::Float(_))) {
                    ValueType::Float
                } else {
                    list.first().map_or(ValueType::Str, Self::of_scalar)
                }
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            ValueType::Str => "Str",
            ValueType::Int => "Int",
            ValueType::Float => "Float",
            ValueType::Bool => "Bool",
            ValueType::SparseVector => "SparseVector",
        }
    }
}

// ----- errors ----------------------------------------------------------------------------

/// A `validate_schema` failure, as Chroma words it.
fn invalid_schema(detail: impl std::fmt::Display) -> Error {
    Error::invalid(format!("Validation error: schema: {detail}"))
}

/// A failure of the create's reconciliation (steps 1–4).
fn reconcile_err(detail: impl std::fmt::Display) -> Error {
    Error::invalid(format!("Failed to reconcile schema: {detail}"))
}

// ----- default-ness ----------------------------------------------------------------------

/// Chroma's default embedding function: none, `unknown`, or the known one named
/// `default` (`legacy` is not default).
pub fn embedding_function_is_default(ef: Option<&Value>) -> bool {
    let Some(ef) = ef else { return true };
    match ef.get("type").and_then(Value::as_str) {
        Some("unknown") => true,
        Some("known") => ef.get("name").and_then(Value::as_str) == Some("default"),
        _ => false,
    }
}

/// A configuration is default when its embedding function is and its vector index
/// settings (SPANN's for a SPANN collection, else HNSW's) are all Chroma's defaults with
/// space `l2`.
pub fn configuration_is_default(cfg: &CollectionConfiguration) -> bool {
    embedding_function_is_default(cfg.embedding_function.as_ref())
        && cfg.hnsw.space == Space::L2
        && match &cfg.spann {
            Some(spann) => spann.is_default(),
            None => HnswIndexConfig::full(&cfg.hnsw).is_default(),
        }
}

fn index_is(index: Option<&Index>, enabled: bool) -> bool {
    index.is_none_or(|i| i.enabled == enabled)
}

impl HnswIndexConfig {
    /// Every field given is the default.
    fn is_default(&self) -> bool {
        let d = HnswIndexConfig::full(&HnswConfiguration::default());
        let same = |a: Option<usize>, b: Option<usize>| a.is_none() || a == b;
        same(self.ef_construction, d.ef_construction)
            && same(self.max_neighbors, d.max_neighbors)
            && same(self.ef_search, d.ef_search)
            && same(self.num_threads, d.num_threads)
            && same(self.batch_size, d.batch_size)
            && same(self.sync_threshold, d.sync_threshold)
            && self
                .resize_factor
                .is_none_or(|r| Some(r) == d.resize_factor)
    }
}

impl VectorIndexConfig {
    /// Space `l2` (or none), a default embedding function, `source_key` none or
    /// `source_key`, and HNSW/SPANN blocks absent or default-valued.
    fn is_default(&self, source_key: Option<&str>) -> bool {
        self.space.is_none_or(|s| s == Space::L2)
            && embedding_function_is_default(self.embedding_function.as_ref())
            && (self.source_key.is_none() || self.source_key.as_deref() == source_key)
            && self.hnsw.as_ref().is_none_or(HnswIndexConfig::is_default)
            && self.spann.as_ref().is_none_or(SpannIndexConfig::is_default)
    }
}

impl SparseVectorIndexConfig {
    fn is_default(&self) -> bool {
        embedding_function_is_default(self.embedding_function.as_ref())
            && self.source_key.is_none()
            && self.bm25 != Some(true)
            && is_wand(&self.algorithm)
    }
}

impl ValueTypes {
    /// The defaults of the local default schema: inverted indexes on, full-text, vector
    /// and sparse indexes off (what is not given counts as default).
    fn are_default_defaults(&self) -> bool {
        self.string.as_ref().is_none_or(|s| {
            index_is(s.fts_index.as_ref(), false)
                && index_is(s.string_inverted_index.as_ref(), true)
        }) && self.float_list.as_ref().is_none_or(|f| {
            f.vector_index
                .as_ref()
                .is_none_or(|v| !v.enabled && v.config.is_default(None))
        }) && self.sparse_vector.as_ref().is_none_or(|s| {
            s.sparse_vector_index
                .as_ref()
                .is_none_or(|i| !i.enabled && i.config.is_default())
        }) && self.inverted_indexes_are_on()
    }

    fn inverted_indexes_are_on(&self) -> bool {
        self.int
            .as_ref()
            .is_none_or(|i| index_is(i.int_inverted_index.as_ref(), true))
            && self
                .float
                .as_ref()
                .is_none_or(|i| index_is(i.float_inverted_index.as_ref(), true))
            && self
                .boolean
                .as_ref()
                .is_none_or(|i| index_is(i.bool_inverted_index.as_ref(), true))
    }

    /// `#document` as by default: only strings, full-text on, string inverted index off.
    fn is_default_document(&self) -> bool {
        self.float_list.is_none()
            && self.sparse_vector.is_none()
            && self.int.is_none()
            && self.float.is_none()
            && self.boolean.is_none()
            && self.string.as_ref().is_none_or(|s| {
                index_is(s.fts_index.as_ref(), true)
                    && index_is(s.string_inverted_index.as_ref(), false)
            })
    }

    /// `#embedding` as by default: only a float list, its vector index on and default.
    fn is_default_embedding(&self) -> bool {
        self.string.is_none()
            && self.sparse_vector.is_none()
            && self.int.is_none()
            && self.float.is_none()
            && self.boolean.is_none()
            && self.float_list.as_ref().is_none_or(|f| {
                f.vector_index
                    .as_ref()
                    .is_none_or(|v| v.enabled && v.config.is_default(Some(DOCUMENT_KEY)))
            })
    }

    fn vector_index(&self) -> Option<&Index<VectorIndexConfig>> {
        self.float_list.as_ref()?.vector_index.as_ref()
    }

    fn vector_index_mut(&mut self) -> Option<&mut Index<VectorIndexConfig>> {
        self.float_list.as_mut()?.vector_index.as_mut()
    }

    fn sparse_index(&self) -> Option<&Index<SparseVectorIndexConfig>> {
        self.sparse_vector.as_ref()?.sparse_vector_index.as_ref()
    }

    fn fts_index(&self) -> Option<&Index> {
        self.string.as_ref()?.fts_index.as_ref()
    }

    /// Whether the inverted index of `t` is on, when this entry says.
    fn inverted_enabled(&self, t: ValueType) -> Option<bool> {
        let index = match t {
            ValueType::Str => self.string.as_ref()?.string_inverted_index.as_ref(),
            ValueType::Int => self.int.as_ref()?.int_inverted_index.as_ref(),
            ValueType::Float => self.float.as_ref()?.float_inverted_index.as_ref(),
            ValueType::Bool => self.boolean.as_ref()?.bool_inverted_index.as_ref(),
            ValueType::SparseVector => return self.sparse_index().map(|i| i.enabled),
        };
        index.map(|i| i.enabled)
    }

    fn has_type(&self, t: ValueType) -> bool {
        match t {
            ValueType::Str => self.string.is_some(),
            ValueType::Int => self.int.is_some(),
            ValueType::Float => self.float.is_some(),
            ValueType::Bool => self.boolean.is_some(),
            ValueType::SparseVector => self.sparse_vector.is_some(),
        }
    }

    /// Copies `from`'s entry of type `t` into this one.
    fn copy_type(&mut self, from: &ValueTypes, t: ValueType) {
        match t {
            ValueType::Str => self.string = from.string.clone(),
            ValueType::Int => self.int = from.int.clone(),
            ValueType::Float => self.float = from.float.clone(),
            ValueType::Bool => self.boolean = from.boolean.clone(),
            ValueType::SparseVector => self.sparse_vector = from.sparse_vector.clone(),
        }
    }
}

// ----- building --------------------------------------------------------------------------

impl HnswIndexConfig {
    /// All seven fields, from a configuration (`num_threads` unset: the CPU count).
    fn full(h: &HnswConfiguration) -> Self {
        Self {
            ef_construction: Some(h.ef_construction),
            max_neighbors: Some(h.max_neighbors),
            ef_search: Some(h.ef_search),
            num_threads: Some(h.num_threads.unwrap_or_else(default_num_threads)),
            batch_size: Some(h.batch_size),
            sync_threshold: Some(h.sync_threshold),
            resize_factor: Some(h.resize_factor),
        }
    }

    /// Field-wise: `self`'s where given, else `base`'s.
    fn over(&self, base: &HnswIndexConfig) -> Self {
        Self {
            ef_construction: self.ef_construction.or(base.ef_construction),
            max_neighbors: self.max_neighbors.or(base.max_neighbors),
            ef_search: self.ef_search.or(base.ef_search),
            num_threads: self.num_threads.or(base.num_threads),
            batch_size: self.batch_size.or(base.batch_size),
            sync_threshold: self.sync_threshold.or(base.sync_threshold),
            resize_factor: self.resize_factor.or(base.resize_factor),
        }
    }

    /// The engine's limits, as `configuration.hnsw` is checked (Chroma checks
    /// `batch_size` and `sync_threshold` ≥ 2; the other bounds keep the index buildable).
    fn check(&self) -> Result<()> {
        let fields = match serde_json::to_value(self) {
            Ok(Value::Object(fields)) => fields,
            _ => {
                return Err(Error::internal(
                    "an HNSW block did not serialize to an object",
                ))
            }
        };
        apply_hnsw_fields(&fields, &mut HnswConfiguration::default())
            .map_err(|d| reconcile_err(format!("Invalid HNSW configuration: {d}")))
    }
}

impl VectorIndexConfig {
    /// Field-wise merge of a request's config over the default one. The default's flavour
    /// wins: over an HNSW default the request's SPANN block is dropped (as local Chroma
    /// does), over a SPANN default its HNSW block (as Chroma's cloud does).
    fn over(&self, base: &VectorIndexConfig) -> Self {
        let (hnsw, spann) = if base.spann.is_some() {
            (None, merge_opt(&base.spann, &self.spann, |b, u| u.over(b)))
        } else {
            (merge_opt(&base.hnsw, &self.hnsw, |b, u| u.over(b)), None)
        };
        Self {
            space: self.space.or(base.space),
            embedding_function: self
                .embedding_function
                .clone()
                .or_else(|| base.embedding_function.clone()),
            source_key: self.source_key.clone().or_else(|| base.source_key.clone()),
            hnsw,
            spann,
        }
    }
}

impl SparseVectorIndexConfig {
    /// Field-wise merge of a request's config over the default one.
    fn over(&self, base: &SparseVectorIndexConfig) -> Self {
        Self {
            embedding_function: self
                .embedding_function
                .clone()
                .or_else(|| base.embedding_function.clone()),
            source_key: self.source_key.clone().or_else(|| base.source_key.clone()),
            bm25: self.bm25.or(base.bm25),
            algorithm: self.algorithm.or(base.algorithm),
        }
    }
}

/// `user` over `base`: `base` when the request says nothing, `merge` when both say.
fn merge_opt<T: Clone>(
    base: &Option<T>,
    user: &Option<T>,
    merge: impl Fn(&T, &T) -> T,
) -> Option<T> {
    match (base, user) {
        (Some(b), Some(u)) => Some(merge(b, u)),
        (b, u) => u.clone().or_else(|| b.clone()),
    }
}

/// A request's index wins whole (`enabled` and `config`); a missing one is the base's.
fn pick<T: Clone>(base: &Option<T>, user: &Option<T>) -> Option<T> {
    user.clone().or_else(|| base.clone())
}

impl ValueTypes {
    /// A request's entry over a default one, type by type and index by index; the vector
    /// and sparse vector index configs field by field.
    fn over(&self, base: &ValueTypes) -> ValueTypes {
        ValueTypes {
            string: merge_opt(&base.string, &self.string, |b, u| StringIndexes {
                fts_index: pick(&b.fts_index, &u.fts_index),
                string_inverted_index: pick(&b.string_inverted_index, &u.string_inverted_index),
            }),
            float_list: merge_opt(&base.float_list, &self.float_list, |b, u| {
                FloatListIndexes {
                    vector_index: merge_opt(&b.vector_index, &u.vector_index, |b, u| Index {
                        enabled: u.enabled,
                        config: u.config.over(&b.config),
                    }),
                }
            }),
            sparse_vector: merge_opt(&base.sparse_vector, &self.sparse_vector, |b, u| {
                SparseVectorIndexes {
                    sparse_vector_index: merge_opt(
                        &b.sparse_vector_index,
                        &u.sparse_vector_index,
                        |b, u| Index {
                            enabled: u.enabled,
                            config: u.config.over(&b.config),
                        },
                    ),
                }
            }),
            int: merge_opt(&base.int, &self.int, |b, u| IntIndexes {
                int_inverted_index: pick(&b.int_inverted_index, &u.int_inverted_index),
            }),
            float: merge_opt(&base.float, &self.float, |b, u| FloatIndexes {
                float_inverted_index: pick(&b.float_inverted_index, &u.float_inverted_index),
            }),
            boolean: merge_opt(&base.boolean, &self.boolean, |b, u| BoolIndexes {
                bool_inverted_index: pick(&b.bool_inverted_index, &u.bool_inverted_index),
            }),
        }
    }
}

impl Schema {
    /// Chroma's default schema with this vector index configuration (`space`,
    /// `embedding_function` when given, and all seven HNSW fields, or of a SPANN
    /// collection its SPANN block): inverted indexes on, full-text on `#document` only, the
    /// vector index on `#embedding` only, no sparse index.
    pub fn from_configuration(cfg: &CollectionConfiguration) -> Self {
        let vector = |enabled: bool, source_key: Option<&str>| FloatListIndexes {
            vector_index: Some(Index {
                enabled,
                config: VectorIndexConfig {
                    space: Some(cfg.hnsw.space),
                    embedding_function: cfg.embedding_function.clone(),
                    source_key: source_key.map(str::to_owned),
                    hnsw: match cfg.spann {
                        Some(_) => None,
                        None => Some(HnswIndexConfig::full(&cfg.hnsw)),
                    },
                    spann: cfg.spann.clone(),
                },
            }),
        };
        let defaults = ValueTypes {
            string: Some(StringIndexes {
                fts_index: Some(Index::on(false)),
                string_inverted_index: Some(Index::on(true)),
            }),
            float_list: Some(vector(false, None)),
            sparse_vector: Some(SparseVectorIndexes {
                sparse_vector_index: Some(Index {
                    enabled: false,
                    config: SparseVectorIndexConfig {
                        embedding_function: Some(serde_json::json!({"type": "unknown"})),
                        source_key: None,
                        bm25: Some(false),
                        algorithm: None,
                    },
                }),
            }),
            int: Some(IntIndexes {
                int_inverted_index: Some(Index::on(true)),
            }),
            float: Some(FloatIndexes {
                float_inverted_index: Some(Index::on(true)),
            }),
            boolean: Some(BoolIndexes {
                bool_inverted_index: Some(Index::on(true)),
            }),
        };
        let document = ValueTypes {
            string: Some(StringIndexes {
                fts_index: Some(Index::on(true)),
                string_inverted_index: Some(Index::on(false)),
            }),
            ..Default::default()
        };
        let embedding = ValueTypes {
            float_list: Some(vector(true, Some(DOCUMENT_KEY))),
            ..Default::default()
        };
        Schema {
            defaults,
            keys: BTreeMap::from([
                (DOCUMENT_KEY.to_owned(), document),
                (EMBEDDING_KEY.to_owned(), embedding),
            ]),
            cmek: None,
            source_attached_function_id: None,
        }
    }

    /// The local default schema without an embedding function.
    pub fn local_default() -> Self {
        Self::default_for(KnnIndex::Hnsw)
    }

    /// The default schema of a server whose default vector index is `knn`, without an
    /// embedding function (the merge's base).
    pub fn default_for(knn: KnnIndex) -> Self {
        Self::from_configuration(&CollectionConfiguration::default_for(knn))
    }

    /// Chroma's `validate_schema` rules, in its order; messages are Chroma's.
    pub fn validate(&self) -> Result<()> {
        if self.source_attached_function_id.is_some() {
            return Err(invalid_schema(
                "source_attached_function_id is set by attached functions only",
            ));
        }
        let d = &self.defaults;
        if let Some(v) = d.vector_index() {
            if v.enabled {
                return Err(invalid_schema("Vector index cannot be enabled by default. It can only be enabled on #embedding field."));
            }
            if v.config.hnsw.is_some() && v.config.spann.is_some() {
                return Err(invalid_schema(
                    "Both spann and hnsw config cannot be present at the same time.",
                ));
            }
        }
        if d.sparse_index().is_some_and(|i| i.enabled) {
            return Err(invalid_schema("Sparse vector index cannot be enabled by default. Please enable sparse vector index on specific keys. At most one sparse vector index is allowed for the collection."));
        }
        if d.fts_index().is_some_and(|i| i.enabled) {
            return Err(invalid_schema("Full text search / regular expression index cannot be enabled by default. It can only be enabled on #document field."));
        }
        let mut sparse_keys: Vec<&String> = Vec::new();
        for (key, types) in &self.keys {
            if key.starts_with('#') && key != DOCUMENT_KEY && key != EMBEDDING_KEY {
                return Err(invalid_schema(format!("key cannot begin with '#'. Keys starting with '#' are reserved for system use: {key}")));
            }
            let only_string = types.float_list.is_none()
                && types.sparse_vector.is_none()
                && types.int.is_none()
                && types.float.is_none()
                && types.boolean.is_none();
            if key == DOCUMENT_KEY && !only_string {
                return Err(invalid_schema(format!(
                    "Document field cannot have any value types other than string: {key}"
                )));
            }
            let only_float_list = types.string.is_none()
                && types.sparse_vector.is_none()
                && types.int.is_none()
                && types.float.is_none()
                && types.boolean.is_none();
            if key == EMBEDDING_KEY && !only_float_list {
                return Err(invalid_schema(format!(
                    "Embedding field cannot have any value types other than float_list: {key}"
                )));
            }
            if let Some(v) = types.vector_index() {
                if v.enabled && key != EMBEDDING_KEY {
                    return Err(invalid_schema(format!(
                        "Vector index can only be enabled on #embedding field: {key}"
                    )));
                }
                if v.config
                    .source_key
                    .as_deref()
                    .is_some_and(|s| s != DOCUMENT_KEY)
                {
                    return Err(invalid_schema(
                        "Vector index can only source from #document",
                    ));
                }
                if v.config.hnsw.is_some() && v.config.spann.is_some() {
                    return Err(invalid_schema(
                        "Both spann and hnsw config cannot be present at the same time.",
                    ));
                }
            }
            if let Some(s) = types.sparse_index() {
                if s.enabled {
                    sparse_keys.push(key);
                    if sparse_keys.len() > 1 {
                        return Err(invalid_schema(format!(
                            "At most one sparse vector index is allowed for the collection: {sparse_keys:?}"
                        )));
                    }
                    if s.config.source_key.is_some() && s.config.embedding_function.is_none() {
                        return Err(invalid_schema("If source_key is provided then embedding_function must also be provided since there is no default embedding function."));
                    }
                }
                if s.config
                    .source_key
                    .as_deref()
                    .is_some_and(|k| k.starts_with('#') && k != DOCUMENT_KEY)
                {
                    return Err(invalid_schema("source_key cannot begin with '#'. The only valid key starting with '#' is Key.DOCUMENT or '#document'."));
                }
            }
            if types.fts_index().is_some_and(|i| i.enabled) && key != DOCUMENT_KEY {
                return Err(invalid_schema(format!("Full text search / regular expression index can only be enabled on #document field: {key}")));
            }
            if key == DOCUMENT_KEY && types.inverted_enabled(ValueType::Str) == Some(true) {
                return Err(invalid_schema(format!(
                    "String inverted index can not be enabled on #document key: {key}"
                )));
            }
        }
        Ok(())
    }

    /// Whether this is the local default schema as a client would send it (see the
    /// module documentation for what may differ).
    pub fn is_default(&self) -> bool {
        self.cmek.is_none()
            && self.defaults.are_default_defaults()
            && self.keys.iter().all(|(key, types)| match key.as_str() {
                DOCUMENT_KEY => types.is_default_document(),
                EMBEDDING_KEY => types.is_default_embedding(),
                _ => false,
            })
    }

    /// A request schema merged into the default of `knn` (step 2): `defaults` and the two
    /// system keys index by index (vector and sparse configs field by field, the vector
    /// index in the default's flavour), every other key as sent. The merged HNSW or SPANN
    /// settings must be usable.
    pub fn merged_into_default(&self, knn: KnnIndex) -> Result<Schema> {
        let base = Schema::default_for(knn);
        let mut keys = base.keys.clone();
        for (key, types) in &self.keys {
            let merged = match base.keys.get(key) {
                Some(b) => types.over(b),
                None => types.clone(),
            };
            keys.insert(key.clone(), merged);
        }
        let merged = Schema {
            defaults: self.defaults.over(&base.defaults),
            keys,
            cmek: self.cmek.clone(),
            source_attached_function_id: None,
        };
        for v in [
            merged.defaults.vector_index(),
            merged
                .keys
                .get(EMBEDDING_KEY)
                .and_then(ValueTypes::vector_index),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(h) = &v.config.hnsw {
                h.check()?;
            }
            if let Some(s) = &v.config.spann {
                s.check().map_err(|e| reconcile_err(e.message()))?;
            }
        }
        Ok(merged)
    }

    /// The vector index configuration the collection uses: `#embedding`'s, else the
    /// defaults'.
    fn vector_config(&self) -> Option<&VectorIndexConfig> {
        self.keys
            .get(EMBEDDING_KEY)
            .and_then(ValueTypes::vector_index)
            .or_else(|| self.defaults.vector_index())
            .map(|v| &v.config)
    }

    /// The HNSW settings of the vector index (missing fields: defaults; of a SPANN index:
    /// derived from its SPANN settings).
    pub fn hnsw_configuration(&self) -> HnswConfiguration {
        let d = HnswConfiguration::default();
        let Some(v) = self.vector_config() else {
            return d;
        };
        if let Some(spann) = &v.spann {
            return spann.hnsw_configuration(v.space.unwrap_or_default());
        }
        let h = v.hnsw.clone().unwrap_or_default();
        HnswConfiguration {
            space: v.space.unwrap_or_default(),
            ef_construction: h.ef_construction.unwrap_or(d.ef_construction),
            ef_search: h.ef_search.unwrap_or(d.ef_search),
            max_neighbors: h.max_neighbors.unwrap_or(d.max_neighbors),
            num_threads: h.num_threads,
            batch_size: h.batch_size.unwrap_or(d.batch_size),
            sync_threshold: h.sync_threshold.unwrap_or(d.sync_threshold),
            resize_factor: h.resize_factor.unwrap_or(d.resize_factor),
        }
    }

    /// The SPANN settings of a SPANN vector index, every field set.
    pub fn spann_configuration(&self) -> Option<SpannIndexConfig> {
        let spann = self.vector_config()?.spann.as_ref()?;
        Some(spann.over(&SpannIndexConfig::defaults()))
    }

    /// The embedding function of the vector index, if any.
    pub fn embedding_function(&self) -> Option<&Value> {
        self.vector_config()?.embedding_function.as_ref()
    }

    /// Whether any sparse vector index is on.
    fn has_sparse_index(&self) -> bool {
        std::iter::once(&self.defaults)
            .chain(self.keys.values())
            .any(|t| t.sparse_index().is_some_and(|i| i.enabled))
    }

    /// Applies a modify: the HNSW fields given (to HNSW indexes), the SPANN fields given
    /// (to SPANN indexes) and the embedding function, to both vector indexes (`defaults`
    /// and `#embedding`).
    pub fn apply_update(
        &mut self,
        hnsw: &HnswUpdate,
        spann: &SpannUpdate,
        embedding_function: Option<&Value>,
    ) {
        let mut indexes = vec![];
        if let Some(v) = self.defaults.vector_index_mut() {
            indexes.push(v);
        }
        if let Some(v) = self
            .keys
            .get_mut(EMBEDDING_KEY)
            .and_then(ValueTypes::vector_index_mut)
        {
            indexes.push(v);
        }
        for v in indexes {
            if let Some(h) = v.config.hnsw.as_mut() {
                hnsw.apply(h);
            }
            if let Some(s) = v.config.spann.as_mut() {
                spann.apply(s);
            }
            if let Some(ef) = embedding_function {
                v.config.embedding_function = Some(ef.clone());
            }
        }
    }

    // ----- filters -------------------------------------------------------------------------

    /// Refuses a filter that needs an index this schema disables: a metadata predicate on
    /// a key whose inverted index of the operand's type is off (the key's entry, else the
    /// defaults'), or a document predicate with full-text search off.
    pub fn check_filter(&self, filter: &Filter) -> Result<()> {
        if let Some(w) = &filter.where_ {
            self.check_where(w)?;
        }
        if filter.where_document.is_some() {
            self.check_fts()?;
        }
        Ok(())
    }

    fn check_where(&self, w: &Where) -> Result<()> {
        match w {
            Where::And(children) | Where::Or(children) => {
                children.iter().try_for_each(|c| self.check_where(c))
            }
            Where::Document(_) => self.check_fts(),
            Where::Id { .. } => Ok(()),
            Where::Metadata { key, op } => {
                let t = ValueType::of_op(op);
                let enabled = self
                    .keys
                    .get(key)
                    .and_then(|k| k.inverted_enabled(t))
                    .or_else(|| self.defaults.inverted_enabled(t))
                    .unwrap_or(true);
                if enabled {
                    Ok(())
                } else {
                    Err(Error::invalid(format!(
                        "Cannot filter using metadata key '{key}' with type '{}' because indexing is disabled",
                        t.name()
                    )))
                }
            }
        }
    }

    /// Refuses a sparse `$knn` on a key without an enabled sparse vector index.
    pub fn check_sparse_search(&self, key: &str) -> Result<()> {
        let enabled = self
            .keys
            .get(key)
            .and_then(ValueTypes::sparse_index)
            .is_some_and(|i| i.enabled);
        if enabled {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "Cannot filter using metadata key '{key}' with type 'SparseVector' because indexing is disabled"
            )))
        }
    }

    fn check_fts(&self) -> Result<()> {
        let enabled = self
            .keys
            .get(DOCUMENT_KEY)
            .and_then(ValueTypes::fts_index)
            .or_else(|| self.defaults.fts_index())
            .is_none_or(|i| i.enabled);
        if enabled {
            Ok(())
        } else {
            Err(Error::invalid(
                "Cannot filter using full-text search because FTS indexing is disabled",
            ))
        }
    }

    // ----- key discovery -------------------------------------------------------------------

    /// Whether [`Schema::discover_keys`] would add anything for these metadata maps.
    pub fn has_new_keys<'a>(
        &self,
        metadatas: impl IntoIterator<Item = &'a UpdateMetadata>,
    ) -> bool {
        metadatas.into_iter().flatten().any(|(key, value)| {
            value.as_ref().is_some_and(|v| {
                !key.starts_with(CHROMA_KEY_PREFIX)
                    && !self
                        .keys
                        .get(key)
                        .is_some_and(|entry| entry.has_type(ValueType::of_value(v)))
            })
        })
    }

    /// Adds an entry for each metadata key and value type written that has none, as a
    /// copy of the defaults of that type; `null` values and `chroma:` keys add nothing,
    /// existing entries never change. Returns whether anything was added.
    pub fn discover_keys<'a>(
        &mut self,
        metadatas: impl IntoIterator<Item = &'a UpdateMetadata>,
    ) -> bool {
        let mut changed = false;
        for metadata in metadatas {
            for (key, value) in metadata {
                let Some(value) = value else { continue };
                if key.starts_with(CHROMA_KEY_PREFIX) {
                    continue;
                }
                let t = ValueType::of_value(value);
                let entry = self.keys.entry(key.clone()).or_default();
                if !entry.has_type(t) {
                    entry.copy_type(&self.defaults, t);
                    changed = true;
                }
            }
        }
        changed
    }
}

/// The HNSW fields a modify sets (`None`: unchanged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HnswUpdate {
    pub ef_search: Option<usize>,
    pub max_neighbors: Option<usize>,
    pub num_threads: Option<usize>,
    pub resize_factor: Option<f64>,
    pub sync_threshold: Option<usize>,
    pub batch_size: Option<usize>,
}

impl HnswUpdate {
    fn apply(&self, h: &mut HnswIndexConfig) {
        h.ef_search = self.ef_search.or(h.ef_search);
        h.max_neighbors = self.max_neighbors.or(h.max_neighbors);
        h.num_threads = self.num_threads.or(h.num_threads);
        h.resize_factor = self.resize_factor.or(h.resize_factor);
        h.sync_threshold = self.sync_threshold.or(h.sync_threshold);
        h.batch_size = self.batch_size.or(h.batch_size);
    }
}

/// The schema a create stores (steps 1–4 of the module documentation) on a server whose
/// default vector index is `knn`, from the request's schema (already validated, step 0)
/// and its configuration (converted from `hnsw`/`spann` and legacy metadata to `knn`).
pub fn reconcile(
    request: Option<&Schema>,
    cfg: &CollectionConfiguration,
    knn: KnnIndex,
) -> Result<Schema> {
    let config_default = configuration_is_default(cfg);
    if let Some(s) = request {
        if !config_default && !s.is_default() {
            return Err(reconcile_err(
                "Cannot set both collection config and schema simultaneously",
            ));
        }
    }
    let merged = request.map(|s| s.merged_into_default(knn)).transpose()?;
    let schema = match merged {
        Some(merged) if config_default && !merged.is_default() => merged,
        _ => Schema::from_configuration(cfg),
    };
    if knn == KnnIndex::Hnsw && schema.has_sparse_index() {
        return Err(reconcile_err(
            "Invalid schema input: Sparse vector indexing is not enabled in local",
        ));
    }
    Ok(schema)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::ErrorCode;

    #[track_caller]
    fn fails<T: std::fmt::Debug>(r: Result<T>, message: &str) {
        let e = r.expect_err("should fail");
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e:?}");
        assert_eq!(e.message(), message);
    }

    fn schema(v: Value) -> Schema {
        serde_json::from_value(v).unwrap()
    }

    fn to_json(s: &Schema) -> Value {
        serde_json::to_value(s).unwrap()
    }

    fn hnsw_block() -> Value {
        json!({"ef_construction": 100, "max_neighbors": 16, "ef_search": 100,
               "num_threads": default_num_threads(), "batch_size": 100,
               "sync_threshold": 1000, "resize_factor": 1.2})
    }

    fn default_ef() -> Value {
        json!({"type": "known", "name": "default", "config": {}})
    }

    /// §3.1 with this embedding function (`None`: the key omitted).
    fn local_default_json(ef: Option<Value>) -> Value {
        let mut vector = json!({"space": "l2", "hnsw": hnsw_block()});
        if let Some(ef) = ef {
            vector["embedding_function"] = ef;
        }
        let mut embedding = vector.clone();
        embedding["source_key"] = json!("#document");
        let on = |enabled: bool| json!({"enabled": enabled, "config": {}});
        json!({
            "defaults": {
                "string": {"fts_index": on(false), "string_inverted_index": on(true)},
                "float_list": {"vector_index": {"enabled": false, "config": vector}},
                "sparse_vector": {"sparse_vector_index": {"enabled": false,
                    "config": {"embedding_function": {"type": "unknown"}, "bm25": false}}},
                "int": {"int_inverted_index": on(true)},
                "float": {"float_inverted_index": on(true)},
                "bool": {"bool_inverted_index": on(true)},
            },
            "keys": {
                "#embedding": {"float_list": {"vector_index": {"enabled": true, "config": embedding}}},
                "#document": {"string": {"fts_index": on(true), "string_inverted_index": on(false)}},
            },
        })
    }

    /// What the 1.5.9 client sends for an untouched `Schema()`.
    fn client_default() -> Value {
        let on = |enabled: bool| json!({"enabled": enabled, "config": {}});
        json!({
            "defaults": {
                "string": {"fts_index": on(false), "string_inverted_index": on(true)},
                "float_list": {"vector_index": {"enabled": false,
                    "config": {"space": "l2", "embedding_function": default_ef()}}},
                "sparse_vector": {"sparse_vector_index": {"enabled": false,
                    "config": {"embedding_function": {"type": "unknown"}}}},
                "int": {"int_inverted_index": on(true)},
                "float": {"float_inverted_index": on(true)},
                "bool": {"bool_inverted_index": on(true)},
            },
            "keys": {
                "#embedding": {"float_list": {"vector_index": {"enabled": true,
                    "config": {"space": "l2", "embedding_function": default_ef(),
                               "source_key": "#document"}}}},
                "#document": {"string": {"fts_index": on(true), "string_inverted_index": on(false)}},
            },
        })
    }

    fn client_config(ef: Option<Value>) -> CollectionConfiguration {
        CollectionConfiguration {
            embedding_function: ef,
            ..Default::default()
        }
    }

    #[test]
    fn local_default_is_chromas() {
        assert_eq!(to_json(&Schema::local_default()), local_default_json(None));
        let with_ef = Schema::from_configuration(&client_config(Some(default_ef())));
        assert_eq!(to_json(&with_ef), local_default_json(Some(default_ef())));
        // It round-trips and counts as default.
        let back = schema(to_json(&with_ef));
        assert_eq!(back, with_ef);
        assert!(back.is_default());
        assert!(back.validate().is_ok());
    }

    #[test]
    fn grammar_accepts_aliases_and_refuses_unknown_sparse_and_spann_fields() {
        let s = schema(json!({"defaults": {"#string": {"string_inverted_index":
                {"enabled": false, "config": {}}}}, "key_overrides": {}}));
        assert_eq!(s.defaults.inverted_enabled(ValueType::Str), Some(false));
        for bad in [
            json!({"defaults": {}}),
            json!({"keys": {}}),
            json!({"defaults": {"string": {"fts_index": {"enabled": 1, "config": {}}}}, "keys": {}}),
            json!({"defaults": {"string": {"fts_index": {"enabled": true}}}, "keys": {}}),
            json!({"defaults": {}, "keys": {"#embedding": {"float_list": {"vector_index":
                {"enabled": true, "config": {"space": "euclid"}}}}}}),
            json!({"defaults": {}, "keys": {"#embedding": {"float_list": {"vector_index":
                {"enabled": true, "config": {"spann": {"bogus": 1}}}}}}}),
            json!({"defaults": {}, "keys": {"s": {"sparse_vector": {"sparse_vector_index":
                {"enabled": false, "config": {"bogus": 1}}}}}}),
            json!({"defaults": {}, "keys": {}, "cmek": {"aws": "k"}}),
        ] {
            assert!(
                serde_json::from_value::<Schema>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let cmek = schema(json!({"defaults": {}, "keys": {}, "cmek": {"gcp": "projects/p"}}));
        assert_eq!(cmek.cmek, Some(Cmek::Gcp("projects/p".into())));
        assert_eq!(to_json(&cmek)["cmek"], json!({"gcp": "projects/p"}));
        let algo = schema(json!({"defaults": {"sparse_vector": {"sparse_vector_index":
            {"enabled": false, "config": {"algorithm": "wand"}}}}, "keys": {}}));
        assert_eq!(
            to_json(&algo)["defaults"]["sparse_vector"]["sparse_vector_index"]["config"],
            json!({})
        );
    }

    #[test]
    fn validation_rules_and_messages() {
        let on = json!({"enabled": true, "config": {}});
        let vector = |enabled: bool, config: Value| json!({"float_list": {"vector_index": {"enabled": enabled, "config": config}}});
        let sparse = |enabled: bool, config: Value| json!({"sparse_vector": {"sparse_vector_index": {"enabled": enabled, "config": config}}});
        let cases = [
            (json!({"defaults": vector(true, json!({})), "keys": {}}),
             "Vector index cannot be enabled by default. It can only be enabled on #embedding field."),
            (json!({"defaults": vector(false, json!({"hnsw": {}, "spann": {}})), "keys": {}}),
             "Both spann and hnsw config cannot be present at the same time."),
            (json!({"defaults": sparse(true, json!({})), "keys": {}}),
             "Sparse vector index cannot be enabled by default. Please enable sparse vector index on specific keys. At most one sparse vector index is allowed for the collection."),
            (json!({"defaults": {"string": {"fts_index": on}}, "keys": {}}),
             "Full text search / regular expression index cannot be enabled by default. It can only be enabled on #document field."),
            (json!({"defaults": {}, "keys": {"#tag": {}}}),
             "key cannot begin with '#'. Keys starting with '#' are reserved for system use: #tag"),
            (json!({"defaults": {}, "keys": {"#document": {"int": {"int_inverted_index": on}}}}),
             "Document field cannot have any value types other than string: #document"),
            (json!({"defaults": {}, "keys": {"#embedding": {"string": {"fts_index": on}}}}),
             "Embedding field cannot have any value types other than float_list: #embedding"),
            (json!({"defaults": {}, "keys": {"vec": vector(true, json!({}))}}),
             "Vector index can only be enabled on #embedding field: vec"),
            (json!({"defaults": {}, "keys": {"#embedding": vector(true, json!({"source_key": "title"}))}}),
             "Vector index can only source from #document"),
            (json!({"defaults": {}, "keys": {"#embedding": vector(true, json!({"hnsw": {}, "spann": {}}))}}),
             "Both spann and hnsw config cannot be present at the same time."),
            (json!({"defaults": {}, "keys": {"a": sparse(true, json!({})), "b": sparse(true, json!({}))}}),
             "At most one sparse vector index is allowed for the collection: [\"a\", \"b\"]"),
            (json!({"defaults": {}, "keys": {"a": sparse(true, json!({"source_key": "#document"}))}}),
             "If source_key is provided then embedding_function must also be provided since there is no default embedding function."),
            (json!({"defaults": {}, "keys": {"a": sparse(false, json!({"source_key": "#other"}))}}),
             "source_key cannot begin with '#'. The only valid key starting with '#' is Key.DOCUMENT or '#document'."),
            (json!({"defaults": {}, "keys": {"title": {"string": {"fts_index": on}}}}),
             "Full text search / regular expression index can only be enabled on #document field: title"),
            (json!({"defaults": {}, "keys": {"#document": {"string": {"string_inverted_index": on}}}}),
             "String inverted index can not be enabled on #document key: #document"),
            (json!({"defaults": {}, "keys": {}, "source_attached_function_id": "f"}),
             "source_attached_function_id is set by attached functions only"),
        ];
        for (s, message) in cases {
            fails(
                schema(s).validate(),
                &format!("Validation error: schema: {message}"),
            );
        }
        // What the rules allow.
        for ok in [
            client_default(),
            json!({"defaults": {}, "keys": {"a": sparse(true, json!({"source_key": "body",
                   "embedding_function": {"type": "known", "name": "bm25", "config": {}}}))}}),
            json!({"defaults": {}, "keys": {"a": vector(false, json!({}))}}),
            json!({"defaults": {}, "keys": {"#document": {"string": {"fts_index":
                   {"enabled": false, "config": {}}}}}}),
        ] {
            assert!(schema(ok.clone()).validate().is_ok(), "{ok}");
        }
    }

    #[test]
    fn configuration_default_ness() {
        assert!(configuration_is_default(&client_config(None)));
        for ef in [
            default_ef(),
            json!({"type": "unknown"}),
            json!({"type": "known", "name": "default", "config": {"x": 1}}),
        ] {
            assert!(configuration_is_default(&client_config(Some(ef))));
        }
        for ef in [
            json!({"type": "legacy"}),
            json!({"type": "known", "name": "my_ef", "config": {}}),
        ] {
            assert!(!configuration_is_default(&client_config(Some(ef))));
        }
        let with = |f: fn(&mut HnswConfiguration)| {
            let mut cfg = client_config(None);
            f(&mut cfg.hnsw);
            configuration_is_default(&cfg)
        };
        assert!(with(|h| h.num_threads = Some(default_num_threads())));
        assert!(!with(|h| h.num_threads = Some(default_num_threads() + 1)));
        assert!(!with(|h| h.space = Space::Cosine));
        assert!(!with(|h| h.ef_construction = 101));
        assert!(!with(|h| h.ef_search = 99));
        assert!(!with(|h| h.max_neighbors = 8));
        assert!(!with(|h| h.batch_size = 50));
        assert!(!with(|h| h.sync_threshold = 10));
        assert!(!with(|h| h.resize_factor = 2.0));
    }

    #[test]
    fn schema_default_ness() {
        assert!(schema(client_default()).is_default());
        assert!(schema(json!({"defaults": {}, "keys": {}})).is_default());
        /// Whether the client's default with `path` set to `value` is still default.
        fn changed(path: &[&str], value: Value) -> bool {
            let mut s = client_default();
            let (last, parents) = path.split_last().unwrap();
            let mut at = &mut s;
            for p in parents {
                at = &mut at[*p];
            }
            at[*last] = value;
            schema(s).is_default()
        }
        fn path(base: &[&'static str], rest: &[&'static str]) -> Vec<&'static str> {
            [base, rest].concat()
        }
        let emb: &[&str] = &["keys", "#embedding", "float_list", "vector_index"];
        let dflt: &[&str] = &["defaults", "float_list", "vector_index"];
        // Still default: l2, default-valued HNSW, SPANN defaults, the unknown EF, bm25 off.
        assert!(changed(&path(emb, &["config", "hnsw"]), hnsw_block()));
        assert!(changed(
            &path(dflt, &["config", "spann"]),
            json!({"search_nprobe": 64})
        ));
        assert!(changed(
            &path(dflt, &["config", "embedding_function"]),
            json!({"type": "unknown"})
        ));
        assert!(changed(
            &[
                "defaults",
                "sparse_vector",
                "sparse_vector_index",
                "config",
                "bm25"
            ],
            json!(false)
        ));
        // Not default.
        for (p, v) in [
            (path(emb, &["config", "space"]), json!("cosine")),
            (
                path(emb, &["config", "embedding_function"]),
                json!({"type": "legacy"}),
            ),
            (path(emb, &["config", "hnsw"]), json!({"ef_search": 50})),
            (
                path(emb, &["config", "spann"]),
                json!({"search_nprobe": 20}),
            ),
            (path(emb, &["enabled"]), json!(false)),
            (path(dflt, &["config", "source_key"]), json!("#document")),
            (
                path(dflt, &["config", "embedding_function"]),
                json!({"type": "known", "name": "my_ef", "config": {}}),
            ),
            (
                vec!["defaults", "string", "string_inverted_index", "enabled"],
                json!(false),
            ),
            (
                vec!["defaults", "int", "int_inverted_index", "enabled"],
                json!(false),
            ),
            (
                vec!["defaults", "float", "float_inverted_index", "enabled"],
                json!(false),
            ),
            (
                vec!["defaults", "bool", "bool_inverted_index", "enabled"],
                json!(false),
            ),
            (
                vec![
                    "defaults",
                    "sparse_vector",
                    "sparse_vector_index",
                    "config",
                    "bm25",
                ],
                json!(true),
            ),
            (
                vec![
                    "defaults",
                    "sparse_vector",
                    "sparse_vector_index",
                    "config",
                    "source_key",
                ],
                json!("x"),
            ),
            (
                vec!["keys", "#document", "string", "fts_index", "enabled"],
                json!(false),
            ),
            (
                vec!["keys", "color"],
                json!({"string": {"string_inverted_index": {"enabled": true, "config": {}}}}),
            ),
            (vec!["cmek"], json!({"gcp": "projects/p"})),
        ] {
            assert!(!changed(&p, v.clone()), "{p:?} = {v}");
        }
    }

    #[test]
    fn merge_fills_from_the_default_and_drops_spann() {
        let s = schema(json!({
            "defaults": {"string": {"string_inverted_index": {"enabled": false, "config": {}}}},
            "keys": {
                "#embedding": {"float_list": {"vector_index": {"enabled": true, "config": {
                    "space": "cosine", "embedding_function": default_ef(),
                    "hnsw": {"ef_search": 50},
                    "spann": {"search_nprobe": 20}}}}},
                "color": {"string": {"string_inverted_index": {"enabled": true, "config": {}}}},
            },
        }));
        let merged = to_json(&s.merged_into_default(KnnIndex::Hnsw).unwrap());
        let mut want = local_default_json(None);
        want["defaults"]["string"]["string_inverted_index"]["enabled"] = json!(false);
        let emb = &mut want["keys"]["#embedding"]["float_list"]["vector_index"]["config"];
        emb["space"] = json!("cosine");
        emb["embedding_function"] = default_ef();
        emb["hnsw"]["ef_search"] = json!(50);
        want["keys"]["color"] =
            json!({"string": {"string_inverted_index": {"enabled": true, "config": {}}}});
        assert_eq!(merged, want);

        // Merged HNSW settings must be usable.
        for (hnsw, message) in [
            (
                json!({"batch_size": 1}),
                "batch_size must be an integer between 2 and 1000000, got 1",
            ),
            (
                json!({"sync_threshold": 0}),
                "sync_threshold must be an integer between 2 and 10000000, got 0",
            ),
            (
                json!({"ef_search": 0}),
                "ef_search must be an integer between 1 and 10000, got 0",
            ),
            (
                json!({"resize_factor": 0.5}),
                "resize_factor must be a number between 1 and 100, got 0.5",
            ),
        ] {
            let s = schema(json!({"defaults": {"float_list": {"vector_index":
                {"enabled": false, "config": {"hnsw": hnsw}}}}, "keys": {}}));
            fails(
                s.merged_into_default(KnnIndex::Hnsw),
                &format!("Failed to reconcile schema: Invalid HNSW configuration: {message}"),
            );
        }
    }

    #[test]
    fn reconcile_precedence_and_errors() {
        let my_ef = json!({"type": "known", "name": "my_ef", "config": {"k": 1}});
        // No schema, or a default one: built from the configuration.
        for request in [None, Some(schema(client_default()))] {
            let got = reconcile(
                request.as_ref(),
                &client_config(Some(default_ef())),
                KnnIndex::Hnsw,
            )
            .unwrap();
            assert_eq!(to_json(&got), local_default_json(Some(default_ef())));
            let got = reconcile(request.as_ref(), &client_config(None), KnnIndex::Hnsw).unwrap();
            assert_eq!(to_json(&got), local_default_json(None));
        }
        let mut cosine = client_config(Some(my_ef.clone()));
        cosine.hnsw.space = Space::Cosine;
        cosine.hnsw.ef_search = 77;
        let got = reconcile(Some(&schema(client_default())), &cosine, KnnIndex::Hnsw).unwrap();
        let mut want = local_default_json(Some(my_ef.clone()));
        for path in [
            "/defaults/float_list/vector_index/config",
            "/keys/#embedding/float_list/vector_index/config",
        ] {
            let v = want.pointer_mut(path).unwrap();
            v["space"] = json!("cosine");
            v["hnsw"]["ef_search"] = json!(77);
        }
        assert_eq!(to_json(&got), want);
        assert_eq!(
            got.hnsw_configuration(),
            HnswConfiguration {
                num_threads: Some(default_num_threads()),
                ..cosine.hnsw.clone()
            }
        );
        assert_eq!(got.embedding_function(), Some(&my_ef));

        // A non-default schema wins over a default configuration (its EF ignored).
        let mut s = client_default();
        s["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["space"] = json!("ip");
        s["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["embedding_function"] =
            my_ef.clone();
        let got = reconcile(
            Some(&schema(s.clone())),
            &client_config(Some(default_ef())),
            KnnIndex::Hnsw,
        )
        .unwrap();
        assert_eq!(got.hnsw_configuration().space, Space::Ip);
        assert_eq!(got.embedding_function(), Some(&my_ef));
        assert_eq!(
            to_json(&got)["defaults"]["float_list"]["vector_index"]["config"]["embedding_function"],
            default_ef()
        );
        // The sparse config is merged field by field too (`bm25` from the default).
        assert_eq!(
            to_json(&got)["defaults"]["sparse_vector"]["sparse_vector_index"]["config"],
            json!({"embedding_function": {"type": "unknown"}, "bm25": false})
        );

        // Both non-default.
        fails(
            reconcile(Some(&schema(s)), &cosine, KnnIndex::Hnsw),
            "Failed to reconcile schema: Cannot set both collection config and schema simultaneously",
        );
        // A legacy EF is a non-default configuration too.
        let mut off = client_default();
        off["defaults"]["int"]["int_inverted_index"]["enabled"] = json!(false);
        fails(
            reconcile(Some(&schema(off.clone())), &client_config(Some(json!({"type": "legacy"}))), KnnIndex::Hnsw),
            "Failed to reconcile schema: Cannot set both collection config and schema simultaneously",
        );
        assert!(reconcile(Some(&schema(off)), &client_config(None), KnnIndex::Hnsw).is_ok());

        // The local sparse guard.
        let mut sparse = client_default();
        sparse["keys"]["s"] = json!({"sparse_vector": {"sparse_vector_index": {"enabled": true,
            "config": {"embedding_function": {"type": "unknown"}}}}});
        fails(
            reconcile(Some(&schema(sparse)), &client_config(None), KnnIndex::Hnsw),
            "Failed to reconcile schema: Invalid schema input: Sparse vector indexing is not enabled in local",
        );
    }

    #[test]
    fn updates_edit_both_vector_indexes() {
        let mut s = Schema::from_configuration(&client_config(Some(default_ef())));
        let ef = json!({"type": "known", "name": "other", "config": {}});
        s.apply_update(
            &HnswUpdate {
                ef_search: Some(77),
                batch_size: Some(10),
                ..Default::default()
            },
            &SpannUpdate::default(),
            Some(&ef),
        );
        let j = to_json(&s);
        for v in [
            &j["defaults"]["float_list"]["vector_index"]["config"],
            &j["keys"]["#embedding"]["float_list"]["vector_index"]["config"],
        ] {
            assert_eq!(v["hnsw"]["ef_search"], 77);
            assert_eq!(v["hnsw"]["batch_size"], 10);
            assert_eq!(v["hnsw"]["max_neighbors"], 16);
            assert_eq!(v["embedding_function"], ef);
        }
        assert_eq!(s.hnsw_configuration().ef_search, 77);
    }

    fn filter(w: Value, d: Option<Value>) -> Filter {
        Filter::parse(Some(&w), d.as_ref()).unwrap().unwrap()
    }

    #[test]
    fn filters_on_disabled_indexes() {
        let mut s = client_default();
        s["keys"]["tag"] =
            json!({"string": {"string_inverted_index": {"enabled": false, "config": {}}}});
        s["defaults"]["int"]["int_inverted_index"]["enabled"] = json!(false);
        s["keys"]["rank"] = json!({"int": {"int_inverted_index": {"enabled": true, "config": {}}}});
        s["keys"]["#document"]["string"]["fts_index"]["enabled"] = json!(false);
        let s = reconcile(Some(&schema(s)), &client_config(None), KnnIndex::Hnsw).unwrap();
        let disabled = |key: &str, t: &str| {
            format!("Cannot filter using metadata key '{key}' with type '{t}' because indexing is disabled")
        };
        let fts = "Cannot filter using full-text search because FTS indexing is disabled";
        for (w, message) in [
            (json!({"tag": "x"}), disabled("tag", "Str")),
            (json!({"tag": {"$ne": "x"}}), disabled("tag", "Str")),
            (json!({"tag": {"$in": ["x", "y"]}}), disabled("tag", "Str")),
            (json!({"tag": {"$contains": "x"}}), disabled("tag", "Str")),
            (
                json!({"$or": [{"other": 1.5}, {"$and": [{"tag": "x"}]}]}),
                disabled("tag", "Str"),
            ),
            (json!({"count": 3}), disabled("count", "Int")),
            (json!({"count": {"$gt": 3}}), disabled("count", "Int")),
            (json!({"count": {"$nin": [1, 2]}}), disabled("count", "Int")),
            (json!({"#document": {"$contains": "x"}}), fts.to_owned()),
        ] {
            fails(s.check_filter(&filter(w, None)), &message);
        }
        fails(
            s.check_filter(&filter(json!({"rank": 1}), Some(json!({"$contains": "x"})))),
            fts,
        );
        for w in [
            json!({"tag": true}),
            json!({"rank": {"$gte": 2}}),
            json!({"count": 1.5}),
            json!({"count": {"$in": [1, 2.5]}}),
            json!({"other": true}),
        ] {
            assert!(s.check_filter(&filter(w.clone(), None)).is_ok(), "{w}");
        }
        // The default schema refuses nothing.
        let d = Schema::local_default();
        assert!(d
            .check_filter(&filter(json!({"tag": "x"}), Some(json!({"$regex": "a"}))))
            .is_ok());
    }

    #[test]
    fn discovery_copies_the_defaults_once() {
        let mut s = client_default();
        s["defaults"]["string"]["string_inverted_index"]["enabled"] = json!(false);
        s["keys"]["kept"] =
            json!({"string": {"string_inverted_index": {"enabled": true, "config": {}}}});
        let mut s = reconcile(Some(&schema(s)), &client_config(None), KnnIndex::Hnsw).unwrap();
        let m = |v: Value| -> UpdateMetadata { serde_json::from_value(v).unwrap() };
        let first = m(json!({"ck": "v", "kept": "a", "seen": "b", "gone": null, "chroma:x": 1}));
        assert!(s.has_new_keys([&first]));
        assert!(!s.has_new_keys([&m(json!({"kept": "z", "gone": null, "chroma:y": 2}))]));
        assert!(s.discover_keys([&m(
            json!({"ck": "v", "kept": "a", "seen": "b", "gone": null, "chroma:x": 1})
        ),]));
        assert!(s.discover_keys([&m(json!({"ck": 100})), &m(json!({"ck": [2.5]}))]));
        let known = m(json!({"ck": 200, "seen": ["x"]}));
        assert!(!s.has_new_keys([&known]));
        assert!(!s.discover_keys([&known]));
        let j = to_json(&s);
        let off = json!({"enabled": false, "config": {}});
        let on = json!({"enabled": true, "config": {}});
        assert_eq!(
            j["keys"]["ck"],
            json!({"string": {"fts_index": off, "string_inverted_index": off},
                   "int": {"int_inverted_index": on}, "float": {"float_inverted_index": on}})
        );
        assert_eq!(
            j["keys"]["kept"],
            json!({"string": {"string_inverted_index": on}})
        );
        assert_eq!(
            j["keys"]["seen"],
            json!({"string": {"fts_index": off, "string_inverted_index": off}})
        );
        assert!(j["keys"].get("gone").is_none());
        assert!(j["keys"].get("chroma:x").is_none());
    }

    // ----- SPANN (a server run with --knn-index spann) -----------------------------------

    fn spann_defaults() -> Value {
        serde_json::to_value(SpannIndexConfig::defaults()).unwrap()
    }

    /// The cloud's default schema with this embedding function: §3.1 with a SPANN block
    /// in place of the HNSW one.
    fn spann_default_json(ef: Option<Value>) -> Value {
        let mut j = local_default_json(ef);
        for path in [
            "/defaults/float_list/vector_index/config",
            "/keys/#embedding/float_list/vector_index/config",
        ] {
            let v = j.pointer_mut(path).unwrap();
            v.as_object_mut().unwrap().remove("hnsw");
            v["spann"] = spann_defaults();
        }
        j
    }

    fn spann_config(ef: Option<Value>) -> CollectionConfiguration {
        CollectionConfiguration::spann(SpannIndexConfig::default(), Space::L2, ef)
    }

    #[test]
    fn a_spann_servers_default_schema_has_spann_in_both_vector_indexes() {
        assert_eq!(
            to_json(&Schema::default_for(KnnIndex::Spann)),
            spann_default_json(None)
        );
        let got = reconcile(
            Some(&schema(client_default())),
            &spann_config(Some(default_ef())),
            KnnIndex::Spann,
        )
        .unwrap();
        assert_eq!(to_json(&got), spann_default_json(Some(default_ef())));
        let cfg = CollectionConfiguration::from_schema(got);
        assert_eq!(cfg.spann, Some(SpannIndexConfig::defaults()));
        assert_eq!(cfg.hnsw.ef_search, 200);
        assert_eq!(cfg.hnsw.max_neighbors, 64);
    }

    #[test]
    fn a_spann_server_keeps_spann_merges_it_and_drops_hnsw_blocks() {
        let mut s = client_default();
        s["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["spann"] =
            json!({"search_nprobe": 20, "ef_search": 50});
        s["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["space"] = json!("cosine");
        s["defaults"]["float_list"]["vector_index"]["config"]["hnsw"] = json!({"ef_search": 7});
        let got = reconcile(
            Some(&schema(s)),
            &spann_config(Some(default_ef())),
            KnnIndex::Spann,
        )
        .unwrap();
        let j = to_json(&got);
        let emb = &j["keys"]["#embedding"]["float_list"]["vector_index"]["config"];
        assert_eq!(emb["spann"]["search_nprobe"], 20);
        assert_eq!(emb["spann"]["ef_search"], 50);
        assert_eq!(emb["spann"]["write_nprobe"], 32);
        assert_eq!(emb["space"], "cosine");
        let dflt = &j["defaults"]["float_list"]["vector_index"]["config"];
        assert!(dflt.get("hnsw").is_none(), "{dflt}");
        assert_eq!(dflt["spann"], spann_defaults());
        let cfg = CollectionConfiguration::from_schema(got);
        assert_eq!(cfg.hnsw.space, Space::Cosine);
        assert_eq!(cfg.hnsw.ef_search, 50);
        assert_eq!(cfg.spann.as_ref().and_then(|s| s.search_nprobe), Some(20));
        assert_eq!(cfg.cold_nprobe(80), 25);
    }

    #[test]
    fn a_spann_server_checks_spann_ranges_and_allows_a_sparse_index() {
        let mut s = client_default();
        s["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["spann"] =
            json!({"split_threshold": 500});
        fails(
            reconcile(Some(&schema(s)), &spann_config(None), KnnIndex::Spann),
            "Failed to reconcile schema: Invalid SPANN configuration: split_threshold must be between 25 and 200, got 500",
        );
        let mut sparse = client_default();
        sparse["keys"]["sparse"] = json!({"sparse_vector": {"sparse_vector_index": {"enabled": true,
            "config": {"embedding_function": {"type": "unknown"}, "bm25": true}}}});
        let got = reconcile(Some(&schema(sparse)), &spann_config(None), KnnIndex::Spann).unwrap();
        assert_eq!(
            to_json(&got)["keys"]["sparse"]["sparse_vector"]["sparse_vector_index"]["config"]
                ["bm25"],
            true
        );
        // A non-default SPANN configuration with a non-default schema is the usual conflict.
        let custom = CollectionConfiguration::spann(
            SpannIndexConfig {
                search_nprobe: Some(10),
                ..Default::default()
            },
            Space::L2,
            None,
        );
        assert!(!configuration_is_default(&custom));
        assert!(configuration_is_default(&spann_config(Some(default_ef()))));
        let mut off = client_default();
        off["defaults"]["int"] = json!({"int_inverted_index": {"enabled": false, "config": {}}});
        fails(
            reconcile(Some(&schema(off)), &custom, KnnIndex::Spann),
            "Failed to reconcile schema: Cannot set both collection config and schema simultaneously",
        );
        let built = reconcile(None, &custom, KnnIndex::Spann).unwrap();
        assert_eq!(built.spann_configuration().unwrap().search_nprobe, Some(10));
    }

    #[test]
    fn a_spann_update_edits_both_spann_blocks_and_leaves_hnsw_ones() {
        let mut s = Schema::default_for(KnnIndex::Spann);
        s.apply_update(
            &HnswUpdate {
                ef_search: Some(9),
                ..Default::default()
            },
            &SpannUpdate {
                search_nprobe: Some(100),
                ef_search: Some(150),
            },
            None,
        );
        let j = to_json(&s);
        for v in [
            &j["defaults"]["float_list"]["vector_index"]["config"],
            &j["keys"]["#embedding"]["float_list"]["vector_index"]["config"],
        ] {
            assert_eq!(v["spann"]["search_nprobe"], 100);
            assert_eq!(v["spann"]["ef_search"], 150);
            assert!(v.get("hnsw").is_none());
        }
        let mut h = Schema::local_default();
        h.apply_update(
            &HnswUpdate::default(),
            &SpannUpdate {
                search_nprobe: Some(100),
                ef_search: Some(150),
            },
            None,
        );
        assert_eq!(h, Schema::local_default());
    }
}
