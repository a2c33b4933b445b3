//! A real-embedding dataset: base vectors with their metadata, queries and exact ground
//! truth. The repository's own sample (`tests/data/sample`, 2,000 vectors, written by
//! `scripts/make_sample.py`) unless `CHROMA_DEV_DATA` names a larger one in the same
//! layout (the 20,000-vector `dev` set the benchmarks use).

use std::path::{Path, PathBuf};

use arrow_array::{
    Array, BooleanArray, Int32Array, Int64Array, LargeStringArray, StringArray, StringViewArray,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use chroma_core::engine::{Engine, Include, QueryRequest};
use chroma_core::model::validate::WriteBatch;
use chroma_core::model::{Collection, Filter, Metadata, MetadataValue};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub struct Dataset {
    pub dim: usize,
    pub base: Vec<f32>,
    pub ids: Vec<String>,
    pub texts: Vec<String>,
    pub years: Vec<i64>,
    pub categories: Vec<String>,
    pub ranked: Vec<bool>,
    pub queries: Vec<f32>,
    /// Exact top-100 base rows per query, best first.
    pub gt: Vec<Vec<u32>>,
    /// The same among rows with `year >= 2024`.
    pub gt_year_2024: Vec<Vec<u32>>,
}

/// `CHROMA_DEV_DATA` when set (and not empty), else the repository's sample.
pub fn data_dir() -> PathBuf {
    match std::env::var("CHROMA_DEV_DATA") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/sample"),
    }
}

fn npy<T: npyz::Deserialize>(path: &Path) -> (Vec<u64>, Vec<T>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} (set CHROMA_DEV_DATA to the dataset directory): {e}",
            path.display()
        )
    });
    let file = npyz::NpyFile::new(&bytes[..]).expect("npy header");
    let shape = file.shape().to_vec();
    (shape, file.into_vec::<T>().expect("npy data"))
}

fn rows(shape: &[u64], flat: Vec<i32>) -> Vec<Vec<u32>> {
    let width = shape[1] as usize;
    flat.chunks(width)
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect()
}

