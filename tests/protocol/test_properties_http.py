"""Property tests: the WICED HTTP codec (softap-protocol.md §3) never crashes, accepts
exactly the requests the library accepts, and every response it renders is well-formed
HTTP/1.1 with the §3.3 bytes.

An independent reference of the library's request loop (first segment is the head,
substring header search, Content-Type gating, ``Content-Length`` reassembly) is run next
to :class:`HttpConnection` on random bytes and on mutated real requests split into
arbitrary segments.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_model import (
    COMMAND_NAMES,
    ERAS,
    Dct,
    Device,
    DeviceIdentity,
    DeviceKey,
    FirmwareEra,
    Reply,
    ReplyKind,
    default_environment,
)
from softap_sim.protocol.http import (
    KNOWN_MIME_TYPES,
    MAX_PARSED_SEGMENT_BYTES,
    MAX_PARSED_SEGMENTS,
    HttpConnection,
    HttpRequest,
    RouteKind,
    routes_for,
)

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUTES = routes_for(ERAS[FirmwareEra.CURRENT])
HEAP = 13_408
OCTET = b"application/octet-stream"
NO_CACHE = (
    b"Cache-Control: no-store, no-cache, must-revalidate, post-check=0, pre-check=0\r\n"
    b"Pragma: no-cache\r\n"
)
#: §3.3 "H200", the head of every command response
H200 = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n" + NO_CACHE + b"Connection: Keep-Alive\r\n"
    b"Access-Control-Allow-Origin: *\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
)


def can_allocate(n: int) -> bool:
    return n >= 0 and n + 1 <= HEAP


# ---------------------------------------------------------------------------------------
# Reference of the library's request handling (§3.1), written independently of the codec
# ---------------------------------------------------------------------------------------
#: the current page table (softap_ip.c): (pattern, declared MIME type, kind)
REF_ROUTES: list[tuple[bytes, bytes, str, str]] = [
    (b"/", b"text/html", "raw-static", ""),
    (b"/hello", b"text/plain", "static", ""),
    *[(b"/" + c.encode(), OCTET, "command", c) for c in COMMAND_NAMES],
    (b"/*", OCTET, "page-handler", ""),
]
PERCENT = re.compile(rb"%%|%[0-9A-Fa-f]{2}")


def ref_header(head: bytes, name: bytes) -> bytes | None:
    if name not in head:
        return None
    return head.split(name, 1)[1].split(b"\r\n", 1)[0]


def ref_atoi(text: bytes) -> int:
    m = re.match(rb" *([0-9]*)", text)
    assert m is not None
    return int(m.group(1) or b"0")


def ref_route(head: bytes, path: bytes) -> tuple[str, str] | None:
    ctype = ref_header(head, b"Content-Type: ")
    gate = None
    if ctype is not None:
        gate = next((m for m in KNOWN_MIME_TYPES if ctype[: len(m)] == m), None)
    for pattern, mime, kind, command in REF_ROUTES:
        if gate is not None and gate != mime:
            continue
        hit = path.startswith(b"/") if pattern == b"/*" else path == pattern
        if hit:
            return kind, command
    return None


RefRequest = tuple[bytes, bytes, bytes | None, tuple[str, str] | None, bytes | None, bool]


@dataclass
class RefConnection:
    """The library's per-connection loop: a new head, or the rest of a pending body."""

    pending: tuple[bytes, bytes, bytes | None, tuple[str, str] | None, bool] | None = None
    body: bytes = b""
    remaining: int = 0

    def segment(self, seg: bytes) -> RefRequest | None:
        if self.pending is not None:
            take = seg[: self.remaining]
            self.body += take
            self.remaining -= len(take)
            if self.remaining:
                return None
            out = (*self.pending[:4], self.body, self.pending[4])
            self.pending = None
            return out
        accepted = (
            len(seg) > 17
            and (seg[:4] in (b"GET ", b"PUT ") or seg[:5] == b"POST ")
            and b" HTTP/1.1" in seg
            and b"\r\n\r\n" in seg
        )
        if not accepted:
            return None
        method = seg.split(b" ", 1)[0]
        head, data = seg.split(b"\r\n\r\n", 1)
        head += b"\r\n"
        url = seg[len(method) + 1 : seg.index(b" HTTP/1.1")]
        url = PERCENT.sub(lambda m: b"%" if m[0] == b"%%" else bytes([int(m[0][1:], 16)]), url)
        path, sep, query = url.partition(b"?")
        route = ref_route(head, path)
        close = b"Connection: close" in head
        cl = ref_header(head, b"Content-Length: ")
        if cl is not None:
            total = ref_atoi(cl)
        elif b"Transfer-Encoding: chunked" in head:
            total = len(data)
        else:
            total = 0
        fields = (method, path, query if sep else None, route, close)
        if len(data) >= total:
            return (*fields[:4], data[:total], close)
        if not can_allocate(total):
            return (*fields[:4], None, close)
        self.pending, self.body, self.remaining = fields, data, total - len(data)
        return None


