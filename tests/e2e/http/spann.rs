//! A server run with `--knn-index spann` (api §2): SPANN configurations validated, kept
//! with their defaults and echoed in `configuration_json` and the schema; HNSW ones
//! converted; modify; sparse vector indexes allowed; the collection still answers
//! queries, with its SPANN settings driving the index.

use serde_json::{json, Value};

use super::harness::{Server, DB};
use super::schema::{client_schema, default_ef, every_read};

/// Chroma's SPANN defaults, the nine fields of `configuration_json.spann`.
fn spann_json(space: &str) -> Value {
    json!({"space": space, "search_nprobe": 64, "write_nprobe": 32, "ef_construction": 200,
           "ef_search": 200, "max_neighbors": 64, "reassign_neighbor_count": 64,
           "split_threshold": 50, "merge_threshold": 25})
}

/// Chroma's SPANN defaults, the sixteen fields of a schema's SPANN block.
fn spann_block() -> Value {
    json!({"search_nprobe": 64, "search_rng_factor": 1.0, "search_rng_epsilon": 10.0,
           "nreplica_count": 8, "write_rng_factor": 1.0, "write_rng_epsilon": 5.0,
           "split_threshold": 50, "num_samples_kmeans": 1000, "initial_lambda": 100.0,
           "reassign_neighbor_count": 64, "merge_threshold": 25, "num_centers_to_merge_to": 8,
           "write_nprobe": 32, "ef_construction": 200, "ef_search": 200, "max_neighbors": 64})
}

/// The two vector index configs of a collection's schema.
fn vector_configs(c: &Value) -> [&Value; 2] {
    [
        &c["schema"]["defaults"]["float_list"]["vector_index"]["config"],
        &c["schema"]["keys"]["#embedding"]["float_list"]["vector_index"]["config"],
    ]
}

