//! The collection `schema` (api §3): the local default, request schemas reconciled with the
//! configuration and stored, its errors, modify, delete + recreate, and filters refused on
//! disabled indexes.

use chroma_core::model::IfExists;
use serde_json::{json, Value};

use super::harness::{Server, DB};

fn ncpu() -> usize {
    chroma_core::model::schema::default_num_threads()
}

pub(super) fn default_ef() -> Value {
    json!({"type": "known", "name": "default", "config": {}})
}

/// What the 1.5.9 client sends as `configuration` when the user gives none.
fn client_configuration() -> Value {
    json!({"hnsw": {"space": "l2"}, "spann": null, "embedding_function": default_ef()})
}

fn on(enabled: bool) -> Value {
    json!({"enabled": enabled, "config": {}})
}

fn hnsw_block() -> Value {
    json!({"ef_construction": 100, "max_neighbors": 16, "ef_search": 100,
           "num_threads": ncpu(), "batch_size": 100, "sync_threshold": 1000,
           "resize_factor": 1.2})
}

/// The local default schema of api §3 with this vector index config (without
/// `source_key`, which `#embedding` adds).
fn local_default(vector: Value) -> Value {
    let mut embedding = vector.clone();
    embedding["source_key"] = json!("#document");
    json!({
        "defaults": {
            "string": {"fts_index": on(false), "string_inverted_index": on(true)},
            "float_list": {"vector_index": {"enabled": false, "config": vector}},
            "sparse_vector": {"sparse_vector_index": {"enabled": false,
                "config": {"embedding_function": {"type": "unknown"}, "bm25": false}}},
            "int": {"int_inverted_index": on(true)},
            "float": {"float_inverted_index": on(true)},
            "bool": {"bool_inverted_index": on(true)},
        },
        "keys": {
            "#embedding": {"float_list": {"vector_index": {"enabled": true, "config": embedding}}},
            "#document": {"string": {"fts_index": on(true), "string_inverted_index": on(false)}},
        },
    })
}

/// What the 1.5.9 client sends for an untouched `Schema()`.
pub(super) fn client_schema() -> Value {
    json!({
        "defaults": {
            "string": {"fts_index": on(false), "string_inverted_index": on(true)},
            "float_list": {"vector_index": {"enabled": false,
                "config": {"space": "l2", "embedding_function": default_ef()}}},
            "sparse_vector": {"sparse_vector_index": {"enabled": false,
                "config": {"embedding_function": {"type": "unknown"}}}},
            "int": {"int_inverted_index": on(true)},
            "float": {"float_inverted_index": on(true)},
            "bool": {"bool_inverted_index": on(true)},
        },
        "keys": {
            "#embedding": {"float_list": {"vector_index": {"enabled": true,
                "config": {"space": "l2", "embedding_function": default_ef(),
                           "source_key": "#document"}}}},
            "#document": {"string": {"fts_index": on(true), "string_inverted_index": on(false)}},
        },
    })
}

fn configuration_json(space: &str, ef: Value) -> Value {
    json!({"hnsw": {"space": space, "ef_construction": 100, "ef_search": 100,
                    "max_neighbors": 16, "resize_factor": 1.2, "sync_threshold": 1000},
           "spann": null, "embedding_function": ef})
}

/// The schema of every read of the collection `name` (by name, by id, in the list).
pub(super) async fn every_read(s: &Server, name: &str) -> Vec<Value> {
    let by_name = s
        .get(&format!("{DB}/collections/{name}"))
        .await
        .ok()
        .clone();
    let id = by_name["id"].as_str().unwrap().to_owned();
    let by_id = s
        .get(&format!("{DB}/collections/by-id/{id}"))
        .await
        .ok()
        .clone();
    let listed = s
        .get(&format!("{DB}/collections"))
        .await
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap()
        .clone();
    vec![by_name, by_id, listed]
}

