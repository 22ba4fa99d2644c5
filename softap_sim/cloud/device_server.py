"""The cloud's device server: the Photon's TCP protocol on port 5683 (cloud-api.md §8, §9.2).

:class:`DeviceServer` listens, runs one :class:`~.device_session.Session` per connection
and keeps the one online session of each device; it is the sessions'
:class:`~.device_session.SessionHost`. It implements
:class:`~softap_sim.cloud.principal.DeviceLink`: set ``backend.link = device_server`` and
REST function calls and variable reads reach the device. Only devices whose id and
public key are in the registry complete the handshake.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from softap_sim.cloud.backend import CloudBackend
from softap_sim.cloud.device_session import Session
from softap_sim.cloud.errors import DeviceOffline

log = logging.getLogger(__name__)

#: the device must finish the RSA exchange and send its Hello within this time
HANDSHAKE_TIMEOUT_S = 30.0
#: silence after which the server pings; a second silent period ends the session
KEEPALIVE_S = 30.0
#: how long ``close()`` waits for sessions to record themselves offline
CLOSE_TIMEOUT_S = 5.0
#: threads for the handshake's RSA work (cryptography releases the GIL for it): a pool
#: of the device server's own, so a flood on another surface (scrypt logins, the
#: database) cannot delay a device's handshake past its connect timeout
HANDSHAKE_THREADS = min(16, 4 * (os.cpu_count() or 2))


class DeviceServer:
    """The Photon TCP endpoint of the local cloud, and its :class:`DeviceLink`.

    ``DeviceServer(backend, server_key)`` binds ``host:port`` on :meth:`start` (port 0
    picks a free port, written back to ``.port``); ``backend.link = server`` routes REST
    calls here. Only devices whose id and public key are in the registry
    (``backend.register_device``) complete the handshake.
    """

    def __init__(
        self,
        backend: CloudBackend,
        server_key: rsa.RSAPrivateKey,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        keepalive_s: float = KEEPALIVE_S,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.backend = backend
        self.server_key = server_key
        self.host = host
        self.port = port
        self.handshake_timeout_s = handshake_timeout_s
        self.keepalive_s = keepalive_s
        self.random_bytes = random_bytes
        self._server: asyncio.Server | None = None
        self._sessions: dict[str, Session] = {}  # device id → its one online session
        #: sessions with an application subscription: the only ones events are routed to
        self.app_subscribers: set[Session] = set()
        self._route_queue: collections.deque[dict[str, Any]] = collections.deque()
        self._routing: asyncio.Task[None] | None = None
        self._connections: set[Session] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.handshake_executor: concurrent.futures.ThreadPoolExecutor | None = None

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._server is not None:
            return
        self.handshake_executor = concurrent.futures.ThreadPoolExecutor(
            HANDSHAKE_THREADS, thread_name_prefix="cloud-handshake"
        )
        # a fleet connecting at once must not overflow the accept queue (SYN drops push
        # devices into kernel retransmit back-off)
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, backlog=1024
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.backend.subscribers.add(self.route_event)
        log.info("device server: listening on %s:%d", self.host, self.port)

    def route_event(self, event: dict[str, Any]) -> None:
        """A published event (REST or device) to every online device subscribed to it."""
        if not self.app_subscribers or str(event.get("name", "")).startswith(
            ("spark/", "particle/")
        ):
            return  # the common case (status and claim events of a fleet): no walk at all
        name = str(event.get("name", ""))
        if not any(session.subscriptions.matches(name) for session in self.app_subscribers):
            return
        if self._routing is None or self._routing.done():
            self._routing = asyncio.get_running_loop().create_task(self._route_queued())
        self._route_queue.append(event)

    async def _route_queued(self) -> None:
        """Deliver queued events in publish order; owners come from the backend's cache
        (a claim by id or a transfer changes who "my devices" are mid-session)."""
        while self._route_queue:
            event = self._route_queue.popleft()
            name = str(event.get("name", ""))
            for session in list(self.app_subscribers):
                if not session.online or session.device_id is None:
                    continue
                if not session.subscriptions.matches(name):
                    continue
                try:
                    row = await self.backend.device_owners(session.device_id)
                except Exception as err:  # the database is closing: no routing then
                    log.debug("device server: cannot route %s: %s", name, err)
                    continue
                if row is not None and session.subscriptions.wants(event, row, session.device_id):
                    session.exchange.send_event(
                        name, event.get("data"), private=bool(event.get("private", True))
                    )

    async def close(self) -> None:
        """Stop listening, end every session (each records itself offline), wait for them."""
        self.backend.subscribers.discard(self.route_event)
        self._route_queue.clear()
        if self._routing is not None:
            self._routing.cancel()
            await asyncio.gather(self._routing, return_exceptions=True)
            self._routing = None
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for session in list(self._connections):
            session.abort("server closing")
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        executor, self.handshake_executor = self.handshake_executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> DeviceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = Session(self, reader, writer)
        self._connections.add(session)
        try:
            await session.run()
        finally:
            self._connections.discard(session)
            self.app_subscribers.discard(session)
            self._tasks.discard(task)

    # -- SessionHost -----------------------------------------------------------------
    async def take_over(self, device_id: str, session: Session) -> None:
        """Make ``session`` the device's one session; an older one ends first."""
        old = self._sessions.get(device_id)
        if old is not None and old is not session:
            old.abort("replaced by a new session of the device")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await old.finished.wait()
        self._sessions[device_id] = session
        for waiter in self._waiters.pop(device_id, []):
            if not waiter.done():
                waiter.set_result(None)

    def release(self, device_id: str, session: Session) -> bool:
        """Forget ``session``; False when another session is the device's current one."""
        current = self._sessions.get(device_id)
        self.app_subscribers.discard(session)
        if current is session:
            del self._sessions[device_id]
        return current is None or current is session

    def route_events_to(self, session: Session) -> None:
        """``session`` subscribed to an application prefix: events are routed to it."""
        self.app_subscribers.add(session)

    def _session(self, device_id: str) -> Session:
        session = self._sessions.get(device_id)
        if session is None:
            raise DeviceOffline()
        return session

    # -- DeviceLink ------------------------------------------------------------------
    def is_online(self, device_id: str) -> bool:
        return device_id in self._sessions

    async def call_function(self, device_id: str, name: str, arg: str, timeout_s: float) -> int:
        """Run a function on the device: its int32 result.

        ``DeviceOffline`` when it has no session, ``DeviceTimeout`` after ``timeout_s``,
        ``DeviceError`` 404 "Function not found" when it answers 4.04.
        """
        return await self._session(device_id).exchange.call_function(name, arg, timeout_s)

    async def get_variable(self, device_id: str, name: str, timeout_s: float) -> Any:
        """Read a variable, decoded per its described type (int, float, bool or str).

        The type is the session's Describe reply's or, before one, the stored description's.
        """
        session = self._session(device_id)
        var_type = session.variables.get(name)
        if var_type is None:
            row = await self.backend.device_row(device_id)
            if row is not None:
                try:
                    var_type = json.loads(row["variables"] or "{}").get(name)
                except (json.JSONDecodeError, AttributeError):
                    var_type = None
        return await session.exchange.get_variable(name, var_type, timeout_s)

    # -- extras ----------------------------------------------------------------------
    def online_devices(self) -> list[str]:
        return sorted(self._sessions)

    def subscriptions(self, device_id: str) -> list[tuple[str, bool]]:
        """The device's event subscriptions: (prefix, MY_DEVICES only)."""
        return list(self._session(device_id).subscriptions.items)

    def send_event(
        self, device_id: str, name: str, data: str | None = None, *, private: bool = True
    ) -> None:
        """Send an event to a connected device (``DeviceOffline`` if it is not)."""
        self._session(device_id).exchange.send_event(name, data, private=private)

    async def wait_ready(self, device_id: str, timeout_s: float = 10.0) -> None:
        """Until the device is online and its Describe step finished (stored or failed).

        Raises ``TimeoutError`` after ``timeout_s``.
        """
        async with asyncio.timeout(timeout_s):
            while True:
                session = self._sessions.get(device_id)
                if session is None:
                    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    self._waiters.setdefault(device_id, []).append(waiter)
                    try:
                        await waiter
                    finally:
                        waiters = self._waiters.get(device_id, [])
                        if waiter in waiters:
                            waiters.remove(waiter)
                    continue
                await session.described.wait()
                if self._sessions.get(device_id) is session:
                    return
