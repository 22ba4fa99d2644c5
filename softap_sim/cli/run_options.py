"""The options of ``softap-sim run``, one function per help section.

Each option overrides the scenario's setting (``build_config`` in :mod:`.run`); the
defaults shown here are the emulator's, which a real Photon's match where it has one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Final

from firmware_model import GateMode
from firmware_model.eras import FirmwareEra
from firmware_model.timing import PROFILES
from softap_sim import argtypes, cloud_cli, event_loop
from softap_sim.cli.run import cmd_run
from softap_sim.config import default_state_dir

DEFAULT_TCP_PORT: Final = 5609
DEFAULT_HTTP_PORT: Final = 8080
DEFAULT_CONTROL_PORT: Final = 5610

ArgGroup = argparse._ArgumentGroup


def _era(text: str) -> FirmwareEra:
    try:
        return FirmwareEra.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _fault(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f'--fault takes a JSON object, e.g. \'{{"kind":"latency","delay_ms":500}}\' ({err.msg})'
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--fault takes a JSON object")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``softap-sim run``; sets the default ``func`` (args -> exit code)."""
    run = sub.add_parser(
        "run",
        help="start one emulated device (listening mode on first start)",
        description=(
            "Start one emulated Photon. A new device (no stored networks) enters listening "
            "mode: the raw TCP protocol (port 5609 on a real device) and the HTTP protocol "
            "(port 80 on a real device) are served. State (device id, RSA key, stored "
            "networks, claim code) is kept in --state-dir and reused on the next start. "
            "The LED and state changes are printed live; a control API (see 'softap-sim "
            "ctl') steers the running device. Stop with Ctrl-C."
        ),
        formatter_class=argtypes.HelpFormatter,
    )
    net = run.add_argument_group("network")
    _network_options(net)
    _cloud_options(net)
    _advertise_options(net)
    _device_options(run.add_argument_group("device"))
    _memory_options(run.add_argument_group("memory (softap-protocol.md §7)"))
    _timing_options(run.add_argument_group("timing and faults"))
    _recording_options(run.add_argument_group("recording"))
    _output_options(run)
    run.set_defaults(func=cmd_run)


def _network_options(net: ArgGroup) -> None:
    net.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (a real device uses 192.168.0.1)"
    )
    net.add_argument(
        "--tcp-port",
        type=argtypes.parse_port,
        default=DEFAULT_TCP_PORT,
        help="TCP protocol port; 0 picks a free port",
    )
    net.add_argument(
        "--http-port",
        type=argtypes.parse_port,
        default=DEFAULT_HTTP_PORT,
        help="HTTP port (80 on a real device; needs privileges); 0 picks a free port",
    )
    net.add_argument(
        "--control-port",
        type=argtypes.parse_port,
        default=DEFAULT_CONTROL_PORT,
        help="control API port (on --control-host); 0 picks a free port",
    )
    net.add_argument(
        "--control-host",
        default="127.0.0.1",
        help="address of the control API; it has no authentication, so anything but "
        "loopback (e.g. 0.0.0.0 in a container) is logged as a warning",
    )
    net.add_argument("--no-control", action="store_true", help="do not start the control API")


def _cloud_options(net: ArgGroup) -> None:
    from softap_sim import cloud_remote

    net.add_argument(
        "--cloud-port",
        type=argtypes.parse_port,
        default=cloud_cli.DEFAULT_CLOUD_PORT,
        help="port of the embedded cloud's REST API; 0 picks a free one",
    )
    net.add_argument("--cloud-host", default="127.0.0.1", help="address of the cloud API")
    net.add_argument(
        "--cloud-device-port",
        type=argtypes.parse_port,
        default=5683,
        help="the cloud's device endpoint (the Photon protocol, TCP 5683); 0 picks a free one",
    )
    net.add_argument(
        "--cloud-public",
        action="store_true",
        help="allow a non-loopback --cloud-host (tokens become reachable from the network)",
    )
    net.add_argument("--no-cloud", action="store_true", help="do not start the embedded cloud")
    cloud_remote.add_options(net)


