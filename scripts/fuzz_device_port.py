"""fuzz_cloud's device-port fuzzer: hostile sessions against the TCP device server.

Random bytes, truncated and replayed handshake blocks, unknown device ids, silence, and
good handshakes followed by garbage. The goal is that the server closes every bad
session (no hang) and still completes a good handshake afterwards (the canary).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import rsa
from fuzz_device import DEVICE_TIMEOUT_S, DeviceIdentity, coap_bytes, device_handshake, hello_bytes
from fuzz_http import HOST
from fuzz_routes import World


@dataclass
class DeviceStats:
    sessions: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    good_handshakes: int = 0
    good_failures: list[str] = field(default_factory=list)


DEVICE_KINDS: Final = (
    "random_bytes",
    "random_block",
    "truncated_block",
    "replayed_block",
    "unknown_device",
    "silent",
    "good_then_random",
    "good_then_bad_length",
    "good_then_bad_padding",
    "good_then_bad_coap",
    "good_then_events",
    "good_then_partial_frame",
    "good_no_hello",
    "good_clean",
)


class DeviceFuzzer:
    def __init__(
        self,
        port: int,
        server_key: rsa.RSAPublicKey,
        fuzz_devices: list[DeviceIdentity],
        unknown: DeviceIdentity,
        rng: random.Random,
        world: World,
    ) -> None:
        self.port = port
        self.server_key = server_key
        self.devices = fuzz_devices
        self.unknown = unknown
        self.rng = rng
        self.world = world
        self.blocks: deque[bytes] = deque(maxlen=16)
        self.stats = DeviceStats()

    async def session(self, kind: str) -> None:
        self.stats.sessions[kind] += 1
        try:
            outcome = await asyncio.wait_for(self._session(kind), DEVICE_TIMEOUT_S * 2)
        except TimeoutError:
            outcome = "timeout (server neither answered nor closed)"
        except (ConnectionError, OSError) as err:
            outcome = f"connection error {type(err).__name__}"
        self.stats.outcomes[f"{kind}: {outcome}"] += 1

    async def _wait_close(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, half_close: bool = True
    ) -> str:
        """After our input: does the server close (it should), within the time limit?"""
        if half_close and writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()
        try:
            async with asyncio.timeout(DEVICE_TIMEOUT_S):
                while await reader.read(65536):
                    pass
            return "server closed"
        except TimeoutError:
            return "server kept the connection open"
        except (ConnectionError, OSError):
            return "server reset"
        finally:
            writer.transport.abort()

    async def _session(self, kind: str) -> str:
        rng = self.rng
        if kind in ("random_bytes", "random_block", "truncated_block", "replayed_block", "silent"):
            reader, writer = await asyncio.open_connection(HOST, self.port)
            try:
                nonce = await asyncio.wait_for(reader.readexactly(40), DEVICE_TIMEOUT_S)
            except BaseException:
                writer.transport.abort()
                raise
            del nonce
            if kind == "random_bytes":
                writer.write(os.urandom(rng.choice((0, 1, 40, 255, 257, 300, 1000, 5000))))
            elif kind == "random_block":
                writer.write(os.urandom(256))
                return await self._wait_close(reader, writer, half_close=False)
            elif kind == "truncated_block":
                source = self.blocks[-1] if self.blocks else os.urandom(256)
                writer.write(source[: rng.randrange(1, 256)])
            elif kind == "replayed_block":
                if not self.blocks:
                    writer.transport.abort()
                    return "no block recorded yet"
                writer.write(rng.choice(self.blocks))
                return await self._wait_close(reader, writer, half_close=False)
            return await self._wait_close(reader, writer)
        if kind == "unknown_device":
            try:
                reader, writer, _c, _b = await device_handshake(
                    self.unknown, self.server_key, self.port
                )
            except ConnectionError:
                return "server closed"
            writer.transport.abort()
            return "handshake completed for an unknown device"
        ident = rng.choice(self.devices)
        reader, writer, channel, block = await device_handshake(ident, self.server_key, self.port)
        self.blocks.append(block)
        mid = int.from_bytes(channel.salt[:2], "big")
        if kind == "good_no_hello":
            writer.write(channel.encrypt(coap_bytes(0, 0x01, mid, b"\x01", [(11, b"t")])))
            return await self._wait_close(reader, writer)
        writer.write(channel.encrypt(hello_bytes(mid)))
        if kind == "good_clean":
            return await self._until_hello(reader, writer, channel)
        if kind == "good_then_random":
            writer.write(os.urandom(rng.randrange(1, 2000)))
        elif kind == "good_then_bad_length":
            writer.write(
                rng.choice(
                    (
                        b"\x00\x00",
                        b"\x00\x0f" + b"x" * 15,
                        b"\xff\xff" + b"x" * 64,
                        b"\x40\x10" + b"x" * 100,
                    )
                )
            )
        elif kind == "good_then_bad_padding":
            writer.write(b"\x00\x20" + os.urandom(32))
        elif kind == "good_then_bad_coap":
            bad = rng.choice(
                (
                    b"",
                    b"\x00",
                    b"\x80\x01\x00\x00",
                    b"\x4f\x01\x00\x00",
                    b"\x40\x02\x00\x01\xff",
                    b"\x40\x02\x00\x01\xbf",
                    os.urandom(20),
                )
            )
            writer.write(channel.encrypt(bad))
        elif kind == "good_then_partial_frame":
            frame = channel.encrypt(coap_bytes(0, 0, mid + 1))
            writer.write(frame[: rng.randrange(1, len(frame))])
        else:  # good_then_events: odd but well-formed traffic, then leave
            for i in range(rng.randrange(1, 8)):
                writer.write(channel.encrypt(self._odd_message(mid + 1 + i)))
            await asyncio.sleep(0)
            writer.transport.abort()
            return "client left after events"
        return await self._wait_close(reader, writer)

    def _odd_message(self, mid: int) -> bytes:
        rng = self.rng
        choice = rng.randrange(9)
        name = rng.choice(
            (b"spark/device/claim/code", b"x" * 300, b"\xff\xfe", b"", b"a/b", b"spark/status")
        )
        if choice == 0:
            code = rng.choice(self.world.claim_codes or ["x"]).encode()
            return coap_bytes(
                0,
                0x02,
                mid,
                b"",
                [(11, b"E"), (11, b"spark/device/claim/code")],
                rng.choice((code, b"\xff" * 63, b"x" * 5000)),
            )
        if choice == 1:
            return coap_bytes(
                rng.choice((0, 1)),
                0x02,
                mid,
                b"",
                [(11, b"e"), (11, name)],
                os.urandom(rng.randrange(1, 100)),
            )
        if choice == 2:
            return coap_bytes(0, 0x02, mid, b"", [(11, b"E"), (11, name), (14, b"\xff" * 8)])
        if choice == 3:
            return coap_bytes(
                0,
                0x02,
                mid,
                b"",
                [(11, b"d")],
                rng.choice(
                    (
                        b"{",
                        b"[]",
                        b'{"f":1,"v":[]}',
                        b'{"f":["\\ud800"]}',
                        b'{"v":{"x":1e400}}',
                        b"\xff",
                    )
                ),
            )
        if choice == 4:
            return coap_bytes(0, 0x01, mid, b"\x01", [(11, b"e"), (11, name), (15, b"u")])
        if choice == 5:
            return hello_bytes(mid)
        if choice == 6:
            return coap_bytes(
                rng.choice((0, 1)), 0x45, mid, bytes([rng.randrange(256)]), [], os.urandom(4)
            )
        if choice == 7:
            return coap_bytes(0, 0x01, mid, b"\x02", [(11, b"t")])
        return coap_bytes(2, 0, rng.randrange(65536))

    async def _until_hello(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, channel: Any
    ) -> str:
        from softap_sim.protocol import coap

        try:
            async with asyncio.timeout(DEVICE_TIMEOUT_S):
                while data := await reader.read(65536):
                    for plain in channel.receive_data(data):
                        msg = coap.decode(plain)
                        if msg.code == 0x02 and msg.uri_path == [b"h"]:
                            return "server Hello received"
            return "server closed before its Hello"
        except TimeoutError:
            return "no server Hello"
        finally:
            writer.transport.abort()

    async def good_handshake(self) -> str | None:
        """The canary: a good handshake reaches the server's Hello; None when it does."""
        try:
            reader, writer, channel, _block = await device_handshake(
                self.devices[0], self.server_key, self.port
            )
            mid = int.from_bytes(channel.salt[:2], "big")
            writer.write(channel.encrypt(hello_bytes(mid)))
            outcome = await self._until_hello(reader, writer, channel)
        except (OSError, ValueError, TimeoutError) as err:
            outcome = f"{type(err).__name__}: {err}"
        if outcome == "server Hello received":
            self.stats.good_handshakes += 1
            return None
        self.stats.good_failures.append(outcome)
        return outcome

    async def batch(self, count: int) -> None:
        sem = asyncio.Semaphore(8)

        async def one(kind: str) -> None:
            async with sem:
                await self.session(kind)

        kinds = [DEVICE_KINDS[i % len(DEVICE_KINDS)] for i in range(count)]
        self.rng.shuffle(kinds)
        await asyncio.gather(*(one(k) for k in kinds))
