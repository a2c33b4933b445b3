#!/usr/bin/env bash
# Load benchmark: a release `chroma run` loaded with the dataset and indexed, then 64
# concurrent connections of mixed queries (a quarter filtered) and upserts (one request
# in ten) for 60 s. Reports throughput, p50/p99 per kind, failures, the server's memory
# before, at its peak and after the load, and how long SIGTERM takes to stop it.
#
#   scripts/bench-load.sh
#   CHROMA_LOAD_SECONDS=120 CHROMA_LOAD_CONNECTIONS=128 scripts/bench-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/dataset.sh
source "$root/scripts/dataset.sh"
export CHROMA_DEV_DATA="$data"
cargo build --release --locked -p chroma-functions --bin chroma
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export CHROMA_BIN="$target_dir/release/chroma"
exec cargo bench --locked -p chroma-tests --bench load
