"""The cloud's device server: the Photon's TCP protocol on port 5683 (cloud-api.md §8, §9.2).

One asyncio task per connection, a thin transport around the sans-IO codecs
(:mod:`softap_sim.protocol.lightssl`, :mod:`softap_sim.protocol.coap`)::

    S→D nonce (40)        D→S RSA block (256)      S→D session ‖ signature (384)
    D→S Hello (CON POST h)  S→D empty ACK + Hello (CON POST h, no payload)
    → online: devices row updated, ``spark/status`` ``online`` published,
      Describe (CON GET d) sent; then events, subscriptions, time, pings both ways.

The handshake step that needs the device's public key runs in a worker thread
(``asyncio.to_thread``): the RSA work stays off the event loop, and the registry lookup
goes through ``cloud.db.run_sync`` to the database thread, so the event loop never
touches the database either.

:class:`DeviceServer` implements :class:`~softap_sim.cloud.core.DeviceLink`: set
``cloud.link = device_server`` and REST function calls and variable reads reach the
device. Any malformed, truncated or oversized frame, any CoAP error, a missing Hello, a
silent device or an unknown key ends *that* session with one log line; the session is
then marked offline and ``spark/status`` ``offline`` is published. Claim codes and event
payloads are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from softap_sim.cloud import devices
from softap_sim.cloud.core import Cloud
from softap_sim.cloud.errors import CloudError, DeviceError, DeviceOffline, DeviceTimeout
from softap_sim.errors import StateError
from softap_sim.protocol.coap import (
    CoapError,
    CoapMessage,
    CoapType,
    Code,
    Option,
    decode,
    encode,
)
from softap_sim.protocol.lightssl import Channel, ChannelError, ServerHandshake

log = logging.getLogger(__name__)

#: the device must finish the RSA exchange and send its Hello within this time
HANDSHAKE_TIMEOUT_S = 30.0
#: silence after which the server pings; a second silent period ends the session
KEEPALIVE_S = 30.0
#: ``last_heard`` is written at most this often per session
HEARD_WRITE_INTERVAL_S = 5.0
#: how long ``close()`` waits for sessions to record themselves offline
CLOSE_TIMEOUT_S = 5.0
READ_CHUNK_BYTES = 4096
#: a device that stops reading while this much is queued for it is disconnected
MAX_WRITE_BUFFER_BYTES = 256 * 1024
HELLO_MIN_PAYLOAD_BYTES = 8  # product_id, product fw, reserved, flags, platform_id

CLAIM_CODE_EVENT = "spark/device/claim/code"
CLAIM_CONFIRM_EVENT = "spark/device/claim/confirm"
STATUS_EVENT = "spark/status"

#: Describe type codes (cloud-api.md §8.4) → REST variable type names
DESCRIBE_TYPES = {1: "bool", 2: "int32", 4: "string", 9: "double"}

_FUNCTION_NOT_FOUND = "Function not found"
_VARIABLE_NOT_FOUND = "Variable not found"


@dataclass(frozen=True, slots=True)
class Hello:
    """The device's Hello payload (device-os ``Messages::hello``)."""

    product_id: int | None = None
    product_firmware_version: int | None = None
    flags: int = 0
    platform_id: int | None = None
    device_id: str | None = None

    @classmethod
    def parse(cls, payload: bytes) -> Hello:
        """Lenient on short payloads (old firmware); strict on a truncated id field."""
        if len(payload) < HELLO_MIN_PAYLOAD_BYTES:
            if len(payload) >= 4:
                return cls(int.from_bytes(payload[0:2], "big"), int.from_bytes(payload[2:4], "big"))
            return cls()
        device_id = None
        if len(payload) >= HELLO_MIN_PAYLOAD_BYTES + 2:
            id_len = int.from_bytes(payload[8:10], "big")
            raw = payload[10 : 10 + id_len]
            if len(raw) != id_len:
                raise ChannelError("the Hello's device id field is truncated")
            device_id = raw.hex()
        return cls(
            product_id=int.from_bytes(payload[0:2], "big"),
            product_firmware_version=int.from_bytes(payload[2:4], "big"),
            flags=payload[5],
            platform_id=int.from_bytes(payload[6:8], "big"),
            device_id=device_id,
        )


