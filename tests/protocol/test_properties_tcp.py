"""Property tests: the TCP 5609 codec and the device's command dispatch never crash,
never lose state, and answer malformed input exactly as the firmware would.

* :class:`TcpConnection` is checked against an independent reference of
  ``SimpleProtocolDispatcher::handle`` (softap-protocol.md §2.1) on arbitrary bytes, for
  every way of splitting them into reads, with and without the peer's EOF.
* :meth:`Device.execute` is fed random and "almost valid" JSON bodies for every command
  (§4.0): replies keep the firmware's shapes, and the DCT only changes when the reply says
  so (``DctChanged``).
* ``parse_json_request`` (jsmn + ``JSONRequestCommand``) is cross-checked against Python's
  :mod:`json` on well-formed flat objects.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from firmware_model import (
    COMMAND_NAMES,
    Dct,
    Device,
    DeviceIdentity,
    DeviceKey,
    ReplyKind,
    default_environment,
)
from firmware_model.commands import ANTENNA_COMMANDS
from firmware_model.device import (
    CONFIGURE_KEYS,
    CONFIGURE_TYPES,
    SET_KEYS,
    SET_TYPES,
    DctChanged,
    SoftApShutdown,
)
from firmware_model.jsmn import TokenType, parse_json_request
from softap_sim.protocol.tcp import TcpConnection, TcpRequest, encode_tcp_reply

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------
# Reference: SimpleProtocolDispatcher::handle (softap.cpp L1488-1544, current firmware)
# ---------------------------------------------------------------------------------------
#: ``char name[30]``; the loop stops after 30 bytes without consuming a terminator
REF_NAME_MAX = 30
#: the only handlers that call ``Reader::fetch_as_string`` on the body
REF_BODY_COMMANDS = ("configure-ap", "set")


class _Blocked(Exception):
    """The device would block in ``wiced_tcp_stream_read`` waiting for more bytes."""


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - 0x100000000 if v & 0x80000000 else v


def reference_handle(
    data: bytes, eof: bool, can_allocate: Callable[[int], bool]
) -> tuple[str, int, bytes | None] | None:
    """What the firmware hands to the command for a connection that sent ``data``.

    Returns ``(name, length, body)`` (``body`` is ``None`` when the read or the
    allocation failed, ``b""`` for commands that never read it), or ``None`` when the
    device is still blocked reading (or, with ``eof``, never got a "data received" event).
    """
    if not data and eof:
        return None
    pos = 0

    def read_char() -> int:
        """``readChar``: the byte, or -1 for a failed read (the peer's EOF)."""
        nonlocal pos
        if pos < len(data):
            pos += 1
            return data[pos - 1]
        if eof:
            return -1
        raise _Blocked

    try:
        name = bytearray()
        while len(name) < REF_NAME_MAX:
            c = read_char()
            if c in (-1, 0, 0x0A):  # read error, NUL, LF
                break
            name.append(c)
        length = 0
        while True:
            c = read_char()
            if c in (-1, 0x0A):
                break
            length = _int32(length * 10 + c - ord("0"))  # ARM: char is unsigned
        seen_newline = True
        while True:
            c = read_char()
            if c == -1:
                break
            if c == 0x0A:
                if seen_newline:
                    break
                seen_newline = True
            else:
                seen_newline = False
        text = name.decode("latin-1")
        if text not in REF_BODY_COMMANDS:
            return text, length, b""
        # reader.bytes_left = length; fetch_as_string: malloc(len + 1), read len bytes
        if not can_allocate(length):
            return text, length, None
        if length == 0:
            return text, length, b""
        body = data[pos : pos + length]
        if len(body) == length:
            return text, length, body
        if eof:
            return text, length, None
        raise _Blocked
    except _Blocked:
        return None


def heap(limit: int) -> Callable[[int], bool]:
    """``malloc(n + 1)`` succeeds while it fits into ``limit`` bytes."""
    return lambda n: n >= 0 and n + 1 <= limit


def feed(
    chunks: list[bytes], eof: bool, can_allocate: Callable[[int], bool]
) -> tuple[TcpConnection, TcpRequest | None]:
    """Feed ``chunks`` (then EOF) into a fresh codec; at most one request may come out."""
    codec = TcpConnection(Device.reads_body, can_allocate)
    outs = [codec.receive_data(c) for c in chunks]
    if eof:
        outs.append(codec.receive_eof())
    produced = [r for r in outs if r is not None]
    assert len(produced) <= 1, produced
    if produced:
        assert codec.done
        # one request per connection: everything after it is discarded
        assert codec.receive_data(b"version\n0\n\n") is None
        assert codec.receive_eof() is None
    return codec, (produced[0] if produced else None)


def as_tuple(req: TcpRequest | None) -> tuple[str, int, bytes | None] | None:
    return None if req is None else (req.name, req.length, req.body)


# ---------------------------------------------------------------------------------------
# TCP input strategies
# ---------------------------------------------------------------------------------------
NAMES = [
    b"version",
    b"device-id",
    b"scan-ap",
    b"configure-ap",
    b"connect-ap",
    b"public-key",
    b"set",
    b"ant-internal",
    b"ant-external",
    b"provision-keys",
    b"version\r",
    b"Set",
    b"",
    b"a" * 29,
    b"b" * 30,
    b"c" * 31,
    b"set" + b" " * 27,  # exactly 30 bytes: runs over into the length
]
BODIES = [
    b"",
    b'{"k":"cc","v":"abc"}',
    b'{"k":"cc","v":5}',
    b'{"idx":0}',
    b'{"idx":0,"ssid":"Cafe","sec":0,"ch":11,"pwd":""}',
    b"{",
    b"\x00\x00",
    '{"k":"cc","v":"caf\u00e9"}'.encode(),
]
FRAGMENTS = [
    b"\n",
    b"\n\n",
    b"\x00",
    b"\r",
    b"\r\n",
    b"0",
    b"3",
    b"12",
    b"-",
    b" ",
    b"\xff",
    b"\x80",
    *NAMES,
    *BODIES,
]


@st.composite
def framed_requests(draw: st.DrawFn) -> bytes:
    """``<name><sep><len>\\n<blank line><body><extra>`` with every part perturbed."""
    name = draw(st.sampled_from(NAMES) | st.binary(max_size=34))
    sep = draw(st.sampled_from([b"\n", b"\n", b"\x00", b"", b"\r\n"]))
    body = draw(st.sampled_from(BODIES) | st.binary(max_size=24))
    length_text = draw(
        st.sampled_from(
            [
                str(len(body)).encode(),
                str(len(body)).encode(),
                str(max(len(body) - 2, 0)).encode(),
                str(len(body) + 3).encode(),
                b"",
                b"-1",
                b"\r",
                b"99999999999",
                b"0x10",
            ]
        )
        | st.binary(max_size=4)
    )
    blank = draw(st.sampled_from([b"\n", b"\n", b"", b"x\n\n", b"\r\n\n", b"\n\n", b"ab\ncd\n\n"]))
    extra = draw(st.sampled_from([b"", b"", b"version\n0\n\n", b"\n"]) | st.binary(max_size=6))
    return name + sep + length_text + b"\n" + blank + body + extra


@st.composite
def canonical_requests(draw: st.DrawFn) -> bytes:
    """What real clients send (``name\\nLEN\\n\\nbody``), maybe with bytes after it."""
    name = draw(st.sampled_from(NAMES[:9]))
    body = draw(st.sampled_from(BODIES) | st.binary(max_size=24))
    extra = draw(st.sampled_from([b"", b"", b"set\n0\n\n"]) | st.binary(max_size=6))
    return name + b"\n" + str(len(body)).encode() + b"\n\n" + body + extra


tcp_inputs = st.one_of(
    st.binary(max_size=120),
    st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=3), max_size=16).map(b"".join),
    framed_requests(),
    canonical_requests(),
)
heap_limits = st.sampled_from([0, 1, 5, 40, 13_408])


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# ---------------------------------------------------------------------------------------
# 1. TCP codec properties
# ---------------------------------------------------------------------------------------
@PROPS
@given(
    payload=tcp_inputs,
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    eof=st.booleans(),
    limit=heap_limits,
)
def test_tcp_codec_matches_reference_for_any_split(
    payload: bytes, cuts: list[int], eof: bool, limit: int
) -> None:
    """Whole, randomly split and byte-at-a-time feeding all give the reference's answer."""
    expected = reference_handle(payload, eof, heap(limit))
    bytewise = [payload[i : i + 1] for i in range(len(payload))]
    for chunks in ([payload], split_at(payload, cuts), bytewise):
        codec, req = feed(chunks, eof, heap(limit))
        assert as_tuple(req) == expected, chunks
        if not eof and req is None:
            assert not codec.done


