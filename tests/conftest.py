"""Shared fixtures: one RSA key per test session (generation is the slow part) and the
spec's example device (softap-protocol.md §10, §11.1)."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

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


def _probable_prime(rng: random.Random, bits: int) -> int:
    """A prime from a seeded RNG (Miller-Rabin, 40 rounds): reproducible test keys."""
    while True:
        n = rng.getrandbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if n % 65537 == 1 or any(n % p == 0 for p in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31)):
            continue
        d, r = n - 1, 0
        while d % 2 == 0:
            d //= 2
            r += 1
        for _ in range(40):
            x = pow(rng.randrange(2, n - 2), d, n)
            if x in (1, n - 1):
                continue
            for _ in range(r - 1):
                x = pow(x, 2, n)
                if x == n - 1:
                    break
            else:
                break
        else:
            return n


def seeded_key(seed: int, bits: int = 1024) -> DeviceKey:
    """A deterministic RSA key (e = 65537) built at test time; never committed."""
    rng = random.Random(seed)
    e = 65537
    p = _probable_prime(rng, bits // 2)
    q = _probable_prime(rng, bits // 2)
    while q == p:
        q = _probable_prime(rng, bits // 2)
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        d % (p - 1),
        d % (q - 1),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )
    return DeviceKey(numbers.private_key())


@pytest.fixture(scope="session")
def device_key() -> DeviceKey:
    """An RSA-1024 device key, the same on every run, so every test is deterministic."""
    return seeded_key(20261127)


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


if os.environ.get("SOFTAP_TEST_LOOP") == "uvloop":
    # scripts/test.sh runs the suite a second time on uvloop, the default loop of
    # 'softap-sim run' and 'fleet' (softap_sim/event_loop.py): same bytes on both loops
    import uvloop

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        return {"uvloop": uvloop.new_event_loop}
