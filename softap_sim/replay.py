"""``softap-sim replay TRANSCRIPT``: re-send a recorded client session, report differences.

Every ``exchange`` record of a transcript (see :mod:`softap_sim.transcript`) is re-sent,
in order, to a running device, and the reply is compared byte for byte with the
recorded one:

* TCP: one new connection per exchange; the request bytes are written (no half-close,
  as real clients do) and the reply is read until the device closes, bounded by the
  timeout. A timeout is reported as *silence* (no reply / connection not closed).
* HTTP: one keep-alive connection per recorded ``conn`` id, opened when first needed
  and closed after its last exchange; exactly one response is read per request (the
  head, then a chunked body up to ``0\\r\\n\\r\\n`` or a ``Content-Length`` body; the
  library's 503 line, which has no blank line, until the device closes). A timeout is
  *silence*, and the connection is not reused after it.

Claim codes are masked in transcripts (``*`` of the same length) and re-sent as they
are: ``set`` still answers ``{"r":0}``. ``state`` records are not sent; they are shown as
context. With ``ignore_id`` the 24-hex device id and the 588-hex public key are replaced
by same-length placeholders on both sides before comparing (inside the chunk data of a
chunked HTTP reply, so the framing is still compared exactly).

An exchange whose recorded ``delivery`` was a fault (``no-reply``, ``reply-then-hang``,
``close-without-reply``, ``drop-mid-reply``, ``reset``, ``half-open``) also counts as the
same when the replayed device behaves as that fault did on the wire.

Exit status of the command: 0 all exchanges the same, 1 differences (or silence, or a
connection error), 2 the transcript cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softap_sim import argtypes
from softap_sim.errors import SimulatorError

#: ``softap-sim run``'s default ports (kept here: cli.py imports this module)
DEFAULT_TCP_PORT = 5609
DEFAULT_HTTP_PORT = 8080
DEFAULT_TIMEOUT_S = 5.0

SAME = "same"
DIFFERENT = "different"
SILENCE = "silence"
ERROR = "error"

EXIT_SAME = 0
EXIT_DIFFERENT = 1
EXIT_UNREADABLE = 2

_RECV_BYTES = 65536
_MAX_REPLY_BYTES = 1 << 20
#: bytes of context shown before the first differing byte, and after it
_SNIPPET_BEFORE = 16
_SNIPPET_AFTER = 48

_ID_LEN = 24
_KEY_LEN = 588
ID_PLACEHOLDER = b"<device-id>".ljust(_ID_LEN, b".")
KEY_PLACEHOLDER = b"<public-key>".ljust(_KEY_LEN, b".")
_KEY_RE = re.compile(rb"(?<![0-9A-Fa-f])[0-9A-Fa-f]{%d}(?![0-9A-Fa-f])" % _KEY_LEN)
_ID_RE = re.compile(rb"(?<![0-9A-Fa-f])[0-9A-Fa-f]{%d}(?![0-9A-Fa-f])" % _ID_LEN)

_FAULT_MODES = frozenset(
    {"no-reply", "half-open", "reply-then-hang", "close-without-reply", "drop-mid-reply", "reset"}
)


class TranscriptError(SimulatorError, ValueError):
    """The transcript cannot be used; the message names the file and line."""


# ==================================================================================
# reading and validating transcripts
# ==================================================================================
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


# ==================================================================================
# comparing
# ==================================================================================
def _chunk_spans(data: bytes, start: int) -> list[tuple[int, int]]:
    """(offset, length) of the data of each complete chunk from ``start`` on."""
    spans: list[tuple[int, int]] = []
    i = start
    while True:
        eol = data.find(b"\r\n", i)
        if eol < 0:
            return spans
        try:
            size = int(data[i:eol].split(b";", 1)[0], 16)
        except ValueError:
            return spans
        if size == 0 or eol + 2 + size > len(data):
            return spans
        spans.append((eol + 2, size))
        i = eol + 2 + size + 2


def _sub_ids(data: bytes) -> bytes:
    return _ID_RE.sub(ID_PLACEHOLDER, _KEY_RE.sub(KEY_PLACEHOLDER, data))


def normalize_ids(data: bytes) -> bytes:
    """Replace the device id and public key by same-length placeholders.

    In a chunked HTTP reply the device writes the key one character per chunk, so the
    substitution runs over the joined chunk data and is written back in place: the
    framing bytes stay as they were and are still compared exactly.
    """
    head_end = data.find(b"\r\n\r\n")
    if data.startswith(b"HTTP/") and head_end >= 0:
        head = data[:head_end].lower()
        if b"\r\ntransfer-encoding: chunked" in head:
            spans = _chunk_spans(data, head_end + 4)
            joined = b"".join(data[o : o + n] for o, n in spans)
            replaced = _sub_ids(joined)
            if replaced == joined:
                return data
            out = bytearray(data)
            at = 0
            for o, n in spans:
                out[o : o + n] = replaced[at : at + n]
                at += n
            return bytes(out)
    return _sub_ids(data)


def escape(data: bytes) -> str:
    """Bytes as one line of printable text: ``\\r``, ``\\n``, ``\\t``, ``\\\\``, ``\\xNN``."""
    out = []
    for b in data:
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0x0D:
            out.append("\\r")
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x09:
            out.append("\\t")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Diff:
    """Where two byte strings first differ, with a little context around it."""

    offset: int
    expected: str
    got: str
    expected_len: int
    got_len: int

    @classmethod
    def of(cls, expected: bytes, got: bytes) -> Diff:
        n = min(len(expected), len(got))
        offset = next((i for i in range(n) if expected[i] != got[i]), n)
        lo = max(0, offset - _SNIPPET_BEFORE)
        hi = offset + _SNIPPET_AFTER

        def snippet(b: bytes) -> str:
            text = ("..." if lo > 0 else "") + escape(b[lo:offset]) + "[" + escape(b[offset:hi])
            return text + ("...]" if len(b) > hi else "]")

        return cls(offset, snippet(expected), snippet(got), len(expected), len(got))

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "expected": self.expected,
            "got": self.got,
            "expected_len": self.expected_len,
            "got_len": self.got_len,
        }


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


# ==================================================================================
# the wire
# ==================================================================================
@dataclass(slots=True)
class _Received:
    data: bytes = b""
    #: the device closed (EOF) or reset the connection
    closed: bool = False
    reset: bool = False
    timed_out: bool = False
    #: could not connect / write: the message
    error: str = ""


def _addr_text(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


async def _connect(
    addr: tuple[str, int], timeout_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.open_connection(*addr, limit=_MAX_REPLY_BYTES)
    except TimeoutError:
        return f"connect to {_addr_text(addr)} timed out"
    except ConnectionRefusedError:
        return f"connection refused by {_addr_text(addr)} (is the device running?)"
    except OSError as err:
        return f"cannot connect to {_addr_text(addr)}: {err.strerror or err}"


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


async def _tcp_exchange(addr: tuple[str, int], request: bytes, timeout_s: float) -> _Received:
    """A new connection: write, read until the device closes (bounded by the timeout)."""
    conn = await _connect(addr, timeout_s)
    if isinstance(conn, str):
        return _Received(error=conn)
    reader, writer = conn
    got = _Received()
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            writer.write(request)
            await writer.drain()
            while len(buf) <= _MAX_REPLY_BYTES:
                data = await reader.read(_RECV_BYTES)
                if not data:
                    got.closed = True
                    break
                buf += data
    except TimeoutError:
        got.timed_out = True
    except ConnectionResetError:
        got.reset = True
    except OSError as err:
        got.error = f"TCP {_addr_text(addr)}: {err.strerror or err}"
    finally:
        got.data = bytes(buf)
        await _close(writer)
    return got


def http_response_end(buf: bytes | bytearray) -> int | None:
    """Length of the first complete HTTP response in ``buf``; ``None`` if incomplete.

    A head without a body length and not chunked (the 503 line has no blank line at
    all) only ends when the device closes: ``None`` here.
    """
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    body = head_end + 4
    head = bytes(buf[:head_end]).lower()
    if b"\r\ntransfer-encoding: chunked" in head:
        i = body
        while True:
            eol = buf.find(b"\r\n", i)
            if eol < 0:
                return None
            try:
                size = int(bytes(buf[i:eol]).split(b";", 1)[0], 16)
            except ValueError:
                return None  # not valid chunking: read until close
            if size == 0:
                # no trailers: the blank line follows at once
                return eol + 4 if buf[eol + 2 : eol + 4] == b"\r\n" else None
            i = eol + 2 + size + 2
            if i > len(buf):
                return None
    m = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", head)
    if m is not None:
        end = body + int(m.group(1))
        return end if len(buf) >= end else None
    return None


class _HttpConnections:
    """Keep-alive connections to the device, one per recorded ``conn`` id."""

    def __init__(self, addr: tuple[str, int], timeout_s: float) -> None:
        self.addr = addr
        self.timeout_s = timeout_s
        self._open: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter, bytearray]] = {}

    async def exchange(self, conn_id: int, request: bytes) -> _Received:
        entry = self._open.get(conn_id)
        if entry is None:
            conn = await _connect(self.addr, self.timeout_s)
            if isinstance(conn, str):
                return _Received(error=conn)
            entry = (conn[0], conn[1], bytearray())
            self._open[conn_id] = entry
        reader, writer, buf = entry
        got = _Received()
        end: int | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                writer.write(request)
                await writer.drain()
                while (end := http_response_end(buf)) is None and len(buf) <= _MAX_REPLY_BYTES:
                    data = await reader.read(_RECV_BYTES)
                    if not data:
                        got.closed = True
                        break
                    buf += data
        except TimeoutError:
            got.timed_out = True
        except ConnectionResetError:
            got.reset = True
        except OSError as err:
            got.error = f"HTTP {_addr_text(self.addr)}: {err.strerror or err}"
        if end is not None:
            got.data = bytes(buf[:end])
            del buf[:end]
        else:
            got.data = bytes(buf)
            buf.clear()
        if end is None or got.closed or got.reset or got.error:
            await self.close(conn_id)  # closed, broken or out of step: not reused
        return got

    async def close(self, conn_id: int) -> None:
        entry = self._open.pop(conn_id, None)
        if entry is not None:
            await _close(entry[1])

    async def close_all(self) -> None:
        for conn_id in list(self._open):
            await self.close(conn_id)


def _as_delivered(ex: Exchange, got: _Received) -> bool:
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


def _judge(index: int, ex: Exchange, got: _Received, ignore_id: bool) -> ExchangeResult:
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


def _state_text(rec: Mapping[str, Any]) -> str:
    t = rec.get("t")
    at = f"t={t:g} " if isinstance(t, int | float) else ""
    return f"{at}state {rec.get('old')} -> {rec.get('new')} ({rec.get('cause')})"


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
    items = list(records)
    exchanges: list[tuple[Exchange, list[str]]] = []
    context: list[str] = []
    skipped = 0
    for rec in items:
        kind = rec.get("type")
        if kind == "exchange":
            line = rec.get("_line")
            try:
                ex = parse_exchange(rec, line if isinstance(line, int) else None)
            except ValueError as err:
                raise ValueError(f"exchange record seq {rec.get('seq')}: {err}") from None
            exchanges.append((ex, context))
            context = []
        elif kind == "state":
            context.append(_state_text(rec))
        else:
            skipped += 1
    last_use: dict[int, int] = {}
    for i, (ex, _) in enumerate(exchanges):
        if ex.transport == "http":
            last_use[ex.conn] = i
    http = _HttpConnections(http_addr, timeout_s)
    results: list[ExchangeResult] = []
    try:
        for i, (ex, ctx) in enumerate(exchanges):
            if ex.transport == "tcp":
                got = await _tcp_exchange(tcp_addr, ex.request, timeout_s)
            else:
                got = await http.exchange(ex.conn, ex.request)
                if last_use[ex.conn] == i:
                    await http.close(ex.conn)
            result = _judge(i + 1, ex, got, ignore_id)
            result.context = ctx
            results.append(result)
    finally:
        await http.close_all()
    return ReplayReport(
        results,
        tcp_addr,
        http_addr,
        timeout_s,
        ignore_id,
        trailing_context=context,
        skipped=skipped,
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


__all__ = [
    "Diff",
    "Exchange",
    "ExchangeResult",
    "ReplayReport",
    "TranscriptError",
    "add_parser",
    "escape",
    "http_response_end",
    "load_transcript",
    "normalize_ids",
    "parse_exchange",
    "replay",
    "replay_main",
]
