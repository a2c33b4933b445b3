//! `POST …/search` (Chroma Cloud's search, served self-hosted): filters with `#id` and
//! `#document`, rank expressions, `group_by`, `limit`, `select`, the column-major
//! response; sparse vectors in metadata and a hybrid dense + sparse rank on a SPANN
//! server; the errors of malformed payloads. Reads span the log and segments alike.

use serde_json::{json, Value};

use super::harness::Server;
use super::schema::client_schema;

/// Six records on a line in 2-d (l2): `r{i}` at `(i, 0)`, in two categories.
async fn line(s: &Server) -> String {
    let c = s.collection("line", json!({})).await;
    let ids: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    let embeddings: Vec<Value> = (0..6).map(|i| json!([i as f32, 0.0])).collect();
    let metadatas: Vec<Value> = (0..6)
        .map(|i| json!({"cat": if i % 2 == 0 { "even" } else { "odd" }, "n": i, "p": (i * 7) % 4}))
        .collect();
    let documents: Vec<String> = (0..6)
        .map(|i| format!("doc {i} {}", "ab".repeat(i)))
        .collect();
    s.post(
        &format!("{c}/add"),
        json!({"ids": ids, "embeddings": embeddings, "metadatas": metadatas, "documents": documents}),
    )
    .await;
    c
}

fn knn(q: [f32; 2], limit: u32) -> Value {
    json!({"$knn": {"query": q, "key": "#embedding", "limit": limit}})
}

async fn search(s: &Server, c: &str, payload: Value) -> Value {
    s.post(&format!("{c}/search"), json!({"searches": [payload]}))
        .await
        .ok()
        .clone()
}

#[tokio::test]
async fn knn_filter_limit_and_select_answer_column_major() {
    let s = Server::start().await;
    let c = line(&s).await;
    for compacted in [false, true] {
        if compacted {
            s.compact(&c).await;
        }
        let r = search(
            &s,
            &c,
            json!({"filter": {"$and": [{"cat": {"$eq": "even"}}, {"#id": {"$nin": ["r0"]}}]},
                   "rank": knn([0.0, 0.0], 10), "group_by": {},
                   "limit": {"offset": 0, "limit": 10},
                   "select": {"keys": ["#score", "n", "#document"]}}),
        )
        .await;
        // l2 is squared distance.
        assert_eq!(
            r,
            json!({"ids": [["r2", "r4"]], "documents": [["doc 2 abab", "doc 4 abababab"]],
                   "embeddings": [null], "metadatas": [[{"n": 2}, {"n": 4}]],
                   "scores": [[4.0, 16.0]], "select": [["#document", "#score", "n"]]}),
            "compacted: {compacted}"
        );
        // Offset and limit after ranking; the knn's own limit bounds the candidates.
        let r = search(
            &s,
            &c,
            json!({"rank": knn([5.0, 0.0], 3), "limit": {"offset": 1, "limit": 5},
                   "select": {"keys": ["#embedding", "#metadata"]}}),
        )
        .await;
        assert_eq!(r["ids"], json!([["r4", "r3"]]));
        assert_eq!(r["embeddings"], json!([[[4.0, 0.0], [3.0, 0.0]]]));
        assert_eq!(r["metadatas"][0][0], json!({"cat": "even", "n": 4, "p": 0}));
        assert_eq!(r["scores"], json!([null]));
        assert_eq!(r["documents"], json!([null]));
        // A document filter, a regex, an `$or` mixing ids and metadata.
        let r = search(
            &s,
            &c,
            json!({"filter": {"$or": [{"#id": {"$eq": "r1"}},
                                      {"$and": [{"#document": {"$contains": "ababab"}},
                                                {"#document": {"$regex": "^doc [35]"}}]}]},
                   "rank": knn([0.0, 0.0], 6), "select": {"keys": []}}),
        )
        .await;
        assert_eq!(r["ids"], json!([["r1", "r3", "r5"]]));
        assert_eq!(r["select"], json!([[]]));
    }
}

