#!/usr/bin/env bash
# Engine benchmark on the shipped dataset (release build): ingest rate, time to indexed
# against a bare hnsw_rs build, query p50/p99, recall@10 (unfiltered, 62% and ~1%
# filters), cold open, peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/dataset.sh
source "$root/scripts/dataset.sh"
export CHROMA_DEV_DATA="$data"
exec cargo bench --locked -p chroma-core --bench engine
