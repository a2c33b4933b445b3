#!/usr/bin/env bash
# The one test command: formatting, lints, every Rust test (unit, conformance, property,
# recall, end-to-end, fault injection) and the Python compatibility tests against a server
# it starts — over the local backends and again over the AWS backends on moto's emulator —
# then LangChain's and LlamaIndex's Chroma stores, `chroma import --from-chroma` on persist
# directories the real Chroma writes, and the official JavaScript client's. Installs what
# it needs (a Python virtualenv with the pinned chromadb client, moto and the template
# checks' tools; the pinned JavaScript client with npm), starts moto on a free loopback
# port, and stops everything it started.
# Then the SAM template's checks (cfn-lint, `sam validate --lint`, its security tests).
# Beside all that, in a background lane at low priority (see `background` below): the
# supply-chain checks (scripts/audit.sh: cargo-deny against the offline advisory
# snapshot, cargo-audit too with CHROMA_CARGO_AUDIT=1), a short fuzzing run of every target
# (scripts/fuzz.sh) and one arm64 Lambda package (the query function, built without
# optimization; scripts/package.sh alone builds all four as `sam build` does).
#
# Build cost (2 cores): clippy's lints run inside the test build itself (clippy-driver as
# cargo's workspace wrapper), so dependencies are compiled once for lints, tests and the
# server binary alike; every later cargo call in the foreground reuses that build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1
# The recall tests read the repository's own sample (tests/data/sample) unless
# CHROMA_DEV_DATA names a larger dataset in the same layout.
venv="${CHROMA_VENV:-$root/.venv}"
# The full `chromadb` package (see full_chromadb_venv).
full_venv="${venv}-frameworks"

# Two lanes. The tests run in the foreground, in order. Beside them, in the background at
# the lowest CPU priority (nice 19), runs what only builds and inspects: the supply-chain
# checks, the arm64 Lambda package and the fuzzing run. A build keeps both cores busy only
# part of the time and the tests much less, so the background lane mostly uses cores the
# foreground leaves idle, and the foreground is barely slowed. The background lane's output
# goes to a log that is printed when it has finished (or when the foreground fails).
lanes=$(mktemp -d)
lane=foreground
phase() {
  local name=$1; shift
  local start=$SECONDS
  echo "==> $name"
  "$@"
  printf '%-28s %5ds\n' "$name" $((SECONDS - start)) >>"$lanes/timings.$lane"
}
background_pid=
background() { # the background lane: a subshell in its own process group
  set -m
  (
    set +m
    lane=background
    renice -n 19 -p "$BASHPID" >/dev/null
    background_lane
    echo "==> background lane done"
  ) >"$lanes/background.log" 2>&1 &
  background_pid=$!
  set +m
}
background_wait() {
  local status=0
  wait "$background_pid" || status=$?
  background_pid=
  echo "==> background lane (exit $status):"
  sed 's/^/    | /' "$lanes/background.log"
  return "$status"
}
# The background lane waits for the foreground's Python environment before it uses it
# (one pip at a time in a virtualenv).
venv_ready() { touch "$lanes/venv-ready"; }
await_venv() { while [ ! -e "$lanes/venv-ready" ]; do sleep 1; done; }
report() {
  echo "==> phase timings (foreground, then background; the lanes overlap)"
  local f
  for f in "$lanes/timings.foreground" "$lanes/timings.background"; do
    [ -s "$f" ] && sed 's/^/    /' "$f" && echo "    --"
  done
  echo "    total                        ${SECONDS}s"
}
cleanup() {
  if [ -n "$python_aws_pid" ]; then
    kill "$python_aws_pid" 2>/dev/null || true
    wait "$python_aws_pid" 2>/dev/null || true
  fi
  if [ -n "$background_pid" ]; then
    kill -- "-$background_pid" 2>/dev/null || true
    wait "$background_pid" 2>/dev/null || true
    echo "==> background lane stopped; its log so far:"
    sed 's/^/    | /' "$lanes/background.log"
  fi
  if declare -F moto_stop >/dev/null; then moto_stop; fi
  report
  rm -rf "$lanes"
}
trap cleanup EXIT

