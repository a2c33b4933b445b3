#!/usr/bin/env bash
# One write and one query against the AWS backends on moto, next to the same calls on
# the local backends, in one run: the release `chroma` (with the `aws` feature) serves
# each in turn and scripts/bench_aws.py times single-record upserts and queries through
# the official Python client (p50/p99 over 100 each, after a warm-up).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CHROMA_VENV="${CHROMA_VENV:-$root/.venv}"
work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  if declare -F moto_stop >/dev/null; then moto_stop; fi
  rm -rf "$work"
}
trap cleanup EXIT

[ -x "$CHROMA_VENV/bin/python" ] || python3 -m venv "$CHROMA_VENV"
"$CHROMA_VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
cargo build --release --locked -p chroma-functions --features aws --bin chroma
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
chroma="$target_dir/release/chroma"
# shellcheck source=scripts/moto.sh
source scripts/moto.sh

serve() { # label, then env assignments for the server
  local label=$1; shift
  env "$@" CHROMA_MASTER_KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff \
    "$chroma" run --path "$work/data" --port 0 > "$work/$label.out" 2> "$work/$label.log" &
  server=$!
  for _ in $(seq 1 300); do
    grep -q "listening on" "$work/$label.out" 2>/dev/null && break
    sleep 0.1
  done
  local port
  port=$(sed -n 's/.*listening on http:\/\/[0-9.]*:\([0-9]*\).*/\1/p' "$work/$label.out")
  "$CHROMA_VENV/bin/python" scripts/bench_aws.py 127.0.0.1 "$port" "$label"
  kill "$server"; wait "$server" 2>/dev/null || true; server=
}

serve local CHROMA_BACKEND=local
"$chroma" aws init --bucket bench-aws --table-prefix bench-aws- > "$work/env" 2> /dev/null
# shellcheck disable=SC2046
serve aws $(sed 's/^export //' "$work/env" | tr -d "'")
