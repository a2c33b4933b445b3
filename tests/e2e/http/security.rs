//! Security properties over HTTP: row-level grants, JWKS from a URL, hostile request
//! bodies and filters, and what reaches the storage (encrypted data, hashed keys).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::harness::{Server, DB};

const TEAM_X: &str = "default_tenant/default_database/*:read,write";

/// A collection holding a (team x), b (team y), c (team x, with a document), d (no
/// metadata); returns its path.
async fn teams(s: &Server) -> String {
    let c = s.collection("teams", json!({})).await;
    let r = s
        .post(
            &format!("{c}/add"),
            json!({"ids": ["a", "b", "c", "d"],
                   "embeddings": [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.5, 0.5]],
                   "documents": ["alpha", "beta", "gamma", "delta"],
                   "metadatas": [{"team": "x"}, {"team": "y"}, {"team": "x", "n": 3}, null]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    c
}

/// Every record as the server's own (unrestricted) key sees it: id → (document, metadata).
async fn everything(s: &Server, c: &str) -> Vec<(String, Value, Value)> {
    let r = s.post(&format!("{c}/get"), json!({})).await;
    let body = r.ok();
    let ids = body["ids"].as_array().unwrap();
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            (
                id.as_str().unwrap().to_owned(),
                body["documents"][i].clone(),
                body["metadatas"][i].clone(),
            )
        })
        .collect()
}

fn ids(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn row_filters_limit_what_a_key_reads() {
    let s = Server::start_authenticated().await;
    let c = teams(&s).await;
    let key = s.mint(&[TEAM_X], Some(json!({"team": "x"}))).await;
    let k = s.as_key(Some(&key));

    let all = k.post(&format!("{c}/get"), json!({})).await;
    assert_eq!(ids(&all.ok()["ids"]), ["a", "c"]);
    // The request's own filter is ANDed, never replacing the row filter.
    let y = k
        .post(&format!("{c}/get"), json!({"where": {"team": "y"}}))
        .await;
    assert_eq!(ids(&y.ok()["ids"]), Vec::<&str>::new());
    let or = k
        .post(
            &format!("{c}/get"),
            json!({"where": {"$or": [{"team": "y"}, {"n": 3}]}}),
        )
        .await;
    assert_eq!(ids(&or.ok()["ids"]), ["c"]);
    let by_id = k
        .post(&format!("{c}/get"), json!({"ids": ["a", "b", "d"]}))
        .await;
    assert_eq!(ids(&by_id.ok()["ids"]), ["a"]);
    let doc = k
        .post(
            &format!("{c}/get"),
            json!({"where_document": {"$contains": "eta"}}),
        )
        .await;
    assert_eq!(ids(&doc.ok()["ids"]), Vec::<&str>::new(), "beta is team y");
    // Peek (get with a limit) and count.
    let peek = k
        .post(&format!("{c}/get"), json!({"limit": 1, "offset": 1}))
        .await;
    assert_eq!(ids(&peek.ok()["ids"]), ["c"]);
    assert_eq!(k.get(&format!("{c}/count")).await.ok(), &json!(2));
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(4));
    // Query: the nearest to b's embedding, among what the key may see.
    let q = k
        .post(
            &format!("{c}/query"),
            json!({"query_embeddings": [[0.9, 0.1]], "n_results": 10}),
        )
        .await;
    assert_eq!(ids(&q.ok()["ids"][0]), ["a", "c"]);
    // Rows outside the key's filter are not there for it: naming them fails the query as
    // an id that does not exist does (Chroma's "Error finding id"), and with a filter
    // they are simply not returned.
    k.post(
        &format!("{c}/query"),
        json!({"query_embeddings": [[0.9, 0.1]], "n_results": 10, "ids": ["b", "d"]}),
    )
    .await
    .error(500, "InternalError");
    let q = k
        .post(
            &format!("{c}/query"),
            json!({"query_embeddings": [[0.9, 0.1]], "n_results": 10, "ids": ["a", "b", "d"],
                   "where": {"team": {"$ne": "nobody"}}}),
        )
        .await;
    assert_eq!(ids(&q.ok()["ids"][0]), ["a"]);
}

