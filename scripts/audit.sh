#!/usr/bin/env bash
# Supply-chain checks, offline: RustSec advisories (cargo-deny against the read-only
# snapshot in ../shared/advisory-db; with CHROMA_CARGO_AUDIT=1 also cargo-audit, a second
# reader of the same snapshot), licences, bans and sources (cargo-deny, policy in
# deny.toml), for every feature (the AWS SDK included).
#
#   scripts/audit.sh
#
# Fails on a vulnerability or unsound advisory, a licence, ban or source violation;
# unmaintained and yanked crates and duplicate versions are warnings. Full reports go
# to target/audit/{deny,audit}.log; a short summary is printed.
#
# Environment:
#   CHROMA_TOOLS        where cargo-deny and cargo-audit are installed (outside the
#                       clone; default /var/tmp/chroma-tools). Installed from crates.io
#                       at the pinned versions when missing, unoptimized (cold, 2 cores:
#                       about a minute for cargo-deny).
#   CHROMA_CARGO_AUDIT  1: also run cargo-audit (off by default: on a fresh machine its
#                       install alone costs the test command 12 minutes, and cargo-deny
#                       already checks every locked crate against the same snapshot).
#   CHROMA_ADVISORY_DB  the advisory snapshot (default: <repo>/../shared/advisory-db),
#                       a RustSec tree (crates/, rust/, SNAPSHOT) — not a git repository.
# With a snapshot (as CI has) the advisory database is never fetched, and the only
# network use is crates.io: installing the tools when missing and `cargo fetch` of the
# locked dependencies. Without one (a clone on its own), cargo-deny fetches the database
# as it normally does; if that fails (no route to GitHub), advisories are reported as
# not checked and bans, licences and sources are still checked.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export CARGO_TERM_COLOR=never
tools="${CHROMA_TOOLS:-/var/tmp/chroma-tools}"
db="${CHROMA_ADVISORY_DB:-$root/../shared/advisory-db}"
logs="$root/target/audit"

# Pinned: deny.toml is written for this cargo-deny, and the checkout directory name
# below is derived by it.
DENY_VERSION=0.20.2
AUDIT_VERSION=0.22.2
# cargo-deny keeps each advisory database in <db-path>/<last URL segment>-<xxhash64 of
# the URL> (db-urls in deny.toml). For cargo-deny 0.20 and the RustSec URL that is this
# name (`cargo deny -L debug check advisories` prints it as "Opening advisory database").
DENY_DB_DIR=advisory-db-3157b0e258782691

die() { echo "audit: $*" >&2; exit 2; }

# --- tools ---------------------------------------------------------------------------
install_tool() { # name version [cargo install flags...]
  local name=$1 version=$2; shift 2
  local bin="$tools/bin/$name"
  if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "$name $version" ]; then
    return
  fi
  echo "==> installing $name $version into $tools"
  local start=$SECONDS
  # Unoptimized: a checker that runs for seconds does not need the release profile's
  # optimizations, and without them it compiles several times faster.
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo install --quiet --locked "$name@$version" --root "$tools" "$@"
  echo "    $name installed in $((SECONDS - start))s"
}
install_tool cargo-deny "$DENY_VERSION"
# Default features: without `binary-scanning` (unused here) the build is no faster
# (~290 crates either way; gix and aws-lc-sys dominate).
run_audit="${CHROMA_CARGO_AUDIT:-0}"
[ "$run_audit" = 1 ] && install_tool cargo-audit "$AUDIT_VERSION"
deny="$tools/bin/cargo-deny"
audit="$tools/bin/cargo-audit"

# cargo-deny runs offline (--frozen): the locked dependencies must be in cargo's cache.
cargo fetch --locked --quiet
mkdir -p "$logs"

# --- without a snapshot: cargo-deny's own fetch ----------------------------------------
if [ ! -d "$db/crates" ]; then
  echo "==> cargo deny (no advisory snapshot at $db: fetching the advisory database)"
  dbs="$root/target/advisory-dbs"
  if CHROMA_DENY_DB_ROOT="$dbs" "$deny" --all-features --locked check --show-stats \
      --warn unmaintained advisories bans licenses sources >"$logs/deny.log" 2>&1; then
    echo "==> supply chain: ok (advisories from a fresh fetch)"
    exit 0
  fi
  if [ -d "$dbs/$DENY_DB_DIR" ] || ! grep -qiE "fetch|clone|network|resolve|connect" "$logs/deny.log"; then
    cat "$logs/deny.log"
    echo "==> supply chain: FAILED (full report: target/audit/deny.log)"
    exit 1
  fi
  echo "    the advisory database cannot be fetched here; checking bans, licences and sources only"
  if "$deny" --all-features --frozen check --show-stats bans licenses sources >"$logs/deny.log" 2>&1; then
    echo "==> supply chain: ok for bans, licences and sources; advisories NOT checked (no snapshot, no network)"
    exit 0
  fi
  cat "$logs/deny.log"
  echo "==> supply chain: FAILED (full report: target/audit/deny.log)"
  exit 1
fi

# --- the advisory snapshot -----------------------------------------------------------
snapshot=$(head -n1 "$db/SNAPSHOT" 2>/dev/null) || die "$db/SNAPSHOT is missing"
snap_date=$(sed -n 's/.*(\([0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}\)).*/\1/p' <<<"$snapshot")
[ -n "$snap_date" ] || die "no (YYYY-MM-DD) date in $db/SNAPSHOT: $snapshot"
snap_age=$(( ($(date -u +%s) - $(date -u -d "$snap_date" +%s)) / 86400 ))