def _advertise_options(net: ArgGroup) -> None:
    net.add_argument(
        "--advertise",
        action="store_true",
        help="publish DNS-SD records (_particle-softap._tcp while listening, "
        "_particle-device._tcp after a join); a real Photon advertises nothing",
    )
    net.add_argument(
        "--advertise-interface",
        action="append",
        default=[],
        metavar="IP",
        help="answer mDNS on the interface with this address (repeatable; default: the "
        "--host address, all interfaces if that is 0.0.0.0)",
    )


def _device_options(dev: ArgGroup) -> None:
    dev.add_argument(
        "--scenario",
        metavar="NAME|FILE",
        default=None,
        help="a scenario (see 'softap-sim scenarios') or a scenario TOML file; "
        "options given here override it",
    )
    dev.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"device state directory, created on first start (default: {default_state_dir()})",
    )
    dev.add_argument(
        "--networks",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML file of simulated access points ([[network]] tables); "
        "default: a built-in neighbourhood",
    )
    dev.add_argument(
        "--firmware",
        type=_era,
        default=None,
        metavar="VERSION",
        help="device-os version whose SoftAP behaviour to emulate, e.g. 1.5.2, "
        "0.6.4, 0.4.9 (eras: 0.4.0, 0.4.4, 0.5.0, 0.7.0-3.3.x; default current)",
    )
    dev.add_argument(
        "--ssid-prefix",
        default=None,
        help="SSID prefix used when a new device is created (default Photon)",
    )
    dev.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for identity generation and fault jitter (reproducible runs)",
    )


def _memory_options(mem: ArgGroup) -> None:
    mem.add_argument(
        "--app-ram",
        type=argtypes.parse_size,
        default=None,
        metavar="SIZE",
        help="RAM used by the user application, e.g. 52k",
    )
    mem.add_argument(
        "--heap",
        type=argtypes.parse_size,
        default=None,
        metavar="SIZE",
        help="free heap after boot with an empty application (default 60k)",
    )
    mem.add_argument(
        "--gate",
        type=argtypes.parse_size,
        default=None,
        metavar="SIZE",
        help="free RAM needed to enter listening mode properly (default 21.5k)",
    )
    mem.add_argument(
        "--gate-mode",
        choices=[m.value for m in GateMode],
        default=None,
        help="below the gate: 'appears' (AP up, requests fail, saves lost; "
        "default) or 'refuse' (no AP)",
    )


def _timing_options(tim: ArgGroup) -> None:
    tim.add_argument(
        "--timing",
        choices=sorted(PROFILES),
        default=None,
        help="step durations: fast (default) or realistic (multi-second scans, joins)",
    )
    tim.add_argument(
        "--listening-timeout",
        type=argtypes.parse_seconds,
        default=None,
        metavar="SECONDS",
        help="leave listening mode after this long (a Photon has none: 0)",
    )
    tim.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="JSON",
        help='inject a fault, e.g. \'{"kind":"no-reply","command":"device-id"}\' '
        "(repeatable; see README for kinds)",
    )
    tim.add_argument(
        "--offline",
        action="store_true",
        help="the cloud cannot be reached after a join (blinking cyan)",
    )


def _recording_options(rec: ArgGroup) -> None:
    rec.add_argument(
        "--transcript",
        type=Path,
        default=None,
        metavar="FILE",
        help="append every exchange and state change to FILE as JSON lines",
    )
    rec.add_argument("--no-record", action="store_true", help="do not record exchanges")


def _output_options(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--plain",
        action="store_true",
        help="print one line per state change even on a terminal (no live view)",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="machine-readable stdout for CI: one JSON object per line, first "
        '{"event": "ready", ...} with the real ports, ids and URLs (use with --tcp-port 0), '
        'then one {"event": "state", ...} per change, last {"event": "stopped"}',
    )
    run.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the ready object (as --json prints it) to FILE, atomically, once the "
        "device is up; removed again on exit",
    )
    run.add_argument(
        "--loop",
        choices=event_loop.LOOP_CHOICES,
        default="auto",
        help="event loop; auto: uvloop when installed (less CPU), else asyncio's",
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging (-v: every command, -vv: wire details)",
    )
