"""The sans-IO device link (``softap_sim.protocol.link``): contents, ids, tokens, replies.

No sockets: every message is encoded with the CoAP codec and decoded back before the other
end sees it, so the tests cover the bytes both ends put on the wire. Deadlines are plain
numbers the test picks.
"""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softap_sim.protocol import coap
from softap_sim.protocol.coap import CoapMessage, CoapType, Code, Option
from softap_sim.protocol.lightssl import ChannelError
from softap_sim.protocol.link import (
    DEFAULT_TTL_S,
    Event,
    Hello,
    LinkConnection,
    LinkError,
    Ping,
    Request,
    Response,
    TokensExhaustedError,
    UnknownResponse,
    ack,
    decode_event,
    decode_function_result,
    decode_subscription,
    decode_variable,
    describe_request,
    encode_function_result,
    encode_time,
    function_request,
    parse_describe,
    time_request,
    variable_request,
)
from softap_sim.transports.cloud_link import HELLO

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)
DEVICE_ID = "0123456789abcdef01234567"


def wire(msg: CoapMessage) -> CoapMessage:
    """What the other end decodes from ``msg``."""
    return coap.decode(coap.encode(msg))


# -- Hello ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "hello",
    [
        pytest.param(Hello(6, 3, 2, 6, DEVICE_ID), id="with-id"),
        pytest.param(Hello(6, 0, 0, 6), id="no-id"),
        pytest.param(Hello(0xFFFF, 0xFFFF, 0xFF, 0xFFFF, "ab"), id="extremes"),
    ],
)
def test_hello_round_trips(hello: Hello) -> None:
    assert Hello.decode(hello.encode()) == hello


def test_the_emulated_photon_says_hello_in_eight_bytes() -> None:
    assert HELLO.encode() == bytes.fromhex("0006 0000 0000 0006")  # device-os Messages::hello
    assert Hello().encode() == bytes(8)


def test_hello_is_lenient_on_short_payloads() -> None:
    assert Hello.decode(b"") == Hello()
    assert Hello.decode(b"\x00\x06\x00") == Hello()
    assert Hello.decode(b"\x00\x06\x00\x01\xff") == Hello(6, 1)
    assert Hello.decode(bytes(9)) == Hello(0, 0, 0, 0)  # half an id length: no id


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(struct.pack(">HHBBHH", 6, 0, 0, 0, 6, 12) + bytes(5), id="truncated-id"),
        pytest.param(struct.pack(">HHBBHH", 6, 0, 0, 0, 6, 0xFFFF) + bytes(64), id="oversized"),
    ],
)
def test_a_hello_id_longer_than_the_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(LinkError) as err:
        Hello.decode(payload)
    assert isinstance(err.value, ChannelError)  # ends a session like a bad frame
    assert isinstance(err.value, ValueError)


def test_bytes_after_the_hello_id_are_ignored() -> None:
    payload = Hello(6, 1, 0, 6, DEVICE_ID).encode() + b"future fields"
    assert Hello.decode(payload).device_id == DEVICE_ID


# -- Describe, values, time -----------------------------------------------------------
def test_describe_keeps_known_types_only() -> None:
    payload = b'{"f":["on","",7],"v":{"a":1,"b":2,"c":4,"d":9,"e":3,"f":true,"g":"2"},"p":6}'
    assert parse_describe(payload) == (
        ["on"],
        {"a": "bool", "b": "int32", "c": "string", "d": "double"},
    )
    assert parse_describe(b"{}") == ([], {})


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b'{"f":', id="truncated"),
        pytest.param(b"[1]", id="not-an-object"),
        pytest.param(b'{"f":"on"}', id="f-not-a-list"),
        pytest.param(b'{"v":[]}', id="v-not-an-object"),
    ],
)
def test_a_malformed_describe_raises_link_error(payload: bytes) -> None:
    with pytest.raises(LinkError):
        parse_describe(payload)


@pytest.mark.parametrize(
    ("var_type", "payload", "value"),
    [
        pytest.param("int32", struct.pack(">i", -5), -5, id="int32-big-endian"),
        pytest.param("double", struct.pack("<d", 21.5), 21.5, id="double-little-endian"),
        pytest.param("bool", b"\x00", False, id="false"),
        pytest.param("bool", b"\x02", True, id="true"),
        pytest.param("string", "héllo".encode(), "héllo", id="string"),
        pytest.param("string", b"a\xffb", "a\ufffdb", id="not-utf8"),
        pytest.param(None, b"raw", "raw", id="untyped"),
    ],
)
def test_variable_values(var_type: str | None, payload: bytes, value: object) -> None:
    decoded = decode_variable(var_type, payload)
    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize(
    ("var_type", "payload"),
    [("int32", b"\x00" * 3), ("int32", b"\x00" * 5), ("double", b"\x00" * 4), ("bool", b"")],
)
def test_a_value_of_the_wrong_size_raises(var_type: str, payload: bytes) -> None:
    with pytest.raises(LinkError):
        decode_variable(var_type, payload)


