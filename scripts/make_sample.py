#!/usr/bin/env python3
"""Writes tests/data/sample: the test suite's own real-embedding dataset.

A slice of the `dev` benchmark dataset (sentence embeddings of one-line package summaries,
all-MiniLM-L6-v2, unit length) in the same layout, so the recall tests and benchmarks read
either one: the first BASE base rows with their metadata, the first QUERIES queries, and
the exact top-100 ground truth recomputed over the slice (inner product = cosine on unit
vectors; unfiltered and among rows with year >= 2024), by brute force in float64.

Usage: make_sample.py SOURCE_DIR OUT_DIR   (needs numpy and pyarrow)
The committed output is what the tests use; rerun only to change the sample.
"""

import sys

import numpy as np
import pyarrow.parquet as pq

BASE = 2000
QUERIES = 100
TOP = 100


def top(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    scores = np.where(allowed[None, :], scores, -np.inf)
    # Best first; ties by row index (a stable sort of the negated scores).
    order = np.argsort(-scores, axis=1, kind="stable")[:, :TOP]
    return order.astype(np.int32)


def main(source: str, out: str) -> None:
    base = np.load(f"{source}/base.npy")[:BASE].astype(np.float32)
    queries = np.load(f"{source}/queries.npy")[:QUERIES].astype(np.float32)
    table = pq.read_table(f"{source}/base.parquet").slice(0, BASE)
    table = table.select(["id", "text", "year", "category", "ranked"])
    years = np.asarray(table.column("year").to_pylist())
    scores = queries.astype(np.float64) @ base.astype(np.float64).T
    np.save(f"{out}/base.npy", base)
    np.save(f"{out}/queries.npy", queries)
    np.save(f"{out}/gt_ids_top100.npy", top(scores, np.ones(BASE, dtype=bool)))
    np.save(f"{out}/gt_ids_top100_year_gte_2024.npy", top(scores, years >= 2024))
    pq.write_table(table, f"{out}/base.parquet", compression="snappy")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
