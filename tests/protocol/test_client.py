"""The client codec (``softap_sim.protocol.client``): requests, replies, provisioning.

The HTTP reply parser replaced five hand-written copies that disagreed (header case, a bad
chunk size); the cases they disagreed on are pinned here, and every reply is also fed
split at every byte boundary, since transports hand the parser arbitrary pieces.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_model import Device
from firmware_model.eras import ERAS
from softap_sim.errors import SimulatorError
from softap_sim.protocol.client import (
    DEVICE_ID,
    SCAN_AP,
    ChunkedEncodingError,
    DeviceId,
    HttpReplyParser,
    SoftapClientError,
    decode_chunked,
    decode_device_id,
    decode_http_reply,
    decode_scan,
    decode_tcp_reply,
    encode_http_request,
    encode_tcp_request,
    expect_ok,
    http_response_end,
    parse_chunk_size,
    parse_http_reply,
    parse_reply_head,
    provision_steps,
)
from softap_sim.protocol.http import HttpConnection, routes_for
from softap_sim.protocol.tcp import TcpConnection, encode_tcp_reply
from tests.conftest import SPEC_DEVICE_ID

H200 = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED = H200 + b"1\r\n{\r\n5\r\n0\r\n\r\n\r\n1\r\n}\r\n0\r\n\r\n"  # a chunk holding "0\r\n\r\n"
FIXED = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc"
EMPTY = b"HTTP/1.1 301\r\nLocation: /index\r\nContent-Length: 0\r\n\r\n"
REPLIES = [CHUNKED, FIXED, EMPTY]


def feed_in_pieces(raw: bytes, cuts: list[int]) -> HttpReplyParser:
    parser = HttpReplyParser()
    at = 0
    for cut in [*sorted(cuts), len(raw)]:
        reply = parser.feed(raw[at:cut])
        at = cut
        assert (reply is not None) == (cut >= len(raw)), (raw, cut)
    return parser


# ---------------------------------------------------------------------------------------
# requests and TCP replies
# ---------------------------------------------------------------------------------------
def test_requests_are_the_bytes_the_clients_always_sent() -> None:
    assert encode_tcp_request("set", {"k": "cc", "v": "x"}) == b'set\n18\n\n{"k":"cc","v":"x"}'
    assert encode_tcp_request("version") == b"version\n0\n\n"
    assert encode_tcp_request("set", "é") == b"set\n2\n\n\xc3\xa9"
    assert encode_http_request(("127.0.0.1", 80), "version") == (
        b"GET /version HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"
    )
    assert encode_http_request(("h", 1), "/set", {"k": "cc"}) == (
        b'POST /set HTTP/1.1\r\nHost: h:1\r\nContent-Length: 10\r\n\r\n{"k":"cc"}'
    )
    assert encode_http_request(("h", 1), "x", b"", method="PUT") == (
        b"PUT /x HTTP/1.1\r\nHost: h:1\r\nContent-Length: 0\r\n\r\n"
    )


def test_tcp_replies() -> None:
    assert decode_tcp_reply(b"") is None  # silence: an unknown command
    assert decode_tcp_reply(b"\n\n") is None  # a reply without JSON
    assert decode_tcp_reply(b'\n\n{"r":0}') == {"r": 0}
    with pytest.raises(SoftapClientError, match="not a SoftAP TCP reply"):
        decode_tcp_reply(b"garbage")
    with pytest.raises(SoftapClientError, match="not JSON"):
        decode_tcp_reply(b"\n\n{")


# ---------------------------------------------------------------------------------------
# HTTP replies
# ---------------------------------------------------------------------------------------
def test_the_three_framings() -> None:
    chunked = HttpReplyParser().feed(CHUNKED)
    assert chunked is not None
    assert chunked.raw == CHUNKED
    assert chunked.chunks == (b"{", b"0\r\n\r\n", b"}")
    assert chunked.body == b"{0\r\n\r\n}"
    fixed = HttpReplyParser().feed(FIXED + b"HTTP/1.1 200")
    assert fixed is not None
    assert (fixed.head.status, fixed.head.reason, fixed.body, fixed.chunks) == (
        404,
        "Not Found",
        b"abc",
        None,
    )
    until_close = HttpReplyParser()
    assert until_close.feed(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nsome") is None
    assert until_close.feed(b" body") is None
    reply = until_close.feed_eof()
    assert reply is not None
    assert reply.body == b"some body"


def test_header_names_match_case_insensitively() -> None:
    mixed = b"HTTP/1.1 200 OK\r\ntransfer-ENCODING:Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    reply = HttpReplyParser().feed(mixed)
    assert reply is not None
    assert reply.body == b"hi"
    assert reply.head.get("Transfer-Encoding") == b"Chunked"
    lower = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nCONNECTION: Close\r\n\r\nhi"
    reply = HttpReplyParser().feed(lower)
    assert reply is not None
    assert (reply.body, reply.head.close, reply.head.content_length) == (b"hi", True, 2)
    # chunked wins over a length (RFC 9112 §6.3)
    both = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert http_response_end(both) == len(both)


def test_a_bad_chunk_size_raises_one_error_type() -> None:
    bad = H200 + b"zz\r\nab\r\n0\r\n\r\n"
    for parse in (HttpReplyParser().feed, http_response_end, lambda b: decode_http_reply(b, "x")):
        with pytest.raises(ChunkedEncodingError, match="bad chunk size in b'zz'"):
            parse(bad)
    assert issubclass(ChunkedEncodingError, SoftapClientError)
    assert issubclass(ChunkedEncodingError, SimulatorError)
    assert issubclass(ChunkedEncodingError, ValueError)
    with pytest.raises(ChunkedEncodingError, match="no CR LF after chunk data"):
        HttpReplyParser().feed(H200 + b"2\r\nabc\r\n")
    with pytest.raises(ChunkedEncodingError):
        parse_chunk_size(b"1_0")  # int() would take it
    with pytest.raises(ChunkedEncodingError):
        parse_chunk_size(b"f" * 17)
    assert parse_chunk_size(b"1A;name=value") == 26
    assert parse_chunk_size(b"0 ") == 0


def test_incomplete_and_odd_replies() -> None:
    for raw in REPLIES:
        for cut in range(len(raw)):
            assert http_response_end(raw[:cut]) is None, raw[:cut]
        assert http_response_end(raw + b"extra") == len(raw)
    # the library's 503 has no blank line at all: it only ends when the device closes
    no_blank = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
    parser = HttpReplyParser()
    assert parser.feed(no_blank) is None
    assert parser.feed_eof() is None  # no complete head: nothing to return
    assert parser.received == no_blank
    cut = HttpReplyParser()
    assert cut.feed(FIXED[:-1]) is None
    assert cut.feed_eof() is None  # fewer body bytes than announced
    trailers = H200 + b"1\r\nx\r\n0\r\nExpires: never\r\n\r\n"
    assert http_response_end(trailers) == len(trailers)
    head = HttpReplyParser(head_only=True).feed(FIXED[:-3])
    assert head is not None
    assert head.body == b""
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    assert http_response_end(interim + FIXED) == len(interim)
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    assert http_response_end(no_content + b"HTTP") == len(no_content)


def test_trailing_bytes_stay_for_the_next_reply() -> None:
    parser = HttpReplyParser()
    reply = parser.feed(FIXED + CHUNKED[:10])
    assert reply is not None
    assert reply.raw == FIXED
    assert parser.feed(CHUNKED[10:20]) is reply  # later bytes only extend the trailing part
    assert parser.trailing == CHUNKED[:20]


def test_bytes_needed_never_reaches_past_the_reply() -> None:
    parser = HttpReplyParser()
    assert parser.bytes_needed is None  # the head: read to its blank line
    parser.feed(FIXED[:-3])
    assert parser.bytes_needed == 3
    parser.feed(b"ab")
    assert parser.bytes_needed == 1
    parser.feed(b"c")
    assert parser.bytes_needed == 0
    chunked = HttpReplyParser()
    chunked.feed(H200 + b"5\r\n0\r")
    assert chunked.bytes_needed == 5  # "\n\r\n" of the data, then its CR LF
    chunked.feed(b"\n\r\n\r\n")
    assert chunked.bytes_needed is None  # a chunk-size line comes next
    until_close = HttpReplyParser()
    until_close.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    assert until_close.bytes_needed is None


def test_chunk_spans_point_into_the_received_bytes() -> None:
    parser = HttpReplyParser()
    assert parser.feed(CHUNKED[:-11]) is None
    got = parser.received
    assert [got[o : o + n] for o, n in parser.chunk_spans] == [b"{", b"0\r\n\r\n"]


def test_bad_heads() -> None:
    with pytest.raises(SoftapClientError, match="not an HTTP status line"):
        HttpReplyParser().feed(b"SSH-2.0-x\r\n\r\n")
    with pytest.raises(SoftapClientError, match="bad header line"):
        HttpReplyParser().feed(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n")
    with pytest.raises(SoftapClientError, match="bad Content-Length"):
        HttpReplyParser().feed(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n")
    with pytest.raises(SoftapClientError, match="bad Content-Length"):
        HttpReplyParser().feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\n")
    head = parse_reply_head(b"HTTP/1.1 301\r\nLocation: /hello\r\nX-Empty:")
    assert (head.status, head.reason, head.get(b"location"), head.get("x-empty")) == (
        301,
        "",
        b"/hello",
        b"",
    )
    assert head.get("absent") is None


@given(st.sampled_from(REPLIES), st.lists(st.integers(0, 200), max_size=12))
@settings(max_examples=300, deadline=None)
def test_any_split_gives_the_same_reply(raw: bytes, cuts: list[int]) -> None:
    whole = HttpReplyParser().feed(raw)
    parser = feed_in_pieces(raw, [c for c in cuts if c < len(raw)])
    assert parser.feed(b"") == whole


def test_every_byte_boundary_of_a_real_public_key_reply(device: Device) -> None:
    conn = HttpConnection(routes_for(ERAS[device.era]))
    raw = conn.render_command(device.execute("public-key"))
    assert len(decode_chunked(raw.partition(b"\r\n\r\n")[2])) == 598  # one per write
    for cut in range(len(raw) + 1):
        parser = HttpReplyParser()
        assert parser.feed(raw[:cut]) is None or cut == len(raw)
        reply = parser.feed(raw[cut:])
        assert reply is not None
        assert reply.raw == raw, cut
    byte_by_byte = feed_in_pieces(raw, list(range(1, len(raw))))
    assert byte_by_byte.feed(b"") == HttpReplyParser().feed(raw)


def test_decode_chunked_wants_exactly_one_complete_body() -> None:
    assert decode_chunked(b"1\r\n{\r\n1\r\n}\r\n0\r\n\r\n") == [b"{", b"}"]
    assert decode_chunked(b"0\r\n\r\n") == []
    with pytest.raises(ChunkedEncodingError, match="incomplete"):
        decode_chunked(b"1\r\n{\r\n0\r\n")
    with pytest.raises(ChunkedEncodingError, match="after the last chunk"):
        decode_chunked(b"0\r\n\r\nmore")


def test_decode_http_reply() -> None:
    assert decode_http_reply(H200 + b'7\r\n{"v":2}\r\n0\r\n\r\n', "v") == {"v": 2}
    assert decode_http_reply(H200 + b"0\r\n\r\n", "x") is None
    with pytest.raises(SoftapClientError, match="404 Not Found"):
        decode_http_reply(FIXED, "x")
    with pytest.raises(SoftapClientError, match="without a reply"):
        decode_http_reply(b"", "x")
    with pytest.raises(SoftapClientError, match="not an HTTP response"):
        decode_http_reply(b"\n\n{}", "x")
    with pytest.raises(SoftapClientError, match=r"'HTTP/1\.1 503 Service Unavailable'"):
        decode_http_reply(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n", "x")
    with pytest.raises(SoftapClientError, match="incomplete"):
        decode_http_reply(H200 + b"1\r\n{\r\n", "x")
    with pytest.raises(SoftapClientError, match="not JSON"):
        decode_http_reply(H200 + b"1\r\n{\r\n0\r\n\r\n", "x")
    assert parse_http_reply(b"HTTP/1.0 200 OK\r\n\r\nto the close").body == b"to the close"
    with pytest.raises(SoftapClientError, match=r"^HTTP: the reply is incomplete"):
        parse_http_reply(FIXED[:-1])


# ---------------------------------------------------------------------------------------
# provisioning: the client codec against the device's codecs and model, no sockets
# ---------------------------------------------------------------------------------------
def over_tcp(device: Device, command: str, body: Any) -> Any:
    conn = TcpConnection(device.reads_body, device.can_allocate_body)
    request = conn.receive_data(encode_tcp_request(command, body))
    assert request is not None
    assert request.name == command
    return decode_tcp_reply(encode_tcp_reply(device.execute(request.name, request.body)))


def over_http(device: Device, command: str, body: Any) -> Any:
    conn = HttpConnection(routes_for(ERAS[device.era]))
    request = conn.receive_segment(encode_http_request(("192.168.0.1", 80), command, body))
    assert request is not None
    assert request.route is not None
    raw = conn.render_command(device.execute(request.route.command, request.body))
    return decode_http_reply(raw, command)


@pytest.mark.parametrize("send", [over_tcp, over_http], ids=["tcp", "http"])
def test_provision_steps_set_a_device_up(device: Device, send: Any) -> None:
    assert decode_device_id(send(device, *DEVICE_ID)) == DeviceId(SPEC_DEVICE_ID, False)
    assert [s["ssid"] for s in decode_scan(send(device, *SCAN_AP))] == ["guest", "Cafe"]
    steps = provision_steps(
        "guest", "guest-password", security="wpa2_aes", channel=6, claim_code="c" * 63
    )
    sent = [next(steps)]
    while True:
        try:
            sent.append(steps.send(send(device, *sent[-1])))
        except StopIteration:
            break
    assert [command for command, _ in sent] == ["public-key", "set", "configure-ap", "connect-ap"]
    assert len(sent[2][1]["pwd"]) == 256  # RSA-1024 ciphertext, hex
    assert device.dct.claim_code == b"c" * 63
    (cred,) = device.dct.credentials.list()
    assert (cred.ssid, cred.password.value) == (b"guest", b"guest-password")
    assert device.connect_requested


def test_provisioning_errors() -> None:
    with pytest.raises(ValueError, match="unknown security"):
        next(provision_steps("n", "p", security="rot13", channel=1, claim_code=None))
    steps = provision_steps("n", "", security=0, channel=1, claim_code=None)
    assert next(steps) == ("public-key", None)
    with pytest.raises(SoftapClientError, match="public-key answered"):
        steps.send({"r": -1})
    steps = provision_steps("n", "", security=0, channel=1, claim_code=None)
    next(steps)
    with pytest.raises(SoftapClientError, match="not a DER SEQUENCE"):
        steps.send({"r": 0, "b": "00"})
    with pytest.raises(SoftapClientError, match=r"connect-ap answered \{'r': -1\}"):
        expect_ok("connect-ap", {"r": -1})
    with pytest.raises(SoftapClientError, match="device-id answered"):
        decode_device_id(None)
    with pytest.raises(SoftapClientError, match="scan-ap answered"):
        decode_scan({"scans": 1})
    assert decode_device_id({"id": "ab", "c": "1"}).claimed
