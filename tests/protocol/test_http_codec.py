"""Sans-IO tests of the WICED HTTP request rules (softap-protocol.md §3.1)."""

from __future__ import annotations

import pytest

from firmware_model import ERAS, FirmwareEra
from softap_sim.protocol.http import HttpConnection, RouteKind, percent_decode, routes_for

ROUTES = routes_for(ERAS[FirmwareEra.CURRENT])


def conn(limit: int = 13_408) -> HttpConnection:
    return HttpConnection(ROUTES, lambda n: n <= limit)


def test_multi_segment_body_is_reassembled() -> None:
    body = b'{"k":"cc","v":"' + b"C" * 63 + b'"}'
    head = b"POST /set HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    c = conn()
    assert c.receive_segment(head + body[:10]) is None
    assert c.receive_segment(body[10:40]) is None
    req = c.receive_segment(body[40:] + b"extra bytes are discarded")
    assert req is not None
    assert req.body == body
    assert req.route is not None
    assert req.route.command == "set"


def test_multi_segment_buffer_allocation_failure_gives_500() -> None:
    c = conn(limit=100)
    req = c.receive_segment(b"POST /set HTTP/1.1\r\nContent-Length: 5000\r\n\r\n{")
    assert req is not None
    assert req.body is None
    assert c.render_server_error().startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


def test_body_longer_than_content_length_is_cut() -> None:
    req = conn().receive_segment(b"POST /set HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcdef")
    assert req is not None
    assert req.body == b"abc"


def test_no_content_length_ignores_body() -> None:
    req = conn().receive_segment(b'POST /set HTTP/1.1\r\nHost: x\r\n\r\n{"k":1}')
    assert req is not None
    assert req.body == b""


def test_chunked_request_body_passed_raw() -> None:
    req = conn().receive_segment(
        b"POST /set HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    assert req is not None
    assert req.body == b"5\r\nhello\r\n0\r\n\r\n"


def test_lower_case_header_names_are_invisible() -> None:
    c = conn()
    req = c.receive_segment(
        b"POST /set HTTP/1.1\r\ncontent-type: application/json\r\n"
        b"content-length: 2\r\nconnection: close\r\n\r\n{}"
    )
    assert req is not None
    assert req.route is not None  # the gating header was not seen
    assert req.body == b""  # nor was the length
    assert not req.close


def test_head_split_over_segments_is_ignored() -> None:
    c = conn()
    assert c.receive_segment(b"GET /version HTTP/1.1\r\nHost: x\r\n") is None
    assert c.receive_segment(b"\r\n") is None


@pytest.mark.parametrize(
    ("ctype", "routed"),
    [
        (b"application/json", False),
        (b"application/json; charset=utf-8", False),
        (b"text/plain;charset=UTF-8", False),
        (b"application/octet-stream", True),
        (b"application/x-www-form-urlencoded", True),
        (b"multipart/form-data; boundary=x", True),
    ],
)
def test_content_type_gating(ctype: bytes, routed: bool) -> None:
    req = conn().receive_segment(b"GET /version HTTP/1.1\r\nContent-Type: " + ctype + b"\r\n\r\n")
    assert req is not None
    assert (req.route is not None and req.route.kind is RouteKind.COMMAND) is routed


def test_percent_decoding() -> None:
    assert percent_decode(b"/device%2Did") == b"/device-id"
    assert percent_decode(b"/a%%b") == b"/a%b"
    assert percent_decode(b"/a%zz") == b"/a%zz"
