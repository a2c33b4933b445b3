"""Search (Chroma Cloud's `collection.search`, served self-hosted) through the official
client's own builders — `Search`, `Knn`, `Rrf`, `GroupBy`, `Key`, `SparseVector` — checked
against an exact computation in the test: filters with ids and documents, rank
expressions, grouping, pages, selected fields; and, on a `--knn-index spann` server, a
hybrid dense + BM25 search whose sparse vectors the client computes itself from the
schema's embedding function."""

import pytest
from chromadb import Knn, K, Rrf, Schema, Search, SparseVector, SparseVectorIndexConfig
from chromadb.execution.expression.operator import GroupBy, MaxK, MinK
from chromadb.utils.embedding_functions import chroma_bm25_embedding_function
from chromadb.utils.embedding_functions.chroma_bm25_embedding_function import (
    ChromaBm25EmbeddingFunction,
)


TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a fox in the henhouse",
    "quick thinking saves the day",
    "slow and steady wins the race",
    "the fox and the quick hare were quick to run off",
    "dogs and cats living together",
    "a quick fox",
    "weather report for the coming week",
    "fox hunting is banned in some countries since many years ago",
    "the quickest route home",
    "brown bears eat salmon",
    "quick quick quick",
]


def vector(i):
    """A deterministic 4-d embedding with no two records at the same distance."""
    return [float(i), float((i * 7) % 5), float((i * 3) % 4) * 0.5, 1.0]


def l2(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b))


@pytest.fixture
def records(client):
    c = client.create_collection("searchable", embedding_function=None)
    c.add(
        ids=[f"r{i}" for i in range(len(TEXTS))],
        embeddings=[vector(i) for i in range(len(TEXTS))],
        documents=TEXTS,
        metadatas=[{"cat": "ab"[i % 2], "n": i, "p": (i * 5) % 3} for i in range(len(TEXTS))],
    )
    return c


def test_dense_search_with_filters_matches_an_exact_computation(records):
    q = [4.2, 1.0, 0.5, 1.0]
    allowed = {"r1", "r2", "r4", "r6", "r8", "r9", "r10"}
    search = (
        Search()
        .where((K("cat") == "a") & K.ID.is_in(sorted(allowed)) & K.DOCUMENT.contains("o"))
        .rank(Knn(query=q, limit=50))
        .limit(3, offset=1)
        .select(K.DOCUMENT, K.SCORE, "n")
    )
    res = records.search(search)
    exact = sorted(
        (l2(q, vector(i)), f"r{i}")
        for i in range(len(TEXTS))
        if i % 2 == 0 and f"r{i}" in allowed and "o" in TEXTS[i]
    )[1:4]
    assert res["ids"][0] == [rid for _, rid in exact]
    assert res["scores"][0] == pytest.approx([d for d, _ in exact], rel=1e-5)
    assert res["select"][0] == ["#document", "#score", "n"]
    rows = res.rows()[0]
    for row in rows:
        i = int(row["id"][1:])
        assert row["document"] == TEXTS[i]
        assert row["metadata"] == {"n": i}
        assert "embedding" not in row
    assert res["embeddings"] == [None]


def test_rank_arithmetic_group_by_and_several_searches(records):
    a, b = [0.0, 0.0, 0.0, 1.0], [11.0, 0.0, 0.0, 1.0]
    # Both knns give a default: every record either finds is ranked.
    rank = Knn(query=a, limit=4, default=500.0) * 0.5 + Knn(query=b, limit=4, default=500.0)
    grouped = (
        Search()
        .rank(Knn(query=a, limit=12))
        .group_by(GroupBy(keys=K("cat"), aggregate=MinK(keys=K.SCORE, k=2)))
        .select(K.SCORE)
    )
    by_p = (
        Search()
        .rank(Knn(query=a, limit=12))
        .group_by(GroupBy(keys=[K("cat")], aggregate=MaxK(keys=[K("p"), K.SCORE], k=1)))
    )
    res = records.search([Search().rank(rank).select(K.SCORE), grouped, by_p])

    da = {f"r{i}": l2(a, vector(i)) for i in range(len(TEXTS))}
    db = {f"r{i}": l2(b, vector(i)) for i in range(len(TEXTS))}
    near_a = sorted(da, key=da.get)[:4]
    near_b = sorted(db, key=db.get)[:4]
    combined = {
        rid: 0.5 * (da[rid] if rid in near_a else 500.0) + (db[rid] if rid in near_b else 500.0)
        for rid in set(near_a) | set(near_b)
    }
    want = sorted(combined, key=combined.get)
    assert res["ids"][0] == want
    assert res["scores"][0] == pytest.approx([combined[r] for r in want], rel=1e-5)

    by_cat = {}
    for rid in sorted(da, key=da.get):
        by_cat.setdefault("ab"[int(rid[1:]) % 2], []).append(rid)
    best_two = sorted((r for group in by_cat.values() for r in group[:2]), key=da.get)
    assert res["ids"][1] == best_two

    # Highest p, then highest score (the farthest), per category.
    def key(rid):
        i = int(rid[1:])
        return ((i * 5) % 3, da[rid])

    best = [max(group, key=key) for group in by_cat.values()]
    assert res["ids"][2] == sorted(best, key=da.get)
    assert res["select"] == [["#score"], ["#score"], []]


