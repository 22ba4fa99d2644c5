#!/usr/bin/env bash
# Install everything the tests need (Python deps, the pinned npm clients) and run them all:
# lint (ruff), types (mypy --strict) and the pytest suite. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
if command -v npm >/dev/null 2>&1; then
  (cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "npm not found: the real-client conformance tests will be skipped" >&2
fi
"$VENV/bin/ruff" check firmware_model softap_sim tests scripts
"$VENV/bin/mypy"
"$VENV/bin/python" -m pytest "$@"
