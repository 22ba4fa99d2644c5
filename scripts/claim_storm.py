"""bench_claim's storm: N emulated Photons get connect-ap at once; connect-ap -> claimed.

Each device is prepared over its own SoftAP protocol (claim code, home network), then
all N are sent ``connect-ap`` together; the device's state changes and the cloud's claim
confirmations give the spans. The floors (RSA work ÷ cores, CPU work ÷ cores) put the
storm's wall time in proportion.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from benchlib import (
    BenchError,
    listen_overflows,
    memory_mib,
    raise_nofile,
)
from claim_cloud import HOST, CloudProcess, LogCounter, cloud_argv
from claim_handshakes import cpu_self, public_pems, spread_ms
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from firmware_model import DeviceIdentity, DeviceKey, DeviceState, RadioEnvironment
from softap_sim.protocol.lightssl import (
    _rsa_raw_sign,
)

SOFTAP_TIMEOUT_S: Final = 30.0
#: after the last confirm: how long the devices get to apply it to their DCT
DEVICE_CLAIM_GRACE_S: Final = 5.0
HOME: Final = {
    "ssid": "HomeNet",
    "security": "wpa2_aes",
    "channel": 6,
    "rssi": -48,
    "password": "home-wifi-password",
}
WPA2_AES: Final = 0x00400004  # the WICED value the apps send in configure-ap "sec"
OK_REPLY: Final = b'\n\n{"r":0}'


@dataclass
class Tracked:
    """One emulated device of a claim run and what happened to it, in monotonic time."""

    index: int
    device_id: str
    code: str
    emu: Any = None  # DeviceEmulator (imported lazily)
    armed: bool = False  # connect-ap is on its way: start watching
    t_reply: float | None = None  # the device answered connect-ap (left listening mode)
    t_reply_read: float | None = None  # the app side read that reply
    t_online: float | None = None
    t_claimed: float | None = None  # the cloud's claim confirmation
    attempts: int = 0  # cloud connection attempts after connect-ap
    failures: int = 0  # of which failed (cloud-retry)

    def on_state_change(self, change: Any, _t: float) -> None:
        if not self.armed:
            return
        now = time.monotonic()
        if self.t_reply is None and change.old == DeviceState.LISTENING.value:
            self.t_reply = now
        if change.new == DeviceState.CLOUD_CONNECTING.value:
            self.attempts += 1
        elif change.new == DeviceState.CLOUD_RETRY.value:
            self.failures += 1
        elif change.new == DeviceState.ONLINE.value and self.t_online is None:
            self.t_online = now


async def softap_exchange(address: tuple[str, int], request: bytes) -> bytes:
    """One request of the device's TCP protocol (5609): write, read until it closes."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), SOFTAP_TIMEOUT_S)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


def tcp_request(command: str, body: bytes = b"") -> bytes:
    return b"%s\n%d\n\n%s" % (command.encode(), len(body), body)


def configure_ap_body(key: DeviceKey) -> bytes:
    pwd = key.crypto_key.public_key().encrypt(str(HOME["password"]).encode(), padding.PKCS1v15())
    body = {
        "idx": 0,
        "ssid": HOME["ssid"],
        "sec": WPA2_AES,
        "ch": HOME["channel"],
        "pwd": pwd.hex(),
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def _bounded_gather(limit: int, coros: list[Any]) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


def usable_cores() -> int:
    """The cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def measure_rsa_floor(reps: int) -> dict[str, Any]:
    """Single-threaded cost of the RSA private operations of one handshake (ms, median).

    The server's RSA-2048 PKCS#1 decrypt and raw type-1 signature (``lightssl``'s own
    function), the device's RSA-1024 decrypt: the operations no implementation can skip.
    """
    server = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    device = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    block = server.public_key().encrypt(os.urandom(52), padding.PKCS1v15())
    session = device.public_key().encrypt(os.urandom(40), padding.PKCS1v15())
    mac = os.urandom(20)
    ops: dict[str, Callable[[], object]] = {
        "server_decrypt_ms": lambda: server.decrypt(block, padding.PKCS1v15()),
        "server_sign_ms": lambda: _rsa_raw_sign(server, mac),
        "device_decrypt_ms": lambda: device.decrypt(session, padding.PKCS1v15()),
    }
    out: dict[str, Any] = {"reps": reps}
    for name, op in ops.items():
        for _ in range(max(5, reps // 20)):  # warm-up
            op()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            op()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times) * 1e3
    out["per_handshake_ms"] = (
        out["server_decrypt_ms"] + out["server_sign_ms"] + out["device_decrypt_ms"]
    )
    return out


def add_floors(result: dict[str, Any], rsa_cost: dict[str, Any], n: int) -> None:
    """The two floors of the module docstring and the storm's wall time against them."""
    cores = usable_cores()
    rsa_floor = n * rsa_cost["per_handshake_ms"] / 1e3 / cores
    cpu_floor = (result["cloud_cpu_s"] + result["bench_cpu_s"]) / cores
    wall = result["wall_s"]
    result["floor"] = {
        "cores": cores,
        "rsa": rsa_cost,
        "rsa_floor_s": rsa_floor,
        "cpu_floor_s": cpu_floor,
        "wall_over_rsa_floor": wall / rsa_floor if wall else None,
        "wall_over_cpu_floor": wall / cpu_floor if wall and cpu_floor > 0 else None,
    }


