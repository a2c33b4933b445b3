"""Measures a Chroma-compatible server through the official Python client.

Usage: bench_http.py HOST PORT LABEL DATA_DIR
Prints one JSON object: the client's floor (heartbeat), ingest rate with batches of
1000, time until the server reports nothing unindexed, query p50/p99 and recall@10
(unfiltered and `year >= 2024`), measured once indexing is done.
"""

import json
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


def main():
    host, port, label, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    base = np.load(f"{data_dir}/base.npy")
    queries = np.load(f"{data_dir}/queries.npy")
    gt = np.load(f"{data_dir}/gt_ids_top100.npy")
    gt_year = np.load(f"{data_dir}/gt_ids_top100_year_gte_2024.npy")
    meta = pq.read_table(f"{data_dir}/base.parquet").to_pydict()
    ids = meta["id"]
    row_of = {id_: i for i, id_ in enumerate(ids)}
    metadatas = [
        {"year": int(y), "category": c, "ranked": bool(r)}
        for y, c, r in zip(meta["year"], meta["category"], meta["ranked"])
    ]

    client = chromadb.HttpClient(host=host, port=port)
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

    result = {
        "label": label,
        "client_floor_heartbeat_p50_ms": percentile(floor, 0.5),
        "ingest_vectors_per_s": len(ids) / acked,
        "ingest_seconds": acked,
        "indexed_seconds_after_last_add": indexed_after_last_add,
        "query": run(None, gt),
        "query_year_gte_2024": run({"year": {"$gte": 2024}}, gt_year),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
