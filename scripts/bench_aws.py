"""Times single-record upserts and queries through the official client: one line per
server with p50/p99 in milliseconds. Usage: bench_aws.py HOST PORT LABEL"""

import statistics
import sys
import time

import chromadb
import numpy as np
from chromadb.config import Settings

N = 100


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    host, port, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    client = chromadb.HttpClient(host=host, port=port, settings=Settings(anonymized_telemetry=False))
    col = client.get_or_create_collection("bench", embedding_function=None)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((N + 10, 384)).astype(np.float32)
    for i in range(10):  # warm-up: connections, data key, first batches
        col.upsert(ids=[f"w{i}"], embeddings=[vectors[N + i].tolist()])
        col.query(query_embeddings=[vectors[N + i].tolist()], n_results=10)
    writes, queries = [], []
    for i in range(N):
        t = time.perf_counter()
        col.upsert(ids=[f"r{i}"], embeddings=[vectors[i].tolist()], documents=[f"doc {i}"])
        writes.append((time.perf_counter() - t) * 1e3)
    for i in range(N):
        t = time.perf_counter()
        col.query(query_embeddings=[vectors[i].tolist()], n_results=10)
        queries.append((time.perf_counter() - t) * 1e3)
    print(
        f"{label:6s} write p50 {statistics.median(writes):7.2f} ms  p99 {percentile(writes, 0.99):7.2f} ms"
        f"   query p50 {statistics.median(queries):7.2f} ms  p99 {percentile(queries, 0.99):7.2f} ms"
    )


if __name__ == "__main__":
    main()
