"""The two ports of a device: its own listening sockets, or a fleet's shared ones.

:class:`DeviceListener` is a device's own socket per port (the default, and what a
Photon has). :class:`SharedPorts` serves a whole fleet from one socket per port:
each device on its own loopback address registers there, and every accepted
connection goes to the device whose address the client dialled. That is how 10,000
devices fit in one process where ``RLIMIT_NOFILE`` cannot be raised to two
descriptors per device (containers, CI runners: raising the hard limit needs
``CAP_SYS_RESOURCE``).

The one visible difference of shared ports: a device that is not listening (its AP
down, a ``refuse-after`` fault, ``refuse`` below the memory gate) cannot refuse the
TCP handshake -- the kernel already completed it for the shared socket -- so the
connection is reset at once instead (``ECONNRESET`` / "socket hang up" rather than
``ECONNREFUSED``). The same for an address no device owns.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable
from typing import Final, Protocol

from softap_sim.errors import ConfigError
from softap_sim.net import reset_transport

log = logging.getLogger(__name__)

ProtocolFactory = Callable[[], asyncio.Protocol]


class PortListener(Protocol):
    """What a device needs of one of its ports."""

    name: str
    host: str

    @property
    def port(self) -> int:
        """The port number (known once bound)."""

    @property
    def bound(self) -> bool:
        """The port is ours (reserved or serving)."""

    def reserve(self) -> None:
        """Own the port without accepting: connections are refused (or reset)."""

    async def open(self, factory: ProtocolFactory) -> None:
        """Accept connections, each served by a protocol from ``factory``."""

    async def close(self, *, keep_port: bool = True) -> None:
        """Stop accepting; ``keep_port=False`` also gives the port up."""

    @property
    def listening(self) -> bool: ...


#: see :class:`DeviceListener`: a listener that restarts skips the kernel's TIME_WAIT walk
_REUSEPORT: Final = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class DeviceListener:
    """One port of the device: reserved (bound, refusing) or serving.

    The bound socket is kept for the emulator's life: the AP coming up makes it listen,
    going down stops it listening (``shutdown``, Linux), so connections are refused again
    and the port never leaves us. That saves a new socket and ``bind`` per AP cycle
    (a bind walks every TIME_WAIT connection on the port, many after a busy session).
    Where ``shutdown`` does not stop a listening socket (other systems), a fresh
    socket is bound instead, as the first time.

    Linux checks a port against every socket in its bind bucket when a socket starts
    listening, TIME_WAIT connections included: the device closes every TCP connection
    first, so after a busy session thousands of them sit on the port and each AP
    restart cost ~145 us per 20,000. With ``SO_REUSEPORT`` set on the listener the
    kernel takes its fast path (~3 us).

    The port stays exclusive in every state of the AP: ``SO_REUSEADDR`` (needed to
    bind over the TIME_WAIT connections of an earlier run, and inherited by every
    accepted connection) is on only while the socket listens, ``SO_REUSEPORT`` too.
    A socket that is bound but not listening and still had ``SO_REUSEADDR`` would let
    another ``SO_REUSEADDR`` socket bind the same port -- a second emulator, or any
    server -- and both would then serve it. The one program that can still join is
    one that asks for ``SO_REUSEPORT`` itself, as the same user: the kernel's
    documented contract for that option (socket(7)).
    """

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.reserved: socket.socket | None = None
        self.server: asyncio.Server | None = None
        #: the socket the server serves (the loop closes it with the server)
        self._serving: socket.socket | None = None

    def reserve(self) -> None:
        """Bind without listening: the port is ours and connections are refused."""
        if self.reserved is not None:
            return
        sock = self._bind(self.port)
        if self.port == 0:
            # A socket bound to port 0 gives the port back when it stops listening;
            # one bound to the number keeps it (SO_REUSEADDR: both may be bound while
            # neither listens).
            port = sock.getsockname()[1]
            try:
                fixed = self._bind(port)
            finally:
                sock.close()
            sock = fixed
        _exclusive(sock)
        self.port = sock.getsockname()[1]
        self.reserved = sock

    def _bind(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def open(self, factory: Callable[[], asyncio.Protocol]) -> None:
        if self.server is not None:
            return
        self.reserve()
        sock, self.reserved = self.reserved, None
        assert sock is not None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if _REUSEPORT:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.listen(128)
        try:
            # the loop owns (and will close) the socket it serves: one descriptor each
            self.server = await asyncio.get_running_loop().create_server(
                factory, sock=sock, backlog=128
            )
        except BaseException:
            self.reserved = sock
            self._stop_listening()
            raise
        self._serving = sock

    async def close(self, *, keep_port: bool = True) -> None:
        server, self.server = self.server, None
        serving, self._serving = self._serving, None
        if server is not None:
            if keep_port and serving is not None:
                # a second descriptor of the same socket outlives the loop's close
                try:
                    self.reserved = serving.dup()
                except OSError:  # out of descriptors: bind a new socket below
                    self.reserved = None
            server.close()  # no await before the socket stops listening
            if keep_port:
                self._stop_listening()
            await server.wait_closed()
        if keep_port:
            self.reserve()
        elif self.reserved is not None:
            self.reserved.close()
            self.reserved = None

    def _stop_listening(self) -> None:
        """Refuse from now on, keeping the bound socket if the system allows it."""
        sock = self.reserved
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RD)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0:
                _exclusive(sock)
                return
        except OSError:
            pass
        sock.close()
        self.reserved = None

    @property
    def listening(self) -> bool:
        return self.server is not None

    @property
    def bound(self) -> bool:
        return self.reserved is not None or self.server is not None


def _exclusive(sock: socket.socket) -> None:
    """Make a bound, non-listening socket keep its port to itself (see DeviceListener)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    if _REUSEPORT:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)