@PROPS
@given(payload=tcp_inputs, extra=st.binary(max_size=40), limit=heap_limits)
def test_tcp_bytes_after_the_request_are_ignored(payload: bytes, extra: bytes, limit: int) -> None:
    """Once a request is out (without EOF), appending any bytes changes nothing."""
    expected = reference_handle(payload, False, heap(limit))
    assume(expected is not None)
    _, req = feed([payload + extra], False, heap(limit))
    assert as_tuple(req) == expected
    _, req = feed([payload, extra], True, heap(limit))
    assert as_tuple(req) == expected


@PROPS
@given(payload=tcp_inputs)
def test_tcp_eof_always_ends_the_connection(payload: bytes) -> None:
    """With EOF every connection that sent data yields exactly one request."""
    codec, req = feed([payload], True, heap(13_408))
    assert codec.done
    assert (req is None) == (payload == b"")


@pytest.mark.parametrize(
    ("data", "eof", "expected"),
    [
        pytest.param(b"version\n0\n\n", False, ("version", 0, b""), id="canonical"),
        pytest.param(b"version\r\n0\r\n\r\n", False, None, id="crlf-waits"),
        pytest.param(b"version\r\n0\r\n\r\n", True, ("version\r", -35, b""), id="crlf-eof"),
        pytest.param(b"version\n0\n", False, None, id="no-blank-line-waits"),
        pytest.param(b"version\n0\n", True, ("version", 0, b""), id="no-blank-line-eof"),
        pytest.param(b"set\n3\n\nab", False, None, id="short-body-waits"),
        pytest.param(b"set\n3\n\nab", True, ("set", 3, None), id="short-body-eof"),
        pytest.param(b"set\n-1\n\n{}", False, ("set", -29, None), id="minus-folds-negative"),
        pytest.param(b"x" * 30 + b"7\n\n", False, ("x" * 30, 7, b""), id="30-byte-name"),
        pytest.param(b"x" * 30 + b"\n7\n\n", False, ("x" * 30, 0, b""), id="30-byte-name-lf"),
        pytest.param(b"set\x005\nx\n\n", False, None, id="nul-name-then-body-owed"),
        pytest.param(b"set\x005\nx\n\nabcde", False, ("set", 5, b"abcde"), id="nul-name"),
        pytest.param(b"\n\n", True, ("", 0, b""), id="empty-name"),
        pytest.param(b"", True, None, id="nothing-sent"),
    ],
)
def test_tcp_reference_examples(
    data: bytes, eof: bool, expected: tuple[str, int, bytes | None] | None
) -> None:
    """Hand-checked cases of §2.1, for both the reference and the codec."""
    assert reference_handle(data, eof, heap(13_408)) == expected
    _, req = feed([data], eof, heap(13_408))
    assert as_tuple(req) == expected


