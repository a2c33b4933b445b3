"""The official `chromadb` HTTP client (chromadb-client 1.5.9) against our server."""

import json
import math
import os
import subprocess
from typing import Any, Dict, List

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.errors import (
    AuthorizationError,
    ChromaAuthError,
    ChromaError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
)
from chromadb.utils.embedding_functions import register_embedding_function

from conftest import ChromaServer, chroma_bin


@register_embedding_function
class HashEmbedding(EmbeddingFunction[Documents]):
    """A deterministic, offline embedding: character statistics of each document."""

    def __init__(self, dim: int = 4):
        self.dim = dim

    def __call__(self, input: Documents) -> Embeddings:
        out = []
        for doc in input:
            v = [0.0] * self.dim
            for i, ch in enumerate(doc):
                v[i % self.dim] += (ord(ch) % 31) / 31.0
            out.append(np.array(v, dtype=np.float32))
        return out

    @staticmethod
    def name() -> str:
        return "test_hash_embedding"

    def get_config(self) -> Dict[str, Any]:
        return {"dim": self.dim}

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> "HashEmbedding":
        return HashEmbedding(config["dim"])


def sorted_ids(result) -> List[str]:
    return sorted(result["ids"])


# ----- client, tenants, databases ------------------------------------------------------


def test_client_construction(server, client):
    assert client.heartbeat() > 1_600_000_000_000_000_000
    assert client.get_version() == "1.0.0"
    assert client.get_max_batch_size() == 5461
    assert client.get_user_identity().tenant == "default_tenant"
    explicit = server.client(tenant="default_tenant", database="default_database")
    assert explicit.list_collections() == []
    with pytest.raises(Exception):
        server.client(tenant="no_such_tenant")
    with pytest.raises(Exception):
        server.client(database="no_such_database")


def test_tenants_and_databases(server, client):
    admin = server.admin()
    admin.create_tenant("acme")
    assert admin.get_tenant("acme")["name"] == "acme"
    with pytest.raises(ChromaError):
        admin.create_tenant("acme")
    with pytest.raises(NotFoundError):
        admin.get_tenant("nobody")
    admin.create_database("db_one", tenant="acme")
    admin.create_database("db_two", tenant="acme")
    assert [d["name"] for d in admin.list_databases(tenant="acme")] == ["db_one", "db_two"]
    assert [d["name"] for d in admin.list_databases(limit=1, offset=1, tenant="acme")] == ["db_two"]
    db = admin.get_database("db_one", tenant="acme")
    assert db["name"] == "db_one" and db["tenant"] == "acme"
    with pytest.raises(ChromaError):
        admin.create_database("db_one", tenant="acme")

    one = server.client(tenant="acme", database="db_one")
    two = server.client(tenant="acme", database="db_two")
    one.create_collection("shared_name", embedding_function=None)
    assert [c.name for c in one.list_collections()] == ["shared_name"]
    assert two.list_collections() == []
    assert client.list_collections() == []

    admin.delete_database("db_two", tenant="acme")
    with pytest.raises(NotFoundError):
        admin.get_database("db_two", tenant="acme")
    assert [d["name"] for d in admin.list_databases(tenant="acme")] == ["db_one"]


# ----- collections ---------------------------------------------------------------------


def test_a_spann_configuration_becomes_hnsw_with_its_space(client):
    c = client.create_collection(
        "spann", configuration={"spann": {"space": "cosine", "search_nprobe": 8}},
        embedding_function=None,
    )
    assert c.configuration_json["hnsw"]["space"] == "cosine"
    assert c.configuration_json["hnsw"]["max_neighbors"] == 16
    assert c.configuration_json["spann"] is None
    c.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
    got = c.query(query_embeddings=[[1.0, 0.1]], n_results=1, include=["distances"])
    assert got["ids"] == [["a"]]


