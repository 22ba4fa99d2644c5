"""DeviceEmulator lifecycle: ports, idempotent start/close, no leaks, AP shutdown."""

from __future__ import annotations

import asyncio

import pytest

from softap_sim import DeviceEmulator, LifecycleError, SimConfig
from tests.wire import http_exchange, tcp_exchange


@pytest.mark.asyncio
async def test_ports_and_urls(spec_config: SimConfig) -> None:
    emu = DeviceEmulator(spec_config)
    with pytest.raises(LifecycleError):
        _ = emu.device
    await emu.start()
    await emu.start()  # idempotent
    host, port = emu.tcp_address
    assert host == "127.0.0.1"
    assert port > 0
    assert emu.url_for("version") == f"{emu.http_url}/version"
    assert emu.ssid == "Photon-ABCDEF"
    await emu.close()
    await emu.close()  # idempotent
    with pytest.raises(OSError):
        await asyncio.open_connection(host, port)


@pytest.mark.asyncio
async def test_close_leaves_no_tasks_or_connections(spec_config: SimConfig) -> None:
    before = asyncio.all_tasks()
    async with DeviceEmulator(spec_config) as emu:
        r, w = await asyncio.open_connection(*emu.http_address)  # left open by the client
        await tcp_exchange(emu.tcp_address, b"version\n0\n\n")
    assert await asyncio.wait_for(r.read(), 5) == b""  # the emulator closed it
    w.close()
    assert asyncio.all_tasks() <= before | {asyncio.current_task()}


@pytest.mark.asyncio
async def test_connect_ap_over_http_flushes_then_ap_down(emulator: DeviceEmulator) -> None:
    tcp_addr = emulator.tcp_address
    reply = await http_exchange(
        emulator.http_address,
        b'POST /connect-ap HTTP/1.1\r\nContent-Length: 9\r\n\r\n{"idx":0}',
    )
    assert reply.endswith(b"1\r\n0\r\n1\r\n}\r\n0\r\n\r\n")
    await asyncio.wait_for(emulator.setup_complete.wait(), 5)
    # nothing stored: the device re-enters listening mode on the same ports
    await emulator.settle()
    assert emulator.ap_up
    assert emulator.tcp_address == tcp_addr


@pytest.mark.asyncio
async def test_internal_error_is_reported_by_check(emulator: DeviceEmulator) -> None:
    def boom(name: str, body: bytes | None = b"") -> object:
        raise RuntimeError("model bug")

    emulator.device.execute = boom  # type: ignore[method-assign,assignment]
    assert await tcp_exchange(emulator.tcp_address, b"version\n0\n\n") == b""
    with pytest.raises(Exception, match="model bug"):
        emulator.check()
    emulator._errors.clear()  # let the fixture's own check() pass
