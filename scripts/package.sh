#!/usr/bin/env bash
# Builds the Lambda functions (query, ingest, ingest-events, compact) for arm64
# (provided.al2023) with cargo-lambda, each as a zipped `bootstrap` ready for upload, and
# reports their sizes. `sam build` runs the same cargo-lambda build per function.
#
#   scripts/package.sh                 # all four → $CARGO_TARGET_DIR/lambda/{name}/bootstrap.zip
#   scripts/package.sh query           # only these
#   scripts/package.sh --profile package-check query
#                                      # scripts/test.sh: the release build without LTO
#                                      # and full optimization (see Cargo.toml)
#
# Each package is checked: an aarch64 executable, built with unwinding panics (cargo-lambda
# defaults release builds to `abort`; Cargo.toml states `unwind`), and with nothing
# test-only in it (chroma-core's `testing` feature, which brings the fault-injection
# decorators and conformance suites, is not enabled for it, and no fault-injection text
# is in the binary).
#
# Installs what it needs: cargo-lambda (pip; it brings zig, the cross linker) into the
# virtualenv $CHROMA_VENV (default .venv), and the aarch64 Rust target (rustup).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="${CHROMA_VENV:-$root/.venv}"
CARGO_LAMBDA_VERSION=1.9.2
ALL_FUNCTIONS=(query ingest ingest-events compact)
profile=(--release)
if [ "${1:-}" = --profile ]; then
  profile=(--profile "${2:?--profile needs a name}")
  shift 2
fi
if [ $# -gt 0 ]; then
  for f in "$@"; do
    [[ " ${ALL_FUNCTIONS[*]} " == *" $f "* ]] || { echo "package: no function $f (${ALL_FUNCTIONS[*]})" >&2; exit 2; }
  done
  FUNCTIONS=("$@")
else
  FUNCTIONS=("${ALL_FUNCTIONS[@]}")
fi

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/cargo-lambda" lambda --version 2>/dev/null | grep -q "$CARGO_LAMBDA_VERSION"; then
  echo "package: installing cargo-lambda $CARGO_LAMBDA_VERSION into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "cargo-lambda==$CARGO_LAMBDA_VERSION"
fi
if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu
fi
export PATH="$venv/bin:$PATH"

target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bins=()
for f in "${FUNCTIONS[@]}"; do bins+=(--bin "$f"); done
log="$target_dir/lambda/package-build.log"
mkdir -p "$(dirname "$log")"
started=$SECONDS
# One build for all of them (shared dependencies compile once). `sam build` builds one
# binary at a time and gets the `lambda` feature from [package.metadata.lambda.build] in
# functions/Cargo.toml; cargo-lambda ignores that table when given several binaries.
# Verbose, to check the compiler flags below.
if ! (cd functions && cargo lambda build "${profile[@]}" --arm64 --locked --features lambda \
  --output-format zip --verbose "${bins[@]}") >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "package: build failed; whole log: $log" >&2
  exit 1
fi
echo "package: built in $((SECONDS - started)) s (${profile[*]})"

# The functions' own crate is compiled whenever its sources changed (always, in a fresh
# clone): its flags are in the log then.
if grep -E 'crate-name (chroma_functions|query|ingest|ingest_events|compact) ' "$log" | grep -q 'panic=abort'; then
  echo "package: the functions were built with panic=abort; Cargo.toml's profile must say unwind" >&2
  exit 1
fi
# Test-only code: chroma-core's `testing` feature must not be on in this build.
features=$(cargo tree --locked -p chroma-functions --features lambda \
  --target aarch64-unknown-linux-gnu -e features -i chroma-core --prefix none 2>/dev/null)
if grep -q 'chroma-core feature "testing"' <<<"$features"; then
  echo "package: chroma-core's testing feature is enabled in the Lambda build:" >&2
  echo "$features" >&2
  exit 1
fi

for f in "${FUNCTIONS[@]}"; do
  zip="$target_dir/lambda/$f/bootstrap.zip"
  [ -f "$zip" ] || { echo "package: $zip is missing" >&2; exit 1; }
  python3 - "$f" "$zip" <<'PY'
import sys, zipfile
name, path = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(path) as z:
    binary = z.read("bootstrap")
    unzipped = z.getinfo("bootstrap").file_size
aarch64 = binary[:4] == b"\x7fELF" and int.from_bytes(binary[18:20], "little") == 183
test_only = [marker for marker in (b"injected fault",) if marker in binary]
print(f"package: {name:<14} bootstrap.zip {len(open(path, 'rb').read()) / 1048576:6.1f} MiB "
      f"(bootstrap {unzipped / 1048576:6.1f} MiB, {'aarch64' if aarch64 else 'NOT aarch64'})")
if not aarch64:
    sys.exit(f"package: {name} is not an aarch64 executable")
if test_only:
    sys.exit(f"package: {name} holds test-only code ({test_only})")
PY
done
