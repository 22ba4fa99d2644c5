"""``python -m softap_sim.ctl ARGV...``: ``softap-sim ctl`` without the rest of the CLI."""

from __future__ import annotations

import sys

from softap_sim.ctl.parser import main

if __name__ == "__main__":
    sys.exit(main())
