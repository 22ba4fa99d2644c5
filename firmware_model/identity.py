"""Device identity: the STM32 unique id, the SoftAP device code and SSID prefix."""

from __future__ import annotations

import random
from dataclasses import dataclass

from firmware_model.errors import DctFormatError

#: device code alphabet: no 0, 1, I or O (``device_code.cpp`` L7)
DEVICE_CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
DEFAULT_SSID_PREFIX = "Photon"
#: DCT ``ssid_prefix`` holds a length byte and at most 25 characters
MAX_SSID_PREFIX_LEN = 25
DEVICE_ID_BYTES = 12


def device_code_from_random(value: int, length: int = 6) -> str:
    """Build a device code from one 32-bit RNG value, 5 bits a char, low bits first."""
    return "".join(DEVICE_CODE_ALPHABET[(value >> (5 * i)) & 0x1F] for i in range(length))


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """What makes one emulated device distinct from another."""

    device_id: bytes
    device_code: str
    ssid_prefix: str = DEFAULT_SSID_PREFIX

    def __post_init__(self) -> None:
        if len(self.device_id) != DEVICE_ID_BYTES:
            raise DctFormatError(
                f"device id must be {DEVICE_ID_BYTES} bytes, got {len(self.device_id)}"
            )
        if len(self.device_code) not in (4, 6) or any(
            c not in DEVICE_CODE_ALPHABET for c in self.device_code
        ):
            raise DctFormatError(f"invalid device code {self.device_code!r}")
        if not self.ssid_prefix or len(self.ssid_prefix.encode()) > MAX_SSID_PREFIX_LEN:
            raise DctFormatError(
                f"SSID prefix must be 1-{MAX_SSID_PREFIX_LEN} bytes, got {self.ssid_prefix!r}"
            )

    @property
    def device_id_hex(self) -> str:
        """Upper-case hex, as ``device-id`` prints it (``bytes2hexbuf``)."""
        return self.device_id.hex().upper()

    @property
    def ssid(self) -> str:
        """The SoftAP network name, ``<prefix>-<device code>``."""
        return f"{self.ssid_prefix}-{self.device_code}"

    @classmethod
    def generate(
        cls, rng: random.Random, *, code_length: int = 6, ssid_prefix: str = DEFAULT_SSID_PREFIX
    ) -> DeviceIdentity:
        """A new identity from an injected RNG (deterministic for a given seed)."""
        return cls(
            device_id=rng.randbytes(DEVICE_ID_BYTES),
            device_code=device_code_from_random(rng.getrandbits(32), code_length),
            ssid_prefix=ssid_prefix,
        )