def as_ref(req: HttpRequest | None) -> RefRequest | None:
    if req is None:
        return None
    route = None if req.route is None else (req.route.kind.value, req.route.command)
    return (req.method, req.path, req.query, route, req.body, req.close)


# ---------------------------------------------------------------------------------------
# Response checking: a small HTTP/1.1 parser and chunk decoder
# ---------------------------------------------------------------------------------------
HEADER_ORDER = [
    b"Location",
    b"Content-Type",
    b"Cache-Control",
    b"Pragma",
    b"Connection",
    b"Access-Control-Allow-Origin",
    b"Transfer-Encoding",
    b"Content-Length",
]
STATUS = re.compile(rb"HTTP/1\.1 (200 OK|301|404 Not Found|500 Internal Server Error)")


def decode_chunked(data: bytes) -> list[bytes]:
    """Chunks of a complete chunked body; it must end exactly at ``0\\r\\n\\r\\n``."""
    chunks: list[bytes] = []
    i = 0
    while True:
        eol = data.index(b"\r\n", i)
        size_text = data[i:eol]
        assert re.fullmatch(rb"[0-9a-f]+", size_text), size_text  # lower-case hex (§3.3)
        size = int(size_text, 16)
        if size == 0:
            assert data[eol:] == b"\r\n\r\n", data[eol:]
            return chunks
        chunk = data[eol + 2 : eol + 2 + size]
        assert len(chunk) == size
        assert data[eol + 2 + size : eol + 4 + size] == b"\r\n"
        chunks.append(chunk)
        i = eol + 4 + size


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    raw_head: bytes
    body: bytes
    chunks: list[bytes] | None


def parse_response(raw: bytes) -> Response:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, raw
    lines = head.split(b"\r\n")
    assert STATUS.fullmatch(lines[0]), lines[0]
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b": ")
        assert colon, line
        assert re.fullmatch(rb"[A-Za-z-]+", name), line
        assert name not in headers
        headers[name] = value
    names = list(headers)
    assert names == sorted(names, key=HEADER_ORDER.index), names
    chunked = headers.get(b"Transfer-Encoding") == b"chunked"
    assert chunked != (b"Content-Length" in headers)  # exactly one framing
    if chunked:
        chunks = decode_chunked(rest)
        return Response(int(lines[0][9:12]), headers, head + sep, b"".join(chunks), chunks)
    assert re.fullmatch(rb"[0-9]+", headers[b"Content-Length"])
    assert len(rest) == int(headers[b"Content-Length"])
    return Response(int(lines[0][9:12]), headers, head + sep, rest, None)


@functools.cache
def _key() -> DeviceKey:
    return DeviceKey.generate(1024)


def fresh_device() -> Device:
    return Device(Dct(DeviceIdentity(bytes(range(12)), "ABCDEF")), _key(), default_environment())


def render(codec: HttpConnection, device: Device, req: HttpRequest) -> tuple[bytes, Reply | None]:
    """What the HTTP transport writes for ``req`` (``_HttpProtocol._answer``)."""
    route = req.route
    if req.body is None:
        return codec.render_server_error(), None
    if route is None:
        return codec.render_not_found(), None
    if route.kind is RouteKind.COMMAND:
        reply = device.execute(route.command, req.body)
        return codec.render_command(reply), reply
    if route.kind is RouteKind.PAGE_HANDLER:
        return codec.render_page_handler(req.path, req.query), None
    return codec.render_static(route, b"/index"), None


