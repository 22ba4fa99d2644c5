"""Malformed HTTP gets aiohttp's 400 and one WARNING line, never a traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp.http_exceptions import BadHttpMessage

from softap_sim.cloud.service import CloudService
from softap_sim.http_log import MALFORMED_WARNINGS_PER_MINUTE, ProtocolLogger

MALFORMED = [
    pytest.param(b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", id="header"),
    pytest.param(b"GET /v1/products/\xc2\xb2/customers HTTP/1.1\r\nHost: x\r\n\r\n", id="path"),
    pytest.param(
        b"POST /v1/devices HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        id="chunked",
    ),
    pytest.param(
        b"POST /v1/devices HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        id="two-lengths",
    ),
]


@pytest_asyncio.fixture
async def server_port() -> AsyncIterator[int]:
    service = CloudService(None)
    await service.open()
    try:
        server = await service.serve("127.0.0.1", 0)
        yield server.port
    finally:
        await service.close()


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("request_bytes", MALFORMED)
async def test_malformed_http_is_one_warning_without_a_traceback(
    server_port: int, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    reply = await _exchange(server_port, request_bytes)
    assert reply.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 "))  # aiohttp answers 1.0
    records = [r for r in caplog.records if r.name.startswith("softap_sim.cloud")]
    assert [r.levelno for r in records] == [logging.WARNING]
    assert "malformed HTTP request" in records[0].getMessage()
    assert records[0].exc_info is None
    # the server keeps serving
    ok = await _exchange(server_port, b"GET /v1/devices HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 400 ")  # no token: the JSON OAuth error
    assert b'"invalid_request"' in ok


def test_a_flood_of_malformed_requests_is_counted_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    target = logging.getLogger("softap_sim.cloud.http.test")
    quiet = ProtocolLogger(target, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger=target.name)
    for _ in range(MALFORMED_WARNINGS_PER_MINUTE + 30):
        quiet.exception("Error handling request from %s", "127.0.0.1", exc_info=BadHttpMessage("x"))
    assert len(caplog.records) == MALFORMED_WARNINGS_PER_MINUTE
    now[0] += 61
    quiet.exception("Error handling request from %s", "127.0.0.1", exc_info=BadHttpMessage("x"))
    messages = [r.getMessage() for r in caplog.records[MALFORMED_WARNINGS_PER_MINUTE:]]
    assert messages[0] == ("cloud: 30 more malformed HTTP requests in the last minute (not logged)")
    assert "malformed HTTP request from 127.0.0.1" in messages[1]
    assert all(r.exc_info is None for r in caplog.records)


def test_other_errors_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    target = logging.getLogger("softap_sim.cloud.http.test2")
    caplog.set_level(logging.INFO, logger=target.name)
    try:
        raise RuntimeError("a bug")
    except RuntimeError as err:
        ProtocolLogger(target).exception("Unhandled exception", exc_info=err)
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert caplog.records[0].exc_info is not None


@pytest.mark.asyncio
async def test_a_token_in_a_malformed_header_never_reaches_the_log(
    server_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11 (3b): aiohttp's parser message echoes the header line; -vv included."""
    caplog.set_level(logging.DEBUG)
    secret = "SECRETTOKEN1234567890abcdef0123456789abcd"
    request = (
        b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + secret.encode()
        + b"\x01\r\n\r\n"
    )
    reply = await _exchange(server_port, request)
    assert reply.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 "))
    assert caplog.records, "the rejection is logged"
    for record in caplog.records:
        text = record.getMessage() + (caplog.text if record.exc_info else "")
        assert secret not in text
    assert secret not in caplog.text
