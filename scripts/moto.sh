#!/usr/bin/env bash
# Starts moto's AWS emulator (S3, DynamoDB, KMS, SQS) on a free loopback port and exports
# the environment the AWS SDK needs to reach it. Meant to be sourced:
#
#   source scripts/moto.sh          # starts moto, exports AWS_ENDPOINT_URL and credentials
#   moto_stop                       # stops it (also done by an EXIT trap the caller sets)
#
# The virtualenv is $CHROMA_VENV (default: .venv in the repository, git-ignored), the one
# the Python tests use (tests/python/requirements.txt pins moto); the
# log goes to $MOTO_LOG (default: a temporary file). Fails loudly if moto cannot start.

moto_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOTO_VENV="${CHROMA_VENV:-$moto_root/.venv}"
MOTO_VERSION="5.2.5"

moto_install() {
  if [ ! -x "$MOTO_VENV/bin/python" ]; then
    python3 -m venv "$MOTO_VENV"
  fi
  "$MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check \
    -r "$moto_root/tests/python/requirements.txt"
}

moto_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

moto_start() {
  [ -x "$MOTO_VENV/bin/moto_server" ] || moto_install
  MOTO_PORT="${MOTO_PORT:-$(moto_free_port)}"
  MOTO_LOG="${MOTO_LOG:-$(mktemp -t moto.XXXXXX.log)}"
  # One request at a time: see scripts/moto_server.py.
  "$MOTO_VENV/bin/python" "$moto_root/scripts/moto_server.py" -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_LOG" 2>&1 &
  MOTO_PID=$!
  local i
  for i in $(seq 1 150); do
    if curl -sf -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/"; then
      break
    fi
    if ! kill -0 "$MOTO_PID" 2>/dev/null; then
      echo "moto_server exited while starting; its log:" >&2
      cat "$MOTO_LOG" >&2
      return 1
    fi
    sleep 0.2
  done
  if ! curl -sf -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/"; then
    echo "moto_server did not answer on 127.0.0.1:$MOTO_PORT within 30 s; its log:" >&2
    cat "$MOTO_LOG" >&2
    kill "$MOTO_PID" 2>/dev/null || true
    return 1
  fi
  export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  unset AWS_PROFILE AWS_SESSION_TOKEN
  echo "moto $MOTO_VERSION on $AWS_ENDPOINT_URL (pid $MOTO_PID, log $MOTO_LOG)"
}

moto_stop() {
  if [ -n "${MOTO_PID:-}" ]; then
    kill "$MOTO_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 25); do
      kill -0 "$MOTO_PID" 2>/dev/null || break
      sleep 0.2
    done
    # Its development server may ignore SIGTERM while a request thread lingers.
    kill -9 "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
    MOTO_PID=
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "source this script: source scripts/moto.sh" >&2
  exit 2
fi
moto_start
