"""The station side of Wi-Fi: saving a network (``wlan_set_credentials``) and joining one.

Pure functions over the stored networks and the radio environment, so that the command
handlers (:mod:`firmware_model.device`) and the lifecycle (:mod:`firmware_model.state`)
share them without importing each other. Result codes and limits follow ``wlan_hal.h``
and ``wlan_set_credentials`` (softap-protocol.md §5.4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from firmware_model import security as sec
from firmware_model.commands import hex_decode
from firmware_model.credentials import EnterpriseConfig, WifiCredential
from firmware_model.events import JoinFinished, JoinOutcome
from firmware_model.keys import aes128_cbc_decrypt_blocks
from firmware_model.radio import AccessPoint, RadioEnvironment

# wlan_hal.h result codes of wlan_set_credentials
WLAN_SET_CREDENTIALS_CIPHER_REQUIRED = -2
WLAN_INVALID_SSID_LENGTH = -3
WLAN_INVALID_KEY_LENGTH = -4
ENTERPRISE_INVALID = 1

WSEC_MIN_PSK_LEN = 8
WSEC_MAX_PSK_LEN = 64
WEP_MIN_KEY_LEN = 5
WEP_MAX_KEY_LEN = 58
SSID_NAME_SIZE = 32
EAP_PEAP = 25
EAP_TLS = 13
MAX_IDENTITY_BYTES = 64
MAX_CERTIFICATE_BYTES = 4096
MAX_PRIVATE_KEY_BYTES = 2048


def check_credentials(
    ssid: bytes,
    password: bytes,
    family: sec.SecurityFamily,
    enterprise: EnterpriseConfig | None,
    sniff: Callable[[bytes], AccessPoint | None],
) -> tuple[int, int, int]:
    """``wlan_set_credentials``' dry run: (result, security to store, radio sniffs made).

    WPA/WPA2 profiles sniff the network's real security twice (dry run and save), which
    the caller counts as scans even when the check then fails.
    """
    if not ssid or len(ssid) > SSID_NAME_SIZE:
        return WLAN_INVALID_SSID_LENGTH, 0, 0
    wiced = sec.family_base(family)
    sniffs = 0
    if wiced & (sec.WPA_SECURITY | sec.WPA2_SECURITY):
        sniffs = 2
        ap = sniff(ssid)
        if ap is None:
            return WLAN_SET_CREDENTIALS_CIPHER_REQUIRED, wiced, sniffs
        wiced = ap.security
    if wiced & sec.WEP_ENABLED and not WEP_MIN_KEY_LEN <= len(password) <= WEP_MAX_KEY_LEN:
        return WLAN_INVALID_KEY_LENGTH, wiced, sniffs
    if (
        wiced & (sec.WPA_SECURITY | sec.WPA2_SECURITY)
        and not wiced & sec.ENTERPRISE_ENABLED
        and not WSEC_MIN_PSK_LEN <= len(password) <= WSEC_MAX_PSK_LEN
    ):
        return WLAN_INVALID_KEY_LENGTH, wiced, sniffs
    if enterprise is not None and not enterprise_valid(enterprise, password):
        return ENTERPRISE_INVALID, wiced, sniffs
    return 0, wiced, sniffs


def enterprise_valid(e: EnterpriseConfig, password: bytes) -> bool:
    """``check_enterprise_credentials``: what PEAP and EAP-TLS each need."""
    if (
        len(e.client_certificate) >= MAX_CERTIFICATE_BYTES
        or len(e.ca_certificate) >= MAX_CERTIFICATE_BYTES
    ):
        return False
    if len(e.private_key.value) >= MAX_PRIVATE_KEY_BYTES:
        return False
    if e.eap_type == EAP_PEAP:
        return bool(e.inner_identity) and bool(password)
    if e.eap_type == EAP_TLS:
        return bool(e.client_certificate) and bool(e.private_key.value)
    return False


def decrypt_private_key(hex_text: bytes, ekey: bytes) -> bytes:
    """AES-128-CBC of the hex ``key`` with ``ek`` = key || IV; no unpadding."""
    data = b"".join(
        hex_decode(hex_text[i : i + 32], 16).ljust(16, b"\x00") for i in range(0, len(hex_text), 32)
    )
    return aes128_cbc_decrypt_blocks(ekey[:16], ekey[16:32], data)[: len(hex_text) // 2]


def join_result(
    creds: Sequence[WifiCredential], radio: RadioEnvironment
) -> tuple[JoinFinished, int]:
    """Try the stored networks, newest first, against the radio environment."""
    if not creds:
        return JoinFinished(JoinOutcome.NO_CREDENTIALS), 0
    outcome = JoinOutcome.AP_MISSING
    ssid = b""
    tried = 0
    for cred in creds:
        tried += 1
        ap = radio.find(cred.ssid)
        if ap is None:
            outcome, ssid = JoinOutcome.AP_MISSING, cred.ssid
            continue
        if not _password_matches(
            cred.security, cred.password.value, ap.security, ap.password.value
        ):
            outcome, ssid = JoinOutcome.BAD_PASSWORD, cred.ssid
            continue
        if not ap.dhcp:
            outcome, ssid = JoinOutcome.DHCP_FAIL, cred.ssid
            continue
        return JoinFinished(JoinOutcome.OK, cred.ssid), tried
    return JoinFinished(outcome, ssid), tried


def association_lost(
    associated: bool,
    last: JoinFinished | None,
    creds: Sequence[WifiCredential],
    radio: RadioEnvironment,
) -> str | None:
    """Why the network the device joined no longer holds it (the radio changed), or None.

    Only the network of the last successful join counts: another stored network in
    range does not keep the station associated, it is what the next join finds.
    """
    if not associated or last is None or last.outcome is not JoinOutcome.OK:
        return None
    ap = radio.find(last.ssid)
    if ap is None:
        return "the access point is gone"
    cred = next((c for c in creds if c.ssid == last.ssid), None)
    if cred is not None and not _password_matches(
        cred.security, cred.password.value, ap.security, ap.password.value
    ):
        return "the access point's password changed"
    return None


def _password_matches(stored_sec: int, stored_pw: bytes, ap_sec: int, ap_pw: bytes) -> bool:
    if ap_sec == sec.OPEN:
        return True
    if ap_sec & sec.ENTERPRISE_ENABLED:
        return bool(stored_sec & sec.ENTERPRISE_ENABLED)
    if sec.family_of(stored_sec) is sec.SecurityFamily.UNSEC:
        return False  # an open profile cannot associate with a secured network
    return stored_pw == ap_pw
