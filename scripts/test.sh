#!/usr/bin/env bash
# The test command: sets up everything it needs on a fresh machine, then runs the whole suite.
#   .venv/          a virtualenv with sidegate and its test extra (pytest, a real Envoy binary, ...)
#   redis-server    from apt when missing (the tests start their own instances on free ports)
#   wrk             from apt when missing (the bench smoke test drives load through Envoy)
# Extra arguments go to pytest, e.g.  scripts/test.sh -k ratelimit -x
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
# xds-protos overwrites opentelemetry-proto's modules with a stale copy (grpc/grpc#42926):
# put the real ones back, as docs/operations.md tells users of tracing to.
.venv/bin/python -m pip install --quiet --force-reinstall --no-deps opentelemetry-proto

missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v redis-cli >/dev/null 2>&1 || missing="$missing redis-tools"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  # A packaged redis-server may start a system instance; the tests start their own.
fi

.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
