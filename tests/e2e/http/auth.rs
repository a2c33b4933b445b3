//! Authentication and authorization over HTTP: credentials, grants, tenant isolation,
//! key administration.

use serde_json::{json, Value};

use super::harness::{Resp, Server, DB};

/// Every route that needs credentials, as (method, path, body); `{C}` is a collection id
/// path of the default database.
fn protected_routes(c: &str) -> Vec<(&'static str, String, Value)> {
    let t = "/tenants/default_tenant";
    vec![
        ("GET", "/pre-flight-checks".into(), Value::Null),
        ("GET", "/auth/identity".into(), Value::Null),
        ("POST", "/reset".into(), Value::Null),
        ("POST", "/tenants".into(), json!({"name": "t"})),
        ("GET", t.into(), Value::Null),
        ("GET", format!("{t}/databases"), Value::Null),
        ("POST", format!("{t}/databases"), json!({"name": "d"})),
        ("GET", DB.into(), Value::Null),
        ("DELETE", DB.into(), Value::Null),
        ("GET", format!("{DB}/collections"), Value::Null),
        ("POST", format!("{DB}/collections"), json!({"name": "x"})),
        ("GET", format!("{DB}/collections_count"), Value::Null),
        ("GET", format!("{DB}/collections/docs"), Value::Null),
        ("DELETE", format!("{DB}/collections/docs"), Value::Null),
        ("PUT", c.into(), json!({"new_name": "y"})),
        ("GET", format!("{c}/count"), Value::Null),
        ("GET", format!("{c}/indexing_status"), Value::Null),
        (
            "POST",
            format!("{c}/add"),
            json!({"ids": ["a"], "embeddings": [[1.0, 2.0]]}),
        ),
        (
            "POST",
            format!("{c}/upsert"),
            json!({"ids": ["a"], "embeddings": [[1.0, 2.0]]}),
        ),
        (
            "POST",
            format!("{c}/update"),
            json!({"ids": ["a"], "embeddings": [[1.0, 2.0]]}),
        ),
        ("POST", format!("{c}/delete"), json!({"ids": ["a"]})),
        ("POST", format!("{c}/get"), json!({})),
        (
            "POST",
            format!("{c}/query"),
            json!({"query_embeddings": [[1.0, 2.0]]}),
        ),
        ("GET", "/admin/keys".into(), Value::Null),
        (
            "POST",
            "/admin/keys".into(),
            json!({"grants": ["*/*/*:read"]}),
        ),
        (
            "DELETE",
            "/admin/keys/ck0000000000000000".into(),
            Value::Null,
        ),
        ("GET", "/openapi.json".into(), Value::Null),
    ]
}

async fn call(s: &Server, key: Option<&str>, method: &str, path: &str, body: &Value) -> Resp {
    let k = s.as_key(key);
    match method {
        "GET" => k.get(path).await,
        "DELETE" => k.delete(path).await,
        "PUT" => k.put(path, body.clone()).await,
        _ => k.post(path, body.clone()).await,
    }
}

