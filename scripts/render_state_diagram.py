"""Print the device lifecycle as a Mermaid state diagram, straight from ``TRANSITIONS``.

    python scripts/render_state_diagram.py > docs/lifecycle.mmd

The table in ``firmware_model/state.py`` is the single source; this keeps the picture
in the docs from drifting away from the code.
"""

from __future__ import annotations

import sys
from collections import defaultdict

from firmware_model.state import LEDS, TRANSITIONS, DeviceState


def render() -> str:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (src, event), targets in TRANSITIONS.items():
        for dst in targets:
            if dst is src and event.__name__ in ("ListeningReady", "ListenRequested"):
                continue  # self-loops that only restate the state
            edges[(src.value, dst.value)].append(event.__name__)
    lines = ["stateDiagram-v2", "    [*] --> off"]
    for state in DeviceState:
        name = state.value.replace("-", "_")
        lines.append(f"    {name}: {state.value} (LED {LEDS[state].describe()})")
    for (src, dst), events in sorted(edges.items()):
        label = ", ".join(sorted(set(events)))
        lines.append(f"    {src.replace('-', '_')} --> {dst.replace('-', '_')}: {label}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
