"""Measures a Chroma-compatible server through the official Python client.

Usage: bench_http.py HOST PORT LABEL DATA_DIR [--reopened]
Prints one JSON object: the client's floor (heartbeat), ingest rate with batches of
1000, time until the server reports nothing unindexed, query p50/p99 and recall@10
(unfiltered and `year >= 2024`), measured once indexing is done. With `--reopened` it
only queries the collection an earlier run left (a server restarted over its data).

`CHROMA_BENCH_N=N` grows the dataset to N vectors as `scripts/bench-scale.sh` does
(normalised mixes of two real rows plus a little noise, with the first row's document
and metadata; deterministic) and computes the exact top-10 of every query.
"""

import json
import os
import sys
import time

import chromadb
import httpx
import numpy as np
import pyarrow.parquet as pq

BATCH = 1000
K = 10


def percentile(times, p):
    times = sorted(times)
    return times[round((len(times) - 1) * p)] * 1e3


def unit(rows):
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def exact_top(queries, base, allowed=None):
    """The exact cosine top-K of every query (rows outside `allowed` excluded)."""
    q, b = unit(queries.astype(np.float32)), unit(base.astype(np.float32))
    out = np.empty((len(q), K), dtype=np.int64)
    for first in range(0, len(q), 100):
        scores = q[first:first + 100] @ b.T
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        out[first:first + 100] = np.take_along_axis(top, order, axis=1)
    return out


def grown(base, meta, n):
    """The dataset grown to `n` rows (see the module docs)."""
    src = len(base)
    rng = np.random.default_rng(0x5CA1E)
    a, b = rng.integers(0, src, n - src), rng.integers(0, src, n - src)
    t = rng.uniform(0.3, 0.7, (n - src, 1)).astype(np.float32)
    noise = rng.uniform(-0.01, 0.01, (n - src, base.shape[1])).astype(np.float32)
    mixed = unit(t * base[a] + (1 - t) * base[b] + noise)
    base = np.concatenate([base, mixed.astype(np.float32)])
    meta = {
        k: v + [f"mix-{src + i}" for i in range(n - src)] if k == "id" else v + [v[j] for j in a]
        for k, v in meta.items()
    }
    return base, meta


def main():
    host, port, label, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    reopened = "--reopened" in sys.argv[5:]
    base = np.load(f"{data_dir}/base.npy")
    queries = np.load(f"{data_dir}/queries.npy")
    meta = pq.read_table(f"{data_dir}/base.parquet").to_pydict()
    n = int(os.environ.get("CHROMA_BENCH_N", len(base)))
    if n > len(base):
        base, meta = grown(base, meta, n)
        years = np.array(meta["year"])
        gt, gt_year = exact_top(queries, base), exact_top(queries, base, years >= 2024)
    else:
        gt = np.load(f"{data_dir}/gt_ids_top100.npy")
        gt_year = np.load(f"{data_dir}/gt_ids_top100_year_gte_2024.npy")
    ids = meta["id"]
    row_of = {id_: i for i, id_ in enumerate(ids)}
    metadatas = [
        {"year": int(y), "category": c, "ranked": bool(r)}
        for y, c, r in zip(meta["year"], meta["category"], meta["ranked"])
    ]

    client = chromadb.HttpClient(host=host, port=port)
    if reopened:
        collection = client.get_collection("bench", embedding_function=None)
        first = time.perf_counter()
        collection.query(query_embeddings=[queries[0]], n_results=K, include=["distances"])
        first = time.perf_counter() - first
        result = {"label": label, "first_query_ms": first * 1e3}
        result["query"] = run_queries(collection, queries, None, gt, row_of)
        print(json.dumps(result))
        return
    floor = []
    for _ in range(300):
        start = time.perf_counter()
        client.heartbeat()
        floor.append(time.perf_counter() - start)

    collection = client.create_collection(
        "bench", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    start = time.perf_counter()
    for first in range(0, len(ids), BATCH):
        last = min(first + BATCH, len(ids))
        collection.add(
            ids=ids[first:last],
            embeddings=base[first:last],
            documents=meta["text"][first:last],
            metadatas=metadatas[first:last],
        )
    acked = time.perf_counter() - start

    status_url = (
        f"http://{host}:{port}/api/v2/tenants/default_tenant/databases/default_database"
        f"/collections/{collection.id}/indexing_status"
    )
    indexed_after_last_add = None
    with httpx.Client() as http:
        deadline = time.perf_counter() + 600
        while time.perf_counter() < deadline:
            r = http.get(status_url)
            if r.status_code != 200:
                break
            if r.json().get("num_unindexed_ops", 1) == 0:
                indexed_after_last_add = time.perf_counter() - start - acked
                break
            time.sleep(0.02)

    def run(where, truth):
        return run_queries(collection, queries, where, truth, row_of)

    result = {
        "label": label,
        "vectors": len(ids),
        "client_floor_heartbeat_p50_ms": percentile(floor, 0.5),
        "ingest_vectors_per_s": len(ids) / acked,
        "ingest_seconds": acked,
        "indexed_seconds_after_last_add": indexed_after_last_add,
        "query": run(None, gt),
        "query_year_gte_2024": run({"year": {"$gte": 2024}}, gt_year),
    }
    print(json.dumps(result))


def run_queries(collection, queries, where, truth, row_of):
    times, recall = [], 0.0
    for q in range(len(queries)):
        t = time.perf_counter()
        res = collection.query(
            query_embeddings=[queries[q]], n_results=K, where=where, include=["distances"]
        )
        times.append(time.perf_counter() - t)
        rows = [row_of[i] for i in res["ids"][0]]
        recall += len(set(rows) & set(truth[q][:K].tolist())) / K
    return {
        "p50_ms": percentile(times, 0.5),
        "p99_ms": percentile(times, 0.99),
        "recall_at_10": recall / len(queries),
    }


if __name__ == "__main__":
    main()
