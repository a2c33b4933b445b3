//! Records: add/upsert/update/delete semantics, get and query shapes, distances.

use chroma_core::api::types::encode_base64_embedding;
use serde_json::{json, Value};

use super::harness::{assert_close, Server, DB};

fn b64(v: &[f32]) -> Value {
    json!(encode_base64_embedding(v))
}

#[tokio::test]
async fn add_with_base64_and_get() {
    let s = Server::start().await;
    let c = s.collection("recs", json!({})).await;
    let r = s
        .post(
            &format!("{c}/add"),
            json!({"ids": ["a", "b", "c"],
                   "embeddings": [b64(&[1.0, 0.5]), b64(&[-2.0, 0.25]), [3.0, 4.0]],
                   "documents": ["doc a", null, "doc c"],
                   "uris": ["s3://a", null, null],
                   "metadatas": [{"n": 1, "f": 0.5, "s": "x", "b": true, "arr": [1, 2]}, null, {}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body, json!({}));
    let all = s
        .post(
            &format!("{c}/get"),
            json!({"include": ["uris", "embeddings", "metadatas", "documents"]}),
        )
        .await;
    assert_eq!(
        all.ok(),
        &json!({"ids": ["a", "b", "c"],
                "embeddings": [[1.0, 0.5], [-2.0, 0.25], [3.0, 4.0]],
                "documents": ["doc a", null, "doc c"],
                "uris": ["s3://a", null, null],
                "metadatas": [{"n": 1, "f": 0.5, "s": "x", "b": true, "arr": [1, 2]}, null, null],
                "include": ["uris", "embeddings", "metadatas", "documents"]})
    );
    // Default include: documents and metadatas; nulls everywhere else.
    let d = s
        .post(
            &format!("{c}/get"),
            json!({"ids": null, "where": null, "where_document": null,
                                              "limit": null, "offset": null, "include": null}),
        )
        .await;
    assert_eq!(d.ok()["include"], json!(["documents", "metadatas"]));
    assert_eq!(d.body["embeddings"], Value::Null);
    assert_eq!(d.body["uris"], Value::Null);
    assert_eq!(d.body["documents"], json!(["doc a", null, "doc c"]));
    // An empty body is a get of everything.
    assert_eq!(
        s.post(&format!("{c}/get"), json!({})).await.ok()["ids"],
        json!(["a", "b", "c"])
    );
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(3));
    assert_eq!(
        s.get(&format!("{c}/count?read_level=index_and_wal"))
            .await
            .ok(),
        &json!(3)
    );
    assert_eq!(
        s.get(&format!("{c}/count?read_level=index_only"))
            .await
            .ok(),
        &json!(3)
    );
    s.get(&format!("{c}/count?read_level=bogus"))
        .await
        .error(400, "InvalidArgumentError");
    // "distances" is accepted by get and ignored.
    let g = s
        .post(
            &format!("{c}/get"),
            json!({"ids": ["b"], "include": ["distances"]}),
        )
        .await;
    assert_eq!(g.ok()["ids"], json!(["b"]));
    assert_eq!(g.body["include"], json!(["distances"]));
}

#[tokio::test]
async fn get_order_paging_and_ids() {
    let s = Server::start().await;
    let c = s.collection("order", json!({})).await;
    for (i, id) in ["e", "a", "d", "b", "c"].iter().enumerate() {
        s.post(
            &format!("{c}/add"),
            json!({"ids": [id], "embeddings": [[i as f32]]}),
        )
        .await;
        if i == 2 {
            s.compact(&c).await; // some rows in a segment, the rest in the log
        }
    }
    let ids = |r: &Value| r["ids"].clone();
    let get = |body: Value| {
        let s = &s;
        let c = &c;
        async move { s.post(&format!("{c}/get"), body).await.ok().clone() }
    };
    assert_eq!(ids(&get(json!({})).await), json!(["e", "a", "d", "b", "c"]));
    assert_eq!(
        ids(&get(json!({"ids": ["d", "a", "missing"]})).await),
        json!(["a", "d"])
    );
    assert_eq!(
        ids(&get(json!({"limit": 2, "offset": 1})).await),
        json!(["a", "d"])
    );
    assert_eq!(ids(&get(json!({"offset": 4})).await), json!(["c"]));
    assert_eq!(ids(&get(json!({"limit": 0})).await), json!([]));
    assert_eq!(ids(&get(json!({"ids": []})).await), json!([]));
    assert_eq!(ids(&get(json!({"offset": 10})).await), json!([]));
    s.post(&format!("{c}/get"), json!({"ids": [""]}))
        .await
        .error(400, "InvalidArgumentError");
    s.post(&format!("{c}/get"), json!({"include": ["data"]}))
        .await
        .error(422, "ChromaError");
    s.post(&format!("{c}/get"), json!({"limit": -1}))
        .await
        .error(422, "ChromaError");
}

#[tokio::test]
async fn write_validation() {
    let s = Server::start().await;
    let c = s.collection("valid", json!({})).await;
    let add = format!("{c}/add");
    s.post(&add, json!({"ids": ["a"], "embeddings": [[1.0, 2.0, 3.0]]}))
        .await;
    let m = s
        .post(&add, json!({"ids": ["b"], "embeddings": [[1.0, 2.0]]}))
        .await
        .error(400, "InvalidArgumentError");
    assert_eq!(
        m,
        "Collection expecting embedding with dimension of 3, got 2"
    );
    let m = s
        .post(
            &add,
            json!({"ids": ["b", "c"], "embeddings": [[1.0, 2.0, 3.0]]}),
        )
        .await
        .error(400, "InvalidArgumentError");
    assert!(
        m.starts_with("Inconsistent number of IDs, embeddings, documents, URIs and metadatas"),
        "{m}"
    );
    let m = s
        .post(
            &add,
            json!({"ids": ["b", "c"], "embeddings": [[1.0, 2.0, 3.0], [1.0]]}),
        )
        .await
        .error(400, "InvalidArgumentError");
    assert_eq!(m, "Inconsistent dimensions in provided embeddings");
    let m = s
        .post(&add, json!({"ids": [""], "embeddings": [[1.0, 2.0, 3.0]]}))
        .await
        .error(400, "InvalidArgumentError");
    assert!(m.contains("Empty ID"), "{m}");
    s.post(
        &add,
        json!({"ids": ["x"], "embeddings": [[1e40, 0.0, 0.0]]}),
    )
    .await
    .error(400, "InvalidArgumentError");
    let m = s
        .post(
            &add,
            json!({"ids": ["x"], "embeddings": [b64(&[f32::NAN, 0.0, 0.0])]}),
        )
        .await
        .error(400, "InvalidArgumentError");
    assert!(m.contains("NaN or Infinity"), "{m}");
    s.post(&add, json!({"ids": ["x"], "embeddings": [[]]}))
        .await
        .error(400, "InvalidArgumentError");
    s.post(
        &add,
        json!({"ids": ["x", "x"], "embeddings": [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]}),
    )
    .await
    .error(400, "InvalidArgumentError");
    let m = s
        .post(
            &add,
            json!({"ids": ["x"], "embeddings": [[1.0, 2.0, 3.0]], "metadatas": [{"#bad": 1}]}),
        )
        .await
        .error(400, "InvalidArgumentError");
    assert!(m.contains("metadatas"), "{m}");
    // Shape errors: 422.
    s.post(&add, json!({"ids": ["x"], "embeddings": null}))
        .await
        .error(422, "ChromaError");
    s.post(&add, json!({"ids": ["x"]}))
        .await
        .error(422, "ChromaError");
    s.post(&add, json!({"ids": ["x"], "embeddings": ["not base64!"]}))
        .await
        .error(422, "ChromaError");
    s.post(&add, json!({"ids": ["x"], "embeddings": ["AAA="]}))
        .await
        .error(422, "ChromaError");
    for bad in [
        json!({"k": null}),
        json!({"k": {"a": 1}}),
        json!({"k": [1, "a"]}),
    ] {
        let m = s
            .post(
                &add,
                json!({"ids": ["x"], "embeddings": [[1.0, 2.0, 3.0]], "metadatas": [bad]}),
            )
            .await
            .error(422, "ChromaError");
        assert!(m.contains("metadatas[0].k"), "{m}");
    }
    s.post(
        &format!("{DB}/collections/not-a-uuid/add"),
        json!({"ids": ["x"], "embeddings": [[1.0]]}),
    )
    .await
    .error(400, "InvalidArgumentError");
    s.post(
        &format!("{DB}/collections/{}/add", uuid::Uuid::new_v4()),
        json!({"ids": ["x"], "embeddings": [[1.0]]}),
    )
    .await
    .error(404, "NotFoundError");
    // Nothing but the first record was written.
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(1));
    // Ids may be any non-empty string.
    let r = s
        .post(
            &add,
            json!({"ids": ["é/ü?#"], "embeddings": [[1.0, 2.0, 3.0]]}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        s.post(&format!("{c}/get"), json!({"ids": ["é/ü?#"]}))
            .await
            .ok()["ids"],
        json!(["é/ü?#"])
    );
}

#[tokio::test]
async fn add_upsert_update_semantics() {
    let s = Server::start().await;
    let c = s.collection("merge", json!({})).await;
    let get_all = |include: Value| {
        let (s, c) = (&s, &c);
        async move {
            s.post(&format!("{c}/get"), json!({"include": include}))
                .await
                .ok()
                .clone()
        }
    };
    s.post(&format!("{c}/add"), json!({"ids": ["a", "b"], "embeddings": [[1.0, 1.0], [2.0, 2.0]],
                                        "documents": ["da", "db"], "metadatas": [{"x": 1}, {"x": 2}]}))
        .await;
    // Add of an existing id is ignored.
    let r = s
        .post(
            &format!("{c}/add"),
            json!({"ids": ["a"], "embeddings": [[9.0, 9.0]], "documents": ["new"]}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        get_all(json!(["documents"])).await["documents"],
        json!(["da", "db"])
    );
    s.compact(&c).await;
    // Upsert: null elements keep the old value, metadata merges, embeddings are replaced.
    let r = s
        .post(
            &format!("{c}/upsert"),
            json!({"ids": ["a", "b", "n"],
            "embeddings": [b64(&[1.5, 1.5]), [2.5, 2.5], [3.0, 3.0]],
            "documents": [null, "db2", "dn"], "uris": null,
            "metadatas": [null, {"y": 1}, {"z": true}]}),
        )
        .await;
    assert_eq!(r.ok(), &json!({}));
    let all = get_all(json!(["documents", "metadatas", "embeddings"])).await;
    assert_eq!(all["ids"], json!(["a", "b", "n"]));
    assert_eq!(all["documents"], json!(["da", "db2", "dn"]));
    assert_eq!(
        all["metadatas"],
        json!([{"x": 1}, {"x": 2, "y": 1}, {"z": true}])
    );
    assert_eq!(
        all["embeddings"],
        json!([[1.5, 1.5], [2.5, 2.5], [3.0, 3.0]])
    );
    // Update: missing ids ignored, null metadata values remove keys, embeddings optional.
    let r = s
        .post(
            &format!("{c}/update"),
            json!({"ids": ["b", "ghost"], "embeddings": null,
            "documents": ["db3", "dg"], "metadatas": [{"x": null, "w": "v"}, {"q": 1}]}),
        )
        .await;
    assert_eq!(r.ok(), &json!({}));
    s.post(
        &format!("{c}/update"),
        json!({"ids": ["n"], "embeddings": [b64(&[7.0, 7.0])]}),
    )
    .await
    .ok();
    let all = get_all(json!(["documents", "metadatas", "embeddings"])).await;
    assert_eq!(all["ids"], json!(["a", "b", "n"]));
    assert_eq!(all["documents"], json!(["da", "db3", "dn"]));
    assert_eq!(
        all["metadatas"],
        json!([{"x": 1}, {"w": "v", "y": 1}, {"z": true}])
    );
    assert_eq!(
        all["embeddings"],
        json!([[1.5, 1.5], [2.5, 2.5], [7.0, 7.0]])
    );
    s.post(
        &format!("{c}/update"),
        json!({"ids": ["a"], "embeddings": [[1.0, 2.0, 3.0]]}),
    )
    .await
    .error(400, "InvalidArgumentError");
    s.post(
        &format!("{c}/upsert"),
        json!({"ids": ["a"], "documents": ["x"]}),
    )
    .await
    .error(422, "ChromaError");
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(3));
}

#[tokio::test]
async fn delete_records() {
    let s = Server::start().await;
    let c = s.collection("deletes", json!({})).await;
    let ids: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    let embs: Vec<Vec<f32>> = (0..6).map(|i| vec![i as f32]).collect();
    let metas: Vec<Value> = (0..6)
        .map(|i| json!({"i": i, "even": i % 2 == 0}))
        .collect();
    s.post(
        &format!("{c}/add"),
        json!({"ids": ids, "embeddings": embs, "metadatas": metas}),
    )
    .await;
    let del = format!("{c}/delete");
    assert_eq!(
        s.post(&del, json!({"ids": ["r0", "missing"]})).await.ok(),
        &json!({"deleted": 2})
    );
    assert_eq!(
        s.post(&del, json!({"where": {"even": true}})).await.ok(),
        &json!({"deleted": 2})
    );
    assert_eq!(s.post(&del, json!({})).await.ok(), &json!({"deleted": 0}));
    assert_eq!(
        s.post(
            &del,
            json!({"ids": ["r1", "r3"], "where": {"i": {"$gt": 1}}})
        )
        .await
        .ok(),
        &json!({"deleted": 1})
    );
    let m = s
        .post(&del, json!({"ids": []}))
        .await
        .error(400, "InvalidArgumentError");
    assert_eq!(m, "Either ids or where must be specified");
    let m = s
        .post(&del, json!({"ids": ["r1"], "limit": 1}))
        .await
        .error(400, "InvalidArgumentError");
    assert_eq!(
        m,
        "limit can only be specified when a where clause is provided"
    );
    s.post(&del, json!({"where": {"i": {"$bad": 1}}}))
        .await
        .error(400, "InvalidArgumentError");
    let left = s.post(&format!("{c}/get"), json!({})).await;
    assert_eq!(left.ok()["ids"], json!(["r1", "r5"]));
    assert_eq!(
        s.post(&del, json!({"where": {"i": {"$gte": 0}}, "limit": 1}))
            .await
            .ok(),
        &json!({"deleted": 1})
    );
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(1));
}

#[tokio::test]
async fn query_shapes_and_defaults() {
    let s = Server::start().await;
    let c = s.collection("queries", json!({})).await;
    let q = format!("{c}/query");
    // Empty collection: no dimension error, empty results.
    let r = s.post(&q, json!({"query_embeddings": [[1.0, 2.0]]})).await;
    assert_eq!(r.ok()["ids"], json!([[]]));
    let r = s
        .post(
            &q,
            json!({"query_embeddings": [[1.0, 2.0]], "ids": ["nope"]}),
        )
        .await;
    assert_eq!(r.ok()["ids"], json!([[]]));
    let n = 12;
    let ids: Vec<String> = (0..n).map(|i| format!("p{i:02}")).collect();
    let embs: Vec<Vec<f32>> = (0..n).map(|i| vec![i as f32, 0.0]).collect();
    let docs: Vec<String> = (0..n).map(|i| format!("doc {i}")).collect();
    s.post(
        &format!("{c}/add"),
        json!({"ids": ids, "embeddings": embs, "documents": docs}),
    )
    .await;
    let r = s
        .post(
            &q,
            json!({"query_embeddings": [[0.0, 0.0]], "n_results": null, "where": null,
                              "where_document": null, "include": null, "ids": null}),
        )
        .await;
    let b = r.ok();
    assert_eq!(b["include"], json!(["documents", "metadatas", "distances"]));
    assert_eq!(b["ids"][0].as_array().unwrap().len(), 10);
    assert_eq!(b["ids"][0][0], "p00");
    assert_eq!(b["documents"][0][1], "doc 1");
    assert_eq!(b["metadatas"][0][0], Value::Null);
    assert_eq!(b["embeddings"], Value::Null);
    assert_eq!(b["uris"], Value::Null);
    assert_close(
        &b["distances"][0],
        &[0.0, 1.0, 4.0, 9.0, 16.0, 25.0, 36.0, 49.0, 64.0, 81.0],
    );

    let r = s
        .post(
            &q,
            json!({"query_embeddings": [[11.0, 0.0], [5.2, 0.0]], "n_results": 2,
                         "include": ["embeddings", "distances"]}),
        )
        .await;
    let mut b = r.ok().clone();
    let distances = b["distances"].take();
    assert_close(&distances[0], &[0.0, 1.0]);
    assert_close(&distances[1], &[0.04, 0.64]);
    assert_eq!(
        b,
        json!({"ids": [["p11", "p10"], ["p05", "p06"]],
               "embeddings": [[[11.0, 0.0], [10.0, 0.0]], [[5.0, 0.0], [6.0, 0.0]]],
               "documents": null, "uris": null, "metadatas": null, "distances": null,
               "include": ["embeddings", "distances"]})
    );
    let big = s
        .post(
            &q,
            json!({"query_embeddings": [[0.0, 0.0]], "n_results": 100, "include": []}),
        )
        .await;
    assert_eq!(big.ok()["ids"][0].as_array().unwrap().len(), 12);
    assert_eq!(big.body["distances"], Value::Null);
    assert_eq!(big.body["include"], json!([]));
    let zero = s
        .post(
            &q,
            json!({"query_embeddings": [[0.0, 0.0]], "n_results": 0}),
        )
        .await;
    assert_eq!(zero.ok()["ids"], json!([[]]));
    let none = s.post(&q, json!({"query_embeddings": []})).await;
    assert_eq!(none.ok()["ids"], json!([]));
    let restricted = s
        .post(
            &q,
            json!({"query_embeddings": [[0.0, 0.0]], "ids": ["p07", "p03"], "n_results": 5}),
        )
        .await;
    assert_eq!(restricted.ok()["ids"], json!([["p03", "p07"]]));
    // An id that is not there fails the query, as in Chroma — unless a filter is given.
    let missing = s
        .post(&q, json!({"query_embeddings": [[0.0, 0.0]], "ids": ["p07", "p03", "nope"], "n_results": 5}))
        .await
        .error(500, "InternalError");
    assert_eq!(
        missing,
        "Error executing plan: Internal error: Error finding id"
    );
    let filtered = s
        .post(
            &q,
            json!({"query_embeddings": [[0.0, 0.0]], "ids": ["p07", "p03", "nope"], "n_results": 5,
                   "where_document": {"$contains": "doc"}}),
        )
        .await;
    assert_eq!(filtered.ok()["ids"], json!([["p03", "p07"]]));
    let none = s
        .post(
            &q,
            json!({"query_embeddings": [[0.0, 0.0]], "ids": [], "n_results": 5}),
        )
        .await;
    assert_eq!(none.ok()["ids"], json!([[]]));

    let m = s
        .post(&q, json!({"query_embeddings": [[1.0]]}))
        .await
        .error(400, "InvalidArgumentError");
    assert_eq!(
        m,
        "Collection expecting embedding with dimension of 2, got 1"
    );
    s.post(&q, json!({"query_embeddings": [b64(&[1.0, 0.0])]}))
        .await
        .error(422, "ChromaError");
    s.post(&q, json!({"n_results": 1}))
        .await
        .error(422, "ChromaError");
    s.post(
        &q,
        json!({"query_embeddings": [[0.0, 0.0]], "include": ["data"]}),
    )
    .await
    .error(422, "ChromaError");

    // Same answers once compacted into a segment, with new writes in the log.
    s.compact(&c).await;
    s.post(
        &format!("{c}/add"),
        json!({"ids": ["late"], "embeddings": [[0.5, 0.0]]}),
    )
    .await;
    let r = s
        .post(
            &q,
            json!({"query_embeddings": [[0.0, 0.0]], "n_results": 3, "include": ["distances"]}),
        )
        .await;
    assert_eq!(r.ok()["ids"], json!([["p00", "late", "p01"]]));
    assert_close(&r.body["distances"][0], &[0.0, 0.25, 1.0]);
}

#[tokio::test]
async fn distances_in_every_space() {
    let s = Server::start().await;
    // api §6 (core/src/api/mod.rs): query [0, 0.5] against [3, 4] and [1, 0].
    let cases = [
        (
            "l2",
            json!({"configuration": {"hnsw": {"space": "l2"}}}),
            [("b", 1.25), ("a", 21.25)],
        ),
        (
            "cosine",
            json!({"metadata": {"hnsw:space": "cosine"}}),
            [("a", 0.2), ("b", 1.0)],
        ),
        (
            "ip",
            json!({"configuration": {"hnsw": {"space": "ip"}}}),
            [("a", -1.0), ("b", 1.0)],
        ),
    ];
    for (space, extra, want) in cases {
        let c = s.collection(&format!("space-{space}"), extra).await;
        s.post(
            &format!("{c}/add"),
            json!({"ids": ["a", "b"], "embeddings": [[3.0, 4.0], [1.0, 0.0]]}),
        )
        .await;
        for round in 0..2 {
            let r = s
                .post(
                    &format!("{c}/query"),
                    json!({"query_embeddings": [[0.0, 0.5]], "include": ["distances"]}),
                )
                .await;
            let ids: Vec<&str> = want.iter().map(|w| w.0).collect();
            assert_eq!(r.ok()["ids"], json!([ids]), "{space} round {round}");
            let d: Vec<f64> = want.iter().map(|w| w.1).collect();
            assert_close(&r.body["distances"][0], &d);
            s.compact(&c).await;
        }
    }
}

#[tokio::test]
async fn ties_break_by_insertion_order() {
    let s = Server::start().await;
    let c = s.collection("ties", json!({})).await;
    s.post(
        &format!("{c}/add"),
        json!({"ids": ["z", "y", "x"], "embeddings": [[1.0], [1.0], [1.0]]}),
    )
    .await;
    let r = s
        .post(
            &format!("{c}/query"),
            json!({"query_embeddings": [[0.0]], "n_results": 3}),
        )
        .await;
    assert_eq!(r.ok()["ids"], json!([["z", "y", "x"]]));
    assert_eq!(r.body["distances"], json!([[1.0, 1.0, 1.0]]));
}

#[tokio::test]
async fn peek_like_get_with_limit() {
    let s = Server::start().await;
    let c = s.collection("peek", json!({})).await;
    let ids: Vec<String> = (0..15).map(|i| format!("k{i}")).collect();
    let embs: Vec<Vec<f32>> = (0..15).map(|i| vec![i as f32]).collect();
    s.post(&format!("{c}/add"), json!({"ids": ids, "embeddings": embs}))
        .await;
    let r = s
        .post(
            &format!("{c}/get"),
            json!({"limit": 10, "include": ["metadatas", "documents", "embeddings"]}),
        )
        .await;
    assert_eq!(r.ok()["ids"].as_array().unwrap().len(), 10);
    assert_eq!(r.body["embeddings"][9], json!([9.0]));
    assert_eq!(r.body["documents"], json!(vec![Value::Null; 10]));
}

#[tokio::test]
async fn oversized_n_results_is_a_400_naming_the_field() {
    let s = Server::start().await;
    let c = s.collection("big", json!({})).await;
    let msg = s
        .post(
            &format!("{c}/query"),
            json!({"query_embeddings": [[1.0, 2.0]], "n_results": 4_000_000_000u64}),
        )
        .await
        .error(400, "InvalidArgumentError");
    assert!(msg.contains("n_results"), "{msg}");
}
