"""The provisioning steps of a setup app, as request builders and reply decoders.

``device-id``, ``scan-ap``, ``public-key``, ``set`` (the claim code), ``configure-ap``
(the password RSA-encrypted for the device, in hex) and ``connect-ap``
(softap-protocol.md §4). :func:`provision_steps` strings them together as a generator
that yields requests and receives decoded replies, so the blocking and the async client
drive the same setup and differ only in how they send.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, NamedTuple

from softap_sim.protocol.client.errors import SoftapClientError
from softap_sim.protocol.client.messages import Request

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey


class DeviceId(NamedTuple):
    """``device-id``'s reply: the 24-hex id and whether the device has been claimed."""

    id: str
    claimed: bool


DEVICE_ID: Request = ("device-id", None)
SCAN_AP: Request = ("scan-ap", None)
PUBLIC_KEY: Request = ("public-key", None)


def decode_device_id(reply: Any) -> DeviceId:
    if not isinstance(reply, dict) or not isinstance(reply.get("id"), str):
        raise SoftapClientError(f"device-id answered {reply!r}")
    return DeviceId(reply["id"], reply.get("c") == "1")


def decode_scan(reply: Any) -> list[dict[str, Any]]:
    """``scan-ap``'s access points: ``{"ssid", "rssi", "sec", "ch", "mdr"}`` each."""
    scans = reply.get("scans") if isinstance(reply, dict) else None
    if not isinstance(scans, list) or not all(isinstance(s, dict) for s in scans):
        raise SoftapClientError(f"scan-ap answered {reply!r}")
    return scans


def _der_length(der: bytes) -> int:
    """The length of the DER SEQUENCE at the start of ``der`` (the key area is padded)."""
    if len(der) < 2 or der[0] != 0x30:
        raise SoftapClientError("public-key: not a DER SEQUENCE")
    if der[1] < 0x80:
        return 2 + der[1]
    n = der[1] & 0x7F
    return 2 + n + int.from_bytes(der[2 : 2 + n], "big")


def decode_public_key(reply: Any) -> RSAPublicKey:
    """The device's RSA key from ``public-key``'s hex DER (padded: read to its length)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if not isinstance(reply, dict) or reply.get("r") != 0 or not isinstance(reply.get("b"), str):
        raise SoftapClientError(f"public-key answered {reply!r}")
    der = bytes.fromhex(reply["b"])
    key = serialization.load_der_public_key(der[: _der_length(der)])
    if not isinstance(key, rsa.RSAPublicKey):
        raise SoftapClientError("public-key: not an RSA key")
    return key


def set_claim_code(code: str) -> Request:
    return "set", {"k": "cc", "v": code}


def configure_ap(
    key: RSAPublicKey,
    ssid: str,
    password: str,
    *,
    security: str | int,
    channel: int,
    index: int = 0,
) -> Request:
    """``configure-ap`` with the password RSA-encrypted (PKCS#1 v1.5) for the device, in hex."""
    from cryptography.hazmat.primitives.asymmetric import padding

    from firmware_model.security import parse_security

    settings: dict[str, Any] = {
        "idx": index,
        "ssid": ssid,
        "sec": parse_security(security),
        "ch": channel,
    }
    if password:
        settings["pwd"] = key.encrypt(password.encode(), padding.PKCS1v15()).hex()
    return "configure-ap", settings


def connect_ap(index: int = 0) -> Request:
    return "connect-ap", {"idx": index}


def expect_ok(command: str, reply: Any) -> None:
    """``SoftapClientError`` unless the reply is ``{"r": 0}``."""
    if not isinstance(reply, dict) or reply.get("r") != 0:
        raise SoftapClientError(f"{command} answered {reply!r}, not {{'r': 0}}")


def provision_steps(
    ssid: str,
    password: str,
    *,
    security: str | int,
    channel: int,
    claim_code: str | None,
) -> Generator[Request, Any, None]:
    """The app's side of a setup: yields requests, receives the decoded replies.

    ``public-key``, then ``set`` (claim code, if any), ``configure-ap`` with the password
    RSA-encrypted with the device's key, and ``connect-ap``, as particle's setup apps do.
    """
    from firmware_model.security import parse_security

    sec = parse_security(security)  # a bad name fails before anything is sent
    key = decode_public_key((yield PUBLIC_KEY))
    if claim_code is not None:
        expect_ok("set", (yield set_claim_code(claim_code)))
    request = configure_ap(key, ssid, password, security=sec, channel=channel)
    expect_ok("configure-ap", (yield request))
    expect_ok("connect-ap", (yield connect_ap()))
