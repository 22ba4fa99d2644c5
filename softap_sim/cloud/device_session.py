"""One device connection of the device server, from the nonce to the offline event.

A thin asyncio transport around the sans-IO codecs (:mod:`softap_sim.protocol.lightssl`,
:mod:`softap_sim.protocol.coap`, :mod:`softap_sim.protocol.link`); every database effect
goes through a backend verb::

    S→D nonce (40)        D→S RSA block (256)      S→D session ‖ signature (384)
    D→S Hello (CON POST h)  S→D empty ACK + Hello (CON POST h, no payload)
    → online: ``backend.device_online``, ``spark/status`` ``online`` published,
      Describe (CON GET d) sent; then events, subscriptions, time, pings both ways.

Any malformed, truncated or oversized frame, any CoAP error, a missing Hello, a silent
device or an unknown key ends *that* session with one log line; the session is then
marked offline and ``spark/status`` ``offline`` is published. Claim codes and event
payloads are never logged.

The session reaches its server only through :class:`SessionHost`, so this module does not
import :mod:`~softap_sim.cloud.device_server` (which imports it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from softap_sim.cloud.backend import CloudBackend
from softap_sim.cloud.device_exchange import DeviceExchange
from softap_sim.cloud.device_subscriptions import Subscriptions
from softap_sim.cloud.errors import CloudError
from softap_sim.cloud.events import device_event
from softap_sim.errors import SimulatorError, StateError
from softap_sim.protocol.coap import CoapError, CoapMessage, CoapType, Code, decode
from softap_sim.protocol.lightssl import Channel, ChannelError, ServerHandshake
from softap_sim.protocol.link import (
    CLAIM_CODE_EVENT,
    CLAIM_CONFIRM_EVENT,
    STATUS_EVENT,
    Hello,
    LinkConnection,
    Ping,
    Request,
    Response,
    UnknownResponse,
    ack,
    decode_event,
    decode_subscription,
    describe_request,
    encode_time,
    is_success,
    parse_describe,
)

log = logging.getLogger("softap_sim.cloud.device_server")

#: ``last_heard`` is written at most this often per session
HEARD_WRITE_INTERVAL_S = 5.0
READ_CHUNK_BYTES = 4096


class _SessionEnd(SimulatorError):
    """Ends a session; ``warn`` selects the log level of the one line it leaves."""

    def __init__(self, reason: str, *, warn: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.warn = warn


class SessionHost(Protocol):
    """What a session needs from its device server (:class:`~.device_server.DeviceServer`)."""

    backend: CloudBackend
    server_key: rsa.RSAPrivateKey
    random_bytes: Callable[[int], bytes]
    handshake_timeout_s: float
    keepalive_s: float
    handshake_executor: concurrent.futures.ThreadPoolExecutor | None

    async def take_over(self, device_id: str, session: Session) -> None:
        """Make ``session`` the device's one online session (an older one ends first)."""

    def release(self, device_id: str, session: Session) -> bool:
        """Forget ``session``; False when another session is the device's current one."""

    def route_events_to(self, session: Session) -> None:
        """``session`` has an application subscription: published events may concern it."""


