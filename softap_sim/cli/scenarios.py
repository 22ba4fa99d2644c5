"""``softap-sim scenarios``: list the shipped scenarios, or show one in full."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from softap_sim.scenario import Scenario


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``softap-sim scenarios``; sets the default ``func`` (args -> exit code)."""
    scen = sub.add_parser(
        "scenarios",
        help="list the ready-made scenarios",
        description="List the scenarios shipped with softap-sim; pass one to "
        "'softap-sim run --scenario NAME'.",
    )
    scen.add_argument("--json", action="store_true", help="machine-readable output")
    scen.add_argument("name", nargs="?", help="show one scenario in full")
    scen.set_defaults(func=cmd_scenarios)


def cmd_scenarios(args: argparse.Namespace) -> int:
    from softap_sim.scenario import list_scenarios, load_scenario

    if args.name:
        _show(load_scenario(args.name), as_json=args.json)
        return 0
    scenarios = list_scenarios()
    if args.json:
        print(json.dumps([_texts(s) for s in scenarios], indent=2))
        return 0
    width = max((len(s.name) for s in scenarios), default=10)
    for s in scenarios:
        print(f"{s.name:<{width}}  {s.description}")
    print("\nRun one: softap-sim run --scenario NAME   (details: softap-sim scenarios NAME)")
    return 0


def _texts(s: Scenario) -> dict[str, Any]:
    return {
        "name": s.name,
        "description": s.description,
        "pain_point": s.pain_point,
        "expect": s.expect,
    }


def _show(s: Scenario, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**_texts(s), "settings": s.settings}, indent=2, default=str))
        return
    lines = [s.name, f"  {s.description}"]
    if s.pain_point:
        lines.append(f"  pain point: {s.pain_point}")
    if s.expect:
        lines.append(f"  the app sees: {s.expect}")
    lines.append(f"  settings: {json.dumps(s.settings, default=str)}")
    print("\n".join(lines))
