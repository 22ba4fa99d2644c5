"""The ``softap-sim ctl`` command line: its parsers, and running the chosen action.

Every ``ctl`` parser sets the defaults ``ctl_func`` (:func:`ctl_main`, which catches errors
and returns the exit code: 0 ok, 1 error, 2 usage) and ``ctl_action`` (the sub-command's
function in :mod:`softap_sim.ctl.commands`). The sub-commands are registered in groups, in
the order ``ctl --help`` lists them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from softap_sim import argtypes
from softap_sim.control_client import (
    CONTROL_ENV,
    DEFAULT_CONTROL_URL,
    DEVICE_ENV,
    ControlClientError,
)
from softap_sim.ctl import commands as cmd
from softap_sim.ctl.commands import FOLLOW_INTERVAL_S, CtlError

_JSON_HELP = "print raw JSON"


def _leaf(
    sub: Any,
    name: str,
    action: Callable[[argparse.Namespace], int],
    *,
    json_help: str | None = None,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """A sub-command running ``action``; with ``json_help`` it takes ``--json``."""
    parser: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
    # also accepted after the sub-command; SUPPRESS keeps the parent's value otherwise
    parser.add_argument(
        "--control", metavar="URL", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    parser.add_argument("--device", metavar="ID", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.set_defaults(ctl_action=action)
    if json_help is not None:
        parser.add_argument("--json", action="store_true", help=json_help)
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``ctl`` and its sub-commands on an ``add_subparsers()`` object."""
    ctl: argparse.ArgumentParser = subparsers.add_parser(
        "ctl",
        help="steer a running emulator (faults, button, power, heap, radio, transcript)",
        description=(
            "Steer a running 'softap-sim run' through its control API: read its state, "
            "press the SETUP button, power-cycle it, change its RAM use, memory gate or "
            "radio environment, inject faults, read the transcript."
        ),
    )
    ctl.add_argument(
        "--control",
        metavar="URL",
        default=None,
        help=f"control API URL (default: ${CONTROL_ENV}, else {DEFAULT_CONTROL_URL})",
    )
    ctl.add_argument(
        "--device",
        metavar="ID",
        default=None,
        help=f"the device to steer on a fleet's control API (default: ${DEVICE_ENV}; "
        "'ctl devices' lists the ids); not needed for 'softap-sim run'",
    )
    ctl.set_defaults(ctl_func=ctl_main, ctl_action=None, ctl_parser=ctl)
    sub = ctl.add_subparsers(dest="ctl_command", metavar="ACTION")
    _add_state_and_heap(sub)
    _add_device_actions(sub)
    _add_events(sub)
    _add_lists(sub)
    _add_settings(sub)
    _add_faults(sub)
    _add_transcript(sub)
    return ctl


def _add_state_and_heap(sub: Any) -> None:
    _leaf(
        sub,
        "state",
        cmd.state,
        json_help="print the raw JSON snapshot",
        help="show the device state (LED, AP, heap, credentials ...)",
    )
    _leaf(
        sub,
        "heap",
        cmd.heap,
        json_help=_JSON_HELP,
        help="show the heap figures and the listening allocations",
    )


def _add_device_actions(sub: Any) -> None:
    p = _leaf(sub, "button", cmd.button, help="press the SETUP button")
    p.add_argument(
        "--hold",
        type=argtypes.parse_seconds,
        default=3.0,
        metavar="SECONDS",
        help="hold time: <3 s taps (leaves listening mode), 3 s enters listening mode, "
        "10 s in listening mode clears the stored networks (default: 3)",
    )
    p = _leaf(sub, "power", cmd.power, help="power the device off, on, or cycle it")
    p.add_argument("action", choices=("cycle", "off", "on"))
    _leaf(sub, "listen", cmd.listen, help="enter listening mode (as System.listen())")
    _leaf(
        sub,
        "wifi-lost",
        cmd.wifi_lost,
        help="the station loses its Wi-Fi network (blinking green, the cloud session ends)",
    )
    _leaf(
        sub,
        "reset",
        cmd.reset,
        help="back to the factory state: no networks, no claim code, not claimed, faults "
        "and settings as started; then into listening mode (a fleet without --device: all)",
    )


def _add_events(sub: Any) -> None:
    p = _leaf(
        sub,
        "publish",
        cmd.publish,
        help="publish an event now (one of the scenario's [app.events], or any name)",
    )
    p.add_argument("name", help="event name (an [app.events] name takes its data and ttl)")
    p.add_argument("data", nargs="?", default=None, help="event data (default: the app's)")
    vis = p.add_mutually_exclusive_group()
    vis.add_argument("--public", action="store_true", help="a public event")
    vis.add_argument("--private", action="store_true", help="a private event (the default)")
    p.add_argument(
        "--ttl",
        type=argtypes.parse_whole_seconds,
        default=None,
        metavar="SECONDS",
        help="the event's ttl (default: the app's, else 60)",
    )
    _leaf(
        sub,
        "events",
        cmd.events,
        json_help=_JSON_HELP,
        help="the last events published and received",
    )


