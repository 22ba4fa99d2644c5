"""bench_claim's cloud process: the cloud under test, alone on its core, and its handle.

``--serve-cloud`` runs ``CloudService(None)`` with the device endpoint on a free port and
takes JSON-line requests (register devices, make claim codes, read counters); it streams
every claim confirmation with its ``time.monotonic()`` (system-wide on Linux, so it is
compared with the bench's clock directly). :class:`CloudProcess` is the parent's side.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from benchlib import (
    AsyncChild,
    BenchError,
    LagMonitor,
    customer_tokens,
    leave_sigint_to_parent,
    raise_nofile,
    read_pipe,
)

from softap_sim import event_loop

HOST: Final = "127.0.0.1"
READY_TIMEOUT_S: Final = 60.0
CONTROL_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 15.0
#: a line of the control channel may carry 1000 PEM keys or claim codes
PIPE_LIMIT: Final = 64 * 1024 * 1024
CLAIM_CONFIRM: Final = "spark/device/claim/confirm"


class LogCounter(logging.Handler):
    """Counts the package's log records instead of printing them (1000 devices talk).

    Session ends are counted by reason (both sides); ``device server: X online`` lines
    count the sessions the server took online; other records only at WARNING and above.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg == "device server: session %s ended: %s" and len(args) == 2:
            key = f"cloud: session ended: {str(args[1])[:60]}"
        elif record.msg == "device server: %s online":
            key = "cloud: sessions online"
        elif record.msg == "cloud connection ended: %s" and args:
            key = f"device: cloud connection ended: {str(args[0])[:60]}"
        elif record.levelno >= logging.WARNING:
            key = f"{record.name}: {record.levelname}: {record.getMessage()[:80]}"
        else:
            return
        self.counts[key] += 1

    def take(self) -> dict[str, int]:
        counts, self.counts = dict(self.counts), collections.Counter()
        return counts


def install_log_counter(*, cloud: bool) -> LogCounter:
    counter = LogCounter()
    root = logging.getLogger("softap_sim")
    root.addHandler(counter)
    root.propagate = False
    root.setLevel(logging.WARNING)
    if cloud:  # the server's per-session lines are INFO
        logging.getLogger("softap_sim.cloud.device_server").setLevel(logging.INFO)
    return counter


class CloudHost:
    """The cloud under test and the bench's hooks into it (runs in the cloud process)."""

    def __init__(self, emit: Callable[[dict[str, Any]], None], tick_ms: float) -> None:
        from softap_sim.cloud.service import CloudService

        self._emit = emit
        self._tick_s = tick_ms / 1e3
        self.service = CloudService(None)
        self.logs = install_log_counter(cloud=True)
        self.monitor: LagMonitor | None = None
        self.product_id = 0
        self.client_id = ""
        self.confirms = 0
        self._batch = 0

    async def start(self) -> dict[str, Any]:
        await self.service.open()
        created = self.service.created_credentials
        if created is None:
            raise BenchError("the cloud database was not fresh")
        self.product_id = int(created["product"]["id"])
        self.client_id = str(created["client"]["id"])
        server = await self.service.serve_devices(HOST, 0)
        self.service.backend.subscribers.add(self._on_event)
        self.monitor = LagMonitor(asyncio.get_running_loop(), self._tick_s)
        self.monitor.start()
        return {
            "port": server.port,
            "server_public_key_pem": self.service.server_public_key_pem.decode("ascii"),
        }

    def _on_event(self, event: dict[str, Any]) -> None:
        if event["name"] == CLAIM_CONFIRM:
            self.confirms += 1
            self._emit({"event": "confirm", "id": event["coreid"], "t": time.monotonic()})

    async def register(self, keys: list[str], devices: list[list[Any]]) -> int:
        """Register ``[device_id, key index]`` pairs in one transaction."""
        errors = await self.service.backend.register_devices(
            (str(device_id), keys[int(index)]) for device_id, index in devices
        )
        failed = [e for e in errors if e is not None]
        if failed:
            raise BenchError(f"cannot register {len(failed)} devices: {failed[0]}")
        return len(devices)

    async def claim_codes(self, count: int) -> list[str]:
        """``count`` customers of the product, a token each and a product claim code each."""
        backend = self.service.backend
        batch = self._batch
        self._batch += 1
        product_id, client_id = self.product_id, self.client_id
        emails = [f"bench-{batch}-{i}@example.com" for i in range(count)]
        tokens = await customer_tokens(
            backend, product_id=product_id, client_id=client_id, emails=emails
        )
        principals = [await backend.principal_for(token) for token in tokens]
        return await backend.create_claim_codes(principals, product_id)

    def counters(self) -> dict[str, Any]:
        assert self.monitor is not None
        return {"lag": self.monitor.take(), "logs": self.logs.take(), "confirms": self.confirms}

    async def close(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        await self.service.close()


async def _serve_cloud(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout.buffer)

    def emit(data: dict[str, Any]) -> None:  # buffered, never blocks the loop
        transport.write(json.dumps(data).encode() + b"\n")

    raise_nofile(args.nofile)
    host = CloudHost(emit, args.tick_ms)
    profiler = cProfile.Profile() if args.profile_cloud else None
    try:
        info = await host.start()
        emit({"reply": {"pid": os.getpid(), **info}})
        reader = await read_pipe(limit=PIPE_LIMIT)
        if profiler is not None:
            profiler.enable()
        while line := await reader.readline():
            request = json.loads(line)
            op = request["op"]
            if op == "register":
                reply: Any = await host.register(request["keys"], request["devices"])
            elif op == "claims":
                reply = await host.claim_codes(int(request["count"]))
            elif op == "counters":
                reply = host.counters()
            else:
                reply = {"error": f"unknown op {op}"}
            emit({"reply": reply})
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile_cloud)
        await host.close()
        transport.close()


