"""Shared fixtures: one RSA key per test session (generation is the slow part) and the
spec's example device (softap-protocol.md §10, §11.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from firmware_model import (
    AccessPoint,
    Dct,
    Device,
    DeviceIdentity,
    DeviceKey,
    RadioEnvironment,
    Secret,
)
from firmware_model import security as sec
from softap_sim import DeviceEmulator, SimConfig

SPEC_DEVICE_ID = "320020001847333531323135"


@pytest.fixture(scope="session")
def device_key() -> DeviceKey:
    """An RSA-1024 device key shared by the session (keys are never committed)."""
    return DeviceKey.generate(1024)


@pytest.fixture
def spec_identity() -> DeviceIdentity:
    return DeviceIdentity(bytes.fromhex(SPEC_DEVICE_ID), "ABCDEF")


@pytest.fixture
def spec_radio() -> RadioEnvironment:
    """The two networks of the spec's scan-ap example, plus a hidden one."""
    return RadioEnvironment(
        [
            AccessPoint(
                b"guest", sec.WPA2_MIXED_PSK, 6, -52, 144400, password=Secret(b"guest-password")
            ),
            AccessPoint(b"Cafe", sec.OPEN, 11, -71, 54000),
            AccessPoint(
                b"Hidden",
                sec.WPA2_AES_PSK,
                3,
                -60,
                72200,
                hidden=True,
                password=Secret(b"hidden-password"),
            ),
        ]
    )


@pytest.fixture
def device(
    device_key: DeviceKey, spec_identity: DeviceIdentity, spec_radio: RadioEnvironment
) -> Device:
    return Device(Dct(spec_identity), device_key, spec_radio)


@pytest.fixture
def spec_config(
    device_key: DeviceKey, spec_identity: DeviceIdentity, spec_radio: RadioEnvironment
) -> SimConfig:
    return SimConfig(identity=spec_identity, key=device_key, radio=spec_radio)


@pytest_asyncio.fixture
async def emulator(spec_config: SimConfig) -> AsyncIterator[DeviceEmulator]:
    async with DeviceEmulator(spec_config) as emu:
        yield emu
        emu.check()