def parse_describe(payload: bytes) -> tuple[list[str], dict[str, str]]:
    """``{"f":[names],"v":{name:type}}`` → (functions, REST variable types).

    Unknown type codes are dropped; anything that is not that shape raises ValueError.
    """
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the describe reply is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the describe reply is not a JSON object")
    raw_f = data.get("f", [])
    raw_v = data.get("v", {})
    if not isinstance(raw_f, list) or not isinstance(raw_v, dict):
        raise ValueError("the describe reply has malformed f/v fields")
    functions = [f for f in raw_f if isinstance(f, str) and f]
    variables: dict[str, str] = {}
    for name, code in raw_v.items():
        if isinstance(code, int) and not isinstance(code, bool) and code in DESCRIBE_TYPES:
            variables[str(name)] = DESCRIBE_TYPES[code]
    return functions, variables


def decode_variable(var_type: str | None, payload: bytes) -> Any:
    """A 2.05 payload as the REST value: int32 BE, double **LE**, bool 1 byte, string raw."""
    if var_type == "int32":
        if len(payload) != 4:
            raise DeviceError("The device sent a malformed int32 value", status=500)
        return int.from_bytes(payload, "big", signed=True)
    if var_type == "double":
        if len(payload) != 8:
            raise DeviceError("The device sent a malformed double value", status=500)
        return struct.unpack("<d", payload)[0]
    if var_type == "bool":
        if len(payload) != 1:
            raise DeviceError("The device sent a malformed bool value", status=500)
        return payload != b"\x00"
    return payload.decode("utf-8", errors="replace")


def _uint(value: bytes) -> int:
    return int.from_bytes(value, "big") if value else 0


def _is_success(code: int) -> bool:
    return code >> 5 == 2


def _update_last_heard(conn: sqlite3.Connection, device_id: str, now: float) -> None:
    conn.execute("UPDATE devices SET last_heard = ? WHERE id = ?", (now, device_id))


def _store_description(
    conn: sqlite3.Connection, device_id: str, functions: list[str], variables: dict[str, str]
) -> None:
    conn.execute(
        "UPDATE devices SET functions = ?, variables = ? WHERE id = ?",
        (json.dumps(functions), json.dumps(variables), device_id),
    )


