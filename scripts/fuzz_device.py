"""fuzz_cloud's device side: identities, the device handshake, CoAP, the online devices.

Written from the device protocol itself (``lightssl.DeviceHandshake``, CoAP), not with
the emulator, so a session can stop or go wrong at any byte. Two ``FakeDevice`` stay
online the whole run so the function and variable routes reach a real device link.
``softap_sim`` is imported lazily: ``--code-dir`` decides which checkout provides it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fuzz_http import HOST
from fuzz_routes import FUNCTIONS, VARIABLES

DEVICE_TIMEOUT_S: Final = 10.0

log = logging.getLogger("fuzz_cloud")


def _describe_payload() -> bytes:
    return json.dumps({"f": list(FUNCTIONS), "v": VARIABLES}).encode()


def _variable_payload(name: str) -> bytes | None:
    code = VARIABLES.get(name)
    if code == 9:
        return struct.pack("<d", 21.5)
    if code == 2:
        return struct.pack(">i", 42)
    if code == 4:
        return b"hello"
    if code == 1:
        return b"\x01"
    return None


class DeviceIdentity:
    def __init__(self, device_id: str, key: rsa.RSAPrivateKey, product: bool) -> None:
        self.device_id = device_id
        self.key = key
        self.product = product

    def pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )


async def device_handshake(
    ident: DeviceIdentity, server_key: rsa.RSAPublicKey, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Any, bytes]:
    """Connect and run the RSA exchange: (reader, writer, channel, the 256-byte block sent)."""
    from softap_sim.protocol.lightssl import Channel, DeviceHandshake

    reader, writer = await asyncio.open_connection(HOST, port)
    hs = DeviceHandshake(ident.key, server_key, bytes.fromhex(ident.device_id))
    block = b""
    try:
        async with asyncio.timeout(DEVICE_TIMEOUT_S):
            while hs.session is None:
                data = await reader.read(4096)
                if not data:
                    raise ConnectionError("server closed during the handshake")
                out = hs.receive_data(data)
                if out:
                    block = out
                    writer.write(out)
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer, Channel(hs.session), block


def coap_bytes(
    msg_type: int,
    code: int,
    mid: int,
    token: bytes = b"",
    options: list[tuple[int, bytes]] | None = None,
    payload: bytes = b"",
) -> bytes:
    from softap_sim.protocol import coap

    return coap.encode(
        coap.CoapMessage(coap.CoapType(msg_type), code, mid, token, options or [], payload)
    )


def hello_bytes(mid: int) -> bytes:
    return coap_bytes(0, 0x02, mid, b"", [(11, b"h")], struct.pack(">HHBBH", 6, 0, 0, 0, 6))


class FakeDevice:
    """A well-behaved device that stays online: Describe, functions, variables, pings."""

    def __init__(self, ident: DeviceIdentity, server_key: rsa.RSAPublicKey, port: int) -> None:
        self.ident = ident
        self.server_key = server_key
        self.port = port
        self.task: asyncio.Task[None] | None = None
        self.up = asyncio.Event()
        self.sessions = 0
        self.calls = 0

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def start(self) -> None:
        self.up.clear()
        self.task = asyncio.create_task(self._run())
        async with asyncio.timeout(DEVICE_TIMEOUT_S):
            await self.up.wait()

    async def _run(self) -> None:
        from softap_sim.protocol import coap

        reader, writer, channel, _block = await device_handshake(
            self.ident, self.server_key, self.port
        )
        self.sessions += 1
        mid = int.from_bytes(channel.salt[:2], "big")
        writer.write(channel.encrypt(hello_bytes(mid)))
        try:
            while data := await reader.read(65536):
                for plain in channel.receive_data(data):
                    msg = coap.decode(plain)
                    reply = self._answer(msg)
                    if reply is not None:
                        writer.write(channel.encrypt(reply))
        except (OSError, coap.CoapError, ValueError) as err:
            log.debug("fake device %s: %s", self.ident.device_id, err)
        finally:
            self.up.clear()
            writer.transport.abort()

    def _answer(self, msg: Any) -> bytes | None:
        ack = 2
        if msg.type in (2, 3):
            return None
        path = msg.uri_path
        head = path[0] if path else b""
        if msg.code == 0x02 and head == b"h":
            self.up.set()
            return coap_bytes(ack, 0, msg.message_id) if msg.type == 0 else None
        if msg.code == 0:
            return coap_bytes(ack, 0, msg.message_id)
        if msg.code == 0x01 and head == b"d":
            return coap_bytes(ack, 0x45, msg.message_id, msg.token, [], _describe_payload())
        if msg.code == 0x02 and head == b"f" and len(path) >= 2:
            self.calls += 1
            if path[1].decode("utf-8", "replace") not in FUNCTIONS:
                return coap_bytes(ack, 0x84, msg.message_id, msg.token)
            arg = b"".join(msg.uri_query)
            return coap_bytes(ack, 0x44, msg.message_id, msg.token, [], struct.pack(">i", len(arg)))
        if msg.code == 0x01 and head == b"v" and len(path) >= 2:
            self.calls += 1
            value = _variable_payload(path[1].decode("utf-8", "replace"))
            if value is None:
                return coap_bytes(ack, 0x84, msg.message_id, msg.token)
            return coap_bytes(ack, 0x45, msg.message_id, msg.token, [], value)
        if msg.type == 0:
            return coap_bytes(ack, 0, msg.message_id)
        return None

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
