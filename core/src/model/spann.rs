//! SPANN: the server's choice of vector index flavour ([`KnnIndex`]) and Chroma's SPANN
//! configuration ([`SpannIndexConfig`]), which a server run with `--knn-index spann`
//! keeps, validates and echoes as Chroma's cloud does.
//!
//! Here a SPANN collection is served by the same index as an HNSW one — an HNSW graph
//! in memory and k-means partitions for cold reads (README, "Scaling") — and its SPANN
//! parameters drive it:
//! - `space`, `ef_construction`, `ef_search`, `max_neighbors`: the HNSW graph's settings
//!   ([`SpannIndexConfig::hnsw_configuration`]);
//! - `search_nprobe`: how many partitions a cold query probes, as a ratio to Chroma's
//!   default — 64 probes the engine's own default (`cold_nprobe`, tuned for recall@10 ≥
//!   0.95 at 1M), 128 twice as many, 16 a quarter ([`SpannIndexConfig::cold_nprobe`]).
//!   Chroma's postings hold at most `split_threshold` (50) vectors and ours ~1,024, so the
//!   raw count would mean something else here; the ratio keeps its sense (more probes:
//!   more recall, more bytes read).
//!
//! The other fields (`write_nprobe`, the RNG factors, split/merge thresholds, replica
//! count, k-means samples) describe SPANN's incremental posting maintenance, which this
//! index does not have (compaction rebuilds partitions); they are validated, stored and
//! echoed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::collection::{HnswConfiguration, Space};
use crate::error::{Error, Result};

/// The server's default vector index, as Chroma's `default_knn_index`: `hnsw` answers
/// as local Chroma 1.5.9 (SPANN converted to HNSW, sparse indexes refused), `spann` as
/// Chroma's cloud (SPANN kept, sparse indexes allowed in a schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KnnIndex {
    #[default]
    Hnsw,
    Spann,
}

impl FromStr for KnnIndex {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hnsw" => Ok(Self::Hnsw),
            "spann" => Ok(Self::Spann),
            other => Err(format!("unknown vector index {other:?}: use hnsw or spann")),
        }
    }
}

impl fmt::Display for KnnIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hnsw => "hnsw",
            Self::Spann => "spann",
        })
    }
}

/// Chroma's SPANN block (in a schema's vector index, and — its nine public fields — in a
/// configuration). A missing field takes the default; a collection stores every field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpannIndexConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_nprobe: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_rng_factor: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_rng_epsilon: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nreplica_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_rng_factor: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_rng_epsilon: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_samples_kmeans: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_lambda: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassign_neighbor_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_centers_to_merge_to: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_nprobe: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_construction: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_search: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_neighbors: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center_drift_threshold: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<SpannQuantize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpannQuantize {
    None,
    FourBitRabitQWithUSearch,
}

/// Chroma's default `search_nprobe`: the value that probes the engine's default.
pub const DEFAULT_SEARCH_NPROBE: u32 = 64;

/// Inclusive bounds of the fields a request may set (Chroma's validator's, with a lower
/// bound of 1 where 0 would leave an index that finds nothing).
const BOUNDS: [(&str, u32, u32); 8] = [
    ("search_nprobe", 1, 128),
    ("write_nprobe", 1, 128),
    ("ef_construction", 1, 200),
    ("ef_search", 1, 200),
    ("max_neighbors", 2, 64),
    ("reassign_neighbor_count", 0, 64),
    ("split_threshold", 25, 200),
    ("merge_threshold", 12, 100),
];

impl SpannIndexConfig {
    /// Chroma's defaults, every field set but `center_drift_threshold` and `quantize`
    /// (omitted by Chroma when unset).
    pub fn defaults() -> Self {
        Self {
            search_nprobe: Some(DEFAULT_SEARCH_NPROBE),
            search_rng_factor: Some(1.0),
            search_rng_epsilon: Some(10.0),
            nreplica_count: Some(8),
            write_rng_factor: Some(1.0),
            write_rng_epsilon: Some(5.0),
            split_threshold: Some(50),
            num_samples_kmeans: Some(1000),
            initial_lambda: Some(100.0),
            reassign_neighbor_count: Some(64),
            merge_threshold: Some(25),
            num_centers_to_merge_to: Some(8),
            write_nprobe: Some(32),
            ef_construction: Some(200),
            ef_search: Some(200),
            max_neighbors: Some(64),
            center_drift_threshold: None,
            quantize: None,
        }
    }

