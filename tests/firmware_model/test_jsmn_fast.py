"""jsmn's fast scan (regex runs, a stack of open containers) agrees with the per-byte port."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from firmware_model.jsmn import Token, tokenize
from tests.firmware_model.jsmn_reference import tokenize_reference

#: bytes that steer jsmn: structure, quotes, escapes, \u digits, delimiters, controls
STEERING = st.sampled_from(list(b'{}[]":,\\ \t\r\nu0aAfFgbnrt/-1\x00\x7f\xc3'))
JSMNISH = st.one_of(
    st.binary(max_size=300),
    st.lists(STEERING, max_size=120).map(bytes),
    st.dictionaries(st.text(max_size=8), st.text(max_size=40), max_size=6).map(
        lambda d: ("{" + ",".join(f'"{k}":"{v}"' for k, v in d.items()) + "}").encode()
    ),
)


def _flat(result: tuple[list[Token], int]) -> tuple[list[tuple[int, int, int, int]], int]:
    tokens, ret = result
    return [(t.type, t.start, t.end, t.size) for t in tokens], ret


@settings(max_examples=400)
@given(JSMNISH)
@example(b'{"k":"cc","v":"abc\\')
@example(b'{"k":"\\u12g4"}')
@example(b'{"k":"\\u12')
@example(b'"\\')
@example(b'{"p":"' + b"0f" * 128 + b'"}')
@example(b'{"a":"\\x"}')
@example(b'{"a":[1,{"b":2},[]],"c":3}')
@example(b'{"a":[1,2}')
@example(b"]")
@example(b'{"a":1,,"b":[,]}')
@example(b'{"k":tr\x01ue}')
@example(b"[[[")
def test_tokenize_equals_the_per_byte_loop(js: bytes) -> None:
    assert _flat(tokenize(js)) == _flat(tokenize_reference(js))
