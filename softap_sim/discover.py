"""``softap-sim discover``: list emulated devices, by mDNS or from a control API.

::

    softap-sim discover                         # browse mDNS for 3 s, else the control API
    softap-sim discover --timeout 5 --json
    softap-sim discover --interface 127.0.0.1   # browse on that interface only (repeatable)
    softap-sim discover --timeout 0 --control http://127.0.0.1:5610   # the device list only

It browses ``_particle-softap._tcp`` (listening devices) and ``_particle-device._tcp``
(devices that joined a network) for ``--timeout`` seconds; these records exist only when
the emulator runs with ``--advertise`` (see :mod:`softap_sim.protocol.dnssd`). If the
browse finds nothing -- plain loopback has no multicast in CI -- it reads the control API's
device list (``GET /v1/devices``, :mod:`softap_sim.registry`) from ``--control URL``, else
``$SOFTAP_SIM_CONTROL``, else ``http://127.0.0.1:5610``. The output names the source.

Exit codes: 0 devices found, 1 none found (or an error), 2 usage.

Wiring (``cli/``)::

    from softap_sim import discover
    discover.add_parser(sub)
    ...
    if args.command == "discover":
        return int(args.discover_func(args))
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from softap_sim import argtypes
from softap_sim.control_client import CONTROL_ENV, DEFAULT_CONTROL_URL
from softap_sim.errors import SimulatorError
from softap_sim.registry import SOURCE_MDNS, DeviceInfo

DEFAULT_TIMEOUT_S = 3.0
#: seconds to wait for the control API
HTTP_TIMEOUT_S = 5.0
SOURCE_CONTROL = "control"


class DiscoverError(SimulatorError):
    """A failure to report in one line."""


@dataclass
class Result:
    """What ``discover`` found and where."""

    devices: list[DeviceInfo] = field(default_factory=list)
    source: str | None = None
    control_url: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "control_url": self.control_url,
            "devices": [d.to_json() for d in self.devices],
            "notes": self.notes,
        }


# -- the two sources -------------------------------------------------------------------
def browse_mdns(timeout_s: float, interfaces: Sequence[str] | None) -> list[DeviceInfo]:
    """A blocking mDNS browse of both service types (its own event loop)."""
    from softap_sim import mdns_browse  # zeroconf is imported only when browsing

    return asyncio.run(mdns_browse.browse(timeout_s, interfaces=interfaces))


def fetch_devices(url: str, timeout_s: float = HTTP_TIMEOUT_S) -> list[DeviceInfo]:
    """``GET {url}/v1/devices``; :class:`DiscoverError` with a one-line reason."""
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise DiscoverError(f"bad control URL {url!r}: use http://HOST:PORT")
    request = urllib.request.Request(base + "/v1/devices", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise DiscoverError(
                f"the control API at {base} has no device list (GET /v1/devices -> 404)"
            ) from None
        raise DiscoverError(f"HTTP {err.code} {err.reason} from {base}/v1/devices") from None
    except urllib.error.URLError as err:
        raise DiscoverError(f"cannot reach the control API at {base} ({err.reason})") from None
    except (TimeoutError, ConnectionError) as err:
        raise DiscoverError(f"the control API at {base} did not answer: {err}") from None
    except ValueError as err:
        raise DiscoverError(f"bad control URL {base!r}: {err}") from None
    try:
        data = json.loads(raw)
        if not isinstance(data, list):
            raise ValueError(f"expected a JSON array, got {type(data).__name__}")
        return [DeviceInfo.from_json(item) for item in data]
    except ValueError as err:
        raise DiscoverError(f"{base}/v1/devices did not answer a device list: {err}") from None


def discover(
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interfaces: Sequence[str] | None = None,
    control_url: str | None = None,
) -> Result:
    """mDNS first (unless ``timeout_s`` is 0), then the control API's device list.

    ``control_url=None`` tries ``$SOFTAP_SIM_CONTROL`` or the default URL, quietly; an
    explicit URL that cannot be read raises :class:`DiscoverError`.
    """
    result = Result()
    if timeout_s > 0:
        where = ", ".join(interfaces) if interfaces else "all interfaces"
        try:
            result.devices = browse_mdns(timeout_s, interfaces)
        except SimulatorError as err:  # MdnsError: the sockets could not be opened
            result.notes.append(f"mDNS browse failed: {err}")
        except OSError as err:
            result.notes.append(f"mDNS browse on {where} failed: {err.strerror or err}")
        else:
            if result.devices:
                result.source = SOURCE_MDNS
                return result
            result.notes.append(f"mDNS: nothing found in {timeout_s:g} s on {where}")
    explicit = control_url is not None or bool(os.environ.get(CONTROL_ENV))
    url = (control_url or os.environ.get(CONTROL_ENV) or DEFAULT_CONTROL_URL).rstrip("/")
    result.control_url = url
    try:
        result.devices = fetch_devices(url)
    except DiscoverError as err:
        if explicit:
            raise
        result.notes.append(str(err))
        return result
    result.source = SOURCE_CONTROL
    if not result.devices:
        result.notes.append(f"the device list at {url} is empty")
    return result


# -- output ----------------------------------------------------------------------------
def _port(value: int | None) -> str:
    return "-" if value is None else str(value)


def format_table(devices: Sequence[DeviceInfo]) -> str:
    """One line per device: id, SSID, address and ports, claimed, state."""
    rows = [("ID", "SSID", "ADDRESS", "TCP", "HTTP", "CLAIMED", "STATE")]
    for d in devices:
        rows.append(
            (
                d.device_id,
                d.ssid or "-",
                d.host or "-",
                _port(d.tcp_port),
                "-" if not d.http_port else str(d.http_port),
                "yes" if d.claimed else "no",
                d.state or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _source_line(result: Result, timeout_s: float) -> str:
    n = len(result.devices)
    devices = f"{n} device{'s' if n != 1 else ''}"
    if result.source == SOURCE_MDNS:
        return f"{devices} found by mDNS (browsed {timeout_s:g} s)"
    return f"{devices} from the control API's device list at {result.control_url}"


def discover_main(args: argparse.Namespace) -> int:
    """Run ``discover``; the exit code (0 found, 1 none or error)."""
    timeout_s: float = args.timeout
    try:
        result = discover(
            timeout_s=timeout_s, interfaces=args.interfaces or None, control_url=args.control
        )
    except DiscoverError as err:
        print(f"softap-sim discover: error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    elif result.devices:
        print(_source_line(result, timeout_s))
        print(format_table(result.devices))
    if not result.devices:
        reasons = "; ".join(result.notes) or "nothing found"
        print(f"softap-sim discover: no devices found ({reasons})", file=sys.stderr)
        return 1
    return 0


# -- parsing -------------------------------------------------------------------------
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``discover`` on an ``add_subparsers()`` object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "discover",
        help="list emulated devices (DNS-SD browse, else the control API's device list)",
        description=(
            "Browse DNS-SD for devices of 'softap-sim run --advertise' "
            "(_particle-softap._tcp while listening, _particle-device._tcp after a join) "
            "and list them. If the browse finds nothing (plain loopback has no multicast), "
            "list the control API's devices (GET /v1/devices) instead."
        ),
    )
    parser.add_argument(
        "--timeout",
        type=argtypes.parse_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long to browse (default: {DEFAULT_TIMEOUT_S:g}; 0 skips mDNS)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (source and devices)")
    parser.add_argument(
        "--interface",
        dest="interfaces",
        action="append",
        default=[],
        metavar="IP",
        help="browse on the interface with this address (repeatable; default: all)",
    )
    parser.add_argument(
        "--control",
        metavar="URL",
        default=None,
        help=f"control API for the fallback list (default: ${CONTROL_ENV}, else "
        f"{DEFAULT_CONTROL_URL}, tried quietly)",
    )
    parser.set_defaults(discover_func=discover_main)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone ``softap-sim`` parser holding only ``discover``."""
    parser = argparse.ArgumentParser(prog="softap-sim")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``softap-sim discover ARGV...`` alone: ``python -m softap_sim.discover --json``."""
    args = build_parser().parse_args(["discover", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.discover_func(args)
    return result


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DiscoverError",
    "Result",
    "add_parser",
    "discover",
    "discover_main",
    "fetch_devices",
    "format_table",
    "main",
]


if __name__ == "__main__":
    sys.exit(main())