def check_response(req: HttpRequest, raw: bytes, reply: Reply | None, cors_before: bool) -> None:
    """Well-formed, and the exact §3.3 bytes for each kind of answer."""
    resp = parse_response(raw)
    cors = b"Access-Control-Allow-Origin: *\r\n" if cors_before else b""
    route = req.route
    if req.body is None:
        assert raw == (
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\n"
            + NO_CACHE
            + b"Connection: Keep-Alive\r\n"
            + cors
            + b"Content-Length: 0\r\n\r\n"
        )
    elif route is None:
        assert raw == (
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n"
            + NO_CACHE
            + b"Connection: Keep-Alive\r\n"
            + cors
            + b"Content-Length: 0\r\n\r\n"
        )
    elif route.kind is RouteKind.COMMAND:
        assert reply is not None
        assert resp.raw_head == H200
        # one chunk per firmware write; NO_JSON is an empty chunked body
        assert resp.chunks == list(reply.writes)
        assert resp.body == (reply.body if reply.kind is ReplyKind.JSON else b"")
    elif route.kind is RouteKind.PAGE_HANDLER:
        url = req.path + (b"?" + req.query if req.query else b"")
        if url == b"/index":
            expected_head = (
                b"HTTP/1.1 301\r\nLocation: /hello\r\nContent-Type: text/plain\r\n" + NO_CACHE
            )
        else:
            expected_head = b"HTTP/1.1 404 Not Found\r\nContent-Type: */*\r\n" + NO_CACHE
        assert raw == (
            expected_head + b"Connection: Keep-Alive\r\nAccess-Control-Allow-Origin: *\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
    elif route.kind is RouteKind.RAW_STATIC:
        assert raw == b"HTTP/1.1 301\r\nLocation: /index\r\nContent-Length: 0\r\n\r\n"
    else:
        assert raw == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: Keep-Alive\r\n"
            + cors
            + b"Content-Length: 14\r\n\r\nSoft AP Setup\x00"
        )


def run_connection(segments: list[bytes]) -> list[HttpRequest | None]:
    """Feed segments to one codec and to the reference; render and check every answer."""
    codec = HttpConnection(ROUTES, can_allocate)
    ref = RefConnection()
    device = fresh_device()
    outs: list[HttpRequest | None] = []
    for seg in segments:
        req = codec.receive_segment(seg)
        assert as_ref(req) == ref.segment(seg), seg
        outs.append(req)
        if req is not None:
            cors_before = codec.cors
            raw, reply = render(codec, device, req)
            check_response(req, raw, reply, cors_before)
    return outs


# ---------------------------------------------------------------------------------------
# Request strategies
# ---------------------------------------------------------------------------------------
PATHS = [
    *[b"/" + c.encode() for c in COMMAND_NAMES],
    b"/",
    b"/hello",
    b"/index",
    b"/other",
    b"/device-id?x=1",
    b"/index?a=b",
    b"/%64evice-id",
    b"/set%3Fa",
    b"/DEVICE-ID",
    b"/version/",
    b"/%",
    b"/%zz%%",
    b"",
    b"version",
    b"/a b",
    b"/provision-keys",
]
CONTENT_TYPES = [
    *KNOWN_MIME_TYPES,
    b"application/json; charset=utf-8",
    b"text/plain;charset=UTF-8",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=xyz",
    b"application/octet-stream; x=1",
    b"*/*",
    b"",
    b"Application/JSON",
]
CT_NAMES = [
    b"Content-Type: ",
    b"Content-Type: ",
    b"content-type: ",
    b"Content-type: ",
    b"Content-Type:",
    b"CONTENT-TYPE: ",
]
BODIES = [
    b"",
    b'{"k":"cc","v":"abc"}',
    b'{"k":"cc","v":5}',
    b'{"idx":0}',
    b'{"idx":0,"ssid":"Cafe","sec":0,"ch":11}',
    b'5\r\n{"a"\r\n0\r\n\r\n',
    b"\x00\xff{",
]


