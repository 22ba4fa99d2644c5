"""The HTTP reply parser: feed bytes, get the complete reply or "need more".

It follows RFC 9112 §6 rather than the device's library: header names match
case-insensitively, a reply without ``Content-Length`` or chunking ends when the
connection closes, and a chunk-size line that is not hexadecimal raises
:class:`~softap_sim.protocol.client.errors.ChunkedEncodingError` (the framing is lost;
nothing after it can be trusted). The clients, ``softap-sim replay``, the benchmarks and
the tests' wire helpers all find a reply's end here, so they cannot disagree on it.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from softap_sim.protocol.client.errors import ChunkedEncodingError, SoftapClientError

_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?: ([^\r\n]*))?")
_HEADER_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: hex digits, optional whitespace, optional ``;chunk-ext``; 16 digits is more than any
#: reply a client could buffer
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?")
#: statuses whose replies never have a body (RFC 9112 §6.3)
_NO_BODY = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class HttpReplyHead:
    """A reply's status line and header fields (names as received, in order)."""

    status: int
    reason: str
    headers: tuple[tuple[bytes, bytes], ...]

    def get(self, name: bytes | str) -> bytes | None:
        """The value of the first field called ``name``, matched case-insensitively."""
        key = (name.encode("latin-1") if isinstance(name, str) else name).lower()
        return next((v for n, v in self.headers if n.lower() == key), None)

    @property
    def chunked(self) -> bool:
        """Whether the last transfer coding is ``chunked`` (it then wins over a length)."""
        codings = b",".join(v for n, v in self.headers if n.lower() == b"transfer-encoding")
        return codings.rsplit(b",", 1)[-1].strip().lower() == b"chunked"

    @property
    def content_length(self) -> int | None:
        """``Content-Length``; several fields must agree. ``SoftapClientError`` if bad."""
        values = {v for n, v in self.headers if n.lower() == b"content-length"}
        if not values:
            return None
        if len(values) > 1 or not next(iter(values)).isdigit():
            raise SoftapClientError(f"bad Content-Length {sorted(values)!r}")
        return int(next(iter(values)))

    @property
    def close(self) -> bool:
        """``Connection: close``: the server closes after this reply."""
        value = self.get(b"connection") or b""
        return b"close" in (t.strip().lower() for t in value.split(b","))