def test_query_by_ids_fails_for_a_missing_id_as_chroma_does(client):
    c = client.create_collection("ids", embedding_function=None)
    c.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], metadatas=[{"k": 1}, {"k": 2}])
    assert c.query(query_embeddings=[[1.0, 0.0]], ids=["b"], n_results=1)["ids"] == [["b"]]
    with pytest.raises(InternalError, match="Error finding id"):
        c.query(query_embeddings=[[1.0, 0.0]], ids=["a", "nope"], n_results=1)
    # With a filter, missing ids are just not returned.
    got = c.query(query_embeddings=[[1.0, 0.0]], ids=["a", "nope"], n_results=1, where={"k": 1})
    assert got["ids"] == [["a"]]


def test_missing_collections_get_chromas_texts_and_a_trace_id(client):
    with pytest.raises(NotFoundError) as by_name:
        client.get_collection("nowhere")
    assert str(by_name.value) == "Collection [nowhere] does not exist"
    trace_id = by_name.value.trace_id
    assert trace_id and len(trace_id) == 32 and int(trace_id, 16) >= 0
    with pytest.raises(NotFoundError) as deleted:
        client.delete_collection("nowhere")
    assert str(deleted.value) == "Collection [nowhere] does not exist"
    assert deleted.value.trace_id and deleted.value.trace_id != trace_id

    gone = client.create_collection("gone", embedding_function=None)
    gone.add(ids=["a"], embeddings=[[1.0, 2.0]])
    client.delete_collection("gone")
    expected = f"Collection [{gone.id}] does not exist."
    for call in (
        gone.count,
        gone.peek,
        lambda: gone.get(ids=["a"]),
        lambda: gone.query(query_embeddings=[[1.0, 2.0]], n_results=1),
        lambda: gone.add(ids=["b"], embeddings=[[1.0, 2.0]]),
        lambda: gone.delete(ids=["a"]),
        lambda: gone.modify(name="renamed"),
    ):
        with pytest.raises(NotFoundError) as e:
            call()
        assert str(e.value) == expected
        assert e.value.trace_id


