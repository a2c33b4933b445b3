"""The collection `schema` (api §3 in core/src/api/mod.rs) through the official client:
round trips, disabled indexes, full-text search off, delete + recreate."""

import pytest
from chromadb import Schema
from chromadb.api.types import (
    FtsIndexConfig,
    HnswIndexConfig,
    IntInvertedIndexConfig,
    SparseVectorIndexConfig,
    StringInvertedIndexConfig,
    VectorIndexConfig,
)
from chromadb.errors import InvalidArgumentError

DEFAULT_EF = {"type": "known", "name": "default", "config": {}}
ON = {"enabled": True, "config": {}}
OFF = {"enabled": False, "config": {}}


def raw_schema(collection):
    """The schema JSON exactly as the server answered it."""
    return collection._model.serialized_schema


def hnsw_block(ncpu):
    return {"ef_construction": 100, "max_neighbors": 16, "ef_search": 100, "num_threads": ncpu,
            "batch_size": 100, "sync_threshold": 1000, "resize_factor": 1.2}


def local_default(vector):
    embedding = dict(vector, source_key="#document")
    return {
        "defaults": {
            "string": {"fts_index": OFF, "string_inverted_index": ON},
            "float_list": {"vector_index": {"enabled": False, "config": vector}},
            "sparse_vector": {"sparse_vector_index": {
                "enabled": False, "config": {"embedding_function": {"type": "unknown"}, "bm25": False}}},
            "int": {"int_inverted_index": ON},
            "float": {"float_inverted_index": ON},
            "bool": {"bool_inverted_index": ON},
        },
        "keys": {
            "#embedding": {"float_list": {"vector_index": {"enabled": True, "config": embedding}}},
            "#document": {"string": {"fts_index": ON, "string_inverted_index": OFF}},
        },
    }


def test_a_plain_create_answers_the_local_default(client):
    c = client.create_collection("plain")
    got = raw_schema(c)
    # num_threads is the server's CPU count.
    ncpu = got["defaults"]["float_list"]["vector_index"]["config"]["hnsw"]["num_threads"]
    assert isinstance(ncpu, int) and ncpu >= 1
    vector = {"space": "l2", "embedding_function": DEFAULT_EF, "hnsw": hnsw_block(ncpu)}
    assert got == local_default(vector)
    assert c.configuration_json == {
        "hnsw": {"space": "l2", "ef_construction": 100, "ef_search": 100, "max_neighbors": 16,
                 "resize_factor": 1.2, "sync_threshold": 1000},
        "spann": None,
        "embedding_function": DEFAULT_EF,
    }
    assert raw_schema(client.get_collection("plain")) == got
    assert [raw_schema(x) for x in client.list_collections()] == [got]
    # The client's untouched Schema() gives the same.
    assert raw_schema(client.create_collection("untouched", schema=Schema())) == got


def test_schema_round_trip_with_keys_and_a_vector_index(client):
    schema = Schema()
    schema.create_index(StringInvertedIndexConfig(), key="color")
    schema.create_index(IntInvertedIndexConfig(), key="rank")
    schema.create_index(VectorIndexConfig(space="cosine", hnsw=HnswIndexConfig(ef_search=50)))
    c = client.create_collection("keyed", schema=schema)
    got = raw_schema(c)
    assert got["keys"]["color"] == {"string": {"string_inverted_index": ON}}
    assert got["keys"]["rank"] == {"int": {"int_inverted_index": ON}}
    emb = got["keys"]["#embedding"]["float_list"]["vector_index"]["config"]
    assert emb["space"] == "cosine" and emb["source_key"] == "#document"
    assert emb["hnsw"]["ef_search"] == 50 and emb["hnsw"]["max_neighbors"] == 16
    assert c.configuration_json["hnsw"]["space"] == "cosine"
    assert c.configuration_json["hnsw"]["ef_search"] == 50
    # Stored: later reads and get_or_create (with any schema) answer the same.
    assert raw_schema(client.get_collection("keyed")) == got
    assert raw_schema(client.get_or_create_collection("keyed", schema=Schema())) == got
    assert raw_schema(client.get_or_create_collection("keyed")) == got
    # The client reads its own Schema back from it.
    assert client.get_collection("keyed").schema.keys["color"].string.string_inverted_index.enabled
    # The cosine space is the collection's.
    c.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [10.0, 1.0]])
    # (l2 would put b first)
    res = c.query(query_embeddings=[[100.0, 0.0]], n_results=2, include=["distances"])
    assert res["ids"] == [["a", "b"]]
    assert res["distances"][0][0] == pytest.approx(0.0, abs=1e-6)