#[tokio::test]
async fn row_scoped_keys_cannot_change_whole_collections() {
    let s = Server::start_authenticated().await;
    let c = teams(&s).await;
    let key = s.mint(&[TEAM_X], Some(json!({"team": "x"}))).await;
    let k = s.as_key(Some(&key));
    let by_name = format!("{}/teams", c.rsplit_once('/').unwrap().0);
    k.delete(&by_name).await.error(403, "AuthError");
    k.put(&c, json!({"new_name": "renamed"}))
        .await
        .error(403, "AuthError");
    k.put(&c, json!({"new_metadata": {"owner": "x"}}))
        .await
        .error(403, "AuthError");
    // Nothing changed; the same grants without a row filter may.
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(4));
    assert_eq!(s.get(&by_name).await.ok()["name"], "teams");
    let whole = s.mint(&[TEAM_X], None).await;
    s.as_key(Some(&whole)).delete(&by_name).await.ok();
}

#[tokio::test]
async fn a_row_limited_admin_cannot_widen_its_reach() {
    let s = Server::start_authenticated().await;
    let c = teams(&s).await;
    let admin_x = "default_tenant/*/*:read,write,admin";
    let key = s.mint(&[admin_x], Some(json!({"team": "x"}))).await;
    let k = s.as_key(Some(&key));

    // Asking for no row filter gets the minter's; asking for one gets both.
    let minted = k
        .post("/api/v2/admin/keys", json!({"grants": [admin_x]}))
        .await;
    assert_eq!(minted.ok()["row_filter"], json!({"team": "x"}));
    let wide = minted.body["key"].as_str().unwrap().to_owned();
    let all = s
        .as_key(Some(&wide))
        .post(&format!("{c}/get"), json!({}))
        .await;
    assert_eq!(ids(&all.ok()["ids"]), ["a", "c"]);
    let narrower = k
        .post(
            "/api/v2/admin/keys",
            json!({"grants": ["default_tenant/*/*:read"], "row_filter": {"n": 3}}),
        )
        .await;
    assert_eq!(
        narrower.ok()["row_filter"],
        json!({"$and": [{"team": "x"}, {"n": 3}]})
    );
    let narrow = narrower.body["key"].as_str().unwrap().to_owned();
    let only_c = s
        .as_key(Some(&narrow))
        .post(&format!("{c}/get"), json!({}))
        .await;
    assert_eq!(ids(&only_c.ok()["ids"]), ["c"]);

    // Nothing that reaches every row of a database, or of everything.
    k.delete(DB).await.error(403, "AuthError");
    assert_eq!(s.get(DB).await.ok()["name"], "default_database");
    let everywhere = s
        .mint(&["*/*/*:read,write,admin"], Some(json!({"team": "x"})))
        .await;
    s.as_key(Some(&everywhere))
        .post("/api/v2/reset", json!({}))
        .await
        .error(403, "AuthError");
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(4));

    // It sees and revokes only keys it could have minted.
    let unlimited = s.mint(&["default_tenant/db/*:read"], None).await;
    let unlimited_id = unlimited.split_once('.').unwrap().0;
    let listed = k.get("/api/v2/admin/keys").await;
    let listed: Vec<&str> = listed
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert!(!listed.contains(&unlimited_id), "{listed:?}");
    assert!(
        listed.contains(&wide.split_once('.').unwrap().0),
        "{listed:?}"
    );
    k.delete(&format!("/api/v2/admin/keys/{unlimited_id}"))
        .await
        .error(404, "NotFoundError");
    // ... which still works.
    s.as_key(Some(&unlimited))
        .get("/api/v2/auth/identity")
        .await
        .ok();
}

