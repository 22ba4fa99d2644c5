"""The per-byte jsmn port the firmware model used first, kept as a test oracle.

``firmware_model.jsmn.tokenize`` skips runs of plain string and primitive bytes with
regexes and keeps a stack of open containers instead of scanning back; this is the
straight loop of ``jsmn.c`` it must agree with on any input
(tests/firmware_model/test_jsmn_fast.py).
"""

from __future__ import annotations

from firmware_model.jsmn import JsmnError, Token, TokenType

_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = frozenset(b'"/\\bfrnt')


def tokenize_reference(js: bytes) -> tuple[list[Token], int]:
    """jsmn, one byte per iteration as ``jsmn.c`` reads (the oracle for the fast scan)."""
    tokens: list[Token] = []
    toksuper = -1
    pos = 0
    n = len(js)
    count = 0
    while pos < n:
        c = js[pos]
        if c in (0x7B, 0x5B):  # { [
            count += 1
            tok = Token(TokenType.OBJECT if c == 0x7B else TokenType.ARRAY, start=pos)
            tokens.append(tok)
            if toksuper != -1:
                tokens[toksuper].size += 1
            toksuper = len(tokens) - 1
        elif c in (0x7D, 0x5D):  # } ]
            want = TokenType.OBJECT if c == 0x7D else TokenType.ARRAY
            i = len(tokens) - 1
            while i >= 0:
                t = tokens[i]
                if t.start != -1 and t.end == -1:
                    if t.type != want:
                        return tokens, JsmnError.INVAL
                    toksuper = -1
                    t.end = pos + 1
                    break
                i -= 1
            if i == -1:
                return tokens, JsmnError.INVAL
            while i >= 0:
                t = tokens[i]
                if t.start != -1 and t.end == -1:
                    toksuper = i
                    break
                i -= 1
        elif c == 0x22:  # "
            start = pos
            pos += 1
            closed = False
            while pos < n:
                ch = js[pos]
                if ch == 0x22:
                    tokens.append(Token(TokenType.STRING, start + 1, pos))
                    closed = True
                    break
                if ch == 0x5C and pos + 1 < n:
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
        elif c in (0x09, 0x0D, 0x0A, 0x20):
            pass
        elif c == 0x3A:  # :
            toksuper = len(tokens) - 1
        elif c == 0x2C:  # ,
            if toksuper != -1 and tokens[toksuper].type not in (TokenType.ARRAY, TokenType.OBJECT):
                for i in range(len(tokens) - 1, -1, -1):
                    t = tokens[i]
                    if (
                        t.type in (TokenType.ARRAY, TokenType.OBJECT)
                        and t.start != -1
                        and t.end == -1
                    ):
                        toksuper = i
                        break
        else:
            start = pos
            while pos < n:
                ch = js[pos]
                if ch in (0x3A, 0x09, 0x0D, 0x0A, 0x20, 0x2C, 0x5D, 0x7D):
                    break
                if ch < 32 or ch >= 127:
                    return tokens, JsmnError.INVAL
                pos += 1
            tokens.append(Token(TokenType.PRIMITIVE, start, pos))
            pos -= 1
            count += 1
            if toksuper != -1:
                tokens[toksuper].size += 1
        pos += 1
    for t in reversed(tokens):
        if t.start != -1 and t.end == -1:
            return tokens, JsmnError.PART
    return tokens, count
