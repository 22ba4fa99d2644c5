"""Byte-exact HTTP replies, from softap-protocol.md §3.3, §4 and §10."""

from __future__ import annotations

import asyncio

import pytest

from softap_sim import DeviceEmulator, SimConfig
from softap_sim.protocol.client import decode_chunked
from tests.conftest import SPEC_DEVICE_ID
from tests.wire import expect_silence, http_exchange, read_http_response

NO_CACHE = (
    b"Cache-Control: no-store, no-cache, must-revalidate, post-check=0, pre-check=0\r\n"
    b"Pragma: no-cache\r\n"
)
H200 = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    + NO_CACHE
    + b"Connection: Keep-Alive\r\nAccess-Control-Allow-Origin: *\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
R0 = b'1\r\n{\r\n1\r\n"\r\n1\r\nr\r\n1\r\n"\r\n1\r\n:\r\n1\r\n0\r\n1\r\n}\r\n0\r\n\r\n'
DEVICE_ID_BODY = (
    b'1\r\n{\r\n1\r\n"\r\n2\r\nid\r\n1\r\n"\r\n1\r\n:\r\n1\r\n"\r\n18\r\n'
    + SPEC_DEVICE_ID.encode()
    + b'\r\n1\r\n"\r\n1\r\n,\r\n1\r\n"\r\n1\r\nc\r\n1\r\n"\r\n1\r\n:\r\n1\r\n"\r\n1\r\n0\r\n'
    b'1\r\n"\r\n1\r\n}\r\n0\r\n\r\n'
)


def get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 192.168.0.1\r\n" + extra + b"\r\n"