def test_disabled_inverted_indexes_refuse_filters(client):
    schema = Schema()
    schema.delete_index(StringInvertedIndexConfig(), key="tag")
    c = client.create_collection("no-tag-index", schema=schema)
    assert raw_schema(c)["keys"]["tag"] == {"string": {"string_inverted_index": OFF}}
    c.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]],
          metadatas=[{"tag": "x", "n": 1}, {"tag": "y", "n": 2}])
    message = "Cannot filter using metadata key 'tag' with type 'Str' because indexing is disabled"
    for call in (
        lambda: c.get(where={"tag": "x"}),
        lambda: c.query(query_embeddings=[[1.0, 0.0]], n_results=1, where={"tag": "x"}),
        lambda: c.delete(where={"$or": [{"n": 5}, {"tag": {"$in": ["x"]}}]}),
    ):
        with pytest.raises(InvalidArgumentError) as e:
            call()
        assert str(e.value) == message
    assert c.count() == 2
    # Other keys filter; ids alone are never checked.
    assert c.get(where={"n": 2})["ids"] == ["b"]
    assert c.get(ids=["a"], include=["metadatas"])["metadatas"] == [{"tag": "x", "n": 1}]
    c.delete(ids=["a"])
    assert c.count() == 1

    # Disabled defaults refuse every key of that type, even one never written.
    schema = Schema()
    schema.delete_index(IntInvertedIndexConfig())
    d = client.create_collection("no-int-index", schema=schema)
    d.add(ids=["a"], embeddings=[[1.0]], metadatas=[{"n": 1}])
    with pytest.raises(InvalidArgumentError) as e:
        d.get(where={"never": {"$gt": 1}})
    assert str(e.value) == (
        "Cannot filter using metadata key 'never' with type 'Int' because indexing is disabled"
    )
    assert d.get(where={"n": "1"})["ids"] == []


def test_full_text_search_off(client):
    schema = Schema()
    schema.delete_index(FtsIndexConfig(), key="#document")
    c = client.create_collection("no-fts", schema=schema)
    assert raw_schema(c)["keys"]["#document"]["string"]["fts_index"] == OFF
    assert raw_schema(client.get_collection("no-fts"))["keys"]["#document"]["string"]["fts_index"] == OFF
    c.add(ids=["a"], embeddings=[[1.0, 0.0]], documents=["hello world"])
    message = "Cannot filter using full-text search because FTS indexing is disabled"
    for call in (
        lambda: c.get(where_document={"$contains": "hello"}),
        lambda: c.get(where={"#document": {"$contains": "hello"}}),
        lambda: c.query(query_embeddings=[[1.0, 0.0]], n_results=1,
                        where_document={"$regex": "h.*"}),
        lambda: c.delete(where_document={"$contains": "hello"}),
    ):
        with pytest.raises(InvalidArgumentError) as e:
            call()
        assert str(e.value) == message
    # Documents are still stored and returned.
    assert c.get(ids=["a"])["documents"] == ["hello world"]


def test_schema_errors(client):
    # A sparse index is refused by a local server, also for a name that exists.
    schema = Schema()
    schema.create_index(SparseVectorIndexConfig(), key="sparse")
    message = ("Failed to reconcile schema: Invalid schema input: "
               "Sparse vector indexing is not enabled in local")
    with pytest.raises(InvalidArgumentError) as e:
        client.create_collection("sparse", schema=schema)
    assert str(e.value) == message
    client.create_collection("exists")
    with pytest.raises(InvalidArgumentError) as e:
        client.get_or_create_collection("exists", schema=schema)
    assert str(e.value) == message

    # A non-default schema with a non-default configuration.
    schema = Schema()
    schema.delete_index(StringInvertedIndexConfig(), key="tag")
    with pytest.raises(InvalidArgumentError) as e:
        client.create_collection("both", schema=schema, configuration={"hnsw": {"space": "ip"}})
    assert str(e.value) == (
        "Failed to reconcile schema: Cannot set both collection config and schema simultaneously"
    )
    assert [c.name for c in client.list_collections()] == ["exists"]


def test_modify_changes_the_schema_too(client):
    c = client.create_collection("modified")
    c.modify(configuration={"hnsw": {"ef_search": 77}})
    got = client.get_collection("modified")
    assert got.configuration_json["hnsw"]["ef_search"] == 77
    schema = raw_schema(got)
    assert schema["defaults"]["float_list"]["vector_index"]["config"]["hnsw"]["ef_search"] == 77
    assert schema["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["hnsw"]["ef_search"] == 77


def test_delete_and_recreate_gets_a_fresh_schema(client):
    schema = Schema()
    schema.delete_index(StringInvertedIndexConfig(), key="tag")
    first = client.create_collection("again", schema=schema)
    assert "tag" in raw_schema(first)["keys"]
    client.delete_collection("again")
    plain = client.get_or_create_collection("again")
    assert sorted(raw_schema(plain)["keys"]) == ["#document", "#embedding"]
    plain.add(ids=["a"], embeddings=[[1.0]], metadatas=[{"tag": "x"}])
    assert plain.get(where={"tag": "x"})["ids"] == ["a"]
    client.delete_collection("again")
    again = client.create_collection("again", schema=schema)
    assert raw_schema(again) == raw_schema(first)


def test_writes_discover_metadata_keys(client):
    c = client.create_collection("discovering", embedding_function=None)
    c.add(ids=["a"], embeddings=[[1.0]], metadatas=[{"color": "red"}])
    c.upsert(ids=["a"], embeddings=[[1.0]], metadatas=[{"color": 3}])
    c.update(ids=["a"], metadatas=[{"size": 1.5}])
    c.update(ids=["missing"], metadatas=[{"never": True}])
    keys = raw_schema(client.get_collection("discovering"))["keys"]
    assert keys["color"] == {
        "string": {"fts_index": OFF, "string_inverted_index": ON},
        "int": {"int_inverted_index": ON},
    }
    assert keys["size"] == {"float": {"float_inverted_index": ON}}
    assert "never" not in keys
    assert c.get(ids=["a"])["metadatas"] == [{"color": 3, "size": 1.5}]
