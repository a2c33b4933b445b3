//! Wire types: request and response bodies exactly as Chroma's HTTP API v2 spells them
//! (see the compatibility notes of [`super`]), apart from the model types they are converted to and from.
//!
//! `null` and an absent field mean the same everywhere (`Option` fields). Shape errors
//! (missing field, wrong type, unknown enum value or `hnsw` field) fail deserialization
//! and become 422; value errors are checked by the model and become 400.

use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::engine::Include;
use crate::model::configuration::saturating_u32;
pub use crate::model::configuration::{
    CollectionConfigurationPayload, HnswConfigurationPayload, SpannConfigurationPayload,
};
use crate::model::schema::SpannUpdate;
use crate::model::{
    Collection, HnswConfiguration, Metadata, Schema, Space, SpannIndexConfig, UpdateMetadata,
};

/// `{}`: the body of most successful writes.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Empty {}

// ----- system --------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    #[serde(rename = "nanosecond heartbeat")]
    pub nanosecond_heartbeat: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChecklistResponse {
    pub max_batch_size: u32,
    pub supports_base64_encoding: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthcheckResponse {
    pub is_executor_ready: bool,
    pub is_log_client_ready: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GetUserIdentityResponse {
    pub user_id: String,
    pub tenant: String,
    pub databases: Vec<String>,
}

// ----- tenants and databases -------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateTenantPayload {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpdateTenantPayload {
    pub resource_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GetTenantResponse {
    pub name: String,
    pub resource_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateDatabasePayload {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatabaseResponse {
    pub id: Uuid,
    pub name: String,
    pub tenant: String,
}

impl From<crate::model::Database> for DatabaseResponse {
    fn from(d: crate::model::Database) -> Self {
        Self {
            id: d.id,
            name: d.name,
            tenant: d.tenant,
        }
    }
}

/// Paging of listings.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// How many to return at most.
    pub limit: Option<u32>,
    /// How many to skip.
    pub offset: Option<u32>,
}

// ----- collections -----------------------------------------------------------------------

/// The mutable HNSW settings (`space` and `ef_construction` are fixed at creation).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateHnswConfigurationPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_search: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_neighbors: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_threads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_threshold: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
}

/// The mutable SPANN settings (Chroma's `UpdateSpannConfiguration`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSpannConfigurationPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_nprobe: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_search: Option<usize>,
}

impl From<&UpdateSpannConfigurationPayload> for SpannUpdate {
    fn from(p: &UpdateSpannConfigurationPayload) -> Self {
        Self {
            search_nprobe: p.search_nprobe,
            ef_search: saturating_u32(p.ef_search),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct UpdateCollectionConfigurationPayload {
    pub hnsw: Option<UpdateHnswConfigurationPayload>,
    /// Applies to a SPANN collection; of an HNSW collection it changes nothing, as on
    /// local Chroma.
    pub spann: Option<UpdateSpannConfigurationPayload>,
    pub embedding_function: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateCollectionPayload {
    pub name: String,
    /// Non-empty map of scalars or homogeneous arrays; legacy `hnsw:*` keys configure the index.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    pub configuration: Option<CollectionConfigurationPayload>,
    /// Chroma 1.x index schema, reconciled with `configuration` and stored (see
    /// [`crate::model::schema`]).
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Schema>,
    /// Return the existing collection of that name unchanged instead of failing.
    pub get_or_create: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct UpdateCollectionPayload {
    pub new_name: Option<String>,
    /// Replaces the whole metadata map; `{}` is rejected.
    #[schema(value_type = Option<Object>)]
    pub new_metadata: Option<Metadata>,
    pub new_configuration: Option<UpdateCollectionConfigurationPayload>,
}

/// The HNSW part of `configuration_json` (`num_threads` and `batch_size` are only in the
/// schema, as in Chroma).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HnswConfigurationJson {
    #[schema(value_type = String, example = "l2")]
    pub space: Space,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub max_neighbors: usize,
    pub resize_factor: f64,
    pub sync_threshold: usize,
}

impl From<HnswConfiguration> for HnswConfigurationJson {
    fn from(h: HnswConfiguration) -> Self {
        Self {
            space: h.space,
            ef_construction: h.ef_construction,
            ef_search: h.ef_search,
            max_neighbors: h.max_neighbors,
            resize_factor: h.resize_factor,
            sync_threshold: h.sync_threshold,
        }
    }
}

/// The SPANN part of `configuration_json`: Chroma's nine public fields, every one set.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SpannConfigurationJson {
    #[schema(value_type = String, example = "l2")]
    pub space: Space,
    pub search_nprobe: u32,
    pub write_nprobe: u32,
    pub ef_construction: u32,
    pub ef_search: u32,
    pub max_neighbors: u32,
    pub reassign_neighbor_count: u32,
    pub split_threshold: u32,
    pub merge_threshold: u32,
}

impl SpannConfigurationJson {
    fn new(s: &SpannIndexConfig, space: Space) -> Self {
        let s = s.over(&SpannIndexConfig::defaults());
        let get = |v: Option<u32>| v.unwrap_or_default();
        Self {
            space,
            search_nprobe: get(s.search_nprobe),
            write_nprobe: get(s.write_nprobe),
            ef_construction: get(s.ef_construction),
            ef_search: get(s.ef_search),
            max_neighbors: get(s.max_neighbors),
            reassign_neighbor_count: get(s.reassign_neighbor_count),
            split_threshold: get(s.split_threshold),
            merge_threshold: get(s.merge_threshold),
        }
    }
}

/// Exactly one of `hnsw` and `spann` is set: the collection's vector index.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CollectionConfigurationJson {
    pub hnsw: Option<HnswConfigurationJson>,
    pub spann: Option<SpannConfigurationJson>,
    pub embedding_function: Option<Value>,
}

/// A collection as Chroma renders it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CollectionResponse {
    pub id: Uuid,
    pub name: String,
    /// The vector index's settings (the configuration, which follows the schema's vector
    /// index: api §3).
    pub configuration_json: CollectionConfigurationJson,
    /// Chroma 1.x index schema, as stored at creation (and grown by writes).
    pub schema: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    /// `null` until the first write fixes it.
    pub dimension: Option<u32>,
    pub tenant: String,
    pub database: String,
    pub log_position: i64,
    pub version: i32,
}

impl From<Collection> for CollectionResponse {
    fn from(c: Collection) -> Self {
        let cfg = c.configuration;
        let schema = serde_json::to_value(cfg.schema()).unwrap_or_default();
        Self {
            id: c.id,
            name: c.name,
            configuration_json: CollectionConfigurationJson {
                hnsw: cfg.spann.is_none().then(|| cfg.hnsw.clone().into()),
                spann: cfg
                    .spann
                    .as_ref()
                    .map(|s| SpannConfigurationJson::new(s, cfg.hnsw.space)),
                embedding_function: cfg.embedding_function,
            },
            schema: Some(schema),
            metadata: c.metadata,
            dimension: c.dimension,
            tenant: c.tenant,
            database: c.database,
            log_position: 0,
            version: 0,
        }
    }
}

/// `POST …/fork`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ForkCollectionPayload {
    pub new_name: String,
}

/// `GET …/fork_count`: forks made in the collection's whole lineage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ForkCountResponse {
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IndexStatusResponse {
    pub num_indexed_ops: u64,
    pub num_unindexed_ops: u64,
    pub total_ops: u64,
    /// `num_indexed_ops / total_ops`, 1 for an empty collection.
    pub op_indexing_progress: f32,
}

// ----- records ---------------------------------------------------------------------------

/// Embeddings of a write: each a JSON array of numbers or base64 of little-endian f32s
/// (what the client sends when pre-flight advertises base64); `null` elements are allowed
/// where the operation allows a missing embedding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embeddings(pub Vec<Option<Vec<f32>>>);

/// Documentation of [`Embeddings`] for the OpenAPI document.
#[allow(dead_code)]
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingsPayload {
    JsonFloat(Vec<Vec<f32>>),
    Base64(Vec<String>),
}

struct EmbeddingsVisitor;

impl<'de> Visitor<'de> for EmbeddingsVisitor {
    type Value = Embeddings;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of embeddings (arrays of numbers or base64 strings)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Embeddings, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(Embedding(e)) = seq.next_element()? {
            out.push(e);
        }
        Ok(Embeddings(out))
    }
}

