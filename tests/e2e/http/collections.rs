//! Collections: create, configuration, legacy metadata, get, list, count, modify, delete,
//! indexing status and the 501 routes.

use serde_json::{json, Value};

use super::harness::{Server, DB};

/// `configuration_json.hnsw` with default settings (no `num_threads`/`batch_size`: those
/// are only in the schema).
fn hnsw(space: &str) -> Value {
    json!({
        "space": space, "ef_construction": 100, "ef_search": 100, "max_neighbors": 16,
        "resize_factor": 1.2, "sync_threshold": 1000
    })
}

#[tokio::test]
async fn create_shape_and_get() {
    let s = Server::start().await;
    let ef =
        json!({"type": "known", "name": "my_ef", "config": {"dim": 3, "nested": [1, {"a": null}]}});
    let c = s
        .create(
            "shape1",
            json!({"metadata": {"m": 1, "f": 2.5, "tags": ["a", "b"]},
                   "configuration": {"hnsw": {"space": "ip", "ef_search": 50}, "spann": null,
                                     "embedding_function": ef},
                   "schema": null, "get_or_create": false}),
        )
        .await;
    let id = c["id"].as_str().unwrap();
    assert!(id.parse::<uuid::Uuid>().is_ok());
    // The 1.x schema mirrors the configuration.
    let vector = &c["schema"]["keys"]["#embedding"]["float_list"]["vector_index"];
    assert_eq!(vector["enabled"], true);
    assert_eq!(vector["config"]["space"], "ip");
    assert_eq!(vector["config"]["embedding_function"], ef);
    assert_eq!(vector["config"]["hnsw"]["ef_search"], 50);
    assert_eq!(
        c["schema"]["defaults"]["float_list"]["vector_index"]["config"]["space"],
        "ip"
    );
    let mut c = c.clone();
    c["schema"] = Value::Null;
    let mut want_hnsw = hnsw("ip");
    want_hnsw["ef_search"] = json!(50);
    assert_eq!(
        c,
        json!({"id": id, "name": "shape1",
               "configuration_json": {"hnsw": want_hnsw, "spann": null, "embedding_function": ef},
               "schema": null, "metadata": {"m": 1, "f": 2.5, "tags": ["a", "b"]},
               "dimension": null, "tenant": "default_tenant", "database": "default_database",
               "log_position": 0, "version": 0})
    );
    for path in [
        format!("{DB}/collections/shape1"),
        format!("{DB}/collections/by-id/{id}"),
    ] {
        let mut got = s.get(&path).await.ok().clone();
        got["schema"] = Value::Null;
        assert_eq!(got, c);
    }

    // Dimension is fixed by the first add.
    s.post(
        &format!("{DB}/collections/{id}/add"),
        json!({"ids": ["a"], "embeddings": [[1, 2, 3]]}),
    )
    .await;
    assert_eq!(
        s.get(&format!("{DB}/collections/shape1")).await.ok()["dimension"],
        3
    );

    // Defaults and legacy hnsw:* metadata.
    let d = s
        .create("defaults", json!({"metadata": null, "configuration": null}))
        .await;
    assert_eq!(
        d["configuration_json"],
        json!({"hnsw": hnsw("l2"), "spann": null, "embedding_function": null})
    );
    assert_eq!(d["metadata"], Value::Null);
    // Without an embedding function the schema has none either.
    let vector = &d["schema"]["keys"]["#embedding"]["float_list"]["vector_index"]["config"];
    assert!(vector.get("embedding_function").is_none(), "{vector}");
    let legacy = s
        .create(
            "legacy",
            json!({"metadata": {"hnsw:space": "cosine", "hnsw:M": 8, "x": "y"}}),
        )
        .await;
    assert_eq!(legacy["configuration_json"]["hnsw"]["space"], "cosine");
    assert_eq!(legacy["configuration_json"]["hnsw"]["max_neighbors"], 8);
    assert_eq!(
        legacy["metadata"],
        json!({"hnsw:space": "cosine", "hnsw:M": 8, "x": "y"})
    );
    // configuration.hnsw wins over legacy metadata.
    let both = s
        .create(
            "both",
            json!({"metadata": {"hnsw:space": "cosine"},
                               "configuration": {"hnsw": {"space": "ip"}}}),
        )
        .await;
    assert_eq!(both["configuration_json"]["hnsw"]["space"], "ip");

    // A SPANN configuration becomes HNSW defaults with its space; its other fields are
    // accepted unchecked, the embedding function is kept.
    let ef = json!({"type": "known", "name": "my_ef", "config": {"k": 1}});
    let spann = s
        .create(
            "spann",
            json!({"configuration": {"hnsw": null, "embedding_function": ef,
                   "spann": {"space": "cosine", "ef_construction": 5000, "max_neighbors": 24,
                             "search_nprobe": 1000, "write_nprobe": 9999}}}),
        )
        .await;
    assert_eq!(
        spann["configuration_json"],
        json!({"hnsw": hnsw("cosine"), "spann": null, "embedding_function": ef})
    );
    let spann_l2 = s
        .create("spann-l2", json!({"configuration": {"spann": {}}}))
        .await;
    assert_eq!(spann_l2["configuration_json"]["hnsw"], hnsw("l2"));

    // Percent-encoded names in the path.
    s.create("a.b-c_d", json!({})).await;
    assert_eq!(
        s.get(&format!("{DB}/collections/a.b-c_d")).await.ok()["name"],
        "a.b-c_d"
    );
}

