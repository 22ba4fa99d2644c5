"""The optimised :class:`lightssl.Channel` against the verbatim pre-optimisation oracle.

``tests/protocol/lightssl_reference.py`` holds the old implementation (``ReferenceChannel``). For
random session material, message sequences, chunkings of the byte stream and corruptions
of it, both must produce the same ciphertext bytes, the same decrypted frames per call and
raise :class:`ChannelError` at the same call with the same message, and must keep behaving
the same when fed more after an error (the state an error leaves behind matches too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softap_sim.protocol.lightssl import MAX_FRAME_BYTES, SESSION_BYTES, Channel, ChannelError
from tests.protocol.lightssl_reference import ReferenceChannel

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class _Chan(Protocol):
    def encrypt(self, plaintext: bytes) -> bytes: ...

    def receive_data(self, data: bytes) -> list[bytes]: ...


Outcome = tuple[str, object]

sessions = st.binary(min_size=SESSION_BYTES, max_size=SESSION_BYTES)
#: CoAP-sized messages, exact multiples of 16 (a whole padding block) and up to 1500 bytes
messages = st.one_of(
    st.binary(max_size=64),
    st.integers(0, 1500 // 16).flatmap(lambda k: st.binary(min_size=16 * k, max_size=16 * k)),
    st.binary(max_size=1500),
)
message_lists = st.lists(messages, max_size=8)


def _outcome(chan: _Chan, data: bytes) -> Outcome:
    try:
        return ("frames", chan.receive_data(data))
    except ChannelError as exc:
        return ("error", str(exc))


def _feed(chan: _Chan, chunks: Sequence[bytes]) -> list[Outcome]:
    """Every chunk in turn, carrying on after errors; what each call returned or raised."""
    return [_outcome(chan, chunk) for chunk in chunks]


@st.composite
def chunkings(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    """Split ``stream``: whole, one byte at a time, or cyclic random sizes (0 = empty call)."""
    mode = draw(st.sampled_from(["whole", "bytes", "sizes"]))
    if mode == "whole":
        return [stream]
    sizes = [1] if mode == "bytes" else draw(st.lists(st.integers(0, 70), min_size=1, max_size=12))
    if not any(sizes):
        sizes = [*sizes, 1]
    chunks: list[bytes] = []
    pos = i = 0
    while pos < len(stream):
        size = sizes[i % len(sizes)]
        chunks.append(stream[pos : pos + size])
        pos += size
        i += 1
    return chunks


def _raw_frames(session: bytes, padded_blocks: Sequence[bytes]) -> bytes:
    """Frames of arbitrary (possibly badly padded) block-aligned plaintext, with the IV rule."""
    key, iv = session[:16], session[16:32]
    out = bytearray()
    for padded in padded_blocks:
        enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        ct = enc.update(padded) + enc.finalize()
        iv = ct[:16]
        out += len(ct).to_bytes(2, "big") + ct
    return bytes(out)


@SETTINGS
@given(session=sessions, msgs=message_lists)
def test_encrypt_matches_reference(session: bytes, msgs: list[bytes]) -> None:
    new, ref = Channel(session), ReferenceChannel(session)
    assert new.salt == ref.salt
    for msg in msgs:
        assert new.encrypt(msg) == ref.encrypt(msg)


@SETTINGS
@given(session=sessions, msgs=message_lists, data=st.data())
def test_receive_matches_reference(session: bytes, msgs: list[bytes], data: st.DataObject) -> None:
    sender = ReferenceChannel(session)
    stream = b"".join([sender.encrypt(m) for m in msgs])
    chunks = data.draw(chunkings(stream))
    new_out = _feed(Channel(session), chunks)
    assert new_out == _feed(ReferenceChannel(session), chunks)
    frames = [f for kind, value in new_out if kind == "frames" for f in value]  # type: ignore[attr-defined]
    assert frames == msgs


@settings(SETTINGS, max_examples=60)
@given(session=sessions, msgs=st.lists(st.binary(max_size=40), min_size=1, max_size=4))
def test_every_split_point_matches_reference(session: bytes, msgs: list[bytes]) -> None:
    """Each stream cut in two at every byte, and in three around every frame boundary."""
    sender = ReferenceChannel(session)
    frames = [sender.encrypt(m) for m in msgs]
    stream = b"".join(frames)
    splits = [[stream[:cut], stream[cut:]] for cut in range(len(stream) + 1)]
    boundary = 0
    for frame in frames:
        boundary += len(frame)
        for x in range(max(boundary - 3, 0), boundary + 3):
            for y in range(x + 1, x + 4):
                splits.append([stream[:x], stream[x:y], stream[y:]])
    for chunks in splits:
        new_out = _feed(Channel(session), chunks)
        assert new_out == _feed(ReferenceChannel(session), chunks)


@SETTINGS
@given(session=sessions, msgs=message_lists, data=st.data())
def test_round_trip_new_to_new(session: bytes, msgs: list[bytes], data: st.DataObject) -> None:
    sender = Channel(session)
    stream = b"".join(sender.encrypt(m) for m in msgs)
    receiver = Channel(session)
    frames = [f for chunk in data.draw(chunkings(stream)) for f in receiver.receive_data(chunk)]
    assert frames == msgs


@SETTINGS
@given(
    session=sessions,
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("send"), messages),
            st.tuples(st.just("recv"), messages, st.integers(0, 3)),
        ),
        max_size=12,
    ),
)
def test_interleaved_directions(session: bytes, ops: list[tuple[object, ...]]) -> None:
    """Sending and receiving on one object keep independent IV chains, as before."""
    new, ref = Channel(session), ReferenceChannel(session)
    peer = ReferenceChannel(session)
    pending = b""
    for op in ops:
        if op[0] == "send":
            msg = op[1]
            assert isinstance(msg, bytes)
            assert new.encrypt(msg) == ref.encrypt(msg)
        else:
            msg, cut = op[1], op[2]
            assert isinstance(msg, bytes)
            assert isinstance(cut, int)
            pending += peer.encrypt(msg)
            # hand over all but the last ``cut`` bytes: frames straddle the calls
            chunk, pending = pending[: len(pending) - cut], pending[len(pending) - cut :]
            assert _outcome(new, chunk) == _outcome(ref, chunk)
    assert _outcome(new, pending) == _outcome(ref, pending)


bogus_lengths = st.one_of(
    st.sampled_from([0, 16, MAX_FRAME_BYTES - 16, MAX_FRAME_BYTES, MAX_FRAME_BYTES + 16, 0xFFFF]),
    st.integers(1, 0xFFFF).filter(lambda n: n % 16 != 0),
    st.integers(MAX_FRAME_BYTES // 16 + 1, 0xFFFF // 16).map(lambda k: 16 * k),
    st.integers(1, 64).map(lambda k: 16 * k),  # well-formed but wrong
)
mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=20)),
    st.tuples(st.just("prefix"), st.integers(0, 10**6), bogus_lengths),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=40)),
)


def _mutate(stream: bytes, starts: list[int], muts: list[tuple[object, ...]]) -> bytes:
    buf = bytearray(stream)
    for mut in muts:
        kind = mut[0]
        if kind == "append":
            assert isinstance(mut[1], bytes)
            buf += mut[1]
            continue
        pos = mut[1]
        assert isinstance(pos, int)
        if kind == "prefix":
            if not starts:
                continue
            at = starts[pos % len(starts)]
            value = mut[2]
            assert isinstance(value, int)
            buf[at : at + 2] = value.to_bytes(2, "big")
            continue
        if not buf:
            continue
        pos %= len(buf)
        if kind == "flip":
            mask = mut[2]
            assert isinstance(mask, int)
            buf[pos] ^= mask
        elif kind == "truncate":
            del buf[pos:]
        else:
            assert isinstance(mut[2], bytes)
            buf[pos:pos] = mut[2]
    return bytes(buf)


@SETTINGS
@given(
    session=sessions,
    msgs=st.lists(messages, min_size=1, max_size=6),
    muts=st.lists(mutations, min_size=1, max_size=3),
    data=st.data(),
)
def test_corrupted_streams_fail_like_reference(
    session: bytes,
    msgs: list[bytes],
    muts: list[tuple[object, ...]],
    data: st.DataObject,
) -> None:
    sender = ReferenceChannel(session)
    frames = [sender.encrypt(m) for m in msgs]
    starts = [sum(len(f) for f in frames[:i]) for i in range(len(frames))]
    stream = _mutate(b"".join(frames), starts, muts)
    chunks = data.draw(chunkings(stream))
    assert _feed(Channel(session), chunks) == _feed(ReferenceChannel(session), chunks)


@SETTINGS
@given(sender_session=sessions, receiver_session=sessions, msgs=message_lists, data=st.data())
def test_wrong_key_fails_like_reference(
    sender_session: bytes, receiver_session: bytes, msgs: list[bytes], data: st.DataObject
) -> None:
    sender = Channel(sender_session)
    stream = b"".join([sender.encrypt(m) for m in msgs])
    chunks = data.draw(chunkings(stream))
    new_out = _feed(Channel(receiver_session), chunks)
    assert new_out == _feed(ReferenceChannel(receiver_session), chunks)


def _bad_pad(n: int, index: int, value: int) -> bytes:
    block = bytearray(16 - n) + bytes((n,)) * n
    block[16 - n + index] = value
    return bytes(block)


last_blocks = st.one_of(
    # the final byte says n, and the n-1 before it may or may not agree
    st.integers(0, 255).flatmap(
        lambda n: st.binary(min_size=15, max_size=15).map(lambda b: b + bytes((n,)))
    ),
    # a valid n-byte pad with one of its first n-1 bytes changed
    st.integers(2, 16)
    .flatmap(
        lambda n: st.tuples(
            st.just(n), st.integers(0, n - 2), st.integers(0, 255).filter(lambda v: v != n)
        )
    )
    .map(lambda t: _bad_pad(*t)),
    st.integers(1, 16).map(lambda n: bytes(16 - n) + bytes((n,)) * n),  # valid
)
padded_plaintexts = st.tuples(
    st.integers(0, 4).flatmap(lambda k: st.binary(min_size=16 * k, max_size=16 * k)), last_blocks
).map(lambda t: t[0] + t[1])


@SETTINGS
@given(session=sessions, padded=st.lists(padded_plaintexts, min_size=1, max_size=6), data=st.data())
def test_padding_checks_match_reference(
    session: bytes, padded: list[bytes], data: st.DataObject
) -> None:
    """Frames whose decrypted padding is valid, invalid in its last byte or in an earlier one."""
    assert all(len(p) % 16 == 0 and len(p) <= 80 for p in padded)
    chunks = data.draw(chunkings(_raw_frames(session, padded)))
    assert _feed(Channel(session), chunks) == _feed(ReferenceChannel(session), chunks)


@SETTINGS
@given(session=sessions, junk=st.lists(st.binary(max_size=40), max_size=6))
def test_random_bytes_fail_like_reference(session: bytes, junk: list[bytes]) -> None:
    assert _feed(Channel(session), junk) == _feed(ReferenceChannel(session), junk)


@pytest.mark.parametrize("size", [MAX_FRAME_BYTES - 17, MAX_FRAME_BYTES - 1, MAX_FRAME_BYTES])
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_frame_size_limit_matches_reference(size: int, chunk: int) -> None:
    """The largest accepted frame (16 KiB of ciphertext) and the first refused one."""
    session = bytes(range(7, 7 + SESSION_BYTES))
    sender = ReferenceChannel(session)
    stream = sender.encrypt(b"m" * 20) + sender.encrypt(bytes(size)) + sender.encrypt(b"end")
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    new_out = _feed(Channel(session), chunks)
    assert new_out == _feed(ReferenceChannel(session), chunks)
    assert any(kind == "error" for kind, _ in new_out) == (size >= MAX_FRAME_BYTES)


@pytest.mark.parametrize("size", [0xFFEF, 0xFFF0, 0xFFFF, 0x10000])
def test_oversized_message_matches_reference(size: int) -> None:
    session = bytes(range(SESSION_BYTES))
    new, ref = Channel(session), ReferenceChannel(session)
    for chan in (new, ref):
        chan.encrypt(b"x" * 40)  # a multi-block message first, so a pending fix exists
    big = bytes(size)

    def attempt(chan: _Chan) -> Outcome:
        try:
            return ("ct", chan.encrypt(big))
        except ChannelError as exc:
            return ("error", str(exc))

    assert attempt(new) == attempt(ref)
    # an error leaves the IV chain where it was
    assert new.encrypt(b"after") == ref.encrypt(b"after")


def test_buffer_types_match_reference() -> None:
    session = bytes(range(100, 100 + SESSION_BYTES))
    new, ref = Channel(session), ReferenceChannel(session)
    for msg in (b"abc", bytes(16), bytes(40)):
        assert new.encrypt(bytearray(msg)) == ref.encrypt(bytearray(msg))  # type: ignore[arg-type]
    sender = ReferenceChannel(session)
    stream = sender.encrypt(b"hello") + sender.encrypt(bytes(33))
    for wrapped_stream in (bytearray(stream), memoryview(stream)):
        a, b = Channel(session), ReferenceChannel(session)
        assert a.receive_data(wrapped_stream) == b.receive_data(wrapped_stream)  # type: ignore[arg-type]
    # the padder handed a memoryview back, and memoryview + bytes is a TypeError
    for bad in ("text", 5, None, [1, 2], memoryview(b"abc"), memoryview(bytes(70000))):
        with pytest.raises(TypeError):
            ref.encrypt(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            new.encrypt(bad)  # type: ignore[arg-type]
        if isinstance(bad, memoryview):
            continue
        with pytest.raises(TypeError):
            ReferenceChannel(session).receive_data(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            Channel(session).receive_data(bad)  # type: ignore[arg-type]
    # still in step after the TypeErrors
    assert new.encrypt(b"z") == ref.encrypt(b"z")


@pytest.mark.parametrize("size", [0, 16, 39, 41])
def test_session_length_checked(size: int) -> None:
    with pytest.raises(ValueError, match="40 bytes"):
        ReferenceChannel(bytes(size))
    with pytest.raises(ValueError, match="40 bytes"):
        Channel(bytes(size))