async def run_claims(
    args: argparse.Namespace, pool: list[DeviceKey], n: int, device_logs: LogCounter
) -> dict[str, Any]:
    """One storm of ``n`` devices against a fresh cloud process; ``device_logs`` counts
    this process's (the devices') log records."""
    from softap_sim import DeviceEmulator, SimConfig

    nofile = raise_nofile(6 * n + 512)
    identities = [DeviceIdentity.generate(random.Random(i)) for i in range(n)]
    cloud = CloudProcess(cloud_argv(args, 2 * n + 512))
    tracked: list[Tracked] = []
    by_id: dict[str, Tracked] = {}
    all_claimed = asyncio.Event()
    pending = n
    extra_confirms = 0

    def on_confirm(device_id: str, t: float) -> None:
        nonlocal pending, extra_confirms
        item = by_id.get(device_id)
        if item is None or item.t_claimed is not None:
            extra_confirms += 1
            return
        item.t_claimed = t
        pending -= 1
        if pending == 0:
            all_claimed.set()

    cloud.on_confirm = on_confirm
    bench_mem0 = memory_mib(os.getpid())
    setup_t0 = time.monotonic()
    try:
        info = await cloud.start()
        endpoint = (HOST, int(info["port"]))
        server_pem = info["server_public_key_pem"].encode("ascii")
        await cloud.request(
            "register",
            keys=public_pems(pool),
            devices=[
                [ident.device_id_hex.lower(), i % len(pool)] for i, ident in enumerate(identities)
            ],
        )
        codes: list[str] = await cloud.request("claims", count=n)
        radio = RadioEnvironment.from_list([dict(HOME)])
        for i, ident in enumerate(identities):
            item = Tracked(i, ident.device_id_hex.lower(), codes[i])
            config = SimConfig(
                radio=radio,
                identity=ident,
                key=pool[i % len(pool)],
                cloud_endpoint=endpoint,
                server_public_key_pem=server_pem,
            )
            item.emu = DeviceEmulator(config)
            item.emu.on_state_change.append(item.on_state_change)
            tracked.append(item)
            by_id[item.device_id] = item
        try:
            await _bounded_gather(args.setup_concurrency, [t.emu.start() for t in tracked])
            await _bounded_gather(args.setup_concurrency, [_prepare(t) for t in tracked])
            setup_s = time.monotonic() - setup_t0
            rsa_cost = await asyncio.to_thread(measure_rsa_floor, args.floor_reps)
            result = await _measure_claims(args, cloud, tracked, all_claimed, device_logs)
            add_floors(result, rsa_cost, n)
        finally:
            await _bounded_gather(args.setup_concurrency, [t.emu.close() for t in tracked])
    finally:
        await cloud.stop()
    result.update(
        {
            "devices": n,
            "setup_s": setup_s,
            "extra_confirms": extra_confirms,
            "nofile": nofile,
            "bench_memory_before": bench_mem0,
        }
    )
    return result


async def _prepare(item: Tracked) -> None:
    """The app's part before connect-ap: the claim code, then the home network."""
    address = item.emu.tcp_address
    body = json.dumps({"k": "cc", "v": item.code}, separators=(",", ":")).encode()
    reply = await softap_exchange(address, tcp_request("set", body))
    if reply != OK_REPLY:
        raise BenchError(f"device {item.index}: set answered {reply!r}")
    reply = await softap_exchange(
        address, tcp_request("configure-ap", configure_ap_body(item.emu.device.key))
    )
    if reply != OK_REPLY:
        raise BenchError(f"device {item.index}: configure-ap answered {reply!r}")


