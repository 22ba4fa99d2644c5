"""Raw-socket helpers for byte-exact transport tests."""

from __future__ import annotations

import asyncio

from softap_sim.protocol.client import HttpReplyParser

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
    """One complete response, parsed with the client codec, and not a byte more.

    Each read is what the parser says surely belongs to the reply (the rest of a body or
    chunk), else a line (the head, chunk-size lines), or the rest of the stream for a
    body that ends at the close. The next response on a keep-alive connection stays in
    ``reader``.
    """
    parser = HttpReplyParser()
    reply = parser.feed(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S))
    while reply is None:
        assert parser.head is not None
        if need := parser.bytes_needed:
            reply = parser.feed(await asyncio.wait_for(reader.readexactly(need), TIMEOUT_S))
        elif parser.head.chunked:
            reply = parser.feed(await asyncio.wait_for(reader.readuntil(b"\r\n"), TIMEOUT_S))
        else:
            parser.feed(await asyncio.wait_for(reader.read(), TIMEOUT_S))
            reply = parser.feed_eof()
            assert reply is not None
    return reply.raw


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