#[tokio::test]
async fn create_errors() {
    let s = Server::start().await;
    let path = format!("{DB}/collections");
    s.create("taken", json!({})).await;
    let m = s
        .post(&path, json!({"name": "taken"}))
        .await
        .error(409, "ChromaError");
    assert!(m.contains("taken"), "{m}");
    let m = s
        .post(&path, json!({"name": "ab"}))
        .await
        .error(400, "InvalidArgumentError");
    assert!(m.starts_with("Validation error: name:"), "{m}");
    let m = s
        .post(&path, json!({"name": "okay", "metadata": {}}))
        .await
        .error(400, "InvalidArgumentError");
    assert!(m.contains("Metadata cannot be empty"), "{m}");
    s.post(&path, json!({"name": "okay", "metadata": {"$k": 1}}))
        .await
        .error(400, "InvalidArgumentError");
    s.post(&path, json!({"name": "okay", "metadata": {"k": null}}))
        .await
        .error(422, "ChromaError");
    s.post(&path, json!({"name": "okay", "metadata": {"k": {"a": 1}}}))
        .await
        .error(422, "ChromaError");
    let m = s
        .post(
            &path,
            json!({"name": "okay", "configuration": {"hnsw": {"space": "foo"}}}),
        )
        .await
        .error(422, "ChromaError");
    assert!(m.contains("space"), "{m}");
    s.post(
        &path,
        json!({"name": "okay", "configuration": {"hnsw": {"bogus": 1}}}),
    )
    .await
    .error(422, "ChromaError");
    s.post(
        &path,
        json!({"name": "okay", "configuration": {"hnsw": {"ef_search": 0}}}),
    )
    .await
    .error(400, "InvalidArgumentError");
    let both = s
        .post(
            &path,
            json!({"name": "okay", "configuration": {"hnsw": {"space": "l2"}, "spann": {"space": "l2"}}}),
        )
        .await
        .error(400, "InvalidArgumentError");
    assert_eq!(both, "Multiple vector index configurations provided");
    let unknown = s
        .post(
            &path,
            json!({"name": "okay", "configuration": {"spann": {"bogus": 1}}}),
        )
        .await
        .error(422, "ChromaError");
    assert!(
        unknown.contains(
            "configuration.spann.bogus: unknown field `bogus`, expected one of `search_nprobe`"
        ),
        "{unknown}"
    );
    s.post(
        &path,
        json!({"name": "okay", "metadata": {"hnsw:space": "foo"}}),
    )
    .await
    .error(400, "InvalidArgumentError");
    s.post(&path, json!({"metadata": {"a": 1}}))
        .await
        .error(422, "ChromaError");
    let m = s
        .post(
            "/tenants/default_tenant/databases/no-such-db/collections",
            json!({"name": "okay"}),
        )
        .await
        .error(400, "InvalidArgumentError");
    assert!(m.contains("no-such-db"), "{m}");
    // Nothing was created by the failures.
    assert_eq!(
        s.get(&format!("{DB}/collections_count")).await.ok(),
        &json!(1)
    );
}

#[tokio::test]
async fn get_or_create_returns_existing_unchanged() {
    let s = Server::start().await;
    let first = s.create("goc", json!({"metadata": {"v": 1}})).await;
    let again = s
        .create(
            "goc",
            json!({"metadata": {"v": 2}, "configuration": {"hnsw": {"space": "ip"}},
                              "get_or_create": true}),
        )
        .await;
    assert_eq!(first, again);
    let fresh = s
        .create("goc2", json!({"metadata": {"v": 3}, "get_or_create": true}))
        .await;
    assert_eq!(fresh["metadata"], json!({"v": 3}));
}

