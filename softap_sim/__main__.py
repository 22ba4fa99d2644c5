"""``python -m softap_sim``."""

from __future__ import annotations

import sys

from softap_sim.cli import main

sys.exit(main())