fmt() { cargo fmt --all -- --check; }
# Every cargo call below builds the workspace's crates through clippy, warnings denied —
# the lints of `cargo clippy --all-targets -- -D warnings` without clippy's separate check
# build of every dependency. The wrapper is named, not given by a path inside the clone:
# cargo hashes the wrapper's path into the names of the workspace's artifacts, so a path
# that changes with every clone would leave a new copy of each in CARGO_TARGET_DIR per run.
export RUSTC_WORKSPACE_WRAPPER=clippy-driver
export CLIPPY_ARGS=-Dwarnings
build() {
  # Everything the tests run, plus benches and examples (as `cargo clippy --all-targets`
  # would lint them), with every feature.
  cargo build --workspace --all-features --all-targets --locked
}
check_local() {
  # The build without the AWS SDK (the README's local server) has code of its own (the
  # "no AWS support" paths): type-checked and linted here. Checked, not built: a check
  # compiles no dependency's code, which on a fresh machine saves minutes, and nothing
  # later runs this feature set.
  cargo check -p chroma-functions --all-targets --locked
}
python_env() {
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  # pip takes half a minute to find that everything is installed already: skip it when
  # the requirements are those of the last successful install. The template checks'
  # tools are installed here too, so that only this phase runs pip.
  local stamp="$venv/.chroma-requirements"
  if ! cat tests/python/requirements.txt tests/template/requirements.txt | cmp -s - "$stamp"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/template/requirements.txt
    cat tests/python/requirements.txt tests/template/requirements.txt >"$stamp"
  fi
  venv_ready
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
  # Built by `build` above (the same feature set, dev-dependencies included).
  local target_dir
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  export CHROMA_BIN="$target_dir/debug/chroma"
}
python_aws_pid=
python_tests() {
  # Over both backends side by side: much of either run is waiting (stress and fuzzing runs
  # of fixed length, servers starting), not computing. Each has its own temporary
  # directory; the AWS run's output is printed after the local one's.
  local aws_log="$lanes/python-aws.log" status=0
  CHROMA_TEST_BACKEND=aws "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --basetemp "$lanes/pytest-aws" tests/python >"$aws_log" 2>&1 &
  python_aws_pid=$!
  echo "==> python tests, local backend"
  CHROMA_TEST_BACKEND=local "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --basetemp "$lanes/pytest-local" tests/python || status=$?
  wait "$python_aws_pid" || status=$((status == 0 ? $? : status))
  python_aws_pid=
  echo "==> python tests, aws backend"
  cat "$aws_log"
  return "$status"
}

full_chromadb_venv() {
  # The full `chromadb` package — LangChain's and LlamaIndex's Chroma stores need it, and
  # the migration tests write persist directories with its PersistentClient — cannot
  # share a virtualenv with the pinned `chromadb-client`: a second one, installed again
  # only when its requirements change.
  local stamp="$full_venv/.chroma-requirements"
  if [ ! -x "$full_venv/bin/python" ]; then
    python3 -m venv "$full_venv"
  fi
  if ! cmp -s tests/frameworks/requirements.txt "$stamp"; then
    "$full_venv/bin/pip" install --quiet --disable-pip-version-check -r tests/frameworks/requirements.txt
    cp tests/frameworks/requirements.txt "$stamp"
  fi
}
frameworks() {
  full_chromadb_venv
  "$full_venv/bin/python" -m pytest -q -p no:cacheprovider --basetemp "$lanes/pytest-frameworks" \
    tests/frameworks
}
migrate() {
  # `chroma import --from-chroma` against persist directories the real Chroma writes.
  full_chromadb_venv
  "$full_venv/bin/python" -m pytest -q -p no:cacheprovider --basetemp "$lanes/pytest-migrate" \
    tests/migrate
}
js_tests() {
  # The official JavaScript client, pinned by tests/js/package-lock.json, under the
  # machine's Node.js (each test starts its own server from CHROMA_BIN).
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error && npm test)
}

supply_chain() { scripts/audit.sh; }
# A clone without ../shared: the Rust tests above already ran on the repository's own
# data (tests/data/sample); this checks that the supply-chain check works without the
# advisory snapshot too (cargo-deny's own fetch, or bans/licences/sources when offline).
self_contained() { CHROMA_ADVISORY_DB=/nonexistent scripts/audit.sh; }
template() { scripts/check-template.sh; }
package() {
  # One arm64 Lambda bootstrap, as `sam build` makes it (cached with the other builds
  # under CARGO_TARGET_DIR): it proves the cross build and link of everything the four
  # share; their own code is a thin main each, linted and tested above. cargo-lambda is
  # installed into the virtualenv: after the foreground's pip is done with it.
  await_venv
  env -u RUSTC_WORKSPACE_WRAPPER scripts/package.sh --profile package-check query
}
fuzz() {
  # A short run of every fuzz target from its committed corpus; the instrumented build is
  # cached outside the clone when CHROMA_FUZZ_TARGET is set (as .ci/run does).
  FUZZ_SECONDS="${FUZZ_SECONDS:-15}" env -u RUSTC_WORKSPACE_WRAPPER scripts/fuzz.sh
}
background_lane() {
  phase "supply chain" supply_chain
  phase "without ../shared" self_contained
  phase "fuzz" fuzz
  phase "package lambdas" package
}

phase "cargo fmt" fmt
background
phase "python env" python_env
phase "check without aws" check_local
phase "build + clippy" build
phase "start moto" emulator
phase "rust tests" rust_tests
phase "http tests on aws" http_tests_on_aws
phase "chroma binary" chroma_bin
phase "python tests (both)" python_tests
phase "python frameworks" frameworks
phase "migrate from chroma" migrate
phase "javascript client" js_tests
phase "template checks" template
phase "background lane" background_wait
