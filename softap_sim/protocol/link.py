"""The Photon's cloud link above the AES channel, sans-IO (cloud-api.md §8.4).

Both ends use this module: the cloud's device session (:mod:`softap_sim.cloud.device_session`)
and the emulated device (:mod:`softap_sim.transports.cloud_link`), so the two cannot drift
apart on what a message means. It holds

* what travels inside the CoAP messages: the Hello (device-os ``Messages::hello``), the
  Describe reply, variable and function values, event names, data and time-to-live;
* :class:`LinkConnection`, the bookkeeping of one connection: message ids (16 bits, wrapping),
  one-byte tokens, and the requests that await a reply, matched by message id (piggybacked
  ACK, RST) or by token (separate response).

No sockets, no clock, no randomness: the first message id and every deadline come from the
caller; a received message comes back as a :data:`LinkEvent` the I/O layer acts on. Malformed
input raises :class:`LinkError`, a :class:`~softap_sim.protocol.lightssl.ChannelError`, so
callers end a session on it exactly as on a bad frame.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from softap_sim.errors import SimulatorError
from softap_sim.protocol.coap import CoapMessage, CoapType, Code, Option
from softap_sim.protocol.lightssl import ChannelError

CLAIM_CODE_EVENT = "spark/device/claim/code"
CLAIM_CONFIRM_EVENT = "spark/device/claim/confirm"
STATUS_EVENT = "spark/status"

#: an event without a Max-Age option lives this long (device-os ``DEFAULT_TTL``)
DEFAULT_TTL_S = 60
HELLO_MIN_PAYLOAD_BYTES = 8  # product_id, product fw, reserved, flags, platform_id
#: Describe type codes (cloud-api.md §8.4) → REST variable type names
DESCRIBE_TYPES = {1: "bool", 2: "int32", 4: "string", 9: "double"}
#: byte length of each fixed-size variable type on the wire
_VALUE_BYTES = {"int32": 4, "double": 8, "bool": 1}

Options = list[tuple[int, bytes]]


class LinkError(ChannelError, ValueError):
    """A link message that cannot be read (a Hello, a Describe reply, a value)."""


class TokensExhaustedError(SimulatorError):
    """All 256 one-byte tokens await replies: no further request until one is answered."""


# -- message contents ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hello:
    """The Hello payload (device-os ``Messages::hello``): the first message each way."""

    product_id: int | None = None
    product_firmware_version: int | None = None
    flags: int = 0
    platform_id: int | None = None
    device_id: str | None = None

    @classmethod
    def decode(cls, payload: bytes) -> Hello:
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
                raise LinkError("the Hello's device id field is truncated")
            device_id = raw.hex()
        return cls(
            product_id=int.from_bytes(payload[0:2], "big"),
            product_firmware_version=int.from_bytes(payload[2:4], "big"),
            flags=payload[5],
            platform_id=int.from_bytes(payload[6:8], "big"),
            device_id=device_id,
        )

    def encode(self) -> bytes:
        """product u16, fw u16, reserved u8, flags u8, platform u16, [id_len u16, id]."""
        out = struct.pack(
            ">HHBBH",
            self.product_id or 0,
            self.product_firmware_version or 0,
            0,
            self.flags,
            self.platform_id or 0,
        )
        if self.device_id is not None:
            raw = bytes.fromhex(self.device_id)
            out += len(raw).to_bytes(2, "big") + raw
        return out


def parse_describe(payload: bytes) -> tuple[list[str], dict[str, str]]:
    """``{"f":[names],"v":{name:type}}`` → (functions, REST variable types).

    Unknown type codes are dropped; anything that is not that shape raises LinkError.
    """
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LinkError("the describe reply is not JSON") from None
    if not isinstance(data, dict):
        raise LinkError("the describe reply is not a JSON object")
    raw_f = data.get("f", [])
    raw_v = data.get("v", {})
    if not isinstance(raw_f, list) or not isinstance(raw_v, dict):
        raise LinkError("the describe reply has malformed f/v fields")
    functions = [f for f in raw_f if isinstance(f, str) and f]
    variables: dict[str, str] = {}
    for name, code in raw_v.items():
        if isinstance(code, int) and not isinstance(code, bool) and code in DESCRIBE_TYPES:
            variables[str(name)] = DESCRIBE_TYPES[code]
    return functions, variables


def decode_variable(var_type: str | None, payload: bytes) -> Any:
    """A 2.05 payload as its value: int32 BE, double **LE**, bool 1 byte, else a string."""
    size = _VALUE_BYTES.get(var_type or "")
    if size is not None and len(payload) != size:
        raise LinkError(f"a {var_type} value is {size} bytes, not {len(payload)}")
    if var_type == "int32":
        return int.from_bytes(payload, "big", signed=True)
    if var_type == "double":
        return struct.unpack("<d", payload)[0]
    if var_type == "bool":
        return payload != b"\x00"
    return payload.decode("utf-8", errors="replace")


def encode_function_result(value: int) -> bytes:
    """A function's return value: int32 big-endian."""
    return struct.pack(">i", value)