def test_search_without_a_rank_pages_in_storage_order(records):
    res = records.search(Search().where(K("n") >= 3).limit(4, offset=2).select(K.METADATA))
    assert res["ids"][0] == ["r5", "r6", "r7", "r8"]
    assert res["metadatas"][0][0] == {"cat": "b", "n": 5, "p": 1}


def test_a_local_server_refuses_sparse_vectors_as_chroma_does(client):
    c = client.create_collection("dense-only", embedding_function=None)
    with pytest.raises(Exception) as e:
        c.add(ids=["a"], embeddings=[[1.0, 2.0]],
              metadatas=[{"s": SparseVector(indices=[1, 3], values=[0.5, 0.25])}])
    assert "Sparse vector is not supported for local chroma: s" in str(e.value)
    assert c.count() == 0


def test_hybrid_rrf_over_dense_and_bm25_matches_an_exact_computation(spann_server, monkeypatch):
    # The chromadb-client 1.5.9 wheel lacks the JSON schemas its embedding functions check
    # their configuration against (the full `chromadb` package has them): skip that check.
    monkeypatch.setattr(chroma_bm25_embedding_function, "validate_config_schema", lambda *a: None)
    client = spann_server.client()
    client.reset()
    bm25 = ChromaBm25EmbeddingFunction()
    schema = Schema().create_index(
        config=SparseVectorIndexConfig(source_key=K.DOCUMENT, embedding_function=bm25), key="bm25"
    )
    c = client.create_collection("hybrid", schema=schema, embedding_function=None)
    ids = [f"r{i}" for i in range(len(TEXTS))]
    c.add(ids=ids, embeddings=[vector(i) for i in range(len(TEXTS))], documents=TEXTS)

    # The client wrote each document's BM25 vector into its metadata; they come back.
    stored = c.get(include=["metadatas"])
    sparse = {rid: m["bm25"] for rid, m in zip(stored["ids"], stored["metadatas"])}
    assert all(isinstance(v, SparseVector) for v in sparse.values())
    own = bm25([TEXTS[11]])[0]
    assert sparse["r11"].indices == own.indices
    assert sparse["r11"].values == pytest.approx(own.values, rel=1e-6)  # stored as f32

    q_dense = [3.0, 1.0, 1.0, 1.0]
    q_text = "quick fox"
    rrf = Rrf(
        [Knn(query=q_dense, limit=6, return_rank=True, default=1000.0),
         Knn(query=q_text, key="bm25", limit=6, return_rank=True, default=1000.0)],
        k=60,
        weights=[1.0, 2.0],
    )
    res = c.search(Search().rank(rrf).limit(8).select(K.SCORE, K.DOCUMENT, "bm25"))

    # The exact computation: ranks in each list, defaults for the missing, RRF.
    dense = sorted(ids, key=lambda r: l2(q_dense, vector(int(r[1:]))))[:6]
    q = bm25.embed_query([q_text])[0]
    qmap = dict(zip(q.indices, q.values))

    def sparse_score(rid):
        v = sparse[rid]
        shared = [qmap[i] * x for i, x in zip(v.indices, v.values) if i in qmap]
        return 1.0 - sum(shared) if shared else None

    scored = {rid: sparse_score(rid) for rid in ids}
    candidates = sorted((s, ids.index(r), r) for r, s in scored.items() if s is not None)
    assert len({s for s, _, _ in candidates}) == len(candidates), "distinct BM25 scores"
    keyword = [r for _, _, r in candidates][:6]
    rrf_score = {
        rid: -(1.0 / (60 + (dense.index(rid) if rid in dense else 1000.0))
               + 2.0 / (60 + (keyword.index(rid) if rid in keyword else 1000.0)))
        for rid in set(dense) | set(keyword)
    }
    want = sorted(rrf_score, key=lambda r: (rrf_score[r], r))[:8]
    assert res["ids"][0] == want
    assert res["scores"][0] == pytest.approx([rrf_score[r] for r in want], rel=1e-5)
    for row in res.rows()[0]:
        i = int(row["id"][1:])
        assert row["document"] == TEXTS[i]
        assert row["metadata"]["bm25"] == sparse[row["id"]]

    # A sparse vector given directly; a filter on the text.
    res = c.search(
        Search()
        .where(K.DOCUMENT.contains("quick"))
        .rank(Knn(query=q, key="bm25", limit=3))
        .select(K.SCORE)
    )
    want = [r for _, _, r in candidates if "quick" in TEXTS[int(r[1:])]][:3]
    assert res["ids"][0] == want


def test_malformed_searches_are_refused_with_the_field_named(records):
    with pytest.raises(Exception) as e:
        records.search(Search().rank(Knn(query=[1.0, 2.0])))
    assert "dimension" in str(e.value)
    with pytest.raises(Exception) as e:
        records.search(Search().rank(Knn(query=SparseVector(indices=[1], values=[1.0]), key="s")))
    assert "Cannot filter using metadata key 's' with type 'SparseVector'" in str(e.value)
