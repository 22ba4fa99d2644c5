"""Reply shapes of the SoftAP commands and the JSON writers of ``softap.cpp``.

The firmware writes its JSON by hand, one ``Writer::write`` call per literal; HTTP
turns each call into one chunk, TCP buffers them into one segment. A :class:`Reply`
therefore keeps the individual writes (softap-protocol.md §3.3, §10).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from firmware_model.events import Effect

#: commands known on both transports, in the firmware's dispatch order
COMMAND_NAMES: tuple[str, ...] = (
    "version",
    "device-id",
    "scan-ap",
    "configure-ap",
    "connect-ap",
    "public-key",
    "set",
)
#: TCP-only names that switch the antenna and answer with silence (softap.cpp L1477-1480)
ANTENNA_COMMANDS: dict[str, str] = {"ant-internal": "internal", "ant-external": "external"}
#: commands whose handler reads the request body; the others never read it
BODY_COMMANDS = frozenset({"configure-ap", "set"})


class ReplyKind(enum.Enum):
    #: a known command wrote JSON
    JSON = "json"
    #: a known command wrote nothing (bad JSON, unknown key, wrong kind, allocation failure)
    NO_JSON = "no-json"
    #: not a command: TCP sends zero bytes, HTTP routes elsewhere
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Reply:
    """What a command produced: its individual writes and any effects for the transport."""

    kind: ReplyKind
    writes: tuple[bytes, ...] = ()
    effects: tuple[Effect, ...] = field(default=())

    @property
    def body(self) -> bytes:
        return b"".join(self.writes)


NO_JSON = Reply(ReplyKind.NO_JSON)
UNKNOWN = Reply(ReplyKind.UNKNOWN)


class JsonWriter:
    """The ``write_*`` helpers of ``JSONCommand``: every call is one write."""

    __slots__ = ("writes",)

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def raw(self, data: bytes) -> None:
        if data:
            self.writes.append(data)

    def char(self, c: bytes) -> None:
        self.writes.append(c)

    def quoted(self, s: bytes) -> None:
        self.writes.append(b'"')
        self.raw(s)
        self.writes.append(b'"')

    def string_field(self, name: bytes, value: bytes) -> None:
        self.quoted(name)
        self.writes.append(b":")
        self.quoted(value)

    def int_field(self, name: bytes, value: int) -> None:
        self.quoted(name)
        self.writes.append(b":")
        self.writes.append(str(value).encode("ascii"))

    def result_code(self, r: int) -> None:
        self.writes.append(b"{")
        self.int_field(b"r", r)
        self.writes.append(b"}")

    def reply(self, *effects: Effect) -> Reply:
        return Reply(ReplyKind.JSON, tuple(self.writes), tuple(effects))


_RESULT_REPLIES: dict[tuple[int, tuple[Effect, ...]], Reply] = {}


def result_reply(r: int, *effects: Effect) -> Reply:
    """``write_result_code``: ``{"r":<r>}``. Replies are immutable, so they are shared."""
    key = (r, effects)
    reply = _RESULT_REPLIES.get(key)
    if reply is None:
        w = JsonWriter()
        w.result_code(r)
        reply = w.reply(*effects)
        if len(_RESULT_REPLIES) < 1024:
            _RESULT_REPLIES[key] = reply
    return reply


def c_atoi(text: bytes) -> int:
    """C ``atoi`` on a raw JSON primitive (``null`` -> 0), wrapped to int32."""
    s = text.lstrip(b" \t\n\v\f\r")
    sign = 1
    if s[:1] in (b"+", b"-"):
        sign = -1 if s[:1] == b"-" else 1
        s = s[1:]
    n = 0
    for ch in s:
        if 0x30 <= ch <= 0x39:
            n = n * 10 + (ch - 0x30)
        else:
            break
    n = (sign * n) & 0xFFFF_FFFF
    return n - (1 << 32) if n >= 1 << 31 else n


def json_unescape(s: bytes) -> bytes:
    """The device's own unescape for ``crt``/``ca`` (no ``\\u`` support; softap.cpp L38-109)."""
    table = {
        ord('"'): b'"',
        ord("\\"): b"\\",
        ord("/"): b"/",
        ord("b"): b"\b",
        ord("t"): b"\t",
        ord("n"): b"\n",
        ord("f"): b"\f",
        ord("r"): b"\r",
    }
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == 0x5C and i + 1 < len(s) and s[i + 1] in table:
            out += table[s[i + 1]]
            i += 2
            continue
        out.append(c)
        i += 1
    return bytes(out)


#: text the lenient loop and ``bytes.fromhex`` decode alike: whole pairs of hex digits
_PLAIN_HEX = re.compile(rb"(?:[0-9A-Fa-f]{2})*")


def hex_decode(text: bytes, max_bytes: int) -> bytes:
    """``hex_decode`` of softap.cpp: lenient nibbles, stops at the end or ``max_bytes``.

    Well-formed hex (what every client sends) takes ``bytes.fromhex``; anything else the
    firmware's nibble loop (:func:`hex_decode_lenient`). Both give the same bytes
    (property-tested); the fast path is half of a ``configure-ap``'s non-RSA work.
    """
    head = text[: 2 * max_bytes]
    if _PLAIN_HEX.fullmatch(head):
        return bytes.fromhex(head.decode("ascii"))
    return hex_decode_lenient(text, max_bytes)


def hex_decode_lenient(text: bytes, max_bytes: int) -> bytes:
    """The firmware's loop: any byte is a nibble (``_nibble``), an odd tail pairs with 0."""
    out = bytearray()
    i = 0
    while len(out) < max_bytes and i < len(text):
        hi = _nibble(text[i])
        lo = _nibble(text[i + 1]) if i + 1 < len(text) else 0
        out.append((hi << 4 | lo) & 0xFF)
        i += 2
    return bytes(out)


def _nibble(c: int) -> int:
    if c < 0x30:
        return 0
    if c <= 0x39:
        return c - 0x30
    if c <= 0x5A:
        return c - 0x41 + 10
    if c <= 0x7A:
        return c - 0x61 + 10
    return 0
