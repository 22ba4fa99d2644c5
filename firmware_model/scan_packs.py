"""Ready-made radio environments for scan-list edge cases (pain-points.md #11)."""

from __future__ import annotations

from collections.abc import Callable

from firmware_model import security as sec
from firmware_model.radio import AccessPoint, RadioEnvironment, default_environment
from firmware_model.secret import Secret


def _ap(
    ssid: bytes,
    security: int = sec.WPA2_AES_PSK,
    channel: int = 6,
    rssi: int = -60,
    password: bytes = b"password123",
    **kw: object,
) -> AccessPoint:
    return AccessPoint(ssid, security, channel, rssi, 72200, password=Secret(password), **kw)  # type: ignore[arg-type]


def _large() -> RadioEnvironment:
    secs = [sec.OPEN, sec.WPA2_AES_PSK, sec.WPA2_MIXED_PSK, sec.WPA_MIXED_PSK, sec.WEP_PSK]
    return RadioEnvironment(
        _ap(f"Apartment-{i:02d}".encode(), secs[i % len(secs)], 1 + i % 11, -40 - i)
        for i in range(60)
    )


PACKS: dict[str, tuple[str, Callable[[], RadioEnvironment]]] = {
    "default": ("the built-in neighbourhood", default_environment),
    "empty": ('no network in range: scan-ap answers {"scans":[]}', RadioEnvironment),
    "large": ("60 networks (long lists, scrolling, JSON size)", _large),
    "duplicates": (
        "one SSID on three BSSs plus a repeated name",
        lambda: RadioEnvironment(
            [
                _ap(b"Mesh", rssi=-40, bssid="02:00:00:00:01:01"),
                _ap(b"Mesh", rssi=-62, channel=1, bssid="02:00:00:00:01:02"),
                _ap(b"Mesh", rssi=-80, channel=11, bssid="02:00:00:00:01:03"),
                _ap(b"Cafe", sec.OPEN, rssi=-70),
                _ap(b"Cafe", sec.OPEN, rssi=-71, channel=1),
            ]
        ),
    ),
    "hidden": (
        "hidden networks (skipped by scan-ap; configure answers -2)",
        lambda: RadioEnvironment(
            [
                _ap(b"Visible", rssi=-50),
                _ap(b"Hidden-Lab", rssi=-45, hidden=True),
                _ap(b"Hidden-Guest", sec.OPEN, rssi=-60, hidden=True),
            ]
        ),
    ),
    "unicode": (
        "32-byte, emoji, CJK and accented SSIDs",
        lambda: RadioEnvironment(
            [
                _ap(b"x" * 32, rssi=-50),
                _ap("Café-Net".encode(), rssi=-55),
                _ap("\U0001f4f6 Home \U0001f3e0".encode(), rssi=-60),
                _ap("我的网络".encode(), rssi=-65),
                _ap("Ñandú-\u0301combining".encode()[:32], rssi=-70),
            ]
        ),
    ),
    "quotes": (
        'SSIDs with " and \\ (the device writes them unescaped: invalid JSON)',
        lambda: RadioEnvironment(
            [
                _ap(b'Say "hello"', rssi=-50),
                _ap(b"back\\slash", rssi=-55),
                _ap(b"Normal", rssi=-60),
            ]
        ),
    ),
    "wep": (
        "WEP open and shared networks",
        lambda: RadioEnvironment(
            [
                _ap(b"OldRouter", sec.WEP_PSK, password=b"abcde", rssi=-55),
                _ap(b"OlderRouter", sec.WEP_SHARED, password=b"0123456789", rssi=-65),
                _ap(b"Modern", sec.WPA2_AES_PSK, rssi=-50),
            ]
        ),
    ),
    "enterprise": (
        "WPA/WPA2-Enterprise networks",
        lambda: RadioEnvironment(
            [
                _ap(b"Corp", sec.WPA2_AES_ENT, rssi=-50),
                _ap(b"Corp-Legacy", sec.WPA_MIXED_ENT, rssi=-65),
                _ap(b"Guest", sec.OPEN, rssi=-55),
            ]
        ),
    ),
}


def scan_pack(name: str) -> RadioEnvironment:
    try:
        return PACKS[name][1]()
    except KeyError:
        raise ValueError(f"unknown scan pack {name!r}; use one of {sorted(PACKS)}") from None