# ---------------------------------------------------------------------------------------
# 2. Device dispatch properties
# ---------------------------------------------------------------------------------------
@functools.cache
def _key() -> DeviceKey:
    return DeviceKey.generate(1024)


def fresh_device() -> Device:
    return Device(Dct(DeviceIdentity(bytes(range(12)), "ABCDEF")), _key(), default_environment())


@functools.cache
def _public_key() -> rsa.RSAPublicKey:
    pub = serialization.load_der_public_key(_key().public_key_area[:162])
    assert isinstance(pub, rsa.RSAPublicKey)
    return pub


@functools.cache
def encrypt_hex(plaintext: bytes) -> str:
    """One fixed ciphertext per password, so examples replay identically."""
    return _public_key().encrypt(plaintext, padding.PKCS1v15()).hex()


R_WRITES = re.compile(rb"-?[0-9]+")
DEVICE_ID = re.compile(rb'\{"id":"[0-9A-F]{24}","c":"[01]"\}')
PUBLIC_KEY = re.compile(
    rb'\{"b":"30819F300D06092A864886F70D010101050003818D0030818902818100'
    rb'[0-9A-F]{256}0203010001(?:00){132}","r":0\}'
)


def assert_result_reply(writes: tuple[bytes, ...]) -> int:
    """``write_result_code``: ``{`` ``"`` ``r`` ``"`` ``:`` ``<digits>`` ``}`` as 7 writes."""
    assert len(writes) == 7, writes
    assert writes[:5] == (b"{", b'"', b"r", b'"', b":")
    assert writes[6] == b"}"
    assert R_WRITES.fullmatch(writes[5])
    r = int(writes[5])
    assert -(2**31) <= r < 2**31
    return r