async def _measure_claims(
    args: argparse.Namespace,
    cloud: CloudProcess,
    tracked: list[Tracked],
    all_claimed: asyncio.Event,
    device_logs: LogCounter,
) -> dict[str, Any]:
    connect_ap = tcp_request("connect-ap", b'{"idx":0}')
    addresses = [t.emu.tcp_address for t in tracked]
    profiler = cProfile.Profile() if args.profile_devices else None

    async def connect(item: Tracked, address: tuple[str, int]) -> str | None:
        try:
            reply = await softap_exchange(address, connect_ap)
        except (OSError, TimeoutError) as err:
            return f"{type(err).__name__}: {err}"
        item.t_reply_read = time.monotonic()
        return None if reply == OK_REPLY else f"connect-ap answered {reply!r}"

    await cloud.request("counters")  # restart the cloud's counters
    device_logs.take()  # and ours
    overflows0 = listen_overflows()
    cloud0, bench0 = cloud.cpu_s(), cpu_self()
    for item in tracked:
        item.armed = True
    if profiler is not None:
        profiler.enable()
    t_burst = time.monotonic()
    errors = await asyncio.gather(*(connect(t, a) for t, a in zip(tracked, addresses, strict=True)))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_claimed.wait(), args.claim_timeout)
    t_end = time.monotonic()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile_devices)
    cloud_cpu = cloud.cpu_s() - cloud0
    bench_cpu = cpu_self() - bench0
    overflows1 = listen_overflows()
    cloud_memory = memory_mib(cloud.pid)
    bench_memory = memory_mib(os.getpid())
    counters = await cloud.request("counters")
    # the confirm reaches the device right after the cloud publishes it; the model has
    # no "claimed" event, so the DCTs are checked a few times within a short bound
    claimed_on_device = 0
    for _ in range(int(DEVICE_CLAIM_GRACE_S / 0.05)):
        claimed_on_device = sum(1 for t in tracked if t.emu.device.dct.claimed)
        if claimed_on_device >= sum(1 for t in tracked if t.t_claimed is not None):
            break
        await asyncio.sleep(0.05)
    done = [t for t in tracked if t.t_claimed is not None and t.t_reply is not None]
    claimed_at = [t.t_claimed for t in tracked if t.t_claimed is not None]
    wall = (max(claimed_at) - t_burst) if claimed_at else None
    return {
        "claimed": len(claimed_at),
        "claimed_on_device": claimed_on_device,
        "connect_ap_errors": sum(1 for e in errors if e is not None),
        "first_connect_ap_error": next((e for e in errors if e is not None), None),
        "timed_out": len(claimed_at) < len(tracked),
        "claim_timeout_s": args.claim_timeout,
        "connect_ap_to_claimed": spread_ms(
            [t.t_claimed - t.t_reply for t in done if t.t_claimed and t.t_reply]
        ),
        "connect_ap_to_online": spread_ms(
            [t.t_online - t.t_reply for t in tracked if t.t_online and t.t_reply]
        ),
        "online_to_claimed": spread_ms(
            [t.t_claimed - t.t_online for t in done if t.t_claimed and t.t_online]
        ),
        "reply_read_delay": spread_ms(
            [t.t_reply_read - t.t_reply for t in tracked if t.t_reply_read and t.t_reply]
        ),
        "wall_s": wall,
        "window_s": t_end - t_burst,
        "cloud_attempts": sum(t.attempts for t in tracked),
        "cloud_failures": sum(t.failures for t in tracked),
        "devices_with_retries": sum(1 for t in tracked if t.failures),
        "cloud_cpu_s": cloud_cpu,
        "cloud_cpu_ms_per_device": cloud_cpu / len(claimed_at) * 1e3 if claimed_at else None,
        "bench_cpu_s": bench_cpu,
        "cloud_memory": cloud_memory,
        "bench_memory": bench_memory,
        "listen_overflows": (
            overflows1 - overflows0 if overflows0 is not None and overflows1 is not None else None
        ),
        "cloud_loop_lag": counters.get("lag"),
        "cloud_logs": counters.get("logs"),
        "device_logs": device_logs.take(),
    }
