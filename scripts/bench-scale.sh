#!/usr/bin/env bash
# Scale benchmark: scripts/bench-scale.sh [N] (default 100000). Grows the dataset to N
# vectors (real rows, then normalised mixes of two real rows plus noise), computes the
# exact top-100 once (cached in CHROMA_SCALE_CACHE, default ~/.cache/chroma-scale) and
# reports ingest, build CPU against a bare hnsw_rs build, memory, disk, warm and cold
# queries (local files with the page cache dropped, and a modelled S3) and recall@10.
# The collection is written under CHROMA_SCALE_DIR (default: the temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/dataset.sh
source "$root/scripts/dataset.sh"
export CHROMA_DEV_DATA="$data"
export CHROMA_SCALE_N="${1:-100000}"
exec cargo bench --locked -p chroma-core --bench scale
