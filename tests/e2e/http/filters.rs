//! Every `where` and `where_document` operator over HTTP, on get, query and delete, with
//! records both in segments and in the log.

use serde_json::{json, Value};

use super::harness::Server;

/// Six records: a mix of ints, floats, strings, bools, arrays, missing keys and documents.
async fn fixture(s: &Server) -> String {
    let c = s.collection("filters", json!({})).await;
    s.post(
        &format!("{c}/add"),
        json!({
            "ids": ["a", "b", "c"],
            "embeddings": [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]],
            "documents": ["The quick brown fox", "lazy dog", null],
            "metadatas": [
                {"n": 1, "f": 1.5, "s": "red", "b": true, "arr": [1, 2, 3], "tags": ["x", "y"]},
                {"n": 2.0, "f": 2.5, "s": "blue", "b": false, "arr": [4], "tags": ["y"]},
                {"n": "2", "s": "green"}
            ]
        }),
    )
    .await;
    s.compact(&c).await;
    s.post(
        &format!("{c}/add"),
        json!({
            "ids": ["d", "e", "f"],
            "embeddings": [[4.0, 0.0], [5.0, 0.0], [6.0, 0.0]],
            "documents": ["quick thinking", "Fox news 2024", "the end"],
            "metadatas": [{"n": 3, "f": -1.0, "s": "red", "b": true}, null, {"n": 2, "bools": [true]}]
        }),
    )
    .await;
    c
}

async fn ids(s: &Server, c: &str, filter: Value) -> Vec<String> {
    let r = s.post(&format!("{c}/get"), filter.clone()).await;
    assert_eq!(r.status, 200, "{filter}: {}", r.text);
    let mut got: Vec<String> = r.body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    // Query must agree with get (pre-filtered, exact).
    let mut q = filter.clone();
    q["query_embeddings"] = json!([[0.0, 0.0]]);
    q["n_results"] = json!(100);
    let qr = s.post(&format!("{c}/query"), q).await;
    assert_eq!(qr.status, 200, "{filter}: {}", qr.text);
    let mut qids: Vec<String> = qr.body["ids"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    got.sort();
    qids.sort();
    assert_eq!(got, qids, "get and query disagree on {filter}");
    got
}

#[tokio::test]
async fn metadata_operators() {
    let s = Server::start().await;
    let c = fixture(&s).await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"s": "red"}), vec!["a", "d"]),
        (json!({"s": {"$eq": "blue"}}), vec!["b"]),
        (json!({"n": 2}), vec!["b", "f"]),
        (json!({"n": {"$eq": 2.0}}), vec!["b", "f"]),
        (json!({"n": "2"}), vec!["c"]),
        (json!({"b": true}), vec!["a", "d"]),
        (json!({"b": {"$eq": false}}), vec!["b"]),
        (json!({"s": {"$ne": "red"}}), vec!["b", "c", "e", "f"]),
        (json!({"b": {"$ne": true}}), vec!["b", "c", "e", "f"]),
        (json!({"n": {"$gt": 1}}), vec!["b", "d", "f"]),
        (json!({"n": {"$gte": 2}}), vec!["b", "d", "f"]),
        (json!({"f": {"$lt": 2}}), vec!["a", "d"]),
        (json!({"f": {"$lte": 2.5}}), vec!["a", "b", "d"]),
        (json!({"f": {"$gt": -1.0}}), vec!["a", "b"]),
        (json!({"s": {"$in": ["red", "green"]}}), vec!["a", "c", "d"]),
        (json!({"n": {"$in": [1, 3]}}), vec!["a", "d"]),
        (
            json!({"s": {"$nin": ["red", "green"]}}),
            vec!["b", "e", "f"],
        ),
        (json!({"arr": {"$contains": 2}}), vec!["a"]),
        (json!({"tags": {"$contains": "y"}}), vec!["a", "b"]),
        (json!({"bools": {"$contains": true}}), vec!["f"]),
        (
            json!({"tags": {"$not_contains": "x"}}),
            vec!["b", "c", "d", "e", "f"],
        ),
        (
            json!({"$and": [{"s": "red"}, {"n": {"$gt": 1}}]}),
            vec!["d"],
        ),
        (json!({"$or": [{"s": "blue"}, {"n": 3}]}), vec!["b", "d"]),
        (
            json!({"$and": [{"$or": [{"s": "red"}, {"s": "blue"}]}, {"b": true}]}),
            vec!["a", "d"],
        ),
        (json!({"$or": [{"s": "red"}]}), vec!["a", "d"]),
        (json!({"#document": {"$contains": "quick"}}), vec!["a", "d"]),
        (
            json!({"#document": {"$not_contains": "quick"}}),
            vec!["b", "c", "e", "f"],
        ),
        (json!({"#document": {"$regex": "^[A-Z]"}}), vec!["a", "e"]),
        (
            json!({"#document": {"$not_regex": "o"}}),
            vec!["c", "d", "f"],
        ),
    ];
    for (w, want) in cases {
        assert_eq!(ids(&s, &c, json!({"where": w})).await, want, "where {w}");
    }
}

