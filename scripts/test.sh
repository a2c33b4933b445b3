#!/usr/bin/env bash
# The one test command: formatting, lints, every Rust test (unit, conformance, property,
# recall, end-to-end) and the Python compatibility tests against a server it starts.
# Installs what it needs (a Python virtualenv with the pinned chromadb client) and stops
# everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1
# The benchmark dataset (read-only, shipped beside the repository).
export CHROMA_DEV_DATA="${CHROMA_DEV_DATA:-$root/../shared/data/dev}"
venv="${CHROMA_VENV:-$root/.venv}"

declare -a timings=()
phase() {
  local name=$1; shift
  local start=$SECONDS
  echo "==> $name"
  "$@"
  timings+=("$(printf '%-28s %5ds' "$name" $((SECONDS - start)))")
}
report() {
  echo "==> phase timings"
  for t in "${timings[@]}"; do echo "    $t"; done
}
trap report EXIT

fmt() { cargo fmt --all -- --check; }
clippy() { cargo clippy --workspace --all-targets --locked -- -D warnings; }
rust_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
  else
    cargo test --workspace --locked --no-fail-fast
  fi
}
python_env() {
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
}
python_tests() {
  cargo build --locked -p chroma-functions --bin chroma
  local target_dir
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  CHROMA_BIN="$target_dir/debug/chroma" "$venv/bin/python" -m pytest -q tests/python
}

phase "cargo fmt" fmt
phase "cargo clippy" clippy
phase "rust tests" rust_tests
if [ -d tests/python ]; then
  phase "python env" python_env
  phase "python tests" python_tests
fi
