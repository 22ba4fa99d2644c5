"""The device's persistent state: an emulated DCT (device configuration table).

The model keeps it in memory; :mod:`softap_sim.store` writes it to disk atomically
after every change the model reports. The JSON form is versioned so a foreign or
corrupt file is recognised and rejected with a clear error.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from firmware_model.credentials import CredentialStore, EnterpriseConfig, WifiCredential
from firmware_model.errors import DctFormatError
from firmware_model.identity import DeviceIdentity
from firmware_model.secret import Secret

#: DCT ``claim_code`` field size (``dct.h`` L87)
CLAIM_CODE_FIELD_BYTES = 63
DCT_FORMAT = "softap-sim/dct"
DCT_VERSION = 1


@dataclass(slots=True)
class Dct:
    """Identity, stored networks, claim code field and claimed byte."""

    identity: DeviceIdentity
    credentials: CredentialStore = field(default_factory=CredentialStore)
    #: the raw 63-byte field; see :attr:`claim_code`
    claim_code_field: bytes = b"\x00" * CLAIM_CODE_FIELD_BYTES
    claimed: bool = False

    @property
    def claim_code(self) -> bytes:
        """The stored code up to its first NUL (``HAL_Get_Claim_Code``)."""
        return self.claim_code_field.split(b"\x00", 1)[0]

    def set_claim_code(self, value_buffer: bytes) -> None:
        """``HAL_Set_Claim_Code``: write 63 bytes of the zero-padded value buffer."""
        self.claim_code_field = value_buffer[:CLAIM_CODE_FIELD_BYTES].ljust(
            CLAIM_CODE_FIELD_BYTES, b"\x00"
        )

    def mark_claimed(self) -> None:
        """Clear the code (NUL in byte 0) and set the claimed byte (softap-protocol.md §6)."""
        self.claim_code_field = b"\x00" + self.claim_code_field[1:]
        self.claimed = True

    # -- serialisation -------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict. Secrets are stored base64 (the file is mode 0600)."""
        return {
            "format": DCT_FORMAT,
            "version": DCT_VERSION,
            "device_id": self.identity.device_id_hex,
            "device_code": self.identity.device_code,
            "ssid_prefix": self.identity.ssid_prefix,
            "claim_code_field": _b64(self.claim_code_field),
            "claimed": self.claimed,
            "credentials": [_cred_to_json(c) for c in self.credentials],
        }

    @classmethod
    def from_json(cls, data: Any) -> Dct:
        """Parse :meth:`to_json` output; :class:`DctFormatError` names what is wrong."""
        if not isinstance(data, dict) or data.get("format") != DCT_FORMAT:
            raise DctFormatError("not a softap-sim device state file")
        if data.get("version") != DCT_VERSION:
            raise DctFormatError(f"unsupported state version {data.get('version')!r}")
        try:
            identity = DeviceIdentity(
                device_id=bytes.fromhex(_str(data, "device_id")),
                device_code=_str(data, "device_code"),
                ssid_prefix=_str(data, "ssid_prefix"),
            )
            claim_field = _unb64(_str(data, "claim_code_field"))
            if len(claim_field) != CLAIM_CODE_FIELD_BYTES:
                raise DctFormatError("claim_code_field must be 63 bytes")
            claimed = data.get("claimed")
            if not isinstance(claimed, bool):
                raise DctFormatError("'claimed' must be true or false")
            creds_raw = data.get("credentials")
            if not isinstance(creds_raw, list):
                raise DctFormatError("'credentials' must be a list")
            creds = CredentialStore(_cred_from_json(c) for c in creds_raw)
        except (ValueError, TypeError, KeyError) as err:
            raise DctFormatError(f"malformed state ({err})") from None
        return cls(identity, creds, claim_field, claimed)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"), validate=True)


def _str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise DctFormatError(f"{key!r} must be a string")
    return v


def _int(d: dict[str, Any], key: str) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise DctFormatError(f"{key!r} must be an integer")
    return v


def _cred_to_json(c: WifiCredential) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ssid": _b64(c.ssid),
        "password": _b64(c.password.value),
        "security": c.security,
        "channel": c.channel,
    }
    if c.enterprise is not None:
        e = c.enterprise
        out["enterprise"] = {
            "eap_type": e.eap_type,
            "outer_identity": _b64(e.outer_identity),
            "inner_identity": _b64(e.inner_identity),
            "client_certificate": _b64(e.client_certificate),
            "ca_certificate": _b64(e.ca_certificate),
            "private_key": _b64(e.private_key.value),
        }
    return out


def _cred_from_json(d: Any) -> WifiCredential:
    if not isinstance(d, dict):
        raise DctFormatError("each credential must be an object")
    ent = d.get("enterprise")
    enterprise = None
    if ent is not None:
        if not isinstance(ent, dict):
            raise DctFormatError("'enterprise' must be an object")
        enterprise = EnterpriseConfig(
            eap_type=_int(ent, "eap_type"),
            outer_identity=_unb64(_str(ent, "outer_identity")),
            inner_identity=_unb64(_str(ent, "inner_identity")),
            client_certificate=_unb64(_str(ent, "client_certificate")),
            ca_certificate=_unb64(_str(ent, "ca_certificate")),
            private_key=Secret(_unb64(_str(ent, "private_key"))),
        )
    return WifiCredential(
        ssid=_unb64(_str(d, "ssid")),
        password=Secret(_unb64(_str(d, "password"))),
        security=_int(d, "security"),
        channel=_int(d, "channel"),
        enterprise=enterprise,
    )