class Session:
    """One device connection, from the nonce to the offline event."""

    def __init__(
        self, server: SessionHost, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.backend = server.backend
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer: str | None = str(peer[0]) if isinstance(peer, tuple) and peer else None
        self.device_id: str | None = None
        self.hello: Hello | None = None
        self.online = False
        self.functions: list[str] = []
        self.variables: dict[str, str] = {}
        #: from the device's GET ``e`` requests
        self.subscriptions = Subscriptions()
        self.described = asyncio.Event()
        self.finished = asyncio.Event()
        self.link = LinkConnection(int.from_bytes(server.random_bytes(2), "big"))
        #: what the cloud sends the device: events, and requests awaiting replies
        self.exchange = DeviceExchange(self.link, writer, self.abort)
        self._channel: Channel | None = None
        self._abort_reason: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._heard_written = float("-inf")
        self._ping_outstanding = False
        self._fed = 0  # ciphertext bytes received / consumed: a partial frame at EOF
        self._consumed = 0

    # -- lifecycle -------------------------------------------------------------------
    async def run(self) -> None:
        end = _SessionEnd("server closing", warn=False)
        try:
            backlog = await self._handshake()
            await self._go_online()
            self._spawn(self._describe())
            await self._serve(backlog)
        except _SessionEnd as err:
            end = err
        except asyncio.IncompleteReadError:
            end = _SessionEnd("connection closed during the handshake")
        except TimeoutError:
            end = _SessionEnd("handshake timed out")
        except (ChannelError, CoapError) as err:
            end = _SessionEnd(f"protocol error: {err}")
        except (ConnectionError, OSError) as err:
            end = _SessionEnd(f"connection lost: {err.__class__.__name__}")
        except asyncio.CancelledError:
            end = _SessionEnd("server closing", warn=False)
            raise
        except (CloudError, StateError, sqlite3.Error) as err:
            end = _SessionEnd(f"cloud error: {err.__class__.__name__}: {err}")
        except Exception:  # a bug: one traceback, and the server keeps serving
            end = _SessionEnd("internal error")
            log.exception("device server: session %s failed", self._who())
        finally:
            if self._abort_reason is not None:
                end = _SessionEnd(self._abort_reason, warn=False)
            await self._teardown(end)

    def abort(self, reason: str) -> None:
        """End the session from outside (server close, a newer session of the device)."""
        if self._abort_reason is None:
            self._abort_reason = reason
        self.writer.transport.abort()

    def _who(self) -> str:
        device = self.device_id or "unidentified device"
        return f"{device} ({self.peer})" if self.peer else device

    async def _teardown(self, end: _SessionEnd) -> None:
        if end.reason != "internal error":
            log.log(
                logging.WARNING if end.warn else logging.INFO,
                "device server: session %s ended: %s",
                self._who(),
                end.reason,
            )
        for task in list(self._tasks):
            task.cancel()
        self.exchange.close()
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            if self.online and self.device_id is not None:
                await self._go_offline(self.device_id)
        finally:
            self.described.set()
            self.finished.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- handshake -------------------------------------------------------------------
    async def _handshake(self) -> list[bytes]:
        """RSA exchange and Hello; the frames that arrived after the Hello."""
        server = self.server
        handshake = ServerHandshake(server.server_key, self._lookup_key, server.random_bytes)
        block = (server.server_key.key_size + 7) // 8
        async with asyncio.timeout(server.handshake_timeout_s):
            self.writer.write(handshake.hello_bytes())
            data = await self.reader.readexactly(block)
            reply = await asyncio.get_running_loop().run_in_executor(
                server.handshake_executor, handshake.receive_data, data
            )
            if reply is None or handshake.session is None:
                raise ChannelError("the handshake did not complete")
            self.device_id = handshake.device_id
            self._channel = self.exchange.channel = Channel(handshake.session)
            self.writer.write(reply)
            frames: list[bytes] = []
            while not frames:
                chunk = await self.reader.read(READ_CHUNK_BYTES)
                if not chunk:
                    raise _SessionEnd("connection closed before the Hello")
                frames = self._receive(chunk)
        hello = decode(frames[0])
        if hello.code != Code.POST or hello.uri_path != [b"h"]:
            raise _SessionEnd("the first message is not a Hello")
        self.hello = Hello.decode(hello.payload)
        if self.hello.device_id is not None and self.hello.device_id != self.device_id:
            raise _SessionEnd("the Hello names another device id")
        if hello.type == CoapType.CON:
            self.exchange.send(ack(hello))
        self.exchange.send(self.link.hello())
        return frames[1:]

    def _lookup_key(self, device_id: str) -> rsa.RSAPublicKey | None:
        """Runs in a worker thread (inside ``ServerHandshake.receive_data``)."""
        pem = self.backend.device_public_key_sync(device_id)
        if pem is None:
            return None
        key = serialization.load_pem_public_key(pem.encode("ascii"))
        return key if isinstance(key, rsa.RSAPublicKey) else None

    def _receive(self, data: bytes) -> list[bytes]:
        assert self._channel is not None
        self._fed += len(data)
        frames = self._channel.receive_data(data)
        for frame in frames:
            self._consumed += 2 + (len(frame) // 16 + 1) * 16
        return frames

    # -- online / offline ------------------------------------------------------------
    async def _go_online(self) -> None:
        device_id = self.device_id
        assert device_id is not None
        await self.server.take_over(device_id, self)
        now = self.backend.now()  # the time the verb stamps (it reads the clock at once)
        row = await self.backend.device_online(device_id, self.peer)
        self.online = True
        self._heard_written = now
        log.info("device server: %s online", self._who())
        self.backend.publish(device_event(row, STATUS_EVENT, "online", now=now))

    async def _go_offline(self, device_id: str) -> None:
        self.online = False
        if not self.server.release(device_id, self):
            return  # a newer session owns the device now
        try:
            now = self.backend.now()
            row = await self.backend.device_offline(device_id)
        except (CloudError, StateError, sqlite3.Error) as err:
            log.info("device server: could not record %s offline: %s", device_id, err)
            return
        self.backend.publish(device_event(row, STATUS_EVENT, "offline", now=now))

    async def _describe(self) -> None:
        device_id = self.device_id
        assert device_id is not None
        try:
            reply = await self.exchange.request(describe_request(), self.backend.call_timeout_s)
            if not is_success(reply.code):
                raise ValueError(f"code {reply.code >> 5}.{reply.code & 0x1F:02d}")
            await self._store_description(reply.payload)
        except (CloudError, ValueError, StateError, sqlite3.Error) as err:
            log.info("device server: no description from %s: %s", device_id, err)
        finally:
            self.described.set()

    async def _store_description(self, payload: bytes) -> None:
        device_id = self.device_id
        assert device_id is not None
        functions, variables = parse_describe(payload)
        self.functions, self.variables = functions, variables
        await self.backend.store_description(device_id, functions, variables)

    # -- the message loop ------------------------------------------------------------
    async def _serve(self, backlog: list[bytes]) -> None:
        for frame in backlog:
            await self._handle(decode(frame))
        keepalive = self.server.keepalive_s
        while True:
            try:
                async with asyncio.timeout(keepalive):
                    data = await self.reader.read(READ_CHUNK_BYTES)
            except TimeoutError:
                if self._ping_outstanding:
                    raise _SessionEnd("the device stopped answering") from None
                self._ping_outstanding = True
                self.exchange.send(self.link.ping())
                continue
            if not data:
                if self._fed != self._consumed:
                    raise _SessionEnd("connection closed in the middle of a frame")
                raise _SessionEnd("device disconnected", warn=False)
            self._ping_outstanding = False
            for frame in self._receive(data):
                await self._heard()
                await self._handle(decode(frame))

    async def _heard(self) -> None:
        now = self.backend.now()
        if now - self._heard_written < HEARD_WRITE_INTERVAL_S:
            return
        self._heard_written = now
        device_id = self.device_id
        assert device_id is not None
        await self.backend.device_heard(device_id)

    async def _handle(self, msg: CoapMessage) -> None:
        event = self.link.receive(msg)
        if isinstance(event, Request):
            await self._on_request(msg)
        elif isinstance(event, Response):
            if msg.type == CoapType.CON:  # a confirmable separate response
                self.exchange.send(ack(msg))
            self.exchange.resolve(event)
        elif isinstance(event, UnknownResponse):
            if msg.type == CoapType.CON:
                self.exchange.send(ack(msg))
            log.debug("device server: response with an unknown token from %s", self.device_id)
        elif isinstance(event, Ping) and msg.type == CoapType.CON:
            self.exchange.send(ack(msg))

    async def _on_request(self, msg: CoapMessage) -> None:
        path = msg.uri_path
        head = path[0] if path else b""
        if msg.code == Code.POST and head in (b"E", b"e"):
            await self._on_event(msg)
        elif msg.code == Code.GET and head == b"e":
            self._on_subscribe(msg)
        elif msg.code == Code.GET and head == b"t":
            self._reply(msg, Code.CONTENT, encode_time(self.backend.now()))
        elif msg.code == Code.POST and head == b"d":  # a description posted by the device
            self._reply(msg, Code.CHANGED)
            try:
                await self._store_description(msg.payload)
            except ValueError as err:
                log.info("device server: bad description from %s: %s", self.device_id, err)
            self.described.set()
        elif msg.code == Code.POST and head == b"h":
            self._reply(msg, Code.EMPTY)  # a repeated Hello changes nothing
        else:
            self._reply(msg, Code.NOT_FOUND)

    def _reply(self, msg: CoapMessage, code: int, payload: bytes = b"") -> None:
        """Answer a request: piggybacked on the ACK (CON) or a NON response."""
        self.exchange.send(self.link.reply(msg, code, payload))

    # -- what the device sends --------------------------------------------------------
    def _on_subscribe(self, msg: CoapMessage) -> None:
        if self.subscriptions.add(*decode_subscription(msg)):
            self.server.route_events_to(self)
        self._reply(msg, Code.EMPTY)

    async def _on_event(self, msg: CoapMessage) -> None:
        event = decode_event(msg)
        if not event.name:
            self._reply(msg, Code.BAD_REQUEST)
            return
        self._reply(msg, Code.EMPTY)
        device_id = self.device_id
        assert device_id is not None
        if event.name == CLAIM_CODE_EVENT:
            await self._on_claim_code(device_id, event.data or "")
            return
        now = self.backend.now()
        row = await self.backend.device_owners(device_id)
        if row is not None:
            self.backend.publish(
                device_event(
                    row, event.name, event.data, now=now, ttl=event.ttl_s, private=event.private
                )
            )

    async def _on_claim_code(self, device_id: str, code: str) -> None:
        """cloud-api.md §7.4. The code itself is never published or logged."""
        now = self.backend.now()
        before, owner, row = await self.backend.claim_with_code(device_id, code)
        if owner is None or row is None:
            log.info(
                "device server: claim code from %s not accepted "
                "(unknown, expired, used, or the device has another owner)",
                device_id,
            )
            return
        self.exchange.send_event(CLAIM_CONFIRM_EVENT, None, private=True)
        self.backend.publish(device_event(row, CLAIM_CONFIRM_EVENT, None, now=now))
        changed = before is None or (
            before["owner_user_id"],
            before["owner_customer_id"],
        ) != (row["owner_user_id"], row["owner_customer_id"])
        if changed:  # the new owner's streams learn that the device is online
            self.backend.publish(device_event(row, STATUS_EVENT, "online", now=now))
