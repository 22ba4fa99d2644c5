"""The simulated radio environment the device scans and joins.

``scan-ap`` reports it, and current firmware's ``configure-ap`` scans it to learn a
WPA/WPA2 network's exact security (softap-protocol.md §4.3, §4.4).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware_model import security as sec
from firmware_model.secret import Secret

MAX_SSID_BYTES = 32


@dataclass(frozen=True, slots=True)
class AccessPoint:
    """One BSS as the BCM43362 would report it."""

    ssid: bytes
    security: int = sec.WPA2_MIXED_PSK
    channel: int = 6
    rssi: int = -55
    #: maximum data rate, kbit/s (soft-ap.md L120)
    max_data_rate: int = 72200
    bssid: str = "00:00:00:00:00:00"
    password: Secret = field(default=Secret(b""))
    hidden: bool = False
    #: the AP's DHCP server answers (False reproduces "stuck at obtaining IP")
    dhcp: bool = True

    @property
    def advertised_ssid(self) -> bytes:
        """The SSID as a scan result carries it: empty when hidden, cut to 32 bytes."""
        return b"" if self.hidden else self.ssid[:MAX_SSID_BYTES]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, index: int = 0) -> AccessPoint:
        """Build from a networks-file table; raises ``ValueError`` naming the bad field."""
        known = {
            "ssid",
            "security",
            "channel",
            "rssi",
            "mdr",
            "max_data_rate",
            "bssid",
            "password",
            "hidden",
            "dhcp",
        }
        if not isinstance(data, Mapping):
            raise ValueError(
                f"network #{index + 1} must be a table/object, got {type(data).__name__}"
            )
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"network #{index + 1}: unknown key(s) {sorted(unknown)}")
        ssid = data.get("ssid")
        if not isinstance(ssid, str):
            raise ValueError(f"network #{index + 1}: 'ssid' must be a string")
        try:
            security = sec.parse_security(data.get("security", "wpa2_mixed"))
        except ValueError as err:
            raise ValueError(f"network #{index + 1} ({ssid!r}): {err}") from None
        ints: dict[str, int] = {}
        for name, default in (("channel", 6), ("rssi", -55)):
            v = data.get(name, default)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"network #{index + 1} ({ssid!r}): '{name}' must be an integer")
            ints[name] = v
        mdr = data.get("max_data_rate", data.get("mdr", 72200))
        if not isinstance(mdr, int) or isinstance(mdr, bool):
            raise ValueError(f"network #{index + 1} ({ssid!r}): 'mdr' must be an integer")
        password = data.get("password", "")
        if not isinstance(password, str):
            raise ValueError(f"network #{index + 1} ({ssid!r}): 'password' must be a string")
        hidden = data.get("hidden", False)
        if not isinstance(hidden, bool):
            raise ValueError(f"network #{index + 1} ({ssid!r}): 'hidden' must be true or false")
        dhcp = data.get("dhcp", True)
        if not isinstance(dhcp, bool):
            raise ValueError(f"network #{index + 1} ({ssid!r}): 'dhcp' must be true or false")
        bssid = data.get("bssid", f"02:00:00:00:{index // 256:02x}:{index % 256:02x}")
        if not isinstance(bssid, str):
            raise ValueError(f"network #{index + 1} ({ssid!r}): 'bssid' must be a string")
        return cls(
            ssid=ssid.encode("utf-8"),
            security=security,
            channel=ints["channel"],
            rssi=ints["rssi"],
            max_data_rate=mdr,
            bssid=bssid,
            password=Secret(password.encode("utf-8")),
            hidden=hidden,
            dhcp=dhcp,
        )


@dataclass(slots=True)
class RadioEnvironment:
    """The access points in range, in the order the scan callbacks deliver them."""

    access_points: list[AccessPoint] = field(default_factory=list)

    def __init__(self, access_points: Iterable[AccessPoint] = ()) -> None:
        self.access_points = list(access_points)

    def scan(self) -> list[AccessPoint]:
        """Every BSS in range, hidden ones included (the reply skips them)."""
        return list(self.access_points)

    def sniff(self, ssid: bytes) -> AccessPoint | None:
        """``sniff_security``: the first visible BSS whose SSID equals ``ssid``."""
        for ap in self.access_points:
            if ap.advertised_ssid and ap.advertised_ssid == ssid:
                return ap
        return None

    def find(self, ssid: bytes) -> AccessPoint | None:
        """The AP a join would associate with: the strongest BSS of that SSID, hidden or not."""
        matches = [ap for ap in self.access_points if ap.ssid == ssid]
        return max(matches, key=lambda ap: ap.rssi) if matches else None

    def to_json(self) -> list[dict[str, Any]]:
        """For the control API: passwords are never included."""
        return [
            {
                "ssid": ap.ssid.decode("utf-8", "replace"),
                "security": ap.security,
                "channel": ap.channel,
                "rssi": ap.rssi,
                "mdr": ap.max_data_rate,
                "bssid": ap.bssid,
                "hidden": ap.hidden,
                "dhcp": ap.dhcp,
                "has_password": bool(ap.password),
            }
            for ap in self.access_points
        ]

    @classmethod
    def from_list(cls, items: Iterable[Mapping[str, Any]]) -> RadioEnvironment:
        """Build from the ``[[network]]`` tables of a networks file."""
        return cls(AccessPoint.from_mapping(item, index=i) for i, item in enumerate(items))


def default_environment() -> RadioEnvironment:
    """A realistic neighbourhood: the spec's examples plus the usual mix.

    Every ``sec`` is one of the 9 personal values of the client tables, so Android's
    configure step accepts them all (clients.md §4 #11).
    """
    return RadioEnvironment(
        [
            AccessPoint(
                b"guest",
                sec.WPA2_MIXED_PSK,
                6,
                -52,
                144400,
                "a4:2b:b0:11:22:01",
                Secret(b"guest-password"),
            ),
            AccessPoint(b"Cafe", sec.OPEN, 11, -71, 54000, "a4:2b:b0:11:22:02"),
            AccessPoint(
                b"HomeNetwork",
                sec.WPA2_AES_PSK,
                1,
                -45,
                144400,
                "5c:96:9d:33:44:01",
                Secret(b"correct horse battery staple"),
            ),
            AccessPoint(
                b"Office-5F",
                sec.WPA_MIXED_PSK,
                6,
                -67,
                54000,
                "5c:96:9d:33:44:02",
                Secret(b"office-secret-2024"),
            ),
            AccessPoint(
                b"OldRouter", sec.WEP_PSK, 3, -80, 11000, "00:14:bf:55:66:01", Secret(b"abcde")
            ),
            AccessPoint(
                b"Caf\xc3\xa9-Net",
                sec.WPA2_AES_PSK,
                9,
                -63,
                72200,
                "a4:2b:b0:11:22:03",
                Secret(b"croissant-au-beurre"),
            ),
            AccessPoint(
                b"Hidden-Lab",
                sec.WPA2_AES_PSK,
                11,
                -70,
                72200,
                "a4:2b:b0:11:22:04",
                Secret(b"hidden-network-pw"),
                hidden=True,
            ),
            AccessPoint(
                b"guest",
                sec.WPA2_MIXED_PSK,
                11,
                -74,
                144400,
                "a4:2b:b0:11:22:05",
                Secret(b"guest-password"),
            ),
        ]
    )
