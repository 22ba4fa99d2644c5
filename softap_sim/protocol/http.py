"""Sans-IO model of the WICED HTTP server on port 80 (softap-protocol.md §3).

The WICED library is packet-based: only the *first TCP segment* of a request is parsed
as its head, headers are found by case-sensitive substring search, and a request that
is not ``GET``/``POST``/``PUT`` over ``HTTP/1.1`` gets no response at all. The transport
therefore feeds this codec one *segment* (one ``data_received`` chunk) at a time.

:class:`HttpConnection` turns segments into :class:`HttpRequest` objects and renders the
device's replies into the library's exact response bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from firmware_model.commands import COMMAND_NAMES, Reply, ReplyKind
from firmware_model.eras import EraProfile

#: MIME types the WICED library knows; a request Content-Type starting with one of
#: them only matches routes declared with the same type (``http_server_get_mime_type``)
KNOWN_MIME_TYPES: tuple[bytes, ...] = (
    b"application/x-tlv8",
    b"application/x-apple-binary-plist",
    b"application/x-ns-proxy-autoconfig",
    b"application/octet-stream",
    b"application/javascript",
    b"application/json",
    b"application/hap+json",
    b"application/pairing+tlv8",
    b"application/hap+verify",
    b"text/html",
    b"text/plain",
    b"text/event-stream",
    b"text/css",
    b"image/png",
    b"image/gif",
    b"image/vnd.microsoft.icon",
)
OCTET = b"application/octet-stream"
NO_CACHE = (
    b"Cache-Control: no-store, no-cache, must-revalidate, post-check=0, pre-check=0\r\n"
    b"Pragma: no-cache\r\n"
)
HELLO_BODY = b"Soft AP Setup\x00"
MIN_SEGMENT_BYTES = 18
METHODS = (b"GET ", b"POST ", b"PUT ")


class RouteKind(enum.Enum):
    RAW_STATIC = "raw-static"
    STATIC = "static"
    COMMAND = "command"
    PAGE_HANDLER = "page-handler"


@dataclass(frozen=True, slots=True)
class Route:
    pattern: bytes
    mime: bytes
    kind: RouteKind
    command: str = ""
    #: 0.6.4 library: dynamic routes match by case-insensitive prefix
    prefix: bool = False

    def matches(self, path: bytes) -> bool:
        if self.prefix:
            return path[: len(self.pattern)].lower() == self.pattern.lower()
        return _glob(self.pattern, path)


def _glob(pattern: bytes, text: bytes) -> bool:
    """``match_string_with_wildcard_pattern``: case-sensitive ``*`` and ``?``."""
    if b"*" not in pattern and b"?" not in pattern:
        return pattern == text
    p = t = 0
    star = -1
    mark = 0
    while t < len(text):
        if p < len(pattern) and (pattern[p] == 0x3F or pattern[p] == text[t]):
            p += 1
            t += 1
        elif p < len(pattern) and pattern[p] == 0x2A:
            star = p
            mark = t
            p += 1
        elif star != -1:
            p = star + 1
            mark += 1
            t = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == 0x2A:
        p += 1
    return p == len(pattern)


#: the parse cache of a page table: segments of bodyless requests up to this size ...
MAX_PARSED_SEGMENT_BYTES = 1024
#: ... and at most this many of them (cleared when full)
MAX_PARSED_SEGMENTS = 256


class RouteTable(tuple[Route, ...]):
    """The page table in match order, plus a lookup for its leading exact routes.

    Routes are tried in order and the first match wins; the leading routes without
    wildcards or prefix matching are also indexed by path, so the common case (no
    Content-Type gate, a command path) costs one dict lookup.
    """

    exact: dict[bytes, Route]
    scan_from: int
    #: bodyless requests already parsed, by their whole segment (see HttpConnection)
    parsed: dict[bytes, HttpRequest]

    def __new__(cls, routes: tuple[Route, ...] | list[Route]) -> RouteTable:
        self = super().__new__(cls, routes)
        self.exact = {}
        self.parsed = {}
        self.scan_from = len(self)
        for i, route in enumerate(self):
            if route.prefix or b"*" in route.pattern or b"?" in route.pattern:
                self.scan_from = i
                break
            self.exact.setdefault(route.pattern, route)
        return self

    def match(self, path: bytes, gate: bytes | None) -> Route | None:
        if gate is None:
            found = self.exact.get(path)
            if found is not None:
                return found
            candidates = self[self.scan_from :]
        else:
            candidates = self
        for route in candidates:
            if gate is not None and route.mime != gate:
                continue
            if route.matches(path):
                return route
        return None


def routes_for(profile: EraProfile) -> RouteTable:
    """The page table of ``softap_ip.c`` for an era (§3.2, §8)."""
    routes = [
        Route(b"/", b"text/html", RouteKind.RAW_STATIC),
        Route(b"/hello", b"text/plain", RouteKind.STATIC),
    ]
    routes += [
        Route(b"/" + name.encode(), OCTET, RouteKind.COMMAND, name, prefix=profile.prefix_routes)
        for name in COMMAND_NAMES
    ]
    if profile.catch_all is not None:
        routes.append(
            Route(
                profile.catch_all.encode(),
                OCTET,
                RouteKind.PAGE_HANDLER,
                prefix=profile.prefix_routes,
            )
        )
    return RouteTable(routes)


@dataclass(slots=True)
class HttpRequest:
    """A request the library accepted and routed (read-only: bodyless ones are shared)."""

    method: bytes
    #: the decoded URL path, query string removed
    path: bytes
    query: bytes | None
    route: Route | None
    #: the body bytes, or ``None`` if buffering a multi-segment body failed
    body: bytes | None
    close: bool


def percent_decode(url: bytes) -> bytes:
    """``%XX`` decoding of the library (``%%`` becomes ``%``)."""
    if b"%" not in url:
        return url
    out = bytearray()
    i = 0
    while i < len(url):
        c = url[i]
        if c == 0x25 and url[i + 1 : i + 2] == b"%":
            out.append(0x25)
            i += 2
            continue
        if c == 0x25 and _is_hex(url[i + 1 : i + 3]):
            out.append(int(url[i + 1 : i + 3], 16))
            i += 3
            continue
        out.append(c)
        i += 1
    return bytes(out)


def _is_hex(b: bytes) -> bool:
    return len(b) == 2 and all(ch in b"0123456789abcdefABCDEF" for ch in b)


def _header_value(head: bytes, name: bytes) -> bytes | None:
    at = head.find(name)
    if at < 0:
        return None
    start = at + len(name)
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)]


def _atoi(b: bytes) -> int:
    n = 0
    for ch in b.lstrip(b" "):
        if 0x30 <= ch <= 0x39:
            n = n * 10 + ch - 0x30
        else:
            break
    return n


class HttpConnection:
    """Per-connection state of the WICED HTTP server.

    Args:
        routes: the era's page table (:func:`routes_for`).
        can_allocate: whether a heap allocation of that many bytes would succeed.
    """

    __slots__ = ("_can_allocate", "_pending", "_pending_body", "_remaining", "_routes", "cors")

    def __init__(
        self, routes: tuple[Route, ...], can_allocate: Callable[[int], bool] | None = None
    ) -> None:
        self._routes = routes if isinstance(routes, RouteTable) else RouteTable(routes)
        self._can_allocate = can_allocate
        #: the stream's cross-host flag: set by any dynamic page, kept for the connection
        self.cors = False
        self._pending: tuple[bytes, bytes, bytes | None, Route | None, bool] | None = None
        self._pending_body = bytearray()
        self._remaining = 0

    def is_pending(self) -> bool:
        """A request head was accepted and its body is still arriving."""
        return self._pending is not None

    def receive_segment(self, seg: bytes) -> HttpRequest | None:
        """Feed one TCP segment; returns a request once its body is complete."""
        if self._pending is not None:
            take = seg[: self._remaining]
            self._pending_body += take
            self._remaining -= len(take)
            if self._remaining > 0:
                return None
            return self._complete(bytes(self._pending_body))
        parsed = self._routes.parsed
        known = parsed.get(seg)
        if known is not None:
            return known
        if len(seg) < MIN_SEGMENT_BYTES or not seg.startswith(METHODS):
            return None
        version_at = seg.find(b" HTTP/1.1")
        head_end = seg.find(b"\r\n\r\n")
        if version_at < 0 or head_end < 0:
            return None
        head = seg[: head_end + 2]
        method = seg[: seg.index(b" ")]
        url = percent_decode(seg[len(method) + 1 : version_at])
        path, sep, query = url.partition(b"?")
        route = self._route(head, path)
        close = b"Connection: close" in head
        data = seg[head_end + 4 :]
        length_text = _header_value(head, b"Content-Length: ")
        if length_text is not None:
            total = _atoi(length_text)
        elif b"Transfer-Encoding: chunked" in head:
            total = len(data)  # passed on raw, chunk-size lines included
        else:
            total = 0
        self._pending = (method, path, query if sep else None, route, close)
        if len(data) >= total:
            req = self._complete(data[:total])
            if total == 0 and len(seg) <= MAX_PARSED_SEGMENT_BYTES:
                # Clients repeat the same GETs (device-id, public-key, scan-ap): the
                # outcome is a function of the segment and the page table alone, and a
                # complete request leaves the connection's state as it found it.
                if len(parsed) >= MAX_PARSED_SEGMENTS:
                    parsed.clear()
                parsed[seg] = req
            return req
        if self._can_allocate is not None and not self._can_allocate(total):
            # HTTPRequest::init: malloc of the multi-segment buffer failed -> 500
            return self._complete_failed()
        self._pending_body = bytearray(data)
        self._remaining = total - len(data)
        return None

    def _complete_failed(self) -> HttpRequest:
        assert self._pending is not None
        method, path, query, route, close = self._pending
        self._pending = None
        return HttpRequest(method, path, query, route, None, close)

    def _route(self, head: bytes, path: bytes) -> Route | None:
        gate = None
        if b"Content-Type: " in head:
            ctype = _header_value(head, b"Content-Type: ") or b""
            gate = next((m for m in KNOWN_MIME_TYPES if ctype.startswith(m)), None)
        return self._routes.match(path, gate)

    def _complete(self, body: bytes) -> HttpRequest:
        assert self._pending is not None
        method, path, query, route, close = self._pending
        self._pending = None
        self._pending_body = bytearray()
        self._remaining = 0
        return HttpRequest(method, path, query, route, body, close)

    # -- responses -----------------------------------------------------------------
    def _head(
        self,
        status: bytes,
        mime: bytes,
        *,
        extra: bytes = b"",
        no_cache: bool = True,
        chunked: bool = True,
        length: int = 0,
    ) -> bytes:
        """``wiced_http_response_stream_write_header`` in its fixed order (§3.3)."""
        parts = [b"HTTP/1.1 ", status, b"\r\n", extra, b"Content-Type: ", mime, b"\r\n"]
        if no_cache:
            parts.append(NO_CACHE)
        parts.append(b"Connection: Keep-Alive\r\n")
        if self.cors:
            parts.append(b"Access-Control-Allow-Origin: *\r\n")
        if chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
        else:
            parts.append(b"Content-Length: %d\r\n\r\n" % length)
        return b"".join(parts)

    def render_not_found(self) -> bytes:
        """The library's own 404 when no route matched (e.g. a gated Content-Type)."""
        return self._head(b"404 Not Found", b"text/html", chunked=False)

    def render_server_error(self) -> bytes:
        """Request slot or body buffer allocation failed (softap.cpp L1374-1383)."""
        return self._head(b"500 Internal Server Error", b"text/html", chunked=False)

    def render_static(self, route: Route, root_redirect: bytes) -> bytes:
        if route.kind is RouteKind.RAW_STATIC:
            return b"HTTP/1.1 301\r\nLocation: " + root_redirect + b"\r\nContent-Length: 0\r\n\r\n"
        return (
            self._head(
                b"200 OK", b"text/plain", no_cache=False, chunked=False, length=len(HELLO_BODY)
            )
            + HELLO_BODY
        )

    def render_page_handler(self, path: bytes, query: bytes | None) -> bytes:
        """The default application page handler behind the catch-all route."""
        self.cors = True
        url = path + (b"?" + query if query else b"")
        if url == b"/index":
            head = self._head(b"301", b"text/plain", extra=b"Location: /hello\r\n")
        else:
            head = self._head(b"404 Not Found", b"*/*")
        return head + b"0\r\n\r\n"

    def respond_to(self, req: HttpRequest, slots: bool, root_redirect: bytes) -> bytes | str:
        """What the server sends for ``req``: the bytes, or the name of the command to run.

        A ``str`` means "dispatch this command and send :meth:`render_command` of its reply";
        every other route is answered here. ``slots`` is False when the device could not
        allocate its HTTP request slots (§7): every page and command then gets a 500.
        """
        route = req.route
        if route is not None and req.body is not None:
            kind = route.kind
            if kind is _COMMAND:
                return route.command if slots else self.render_server_error()
            if kind is _PAGE_HANDLER:
                if not slots:
                    return self.render_server_error()
                return self.render_page_handler(req.path, req.query)
        elif req.body is None:
            return self.render_server_error()  # the body buffer could not be allocated
        else:
            return self.render_not_found()
        return self.render_static(route, root_redirect)

    def render_command(self, reply: Reply) -> bytes:
        """H200, one chunk per firmware write, then the terminating chunk."""
        self.cors = True
        return encode_command_response(reply)


