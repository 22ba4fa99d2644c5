"""The stored Wi-Fi networks (the DCT ``stored_ap_list``).

Five slots, newest first; a network with the same SSID is overwritten in place; only
one enterprise network is kept (``add_wiced_wifi_credentials`` in ``wlan_hal.cpp``,
softap-protocol.md §4.4).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from firmware_model.secret import Secret
from firmware_model.security import ENTERPRISE_ENABLED

#: ``CONFIG_AP_LIST_SIZE``
CONFIG_AP_LIST_SIZE = 5
MAX_PASSWORD_BYTES = 64
MAX_SSID_BYTES = 32


@dataclass(frozen=True, slots=True)
class EnterpriseConfig:
    """The enterprise part of a credential (``eap_config_t`` + security section)."""

    eap_type: int = 0
    outer_identity: bytes = b""
    inner_identity: bytes = b""
    client_certificate: bytes = b""
    ca_certificate: bytes = b""
    private_key: Secret = field(default=Secret(b""))


@dataclass(frozen=True, slots=True)
class WifiCredential:
    """One stored network. ``password`` is the decrypted key, kept as a :class:`Secret`."""

    ssid: bytes
    password: Secret
    security: int
    channel: int
    enterprise: EnterpriseConfig | None = None

    @property
    def is_enterprise(self) -> bool:
        return bool(self.security & ENTERPRISE_ENABLED) and self.security != -1


class CredentialStore:
    """The five-slot list, newest first."""

    __slots__ = ("_slots",)

    def __init__(self, entries: Iterable[WifiCredential] = ()) -> None:
        self._slots: list[WifiCredential] = list(entries)[:CONFIG_AP_LIST_SIZE]

    def __iter__(self) -> Iterator[WifiCredential]:
        return iter(list(self._slots))

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, index: int) -> WifiCredential:
        return self._slots[index]

    def list(self) -> list[WifiCredential]:
        return list(self._slots)

    def add(self, cred: WifiCredential) -> None:
        """Store ``cred`` as the firmware does (same SSID in place, else shift down)."""
        cred = WifiCredential(
            ssid=cred.ssid[:MAX_SSID_BYTES],
            password=Secret(cred.password.value[:MAX_PASSWORD_BYTES]),
            security=cred.security,
            channel=cred.channel,
            enterprise=cred.enterprise,
        )
        replace = next((i for i, c in enumerate(self._slots) if c.ssid == cred.ssid), -1)
        if cred.is_enterprise:
            for i, existing in enumerate(list(self._slots)):
                if existing.is_enterprise:
                    if replace < 0:
                        replace = i
                    elif i != replace:
                        self._slots[i] = _EMPTY
        if replace >= 0:
            self._slots[replace] = cred
        else:
            self._slots.insert(0, cred)
        self._slots = [c for c in self._slots if c is not _EMPTY][:CONFIG_AP_LIST_SIZE]

    def clear(self) -> None:
        self._slots.clear()


_EMPTY = WifiCredential(b"", Secret(b""), 0, 0)
