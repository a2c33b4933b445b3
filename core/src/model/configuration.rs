//! What a create asks for and the configuration it gives a collection: the
//! `configuration` of a create as Chroma's clients send it (and as Chroma stores it, so
//! `chroma import --from-chroma` reads it with the same types), converted to the server's
//! vector index and reconciled with the create's schema.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::schema;
use super::validate::hnsw_configuration_from_json;
use super::{CollectionConfiguration, KnnIndex, Metadata, Space, SpannIndexConfig};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CollectionConfigurationPayload {
    pub hnsw: Option<HnswConfigurationPayload>,
    /// Kept, or converted to HNSW with the same `space` (see
    /// [`SpannConfigurationPayload`]).
    pub spann: Option<SpannConfigurationPayload>,
    /// The client's embedding function description, stored and echoed verbatim.
    pub embedding_function: Option<Value>,
}

/// `configuration.hnsw` of a new collection; unset fields take the defaults (or legacy
/// `hnsw:*` metadata).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HnswConfigurationPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "l2")]
    pub space: Option<Space>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_construction: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_search: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_neighbors: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_threads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_threshold: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_factor: Option<f64>,
}

/// A SPANN index configuration as Chroma's clients send it. A server run with
/// `--knn-index hnsw` (like local Chroma) builds HNSW instead, keeping only `space`, the
/// other fields accepted and not used; with `--knn-index spann` (like Chroma's cloud) it
/// is validated and kept (see [`crate::model::spann`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpannConfigurationPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_nprobe: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_nprobe: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "l2")]
    pub space: Option<Space>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_construction: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_search: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_neighbors: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassign_neighbor_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_threshold: Option<u32>,
}

/// Counts beyond `u32` are out of every SPANN range: they saturate, then fail the check.
pub(crate) fn saturating_u32(v: Option<usize>) -> Option<u32> {
    v.map(|v| u32::try_from(v).unwrap_or(u32::MAX))
}

impl SpannConfigurationPayload {
    /// The schema's SPANN block with these fields (`space` is the vector index's).
    pub fn index_config(&self) -> SpannIndexConfig {
        SpannIndexConfig {
            search_nprobe: self.search_nprobe,
            write_nprobe: self.write_nprobe,
            ef_construction: saturating_u32(self.ef_construction),
            ef_search: saturating_u32(self.ef_search),
            max_neighbors: saturating_u32(self.max_neighbors),
            reassign_neighbor_count: self.reassign_neighbor_count,
            split_threshold: self.split_threshold,
            merge_threshold: self.merge_threshold,
            ..Default::default()
        }
    }
}

/// The configuration a create asks for, converted to the server's vector index as
/// Chroma's `try_from_config` does. On an HNSW server: `hnsw` as given, or a `spann`
/// configuration converted to HNSW defaults with its `space` (else `l2`). On a SPANN
/// server: `spann` validated and kept; `hnsw` (validated) replaced by SPANN defaults with
/// its `space`; neither, SPANN defaults with the space of legacy `hnsw:space` metadata.
fn requested(
    cfg: CollectionConfigurationPayload,
    metadata: Option<&Metadata>,
    knn: KnnIndex,
) -> Result<CollectionConfiguration> {
    let ef = cfg.embedding_function;
    let hnsw_json = match (&cfg.hnsw, &cfg.spann, knn) {
        (Some(_), Some(_), _) => {
            return Err(Error::invalid(
                "Multiple vector index configurations provided",
            ))
        }
        (None, Some(spann), KnnIndex::Spann) => {
            let index = spann.index_config();
            index.check()?;
            return Ok(CollectionConfiguration::spann(
                index,
                spann.space.unwrap_or(Space::L2),
                ef,
            ));
        }
        (Some(h), None, _) => Some(json!({ "hnsw": h })),
        (None, Some(spann), KnnIndex::Hnsw) => Some(json!({
            "hnsw": { "space": spann.space.unwrap_or(Space::L2) }
        })),
        (None, None, _) => None,
    };
    let hnsw = hnsw_configuration_from_json(hnsw_json.as_ref(), metadata)?;
    Ok(match knn {
        KnnIndex::Hnsw => CollectionConfiguration {
            hnsw,
            spann: None,
            embedding_function: ef,
            schema: None,
        },
        KnnIndex::Spann => CollectionConfiguration::spann(Default::default(), hnsw.space, ef),
    })
}

/// The configuration a create with this `configuration`, `schema` and `metadata` gives
/// a collection on a server whose vector index is `knn` (validated, reconciled: see
/// [`super::schema::reconcile`]). Also what `chroma import --from-chroma` recreates Chroma's
/// collections with.
pub fn creation_configuration(
    configuration: CollectionConfigurationPayload,
    schema: Option<&schema::Schema>,
    metadata: Option<&Metadata>,
    knn: KnnIndex,
) -> Result<CollectionConfiguration> {
    let requested = requested(configuration, metadata, knn)?;
    // Before the name is looked up: a get_or_create of an existing name fails the same way.
    if let Some(s) = schema {
        s.validate()?;
    }
    let schema = schema::reconcile(schema, &requested, knn)?;
    Ok(CollectionConfiguration::from_schema(schema))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::ErrorCode;
    use crate::model::validate::collection_metadata_from_json;

    fn payload(v: Value) -> CollectionConfigurationPayload {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn both_vector_indexes_are_refused() {
        let both = payload(json!({"hnsw": {}, "spann": {}}));
        for knn in [KnnIndex::Hnsw, KnnIndex::Spann] {
            let e = creation_configuration(both.clone(), None, None, knn).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument);
            assert_eq!(e.message(), "Multiple vector index configurations provided");
        }
    }

    #[test]
    fn spann_becomes_hnsw_with_its_space_on_an_hnsw_server() {
        let asked = payload(json!({"spann": {"space": "cosine", "search_nprobe": 64}}));
        let c = creation_configuration(asked.clone(), None, None, KnnIndex::Hnsw).unwrap();
        assert_eq!(c.hnsw.space, Space::Cosine);
        assert!(c.spann.is_none());
        let c = creation_configuration(asked, None, None, KnnIndex::Spann).unwrap();
        assert_eq!(c.hnsw.space, Space::Cosine);
        assert_eq!(c.spann.unwrap().search_nprobe, Some(64));
    }

    #[test]
    fn legacy_metadata_sets_the_space_and_bad_values_name_their_field() {
        let metadata = collection_metadata_from_json(&json!({"hnsw:space": "ip"}))
            .unwrap()
            .unwrap();
        let c = creation_configuration(
            CollectionConfigurationPayload::default(),
            None,
            Some(&metadata),
            KnnIndex::Hnsw,
        )
        .unwrap();
        assert_eq!(c.hnsw.space, Space::Ip);
        let e = creation_configuration(
            payload(json!({"hnsw": {"ef_search": 0}})),
            None,
            None,
            KnnIndex::Hnsw,
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.message().contains("ef_search"), "{}", e.message());
    }

    #[test]
    fn the_embedding_function_is_kept_verbatim() {
        let ef = json!({"type": "known", "name": "default", "config": {}});
        let c = creation_configuration(
            payload(json!({"embedding_function": ef.clone()})),
            None,
            None,
            KnnIndex::Hnsw,
        )
        .unwrap();
        assert_eq!(c.embedding_function, Some(ef));
    }
}
