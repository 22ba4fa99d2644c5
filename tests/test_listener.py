"""A device port across AP cycles: refused while down, the same port, ours throughout."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from softap_sim.listeners import DeviceListener


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


@pytest.mark.asyncio
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux shutdown() semantics")
async def test_the_bound_socket_survives_ap_cycles_on_linux() -> None:
    listener = DeviceListener("tcp", "127.0.0.1", 0)
    listener.reserve()
    sock = listener.reserved
    try:
        for _ in range(3):
            await listener.open(_Echo)
            await listener.close()
            assert listener.reserved is sock  # no new socket, no new bind
    finally:
        await listener.close(keep_port=False)