def parse_reply_head(head: bytes) -> HttpReplyHead:
    """The status line and fields of ``head`` (up to, not including, the blank line).

    Raises:
        SoftapClientError: not an HTTP/1.x status line, or a field line without a colon.
    """
    status_line, *lines = head.split(b"\r\n")
    m = _STATUS_LINE.fullmatch(status_line)
    if m is None:
        raise SoftapClientError(f"not an HTTP status line: {status_line[:80]!r}")
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or _HEADER_NAME.fullmatch(name) is None:
            raise SoftapClientError(f"bad header line {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    return HttpReplyHead(int(m[3]), (m[4] or b"").decode("latin-1"), tuple(headers))


def parse_chunk_size(line: bytes | bytearray) -> int:
    """The size of a chunk-size line (without its CR LF); extensions are ignored."""
    m = _CHUNK_SIZE.fullmatch(line)
    if m is None:
        raise ChunkedEncodingError(f"bad chunk size in {bytes(line[:20])!r}")
    return int(m[1], 16)


@dataclass(frozen=True, slots=True)
class HttpReply:
    """One complete reply."""

    head: HttpReplyHead
    #: every byte of the reply as received: head, framing and body
    raw: bytes
    #: the payload (chunks joined)
    body: bytes
    #: a chunked reply's chunks in order (the device writes one per firmware write)
    chunks: tuple[bytes, ...] | None


class _Chunks:
    """The chunked-body state machine, on a buffer that grows between calls."""

    __slots__ = ("data_at", "pos", "size", "spans", "trailer")

    def __init__(self, pos: int) -> None:
        #: where parsing resumes
        self.pos = pos
        #: ``(offset, length)`` of each complete chunk's data in the buffer
        self.spans: list[tuple[int, int]] = []
        #: the current chunk's data offset and size; -1 while reading a size line
        self.data_at = -1
        self.size = 0
        self.trailer = False

    def advance(self, buf: bytes | bytearray) -> int | None:
        """The body's end offset (after the blank line) once it is complete, else ``None``."""
        pos = self.pos
        try:
            while True:
                if self.data_at >= 0:
                    end = self.data_at + self.size
                    if len(buf) < end + 2:
                        return None
                    if buf[end : end + 2] != b"\r\n":
                        after = bytes(buf[end : end + 20])
                        raise ChunkedEncodingError(f"no CR LF after chunk data, got {after!r}")
                    self.spans.append((self.data_at, self.size))
                    self.data_at, pos = -1, end + 2
                    continue
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if self.trailer:  # trailer fields are skipped; a blank line ends the body
                    if eol == pos:
                        return eol + 2
                    pos = eol + 2
                    continue
                size = parse_chunk_size(buf[pos:eol])
                pos = eol + 2
                if size == 0:
                    self.trailer = True
                else:
                    self.data_at, self.size = pos, size
        finally:
            self.pos = pos


class _Phase(enum.Enum):
    HEAD = 1
    LENGTH = 2
    CHUNKED = 3
    UNTIL_CLOSE = 4
    DONE = 5


class HttpReplyParser:
    """Incremental parser of one HTTP/1.1 reply: :meth:`feed` bytes, get the reply or None.

    Bytes after the reply stay in :attr:`trailing` (the next reply on a keep-alive
    connection). ``head_only``: the request was a ``HEAD``, so the reply has no body.
    """

    __slots__ = ("_body_at", "_buf", "_chunks", "_end", "_head_only", "_phase", "_reply", "head")

    def __init__(self, *, head_only: bool = False) -> None:
        self._buf = bytearray()
        self._head_only = head_only
        self._phase = _Phase.HEAD
        self._body_at = 0
        #: LENGTH: where the body ends; DONE: where the reply ends
        self._end = 0
        self._chunks: _Chunks | None = None
        self._reply: HttpReply | None = None
        #: the parsed head, once it is complete (e.g. to stop at an event stream's head)
        self.head: HttpReplyHead | None = None

    @property
    def received(self) -> bytes:
        """Every byte fed so far."""
        return bytes(self._buf)

    @property
    def trailing(self) -> bytes:
        """The bytes fed after the end of the complete reply."""
        return bytes(self._buf[self._end :]) if self._reply is not None else b""

    @property
    def chunk_spans(self) -> list[tuple[int, int]]:
        """``(offset, length)`` in :attr:`received` of every complete chunk's data so far."""
        return list(self._chunks.spans) if self._chunks is not None else []

    @property
    def bytes_needed(self) -> int | None:
        """How many more bytes surely belong to this reply, for a stream reader that must
        not read past it (keep-alive): the rest of a ``Content-Length`` body, or of a
        chunk's data and its CR LF; 0 once complete. ``None`` while a line comes next
        (the head, a chunk-size or trailer line: read to its CR LF) or the body runs to
        the close."""
        if self._phase is _Phase.DONE:
            return 0
        if self._phase is _Phase.LENGTH:
            return self._end - len(self._buf)
        chunks = self._chunks
        if self._phase is _Phase.CHUNKED and chunks is not None and chunks.data_at >= 0:
            return chunks.data_at + chunks.size + 2 - len(self._buf)
        return None

    def feed(self, data: bytes | bytearray) -> HttpReply | None:
        """Add bytes; the complete reply (again on later calls), or ``None``: need more.

        Raises:
            SoftapClientError: a bad head; :class:`ChunkedEncodingError`: broken chunking.
        """
        self._buf += data
        if self._reply is not None:
            return self._reply
        if self._phase is _Phase.HEAD and not self._read_head(len(data)):
            return None
        if self._phase is _Phase.LENGTH:
            return self._complete(self._end) if len(self._buf) >= self._end else None
        if self._phase is _Phase.CHUNKED:
            assert self._chunks is not None
            end = self._chunks.advance(self._buf)
            return None if end is None else self._complete(end)
        return None  # UNTIL_CLOSE

    def feed_eof(self) -> HttpReply | None:
        """The server closed: a reply delimited by the close is now complete.

        ``None`` if the reply was cut short (no complete head, or fewer body bytes than
        its framing announced).
        """
        if self._reply is None and self._phase is _Phase.UNTIL_CLOSE:
            return self._complete(len(self._buf))
        return self._reply

    def _read_head(self, added: int) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n\r\n", max(0, len(buf) - added - 3))
        if end < 0:
            return False
        head = self.head = parse_reply_head(bytes(buf[:end]))
        self._body_at = end + 4
        length = None if head.chunked else head.content_length
        if self._head_only or head.status in _NO_BODY or 100 <= head.status < 200:
            self._phase, self._end = _Phase.LENGTH, self._body_at
        elif head.chunked:
            self._phase, self._chunks = _Phase.CHUNKED, _Chunks(self._body_at)
        elif length is not None:
            self._phase, self._end = _Phase.LENGTH, self._body_at + length
        else:
            self._phase = _Phase.UNTIL_CLOSE
        return True

    def _complete(self, end: int) -> HttpReply:
        assert self.head is not None
        raw = bytes(self._buf[:end])
        chunks = None
        if self._chunks is not None:
            chunks = tuple(raw[o : o + n] for o, n in self._chunks.spans)
            body = b"".join(chunks)
        else:
            body = raw[self._body_at :]
        self._phase, self._end = _Phase.DONE, end
        self._reply = HttpReply(self.head, raw, body, chunks)
        return self._reply


def http_response_end(buf: bytes | bytearray) -> int | None:
    """Length of the first complete HTTP response in ``buf``; ``None`` if incomplete.

    A head without a body length and not chunked (the 503 line has no blank line at
    all) only ends when the device closes: ``None`` here.
    """
    reply = HttpReplyParser().feed(buf)
    return None if reply is None else len(reply.raw)


def parse_http_reply(raw: bytes, what: str = "HTTP") -> HttpReply:
    """The reply at the start of ``raw``, all of it read (a close-delimited one too).

    Raises:
        SoftapClientError: the reply is incomplete or malformed; ``what`` starts the message.
    """
    parser = HttpReplyParser()
    reply = parser.feed(raw) or parser.feed_eof()
    if reply is None:
        raise SoftapClientError(f"{what}: the reply is incomplete: {raw[-80:]!r}")
    return reply


def decode_chunked(body: bytes) -> list[bytes]:
    """The chunks of a complete chunked body, which must end exactly at its blank line."""
    chunks = _Chunks(0)
    end = chunks.advance(body)
    if end is None:
        raise ChunkedEncodingError(f"incomplete chunked body ({len(body)} bytes)")
    if end != len(body):
        raise ChunkedEncodingError(f"{len(body) - end} bytes after the last chunk")
    return [body[o : o + n] for o, n in chunks.spans]


def decode_http_reply(raw: bytes, command: str) -> Any:
    """The JSON body of a ``200`` response (``None`` if empty); other statuses raise."""
    if not raw:
        raise SoftapClientError(f"{command}: the device closed the connection without a reply")
    status_line = raw.split(b"\r\n", 1)[0]
    m = _STATUS_LINE.fullmatch(status_line)
    if m is None:
        raise SoftapClientError(f"{command}: not an HTTP response: {raw[:80]!r}")
    if m[3] != b"200":
        raise SoftapClientError(f"{command}: the device answered {status_line.decode('latin-1')!r}")
    reply = parse_http_reply(raw, command)
    if not reply.body:
        return None
    try:
        return json.loads(reply.body)
    except ValueError:
        raise SoftapClientError(f"{command}: the body is not JSON: {reply.body[:80]!r}") from None
