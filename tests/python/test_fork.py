"""Forks (Chroma Cloud's `collection.fork` and `fork_count`, served self-hosted) through
the official client: a fork holds the source's configuration, metadata and every record,
checked record by record; then both sides diverge, the count is the lineage's, and the
fork outlives its source."""

import pytest


def vector(i):
    return [float(i % 7), float((i * 3) % 11), float((i * 5) % 13) * 0.5, 1.0 + i / 100]


def records(collection):
    got = collection.get(include=["embeddings", "documents", "metadatas"])
    return {
        i: ([round(float(x), 5) for x in e], d, m)
        for i, e, d, m in zip(got["ids"], got["embeddings"], got["documents"], got["metadatas"])
    }


def fill(collection, n):
    ids = [f"r{i}" for i in range(n)]
    collection.add(
        ids=ids,
        embeddings=[vector(i) for i in range(n)],
        documents=[f"document {i}" for i in range(n)],
        metadatas=[{"i": i, "even": i % 2 == 0, "tag": f"t{i % 3}"} for i in range(n)],
    )


def test_a_fork_holds_every_record_then_diverges(client):
    source = client.create_collection(
        "fork-source",
        metadata={"owner": "tests"},
        configuration={"hnsw": {"space": "cosine"}},
    )
    fill(source, 120)
    assert source.fork_count() == 0

    fork = source.fork("fork-copy")
    assert fork.name == "fork-copy"
    assert fork.id != source.id
    assert fork.metadata == {"owner": "tests"}
    assert fork.configuration_json == source.configuration_json
    assert client.get_collection("fork-copy").id == fork.id
    before = records(source)
    assert len(before) == 120
    assert records(fork) == before
    q = [vector(5)]
    assert fork.query(query_embeddings=q, n_results=10)["ids"] == source.query(
        query_embeddings=q, n_results=10
    )["ids"]
    assert source.fork_count() == 1
    assert fork.fork_count() == 1

    # Writes on either side stay there.
    fork.add(ids=["extra"], embeddings=[[9.0, 9.0, 9.0, 9.0]], documents=["fork only"])
    fork.update(ids=["r1"], embeddings=[vector(1)], documents=["changed in the fork"])
    source.delete(ids=["r2", "r3"])
    source.upsert(ids=["r4"], embeddings=[vector(40)], documents=["changed in the source"])
    assert source.count() == 118
    assert fork.count() == 121
    assert source.get(ids=["extra"])["ids"] == []
    assert fork.get(ids=["r2"])["ids"] == ["r2"]
    assert fork.get(ids=["r1"])["documents"] == ["changed in the fork"]
    assert source.get(ids=["r1"])["documents"] == ["document 1"]
    assert fork.get(ids=["r4"])["documents"] == ["document 4"]
    assert fork.get(where={"tag": "t1"}, where_document={"$contains": "fork"})["ids"] == ["r1"]

    # A fork of the fork counts in the same lineage; deleting the source leaves the
    # forks whole.
    grandchild = fork.fork("fork-grandchild")
    assert records(grandchild) == records(fork)
    assert source.fork_count() == 2
    client.delete_collection("fork-source")
    assert fork.count() == 121
    assert grandchild.fork_count() == 2
    assert fork.query(query_embeddings=[[9.0, 9.0, 9.0, 9.0]], n_results=1)["ids"] == [["extra"]]


def test_fork_onto_a_taken_name_fails_and_changes_nothing(client):
    source = client.create_collection("fork-taken-source")
    fill(source, 3)
    client.create_collection("fork-taken")
    with pytest.raises(Exception, match=r"Collection \[fork-taken\] already exists"):
        source.fork("fork-taken")
    assert client.get_collection("fork-taken").count() == 0
    assert source.fork_count() == 0


def test_a_spann_collection_forks_with_its_configuration(spann_server):
    client = spann_server.client()
    client.reset()
    source = client.create_collection(
        "fork-spann", configuration={"spann": {"space": "ip", "search_nprobe": 32}}
    )
    fill(source, 40)
    fork = source.fork("fork-spann-copy")
    assert fork.configuration_json["spann"] == source.configuration_json["spann"]
    assert records(fork) == records(source)
