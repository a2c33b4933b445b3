#!/usr/bin/env bash
# Builds the four Lambda functions (query, ingest, ingest-events, compact) for arm64
# (provided.al2023) with cargo-lambda, each as a zipped `bootstrap` ready for upload, and
# reports their sizes. `sam build` runs the same cargo-lambda build per function.
#
#   scripts/package.sh                 # → $CARGO_TARGET_DIR/lambda/{name}/bootstrap.zip
#
# Installs what it needs: cargo-lambda (pip; it brings zig, the cross linker) into the
# virtualenv $CHROMA_VENV (default .venv), and the aarch64 Rust target (rustup).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="${CHROMA_VENV:-$root/.venv}"
CARGO_LAMBDA_VERSION=1.9.2
FUNCTIONS=(query ingest ingest-events compact)

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
started=$SECONDS
# One build for the four (shared dependencies compile once). `sam build` builds one
# binary at a time and gets the `lambda` feature from [package.metadata.lambda.build] in
# functions/Cargo.toml; cargo-lambda ignores that table when given several binaries.
(cd functions && cargo lambda build --release --arm64 --locked --features lambda \
  --output-format zip "${bins[@]}")
echo "package: built in $((SECONDS - started)) s"
for f in "${FUNCTIONS[@]}"; do
  zip="$target_dir/lambda/$f/bootstrap.zip"
  [ -f "$zip" ] || { echo "package: $zip is missing" >&2; exit 1; }
  unzipped=$(python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); i = z.getinfo("bootstrap"); print(i.file_size)' "$zip")
  arch=$(python3 -c 'import sys, zipfile; b = zipfile.ZipFile(sys.argv[1]).read("bootstrap")[:20]; print("aarch64" if b[:4] == b"\x7fELF" and int.from_bytes(b[18:20], "little") == 183 else "NOT aarch64")' "$zip")
  printf 'package: %-14s bootstrap.zip %6.1f MiB (bootstrap %6.1f MiB, %s)\n' "$f" \
    "$(python3 -c "print($(stat -c %s "$zip") / 1048576)")" "$(python3 -c "print($unzipped / 1048576)")" "$arch"
  [ "$arch" = aarch64 ] || exit 1
done
