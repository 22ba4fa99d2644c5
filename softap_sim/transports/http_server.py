"""Asyncio transport for the device's HTTP port (80 on a real Photon).

aiohttp cannot be used here: it adds ``Date``/``Server`` headers, merges writes into
its own chunks and parses requests the WICED library ignores. Each ``data_received``
chunk is handed to the codec as one TCP segment (softap-protocol.md §3.1). The
library runs one event thread: while a command is busy (a blocking scan, an injected
delay) segments from every connection wait in arrival order. Each connection's share
of that backlog is bounded by ``max_queued_bytes`` (plus one read): past it the
transport stops reading and TCP pushes back on the client until the segments are
consumed; a closed connection's waiting segments are dropped at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import cast

from firmware_model import Device
from softap_sim.dispatch import NORMAL, CommandDispatcher, Delivery, Exchange
from softap_sim.protocol.http import HttpConnection, HttpRequest, Route
from softap_sim.scheduler import Scheduler
from softap_sim.transports.delivery import MAX_QUEUED_BYTES, deliver_now, pause, resume

log = logging.getLogger(__name__)

#: what the library writes when none of its streams is free (§3.1): no blank line
SERVICE_UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"


class HttpDeviceServer:
    """Shared state of the HTTP listener: routes, socket limit, the event thread."""

    def __init__(
        self,
        dispatcher: CommandDispatcher,
        device: Device,
        routes: tuple[Route, ...],
        scheduler: Scheduler,
        on_error: Callable[[BaseException], None],
        on_accept: Callable[[str], None] = lambda _t: None,
    ) -> None:
        self.dispatcher = dispatcher
        self.device = device
        self.routes = routes
        self.scheduler = scheduler
        self.on_error = on_error
        self.on_accept = on_accept
        self.max_connections = device.profile.http_sockets
        self.root_redirect = device.profile.root_redirect.encode()
        #: False when the request slots could not be allocated: every page gets 500 (§7)
        self.slots = True
        self.connections: set[_HttpProtocol] = set()
        self.busy = False
        self.backlog: deque[tuple[_HttpProtocol, bytes]] = deque()
        #: a connection pauses reading once its waiting segments exceed this
        self.max_queued_bytes = MAX_QUEUED_BYTES
        self._ids = itertools.count(1)

    @property
    def buffered_bytes(self) -> int:
        """Bytes of the segments waiting for the event thread."""
        return sum(len(data) for _proto, data in self.backlog)

    def protocol_factory(self) -> _HttpProtocol:
        return _HttpProtocol(self, next(self._ids))

    def idle(self) -> None:
        self.busy = False
        while self.backlog and not self.busy:
            proto, data = self.backlog.popleft()
            proto.dequeued(len(data))
            if proto in self.connections:
                proto.process(data)

    def close_all(self) -> None:
        for proto, data in self.backlog:
            proto.dequeued(len(data))
        self.backlog.clear()
        self.busy = False
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.close()


class _HttpProtocol(asyncio.Protocol):
    __slots__ = (
        "_dead",
        "_paused",
        "_queued",
        "_raw",
        "codec",
        "conn_id",
        "exchange",
        "peer",
        "server",
        "transport",
    )

    def __init__(self, server: HttpDeviceServer, conn_id: int) -> None:
        self.server = server
        self.conn_id = conn_id
        self.transport: asyncio.Transport | None = None
        self.codec = HttpConnection(server.routes, server.device.can_allocate_body)
        self.peer = "?"
        self.exchange = Exchange("http", conn_id, self.peer)
        self._raw = bytearray()
        self._dead = False
        #: bytes of this connection's segments in the server's backlog
        self._queued = 0
        #: reading is paused until the backlog is consumed
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: only the type matters
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.exchange = Exchange("http", self.conn_id, self.peer)
        self.server.on_accept("http")
        if len(self.server.connections) >= self.server.max_connections:
            self.transport.write(SERVICE_UNAVAILABLE)
            self.transport.close()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        server.connections.discard(self)
        if self._queued:
            # its segments would be skipped anyway: free them now, not when the
            # event thread is next idle
            kept = [entry for entry in server.backlog if entry[0] is not self]
            server.backlog.clear()
            server.backlog.extend(kept)
            self._queued = 0
        self._raw = bytearray()

    @property
    def buffered_bytes(self) -> int:
        """Bytes of this connection's segments waiting for the event thread."""
        return self._queued

    def dequeued(self, nbytes: int) -> None:
        """The event thread took one of this connection's waiting segments."""
        self._queued -= nbytes
        if self._paused and self._queued <= self.server.max_queued_bytes:
            self._paused = False
            resume(self.transport)

    def eof_received(self) -> bool:
        return False  # the library closes its side too

    def data_received(self, data: bytes) -> None:
        server = self.server
        if self._dead or self not in server.connections:
            return
        if server.busy:
            server.backlog.append((self, data))  # the event thread is busy: wait in order
            self._queued += len(data)
            if self._queued > server.max_queued_bytes and not self._paused:
                self._paused = pause(self.transport)
        else:
            self.process(data)

    def process(self, data: bytes) -> None:
        if self._dead or self.transport is None or self.transport.is_closing():
            return
        try:
            codec = self.codec
            if not codec.is_pending():
                # a new request: in the common case it is one segment, no copy needed
                req = codec.receive_segment(data)
                if req is not None:
                    self._answer(req, data)
                elif codec.is_pending():
                    self._raw = bytearray(data)
                return
            self._raw += data
            req = codec.receive_segment(data)
            if req is not None:
                raw, self._raw = bytes(self._raw), bytearray()
                self._answer(req, raw)
        except Exception as err:  # an emulator bug: record it for check(), drop the client
            self.server.on_error(err)
            log.exception("http %s: internal error", self.peer)
            if self.transport is not None:
                self.transport.abort()

    def _answer(self, req: HttpRequest, raw: bytes) -> None:
        codec = self.codec
        server = self.server
        dispatcher = server.dispatcher
        answer = codec.respond_to(req, server.slots, server.root_redirect)
        if isinstance(answer, str):
            exchange = dispatcher.dispatch(self.exchange, answer, req.body)
            out = codec.render_command(exchange.reply)
        else:
            exchange = dispatcher.begin(self.exchange, req.path.decode("latin-1"))
            out = answer
        if log.isEnabledFor(logging.DEBUG):
            log.debug("http %s %s %r -> %d bytes", self.peer, req.method, req.path, len(out))
        dispatcher.record(exchange, raw, out)
        delivery = exchange.delivery
        if delivery.delay_s > 0:
            server.busy = True
            server.scheduler.call_later(
                delivery.delay_s, lambda: self._send(out, delivery, req.close, True)
            )
        else:
            self._send(out, delivery, req.close, False)

    def _send(self, out: bytes, delivery: Delivery, close: bool, was_busy: bool) -> None:
        transport = self.transport
        if delivery is NORMAL and not was_busy and transport is not None:
            transport.write(out)  # the common case, kept short
            if close:
                transport.close()
            return
        try:
            if self.transport is not None and not self.transport.is_closing():
                usable = deliver_now(self.transport, out, delivery, close_after=close)
                if not usable and delivery.mode != "normal":
                    self._dead = True  # hanging: the connection never answers again
        finally:
            if was_busy:
                self.server.idle()
