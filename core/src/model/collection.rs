//! Tenants, databases, collections and a collection's configuration.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::record::Metadata;
use super::schema::Schema;
use super::spann::{KnnIndex, SpannIndexConfig};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    /// Set once with `PATCH /tenants/{tenant}` (Chroma's `update_tenant`).
    #[serde(default)]
    pub resource_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Database {
    pub id: Uuid,
    pub name: String,
    pub tenant: String,
}

/// The distance function of a collection, with Chroma's definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Space {
    /// Squared Euclidean distance `Σ(a−b)²`.
    #[default]
    L2,
    /// `1 − a·b / (‖a‖‖b‖)`.
    Cosine,
    /// `1 − a·b`.
    Ip,
}

impl Space {
    pub fn as_str(self) -> &'static str {
        match self {
            Space::L2 => "l2",
            Space::Cosine => "cosine",
            Space::Ip => "ip",
        }
    }
}

/// Chroma's HNSW configuration. Every field is accepted, persisted and echoed;
/// `space`, `ef_construction`, `ef_search` and `max_neighbors` take effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HnswConfiguration {
    pub space: Space,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub max_neighbors: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_threads: Option<usize>,
    pub batch_size: usize,
    pub sync_threshold: usize,
    pub resize_factor: f64,
}

impl Default for HnswConfiguration {
    fn default() -> Self {
        Self {
            space: Space::L2,
            ef_construction: 100,
            ef_search: 100,
            max_neighbors: 16,
            num_threads: None,
            batch_size: 100,
            sync_threshold: 1000,
            resize_factor: 1.2,
        }
    }
}

/// What creating a collection does when its name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Fail with `AlreadyExists`.
    Fail,
    /// Return the existing collection unchanged (Chroma's `get_or_create`).
    Get,
}

/// A collection's configuration: the index parameters and the client's embedding
/// function description, which the server stores and echoes verbatim.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CollectionConfiguration {
    /// The HNSW graph's settings (of a SPANN collection: derived from `spann`).
    pub hnsw: HnswConfiguration,
    /// A SPANN collection's settings, every field set (see [`super::spann`]); `None` for
    /// an HNSW collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spann: Option<SpannIndexConfig>,
    #[serde(default)]
    pub embedding_function: Option<serde_json::Value>,
    /// The index schema computed at creation (see [`super::schema`]); `hnsw` and
    /// `embedding_function` are its vector index's. `None` for collections created before
    /// schemas were stored (and by callers that give none): [`Self::schema`] derives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
}

impl CollectionConfiguration {
    /// The configuration of a create that asks for nothing, on a server whose default
    /// vector index is `knn`.
    pub fn default_for(knn: KnnIndex) -> Self {
        match knn {
            KnnIndex::Hnsw => Self::default(),
            KnnIndex::Spann => Self::spann(SpannIndexConfig::defaults(), Space::L2, None),
        }
    }

    /// A SPANN collection's configuration: `spann` filled in with the defaults, the HNSW
    /// graph's settings derived from it.
    pub fn spann(
        spann: SpannIndexConfig,
        space: Space,
        embedding_function: Option<serde_json::Value>,
    ) -> Self {
        let spann = spann.over(&SpannIndexConfig::defaults());
        Self {
            hnsw: spann.hnsw_configuration(space),
            spann: Some(spann),
            embedding_function,
            schema: None,
        }
    }

    /// Partitions a cold query of this collection probes, given the engine's default
    /// (a SPANN collection scales it by its `search_nprobe`).
    pub fn cold_nprobe(&self, engine_default: usize) -> usize {
        self.spann
            .as_ref()
            .map_or(engine_default, |s| s.cold_nprobe(engine_default))
    }

    /// The collection's schema: the stored one, else the one a create with this
    /// configuration stores.
    pub fn schema(&self) -> std::borrow::Cow<'_, Schema> {
        match &self.schema {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(Schema::from_configuration(self)),
        }
    }

    /// The configuration of a collection with this schema.
    pub fn from_schema(schema: Schema) -> Self {
        Self {
            hnsw: schema.hnsw_configuration(),
            spann: schema.spann_configuration(),
            embedding_function: schema.embedding_function().cloned(),
            schema: Some(schema),
        }
    }
}

/// A collection as the catalog stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collection {
    pub id: Uuid,
    pub name: String,
    pub tenant: String,
    pub database: String,
    pub metadata: Option<Metadata>,
    pub configuration: CollectionConfiguration,
    /// Fixed by the first write; `None` until then. Filled from the manifest.
    pub dimension: Option<u32>,
}
