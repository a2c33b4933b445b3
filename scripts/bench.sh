#!/usr/bin/env bash
# Engine benchmark on the shipped dataset (release build): ingest rate, time to indexed
# against a bare hnsw_rs build, query p50/p99, recall@10 (unfiltered, 62% and ~1%
# filters), cold open, peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
export CHROMA_DEV_DATA="${CHROMA_DEV_DATA:-$(pwd)/../shared/data/dev}"
exec cargo bench --locked -p chroma-core --bench engine
