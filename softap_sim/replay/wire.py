"""Re-sending requests: what came back from the device, and how the connection behaved.

* TCP: one new connection per exchange; the request bytes are written (no half-close,
  as real clients do) and the reply is read until the device closes, bounded by the
  timeout.
* HTTP: one keep-alive connection per recorded ``conn`` id; exactly one response is read
  per request, its end found by the client codec's reply parser. A reply whose framing
  is broken (or the library's 503 line, which has no blank line) is read until the device
  closes, and the connection is not reused after it.

Nothing here judges a reply: :class:`Received` records bytes and events (closed, reset,
timed out, could not connect) for :mod:`softap_sim.replay.compare`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from softap_sim.protocol.client import HttpReplyParser, SoftapClientError

_RECV_BYTES = 65536
MAX_REPLY_BYTES = 1 << 20


@dataclass(slots=True)
class Received:
    data: bytes = b""
    #: the device closed (EOF) or reset the connection
    closed: bool = False
    reset: bool = False
    timed_out: bool = False
    #: could not connect / write: the message
    error: str = ""


def addr_text(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


async def _connect(
    addr: tuple[str, int], timeout_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.open_connection(*addr, limit=MAX_REPLY_BYTES)
    except TimeoutError:
        return f"connect to {addr_text(addr)} timed out"
    except ConnectionRefusedError:
        return f"connection refused by {addr_text(addr)} (is the device running?)"
    except OSError as err:
        return f"cannot connect to {addr_text(addr)}: {err.strerror or err}"


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


async def tcp_exchange(addr: tuple[str, int], request: bytes, timeout_s: float) -> Received:
    """A new connection: write, read until the device closes (bounded by the timeout)."""
    conn = await _connect(addr, timeout_s)
    if isinstance(conn, str):
        return Received(error=conn)
    reader, writer = conn
    got = Received()
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            writer.write(request)
            await writer.drain()
            while len(buf) <= MAX_REPLY_BYTES:
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
        got.error = f"TCP {addr_text(addr)}: {err.strerror or err}"
    finally:
        got.data = bytes(buf)
        await _close(writer)
    return got


class _ReplyEnd:
    """Where the reply ends in the bytes read so far; ``None``: not yet, or only at close.

    Broken framing (a bad head or chunk size) is no error here: the reply then ends when
    the device closes, and the byte comparison shows what differs.
    """

    def __init__(self) -> None:
        self._parser: HttpReplyParser | None = HttpReplyParser()

    def feed(self, data: bytes | bytearray) -> int | None:
        if self._parser is None:
            return None
        try:
            reply = self._parser.feed(data)
        except SoftapClientError:
            self._parser = None
            return None
        return None if reply is None else len(reply.raw)


class HttpConnections:
    """Keep-alive connections to the device, one per recorded ``conn`` id."""

    def __init__(self, addr: tuple[str, int], timeout_s: float) -> None:
        self.addr = addr
        self.timeout_s = timeout_s
        #: reader, writer, and the bytes read past the previous reply
        self._open: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter, bytearray]] = {}

    async def exchange(self, conn_id: int, request: bytes) -> Received:
        entry = self._open.get(conn_id)
        if entry is None:
            conn = await _connect(self.addr, self.timeout_s)
            if isinstance(conn, str):
                return Received(error=conn)
            entry = (conn[0], conn[1], bytearray())
            self._open[conn_id] = entry
        reader, writer, buf = entry
        got = Received()
        ends = _ReplyEnd()
        end: int | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                writer.write(request)
                await writer.drain()
                end = ends.feed(buf)
                while end is None and len(buf) <= MAX_REPLY_BYTES:
                    data = await reader.read(_RECV_BYTES)
                    if not data:
                        got.closed = True
                        break
                    buf += data
                    end = ends.feed(data)
        except TimeoutError:
            got.timed_out = True
        except ConnectionResetError:
            got.reset = True
        except OSError as err:
            got.error = f"HTTP {addr_text(self.addr)}: {err.strerror or err}"
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
