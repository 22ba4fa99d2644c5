#!/usr/bin/env bash
# Install everything the tests need (Python deps, the pinned npm clients) and run them all:
# lint (ruff), types (mypy --strict) and the pytest suite, on asyncio's event loop and then
# again on uvloop (the default loop of 'run' and 'fleet'). Extra arguments go to pytest.
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
if "$VENV/bin/python" -c "import uvloop" 2>/dev/null; then
  echo "-- again on uvloop --"
  SOFTAP_TEST_LOOP=uvloop "$VENV/bin/python" -m pytest "$@"
fi