_COMMAND = RouteKind.COMMAND
_PAGE_HANDLER = RouteKind.PAGE_HANDLER


def _render_h200() -> bytes:
    conn = HttpConnection(RouteTable(()))
    conn.cors = True
    return conn._head(b"200 OK", b"application/json")


_H200 = _render_h200()
_CHUNK_CACHE: dict[int, tuple[Reply, bytes]] = {}
_CHUNK_CACHE_MAX = 256


def encode_chunks(reply: Reply) -> bytes:
    """The chunked body of a reply: one chunk per write, then ``0\\r\\n\\r\\n``."""
    if reply.kind is ReplyKind.JSON:
        return b"".join(b"%x\r\n%b\r\n" % (len(w), w) for w in reply.writes) + b"0\r\n\r\n"
    return b"0\r\n\r\n"


def encode_command_response(reply: Reply) -> bytes:
    """H200 plus the chunked body, memoised by reply identity.

    The device model reuses its fixed replies (version, device-id, public-key: 598
    chunks), so the same response object is returned, which also keeps transcripts
    from holding a fresh copy per request.
    """
    cached = _CHUNK_CACHE.get(id(reply))
    if cached is not None and cached[0] is reply:
        return cached[1]
    out = _H200 + encode_chunks(reply)
    if len(_CHUNK_CACHE) >= _CHUNK_CACHE_MAX:
        _CHUNK_CACHE.clear()
    _CHUNK_CACHE[id(reply)] = (reply, out)
    return out