#[tokio::test]
async fn document_operators() {
    let s = Server::start().await;
    let c = fixture(&s).await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"$contains": "quick"}), vec!["a", "d"]),
        (json!({"$contains": "Quick"}), vec![]),
        (json!({"$not_contains": "quick"}), vec!["b", "c", "e", "f"]),
        (json!({"$regex": "(?i)fox"}), vec!["a", "e"]),
        (json!({"$regex": "\\d{4}"}), vec!["e"]),
        (json!({"$not_regex": "(?i)fox"}), vec!["b", "c", "d", "f"]),
        (
            json!({"$and": [{"$contains": "o"}, {"$contains": "d"}]}),
            vec!["b"],
        ),
        (
            json!({"$or": [{"$contains": "lazy"}, {"$contains": "end"}]}),
            vec!["b", "f"],
        ),
    ];
    for (wd, want) in cases {
        assert_eq!(
            ids(&s, &c, json!({"where_document": wd})).await,
            want,
            "where_document {wd}"
        );
    }
    // where AND where_document.
    let both = json!({"where": {"s": "red"}, "where_document": {"$contains": "thinking"}});
    assert_eq!(ids(&s, &c, both).await, ["d"]);
    // ids AND where.
    let both = json!({"ids": ["a", "b", "c"], "where": {"n": {"$gte": 2}}});
    assert_eq!(ids(&s, &c, both).await, ["b"]);
    // Filters on delete.
    let r = s
        .post(
            &format!("{c}/delete"),
            json!({"where_document": {"$contains": "quick"}}),
        )
        .await;
    assert_eq!(r.ok(), &json!({"deleted": 2}));
    assert_eq!(ids(&s, &c, json!({})).await, ["b", "c", "e", "f"]);
}

#[tokio::test]
async fn bad_filters_are_400() {
    let s = Server::start().await;
    let c = fixture(&s).await;
    let bad_where = [
        json!({}),
        json!({"a": 1, "b": 2}),
        json!({"n": {"$gt": "x"}}),
        json!({"b": {"$lt": true}}),
        json!({"n": {"$in": []}}),
        json!({"n": {"$in": [1, "x"]}}),
        json!({"n": {"$bogus": 1}}),
        json!({"$contains": "x"}),
        json!({"$and": "x"}),
        json!({"#document": {"$regex": "("}}),
    ];
    for w in bad_where {
        for route in ["get", "query", "delete"] {
            let mut body = json!({"where": w});
            if route == "query" {
                body["query_embeddings"] = json!([[0.0, 0.0]]);
            }
            let r = s.post(&format!("{c}/{route}"), body).await;
            r.error(400, "InvalidArgumentError");
        }
    }
    for wd in [
        json!({}),
        json!({"$eq": "x"}),
        json!({"$contains": 1}),
        json!({"$regex": "["}),
    ] {
        let r = s
            .post(&format!("{c}/get"), json!({"where_document": wd}))
            .await;
        r.error(400, "InvalidArgumentError");
    }
    // Nothing was deleted by the failed deletes.
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(6));
}
