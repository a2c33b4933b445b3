#!/usr/bin/env bash
# Our server against Chroma 1.5.9's own, through the official Python client, on the dev
# dataset, in one run on one machine: ingest rate (batches of 1000), time until indexed,
# query p50/p99 and recall@10 unfiltered and with `year >= 2024`, the client's floor, and
# each server's resident memory once indexed and again after a restart and a pass of
# queries. `CHROMA_BENCH_N=100000` grows the dataset to 100k vectors (see bench_http.py).
# Installs chromadb==1.5.9 (server included) in a virtualenv; starts and stops both
# servers.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/dataset.sh
source "$root/scripts/dataset.sh"
venv="${CHROMA_BENCH_VENV:-/var/tmp/chroma-bench-venv}"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check chromadb==1.5.9 pyarrow numpy
cargo build --release --locked -p chroma-functions --bin chroma
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() {
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$1/api/v2/heartbeat" >/dev/null && return 0
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2; return 1
}
rss_mib() { # pid: resident memory of the process and its descendants, MiB
  python3 - "$1" <<'PY'
import sys
todo, kib = [sys.argv[1]], 0
while todo:
    pid = todo.pop()
    try:
        kib += next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
        todo += open(f"/proc/{pid}/task/{pid}/children").read().split()
    except (OSError, StopIteration):
        pass
print(f"{kib / 1024:.1f}")
PY
}
start_server() { # label command...: starts it on a free port, sets `port`
  local label=$1; shift
  port=$(free_port)
  "$@" --port "$port" >> "$work/$label.log" 2>&1 &
  pids+=($!)
  wait_up "$port"
}
stop_server() {
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
}
# Ingests, waits until indexed and queries; takes the server's RSS; restarts it over
# the same data, queries again and takes its RSS again.
measure() { # label command...
  local label=$1
  start_server "$@"
  "$venv/bin/python" scripts/bench_http.py 127.0.0.1 "$port" "$label" "$data" > "$work/$label.json"
  local loaded; loaded=$(rss_mib "${pids[-1]}")
  stop_server
  start_server "$@"
  "$venv/bin/python" scripts/bench_http.py 127.0.0.1 "$port" "$label" "$data" --reopened > "$work/$label.reopened.json"
  local restarted; restarted=$(rss_mib "${pids[-1]}")
  stop_server
  python3 - "$work/$label.json" "$work/$label.reopened.json" "$loaded" "$restarted" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
result["reopened"] = json.load(open(sys.argv[2]))
result["rss_after_load_mib"], result["rss_after_restart_mib"] = map(float, sys.argv[3:5])
json.dump(result, open(sys.argv[1], "w"))
PY
  cat "$work/$label.json"
}

CHROMA_MASTER_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))') \
  measure ours "$target_dir/release/chroma" run --path "$work/ours"
measure chroma "$venv/bin/chroma" run --path "$work/chroma"

python3 - "$work/ours.json" "$work/chroma.json" <<'PY'
import json, sys
ours, theirs = (json.load(open(p)) for p in sys.argv[1:3])
def row(name, a, b, unit, better):
    ratio = a / b if b else float("nan")
    print(f"{name:<44} ours {a:>10.3f} {unit:<10} chroma {b:>10.3f} {unit:<10} ratio {ratio:6.3f} ({better})")
print(f"Python client 1.5.9 over HTTP, {ours['vectors']} x 384 (cosine), k=10")
row("client floor: heartbeat p50", ours["client_floor_heartbeat_p50_ms"], theirs["client_floor_heartbeat_p50_ms"], "ms", "lower is better")
row("ingest, batches of 1000 (acknowledged)", ours["ingest_vectors_per_s"], theirs["ingest_vectors_per_s"], "vectors/s", "higher is better")
row("ingest wall time", ours["ingest_seconds"], theirs["ingest_seconds"], "s", "lower is better")
print(f"{'indexed after last add':<44} ours {ours['indexed_seconds_after_last_add']} s, chroma {theirs['indexed_seconds_after_last_add']} s")
if ours["indexed_seconds_after_last_add"] is not None:
    total = ours["ingest_seconds"] + ours["indexed_seconds_after_last_add"]
    print(f"{'ours: first add to fully indexed':<44} {total:.3f} s vs chroma's ingest {theirs['ingest_seconds']:.3f} s")
for key, label in (("query", "query"), ("query_year_gte_2024", "query year >= 2024")):
    row(f"{label} p50", ours[key]["p50_ms"], theirs[key]["p50_ms"], "ms", "lower is better")
    row(f"{label} p99", ours[key]["p99_ms"], theirs[key]["p99_ms"], "ms", "lower is better")
    row(f"{label} recall@10", ours[key]["recall_at_10"], theirs[key]["recall_at_10"], "", "higher is better")
print(f"ours: filtered p50 / unfiltered p50 = {ours['query_year_gte_2024']['p50_ms'] / ours['query']['p50_ms']:.2f}")
row("server RSS once indexed and queried", ours["rss_after_load_mib"], theirs["rss_after_load_mib"], "MiB", "lower is better")
row("server RSS after a restart and queries", ours["rss_after_restart_mib"], theirs["rss_after_restart_mib"], "MiB", "lower is better")
row("after a restart: first query", ours["reopened"]["first_query_ms"], theirs["reopened"]["first_query_ms"], "ms", "lower is better")
row("after a restart: query p50", ours["reopened"]["query"]["p50_ms"], theirs["reopened"]["query"]["p50_ms"], "ms", "lower is better")
row("after a restart: recall@10", ours["reopened"]["query"]["recall_at_10"], theirs["reopened"]["query"]["recall_at_10"], "", "higher is better")
PY
