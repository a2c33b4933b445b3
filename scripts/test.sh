#!/usr/bin/env bash
# The one test command: formatting, lints, every Rust test (unit, conformance, property,
# recall, end-to-end, fault injection) and the Python compatibility tests against a server
# it starts — over the local backends and again over the AWS backends on moto's emulator.
# Installs what it needs (a Python virtualenv with the pinned chromadb client and moto),
# starts moto on a free loopback port, and stops everything it started. Supply-chain checks
# (scripts/audit.sh: cargo-deny against the offline advisory snapshot, cargo-audit too
# with CHROMA_CARGO_AUDIT=1) run
# first; then the SAM template's checks (cfn-lint, `sam validate --lint`, its security
# tests), the arm64 Lambda packages (scripts/package.sh) and a short fuzzing run of every
# target (scripts/fuzz.sh).
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
cleanup() {
  if declare -F moto_stop >/dev/null; then moto_stop; fi
  report
}
trap cleanup EXIT

fmt() { cargo fmt --all -- --check; }
clippy() {
  cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
  # The build without the AWS SDK has code of its own (the "no AWS support" paths).
  cargo clippy -p chroma-functions --all-targets --locked -- -D warnings
}
python_env() {
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
}
emulator() {
  export CHROMA_VENV="$venv"
  # shellcheck source=scripts/moto.sh
  source scripts/moto.sh
}
rust_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-features --locked --no-fail-fast
  else
    cargo test --workspace --all-features --locked --no-fail-fast
  fi
}
http_tests_on_aws() {
  # The same feature set as the test build above, so nothing is compiled again.
  if cargo nextest --version >/dev/null 2>&1; then
    CHROMA_TEST_BACKEND=aws cargo nextest run --workspace --all-features --locked --no-fail-fast \
      -E 'binary(e2e) & test(/^http::/)'
  else
    CHROMA_TEST_BACKEND=aws cargo test -p chroma-tests --all-features --locked --no-fail-fast --test e2e http
  fi
}
chroma_bin() {
  # The same feature set as the test build (dev-dependencies included), so nothing is
  # compiled twice.
  cargo build --workspace --all-features --tests --bins --locked
  local target_dir
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  export CHROMA_BIN="$target_dir/debug/chroma"
}
python_tests() {
  CHROMA_TEST_BACKEND=local "$venv/bin/python" -m pytest -q tests/python
}
python_tests_on_aws() {
  CHROMA_TEST_BACKEND=aws "$venv/bin/python" -m pytest -q tests/python
}

supply_chain() { scripts/audit.sh; }
template() { scripts/check-template.sh; }
package() {
  # The four Lambda bootstraps for arm64, as `sam build` makes them (cached with the
  # other builds under CARGO_TARGET_DIR).
  scripts/package.sh
}
fuzz() {
  # A short run of every fuzz target from its committed corpus; the instrumented build is
  # cached outside the clone when CHROMA_FUZZ_TARGET is set (as .ci/run does).
  FUZZ_SECONDS="${FUZZ_SECONDS:-15}" scripts/fuzz.sh
}

phase "cargo fmt" fmt
phase "cargo clippy" clippy
phase "supply chain" supply_chain
phase "python env" python_env
phase "start moto" emulator
phase "rust tests" rust_tests
phase "http tests on aws" http_tests_on_aws
phase "build chroma" chroma_bin
phase "python tests" python_tests
phase "python tests on aws" python_tests_on_aws
phase "template checks" template
phase "package lambdas" package
phase "fuzz" fuzz