def test_function_results_and_time() -> None:
    for value in (0, 1, -1, 2**31 - 1, -(2**31)):
        assert decode_function_result(encode_function_result(value)) == value
    for bad in (b"", b"\x00" * 3, b"\x00" * 8):
        with pytest.raises(LinkError):
            decode_function_result(bad)
    assert encode_time(1_700_000_000.9) == (1_700_000_000).to_bytes(4, "big")
    assert encode_time(2**32 + 5) == (5).to_bytes(4, "big")  # u32 wraps


# -- events and subscriptions ----------------------------------------------------------
def test_an_event_round_trips() -> None:
    link = LinkConnection(0)
    msg = wire(link.event("spark/device/claim/code", b"x" * 63))
    assert (msg.type, msg.code) == (CoapType.CON, Code.POST)
    assert msg.uri_path == [b"E", b"spark/device/claim/code"]  # the name is one option
    assert msg.option_values(Option.MAX_AGE) == []  # ttl 60 is the default: not sent
    assert decode_event(msg) == Event("spark/device/claim/code", "x" * 63, True, DEFAULT_TTL_S)


@pytest.mark.parametrize(("ttl", "max_age"), [(0, b"\x00"), (61, b"\x3d"), (3600, b"\x0e\x10")])
def test_an_event_ttl_other_than_60_is_a_max_age_option(ttl: int, max_age: bytes) -> None:
    msg = wire(LinkConnection(0).event("t", b"", private=False, ttl_s=ttl))
    assert msg.option_values(Option.MAX_AGE) == [max_age]
    assert decode_event(msg) == Event("t", None, False, ttl)


def test_event_names_from_a_hostile_peer() -> None:
    split = CoapMessage(
        CoapType.NON,
        Code.POST,
        1,
        options=[(Option.URI_PATH, s) for s in (b"e", b"a", b"\xffb")],
        payload=b"\xc3",
    )
    assert decode_event(wire(split)) == Event("a/\ufffdb", "\ufffd", False, DEFAULT_TTL_S)
    nameless = CoapMessage(CoapType.CON, Code.POST, 2, options=[(Option.URI_PATH, b"E")])
    assert decode_event(wire(nameless)).name == ""  # the caller refuses it


def test_a_subscription_round_trips() -> None:
    link = LinkConnection(0)
    assert decode_subscription(wire(link.subscribe("spark"))) == ("spark", True)
    assert decode_subscription(wire(link.subscribe("weather/", mine=False))) == ("weather/", False)


# -- message ids and tokens ------------------------------------------------------------
def test_message_ids_count_up_from_the_base_and_wrap_at_16_bits() -> None:
    link = LinkConnection(0xFFFE)
    ids = [link.next_message_id() for _ in range(3)]
    assert ids == [0xFFFF, 0x0000, 0x0001]
    assert link.ping().message_id == 2
    assert LinkConnection(0x1_0005).next_message_id() == 6  # the base is taken mod 2**16


def test_tokens_are_one_byte_and_skip_those_in_flight() -> None:
    link = LinkConnection(0)
    first = link.request(time_request())
    assert first.message.token == b"\x01"
    link.forget(first)
    held = [link.request(time_request()) for _ in range(3)]
    assert [p.message.token for p in held] == [b"\x02", b"\x03", b"\x04"]
    for _ in range(255 - 4):
        link.next_token()  # the counter comes round to 255
    assert link.next_token() == b"\x00"  # 256 wraps to 0
    assert link.next_token() == b"\x01"
    assert link.request(time_request()).message.token == b"\x05"  # 2..4 are in flight


def test_256_requests_in_flight_exhaust_the_tokens() -> None:
    link = LinkConnection(0)
    pending = [link.request(describe_request()) for _ in range(256)]
    assert link.in_flight == 256
    assert len({p.message.token for p in pending}) == 256
    with pytest.raises(TokensExhaustedError):
        link.request(describe_request())
    before = link.next_message_id()
    link.receive(wire(ack(pending[41].message, Code.CONTENT, b"{}")))
    assert link.request(describe_request()).message.token == pending[41].message.token
    assert link.next_message_id() == (before + 2) & 0xFFFF


# -- replies ---------------------------------------------------------------------------
def test_a_piggybacked_reply_resolves_once() -> None:
    cloud, device = LinkConnection(100), LinkConnection(7)
    pending = cloud.request(function_request("open", "door"), deadline=12.5)
    sent = pending.message
    assert (sent.type, sent.code, sent.message_id, sent.token) == (
        CoapType.CON,
        Code.POST,
        101,
        b"\x01",
    )
    assert pending.deadline == 12.5
    got = device.receive(wire(sent))
    assert isinstance(got, Request)
    assert got.message.uri_path == [b"f", b"open"]
    assert got.message.uri_query == [b"door"]
    reply = wire(ack(got.message, Code.CHANGED, encode_function_result(3)))
    event = cloud.receive(reply)
    assert isinstance(event, Response)
    assert event.pending is pending
    assert decode_function_result(event.message.payload) == 3
    assert cloud.in_flight == 0
    assert cloud.receive(reply) is None  # a duplicate ACK: nothing waits for it


