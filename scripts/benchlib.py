"""What the benchmarks in ``scripts/`` share: quantiles, /proc readings, loop lag, CLI types.

Imported as ``benchlib`` (the benchmarks run as ``python scripts/bench_*.py``, so this
directory is on ``sys.path``). Linux ``/proc`` readings; standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

#: clock ticks per second of ``/proc`` times
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """Set-up or verification failed: the benchmark cannot produce numbers (exit 2)."""


def run_main(name: str, run: Callable[[], int]) -> int:
    """Run a benchmark: SIGTERM cleans up like Ctrl-C; set-up errors are one line, exit 2."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run()
    except BenchError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


def quantile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted values (``None`` when there are none)."""
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def process_cpu_s(pid: int) -> float:
    """CPU seconds of one process, all threads: schedstat (ns) if available, else ticks."""
    try:
        total = 0.0
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0]) / 1e9
        return total
    except (OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_s() -> float:
    """CPU time all CPUs spent busy so far (``/proc/stat``: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def memory_mib(pid: int) -> dict[str, float | None]:
    """Resident set size now and its peak (``VmRSS``/``VmHWM``), MiB."""
    out: dict[str, float | None] = {"rss_mib": None, "peak_rss_mib": None}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss_mib" if key == "VmRSS" else "peak_rss_mib"] = int(value.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def listen_overflows() -> int | None:
    """Machine-wide SYNs dropped by full listen queues (``TcpExt ListenOverflows``).

    Each such drop costs the client a 1 s SYN retransmit, which caps throughput without
    costing the server any CPU.
    """
    try:
        lines = [ln.split() for ln in Path("/proc/net/netstat").read_text().splitlines()]
    except OSError:
        return None
    rows = [ln for ln in lines if ln and ln[0] == "TcpExt:"]
    if len(rows) < 2 or "ListenOverflows" not in rows[0]:
        return None
    return int(rows[1][rows[0].index("ListenOverflows")])


def child_env(first_path: str) -> dict[str, str]:
    """This environment with ``first_path`` at the front of ``PYTHONPATH`` (so a child
    process imports the code under test from there)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (first_path, env.get("PYTHONPATH", "")) if p)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for a child process to bind)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LagMonitor:
    """How late a periodic ``call_later`` tick fires: the loop's blocked time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float) -> None:
        self._loop = loop
        self._interval = interval_s
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self.lags: list[float] = []

    def start(self) -> None:
        self._due = self._loop.time() + self._interval
        self._handle = self._loop.call_later(self._interval, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self.lags.append(max(0.0, now - self._due))
        self._due = now + self._interval
        self._handle = self._loop.call_later(self._interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def take(self) -> dict[str, Any]:
        """Samples since the last take: count, max, p99 and mean lag in ms."""
        lags, self.lags = self.lags, []
        ordered = sorted(lags)
        return {
            "samples": len(ordered),
            "max_ms": ordered[-1] * 1e3 if ordered else 0.0,
            "p99_ms": (quantile(ordered, 0.99) or 0.0) * 1e3,
            "mean_ms": statistics.fmean(ordered) * 1e3 if ordered else 0.0,
        }


def positive_int(text: str) -> int:
    """argparse type: an integer above 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number above 0 (not NaN)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


async def stop_child(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """End a child that stops when its stdin closes: then SIGTERM, then SIGKILL."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 2.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def customer_tokens(
    backend: Any, *, product_id: int, client_id: str, emails: Sequence[str]
) -> list[str]:
    """Create a customer per e-mail address and return an access token for each (one
    database transaction, through ``CloudBackend.create_customers_with_tokens``)."""
    created = await backend.create_customers_with_tokens(product_id, client_id, list(emails))
    return [str(body["access_token"]) for _customer, body in created]
