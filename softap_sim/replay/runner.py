"""Re-sending a transcript's exchanges in order, and the ``softap-sim replay`` command.

Each exchange goes to the device as it was recorded (TCP: a connection of its own; HTTP:
the keep-alive connection of its recorded ``conn`` id, closed after its last exchange) and
is judged at once (:mod:`softap_sim.replay.results`). ``state`` records are not sent; they
are kept as context for the report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softap_sim import argtypes
from softap_sim.replay.records import (
    Exchange,
    TranscriptError,
    load_transcript,
    parse_exchange,
    state_text,
)
from softap_sim.replay.results import EXIT_UNREADABLE, ExchangeResult, ReplayReport, judge
from softap_sim.replay.wire import HttpConnections, tcp_exchange

#: ``softap-sim run``'s default ports (kept here: softap_sim.cli imports this package)
DEFAULT_TCP_PORT = 5609
DEFAULT_HTTP_PORT = 8080
DEFAULT_TIMEOUT_S = 5.0


@dataclass(slots=True)
class _Plan:
    """A transcript's records, sorted for sending."""

    #: each exchange with the ``state`` lines recorded just before it
    exchanges: list[tuple[Exchange, list[str]]] = field(default_factory=list)
    #: ``state`` lines after the last exchange
    trailing: list[str] = field(default_factory=list)
    #: records neither exchange nor state
    skipped: int = 0
    #: HTTP ``conn`` id -> the index of its last exchange (its connection closes after it)
    last_use: dict[int, int] = field(default_factory=dict)


def _plan(records: Iterable[Mapping[str, Any]]) -> _Plan:
    plan = _Plan()
    context: list[str] = []
    for rec in records:
        kind = rec.get("type")
        if kind == "exchange":
            line = rec.get("_line")
            try:
                ex = parse_exchange(rec, line if isinstance(line, int) else None)
            except ValueError as err:
                raise ValueError(f"exchange record seq {rec.get('seq')}: {err}") from None
            if ex.transport == "http":
                plan.last_use[ex.conn] = len(plan.exchanges)
            plan.exchanges.append((ex, context))
            context = []
        elif kind == "state":
            context.append(state_text(rec))
        else:
            plan.skipped += 1
    plan.trailing = context
    return plan


async def _send_all(
    plan: _Plan,
    tcp_addr: tuple[str, int],
    http_addr: tuple[str, int],
    timeout_s: float,
    ignore_id: bool,
) -> list[ExchangeResult]:
    http = HttpConnections(http_addr, timeout_s)
    results: list[ExchangeResult] = []
    try:
        for i, (ex, context) in enumerate(plan.exchanges):
            if ex.transport == "tcp":
                got = await tcp_exchange(tcp_addr, ex.request, timeout_s)
            else:
                got = await http.exchange(ex.conn, ex.request)
                if plan.last_use[ex.conn] == i:
                    await http.close(ex.conn)
            result = judge(i + 1, ex, got, ignore_id)
            result.context = context
            results.append(result)
    finally:
        await http.close_all()
    return results


async def replay(
    records: Iterable[Mapping[str, Any]],
    tcp_addr: tuple[str, int],
    http_addr: tuple[str, int],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ignore_id: bool = False,
) -> ReplayReport:
    """Re-send each ``exchange`` record's request in order and compare the replies.

    ``records`` are transcript records (from :func:`load_transcript`, or
    ``emu.transcript.records``). ``ValueError`` if an exchange record is malformed.
    """
    plan = _plan(records)
    results = await _send_all(plan, tcp_addr, http_addr, timeout_s, ignore_id)
    return ReplayReport(
        results,
        tcp_addr,
        http_addr,
        timeout_s,
        ignore_id,
        trailing_context=plan.trailing,
        skipped=plan.skipped,
    )


# ==================================================================================
# command line
# ==================================================================================
_port = argtypes.parse_connect_port
_timeout = argtypes.parse_positive_seconds


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``replay``; its handler is ``args.replay_func(args)`` (returns the exit code)."""
    p = subparsers.add_parser(
        "replay",
        help="re-send a recorded client session to a device and report differences",
        description=(
            "Re-send every exchange of a transcript (JSON lines, as written with "
            "SimConfig(transcript_path=...)) to a running device, in order, and compare "
            "each reply byte for byte with the recorded one. TCP: one connection per "
            "exchange, read until the device closes. HTTP: one keep-alive connection per "
            "recorded connection, one response per request. Exit status: 0 all the same, "
            "1 differences, 2 unreadable transcript."
        ),
        formatter_class=argtypes.HelpFormatter,
    )
    p.add_argument("transcript", type=Path, metavar="TRANSCRIPT", help="JSON-lines transcript")
    p.add_argument("--host", default="127.0.0.1", help="the device's address")
    p.add_argument(
        "--tcp-port", type=_port, default=DEFAULT_TCP_PORT, help="the device's TCP protocol port"
    )
    p.add_argument("--http-port", type=_port, default=DEFAULT_HTTP_PORT, help="its HTTP port")
    p.add_argument(
        "--timeout",
        type=_timeout,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="per exchange; no complete reply in time is reported as silence",
    )
    p.add_argument(
        "--ignore-id",
        action="store_true",
        help="tolerate a different device: compare with the 24-hex device id and the "
        "588-hex public key replaced by placeholders on both sides",
    )
    p.add_argument("--json", action="store_true", help="print a machine-readable report")
    p.set_defaults(replay_func=replay_main)


def replay_main(args: argparse.Namespace) -> int:
    """Run ``softap-sim replay``: print the report, return the exit status."""
    path: Path = args.transcript
    try:
        records = load_transcript(path)
    except TranscriptError as err:
        print(f"softap-sim replay: error: {err}", file=sys.stderr)
        if args.json:
            print(json.dumps({"transcript": str(path), "error": str(err), "exit_code": 2}))
        return EXIT_UNREADABLE
    report = asyncio.run(
        replay(
            records,
            (args.host, args.tcp_port),
            (args.host, args.http_port),
            args.timeout,
            args.ignore_id,
        )
    )
    report.transcript = str(path)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.format())
    return report.exit_code
