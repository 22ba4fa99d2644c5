"""bench_cloud's server processes: ours (the real ``CloudService``) and the bare aiohttp
baseline, both ends of the pipe.

``--serve ROLE`` runs in the child: it announces its URL and credentials in one JSON
line, then answers ``mark`` (end of a window: loop lag, database and loop-thread
counters since the last mark) until its stdin closes. :class:`ServerProcess` is the
parent's handle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from benchlib import (
    AsyncChild,
    BenchError,
    LagMonitor,
    announce,
    leave_sigint_to_parent,
    read_pipe,
)

from softap_sim import event_loop

HOST: Final = "127.0.0.1"
READY_TIMEOUT_S: Final = 60.0
CONTROL_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 10.0
ROLES: Final = ("ours", "bare")
#: ``--what-if`` variants of our server, measured as extra roles in the same run
WHAT_IFS: Final = {
    "no-group-commit": "every database job in a transaction of its own (max_batch=1)",
    "no-caches": "every request looks its token and client up in the database",
    "no-group-commit+no-caches": "both of the above: the shape of the cloud before issue 10",
}
PRODUCT_SLUG: Final = "bench-product"
CUSTOMER_PASSWORD: Final = "bench-password-1"  # a throwaway value in a temp database


def _loop_thread_schedstat() -> tuple[float, float]:
    """(CPU seconds, seconds waiting for a CPU) of the calling thread, from schedstat."""
    try:
        path = Path(f"/proc/self/task/{threading.get_native_id()}/schedstat")
        run_ns, wait_ns, _slices = path.read_text().split()[:3]
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


@dataclass
class LoopThreadTimer:
    """CPU time of the event-loop thread, and its time runnable but waiting for a CPU.

    A loop lag with a large run-queue wait is CPU contention (other threads or
    processes held every core), not a blocking call on the loop.
    """

    last: tuple[float, float] = field(default_factory=_loop_thread_schedstat)

    def take(self) -> dict[str, Any]:
        now = _loop_thread_schedstat()
        run, wait = now[0] - self.last[0], now[1] - self.last[1]
        self.last = now
        return {"loop_cpu_s": run, "loop_runqueue_wait_s": wait}


@dataclass
class DbTimer:
    """Wall time the database worker spends in transactions (off the loop), from the
    database's own counters (``Database.stats``): since the last ``take``."""

    stats: Any = None
    _seen: tuple[float, int, int] = (0.0, 0, 0)

    def take(self) -> dict[str, Any]:
        if self.stats is None:
            return {"db_busy_s": 0.0, "db_transactions": 0, "db_jobs": 0}
        now = (self.stats.busy_s, self.stats.transactions, self.stats.jobs)
        busy, transactions, jobs = (a - b for a, b in zip(now, self._seen, strict=True))
        self._seen = now
        return {"db_busy_s": busy, "db_transactions": transactions, "db_jobs": jobs}


def _apply_what_if(service: Any, what_if: str) -> None:
    """Turn one of this run's improvements off in our server (``--what-if``)."""
    parts = set(what_if.split("+"))
    if "no-group-commit" in parts:
        service.db.max_batch = 1
    if "no-caches" in parts:
        service.backend.principal_cache_ttl_s = 0.0  # every cached token / client is stale


async def _serve(
    role: str, state_dir: str | None, concurrency: int, tick_ms: float, what_if: str | None
) -> None:
    loop = asyncio.get_running_loop()
    monitor = LagMonitor(loop, tick_ms / 1e3)
    db_timer = DbTimer()
    loop_timer = LoopThreadTimer()
    closers: list[Callable[[], Awaitable[None]]] = []
    if role == "ours":
        assert state_dir is not None
        info = await _start_ours(Path(state_dir), concurrency, db_timer, closers, what_if)
    else:
        info = await _start_bare(closers)
    monitor.start()
    info["pid"] = os.getpid()
    announce(info)
    reader = await read_pipe()
    try:
        while line := await reader.readline():
            command = line.decode().strip()
            if command == "mark":  # end of a window: report and restart the counters
                announce({"lag": monitor.take(), **db_timer.take(), **loop_timer.take()})
    finally:
        monitor.stop()
        for close in reversed(closers):
            await close()


async def _start_ours(
    state_dir: Path,
    concurrency: int,
    db_timer: DbTimer,
    closers: list[Callable[[], Awaitable[None]]],
    what_if: str | None = None,
) -> dict[str, Any]:
    from softap_sim.cloud.service import CloudService

    service = CloudService(state_dir)
    await service.open()
    closers.append(service.close)
    if what_if:
        _apply_what_if(service, what_if)
    db_timer.stats = service.db.stats
    emails = [f"bench-{i}@example.com" for i in range(concurrency)]

    created = service.created_credentials
    if created is None:
        raise BenchError(f"{state_dir} was not a fresh state directory")
    product_id = int(created["product"]["id"])

    client_id = str(created["client"]["id"])
    await service.backend.create_customers_with_tokens(
        product_id, client_id, emails, CUSTOMER_PASSWORD
    )
    creds = {
        "product": created["product"]["slug"],
        "client_id": client_id,
        "client_secret": created["client"]["secret"],
    }
    db_timer.take()
    server = await service.serve(HOST, 0)
    return {"role": "ours", "url": server.url, "customers": emails, **creds}


async def _start_bare(closers: list[Callable[[], Awaitable[None]]]) -> dict[str, Any]:
    """Same routes, same request parsing, same reply shapes; nothing else."""

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        grant = form.get("grant_type")
        if grant not in ("password", "client_credentials", "refresh_token"):
            return web.json_response(
                {"error": "invalid_request", "error_description": "bad grant_type"}, status=400
            )
        body: dict[str, Any] = {
            "token_type": "bearer",
            "access_token": secrets.token_hex(20),
            "expires_in": 7_776_000,
            "refresh_token": secrets.token_hex(20),
        }
        if form.get("scope"):
            body["scope"] = form["scope"]
        return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def claim(request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return web.json_response(
                {"error": "invalid_request", "error_description": "no token"}, status=400
            )
        json.loads(await request.read() or b"{}")
        code = secrets.token_urlsafe(48)[:63]
        return web.json_response({"claim_code": code, "device_ids": []})

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_post("/v1/products/{product}/device_claims", claim)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    closers.append(runner.cleanup)
    port = runner.addresses[0][1]
    return {
        "role": "bare",
        "url": f"http://{HOST}:{port}",
        "product": PRODUCT_SLUG,
        "client_id": "bare-client",
        "client_secret": "bare-secret",
        "customers": [f"bench-{i}@example.com" for i in range(1000)],
    }


def serve_main(args: argparse.Namespace) -> int:
    leave_sigint_to_parent()
    event_loop.run(
        _serve(args.serve, args.state_dir, args.concurrency, args.tick_ms, args.what_if_role),
        args.loop,
    )
    return 0


class ServerProcess(AsyncChild):
    """A ``--serve ROLE`` child; ``mark`` ends a window and returns its counters."""

    def __init__(self, role: str, argv: list[str]) -> None:
        super().__init__(f"{role} server", argv)
        self.role = role

    async def mark(self) -> dict[str, Any]:
        """End a window: the server's loop-lag and database counters since the last mark."""
        await self.send_line(b"mark\n")
        return await self.read_json(CONTROL_TIMEOUT_S, "report its counters")
