"""The ``softap-sim ctl`` actions: one control API request each, then one short report.

Every action takes the parsed arguments and returns the exit code; :func:`call` is the
request, built from ``--control`` / ``--device`` (:mod:`softap_sim.control_client`), and
:mod:`softap_sim.ctl.render` turns replies into text. A failure is a
:class:`~softap_sim.control_client.ControlClientError` or a :class:`CtlError`, which
:func:`softap_sim.ctl.parser.ctl_main` prints as one line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from softap_sim import argtypes, control_client
from softap_sim.control_client import ControlClientError
from softap_sim.ctl import render
from softap_sim.errors import SimulatorError

#: seconds between polls of ``transcript --follow``
FOLLOW_INTERVAL_S = 0.5


class CtlError(SimulatorError):
    """A failure of ``ctl`` itself (not of the request) to report in one line (exit code 1)."""


def call(
    args: argparse.Namespace, method: str, path: str, body: Any = None, *, error_json: bool = False
) -> Any:
    """One request to the control API of ``--control``, for the ``--device`` if given."""
    base = control_client.control_url(getattr(args, "control", None))
    path = control_client.device_path(getattr(args, "device", None), path)
    return control_client.call(base, method, path, body, error_json=error_json)


def _number(value: float) -> int | float:
    return int(value) if value == int(value) else value


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _show(args: argparse.Namespace, path: str, lines: Callable[[Any], list[str]]) -> int:
    """``GET path``: the reply as JSON with ``--json``, else as ``lines(reply)``."""
    reply = call(args, "GET", path)
    if args.json:
        _print_json(reply)
    else:
        for line in lines(reply):
            print(line)
    return 0


# -- reading ---------------------------------------------------------------------------
def state(args: argparse.Namespace) -> int:
    return _show(args, "/v1/state", render.state_lines)


def heap(args: argparse.Namespace) -> int:
    return _show(args, "/v1/heap", render.heap_lines)


def events(args: argparse.Namespace) -> int:
    return _show(args, "/v1/events", render.event_lines)


def devices(args: argparse.Namespace) -> int:
    return _show(args, "/v1/devices", render.device_lines)


def fault_list(args: argparse.Namespace) -> int:
    return _show(args, "/v1/faults", render.fault_lines)


def health(args: argparse.Namespace) -> int:
    """Exit 1 unless healthy; a failing API answers 503 with the same JSON report."""
    report = call(args, "GET", "/v1/health", error_json=True)
    if args.json:
        _print_json(report)
    else:
        print(render.health_line(report))
    return 0 if report.get("status") == "ok" else 1


# -- the device ------------------------------------------------------------------------
def button(args: argparse.Namespace) -> int:
    print(render.short_state(call(args, "POST", "/v1/button", {"hold_s": _number(args.hold)})))
    return 0


def power(args: argparse.Namespace) -> int:
    print(render.short_state(call(args, "POST", "/v1/power", {"action": args.action})))
    return 0


def listen(args: argparse.Namespace) -> int:
    print(render.short_state(call(args, "POST", "/v1/listen", {})))
    return 0


def wifi_lost(args: argparse.Namespace) -> int:
    print(render.short_state(call(args, "POST", "/v1/wifi/lost", {})))
    return 0


def reset(args: argparse.Namespace) -> int:
    reply = call(args, "POST", "/v1/reset", {})
    if isinstance(reply, dict) and "reset" in reply:
        print(f"reset {reply['reset']} devices to the factory state")
    else:
        print(render.short_state(reply))
    return 0


def publish(args: argparse.Namespace) -> int:
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


# -- settings ------------------------------------------------------------------------
def app_ram(args: argparse.Namespace) -> int:
    snap = call(args, "PUT", "/v1/app-ram", {"bytes": args.size})
    heap = snap.get("heap", {})
    print(
        f"app RAM {render.fmt_bytes(heap.get('app_ram_bytes'))}; free now "
        f"{render.fmt_bytes(heap.get('free_bytes'))} (the gate is checked when listening "
        "mode is next entered)"
    )
    return 0


def gate(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.bytes is not None:
        body["bytes"] = args.bytes
    if args.mode is not None:
        body["mode"] = args.mode
    heap = call(args, "PUT", "/v1/gate", body)["heap"] if body else call(args, "GET", "/v1/heap")
    print(f"gate {render.fmt_bytes(heap.get('gate_bytes'))}, mode {heap.get('gate_mode')}")
    return 0


def _read_networks(path: Path) -> list[Any]:
    try:
        return list(argtypes.read_network_tables(path))
    except argtypes.NetworksFileError as err:
        raise CtlError(str(err)) from None


def radio(args: argparse.Namespace) -> int:
    """Without ``--pack`` / ``--file``: show the networks in range; else replace them."""
    if args.pack is None and args.file is None:
        return _show(args, "/v1/radio", render.radio_lines)
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
    except ControlClientError as err:
        if args.file is not None:
            raise CtlError(f"networks file {args.file}: {err}") from None
        raise
    print(f"radio: {len(snap.get('radio', []))} network(s) in range")
    return 0


# -- faults ----------------------------------------------------------------------------
#: the JSON field of each ``fault add`` option, by its argparse dest
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


def fault_add(args: argparse.Namespace) -> int:
    spec: dict[str, Any] = {"kind": args.kind}
    for field, dest in _FAULT_OPTIONS:
        value = getattr(args, dest)
        if value is not None:
            spec[field] = _number(value) if isinstance(value, float) else value
    fault = call(args, "POST", "/v1/faults", spec)
    print(f"added fault {render.fault_line(fault)}")
    return 0


def fault_rm(args: argparse.Namespace) -> int:
    call(args, "DELETE", f"/v1/faults/{args.id}")
    print(f"removed fault #{args.id}")
    return 0


def fault_clear(args: argparse.Namespace) -> int:
    call(args, "DELETE", "/v1/faults")
    print("all faults cleared")
    return 0


# -- the transcript ------------------------------------------------------------------
def transcript(args: argparse.Namespace, sleep: Callable[[float], None] = time.sleep) -> int:
    """Print the records after ``--since`` as JSON lines; ``--follow`` polls until Ctrl-C."""
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