#[tokio::test]
async fn a_create_that_asks_for_nothing_gets_spann_defaults() {
    let s = Server::start_spann().await;
    // What the 1.5.9 client sends when the user gives nothing.
    s.create(
        "plain",
        json!({"configuration": {"hnsw": null, "spann": {"space": "l2"},
                                 "embedding_function": default_ef()},
               "schema": client_schema()}),
    )
    .await;
    for c in every_read(&s, "plain").await {
        assert_eq!(
            c["configuration_json"],
            json!({"hnsw": null, "spann": spann_json("l2"), "embedding_function": default_ef()})
        );
        for v in vector_configs(&c) {
            assert_eq!(v["spann"], spann_block(), "{v}");
            assert_eq!(v["space"], "l2");
            assert!(v.get("hnsw").is_none(), "{v}");
        }
        assert_eq!(
            c["schema"]["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["source_key"],
            "#document"
        );
    }
    // No configuration at all; legacy `hnsw:space` metadata gives the space.
    let legacy = s
        .create("legacy", json!({"metadata": {"hnsw:space": "cosine"}}))
        .await;
    assert_eq!(legacy["configuration_json"]["spann"], spann_json("cosine"));
    assert_eq!(legacy["configuration_json"]["hnsw"], Value::Null);
}

#[tokio::test]
async fn a_spann_configuration_is_kept_with_its_defaults_filled_in() {
    let s = Server::start_spann().await;
    let c = s
        .create(
            "tuned",
            json!({"configuration": {"spann": {"space": "cosine", "search_nprobe": 20,
                                               "ef_search": 50, "split_threshold": 100}}}),
        )
        .await;
    let mut want = spann_json("cosine");
    want["search_nprobe"] = json!(20);
    want["ef_search"] = json!(50);
    want["split_threshold"] = json!(100);
    assert_eq!(c["configuration_json"]["spann"], want);
    for c in every_read(&s, "tuned").await {
        assert_eq!(c["configuration_json"]["spann"], want);
        for v in vector_configs(&c) {
            assert_eq!(v["spann"]["search_nprobe"], 20);
            assert_eq!(v["spann"]["ef_search"], 50);
            assert_eq!(v["spann"]["split_threshold"], 100);
            assert_eq!(v["spann"]["write_nprobe"], 32);
            assert_eq!(v["space"], "cosine");
        }
    }
    // An HNSW configuration becomes SPANN defaults with its space, as in Chroma's cloud.
    let h = s
        .create(
            "was-hnsw",
            json!({"configuration": {"hnsw": {"space": "ip", "ef_search": 50}}}),
        )
        .await;
    assert_eq!(
        h["configuration_json"],
        json!({"hnsw": null, "spann": spann_json("ip"), "embedding_function": null})
    );
    // Both at once is refused on either server.
    let r = s
        .post(
            &format!("{DB}/collections"),
            json!({"name": "both", "configuration": {"hnsw": {}, "spann": {}}}),
        )
        .await;
    assert_eq!(
        r.error(400, "InvalidArgumentError"),
        "Multiple vector index configurations provided"
    );
}

#[tokio::test]
async fn out_of_range_spann_settings_are_400_naming_the_field_and_create_nothing() {
    let s = Server::start_spann().await;
    let cases = [
        (
            json!({"configuration": {"spann": {"split_threshold": 10}}}),
            "Invalid SPANN configuration: split_threshold must be between 25 and 200, got 10",
        ),
        (
            json!({"configuration": {"spann": {"search_nprobe": 1000}}}),
            "Invalid SPANN configuration: search_nprobe must be between 1 and 128, got 1000",
        ),
        (
            json!({"configuration": {"spann": {"max_neighbors": 5000000000u64}}}),
            "Invalid SPANN configuration: max_neighbors must be between 2 and 64",
        ),
        (
            json!({"configuration": {"spann": {"merge_threshold": 90, "split_threshold": 80}}}),
            "Invalid SPANN configuration: merge_threshold (90) must be below split_threshold (80)",
        ),
    ];
    for (body, message) in cases {
        let mut body = body;
        body["name"] = json!("bad");
        let r = s.post(&format!("{DB}/collections"), body).await;
        let got = r.error(400, "InvalidArgumentError");
        assert!(got.starts_with(message), "{got}");
    }
    // In a schema, as a reconciliation failure.
    let mut schema = client_schema();
    schema["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["spann"] =
        json!({"write_nprobe": 500});
    let r = s
        .post(
            &format!("{DB}/collections"),
            json!({"name": "bad", "schema": schema}),
        )
        .await;
    assert_eq!(
        r.error(400, "InvalidArgumentError"),
        "Failed to reconcile schema: Invalid SPANN configuration: write_nprobe must be between 1 and 128, got 500"
    );
    assert_eq!(s.get(&format!("{DB}/collections/bad")).await.status, 404);
    // The HNSW server converts without checking, as local Chroma.
    let h = Server::start().await;
    h.create(
        "fine",
        json!({"configuration": {"spann": {"search_nprobe": 1000}}}),
    )
    .await;
}

#[tokio::test]
async fn modify_edits_spann_in_the_configuration_and_both_vector_indexes() {
    let s = Server::start_spann().await;
    let c = s.create("modified", json!({})).await;
    let at = format!("{DB}/collections/{}", c["id"].as_str().unwrap());
    s.put(
        &at,
        json!({"new_configuration": {"spann": {"search_nprobe": 100, "ef_search": 150}}}),
    )
    .await
    .ok();
    // An HNSW update of a SPANN collection changes nothing.
    s.put(
        &at,
        json!({"new_configuration": {"hnsw": {"ef_search": 7}}}),
    )
    .await
    .ok();
    let bad = s
        .put(
            &at,
            json!({"new_configuration": {"spann": {"ef_search": 201}}}),
        )
        .await;
    assert_eq!(
        bad.error(400, "InvalidArgumentError"),
        "Invalid SPANN configuration: ef_search must be between 1 and 200, got 201"
    );
    let unknown = s
        .put(
            &at,
            json!({"new_configuration": {"spann": {"write_nprobe": 10}}}),
        )
        .await;
    assert_eq!(unknown.status, 422, "{}", unknown.text);
    let mut want = spann_json("l2");
    want["search_nprobe"] = json!(100);
    want["ef_search"] = json!(150);
    for got in every_read(&s, "modified").await {
        assert_eq!(got["configuration_json"]["spann"], want);
        assert_eq!(got["configuration_json"]["hnsw"], Value::Null);
        for v in vector_configs(&got) {
            assert_eq!(v["spann"]["search_nprobe"], 100);
            assert_eq!(v["spann"]["ef_search"], 150);
            assert!(v.get("hnsw").is_none(), "{v}");
        }
    }
    let stored = s
        .engine
        .get_collection_by_id(Server::id_of(&at))
        .await
        .unwrap()
        .configuration;
    assert_eq!(
        stored.hnsw.ef_search, 150,
        "the graph follows SPANN's ef_search"
    );
    assert_eq!(stored.cold_nprobe(80), 125);
}

#[tokio::test]
async fn a_spann_server_stores_a_sparse_vector_index() {
    let s = Server::start_spann().await;
    let mut schema = client_schema();
    schema["keys"]["sparse"] = json!({"sparse_vector": {"sparse_vector_index": {"enabled": true,
        "config": {"embedding_function": {"type": "unknown"}, "bm25": true,
                   "algorithm": "max_score"}}}});
    s.create("sparse", json!({"schema": schema})).await;
    for c in every_read(&s, "sparse").await {
        assert_eq!(
            c["schema"]["keys"]["sparse"]["sparse_vector"]["sparse_vector_index"],
            json!({"enabled": true, "config": {"embedding_function": {"type": "unknown"},
                   "bm25": true, "algorithm": "max_score"}})
        );
    }
    // Two are still refused.
    let mut two = schema.clone();
    two["keys"]["other"] = two["keys"]["sparse"].clone();
    let r = s
        .post(
            &format!("{DB}/collections"),
            json!({"name": "two", "schema": two}),
        )
        .await;
    assert!(r
        .error(400, "InvalidArgumentError")
        .contains("At most one sparse vector index is allowed"));
}

#[tokio::test]
async fn a_spann_collection_answers_queries_before_and_after_compaction() {
    let s = Server::start_spann().await;
    let at = s
        .collection(
            "served",
            json!({"configuration": {"spann": {"space": "l2", "search_nprobe": 8}}}),
        )
        .await;
    let ids: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    let embeddings: Vec<Value> = (0..40)
        .map(|i| json!([i as f32, (i * i % 7) as f32, 1.0]))
        .collect();
    let added = s
        .post(
            &format!("{at}/add"),
            json!({"ids": ids, "embeddings": embeddings}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    for round in 0..2 {
        let r = s
            .post(
                &format!("{at}/query"),
                json!({"query_embeddings": [[10.2, 2.0, 1.0]], "n_results": 3,
                       "include": ["distances"]}),
            )
            .await;
        let body = r.ok();
        assert_eq!(body["ids"][0][0], "r10", "round {round}: {body}");
        assert_eq!(body["ids"][0].as_array().unwrap().len(), 3);
        s.compact(&at).await;
    }
}

#[tokio::test]
async fn a_spann_collections_version_counts_the_compactions_that_indexed_it() {
    for spann in [true, false] {
        let s = if spann {
            Server::start_spann().await
        } else {
            Server::start().await
        };
        let c = s.collection("versioned", json!({})).await;
        let version = || async {
            let by_name =
                s.get(&format!("{DB}/collections/versioned")).await.ok()["version"].clone();
            let listed = s.get(&format!("{DB}/collections")).await.ok()[0]["version"].clone();
            assert_eq!(by_name, listed);
            by_name
        };
        assert_eq!(version().await, json!(0));
        for round in 1..=2 {
            let ids: Vec<String> = (0..3).map(|i| format!("r{round}-{i}")).collect();
            let r = s
                .post(
                    &format!("{c}/add"),
                    json!({"ids": ids, "embeddings": [[1.0, 2.0], [2.0, 1.0], [0.0, 3.0]]}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            // Written, not yet indexed: the version has not moved.
            assert_eq!(version().await, json!(if spann { round - 1 } else { 0 }));
            s.compact(&c).await;
            // Local Chroma always answers 0.
            assert_eq!(version().await, json!(if spann { round } else { 0 }));
            let st = s.get(&format!("{c}/indexing_status")).await;
            assert_eq!(st.ok()["op_indexing_progress"], json!(1.0));
        }
    }
}
