"""Asyncio transport for the device's HTTP port (80 on a real Photon).

aiohttp cannot be used here: it adds ``Date``/``Server`` headers, merges writes into
its own chunks and parses requests the WICED library ignores. Each ``data_received``
chunk is handed to the codec as one TCP segment (softap-protocol.md §3.1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from firmware_model import Device
from softap_sim.dispatch import CommandDispatcher
from softap_sim.protocol.http import HttpConnection, HttpRequest, Route, RouteKind

log = logging.getLogger(__name__)

#: what the library writes when none of its streams is free (§3.1): no blank line
SERVICE_UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"


class HttpDeviceServer:
    """Shared state of the HTTP listener: routes, socket limit, open connections."""

    def __init__(
        self,
        dispatcher: CommandDispatcher,
        device: Device,
        routes: tuple[Route, ...],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.dispatcher = dispatcher
        self.device = device
        self.routes = routes
        self.on_error = on_error
        self.max_connections = device.profile.http_sockets
        self.root_redirect = device.profile.root_redirect.encode()
        self.connections: set[_HttpProtocol] = set()

    def protocol_factory(self) -> _HttpProtocol:
        return _HttpProtocol(self)

    def close_all(self) -> None:
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.close()


class _HttpProtocol(asyncio.Protocol):
    __slots__ = ("codec", "peer", "server", "transport")

    def __init__(self, server: HttpDeviceServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.codec = HttpConnection(server.routes, server.device.can_allocate_body)
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self.server.connections) >= self.server.max_connections:
            transport.write(SERVICE_UNAVAILABLE)
            transport.close()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)

    def eof_received(self) -> bool:
        return False  # the library closes its side too

    def data_received(self, data: bytes) -> None:
        if self not in self.server.connections:
            return
        try:
            req = self.codec.receive_segment(data)
            if req is not None:
                self._answer(req)
        except Exception as err:  # an emulator bug: record it for check(), drop the client
            self.server.on_error(err)
            log.exception("http %s: internal error", self.peer)
            if self.transport is not None:
                self.transport.abort()

    def _answer(self, req: HttpRequest) -> None:
        codec = self.codec
        route = req.route
        if req.body is None:
            out = codec.render_server_error()
        elif route is None:
            out = codec.render_not_found()
        elif route.kind is RouteKind.COMMAND:
            reply = self.server.dispatcher.dispatch("http", self.peer, route.command, req.body)
            out = codec.render_command(reply)
        elif route.kind is RouteKind.PAGE_HANDLER:
            out = codec.render_page_handler(req.path, req.query)
        else:
            out = codec.render_static(route, self.server.root_redirect)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("http %s %s %r -> %d bytes", self.peer, req.method, req.path, len(out))
        assert self.transport is not None
        self.transport.write(out)
        if req.close:
            self.transport.close()