#[tokio::test]
async fn indexing_status_counts_only_the_rows_a_key_sees() {
    let s = Server::start_authenticated().await;
    let c = teams(&s).await;
    let key = s.mint(&[TEAM_X], Some(json!({"team": "x"}))).await;
    let k = s.as_key(Some(&key));
    let status = format!("{c}/indexing_status");
    let everyone = s.get(&status).await;
    assert_eq!(everyone.ok()["total_ops"], 4);
    let limited = k.get(&status).await;
    assert_eq!(limited.ok()["total_ops"], 2, "{}", limited.text);
    assert_eq!(
        limited.body["num_indexed_ops"].as_u64().unwrap()
            + limited.body["num_unindexed_ops"].as_u64().unwrap(),
        2
    );
    s.compact(&c).await;
    let limited = k.get(&status).await;
    assert_eq!(limited.ok()["num_indexed_ops"], 2, "{}", limited.text);
    assert_eq!(limited.body["op_indexing_progress"], 1.0);
}

#[tokio::test]
async fn internal_errors_name_the_request_not_the_cause() {
    let s = Server::start_authenticated().await;
    let c = teams(&s).await;
    let id = Server::id_of(&c).to_string();
    // A manifest naming a segment that is not there: corrupted state.
    chroma_core::faults::lose_a_segment(s.engine.catalog().as_ref(), Server::id_of(&c))
        .await
        .unwrap();
    let r = s.post(&format!("{c}/get"), json!({})).await;
    let message = r.error(500, "InternalError");
    let request_id = r.headers["x-request-id"].to_str().unwrap();
    assert!(message.contains(request_id), "{message}");
    for internal in [
        id.as_str(),
        "c/",
        "seg/",
        "lost",
        "parquet",
        "missing",
        "object",
    ] {
        assert!(!message.contains(internal), "{internal:?} in {message}");
    }
}

#[tokio::test]
async fn row_filters_limit_what_a_key_deletes() {
    let s = Server::start_authenticated().await;
    let c = teams(&s).await;
    let key = s.mint(&[TEAM_X], Some(json!({"team": "x"}))).await;
    let k = s.as_key(Some(&key));
    let delete = format!("{c}/delete");

    // By id: records outside the filter are not there for this key.
    let r = k.post(&delete, json!({"ids": ["b", "d"]})).await;
    assert_eq!(r.ok()["deleted"], 0);
    // `{}` still deletes nothing; a limit without a filter is still an error.
    assert_eq!(k.post(&delete, json!({})).await.ok()["deleted"], 0);
    k.post(&delete, json!({"ids": ["a"], "limit": 1}))
        .await
        .error(400, "InvalidArgumentError");
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(4));
    // A filter matching everything deletes only the key's rows.
    let r = k
        .post(&delete, json!({"where": {"team": {"$ne": "nobody"}}}))
        .await;
    assert_eq!(r.ok()["deleted"], 2);
    let left: Vec<String> = everything(&s, &c).await.into_iter().map(|r| r.0).collect();
    assert_eq!(left, ["b", "d"]);
}

