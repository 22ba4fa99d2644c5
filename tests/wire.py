"""Raw-socket helpers for byte-exact transport tests."""

from __future__ import annotations

import asyncio

TIMEOUT_S = 5.0


async def tcp_exchange(addr: tuple[str, int], data: bytes, *, half_close: bool = False) -> bytes:
    """Send ``data`` on a new connection and read until the device closes."""
    reader, writer = await asyncio.open_connection(*addr)
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        await writer.drain()
        return await asyncio.wait_for(reader.read(), TIMEOUT_S)
    finally:
        writer.close()


async def read_http_response(reader: asyncio.StreamReader) -> bytes:
    """One complete response: the head plus a chunked or Content-Length body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
    if b"Transfer-Encoding: chunked\r\n" in head:
        body = b""
        while not body.endswith(b"0\r\n\r\n") or not _chunks_complete(body):
            body += await asyncio.wait_for(reader.readuntil(b"\r\n"), TIMEOUT_S)
        return head + body
    length = 0
    for line in head.split(b"\r\n"):
        if line.startswith(b"Content-Length: "):
            length = int(line.split(b": ", 1)[1])
    return head + (await asyncio.wait_for(reader.readexactly(length), TIMEOUT_S) if length else b"")


def _chunks_complete(body: bytes) -> bool:
    try:
        decode_chunked(body)
    except ValueError:
        return False
    return True


def decode_chunked(body: bytes) -> list[bytes]:
    """Split a complete chunked body into its chunks (terminator excluded)."""
    chunks: list[bytes] = []
    i = 0
    while True:
        eol = body.index(b"\r\n", i)
        size = int(body[i:eol], 16)
        if size == 0:
            if body[eol + 2 :] != b"\r\n":
                raise ValueError("bad terminator")
            return chunks
        chunk = body[eol + 2 : eol + 2 + size]
        if len(chunk) != size or body[eol + 2 + size : eol + 4 + size] != b"\r\n":
            raise ValueError("truncated chunk")
        chunks.append(chunk)
        i = eol + 4 + size


async def http_exchange(addr: tuple[str, int], data: bytes) -> bytes:
    """Send one request on a new connection and read one complete response."""
    reader, writer = await asyncio.open_connection(*addr)
    try:
        writer.write(data)
        await writer.drain()
        return await read_http_response(reader)
    finally:
        writer.close()


async def expect_silence(
    addr: tuple[str, int], data: bytes, wait_s: float = 0.3
) -> tuple[bytes, bool]:
    """Send ``data``; return what arrived within ``wait_s`` and whether the peer closed.

    Proving an absence needs a bounded wait: this is an assertion window, not a sleep
    used for synchronisation.
    """
    reader, writer = await asyncio.open_connection(*addr)
    try:
        writer.write(data)
        await writer.drain()
        try:
            got = await asyncio.wait_for(reader.read(1), wait_s)
        except TimeoutError:
            return b"", False
        return got, got == b""
    finally:
        writer.close()