#[tokio::test]
async fn list_count_and_lookup_errors() {
    let s = Server::start().await;
    for name in ["c-one", "c-two", "c-three"] {
        s.create(name, json!({})).await;
    }
    let all = s.get(&format!("{DB}/collections")).await;
    let names: Vec<&str> = all
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c-one", "c-two", "c-three"]);
    let page = s.get(&format!("{DB}/collections?limit=2&offset=1")).await;
    let names: Vec<&str> = page
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c-two", "c-three"]);
    assert_eq!(
        s.get(&format!("{DB}/collections?offset=5")).await.ok(),
        &json!([])
    );
    assert_eq!(
        s.get(&format!("{DB}/collections_count")).await.ok(),
        &json!(3)
    );
    s.get("/tenants/default_tenant/databases/nope-db/collections_count")
        .await
        .error(404, "NotFoundError");

    // Chroma's texts, byte for byte (clients match them): by name and by id without a
    // period, on the routes of a collection id with one.
    assert_eq!(
        s.get(&format!("{DB}/collections/missing"))
            .await
            .error(404, "NotFoundError"),
        "Collection [missing] does not exist"
    );
    assert_eq!(
        s.delete(&format!("{DB}/collections/missing"))
            .await
            .error(404, "NotFoundError"),
        "Collection [missing] does not exist"
    );
    s.get(&format!("{DB}/collections/by-id/not-a-uuid"))
        .await
        .error(400, "InvalidArgumentError");
    let random = uuid::Uuid::new_v4();
    assert_eq!(
        s.get(&format!("{DB}/collections/by-id/{random}"))
            .await
            .error(404, "NotFoundError"),
        format!("Collection [{random}] does not exist")
    );
    for (method, path) in [
        ("GET", format!("{DB}/collections/{random}/count")),
        ("POST", format!("{DB}/collections/{random}/get")),
        ("POST", format!("{DB}/collections/{random}/delete")),
        ("PUT", format!("{DB}/collections/{random}")),
    ] {
        let r = match method {
            "GET" => s.get(&path).await,
            "PUT" => s.put(&path, json!({"new_name": "x"})).await,
            _ => s.post(&path, json!({})).await,
        };
        assert_eq!(
            r.error(404, "NotFoundError"),
            format!("Collection [{random}] does not exist."),
            "{method} {path}"
        );
    }

    // An id does not reach a collection of another database.
    s.post(
        "/tenants/default_tenant/databases",
        json!({"name": "other-db"}),
    )
    .await
    .ok();
    let other = s
        .post(
            "/tenants/default_tenant/databases/other-db/collections",
            json!({"name": "hidden"}),
        )
        .await;
    let hidden = other.ok()["id"].as_str().unwrap().to_string();
    s.get(&format!("{DB}/collections/by-id/{hidden}"))
        .await
        .error(404, "NotFoundError");
    s.post(&format!("{DB}/collections/{hidden}/get"), json!({}))
        .await
        .error(404, "NotFoundError");
    assert_eq!(
        s.get(&format!(
            "/tenants/default_tenant/databases/other-db/collections/by-id/{hidden}"
        ))
        .await
        .ok()["name"],
        "hidden"
    );
}

#[tokio::test]
async fn modify() {
    let s = Server::start().await;
    let c = s
        .create(
            "orig",
            json!({"metadata": {"a": 1, "b": 2},
                               "configuration": {"embedding_function": {"type": "legacy"}}}),
        )
        .await;
    let id = c["id"].as_str().unwrap();
    let at = format!("{DB}/collections/{id}");
    s.create("other", json!({})).await;

    // Rename and replace metadata.
    let r = s
        .put(
            &at,
            json!({"new_name": "renamed", "new_metadata": {"c": "x"}, "new_configuration": null}),
        )
        .await;
    assert_eq!(r.ok(), &json!({}));
    let got = s.get(&format!("{DB}/collections/renamed")).await;
    assert_eq!(got.ok()["metadata"], json!({"c": "x"}));
    assert_eq!(got.body["id"], id);
    s.get(&format!("{DB}/collections/orig"))
        .await
        .error(404, "NotFoundError");

    // Nulls change nothing.
    s.put(&at, json!({"new_name": null, "new_metadata": null}))
        .await
        .ok();
    assert_eq!(
        s.get(&format!("{DB}/collections/renamed")).await.ok()["metadata"],
        json!({"c": "x"})
    );

    // Configuration: mutable HNSW settings and the embedding function.
    let ef = json!({"type": "known", "name": "other_ef", "config": {"k": [1, 2]}});
    s.put(
        &at,
        json!({"new_configuration": {"hnsw": {"ef_search": 77, "max_neighbors": null},
                                             "spann": null, "embedding_function": ef}}),
    )
    .await
    .ok();
    let got = s.get(&format!("{DB}/collections/by-id/{id}")).await;
    assert_eq!(got.ok()["configuration_json"]["hnsw"]["ef_search"], 77);
    assert_eq!(got.body["configuration_json"]["hnsw"]["max_neighbors"], 16);
    assert_eq!(got.body["configuration_json"]["embedding_function"], ef);
    // Without an embedding function the stored one stays.
    s.put(
        &at,
        json!({"new_configuration": {"hnsw": {"ef_search": 78}}}),
    )
    .await
    .ok();
    let got = s.get(&format!("{DB}/collections/by-id/{id}")).await;
    assert_eq!(got.ok()["configuration_json"]["embedding_function"], ef);

    // Errors.
    s.put(&at, json!({"new_name": "other"}))
        .await
        .error(409, "ChromaError");
    s.put(&at, json!({"new_name": "x"}))
        .await
        .error(400, "InvalidArgumentError");
    let m = s
        .put(&at, json!({"new_metadata": {}}))
        .await
        .error(400, "InvalidArgumentError");
    assert!(m.contains("Metadata cannot be empty"), "{m}");
    s.put(&at, json!({"new_configuration": {"hnsw": {"space": "ip"}}}))
        .await
        .error(422, "ChromaError");
    s.put(
        &at,
        json!({"new_configuration": {"hnsw": {"ef_construction": 5}}}),
    )
    .await
    .error(422, "ChromaError");
    s.put(&at, json!({"new_metadata": {"k": null}}))
        .await
        .error(422, "ChromaError");
    s.put(
        &format!("{DB}/collections/{}", uuid::Uuid::new_v4()),
        json!({"new_name": "zzz"}),
    )
    .await
    .error(404, "NotFoundError");
    s.put(
        &format!("{DB}/collections/renamed"),
        json!({"new_name": "zzz"}),
    )
    .await
    .error(400, "InvalidArgumentError");
    assert_eq!(
        s.get(&format!("{DB}/collections/renamed")).await.ok()["metadata"],
        json!({"c": "x"})
    );
}

