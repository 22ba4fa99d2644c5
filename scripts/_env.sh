# Shared by scripts/run.sh and scripts/test.sh: make a virtualenv with the project installed.
# Sourced, not executed. Honours $SOFTAP_SIM_VENV (default: .venv in the repo).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SOFTAP_SIM_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "softap-sim needs Python 3.11 or newer (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
# the first install takes about a minute and pip is quiet: say what is happening (stderr),
# and nothing once the install is up to date
if [ ! -x "$VENV/bin/python" ]; then
  echo "softap-sim: first run: creating the virtualenv $VENV ..." >&2
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.softap-sim-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  if [ -f "$stamp" ]; then
    echo "softap-sim: pyproject.toml is newer than the install: reinstalling into $VENV ..." >&2
  else
    echo "softap-sim: first run: installing softap-sim and its dependencies into $VENV (about a minute) ..." >&2
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]"
  touch "$stamp"
fi