#[tokio::test]
async fn writes_outside_a_row_filter_are_refused_whole() {
    let s = Server::start_authenticated().await;
    let c = teams(&s).await;
    let key = s.mint(&[TEAM_X], Some(json!({"team": "x"}))).await;
    let k = s.as_key(Some(&key));
    let before = everything(&s, &c).await;

    let refused = [
        // A new record outside the filter, alone or after one inside it.
        (
            "add",
            json!({"ids": ["e"], "embeddings": [[1.0, 1.0]], "metadatas": [{"team": "y"}]}),
        ),
        (
            "add",
            json!({"ids": ["e", "f"], "embeddings": [[1.0, 1.0], [1.0, 1.0]],
                   "metadatas": [{"team": "x"}, {"team": "y"}]}),
        ),
        ("add", json!({"ids": ["e"], "embeddings": [[1.0, 1.0]]})),
        // Moving a record out of the filter, or removing the key it is selected by.
        (
            "update",
            json!({"ids": ["a"], "metadatas": [{"team": "y"}]}),
        ),
        (
            "update",
            json!({"ids": ["a"], "metadatas": [{"team": null}]}),
        ),
        (
            "upsert",
            json!({"ids": ["c", "e"], "embeddings": [[1.0, 1.0], [1.0, 1.0]],
                   "metadatas": [{"n": 4}, {"team": "z"}]}),
        ),
        // Touching a record outside the filter, even to bring it in.
        (
            "update",
            json!({"ids": ["b"], "metadatas": [{"team": "x"}]}),
        ),
        ("update", json!({"ids": ["d"], "documents": ["mine now"]})),
        (
            "upsert",
            json!({"ids": ["b"], "embeddings": [[1.0, 1.0]], "metadatas": [{"team": "x"}]}),
        ),
        (
            "add",
            json!({"ids": ["b"], "embeddings": [[1.0, 1.0]], "metadatas": [{"team": "x"}]}),
        ),
    ];
    for (route, body) in refused {
        let r = k.post(&format!("{c}/{route}"), body.clone()).await;
        let m = r.error(403, "AuthError");
        assert!(m.contains("row filter"), "{route} {body}: {m}");
        assert_eq!(
            everything(&s, &c).await,
            before,
            "{route} {body} changed nothing"
        );
    }

    // Writes that stay inside go through.
    let r = k
        .post(
            &format!("{c}/add"),
            json!({"ids": ["e"], "embeddings": [[1.0, 1.0]], "metadatas": [{"team": "x"}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    k.post(
        &format!("{c}/update"),
        json!({"ids": ["a", "missing"], "documents": ["alpha 2", null],
               "metadatas": [{"n": 1}, {"team": "y"}]}),
    )
    .await
    .ok();
    k.post(
        &format!("{c}/upsert"),
        json!({"ids": ["c", "f"], "embeddings": [[0.0, 1.0], [2.0, 2.0]],
               "metadatas": [{"n": null}, {"team": "x"}]}),
    )
    .await
    .ok();
    let after = everything(&s, &c).await;
    let summary: Vec<(&str, &Value, &Value)> =
        after.iter().map(|(i, d, m)| (i.as_str(), d, m)).collect();
    assert_eq!(
        summary,
        [
            ("a", &json!("alpha 2"), &json!({"team": "x", "n": 1})),
            ("b", &json!("beta"), &json!({"team": "y"})),
            ("c", &json!("gamma"), &json!({"team": "x"})),
            ("d", &json!("delta"), &Value::Null),
            ("e", &Value::Null, &json!({"team": "x"})),
            ("f", &Value::Null, &json!({"team": "x"})),
        ]
    );
}

#[tokio::test]
async fn a_jwt_row_filter_claim_restricts_like_a_key() {
    use chroma_core::auth::jwt::JwtVerifier;
    let secret = b"0123456789abcdef0123456789abcdef";
    let s =
        Server::start_with_jwt(JwtVerifier::hs256(secret, "https://idp", "chroma").unwrap()).await;
    let c = teams(&s).await;
    let exp = chroma_core::clock::now_ms() / 1000 + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "carol", "iss": "https://idp", "aud": "chroma", "exp": exp,
                "chroma_grants": [TEAM_X], "chroma_row_filter": {"team": "y"}}),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap();
    let k = s.as_key(Some(&token));
    let r = k.post(&format!("{c}/get"), json!({})).await;
    assert_eq!(ids(&r.ok()["ids"]), ["b"]);
    assert_eq!(k.get(&format!("{c}/count")).await.ok(), &json!(1));
    k.post(
        &format!("{c}/update"),
        json!({"ids": ["a"], "documents": ["taken"]}),
    )
    .await
    .error(403, "AuthError");
}

/// A minimal HTTP/1.1 server on a loopback port answering every request with `body`
/// (JSON), counting requests.
async fn counting_server(body: String) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/.well-known/jwks.json"), hits)
}

/// An ES256 key pair: (PKCS#8 for signing, its public JWK).
fn es256_key(kid: &str) -> (Vec<u8>, Value) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                     "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                     "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
    (pkcs8.as_ref().to_vec(), jwk)
}

