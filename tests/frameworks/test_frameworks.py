"""LangChain's and LlamaIndex's Chroma vector stores over `chromadb.HttpClient` against
`chroma run`, with deterministic local embeddings: documents added, similarity search
with scores checked against an exact computation, metadata filters, MMR, deletes, and
the same answers after the server restarts on its data directory."""

import math

import chromadb
from chromadb.config import Settings
from langchain_chroma import Chroma
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores import ExactMatchFilter, MetadataFilters, VectorStoreQuery
from llama_index.vector_stores.chroma import ChromaVectorStore

TEXTS = [
    ("alpha", "fruit", "apples grow on trees"),
    ("beta", "fruit", "bananas are yellow"),
    ("gamma", "veg", "carrots are orange roots"),
    ("delta", "veg", "dark leafy greens"),
    ("epsilon", "fruit", "cherries come in pairs"),
    ("zeta", "grain", "wheat makes bread"),
]


def client_of(server):
    return chromadb.HttpClient(host="127.0.0.1", port=server.port,
                               settings=Settings(anonymized_telemetry=False))


def l2(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b))


def test_langchain_chroma(server):
    emb = DeterministicFakeEmbedding(size=16)
    store = Chroma(collection_name="langchain-docs", embedding_function=emb, client=client_of(server))
    ids = store.add_documents(
        [Document(page_content=text, metadata={"topic": topic}) for _, topic, text in TEXTS],
        ids=[name for name, _, _ in TEXTS],
    )
    assert ids == [name for name, _, _ in TEXTS]

    query = "sweet fruit"
    q = emb.embed_query(query)
    exact = sorted((l2(q, emb.embed_documents([text])[0]), name) for name, _, text in TEXTS)
    got = store.similarity_search_with_score(query, k=3)
    assert [d.id for d, _ in got] == [name for _, name in exact[:3]]
    for (_, score), (distance, _) in zip(got, exact):
        assert math.isclose(score, distance, rel_tol=1e-4), (score, distance)

    fruit = store.similarity_search(query, k=5, filter={"topic": "fruit"})
    assert sorted(d.id for d in fruit) == ["alpha", "beta", "epsilon"]
    assert all(d.metadata["topic"] == "fruit" for d in fruit)
    by_text = store.similarity_search(query, k=5, where_document={"$contains": "orange"})
    assert [d.id for d in by_text] == ["gamma"]

    mmr = store.max_marginal_relevance_search(query, k=2, fetch_k=6, lambda_mult=0.5)
    assert len(mmr) == 2 and len({d.id for d in mmr}) == 2
    assert mmr[0].id == exact[0][1], "MMR starts from the nearest document"

    store.delete(ids=["zeta"])
    assert len(store.get()["ids"]) == 5

    # The same answers after a restart on the same data.
    server.stop()
    server.start()
    again = Chroma(collection_name="langchain-docs", embedding_function=emb, client=client_of(server))
    got_again = again.similarity_search_with_score(query, k=3)
    assert [d.id for d, _ in got_again] == [d.id for d, _ in got]
    assert len(again.get()["ids"]) == 5


def vector(i):
    return [math.cos(i), math.sin(i), 1.0 + i / 10]


def test_llama_index_chroma_vector_store(server):
    collection = client_of(server).get_or_create_collection("llama-nodes")
    store = ChromaVectorStore(chroma_collection=collection)
    nodes = [
        TextNode(id_=name, text=text, metadata={"topic": topic}, embedding=vector(i))
        for i, (name, topic, text) in enumerate(TEXTS)
    ]
    assert store.add(nodes) == [name for name, _, _ in TEXTS]
    q = vector(2.2)
    exact = sorted((l2(q, vector(i)), name) for i, (name, _, _) in enumerate(TEXTS))

    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3))
    assert res.ids == [name for _, name in exact[:3]]
    assert [n.get_content() for n in res.nodes] == [
        next(t for n, _, t in TEXTS if n == name) for _, name in exact[:3]
    ]
    veg = store.query(VectorStoreQuery(
        query_embedding=q, similarity_top_k=5,
        filters=MetadataFilters(filters=[ExactMatchFilter(key="topic", value="veg")])))
    assert sorted(veg.ids) == ["delta", "gamma"]

    store.delete_nodes(node_ids=["gamma"])
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3))
    assert "gamma" not in res.ids and len(res.ids) == 3

    server.stop()
    server.start()
    reopened = ChromaVectorStore(chroma_collection=client_of(server).get_collection("llama-nodes"))
    assert reopened.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3)).ids == res.ids