def test_get_or_create_and_delete_racing_on_one_name(client):
    import re
    import threading

    name = "contested"
    missing = re.compile(r"^Collection \[[^\]]+\] does not exist$")
    failures: List[str] = []
    lost_deletes = [0]
    lock = threading.Lock()

    def work(i: int) -> None:
        for round_ in range(6):
            try:
                c = client.get_or_create_collection(name, embedding_function=None)
                assert c.name == name
            except Exception as e:  # get_or_create must never fail
                with lock:
                    failures.append(f"get_or_create: {type(e).__name__}: {e}")
            if (i + round_) % 2 == 0:
                try:
                    client.delete_collection(name)
                except NotFoundError as e:
                    with lock:
                        lost_deletes[0] += 1
                        if not missing.match(str(e)) and str(e) != f"Collection [{name}] does not exist":
                            failures.append(f"delete: {e}")
                except Exception as e:
                    with lock:
                        failures.append(f"delete: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    # The name still works afterwards.
    client.get_or_create_collection(name, embedding_function=None).add(ids=["x"], embeddings=[[1.0]])
    assert client.get_collection(name).count() == 1


def test_create_get_list_count_delete(client):
    a = client.create_collection(
        "alpha", metadata={"team": "x", "n": 1}, embedding_function=None
    )
    assert a.name == "alpha"
    assert a.metadata == {"team": "x", "n": 1}
    assert a.configuration_json["hnsw"]["space"] == "l2"
    assert a.configuration_json["spann"] is None
    client.create_collection("beta", embedding_function=None)
    client.create_collection("gamma", embedding_function=None)
    assert [c.name for c in client.list_collections()] == ["alpha", "beta", "gamma"]
    assert [c.name for c in client.list_collections(limit=1, offset=1)] == ["beta"]
    assert client.count_collections() == 3

    got = client.get_collection("alpha", embedding_function=None)
    assert got.id == a.id and got.metadata == {"team": "x", "n": 1}
    same = client.get_or_create_collection(
        "alpha", metadata={"team": "changed"}, embedding_function=None
    )
    assert same.id == a.id and same.metadata == {"team": "x", "n": 1}
    fresh = client.get_or_create_collection("delta", metadata={"v": 2}, embedding_function=None)
    assert fresh.metadata == {"v": 2}

    client.delete_collection("beta")
    with pytest.raises(NotFoundError):
        client.get_collection("beta")
    with pytest.raises(NotFoundError):
        client.delete_collection("beta")
    assert client.count_collections() == 3


def test_configuration_and_legacy_metadata(client):
    cfg = client.create_collection(
        "configured",
        configuration={"hnsw": {"space": "cosine", "ef_search": 40, "max_neighbors": 12}},
        embedding_function=None,
    )
    hnsw = cfg.configuration_json["hnsw"]
    assert (hnsw["space"], hnsw["ef_search"], hnsw["max_neighbors"]) == ("cosine", 40, 12)
    assert hnsw["ef_construction"] == 100
    legacy = client.create_collection(
        "legacy", metadata={"hnsw:space": "ip", "owner": "me"}, embedding_function=None
    )
    assert legacy.configuration_json["hnsw"]["space"] == "ip"
    assert legacy.metadata == {"hnsw:space": "ip", "owner": "me"}
    again = client.get_collection("legacy", embedding_function=None)
    assert again.configuration_json["hnsw"]["space"] == "ip"
    with pytest.raises(Exception):
        client.create_collection(
            "badspace", configuration={"hnsw": {"space": "manhattan"}}, embedding_function=None
        )


def test_embedding_function_round_trip(client):
    col = client.create_collection("with_ef", embedding_function=HashEmbedding(4))
    assert col.configuration_json["embedding_function"] == {
        "name": "test_hash_embedding",
        "type": "known",
        "config": {"dim": 4},
    }
    col.add(ids=["a", "b", "c"], documents=["apples", "bananas", "cherries"])
    # Fetched without an embedding function: the client rebuilds it from the stored config.
    fetched = client.get_collection("with_ef")
    assert fetched.configuration_json["embedding_function"]["config"] == {"dim": 4}
    res = fetched.query(query_texts=["bananas"], n_results=1, include=["distances", "documents"])
    assert res["ids"] == [["b"]]
    assert res["documents"] == [["bananas"]]
    assert res["distances"][0][0] == pytest.approx(0.0, abs=1e-6)
    stored = fetched.get(ids=["a"], include=["embeddings"])["embeddings"][0]
    assert list(stored) == pytest.approx(list(HashEmbedding(4)(["apples"])[0]))


def test_modify(client):
    col = client.create_collection("orig", metadata={"a": 1}, embedding_function=None)
    client.create_collection("taken", embedding_function=None)
    col.modify(name="renamed", metadata={"b": 2})
    assert col.name == "renamed"
    got = client.get_collection("renamed", embedding_function=None)
    assert got.id == col.id and got.metadata == {"b": 2}
    with pytest.raises(NotFoundError):
        client.get_collection("orig")
    col.modify(configuration={"hnsw": {"ef_search": 55}})
    got = client.get_collection("renamed", embedding_function=None)
    assert got.configuration_json["hnsw"]["ef_search"] == 55
    with pytest.raises(ChromaError) as e:
        col.modify(name="taken")
    assert "already exists" in str(e.value)
    with pytest.raises(Exception):
        col.modify(metadata={})


# ----- records -------------------------------------------------------------------------


def test_add_with_base64_embeddings_and_get(client):
    # The client sends base64 embeddings because pre-flight says the server supports it.
    assert client._server.supports_base64_encoding() is True
    col = client.create_collection("records", embedding_function=None)
    embs = np.array([[0.1, 0.2, 0.3], [1e-8, -2.5, 3.25], [1e30, 0.0, -1.0]], dtype=np.float32)
    col.add(
        ids=["r1", "r2", "r3"],
        embeddings=embs,
        documents=["one", "two", "three"],
        metadatas=[{"i": 1, "f": 0.5, "s": "x", "b": True}, {"i": 2}, {"arr": [1, 2]}],
        uris=["u1", "u2", "u3"],
    )
    assert col.count() == 3
    got = col.get(include=["embeddings", "documents", "metadatas", "uris"])
    assert got["ids"] == ["r1", "r2", "r3"]
    # float32 values round-trip exactly through the base64 wire format
    assert np.array_equal(np.array(got["embeddings"], dtype=np.float32), embs)
    assert got["documents"] == ["one", "two", "three"]
    assert got["uris"] == ["u1", "u2", "u3"]
    assert got["metadatas"] == [{"i": 1, "f": 0.5, "s": "x", "b": True}, {"i": 2}, {"arr": [1, 2]}]
    assert client.get_collection("records", embedding_function=None)._model.dimension == 3
    # add of an existing id leaves the record unchanged
    col.add(ids=["r1"], embeddings=[[9.0, 9.0, 9.0]], documents=["new"])
    assert col.get(ids=["r1"])["documents"] == ["one"]
    status = col.get_indexing_status()
    assert status.total_ops == status.num_indexed_ops + status.num_unindexed_ops
    assert 0.0 <= status.op_indexing_progress <= 1.0


def test_get_include_limit_offset_and_order(client):
    col = client.create_collection("ordering", embedding_function=None)
    ids = ["e", "a", "d", "b", "c"]
    col.add(ids=ids, embeddings=[[float(i)] for i in range(5)], documents=[f"doc {i}" for i in ids])
    assert col.get()["ids"] == ids
    assert col.get(ids=["d", "a"])["ids"] == ["a", "d"]
    assert col.get(limit=2, offset=1)["ids"] == ["a", "d"]
    assert col.get(offset=3)["ids"] == ["b", "c"]
    res = col.get(ids=["b"], include=["metadatas", "documents"])
    assert res["documents"] == ["doc b"]
    assert res["metadatas"] == [None]
    assert res["embeddings"] is None
    peek = col.peek(limit=3)
    assert peek["ids"] == ["e", "a", "d"]
    assert [list(e) for e in peek["embeddings"]] == [[0.0], [1.0], [2.0]]


def test_upsert_and_update_merge(client):
    col = client.create_collection("merging", embedding_function=None)
    col.add(
        ids=["a", "b"],
        embeddings=[[1.0, 1.0], [2.0, 2.0]],
        documents=["da", "db"],
        metadatas=[{"x": 1, "keep": "k"}, {"x": 2}],
    )
    col.upsert(
        ids=["b", "c"],
        embeddings=[[2.5, 2.5], [3.0, 3.0]],
        documents=["db2", "dc"],
        metadatas=[{"y": 1}, {"z": True}],
    )
    got = col.get(include=["documents", "metadatas", "embeddings"])
    assert got["ids"] == ["a", "b", "c"]
    assert got["documents"] == ["da", "db2", "dc"]
    assert got["metadatas"] == [{"x": 1, "keep": "k"}, {"x": 2, "y": 1}, {"z": True}]
    assert [list(e) for e in got["embeddings"]] == [[1.0, 1.0], [2.5, 2.5], [3.0, 3.0]]
    # update: None removes a key, missing ids are ignored, embeddings optional
    col.update(ids=["a", "ghost"], metadatas=[{"x": None, "w": 5}, {"q": 1}])
    col.update(ids=["c"], documents=["dc2"], embeddings=[[3.5, 3.5]])
    got = col.get(include=["documents", "metadatas"])
    assert got["ids"] == ["a", "b", "c"]
    assert got["metadatas"][0] == {"keep": "k", "w": 5}
    assert got["documents"] == ["da", "db2", "dc2"]
    assert got["metadatas"][2] == {"z": True}
    assert [list(e) for e in col.get(include=["embeddings"])["embeddings"]] == [
        [1.0, 1.0],
        [2.5, 2.5],
        [3.5, 3.5],
    ]
    assert col.count() == 3


def test_delete_by_ids_and_where(client):
    col = client.create_collection("deleting", embedding_function=None)
    col.add(
        ids=[f"r{i}" for i in range(6)],
        embeddings=[[float(i)] for i in range(6)],
        metadatas=[{"i": i, "even": i % 2 == 0} for i in range(6)],
        documents=[f"document {i}" for i in range(6)],
    )
    col.delete(ids=["r0", "missing"])
    assert col.count() == 5
    col.delete(where={"even": True})
    assert col.get()["ids"] == ["r1", "r3", "r5"]
    col.delete(where_document={"$contains": "document 3"})
    assert col.get()["ids"] == ["r1", "r5"]
    col.delete(ids=["r1", "r5"], where={"i": {"$gt": 2}})
    assert col.get()["ids"] == ["r1"]


def test_query_filters_and_n_results(client):
    col = client.create_collection("querying", embedding_function=None)
    n = 15
    col.add(
        ids=[f"p{i:02d}" for i in range(n)],
        embeddings=[[float(i), 0.0] for i in range(n)],
        documents=[("even " if i % 2 == 0 else "odd ") + str(i) for i in range(n)],
        metadatas=[{"i": i, "group": "low" if i < 5 else "high"} for i in range(n)],
    )
    res = col.query(query_embeddings=[[0.0, 0.0]])
    assert len(res["ids"][0]) == 10
    assert res["ids"][0][:3] == ["p00", "p01", "p02"]
    assert res["distances"][0][:3] == pytest.approx([0.0, 1.0, 4.0])
    assert res["embeddings"] is None
    res = col.query(query_embeddings=[[14.0, 0.0], [7.2, 0.0]], n_results=2)
    assert res["ids"] == [["p14", "p13"], ["p07", "p08"]]
    assert res["distances"][1] == pytest.approx([0.04, 0.64], rel=1e-5)
    res = col.query(query_embeddings=[[0.0, 0.0]], n_results=3, where={"group": "high"})
    assert res["ids"] == [["p05", "p06", "p07"]]
    res = col.query(
        query_embeddings=[[0.0, 0.0]],
        n_results=3,
        where={"$and": [{"i": {"$gte": 3}}, {"i": {"$lt": 9}}]},
        where_document={"$contains": "odd"},
    )
    assert res["ids"] == [["p03", "p05", "p07"]]
    res = col.query(query_embeddings=[[0.0, 0.0]], ids=["p09", "p04", "p11"], n_results=5)
    assert res["ids"] == [["p04", "p09", "p11"]]
    res = col.query(
        query_embeddings=[[0.0, 0.0]], n_results=100, where={"i": {"$in": [1, 2, 99]}},
        include=["metadatas", "documents", "distances", "embeddings"],
    )
    assert res["ids"] == [["p01", "p02"]]
    assert res["metadatas"] == [[{"i": 1, "group": "low"}, {"i": 2, "group": "low"}]]
    assert res["documents"] == [["odd 1", "even 2"]]
    assert [list(e) for e in res["embeddings"][0]] == [[1.0, 0.0], [2.0, 0.0]]
    res = col.query(query_embeddings=[[0.0, 0.0]], where_document={"$regex": "^even 1[02]$"})
    assert res["ids"] == [["p10", "p12"]]
    res = col.query(query_embeddings=[[0.0, 0.0]], where={"group": {"$ne": "low"}}, n_results=1)
    assert res["ids"] == [["p05"]]
    res = col.query(query_embeddings=[[0.0, 0.0]], where={"i": {"$nin": [0, 1]}}, n_results=1)
    assert res["ids"] == [["p02"]]


@pytest.mark.parametrize(
    "space,expected",
    [
        ("l2", [("b", 1.25), ("a", 21.25)]),
        ("cosine", [("a", 0.2), ("b", 1.0)]),
        ("ip", [("a", -1.0), ("b", 1.0)]),
    ],
)
def test_distances_in_every_space(client, space, expected):
    # api §6 (core/src/api/mod.rs): query [0, 0.5] against a=[3, 4] and b=[1, 0]
    col = client.create_collection(
        f"space_{space}", configuration={"hnsw": {"space": space}}, embedding_function=None
    )
    legacy = client.create_collection(
        f"legacy_{space}", metadata={"hnsw:space": space}, embedding_function=None
    )
    for c in (col, legacy):
        c.add(ids=["a", "b"], embeddings=[[3.0, 4.0], [1.0, 0.0]])
        res = c.query(query_embeddings=[[0.0, 0.5]], n_results=2, include=["distances"])
        assert res["ids"] == [[e[0] for e in expected]]
        for got, (_, want) in zip(res["distances"][0], expected):
            assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6), (space, got, want)