#[tokio::test]
async fn without_a_rank_records_come_in_storage_order() {
    let s = Server::start().await;
    let c = line(&s).await;
    let r = search(
        &s,
        &c,
        json!({"filter": {"n": {"$gte": 1}}, "rank": null, "limit": {"offset": 1, "limit": 3},
               "select": {"keys": ["#score", "cat"]}}),
    )
    .await;
    assert_eq!(r["ids"], json!([["r2", "r3", "r4"]]));
    assert_eq!(r["scores"], json!([[null, null, null]]));
    assert_eq!(
        r["metadatas"],
        json!([[{"cat": "even"}, {"cat": "odd"}, {"cat": "even"}]])
    );
    // What the client sends for `Search()`: every record, ids only.
    let r = search(
        &s,
        &c,
        json!({"filter": null, "rank": null, "group_by": {}, "limit": {"offset": 0},
               "select": {"keys": []}}),
    )
    .await;
    assert_eq!(r["ids"][0].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn rank_expressions_combine_knns_by_their_defaults() {
    let s = Server::start().await;
    let c = line(&s).await;
    // Two knns that overlap in r2, r3: without defaults only those are ranked.
    let both = |d: Option<f32>| {
        let mut a = knn([0.0, 0.0], 4);
        let mut b = knn([5.0, 0.0], 4);
        if let Some(d) = d {
            a["$knn"]["default"] = json!(d);
            b["$knn"]["default"] = json!(d);
        }
        json!({"$sum": [a, {"$mul": [{"$val": 2.0}, b]}]})
    };
    let r = search(
        &s,
        &c,
        json!({"rank": both(None), "select": {"keys": ["#score"]}}),
    )
    .await;
    // r2: 4 + 2·9 = 22, r3: 9 + 2·4 = 17.
    assert_eq!(r["ids"], json!([["r3", "r2"]]));
    assert_eq!(r["scores"], json!([[17.0, 22.0]]));
    // With defaults: the union, a missing side taking 100.
    let r = search(
        &s,
        &c,
        json!({"rank": both(Some(100.0)), "select": {"keys": ["#score"]}}),
    )
    .await;
    // r5: 100 + 2·0, r4: 100 + 2·1, r0: 0 + 2·100, r1: 1 + 2·100.
    assert_eq!(r["ids"], json!([["r3", "r2", "r5", "r4", "r0", "r1"]]));
    assert_eq!(
        r["scores"],
        json!([[17.0, 22.0, 100.0, 102.0, 200.0, 201.0]])
    );
    // return_rank gives positions; Rrf as the client sends it.
    let rrf = json!({"$mul": [{"$val": -1}, {"$sum": [
        {"$div": {"left": {"$val": 1.0}, "right": {"$sum": [{"$val": 60},
            {"$knn": {"query": [0.0, 0.0], "limit": 3, "return_rank": true, "default": 10}}]}}},
        {"$div": {"left": {"$val": 1.0}, "right": {"$sum": [{"$val": 60},
            {"$knn": {"query": [5.0, 0.0], "limit": 3, "return_rank": true, "default": 10}}]}}}]}]});
    let r = search(&s, &c, json!({"rank": rrf, "select": {"keys": ["#score"]}})).await;
    let ids = r["ids"][0].as_array().unwrap();
    assert_eq!(ids.len(), 6);
    // r0 and r5 are first in one list and absent from the other; r2 and r3 are in one
    // each at position 2; r1 and r4 at position 1.
    assert_eq!(&ids[..2], &[json!("r0"), json!("r5")]);
    let score = r["scores"][0][0].as_f64().unwrap();
    assert!((score + (1.0 / 60.0 + 1.0 / 70.0)).abs() < 1e-6, "{score}");
}

#[tokio::test]
async fn group_by_keeps_the_best_per_group() {
    let s = Server::start().await;
    let c = line(&s).await;
    let r = search(
        &s,
        &c,
        json!({"rank": knn([0.0, 0.0], 6),
               "group_by": {"keys": ["cat"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 2}}},
               "limit": {"offset": 0, "limit": 10}, "select": {"keys": ["#score"]}}),
    )
    .await;
    assert_eq!(r["ids"], json!([["r0", "r1", "r2", "r3"]]));
    // By a metadata key, largest first: p = (7i) mod 4 → r0 0, r1 3, r2 2, r3 1, r4 0, r5 3.
    let r = search(
        &s,
        &c,
        json!({"rank": knn([0.0, 0.0], 6),
               "group_by": {"keys": ["cat"], "aggregate": {"$max_k": {"keys": ["p"], "k": 1}}}}),
    )
    .await;
    assert_eq!(r["ids"], json!([["r1", "r2"]]));
}

#[tokio::test]
async fn several_payloads_answer_in_request_order() {
    let s = Server::start().await;
    let c = line(&s).await;
    let r = s
        .post(
            &format!("{c}/search"),
            json!({"searches": [{"rank": knn([5.0, 0.0], 1)}, {"rank": knn([0.0, 0.0], 2),
                                 "select": {"keys": ["#document"]}}],
                   "read_level": "index_only"}),
        )
        .await;
    let r = r.ok();
    assert_eq!(r["ids"], json!([["r5"], ["r0", "r1"]]));
    assert_eq!(r["documents"], json!([null, ["doc 0 ", "doc 1 ab"]]));
    assert_eq!(r["select"], json!([[], ["#document"]]));
    let r = s
        .post(&format!("{c}/search"), json!({"searches": []}))
        .await;
    assert_eq!(r.ok()["ids"], json!([]));
}

#[tokio::test]
async fn malformed_searches_get_a_400_naming_the_problem() {
    let s = Server::start().await;
    let c = line(&s).await;
    let cases = [
        (json!({"rank": {"$knn": {"query": [1.0, 2.0, 3.0]}}}), "dimension"),
        (json!({"rank": {"$pow": [1]}}), "unknown operator $pow"),
        (json!({"rank": {"$knn": {"query": [1.0, 0.0], "limit": 100001}}}), "limit must be in 1..=100000"),
        (json!({"group_by": {"keys": ["cat"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 1}}}}),
         "group_by requires a rank"),
        (json!({"filter": {"#id": {"$gt": "r1"}}}), "unknown operator $gt on #id"),
        (json!({"filter": {"#embedding": {"$eq": 1}}}), "keys starting with '#' are reserved"),
        (json!({"rank": {"$knn": {"query": {"indices": [1], "values": [1.0]}, "key": "sparse"}}}),
         "Cannot filter using metadata key 'sparse' with type 'SparseVector' because indexing is disabled"),
    ];
    for (payload, message) in cases {
        let m = s
            .post(
                &format!("{c}/search"),
                json!({"searches": [payload.clone()]}),
            )
            .await
            .error(400, "InvalidArgumentError");
        assert!(m.contains(message), "{payload}: {m}");
    }
    // With several payloads, the message names the one at fault.
    let m = s
        .post(
            &format!("{c}/search"),
            json!({"searches": [{}, {"limit": {"limit": 0}}]}),
        )
        .await
        .error(400, "InvalidArgumentError");
    assert!(m.starts_with("searches[1]: "), "{m}");
    s.post(
        &format!("{c}/search"),
        json!({"searches": [], "read_level": "all"}),
    )
    .await
    .error(422, "ChromaError");
}