def check_reply(device: Device, name: str, body: bytes | None) -> None:
    """Run one command and check the reply shape and the state invariant."""
    before = device.dct.to_json()
    creds_changed_before = device.credentials_changed
    reply = device.execute(name, body)
    after = device.dct.to_json()

    assert reply.kind in (ReplyKind.JSON, ReplyKind.NO_JSON, ReplyKind.UNKNOWN)
    # every write is one HTTP chunk: an empty one would end the chunked body early
    assert all(reply.writes), reply.writes
    effects = {type(e) for e in reply.effects}
    if reply.kind is not ReplyKind.JSON:
        assert reply.writes == ()
        assert effects == set()
    if DctChanged not in effects:
        assert after == before, (name, body)
        assert device.credentials_changed == creds_changed_before
    # the TCP encoding follows from the kind (§2.2)
    tcp = encode_tcp_reply(reply)
    assert (
        tcp
        == {
            ReplyKind.UNKNOWN: b"",
            ReplyKind.NO_JSON: b"\n\n",
            ReplyKind.JSON: b"\n\n" + reply.body,
        }[reply.kind]
    )

    if name in ("set", "configure-ap"):
        assert reply.kind is not ReplyKind.UNKNOWN
        assert effects <= {DctChanged}
        if reply.kind is ReplyKind.JSON:
            r = assert_result_reply(reply.writes)
            assert (DctChanged in effects) == (r == 0)
            if name == "set":
                assert r in (0, -1)
        if body is None:
            assert reply.kind is ReplyKind.NO_JSON
    elif name == "version":
        assert reply.writes == (b'{"v":2}',)
    elif name == "device-id":
        assert DEVICE_ID.fullmatch(reply.body)
        assert reply.body == fresh_device().execute("device-id").body
    elif name == "public-key":
        assert PUBLIC_KEY.fullmatch(reply.body)
    elif name == "scan-ap":
        scans = json.loads(reply.body)["scans"]
        assert all(list(s) == ["ssid", "rssi", "sec", "ch", "mdr"] for s in scans)
    elif name == "connect-ap":
        assert assert_result_reply(reply.writes) == 0
        assert effects == {SoftApShutdown}
    else:
        assert reply.kind is ReplyKind.UNKNOWN
        assert device.antenna == ANTENNA_COMMANDS.get(name, "auto")


# "almost valid" JSON ------------------------------------------------------------------
ws = st.sampled_from(["", " ", "\n", "\t", "\r\n  "])
json_scalars = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3)
    ),
    max_leaves=6,
)
ALL_KEYS = sorted({k.decode() for k in CONFIGURE_KEYS + SET_KEYS})


def key_strategy(allowed: tuple[bytes, ...]) -> st.SearchStrategy[str]:
    near = ["K", "kk", "cc", "ssid ", "SSID", "", "idx2", "v\u00e9"]
    return (
        st.sampled_from([k.decode() for k in allowed])
        | st.sampled_from(near + ALL_KEYS)
        | (st.text(max_size=5))
    )


SAFE_BARE_KEY = re.compile(r"[A-Za-z0-9_.+-]+")


def serialize(pairs: list[tuple[str, object]], space: str, ascii_only: bool, bare: bool) -> bytes:
    """A JSON object with the pairs in order (duplicates kept); keys optionally unquoted."""
    items = []
    for k, v in pairs:
        key = k if bare and SAFE_BARE_KEY.fullmatch(k) else json.dumps(k, ensure_ascii=ascii_only)
        val = json.dumps(v, ensure_ascii=ascii_only)
        items.append(f"{space}{key}{space}:{space}{val}{space}")
    return ("{" + ",".join(items) + "}").encode()


