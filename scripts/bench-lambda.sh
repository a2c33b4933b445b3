#!/usr/bin/env bash
# Cold start and warm latency of the `query` Lambda function against the AWS backends on
# moto. The release `query` bootstrap (host architecture) runs under a minimal Lambda
# Runtime API (scripts/lambda_runtime.py), the way the Lambda service starts it: the
# report is the time from process start to the first answered query event, warm p50/p99
# over the following invocations, and peak memory. The collection (N records of the dev
# dataset, 384 dimensions, compacted into a segment) is loaded beforehand through
# `chroma run --backend aws`.
#
#   scripts/bench-lambda.sh            # N=10000, 200 invocations, release build
#   N=50000 INVOCATIONS=500 scripts/bench-lambda.sh
#   PROFILE=dev scripts/bench-lambda.sh   # the test build instead (slower code, no release build)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CHROMA_VENV="${CHROMA_VENV:-$root/.venv}"
N="${N:-10000}"
INVOCATIONS="${INVOCATIONS:-200}"
PROFILE="${PROFILE:-release}"
# shellcheck source=scripts/dataset.sh
source "$root/scripts/dataset.sh"
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
cargo build --profile "$PROFILE" --locked -p chroma-functions --features lambda --bin query --bin chroma
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin_dir="$target_dir/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"
chroma="$bin_dir/chroma"
# shellcheck source=scripts/moto.sh
source scripts/moto.sh

"$chroma" aws init --bucket bench-lambda --table-prefix bench-lambda- \
  --compaction-queue bench-lambda-compaction.fifo > "$work/env" 2> /dev/null
# shellcheck disable=SC1091
source "$work/env"
key=$("$chroma" keys create --backend aws --grant '*/*/*:read,write,admin' --name bench | tail -n 1)

"$chroma" run --backend aws --auth --port 0 > "$work/server.out" 2> "$work/server.log" &
server=$!
for _ in $(seq 1 300); do
  grep -q "listening on" "$work/server.out" 2>/dev/null && break
  sleep 0.1
done
port=$(sed -n 's/.*listening on http:\/\/[0-9.]*:\([0-9]*\).*/\1/p' "$work/server.out")
collection=$("$CHROMA_VENV/bin/python" - "$port" "$key" "$data" "$N" <<'PY'
import sys
import chromadb
import numpy as np
from chromadb.config import Settings
port, key, data, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
client = chromadb.HttpClient(host="127.0.0.1", port=port, headers={"X-Chroma-Token": key},
                             settings=Settings(anonymized_telemetry=False))
col = client.get_or_create_collection("bench", embedding_function=None,
                                      configuration={"hnsw": {"space": "cosine"}})
base = np.load(f"{data}/base.npy", mmap_mode="r")[:n]
for start in range(0, n, 1000):
    chunk = base[start:start + 1000]
    col.add(ids=[str(i) for i in range(start, start + len(chunk))], embeddings=chunk.tolist())
print(col.id)
PY
)
kill "$server"; wait "$server" 2>/dev/null || true; server=
"$chroma" compact --backend aws > /dev/null 2> "$work/compact.log"

"$CHROMA_VENV/bin/python" - "$data" "$key" "$collection" > "$work/event.json" <<'PY'
import json, sys
import numpy as np
data, key, collection = sys.argv[1:]
event = json.load(open("tests/events/apigw-query.json"))
query = np.load(f"{data}/queries.npy")[0].tolist()
event["headers"]["x-chroma-token"] = key
for field in ("rawPath",):
    event[field] = event[field].replace("__COLLECTION_ID__", collection)
event["requestContext"]["http"]["path"] = event["rawPath"]
event["pathParameters"]["collection_id"] = collection
event["body"] = json.dumps({"query_embeddings": [query], "n_results": 10, "include": ["distances"]})
print(json.dumps(event))
PY

echo "query function ($PROFILE build), $N records of 384 dimensions, on moto ($(nproc) cores):"
for run in 1 2 3; do
  rm -rf "${TMPDIR:-/tmp}/chroma-cache"
  python3 scripts/lambda_runtime.py "$bin_dir/query" "$work/event.json" "$INVOCATIONS"
done
