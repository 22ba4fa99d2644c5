"""The cloud's device server (TCP 5683) against a scripted Photon built from the codecs.

``FakePhoton`` speaks the device side with ``DeviceHandshake``/``Channel``/CoAP over
``asyncio.open_connection`` and answers Describe, function calls, variable reads and
pings from tables the test sets. Nothing here sleeps to synchronise: tests wait on
events (``Events.wait``, the device's queues) with bounded timeouts, and "nothing
happened" is proven by a later request/reply on the same, ordered connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from softap_sim.cloud import hashing, models
from softap_sim.cloud.app import CloudServer
from softap_sim.cloud.backend import CloudBackend
from softap_sim.cloud.db import Database
from softap_sim.cloud.device_exchange import variable_value
from softap_sim.cloud.device_server import DeviceServer
from softap_sim.cloud.errors import DeviceError, DeviceOffline, DeviceTimeout
from softap_sim.cloud.models.claims import CLAIM_CODE_LIFETIME_S
from softap_sim.cloud.principal import Principal
from softap_sim.protocol.coap import CoapMessage, CoapType, Code, Option, decode, encode
from softap_sim.protocol.lightssl import Channel, ChannelError, DeviceHandshake
from softap_sim.protocol.link import Hello, parse_describe

T0 = 1_700_000_000.0
WAIT_S = 5.0  # the bound of every wait; nothing should come close

DEV = "0123456789abcdef01234567"
DEV2 = "0123456789abcdef0123beef"
UNREGISTERED = "0123456789abcdef0000dead"
ALICE, BOB = "u-alice", "u-bob"
WIDGET, CAROL = 101, "c-carol"
TOK_ALICE = "a" * 40
LOGGER = "softap_sim.cloud.device_server"

SERVER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
DEVICE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Events:
    """A ``cloud.subscribers`` callback that records events and lets tests wait for them."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, event: dict[str, Any]) -> None:
        self.items.append(event)
        self._changed.set()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.items if e["name"] == name]

    async def wait(self, name: str, data: str | None = None, *, count: int = 1) -> dict[str, Any]:
        """The ``count``-th event with that name (and data, when given)."""
        async with asyncio.timeout(WAIT_S):
            while True:
                found = [e for e in self.named(name) if data is None or e["data"] == data]
                if len(found) >= count:
                    return found[count - 1]
                self._changed.clear()
                await self._changed.wait()


# -- the scripted device ---------------------------------------------------------------
def _opt_path(*parts: bytes) -> list[tuple[int, bytes]]:
    return [(Option.URI_PATH, p) for p in parts]