def test_a_separate_response_follows_an_empty_ack() -> None:
    cloud, device = LinkConnection(0), LinkConnection(0)
    pending = cloud.request(variable_request("temp"))
    request = wire(pending.message)
    assert cloud.receive(wire(ack(request))) is None  # accepted, answer later
    assert cloud.in_flight == 1
    late = wire(device.separate_response(request, Code.CONTENT, b"\x01"))
    assert (late.type, late.token) == (CoapType.NON, pending.message.token)
    event = cloud.receive(late)
    assert isinstance(event, Response)
    assert event.pending is pending
    assert isinstance(cloud.receive(late), UnknownResponse)  # a duplicate


def test_an_rst_resolves_a_request() -> None:
    link = LinkConnection(0)
    pending = link.request(describe_request())
    rst = CoapMessage(CoapType.RST, Code.EMPTY, pending.message.message_id)
    event = link.receive(wire(rst))
    assert isinstance(event, Response)
    assert event.message.type is CoapType.RST


def test_unknown_replies() -> None:
    link = LinkConnection(0)
    assert link.receive(CoapMessage(CoapType.ACK, Code.EMPTY, 9)) is None  # an event's ACK
    assert link.receive(CoapMessage(CoapType.ACK, Code.CONTENT, 9, b"\x01")) is None
    stray = CoapMessage(CoapType.CON, Code.CHANGED, 9, b"\x07")
    assert link.receive(stray) == UnknownResponse(stray)


def test_a_forgotten_request_is_not_resolved() -> None:
    link = LinkConnection(0)
    pending = link.request(describe_request(), deadline=1.0)
    link.forget(pending)  # timed out: the I/O layer acted on the deadline
    link.forget(pending)  # idempotent
    assert link.in_flight == 0
    assert link.receive(ack(pending.message, Code.CONTENT, b"{}")) is None
    late = CoapMessage(CoapType.NON, Code.CONTENT, 5, pending.message.token)
    assert isinstance(link.receive(late), UnknownResponse)


def test_pings_and_requests() -> None:
    link = LinkConnection(0)
    for mtype in (CoapType.CON, CoapType.NON):
        ping = CoapMessage(mtype, Code.EMPTY, 3)
        assert link.receive(ping) == Ping(ping)
    get = CoapMessage(CoapType.CON, Code.GET, 4, b"\x01", [(Option.URI_PATH, b"t")])
    assert link.receive(get) == Request(get)


def test_replies_follow_the_request_type() -> None:
    link = LinkConnection(50)
    con = CoapMessage(CoapType.CON, Code.GET, 7, b"\x09")
    assert link.reply(con, Code.CONTENT, b"x") == CoapMessage(
        CoapType.ACK, Code.CONTENT, 7, b"\x09", [], b"x"
    )
    assert link.reply(con, Code.EMPTY) == CoapMessage(CoapType.ACK, Code.EMPTY, 7)
    non = CoapMessage(CoapType.NON, Code.GET, 8, b"\x0a")
    assert link.reply(non, Code.EMPTY) is None
    assert link.reply(non, Code.NOT_FOUND) == CoapMessage(CoapType.NON, Code.NOT_FOUND, 51, b"\x0a")
    assert ack(con) == CoapMessage(CoapType.ACK, Code.EMPTY, 7)  # an empty ACK has no token


def test_hello_messages() -> None:
    link = LinkConnection(0x1233)
    device_hello = wire(link.hello(HELLO.encode()))
    assert (device_hello.type, device_hello.code, device_hello.message_id) == (
        CoapType.CON,
        Code.POST,
        0x1234,
    )
    assert device_hello.uri_path == [b"h"]
    assert Hello.decode(device_hello.payload) == HELLO
    assert wire(link.hello()).payload == b""  # the cloud's Hello carries nothing


# -- hostile input ---------------------------------------------------------------------
@SETTINGS
@given(st.binary(max_size=64))
def test_any_decodable_message_is_classified_without_raising(data: bytes) -> None:
    try:
        msg = coap.decode(data)
    except coap.CoapError:
        return
    link = LinkConnection(0)
    pending = link.request(describe_request())
    event = link.receive(msg)
    assert event is None or isinstance(event, Response | UnknownResponse | Request | Ping)
    if isinstance(event, Response):
        assert event.pending is pending
        assert link.in_flight == 0
    decode_event(msg)
    decode_subscription(msg)


@SETTINGS
@given(st.binary(max_size=64))
def test_hello_and_describe_raise_only_link_error(data: bytes) -> None:
    for decoder in (Hello.decode, parse_describe):
        with contextlib.suppress(LinkError):
            decoder(data)
