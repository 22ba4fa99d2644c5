"""A port the device owns stays its own in every state of the access point.

Issue 12 item 1: with the AP down the reserved socket still had ``SO_REUSEADDR``, so a
second ``softap-sim run`` on the same fixed ports bound them, and once the first device
listened again both served the port (12 curls answered 4x by one device id and 8x by
the other). Each state is tested for both transports with fixed port numbers: a plain
``SO_REUSEADDR`` server socket and a second emulator must both get EADDRINUSE, and the
first device keeps answering alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from firmware_model import (
    DeviceState,
    GateMode,
    InvalidTransition,
    ManualClock,
    Secret,
    WifiCredential,
)
from softap_sim import DeviceEmulator, SimConfig
from softap_sim.listeners import DeviceListener
from tests.wire import tcp_exchange

Setup = Callable[[DeviceEmulator], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _listening(emu: DeviceEmulator) -> None:
    assert emu.tcp_listening
    assert emu.http_listening


async def _ap_down_after_tap(emu: DeviceEmulator) -> None:
    """A device with a stored network: listening, then a tap leaves it (AP down, joining)."""
    emu.control.listen()
    await emu.advance(0.5)
    assert emu.ap_up
    emu.control.press_button(1.0)  # the issue's `ctl button --hold 1`
    await emu.advance(0.5)  # the SoftAP teardown
    assert not emu.ap_up


async def _listening_again(emu: DeviceEmulator) -> None:
    await _ap_down_after_tap(emu)
    emu.control.listen()  # and back: the socket has listened with SO_REUSEPORT before
    await emu.advance(0.5)
    assert emu.tcp_listening
    assert emu.http_listening


async def _online_never_listened(emu: DeviceEmulator) -> None:
    for _ in range(20):
        if emu.device.state is DeviceState.ONLINE:
            break
        await emu.advance(1.0)
    assert emu.device.state is DeviceState.ONLINE
    assert emu.accepted == {"tcp": 0, "http": 0}
    assert not emu.ap_up


async def _refuse_after_fired(emu: DeviceEmulator) -> None:
    emu.control.add_fault({"kind": "refuse-after", "count": 1})
    assert await tcp_exchange(emu.tcp_address, b"version\n0\n\n")
    _reader, writer = await asyncio.open_connection(*emu.http_address)
    writer.close()
    for _ in range(50):  # the listeners close from a task of the emulator
        if not emu.tcp_listening and not emu.http_listening:
            break
        await asyncio.sleep(0)
    assert not emu.tcp_listening
    assert not emu.http_listening
    assert emu.ap_up


async def _refused_below_gate(emu: DeviceEmulator) -> None:
    assert emu.device.state is DeviceState.LISTENING
    assert not emu.tcp_listening
    assert not emu.http_listening


async def _powered_off(emu: DeviceEmulator) -> None:
    emu.control.power("off")
    await emu.settle()
    assert emu.device.state is DeviceState.OFF


STATES: dict[str, Setup] = {
    "listening": _listening,
    "ap-down-after-setup-tap": _ap_down_after_tap,
    "listening-again-after-ap-cycle": _listening_again,
    "online-never-listened": _online_never_listened,
    "refuse-after-fired": _refuse_after_fired,
    "refused-below-memory-gate": _refused_below_gate,
    "powered-off": _powered_off,
}


NEEDS_NETWORK = {
    "ap-down-after-setup-tap",
    "listening-again-after-ap-cycle",
    "online-never-listened",
}


def _config(base: SimConfig, state: str) -> SimConfig:
    if state == "refused-below-memory-gate":
        return dataclasses.replace(base, app_ram_bytes=50_000, gate_mode=GateMode.REFUSE)
    return base


async def _stored_network(emu: DeviceEmulator) -> None:
    ap = emu.device.radio.access_points[0]
    emu.device.dct.credentials.add(
        WifiCredential(ap.ssid, Secret(ap.password.value), ap.security, ap.channel)
    )


def _assert_in_use(port: int) -> None:
    """An ordinary server (SO_REUSEADDR, as Python's and most servers set) cannot bind."""
    with socket.socket() as intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError) as caught:
            intruder.bind(("127.0.0.1", port))
        assert caught.value.errno == errno.EADDRINUSE


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", ["tcp", "http"])
@pytest.mark.parametrize("state", list(STATES))
async def test_second_program_gets_port_in_use(
    spec_config: SimConfig, state: str, transport: str
) -> None:
    tcp_port, http_port = free_port(), free_port()
    before = _stored_network if state in NEEDS_NETWORK else None
    first = DeviceEmulator(
        _config(spec_config, state),
        tcp_port=tcp_port,
        http_port=http_port,
        clock=ManualClock(),
        before_power_on=before,
    )
    async with first:
        await STATES[state](first)
        owned = tcp_port if transport == "tcp" else http_port
        _assert_in_use(owned)
        # a second emulator on that port (the other one free) does not start
        ports = (owned, free_port()) if transport == "tcp" else (free_port(), owned)
        second = DeviceEmulator(spec_config, tcp_port=ports[0], http_port=ports[1])
        with pytest.raises(OSError) as caught:
            await second.start()
        assert caught.value.errno == errno.EADDRINUSE
        await second.close()
        # and the port is still the first device's: in every state it comes back to
        first.control.clear_faults()
        first.control.set_app_ram(0)
        first.control.power("on" if first.device.state is DeviceState.OFF else "cycle")
        await first.advance(1.0)
        with contextlib.suppress(InvalidTransition):
            first.control.listen()
        await first.advance(1.0)
        assert first.tcp_address == ("127.0.0.1", tcp_port)
        reply = await tcp_exchange(first.tcp_address, b"device-id\n0\n\n")
        body = json.loads(reply.split(b"\n\n", 1)[1])
        assert body["id"] == first.device.dct.identity.device_id_hex.lower()
        _assert_in_use(owned)
        first.check()


def test_reuse_options_only_while_listening() -> None:
    """SO_REUSEPORT while listening keeps the TIME_WAIT fast path; off while reserved."""

    async def main() -> None:
        listener = DeviceListener("TCP", "127.0.0.1", free_port())
        listener.reserve()
        sock = listener.reserved
        assert sock is not None
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        await listener.open(asyncio.Protocol)
        served = listener._serving
        assert served is not None
        assert served.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        if sys.platform.startswith("linux"):
            assert served.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        await listener.close()
        reserved = listener.reserved
        assert reserved is not None
        assert reserved.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        if sys.platform.startswith("linux"):
            assert reserved.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        await listener.close(keep_port=False)

    asyncio.run(main())


def test_cli_second_run_says_port_in_use(tmp_path: Path, spec_config: SimConfig) -> None:
    """The reported case end to end: A's AP down, a second ``softap-sim run`` is refused."""

    async def main() -> str:
        tcp_port, http_port = free_port(), free_port()
        async with DeviceEmulator(
            spec_config,
            tcp_port=tcp_port,
            http_port=http_port,
            clock=ManualClock(),
            before_power_on=_stored_network,
        ) as emu:
            await _ap_down_after_tap(emu)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "softap_sim",
                "run",
                "--tcp-port",
                str(tcp_port),
                "--http-port",
                str(http_port),
                "--no-control",
                "--no-cloud",
                "--plain",
                "--state-dir",
                str(tmp_path / "b"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), 60)
            finally:
                if proc.returncode is None:  # it started: the defect; do not leave it running
                    proc.kill()
                    await proc.wait()
            assert proc.returncode == 1, (out, err)
            return err.decode()

    err = asyncio.run(main())
    assert "already in use" in err
    assert "Traceback" not in err