    /// Every field given is Chroma's default.
    pub fn is_default(&self) -> bool {
        let d = Self::defaults();
        let same = |v: Option<u32>, d: Option<u32>| v.is_none() || v == d;
        let same_f = |v: Option<f32>, d: Option<f32>| v.is_none() || v == d;
        same(self.search_nprobe, d.search_nprobe)
            && same_f(self.search_rng_factor, d.search_rng_factor)
            && same_f(self.search_rng_epsilon, d.search_rng_epsilon)
            && same(self.nreplica_count, d.nreplica_count)
            && same_f(self.write_rng_factor, d.write_rng_factor)
            && same_f(self.write_rng_epsilon, d.write_rng_epsilon)
            && same(self.split_threshold, d.split_threshold)
            && same(self.num_samples_kmeans, d.num_samples_kmeans)
            && same_f(self.initial_lambda, d.initial_lambda)
            && same(self.reassign_neighbor_count, d.reassign_neighbor_count)
            && same(self.merge_threshold, d.merge_threshold)
            && same(self.num_centers_to_merge_to, d.num_centers_to_merge_to)
            && same(self.write_nprobe, d.write_nprobe)
            && same(self.ef_construction, d.ef_construction)
            && same(self.ef_search, d.ef_search)
            && same(self.max_neighbors, d.max_neighbors)
            && self.center_drift_threshold.is_none()
            && self.quantize.is_none_or(|q| q == SpannQuantize::None)
    }

    /// Field-wise: `self`'s where given, else `base`'s.
    pub fn over(&self, base: &SpannIndexConfig) -> Self {
        Self {
            search_nprobe: self.search_nprobe.or(base.search_nprobe),
            search_rng_factor: self.search_rng_factor.or(base.search_rng_factor),
            search_rng_epsilon: self.search_rng_epsilon.or(base.search_rng_epsilon),
            nreplica_count: self.nreplica_count.or(base.nreplica_count),
            write_rng_factor: self.write_rng_factor.or(base.write_rng_factor),
            write_rng_epsilon: self.write_rng_epsilon.or(base.write_rng_epsilon),
            split_threshold: self.split_threshold.or(base.split_threshold),
            num_samples_kmeans: self.num_samples_kmeans.or(base.num_samples_kmeans),
            initial_lambda: self.initial_lambda.or(base.initial_lambda),
            reassign_neighbor_count: self
                .reassign_neighbor_count
                .or(base.reassign_neighbor_count),
            merge_threshold: self.merge_threshold.or(base.merge_threshold),
            num_centers_to_merge_to: self
                .num_centers_to_merge_to
                .or(base.num_centers_to_merge_to),
            write_nprobe: self.write_nprobe.or(base.write_nprobe),
            ef_construction: self.ef_construction.or(base.ef_construction),
            ef_search: self.ef_search.or(base.ef_search),
            max_neighbors: self.max_neighbors.or(base.max_neighbors),
            center_drift_threshold: self.center_drift_threshold.or(base.center_drift_threshold),
            quantize: self.quantize.or(base.quantize),
        }
    }

    /// The fields given are within Chroma's ranges (400 naming the field otherwise), and
    /// `merge_threshold` stays below `split_threshold`.
    pub fn check(&self) -> Result<()> {
        let given = [
            self.search_nprobe,
            self.write_nprobe,
            self.ef_construction,
            self.ef_search,
            self.max_neighbors,
            self.reassign_neighbor_count,
            self.split_threshold,
            self.merge_threshold,
        ];
        for ((name, low, high), value) in BOUNDS.iter().zip(given) {
            if let Some(v) = value {
                if v < *low || v > *high {
                    return Err(Error::invalid(format!(
                        "Invalid SPANN configuration: {name} must be between {low} and {high}, got {v}"
                    )));
                }
            }
        }
        let full = self.over(&Self::defaults());
        if let (Some(merge), Some(split)) = (full.merge_threshold, full.split_threshold) {
            if merge >= split {
                return Err(Error::invalid(format!(
                    "Invalid SPANN configuration: merge_threshold ({merge}) must be below split_threshold ({split})"
                )));
            }
        }
        Ok(())
    }

    /// The HNSW graph's settings of a SPANN collection in `space` (the fields SPANN does
    /// not have take HNSW's defaults).
    pub fn hnsw_configuration(&self, space: Space) -> HnswConfiguration {
        let full = self.over(&Self::defaults());
        let d = HnswConfiguration::default();
        let get = |v: Option<u32>, d: usize| v.map_or(d, |v| v as usize);
        HnswConfiguration {
            space,
            ef_construction: get(full.ef_construction, d.ef_construction),
            ef_search: get(full.ef_search, d.ef_search),
            max_neighbors: get(full.max_neighbors, d.max_neighbors),
            ..d
        }
    }

    /// Partitions a cold query probes: `engine_default` scaled by `search_nprobe` over
    /// Chroma's default (at least one; an engine set to probe everything, `usize::MAX`,
    /// still does).
    pub fn cold_nprobe(&self, engine_default: usize) -> usize {
        let nprobe = self.search_nprobe.unwrap_or(DEFAULT_SEARCH_NPROBE) as usize;
        engine_default
            .saturating_mul(nprobe)
            .div_ceil(DEFAULT_SEARCH_NPROBE as usize)
            .max(1)
    }
}

/// The SPANN fields a modify sets (`None`: unchanged).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpannUpdate {
    pub search_nprobe: Option<u32>,
    pub ef_search: Option<u32>,
}