#[tokio::test]
async fn jwks_from_a_url_is_fetched_once_and_not_for_unknown_kids() {
    use chroma_core::auth::jwt::JwtVerifier;
    let (k1, jwk1) = es256_key("k1");
    let (k2, _) = es256_key("k2");
    let (url, hits) = counting_server(json!({"keys": [jwk1]}).to_string()).await;
    let verifier = JwtVerifier::from_jwks_url(&url, "https://idp", "chroma")
        .await
        .expect("JWKS fetched at start");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let s = Server::start_with_jwt(verifier).await;
    let exp = chroma_core::clock::now_ms() / 1000 + 600;
    let claims = json!({"sub": "dave", "iss": "https://idp", "aud": "chroma", "exp": exp,
                        "chroma_grants": ["default_tenant/*/*:read"]});
    let token = |pkcs8: &[u8], kid: &str, jku: Option<String>| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        header.jku = jku;
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_der(pkcs8),
        )
        .unwrap()
    };
    let good = token(&k1, "k1", None);
    let r = s.as_key(Some(&good)).get("/auth/identity").await;
    assert_eq!(r.ok()["user_id"], "jwt:dave");
    // Unknown kids, one naming a key URL (the server's own JWKS URL, even): refused, and
    // nothing fetched within the refresh interval.
    for _ in 0..10 {
        let unknown = token(&k2, "k2", Some(url.clone()));
        s.as_key(Some(&unknown))
            .get("/auth/identity")
            .await
            .error(401, "AuthorizationError");
        let unknown = token(&k2, &format!("k{}", ulid::Ulid::new()), None);
        s.as_key(Some(&unknown))
            .get("/auth/identity")
            .await
            .error(401, "AuthorizationError");
    }
    assert_eq!(
        s.as_key(Some(&good)).get("/auth/identity").await.status,
        200
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "no fetch after the first");
}

