"""Reading a transcript for replay: JSON lines in, validated :class:`Exchange` records out.

A transcript (see :mod:`softap_sim.transcript`) stores bytes as latin-1 text; every
``exchange`` record is checked here, so a bad file fails before anything is sent, with
``PATH:LINE: what is wrong``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softap_sim.errors import SimulatorError


class TranscriptError(SimulatorError, ValueError):
    """The transcript cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """One recorded exchange, ready to re-send."""

    transport: str
    conn: int
    command: str
    request: bytes
    reply: bytes
    delivery: str
    seq: int | None
    t: float | None
    line: int | None


def _latin1(value: object, key: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string, not {type(value).__name__}")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(
            f"'{key}' has characters above U+00FF (transcripts store bytes as latin-1)"
        ) from None


def parse_exchange(record: Mapping[str, Any], line: int | None = None) -> Exchange:
    """An ``exchange`` record as an :class:`Exchange`; ``ValueError`` says what is wrong."""
    transport = record.get("transport")
    if transport not in ("tcp", "http"):
        raise ValueError(f"'transport' must be 'tcp' or 'http', not {transport!r}")
    conn = record.get("conn")
    if not isinstance(conn, int) or isinstance(conn, bool):
        raise ValueError(f"'conn' must be an integer, not {conn!r}")
    seq = record.get("seq")
    t = record.get("t")
    delivery = record.get("delivery", "normal")
    return Exchange(
        transport=str(transport),
        conn=conn,
        command=str(record.get("command", "")),
        request=_latin1(record.get("request"), "request"),
        reply=_latin1(record.get("reply"), "reply"),
        delivery=delivery if isinstance(delivery, str) else "normal",
        seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        t=float(t) if isinstance(t, int | float) and not isinstance(t, bool) else None,
        line=line,
    )


def load_transcript(path: Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines transcript, each exchange validated.

    Raises :class:`TranscriptError` with ``PATH:LINE: what is wrong``. Each record gets
    its line number as ``"_line"`` (used in the report).
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise TranscriptError(f"{path}: cannot read transcript: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise TranscriptError(f"{path}:{line}: not UTF-8 text") from None
    records: list[dict[str, Any]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as err:
            raise TranscriptError(f"{path}:{n}: not JSON ({err.msg}, column {err.colno})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
            raise TranscriptError(
                f"{path}:{n}: not a transcript record (a JSON object with a 'type')"
            )
        if rec["type"] == "exchange":
            try:
                parse_exchange(rec, n)
            except ValueError as err:
                raise TranscriptError(f"{path}:{n}: bad exchange record: {err}") from None
        rec["_line"] = n
        records.append(rec)
    return records


def state_text(rec: Mapping[str, Any]) -> str:
    """A ``state`` record as one line of report context."""
    t = rec.get("t")
    at = f"t={t:g} " if isinstance(t, int | float) else ""
    return f"{at}state {rec.get('old')} -> {rec.get('new')} ({rec.get('cause')})"