# ----- errors --------------------------------------------------------------------------


def test_user_visible_errors(client):
    col = client.create_collection("errors", embedding_function=None)
    col.add(ids=["a"], embeddings=[[1.0, 2.0, 3.0]])
    with pytest.raises(InvalidArgumentError) as e:
        col.add(ids=["b"], embeddings=[[1.0, 2.0]])
    assert "Collection expecting embedding with dimension of 3, got 2" in str(e.value)
    with pytest.raises(InvalidArgumentError) as e:
        col.query(query_embeddings=[[1.0]])
    assert "dimension of 3, got 1" in str(e.value)
    with pytest.raises(NotFoundError):
        client.get_collection("does-not-exist")
    with pytest.raises(ChromaError) as e:
        client.create_collection("errors", embedding_function=None)
    assert "already exists" in str(e.value)
    with pytest.raises(InvalidArgumentError):
        col.get(where_document={"$regex": "("})
    with pytest.raises(Exception):
        col.get(where={"a": {"$gt": "text"}})
    with pytest.raises(Exception):
        client.create_collection("x", embedding_function=None)
    client.delete_collection("errors")
    with pytest.raises(NotFoundError):
        col.add(ids=["c"], embeddings=[[1.0, 2.0, 3.0]])
    assert col.count  # the stale handle still exists; its calls fail
    with pytest.raises(NotFoundError):
        col.count()


