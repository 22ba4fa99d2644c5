"""fuzz_cloud's raw HTTP/1.1 client: hand-built requests on asyncio streams.

Why not an HTTP client library: clients normalise or refuse much of what the fuzzer sends
(bad bytes in headers, lone surrogates in paths, malformed request lines), and would hide
exactly how the server closed. Replies are parsed with the simulator's own
client codec (``softap_sim.protocol.client``), imported lazily so ``--code-dir`` decides
which checkout provides it.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any, Final

HOST: Final = "127.0.0.1"
FUZZ_ID_HEADER: Final = "X-Fuzz-Id"
STREAM_LIMIT: Final = 1 << 20


@dataclass(slots=True)
class Reply:
    status: int
    content_type: bytes
    body: bytes
    close: bool
    sse: bool = False


@dataclass(slots=True)
class Request:
    method: str
    target: str  # path + query, already encoded as sent
    headers: list[bytes]  # raw header lines without CRLF
    body: bytes
    template: str
    kdf: bool = False
    raw: bytes | None = None  # a whole raw request (malformed HTTP); sent as is

    def wire(self, fuzz_id: int) -> bytes:
        if self.raw is not None:
            return self.raw
        head = [f"{self.method} {self.target} HTTP/1.1".encode("latin-1", "replace")]
        head.append(b"Host: " + HOST.encode())
        head.append(f"{FUZZ_ID_HEADER}: {fuzz_id}".encode())
        head.extend(self.headers)
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: " + str(len(self.body)).encode())
        return b"\r\n".join(head) + b"\r\n\r\n" + self.body

    def describe(self) -> dict[str, Any]:
        if self.raw is not None:
            return {"template": self.template, "raw": _short(self.raw, 600)}
        return {
            "template": self.template,
            "method": self.method,
            "target": self.target if len(self.target) < 600 else self.target[:600] + "...",
            "headers": [_short(h, 300) for h in self.headers],
            "body": _short(self.body, 600),
        }


def _short(data: bytes, limit: int) -> str:
    text = repr(data[:limit])
    return text + (f"...(+{len(data) - limit} bytes)" if len(data) > limit else "")


class ProtocolFailure(Exception):
    """The reply could not be parsed (or the connection closed without one)."""


async def read_reply(reader: asyncio.StreamReader, head_only: bool) -> Reply:
    """One reply, parsed with the client codec; never reads past it (keep-alive)."""
    from softap_sim.protocol.client import HttpReplyParser, SoftapClientError, parse_reply_head

    while True:
        try:
            raw_head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as err:
            raise ProtocolFailure("closed without a reply" if not err.partial else "cut") from None
        except asyncio.LimitOverrunError:
            raise ProtocolFailure("reply head too long") from None
        try:
            head = parse_reply_head(raw_head[:-4])
        except SoftapClientError as err:
            raise ProtocolFailure(f"bad reply head: {err}") from None
        if head.status != 100:
            break
    ctype = head.get("content-type") or b""
    if ctype.startswith(b"text/event-stream"):
        return Reply(head.status, ctype, b"", True, sse=True)
    parser = HttpReplyParser(head_only=head_only)
    close = head.close
    try:
        reply = parser.feed(raw_head)
        while reply is None:
            if need := parser.bytes_needed:
                reply = parser.feed(await reader.readexactly(need))
            elif head.chunked:
                reply = parser.feed(await reader.readuntil(b"\r\n"))
            else:  # the body runs to the close
                parser.feed(await reader.read())
                reply = parser.feed_eof()
                close = True
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, SoftapClientError) as err:
        raise ProtocolFailure(f"body: {type(err).__name__}") from None
    return Reply(head.status, ctype, reply.body, close)


class Connection:
    """One keep-alive connection; reconnects when the server closed the last one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(
                HOST, self.port, limit=STREAM_LIMIT
            )
            self.connects += 1
        return self.reader, self.writer

    def drop(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode("utf-8", "surrogatepass"))
