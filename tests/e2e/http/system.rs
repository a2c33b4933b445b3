//! Server-level routes, tenants, databases and transport-level errors.

use chroma_core::api::ApiConfig;
use serde_json::json;

use super::harness::{Resp, Server, DB};

#[tokio::test]
async fn heartbeat_version_preflight_health_identity() {
    let s = Server::start().await;
    for path in ["/heartbeat", "/api/v2"] {
        let r = s.get(path).await;
        assert!(r.ok()["nanosecond heartbeat"].as_u64().unwrap() > 1_600_000_000_000_000_000);
    }
    assert_eq!(s.get("/version").await.ok(), &json!("1.0.0"));
    assert_eq!(
        s.get("/pre-flight-checks").await.ok(),
        &json!({"max_batch_size": 5461, "supports_base64_encoding": true})
    );
    assert_eq!(
        s.get("/healthcheck").await.ok(),
        &json!({"is_executor_ready": true, "is_log_client_ready": true})
    );
    assert_eq!(
        s.get("/auth/identity").await.ok(),
        &json!({"user_id": "", "tenant": "default_tenant", "databases": ["default_database"]})
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_for_deployment_admins() {
    let s = Server::start_authenticated().await;
    let c = s.collection("measured", json!({})).await;
    s.post(
        &format!("{c}/add"),
        json!({"ids": ["a", "b"], "embeddings": [[1.0, 0.0], [0.0, 1.0]]}),
    )
    .await;
    s.post(
        &format!("{c}/query"),
        json!({"query_embeddings": [[1.0, 0.0]], "n_results": 1}),
    )
    .await
    .ok();
    s.compact(&c).await;
    let m = s.get("/metrics").await;
    assert_eq!(m.status, 200, "{}", m.text);
    assert!(
        m.content_type.starts_with("text/plain"),
        "{}",
        m.content_type
    );
    let id = Server::id_of(&c);
    for line in [
        "chroma_http_requests_total{method=\"POST\",route=\"/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/add\",status=\"201\"} 1".to_owned(),
        "# TYPE chroma_read_duration_seconds summary".to_owned(),
        "chroma_read_rows_total{op=\"query\"} 1".to_owned(),
        format!("chroma_unindexed_ops{{collection=\"{id}\"}} 0"),
        "chroma_compactions_total{outcome=\"ok\"} 1".to_owned(),
        "chroma_storage_written_bytes_total".to_owned(),
        "chroma_cache_misses_total{cache=\"memory\"}".to_owned(),
    ] {
        assert!(m.text.contains(&line), "{line} missing from:\n{}", m.text);
    }
    // Ids never become routes of their own.
    assert!(!m.text.contains(&format!("collections/{id}")));
    // A key that administers only part of the deployment may not read them.
    let partial = s.mint(&["default_tenant/*/*:read,write,admin"], None).await;
    s.as_key(Some(&partial))
        .get("/metrics")
        .await
        .error(403, "AuthError");
    s.as_key(None)
        .get("/metrics")
        .await
        .error(401, "AuthorizationError");
}

#[tokio::test]
async fn openapi_and_docs() {
    let s = Server::start().await;
    let spec = s.get("/openapi.json").await;
    let paths = spec.ok()["paths"].as_object().unwrap();
    assert!(paths.len() >= 25, "{}", paths.len());
    for p in [
        "/api/v2/heartbeat",
        "/api/v2/tenants/{tenant}/databases/{database}/collections",
        "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/query",
        "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/add",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    let add =
        &paths["/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/add"];
    assert!(add["post"]["responses"]["201"].is_object());
    assert!(spec.body["components"]["schemas"]["QueryRequestPayload"].is_object());
    let docs = s.get("/docs").await;
    assert_eq!(docs.status, 200);
    assert!(docs.content_type.starts_with("text/html"));
    assert!(docs.text.contains("/openapi.json"));
    assert!(!docs.text.contains("https://"), "docs must work offline");
}

#[tokio::test]
async fn transport_errors_are_chroma_json() {
    let s = Server::start_with(ApiConfig {
        allow_reset: false,
        max_body_bytes: 4096,
        ..ApiConfig::default()
    })
    .await;
    // v1 is gone.
    let r = s.get("/api/v1/heartbeat").await;
    assert_eq!(r.status, 410);
    assert_eq!(
        r.body,
        json!({"error": "Unimplemented", "message": "The v1 API is deprecated. Please use /v2 apis"})
    );
    assert_eq!(s.post("/api/v1/collections", json!({})).await.status, 410);
    // Unknown route and method.
    s.get("/nope").await.error(404, "NotFoundError");
    s.send(s.client.delete(s.url("/heartbeat")))
        .await
        .error(405, "ChromaError");
    // Wrong content type; a missing one counts as JSON.
    let wrong = s
        .client
        .post(s.url("/tenants"))
        .header("content-type", "text/plain")
        .body(r#"{"name":"abc"}"#);
    let m = s.send(wrong).await.error(415, "ChromaError");
    assert_eq!(m, "Expected request with `Content-Type: application/json`");
    let bare = s
        .client
        .post(s.url("/tenants"))
        .body(r#"{"name":"bare-tenant"}"#);
    assert_eq!(s.send(bare).await.status, 200);
    // Malformed JSON is 400, the wrong shape 422 naming the field.
    let bad = s
        .client
        .post(s.url("/tenants"))
        .header("content-type", "application/json")
        .body("{");
    s.send(bad).await.error(400, "InvalidArgumentError");
    let m = s
        .post("/tenants", json!({"nom": "x"}))
        .await
        .error(422, "ChromaError");
    assert!(m.contains("name"), "{m}");
    let m = s
        .post("/tenants", json!({"name": 5}))
        .await
        .error(422, "ChromaError");
    assert!(m.contains("name"), "{m}");
    // Bodies over the limit: 413 before they are read.
    let big = json!({"name": "x".repeat(8192)});
    s.post("/tenants", big).await.error(413, "ChromaError");
    // Reset is refused without --allow-reset.
    let m = s.post("/reset", json!(null)).await.error(403, "AuthError");
    assert!(m.contains("allow-reset"), "{m}");
}

#[tokio::test]
async fn errors_carry_a_trace_id() {
    let s = Server::start_with(ApiConfig {
        max_body_bytes: 4096,
        ..ApiConfig::default()
    })
    .await;
    let trace_id = |r: &Resp| {
        r.headers
            .get("chroma-trace-id")
            .map(|v| v.to_str().unwrap().to_string())
    };
    // Successes have none.
    assert_eq!(trace_id(&s.get("/heartbeat").await), None);
    // Every error has one: Chroma's 32 lowercase hex digits, the request id's bits, so
    // it finds the request in the log.
    let missing = s.get("/tenants/nobody").await;
    let id = trace_id(&missing).expect("a trace id on a 404");
    assert_eq!(id.len(), 32, "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );
    let request_id = missing.headers["x-request-id"].to_str().unwrap();
    let ulid = ulid::Ulid::from_string(request_id).unwrap();
    assert_eq!(id, format!("{:032x}", ulid.0));
    // A second request gets another.
    let again = trace_id(&s.get("/tenants/nobody").await).unwrap();
    assert_ne!(again, id);
    // Also errors answered before the request got an id (413), and rewritten ones (405, 422).
    let big = json!({"name": "x".repeat(8192)});
    for r in [
        s.post("/tenants", big).await,
        s.send(s.client.delete(s.url("/heartbeat"))).await,
        s.post("/tenants", json!({"nom": "x"})).await,
    ] {
        assert!(r.status >= 400, "{}", r.status);
        assert_eq!(trace_id(&r).map(|t| t.len()), Some(32), "{}", r.status);
    }
}

#[tokio::test]
async fn reset_wipes_everything_when_allowed() {
    let s = Server::start().await;
    s.post("/tenants", json!({"name": "tenant-a"})).await.ok();
    let c = s.collection("wiped", json!({})).await;
    s.post(
        &format!("{c}/add"),
        json!({"ids": ["a"], "embeddings": [[1.0]]}),
    )
    .await;
    let r = s.send(s.client.post(s.url("/reset"))).await;
    assert_eq!(r.ok(), &json!(true));
    s.get("/tenants/tenant-a").await.error(404, "NotFoundError");
    assert_eq!(
        s.get(&format!("{DB}/collections_count")).await.ok(),
        &json!(0)
    );
    s.get(&format!("{c}/count"))
        .await
        .error(404, "NotFoundError");
    // The defaults exist again.
    assert_eq!(s.get(DB).await.ok()["name"], "default_database");
}

#[tokio::test]
async fn tenants() {
    let s = Server::start().await;
    assert_eq!(
        s.post("/tenants", json!({"name": "acme"})).await.ok(),
        &json!({})
    );
    assert_eq!(
        s.get("/tenants/acme").await.ok(),
        &json!({"name": "acme", "resource_name": null})
    );
    s.post("/tenants", json!({"name": "acme"}))
        .await
        .error(409, "ChromaError");
    let m = s
        .post("/tenants", json!({"name": "ab"}))
        .await
        .error(400, "InvalidArgumentError");
    assert!(m.contains("name"), "{m}");
    s.get("/tenants/nobody").await.error(404, "NotFoundError");
    assert_eq!(
        s.get("/tenants/default_tenant").await.ok()["name"],
        "default_tenant"
    );
    // Names arrive percent-encoded.
    s.post("/tenants", json!({"name": "with space"})).await.ok();
    assert_eq!(
        s.get("/tenants/with%20space").await.ok()["name"],
        "with space"
    );
    // The resource name (PATCH, Chroma's update_tenant): set once.
    let patch = |tenant: &str, body: serde_json::Value| {
        s.send(
            s.client
                .patch(s.url(&format!("/tenants/{tenant}")))
                .json(&body),
        )
    };
    assert_eq!(
        patch("acme", json!({"resource_name": "org/acme"}))
            .await
            .ok(),
        &json!({})
    );
    assert_eq!(
        s.get("/tenants/acme").await.ok(),
        &json!({"name": "acme", "resource_name": "org/acme"})
    );
    patch("acme", json!({"resource_name": "org/acme"}))
        .await
        .ok();
    patch("acme", json!({"resource_name": "org/other"}))
        .await
        .error(409, "ChromaError");
    patch("nobody", json!({"resource_name": "r"}))
        .await
        .error(404, "NotFoundError");
    let m = patch("acme", json!({"resource_name": ""}))
        .await
        .error(400, "InvalidArgumentError");
    assert!(m.contains("resource_name"), "{m}");
    let m = patch("acme", json!({})).await.error(422, "ChromaError");
    assert!(m.contains("resource_name"), "{m}");
}

#[tokio::test]
async fn databases() {
    let s = Server::start().await;
    s.post("/tenants", json!({"name": "acme"})).await.ok();
    for name in ["db-one", "db-two", "db-three"] {
        assert_eq!(
            s.post("/tenants/acme/databases", json!({"name": name}))
                .await
                .ok(),
            &json!({})
        );
    }
    s.post("/tenants/acme/databases", json!({"name": "db-one"}))
        .await
        .error(409, "ChromaError");
    let m = s
        .post("/tenants/acme/databases", json!({"name": "-bad-"}))
        .await
        .error(400, "InvalidArgumentError");
    assert!(m.contains("name"), "{m}");
    let all = s.get("/tenants/acme/databases").await;
    let names: Vec<&str> = all
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db-one", "db-two", "db-three"]);
    for d in all.body.as_array().unwrap() {
        assert_eq!(d["tenant"], "acme");
        assert!(d["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    }
    let page = s.get("/tenants/acme/databases?limit=1&offset=1").await;
    assert_eq!(page.ok().as_array().unwrap().len(), 1);
    assert_eq!(page.body[0]["name"], "db-two");
    let one = s.get("/tenants/acme/databases/db-two").await;
    assert_eq!(one.ok()["name"], "db-two");
    assert_eq!(one.body["tenant"], "acme");
    s.get("/tenants/acme/databases/missing-db")
        .await
        .error(404, "NotFoundError");
    s.get("/tenants/acme/databases?limit=x")
        .await
        .error(400, "InvalidArgumentError");

    // Deleting a database deletes its collections.
    let c = s
        .post(
            "/tenants/acme/databases/db-two/collections",
            json!({"name": "inner"}),
        )
        .await;
    let id = c.ok()["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.delete("/tenants/acme/databases/db-two").await.ok(),
        &json!({})
    );
    s.get("/tenants/acme/databases/db-two")
        .await
        .error(404, "NotFoundError");
    s.delete("/tenants/acme/databases/db-two")
        .await
        .error(404, "NotFoundError");
    s.get(&format!(
        "/tenants/acme/databases/db-two/collections/by-id/{id}"
    ))
    .await
    .error(404, "NotFoundError");
    let left = s.get("/tenants/acme/databases").await;
    assert_eq!(left.ok().as_array().unwrap().len(), 2);
    let default = s.get(DB).await;
    assert_eq!(default.ok()["name"], "default_database");
    assert_eq!(default.body["tenant"], "default_tenant");
}
