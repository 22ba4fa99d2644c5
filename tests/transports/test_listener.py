"""A device port across AP cycles: refused while down, the same port, ours throughout."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from softap_sim.errors import ConfigError
from softap_sim.listeners import DeviceListener, SharedPorts, shared_ports_supported

FD_DIR = Path("/proc/self/fd")


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]
        self.transport.close()


async def _echo(port: int) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"ping")
    data = await asyncio.wait_for(r.read(), 5)
    w.close()
    return data


def _plain_bind(port: int) -> None:
    """Bind as another program would (SO_REUSEADDR, no SO_REUSEPORT)."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))
        other.listen(1)


@pytest.mark.asyncio
@pytest.mark.parametrize("requested", [0, None])
async def test_ap_cycles_keep_the_port_and_refuse_while_down(requested: int | None) -> None:
    if requested is None:  # a fixed port, as the device's 5609
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            requested = probe.getsockname()[1]
    listener = DeviceListener("tcp", "127.0.0.1", requested)
    listener.reserve()
    port = listener.port
    assert port > 0
    try:
        for _ in range(3):
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)
            await listener.open(_Echo)
            assert listener.listening
            assert await _echo(port) == b"ping"
            with pytest.raises(OSError):  # nobody else can take the port while we serve
                _plain_bind(port)
            await listener.close()
            assert listener.port == port
            assert not listener.listening
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
    finally:
        await listener.close(keep_port=False)
    _plain_bind(port)  # released


def _open_fds() -> int:
    return len(list(FD_DIR.iterdir()))


@pytest.mark.asyncio
@pytest.mark.skipif(not FD_DIR.is_dir(), reason="counts /proc/self/fd (Linux)")
async def test_one_descriptor_per_port_whatever_the_state() -> None:
    """Two per device, listening or not: 10,000 devices must fit in 20,000 descriptors."""
    warm = DeviceListener("tcp", "127.0.0.1", 0)  # the loop's own one-time descriptors
    await warm.open(_Echo)  # (libuv keeps a spare one for EMFILE once anything listens)
    base = _open_fds()
    listener = DeviceListener("tcp", "127.0.0.1", 0)
    listener.reserve()
    port = listener.port
    try:
        assert _open_fds() == base + 1
        for _ in range(3):
            await listener.open(_Echo)
            assert _open_fds() == base + 1
            await listener.close()
            await asyncio.sleep(0)  # let the loop finish closing its handle (uvloop)
            assert _open_fds() == base + 1
            assert listener.port == port
    finally:
        await listener.close(keep_port=False)
    await asyncio.sleep(0)
    assert _open_fds() == base
    await warm.close(keep_port=False)


@pytest.mark.asyncio
@pytest.mark.skipif(shared_ports_supported() is not None, reason=str(shared_ports_supported()))
async def test_shared_ports_one_socket_many_addresses() -> None:
    shared = SharedPorts()
    first = shared.listener("TCP", "127.0.0.1", 0)
    second = shared.listener("TCP", "127.0.0.2", 0)
    http = shared.listener("HTTP", "127.0.0.1", 0)
    try:
        first.reserve()
        await first.open(_Echo)
        second.reserve()  # a device starting while another already serves: no new bind
        await second.open(_Echo)
        http.reserve()
        assert first.port == second.port != http.port  # port 0: one free port per name
        assert shared.sockets == 2
        for host in ("127.0.0.1", "127.0.0.2"):
            r, w = await asyncio.open_connection(host, first.port)
            w.write(b"ping")
            assert await asyncio.wait_for(r.read(), 5) == b"ping"
            w.close()
        await second.close()
        assert not second.listening
        assert first.listening
        r, w = await asyncio.open_connection("127.0.0.2", first.port)
        with pytest.raises(ConnectionResetError):  # the kernel accepted; nobody serves it
            await asyncio.wait_for(r.read(), 5)
        w.close()
        with pytest.raises(ConfigError, match="loopback"):
            shared.listener("TCP", "10.0.0.1", 0)
    finally:
        await shared.close()
    assert not first.bound
