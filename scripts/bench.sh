#!/usr/bin/env bash
# Engine benchmark on the shipped dataset (release build): ingest rate, time to indexed
# against a bare hnsw_rs build, query p50/p99, recall@10 (unfiltered, 62% and ~1%
# filters), cold open, peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# The 20,000-vector dev dataset beside the repository when there, else the repository's
# 2,000-vector sample (tests/data/sample); CHROMA_DEV_DATA overrides both.
data="${CHROMA_DEV_DATA:-}"
if [ -z "$data" ]; then
  if [ -f "$root/../shared/data/dev/base.npy" ]; then data="$root/../shared/data/dev"; else data="$root/tests/data/sample"; fi
fi
export CHROMA_DEV_DATA="$data"
exec cargo bench --locked -p chroma-core --bench engine
