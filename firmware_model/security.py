"""WICED security values as they appear on the wire (softap-protocol.md §5).

The firmware receives a raw WICED value in ``configure-ap`` ``sec``, keeps only its
*family* (``toSecurityType``) and, for WPA/WPA2, learns the exact value from its own
scan (``toSecurity`` in ``wlan_hal.cpp``).
"""

from __future__ import annotations

import enum

WEP_ENABLED = 0x0001
TKIP_ENABLED = 0x0002
AES_ENABLED = 0x0004
SHARED_ENABLED = 0x8000
WPA_SECURITY = 0x0020_0000
WPA2_SECURITY = 0x0040_0000
ENTERPRISE_ENABLED = 0x0200_0000
WPS_ENABLED = 0x1000_0000
IBSS_ENABLED = 0x2000_0000

OPEN = 0
WEP_PSK = WEP_ENABLED
WEP_SHARED = WEP_ENABLED | SHARED_ENABLED
WPA_TKIP_PSK = WPA_SECURITY | TKIP_ENABLED
WPA_AES_PSK = WPA_SECURITY | AES_ENABLED
WPA_MIXED_PSK = WPA_SECURITY | AES_ENABLED | TKIP_ENABLED
WPA2_TKIP_PSK = WPA2_SECURITY | TKIP_ENABLED
WPA2_AES_PSK = WPA2_SECURITY | AES_ENABLED
WPA2_MIXED_PSK = WPA2_SECURITY | AES_ENABLED | TKIP_ENABLED
WPA_TKIP_ENT = ENTERPRISE_ENABLED | WPA_TKIP_PSK
WPA_AES_ENT = ENTERPRISE_ENABLED | WPA_AES_PSK
WPA_MIXED_ENT = ENTERPRISE_ENABLED | WPA_MIXED_PSK
WPA2_TKIP_ENT = ENTERPRISE_ENABLED | WPA2_TKIP_PSK
WPA2_AES_ENT = ENTERPRISE_ENABLED | WPA2_AES_PSK
WPA2_MIXED_ENT = ENTERPRISE_ENABLED | WPA2_MIXED_PSK
UNKNOWN = -1

#: Names accepted in networks files, mapped to WICED values (softap-protocol.md §5).
SECURITY_NAMES: dict[str, int] = {
    "open": OPEN,
    "wep": WEP_PSK,
    "wep_psk": WEP_PSK,
    "wep_shared": WEP_SHARED,
    "wpa_tkip": WPA_TKIP_PSK,
    "wpa_aes": WPA_AES_PSK,
    "wpa_mixed": WPA_MIXED_PSK,
    "wpa2_tkip": WPA2_TKIP_PSK,
    "wpa2_aes": WPA2_AES_PSK,
    "wpa2_mixed": WPA2_MIXED_PSK,
    "wpa2": WPA2_MIXED_PSK,
    "wpa_enterprise_tkip": WPA_TKIP_ENT,
    "wpa_enterprise_aes": WPA_AES_ENT,
    "wpa_enterprise_mixed": WPA_MIXED_ENT,
    "wpa2_enterprise_tkip": WPA2_TKIP_ENT,
    "wpa2_enterprise_aes": WPA2_AES_ENT,
    "wpa2_enterprise_mixed": WPA2_MIXED_ENT,
    "wpa2_enterprise": WPA2_MIXED_ENT,
}


class SecurityFamily(enum.IntEnum):
    """``WLanSecurityType`` of the HAL: what survives of a ``sec`` value."""

    #: open network (also what an absent ``sec`` means: the credentials are zeroed)
    UNSEC = 0
    #: WEP, open or shared authentication
    WEP = 1
    #: WPA personal
    WPA = 2
    #: WPA2 personal
    WPA2 = 3
    #: WPA enterprise
    WPA_ENTERPRISE = 4
    #: WPA2 enterprise
    WPA2_ENTERPRISE = 5


def family_of(value: int) -> SecurityFamily:
    """Reduce a WICED value to its family, dropping the cipher bits (``toSecurityType``)."""
    value &= 0xFFFF_FFFF
    if value & ENTERPRISE_ENABLED:
        if value & WPA2_SECURITY:
            return SecurityFamily.WPA2_ENTERPRISE
        if value & WPA_SECURITY:
            return SecurityFamily.WPA_ENTERPRISE
    if value & WPA2_SECURITY:
        return SecurityFamily.WPA2
    if value & WPA_SECURITY:
        return SecurityFamily.WPA
    if value & WEP_ENABLED:
        return SecurityFamily.WEP
    return SecurityFamily.UNSEC


def family_base(family: SecurityFamily) -> int:
    """WICED value of a family without cipher bits (``toSecurity`` before sniffing)."""
    return {
        SecurityFamily.UNSEC: OPEN,
        SecurityFamily.WEP: WEP_PSK,
        SecurityFamily.WPA: WPA_SECURITY,
        SecurityFamily.WPA2: WPA2_SECURITY,
        SecurityFamily.WPA_ENTERPRISE: WPA_SECURITY | ENTERPRISE_ENABLED,
        SecurityFamily.WPA2_ENTERPRISE: WPA2_SECURITY | ENTERPRISE_ENABLED,
    }[family]


def parse_security(value: int | str) -> int:
    """Accept a WICED integer or one of :data:`SECURITY_NAMES` (for networks files)."""
    if isinstance(value, int):
        return value
    key = value.strip().lower()
    if key in SECURITY_NAMES:
        return SECURITY_NAMES[key]
    try:
        return int(key, 0)
    except ValueError:
        names = ", ".join(sorted(SECURITY_NAMES))
        raise ValueError(
            f"unknown security {value!r}; use a WICED integer or one of: {names}"
        ) from None