@st.composite
def almost_json(draw: st.DrawFn, allowed: tuple[bytes, ...]) -> bytes:
    """A plausible request body, then zero or more byte-level corruptions."""
    pairs = draw(st.lists(st.tuples(key_strategy(allowed), json_values), max_size=5))
    body = bytearray(serialize(pairs, draw(ws), draw(st.booleans()), bare=draw(st.booleans())))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["truncate", "insert", "delete", "quote", "escape"]))
        at = draw(st.integers(0, len(body)))
        if op == "truncate":
            del body[at:]
        elif op == "insert":
            body[at:at] = draw(
                st.sampled_from(
                    [b"\x00", b"\\", b'"', b"{", b"]", b",", b":", b"\xc3\xa9", b"\xff"]
                )
                | st.binary(min_size=1, max_size=3)
            )
        elif op == "delete" and at < len(body):
            del body[at]
        elif op == "quote":
            body[:] = body.replace(b'"', b"'", 1)
        else:
            body[at:at] = draw(st.sampled_from([b"\\u00e9", b"\\x", b"\\u12", b"\\n", b'\\"']))
    return bytes(body)


@st.composite
def configure_bodies(draw: st.DrawFn) -> bytes:
    """Mostly well-formed configure-ap requests that can really save a network."""
    ssid = draw(
        st.sampled_from(["guest", "Cafe", "OldRouter", "HomeNetwork", "nowhere", "", "x" * 33])
    )
    password = draw(
        st.sampled_from([b"guest-password", b"abcde", b"short", b"", b"x" * 65, b"correct horse"])
    )
    pwd = draw(
        st.sampled_from(
            [
                encrypt_hex(password),
                encrypt_hex(password).upper(),
                encrypt_hex(password)[:-2],
                "",
                "z",
                "00",
                "f" * 256,
            ]
        )
    )
    obj: list[tuple[str, object]] = [("idx", 0), ("ssid", ssid)]
    if draw(st.booleans()):
        obj.append(("pwd", pwd))
    sec = draw(st.sampled_from([0, 1, 4194310, 2097156, 37748740, -1, None, "4194310"]))
    obj.append(("sec", sec))
    obj.append(("ch", draw(st.sampled_from([11, 6, 0, None]))))
    if draw(st.integers(0, 5)) == 0:
        obj.append(draw(st.sampled_from([("eap", 25), ("ii", "user"), ("oi", "anon"), ("zz", 1)])))
    order = draw(st.permutations(obj))
    return serialize(list(order), "", True, bare=False)


@st.composite
def set_bodies(draw: st.DrawFn) -> bytes:
    """Mostly well-formed set requests: ``k`` near ``cc``, ``v`` of any length."""
    k = draw(st.sampled_from(["cc", "cc", "ccX", "c", "", "xx", "CC"]))
    v = draw(st.sampled_from(["MDMA" + "x" * 56 + "MDM", "a" * 70, ""]) | st.text(max_size=8))
    obj: list[tuple[str, object]] = [("k", k), ("v", v)]
    if draw(st.integers(0, 4)) == 0:
        obj.append(draw(st.sampled_from([("v", "again"), ("k", "cc"), ("v", 1), ("x", "1")])))
    return serialize(list(draw(st.permutations(obj))), draw(ws), draw(st.booleans()), bare=False)


def bodies_for(name: str) -> st.SearchStrategy[bytes | None]:
    allowed = {"set": SET_KEYS, "configure-ap": CONFIGURE_KEYS}.get(name, SET_KEYS + CONFIGURE_KEYS)
    options = [st.binary(max_size=64), almost_json(allowed), st.none()]
    if name == "configure-ap":
        options.append(configure_bodies())
    if name == "set":
        options.append(set_bodies())
    return st.one_of(*options)


command_names = st.sampled_from([*COMMAND_NAMES, *ANTENNA_COMMANDS, "provision-keys", "", "Set"])


@PROPS
@given(data=st.data(), name=command_names)
def test_device_execute_never_breaks_shape_or_state(data: st.DataObject, name: str) -> None:
    """Any body, for any command: a firmware reply shape, and state changes only with
    ``DctChanged``. Several commands run on one device to let state accumulate."""
    device = fresh_device()
    for _ in range(3):
        check_reply(device, name, data.draw(bodies_for(name)))
    # unrelated commands afterwards still behave
    for other in ("version", "device-id", "set"):
        check_reply(device, other, data.draw(bodies_for(other)))