async fn docs_collection(s: &Server) -> String {
    let c = s.collection("docs", json!({})).await;
    let added = s
        .post(
            &format!("{c}/add"),
            json!({"ids": ["a", "b"], "embeddings": [[1.0, 2.0], [2.0, 1.0]],
               "metadatas": [{"team": "x"}, {"team": "y"}]}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    c
}

#[tokio::test]
async fn every_protected_route_needs_credentials() {
    let s = Server::start_authenticated().await;
    let c = docs_collection(&s).await;
    for (method, path, body) in protected_routes(&c) {
        let r = call(&s, None, method, &path, &body).await;
        r.error(401, "AuthorizationError");
    }
    // Heartbeat and version answer anyone.
    assert_eq!(s.as_key(None).get("/heartbeat").await.status, 200);
    assert_eq!(s.as_key(None).get("/version").await.status, 200);
    // Nothing changed.
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(2));
}

#[tokio::test]
async fn bad_credentials_are_indistinguishable() {
    let s = Server::start_authenticated().await;
    let good = s.mint(&["*/*/*:read"], None).await;
    let (id, secret) = good.split_once('.').unwrap();
    let revoked = s.mint(&["*/*/*:read"], None).await;
    let revoked_id = revoked.split_once('.').unwrap().0;
    s.delete(&format!("/admin/keys/{revoked_id}")).await.ok();
    let other = s.mint(&["*/*/*:read"], None).await;
    let other_secret = other.split_once('.').unwrap().1;
    let expired = {
        let new =
            chroma_core::auth::api_keys::mint(None, vec!["*/*/*:read".into()], None, 1, Some(2));
        s.engine
            .catalog()
            .create_api_key(&new.record)
            .await
            .unwrap();
        new.key.to_string()
    };
    let unknown = chroma_core::auth::api_keys::mint(None, vec![], None, 1, None)
        .key
        .to_string();
    let wrong_secret = format!("{id}.{other_secret}");
    let truncated = format!("{id}.{}", &secret[..10]);
    let mut messages = Vec::new();
    for bad in [
        unknown.as_str(),
        revoked.as_str(),
        expired.as_str(),
        wrong_secret.as_str(),
        truncated.as_str(),
        "garbage",
        "",
    ] {
        let r = s.as_key(Some(bad)).get("/tenants/default_tenant").await;
        messages.push(r.error(401, "AuthorizationError"));
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");
    // Bearer works like X-Chroma-Token, and another scheme is no credential.
    let ok = Server::send_raw(
        s.client
            .get(s.url("/tenants/default_tenant"))
            .bearer_auth(&good),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let basic = Server::send_raw(
        s.client
            .get(s.url("/tenants/default_tenant"))
            .header("authorization", format!("Basic {good}")),
    )
    .await;
    basic.error(401, "AuthorizationError");
}

#[tokio::test]
async fn tenants_are_isolated() {
    let s = Server::start_authenticated().await;
    for t in ["acme", "beta"] {
        s.post("/tenants", json!({"name": t})).await.ok();
        s.post(&format!("/tenants/{t}/databases"), json!({"name": "prod"}))
            .await
            .ok();
    }
    let beta_db = "/tenants/beta/databases/prod";
    let beta = s
        .post(&format!("{beta_db}/collections"), json!({"name": "secret"}))
        .await
        .ok()
        .clone();
    let beta_id = beta["id"].as_str().unwrap();
    let added = s
        .post(
            &format!("{beta_db}/collections/{beta_id}/add"),
            json!({"ids": ["s1"], "embeddings": [[1.0, 0.0]], "documents": ["beta only"]}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    let acme = s.mint(&["acme/*/*:read,write"], None).await;
    let a = s.as_key(Some(&acme));

    // Tenant B's path: 403.
    a.get("/tenants/beta").await.error(403, "AuthError");
    a.get(&format!("{beta_db}/collections"))
        .await
        .error(403, "AuthError");
    a.post(&format!("{beta_db}/collections/{beta_id}/get"), json!({}))
        .await
        .error(403, "AuthError");

    // Tenant A's path with tenant B's collection UUID: 404 on every record route, as
    // for a missing collection, and B unchanged.
    let acme_db = "/tenants/acme/databases/prod";
    let c = format!("{acme_db}/collections/{beta_id}");
    let missing = format!("Collection [{beta_id}] does not exist.");
    for (method, path, body) in [
        ("GET", format!("{c}/count"), Value::Null),
        (
            "GET",
            format!("{acme_db}/collections/by-id/{beta_id}"),
            Value::Null,
        ),
        ("GET", format!("{c}/indexing_status"), Value::Null),
        ("PUT", c.clone(), json!({"new_name": "stolen"})),
        (
            "POST",
            format!("{c}/add"),
            json!({"ids": ["x"], "embeddings": [[1.0, 0.0]]}),
        ),
        (
            "POST",
            format!("{c}/upsert"),
            json!({"ids": ["s1"], "embeddings": [[0.0, 1.0]]}),
        ),
        (
            "POST",
            format!("{c}/update"),
            json!({"ids": ["s1"], "documents": ["pwned"]}),
        ),
        ("POST", format!("{c}/delete"), json!({"ids": ["s1"]})),
        ("POST", format!("{c}/get"), json!({})),
        (
            "POST",
            format!("{c}/query"),
            json!({"query_embeddings": [[1.0, 0.0]]}),
        ),
    ] {
        let r = call(&s, Some(&acme), method, &path, &body).await;
        // Chroma's by-id lookup has no period, its other routes one.
        let missing = if path.contains("/by-id/") {
            missing.trim_end_matches('.')
        } else {
            &missing
        };
        assert_eq!(r.error(404, "NotFoundError"), missing, "{method} {path}");
    }
    let got = s
        .post(
            &format!("{beta_db}/collections/{beta_id}/get"),
            json!({"include": ["documents", "embeddings"]}),
        )
        .await;
    assert_eq!(got.ok()["ids"], json!(["s1"]));
    assert_eq!(got.ok()["documents"], json!(["beta only"]));
    let after = s
        .get(&format!("{beta_db}/collections/by-id/{beta_id}"))
        .await;
    assert_eq!(after.ok()["name"], "secret");
}

#[tokio::test]
async fn grants_scope_databases_collections_and_actions() {
    let s = Server::start_authenticated().await;
    s.post(
        "/tenants/default_tenant/databases",
        json!({"name": "other"}),
    )
    .await
    .ok();
    let c = docs_collection(&s).await;
    s.collection("hidden", json!({})).await;
    let other_db = "/tenants/default_tenant/databases/other";

    // A database-scoped key on another database.
    let scoped = s
        .mint(&["default_tenant/default_database/*:read,write"], None)
        .await;
    let k = s.as_key(Some(&scoped));
    k.get(&format!("{other_db}/collections"))
        .await
        .error(403, "AuthError");
    k.post(&format!("{other_db}/collections"), json!({"name": "z"}))
        .await
        .error(403, "AuthError");
    assert_eq!(k.get(&format!("{c}/count")).await.ok(), &json!(2));

    // A read-only key on every write route.
    let reader = s
        .mint(&["default_tenant/default_database/*:read"], None)
        .await;
    let r = s.as_key(Some(&reader));
    for (method, path, body) in [
        ("POST", format!("{DB}/collections"), json!({"name": "new"})),
        ("PUT", c.clone(), json!({"new_name": "renamed"})),
        ("DELETE", format!("{DB}/collections/docs"), Value::Null),
        (
            "POST",
            format!("{c}/add"),
            json!({"ids": ["n"], "embeddings": [[1.0, 1.0]]}),
        ),
        (
            "POST",
            format!("{c}/upsert"),
            json!({"ids": ["a"], "embeddings": [[9.0, 9.0]]}),
        ),
        (
            "POST",
            format!("{c}/update"),
            json!({"ids": ["a"], "embeddings": [[9.0, 9.0]]}),
        ),
        ("POST", format!("{c}/delete"), json!({"ids": ["a"]})),
        ("POST", "/tenants".into(), json!({"name": "mine"})),
        (
            "POST",
            "/tenants/default_tenant/databases".into(),
            json!({"name": "mine"}),
        ),
        ("DELETE", DB.into(), Value::Null),
        ("POST", "/reset".into(), Value::Null),
        (
            "POST",
            "/admin/keys".into(),
            json!({"grants": ["*/*/*:read"]}),
        ),
    ] {
        call(&s, Some(&reader), method, &path, &body)
            .await
            .error(403, "AuthError");
    }
    assert_eq!(r.get(&format!("{c}/count")).await.ok(), &json!(2));
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(2));

    // A collection-scoped key lists and counts only what it may read; other collections
    // look missing.
    let one = s
        .mint(&["default_tenant/default_database/docs:read"], None)
        .await;
    let o = s.as_key(Some(&one));
    let listed = o.get(&format!("{DB}/collections")).await;
    let names: Vec<&str> = listed
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs"]);
    assert_eq!(
        o.get(&format!("{DB}/collections_count")).await.ok(),
        &json!(1)
    );
    o.get(&format!("{DB}/collections/hidden"))
        .await
        .error(403, "AuthError");
    let hidden = s.get(&format!("{DB}/collections/hidden")).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    o.post(&format!("{DB}/collections/{hidden}/get"), json!({}))
        .await
        .error(404, "NotFoundError");
}

#[tokio::test]
async fn keys_are_minted_only_within_admin_grants() {
    let s = Server::start_authenticated().await;
    let acme_admin = s.mint(&["acme/*/*:read,write,admin"], None).await;
    let a = s.as_key(Some(&acme_admin));
    // Within its grants: created, and the new key works.
    let created = a
        .post(
            "/admin/keys",
            json!({"grants": ["acme/prod/*:read"], "name": "ro"}),
        )
        .await;
    let key = created.ok()["key"].as_str().unwrap().to_owned();
    let id = created.ok()["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("{id}.")));
    s.post("/tenants", json!({"name": "acme"})).await.ok();
    s.post("/tenants/acme/databases", json!({"name": "prod"}))
        .await
        .ok();
    let k = s.as_key(Some(&key));
    assert_eq!(
        k.get("/tenants/acme/databases/prod/collections")
            .await
            .status,
        200
    );
    // Beyond them: 403.
    for grants in [json!(["*/*/*:read"]), json!(["beta/*/*:read"])] {
        a.post("/admin/keys", json!({ "grants": grants }))
            .await
            .error(403, "AuthError");
    }
    // Malformed grants: 400 naming the field.
    let msg = a
        .post("/admin/keys", json!({"grants": ["acme:read"]}))
        .await
        .error(400, "InvalidArgumentError");
    assert!(msg.contains("grant"), "{msg}");
    // Listing shows only keys within its admin grants, never secrets.
    let listed = a.get("/admin/keys").await;
    let ids: Vec<&str> = listed
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    let own_id = acme_admin.split_once('.').unwrap().0;
    assert_eq!(
        ids,
        [own_id, id.as_str()],
        "its own key and the one it made, not root's"
    );
    assert!(!listed.text.contains(key.split_once('.').unwrap().1));
    // Revoking it: the key stops working.
    a.delete(&format!("/admin/keys/{id}")).await.ok();
    k.get("/tenants/acme")
        .await
        .error(401, "AuthorizationError");
    // The root key is not its to revoke: 404, as if missing.
    let root_id = s
        .key
        .as_ref()
        .unwrap()
        .split_once('.')
        .unwrap()
        .0
        .to_owned();
    a.delete(&format!("/admin/keys/{root_id}"))
        .await
        .error(404, "NotFoundError");
}

#[tokio::test]
async fn identity_reports_the_callers_grants() {
    let s = Server::start_authenticated().await;
    let key = s.mint(&["acme/prod/*:read", "acme/dev/*:read"], None).await;
    let r = s.as_key(Some(&key)).get("/auth/identity").await;
    let id = key.split_once('.').unwrap().0;
    assert_eq!(
        r.ok(),
        &json!({"user_id": format!("key:{id}"), "tenant": "acme", "databases": ["dev", "prod"]})
    );
}

#[tokio::test]
async fn rate_limits_apply_per_key() {
    use std::num::NonZeroU32;
    let limits = chroma_core::api::rate_limit::RateLimits::new(
        NonZeroU32::new(1).unwrap(),
        NonZeroU32::new(3).unwrap(),
    );
    let s = Server::start_limited(limits).await;
    let a = s.mint(&["*/*/*:read"], None).await;
    let b = s.mint(&["*/*/*:read"], None).await;
    for _ in 0..3 {
        assert_eq!(
            s.as_key(Some(&a))
                .get("/tenants/default_tenant")
                .await
                .status,
            200
        );
    }
    let limited = s.as_key(Some(&a)).get("/tenants/default_tenant").await;
    limited.error(429, "RateLimitError");
    let r = s
        .client
        .get(s.url("/tenants/default_tenant"))
        .header("x-chroma-token", &a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    // Another key has its own bucket.
    assert_eq!(
        s.as_key(Some(&b))
            .get("/tenants/default_tenant")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn jwts_carry_grants_and_bad_ones_get_the_same_401() {
    use chroma_core::auth::jwt::JwtVerifier;
    let secret = b"0123456789abcdef0123456789abcdef";
    let s =
        Server::start_with_jwt(JwtVerifier::hs256(secret, "https://idp", "chroma").unwrap()).await;
    let exp = chroma_core::clock::now_ms() / 1000 + 600;
    let token = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let reader = token(
        json!({"sub": "bob", "iss": "https://idp", "aud": "chroma", "exp": exp,
                              "chroma_grants": ["default_tenant/*/*:read"]}),
    );
    let r = s.as_key(Some(&reader)).get("/auth/identity").await;
    assert_eq!(r.ok()["user_id"], "jwt:bob");
    let c = s.collection("docs", json!({})).await;
    assert_eq!(
        s.as_key(Some(&reader))
            .get(&format!("{c}/count"))
            .await
            .ok(),
        &json!(0)
    );
    s.as_key(Some(&reader))
        .post(
            &format!("{c}/add"),
            json!({"ids": ["a"], "embeddings": [[1.0, 2.0]]}),
        )
        .await
        .error(403, "AuthError");
    let wrong_aud = token(
        json!({"sub": "bob", "iss": "https://idp", "aud": "x", "exp": exp,
                                 "chroma_grants": ["*/*/*:read"]}),
    );
    let b64 = |v: Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none"})),
        b64(
            json!({"sub": "eve", "iss": "https://idp", "aud": "chroma", "exp": exp,
                   "chroma_grants": ["*/*/*:read,write,admin"]})
        )
    );
    let unknown_key = s
        .as_key(Some("ck0123456789abcdef.AAAA"))
        .get("/tenants/default_tenant")
        .await;
    let want = unknown_key.error(401, "AuthorizationError");
    for bad in [wrong_aud, none] {
        let r = s.as_key(Some(&bad)).get("/tenants/default_tenant").await;
        assert_eq!(r.error(401, "AuthorizationError"), want);
    }
}
