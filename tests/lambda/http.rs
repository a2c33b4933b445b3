//! The `query` and `ingest` functions: API Gateway events through the shared router.

use chroma_functions::lambda::Function;
use serde_json::json;

use super::common::{call, count, create_collection, fixture, invoke, request, Stack, COLLECTIONS};

#[tokio::test]
async fn heartbeat_needs_no_key_and_preflight_advertises_lambda_batches() {
    let stack = Stack::new().await;
    let query = stack.router(Function::Query).await;
    let a = invoke(&query, fixture("apigw-heartbeat.json", &[])).await;
    assert_eq!(a.status, 200, "{:?}", a.raw);
    assert!(a.body["nanosecond heartbeat"].as_u64().unwrap() > 0);
    assert_eq!(a.raw["isBase64Encoded"], json!(false));

    let a = invoke(
        &query,
        request("GET", "/api/v2/pre-flight-checks", None, Some(&stack.key)),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["max_batch_size"], json!(300));
}

#[tokio::test]
async fn batches_above_the_advertised_size_are_refused() {
    let stack = Stack::new().await;
    let ingest = stack.router(Function::Ingest).await;
    let id = create_collection(&ingest, &stack.key, "batches").await;
    let batch = |n: usize| {
        json!({
            "ids": (0..n).map(|i| format!("r{i}")).collect::<Vec<_>>(),
            "embeddings": (0..n).map(|i| vec![i as f32, 1.0]).collect::<Vec<_>>(),
        })
    };
    for route in ["add", "upsert", "update"] {
        let a = call(&ingest, &stack.key, "POST", &id, route, Some(batch(301))).await;
        assert_eq!(a.status, 400, "{route}: {:?}", a.body);
        assert_eq!(a.body["error"], json!("InvalidArgumentError"));
        assert_eq!(
            a.body["message"],
            json!("Batch size 301 exceeds maximum batch size 300")
        );
    }
    assert_eq!(count(&ingest, &stack.key, &id).await, json!(0));
    let a = call(&ingest, &stack.key, "POST", &id, "add", Some(batch(300))).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(count(&ingest, &stack.key, &id).await, json!(300));
}

