"""Sans-IO codec of the raw TCP protocol on port 5609 (softap-protocol.md §2).

The parser mirrors ``SimpleProtocolDispatcher::handle`` byte for byte: a name of up to
30 bytes ended by LF or NUL (CR is kept), a length folded digit by digit with no
validation into a C ``int``, a blank line whose "previous byte was LF" flag starts
true, and then exactly ``length`` body bytes, read only by the commands that read a
body. A read error (the peer's EOF) ends each loop early and the command is still
dispatched, as on the device.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

from firmware_model.commands import Reply, ReplyKind

#: ``char name[30]`` in ``SimpleProtocolDispatcher::handle``
MAX_NAME_BYTES = 30
PREAMBLE = b"\n\n"
#: a whole head the byte loops need no care for: name below 30 bytes, 1-9 digits
_HEAD = re.compile(rb"([^\n\x00]{1,%d})\n([0-9]{1,9})\n\n" % (MAX_NAME_BYTES - 1)).match


class _Phase(enum.Enum):
    NAME = 1
    LENGTH = 2
    BLANK = 3
    BODY = 4
    DONE = 5


@dataclass(slots=True)
class TcpRequest:
    """One decoded request. ``body`` is ``None`` when the device could not read it."""

    name: str
    length: int
    body: bytes | None


def _wrap_int32(v: int) -> int:
    v &= 0xFFFF_FFFF
    return v - (1 << 32) if v >= 1 << 31 else v


class TcpConnection:
    """Decodes the single request of one TCP connection.

    Args:
        reads_body: whether a command name reads its body (``Device.reads_body``).
        can_allocate: whether ``malloc(length + 1)`` for the body would succeed.
    """

    __slots__ = (
        "_body",
        "_can_allocate",
        "_length",
        "_name",
        "_phase",
        "_reads_body",
        "_request",
        "_seen_newline",
    )

    def __init__(
        self, reads_body: Callable[[str], bool], can_allocate: Callable[[int], bool]
    ) -> None:
        self._reads_body = reads_body
        self._can_allocate = can_allocate
        self._phase = _Phase.NAME
        self._name = bytearray()
        self._length = 0
        self._seen_newline = True
        self._body = bytearray()
        self._request: TcpRequest | None = None

    @property
    def done(self) -> bool:
        """A request was produced; later bytes are discarded (one request per connection)."""
        return self._phase is _Phase.DONE

    def receive_data(self, data: bytes) -> TcpRequest | None:
        """Feed bytes; returns the request once it is complete, else ``None``."""
        if self._phase is _Phase.DONE:
            return None
        i = 0
        n = len(data)
        if self._phase is _Phase.NAME and not self._name:
            # the usual request, whole: "name\nlength\n\n" with a short name and a
            # plain decimal length; the loops below would reach the same state
            head = _HEAD(data)
            if head is not None:
                self._name += head[1]
                self._length = int(head[2])
                i = head.end()
                self._start_command()
        while i < n and not self.done:
            phase = self._phase
            if phase is _Phase.NAME:
                # fast path: find the terminator in bulk
                lf = data.find(b"\n", i)
                nul = data.find(b"\x00", i)
                ends = [p for p in (lf, nul) if p >= 0]
                end = min(ends) if ends else n
                room = MAX_NAME_BYTES - len(self._name)
                if end - i >= room:
                    self._name += data[i : i + room]
                    i += room
                    self._phase = _Phase.LENGTH
                elif end < n:
                    self._name += data[i:end]
                    i = end + 1
                    self._phase = _Phase.LENGTH
                else:
                    self._name += data[i:]
                    i = n
            elif phase is _Phase.LENGTH:
                c = data[i]
                i += 1
                if c == 0x0A:
                    self._phase = _Phase.BLANK
                else:
                    self._length = _wrap_int32(self._length * 10 + c - 0x30)
            elif phase is _Phase.BLANK:
                c = data[i]
                i += 1
                if c == 0x0A:
                    if self._seen_newline:
                        self._start_command()
                    else:
                        self._seen_newline = True
                else:
                    self._seen_newline = False
            else:  # BODY
                need = self._length - len(self._body)
                self._body += data[i : i + need]
                i += need
                if len(self._body) >= self._length:
                    self._finish(bytes(self._body))
        return self._take()

    def receive_eof(self) -> TcpRequest | None:
        """The peer closed its side: reads fail, so the remaining loops end at once."""
        if self._phase is _Phase.DONE:
            return None
        if self._phase is _Phase.NAME and not self._name:
            # no "data received" event ever happened: the device never handles it
            self._phase = _Phase.DONE
            return None
        if self._phase is _Phase.BODY:
            self._finish(None)
        else:
            self._start_command()
            if not self.done:  # a body-reading command: its read fails at once
                self._finish(None)
        return self._take()

    def _start_command(self) -> None:
        name = self._name_str()
        if self._reads_body(name):
            if not self._can_allocate(self._length):
                self._finish(None)
            elif self._length == 0:
                self._finish(b"")
            else:
                self._phase = _Phase.BODY
        else:
            self._finish(b"")

    def _finish(self, body: bytes | None) -> None:
        self._request = TcpRequest(self._name_str(), self._length, body)
        self._phase = _Phase.DONE

    def _name_str(self) -> str:
        return self._name.decode("latin-1")

    def _take(self) -> TcpRequest | None:
        req, self._request = self._request, None
        return req


def encode_tcp_reply(reply: Reply) -> bytes:
    """The bytes the device writes before closing: ``\\n\\n`` + JSON, or nothing."""
    if reply.kind is ReplyKind.UNKNOWN:
        return b""
    if reply.kind is ReplyKind.NO_JSON:
        return PREAMBLE
    return PREAMBLE + reply.body
