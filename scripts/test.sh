#!/usr/bin/env bash
# The test command: sets up everything it needs on a fresh machine, then runs the whole suite.
#   .venv/          a virtualenv with sidegate and its test extra (pytest, a real Envoy binary, ...)
#   redis-server    from apt when missing (the tests start their own instances on free ports)
# Extra arguments go to pytest, e.g.  scripts/test.sh -k ratelimit -x
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

if ! command -v redis-server >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  # The package may start a system instance; the tests do not use it.
fi

.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
