"""Firmware eras whose SoftAP behaviour differs (softap-protocol.md §8).

The default, :attr:`FirmwareEra.CURRENT`, is device-os 0.7.0 - 3.3.x: the protocol
code is identical across those tags.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FirmwareEra(enum.Enum):
    """A range of device-os releases with one SoftAP behaviour."""

    #: 0.4.0 - 0.4.3: TCP only, 4-char device codes, 5 configure-ap keys, no validation
    V0_4_0 = "0.4.0"
    #: 0.4.4 - 0.4.9: HTTP with one socket, ``/`` -> ``/hello``, no catch-all route
    V0_4_4 = "0.4.4"
    #: 0.5.0 - 0.6.4: ``/index`` redirect, catch-all ``/``, case-insensitive prefix routes
    V0_5_0 = "0.5.0"
    #: 0.7.0 - 3.3.x: the current protocol (the default)
    CURRENT = "0.7.0"

    @classmethod
    def parse(cls, text: str) -> FirmwareEra:
        """Map a device-os version (``"1.5.2"``) or an era name to its era."""
        t = text.strip().lower().removeprefix("v")
        aliases = {"current": cls.CURRENT, "latest": cls.CURRENT}
        if t in aliases:
            return aliases[t]
        try:
            parts = tuple(int(p) for p in t.split("-")[0].split("."))
        except ValueError:
            raise ValueError(
                f"unknown firmware {text!r}; give a device-os version such as 1.5.2 or 0.6.4"
            ) from None
        if parts >= (4,):
            raise ValueError(f"device-os {text} has no SoftAP (Photon/P1 support ends at 3.3.x)")
        if parts >= (0, 7):
            return cls.CURRENT
        if parts >= (0, 5):
            return cls.V0_5_0
        if parts >= (0, 4, 4):
            return cls.V0_4_4
        if parts >= (0, 4):
            return cls.V0_4_0
        raise ValueError(f"device-os {text} predates SoftAP setup (it starts at 0.4.0)")


class CryptoErrors(enum.Enum):
    """Which RSA library's error codes ``configure-ap`` returns."""

    #: mbedTLS (0.7.0+), e.g. -16640 for bad padding
    MBEDTLS = "mbedtls"
    #: tropicssl (<= 0.6.x), e.g. -1040 for bad padding
    TROPICSSL = "tropicssl"


@dataclass(frozen=True, slots=True)
class EraProfile:
    """Behaviour switches of one era, each traced to softap-protocol.md §8."""

    era: FirmwareEra
    #: HTTP server compiled in (absent in 0.4.0 - 0.4.3)
    http: bool
    #: concurrent HTTP sockets of the WICED server
    http_sockets: int
    #: target of the raw ``/`` redirect
    root_redirect: str
    #: the application page handler route (``/*`` glob, ``/`` prefix, or none)
    catch_all: str | None
    #: dynamic routes matched case-insensitively by prefix (0.6.4 library)
    prefix_routes: bool
    #: configure-ap accepts the enterprise keys (12 keys instead of 5)
    enterprise_keys: bool
    #: ``wlan_set_credentials`` validation (-2/-3/-4, security sniffing)
    validate_credentials: bool
    #: RSA error code family
    crypto_errors: CryptoErrors
    #: length of a newly generated device code (4 before 0.7.0-rc.3)
    device_code_length: int


ERAS: dict[FirmwareEra, EraProfile] = {
    FirmwareEra.V0_4_0: EraProfile(
        era=FirmwareEra.V0_4_0,
        http=False,
        http_sockets=0,
        root_redirect="/hello",
        catch_all=None,
        prefix_routes=False,
        enterprise_keys=False,
        validate_credentials=False,
        crypto_errors=CryptoErrors.TROPICSSL,
        device_code_length=4,
    ),
    FirmwareEra.V0_4_4: EraProfile(
        era=FirmwareEra.V0_4_4,
        http=True,
        http_sockets=1,
        root_redirect="/hello",
        catch_all=None,
        prefix_routes=False,
        enterprise_keys=False,
        validate_credentials=False,
        crypto_errors=CryptoErrors.TROPICSSL,
        device_code_length=4,
    ),
    FirmwareEra.V0_5_0: EraProfile(
        era=FirmwareEra.V0_5_0,
        http=True,
        http_sockets=1,
        root_redirect="/index",
        catch_all="/",
        prefix_routes=True,
        enterprise_keys=False,
        validate_credentials=False,
        crypto_errors=CryptoErrors.TROPICSSL,
        device_code_length=4,
    ),
    FirmwareEra.CURRENT: EraProfile(
        era=FirmwareEra.CURRENT,
        http=True,
        http_sockets=10,
        root_redirect="/index",
        catch_all="/*",
        prefix_routes=False,
        enterprise_keys=True,
        validate_credentials=True,
        crypto_errors=CryptoErrors.MBEDTLS,
        device_code_length=6,
    ),
}
