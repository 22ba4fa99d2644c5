"""CoAP message codec (RFC 7252 framing) as the Photon's cloud protocol uses it.

Sans-IO: :func:`encode` and :func:`decode` turn :class:`CoapMessage` into bytes and back.
Particle carries these messages inside its AES channel (cloud-api.md §8.4): version 1,
1-byte tokens where a reply is expected, the whole event name as *one* Uri-Path option.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from softap_sim.errors import SimulatorError


class CoapType(enum.IntEnum):
    CON = 0
    NON = 1
    ACK = 2
    RST = 3


class Code:
    EMPTY = 0x00
    GET = 0x01
    POST = 0x02
    PUT = 0x03
    DELETE = 0x04
    CREATED = 0x41  # 2.01
    CHANGED = 0x44  # 2.04
    CONTENT = 0x45  # 2.05
    BAD_REQUEST = 0x80  # 4.00
    NOT_FOUND = 0x84  # 4.04
    INTERNAL_SERVER_ERROR = 0xA0  # 5.00


class Option(enum.IntEnum):
    URI_PATH = 11
    MAX_AGE = 14
    URI_QUERY = 15


class CoapError(SimulatorError, ValueError):
    """Bytes that are not a well-formed CoAP message."""


@dataclass(slots=True)
class CoapMessage:
    type: CoapType
    code: int
    message_id: int
    token: bytes = b""
    options: list[tuple[int, bytes]] = field(default_factory=list)
    payload: bytes = b""

    def option_values(self, number: int) -> list[bytes]:
        return [v for n, v in self.options if n == number]

    @property
    def uri_path(self) -> list[bytes]:
        return self.option_values(Option.URI_PATH)

    @property
    def uri_query(self) -> list[bytes]:
        return self.option_values(Option.URI_QUERY)


def _ext(value: int) -> tuple[int, bytes]:
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes([value - 13])
    if value < 65805:
        return 14, (value - 269).to_bytes(2, "big")
    raise CoapError(f"option field too large: {value}")


def encode(msg: CoapMessage) -> bytes:
    if len(msg.token) > 8:
        raise CoapError("a token is at most 8 bytes")
    out = bytearray([0x40 | (int(msg.type) << 4) | len(msg.token), msg.code & 0xFF])
    out += (msg.message_id & 0xFFFF).to_bytes(2, "big")
    out += msg.token
    last = 0
    for number, value in sorted(msg.options, key=lambda o: o[0]):  # stable: order kept per number
        delta, dext = _ext(number - last)
        length, lext = _ext(len(value))
        out.append((delta << 4) | length)
        out += dext + lext + value
        last = number
    if msg.payload:
        out.append(0xFF)
        out += msg.payload
    return bytes(out)


def _read_ext(nibble: int, data: bytes, i: int) -> tuple[int, int]:
    if nibble < 13:
        return nibble, i
    if nibble == 13:
        if i >= len(data):
            raise CoapError("truncated option")
        return data[i] + 13, i + 1
    if nibble == 14:
        if i + 2 > len(data):
            raise CoapError("truncated option")
        return int.from_bytes(data[i : i + 2], "big") + 269, i + 2
    raise CoapError("reserved option nibble 15")


def decode(data: bytes) -> CoapMessage:
    if len(data) < 4:
        raise CoapError("shorter than a CoAP header")
    first = data[0]
    if first >> 6 != 1:
        raise CoapError(f"unsupported CoAP version {first >> 6}")
    tkl = first & 0x0F
    if tkl > 8:
        raise CoapError("token length above 8")
    mtype = CoapType((first >> 4) & 0x03)
    code = data[1]
    mid = int.from_bytes(data[2:4], "big")
    i = 4 + tkl
    if i > len(data):
        raise CoapError("truncated token")
    token = data[4:i]
    options: list[tuple[int, bytes]] = []
    number = 0
    payload = b""
    while i < len(data):
        byte = data[i]
        i += 1
        if byte == 0xFF:
            payload = data[i:]
            if not payload:
                raise CoapError("payload marker without a payload")
            break
        delta, i = _read_ext(byte >> 4, data, i)
        length, i = _read_ext(byte & 0x0F, data, i)
        if i + length > len(data):
            raise CoapError("truncated option value")
        number += delta
        options.append((number, data[i : i + length]))
        i += length
    return CoapMessage(mtype, code, mid, token, options, payload)