#[tokio::test]
async fn delete_collection() {
    let s = Server::start().await;
    let c = s.collection("doomed", json!({})).await;
    s.post(
        &format!("{c}/add"),
        json!({"ids": ["a"], "embeddings": [[1.0, 2.0]]}),
    )
    .await;
    assert_eq!(
        s.delete(&format!("{DB}/collections/doomed")).await.ok(),
        &json!({})
    );
    s.get(&format!("{DB}/collections/doomed"))
        .await
        .error(404, "NotFoundError");
    s.post(&format!("{c}/get"), json!({}))
        .await
        .error(404, "NotFoundError");
    s.delete(&format!("{DB}/collections/doomed"))
        .await
        .error(404, "NotFoundError");
    // The name is free again, and the new collection starts empty.
    let again = s.collection("doomed", json!({})).await;
    assert_eq!(s.get(&format!("{again}/count")).await.ok(), &json!(0));
    assert_eq!(
        s.get(&format!("{DB}/collections/doomed")).await.ok()["dimension"],
        json!(null)
    );
}

#[tokio::test]
async fn indexing_status_tracks_the_log() {
    let s = Server::start().await;
    let c = s.collection("indexed", json!({})).await;
    let empty = s.get(&format!("{c}/indexing_status")).await;
    assert_eq!(
        empty.ok(),
        &json!({"num_indexed_ops": 0, "num_unindexed_ops": 0, "total_ops": 0, "op_indexing_progress": 1.0})
    );
    s.post(
        &format!("{c}/add"),
        json!({"ids": ["a", "b", "c"], "embeddings": [[1.0], [2.0], [3.0]]}),
    )
    .await;
    s.post(&format!("{c}/delete"), json!({"ids": ["a"]}))
        .await
        .ok();
    let st = s.get(&format!("{c}/indexing_status")).await;
    let b = st.ok();
    assert_eq!(b["total_ops"], 4);
    assert_eq!(
        b["num_indexed_ops"].as_u64().unwrap() + b["num_unindexed_ops"].as_u64().unwrap(),
        4
    );
    s.compact(&c).await;
    let st = s.get(&format!("{c}/indexing_status")).await;
    assert_eq!(
        st.ok(),
        &json!({"num_indexed_ops": 4, "num_unindexed_ops": 0, "total_ops": 4, "op_indexing_progress": 1.0})
    );
    s.get(&format!("{DB}/collections/not-a-uuid/indexing_status"))
        .await
        .error(400, "InvalidArgumentError");
}

#[tokio::test]
async fn unsupported_routes_answer_501() {
    let s = Server::start().await;
    let c = s.collection("cloudy", json!({})).await;
    s.post(&format!("{c}/functions/attach"), json!({}))
        .await
        .error(501, "ChromaError");
    s.get(&format!("{c}/functions/f1"))
        .await
        .error(501, "ChromaError");
    s.post(&format!("{c}/attached_functions/f1/detach"), json!({}))
        .await
        .error(501, "ChromaError");
    s.get("/collections/default_tenant:default_database:cloudy")
        .await
        .error(501, "ChromaError");
}