#[tokio::test]
async fn every_other_route_needs_a_valid_key() {
    let stack = Stack::new().await;
    let query = stack.router(Function::Query).await;
    // The fixture's placeholder is no key.
    let a = invoke(&query, fixture("apigw-list-collections.json", &[])).await;
    assert_eq!(a.status, 401, "{:?}", a.body);
    assert_eq!(a.body["error"], json!("AuthorizationError"));
    let a = invoke(&query, request("GET", COLLECTIONS, None, None)).await;
    assert_eq!(a.status, 401);
    let a = invoke(
        &query,
        fixture(
            "apigw-list-collections.json",
            &[("__API_KEY__", &stack.key)],
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body, json!([]));
}

/// A stack with the fixture's collection `articles`, created through the ingest function
/// with three records, and the fixture's query of it.
struct Articles {
    stack: Stack,
    ingest: axum::Router,
    query: axum::Router,
    id: String,
    event: serde_json::Value,
}

async fn articles() -> Articles {
    let stack = Stack::new().await;
    let ingest = stack.router(Function::Ingest).await;
    let query = stack.router(Function::Query).await;
    let a = invoke(
        &ingest,
        fixture(
            "apigw-create-collection.json",
            &[("__API_KEY__", &stack.key)],
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let id = a.body["id"].as_str().unwrap().to_owned();
    assert_eq!(a.body["name"], json!("articles"));
    let add = json!({
        "ids": ["a", "b", "c"],
        "embeddings": [[0.1, 0.2, 0.3], [0.9, 0.1, 0.0], [0.1, 0.2, 0.31]],
        "documents": ["first", "second", "third"],
        "metadatas": [{"n": 1}, {"n": 2}, {"n": 3}],
    });
    let a = call(&ingest, &stack.key, "POST", &id, "add", Some(add)).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let event = fixture(
        "apigw-query.json",
        &[("__API_KEY__", &stack.key), ("__COLLECTION_ID__", &id)],
    );
    Articles {
        stack,
        ingest,
        query,
        id,
        event,
    }
}

#[tokio::test]
async fn written_through_ingest_and_read_through_query() {
    let t = articles().await;
    let (stack, query, id, event) = (&t.stack, &t.query, &t.id, t.event.clone());
    let a = invoke(query, event.clone()).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["ids"], json!([["a", "c"]]));
    assert_eq!(a.body["documents"], json!([["first", "third"]]));

    // API Gateway base64-encodes bodies it considers binary; the answer is the same.
    let mut encoded = event;
    let body = encoded["body"].as_str().unwrap().to_owned();
    encoded["body"] = json!(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        body
    ));
    encoded["isBase64Encoded"] = json!(true);
    let b = invoke(query, encoded).await;
    assert_eq!(b.status, 200, "{:?}", b.body);
    assert_eq!(b.body["ids"], a.body["ids"]);

    let a = invoke(
        query,
        fixture(
            "apigw-list-collections.json",
            &[("__API_KEY__", &stack.key)],
        ),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body[0]["name"], json!("articles"));
    assert_eq!(count(query, &stack.key, id).await, json!(3));
}

/// The query function searches a settled collection while DynamoDB is read
/// (`engine::read_ahead`); writes made through the ingest function, which it never sees,
/// still show in its very next answer.
#[tokio::test]
async fn a_query_function_reading_ahead_answers_every_write_at_once() {
    let t = articles().await;
    let (stack, ingest, id, event) = (&t.stack, &t.ingest, &t.id, t.event.clone());
    let ids = |event: serde_json::Value| {
        let query = t.query.clone();
        async move {
            let a = invoke(&query, event).await;
            assert_eq!(a.status, 200, "{:?}", a.body);
            a.body["ids"].clone()
        }
    };
    // Three alike: the last searched ahead, on the manifest DynamoDB answered twice.
    for _ in 0..3 {
        assert_eq!(ids(event.clone()).await, json!([["a", "c"]]));
    }
    // An upsert of a nearer record, then its delete: each shows in the next answer.
    let writes = [
        (
            "upsert",
            json!({"ids": ["d"], "embeddings": [[0.1, 0.2, 0.3]]}),
            json!([["a", "d"]]),
        ),
        ("delete", json!({"ids": ["d"]}), json!([["a", "c"]])),
    ];
    for (route, body, answer) in writes {
        let a = call(ingest, &stack.key, "POST", id, route, Some(body)).await;
        assert_eq!(a.status, 200, "{route}: {:?}", a.body);
        assert_eq!(ids(event.clone()).await, answer, "after the {route}");
    }
    assert_eq!(ids(event).await, json!([["a", "c"]]));
}

#[tokio::test]
async fn answers_beyond_lambdas_payload_limit_are_a_clear_400() {
    let stack = Stack::new().await;
    let ingest = stack.router(Function::Ingest).await;
    let query = stack.router(Function::Query).await;
    let id = create_collection(&ingest, &stack.key, "big").await;
    // 8 MB of documents in batches that each fit a request.
    let doc = "x".repeat(32 * 1024);
    for batch in 0..4 {
        let ids: Vec<String> = (0..64).map(|i| format!("{batch}-{i}")).collect();
        let body = json!({
            "ids": ids,
            "embeddings": (0..64).map(|i| vec![i as f32, batch as f32]).collect::<Vec<_>>(),
            "documents": vec![doc.clone(); 64],
        });
        let a = call(&ingest, &stack.key, "POST", &id, "add", Some(body)).await;
        assert_eq!(a.status, 201, "{:?}", a.body);
    }
    let everything = json!({"include": ["documents"]});
    let a = call(&query, &stack.key, "POST", &id, "get", Some(everything)).await;
    assert_eq!(a.status, 400, "{:?}", a.raw["statusCode"]);
    assert_eq!(a.body["error"], json!("InvalidArgumentError"));
    let message = a.body["message"].as_str().unwrap();
    assert!(message.contains("limit"), "{message}");
    // Asking for less works.
    let some = json!({"include": ["documents"], "limit": 10});
    let a = call(&query, &stack.key, "POST", &id, "get", Some(some)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["ids"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn requests_beyond_lambdas_payload_limit_are_413() {
    let stack = Stack::new().await;
    let ingest = stack.router(Function::Ingest).await;
    let id = create_collection(&ingest, &stack.key, "huge").await;
    let body = json!({
        "ids": ["a"],
        "embeddings": [[1.0, 2.0]],
        "documents": ["y".repeat(7 << 20)],
    });
    let a = call(&ingest, &stack.key, "POST", &id, "add", Some(body)).await;
    assert_eq!(a.status, 413, "{:?}", a.body);
}

#[tokio::test]
async fn search_is_served_by_the_query_function() {
    let stack = Stack::new().await;
    let ingest = stack.router(Function::Ingest).await;
    let query = stack.router(Function::Query).await;
    let id = create_collection(&ingest, &stack.key, "searched").await;
    let add = json!({
        "ids": ["a", "b", "c", "d"],
        "embeddings": [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]],
        "documents": ["alpha", "beta", "gamma", "delta"],
        "metadatas": [{"g": 1}, {"g": 2}, {"g": 1}, {"g": 2}],
    });
    let a = call(&ingest, &stack.key, "POST", &id, "add", Some(add)).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let search = json!({"searches": [{
        "filter": {"$and": [{"g": 1}, {"#id": {"$ne": "a"}}]},
        "rank": {"$knn": {"query": [0.0, 0.0], "limit": 3}},
        "select": {"keys": ["#document", "#score"]},
    }, {
        "rank": {"$knn": {"query": [3.0, 0.0], "limit": 4}},
        "group_by": {"keys": ["g"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 1}}},
    }]});
    let a = call(&query, &stack.key, "POST", &id, "search", Some(search)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["ids"], json!([["c"], ["d", "c"]]));
    assert_eq!(a.body["documents"], json!([["gamma"], null]));
    assert_eq!(a.body["scores"], json!([[4.0], null]));
    assert_eq!(a.body["select"], json!([["#document", "#score"], []]));
}

#[tokio::test]
async fn forks_are_made_by_the_ingest_function_and_counted_by_the_query_function() {
    let stack = Stack::new().await;
    let ingest = stack.router(Function::Ingest).await;
    let query = stack.router(Function::Query).await;
    let id = create_collection(&ingest, &stack.key, "forked-source").await;
    let add = json!({"ids": ["a", "b"], "embeddings": [[0.0, 1.0], [1.0, 0.0]]});
    let a = call(&ingest, &stack.key, "POST", &id, "add", Some(add)).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let fork = json!({"new_name": "forked-copy"});
    let a = call(&ingest, &stack.key, "POST", &id, "fork", Some(fork)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["name"], json!("forked-copy"));
    let fork_id = a.body["id"].as_str().unwrap().to_owned();
    assert_eq!(count(&query, &stack.key, &fork_id).await, json!(2));
    for member in [&id, &fork_id] {
        let a = call(&query, &stack.key, "GET", member, "fork_count", None).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.body, json!({"count": 1}));
    }
}

#[tokio::test]
async fn invocations_leave_their_metrics_as_embedded_metric_format_records() {
    chroma_functions::lambda::metrics::init(Function::Ingest);
    let stack = Stack::new().await;
    let ingest = stack.router(Function::Ingest).await;
    let id = create_collection(&ingest, &stack.key, "measured").await;
    let add = json!({"ids": ["a"], "embeddings": [[0.5, 0.5]]});
    let a = call(&ingest, &stack.key, "POST", &id, "add", Some(add)).await;
    assert_eq!(a.status, 201, "{:?}", a.body);

    let mut out = Vec::new();
    chroma_functions::lambda::metrics::flush_to(&mut out);
    let records: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document a line"))
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for r in &records {
        assert_eq!(r["function"], "ingest", "{r}");
        let directive = &r["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Chroma");
        assert_eq!(directive["Dimensions"][0][0], "function");
        for m in directive["Metrics"].as_array().unwrap() {
            let name = m["Name"].as_str().unwrap().to_owned();
            assert!(!r[&name].is_null(), "{name} has no value in {r}");
            names.insert(name);
        }
    }
    for name in [
        "chroma_http_requests_total",
        "chroma_http_request_duration_seconds",
        "chroma_storage_written_bytes_total",
        "chroma_unindexed_ops",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    let added = records
        .iter()
        .find(|r| {
            r["route"].as_str().is_some_and(|p| p.ends_with("/add"))
                && !r["chroma_http_requests_total"].is_null()
        })
        .expect("the add's request count");
    assert_eq!(added["status"], "201");
    assert_eq!(added["chroma_http_requests_total"], 1);

    // Counters start again from zero after a flush.
    let mut again = Vec::new();
    chroma_functions::lambda::metrics::flush_to(&mut again);
    assert!(!String::from_utf8(again)
        .unwrap()
        .contains("chroma_http_requests_total\":1"));
}

/// A Lambda Function URL event (payload 2.0 with the `$default` route, a `lambda-url`
/// domain and no path parameters) for `method path`.
fn function_url_event(
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    key: &str,
) -> serde_json::Value {
    let mut event = request(method, path, body, Some(key));
    event["routeKey"] = json!("$default");
    event["requestContext"]["routeKey"] = json!("$default");
    event["requestContext"]["stage"] = json!("$default");
    event["requestContext"]["apiId"] = json!("abcdefghijklmnopqrstuvwxyz123456");
    event["requestContext"]["domainName"] =
        json!("abcdefghijklmnopqrstuvwxyz123456.lambda-url.us-east-1.on.aws");
    event["requestContext"]["domainPrefix"] = json!("abcdefghijklmnopqrstuvwxyz123456");
    event
}

#[tokio::test]
async fn the_function_url_option_serves_every_route_from_the_ingest_function() {
    let stack = Stack::new().await;
    let ingest = stack.router(Function::Ingest).await;
    let create = function_url_event(
        "POST",
        COLLECTIONS,
        Some(json!({"name": "through-a-url"})),
        &stack.key,
    );
    let a = invoke(&ingest, create).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let id = a.body["id"].as_str().unwrap().to_owned();
    let path = |route: &str| format!("{COLLECTIONS}/{id}/{route}");
    let add = json!({"ids": ["a", "b"], "embeddings": [[0.0, 1.0], [1.0, 0.0]]});
    let a = invoke(
        &ingest,
        function_url_event("POST", &path("add"), Some(add), &stack.key),
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let query = json!({"query_embeddings": [[1.0, 0.1]], "n_results": 1, "include": []});
    let a = invoke(
        &ingest,
        function_url_event("POST", &path("query"), Some(query), &stack.key),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["ids"], json!([["b"]]));
    let a = invoke(
        &ingest,
        function_url_event("GET", &path("count"), None, &stack.key),
    )
    .await;
    assert_eq!(a.body, json!(2));
    // The function still authenticates every request.
    let mut anonymous = function_url_event("GET", &path("count"), None, &stack.key);
    anonymous["headers"]
        .as_object_mut()
        .unwrap()
        .remove("x-chroma-token");
    assert_eq!(invoke(&ingest, anonymous).await.status, 401);
}