def decode_function_result(payload: bytes) -> int:
    if len(payload) != 4:
        raise LinkError(f"a function result is 4 bytes, not {len(payload)}")
    return int.from_bytes(payload, "big", signed=True)


def encode_time(now: float) -> bytes:
    """The time reply: unix seconds, u32 big-endian."""
    return (int(now) & 0xFFFFFFFF).to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class Event:
    """An event as a POST ``E``/``e`` carries it."""

    name: str
    data: str | None
    private: bool
    ttl_s: int


def decode_event(msg: CoapMessage) -> Event:
    """The whole name is one Uri-Path option; a peer that splits it gets it joined with ``/``.

    The name may come out empty (the caller refuses it); names and data are read as UTF-8
    with replacement characters, so no byte sequence raises.
    """
    name = "/".join(p.decode("utf-8", errors="replace") for p in msg.uri_path[1:])
    ages = msg.option_values(Option.MAX_AGE)
    ttl = uint(ages[0]) if ages else DEFAULT_TTL_S
    data = msg.payload.decode("utf-8", errors="replace") if msg.payload else None
    return Event(name, data, msg.uri_path[:1] == [b"E"], ttl)


def decode_subscription(msg: CoapMessage) -> tuple[str, bool]:
    """GET ``e`` ‖ prefix → (prefix, MY_DEVICES only: the ``?u`` query)."""
    prefix = "/".join(p.decode("utf-8", errors="replace") for p in msg.uri_path[1:])
    return prefix, b"u" in msg.uri_query


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


# -- requests (templates: LinkConnection.request gives them an id and a token) ---------
def describe_request() -> CoapMessage:
    return CoapMessage(CoapType.CON, Code.GET, 0, options=[path(b"d")])


def function_request(name: str, arg: str) -> CoapMessage:
    options = [path(b"f"), path(name.encode("utf-8")), (Option.URI_QUERY, arg.encode())]
    return CoapMessage(CoapType.CON, Code.POST, 0, options=options)


def variable_request(name: str) -> CoapMessage:
    return CoapMessage(CoapType.CON, Code.GET, 0, options=[path(b"v"), path(name.encode("utf-8"))])


def time_request() -> CoapMessage:
    return CoapMessage(CoapType.CON, Code.GET, 0, options=[path(b"t")])


def ack(msg: CoapMessage, code: int = Code.EMPTY, payload: bytes = b"") -> CoapMessage:
    """An ACK of ``msg``; with a code it is a piggybacked response and carries the token."""
    token = msg.token if code != Code.EMPTY else b""
    return CoapMessage(CoapType.ACK, code, msg.message_id, token, [], payload)


# -- what comes in -------------------------------------------------------------------
@dataclass(eq=False, slots=True)
class Pending:
    """A request awaiting its reply; ``deadline`` is the caller's to act on (None: never)."""

    message: CoapMessage
    deadline: float | None


@dataclass(frozen=True, slots=True)
class Response:
    """The reply to one of our requests: a piggybacked ACK, an RST or a separate response."""

    pending: Pending
    message: CoapMessage


@dataclass(frozen=True, slots=True)
class UnknownResponse:
    """A separate response whose token matches no request (late, duplicate or made up)."""

    message: CoapMessage


@dataclass(frozen=True, slots=True)
class Request:
    """The peer asks or tells something (Describe, an event, a call, a subscription...)."""

    message: CoapMessage


@dataclass(frozen=True, slots=True)
class Ping:
    """An empty message that is not an ACK/RST: the keep-alive."""

    message: CoapMessage


LinkEvent = Response | UnknownResponse | Request | Ping