@st.composite
def http_requests(draw: st.DrawFn) -> bytes:
    """A real request with every part perturbed the way clients and fuzzers do."""
    method = draw(
        st.sampled_from(
            [b"GET", b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"get", b"PATCH"]
        )
    )
    path = draw(st.sampled_from(PATHS) | st.binary(max_size=10))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"http/1.1"]))
    body = draw(st.sampled_from(BODIES) | st.binary(max_size=30))
    headers = []
    if draw(st.booleans()):
        headers.append(b"Host: 192.168.0.1")
    ctype = draw(st.none() | st.sampled_from(CONTENT_TYPES))
    if ctype is not None:
        headers.append(draw(st.sampled_from(CT_NAMES)) + ctype)
    length = draw(
        st.sampled_from(
            [
                None,
                str(len(body)).encode(),
                str(len(body)).encode(),
                b"0",
                str(len(body) + 5).encode(),
                str(max(len(body) - 3, 0)).encode(),
                b"99999",
                b"abc",
                b"",
                b"  7",
            ]
        )
    )
    if length is not None:
        name = draw(
            st.sampled_from([b"Content-Length: ", b"Content-Length: ", b"content-length: "])
        )
        headers.append(name + length)
    headers += draw(
        st.lists(
            st.sampled_from(
                [
                    b"Connection: close",
                    b"connection: close",
                    b"Connection: keep-alive",
                    b"Transfer-Encoding: chunked",
                    b"Accept: */*",
                    b"X-Junk:",
                ]
            ),
            max_size=2,
        )
    )
    headers = list(draw(st.permutations(headers)))
    head = method + b" " + path + b" " + version + b"\r\n" + b"".join(h + b"\r\n" for h in headers)
    return head + b"\r\n" + body


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@st.composite
def connections(draw: st.DrawFn) -> list[bytes]:
    """The segments of one keep-alive connection: requests (whole or split) and junk."""
    segments: list[bytes] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["request", "request", "split", "junk"]))
        if kind == "junk":
            segments.append(draw(st.binary(max_size=40)))
            continue
        req = draw(http_requests())
        if kind == "split":
            segments += split_at(req, draw(st.lists(st.integers(0, len(req)), max_size=3)))
        else:
            segments.append(req)
    return segments


# ---------------------------------------------------------------------------------------
# 3. Properties
# ---------------------------------------------------------------------------------------
@PROPS
@given(segments=st.lists(st.binary(max_size=80), max_size=6))
def test_random_segments_never_crash_and_match_reference(segments: list[bytes]) -> None:
    run_connection(segments)


@PROPS
@given(segments=connections())
def test_mutated_requests_match_reference_and_render_well_formed(segments: list[bytes]) -> None:
    run_connection(segments)


@PROPS
@given(segments=connections())
def test_the_parse_cache_answers_what_parsing_answers(segments: list[bytes]) -> None:
    """Bodyless requests are remembered per page table: a connection served from the
    cache gets the same requests, in the same connection state, as one that parses."""
    table = routes_for(ERAS[FirmwareEra.CURRENT])
    for _ in range(2):  # the second pass hits the cache
        cold = HttpConnection(routes_for(ERAS[FirmwareEra.CURRENT]), can_allocate)
        warm = HttpConnection(table, can_allocate)
        for seg in segments:
            assert warm.receive_segment(seg) == cold.receive_segment(seg)
            assert warm.is_pending() == cold.is_pending()
    assert len(table.parsed) <= MAX_PARSED_SEGMENTS
    for seg, req in table.parsed.items():
        assert req.body == b""
        assert len(seg) <= MAX_PARSED_SEGMENT_BYTES


def test_the_parse_cache_is_bounded() -> None:
    table = routes_for(ERAS[FirmwareEra.CURRENT])
    codec = HttpConnection(table, can_allocate)
    for i in range(3 * MAX_PARSED_SEGMENTS):
        req = codec.receive_segment(b"GET /device-id?n=%d HTTP/1.1\r\n\r\n" % i)
        assert req is not None
        assert req.query == b"n=%d" % i
        assert len(table.parsed) <= MAX_PARSED_SEGMENTS
    post = b"POST /set HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
    assert codec.receive_segment(post) is not None
    assert post not in table.parsed  # requests with a body are parsed every time


@PROPS
@given(seg=http_requests() | st.binary(max_size=60))
def test_a_request_needs_the_library_acceptance_conditions(seg: bytes) -> None:
    """A fresh connection yields a request (or starts one) only for a segment of ≥ 18
    bytes that starts with ``GET ``/``POST ``/``PUT `` and contains `` HTTP/1.1`` and
    ``\\r\\n\\r\\n``; anything else gets no response at all."""
    codec = HttpConnection(ROUTES, can_allocate)
    req = codec.receive_segment(seg)
    acceptable = (
        len(seg) >= 18
        and seg.startswith((b"GET ", b"POST ", b"PUT "))
        and b" HTTP/1.1" in seg
        and b"\r\n\r\n" in seg
    )
    if not acceptable:
        assert req is None
        # nothing is pending either: a valid request on the same connection is served
        follow = codec.receive_segment(b"GET /version HTTP/1.1\r\n\r\n")
        assert follow is not None
        assert follow.route is not None
        assert follow.route.command == "version"
    elif b"Content-Length: " not in seg.split(b"\r\n\r\n", 1)[0]:
        assert req is not None


