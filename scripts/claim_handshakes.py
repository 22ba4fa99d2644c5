"""bench_claim's handshakes: full device handshakes per second, closed loop.

The device side is written with the real device protocol (``lightssl``, CoAP), not the
emulator, so the load generator's cost per handshake stays small and measured apart.
Also used by bench_isolation.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Final

from benchlib import (
    listen_overflows,
    memory_mib,
    quantile,
)
from claim_cloud import HOST, CloudProcess, cloud_argv
from cryptography.hazmat.primitives.asymmetric import rsa

from firmware_model import DeviceIdentity, DeviceKey
from softap_sim.protocol import coap
from softap_sim.protocol.coap import CoapMessage, CoapType, Code, Option
from softap_sim.protocol.lightssl import (
    NONCE_BYTES,
    Channel,
    DeviceHandshake,
)
from softap_sim.transports.cloud_link import HELLO_FLAGS, PLATFORM_ID, load_server_key

#: the server's own handshake limit (device_server.HANDSHAKE_TIMEOUT_S)
HANDSHAKE_TIMEOUT_S: Final = 30.0
#: what the emulated Photon sends as its Hello (softap_sim.transports.cloud_link)
HELLO_PAYLOAD: Final = (
    PLATFORM_ID.to_bytes(2, "big") + bytes([0, 0, 0, HELLO_FLAGS]) + PLATFORM_ID.to_bytes(2, "big")
)
#: seeds of the handshake device ids (apart from the claim runs' 0..N-1)
HANDSHAKE_SEED_BASE: Final = 1_000_000


def spread_ms(values: list[float]) -> dict[str, Any]:
    """count, p50, p99, max and mean of durations in seconds, as milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    return {
        "count": len(ordered),
        "p50_ms": quantile(ordered, 0.50) * 1e3,
        "p99_ms": quantile(ordered, 0.99) * 1e3,
        "max_ms": ordered[-1] * 1e3,
        "mean_ms": statistics.fmean(ordered) * 1e3,
    }


def make_key_pool(size: int) -> list[DeviceKey]:
    return [DeviceKey.generate(1024) for _ in range(size)]


def public_pems(pool: list[DeviceKey]) -> list[str]:
    return [key.public_key_pem.decode("ascii") for key in pool]


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class HandshakeFailed(Exception):
    pass


async def device_handshake(
    host: str, port: int, server_public: rsa.RSAPublicKey, key: DeviceKey, device_id: bytes
) -> None:
    """One full handshake as a Photon does it, up to the server's Hello; then close."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            hs = DeviceHandshake(key.crypto_key, server_public, device_id)
            block = hs.receive_data(await reader.readexactly(NONCE_BYTES))
            if block is None:
                raise HandshakeFailed("no RSA block after the nonce")
            writer.write(block)
            reply_bytes = (key.crypto_key.key_size + 7) // 8 + (server_public.key_size + 7) // 8
            hs.receive_data(await reader.readexactly(reply_bytes))
            if hs.session is None:
                raise HandshakeFailed("no session after the server's reply")
            channel = Channel(hs.session)
            mid = int.from_bytes(channel.salt[:2], "big")
            hello = CoapMessage(
                CoapType.CON, Code.POST, mid, b"", [(Option.URI_PATH, b"h")], HELLO_PAYLOAD
            )
            writer.write(channel.encrypt(coap.encode(hello)))
            while True:
                data = await reader.read(4096)
                if not data:
                    raise HandshakeFailed("the server closed before its Hello")
                for plain in channel.receive_data(data):
                    msg = coap.decode(plain)
                    if msg.code == Code.POST and msg.uri_path[:1] == [b"h"]:
                        return
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


@dataclass
class HandshakeWindow:
    concurrency: int
    attempts: int = 0
    errors: int = 0
    first_error: str | None = None
    latencies: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    cloud_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0
    cloud: dict[str, Any] = field(default_factory=dict)
    overflows: int | None = None

    def summary(self) -> dict[str, Any]:
        ok = len(self.latencies)
        return {
            "concurrency": self.concurrency,
            "handshakes": ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": self.elapsed_s,
            "handshakes_per_s": ok / self.elapsed_s if self.elapsed_s > 0 else 0.0,
            "latency": spread_ms(self.latencies),
            "cloud_cpu_ms_per_handshake": self.cloud_cpu_s / ok * 1e3 if ok else None,
            "cloud_cpu_utilisation": (
                self.cloud_cpu_s / self.elapsed_s if self.elapsed_s > 0 else None
            ),
            "bench_cpu_ms_per_handshake": self.bench_cpu_s / ok * 1e3 if ok else None,
            "cloud_loop_lag": self.cloud.get("lag"),
            "cloud_logs": self.cloud.get("logs"),
            "listen_overflows": self.overflows,
        }


async def run_handshakes(args: argparse.Namespace, pool: list[DeviceKey]) -> dict[str, Any]:
    windows = list(args.hs_concurrency)
    warmup = 4
    total = warmup + args.handshakes * len(windows)
    ids = [
        DeviceIdentity.generate(random.Random(HANDSHAKE_SEED_BASE + i)).device_id
        for i in range(total)
    ]
    cloud = CloudProcess(cloud_argv(args, max(windows) * 2 + 256, args.profile_cloud))
    try:
        info = await cloud.start()
        server_public = load_server_key(info["server_public_key_pem"].encode("ascii"))
        await cloud.request(
            "register",
            keys=public_pems(pool),
            devices=[[device_id.hex(), i % len(pool)] for i, device_id in enumerate(ids)],
        )
        port = int(info["port"])
        next_id = 0
        for _ in range(warmup):
            key = pool[next_id % len(pool)]
            await device_handshake(HOST, port, server_public, key, ids[next_id])
            next_id += 1
        results = []
        for concurrency in windows:
            start = next_id
            next_id += args.handshakes
            window = await handshake_window(
                args, cloud, port, server_public, pool, ids, range(start, next_id), concurrency
            )
            results.append(window.summary())
        return {"windows": results, "cloud_memory": memory_mib(cloud.pid)}
    finally:
        await cloud.stop()


async def handshake_window(
    args: argparse.Namespace,
    cloud: CloudProcess,
    port: int,
    server_public: rsa.RSAPublicKey,
    pool: list[DeviceKey],
    ids: list[bytes],
    indices: range,
    concurrency: int,
) -> HandshakeWindow:
    window = HandshakeWindow(concurrency)
    queue = collections.deque(indices)  # device i is registered with key i % pool
    deadline = time.monotonic() + args.hs_duration

    async def worker() -> None:
        while queue and time.monotonic() < deadline:
            index = queue.popleft()
            window.attempts += 1
            started = time.perf_counter()
            try:
                await device_handshake(
                    HOST, port, server_public, pool[index % len(pool)], ids[index]
                )
            except Exception as err:  # I/O, timeouts, ChannelError/CoapError of the codecs
                window.errors += 1
                window.first_error = window.first_error or f"{type(err).__name__}: {err}"
                continue
            window.latencies.append(time.perf_counter() - started)

    await cloud.request("counters")  # restart the cloud's counters
    overflows0 = listen_overflows()
    cloud0, bench0 = cloud.cpu_s(), cpu_self()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    window.elapsed_s = time.perf_counter() - t0
    window.cloud_cpu_s = cloud.cpu_s() - cloud0
    window.bench_cpu_s = cpu_self() - bench0
    overflows1 = listen_overflows()
    if overflows0 is not None and overflows1 is not None:
        window.overflows = overflows1 - overflows0
    window.cloud = await cloud.request("counters")
    return window
