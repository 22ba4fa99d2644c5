"""Issue 11 item 1: a client queued behind a stalled one cannot make the device buffer
without limit. Each connection holds at most ``max_queued_bytes`` (plus the one read in
progress) before its transport pauses reading, and TCP pushes back on the client, as
on a Photon with its few KB of socket buffer. The bytes are kept in order, not dropped:
once the connection's turn comes it is read again and answered as the firmware would.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from firmware_model import ManualClock
from softap_sim import DeviceEmulator, SimConfig
from softap_sim.transports.http_server import HttpDeviceServer
from softap_sim.transports.tcp_server import MAX_READ_BYTES, TcpDeviceServer
from tests.wire import read_http_response

PUSH_LIMIT = 64 * 1024 * 1024  # what the greedy client tries to send
CHUNK = 256 * 1024
RSS_SLACK = 32 * 1024 * 1024
DEADLINE_S = 20.0


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


async def _until(pred: Callable[[], bool], what: str) -> None:
    """Yield to the loop until ``pred`` holds (a bounded wait for a state, not a delay)."""
    deadline = time.monotonic() + DEADLINE_S
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


def _connect(addr: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(addr)
    sock.setblocking(False)
    return sock


async def _push(sock: socket.socket, is_paused: Callable[[], bool]) -> int:
    """Send zeros as fast as the socket takes them, until the device stops reading and
    the kernel pushes back, or ``PUSH_LIMIT`` is reached. Returns the bytes sent."""
    chunk = bytes(CHUNK)
    sent = 0
    deadline = time.monotonic() + DEADLINE_S
    while sent < PUSH_LIMIT and time.monotonic() < deadline:
        try:
            sent += sock.send(chunk[: PUSH_LIMIT - sent])
        except BlockingIOError:
            if is_paused():
                break  # the device stopped reading and the kernel is full: pushed back
            await asyncio.sleep(0)  # let the device read
    return sent


async def _recv_all(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    out = b""
    while True:
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), DEADLINE_S)
        if not data:
            return out
        out += data


def _tcp(emu: DeviceEmulator) -> TcpDeviceServer:
    server = emu._tcp
    assert server is not None
    return server


def _http(emu: DeviceEmulator) -> HttpDeviceServer:
    server = emu._http
    assert server is not None
    return server


def _paused(proto: Any) -> bool:
    transport = proto.transport
    return transport is not None and not transport.is_reading()


@pytest.mark.asyncio
async def test_tcp_queued_connection_is_bounded(spec_config: SimConfig) -> None:
    async with DeviceEmulator(spec_config) as emu:
        server = _tcp(emu)
        bound = server.max_queued_bytes
        loop = asyncio.get_running_loop()
        # 1: a partial request (no blank line): the device waits for it, without timeout
        first = _connect(emu.tcp_address)
        await loop.sock_sendall(first, b"version\n0\n")
        await _until(lambda: server.current is not None, "the first client to be served")
        # 2: queued behind it, pushing as fast as it can
        second = _connect(emu.tcp_address)
        await loop.sock_sendall(second, b"version\x00")
        await _until(lambda: len(server.waiting) == 1, "the second client to queue")
        proto = server.waiting[0]
        rss0 = _rss()
        sent = await _push(second, lambda p=proto: _paused(p))
        grown = _rss() - rss0
        assert sent < PUSH_LIMIT, "the kernel never pushed back: the device read it all"
        assert _paused(proto)
        assert proto.buffered_bytes <= bound + MAX_READ_BYTES
        assert server.buffered_bytes == proto.buffered_bytes
        assert grown < RSS_SLACK, f"RSS grew by {grown} bytes"
        # the first client completes its request and is answered
        await loop.sock_sendall(first, b"\n")
        reply = await _recv_all(first)
        assert reply.startswith(b'\n\n{"v":')
        first.close()
        # the second is read again from where it paused, nothing lost: its name is
        # "version" (ended by NUL), the zeros fold into a garbage length, and at EOF
        # the device runs the command (§2.1)
        await _until(lambda p=proto: server.current is p, "the second client to be served")
        assert proto.buffered_bytes == 0
        second.shutdown(socket.SHUT_WR)
        assert await _recv_all(second) == reply
        second.close()
        await _until(lambda: not server.connections, "both connections to go")
        assert server.current is None
        assert not server.waiting
        assert server.buffered_bytes == 0
        gc.collect()
        refs = sys.getrefcount(proto)  # this frame's and the call's own
        assert refs == 2, "a closed connection is still referenced"
        assert _rss() - rss0 < RSS_SLACK
        emu.check()


@pytest.mark.asyncio
async def test_tcp_serving_garbage_is_not_retained(spec_config: SimConfig) -> None:
    """The served connection reads on (as the device does) but keeps only a bounded
    prefix of what it read for the transcript."""
    async with DeviceEmulator(spec_config) as emu:
        server = _tcp(emu)
        loop = asyncio.get_running_loop()
        sock = _connect(emu.tcp_address)
        await loop.sock_sendall(sock, b"version\x00")
        await _until(lambda: server.current is not None, "the client to be served")
        proto = server.current
        assert proto is not None
        rss0 = _rss()
        total = 0
        chunk = bytes(256 * 1024)
        while total < 8 * server.max_recorded_bytes:  # the codec reads garbage slowly
            await loop.sock_sendall(sock, chunk)
            total += len(chunk)
        await _until(lambda: proto.buffered_bytes == 0, "the device to read it all")
        assert proto.recorded_bytes <= server.max_recorded_bytes
        assert _rss() - rss0 < RSS_SLACK
        sock.shutdown(socket.SHUT_WR)
        assert (await _recv_all(sock)).startswith(b'\n\n{"v":')
        sock.close()
        await _until(lambda: not server.connections, "the connection to go")
        emu.check()


@pytest.mark.asyncio
async def test_http_backlog_is_bounded(spec_config: SimConfig) -> None:
    """While the event thread is busy (a delayed reply) segments wait in a backlog:
    each connection's share of it is bounded, and freed when the connection goes."""
    cfg = dataclasses.replace(
        spec_config,
        faults=({"kind": "latency", "command": "version", "transport": "http", "delay_ms": 5000},),
    )
    async with DeviceEmulator(cfg, clock=ManualClock()) as emu:
        server = _http(emu)
        bound = server.max_queued_bytes
        loop = asyncio.get_running_loop()
        busy_r, busy_w = await asyncio.open_connection(*emu.http_address)
        busy_w.write(b"GET /version HTTP/1.1\r\n\r\n")
        await busy_w.drain()
        await _until(lambda: server.busy, "the event thread to be busy")
        greedy = _connect(emu.http_address)
        await loop.sock_sendall(greedy, b"GET /device-id HTTP/1.1\r\n\r\n")
        await _until(lambda: len(server.backlog) == 1, "the request to wait")
        proto = server.backlog[0][0]
        rss0 = _rss()
        sent = await _push(greedy, lambda p=proto: _paused(p))
        grown = _rss() - rss0
        assert sent < PUSH_LIMIT, "the kernel never pushed back: the device read it all"
        assert _paused(proto)
        assert proto.buffered_bytes <= bound + MAX_READ_BYTES
        assert server.buffered_bytes == proto.buffered_bytes
        assert grown < RSS_SLACK, f"RSS grew by {grown} bytes"
        # a third connection's segments are not held up by the greedy one's bound
        other_r, other_w = await asyncio.open_connection(*emu.http_address)
        other_w.write(b"GET /device-id HTTP/1.1\r\n\r\n")
        await other_w.drain()
        await _until(
            lambda p=proto: len(server.backlog) >= 2 and server.backlog[-1][0] is not p,
            "the third request to wait",
        )
        # the delayed reply goes out; the backlog drains in arrival order
        await emu.advance(5.0)
        assert b'{"v":' in await read_http_response(busy_r)
        assert b"0\r\n\r\n" in await read_http_response(other_r)
        await _until(lambda p=proto: not _paused(p), "the greedy connection to resume")
        reply = b""
        while not reply.endswith(b"0\r\n\r\n"):
            reply += await asyncio.wait_for(loop.sock_recv(greedy, 65536), DEADLINE_S)
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"320020001847333531323135" in reply
        greedy.close()
        busy_w.close()
        other_w.close()
        await _until(lambda: not server.connections, "the connections to go")
        assert server.buffered_bytes == 0
        assert not server.backlog
        gc.collect()
        refs = sys.getrefcount(proto)  # this frame's and the call's own
        assert refs == 2, "a closed connection is still referenced"
        emu.check()


@pytest.mark.asyncio
async def test_http_closed_connection_frees_its_backlog(spec_config: SimConfig) -> None:
    cfg = dataclasses.replace(
        spec_config,
        faults=({"kind": "latency", "command": "version", "transport": "http", "delay_ms": 5000},),
    )
    async with DeviceEmulator(cfg, clock=ManualClock()) as emu:
        server = _http(emu)
        loop = asyncio.get_running_loop()
        busy_r, busy_w = await asyncio.open_connection(*emu.http_address)
        busy_w.write(b"GET /version HTTP/1.1\r\n\r\n")
        await busy_w.drain()
        await _until(lambda: server.busy, "the event thread to be busy")
        greedy = _connect(emu.http_address)
        await loop.sock_sendall(greedy, bytes(30_000))  # below the bound: still read
        await _until(lambda: server.buffered_bytes > 0, "the segments to wait")
        with contextlib.suppress(OSError):
            greedy.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        greedy.close()
        await _until(lambda: len(server.connections) == 1, "the greedy connection to go")
        assert server.buffered_bytes == 0
        assert all(p in server.connections for p, _ in server.backlog)
        await emu.advance(5.0)
        assert b'{"v":' in await read_http_response(busy_r)
        busy_w.close()
        emu.check()
