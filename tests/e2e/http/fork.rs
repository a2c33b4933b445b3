//! `POST …/fork` and `GET …/fork_count` (Chroma Cloud's, served self-hosted): a fork is
//! the source's configuration, metadata and records under a new name, both sides then
//! diverge; the count is the lineage's; the errors; who may fork.

use serde_json::{json, Value};

use super::harness::{Server, DB};

async fn all(s: &Server, c: &str) -> Value {
    s.post(
        &format!("{c}/get"),
        json!({"include": ["embeddings", "documents", "metadatas"]}),
    )
    .await
    .ok()
    .clone()
}

async fn ids(s: &Server, c: &str) -> Vec<String> {
    let mut ids: Vec<String> = all(s, c).await["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_fork_copies_the_collection_and_then_diverges() {
    for s in [Server::start().await, Server::start_spann().await] {
        let created = s
            .create(
                "source",
                json!({"metadata": {"team": "search"},
                       "configuration": {"hnsw": {"space": "cosine"}}}),
            )
            .await;
        let c = format!("{DB}/collections/{}", created["id"].as_str().unwrap());
        s.post(
            &format!("{c}/add"),
            json!({"ids": ["a", "b", "c"], "embeddings": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
                   "documents": ["alpha", "beta", "gamma"],
                   "metadatas": [{"n": 1}, {"n": 2}, {"n": 3}]}),
        )
        .await;
        s.compact(&c).await;
        s.post(
            &format!("{c}/add"),
            json!({"ids": ["d"], "embeddings": [[2.0, 1.0]], "documents": ["delta"]}),
        )
        .await;
        assert_eq!(s.get(&format!("{c}/fork_count")).await.ok()["count"], 0);

        let created = s
            .get(&format!("{DB}/collections/source"))
            .await
            .ok()
            .clone();
        let fork = s
            .post(&format!("{c}/fork"), json!({"new_name": "copy"}))
            .await
            .ok()
            .clone();
        assert_eq!(fork["name"], "copy");
        assert_ne!(fork["id"], created["id"]);
        for field in [
            "configuration_json",
            "schema",
            "metadata",
            "tenant",
            "database",
        ] {
            assert_eq!(fork[field], created[field], "{field}");
        }
        assert_eq!(fork["dimension"], 2);
        let f = format!("{DB}/collections/{}", fork["id"].as_str().unwrap());
        assert_eq!(all(&s, &f).await, all(&s, &c).await, "the same records");
        assert_eq!(
            s.get(&format!("{DB}/collections/copy")).await.ok()["id"],
            fork["id"]
        );
        for path in [&c, &f] {
            assert_eq!(s.get(&format!("{path}/fork_count")).await.ok()["count"], 1);
        }

        // Later writes stay on their side.
        s.post(
            &format!("{f}/add"),
            json!({"ids": ["e"], "embeddings": [[3.0, 3.0]]}),
        )
        .await;
        s.post(&format!("{c}/delete"), json!({"ids": ["a"]}))
            .await
            .ok();
        assert_eq!(ids(&s, &c).await, ["b", "c", "d"]);
        assert_eq!(ids(&s, &f).await, ["a", "b", "c", "d", "e"]);
        let q = s
            .post(
                &format!("{f}/query"),
                json!({"query_embeddings": [[1.0, 0.05]], "n_results": 1}),
            )
            .await;
        assert_eq!(q.ok()["ids"], json!([["a"]]));

        // Deleting the source leaves the fork whole.
        s.delete(&format!("{DB}/collections/source")).await.ok();
        s.compact(&f).await;
        assert_eq!(ids(&s, &f).await, ["a", "b", "c", "d", "e"]);
        assert_eq!(s.get(&format!("{f}/fork_count")).await.ok()["count"], 1);
    }
}

#[tokio::test]
async fn fork_errors_are_chromas() {
    let s = Server::start().await;
    let c = s.collection("origin", json!({})).await;
    s.collection("taken", json!({})).await;
    let m = s
        .post(&format!("{c}/fork"), json!({"new_name": "taken"}))
        .await
        .error(409, "ChromaError");
    assert_eq!(m, "Collection [taken] already exists");
    let missing = uuid::Uuid::new_v4();
    s.post(
        &format!("{DB}/collections/{missing}/fork"),
        json!({"new_name": "other"}),
    )
    .await
    .error(404, "NotFoundError");
    s.get(&format!("{DB}/collections/{missing}/fork_count"))
        .await
        .error(404, "NotFoundError");
    s.post(
        &format!("{DB}/collections/not-a-uuid/fork"),
        json!({"new_name": "other"}),
    )
    .await
    .error(400, "InvalidArgumentError");
    s.post(&format!("{c}/fork"), json!({"new_name": "a"}))
        .await
        .error(400, "InvalidArgumentError");
    s.post(&format!("{c}/fork"), json!({}))
        .await
        .error(422, "ChromaError");
    // Nothing was created by the failures.
    let listed = s.get(&format!("{DB}/collections")).await;
    assert_eq!(listed.ok().as_array().unwrap().len(), 2);
    assert_eq!(s.get(&format!("{c}/fork_count")).await.ok()["count"], 0);
}

#[tokio::test]
async fn forking_needs_every_row_of_the_source_and_the_new_name() {
    let s = Server::start_authenticated().await;
    let c = s.collection("guarded", json!({})).await;
    s.post(
        &format!("{c}/add"),
        json!({"ids": ["a", "b"], "embeddings": [[1.0], [2.0]],
               "metadatas": [{"team": "x"}, {"team": "y"}]}),
    )
    .await;
    let body = json!({"new_name": "copied"});

    let reader = s
        .mint(&["default_tenant/default_database/guarded:read"], None)
        .await;
    let r = s.as_key(Some(&reader));
    r.post(&format!("{c}/fork"), body.clone())
        .await
        .error(403, "AuthError");
    assert_eq!(r.get(&format!("{c}/fork_count")).await.ok()["count"], 0);

    let some_rows = s
        .mint(
            &["default_tenant/default_database/*:read,write"],
            Some(json!({"team": "x"})),
        )
        .await;
    s.as_key(Some(&some_rows))
        .post(&format!("{c}/fork"), body.clone())
        .await
        .error(403, "AuthError");

    let writer = s
        .mint(
            &[
                "default_tenant/default_database/guarded:read",
                "default_tenant/default_database/copied:write",
            ],
            None,
        )
        .await;
    let fork = s
        .as_key(Some(&writer))
        .post(&format!("{c}/fork"), body)
        .await
        .ok()
        .clone();
    assert_eq!(fork["name"], "copied");
}
