"""``softap-sim ctl``: steer a running ``softap-sim run`` through its control API.

A small client of :mod:`softap_sim.control_api` built on the standard library only
(``urllib``), so it starts quickly and needs no event loop::

    softap-sim ctl state                      # human summary; --json for the raw snapshot
    softap-sim ctl button --hold 10           # hold SETUP 10 s: clear stored networks
    softap-sim ctl power cycle                # or off / on
    softap-sim ctl app-ram 40k                # the application's RAM use (k = 1024)
    softap-sim ctl gate --bytes 22016 --mode refuse
    softap-sim ctl radio --pack unicode       # or --file networks.toml
    softap-sim ctl fault add no-reply --command version --transport tcp --times 1
    softap-sim ctl fault list | rm ID | clear
    softap-sim ctl transcript --since 10 --follow

The control URL comes from ``--control URL``, else ``$SOFTAP_SIM_CONTROL``, else
``http://127.0.0.1:5610``.

Wiring (``cli.py``)::

    from softap_sim import ctl
    ctl.add_parser(subparsers)          # registers "ctl" and its sub-commands
    ...
    if args.command == "ctl":
        return args.ctl_func(args)      # == ctl.ctl_main(args): runs the action, -> exit code

Every ``ctl`` parser sets the defaults ``ctl_func`` (:func:`ctl_main`, which catches
errors and returns the exit code: 0 ok, 1 error, 2 usage) and ``ctl_action`` (the
sub-command's function). :func:`main` runs the same parser stand-alone
(``python -m softap_sim.ctl state``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from softap_sim import argtypes
from softap_sim.errors import SimulatorError

DEFAULT_CONTROL_URL = "http://127.0.0.1:5610"
CONTROL_ENV = "SOFTAP_SIM_CONTROL"
DEVICE_ENV = "SOFTAP_SIM_DEVICE"
#: seconds between polls of ``transcript --follow``
FOLLOW_INTERVAL_S = 0.5
TIMEOUT_S = 10.0


class CtlError(SimulatorError):
    """A failure to report in one line (exit code 1)."""


# -- HTTP ----------------------------------------------------------------------------
def control_url(args: argparse.Namespace) -> str:
    url: str = getattr(args, "control", None) or os.environ.get(CONTROL_ENV) or DEFAULT_CONTROL_URL
    if not url.startswith(("http://", "https://")):
        raise CtlError(f"bad control URL {url!r}: use http://HOST:PORT, e.g. {DEFAULT_CONTROL_URL}")
    return url.rstrip("/")


#: API routes that are not about one device (never prefixed with --device)
_API_PATHS = ("/v1/health", "/v1/openapi.json", "/v1/devices")


def device_path(args: argparse.Namespace, path: str) -> str:
    """``/v1/state`` -> ``/v1/devices/ID/state`` with ``--device ID`` (a fleet's API)."""
    device = getattr(args, "device", None) or os.environ.get(DEVICE_ENV)
    if not device or path.startswith(_API_PATHS):
        return path
    if len(device) != 24 or any(c not in "0123456789abcdefABCDEF" for c in device):
        raise CtlError(f"--device takes a device id (24 hex digits), got {device!r}")
    return f"/v1/devices/{device}{path.removeprefix('/v1')}"


def call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """One request to the control API; the decoded JSON reply, or :class:`CtlError`."""
    base = control_url(args)
    path = device_path(args, path)
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        raise CtlError(_server_message(err)) from None
    except urllib.error.URLError as err:
        reason = err.reason
        hint = "is `softap-sim run` running? (its banner prints the control URL)"
        if isinstance(reason, ConnectionRefusedError):
            raise CtlError(f"cannot reach the control API at {base}: {hint}") from None
        raise CtlError(f"cannot reach the control API at {base} ({reason}): {hint}") from None
    except (TimeoutError, ConnectionError) as err:
        raise CtlError(f"the control API at {base} did not answer: {err}") from None
    except ValueError as err:  # e.g. a URL without http://
        raise CtlError(f"bad control URL {base!r}: {err}") from None
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise CtlError(f"{base}{path} did not answer JSON: is {base} the control API?") from None


def _server_message(err: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(err.read())
        message = payload["message"]
    except (ValueError, KeyError, TypeError, OSError):
        return f"HTTP {err.code} {err.reason} from {err.url}"
    return str(message)


# -- parsing helpers -----------------------------------------------------------------
parse_size = argtypes.parse_size
_non_negative_int = argtypes.parse_non_negative_int
_seconds = argtypes.parse_seconds
_milliseconds = argtypes.parse_milliseconds


def _number(value: float) -> int | float:
    return int(value) if value == int(value) else value


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


# -- human output --------------------------------------------------------------------
def _fmt_bytes(n: Any) -> str:
    return f"{n:,} B" if isinstance(n, int) else "?"


def _fault_line(f: dict[str, Any]) -> str:
    extras = " ".join(
        f"{k}={f[k]}"
        for k in ("delay_ms", "jitter_ms", "count", "outcome", "variant", "nbytes")
        if k in f
    )
    times = "for ever" if f.get("times") is None else f"{f['times']} time(s)"
    skip = f", after {f['skip']} skipped" if f.get("skip") else ""
    return (
        f"#{f.get('id')} {f.get('kind')} on {f.get('command')}/{f.get('transport')}"
        f"{' ' + extras if extras else ''} ({times}{skip}; seen {f.get('seen', 0)}, "
        f"applied {f.get('applied', 0)})"
    )


def format_state(s: dict[str, Any]) -> str:
    """The snapshot as a short human summary."""
    led = (s.get("led") or {}).get("text", "?")
    lines = [
        f"state        {s.get('state')}  (LED {led})",
        f"device       {s.get('device_id')}  SSID {s.get('ssid')}  firmware {s.get('firmware')}",
    ]
    ap = s.get("access_point")
    ports = s.get("ports") or {}
    if ap is None:
        lines.append("AP           down")
    else:
        tcp = "listening" if ap.get("tcp_listening") else "refusing"
        if ap.get("tcp_listening") and not ap.get("tcp_serving"):
            tcp = "accepting, never answering"
        http = "listening" if ap.get("http_listening") else "refusing"
        if ap.get("http_listening") and not ap.get("http_slots"):
            http = "listening, every command 500"
        gate = "  (below the memory gate)" if ap.get("below_memory_gate") else ""
        lines.append(
            f"AP           up: TCP :{ports.get('tcp')} {tcp}, HTTP :{ports.get('http')} "
            f"{http}{gate}"
        )
    heap = s.get("heap") or {}
    lines.append(
        f"heap         free {_fmt_bytes(heap.get('free_bytes'))}, app RAM "
        f"{_fmt_bytes(heap.get('app_ram_bytes'))}, gate {_fmt_bytes(heap.get('gate_bytes'))} "
        f"({heap.get('gate_mode')})"
    )
    health = s.get("listening_health")
    if health is not None:
        text = "gate passed" if health.get("gate_passed") else "gate FAILED"
        if health.get("refused"):
            text += ", listening refused"
        if health.get("failed_components"):
            text += ", failed: " + ", ".join(health["failed_components"])
        lines.append(
            f"listening    {text} (free at trigger "
            f"{_fmt_bytes(health.get('free_at_trigger_bytes'))})"
        )
    creds = s.get("credentials") or []
    stored = ", ".join(f"{c.get('ssid')} (ch {c.get('channel')})" for c in creds) or "none"
    lines.append(f"networks     {len(creds)} stored: {stored}")
    claimed = "yes" if s.get("claimed") else "no"
    code = "set" if s.get("claim_code_set") else "not set"
    lines.append(f"claim code   {code}; claimed: {claimed}")
    if s.get("last_join") is not None or s.get("join_attempts"):
        lines.append(f"last join    {s.get('last_join')} ({s.get('join_attempts')} attempt(s))")
    faults = s.get("faults") or []
    lines.append(f"faults       {len(faults) or 'none'}")
    lines += [f"  {_fault_line(f)}" for f in faults]
    radio = s.get("radio") or []
    hidden = sum(1 for ap in radio if ap.get("hidden"))
    lines.append(f"radio        {len(radio)} network(s) in range ({hidden} hidden)")
    served = s.get("served") or {}
    lines.append(
        "served       " + (", ".join(f"{k} {v}" for k, v in sorted(served.items())) or "nothing")
    )
    lines.append(f"transcript   {s.get('transcript_seq', 0)} record(s)")
    return "\n".join(lines)


def _short(s: dict[str, Any]) -> str:
    led = (s.get("led") or {}).get("text", "?")
    ap = "up" if s.get("access_point") is not None else "down"
    return f"state: {s.get('state')} (LED {led}); access point {ap}"


# -- actions -------------------------------------------------------------------------
def _state(args: argparse.Namespace) -> int:
    snap = call(args, "GET", "/v1/state")
    if args.json:
        _print_json(snap)
    else:
        print(format_state(snap))
    return 0


def _heap(args: argparse.Namespace) -> int:
    heap = call(args, "GET", "/v1/heap")
    if args.json:
        _print_json(heap)
        return 0
    free, boot = _fmt_bytes(heap.get("free_bytes")), _fmt_bytes(heap.get("heap_after_boot_bytes"))
    app, gate = _fmt_bytes(heap.get("app_ram_bytes")), _fmt_bytes(heap.get("gate_bytes"))
    print(f"free {free} of {boot} after boot; app RAM {app}; gate {gate} ({heap.get('gate_mode')})")
    for row in heap.get("table", []):
        print(f"  {row['bytes']:>6,} B  {row['component']:<14} {row['name']}")
    return 0


def _button(args: argparse.Namespace) -> int:
    print(_short(call(args, "POST", "/v1/button", {"hold_s": _number(args.hold)})))
    return 0


def _power(args: argparse.Namespace) -> int:
    print(_short(call(args, "POST", "/v1/power", {"action": args.action})))
    return 0


def _listen(args: argparse.Namespace) -> int:
    print(_short(call(args, "POST", "/v1/listen", {})))
    return 0


def _wifi_lost(args: argparse.Namespace) -> int:
    print(_short(call(args, "POST", "/v1/wifi/lost", {})))
    return 0


def _reset(args: argparse.Namespace) -> int:
    reply = call(args, "POST", "/v1/reset", {})
    if isinstance(reply, dict) and "reset" in reply:
        print(f"reset {reply['reset']} devices to the factory state")
    else:
        print(_short(reply))
    return 0


def _publish(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name}
    if args.data is not None:
        body["data"] = args.data
    if args.public or args.private:
        body["private"] = not args.public
    if args.ttl is not None:
        body["ttl"] = args.ttl
    event = call(args, "POST", "/v1/events", body)
    kind = "private" if event.get("private") else "public"
    print(f"published {kind} event {event.get('name')} (ttl {event.get('ttl')} s)")
    return 0


def _events(args: argparse.Namespace) -> int:
    records = call(args, "GET", "/v1/events")
    if args.json:
        _print_json(records)
        return 0
    for r in records:
        arrow = "->" if r.get("direction") == "out" else "<-"
        handled = (
            ""
            if r.get("direction") == "out"
            else ("  (handled)" if r.get("handled") else "  (no subscription)")
        )
        print(f"[{r.get('t', 0):9.3f}s] {arrow} {r.get('name')}  {r.get('data')!r}{handled}")
    return 0


def _health(args: argparse.Namespace) -> int:
    base = control_url(args)
    request = urllib.request.Request(base + "/v1/health", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            health = json.loads(response.read())
    except urllib.error.HTTPError as err:  # 503: failing, with the same JSON body
        try:
            health = json.loads(err.read())
        except ValueError:
            raise CtlError(_server_message(err)) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError):
        call(args, "GET", "/v1/health")  # raises the usual one-line error
        raise
    if args.json:
        _print_json(health)
    else:
        states = ", ".join(f"{n} {s}" for s, n in health.get("states", {}).items())
        print(f"{health.get('status')}: {health.get('devices')} devices ({states})")
    return 0 if health.get("status") == "ok" else 1


def _devices(args: argparse.Namespace) -> int:
    devices = call(args, "GET", "/v1/devices")
    if args.json:
        _print_json(devices)
        return 0
    for d in devices:
        print(f"{d['id']}  {d['ssid']:<16} {d['state']:<16} {d['host']}:{d['tcp_port']}")
    return 0


def _app_ram(args: argparse.Namespace) -> int:
    snap = call(args, "PUT", "/v1/app-ram", {"bytes": args.size})
    heap = snap.get("heap", {})
    print(
        f"app RAM {_fmt_bytes(heap.get('app_ram_bytes'))}; free now "
        f"{_fmt_bytes(heap.get('free_bytes'))} (the gate is checked when listening mode is "
        "next entered)"
    )
    return 0


def _gate(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.bytes is not None:
        body["bytes"] = args.bytes
    if args.mode is not None:
        body["mode"] = args.mode
    heap = call(args, "PUT", "/v1/gate", body)["heap"] if body else call(args, "GET", "/v1/heap")
    print(f"gate {_fmt_bytes(heap.get('gate_bytes'))}, mode {heap.get('gate_mode')}")
    return 0


def _read_networks(path: Path) -> list[Any]:
    try:
        return list(argtypes.read_network_tables(path))
    except argtypes.NetworksFileError as err:
        raise CtlError(str(err)) from None


def _radio(args: argparse.Namespace) -> int:
    if args.pack is None and args.file is None:
        radio = call(args, "GET", "/v1/radio")
        if args.json:
            _print_json(radio)
            return 0
        for ap in radio.get("networks", []):
            hidden = "  (hidden)" if ap.get("hidden") else ""
            print(
                f"  {ap.get('ssid')!r:<36} ch {ap.get('channel'):>2}  {ap.get('rssi')} dBm"
                f"  sec {ap.get('security')}{hidden}"
            )
        print("packs: " + ", ".join(sorted(radio.get("packs", {}))))
        return 0
    if args.pack is not None:
        body: dict[str, Any] = {"pack": args.pack}
    else:
        body = {"networks": _read_networks(args.file)}
        try:
            json.dumps(body)
        except TypeError as err:
            raise CtlError(f"networks file {args.file}: {err}") from None
    try:
        snap = call(args, "PUT", "/v1/radio", body)
    except CtlError as err:
        if args.file is not None:
            raise CtlError(f"networks file {args.file}: {err}") from None
        raise
    print(f"radio: {len(snap.get('radio', []))} network(s) in range")
    return 0


_FAULT_OPTIONS = (
    ("command", "fault_on_command"),
    ("transport", "transport"),
    ("skip", "skip"),
    ("times", "times"),
    ("delay_ms", "delay_ms"),
    ("jitter_ms", "jitter_ms"),
    ("count", "count"),
    ("outcome", "outcome"),
    ("variant", "variant"),
    ("bytes", "nbytes"),
)


def _fault_add(args: argparse.Namespace) -> int:
    spec: dict[str, Any] = {"kind": args.kind}
    for field, dest in _FAULT_OPTIONS:
        value = getattr(args, dest)
        if value is not None:
            spec[field] = _number(value) if isinstance(value, float) else value
    fault = call(args, "POST", "/v1/faults", spec)
    print(f"added fault {_fault_line(fault)}")
    return 0


def _fault_list(args: argparse.Namespace) -> int:
    faults = call(args, "GET", "/v1/faults")
    if args.json:
        _print_json(faults)
    elif not faults:
        print("no active faults")
    else:
        for fault in faults:
            print(_fault_line(fault))
    return 0


def _fault_rm(args: argparse.Namespace) -> int:
    call(args, "DELETE", f"/v1/faults/{args.id}")
    print(f"removed fault #{args.id}")
    return 0


def _fault_clear(args: argparse.Namespace) -> int:
    call(args, "DELETE", "/v1/faults")
    print("all faults cleared")
    return 0


def _transcript(args: argparse.Namespace, sleep: Callable[[float], None] = time.sleep) -> int:
    since: int = args.since
    try:
        while True:
            for record in call(args, "GET", f"/v1/transcript?since={since}"):
                print(json.dumps(record, ensure_ascii=False, sort_keys=True), flush=True)
                since = max(since, int(record.get("seq", since)))
            if not args.follow:
                return 0
            sleep(FOLLOW_INTERVAL_S)
    except KeyboardInterrupt:
        return 0


# -- the parser ----------------------------------------------------------------------
def _leaf(
    sub: Any, name: str, action: Callable[[argparse.Namespace], int], **kwargs: Any
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
    # also accepted after the sub-command; SUPPRESS keeps the parent's value otherwise
    parser.add_argument(
        "--control", metavar="URL", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    parser.add_argument("--device", metavar="ID", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.set_defaults(ctl_action=action)
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

    p = _leaf(sub, "state", _state, help="show the device state (LED, AP, heap, credentials ...)")
    p.add_argument("--json", action="store_true", help="print the raw JSON snapshot")

    p = _leaf(sub, "heap", _heap, help="show the heap figures and the listening allocations")
    p.add_argument("--json", action="store_true", help="print raw JSON")

    p = _leaf(sub, "button", _button, help="press the SETUP button")
    p.add_argument(
        "--hold",
        type=_seconds,
        default=3.0,
        metavar="SECONDS",
        help="hold time: <3 s taps (leaves listening mode), 3 s enters listening mode, "
        "10 s in listening mode clears the stored networks (default: 3)",
    )

    p = _leaf(sub, "power", _power, help="power the device off, on, or cycle it")
    p.add_argument("action", choices=("cycle", "off", "on"))

    _leaf(sub, "listen", _listen, help="enter listening mode (as System.listen())")
    _leaf(
        sub,
        "wifi-lost",
        _wifi_lost,
        help="the station loses its Wi-Fi network (blinking green, the cloud session ends)",
    )
    _leaf(
        sub,
        "reset",
        _reset,
        help="back to the factory state: no networks, no claim code, not claimed, faults "
        "and settings as started; then into listening mode (a fleet without --device: all)",
    )
    p = _leaf(
        sub,
        "publish",
        _publish,
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
    p = _leaf(sub, "events", _events, help="the last events published and received")
    p.add_argument("--json", action="store_true", help="print raw JSON")
    p = _leaf(sub, "health", _health, help="is the emulator healthy? (exit 1 if not)")
    p.add_argument("--json", action="store_true", help="print raw JSON")
    p = _leaf(sub, "devices", _devices, help="list the devices behind this control API")
    p.add_argument("--json", action="store_true", help="print raw JSON")

    p = _leaf(sub, "app-ram", _app_ram, help="set the application's RAM use")
    p.add_argument("size", type=parse_size, metavar="SIZE", help="bytes, e.g. 53248, 52k, 0xd000")

    p = _leaf(sub, "gate", _gate, help="show or set the listening-mode memory gate")
    p.add_argument(
        "--bytes", type=parse_size, metavar="SIZE", help="free heap needed, e.g. 21.5k is 22016"
    )
    p.add_argument(
        "--mode",
        choices=("appears", "refuse"),
        help="below the gate: 'appears' (AP comes up degraded) or 'refuse' (no AP)",
    )

    p = _leaf(sub, "radio", _radio, help="show or replace the simulated networks in range")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pack", metavar="NAME", help="a ready-made scan pack (list: 'ctl radio')")
    src.add_argument("--file", type=Path, metavar="FILE", help="a TOML networks file ([[network]])")
    p.add_argument("--json", action="store_true", help="print raw JSON (without --pack/--file)")

    fault = sub.add_parser("fault", help="inject, list and remove faults")
    fault.set_defaults(ctl_action=None, ctl_parser=fault)
    fsub = fault.add_subparsers(dest="fault_command", metavar="ACTION")
    p = _leaf(fsub, "add", _fault_add, help="add a fault (see firmware_model/faults.py)")
    p.add_argument("kind", help="e.g. latency, no-reply, reset, refuse-after, join ...")
    # not dest="command": the host parser's sub-command dest is usually "command"
    p.add_argument(
        "--command",
        dest="fault_on_command",
        metavar="COMMAND",
        help="the command it applies to (default: any)",
    )
    p.add_argument("--transport", choices=("tcp", "http", "*"), help="default: any")
    p.add_argument("--skip", type=_non_negative_int, metavar="N", help="let N matches pass first")
    p.add_argument(
        "--times", type=_non_negative_int, metavar="M", help="apply M times (default: always)"
    )
    p.add_argument(
        "--delay-ms",
        type=_milliseconds,
        metavar="MS",
        help="latency / join: delay in milliseconds, e.g. 500",
    )
    p.add_argument(
        "--jitter-ms",
        type=_milliseconds,
        metavar="MS",
        help="latency: the delay varies by up to this many milliseconds either way",
    )
    p.add_argument(
        "--count", type=_non_negative_int, metavar="N", help="refuse-after / scan-partial"
    )
    p.add_argument("--outcome", help="join: ok, bad_password, ap_missing, dhcp_fail")
    p.add_argument("--variant", help="key-variant: unpadded, pkcs1, corrupt")
    p.add_argument(
        "--bytes",
        dest="nbytes",
        type=_non_negative_int,
        metavar="N",
        help="drop-mid-reply: bytes written before the reset",
    )
    p = _leaf(fsub, "list", _fault_list, help="list the active faults")
    p.add_argument("--json", action="store_true", help="print raw JSON")
    p = _leaf(fsub, "rm", _fault_rm, help="remove one fault")
    p.add_argument("id", type=_non_negative_int, metavar="ID")
    _leaf(fsub, "clear", _fault_clear, help="remove every fault")

    p = _leaf(sub, "transcript", _transcript, help="print transcript records as JSON lines")
    p.add_argument(
        "--since",
        type=_non_negative_int,
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
    return ctl


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
    except CtlError as err:
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


if __name__ == "__main__":
    sys.exit(main())
