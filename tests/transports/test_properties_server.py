"""Garbage on the wire of a running emulator: no crash, no lost state, exact replies.

Each test starts one in-memory :class:`DeviceEmulator` and throws deterministic
pseudo-random payloads (``random.Random(seed)``) at a port. The expected bytes of every
exchange come from a *twin*: the sans-IO codecs (property-tested in
``test_properties_tcp.py`` / ``test_properties_http.py``) driving a copy of the device.
After the garbage, a normal ``device-id`` still gets the exact §10 reply, the device
state equals the twin's, and ``emu.check()`` reports no internal error.

Proving the device's silence needs a bounded wait; those waits run concurrently, so the
whole file takes a few seconds. Nothing else waits on time.

TCP payloads are never empty: a connection that half-closes without sending a byte is
never handled by the emulator, which then also never closes it, so "read to EOF" would
hang (reported separately; on the device the FIN raises the server's disconnect event).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from firmware_model import Dct, Device
from firmware_model.commands import COMMAND_NAMES
from softap_sim import DeviceEmulator, SimConfig
from softap_sim.protocol.http import KNOWN_MIME_TYPES, HttpConnection, RouteKind, routes_for
from softap_sim.protocol.tcp import TcpConnection, encode_tcp_reply

#: a reply that exists arrives within milliseconds on loopback; this only bounds a hang
REPLY_TIMEOUT_S = 5.0
#: the window in which a device that should stay silent must send nothing
SILENCE_S = 0.2
#: connections per HTTP batch: two batches (one closing, one open) stay below the 10 streams
HTTP_BATCH = 5


def twin_of(emu: DeviceEmulator) -> Device:
    """An independent copy of the emulated device (same key, radio and era)."""
    d = emu.device
    return Device(Dct.from_json(d.dct.to_json()), d.key, d.radio, d.era)


def assert_same_state(emu: DeviceEmulator, twin: Device) -> None:
    assert emu.device.dct.to_json() == twin.dct.to_json()
    assert emu.device.credentials_changed == twin.credentials_changed
    emu.check()


def encrypt_hex(emu: DeviceEmulator, plaintext: bytes) -> str:
    pub = serialization.load_der_public_key(emu.device.key.public_key_area[:162])
    assert isinstance(pub, rsa.RSAPublicKey)
    return pub.encrypt(plaintext, padding.PKCS1v15()).hex()


def device_id_tcp(emu: DeviceEmulator) -> bytes:
    """§4.2 / §10, written out independently of the model."""
    dct = emu.device.dct
    c = b"1" if dct.claimed else b"0"
    return b'\n\n{"id":"' + dct.identity.device_id_hex.encode() + b'","c":"' + c + b'"}'


def device_id_http(emu: DeviceEmulator) -> bytes:
    """H200 + the 17 chunks of §10."""
    dct = emu.device.dct
    parts = [
        b"{",
        b'"',
        b"id",
        b'"',
        b":",
        b'"',
        dct.identity.device_id_hex.encode(),
        b'"',
        b",",
        b'"',
        b"c",
        b'"',
        b":",
        b'"',
        b"1" if dct.claimed else b"0",
        b'"',
        b"}",
    ]
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Cache-Control: no-store, no-cache, must-revalidate, post-check=0, pre-check=0\r\n"
        b"Pragma: no-cache\r\nConnection: Keep-Alive\r\nAccess-Control-Allow-Origin: *\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
        + b"0\r\n\r\n"
    )


# ---------------------------------------------------------------------------------------
# deterministic payload generators
# ---------------------------------------------------------------------------------------
TCP_NAMES = [
    b"version",
    b"device-id",
    b"scan-ap",
    b"configure-ap",
    b"public-key",
    b"set",
    b"ant-internal",
    b"provision-keys",
    b"version\r",
    b"",
    b"x" * 31,
]
JUNK = [b"\n", b"\x00", b"\r\n", b"{", b"}", b'"', b"\\", b"\xff", b"\xc3\xa9", b"-", b"9"]


def json_bodies(emu: DeviceEmulator) -> list[tuple[bytes, bytes]]:
    """(command, body) pairs: valid, wrong-key, wrong-kind and broken requests."""
    pwd = encrypt_hex(emu, b"guest-password").encode()
    return [
        (b"set", b'{"k":"cc","v":"MDMA' + b"x" * 56 + b'MDM"}'),
        (b"set", b'{"k":"cc","v":"second-code"}'),
        (b"set", b'{"k":"xx","v":"y"}'),
        (b"set", b'{"k":"cc","v":5}'),
        (b"set", b'{"k":"cc",'),
        (b"set", b"{k:cc,v:x}"),
        (b"configure-ap", b'{"idx":0,"ssid":"guest","sec":4194310,"ch":6,"pwd":"' + pwd + b'"}'),
        (b"configure-ap", b'{"idx":0,"ssid":"Cafe","sec":0,"ch":11}'),
        (b"configure-ap", b'{"idx":0,"ssid":"nowhere","sec":4194310,"pwd":"' + pwd + b'"}'),
        (b"configure-ap", b'{"ssid":"guest","pwd":"00"}'),
        (b"configure-ap", b'{"ssid":"guest","k":"cc"}'),
        (b"configure-ap", b""),
    ]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(4)):
        at = rng.randrange(len(b) + 1)
        op = rng.randrange(4)
        if op == 0:
            del b[at:]
        elif op == 1:
            b[at:at] = rng.choice(JUNK)
        elif op == 2 and at < len(b):
            del b[at]
        else:
            b[at:at] = rng.randbytes(rng.randrange(1, 4))
    return bytes(b)


def tcp_payloads(rng: random.Random, emu: DeviceEmulator, n: int) -> list[bytes]:
    bodies = json_bodies(emu)
    # every (command, body) pair once in canonical form, then garbage; shuffled together
    out = [name + b"\n%d\n\n" % len(body) + body for name, body in bodies]
    out += [b"version\n0\n\n", b"scan-ap\n0\n\n", b"public-key\n0\n\n"]
    while len(out) < n:
        kind = rng.choice([0, 1, 2, 2, 2, 3, 3])
        if kind == 0:
            p = rng.randbytes(rng.randrange(1, 80))
        elif kind == 1:
            p = b"".join(rng.choice(JUNK + TCP_NAMES) for _ in range(rng.randrange(1, 10)))
        else:
            name, body = rng.choice(bodies)
            if kind == 3 or rng.random() < 0.3:
                name = rng.choice(TCP_NAMES)
            length = len(body) + rng.choice([0, 0, 0, 0, -1, 3])
            p = name + b"\n" + str(length).encode() + b"\n\n" + body
            if kind == 3:
                p = mutate(rng, p)
        if p:  # see the module docstring about empty connections
            out.append(p)
    rng.shuffle(out)
    return out


HTTP_PATHS = [
    *(b"/" + c.encode() for c in COMMAND_NAMES if c != "connect-ap"),
    b"/",
    b"/hello",
    b"/index",
    b"/nope",
    b"/device-id?x=1",
    b"/%64evice-id",
    b"/DEVICE-ID",
]
CONTENT_TYPES = [*KNOWN_MIME_TYPES, b"application/x-www-form-urlencoded", b"multipart/form-data"]


def http_request(rng: random.Random, emu: DeviceEmulator) -> bytes:
    command, body = rng.choice(json_bodies(emu))
    path = b"/" + command if rng.random() < 0.5 else rng.choice(HTTP_PATHS)
    headers = [b"Host: 192.168.0.1"]
    if rng.random() < 0.5:
        name = rng.choice([b"Content-Type: ", b"content-type: "])
        headers.append(name + rng.choice(CONTENT_TYPES))
    if rng.random() < 0.8:
        delta = rng.choice([0, 0, 0, -2, 7])
        headers.append(b"Content-Length: %d" % max(len(body) + delta, 0))
    if rng.random() < 0.15:
        headers.append(b"Connection: close")
    rng.shuffle(headers)
    method = rng.choice([b"GET", b"POST", b"POST", b"PUT"])
    head = method + b" " + path + b" HTTP/1.1\r\n"
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def http_payloads(rng: random.Random, emu: DeviceEmulator, n: int) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < n:
        kind = rng.randrange(5)
        if kind == 0:
            p = rng.randbytes(rng.randrange(1, 60))
        elif kind == 1:
            p = mutate(rng, http_request(rng, emu))
        elif kind == 2:
            # requests the library ignores: wrong version or method, or a split head
            p = http_request(rng, emu)
            p = rng.choice(
                [
                    p.replace(b"HTTP/1.1", b"HTTP/1.0", 1),
                    b"OPTIONS" + p[p.index(b" ") :],
                    p[: p.index(b"\r\n\r\n") + 2],
                ]
            )
        else:
            p = http_request(rng, emu)
        out.append(p)
    return out


# ---------------------------------------------------------------------------------------
# TCP
# ---------------------------------------------------------------------------------------
async def tcp_exchange(emu: DeviceEmulator, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*emu.tcp_address)
    try:
        writer.write(payload)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), REPLY_TIMEOUT_S)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", [1, 2])
async def test_tcp_garbage_gets_firmware_replies_and_keeps_state(seed: int) -> None:
    async with DeviceEmulator(SimConfig()) as emu:
        twin = twin_of(emu)
        rng = random.Random(seed)
        sent = 0
        kinds: Counter[bytes] = Counter()
        for payload in tcp_payloads(rng, emu, 60):
            codec = TcpConnection(twin.reads_body, twin.can_allocate_body)
            req = codec.receive_data(payload) or codec.receive_eof()
            assert req is not None
            if req.name == "connect-ap":
                continue  # it takes the access point down (tested elsewhere)
            expected = encode_tcp_reply(twin.execute(req.name, req.body))
            got = await tcp_exchange(emu, payload)
            assert got == expected, payload
            assert_same_state(emu, twin)
            sent += 1
            kinds[got[:5]] += 1
        assert sent >= 50
        # the generator reaches every kind of answer: silence, "\n\n", results and JSON
        for kind in (b"", b"\n\n", b'\n\n{"r', b'\n\n{"s'):
            assert kinds[kind], kind
        assert await tcp_exchange(emu, b"device-id\n0\n\n") == device_id_tcp(emu)
        assert emu.dispatcher is not None
        assert emu.dispatcher.served["tcp"] >= sent
        assert_same_state(emu, twin)


# ---------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------
def expected_http(codec: HttpConnection, twin: Device, seg: bytes) -> tuple[bytes | None, bool]:
    """The bytes the device answers to ``seg`` (None: silence) and whether it then closes."""
    req = codec.receive_segment(seg)
    if req is None:
        return None, False
    route = req.route
    if req.body is None:
        out = codec.render_server_error()
    elif route is None:
        out = codec.render_not_found()
    elif route.kind is RouteKind.COMMAND:
        out = codec.render_command(twin.execute(route.command, req.body))
    elif route.kind is RouteKind.PAGE_HANDLER:
        out = codec.render_page_handler(req.path, req.query)
    else:
        out = codec.render_static(route, twin.profile.root_redirect.encode())
    return out, req.close


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    codec: HttpConnection
    closed: bool = False
    log: list[bytes] = field(default_factory=list)


async def assert_silent(conn: Conn) -> None:
    """Nothing arrives and the connection stays open (§3.1: no response at all)."""
    try:
        got = await asyncio.wait_for(conn.reader.read(1), SILENCE_S)
    except TimeoutError:
        return
    raise AssertionError(f"expected silence after {conn.log!r}, got {got!r}")


async def send_and_check(conn: Conn, seg: bytes, twin: Device, silent: list[Conn]) -> bytes | None:
    """Write one segment; read the exact expected answer now, or queue a silence check."""
    conn.log.append(seg)
    conn.writer.write(seg)
    expected, close = expected_http(conn.codec, twin, seg)
    if expected is None:
        silent.append(conn)
        return None
    got = await asyncio.wait_for(conn.reader.readexactly(len(expected)), REPLY_TIMEOUT_S)
    assert got == expected, conn.log
    if close:
        assert await asyncio.wait_for(conn.reader.read(), REPLY_TIMEOUT_S) == b""
        conn.closed = True
    return got


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", [1, 2])
async def test_http_garbage_gets_firmware_replies_and_keeps_state(seed: int) -> None:
    """Each connection gets one garbage segment, then a valid ``GET /device-id`` on the
    same connection (which may complete a pending body instead, exactly as the twin says).
    Silent answers are checked together, once per batch and phase."""
    follow = b"GET /device-id HTTP/1.1\r\nHost: 192.168.0.1\r\n\r\n"
    async with DeviceEmulator(SimConfig()) as emu:
        twin = twin_of(emu)
        routes = routes_for(twin.profile)
        rng = random.Random(seed)
        payloads = http_payloads(rng, emu, 30)
        silences = 0
        statuses: Counter[bytes] = Counter()
        for start in range(0, len(payloads), HTTP_BATCH):
            conns = []
            for _ in payloads[start : start + HTTP_BATCH]:
                reader, writer = await asyncio.open_connection(*emu.http_address)
                conns.append(Conn(reader, writer, HttpConnection(routes, twin.can_allocate_body)))
            try:
                for phase in (0, 1):
                    silent: list[Conn] = []
                    for conn, payload in zip(conns, payloads[start:], strict=False):
                        if not conn.closed:
                            got = await send_and_check(conn, (payload, follow)[phase], twin, silent)
                            assert_same_state(emu, twin)
                            if got is not None:
                                statuses[got[: got.index(b"\r\n")]] += 1
                    await asyncio.gather(*(assert_silent(c) for c in silent))
                    silences += len(silent)
            finally:
                for conn in conns:
                    conn.writer.close()
                for conn in conns:
                    await conn.writer.wait_closed()
        # the generator reaches silence, commands and library 404s
        assert silences >= 5
        assert statuses[b"HTTP/1.1 200 OK"]
        assert statuses[b"HTTP/1.1 404 Not Found"]
        reader, writer = await asyncio.open_connection(*emu.http_address)
        try:
            writer.write(follow.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            got = await asyncio.wait_for(reader.read(), REPLY_TIMEOUT_S)
        finally:
            writer.close()
            await writer.wait_closed()
        assert got == device_id_http(emu)
        assert_same_state(emu, twin)
        assert await tcp_exchange(emu, b"device-id\n0\n\n") == device_id_tcp(emu)