# ----- restart -------------------------------------------------------------------------


def test_data_survives_restart(tmp_path):
    s = ChromaServer(tmp_path / "data", tmp_path / "server.log")
    s.start()
    try:
        c = s.client()
        col = c.create_collection(
            "durable", metadata={"hnsw:space": "cosine"}, embedding_function=None
        )
        col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], documents=["A", "B"])
        col.upsert(ids=["c"], embeddings=[[1.0, 1.0]], metadatas=[{"k": "v"}])
        col.delete(ids=["b"])
        cid = col.id
        # `chroma compact` works on the directory while the server uses it.
        out = subprocess.run(
            [chroma_bin(), "compact", "--path", str(s.path)],
            env=s.env(), capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert "compacted 1 collections" in out.stdout
        assert col.get()["ids"] == ["a", "c"]
    finally:
        assert s.stop() == 0
    s.start()
    try:
        c = s.client()
        col = c.get_collection("durable", embedding_function=None)
        assert col.id == cid
        assert col.configuration_json["hnsw"]["space"] == "cosine"
        got = col.get(include=["documents", "metadatas"])
        assert got["ids"] == ["a", "c"]
        assert got["documents"] == ["A", None]
        assert got["metadatas"] == [None, {"k": "v"}]
        res = col.query(query_embeddings=[[1.0, 0.0]], n_results=2)
        assert res["ids"] == [["a", "c"]]
        assert res["distances"][0] == pytest.approx([0.0, 1 - 1 / math.sqrt(2)], abs=1e-6)
    finally:
        assert s.stop() == 0


# ----- authentication ------------------------------------------------------------------


def test_api_keys_with_the_official_client(tmp_path):
    s = ChromaServer(tmp_path / "data", tmp_path / "server.log", extra_args=["--auth"])

    def keys(*args):
        out = subprocess.run(
            [chroma_bin(), "keys", *args, "--path", str(s.path)],
            env=s.env(), capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    # Created while the server is stopped; the key is alone on the last line.
    root = keys("create", "--grant", "*/*/*:read,write,admin", "--name", "root").splitlines()[-1]
    s.start()
    try:
        # Created while it runs.
        reader = keys("create", "--grant", "default_tenant/*/*:read").splitlines()[-1]
        for header in ("Authorization", "X-Chroma-Token"):
            settings = Settings(
                allow_reset=True,
                anonymized_telemetry=False,
                chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
                chroma_client_auth_credentials=root,
                chroma_auth_token_transport_header=header,
            )
            c = chromadb.HttpClient(host="127.0.0.1", port=s.port, settings=settings)
            col = c.get_or_create_collection("secured", embedding_function=None)
            col.upsert(ids=["a"], embeddings=[[1.0, 2.0]], documents=["doc"])
            assert col.get()["ids"] == ["a"]

        ro = chromadb.HttpClient(
            host="127.0.0.1",
            port=s.port,
            settings=Settings(
                anonymized_telemetry=False,
                chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
                chroma_client_auth_credentials=reader,
            ),
        )
        col = ro.get_collection("secured", embedding_function=None)
        assert col.count() == 1
        with pytest.raises(ChromaAuthError, match="write on default_tenant/default_database"):
            col.add(ids=["b"], embeddings=[[2.0, 1.0]])

        with pytest.raises(AuthorizationError, match="credentials"):
            chromadb.HttpClient(
                host="127.0.0.1", port=s.port, settings=Settings(anonymized_telemetry=False)
            ).list_collections()

        # Revoked while the server runs (it trusts a cached key for at most 30 s; the
        # HTTP tests check the refusal itself).
        reader_id = reader.split(".")[0]
        assert reader_id in keys("list")
        keys("revoke", reader_id)
        listed = [line for line in keys("list").splitlines() if line.startswith(reader_id)]
        assert "revoked" in listed[0]
    finally:
        assert s.stop() == 0


# ----- TLS -----------------------------------------------------------------------------


def self_signed(tmp_path):
    """A certificate for 127.0.0.1 signed by its own key: (cert path, key path)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_with_the_official_client(tmp_path):
    import socket
    import ssl

    cert, key = self_signed(tmp_path)
    s = ChromaServer(
        tmp_path / "data",
        tmp_path / "server.log",
        extra_args=["--tls-cert", str(cert), "--tls-key", str(key)],
    )
    s.start()
    try:
        c = chromadb.HttpClient(
            host="127.0.0.1",
            port=s.port,
            ssl=True,
            settings=Settings(anonymized_telemetry=False, chroma_server_ssl_verify=str(cert)),
        )
        col = c.get_or_create_collection("tls", embedding_function=None)
        col.add(ids=["a"], embeddings=[[1.0, 0.0]])
        assert col.query(query_embeddings=[[1.0, 0.0]], n_results=1)["ids"] == [["a"]]

        # TLS 1.1 and older are refused.
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(str(cert))
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.0/1.1
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with socket.create_connection(("127.0.0.1", s.port)) as raw:
            with pytest.raises(ssl.SSLError, match="(?i)protocol version|alert"):
                old.wrap_socket(raw, server_hostname="127.0.0.1")
        # A current client gets TLS 1.2 or 1.3.
        new = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", s.port)) as raw:
            with new.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        # Plain HTTP on the TLS port gets no answer it could use.
        with pytest.raises(Exception):
            chromadb.HttpClient(
                host="127.0.0.1", port=s.port, settings=Settings(anonymized_telemetry=False)
            ).heartbeat()
    finally:
        assert s.stop() == 0


def test_aws_backend_without_configuration_fails_at_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHROMA_")}
    out = subprocess.run(
        [chroma_bin(), "run", "--backend", "aws", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    for name in ("CHROMA_BUCKET", "CHROMA_TABLE_PREFIX", "CHROMA_KMS_KEY_ID"):
        assert name in out.stderr, out.stderr


# ----- audit log -----------------------------------------------------------------------


def test_audit_log_records_security_events_without_secrets(tmp_path):
    """One structured record per authentication failure, denial, key create/revoke and
    collection create/modify/delete, with who, where, what, outcome, request id and time;
    nothing secret or private (keys, documents, embeddings) anywhere in the log."""
    import httpx

    log = tmp_path / "server.log"
    s = ChromaServer(tmp_path / "data", log, extra_args=["--auth", "--log-format", "json"])
    out = subprocess.run(
        [chroma_bin(), "keys", "create", "--path", str(s.path), "--grant", "*/*/*:read,write,admin"],
        env=s.env(), capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    root = out.stdout.splitlines()[-1]
    marker = "CONFIDENTIAL-DIAGNOSIS-7731"
    secret_vector = [0.123456789, 0.987654321]
    s.start()
    try:
        base = f"http://127.0.0.1:{s.port}/api/v2"
        cols = f"{base}/tenants/default_tenant/databases/default_database/collections"
        as_root = {"Authorization": f"Bearer {root}"}
        with httpx.Client(timeout=30) as h:
            assert h.get(cols).status_code == 401
            assert h.get(cols, headers={"X-Chroma-Token": root + "x"}).status_code == 401
            r = h.post(cols, json={"name": "audited"}, headers=as_root)
            assert r.status_code == 200, r.text
            cid = r.json()["id"]
            r = h.post(f"{cols}/{cid}/add", headers=as_root,
                       json={"ids": ["p1"], "embeddings": [secret_vector], "documents": [marker]})
            assert r.status_code == 201, r.text
            r = h.put(f"{cols}/{cid}", json={"new_metadata": {"owner": "ward-3"}}, headers=as_root)
            assert r.status_code == 200, r.text
            r = h.post(f"{base}/admin/keys", headers=as_root,
                       json={"grants": ["default_tenant/default_database/*:read"], "name": "reader"})
            assert r.status_code == 200, r.text
            reader, reader_id = r.json()["key"], r.json()["id"]
            r = h.post(f"{cols}/{cid}/add", headers={"X-Chroma-Token": reader},
                       json={"ids": ["p2"], "embeddings": [secret_vector], "documents": [marker]})
            assert r.status_code == 403, r.text
            assert h.delete(f"{base}/admin/keys/{reader_id}", headers=as_root).status_code == 200
            assert h.delete(f"{cols}/audited", headers=as_root).status_code == 200
    finally:
        assert s.stop() == 0

    text = log.read_text()
    for secret in (root, root.split(".", 1)[1], reader, reader.split(".", 1)[1], marker,
                   "0.123456789", "0.987654321"):
        assert secret not in text, f"the log holds {secret[:12]}…"
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("target") == "audit":
            records.append(record)
    events = [r["event"] for r in records]
    for wanted in ("authentication_failed", "collection_created", "collection_modified",
                   "key_created", "authorization_denied", "key_revoked", "collection_deleted"):
        assert wanted in events, f"no {wanted} record in {events}"
    assert events.count("authentication_failed") == 2
    for r in records:
        for field in ("timestamp", "principal", "tenant", "action", "resource", "outcome", "request_id"):
            assert field in r, f"{r['event']} lacks {field}: {r}"
        assert r["outcome"] == ("denied" if r["event"].endswith(("failed", "denied")) else "allowed")
    denied = next(r for r in records if r["event"] == "authorization_denied")
    assert denied["principal"] == f"key:{reader_id}"
    assert denied["tenant"] == "default_tenant"
    assert denied["action"] == "write"
    assert denied["resource"].startswith("default_tenant/default_database")
    created = next(r for r in records if r["event"] == "key_created")
    assert created["resource"] == reader_id and created["principal"] == "key:" + root.split(".")[0]
    failed = next(r for r in records if r["event"] == "authentication_failed")
    assert failed["tenant"] == "default_tenant" and failed["principal"] == ""


def test_logs_to_a_file_have_no_colour_codes(server, client):
    client.heartbeat()
    client.get_or_create_collection("plain-logs", embedding_function=None)
    log = server.log_path.read_text()
    assert "listening" in log or "INFO" in log, log[-500:]
    assert "\x1b[" not in log, "ANSI escape codes in a log written to a file"
