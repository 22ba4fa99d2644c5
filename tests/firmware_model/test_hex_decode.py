"""``hex_decode``: the ``bytes.fromhex`` fast path decodes exactly as the firmware's loop."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from firmware_model.commands import hex_decode, hex_decode_lenient

HEXISH = st.one_of(
    st.binary(max_size=600),
    st.binary(max_size=300).map(lambda b: b.hex().encode()),
    st.binary(max_size=300).map(lambda b: b.hex().upper().encode()),
    st.text(alphabet="0123456789abcdefABCDEFgGzZ \x00\n:", max_size=600).map(str.encode),
)


@given(HEXISH, st.sampled_from([0, 1, 16, 128, 256]))
@example(b"0f" * 300, 256)
@example(b"0f" * 300 + b"zz", 256)
@example(b"abc", 256)
@example(b"0 1f", 256)
@example(b"", 16)
def test_fast_path_equals_the_firmware_loop(text: bytes, limit: int) -> None:
    assert hex_decode(text, limit) == hex_decode_lenient(text, limit)


def test_lenient_cases_of_the_firmware() -> None:
    # softap.cpp hex_decode: no validation; an odd tail pairs with a zero nibble
    assert hex_decode(b"abc", 16) == b"\xab\xc0"
    # ' ' and NUL are below '0': nibble 0; 'g' is 'a' + 6 -> 16, masked to the byte
    assert hex_decode(b" 1g0", 16) == bytes([0x01, (16 << 4) & 0xFF])
    assert hex_decode(b"ff" * 10, 4) == b"\xff" * 4
