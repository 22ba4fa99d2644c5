"""The options of ``softap-sim fleet``, one function per help section.

The defaults are the fleet's own (:mod:`.addresses`, :mod:`.core`); the cloud options
for another process's cloud (``--cloud URL``) come from :mod:`softap_sim.cloud_remote`,
as ``run`` has them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from softap_sim import argtypes, event_loop
from softap_sim.fleet.addresses import (
    DEFAULT_HOST_PATTERN,
    DEFAULT_HTTP_PORT,
    DEFAULT_TCP_PORT,
    LISTENER_MODES,
    PER_BLOCK,
)
from softap_sim.fleet.core import DEFAULT_CONCURRENCY
from softap_sim.keypool import default_pool_dir

DEFAULT_CONTROL_PORT: Final = 5610

ArgGroup = argparse._ArgumentGroup


def count(text: str) -> int:
    """A number of devices or keys: a whole number of at least 1."""
    value = argtypes.parse_non_negative_int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def add_options(p: argparse.ArgumentParser) -> None:
    """Every option of ``softap-sim fleet``, in the order ``--help`` lists them."""
    _device_options(p)
    net = p.add_argument_group("addresses")
    _address_options(net)
    _control_options(net)
    _cloud_options(p.add_argument_group("cloud"))
    _key_options(p.add_argument_group("keys"))
    _output_options(p.add_argument_group("output"))
    p.add_argument(
        "--loop",
        choices=event_loop.LOOP_CHOICES,
        default="auto",
        help="event loop; auto: uvloop when installed (less CPU), else asyncio's",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")


def _device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--count",
        "-n",
        type=count,
        default=None,
        metavar="N",
        help="number of devices (indices 0..N-1)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep each device's state in DIR/devices/<i>/ and the cloud's in DIR "
        "(reused on the next start); default: in memory, a new fleet every start",
    )
    p.add_argument(
        "--scenario",
        metavar="NAME|FILE",
        default=None,
        help="a scenario for every device, or a fleet scenario file with per-device "
        "[[devices]] overrides (see 'pydoc softap_sim.fleet')",
    )
    p.add_argument("--seed", type=int, default=None, help="reproducible identities")
    p.add_argument("--ssid-prefix", default=None, help="SSID prefix of new devices (Photon)")


def _address_options(net: ArgGroup) -> None:
    net.add_argument(
        "--host-pattern",
        default=DEFAULT_HOST_PATTERN,
        metavar="PATTERN",
        help=f"device addresses; device i: hi = 1 + i // {PER_BLOCK}, lo = 1 + i %% "
        f"{PER_BLOCK} (default {DEFAULT_HOST_PATTERN}: 127.0.1.1 ...)",
    )
    net.add_argument(
        "--port-offset",
        action="store_true",
        help="all devices on 127.0.0.1, device i on TCP base+i and HTTP base+i (the "
        "automatic fallback where extra loopback addresses do not exist)",
    )
    net.add_argument(
        "--listeners",
        choices=LISTENER_MODES,
        default="auto",
        help="per-device: two listening sockets per device, as a Photon has; shared: "
        "one socket per port for the whole fleet, routing each connection to the "
        "address dialled (Linux; a device that is not listening resets connections "
        "instead of refusing them); auto (default): per-device while the open-files "
        "limit allows, else shared",
    )
    net.add_argument(
        "--tcp-port",
        type=argtypes.parse_port,
        default=DEFAULT_TCP_PORT,
        help=f"TCP port of each device, or the base with --port-offset (default "
        f"{DEFAULT_TCP_PORT}); 0 picks free ports",
    )
    net.add_argument(
        "--http-port",
        type=argtypes.parse_port,
        default=DEFAULT_HTTP_PORT,
        help=f"HTTP port of each device, or the base with --port-offset (default "
        f"{DEFAULT_HTTP_PORT}); 0 picks free ports",
    )
    net.add_argument(
        "--concurrency",
        type=count,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"devices started at a time (default {DEFAULT_CONCURRENCY})",
    )


def _control_options(net: ArgGroup) -> None:
    net.add_argument(
        "--control-port",
        type=argtypes.parse_port,
        default=DEFAULT_CONTROL_PORT,
        help=f"control API port on 127.0.0.1 (default {DEFAULT_CONTROL_PORT}): every device "
        "under /v1/devices/<id>/..., e.g. 'softap-sim ctl --device ID state'; 0 picks a "
        "free port",
    )
    net.add_argument(
        "--control-host",
        default="127.0.0.1",
        help="address of the control API (default 127.0.0.1; it has no authentication)",
    )
    net.add_argument("--no-control", action="store_true", help="do not start the control API")
    net.add_argument(
        "--advertise",
        action="store_true",
        help="publish DNS-SD records for every device (as 'run --advertise'; one mDNS "
        "responder for the fleet); a real Photon advertises nothing",
    )
    net.add_argument(
        "--advertise-interface",
        action="append",
        default=[],
        metavar="IP",
        help="answer mDNS on the interface with this address (repeatable; default: all)",
    )


def _cloud_options(cloud: ArgGroup) -> None:
    from softap_sim import cloud_remote

    cloud.add_argument("--no-cloud", action="store_true", help="no embedded cloud")
    cloud.add_argument("--cloud-host", default="127.0.0.1", help="address of the cloud")
    cloud.add_argument(
        "--cloud-port",
        type=argtypes.parse_port,
        default=8181,
        help="the cloud's REST API port (default 8181); 0 picks a free one",
    )
    cloud.add_argument(
        "--cloud-device-port",
        type=argtypes.parse_port,
        default=5683,
        help="the cloud's device endpoint (default 5683); 0 picks a free one",
    )
    cloud_remote.add_options(cloud)


def _key_options(keys: ArgGroup) -> None:
    keys.add_argument(
        "--key-pool",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"the key pool (default: DIR/keypool with --state-dir, else {default_pool_dir()})",
    )
    keys.add_argument(
        "--fill-pool",
        type=count,
        default=None,
        metavar="N",
        help="fill the key pool to N keys first; without --count, exit afterwards",
    )
    keys.add_argument(
        "--no-refill",
        action="store_true",
        help="do not top the pool up (to N keys) in the background after the start",
    )


def _output_options(out: ArgGroup) -> None:
    out.add_argument(
        "--plain",
        action="store_true",
        help="plain lines (one per state change) even on a terminal",
    )
    out.add_argument(
        "--recent", type=count, default=12, metavar="N", help="recent changes in the live view"
    )