#: the interface shared sockets accept on: connections from this host only
LOOPBACK_INTERFACE: Final = b"lo"


def shared_ports_supported() -> str | None:
    """``None`` where :class:`SharedPorts` works here, else why not (for messages)."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_BINDTODEVICE"):
        return "shared listeners need Linux (SO_BINDTODEVICE keeps them on loopback)"
    with socket.socket() as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, LOOPBACK_INTERFACE)
        except OSError as err:
            return (
                f"shared listeners cannot bind to the loopback interface here "
                f"(SO_BINDTODEVICE: {err.strerror}; kernels before 5.7 need CAP_NET_RAW)"
            )
    return None


class SharedPorts:
    """One listening socket per port for many devices on loopback addresses.

    Each socket is bound to the wildcard address *and* to the loopback interface
    (``SO_BINDTODEVICE "lo"``), so it only ever sees connections made on this host --
    nothing from the network reaches it, as with per-device sockets on 127.0.x.y. An
    accepted connection is handed to the device that owns its local address.
    """

    def __init__(self) -> None:
        self._ports: dict[tuple[str, int], _SharedPort] = {}
        self._started = False

    def listener(self, name: str, host: str, port: int) -> SharedListener:
        """The ``name`` port (``TCP``/``HTTP``) of the device at ``host``."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"shared listeners need IP addresses, got {host!r}") from None
        if not address.is_loopback or address.version != 4:
            raise ConfigError(
                f"shared listeners serve IPv4 loopback addresses (127.x.y.z), not {host}"
            )
        # port 0 means "a free port" for each of TCP and HTTP, not one for both
        key = (name, 0) if port == 0 else ("", port)
        shared = self._ports.get(key)
        if shared is None:
            shared = self._ports[key] = _SharedPort(port)
        return SharedListener(name, host, shared)

    @property
    def ports(self) -> list[int]:
        """The ports actually bound (port 0 resolved), in registration order."""
        return [p.port for p in self._ports.values()]

    @property
    def sockets(self) -> int:
        return len(self._ports)

    async def close(self) -> None:
        for shared in self._ports.values():
            await shared.close()


class _SharedPort:
    """The wildcard socket of one port and the routes from addresses to devices."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.routes: dict[str, ProtocolFactory] = {}
        #: the bound socket, from the first device's reserve() to close() (the server
        #: serves it from the first open() on)
        self.sock: socket.socket | None = None
        self.server: asyncio.Server | None = None
        self._starting: asyncio.Future[None] | None = None

    def bind(self) -> None:
        if self.sock is not None:
            return
        reason = shared_ports_supported()
        if reason is not None:
            raise ConfigError(reason)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, LOOPBACK_INTERFACE)
            sock.bind(("0.0.0.0", self.port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        _exclusive(sock)  # until it listens (serve), as a device's own socket
        self.port = sock.getsockname()[1]
        self.sock = sock

    async def serve(self) -> None:
        """Start accepting (once, for every device that shares the port)."""
        if self.server is not None:
            return
        if self._starting is not None:
            await asyncio.shield(self._starting)
            return
        self._starting = asyncio.get_running_loop().create_future()
        try:
            self.bind()
            assert self.sock is not None
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.server = await asyncio.get_running_loop().create_server(
                lambda: _Router(self.routes), sock=self.sock, backlog=4096
            )
            self._starting.set_result(None)
        except BaseException as err:
            self._starting.set_exception(err)
            self._starting.exception()  # retrieved: the other waiters re-raise it
            self._starting = None
            raise

    async def close(self) -> None:
        server, self.server = self.server, None
        self._starting = None
        if server is not None:
            server.close()
            await server.wait_closed()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class _Router(asyncio.Protocol):
    """Accepted on a shared socket: hands the connection to the device it was for."""

    __slots__ = ("_routes",)

    def __init__(self, routes: dict[str, ProtocolFactory]) -> None:
        self._routes = routes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sockname = transport.get_extra_info("sockname")
        factory = self._routes.get(sockname[0]) if isinstance(sockname, tuple) else None
        if factory is None:  # no device listening there: as close to "refused" as we can
            reset_transport(transport)  # type: ignore[arg-type]
            return
        proto = factory()
        transport.set_protocol(proto)
        proto.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """Only after a reset (the transport is going away): nothing to do."""

    def eof_received(self) -> bool:
        return False


class SharedListener:
    """A device's port on a :class:`SharedPorts` socket: listening = routed to."""

    def __init__(self, name: str, host: str, shared: _SharedPort) -> None:
        self.name = name
        self.host = host
        self._shared = shared
        self._factory: ProtocolFactory | None = None

    @property
    def port(self) -> int:
        return self._shared.port

    def reserve(self) -> None:
        """Bind the shared socket if nobody has yet (errors such as EADDRINUSE here)."""
        self._shared.bind()

    async def open(self, factory: ProtocolFactory) -> None:
        if self._factory is not None:
            return
        await self._shared.serve()
        routes = self._shared.routes
        if self.host in routes:
            raise OSError(98, f"{self.host}:{self.port} is already served by another device")
        routes[self.host] = self._factory = factory

    async def close(self, *, keep_port: bool = True) -> None:
        if self._factory is not None and self._shared.routes.get(self.host) is self._factory:
            del self._shared.routes[self.host]
        self._factory = None

    @property
    def listening(self) -> bool:
        return self._factory is not None

    @property
    def bound(self) -> bool:
        return self._shared.sock is not None