def _add_lists(sub: Any) -> None:
    _leaf(
        sub,
        "health",
        cmd.health,
        json_help=_JSON_HELP,
        help="is the emulator healthy? (exit 1 if not)",
    )
    _leaf(
        sub,
        "devices",
        cmd.devices,
        json_help=_JSON_HELP,
        help="list the devices behind this control API",
    )


def _add_settings(sub: Any) -> None:
    p = _leaf(sub, "app-ram", cmd.app_ram, help="set the application's RAM use")
    p.add_argument(
        "size", type=argtypes.parse_size, metavar="SIZE", help="bytes, e.g. 53248, 52k, 0xd000"
    )
    p = _leaf(sub, "gate", cmd.gate, help="show or set the listening-mode memory gate")
    p.add_argument(
        "--bytes",
        type=argtypes.parse_size,
        metavar="SIZE",
        help="free heap needed, e.g. 21.5k is 22016",
    )
    p.add_argument(
        "--mode",
        choices=("appears", "refuse"),
        help="below the gate: 'appears' (AP comes up degraded) or 'refuse' (no AP)",
    )
    p = _leaf(sub, "radio", cmd.radio, help="show or replace the simulated networks in range")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pack", metavar="NAME", help="a ready-made scan pack (list: 'ctl radio')")
    src.add_argument("--file", type=Path, metavar="FILE", help="a TOML networks file ([[network]])")
    p.add_argument("--json", action="store_true", help="print raw JSON (without --pack/--file)")


def _add_faults(sub: Any) -> None:
    fault = sub.add_parser("fault", help="inject, list and remove faults")
    fault.set_defaults(ctl_action=None, ctl_parser=fault)
    fsub = fault.add_subparsers(dest="fault_command", metavar="ACTION")
    _add_fault_add(fsub)
    _leaf(fsub, "list", cmd.fault_list, json_help=_JSON_HELP, help="list the active faults")
    p = _leaf(fsub, "rm", cmd.fault_rm, help="remove one fault")
    p.add_argument("id", type=argtypes.parse_non_negative_int, metavar="ID")
    _leaf(fsub, "clear", cmd.fault_clear, help="remove every fault")


def _add_fault_add(fsub: Any) -> None:
    p = _leaf(fsub, "add", cmd.fault_add, help="add a fault (see firmware_model/faults.py)")
    p.add_argument("kind", help="e.g. latency, no-reply, reset, refuse-after, join ...")
    # not dest="command": the host parser's sub-command dest is usually "command"
    p.add_argument(
        "--command",
        dest="fault_on_command",
        metavar="COMMAND",
        help="the command it applies to (default: any)",
    )
    p.add_argument("--transport", choices=("tcp", "http", "*"), help="default: any")
    p.add_argument(
        "--skip", type=argtypes.parse_non_negative_int, metavar="N", help="let N matches pass first"
    )
    p.add_argument(
        "--times",
        type=argtypes.parse_non_negative_int,
        metavar="M",
        help="apply M times (default: always)",
    )
    p.add_argument(
        "--delay-ms",
        type=argtypes.parse_milliseconds,
        metavar="MS",
        help="latency / join: delay in milliseconds, e.g. 500",
    )
    p.add_argument(
        "--jitter-ms",
        type=argtypes.parse_milliseconds,
        metavar="MS",
        help="latency: the delay varies by up to this many milliseconds either way",
    )
    p.add_argument(
        "--count",
        type=argtypes.parse_non_negative_int,
        metavar="N",
        help="refuse-after / scan-partial",
    )
    p.add_argument("--outcome", help="join: ok, bad_password, ap_missing, dhcp_fail")
    p.add_argument("--variant", help="key-variant: unpadded, pkcs1, corrupt")
    p.add_argument(
        "--bytes",
        dest="nbytes",
        type=argtypes.parse_non_negative_int,
        metavar="N",
        help="drop-mid-reply: bytes written before the reset",
    )


def _add_transcript(sub: Any) -> None:
    p = _leaf(sub, "transcript", cmd.transcript, help="print transcript records as JSON lines")
    p.add_argument(
        "--since",
        type=argtypes.parse_non_negative_int,
        default=0,
        metavar="N",
        help="only records after sequence number N",
    )
    p.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help=f"keep polling (every {FOLLOW_INTERVAL_S} s) until Ctrl-C",
    )


def ctl_main(args: argparse.Namespace) -> int:
    """Run the chosen ``ctl`` action; the exit code (errors are printed on stderr)."""
    action: Callable[[argparse.Namespace], int] | None = getattr(args, "ctl_action", None)
    if action is None:
        parser: argparse.ArgumentParser | None = getattr(args, "ctl_parser", None)
        if parser is not None:
            parser.print_help(sys.stderr)
        return 2
    try:
        return action(args)
    except (CtlError, ControlClientError) as err:
        print(f"softap-sim ctl: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `ctl transcript | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone ``softap-sim`` parser holding only ``ctl``."""
    parser = argparse.ArgumentParser(prog="softap-sim")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``softap-sim ctl ARGV...`` without the rest of the CLI: ``main(["state", "--json"])``."""
    args = build_parser().parse_args(["ctl", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.ctl_func(args)
    return result
