"""A server run with `--knn-index spann` (api §2 in core/src/api/mod.rs) through the
official client: SPANN configurations kept with their defaults, echoed in the
configuration and the schema, modified, validated; sparse vector indexes allowed."""

import time

import pytest
from chromadb import Schema
from chromadb.api.types import SparseVectorIndexConfig, StringInvertedIndexConfig
from chromadb.errors import InvalidArgumentError, NotFoundError

from conftest import ChromaServer

SPANN_DEFAULTS = {"search_nprobe": 64, "write_nprobe": 32, "ef_construction": 200, "ef_search": 200,
                  "max_neighbors": 64, "reassign_neighbor_count": 64, "split_threshold": 50,
                  "merge_threshold": 25}


@pytest.fixture
def client(spann_server):
    c = spann_server.client()
    c.reset()
    return c


def vector_configs(collection):
    schema = collection._model.serialized_schema
    return [schema["defaults"]["float_list"]["vector_index"]["config"],
            schema["keys"]["#embedding"]["float_list"]["vector_index"]["config"]]


def test_a_plain_create_gets_spann_defaults_and_answers_queries(client):
    c = client.create_collection("plain")
    assert c.configuration_json["hnsw"] is None
    assert c.configuration_json["spann"] == dict(SPANN_DEFAULTS, space="l2")
    for v in vector_configs(c):
        assert v["spann"]["search_nprobe"] == 64
        assert v["spann"]["nreplica_count"] == 8
        assert "hnsw" not in v
    c.add(ids=[f"r{i}" for i in range(30)],
          embeddings=[[float(i), float(i % 3), 1.0] for i in range(30)])
    got = c.query(query_embeddings=[[7.1, 1.0, 1.0]], n_results=2)
    assert got["ids"][0][0] == "r7"


def test_a_spann_configuration_is_kept_and_modified(client, spann_server):
    c = client.create_collection(
        "tuned", configuration={"spann": {"space": "cosine", "search_nprobe": 20, "ef_search": 50}})
    want = dict(SPANN_DEFAULTS, space="cosine", search_nprobe=20, ef_search=50)
    assert c.configuration_json["spann"] == want
    assert client.get_collection("tuned").configuration_json["spann"] == want

    c.modify(configuration={"spann": {"search_nprobe": 100, "ef_search": 150}})
    # Another client sees the change in the configuration and in both vector indexes.
    again = spann_server.client().get_collection("tuned")
    assert again.configuration_json["spann"] == dict(want, search_nprobe=100, ef_search=150)
    for v in vector_configs(again):
        assert v["spann"]["search_nprobe"] == 100
        assert v["spann"]["ef_search"] == 150
        assert v["space"] == "cosine"


def test_an_hnsw_configuration_becomes_spann_with_its_space(client):
    c = client.create_collection("was-hnsw", configuration={"hnsw": {"space": "ip"}})
    assert c.configuration_json["hnsw"] is None
    assert c.configuration_json["spann"] == dict(SPANN_DEFAULTS, space="ip")


def test_out_of_range_spann_settings_fail_and_create_nothing(client):
    with pytest.raises((InvalidArgumentError, ValueError)) as e:
        client.create_collection("bad", configuration={"spann": {"split_threshold": 10}})
    assert "split_threshold" in str(e.value)
    with pytest.raises(NotFoundError):
        client.get_collection("bad")


def test_a_sparse_vector_index_is_stored(client):
    schema = Schema().create_index(key="sparse", config=SparseVectorIndexConfig())
    c = client.create_collection("sparse", schema=schema)
    stored = client.get_collection("sparse")._model.serialized_schema
    assert stored["keys"]["sparse"]["sparse_vector"]["sparse_vector_index"]["enabled"] is True
    assert c.configuration_json["spann"]["search_nprobe"] == 64


def test_schemas_and_spann_settings_survive_a_restart(tmp_path):
    """A SPANN server's collection (kept SPANN settings, a disabled index, a discovered
    key, a sparse index) reads the same after a restart, and so does an HNSW server's
    collection with its own schema."""
    s = ChromaServer(tmp_path / "data", tmp_path / "server.log", extra_args=["--knn-index", "spann"])
    s.start()
    try:
        schema = (Schema().delete_index(key="tag", config=StringInvertedIndexConfig())
                  .create_index(key="sparse", config=SparseVectorIndexConfig()))
        c = s.client().create_collection(
            "kept", schema=schema, embedding_function=None)
        c.modify(configuration={"spann": {"search_nprobe": 99}})
        c.add(ids=["a"], embeddings=[[1.0, 2.0]], metadatas=[{"found": 1, "tag": "x"}])
        before = s.client().get_collection("kept", embedding_function=None)
        assert before.configuration_json["spann"]["search_nprobe"] == 99
        assert "found" in before._model.serialized_schema["keys"]
    finally:
        assert s.stop() == 0
    s.start()
    try:
        after = s.client().get_collection("kept", embedding_function=None)
        assert after.configuration_json == before.configuration_json
        assert after._model.serialized_schema == before._model.serialized_schema
        with pytest.raises(InvalidArgumentError, match="indexing is disabled"):
            after.get(where={"tag": "x"})
        assert after.get(where={"found": 1})["ids"] == ["a"]
    finally:
        assert s.stop() == 0
    # The same data served by an HNSW server: the collection keeps its SPANN settings.
    h = ChromaServer(tmp_path / "data", tmp_path / "server-hnsw.log")
    h.start()
    try:
        same = h.client().get_collection("kept", embedding_function=None)
        assert same.configuration_json == before.configuration_json
    finally:
        assert h.stop() == 0


def test_the_version_grows_as_compactions_index_the_writes(client):
    """As in Chroma's cloud, a client can wait for indexing by polling the collection's
    `version` (and the indexing status): writes show as unindexed, then indexed."""
    c = client.create_collection("polled", embedding_function=None)
    assert client.get_collection("polled")._model.version == 0
    c.add(ids=[f"r{i}" for i in range(20)], embeddings=[[float(i), 1.0] for i in range(20)])
    deadline = time.monotonic() + 60
    while client.get_collection("polled")._model.version == 0:
        assert time.monotonic() < deadline, "the writes were never indexed"
        time.sleep(0.2)
    status = c.get_indexing_status()
    assert (status.num_indexed_ops, status.num_unindexed_ops, status.total_ops) == (20, 0, 20)
    assert status.op_indexing_progress == 1.0
    assert client.list_collections()[0]._model.version >= 1