def _device_row(conn: sqlite3.Connection, device_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchone()
    return None if row is None else dict(row)


class _SessionEnd(Exception):
    """Ends a session; ``warn`` selects the log level of the one line it leaves."""

    def __init__(self, reason: str, *, warn: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.warn = warn


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[CoapMessage]
    message_id: int
    token: bytes


class _Session:
    """One device connection, from the nonce to the offline event."""

    def __init__(
        self, server: DeviceServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.cloud = server.cloud
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer: str | None = str(peer[0]) if isinstance(peer, tuple) and peer else None
        self.device_id: str | None = None
        self.hello: Hello | None = None
        self.online = False
        self.functions: list[str] = []
        self.variables: dict[str, str] = {}
        #: (prefix, my_devices_only) from the device's GET ``e`` requests
        self.subscriptions: list[tuple[str, bool]] = []
        self.described = asyncio.Event()
        self.finished = asyncio.Event()
        self._channel: Channel | None = None
        self._abort_reason: str | None = None
        self._by_mid: dict[int, _Pending] = {}
        self._by_token: dict[bytes, _Pending] = {}
        self._next_token = 0
        self._mid = int.from_bytes(server.random_bytes(2), "big")
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
        for pending in list(self._by_mid.values()) + list(self._by_token.values()):
            if not pending.future.done():
                pending.future.set_exception(DeviceOffline())
        self._by_mid.clear()
        self._by_token.clear()
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
            reply = await asyncio.to_thread(handshake.receive_data, data)
            if reply is None or handshake.session is None:
                raise ChannelError("the handshake did not complete")
            self.device_id = handshake.device_id
            self._channel = Channel(handshake.session)
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
        self.hello = Hello.parse(hello.payload)
        if self.hello.device_id is not None and self.hello.device_id != self.device_id:
            raise _SessionEnd("the Hello names another device id")
        if hello.type == CoapType.CON:
            self._send(CoapMessage(CoapType.ACK, Code.EMPTY, hello.message_id))
        self._send(CoapMessage(CoapType.CON, Code.POST, self._new_mid(), options=[_path(b"h")]))
        return frames[1:]

    def _lookup_key(self, device_id: str) -> rsa.RSAPublicKey | None:
        """Runs in a worker thread (inside ``ServerHandshake.receive_data``)."""
        pem = self.cloud.db.run_sync(lambda conn: devices.device_public_key(conn, device_id))
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
        await self.server._take_over(device_id, self)
        now = self.cloud.now()
        row = await self.cloud.db.run(
            lambda conn: devices.set_device_online(conn, device_id, True, now, ip=self.peer)
        )
        self.online = True
        self._heard_written = now
        log.info("device server: %s online", self._who())
        self.cloud.publish(devices.device_event(row, STATUS_EVENT, "online", now=now))

    async def _go_offline(self, device_id: str) -> None:
        self.online = False
        if not self.server._release(device_id, self):
            return  # a newer session owns the device now
        now = self.cloud.now()
        try:
            row = await self.cloud.db.run(
                lambda conn: devices.set_device_online(conn, device_id, False, now)
            )
        except (CloudError, StateError, sqlite3.Error) as err:
            log.info("device server: could not record %s offline: %s", device_id, err)
            return
        self.cloud.publish(devices.device_event(row, STATUS_EVENT, "offline", now=now))

    async def _describe(self) -> None:
        device_id = self.device_id
        assert device_id is not None
        try:
            reply = await self.request(
                CoapMessage(CoapType.CON, Code.GET, 0, options=[_path(b"d")]),
                self.cloud.call_timeout_s,
            )
            if not _is_success(reply.code):
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
        await self.cloud.db.run(
            lambda conn: _store_description(conn, device_id, functions, variables)
        )

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
                self._send(CoapMessage(CoapType.CON, Code.EMPTY, self._new_mid()))
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
        now = self.cloud.now()
        if now - self._heard_written < HEARD_WRITE_INTERVAL_S:
            return
        self._heard_written = now
        device_id = self.device_id
        assert device_id is not None
        await self.cloud.db.run(lambda conn: _update_last_heard(conn, device_id, now))

    async def _handle(self, msg: CoapMessage) -> None:
        if msg.type in (CoapType.ACK, CoapType.RST):
            self._on_reply(msg)
            return
        if msg.code == Code.EMPTY:  # a ping
            if msg.type == CoapType.CON:
                self._send(CoapMessage(CoapType.ACK, Code.EMPTY, msg.message_id))
            return
        if msg.code >> 5:  # a separate response (NON or CON) to one of our requests
            if msg.type == CoapType.CON:
                self._send(CoapMessage(CoapType.ACK, Code.EMPTY, msg.message_id))
            self._on_reply(msg)
            return
        path = msg.uri_path
        head = path[0] if path else b""
        if msg.code == Code.POST and head in (b"E", b"e"):
            await self._on_event(msg, private=head == b"E")
        elif msg.code == Code.GET and head == b"e":
            self._on_subscribe(msg)
        elif msg.code == Code.GET and head == b"t":
            now = int(self.cloud.now()) & 0xFFFFFFFF
            self._reply(msg, Code.CONTENT, now.to_bytes(4, "big"))
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
        if msg.type == CoapType.CON:
            if code == Code.EMPTY:
                self._send(CoapMessage(CoapType.ACK, Code.EMPTY, msg.message_id))
            else:
                self._send(
                    CoapMessage(CoapType.ACK, code, msg.message_id, msg.token, payload=payload)
                )
        elif code != Code.EMPTY:
            self._send(CoapMessage(CoapType.NON, code, self._new_mid(), msg.token, payload=payload))

    def _on_subscribe(self, msg: CoapMessage) -> None:
        prefix = "/".join(p.decode("utf-8", errors="replace") for p in msg.uri_path[1:])
        mine = b"u" in msg.uri_query
        if (prefix, mine) not in self.subscriptions:
            self.subscriptions.append((prefix, mine))
        self._reply(msg, Code.EMPTY)

    async def _on_event(self, msg: CoapMessage, *, private: bool) -> None:
        name = "/".join(p.decode("utf-8", errors="replace") for p in msg.uri_path[1:])
        if not name:
            self._reply(msg, Code.BAD_REQUEST)
            return
        self._reply(msg, Code.EMPTY)
        ages = msg.option_values(Option.MAX_AGE)
        ttl = _uint(ages[0]) if ages else devices.DEFAULT_EVENT_TTL_S
        data = msg.payload.decode("utf-8", errors="replace") if msg.payload else None
        device_id = self.device_id
        assert device_id is not None
        if name == CLAIM_CODE_EVENT:
            await self._on_claim_code(device_id, data or "")
            return
        now = self.cloud.now()
        row = await self.cloud.db.run(lambda conn: _device_row(conn, device_id))
        if row is not None:
            self.cloud.publish(
                devices.device_event(row, name, data, now=now, ttl=ttl, private=private)
            )

    async def _on_claim_code(self, device_id: str, code: str) -> None:
        """cloud-api.md §7.4. The code itself is never published or logged."""
        now = self.cloud.now()

        def work(
            conn: sqlite3.Connection,
        ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
            before = _device_row(conn, device_id)
            owner = devices.consume_claim_code(conn, code, device_id, now)
            return before, owner, _device_row(conn, device_id)

        before, owner, row = await self.cloud.db.run(work)
        if owner is None or row is None:
            log.info(
                "device server: claim code from %s not accepted "
                "(unknown, expired, used, or the device has another owner)",
                device_id,
            )
            return
        self.send_event(CLAIM_CONFIRM_EVENT, None, private=True)
        self.cloud.publish(devices.device_event(row, CLAIM_CONFIRM_EVENT, None, now=now))
        changed = before is None or (
            before["owner_user_id"],
            before["owner_customer_id"],
        ) != (row["owner_user_id"], row["owner_customer_id"])
        if changed:  # the new owner's streams learn that the device is online
            self.cloud.publish(devices.device_event(row, STATUS_EVENT, "online", now=now))

    # -- outgoing --------------------------------------------------------------------
    def _new_mid(self) -> int:
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    def _new_token(self) -> bytes:
        for _ in range(256):
            self._next_token = (self._next_token + 1) & 0xFF
            token = bytes([self._next_token])
            if token not in self._by_token:
                return token
        raise DeviceError("Too many requests in flight to this device", status=429)

    def _send(self, msg: CoapMessage) -> None:
        """Encrypt and queue one message; encrypt+write is atomic, so IVs chain in order."""
        if self._channel is None or self.writer.is_closing():
            return
        self.writer.write(self._channel.encrypt(encode(msg)))
        if self.writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
            self.abort("the device stopped reading")

    def send_event(self, name: str, data: str | None, *, private: bool = True) -> None:
        """An event to the device: CON POST ``E``/``e`` ‖ name (its ACK is not awaited)."""
        options = [_path(b"E" if private else b"e"), _path(name.encode("utf-8"))]
        payload = data.encode("utf-8") if data else b""
        self._send(CoapMessage(CoapType.CON, Code.POST, self._new_mid(), b"", options, payload))

    async def request(self, msg: CoapMessage, timeout_s: float) -> CoapMessage:
        """Send a CON request with a fresh id and 1-byte token; the response message.

        Piggybacked (ACK with a code) and separate (empty ACK, then NON/CON with the
        token) responses both resolve it; an RST resolves it too (code 0).
        """
        if self._channel is None or self.writer.is_closing() or self.finished.is_set():
            raise DeviceOffline()
        token = self._new_token()
        mid = self._new_mid()
        future: asyncio.Future[CoapMessage] = asyncio.get_running_loop().create_future()
        pending = _Pending(future, mid, token)
        self._by_mid[mid] = pending
        self._by_token[token] = pending
        try:
            self._send(
                CoapMessage(CoapType.CON, msg.code, mid, token, list(msg.options), msg.payload)
            )
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise DeviceTimeout() from None
        finally:
            if self._by_mid.get(mid) is pending:
                del self._by_mid[mid]
            if self._by_token.get(token) is pending:
                del self._by_token[token]

    def _on_reply(self, msg: CoapMessage) -> None:
        if msg.type in (CoapType.ACK, CoapType.RST):
            pending = self._by_mid.pop(msg.message_id, None)
            if pending is None:
                return  # the ACK of a ping, a Hello, an event: nothing waits for it
            if msg.type == CoapType.ACK and msg.code == Code.EMPTY:
                return  # a separate response with the token follows
        else:
            pending = self._by_token.get(msg.token)
            if pending is None:
                log.debug("device server: response with an unknown token from %s", self.device_id)
                return
        self._by_token.pop(pending.token, None)
        self._by_mid.pop(pending.message_id, None)
        if not pending.future.done():
            pending.future.set_result(msg)

    # -- what the REST API asks for --------------------------------------------------
    async def call_function(self, name: str, arg: str, timeout_s: float) -> int:
        options = [_path(b"f"), _path(name.encode("utf-8")), (Option.URI_QUERY, arg.encode())]
        reply = await self.request(
            CoapMessage(CoapType.CON, Code.POST, 0, options=options), timeout_s
        )
        if reply.code == Code.NOT_FOUND:
            raise DeviceError(_FUNCTION_NOT_FOUND, status=404)
        if not _is_success(reply.code):
            raise DeviceError(f"The function call failed ({_code_text(reply.code)})", status=500)
        if len(reply.payload) != 4:
            raise DeviceError("The device sent a malformed function result", status=500)
        return int.from_bytes(reply.payload, "big", signed=True)

    async def get_variable(self, name: str, timeout_s: float) -> Any:
        var_type = self.variables.get(name)
        if var_type is None:
            device_id = self.device_id
            assert device_id is not None
            row = await self.cloud.db.run(lambda conn: _device_row(conn, device_id))
            if row is not None:
                try:
                    var_type = json.loads(row["variables"] or "{}").get(name)
                except (json.JSONDecodeError, AttributeError):
                    var_type = None
        options = [_path(b"v"), _path(name.encode("utf-8"))]
        reply = await self.request(
            CoapMessage(CoapType.CON, Code.GET, 0, options=options), timeout_s
        )
        if reply.code == Code.NOT_FOUND:
            raise DeviceError(_VARIABLE_NOT_FOUND, status=404)
        if not _is_success(reply.code):
            raise DeviceError(f"The variable read failed ({_code_text(reply.code)})", status=500)
        return decode_variable(var_type, reply.payload)


def _path(segment: bytes) -> tuple[int, bytes]:
    return (Option.URI_PATH, segment)


def _code_text(code: int) -> str:
    return f"CoAP {code >> 5}.{code & 0x1F:02d}"


class DeviceServer:
    """The Photon TCP endpoint of the local cloud, and its :class:`DeviceLink`.

    ``DeviceServer(cloud, server_key)`` binds ``host:port`` on :meth:`start` (port 0
    picks a free port, written back to ``.port``); ``cloud.link = server`` routes REST
    calls here. Only devices whose id and public key are in the registry
    (``devices.register_device``) complete the handshake.
    """

    def __init__(
        self,
        cloud: Cloud,
        server_key: rsa.RSAPrivateKey,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        keepalive_s: float = KEEPALIVE_S,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.cloud = cloud
        self.server_key = server_key
        self.host = host
        self.port = port
        self.handshake_timeout_s = handshake_timeout_s
        self.keepalive_s = keepalive_s
        self.random_bytes = random_bytes
        self._server: asyncio.Server | None = None
        self._sessions: dict[str, _Session] = {}  # device id → its one online session
        self._connections: set[_Session] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._server is not None:
            return
        # a fleet connecting at once must not overflow the accept queue (SYN drops push
        # devices into kernel retransmit back-off)
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, backlog=1024
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("device server: listening on %s:%d", self.host, self.port)

    async def close(self) -> None:
        """Stop listening, end every session (each records itself offline), wait for them."""
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
        session = _Session(self, reader, writer)
        self._connections.add(session)
        try:
            await session.run()
        finally:
            self._connections.discard(session)
            self._tasks.discard(task)

    async def _take_over(self, device_id: str, session: _Session) -> None:
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

    def _release(self, device_id: str, session: _Session) -> bool:
        """Forget ``session``; False when another session is the device's current one."""
        current = self._sessions.get(device_id)
        if current is session:
            del self._sessions[device_id]
        return current is None or current is session

    def _session(self, device_id: str) -> _Session:
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
        return await self._session(device_id).call_function(name, arg, timeout_s)

    async def get_variable(self, device_id: str, name: str, timeout_s: float) -> Any:
        """Read a variable, decoded per its described type (int, float, bool or str)."""
        return await self._session(device_id).get_variable(name, timeout_s)

    # -- extras ----------------------------------------------------------------------
    def online_devices(self) -> list[str]:
        return sorted(self._sessions)

    def subscriptions(self, device_id: str) -> list[tuple[str, bool]]:
        """The device's event subscriptions: (prefix, MY_DEVICES only)."""
        return list(self._session(device_id).subscriptions)

    def send_event(
        self, device_id: str, name: str, data: str | None = None, *, private: bool = True
    ) -> None:
        """Send an event to a connected device (``DeviceOffline`` if it is not)."""
        self._session(device_id).send_event(name, data, private=private)

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


__all__ = [
    "DESCRIBE_TYPES",
    "DeviceServer",
    "Hello",
    "decode_variable",
    "parse_describe",
]