impl Dataset {
    pub fn load() -> Self {
        let dir = data_dir();
        let (shape, base) = npy::<f32>(&dir.join("base.npy"));
        let dim = shape[1] as usize;
        let (_, queries) = npy::<f32>(&dir.join("queries.npy"));
        let (gs, gt) = npy::<i32>(&dir.join("gt_ids_top100.npy"));
        let (fs, gt_f) = npy::<i32>(&dir.join("gt_ids_top100_year_gte_2024.npy"));
        let file = std::fs::File::open(dir.join("base.parquet")).expect("base.parquet");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .unwrap();
        let (mut ids, mut texts, mut years, mut categories, mut ranked) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for batch in reader {
            let batch = batch.unwrap();
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap_or_else(|| panic!("column {name}"))
                    .clone()
            };
            let strings = |name: &str| {
                let c = col(name);
                if let Some(a) = c.as_any().downcast_ref::<StringArray>() {
                    (0..a.len())
                        .map(|i| a.value(i).to_string())
                        .collect::<Vec<_>>()
                } else if let Some(a) = c.as_any().downcast_ref::<LargeStringArray>() {
                    (0..a.len())
                        .map(|i| a.value(i).to_string())
                        .collect::<Vec<_>>()
                } else {
                    let a = c
                        .as_any()
                        .downcast_ref::<StringViewArray>()
                        .expect("string column");
                    (0..a.len())
                        .map(|i| a.value(i).to_string())
                        .collect::<Vec<_>>()
                }
            };
            ids.extend(strings("id"));
            texts.extend(strings("text"));
            categories.extend(strings("category"));
            let y = col("year");
            if let Some(y) = y.as_any().downcast_ref::<Int64Array>() {
                years.extend((0..y.len()).map(|i| y.value(i)));
            } else {
                let y = y
                    .as_any()
                    .downcast_ref::<Int32Array>()
                    .expect("year is an integer");
                years.extend((0..y.len()).map(|i| i64::from(y.value(i))));
            }
            let r = col("ranked");
            let r = r
                .as_any()
                .downcast_ref::<BooleanArray>()
                .expect("ranked is bool");
            ranked.extend((0..r.len()).map(|i| r.value(i)));
        }
        assert_eq!(ids.len() * dim, base.len());
        Self {
            dim,
            base,
            ids,
            texts,
            years,
            categories,
            ranked,
            queries,
            gt: rows(&gs, gt),
            gt_year_2024: rows(&fs, gt_f),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// The metadata stored with a row: year, category, ranked.
    pub fn metadata(&self, row: usize) -> Metadata {
        Metadata::from([
            ("year".to_string(), MetadataValue::Int(self.years[row])),
            (
                "category".to_string(),
                MetadataValue::Str(self.categories[row].clone()),
            ),
            ("ranked".to_string(), MetadataValue::Bool(self.ranked[row])),
        ])
    }

    /// An add batch of `rows`: id, embedding, text as document, metadata.
    pub fn batch(&self, rows: std::ops::Range<usize>) -> WriteBatch {
        WriteBatch {
            ids: rows.clone().map(|r| self.ids[r].clone()).collect(),
            embeddings: Some(
                rows.clone()
                    .map(|r| Some(self.vector(r).to_vec()))
                    .collect(),
            ),
            documents: Some(rows.clone().map(|r| Some(self.texts[r].clone())).collect()),
            uris: None,
            metadatas: Some(
                rows.map(|r| {
                    Some(
                        self.metadata(r)
                            .into_iter()
                            .map(|(k, v)| (k, Some(v)))
                            .collect(),
                    )
                })
                .collect(),
            ),
        }
    }

    pub fn vector(&self, row: usize) -> &[f32] {
        &self.base[row * self.dim..(row + 1) * self.dim]
    }

    pub fn query(&self, q: usize) -> &[f32] {
        &self.queries[q * self.dim..(q + 1) * self.dim]
    }

    pub fn query_count(&self) -> usize {
        self.queries.len() / self.dim
    }

    /// Exact top-k rows by inner product among rows passing `keep`.
    pub fn brute_force(&self, q: usize, k: usize, keep: impl Fn(usize) -> bool) -> Vec<u32> {
        let query = self.query(q);
        let mut scored: Vec<(f32, u32)> = (0..self.len())
            .filter(|&r| keep(r))
            .map(|r| {
                (
                    self.vector(r)
                        .iter()
                        .zip(query)
                        .map(|(a, b)| a * b)
                        .sum::<f32>(),
                    r as u32,
                )
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().take(k).map(|(_, r)| r).collect()
    }
}

/// |found ∩ truth[..k]| / k.
pub fn recall_at(found: &[u32], truth: &[u32], k: usize) -> f64 {
    let truth: std::collections::HashSet<u32> = truth.iter().take(k).copied().collect();
    found.iter().take(k).filter(|r| truth.contains(r)).count() as f64
        / k.min(truth.len()).max(1) as f64
}

/// Latencies (sorted) and mean recall@10 of one pass over every query.
pub struct QueryStats {
    pub times: Vec<Duration>,
    pub recall: f64,
}

impl QueryStats {
    /// The `p`-th quantile latency in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let i = ((self.times.len() as f64 - 1.0) * p).round() as usize;
        self.times[i].as_secs_f64() * 1e3
    }
}

/// Runs every query (k = 10, one at a time) with an optional `where` filter and scores
/// the results against `truth(q)`.
pub async fn run_queries(
    engine: &Engine,
    collection: &Collection,
    data: &Dataset,
    filter: Option<serde_json::Value>,
    truth: impl Fn(usize) -> Vec<u32>,
) -> QueryStats {
    let filter = filter.map(|w| Filter::parse(Some(&w), None).unwrap().unwrap());
    let include = Include {
        distances: true,
        ..Include::none()
    };
    let n = data.query_count();
    run(engine, collection, data, filter, include, n, false, truth).await
}

/// Every query, asking for what Chroma's clients ask by default (documents, metadata and
/// distances: the stored fields of each result are read too).
#[allow(dead_code)]
pub async fn run_default_queries(
    engine: &Engine,
    collection: &Collection,
    data: &Dataset,
    truth: impl Fn(usize) -> Vec<u32>,
) -> QueryStats {
    let n = data.query_count();
    run(
        engine,
        collection,
        data,
        None,
        DEFAULT_INCLUDE,
        n,
        false,
        truth,
    )
    .await
}

/// What Chroma's clients ask a query for by default.
const DEFAULT_INCLUDE: Include = Include {
    distances: true,
    documents: true,
    metadatas: true,
    embeddings: false,
    uris: false,
};

/// The first `count` queries with an optional `where` filter, each against a collection
/// no longer in memory ([`Engine::evict_all`] first), asking for what Chroma's clients ask
/// by default: with `cold_query_rows` reached they take the cold path.
pub async fn run_cold_queries(
    engine: &Engine,
    collection: &Collection,
    data: &Dataset,
    count: usize,
    filter: Option<serde_json::Value>,
    truth: impl Fn(usize) -> Vec<u32>,
) -> QueryStats {
    let filter = filter.map(|w| Filter::parse(Some(&w), None).unwrap().unwrap());
    let n = data.query_count().min(count);
    run(
        engine,
        collection,
        data,
        filter,
        DEFAULT_INCLUDE,
        n,
        true,
        truth,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn run(
    engine: &Engine,
    collection: &Collection,
    data: &Dataset,
    filter: Option<Filter>,
    include: Include,
    n: usize,
    cold: bool,
    truth: impl Fn(usize) -> Vec<u32>,
) -> QueryStats {
    let row_of: HashMap<&str, u32> = data
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u32))
        .collect();
    let mut times = Vec::with_capacity(n);
    let mut recall = 0.0;
    for q in 0..n {
        let request = QueryRequest {
            embeddings: vec![data.query(q).to_vec()],
            n_results: 10,
            ids: None,
            filter: filter.clone(),
            include,
        };
        if cold {
            engine.evict_all();
        }
        let start = Instant::now();
        let got = engine.query(collection, request).await.unwrap();
        times.push(start.elapsed());
        let rows: Vec<u32> = got.ids[0].iter().map(|id| row_of[id.as_str()]).collect();
        assert_eq!(rows.len(), 10, "query {q} returned {} results", rows.len());
        recall += recall_at(&rows, &truth(q), 10);
    }
    times.sort();
    QueryStats {
        times,
        recall: recall / n as f64,
    }
}