#[tokio::test]
async fn a_local_server_refuses_sparse_vectors_as_local_chroma_does() {
    let s = Server::start().await;
    let c = s.collection("dense-only", json!({})).await;
    let m = s
        .post(
            &format!("{c}/add"),
            json!({"ids": ["a"], "embeddings": [[1.0, 2.0]],
                   "metadatas": [{"title": "x", "sparse": {"#type": "sparse_vector",
                                                           "indices": [1], "values": [0.5]}}]}),
        )
        .await
        .error(501, "ChromaError");
    assert_eq!(m, "Sparse vector is not supported for local chroma: sparse");
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(0));
}

/// A SPANN server's collection with a sparse index on `sparse`.
async fn hybrid(s: &Server) -> String {
    let mut schema = client_schema();
    schema["keys"]["sparse"] = json!({"sparse_vector": {"sparse_vector_index": {"enabled": true,
        "config": {"embedding_function": {"type": "unknown"}, "bm25": false}}}});
    let c = s.collection("hybrid", json!({"schema": schema})).await;
    let sv = |indices: Value, values: Value| json!({"#type": "sparse_vector", "indices": indices, "values": values});
    let added = s
        .post(
            &format!("{c}/add"),
            json!({"ids": ["a", "b", "c", "d"],
               "embeddings": [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]],
               "metadatas": [{"sparse": sv(json!([1, 4]), json!([0.5, 0.5])), "t": 1},
                             {"sparse": sv(json!([4]), json!([0.9]))},
                             {"t": 3},
                             {"sparse": {"indices": [1, 2], "values": [0.2, 0.8]}}]}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    c
}

#[tokio::test]
async fn sparse_vectors_are_stored_returned_tagged_and_searched() {
    let s = Server::start_spann().await;
    let c = hybrid(&s).await;
    for compacted in [false, true] {
        if compacted {
            s.compact(&c).await;
        }
        let got = s
            .post(
                &format!("{c}/get"),
                json!({"ids": ["d"], "include": ["metadatas"]}),
            )
            .await;
        assert_eq!(
            got.ok()["metadatas"][0]["sparse"],
            json!({"#type": "sparse_vector", "indices": [1, 2], "values": [0.2, 0.8]})
        );
        // q = {1: 1, 4: 1}: a → 1 − 1.0, b → 1 − 0.9, d → 1 − 0.2; c has no vector.
        let sparse_q = json!({"#type": "sparse_vector", "indices": [1, 4], "values": [1.0, 1.0]});
        let r = search(
            &s,
            &c,
            json!({"rank": {"$knn": {"query": sparse_q, "key": "sparse", "limit": 10}},
                   "select": {"keys": ["#score"]}}),
        )
        .await;
        assert_eq!(r["ids"], json!([["a", "b", "d"]]));
        let scores: Vec<f64> = r["scores"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (got, want) in scores.iter().zip([0.0, 0.1, 0.8]) {
            assert!((got - want).abs() < 1e-6, "{scores:?}");
        }
        // Hybrid: dense from (3, 0) with sparse, both with defaults.
        let r = search(
            &s,
            &c,
            json!({"rank": {"$sum": [
                       {"$knn": {"query": [3.0, 0.0], "limit": 2, "default": 50.0}},
                       {"$knn": {"query": sparse_q, "key": "sparse", "limit": 2, "default": 1.0}}]},
                   "select": {"keys": ["#score", "sparse"]}}),
        )
        .await;
        // Dense top 2: d (0), c (1); sparse top 2: a (0), b (0.1).
        // d: 0 + 1 = 1; c: 1 + 1 = 2; a: 50 + 0 = 50; b: 50 + 0.1.
        assert_eq!(r["ids"], json!([["d", "c", "a", "b"]]));
        assert_eq!(r["metadatas"][0][1], Value::Null, "c has no sparse field");
        assert_eq!(r["metadatas"][0][0]["sparse"]["#type"], "sparse_vector");
    }
}

#[tokio::test]
async fn invalid_sparse_vectors_are_refused_with_chromas_messages() {
    let s = Server::start_spann().await;
    let c = hybrid(&s).await;
    let m = s
        .post(
            &format!("{c}/add"),
            json!({"ids": ["x"], "embeddings": [[1.0, 1.0]],
                   "metadatas": [{"sparse": {"indices": [3, 1], "values": [1.0, 1.0]}}]}),
        )
        .await
        .error(400, "InvalidArgumentError");
    assert!(
        m.contains("Invalid sparse vector: Sparse vector indices must be sorted in strictly ascending order (no duplicates)"),
        "{m}"
    );
    let m = s
        .post(
            &format!("{c}/search"),
            json!({"searches": [{"rank": {"$knn": {"key": "sparse",
                "query": {"indices": [1, 2], "values": [1.0]}}}}]}),
        )
        .await
        .error(400, "InvalidArgumentError");
    assert_eq!(
        m,
        "Invalid sparse vector in KNN query: Sparse vector indices, values, and tokens (when present) must have the same length"
    );
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(4));
}

#[tokio::test]
async fn search_sees_only_the_rows_a_key_may_read() {
    let s = Server::start_authenticated().await;
    let c = line(&s).await;
    let key = s.mint(&["*/*/*:read"], Some(json!({"cat": "odd"}))).await;
    let r = s
        .as_key(Some(&key))
        .post(
            &format!("{c}/search"),
            json!({"searches": [{"rank": knn([0.0, 0.0], 6)}, {"limit": {"limit": 10}}]}),
        )
        .await;
    assert_eq!(
        r.ok()["ids"],
        json!([["r1", "r3", "r5"], ["r1", "r3", "r5"]])
    );
}
