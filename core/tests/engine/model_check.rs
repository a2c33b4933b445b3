//! Random sequences of writes, deletes, compactions and reopens, checked after every step
//! against a plain in-memory model: `get` with every field, `count`, and exact `query`.

use std::collections::{BTreeMap, HashMap};

use chroma_core::engine::{DeleteRequest, GetRequest, Include, Merge, QueryRequest};
use chroma_core::model::validate::WriteBatch;
use chroma_core::model::IfExists;
use chroma_core::model::{Collection, CollectionConfiguration, Filter, MetadataValue, OpKind};
use proptest::prelude::*;
use serde_json::json;

use crate::common;

const IDS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
const DOCS: [&str; 3] = ["apple", "banana split", "cherry pie"];
const STRS: [&str; 2] = ["x", "y"];

#[derive(Debug, Clone)]
struct RecordSpec {
    id: usize,
    embedding: Option<[i8; 3]>,
    document: Option<usize>,
    uri: Option<bool>,
    /// key -> Some(value) sets, None removes (update/upsert only).
    metadata: Option<Vec<(&'static str, Option<MetadataValue>)>>,
}

#[derive(Debug, Clone)]
enum FilterSpec {
    NGte(i64),
    NNe(i64),
    SEq(usize),
    DocContains(usize),
}

#[derive(Debug, Clone)]
enum Step {
    Write(OpKind, Vec<RecordSpec>),
    DeleteIds(Vec<usize>),
    DeleteWhere(FilterSpec),
    Compact(bool),
    Reopen,
    Query([i8; 3], u32, Option<FilterSpec>),
}

fn value() -> impl Strategy<Value = (&'static str, MetadataValue)> {
    prop_oneof![
        (0i64..4).prop_map(|n| ("n", MetadataValue::Int(n))),
        (0usize..2).prop_map(|s| ("s", MetadataValue::Str(STRS[s].to_string()))),
        (0i64..3).prop_map(|f| ("f", MetadataValue::Float(f as f64 + 0.5))),
        any::<bool>().prop_map(|b| ("b", MetadataValue::Bool(b))),
    ]
}

fn record(kind: OpKind) -> impl Strategy<Value = RecordSpec> {
    let embedding = if kind == OpKind::Update {
        proptest::option::of(any::<[i8; 3]>()).boxed()
    } else {
        any::<[i8; 3]>().prop_map(Some).boxed()
    };
    let nulls = kind != OpKind::Add;
    let entry = (value(), any::<bool>())
        .prop_map(move |((k, v), remove)| (k, if nulls && remove { None } else { Some(v) }));
    (
        0..IDS.len(),
        embedding,
        proptest::option::of(0..DOCS.len()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(proptest::collection::vec(entry, 0..3)),
    )
        .prop_map(|(id, embedding, document, uri, metadata)| RecordSpec {
            id,
            embedding,
            document,
            uri,
            // A JSON object has each key once.
            metadata: metadata.map(|m| {
                let unique: BTreeMap<_, _> = m.into_iter().collect();
                unique.into_iter().collect()
            }),
        })
}

fn filter() -> impl Strategy<Value = FilterSpec> {
    prop_oneof![
        (0i64..4).prop_map(FilterSpec::NGte),
        (0i64..4).prop_map(FilterSpec::NNe),
        (0usize..2).prop_map(FilterSpec::SEq),
        (0usize..3).prop_map(FilterSpec::DocContains),
    ]
}

fn unique_ids(records: Vec<RecordSpec>) -> Vec<RecordSpec> {
    let mut seen = std::collections::HashSet::new();
    records.into_iter().filter(|r| seen.insert(r.id)).collect()
}

fn step() -> impl Strategy<Value = Step> {
    let write = |kind: OpKind| {
        proptest::collection::vec(record(kind), 1..5)
            .prop_map(move |r| Step::Write(kind, unique_ids(r)))
    };
    prop_oneof![
        4 => write(OpKind::Add),
        2 => write(OpKind::Upsert),
        2 => write(OpKind::Update),
        1 => proptest::collection::hash_set(0..IDS.len(), 1..3)
            .prop_map(|s| Step::DeleteIds(s.into_iter().collect())),
        1 => filter().prop_map(Step::DeleteWhere),
        2 => any::<bool>().prop_map(Step::Compact),
        1 => Just(Step::Reopen),
        2 => (any::<[i8; 3]>(), 0u32..10, proptest::option::of(filter()))
            .prop_map(|(q, k, f)| Step::Query(q, k, f)),
    ]
}

/// The model: records by id with their insertion offset.
#[derive(Debug, Clone, Default)]
struct Model {
    records: HashMap<String, ModelRecord>,
    next: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct ModelRecord {
    offset: u64,
    embedding: Vec<f32>,
    document: Option<String>,
    uri: Option<String>,
    metadata: BTreeMap<String, MetadataValue>,
}

fn emb(e: [i8; 3]) -> Vec<f32> {
    e.iter().map(|&v| f32::from(v)).collect()
}

impl Model {
    fn write(&mut self, kind: OpKind, records: &[RecordSpec]) {
        for r in records {
            let id = IDS[r.id].to_string();
            let offset = self.next;
            self.next += 1;
            let exists = self.records.contains_key(&id);
            match (kind, exists) {
                (OpKind::Add, true) | (OpKind::Update, false) => {}
                (OpKind::Add | OpKind::Upsert, false) => {
                    let metadata = r
                        .metadata
                        .iter()
                        .flatten()
                        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
                        .collect();
                    self.records.insert(
                        id,
                        ModelRecord {
                            offset,
                            embedding: emb(r.embedding.expect("add has embeddings")),
                            document: r.document.map(|d| DOCS[d].to_string()),
                            uri: r.uri.map(|u| format!("uri-{u}")),
                            metadata,
                        },
                    );
                }
                (OpKind::Upsert | OpKind::Update, true) => {
                    let rec = self.records.get_mut(&id).unwrap();
                    if let Some(e) = r.embedding {
                        rec.embedding = emb(e);
                    }
                    if let Some(d) = r.document {
                        rec.document = Some(DOCS[d].to_string());
                    }
                    if let Some(u) = r.uri {
                        rec.uri = Some(format!("uri-{u}"));
                    }
                    for (k, v) in r.metadata.iter().flatten() {
                        match v {
                            Some(v) => rec.metadata.insert(k.to_string(), v.clone()),
                            None => rec.metadata.remove(*k),
                        };
                    }
                }
                (OpKind::Delete, _) => unreachable!(),
            }
        }
    }

    fn matches(rec: &ModelRecord, f: &FilterSpec) -> bool {
        let n = rec.metadata.get("n");
        match f {
            FilterSpec::NGte(v) => matches!(n, Some(MetadataValue::Int(x)) if x >= v),
            FilterSpec::NNe(v) => !matches!(n, Some(MetadataValue::Int(x)) if x == v),
            FilterSpec::SEq(s) => {
                matches!(rec.metadata.get("s"), Some(MetadataValue::Str(x)) if x == STRS[*s])
            }
            FilterSpec::DocContains(d) => rec
                .document
                .as_deref()
                .is_some_and(|doc| doc.contains(DOCS[*d])),
        }
    }

    /// Records in insertion order.
    fn ordered(&self) -> Vec<(&String, &ModelRecord)> {
        let mut all: Vec<_> = self.records.iter().collect();
        all.sort_by_key(|(_, r)| r.offset);
        all
    }
}

fn to_filter(f: &FilterSpec) -> Filter {
    let (w, d) = match f {
        FilterSpec::NGte(v) => (Some(json!({"n": {"$gte": v}})), None),
        FilterSpec::NNe(v) => (Some(json!({"n": {"$ne": v}})), None),
        FilterSpec::SEq(s) => (Some(json!({"s": STRS[*s]})), None),
        FilterSpec::DocContains(d) => (None, Some(json!({"$contains": DOCS[*d]}))),
    };
    Filter::parse(w.as_ref(), d.as_ref()).unwrap().unwrap()
}

fn batch(records: &[RecordSpec]) -> WriteBatch {
    WriteBatch {
        ids: records.iter().map(|r| IDS[r.id].to_string()).collect(),
        embeddings: Some(records.iter().map(|r| r.embedding.map(emb)).collect()),
        documents: Some(
            records
                .iter()
                .map(|r| r.document.map(|d| DOCS[d].to_string()))
                .collect(),
        ),
        uris: Some(
            records
                .iter()
                .map(|r| r.uri.map(|u| format!("uri-{u}")))
                .collect(),
        ),
        metadatas: Some(
            records
                .iter()
                .map(|r| {
                    r.metadata
                        .as_ref()
                        .map(|m| m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
                })
                .collect(),
        ),
    }
}

async fn check_get(engine: &chroma_core::engine::Engine, collection: &Collection, model: &Model) {
    let got = engine
        .get(
            collection,
            GetRequest {
                include: Include::all(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let expected = model.ordered();
    let ids: Vec<&str> = expected.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(got.ids, ids, "ids in insertion order");
    for (i, (_, rec)) in expected.iter().enumerate() {
        assert_eq!(
            got.embeddings.as_ref().unwrap()[i],
            rec.embedding,
            "embedding of {}",
            ids[i]
        );
        assert_eq!(
            got.documents.as_ref().unwrap()[i],
            rec.document,
            "document of {}",
            ids[i]
        );
        assert_eq!(got.uris.as_ref().unwrap()[i], rec.uri, "uri of {}", ids[i]);
        let meta = (!rec.metadata.is_empty()).then(|| rec.metadata.clone());
        assert_eq!(
            got.metadatas.as_ref().unwrap()[i],
            meta,
            "metadata of {}",
            ids[i]
        );
    }
    assert_eq!(
        engine.count(collection).await.unwrap(),
        model.records.len() as u64
    );
}

/// The tests' manual configuration, with segments of at most three rows: compactions
/// fold the log in several rounds and merges stop at the cap.
fn config() -> chroma_core::engine::EngineConfig {
    chroma_core::engine::EngineConfig {
        max_segment_rows: 3,
        ..common::manual_config()
    }
}

async fn run(steps: Vec<Step>) {
    let dir = tempfile::tempdir().unwrap();
    let mut opened = common::open(dir.path(), config());
    let collection = opened
        .engine
        .create_collection(
            "default_tenant",
            "default_database",
            "model",
            None,
            CollectionConfiguration::default(),
            IfExists::Fail,
        )
        .await
        .unwrap();

    let mut model = Model::default();
    for step in steps {
        let engine = opened.engine.clone();
        match &step {
            Step::Write(kind, records) => {
                let result = match kind {
                    OpKind::Add => engine.add(&collection, batch(records)).await,
                    OpKind::Upsert => engine.upsert(&collection, batch(records)).await,
                    OpKind::Update => engine.update(&collection, batch(records)).await,
                    OpKind::Delete => unreachable!(),
                };
                result.unwrap();
                model.write(*kind, records);
            }
            Step::DeleteIds(ids) => {
                let ids: Vec<String> = ids.iter().map(|&i| IDS[i].to_string()).collect();
                engine
                    .delete(
                        &collection,
                        DeleteRequest {
                            ids: Some(ids.clone()),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                model.next += ids.len() as u64;
                for i in ids {
                    model.records.remove(&i);
                }
            }
            Step::DeleteWhere(f) => {
                let doomed: Vec<String> = model
                    .records
                    .iter()
                    .filter(|(_, r)| Model::matches(r, f))
                    .map(|(id, _)| id.clone())
                    .collect();
                let deleted = engine
                    .delete(
                        &collection,
                        DeleteRequest {
                            filter: Some(to_filter(f)),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                assert_eq!(deleted, doomed.len() as u64, "deleted count for {f:?}");
                model.next += doomed.len() as u64;
                for i in doomed {
                    model.records.remove(&i);
                }
            }
            Step::Compact(merge_all) => {
                let merge = if *merge_all {
                    Merge::All
                } else {
                    Merge::AsNeeded
                };
                engine.compact(collection.id, merge).await.unwrap();
            }
            Step::Reopen => {
                drop(opened);
                opened = common::open(dir.path(), config());
            }
            Step::Query(q, k, f) => {
                let query = emb(*q);
                // Queries without a filter start cold (read by range: see `manual_config`).
                if f.is_none() {
                    engine.evict_all();
                }
                let got = engine
                    .query(
                        &collection,
                        QueryRequest {
                            embeddings: vec![query.clone()],
                            n_results: *k,
                            ids: None,
                            filter: f.as_ref().map(to_filter),
                            include: Include::all(),
                        },
                    )
                    .await
                    .unwrap();
                let mut expected: Vec<(f32, u64, &String)> = model
                    .records
                    .iter()
                    .filter(|(_, r)| f.as_ref().is_none_or(|f| Model::matches(r, f)))
                    .map(|(id, r)| {
                        let d: f32 = r
                            .embedding
                            .iter()
                            .zip(&query)
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum();
                        (d, r.offset, id)
                    })
                    .collect();
                expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                expected.truncate(*k as usize);
                let ids: Vec<&str> = expected.iter().map(|e| e.2.as_str()).collect();
                assert_eq!(got.ids[0], ids, "query {q:?} k={k} filter={f:?}");
                let distances: Vec<f32> = expected.iter().map(|e| e.0).collect();
                assert_eq!(got.distances.as_ref().unwrap()[0], distances);
            }
        }
        check_get(&opened.engine, &collection, &model).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(steps in proptest::collection::vec(step(), 1..24)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(steps));
    }
}
