"""Asyncio transport for TCP port 5609.

The device serves TCP clients strictly one at a time in a single thread, starting a
connection when its first data arrives (softap-protocol.md §2). Connections that send
data while another is being served wait in arrival order; a client that stalls
mid-request, or a slow scan, blocks every other client, as on the device. A waiting
connection holds at most ``max_queued_bytes`` (plus one read) before its transport
stops reading, so TCP pushes back on its client as the device's small socket buffers
do; it reads on when its turn comes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import cast

from firmware_model import Device
from softap_sim.dispatch import CommandDispatcher, Delivery, Exchange
from softap_sim.protocol.tcp import TcpConnection, TcpRequest, encode_tcp_reply
from softap_sim.scheduler import Scheduler
from softap_sim.transports.delivery import (
    MAX_QUEUED_BYTES,
    MAX_READ_BYTES,
    deliver_now,
    pause,
    resume,
)

__all__ = ["MAX_QUEUED_BYTES", "MAX_READ_BYTES", "TcpDeviceServer"]

log = logging.getLogger(__name__)


class TcpDeviceServer:
    """Owns the serving order of all TCP connections of one device."""

    def __init__(
        self,
        dispatcher: CommandDispatcher,
        device: Device,
        scheduler: Scheduler,
        on_error: Callable[[BaseException], None],
        on_accept: Callable[[str], None] = lambda _t: None,
    ) -> None:
        self.dispatcher = dispatcher
        self.device = device
        self.scheduler = scheduler
        self.on_error = on_error
        self.on_accept = on_accept
        #: False when the TCP thread could not be created: accept, read, never answer
        self.serving = True
        self.current: _TcpProtocol | None = None
        self.waiting: deque[_TcpProtocol] = deque()
        self.connections: set[_TcpProtocol] = set()
        #: a waiting connection pauses reading once it holds more than this
        self.max_queued_bytes = MAX_QUEUED_BYTES
        self._ids = itertools.count(1)

    @property
    def max_recorded_bytes(self) -> int:
        """How much of a request is kept for the transcript: more than any request the
        device can take (a body fits the heap, a head is a few dozen bytes). A served
        client sending endless garbage is still read, as on the device, but not kept."""
        return self.max_queued_bytes + max(self.device.heap.heap_after_boot_bytes, 0)

    @property
    def buffered_bytes(self) -> int:
        """Bytes received from waiting connections and not yet handed to the device."""
        return sum(proto.buffered_bytes for proto in self.connections)

    def protocol_factory(self) -> _TcpProtocol:
        return _TcpProtocol(self, next(self._ids))

    def ready(self, proto: _TcpProtocol) -> None:
        """``proto`` received its first bytes: serve it now or queue it."""
        if self.current is None:
            self.current = proto
            proto.serve()
        elif proto is not self.current and proto not in self.waiting:
            self.waiting.append(proto)

    def finished(self, proto: _TcpProtocol) -> None:
        if proto in self.waiting:
            self.waiting.remove(proto)
        if self.current is proto:
            self.current = None
            while self.waiting and self.current is None:
                nxt = self.waiting.popleft()
                self.current = nxt
                nxt.serve()

    def close_all(self) -> None:
        """The AP went down: replies already written are flushed, the rest is dropped."""
        self.current = None
        self.waiting.clear()
        for proto in list(self.connections):
            if proto.answered:
                proto.close_transport()
            else:
                proto.abort()


class _TcpProtocol(asyncio.Protocol):
    __slots__ = (
        "_buffer",
        "_buffered",
        "_eof",
        "_finished",
        "_paused",
        "_raw",
        "_sending",
        "_serving",
        "codec",
        "conn_id",
        "peer",
        "server",
        "transport",
    )

    def __init__(self, server: TcpDeviceServer, conn_id: int) -> None:
        self.server = server
        self.conn_id = conn_id
        self.transport: asyncio.Transport | None = None
        device = server.device
        self.codec = TcpConnection(device.reads_body, device.can_allocate_body)
        self.peer = "?"
        self._buffer: list[bytes] = []
        #: ``sum(map(len, self._buffer))``
        self._buffered = 0
        #: reading is paused: the client is queued and its buffer is full
        self._paused = False
        self._raw = bytearray()
        self._eof = False
        self._serving = False
        self._finished = False
        #: a delayed reply is pending: the single TCP thread stays busy with it
        self._sending = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: only the type matters
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.server.connections.add(self)
        self.server.on_accept("tcp")

    def data_received(self, data: bytes) -> None:
        if self._finished:
            return  # one request per connection: later bytes are discarded
        if not self._serving:
            self._buffer.append(data)
            self._buffered += len(data)
            self.server.ready(self)
            if (
                not self._serving
                and not self._paused
                and self._buffered > self.server.max_queued_bytes
            ):
                self._paused = pause(self.transport)
            return
        self._feed(data)

    @property
    def buffered_bytes(self) -> int:
        """Bytes received while waiting for the device, not yet handed to it."""
        return self._buffered

    @property
    def recorded_bytes(self) -> int:
        """Bytes kept for the transcript of the request being read."""
        return len(self._raw)

    def eof_received(self) -> bool:
        self._eof = True
        if self._finished or self._sending:
            return True  # answered, or a delayed reply is still due: nothing to read
        if self._serving:
            self._feed_eof()
        elif not self._buffer:
            # never sent data: no "message" event, only the disconnect, which closes
            # the socket (TCPServerDispatcher::handle_message)
            self._close()
        return True  # keep our side open so the reply can still be written

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._release()
        if self._sending:
            return  # the thread is still busy (a blocking scan): _send frees it
        self._finished = True
        self.server.finished(self)

    def serve(self) -> None:
        self._serving = True
        pending, self._buffer = self._buffer, []
        self._buffered = 0
        if self._paused:
            self._paused = False
            resume(self.transport)
        for chunk in pending:
            if self._finished:
                return
            self._feed(chunk)
        if self._eof and not self._finished:
            self._feed_eof()

    def _release(self) -> None:
        """The connection is gone: drop what it still holds."""
        self._buffer = []
        self._buffered = 0
        self._raw = bytearray()

    def _feed(self, data: bytes) -> None:
        if not self.server.serving:
            return  # the listener accepted, but no thread ever reads (§7)
        try:
            if not self.codec.done:
                raw = self._raw
                if len(raw) + len(data) <= self.server.max_recorded_bytes:
                    raw += data
                else:
                    raw += data[: max(self.server.max_recorded_bytes - len(raw), 0)]
            req = self.codec.receive_data(data)
            if req is not None:
                self._answer(req)
        except Exception as err:  # an emulator bug: record it for check(), drop the client
            self.server.on_error(err)
            log.exception("tcp %s: internal error", self.peer)
            self.abort()

    def _feed_eof(self) -> None:
        if not self.server.serving:
            return
        try:
            req = self.codec.receive_eof()
            if req is not None:
                self._answer(req)
            else:
                self._close()
        except Exception as err:
            self.server.on_error(err)
            log.exception("tcp %s: internal error", self.peer)
            self.abort()

    def _answer(self, req: TcpRequest) -> None:
        dispatcher = self.server.dispatcher
        # one request per connection (the device closes after its reply)
        exchange = dispatcher.dispatch(Exchange("tcp", self.conn_id, self.peer), req.name, req.body)
        out = encode_tcp_reply(exchange.reply)
        dispatcher.record(exchange, bytes(self._raw), out)
        delivery = exchange.delivery
        self._raw = bytearray()  # one request per connection: it is recorded
        if delivery.delay_s > 0:
            # the single TCP thread is busy (e.g. a blocking scan): others keep waiting,
            # even if this client gives up and disconnects meanwhile
            self._sending = True
            self.server.scheduler.call_later(delivery.delay_s, lambda: self._send(out, delivery))
        else:
            self._send(out, delivery)

    def _send(self, out: bytes, delivery: Delivery) -> None:
        self._sending = False
        if self.transport is None or self.transport.is_closing():
            self._finish()
            return
        deliver_now(self.transport, out, delivery, close_after=True)
        self._finish()

    def close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def answered(self) -> bool:
        return self._finished

    def _close(self) -> None:
        self._finish()
        self.close_transport()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self.server.finished(self)

    def abort(self) -> None:
        self._finish()
        if self.transport is not None:
            self.transport.abort()
