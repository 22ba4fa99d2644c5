"""Where things are, for tests in any of the ``tests/`` subpackages."""

from __future__ import annotations

from pathlib import Path

#: the ``tests/`` directory
TESTS = Path(__file__).resolve().parent
#: the repository root
REPO = TESTS.parent
#: the pinned npm client libraries and their Node drivers
CLIENTS = TESTS / "clients"
