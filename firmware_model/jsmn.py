"""The firmware's JSON request parsing: jsmn (non-strict) plus ``parse_json_request``.

Reproduced rather than replaced by :mod:`json` because the device's acceptance rules
are not JSON's (softap-protocol.md §4.0, ``softap.cpp`` ``JSONRequestCommand``,
``services/src/jsmn.c``):

* unquoted keys and values are accepted, string values are used raw (escapes are
  validated but not decoded), the body is a C string (cut at the first NUL);
* a top-level string or primitive yields no keys at all (and the command runs);
* an unknown key or a value of the wrong kind yields "no JSON".

Where the firmware would read tokens it never initialised (an empty body, a key
without a value, a jsmn error) its output is undefined; like the spec, we answer
with no JSON.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass


class TokenType(enum.IntEnum):
    PRIMITIVE = 0
    OBJECT = 1
    ARRAY = 2
    STRING = 3


@dataclass(slots=True)
class Token:
    type: TokenType
    start: int = -1
    end: int = -1
    size: int = 0


class JsmnError(enum.IntEnum):
    NOMEM = -1
    INVAL = -2
    PART = -3


_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = frozenset(b'"/\\bfrnt')
#: bytes jsmn's string loop just steps over: anything but a quote or a backslash
_PLAIN_STRING = re.compile(rb'[^"\\]*').match
#: initial token array size and growth rule of ``json_tokenise``
INITIAL_TOKENS = 64


def token_array_sizes(needed: int) -> list[int]:
    """The successive token-array sizes ``json_tokenise`` allocates (64, 129, 259 ...)."""
    sizes = [INITIAL_TOKENS]
    while sizes[-1] < needed:
        sizes.append(sizes[-1] * 2 + 1)
    return sizes


_OBJECT = TokenType.OBJECT
_ARRAY = TokenType.ARRAY
_STRING = TokenType.STRING
_PRIMITIVE = TokenType.PRIMITIVE
#: bytes a primitive may hold: printable ASCII except its delimiters ``,:]}`` and space
_PRIMITIVE_RUN = re.compile(rb"[\x21-\x2b\x2d-\x39\x3b-\x5c\x5e-\x7c\x7e]*").match
#: what ends a primitive (jsmn_parse_primitive's "found" cases)
_PRIMITIVE_END = frozenset(b":\t\r\n ,]}")


def tokenize(js: bytes) -> tuple[list[Token], int]:
    """Run jsmn over ``js``; returns the allocated tokens and jsmn's return value.

    ``jsmn_parse`` case by case (the branches are tried most frequent first); runs of
    plain string or primitive bytes are skipped with one regex match each, which the
    per-byte loop in ``tests/firmware_model/jsmn_reference.py`` checks on any input.
    """
    tokens: list[Token] = []
    append = tokens.append
    #: indices of the open objects/arrays, innermost last: the tokens jsmn's backward
    #: scans for ``start != -1 and end == -1`` find (only containers are ever open)
    open_at: list[int] = []
    toksuper = -1
    pos = 0
    n = len(js)
    count = 0
    while pos < n:
        c = js[pos]
        if c == 0x22:  # "
            start = pos
            pos += 1
            closed = False
            while pos < n:
                run = _PLAIN_STRING(js, pos)  # jsmn's loop, a run at a time (always matches)
                pos = run.end() if run is not None else pos
                if pos >= n:
                    break
                if js[pos] == 0x22:
                    append(Token(_STRING, start + 1, pos))
                    closed = True
                    break
                if pos + 1 < n:  # a backslash with something after it
                    pos += 1
                    esc = js[pos]
                    if esc == 0x75:  # \uXXXX
                        pos += 1
                        i = 0
                        while i < 4 and pos < n:
                            if js[pos] not in _HEX:
                                return tokens, JsmnError.INVAL
                            pos += 1
                            i += 1
                        pos -= 1
                    elif esc not in _ESCAPES:
                        return tokens, JsmnError.INVAL
                pos += 1
            if not closed:
                return tokens, JsmnError.PART
            count += 1
            if toksuper != -1:
                tokens[toksuper].size += 1
        elif c == 0x3A:  # :
            toksuper = len(tokens) - 1
        elif c == 0x2C:  # ,
            if toksuper != -1 and open_at and tokens[toksuper].type not in (_ARRAY, _OBJECT):
                toksuper = open_at[-1]
        elif c in (0x09, 0x0D, 0x0A, 0x20):
            pass
        elif c == 0x7B or c == 0x5B:  # { [
            count += 1
            append(Token(_OBJECT if c == 0x7B else _ARRAY, start=pos))
            if toksuper != -1:
                tokens[toksuper].size += 1
            toksuper = len(tokens) - 1
            open_at.append(toksuper)
        elif c == 0x7D or c == 0x5D:  # } ]
            if not open_at:
                return tokens, JsmnError.INVAL
            t = tokens[open_at[-1]]
            if t.type != (_OBJECT if c == 0x7D else _ARRAY):
                return tokens, JsmnError.INVAL
            t.end = pos + 1
            open_at.pop()
            toksuper = open_at[-1] if open_at else -1
        else:  # a primitive
            start = pos
            run = _PRIMITIVE_RUN(js, pos)
            pos = run.end() if run is not None else pos
            if pos < n and js[pos] not in _PRIMITIVE_END:
                return tokens, JsmnError.INVAL  # a control or non-ASCII byte
            append(Token(_PRIMITIVE, start, pos))
            pos -= 1
            count += 1
            if toksuper != -1:
                tokens[toksuper].size += 1
        pos += 1
    if open_at:
        return tokens, JsmnError.PART
    return tokens, count


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """The ``(key index, raw value)`` pairs in the order the firmware visits them."""

    values: tuple[tuple[int, bytes], ...]
    tokens: int

    def last(self, key: int) -> bytes | None:
        found = None
        for k, v in self.values:
            if k == key:
                found = v
        return found


def parse_json_request(
    body: bytes,
    keys: Sequence[bytes],
    types: Sequence[TokenType],
    tokenised: tuple[list[Token], int] | None = None,
) -> ParsedRequest | None:
    """``JSONRequestCommand::parse_json_request``; ``None`` means "produce no JSON".

    ``tokenised`` is :func:`tokenize` of the body up to its first NUL when the caller
    already has it (the firmware tokenises once, in ``json_tokenise``).
    """
    js = body.split(b"\x00", 1)[0]
    if tokenised is None:
        tokenised = tokenize(js)
    tokens, ret = tokenised
    if ret < 0:
        return None
    ok = True
    values: list[tuple[int, bytes]] = []
    state = "START"
    key = -1
    expected = TokenType.OBJECT
    i = 0
    j = 1
    while j > 0:
        if i >= len(tokens):
            return None  # the firmware would read an uninitialised token
        t = tokens[i]
        if t.type in (TokenType.ARRAY, TokenType.OBJECT):
            j += t.size * 2
        if state == "START":
            state = "KEY"
        elif state == "KEY":
            state = "VALUE"
            key = -1
            text = js[t.start : t.end] if t.end >= t.start >= 0 else b""
            for idx, name in enumerate(keys):
                if text == name:
                    expected = types[idx]
                    key = idx
            if key == -1:
                ok = False
        else:  # VALUE
            if key != -1:
                if t.type != expected:
                    ok = False
                else:
                    values.append((key, js[t.start : t.end]))
            state = "KEY"
        i += 1
        j -= 1
    if not ok:
        return None
    return ParsedRequest(tuple(values), len(tokens))