impl<'de> Deserialize<'de> for Embeddings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(EmbeddingsVisitor)
    }
}

/// One embedding of a write.
struct Embedding(Option<Vec<f32>>);

struct EmbeddingVisitor;

impl<'de> Visitor<'de> for EmbeddingVisitor {
    type Value = Embedding;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers, a base64 string of little-endian f32s, or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Embedding, E> {
        Ok(Embedding(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Embedding, E> {
        Ok(Embedding(None))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Embedding, E> {
        decode_base64_embedding(s)
            .map(|v| Embedding(Some(v)))
            .map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Embedding, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(x) = seq.next_element::<f32>()? {
            v.push(x);
        }
        Ok(Embedding(Some(v)))
    }
}

impl<'de> Deserialize<'de> for Embedding {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EmbeddingVisitor)
    }
}

/// Base64 (standard alphabet, padded) of packed little-endian f32s.
pub fn decode_base64_embedding(s: &str) -> Result<Vec<f32>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("invalid base64 embedding: {e}"))?;
    if bytes.len() % 4 != 0 {
        return Err(format!(
            "invalid base64 embedding: {} bytes is not a multiple of 4",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Base64 of packed little-endian f32s, as the Python client encodes embeddings.
pub fn encode_base64_embedding(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct AddCollectionRecordsPayload {
    pub ids: Vec<String>,
    #[schema(value_type = EmbeddingsPayload)]
    pub embeddings: Embeddings,
    pub documents: Option<Vec<Option<String>>>,
    pub uris: Option<Vec<Option<String>>>,
    #[schema(value_type = Option<Vec<Option<Object>>>)]
    pub metadatas: Option<Vec<Option<Metadata>>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct UpsertCollectionRecordsPayload {
    pub ids: Vec<String>,
    #[schema(value_type = EmbeddingsPayload)]
    pub embeddings: Embeddings,
    pub documents: Option<Vec<Option<String>>>,
    pub uris: Option<Vec<Option<String>>>,
    /// `null` values remove a key from an existing record's metadata.
    #[schema(value_type = Option<Vec<Option<Object>>>)]
    pub metadatas: Option<Vec<Option<UpdateMetadata>>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct UpdateCollectionRecordsPayload {
    pub ids: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Option<EmbeddingsPayload>)]
    pub embeddings: Option<Embeddings>,
    pub documents: Option<Vec<Option<String>>>,
    pub uris: Option<Vec<Option<String>>>,
    /// `null` values remove a key from the record's metadata.
    #[schema(value_type = Option<Vec<Option<Object>>>)]
    pub metadatas: Option<Vec<Option<UpdateMetadata>>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct DeleteCollectionRecordsPayload {
    pub ids: Option<Vec<String>>,
    #[serde(rename = "where")]
    pub where_: Option<Value>,
    pub where_document: Option<Value>,
    /// Only with `where`: delete at most this many matches.
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeleteCollectionRecordsResponse {
    pub deleted: u64,
}

/// A field a read may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncludeField {
    Distances,
    Documents,
    Embeddings,
    Metadatas,
    Uris,
}

/// The model's include flags of a list of fields.
pub fn include_of(fields: &[IncludeField]) -> Include {
    let mut inc = Include::none();
    for f in fields {
        match f {
            IncludeField::Distances => inc.distances = true,
            IncludeField::Documents => inc.documents = true,
            IncludeField::Embeddings => inc.embeddings = true,
            IncludeField::Metadatas => inc.metadatas = true,
            IncludeField::Uris => inc.uris = true,
        }
    }
    inc
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct GetRequestPayload {
    pub ids: Option<Vec<String>>,
    #[serde(rename = "where")]
    pub where_: Option<Value>,
    pub where_document: Option<Value>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    /// Default `["documents", "metadatas"]`.
    pub include: Option<Vec<IncludeField>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GetResponse {
    pub ids: Vec<String>,
    pub embeddings: Option<Vec<Vec<f32>>>,
    pub documents: Option<Vec<Option<String>>>,
    pub uris: Option<Vec<Option<String>>>,
    #[schema(value_type = Option<Vec<Option<Object>>>)]
    pub metadatas: Option<Vec<Option<Metadata>>>,
    /// The request's include list, in request order.
    pub include: Vec<IncludeField>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct QueryRequestPayload {
    /// JSON arrays only (no base64).
    pub query_embeddings: Vec<Vec<f32>>,
    /// Default 10.
    pub n_results: Option<u32>,
    pub ids: Option<Vec<String>>,
    #[serde(rename = "where")]
    pub where_: Option<Value>,
    pub where_document: Option<Value>,
    /// Default `["documents", "metadatas", "distances"]`.
    pub include: Option<Vec<IncludeField>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueryResponse {
    pub ids: Vec<Vec<String>>,
    pub embeddings: Option<Vec<Vec<Vec<f32>>>>,
    pub documents: Option<Vec<Vec<Option<String>>>>,
    pub uris: Option<Vec<Vec<Option<String>>>>,
    #[schema(value_type = Option<Vec<Vec<Option<Object>>>>)]
    pub metadatas: Option<Vec<Vec<Option<Metadata>>>>,
    pub distances: Option<Vec<Vec<f32>>>,
    pub include: Vec<IncludeField>,
}

/// `read_level` of a count or a search. Every level reads the log too: reads are always
/// consistent (`index_only` and a bounded WAL may see less in Chroma; seeing every
/// acknowledged write is within what they promise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadLevel {
    IndexAndWal,
    IndexOnly,
    IndexAndBoundedWal,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CountParams {
    #[param(value_type = Option<String>)]
    pub read_level: Option<ReadLevel>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_accept_arrays_base64_and_null() {
        let b64 = encode_base64_embedding(&[1.0, -2.5]);
        let json = format!(r#"[[1, 2.5], "{b64}", null]"#);
        let e: Embeddings = serde_json::from_str(&json).unwrap();
        assert_eq!(e.0, vec![Some(vec![1.0, 2.5]), Some(vec![1.0, -2.5]), None]);
        assert!(serde_json::from_str::<Embeddings>(r#"["AAA="]"#).is_err());
        assert!(serde_json::from_str::<Embeddings>("null").is_err());
    }

    #[test]
    fn include_parses_lowercase_names() {
        let v: Vec<IncludeField> = serde_json::from_str(r#"["metadatas","distances"]"#).unwrap();
        assert_eq!(v, vec![IncludeField::Metadatas, IncludeField::Distances]);
        assert!(serde_json::from_str::<Vec<IncludeField>>(r#"["data"]"#).is_err());
    }
}
