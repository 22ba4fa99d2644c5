"""Command line: ``softap-sim run``, ``scenarios``, ``ctl``, ``discover``, ``replay``,
``cloud`` and ``fleet``.

Each command registers its own subparser (an ``add_parser(sub)`` function next to the
code that runs it) and a function from the parsed arguments to an exit code; this
package joins them. ``run`` is :mod:`.run` (its options: :mod:`.run_options`),
``scenarios`` :mod:`.scenarios`; the others live with what they steer (``ctl``,
``discover``, ``replay``, ``cloud_cli``, ``fleet.cli``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from softap_sim import __version__, cloud_cli, ctl, discover, replay
from softap_sim.cli import run_options, scenarios
from softap_sim.cli.run_options import DEFAULT_CONTROL_PORT, DEFAULT_HTTP_PORT, DEFAULT_TCP_PORT
from softap_sim.errors import SimulatorError

#: the attribute of the parsed arguments that holds each command's function
_FUNCS = {
    "ctl": "ctl_func",
    "discover": "discover_func",
    "replay": "replay_func",
    "cloud": "cloud_func",
    "fleet": "fleet_func",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softap-sim",
        description=(
            "Emulate a Particle Photon in Wi-Fi SoftAP listening mode on this machine, "
            "byte-faithful to the firmware, so setup apps and client libraries can be "
            "tested without hardware."
        ),
        epilog="Run 'softap-sim COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"softap-sim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_options.add_parser(sub)
    scenarios.add_parser(sub)
    ctl.add_parser(sub)
    discover.add_parser(sub)
    replay.add_parser(sub)
    cloud_cli.add_parser(sub)
    from softap_sim.fleet import cli as fleet_cli

    fleet_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    verbose = getattr(args, "verbose", 0)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose == 0 and args.command == "run":
        logging.getLogger("softap_sim.dispatch").setLevel(logging.INFO)
    try:
        return int(getattr(args, _FUNCS.get(args.command, "func"))(args))
    except SimulatorError as err:
        print(f"softap-sim: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


__all__ = [
    "DEFAULT_CONTROL_PORT",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_TCP_PORT",
    "build_parser",
    "main",
]
