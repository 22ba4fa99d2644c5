"""Comparing replies byte for byte: where they differ, and the device's id left out.

With ``ignore_id`` the 24-hex device id and the 588-hex public key are replaced by
same-length placeholders on both sides before comparing (inside the chunk data of a
chunked HTTP reply, so the framing is still compared exactly).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

from softap_sim.protocol.client import HttpReplyParser, SoftapClientError

#: bytes of context shown before the first differing byte, and after it
_SNIPPET_BEFORE = 16
_SNIPPET_AFTER = 48

_ID_LEN = 24
_KEY_LEN = 588
ID_PLACEHOLDER = b"<device-id>".ljust(_ID_LEN, b".")
KEY_PLACEHOLDER = b"<public-key>".ljust(_KEY_LEN, b".")
_KEY_RE = re.compile(rb"(?<![0-9A-Fa-f])[0-9A-Fa-f]{%d}(?![0-9A-Fa-f])" % _KEY_LEN)
_ID_RE = re.compile(rb"(?<![0-9A-Fa-f])[0-9A-Fa-f]{%d}(?![0-9A-Fa-f])" % _ID_LEN)


def _chunk_spans(data: bytes) -> list[tuple[int, int]] | None:
    """(offset, length) of each complete chunk's data; ``None`` if not a chunked reply."""
    parser = HttpReplyParser()
    with contextlib.suppress(SoftapClientError):  # broken framing: the chunks before count
        parser.feed(data)
    if parser.head is None or not parser.head.chunked:
        return None
    return parser.chunk_spans


def _sub_ids(data: bytes) -> bytes:
    return _ID_RE.sub(ID_PLACEHOLDER, _KEY_RE.sub(KEY_PLACEHOLDER, data))


def normalize_ids(data: bytes) -> bytes:
    """Replace the device id and public key by same-length placeholders.

    In a chunked HTTP reply the device writes the key one character per chunk, so the
    substitution runs over the joined chunk data and is written back in place: the
    framing bytes stay as they were and are still compared exactly.
    """
    spans = _chunk_spans(data) if data.startswith(b"HTTP/") else None
    if spans is None:
        return _sub_ids(data)
    joined = b"".join(data[o : o + n] for o, n in spans)
    replaced = _sub_ids(joined)
    if replaced == joined:
        return data
    out = bytearray(data)
    at = 0
    for o, n in spans:
        out[o : o + n] = replaced[at : at + n]
        at += n
    return bytes(out)


def escape(data: bytes) -> str:
    """Bytes as one line of printable text: ``\\r``, ``\\n``, ``\\t``, ``\\\\``, ``\\xNN``."""
    out = []
    for b in data:
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0x0D:
            out.append("\\r")
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x09:
            out.append("\\t")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Diff:
    """Where two byte strings first differ, with a little context around it."""

    offset: int
    expected: str
    got: str
    expected_len: int
    got_len: int

    @classmethod
    def of(cls, expected: bytes, got: bytes) -> Diff:
        n = min(len(expected), len(got))
        offset = next((i for i in range(n) if expected[i] != got[i]), n)
        lo = max(0, offset - _SNIPPET_BEFORE)
        hi = offset + _SNIPPET_AFTER

        def snippet(b: bytes) -> str:
            text = ("..." if lo > 0 else "") + escape(b[lo:offset]) + "[" + escape(b[offset:hi])
            return text + ("...]" if len(b) > hi else "]")

        return cls(offset, snippet(expected), snippet(got), len(expected), len(got))

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "expected": self.expected,
            "got": self.got,
            "expected_len": self.expected_len,
            "got_len": self.got_len,
        }