# cargo-deny reads advisory databases only from git checkouts: a throwaway repository
# holding a copy of the snapshot, committed with a fixed identity and dated at the
# snapshot's date (cargo-deny measures staleness from the commit and HEAD times, and
# deny.toml's maximum-db-staleness bounds it).
tmp=$(mktemp -d "${TMPDIR:-/tmp}/chroma-audit.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
repo="$tmp/$DENY_DB_DIR"
mkdir "$repo"
cp -R --no-preserve=mode "$db/." "$repo/"
(
  cd "$repo"
  export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
  export GIT_AUTHOR_NAME=chroma-audit GIT_AUTHOR_EMAIL=chroma-audit@localhost
  export GIT_COMMITTER_NAME=chroma-audit GIT_COMMITTER_EMAIL=chroma-audit@localhost
  export GIT_AUTHOR_DATE="${snap_date}T00:00:00Z" GIT_COMMITTER_DATE="${snap_date}T00:00:00Z"
  git init --quiet --initial-branch=main
  git add --all
  git -c commit.gpgsign=false -c core.hooksPath=/dev/null commit --quiet --no-verify \
    --message "$snapshot"
  touch -d "${snap_date}T00:00:00Z" .git/HEAD
)

# Advisory ids ignored in deny.toml are ignored by cargo-audit too (one list).
ignored_ids=$(python3 -c '
import tomllib
with open("deny.toml", "rb") as f:
    cfg = tomllib.load(f)
for entry in cfg.get("advisories", {}).get("ignore", []):
    ident = entry.get("id") if isinstance(entry, dict) else entry
    if ident and ident.startswith("RUSTSEC-"):
        print(ident)
') || die "cannot read the advisory ignores from deny.toml"
ignored=()
[ -z "$ignored_ids" ] || mapfile -t ignored <<<"$ignored_ids"
audit_ignores=()
for id in "${ignored[@]}"; do audit_ignores+=(--ignore "$id"); done

status=0

# --- cargo-deny ----------------------------------------------------------------------
echo "==> cargo deny (advisories bans licenses sources, all features)"
deny_rc=0
CHROMA_DENY_DB_ROOT="$tmp" "$deny" --all-features --frozen check --show-stats \
  --warn unmaintained advisories bans licenses sources >"$logs/deny.log" 2>&1 || deny_rc=$?
# Errors in full, one line for each other finding (duplicate versions on one line),
# then the per-check counts.
awk '
  /^(error|warning|note|help)(\[[a-z-]+\])?: / {
    block = ($0 ~ /^error/)
    if ($0 ~ /^warning\[duplicate\]/) { n = split($0, w, "\047"); dups = dups " " w[2]; ndup++ }
    else if (!block) print "    " $0
  }
  block { print }
  /^$/ { block = 0 }
  /^ *(advisories|bans|licenses|sources) (ok|FAILED)/ { stats = stats "   " $0 "\n" }
  END {
    if (ndup) print "    warning[duplicate]: " ndup " crates in several versions:" dups
    printf "%s", stats
  }
' "$logs/deny.log"
if [ "$deny_rc" -ne 0 ]; then
  status=1
  grep -F '[ERROR]' "$logs/deny.log" | head -n 20 || true
  echo "    cargo deny failed (exit $deny_rc); full report: target/audit/deny.log"
fi

# --- cargo-audit ---------------------------------------------------------------------
# Reads the snapshot directory as it is (--no-fetch: no git, no network; --stale: its
# age is not an error, cargo-deny bounds it). Audits every package in Cargo.lock, all
# targets and features. Vulnerabilities fail, and so do unsound advisories (--deny
# unsound); unmaintained and yanked are reported.
audit_rc=0
if [ "$run_audit" = 1 ]; then
echo "==> cargo audit (Cargo.lock)"
"$audit" audit --no-fetch --stale --db "$db" --file Cargo.lock --color never \
  --deny unsound "${audit_ignores[@]}" >"$logs/audit.log" 2>&1 || audit_rc=$?
awk '
  /^Crate: / { crate = $2 }
  /^Version: / { version = $2 }
  /^(Warning|Title|ID): / { f[$1] = substr($0, index($0, $2)) }
  /^URL: / { printf "    %s %s: %s %s (%s)\n", crate, version, f["ID:"], f["Warning:"] ? f["Warning:"] : "vulnerability", f["Title:"]; delete f }
  /^(error|warning): / { print "    " $0 }
' "$logs/audit.log"
if [ "$audit_rc" -ne 0 ]; then
  status=1
  echo "    cargo audit failed (exit $audit_rc); full report: target/audit/audit.log"
fi
fi

# --- summary -------------------------------------------------------------------------
echo "==> supply chain: $( [ "$status" -eq 0 ] && echo ok || echo FAILED )"
echo "    advisory snapshot: $snapshot, ${snap_age} days old"
[ "$snap_age" -le 90 ] || echo "    (older than 90 days: refresh ../shared/advisory-db; deny.toml accepts up to 365)"
if [ "$run_audit" = 1 ]; then
  echo "    $("$deny" --version) (exit $deny_rc), $("$audit" --version) (exit $audit_rc)"
else
  echo "    $("$deny" --version) (exit $deny_rc); cargo-audit not run (CHROMA_CARGO_AUDIT=1 adds it)"
fi
[ ${#ignored[@]} -eq 0 ] || echo "    ignored advisories (deny.toml): ${ignored[*]}"
exit "$status"
