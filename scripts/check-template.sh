#!/usr/bin/env bash
# Checks the SAM template without AWS: cfn-lint, `sam validate --lint` and the template's
# security and wiring tests (tests/template).
#
#   scripts/check-template.sh
#
# Installs the pinned cfn-lint and SAM CLI (tests/template/requirements.txt) into the
# virtualenv ${CHROMA_VENV:-.venv} when they are missing or at other versions; after that
# it needs no network. Needs no AWS credentials and no Docker, reads nothing from
# standard input (runs the same under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="${CHROMA_VENV:-$root/.venv}"
requirements=tests/template/requirements.txt

pinned() { sed -n "s/^$1==//p" "$requirements"; }
CFN_LINT_VERSION=$(pinned cfn-lint)
SAM_VERSION=$(pinned aws-sam-cli)

installed() {
  [ -x "$venv/bin/cfn-lint" ] && [ -x "$venv/bin/sam" ] && [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - "$CFN_LINT_VERSION" "$SAM_VERSION" <<'EOF' || return 1
import sys
from importlib.metadata import version
import pytest  # noqa: F401  (the tests need it too)
sys.exit(0 if (version("cfn-lint"), version("aws-sam-cli")) == (sys.argv[1], sys.argv[2]) else 1)
EOF
}

if ! installed; then
  echo "==> installing cfn-lint $CFN_LINT_VERSION and aws-sam-cli $SAM_VERSION into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" </dev/null
fi

# No credentials, no profile, no emulator endpoint: nothing here may reach AWS.
export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_ENDPOINT_URL

echo "==> cfn-lint template.yaml"
"$venv/bin/cfn-lint" template.yaml </dev/null

echo "==> sam validate --lint"
"$venv/bin/sam" validate --lint --template-file template.yaml </dev/null

echo "==> pytest tests/template"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/template </dev/null