/// `{"$and": [{"$and": [ … ]}]}` nested `depth` times around `{"k": 1}`.
fn nested_where(depth: usize) -> String {
    let mut s = String::with_capacity(depth * 12);
    for _ in 0..depth {
        s.push_str(r#"{"$and":["#);
    }
    s.push_str(r#"{"k":1}"#);
    for _ in 0..depth {
        s.push_str("]}");
    }
    s
}

#[tokio::test]
async fn deeply_nested_json_is_a_400_and_the_server_lives_on() {
    let s = Server::start().await;
    let c = teams(&s).await;
    let deep = nested_where(10_000);
    for (route, body) in [
        ("get", format!(r#"{{"where": {deep}}}"#)),
        ("delete", format!(r#"{{"where": {deep}}}"#)),
        (
            "query",
            format!(r#"{{"query_embeddings": [[1.0, 0.0]], "where": {deep}}}"#),
        ),
        (
            "get",
            format!(
                r#"{{"where_document": {}}}"#,
                deep.replace("\"k\":1", "\"$contains\":\"a\"")
            ),
        ),
        (
            "add",
            format!(
                r#"{{"ids": ["z"], "embeddings": [[1.0, 0.0]], "metadatas": [{{"m": {}}}]}}"#,
                "[".repeat(10_000) + &"]".repeat(10_000)
            ),
        ),
    ] {
        let r = s
            .send(
                s.client
                    .post(s.url(&format!("{c}/{route}")))
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        let m = r.error(400, "InvalidArgumentError");
        assert!(m.contains("recursion limit"), "{route}: {m}");
    }
    // Deep, but within the parser's and the filter's limits: answered.
    let r = s
        .post(
            &format!("{c}/get"),
            serde_json::from_str(&format!(r#"{{"where": {}}}"#, nested_where(60))).unwrap(),
        )
        .await;
    assert_eq!(r.ok()["ids"], json!([]));
    assert_eq!(s.get("/heartbeat").await.status, 200);
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(4));
}

#[tokio::test]
async fn pathological_regexes_over_a_large_document_return() {
    let s = Server::start().await;
    let c = s.collection("regex", json!({})).await;
    let big = "a".repeat(100 * 1024);
    let r = s
        .post(
            &format!("{c}/add"),
            json!({"ids": ["big", "small"], "embeddings": [[1.0, 0.0], [0.0, 1.0]],
                   "documents": [big, "aab"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.compact(&c).await;
    // (pattern, ids it matches)
    let cases: [(&str, &[&str]); 5] = [
        ("(a+)+$", &["big"]),
        ("(a|aa)*b", &["small"]),
        ("(a*)*c", &[]),
        ("^(a|a?)+$", &["big"]),
        ("(.*a){20}", &["big"]),
    ];
    for (pattern, want) in cases {
        for body in [
            json!({"where_document": {"$regex": pattern}, "include": []}),
            json!({"where": {"#document": {"$regex": pattern}}, "include": []}),
        ] {
            let r = s
                .send(
                    s.client
                        .post(s.url(&format!("{c}/get")))
                        .timeout(Duration::from_secs(30))
                        .json(&body),
                )
                .await;
            if r.status == 200 {
                assert_eq!(ids(&r.body["ids"]), want, "{pattern}");
            } else {
                let m = r.error(400, "InvalidArgumentError");
                assert!(m.to_lowercase().contains("regex"), "{pattern}: {m}");
            }
        }
        let r = s
            .send(
                s.client
                    .post(s.url(&format!("{c}/query")))
                    .timeout(Duration::from_secs(30))
                    .json(&json!({"query_embeddings": [[1.0, 0.0]], "n_results": 2,
                                  "where_document": {"$regex": pattern}, "include": []})),
            )
            .await;
        assert!(
            r.status == 200 || r.status == 400,
            "{pattern}: {} {}",
            r.status,
            r.text
        );
    }
    // A regex too large to compile is refused naming the problem.
    let huge = "(a{1000}){1000}";
    let r = s
        .post(
            &format!("{c}/get"),
            json!({"where_document": {"$regex": huge}}),
        )
        .await;
    let m = r.error(400, "InvalidArgumentError");
    assert!(m.to_lowercase().contains("regex"), "{m}");
}

#[tokio::test]
async fn nan_infinity_and_wrong_dimensions_are_refused_everywhere() {
    use chroma_core::api::types::encode_base64_embedding;
    let s = Server::start().await;
    let c = s.collection("numbers", json!({})).await;
    s.post(
        &format!("{c}/add"),
        json!({"ids": ["a"], "embeddings": [[1.0, 2.0, 3.0]]}),
    )
    .await;
    let nan = json!(encode_base64_embedding(&[f32::NAN, 0.0, 0.0]));
    let inf = json!(encode_base64_embedding(&[f32::INFINITY, 0.0, 0.0]));
    const NAN_INF: &str = "NaN or Infinity";
    // JSON has no NaN or Infinity literal; numbers beyond f32 are refused as such.
    const RANGE: &str = "out of range";
    const DIM: &str = "dimension";
    let cases = [
        ("add", json!({"ids": ["b"], "embeddings": [nan]}), NAN_INF),
        ("add", json!({"ids": ["b"], "embeddings": [inf]}), NAN_INF),
        (
            "upsert",
            json!({"ids": ["a"], "embeddings": [nan]}),
            NAN_INF,
        ),
        (
            "update",
            json!({"ids": ["a"], "embeddings": [inf]}),
            NAN_INF,
        ),
        (
            "add",
            json!({"ids": ["b"], "embeddings": [[1e39, 0.0, 0.0]]}),
            RANGE,
        ),
        (
            "update",
            json!({"ids": ["a"], "embeddings": [[0.0, -1e39, 0.0]]}),
            RANGE,
        ),
        (
            "query",
            json!({"query_embeddings": [[1e39, 0.0, 0.0]]}),
            RANGE,
        ),
        (
            "query",
            json!({"query_embeddings": [[-1e39, 0.0, 0.0]]}),
            RANGE,
        ),
        (
            "add",
            json!({"ids": ["b"], "embeddings": [[1.0, 2.0]]}),
            DIM,
        ),
        (
            "upsert",
            json!({"ids": ["a"], "embeddings": [[1.0, 2.0, 3.0, 4.0]]}),
            DIM,
        ),
        ("update", json!({"ids": ["a"], "embeddings": [[1.0]]}), DIM),
        ("query", json!({"query_embeddings": [[1.0, 2.0]]}), DIM),
    ];
    for (route, body, why) in cases {
        let m = s
            .post(&format!("{c}/{route}"), body.clone())
            .await
            .error(400, "InvalidArgumentError");
        assert!(m.contains(why), "{route} {body}: {m}");
    }
    let r = s
        .post(&format!("{c}/get"), json!({"include": ["embeddings"]}))
        .await;
    assert_eq!(r.ok()["embeddings"], json!([[1.0, 2.0, 3.0]]));
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn storage_holds_neither_plaintext_records_nor_key_secrets() {
    let s = Server::start_authenticated().await;
    let marker = format!("marker-{}", ulid::Ulid::new());
    let c = s.collection("scan", json!({})).await;
    let docs: Vec<String> = (0..50).map(|i| format!("{marker} document {i}")).collect();
    let r = s
        .post(
            &format!("{c}/add"),
            json!({"ids": (0..50).map(|i| format!("id{i}")).collect::<Vec<_>>(),
                   "embeddings": (0..50).map(|i| vec![i as f32, 1.0]).collect::<Vec<_>>(),
                   "documents": docs,
                   "metadatas": (0..50).map(|_| json!({"tag": marker})).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Some records in segments, some still in the log.
    s.compact(&c).await;
    s.post(
        &format!("{c}/add"),
        json!({"ids": ["late"], "embeddings": [[9.0, 9.0]], "documents": [format!("{marker} late")]}),
    )
    .await;
    let created = s
        .post(
            "/admin/keys",
            json!({"grants": ["default_tenant/*/*:read"]}),
        )
        .await;
    let key = created.ok()["key"].as_str().unwrap().to_owned();
    let (_, secret) = key.split_once('.').expect("id.secret");
    // The key works, so it is stored somewhere.
    assert_eq!(
        s.as_key(Some(&key)).get(&format!("{c}/count")).await.ok(),
        &json!(51)
    );

    let needles: [(&str, &[u8]); 3] = [
        ("record text", marker.as_bytes()),
        ("key secret", secret.as_bytes()),
        ("whole key", key.as_bytes()),
    ];
    let key_id = created.ok()["id"].as_str().unwrap().to_owned();
    let stored = s.stored_bytes().await;
    assert!(stored.len() > 2, "{} places", stored.len());
    let mut id_seen = false;
    for (place, bytes) in &stored {
        for (what, needle) in needles {
            assert!(!contains(bytes, needle), "{what} in {place}");
        }
        id_seen |= contains(bytes, key_id.as_bytes());
    }
    // The scan does see what is stored in the clear: the key's id, its lookup key.
    assert!(
        id_seen,
        "key id {key_id} not found: the scan missed the catalog"
    );
    // The reads still find the marker: the scan would have seen plaintext.
    let r = s
        .post(
            &format!("{c}/get"),
            json!({"where_document": {"$contains": marker}}),
        )
        .await;
    assert_eq!(r.ok()["ids"].as_array().unwrap().len(), 51);
}