def post(path: str, body: bytes, ctype: bytes = b"application/x-www-form-urlencoded") -> bytes:
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: 192.168.0.1\r\nContent-Type: "
        + ctype
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        pytest.param(get("/version"), H200 + b'7\r\n{"v":2}\r\n0\r\n\r\n', id="version"),
        pytest.param(get("/device-id"), H200 + DEVICE_ID_BODY, id="device-id"),
        pytest.param(get("/device-id?x=1"), H200 + DEVICE_ID_BODY, id="query-ignored"),
        pytest.param(get("/device%2did"), H200 + DEVICE_ID_BODY, id="percent-decoded"),
        pytest.param(
            post("/set", b'{"k":"xx","v":"y"}'),
            H200 + R0.replace(b"1\r\n0\r\n1\r\n}", b"2\r\n-1\r\n1\r\n}"),
            id="set-minus-1",
        ),
        pytest.param(post("/connect-ap", b'{"idx":0}'), H200 + R0, id="connect-ap"),
        pytest.param(post("/set", b'{"k":"cc","v":5}'), H200 + b"0\r\n\r\n", id="no-json"),
        pytest.param(
            post("/set", b'{"k":"cc","v":"abc"}', b"multipart/form-data"),
            H200 + R0,
            id="multipart-matches",
        ),
        pytest.param(
            b'POST /set HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{"k":"cc","v":"abc"}',
            H200 + R0,
            id="no-content-type",
        ),
        pytest.param(
            get("/"),
            b"HTTP/1.1 301\r\nLocation: /index\r\nContent-Length: 0\r\n\r\n",
            id="root-redirect",
        ),
        pytest.param(
            get("/hello"),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: Keep-Alive\r\n"
            b"Content-Length: 14\r\n\r\nSoft AP Setup\x00",
            id="hello-with-nul",
        ),
        pytest.param(
            get("/index"),
            b"HTTP/1.1 301\r\nLocation: /hello\r\nContent-Type: text/plain\r\n"
            + NO_CACHE
            + b"Connection: Keep-Alive\r\nAccess-Control-Allow-Origin: *\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="index-redirect",
        ),
        pytest.param(
            get("/other"),
            b"HTTP/1.1 404 Not Found\r\nContent-Type: */*\r\n"
            + NO_CACHE
            + b"Connection: Keep-Alive\r\nAccess-Control-Allow-Origin: *\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="catch-all-404",
        ),
        pytest.param(get("/provision-keys"), None, id="provision-keys-404"),
        pytest.param(get("/Version"), None, id="routes-case-sensitive"),
        pytest.param(
            post("/set", b'{"k":"cc","v":"abc"}', b"application/json"),
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n"
            + NO_CACHE
            + b"Connection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
            id="content-type-gated-404",
        ),
        pytest.param(
            post("/version", b"x", b"text/plain;charset=UTF-8"),
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n"
            + NO_CACHE
            + b"Connection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
            id="browser-text-plain-gated",
        ),
    ],
)
async def test_http_reply_bytes(
    emulator: DeviceEmulator, request_bytes: bytes, expected: bytes | None
) -> None:
    reply = await http_exchange(emulator.http_address, request_bytes)
    if expected is None:  # the catch-all 404
        expected = (
            b"HTTP/1.1 404 Not Found\r\nContent-Type: */*\r\n"
            + NO_CACHE
            + b"Connection: Keep-Alive\r\nAccess-Control-Allow-Origin: *\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
    assert reply == expected


@pytest.mark.asyncio
async def test_public_key_one_chunk_per_hex_digit(emulator: DeviceEmulator) -> None:
    reply = await http_exchange(emulator.http_address, get("/public-key"))
    assert reply.startswith(H200)
    body = reply[len(H200) :]
    assert len(body) == 3597
    chunks = decode_chunked(body)
    assert chunks[:2] == [b"{", b'"b":"']
    assert all(len(c) == 1 for c in chunks[2:590])
    assert chunks[590:] == [b'"', b",", b'"', b"r", b'"', b":", b"0", b"}"]


@pytest.mark.asyncio
async def test_scan_ap_first_entry_chunks(emulator: DeviceEmulator) -> None:
    reply = await http_exchange(emulator.http_address, get("/scan-ap"))
    body = reply[len(H200) :]
    assert body.startswith(
        b'a\r\n{"scans":[\r\n1\r\n{\r\n1\r\n"\r\n4\r\nssid\r\n1\r\n"\r\n1\r\n:\r\n1\r\n"\r\n'
        b'5\r\nguest\r\n1\r\n"\r\n1\r\n,\r\n1\r\n"\r\n4\r\nrssi\r\n1\r\n"\r\n1\r\n:\r\n3\r\n-52\r\n'
        b"1\r\n,\r\n"
    )
    assert b"6\r\n144400\r\n1\r\n}\r\n1\r\n,\r\n1\r\n{\r\n" in body  # entries comma-separated
    assert body.endswith(b"5\r\n54000\r\n1\r\n}\r\n2\r\n]}\r\n0\r\n\r\n")
    assert b"".join(decode_chunked(body)) == (
        b'{"scans":[{"ssid":"guest","rssi":-52,"sec":4194310,"ch":6,"mdr":144400},'
        b'{"ssid":"Cafe","rssi":-71,"sec":0,"ch":11,"mdr":54000}]}'
    )


@pytest.mark.asyncio
async def test_crypto_error_digits_one_chunk(emulator: DeviceEmulator) -> None:
    body = b'{"idx":0,"ssid":"guest","sec":4194310,"ch":7,"pwd":"00ab"}'
    reply = await http_exchange(emulator.http_address, post("/configure-ap", body))
    assert reply == H200 + R0.replace(b"1\r\n0\r\n1\r\n}", b"6\r\n-16640\r\n1\r\n}")


@pytest.mark.asyncio
async def test_keep_alive_sequence_and_connection_close(emulator: DeviceEmulator) -> None:
    reader, writer = await asyncio.open_connection(*emulator.http_address)
    try:
        for _ in range(3):
            writer.write(get("/version"))
            assert await read_http_response(reader) == H200 + b'7\r\n{"v":2}\r\n0\r\n\r\n'
        writer.write(get("/version", b"Connection: close\r\n"))
        assert await read_http_response(reader) == H200 + b'7\r\n{"v":2}\r\n0\r\n\r\n'
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_gated_404_has_cors_after_a_command(emulator: DeviceEmulator) -> None:
    reader, writer = await asyncio.open_connection(*emulator.http_address)
    try:
        writer.write(get("/version"))
        await read_http_response(reader)
        writer.write(post("/set", b"{}", b"application/json"))
        assert await read_http_response(reader) == (
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n"
            + NO_CACHE
            + b"Connection: Keep-Alive\r\nAccess-Control-Allow-Origin: *\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
    finally:
        writer.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /version HTTP/1.0\r\nHost: x\r\n\r\n", id="http-1.0"),
        pytest.param(b"OPTIONS /version HTTP/1.1\r\nHost: x\r\n\r\n", id="options"),
        pytest.param(b"HEAD /version HTTP/1.1\r\nHost: x\r\n\r\n", id="head"),
        pytest.param(b"DELETE /version HTTP/1.1\r\nHost: x\r\n\r\n", id="delete"),
        pytest.param(b"GET /version HTTP/1.1\r\n", id="head-not-terminated"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n"[:17], id="too-short"),
    ],
)
async def test_http_silent_cases(emulator: DeviceEmulator, request_bytes: bytes) -> None:
    got, closed = await expect_silence(emulator.http_address, request_bytes)
    assert (got, closed) == (b"", False)


@pytest.mark.asyncio
async def test_http_after_silence_still_serves(emulator: DeviceEmulator) -> None:
    await expect_silence(emulator.http_address, b"GET /version HTTP/1.0\r\n\r\n")
    reply = await http_exchange(emulator.http_address, get("/version"))
    assert reply == H200 + b'7\r\n{"v":2}\r\n0\r\n\r\n'


@pytest.mark.asyncio
async def test_old_era_routes(spec_config: SimConfig) -> None:
    from dataclasses import replace

    from firmware_model import FirmwareEra

    async with DeviceEmulator(replace(spec_config, firmware=FirmwareEra.V0_5_0)) as emu:
        # 0.6.4 library: dynamic routes match case-insensitively by prefix
        reply = await http_exchange(emu.http_address, get("/VERSIONxyz"))
        assert reply == H200 + b'7\r\n{"v":2}\r\n0\r\n\r\n'
    async with DeviceEmulator(replace(spec_config, firmware=FirmwareEra.V0_4_4)) as emu:
        reader, writer = await asyncio.open_connection(*emu.http_address)
        try:
            writer.write(get("/"))
            assert await read_http_response(reader) == (
                b"HTTP/1.1 301\r\nLocation: /hello\r\nContent-Length: 0\r\n\r\n"
            )
            writer.write(get("/nothing"))  # no catch-all route: the library's own 404
            assert (await read_http_response(reader)).startswith(
                b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n"
            )
            # one HTTP socket in this era: a second concurrent connection gets 503
            r2, w2 = await asyncio.open_connection(*emu.http_address)
            assert await asyncio.wait_for(r2.read(), 5) == (
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
            )
            w2.close()
        finally:
            writer.close()
    async with DeviceEmulator(replace(spec_config, firmware=FirmwareEra.V0_4_0)) as emu:
        with pytest.raises(Exception, match="not running"):
            _ = emu.http_address