class LinkConnection:
    """Message ids, tokens and pending replies of one connection, for either end.

    ``message_id_base``: ids sent count up from the one after it (the device takes it from
    the session salt, the cloud draws it). Tokens are one byte, skipping those in flight.
    """

    def __init__(self, message_id_base: int) -> None:
        self._mid = message_id_base & 0xFFFF
        self._token = 0
        self._by_mid: dict[int, Pending] = {}
        self._by_token: dict[bytes, Pending] = {}

    @property
    def in_flight(self) -> int:
        """Requests still awaiting a reply."""
        return len(self._by_token)

    def next_message_id(self) -> int:
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    def next_token(self) -> bytes:
        for _ in range(256):
            self._token = (self._token + 1) & 0xFF
            token = bytes([self._token])
            if token not in self._by_token:
                return token
        raise TokensExhaustedError("all 256 tokens await replies")

    # -- what goes out ---------------------------------------------------------------
    def message(
        self, mtype: CoapType, code: int, options: Options, payload: bytes = b"", token: bytes = b""
    ) -> CoapMessage:
        """A message with the next id; nothing awaits its reply."""
        return CoapMessage(mtype, code, self.next_message_id(), token, options, payload)

    def request(self, template: CoapMessage, *, deadline: float | None = None) -> Pending:
        """``template`` as a CON with a fresh id and token, awaiting its reply."""
        token = self.next_token()
        msg = CoapMessage(
            CoapType.CON,
            template.code,
            self.next_message_id(),
            token,
            list(template.options),
            template.payload,
        )
        pending = Pending(msg, deadline)
        self._by_mid[msg.message_id] = pending
        self._by_token[token] = pending
        return pending

    def forget(self, pending: Pending) -> None:
        """Stop awaiting ``pending`` (answered, timed out or abandoned); idempotent."""
        msg = pending.message
        if self._by_mid.get(msg.message_id) is pending:
            del self._by_mid[msg.message_id]
        if self._by_token.get(msg.token) is pending:
            del self._by_token[msg.token]

    def hello(self, payload: bytes = b"") -> CoapMessage:
        """CON POST ``h``: the device's carries a :class:`Hello`, the cloud's none."""
        return self.message(CoapType.CON, Code.POST, [path(b"h")], payload)

    def ping(self) -> CoapMessage:
        return self.message(CoapType.CON, Code.EMPTY, [])

    def event(
        self, name: str, data: bytes, *, private: bool = True, ttl_s: int = DEFAULT_TTL_S
    ) -> CoapMessage:
        """CON POST ``E``/``e`` ‖ name (one option); Max-Age only when ttl ≠ 60."""
        options = [path(b"E" if private else b"e"), path(name.encode("utf-8"))]
        if ttl_s != DEFAULT_TTL_S:
            width = (ttl_s.bit_length() + 7) // 8 or 1
            options.append((Option.MAX_AGE, ttl_s.to_bytes(width, "big")))
        return self.message(CoapType.CON, Code.POST, options, data)

    def subscribe(self, prefix: str, *, mine: bool = True) -> CoapMessage:
        """CON GET ``e`` ‖ prefix; ``?u`` = MY_DEVICES."""
        options = [path(b"e"), path(prefix.encode("utf-8"))]
        if mine:
            options.append((Option.URI_QUERY, b"u"))
        return self.message(CoapType.CON, Code.GET, options)

    def reply(self, msg: CoapMessage, code: int, payload: bytes = b"") -> CoapMessage | None:
        """Answer a request: piggybacked on the ACK (CON), or a NON response (None if empty)."""
        if msg.type == CoapType.CON:
            return ack(msg, code, payload)
        if code != Code.EMPTY:
            return self.separate_response(msg, code, payload)
        return None

    def separate_response(self, msg: CoapMessage, code: int, payload: bytes) -> CoapMessage:
        """A NON response carrying ``msg``'s token (the ACK went before, or none was due)."""
        return self.message(CoapType.NON, code, [], payload, msg.token)

    # -- what comes in ---------------------------------------------------------------
    def receive(self, msg: CoapMessage) -> LinkEvent | None:
        """Classify one received message; None when it needs nothing (the ACK of an event,
        a ping or a Hello, or an empty ACK whose separate response follows)."""
        if msg.type is CoapType.ACK or msg.type is CoapType.RST:
            pending = self._by_mid.pop(msg.message_id, None)
            if pending is None or (msg.type is CoapType.ACK and msg.code == Code.EMPTY):
                return None
        elif msg.code == Code.EMPTY:
            return Ping(msg)
        elif msg.code >> 5:  # a separate response (NON or CON) to one of our requests
            pending = self._by_token.get(msg.token)
            if pending is None:
                return UnknownResponse(msg)
        else:
            return Request(msg)
        self.forget(pending)
        return Response(pending, msg)
