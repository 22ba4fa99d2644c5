"""The outcome of a replay: each exchange judged, and the report of the whole run.

An exchange is the *same* when the replayed reply is byte for byte the recorded one (and
complete: the device closed the TCP connection, the HTTP response ended). An exchange
whose recorded ``delivery`` was a fault (``no-reply``, ``reply-then-hang``,
``close-without-reply``, ``drop-mid-reply``, ``reset``, ``half-open``) also counts as the
same when the replayed device behaves as that fault did on the wire. A timeout is
*silence*; a connection that could not be made or written is an *error*.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from softap_sim.replay.compare import Diff, normalize_ids
from softap_sim.replay.records import Exchange
from softap_sim.replay.wire import Received

SAME = "same"
DIFFERENT = "different"
SILENCE = "silence"
ERROR = "error"

EXIT_SAME = 0
EXIT_DIFFERENT = 1
EXIT_UNREADABLE = 2

_FAULT_MODES = frozenset(
    {"no-reply", "half-open", "reply-then-hang", "close-without-reply", "drop-mid-reply", "reset"}
)


@dataclass(slots=True)
class ExchangeResult:
    """The outcome of re-sending one exchange."""

    index: int
    exchange: Exchange
    status: str
    got: bytes
    note: str = ""
    diff: Diff | None = None
    #: ``state`` records between the previous exchange and this one
    context: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        ex = self.exchange
        out: dict[str, Any] = {
            "index": self.index,
            "seq": ex.seq,
            "line": ex.line,
            "t": ex.t,
            "transport": ex.transport,
            "conn": ex.conn,
            "command": ex.command,
            "delivery": ex.delivery,
            "status": self.status,
            "expected_len": len(ex.reply),
            "got_len": len(self.got),
        }
        if self.note:
            out["note"] = self.note
        if self.diff is not None:
            out["diff"] = self.diff.to_json()
        if self.context:
            out["context"] = self.context
        return out


@dataclass(slots=True)
class ReplayReport:
    """Per-exchange outcomes of one replay."""

    results: list[ExchangeResult]
    tcp_addr: tuple[str, int]
    http_addr: tuple[str, int]
    timeout_s: float
    ignore_id: bool
    transcript: str | None = None
    #: ``state`` records after the last exchange
    trailing_context: list[str] = field(default_factory=list)
    #: records neither exchange nor state (skipped)
    skipped: int = 0

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return all(r.status == SAME for r in self.results)

    @property
    def exit_code(self) -> int:
        return EXIT_SAME if self.ok else EXIT_DIFFERENT

    @property
    def differences(self) -> list[ExchangeResult]:
        return [r for r in self.results if r.status != SAME]

    def summary(self) -> str:
        n = len(self.results)
        parts = [f"{self.count(s)} {s}" for s in (SAME, DIFFERENT, SILENCE, ERROR) if self.count(s)]
        word = "exchange" if n == 1 else "exchanges"
        return f"{n} {word}: " + (", ".join(parts) if parts else "nothing to replay")

    def to_json(self) -> dict[str, Any]:
        return {
            "transcript": self.transcript,
            "tcp": f"{self.tcp_addr[0]}:{self.tcp_addr[1]}",
            "http": f"{self.http_addr[0]}:{self.http_addr[1]}",
            "timeout_s": self.timeout_s,
            "ignore_id": self.ignore_id,
            "exchanges": len(self.results),
            "same": self.count(SAME),
            "different": self.count(DIFFERENT),
            "silence": self.count(SILENCE),
            "error": self.count(ERROR),
            "skipped": self.skipped,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "results": [r.to_json() for r in self.results],
            "trailing_context": self.trailing_context,
        }

    def format(self) -> str:
        th, tp = self.tcp_addr
        hh, hp = self.http_addr
        lines = [
            f"replay of {self.transcript or 'records'} against TCP {th}:{tp}, HTTP {hh}:{hp} "
            f"(timeout {self.timeout_s:g} s{', ignoring device id/key' if self.ignore_id else ''})"
        ]
        for r in self.results:
            lines += [f"    ~ {c}" for c in r.context]
            ex = r.exchange
            where = f"seq {ex.seq}" if ex.seq is not None else f"line {ex.line}"
            status = r.status + (f": {r.note}" if r.note else "")
            lines.append(
                f"  #{r.index:<3} {where:<9} {ex.transport:<4} conn {ex.conn:<3} "
                f"{ex.command:<14} {status}"
            )
            if r.diff is not None:
                lines.append(f"        first difference at byte {r.diff.offset}")
                lines.append(f"        recorded ({r.diff.expected_len:>4} B): {r.diff.expected}")
                lines.append(f"        replayed ({r.diff.got_len:>4} B): {r.diff.got}")
        lines += [f"    ~ {c}" for c in self.trailing_context]
        lines.append(self.summary())
        return "\n".join(lines)


def _as_delivered(ex: Exchange, got: Received) -> bool:
    """Whether ``got`` is what a client saw when the recorded fault was delivered."""
    mode, data = ex.delivery, got.data
    if mode in ("no-reply", "half-open"):
        return not data and got.timed_out
    if mode == "reply-then-hang":
        return data == ex.reply and got.timed_out
    if mode == "close-without-reply":
        return not data and got.closed
    if mode == "reset":
        return not data and (got.reset or got.closed)
    if mode == "drop-mid-reply":
        return len(data) < len(ex.reply) and ex.reply.startswith(data) and got.reset
    return False


def judge(index: int, ex: Exchange, got: Received, ignore_id: bool) -> ExchangeResult:
    """The outcome of re-sending exchange number ``index`` (from 1)."""
    expected, data = ex.reply, got.data
    if ignore_id:
        expected, data = normalize_ids(expected), normalize_ids(data)
    if got.error:
        return ExchangeResult(index, ex, ERROR, got.data, got.error)
    complete = not got.timed_out and (ex.transport == "http" or got.closed)
    if complete and data == expected:
        note = "connection reset after the reply" if got.reset else ""
        return ExchangeResult(index, ex, SAME, got.data, note)
    if ex.delivery in _FAULT_MODES and _as_delivered(ex, got):
        return ExchangeResult(index, ex, SAME, got.data, f"as delivered ({ex.delivery})")
    note = f"recorded delivery {ex.delivery}" if ex.delivery != "normal" else ""
    if got.timed_out:
        if not got.data:
            what = "no reply / connection not closed"
        elif ex.transport == "tcp":
            what = f"connection not closed after {len(got.data)} bytes"
        else:
            what = f"incomplete response ({len(got.data)} bytes)"
        note = what + (f"; {note}" if note else "")
        diff = Diff.of(expected, data) if got.data and data != expected else None
        return ExchangeResult(index, ex, SILENCE, got.data, note, diff)
    if got.reset:
        note = "connection reset" + (f"; {note}" if note else "")
    return ExchangeResult(index, ex, DIFFERENT, got.data, note, Diff.of(expected, data))
