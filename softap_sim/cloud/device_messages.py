"""What the device server reads and writes inside CoAP messages (cloud-api.md §8).

The Hello payload (device-os ``Messages::hello``), the Describe reply, variable values
(int32 big-endian, double **little-endian**, bool one byte, string raw), and the event
names the cloud itself uses. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from softap_sim.cloud.errors import DeviceError
from softap_sim.protocol.coap import Option
from softap_sim.protocol.lightssl import ChannelError

HELLO_MIN_PAYLOAD_BYTES = 8  # product_id, product fw, reserved, flags, platform_id

CLAIM_CODE_EVENT = "spark/device/claim/code"
CLAIM_CONFIRM_EVENT = "spark/device/claim/confirm"
STATUS_EVENT = "spark/status"

#: Describe type codes (cloud-api.md §8.4) → REST variable type names
DESCRIBE_TYPES = {1: "bool", 2: "int32", 4: "string", 9: "double"}

FUNCTION_NOT_FOUND = "Function not found"
VARIABLE_NOT_FOUND = "Variable not found"


@dataclass(frozen=True, slots=True)
class Hello:
    """The device's Hello payload (device-os ``Messages::hello``)."""

    product_id: int | None = None
    product_firmware_version: int | None = None
    flags: int = 0
    platform_id: int | None = None
    device_id: str | None = None

    @classmethod
    def parse(cls, payload: bytes) -> Hello:
        """Lenient on short payloads (old firmware); strict on a truncated id field."""
        if len(payload) < HELLO_MIN_PAYLOAD_BYTES:
            if len(payload) >= 4:
                return cls(int.from_bytes(payload[0:2], "big"), int.from_bytes(payload[2:4], "big"))
            return cls()
        device_id = None
        if len(payload) >= HELLO_MIN_PAYLOAD_BYTES + 2:
            id_len = int.from_bytes(payload[8:10], "big")
            raw = payload[10 : 10 + id_len]
            if len(raw) != id_len:
                raise ChannelError("the Hello's device id field is truncated")
            device_id = raw.hex()
        return cls(
            product_id=int.from_bytes(payload[0:2], "big"),
            product_firmware_version=int.from_bytes(payload[2:4], "big"),
            flags=payload[5],
            platform_id=int.from_bytes(payload[6:8], "big"),
            device_id=device_id,
        )


def parse_describe(payload: bytes) -> tuple[list[str], dict[str, str]]:
    """``{"f":[names],"v":{name:type}}`` → (functions, REST variable types).

    Unknown type codes are dropped; anything that is not that shape raises ValueError.
    """
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the describe reply is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the describe reply is not a JSON object")
    raw_f = data.get("f", [])
    raw_v = data.get("v", {})
    if not isinstance(raw_f, list) or not isinstance(raw_v, dict):
        raise ValueError("the describe reply has malformed f/v fields")
    functions = [f for f in raw_f if isinstance(f, str) and f]
    variables: dict[str, str] = {}
    for name, code in raw_v.items():
        if isinstance(code, int) and not isinstance(code, bool) and code in DESCRIBE_TYPES:
            variables[str(name)] = DESCRIBE_TYPES[code]
    return functions, variables


def decode_variable(var_type: str | None, payload: bytes) -> Any:
    """A 2.05 payload as the REST value: int32 BE, double **LE**, bool 1 byte, string raw."""
    if var_type == "int32":
        if len(payload) != 4:
            raise DeviceError("The device sent a malformed int32 value", status=500)
        return int.from_bytes(payload, "big", signed=True)
    if var_type == "double":
        if len(payload) != 8:
            raise DeviceError("The device sent a malformed double value", status=500)
        return struct.unpack("<d", payload)[0]
    if var_type == "bool":
        if len(payload) != 1:
            raise DeviceError("The device sent a malformed bool value", status=500)
        return payload != b"\x00"
    return payload.decode("utf-8", errors="replace")


def uint(value: bytes) -> int:
    return int.from_bytes(value, "big") if value else 0


def is_success(code: int) -> bool:
    return code >> 5 == 2


def path(segment: bytes) -> tuple[int, bytes]:
    """One Uri-Path option."""
    return (Option.URI_PATH, segment)


def code_text(code: int) -> str:
    """A CoAP code as ``CoAP 4.04``."""
    return f"CoAP {code >> 5}.{code & 0x1F:02d}"