impl SpannUpdate {
    /// Within the ranges a create allows.
    pub fn check(&self) -> Result<()> {
        SpannIndexConfig {
            search_nprobe: self.search_nprobe,
            ef_search: self.ef_search,
            ..Default::default()
        }
        .check()
    }

    pub fn apply(&self, s: &mut SpannIndexConfig) {
        s.search_nprobe = self.search_nprobe.or(s.search_nprobe);
        s.ef_search = self.ef_search.or(s.ef_search);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_index_parses_its_two_names() {
        assert_eq!("hnsw".parse::<KnnIndex>(), Ok(KnnIndex::Hnsw));
        assert_eq!(" SPANN ".parse::<KnnIndex>(), Ok(KnnIndex::Spann));
        assert!("ivf"
            .parse::<KnnIndex>()
            .unwrap_err()
            .contains("hnsw or spann"));
        assert_eq!(KnnIndex::Spann.to_string(), "spann");
    }

    #[test]
    fn defaults_are_chromas_and_default() {
        let d = SpannIndexConfig::defaults();
        assert!(d.is_default());
        assert!(SpannIndexConfig::default().is_default());
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 16, "{json}");
        assert_eq!(json["search_nprobe"], 64);
        assert_eq!(json["write_nprobe"], 32);
        assert_eq!(json["max_neighbors"], 64);
        assert!(!SpannIndexConfig {
            search_nprobe: Some(20),
            ..Default::default()
        }
        .is_default());
    }

    #[test]
    fn ranges_are_checked_and_name_the_field() {
        let bad = [
            (
                r#"{"search_nprobe": 129}"#,
                "search_nprobe must be between 1 and 128, got 129",
            ),
            (
                r#"{"write_nprobe": 200}"#,
                "write_nprobe must be between 1 and 128",
            ),
            (
                r#"{"ef_construction": 201}"#,
                "ef_construction must be between 1 and 200",
            ),
            (
                r#"{"ef_search": 0}"#,
                "ef_search must be between 1 and 200, got 0",
            ),
            (
                r#"{"max_neighbors": 65}"#,
                "max_neighbors must be between 2 and 64",
            ),
            (
                r#"{"reassign_neighbor_count": 65}"#,
                "reassign_neighbor_count must be between 0 and 64",
            ),
            (
                r#"{"split_threshold": 24}"#,
                "split_threshold must be between 25 and 200",
            ),
            (
                r#"{"merge_threshold": 101}"#,
                "merge_threshold must be between 12 and 100",
            ),
            (
                r#"{"merge_threshold": 60}"#,
                "merge_threshold (60) must be below split_threshold (50)",
            ),
        ];
        for (json, message) in bad {
            let s: SpannIndexConfig = serde_json::from_str(json).unwrap();
            let e = s.check().expect_err(json);
            assert_eq!(e.code(), crate::error::ErrorCode::InvalidArgument);
            assert!(e.message().contains(message), "{json}: {}", e.message());
        }
        let good: SpannIndexConfig = serde_json::from_str(
            r#"{"search_nprobe": 128, "write_nprobe": 1, "ef_construction": 200, "ef_search": 1,
                "max_neighbors": 2, "reassign_neighbor_count": 0, "split_threshold": 200,
                "merge_threshold": 100}"#,
        )
        .unwrap();
        good.check().unwrap();
        assert!(SpannUpdate {
            search_nprobe: Some(0),
            ef_search: None
        }
        .check()
        .is_err());
    }

    #[test]
    fn the_hnsw_graph_takes_spanns_settings() {
        let s = SpannIndexConfig {
            ef_search: Some(80),
            max_neighbors: Some(24),
            ..Default::default()
        };
        let h = s.hnsw_configuration(Space::Cosine);
        assert_eq!(h.space, Space::Cosine);
        assert_eq!(h.ef_search, 80);
        assert_eq!(h.max_neighbors, 24);
        assert_eq!(h.ef_construction, 200);
        assert_eq!(h.batch_size, HnswConfiguration::default().batch_size);
    }

    #[test]
    fn search_nprobe_scales_the_engines_probes() {
        let with = |n| SpannIndexConfig {
            search_nprobe: Some(n),
            ..Default::default()
        };
        assert_eq!(SpannIndexConfig::defaults().cold_nprobe(80), 80);
        assert_eq!(with(128).cold_nprobe(80), 160);
        assert_eq!(with(16).cold_nprobe(80), 20);
        assert_eq!(with(1).cold_nprobe(80), 2);
        assert_eq!(with(1).cold_nprobe(1), 1);
        // An engine that probes every partition still does, whatever the setting.
        assert_eq!(with(128).cold_nprobe(usize::MAX), usize::MAX.div_ceil(64));
        assert!(with(1).cold_nprobe(usize::MAX) > 1 << 50);
    }

    #[test]
    fn an_update_sets_only_what_it_gives() {
        let mut s = SpannIndexConfig::defaults();
        SpannUpdate {
            search_nprobe: Some(10),
            ef_search: None,
        }
        .apply(&mut s);
        assert_eq!(s.search_nprobe, Some(10));
        assert_eq!(s.ef_search, Some(200));
    }
}
