"""bench_fleet's load child (hidden ``--load`` mode): every device's ``device-id``.

The requests come from a process of their own so the clients' sockets and buffers are not
in the RSS measured per device, and the check is real: each device must answer its own
id over both TCP and HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Final

from benchlib import BenchError, raise_nofile

from softap_sim.errors import SimulatorError
from softap_sim.fleet import Fleet
from softap_sim.protocol.client import parse_http_reply

REQUEST_TIMEOUT_S: Final = 30.0
#: the entry point: the load child is ``bench_fleet.py --load``
SCRIPT: Final = str(Path(__file__).resolve().with_name("bench_fleet.py"))


async def _device_id_tcp(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"device-id\n0\n\n")
        return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _device_id_http(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"GET /device-id HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        return parse_http_reply(await reader.read(), "device-id").body
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def load(targets: list[list[Any]], concurrency: int) -> dict[str, Any]:
    """``targets``: [host, tcp port, http port, expected id]; both transports each."""
    sem = asyncio.Semaphore(concurrency)
    ok = {"tcp": 0, "http": 0}
    errors: list[str] = []

    async def one(kind: str, host: str, port: int, expected: str) -> None:
        async with sem:
            try:
                call = _device_id_tcp if kind == "tcp" else _device_id_http
                body = await asyncio.wait_for(call(host, port), REQUEST_TIMEOUT_S)
                got = json.loads(body.strip() or b"{}").get("id")
            except (OSError, TimeoutError, ValueError, SimulatorError) as err:
                errors.append(f"{kind} {host}:{port}: {type(err).__name__}: {err}")
                return
            if got == expected:
                ok[kind] += 1
            else:
                errors.append(f"{kind} {host}:{port}: id {got!r}, expected {expected}")

    t0 = time.perf_counter()
    await asyncio.gather(
        *(one("tcp", h, t, e) for h, t, _p, e in targets),
        *(one("http", h, p, e) for h, _t, p, e in targets),
    )
    elapsed = time.perf_counter() - t0
    return {
        "devices": len(targets),
        "tcp_ok": ok["tcp"],
        "http_ok": ok["http"],
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": elapsed,
        "requests_per_s": (ok["tcp"] + ok["http"]) / elapsed if elapsed > 0 else 0.0,
    }


def load_main(args: argparse.Namespace) -> int:
    raise_nofile()
    targets = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(load(targets, args.load_concurrency))))
    return 0


async def ask_all(fleet: Fleet, concurrency: int) -> dict[str, Any]:
    """Every device's device-id over TCP and HTTP, from a child process."""
    targets = [
        [
            d.emulator.tcp_address[0],
            d.emulator.tcp_address[1],
            d.emulator.http_address[1],
            d.device_id,
        ]
        for d in fleet
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        "--load",
        "--load-concurrency",
        str(concurrency),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate(json.dumps(targets).encode())
    if proc.returncode != 0:
        raise BenchError(f"the load process failed (exit status {proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result