def serve_main(args: argparse.Namespace) -> int:
    leave_sigint_to_parent()
    event_loop.run(_serve_cloud(args), args.loop)
    return 0


class CloudProcess(AsyncChild):
    """A ``--serve-cloud`` child: JSON-line requests, replies and confirm events.

    A reader task sorts its stdout: ``confirm`` events go to ``on_confirm`` as they come,
    replies to the request waiting for them.
    """

    def __init__(self, argv: list[str]) -> None:
        super().__init__("the cloud process", argv, limit=PIPE_LIMIT)
        self._replies: asyncio.Queue[Any] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.on_confirm: Callable[[str, float], None] | None = None

    async def start(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        await self.spawn()
        self._reader = asyncio.create_task(self._read())
        self.info = await self._reply(timeout_s, "announce itself")
        return self.info

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            data = json.loads(line)
            if data.get("event") == "confirm":
                if self.on_confirm is not None:
                    self.on_confirm(str(data["id"]), float(data["t"]))
            else:
                self._replies.put_nowait(data.get("reply"))
        self._replies.put_nowait(None)  # EOF: the process is gone

    async def _reply(self, limit_s: float, what: str) -> Any:
        try:
            reply = await asyncio.wait_for(self._replies.get(), limit_s)
        except TimeoutError:
            raise BenchError(f"the cloud process did not {what} within {limit_s} s") from None
        if reply is None:
            raise BenchError(await self.exit_message(what))
        if isinstance(reply, dict) and "error" in reply:
            raise BenchError(f"the cloud process: {reply['error']}")
        return reply

    async def request(self, op: str, **params: Any) -> Any:
        await self.send_line(json.dumps({"op": op, **params}).encode() + b"\n")
        return await self._reply(CONTROL_TIMEOUT_S, f"answer {op}")

    async def stop(self, grace_s: float = STOP_TIMEOUT_S) -> int | None:
        code = await super().stop(grace_s)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2.0)
        return code


#: the script whose ``--serve-cloud`` runs the cloud
SCRIPT: Final = str(Path(__file__).resolve().with_name("bench_claim.py"))


def cloud_argv(args: argparse.Namespace, nofile: int, profile: str | None = None) -> list[str]:
    argv = [sys.executable, SCRIPT, "--serve-cloud", "--tick-ms", str(args.tick_ms)]
    argv += ["--nofile", str(nofile)]
    argv += ["--loop", args.loop]
    if profile:
        argv += ["--profile-cloud", profile]
    return argv