@PROPS
@given(body=st.binary(max_size=80) | almost_json(CONFIGURE_KEYS) | st.none())
def test_body_is_ignored_by_commands_that_never_read_it(body: bytes | None) -> None:
    """version, device-id, scan-ap, public-key and connect-ap never read the body (§4)."""
    for name in ("version", "device-id", "scan-ap", "public-key", "connect-ap"):
        a, b = fresh_device(), fresh_device()
        ra, rb = a.execute(name, b""), b.execute(name, body)
        assert (ra.kind, ra.writes, ra.effects) == (rb.kind, rb.writes, rb.effects)


@PROPS
@given(name=st.text(max_size=31), body=st.binary(max_size=16))
def test_unknown_names_are_silent_and_harmless(name: str, body: bytes) -> None:
    assume(name not in COMMAND_NAMES)
    device = fresh_device()
    check_reply(device, name, body)


# jsmn cross-check against Python's json ------------------------------------------------
def kind_of(value: object) -> TokenType | None:
    if isinstance(value, str):
        return TokenType.STRING
    if value is None or isinstance(value, bool | int | float):
        return TokenType.PRIMITIVE
    return None  # object / array: never a declared kind


def reference_parse(
    pairs: list[tuple[str, object]],
    keys: tuple[bytes, ...],
    types: tuple[TokenType, ...],
    ascii_only: bool,
) -> tuple[tuple[int, bytes], ...] | None:
    """§4.0 on a flat, well-formed object: every key known with its declared kind, values
    raw (the JSON text between the quotes, escapes kept)."""
    names = [k.decode() for k in keys]
    out = []
    for k, v in pairs:
        if k not in names:
            return None
        idx = names.index(k)
        if kind_of(v) is not types[idx]:
            return None
        text = json.dumps(v, ensure_ascii=ascii_only)
        raw = text[1:-1] if isinstance(v, str) else text
        out.append((idx, raw.encode()))
    return tuple(out)


@PROPS
@given(
    command=st.sampled_from(["set", "configure-ap"]),
    data=st.data(),
    space=ws,
    ascii_only=st.booleans(),
    bare=st.booleans(),
)
def test_jsmn_agrees_with_python_json_on_flat_objects(
    command: str, data: st.DataObject, space: str, ascii_only: bool, bare: bool
) -> None:
    keys, types = (SET_KEYS, SET_TYPES) if command == "set" else (CONFIGURE_KEYS, CONFIGURE_TYPES)
    pairs = data.draw(st.lists(st.tuples(key_strategy(keys), json_values), max_size=6))
    body = serialize(pairs, space, ascii_only, bare)
    if not bare:
        # the body is JSON that Python reads back as exactly these pairs
        assert json.loads(body, object_pairs_hook=list) == [
            (k, json.loads(json.dumps(v), object_pairs_hook=list)) for k, v in pairs
        ]
    expected = reference_parse(pairs, keys, types, ascii_only)
    parsed = parse_json_request(body, keys, types)
    assert (None if parsed is None else parsed.values) == expected

    if command == "set":
        device = fresh_device()
        reply = device.execute("set", body)
        if expected is None:
            assert reply.kind is ReplyKind.NO_JSON
            return
        last = dict(expected)
        k, v = last.get(0, b"")[:2], last.get(1, b"")[:63]
        ok = k == b"cc" and v != b""
        assert assert_result_reply(reply.writes) == (0 if ok else -1)
        if ok:
            assert device.dct.claim_code_field == v.ljust(63, b"\x00")


def test_property_helpers_agree_with_the_spec_examples() -> None:
    """Sanity of the helpers on §4.7's examples."""
    device = fresh_device()
    assert device.execute("set", b'{"k":"cc","v":"abc"}').body == b'{"r":0}'
    assert device.execute("set", b'{"k":"xx","v":"y"}').body == b'{"r":-1}'
    assert device.execute("set", b'{"k":"cc","v":5}').kind is ReplyKind.NO_JSON
    assert reference_parse([("k", "cc"), ("v", 5)], SET_KEYS, SET_TYPES, True) is None
    pwd = encrypt_hex(b"guest-password")
    body = json.dumps({"idx": 0, "ssid": "guest", "sec": 4194310, "ch": 6, "pwd": pwd}).encode()
    reply = device.execute("configure-ap", body)
    assert reply.body == b'{"r":0}'
    assert DctChanged() in reply.effects
