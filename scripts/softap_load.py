"""bench_softap's load generator: closed-loop clients on raw non-blocking sockets.

The cheapest client asyncio allows (``loop.add_reader`` callbacks, no streams), so the
load generator's own CPU per command stays close to a bare server's. :func:`measure`
runs a warm-up and one measured window against one server and samples its CPU time,
this process's and the machine's at the window's edges.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from benchlib import listen_overflows, machine_busy_s
from softap_servers import SERVER_LABELS, ServerProcess
from softap_wire import HOST, HTTP_TERMINATOR, IO_TIMEOUT_S, RECV_BYTES

MAX_ERRORS: Final = 50
Cycle = tuple[tuple[bytes, bytes], ...]  # (request, expected reply) pairs, visited in turn


class Phase:
    """One closed-loop phase: a request budget, a deadline and what came back."""

    def __init__(self, budget: int, deadline: float, *, record: bool) -> None:
        self.remaining = budget
        self.deadline = deadline
        self.record = record
        self.completed = 0
        self.latencies: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.active = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def take(self, now: float) -> bool:
        """Claim the next request of the budget, unless the phase is over."""
        if self.remaining <= 0 or now >= self.deadline:
            return False
        self.remaining -= 1
        return True

    def complete(self, latency: float) -> None:
        self.completed += 1
        if self.record:
            self.latencies.append(latency)

    def fail(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)
        if self.errors >= MAX_ERRORS:
            self.remaining = 0  # stop issuing: the run is invalid anyway

    def client_finished(self) -> None:
        self.active -= 1
        if self.active <= 0 and not self.done.done():
            self.done.set_result(None)


class _TcpClient:
    """One closed-loop TCP client: connect, send, read to EOF, repeat on a new socket."""

    __slots__ = (
        "_addr",
        "_chunks",
        "_cycle",
        "_expected",
        "_fd",
        "_index",
        "_loop",
        "_phase",
        "_request",
        "_size",
        "_sock",
        "_t0",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        addr: tuple[str, int],
        phase: Phase,
        cycle: Cycle,
        offset: int,
    ) -> None:
        self._loop = loop
        self._addr = addr
        self._phase = phase
        self._cycle = cycle
        self._index = offset
        self._sock: socket.socket | None = None
        self._fd = -1
        self._request = b""
        self._expected = b""
        self._chunks: list[bytes] = []
        self._size = 0
        self._t0 = 0.0

    def next(self) -> None:
        now = time.perf_counter()
        if not self._phase.take(now):
            self._phase.client_finished()
            return
        self._request, self._expected = self._cycle[self._index % len(self._cycle)]
        self._index += 1
        self._chunks = []
        self._size = 0
        self._t0 = now
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        err = sock.connect_ex(self._addr)
        if err == 0:
            self._send()
        elif err == errno.EINPROGRESS:
            self._loop.add_writer(self._fd, self._connected)
        else:
            self._fail(f"connect: {os.strerror(err)}")

    def _connected(self) -> None:
        assert self._sock is not None
        self._loop.remove_writer(self._fd)
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(f"connect: {os.strerror(err)}")
            return
        self._send()

    def _send(self) -> None:
        assert self._sock is not None
        try:
            sent = self._sock.send(self._request)
        except OSError as err:
            self._fail(f"send: {err}")
            return
        if sent != len(self._request):
            self._fail("short send")
            return
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._fail(f"recv: {err}")
            return
        if data:
            self._chunks.append(data)
            self._size += len(data)
            if self._size > len(self._expected):
                self._fail("reply longer than expected")
            return
        now = time.perf_counter()
        self._close()
        if b"".join(self._chunks) == self._expected:
            self._phase.complete(now - self._t0)
        else:
            self._phase.fail(f"TCP reply differs: {b''.join(self._chunks)[:120]!r}")
        self.next()

    def _fail(self, what: str) -> None:
        self._close()
        self._phase.fail(what)
        self._loop.call_soon(self.next)  # not recursive: a refused connect fails at once

    def _close(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._sock.close()
            self._sock = None

    def abort(self) -> None:
        self._close()


class _HttpClient:
    """One keep-alive HTTP connection issuing requests back to back."""

    __slots__ = ("_buf", "_cycle", "_expected", "_fd", "_index", "_loop", "_phase", "_sock", "_t0")

    def __init__(self, loop: asyncio.AbstractEventLoop, cycle: Cycle, offset: int) -> None:
        self._loop = loop
        self._cycle = cycle
        self._index = offset
        self._sock: socket.socket | None = None
        self._fd = -1
        self._phase: Phase | None = None  # None between phases: no request in flight
        self._buf = b""
        self._expected = b""
        self._t0 = 0.0

    async def connect(self, addr: tuple[str, int]) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._fd = sock.fileno()
        await self._loop.sock_connect(sock, addr)
        self._loop.add_reader(self._fd, self._readable)

    def begin(self, phase: Phase) -> None:
        self._phase = phase
        if self._sock is None:
            phase.fail("HTTP connection was lost before the phase")
            self._end()
            return
        self.next()

    def _end(self) -> None:
        phase, self._phase = self._phase, None
        if phase is not None:
            phase.client_finished()

    def next(self) -> None:
        phase = self._phase
        assert phase is not None
        assert self._sock is not None
        now = time.perf_counter()
        if not phase.take(now):
            self._end()
            return
        request, self._expected = self._cycle[self._index % len(self._cycle)]
        self._index += 1
        self._buf = b""
        self._t0 = now
        try:
            sent = self._sock.send(request)
        except OSError as err:
            self._lost(f"send: {err}")
            return
        if sent != len(request):
            self._lost("short send")

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._lost(f"recv: {err}")
            return
        if not data:
            self._lost("the server closed the connection")
            return
        phase = self._phase
        if phase is None:
            self._lost(f"unsolicited data {data[:80]!r}")
            return
        buf = self._buf + data if self._buf else data
        if not buf.endswith(HTTP_TERMINATOR):
            if len(buf) >= len(self._expected):
                self._lost(f"HTTP reply differs: {buf[:120]!r}")
                return
            self._buf = buf
            return
        now = time.perf_counter()
        if buf == self._expected:
            phase.complete(now - self._t0)
        else:
            phase.fail(f"HTTP reply differs: {buf[:120]!r}")
        self.next()

    def _lost(self, why: str) -> None:
        self.close()
        if self._phase is not None:
            self._phase.fail(why)
            self._end()

    def close(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._fd)
            self._sock.close()
            self._sock = None

    def abort(self) -> None:
        self.close()


@dataclass
class Measurement:
    """Measured window(s) of one (transport, server) pair; rounds are summed."""

    transport: str
    server: str
    clients: int
    rounds: int
    commands: int
    errors: int
    error_samples: list[str]
    wall_s: float
    #: server process CPU over the window(s): precise (schedstat) or tick-based
    server_cpu_s: float
    #: the same from ``/proc/<pid>/stat`` utime+stime, for cross-checking
    server_cpu_ticks_s: float
    #: CPU of this load-generating process over the window(s)
    client_cpu_s: float
    #: busy CPU of the whole machine minus server and generator (kernel network
    #: work not charged to either process, and any foreign load)
    other_cpu_s: float
    latencies_s: list[float] = field(repr=False)
    #: SYNs dropped by full listen queues during the window(s) (machine-wide)
    listen_overflows: int = 0

    def merge(self, more: Measurement) -> None:
        self.rounds += more.rounds
        self.listen_overflows += more.listen_overflows
        self.commands += more.commands
        self.errors += more.errors
        self.error_samples += more.error_samples[: max(0, 5 - len(self.error_samples))]
        self.wall_s += more.wall_s
        self.server_cpu_s += more.server_cpu_s
        self.server_cpu_ticks_s += more.server_cpu_ticks_s
        self.client_cpu_s += more.client_cpu_s
        self.other_cpu_s += more.other_cpu_s
        self.latencies_s += more.latencies_s

    @property
    def rate(self) -> float:
        return self.commands / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_per_command_us(self) -> float:
        return self.server_cpu_s / self.commands * 1e6 if self.commands else math.nan

    def util(self, cpu_s: float) -> float:
        """CPU seconds as a fraction of one core over the window."""
        return cpu_s / self.wall_s if self.wall_s > 0 else math.nan

    def percentile_ms(self, pct: float) -> float:
        """Nearest-rank percentile of the latencies, in milliseconds."""
        if not self.latencies_s:
            return math.nan
        ordered = sorted(self.latencies_s)
        rank = max(1, math.ceil(pct / 100 * len(ordered)))
        return ordered[rank - 1] * 1e3

    def summary(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "server": self.server,
            "clients": self.clients,
            "rounds": self.rounds,
            "commands": self.commands,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "wall_s": round(self.wall_s, 4),
            "commands_per_s": round(self.rate, 1),
            "p50_ms": round(self.percentile_ms(50), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "server_cpu_s": round(self.server_cpu_s, 4),
            "server_cpu_ticks_s": round(self.server_cpu_ticks_s, 2),
            "server_cpu_per_command_us": round(self.cpu_per_command_us, 2),
            "server_cpu_util": round(self.util(self.server_cpu_s), 3),
            "client_cpu_util": round(self.util(self.client_cpu_s), 3),
            "other_cpu_util": round(self.util(self.other_cpu_s), 3),
            "listen_overflows": self.listen_overflows,
        }


@dataclass(frozen=True)
class LoadPlan:
    requests: int
    warmup: int
    duration_s: float | None
    phase_timeout_s: float


async def _wait_phase(
    phase: Phase, clients: Sequence[_TcpClient | _HttpClient], limit_s: float
) -> None:
    done, _ = await asyncio.wait([phase.done], timeout=limit_s)
    if not done:
        phase.remaining = 0
        phase.fail(f"phase timed out after {limit_s:.0f} s with {phase.active} clients busy")
        for client in clients:
            client.abort()


async def _tcp_phase(
    addr: tuple[str, int],
    cycle: Cycle,
    concurrency: int,
    budget: int,
    duration_s: float | None,
    limit_s: float,
    *,
    record: bool,
) -> Phase:
    loop = asyncio.get_running_loop()
    now = time.perf_counter()
    phase = Phase(budget, now + (duration_s if duration_s else limit_s), record=record)
    clients = [_TcpClient(loop, addr, phase, cycle, i) for i in range(concurrency)]
    phase.active = len(clients)
    for client in clients:
        client.next()
    await _wait_phase(phase, clients, duration_s + IO_TIMEOUT_S if duration_s else limit_s)
    return phase


async def _http_phase(
    clients: Sequence[_HttpClient],
    budget: int,
    duration_s: float | None,
    limit_s: float,
    *,
    record: bool,
) -> Phase:
    now = time.perf_counter()
    phase = Phase(budget, now + (duration_s if duration_s else limit_s), record=record)
    phase.active = len(clients)
    for client in clients:
        client.begin(phase)
    await _wait_phase(phase, clients, duration_s + IO_TIMEOUT_S if duration_s else limit_s)
    return phase


async def measure(
    transport: str,
    server: ServerProcess,
    cycle: Cycle,
    concurrency: int,
    plan: LoadPlan,
) -> Measurement:
    """Warm up, then one measured window against ``server`` on ``transport``."""
    port = int(server.info["tcp_port" if transport == "tcp" else "http_port"])
    addr = (HOST, port)
    http_clients: list[_HttpClient] = []
    try:
        if transport == "http":
            loop = asyncio.get_running_loop()
            http_clients = [_HttpClient(loop, cycle, i) for i in range(concurrency)]
            await asyncio.wait_for(
                asyncio.gather(*(c.connect(addr) for c in http_clients)), IO_TIMEOUT_S
            )

        async def run(budget: int, duration: float | None, *, record: bool) -> Phase:
            if transport == "tcp":
                return await _tcp_phase(
                    addr, cycle, concurrency, budget, duration, plan.phase_timeout_s, record=record
                )
            return await _http_phase(
                http_clients, budget, duration, plan.phase_timeout_s, record=record
            )

        warm = await run(plan.warmup, None, record=False)
        cpu0, busy0, drops0 = server.cpu_sample(), machine_busy_s(), listen_overflows()
        client0, t0 = time.process_time(), time.perf_counter()
        phase = await run(plan.requests, plan.duration_s, record=True)
        t1, client1 = time.perf_counter(), time.process_time()
        cpu, busy = server.cpu_sample() - cpu0, machine_busy_s() - busy0
        drops1 = listen_overflows()
    finally:
        for c in http_clients:
            c.close()
    client_cpu = client1 - client0
    return Measurement(
        transport=transport,
        server=SERVER_LABELS[server.role],
        clients=concurrency,
        rounds=1,
        commands=phase.completed,
        errors=warm.errors + phase.errors,
        error_samples=(warm.error_samples + phase.error_samples)[:5],
        wall_s=t1 - t0,
        server_cpu_s=cpu.seconds,
        server_cpu_ticks_s=cpu.ticks_s,
        client_cpu_s=client_cpu,
        other_cpu_s=max(0.0, busy - cpu.seconds - client_cpu),
        latencies_s=phase.latencies,
        listen_overflows=drops1 - drops0 if drops0 is not None and drops1 is not None else 0,
    )