@dataclass
class FakePhoton:
    """The device side, scripted: tables for functions/variables, queues for what arrives."""

    port: int
    device_id: str = DEV
    key: rsa.RSAPrivateKey = DEVICE_KEY
    functions: dict[str, Callable[[str], int | None]] = field(default_factory=dict)
    #: name → (describe type code, payload bytes)
    variables: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    describe: bool = True
    answer_pings: bool = True
    separate: bool = False  # function results as empty ACK + NON 2.04 instead of piggybacked
    hello_payload: bytes | None = None
    server_hello: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    events: asyncio.Queue[tuple[str, str | None, bool]] = field(default_factory=asyncio.Queue)
    pings: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    calls: list[tuple[str, str]] = field(default_factory=list)
    on_call: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.channel: Channel | None = None
        self._mid = 0
        self._acks: dict[int, asyncio.Future[CoapMessage]] = {}
        self._task: asyncio.Task[None] | None = None

    async def handshake(self) -> None:
        """Steps 1-3; raises ChannelError / IncompleteReadError when refused."""
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        hs = DeviceHandshake(self.key, SERVER_KEY.public_key(), bytes.fromhex(self.device_id))
        async with asyncio.timeout(WAIT_S):
            step2 = hs.receive_data(await self.reader.readexactly(40))
            assert step2 is not None
            self.writer.write(step2)
            hs.receive_data(await self.reader.readexactly(384))
        assert hs.session is not None
        self.channel = Channel(hs.session)
        self._mid = int.from_bytes(hs.session[32:34], "big")

    async def connect(self) -> FakePhoton:
        """Handshake, Hello, and wait for the server's Hello."""
        await self.handshake()
        self._task = asyncio.create_task(self._read_loop())
        payload = self.hello_payload
        if payload is None:
            raw_id = bytes.fromhex(self.device_id)
            payload = struct.pack(">HHBBHH", 6, 1, 0, 0, 6, len(raw_id)) + raw_id
        await self.send_con(Code.POST, _opt_path(b"h"), payload)
        async with asyncio.timeout(WAIT_S):
            await self.server_hello.wait()
        return self

    def send(self, msg: CoapMessage) -> None:
        assert self.channel is not None
        assert self.writer is not None
        self.writer.write(self.channel.encrypt(encode(msg)))

    def send_raw(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    def next_mid(self) -> int:
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    async def send_con(
        self,
        code: int,
        options: list[tuple[int, bytes]],
        payload: bytes = b"",
        token: bytes = b"",
    ) -> CoapMessage:
        """A CON message; its ACK (bounded wait)."""
        mid = self.next_mid()
        future: asyncio.Future[CoapMessage] = asyncio.get_running_loop().create_future()
        self._acks[mid] = future
        self.send(CoapMessage(CoapType.CON, code, mid, token, options, payload))
        async with asyncio.timeout(WAIT_S):
            return await future

    async def publish(
        self, name: str, data: str | None = None, *, private: bool = True, ttl: int = 60
    ) -> CoapMessage:
        options = _opt_path(b"E" if private else b"e", name.encode())
        if ttl != 60:
            options.append((Option.MAX_AGE, ttl.to_bytes(4, "big").lstrip(b"\x00")))
        return await self.send_con(Code.POST, options, (data or "").encode())

    async def time(self) -> int:
        """A time request; also a barrier: everything sent before it has been handled."""
        ack = await self.send_con(Code.GET, _opt_path(b"t"), token=b"\x07")
        assert ack.type == CoapType.ACK
        assert ack.code == Code.CONTENT
        assert ack.token == b"\x07"
        return int.from_bytes(ack.payload, "big")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
        if self._task is not None:
            async with asyncio.timeout(WAIT_S):
                await self._task

    async def wait_closed_by_server(self) -> None:
        """The server ended the connection (EOF or reset)."""
        async with asyncio.timeout(WAIT_S):
            if self._task is None:
                assert self.reader is not None
                while await self.reader.read(4096):
                    pass
            else:
                await self.closed.wait()

    async def _read_loop(self) -> None:
        assert self.reader is not None
        assert self.channel is not None
        try:
            while True:
                data = await self.reader.read(4096)
                if not data:
                    break
                for frame in self.channel.receive_data(data):
                    self._handle(decode(frame))
        except (ConnectionError, ChannelError):
            pass
        finally:
            self.closed.set()
            for future in self._acks.values():
                if not future.done():
                    future.set_exception(ConnectionResetError("closed"))

    def _ack(self, msg: CoapMessage, code: int = Code.EMPTY, payload: bytes = b"") -> None:
        token = msg.token if code != Code.EMPTY else b""
        self.send(CoapMessage(CoapType.ACK, code, msg.message_id, token, payload=payload))

    def _handle(self, msg: CoapMessage) -> None:
        if msg.type == CoapType.ACK:
            future = self._acks.pop(msg.message_id, None)
            if future is not None and not future.done():
                future.set_result(msg)
            return
        path = msg.uri_path
        head = path[0] if path else b""
        if msg.code == Code.EMPTY:
            self.pings.put_nowait(msg.message_id)
            if self.answer_pings:
                self._ack(msg)
        elif msg.code == Code.POST and head == b"h":
            self._ack(msg)
            self.server_hello.set()
        elif msg.code == Code.GET and head == b"d":
            if self.describe:
                body = {
                    "f": list(self.functions),
                    "v": {k: t for k, (t, _v) in self.variables.items()},
                }
                self._ack(msg, Code.CONTENT, json.dumps(body).encode())
        elif msg.code == Code.POST and head in (b"E", b"e"):
            name = path[1].decode()
            self.events.put_nowait((name, msg.payload.decode() or None, head == b"E"))
            if msg.type == CoapType.CON:
                self._ack(msg)
        elif msg.code == Code.POST and head == b"f":
            name = path[1].decode()
            arg = b"".join(msg.uri_query).decode()
            self.calls.append((name, arg))
            if self.on_call is not None:
                self.on_call()
                return
            handler = self.functions.get(name)
            if handler is None:
                self._ack(msg, Code.NOT_FOUND)
                return
            result = handler(arg)
            if result is None:
                return  # never answers
            payload = result.to_bytes(4, "big", signed=True)
            if self.separate:
                self._ack(msg)
                self.send(
                    CoapMessage(CoapType.NON, Code.CHANGED, self.next_mid(), msg.token, [], payload)
                )
            else:
                self._ack(msg, Code.CHANGED, payload)
        elif msg.code == Code.GET and head == b"v":
            found = self.variables.get(path[1].decode())
            if found is None:
                self._ack(msg, Code.NOT_FOUND)
            else:
                self._ack(msg, Code.CONTENT, found[1])


# -- the world ---------------------------------------------------------------------------
@dataclass
class Env:
    cloud: CloudBackend
    server: DeviceServer
    events: Events
    clock: Clock
    photons: list[FakePhoton] = field(default_factory=list)

    def photon(self, **kwargs: Any) -> FakePhoton:
        photon = FakePhoton(self.server.port, **kwargs)
        self.photons.append(photon)
        return photon

    async def sql(self, query: str, *args: Any) -> list[sqlite3.Row]:
        return await self.cloud.db.run(lambda c: c.execute(query, args).fetchall())

    async def device(self, device_id: str = DEV) -> sqlite3.Row:
        rows = await self.sql("SELECT * FROM devices WHERE id = ?", device_id)
        return rows[0]

    async def claim_code(self, principal: Principal, now: float | None = None) -> str:
        at = self.clock() if now is None else now
        code, _ids = await self.cloud.db.run(
            lambda c: models.claims.create_claim_code(c, principal, now=at)
        )
        return code


def seed(conn: sqlite3.Connection) -> None:
    for uid in (ALICE, BOB):
        conn.execute(
            "INSERT INTO users (id, email, created_at) VALUES (?, ?, ?)",
            (uid, f"{uid[2:]}@example.com", T0),
        )
    conn.execute(
        "INSERT INTO products (id, slug, name, owner_user_id, created_at) VALUES (?,?,?,?,?)",
        (WIDGET, "widget", "Widget", None, T0),
    )
    conn.execute(
        "INSERT INTO customers (id, product_id, email, created_at) VALUES (?,?,?,?)",
        (CAROL, WIDGET, "carol@example.com", T0),
    )
    conn.execute(
        "INSERT INTO tokens (hash, kind, client_id, user_id, expires_at, created_at) "
        "VALUES (?, 'access', 'particle', ?, NULL, ?)",
        (hashing.digest(TOK_ALICE), ALICE, T0),
    )
    models.devices.register_device(conn, device_id=DEV, public_key_pem=_pem(DEVICE_KEY), now=T0)
    models.devices.register_device(conn, device_id=DEV2, public_key_pem=_pem(OTHER_KEY), now=T0)


P_ALICE = Principal("user", "h", "particle", user_id=ALICE)
P_BOB = Principal("user", "h", "particle", user_id=BOB)
P_CAROL = Principal("customer", "h", "widget-app", customer_id=CAROL, product_id=WIDGET)


async def _make_env(**server_kwargs: Any) -> AsyncIterator[Env]:
    db = Database(None)
    await db.open()
    await db.run(seed)
    clock = Clock(T0)
    cloud = CloudBackend(db, now=clock, call_timeout_s=WAIT_S)
    events = Events()
    cloud.subscribers.add(events)
    server = DeviceServer(cloud, SERVER_KEY, **server_kwargs)
    cloud.link = server
    await server.start()
    env = Env(cloud, server, events, clock)
    try:
        yield env
    finally:
        for photon in env.photons:
            await photon.close()
        await server.close()
        await db.close()


@pytest_asyncio.fixture
async def env() -> AsyncIterator[Env]:
    async for value in _make_env():
        yield value


@pytest_asyncio.fixture
async def fast_env() -> AsyncIterator[Env]:
    """Short keep-alive and handshake limits, for the timing tests."""
    async for value in _make_env(keepalive_s=0.2, handshake_timeout_s=1.0):
        yield value


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


async def _assert_still_serving(env: Env) -> None:
    """Another device connects, is described and answers a call."""
    photon = env.photon(device_id=DEV2, key=OTHER_KEY, functions={"ok": lambda a: 7})
    await photon.connect()
    await env.server.wait_ready(DEV2, WAIT_S)
    assert await env.server.call_function(DEV2, "ok", "", WAIT_S) == 7
    await photon.close()


# -- handshake, Hello, online/offline -------------------------------------------------
@pytest.mark.asyncio
async def test_handshake_hello_online_and_offline(env: Env) -> None:
    photon = await env.photon().connect()
    online = await env.events.wait("spark/status", "online")
    assert online["coreid"] == DEV
    assert online["private"] is True
    assert env.server.is_online(DEV)
    assert env.server.online_devices() == [DEV]
    row = await env.device()
    assert row["online"] == 1
    assert row["last_handshake_at"] == T0
    assert row["last_heard"] == T0
    assert row["last_ip_address"] == "127.0.0.1"

    env.clock.t = T0 + 100
    await photon.close()
    offline = await env.events.wait("spark/status", "offline")
    assert offline["coreid"] == DEV
    assert not env.server.is_online(DEV)
    row = await env.device()
    assert row["online"] == 0
    assert row["last_heard"] == T0 + 100
    assert row["last_handshake_at"] == T0


@pytest.mark.asyncio
async def test_server_hello_is_a_con_post_h_after_the_ack(env: Env) -> None:
    photon = env.photon()
    await photon.handshake()
    seen: list[CoapMessage] = []
    assert photon.reader is not None
    assert photon.channel is not None
    hello = CoapMessage(CoapType.CON, Code.POST, 4242, b"", _opt_path(b"h"), b"\x00" * 8)
    photon.send(hello)
    async with asyncio.timeout(WAIT_S):
        while len(seen) < 2:
            for frame in photon.channel.receive_data(await photon.reader.read(4096)):
                seen.append(decode(frame))
    ack, server_hello = seen[:2]
    assert (ack.type, ack.code, ack.message_id, ack.token) == (CoapType.ACK, Code.EMPTY, 4242, b"")
    assert server_hello.type == CoapType.CON
    assert server_hello.code == Code.POST
    assert server_hello.uri_path == [b"h"]
    await photon.close()


@pytest.mark.asyncio
async def test_unknown_device_is_refused(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    photon = env.photon(device_id=UNREGISTERED)
    with pytest.raises(asyncio.IncompleteReadError):
        await photon.handshake()
    await photon.wait_closed_by_server()
    assert not env.server.is_online(UNREGISTERED)
    assert env.events.items == []
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert UNREGISTERED in warnings[0].getMessage()
    await _assert_still_serving(env)


@pytest.mark.asyncio
async def test_wrong_key_is_refused(env: Env) -> None:
    photon = env.photon(key=OTHER_KEY)  # DEV is registered with DEVICE_KEY
    with pytest.raises(ChannelError):
        await photon.handshake()
    await photon.close()
    await _assert_still_serving(env)
    assert env.events.named("spark/status") == [
        e for e in env.events.named("spark/status") if e["coreid"] == DEV2
    ]
    assert (await env.device(DEV))["online"] == 0


@pytest.mark.asyncio
async def test_hello_naming_another_device_is_refused(env: Env) -> None:
    raw = bytes.fromhex(DEV2)
    photon = env.photon(hello_payload=struct.pack(">HHBBHH", 6, 1, 0, 0, 6, 12) + raw)
    with pytest.raises((ConnectionResetError, TimeoutError)):
        await photon.connect()
    await photon.wait_closed_by_server()
    assert not env.server.is_online(DEV)


@pytest.mark.asyncio
async def test_first_message_must_be_hello(env: Env) -> None:
    photon = env.photon()
    await photon.handshake()
    photon.send(CoapMessage(CoapType.CON, Code.GET, 1, b"\x01", _opt_path(b"t")))
    await photon.wait_closed_by_server()
    assert not env.server.is_online(DEV)
    assert env.events.items == []


@pytest.mark.asyncio
async def test_a_new_session_replaces_the_old_one(env: Env) -> None:
    first = await env.photon().connect()
    second = await env.photon().connect()
    await first.wait_closed_by_server()
    await env.events.wait("spark/status", "online", count=2)
    statuses = [e["data"] for e in env.events.named("spark/status")]
    assert statuses == ["online", "offline", "online"]
    assert env.server.is_online(DEV)
    assert (await env.device())["online"] == 1
    assert await second.time() == int(T0)


@pytest.mark.asyncio
async def test_server_close_marks_devices_offline(env: Env) -> None:
    photon = await env.photon().connect()
    await env.server.wait_ready(DEV, WAIT_S)
    await env.server.close()
    await photon.wait_closed_by_server()
    assert env.events.named("spark/status")[-1]["data"] == "offline"
    assert (await env.device())["online"] == 0
    assert not env.server.is_online(DEV)


# -- describe ----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_describe_is_stored(env: Env) -> None:
    await env.photon(
        functions={"led": lambda a: 1, "reset": lambda a: 0},
        variables={"t": (9, b""), "n": (2, b""), "s": (4, b""), "b": (1, b""), "x": (7, b"")},
    ).connect()
    await env.server.wait_ready(DEV, WAIT_S)
    row = await env.device()
    assert json.loads(row["functions"]) == ["led", "reset"]
    assert json.loads(row["variables"]) == {"t": "double", "n": "int32", "s": "string", "b": "bool"}


@pytest.mark.asyncio
async def test_a_device_that_does_not_describe_stays_online(env: Env) -> None:
    env.cloud.call_timeout_s = 0.2
    photon = await env.photon(describe=False).connect()
    await env.server.wait_ready(DEV, WAIT_S)
    assert env.server.is_online(DEV)
    assert json.loads((await env.device())["functions"]) == []
    assert await photon.time() == int(T0)


def test_parse_describe_and_hello() -> None:
    assert parse_describe(b'{"f":["a"],"v":{"x":2,"y":true,"z":5},"p":6,"m":[]}') == (
        ["a"],
        {"x": "int32"},
    )
    for bad in (b"nope", b"[]", b'{"f":{}}'):
        with pytest.raises(ValueError):
            parse_describe(bad)
    raw = bytes.fromhex(DEV)
    hello = Hello.decode(struct.pack(">HHBBHH", 6, 3, 0, 2, 6, 12) + raw)
    assert hello == Hello(6, 3, 2, 6, DEV)
    assert Hello.decode(b"\x00\x06\x00\x01") == Hello(6, 1)
    with pytest.raises(ChannelError):
        Hello.decode(struct.pack(">HHBBHH", 6, 3, 0, 2, 6, 12) + raw[:5])


# -- events, subscriptions, time, pings, last_heard ----------------------------------
@pytest.mark.asyncio
async def test_device_events_are_published(env: Env) -> None:
    photon = await env.photon().connect()
    ack = await photon.publish("temp", "21.5")
    assert (ack.type, ack.code) == (CoapType.ACK, Code.EMPTY)
    await photon.publish("door/open", "yes", private=False, ttl=30)
    photon.send(
        CoapMessage(CoapType.NON, Code.POST, photon.next_mid(), b"", _opt_path(b"E", b"quiet"))
    )
    await photon.time()
    temp = env.events.named("temp")[0]
    assert (temp["data"], temp["ttl"], temp["private"], temp["coreid"]) == ("21.5", 60, True, DEV)
    door = env.events.named("door/open")[0]
    assert (door["data"], door["ttl"], door["private"]) == ("yes", 30, False)
    quiet = env.events.named("quiet")[0]
    assert quiet["data"] is None


@pytest.mark.asyncio
async def test_subscriptions_time_and_pings(env: Env) -> None:
    photon = await env.photon().connect()
    ack = await photon.send_con(
        Code.GET, [*_opt_path(b"e", b"spark"), (Option.URI_QUERY, b"u")], token=b"\x01"
    )
    assert ack.type == CoapType.ACK
    await photon.send_con(Code.GET, _opt_path(b"e", b"weather"), token=b"\x02")
    assert env.server.subscriptions(DEV) == [("spark", True), ("weather", False)]
    env.server.send_event(DEV, "weather/rain", "yes", private=False)
    async with asyncio.timeout(WAIT_S):
        assert await photon.events.get() == ("weather/rain", "yes", False)
    with pytest.raises(DeviceOffline):
        env.server.send_event(DEV2, "x")
    env.clock.t = T0 + 12.9
    assert await photon.time() == int(T0) + 12
    ping = await photon.send_con(Code.EMPTY, [])
    assert (ping.type, ping.code, ping.token, ping.payload) == (CoapType.ACK, Code.EMPTY, b"", b"")
    unknown = await photon.send_con(Code.GET, _opt_path(b"zz"), token=b"\x03")
    assert (unknown.code, unknown.token) == (Code.NOT_FOUND, b"\x03")


@pytest.mark.asyncio
async def test_last_heard_is_updated(env: Env) -> None:
    photon = await env.photon().connect()
    env.clock.t = T0 + 60
    await photon.send_con(Code.EMPTY, [])
    assert (await env.device())["last_heard"] == T0 + 60
    env.clock.t = T0 + 61  # throttled: within the write interval
    await photon.send_con(Code.EMPTY, [])
    assert (await env.device())["last_heard"] == T0 + 60


@pytest.mark.asyncio
async def test_server_pings_a_silent_device(fast_env: Env) -> None:
    photon = await fast_env.photon().connect()
    async with asyncio.timeout(WAIT_S):
        await photon.pings.get()
        await photon.pings.get()  # answered, so the session lives on
    assert fast_env.server.is_online(DEV)


@pytest.mark.asyncio
async def test_a_device_that_stops_answering_is_dropped(
    fast_env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    photon = await fast_env.photon(answer_pings=False).connect()
    await photon.wait_closed_by_server()
    await fast_env.events.wait("spark/status", "offline")
    assert any("stopped answering" in r.getMessage() for r in _warnings(caplog))


@pytest.mark.asyncio
async def test_handshake_timeout(fast_env: Env) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", fast_env.server.port)
    try:
        assert len(await reader.readexactly(40)) == 40
        async with asyncio.timeout(WAIT_S):
            assert await reader.read() == b""  # closed after handshake_timeout_s
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# -- claim codes -----------------------------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("principal", "column", "owner"),
    [(P_ALICE, "owner_user_id", ALICE), (P_CAROL, "owner_customer_id", CAROL)],
)
async def test_claim_code_flow(
    env: Env,
    caplog: pytest.LogCaptureFixture,
    principal: Principal,
    column: str,
    owner: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    code = await env.claim_code(principal)
    photon = await env.photon().connect()
    await env.events.wait("spark/status", "online")
    env.clock.t = T0 + 5
    await photon.publish("spark/device/claim/code", code)
    async with asyncio.timeout(WAIT_S):
        name, data, private = await photon.events.get()
    assert (name, data, private) == ("spark/device/claim/confirm", None, True)
    row = await env.device()
    assert row[column] == owner
    if principal is P_CAROL:
        assert row["product_id"] == WIDGET
    used = await env.sql("SELECT used_at, device_id FROM claim_codes")
    assert [tuple(r) for r in used] == [(T0 + 5, DEV)]
    confirm = env.events.named("spark/device/claim/confirm")[0]
    assert confirm[column] == owner
    assert env.events.named("spark/device/claim/code") == []  # the code is not broadcast
    online = await env.events.wait("spark/status", "online", count=2)
    assert online[column] == owner  # the new owner's streams see the device online
    assert code not in caplog.text


@pytest.mark.asyncio
async def test_a_repeated_claim_code_is_confirmed_again(env: Env) -> None:
    code = await env.claim_code(P_ALICE)
    photon = await env.photon().connect()
    for _ in range(2):
        await photon.publish("spark/device/claim/code", code)
        async with asyncio.timeout(WAIT_S):
            assert (await photon.events.get())[0] == "spark/device/claim/confirm"
    assert len(env.events.named("spark/status")) == 2  # online, online-for-the-new-owner


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["unknown", "expired", "used", "owned-elsewhere", "empty"])
async def test_rejected_claim_codes_get_no_confirm(
    env: Env, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.DEBUG)
    code = "x" * 63
    if case == "expired":
        code = await env.claim_code(P_ALICE, now=T0 - CLAIM_CODE_LIFETIME_S - 1)
    elif case == "used":
        code = await env.claim_code(P_ALICE)
        await env.cloud.db.run(lambda c: models.claims.consume_claim_code(c, code, DEV2, T0))
    elif case == "owned-elsewhere":
        code = await env.claim_code(P_ALICE)
        await env.sql("UPDATE devices SET owner_user_id = ? WHERE id = ?", BOB, DEV)
    elif case == "empty":
        code = ""
    photon = await env.photon().connect()
    await photon.publish("spark/device/claim/code", code)
    await photon.time()  # the claim was handled before this reply
    assert photon.events.empty()
    assert env.events.named("spark/device/claim/confirm") == []
    row = await env.device()
    assert row["owner_user_id"] == (BOB if case == "owned-elsewhere" else None)
    if code:
        assert code not in caplog.text


# -- functions and variables -----------------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.parametrize("separate", [False, True])
async def test_function_calls(env: Env, separate: bool) -> None:
    photon = await env.photon(
        functions={"len": len, "neg": lambda a: -5, "big": lambda a: 2**31 - 1},
        separate=separate,
    ).connect()
    await env.server.wait_ready(DEV, WAIT_S)
    assert await env.server.call_function(DEV, "len", "héllo", WAIT_S) == 5
    assert await env.cloud.link.call_function(DEV, "neg", "", WAIT_S) == -5
    assert await env.server.call_function(DEV, "big", "x", WAIT_S) == 2**31 - 1
    assert photon.calls == [("len", "héllo"), ("neg", ""), ("big", "x")]
    results = await asyncio.gather(
        *(env.server.call_function(DEV, "len", "a" * i, WAIT_S) for i in range(20))
    )
    assert results == list(range(20))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("code", "payload", "expected"),
    [
        (2, (-7).to_bytes(4, "big", signed=True), -7),
        (9, struct.pack("<d", 3.25), 3.25),
        (1, b"\x01", True),
        (1, b"\x00", False),
        (4, "héllo".encode(), "héllo"),
    ],
)
async def test_variable_reads(env: Env, code: int, payload: bytes, expected: Any) -> None:
    await env.photon(variables={"v": (code, payload)}).connect()
    await env.server.wait_ready(DEV, WAIT_S)
    value = await env.server.get_variable(DEV, "v", WAIT_S)
    assert value == expected
    assert type(value) is type(expected)


def test_decode_variable_rejects_wrong_sizes() -> None:
    for var_type, payload in [("int32", b"\x00"), ("double", b"\x00" * 4), ("bool", b"")]:
        with pytest.raises(DeviceError):
            variable_value(var_type, payload)


@pytest.mark.asyncio
async def test_not_found_answers(env: Env) -> None:
    await env.photon(functions={"a": lambda a: 1}).connect()
    await env.server.wait_ready(DEV, WAIT_S)
    with pytest.raises(DeviceError) as fn_err:
        await env.server.call_function(DEV, "nope", "", WAIT_S)
    assert (fn_err.value.status, fn_err.value.body()) == (
        404,
        {"ok": False, "error": "Function not found"},
    )
    with pytest.raises(DeviceError) as var_err:
        await env.server.get_variable(DEV, "nope", WAIT_S)
    assert (var_err.value.status, var_err.value.body()) == (
        404,
        {"ok": False, "error": "Variable not found"},
    )


@pytest.mark.asyncio
async def test_timeout_and_offline(env: Env) -> None:
    with pytest.raises(DeviceOffline):
        await env.server.call_function(DEV, "slow", "", WAIT_S)
    with pytest.raises(DeviceOffline):
        await env.server.get_variable(DEV, "v", WAIT_S)
    photon = await env.photon(functions={"slow": lambda a: None}).connect()
    with pytest.raises(DeviceTimeout) as err:
        await env.server.call_function(DEV, "slow", "", 0.1)
    assert (err.value.status, err.value.body()) == (408, {"error": "Timed out."})
    assert await photon.time() == int(T0)  # the session survives a timeout
    await photon.close()
    await env.events.wait("spark/status", "offline")
    with pytest.raises(DeviceOffline):
        await env.server.call_function(DEV, "slow", "", WAIT_S)


@pytest.mark.asyncio
async def test_a_call_pending_when_the_device_leaves_is_offline(env: Env) -> None:
    photon = env.photon(functions={"f": lambda a: 1})
    photon.on_call = lambda: photon.writer.close() if photon.writer else None
    await photon.connect()
    with pytest.raises(DeviceOffline):
        await env.server.call_function(DEV, "f", "", WAIT_S)


# -- malformed input -----------------------------------------------------------------------
def _frame(photon: FakePhoton, plaintext: bytes) -> bytes:
    assert photon.channel is not None
    return photon.channel.encrypt(plaintext)


MALFORMED: dict[str, Callable[[FakePhoton], bytes]] = {
    "length-not-a-block": lambda p: b"\x00\x05" + b"\x00" * 5,
    "oversized": lambda p: b"\x80\x00" + b"\x00" * 64,
    "zero-length": lambda p: b"\x00\x00",
    "bad-padding": lambda p: b"\x00\x10" + b"\x42" * 16,
    "not-coap": lambda p: _frame(p, b"\x00"),
    "truncated-coap": lambda p: _frame(p, b"\x41\x02\x00"),
    "coap-bad-option": lambda p: _frame(p, b"\x40\x02\x00\x01\xf1x"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_frames_end_the_session(
    env: Env, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    photon = await env.photon().connect()
    await env.server.wait_ready(DEV, WAIT_S)
    photon.send_raw(MALFORMED[case](photon))
    await photon.wait_closed_by_server()
    await env.events.wait("spark/status", "offline")
    assert not env.server.is_online(DEV)
    warnings = _warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "protocol error" in warnings[0].getMessage()
    await _assert_still_serving(env)


@pytest.mark.asyncio
async def test_a_frame_cut_short_by_close(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    photon = await env.photon().connect()
    await env.server.wait_ready(DEV, WAIT_S)  # the server is not writing: a clean FIN
    frame = _frame(photon, encode(CoapMessage(CoapType.CON, Code.EMPTY, 9)))
    photon.send_raw(frame[:-3])
    await photon.close()
    await env.events.wait("spark/status", "offline")
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "middle of a frame" in warnings[0].getMessage()
    await _assert_still_serving(env)


@pytest.mark.asyncio
@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\n\r\n", b"\xff" * 256, b"\x00" * 1000])
async def test_garbage_before_the_handshake(
    env: Env, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", env.server.port)
    try:
        assert len(await reader.readexactly(40)) == 40
        writer.write(garbage)
        if len(garbage) < 256:
            writer.write_eof()
        async with asyncio.timeout(WAIT_S):
            with contextlib.suppress(ConnectionResetError):
                while await reader.read(4096):
                    pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert len(_warnings(caplog)) == 1
    assert env.events.items == []
    await _assert_still_serving(env)


# -- through the REST API ----------------------------------------------------------------
@pytest.mark.asyncio
async def test_rest_calls_reach_the_device(env: Env) -> None:
    code = await env.claim_code(P_ALICE)
    photon = await env.photon(
        functions={"len": len, "slow": lambda a: None},
        variables={"temp": (9, struct.pack("<d", 21.5))},
    ).connect()
    await photon.publish("spark/device/claim/code", code)
    async with asyncio.timeout(WAIT_S):
        await photon.events.get()
    await env.server.wait_ready(DEV, WAIT_S)
    auth = {"Authorization": f"Bearer {TOK_ALICE}"}
    async with CloudServer(env.cloud) as rest, aiohttp.ClientSession(rest.url) as http:
        async with http.post(f"/v1/devices/{DEV}/len", json={"args": "abc"}, headers=auth) as r:
            assert (r.status, (await r.json())["return_value"]) == (200, 3)
        async with http.get(f"/v1/devices/{DEV}/temp", headers=auth) as r:
            assert (r.status, (await r.json())["result"]) == (200, 21.5)
        env.cloud.call_timeout_s = 0.1
        async with http.post(f"/v1/devices/{DEV}/slow", headers=auth) as r:
            assert (r.status, await r.json()) == (408, {"error": "Timed out."})
        async with http.get("/v1/devices", headers=auth) as r:
            [view] = await r.json()
            assert view["online"] is True
            assert view["functions"] == ["len", "slow"]
        await photon.close()
        await env.events.wait("spark/status", "offline")
        async with http.post(f"/v1/devices/{DEV}/len", headers=auth) as r:
            assert (r.status, await r.json()) == (404, {"ok": False, "error": "Device is offline"})


# -- isolation from other surfaces (issue 11, item 4) ---------------------------------
@pytest.mark.asyncio
async def test_a_handshake_needs_neither_the_kdf_pool_nor_the_default_executor(
    env: Env,
) -> None:
    """Both pools are blocked (as a flood of scrypt logins would block them); a device
    still completes its handshake, on the device server's own threads."""
    import threading

    from softap_sim.cloud import kdf

    gate = threading.Event()
    loop = asyncio.get_running_loop()
    default_workers = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default
    blockers = [loop.run_in_executor(None, gate.wait, WAIT_S) for _ in range(default_workers)]
    blockers += [asyncio.ensure_future(kdf.run(gate.wait, WAIT_S)) for _ in range(kdf.KDF_THREADS)]
    try:
        photon = await env.photon().connect()
        await env.events.wait("spark/status", "online")
        assert env.server.is_online(DEV)
        assert not gate.is_set()  # it really ran while both pools were held
        await photon.close()
    finally:
        gate.set()
        await asyncio.gather(*blockers)


@pytest.mark.asyncio
async def test_a_device_pushing_garbage_without_end_is_cut_off(env: Env) -> None:
    """Issue 11 (1) for the cloud's device port: nothing is buffered without bound; the
    session ends on the first bad block and the server keeps serving."""
    reader, writer = await asyncio.open_connection("127.0.0.1", env.server.port)
    await reader.readexactly(40)  # the nonce
    chunk = b"\x00" * (1 << 20)
    pushed = 0
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(WAIT_S):
            while pushed < 64 * len(chunk):
                writer.write(chunk)
                await writer.drain()
                pushed += len(chunk)
    assert pushed < 64 * len(chunk), "the server stopped taking bytes (closed the session)"
    try:
        rest = await reader.read()
    except ConnectionResetError:
        rest = b""  # the server aborted the session: as good as a close
    assert rest == b""
    writer.close()
    photon = await env.photon().connect()
    await env.events.wait("spark/status", "online")
    await photon.close()