@PROPS
@given(
    command=st.sampled_from(COMMAND_NAMES),
    ctype=st.sampled_from(CONTENT_TYPES),
    name=st.sampled_from(CT_NAMES),
    method=st.sampled_from([b"GET", b"POST", b"PUT"]),
)
def test_content_type_gating(command: str, ctype: bytes, name: bytes, method: bytes) -> None:
    """A known Content-Type other than application/octet-stream makes every command
    route miss (library 404); unknown types and lower-case names route normally (§3.1)."""
    seg = method + b" /" + command.encode() + b" HTTP/1.1\r\n" + name + ctype + b"\r\n\r\n"
    codec = HttpConnection(ROUTES, can_allocate)
    req = codec.receive_segment(seg)
    assert req is not None
    gated = name == b"Content-Type: " and any(ctype.startswith(m) for m in KNOWN_MIME_TYPES)
    if gated and not ctype.startswith(OCTET):
        assert req.route is None
        raw = codec.render_not_found()
        assert parse_response(raw).status == 404
    else:
        assert req.route is not None
        assert req.route.kind is RouteKind.COMMAND
        assert req.route.command == command


@PROPS
@given(
    writes=st.lists(st.binary(min_size=1, max_size=20), max_size=12),
    kind=st.sampled_from(list(ReplyKind)),
    cors=st.booleans(),
)
def test_render_command_chunks_decode_to_the_writes(
    writes: list[bytes], kind: ReplyKind, cors: bool
) -> None:
    """Any reply renders as H200 plus one lower-hex chunk per write, then ``0\\r\\n\\r\\n``."""
    codec = HttpConnection(ROUTES, can_allocate)
    codec.cors = cors
    reply = Reply(kind, tuple(writes) if kind is ReplyKind.JSON else ())
    resp = parse_response(codec.render_command(reply))
    assert resp.raw_head == H200
    assert resp.chunks == list(reply.writes)
    assert codec.cors


@PROPS
@given(path=st.binary(max_size=20), query=st.none() | st.binary(max_size=10), cors=st.booleans())
def test_other_renderers_are_well_formed(path: bytes, query: bytes | None, cors: bool) -> None:
    codec = HttpConnection(ROUTES, can_allocate)
    codec.cors = cors
    for raw in (codec.render_not_found(), codec.render_server_error()):
        resp = parse_response(raw)
        assert resp.body == b""
        assert (b"Access-Control-Allow-Origin" in resp.headers) == cors
    for route in ROUTES[:2]:
        parse_response(codec.render_static(route, b"/index"))
    resp = parse_response(codec.render_page_handler(path, query))
    assert resp.status == (301 if path + (b"?" + query if query else b"") == b"/index" else 404)
    assert codec.cors  # the page handler sets the stream's CORS flag for the connection


def test_reference_examples() -> None:
    """The reference itself on §3.1 / §10 examples."""

    def ref(seg: bytes) -> RefRequest | None:
        return RefConnection().segment(seg)

    assert ref(b"GET /version HTTP/1.1\r\nHost: 192.168.0.1\r\n\r\n") == (
        b"GET",
        b"/version",
        None,
        ("command", "version"),
        b"",
        False,
    )
    assert ref(b"GET /version HTTP/1.0\r\nHost: 192.168.0.1\r\n\r\n") is None
    assert ref(b"OPTIONS /version HTTP/1.1\r\n\r\n") is None
    post = b"POST /set HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    assert ref(post) == (b"POST", b"/set", None, None, b"{}", False)
    assert ref(b"GET /%64evice-id?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n") == (
        b"GET",
        b"/device-id",
        b"x=1",
        ("command", "device-id"),
        b"",
        True,
    )
    gated = b"GET /zz HTTP/1.1\r\nContent-Type: text/css\r\n\r\n"
    run_connection([b"GET /index HTTP/1.1\r\n\r\n", gated])
