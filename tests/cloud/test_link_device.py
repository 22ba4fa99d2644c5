"""The device side of the cloud link: failures follow the firmware (blinking cyan, retry)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization

from firmware_model import DeviceKey, DeviceState, ManualClock, RadioEnvironment
from firmware_model.app import FunctionSpec, UserApp, VariableSpec, default_app
from firmware_model.led import LED_CLOUD, LED_ONLINE
from softap_sim import DeviceEmulator, SimConfig
from softap_sim.cloud.service import CloudService, load_or_create_server_key
from tests.wire import tcp_exchange

HOME = {"ssid": "HomeNet", "security": "wpa2_aes", "password": "home-wifi-password"}


@pytest_asyncio.fixture
async def service() -> AsyncIterator[CloudService]:
    svc = CloudService(None)
    await svc.open()
    await svc.serve("127.0.0.1", 0)
    await svc.serve_devices("127.0.0.1", 0)
    try:
        yield svc
    finally:
        await svc.close()


def config_for(service: CloudService, key: DeviceKey, **kw: object) -> SimConfig:
    assert service.device_server is not None
    return SimConfig(
        radio=RadioEnvironment.from_list([HOME]),
        key=key,
        cloud_endpoint=("127.0.0.1", service.device_server.port),
        server_public_key_pem=service.server_public_key_pem,
        **kw,  # type: ignore[arg-type]
    )


async def join(emu: DeviceEmulator) -> None:
    """Store the home network over SoftAP and connect-ap (the app's part)."""
    from cryptography.hazmat.primitives.asymmetric import padding

    pwd = (
        emu.device.key.crypto_key.public_key()
        .encrypt(HOME["password"].encode(), padding.PKCS1v15())
        .hex()
    )
    body = ('{"idx":0,"ssid":"HomeNet","sec":4194308,"ch":6,"pwd":"%s"}' % pwd).encode()
    assert (
        await tcp_exchange(emu.tcp_address, b"configure-ap\n%d\n\n" % len(body) + body)
        == b'\n\n{"r":0}'
    )
    assert await tcp_exchange(emu.tcp_address, b'connect-ap\n9\n\n{"idx":0}') == b'\n\n{"r":0}'


@pytest.mark.asyncio
async def test_unknown_device_is_refused_and_retries(
    service: CloudService, device_key: DeviceKey
) -> None:
    clock = ManualClock()
    async with DeviceEmulator(config_for(service, device_key), clock=clock) as emu:
        await join(emu)  # never registered: the handshake is refused
        await emu.wait_for_state(DeviceState.CLOUD_RETRY)
        assert emu.device.led == LED_CLOUD
        snap = emu.control.snapshot()
        assert snap["cloud"]["connected"] is False
        assert snap["cloud"]["attempts"] == 1
        # register it; the back-off timer brings it online
        dev = emu.device
        await service.register_device(
            dev.dct.identity.device_id_hex, dev.key.public_key_pem.decode()
        )
        await emu.advance(1.0)
        await emu.wait_for_state(DeviceState.ONLINE)
        assert emu.device.led == LED_ONLINE
        assert emu.control.snapshot()["cloud"]["connected"] is True


@pytest.mark.asyncio
async def test_dropped_connection_goes_back_to_blinking_cyan(
    service: CloudService, device_key: DeviceKey
) -> None:
    clock = ManualClock()

    async def register(e: DeviceEmulator) -> None:
        await service.register_device(
            e.device.dct.identity.device_id_hex, e.device.key.public_key_pem.decode()
        )

    async with DeviceEmulator(
        config_for(service, device_key), clock=clock, before_power_on=register
    ) as emu:
        await join(emu)
        await emu.wait_for_state(DeviceState.ONLINE)
        assert service.device_server is not None
        device_id = emu.device.dct.identity.device_id_hex.lower()
        await service.device_server.wait_ready(device_id)
        await service.device_server.close()  # the cloud goes away
        await emu.wait_for_state(DeviceState.CLOUD_RETRY)
        await service.device_server.start()  # and comes back on the same port
        await emu.advance(1.0)
        await emu.wait_for_state(DeviceState.ONLINE)
        emu.check()


@pytest.mark.asyncio
async def test_garbage_from_the_server_ends_the_session_once(
    device_key: DeviceKey, caplog: pytest.LogCaptureFixture
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x00" * 40)  # a nonce
        await reader.readexactly(256)
        writer.write(b"\xff" * 384)  # not a valid reply
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    key = load_or_create_server_key(None)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cfg = SimConfig(
        radio=RadioEnvironment.from_list([HOME]),
        key=device_key,
        cloud_endpoint=("127.0.0.1", port),
        server_public_key_pem=pem,
    )
    caplog.set_level("WARNING", logger="softap_sim.transports.cloud_link")
    try:
        async with DeviceEmulator(cfg, clock=ManualClock()) as emu:
            await join(emu)
            await emu.wait_for_state(DeviceState.CLOUD_RETRY)
            emu.check()
    finally:
        server.close()
        await server.wait_closed()
    ended = [r for r in caplog.records if "cloud connection ended" in r.getMessage()]
    assert len(ended) == 1


def test_user_app_wire_encodings() -> None:
    app = default_app()
    assert app.variables["temperature"].encode() == struct.pack("<d", 21.5)  # double LE
    assert app.variables["uptime"].encode() == struct.pack(">i", 42)
    assert app.variables["ready"].encode() == b"\x01"
    assert app.variables["room"].encode() == b"livingRoom"
    assert app.functions["echoLen"].call("livingRoom") == 10
    assert b'"lightsOn"' in app.describe()
    assert b'"temperature":9' in app.describe()
    custom = UserApp.from_mapping(
        {
            "functions": {"open": {"returns": -7, "delay_s": 2}},
            "variables": {"flag": {"type": "bool", "value": False}},
        }
    )
    assert custom.functions["open"] == FunctionSpec("open", -7, "constant", 2.0, False)
    assert custom.variables["flag"] == VariableSpec("flag", "bool", False)
    for bad in (
        {"functions": {"x" * 13: {}}},
        {"variables": {"v": {"type": "int32", "value": 2**31}}},
        {"variables": {"v": {"type": "float", "value": 1}}},
        {"colour": 1},
    ):
        with pytest.raises(ValueError):
            UserApp.from_mapping(bad)
