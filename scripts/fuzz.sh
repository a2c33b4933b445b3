#!/usr/bin/env bash
# Runs every fuzz target of tests/fuzz for a short while; fails on any crash.
#
#   scripts/fuzz.sh                 # every target, 20 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh filter segment_decode
#
# Environment:
#   FUZZ_SECONDS        seconds of fuzzing per target (default 20)
#   CHROMA_TOOLS        where cargo-fuzz is installed if missing (default /var/tmp/chroma-tools)
#   CHROMA_FUZZ_TARGET  cargo target dir of the fuzz build; point it outside the clone to
#                       cache it between runs (default tests/fuzz/target)
#
# How it runs on the stable toolchain: cargo-fuzz instruments with stable rustc flags
# (-Cpasses=sancov-module and -Cllvm-args=-sanitizer-coverage-*); only the sanitizers
# need nightly's -Zsanitizer, so the build uses `--sanitizer none`. No RUSTC_BOOTSTRAP
# is needed. The build is release with debug assertions and overflow checks (cargo-fuzz's
# default). Cold, it compiles chroma-core and all its dependencies with coverage
# instrumentation (about 7 minutes on 2 cores); after a change to chroma-core only, about
# 1.5 minutes.
#
# Each target fuzzes a temporary copy of its committed corpus (tests/fuzz/corpus/NAME),
# so what the fuzzer adds never lands in git. Limits: -rss_limit_mb=2048 (4096 for
# segment_decode), 60 s per input,
# and (in the targets themselves) any single allocation above 512 MiB aborts. The per-input
# limit is generous because the parquet reader can spend seconds on a small crafted file
# (a Thrift list of billions of empty elements); anything slower is a hang. A crashing
# input is saved under tests/fuzz/artifacts/NAME/; the script prints its path and the
# command that replays it.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ_DIR=tests/fuzz
SECONDS_PER_TARGET=${FUZZ_SECONDS:-20}
TOOLS=${CHROMA_TOOLS:-/var/tmp/chroma-tools}
TARGET_DIR=${CHROMA_FUZZ_TARGET:-$ROOT/$FUZZ_DIR/target}
CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS=(filter request_bodies segment_decode manifest_decode)
if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=("${ALL_TARGETS[@]}")
fi

export PATH="$TOOLS/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
    # Unoptimized: it only drives cargo, and compiles several times faster so.
    CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_LTO=false \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_DEBUG=0 \
        cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$TOOLS"
fi

HOST=$(rustc -vV | sed -n 's/^host: //p')
echo "fuzz: building ${TARGETS[*]} (target dir $TARGET_DIR)"
started=$(date +%s)
# 16 codegen units instead of cargo-fuzz's release default of 1: about half the build
# time (7 instead of 13 minutes cold on 2 cores) for somewhat slower fuzzing.
build=(cargo fuzz build --fuzz-dir "$FUZZ_DIR" --sanitizer none --target "$HOST"
    --target-dir "$TARGET_DIR" --codegen-units 16)
if [ $# -eq 0 ]; then
    "${build[@]}"
else
    for target in "${TARGETS[@]}"; do "${build[@]}" "$target"; done
fi
echo "fuzz: built in $(($(date +%s) - started)) s"

# The fuzz workspace reaches chroma-core outside its own root, so cargo names chroma-core's
# artifacts (and those of everything built on it) by the checkout's path: a build from
# another clone is never reused, and would stay in the target dir for good. Keep only the
# newest build of each of these crates.
keep_newest_build() {
    local deps="$TARGET_DIR/$HOST/release/deps" name newest
    [ -d "$deps" ] || return 0
    for name in chroma_core chroma_fuzz "${ALL_TARGETS[@]}"; do
        newest=$(find "$deps" -maxdepth 1 -type f \( -name "$name-*" -o -name "lib$name-*" \) \
            -printf '%T@ %f\n' | sort -rn | sed -n '1s/^[^ ]* \(lib\)\{0,1\}[a-z_]*-\([0-9a-f]*\).*/\2/p')
        [ -n "$newest" ] || continue
        find "$deps" -maxdepth 1 -type f \( -name "$name-*" -o -name "lib$name-*" \) \
            ! -name "*$name-$newest*" -delete
    done
}
keep_newest_build

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${TARGETS[@]}"; do
    corpus="$work/corpus/$target"
    mkdir -p "$corpus" "$FUZZ_DIR/artifacts/$target"
    cp -R "$FUZZ_DIR/corpus/$target/." "$corpus/"
    seeds=$(find "$corpus" -type f | wc -l)
    log="$work/$target.log"
    echo "fuzz: $target for ${SECONDS_PER_TARGET} s from $seeds seeds"
    status=0
    # The parquet reader allocates and fills what a corrupt page header declares, up to
    # 2 GiB (an i32; see tests/fuzz/README.md): the segment decoder gets room for one.
    rss_limit=2048
    [ "$target" = segment_decode ] && rss_limit=4096
    "$TARGET_DIR/$HOST/release/$target" "$corpus" \
        -max_total_time="$SECONDS_PER_TARGET" \
        -rss_limit_mb="$rss_limit" \
        -timeout=60 \
        -print_final_stats=1 \
        -artifact_prefix="$FUZZ_DIR/artifacts/$target/" \
        >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    grown=$(find "$corpus" -type f | wc -l)
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        echo "fuzz: $target FAILED (exit $status); the end of its log:"
        tail -n 60 "$log"
        for artifact in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
            echo "fuzz: crashing input: $artifact"
            echo "fuzz: replay with: cargo fuzz run --fuzz-dir $FUZZ_DIR --sanitizer none $target $artifact"
        done
    else
        echo "fuzz: $target ok: ${runs:-?} runs, corpus $seeds -> $grown inputs (not kept)"
        # Known misbehaviour of the parquet reader on corrupt files (see tests/fuzz/src/lib.rs).
        grep '^fuzz: third-party:' "$log" || true
    fi
done

echo "fuzz: $((${#TARGETS[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashed: ${failed[*]}"
    exit 1
fi