#[tokio::test]
async fn a_plain_create_answers_the_local_default() {
    let s = Server::start().await;
    let c = s
        .create(
            "plain",
            json!({"configuration": client_configuration(), "schema": null}),
        )
        .await;
    let vector = json!({"space": "l2", "embedding_function": default_ef(), "hnsw": hnsw_block()});
    assert_eq!(c["schema"], local_default(vector));
    assert_eq!(
        c["configuration_json"],
        configuration_json("l2", default_ef())
    );
    for got in every_read(&s, "plain").await {
        assert_eq!(got, c);
    }
    // The client's untouched Schema() is the same, and so is no configuration at all
    // (then without an embedding function).
    let d = s
        .create(
            "client-default",
            json!({"configuration": client_configuration(), "schema": client_schema()}),
        )
        .await;
    assert_eq!(d["schema"], c["schema"]);
    let bare = s.create("bare", json!({})).await;
    assert_eq!(
        bare["schema"],
        local_default(json!({"space": "l2", "hnsw": hnsw_block()}))
    );
    assert_eq!(
        bare["configuration_json"]["embedding_function"],
        json!(null)
    );
}

#[tokio::test]
async fn a_request_schema_is_merged_stored_and_echoed() {
    let s = Server::start().await;
    let mut schema = client_schema();
    let emb = &mut schema["keys"]["#embedding"]["float_list"]["vector_index"]["config"];
    emb["space"] = json!("cosine");
    emb["spann"] = json!({"search_nprobe": 20, "write_nprobe": 40, "ef_construction": 150,
                          "max_neighbors": 32});
    schema["keys"]["color"] = json!({"string": {"string_inverted_index": on(true)}});
    schema["keys"]["rank"] = json!({"int": {"int_inverted_index": on(true)}});
    let c = s
        .create(
            "merged",
            json!({"configuration": client_configuration(), "schema": schema}),
        )
        .await;
    let mut want = local_default(json!({"space": "l2", "embedding_function": default_ef(),
                                        "hnsw": hnsw_block()}));
    want["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["space"] = json!("cosine");
    want["keys"]["color"] = json!({"string": {"string_inverted_index": on(true)}});
    want["keys"]["rank"] = json!({"int": {"int_inverted_index": on(true)}});
    assert_eq!(c["schema"], want);
    assert_eq!(
        c["configuration_json"],
        configuration_json("cosine", default_ef())
    );
    // Stored: every read, and a get_or_create with another schema, answer the same.
    for got in every_read(&s, "merged").await {
        assert_eq!(got["schema"], want);
    }
    let again = s
        .create(
            "merged",
            json!({"configuration": client_configuration(), "schema": client_schema(),
                   "get_or_create": true}),
        )
        .await;
    assert_eq!(again, c);

    // An embedding function in the schema is the collection's.
    let my_ef = json!({"type": "known", "name": "my_ef", "config": {"k": 1}});
    let mut schema = client_schema();
    let emb = &mut schema["keys"]["#embedding"]["float_list"]["vector_index"]["config"];
    emb["space"] = json!("cosine");
    emb["embedding_function"] = my_ef.clone();
    let c = s
        .create(
            "schema-ef",
            json!({"configuration": client_configuration(), "schema": schema}),
        )
        .await;
    assert_eq!(c["configuration_json"], configuration_json("cosine", my_ef));

    // A non-default configuration with the default schema: built from the configuration.
    let c = s
        .create(
            "from-config",
            json!({"configuration": {"hnsw": {"space": "ip", "ef_search": 50}, "spann": null,
                                     "embedding_function": default_ef()},
                   "schema": client_schema()}),
        )
        .await;
    let mut hnsw = hnsw_block();
    hnsw["ef_search"] = json!(50);
    assert_eq!(
        c["schema"],
        local_default(json!({"space": "ip", "embedding_function": default_ef(), "hnsw": hnsw}))
    );
}

#[tokio::test]
async fn schema_errors_create_nothing() {
    let s = Server::start().await;
    let path = format!("{DB}/collections");
    let create = |schema: Value, configuration: Value| json!({"name": "bad", "configuration": configuration, "schema": schema});
    // validate_schema.
    let mut fts_on_key = client_schema();
    fts_on_key["keys"]["title"] = json!({"string": {"fts_index": on(true)}});
    assert_eq!(
        s.post(&path, create(fts_on_key, client_configuration()))
            .await
            .error(400, "InvalidArgumentError"),
        "Validation error: schema: Full text search / regular expression index can only be enabled on #document field: title"
    );
    let mut hash_key = client_schema();
    hash_key["keys"]["#tag"] = json!({});
    assert_eq!(
        s.post(&path, create(hash_key, client_configuration()))
            .await
            .error(400, "InvalidArgumentError"),
        "Validation error: schema: key cannot begin with '#'. Keys starting with '#' are reserved for system use: #tag"
    );
    // Schema and configuration both non-default.
    let mut cosine = client_schema();
    cosine["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["space"] = json!("cosine");
    let ef_config = json!({"hnsw": {"space": "cosine"}, "spann": null,
        "embedding_function": {"type": "known", "name": "my_ef", "config": {}}});
    assert_eq!(
        s.post(&path, create(cosine, ef_config))
            .await
            .error(400, "InvalidArgumentError"),
        "Failed to reconcile schema: Cannot set both collection config and schema simultaneously"
    );
    // Unusable merged HNSW settings.
    let mut small = client_schema();
    small["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["hnsw"] =
        json!({"batch_size": 1});
    let m = s
        .post(&path, create(small, client_configuration()))
        .await
        .error(400, "InvalidArgumentError");
    assert!(
        m.starts_with("Failed to reconcile schema: Invalid HNSW configuration: batch_size"),
        "{m}"
    );
    // Shape errors are 422, naming the path.
    let m = s
        .post(
            &path,
            create(json!({"defaults": {"string": 3}, "keys": {}}), json!(null)),
        )
        .await
        .error(422, "ChromaError");
    assert!(m.contains("schema.defaults.string"), "{m}");
    let m = s
        .post(
            &path,
            create(
                json!({"defaults": {}, "keys": {"s": {"sparse_vector": {"sparse_vector_index":
                    {"enabled": false, "config": {"bogus": 1}}}}}}),
                json!(null),
            ),
        )
        .await
        .error(422, "ChromaError");
    assert!(m.contains("bogus"), "{m}");
    assert_eq!(
        s.get(&format!("{DB}/collections_count")).await.ok(),
        &json!(0)
    );

    // The local sparse guard, also on get_or_create of an existing name (checked before
    // the name is looked up).
    let mut sparse = client_schema();
    sparse["keys"]["s"] = json!({"sparse_vector": {"sparse_vector_index": {"enabled": true,
        "config": {"embedding_function": {"type": "unknown"}}}}});
    let sparse_message =
        "Failed to reconcile schema: Invalid schema input: Sparse vector indexing is not enabled in local";
    assert_eq!(
        s.post(&path, create(sparse.clone(), client_configuration()))
            .await
            .error(400, "InvalidArgumentError"),
        sparse_message
    );
    s.create("exists", json!({})).await;
    assert_eq!(
        s.post(
            &path,
            json!({"name": "exists", "schema": sparse, "get_or_create": true})
        )
        .await
        .error(400, "InvalidArgumentError"),
        sparse_message
    );
    assert_eq!(
        s.get(&format!("{DB}/collections_count")).await.ok(),
        &json!(1)
    );
}

#[tokio::test]
async fn modify_edits_both_vector_indexes() {
    let s = Server::start().await;
    let c = s
        .create("modified", json!({"configuration": client_configuration()}))
        .await;
    let at = format!("{DB}/collections/{}", c["id"].as_str().unwrap());
    let ef = json!({"type": "known", "name": "other_ef", "config": {}});
    s.put(
        &at,
        json!({"new_configuration": {"hnsw": {"ef_search": 77}, "embedding_function": ef}}),
    )
    .await
    .ok();
    // A SPANN update of an HNSW collection changes nothing.
    s.put(
        &at,
        json!({"new_configuration": {"spann": {"search_nprobe": 10}}}),
    )
    .await
    .ok();
    let mut hnsw = hnsw_block();
    hnsw["ef_search"] = json!(77);
    let want = local_default(json!({"space": "l2", "embedding_function": ef, "hnsw": hnsw}));
    for got in every_read(&s, "modified").await {
        assert_eq!(got["schema"], want);
        assert_eq!(got["configuration_json"]["hnsw"]["ef_search"], 77);
        assert_eq!(got["configuration_json"]["embedding_function"], ef);
    }
}

#[tokio::test]
async fn delete_and_recreate_gets_a_fresh_schema() {
    let s = Server::start().await;
    let mut schema = client_schema();
    schema["keys"]["color"] = json!({"string": {"string_inverted_index": on(false)}});
    let body = json!({"configuration": client_configuration(), "schema": schema});
    let first = s.create("again", body.clone()).await;
    assert!(first["schema"]["keys"].get("color").is_some());
    s.delete(&format!("{DB}/collections/again")).await.ok();
    let plain = s
        .create(
            "again",
            json!({"configuration": client_configuration(), "get_or_create": true}),
        )
        .await;
    let keys: Vec<&String> = plain["schema"]["keys"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["#document", "#embedding"]);
    s.delete(&format!("{DB}/collections/again")).await.ok();
    let with = s.create("again", body).await;
    assert_eq!(with["schema"], first["schema"]);
}

#[tokio::test]
async fn filters_on_disabled_indexes_are_refused() {
    let s = Server::start().await;
    let mut schema = client_schema();
    schema["keys"]["tag"] = json!({"string": {"string_inverted_index": on(false)}});
    // How the client turns full-text search off.
    schema["keys"]["#document"] =
        json!({"string": {"fts_index": on(false), "string_inverted_index": on(false)}});
    let created = s
        .create(
            "disabled",
            json!({"configuration": client_configuration(), "schema": schema}),
        )
        .await;
    assert_eq!(
        created["schema"]["keys"]["#document"]["string"]["fts_index"]["enabled"],
        false
    );
    let c = format!("{DB}/collections/{}", created["id"].as_str().unwrap());
    s.post(
        &format!("{c}/add"),
        json!({"ids": ["a", "b"], "embeddings": [[1.0, 0.0], [0.0, 1.0]],
               "documents": ["alpha doc", "beta doc"],
               "metadatas": [{"tag": "x", "n": 1}, {"tag": "y", "n": 2}]}),
    )
    .await;
    let tag = "Cannot filter using metadata key 'tag' with type 'Str' because indexing is disabled";
    let fts = "Cannot filter using full-text search because FTS indexing is disabled";
    for (route, body, message) in [
        ("get", json!({"where": {"tag": "x"}}), tag),
        (
            "get",
            json!({"where": {"$and": [{"n": 1}, {"tag": {"$in": ["x"]}}]}}),
            tag,
        ),
        (
            "get",
            json!({"where_document": {"$contains": "alpha"}}),
            fts,
        ),
        (
            "get",
            json!({"where": {"#document": {"$contains": "alpha"}}}),
            fts,
        ),
        (
            "query",
            json!({"query_embeddings": [[1.0, 0.0]], "where": {"tag": "x"}}),
            tag,
        ),
        (
            "query",
            json!({"query_embeddings": [[1.0, 0.0]],
                         "where_document": {"$regex": "a"}}),
            fts,
        ),
        ("delete", json!({"where": {"tag": "x"}}), tag),
        (
            "delete",
            json!({"ids": ["a"], "where_document": {"$contains": "alpha"}}),
            fts,
        ),
    ] {
        assert_eq!(
            s.post(&format!("{c}/{route}"), body.clone())
                .await
                .error(400, "InvalidArgumentError"),
            message,
            "{route} {body}"
        );
    }
    // The dimension is checked first.
    let m = s
        .post(
            &format!("{c}/query"),
            json!({"query_embeddings": [[1.0, 0.0, 0.0]], "where": {"tag": "x"}}),
        )
        .await
        .error(400, "InvalidArgumentError");
    assert!(m.contains("dimension"), "{m}");
    // Another type on the same key, and other keys, still filter.
    let got = s
        .post(&format!("{c}/get"), json!({"where": {"tag": {"$ne": 5}}}))
        .await;
    assert_eq!(got.ok()["ids"], json!(["a", "b"]));
    let got = s
        .post(&format!("{c}/get"), json!({"where": {"n": 2}}))
        .await;
    assert_eq!(got.ok()["ids"], json!(["b"]));
    // By ids alone nothing is checked; documents are still stored and returned.
    let got = s
        .post(
            &format!("{c}/get"),
            json!({"ids": ["a"], "include": ["documents"]}),
        )
        .await;
    assert_eq!(got.ok()["documents"], json!(["alpha doc"]));
    assert_eq!(
        s.post(&format!("{c}/delete"), json!({"ids": ["a"]}))
            .await
            .ok()["deleted"],
        1
    );
    // Nothing was deleted by the refused deletes.
    assert_eq!(s.get(&format!("{c}/count")).await.ok(), &json!(1));

    // Disabled defaults refuse keys never written.
    let mut schema = client_schema();
    schema["defaults"]["string"]["string_inverted_index"]["enabled"] = json!(false);
    let c = s
        .collection(
            "disabled-defaults",
            json!({"configuration": client_configuration(), "schema": schema}),
        )
        .await;
    assert_eq!(
        s.post(&format!("{c}/get"), json!({"where": {"never": "x"}}))
            .await
            .error(400, "InvalidArgumentError"),
        "Cannot filter using metadata key 'never' with type 'Str' because indexing is disabled"
    );
}

#[tokio::test]
async fn collections_stored_without_a_schema_answer_the_generated_one() {
    let s = Server::start().await;
    // As stored before schemas were: a configuration without one.
    let stored = s
        .engine
        .create_collection(
            "default_tenant",
            "default_database",
            "older",
            None,
            chroma_core::model::CollectionConfiguration::default(),
            IfExists::Fail,
        )
        .await
        .unwrap();
    assert!(stored.configuration.schema.is_none());
    // The schema a create with that configuration stores (it has no embedding function).
    let want = local_default(json!({"space": "l2", "hnsw": hnsw_block()}));
    for got in every_read(&s, "older").await {
        assert_eq!(got["schema"], want);
        assert_eq!(
            got["configuration_json"],
            configuration_json("l2", json!(null))
        );
    }
    // Filters are never refused for them.
    let c = format!("{DB}/collections/{}", stored.id);
    s.post(
        &format!("{c}/get"),
        json!({"where": {"k": 1}, "where_document": {"$contains": "x"}}),
    )
    .await
    .ok();
    // A write discovers its keys into that schema, which is then stored.
    let added = s
        .post(
            &format!("{c}/add"),
            json!({"ids": ["a"], "embeddings": [[1.0]], "metadatas": [{"k": 1}]}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    let mut want = want;
    want["keys"]["k"] = json!({"int": {"int_inverted_index": on(true)}});
    for got in every_read(&s, "older").await {
        assert_eq!(got["schema"], want);
    }
}

#[tokio::test]
async fn writes_discover_metadata_keys() {
    let s = Server::start().await;
    let c = s
        .collection("discover", json!({"configuration": client_configuration()}))
        .await;
    // Chroma's probe: three types accumulate on one key; values keep their own type.
    let added = s
        .post(
            &format!("{c}/add"),
            json!({"ids": ["a"], "embeddings": [[1.0]], "metadatas": [{"ck": "v"}]}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    s.post(
        &format!("{c}/upsert"),
        json!({"ids": ["a"], "embeddings": [[1.0]], "metadatas": [{"ck": 100}]}),
    )
    .await
    .ok();
    let got = s.post(&format!("{c}/get"), json!({"ids": ["a"]})).await;
    assert_eq!(got.ok()["metadatas"], json!([{"ck": 100}]));
    s.post(
        &format!("{c}/update"),
        json!({"ids": ["a"], "metadatas": [{"ck": 200.5}]}),
    )
    .await
    .ok();
    let ck = json!({"string": {"fts_index": on(false), "string_inverted_index": on(true)},
                    "int": {"int_inverted_index": on(true)},
                    "float": {"float_inverted_index": on(true)}});
    for got in every_read(&s, "discover").await {
        assert_eq!(got["schema"]["keys"]["ck"], ck);
    }
    // Only records actually written count: an add of an existing id and an update of a
    // missing one discover nothing; neither do null values and chroma: keys. Deletes
    // remove no key.
    s.post(
        &format!("{c}/add"),
        json!({"ids": ["a"], "embeddings": [[1.0]], "metadatas": [{"not_added": 1}]}),
    )
    .await;
    s.post(
        &format!("{c}/update"),
        json!({"ids": ["ghost"], "metadatas": [{"not_updated": 1}]}),
    )
    .await
    .ok();
    s.post(
        &format!("{c}/upsert"),
        json!({"ids": ["b"], "embeddings": [[2.0]],
               "metadatas": [{"gone": null, "chroma:internal": 1, "flag": true}]}),
    )
    .await
    .ok();
    s.post(&format!("{c}/delete"), json!({"ids": ["a", "b"]}))
        .await
        .ok();
    let got = s.get(&format!("{DB}/collections/discover")).await;
    let keys: Vec<&String> = got.ok()["schema"]["keys"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["#document", "#embedding", "ck", "flag"]);
    assert_eq!(
        got.body["schema"]["keys"]["flag"],
        json!({"bool": {"bool_inverted_index": on(true)}})
    );

    // Explicit entries win over discovered copies of the defaults.
    let mut schema = client_schema();
    schema["defaults"]["string"]["string_inverted_index"]["enabled"] = json!(false);
    schema["keys"]["kept"] = json!({"string": {"string_inverted_index": on(true)}});
    let c = s
        .collection(
            "precedence",
            json!({"configuration": client_configuration(), "schema": schema}),
        )
        .await;
    s.post(
        &format!("{c}/add"),
        json!({"ids": ["a"], "embeddings": [[1.0]],
               "metadatas": [{"kept": "x", "seen": "y"}]}),
    )
    .await;
    let got = s.get(&format!("{DB}/collections/precedence")).await;
    let keys = &got.ok()["schema"]["keys"];
    assert_eq!(
        keys["kept"],
        json!({"string": {"string_inverted_index": on(true)}})
    );
    assert_eq!(
        keys["seen"],
        json!({"string": {"fts_index": on(false), "string_inverted_index": on(false)}})
    );
    // The discovered key is filtered as its entry says.
    s.post(&format!("{c}/get"), json!({"where": {"kept": "x"}}))
        .await
        .ok();
    s.post(&format!("{c}/get"), json!({"where": {"seen": "y"}}))
        .await
        .error(400, "InvalidArgumentError");
}

#[tokio::test]
async fn racing_writes_and_a_modify_lose_no_discovered_key() {
    let s = Server::start().await;
    let at = s.collection("race", json!({})).await;
    let id = at.rsplit('/').next().unwrap().to_owned();
    let writes = (0..16).map(|i| {
        let (s, at) = (&s, &at);
        async move {
            let body = json!({"ids": [format!("r{i}")], "embeddings": [[i as f32, 1.0]],
                              "metadatas": [{format!("k{i}"): i}]});
            let r = s.post(&format!("{at}/add"), body).await;
            assert_eq!(r.status, 201, "{}", r.text);
        }
    });
    let modify = async {
        let body = json!({"new_configuration": {"hnsw": {"ef_search": 55}}});
        s.put(&format!("{DB}/collections/{id}"), body).await.ok();
    };
    futures::join!(futures::future::join_all(writes), modify);
    for c in every_read(&s, "race").await {
        for i in 0..16 {
            assert_eq!(
                c["schema"]["keys"][format!("k{i}")],
                json!({"int": {"int_inverted_index": on(true)}}),
                "k{i} lost"
            );
        }
        assert_eq!(c["configuration_json"]["hnsw"]["ef_search"], 55);
    }
}
