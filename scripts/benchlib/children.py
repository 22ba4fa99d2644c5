"""The child processes of the benchmarks: both ends of the JSON-line pipe.

Every benchmark runs what it measures in a process of its own, so that process's CPU time
(``/proc/<pid>``) is the server's alone and the load generator cannot steal its core. The
child announces itself with one JSON line on stdout (pid, ports, credentials), answers
JSON-line requests on stdin if it takes any, and stops when its stdin closes (so a parent
that dies takes its children with it).

Parent side: :class:`LineChild` reads with ``select`` deadlines and never needs an event
loop (bench_softap's load generator owns the loop; bench_setup waits on a node driver);
:class:`AsyncChild` is the same for benchmarks that run on asyncio. Child side:
:func:`announce`, :func:`leave_sigint_to_parent`, :func:`read_pipe` and
:func:`until_stdin_closes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from benchlib.core import REPO_ROOT, BenchError
from benchlib.procfs import process_cpu_s

#: ``PYTHONPATH`` of a child by default: this checkout's code
CHECKOUT = str(REPO_ROOT)


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


# ==================================================================================
# child side
# ==================================================================================
def announce(info: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed: what the parent waits for."""
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()


def leave_sigint_to_parent() -> None:
    """Ctrl-C in the terminal reaches the whole process group: the parent shuts us down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def read_pipe(file: IO[Any] | None = None, *, limit: int = 1 << 16) -> asyncio.StreamReader:
    """A stream reader on ``file`` (default: stdin), for JSON-line requests."""
    reader = asyncio.StreamReader(limit=limit)
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), file if file is not None else sys.stdin
    )
    return reader


async def until_stdin_closes() -> None:
    """Serve until the parent closes our stdin (or dies, which closes it too).

    A raw ``add_reader`` on the descriptor, not a stream: the child may have read its
    configuration line from ``sys.stdin.buffer`` already.
    """
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    fd = sys.stdin.fileno()

    def on_readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data and not closed.done():
            closed.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await closed
    finally:
        loop.remove_reader(fd)


# ==================================================================================
# parent side, blocking
# ==================================================================================
class LineChild:
    """A child process whose stdout is read line by line with deadlines (select)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self._out = b""
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(
        self,
        argv: Sequence[str],
        *,
        pythonpath: str = CHECKOUT,
        env: dict[str, str] | None = None,
        stdin: int | None = subprocess.PIPE,
        pass_fds: Sequence[int] = (),
        cwd: str | None = None,
    ) -> None:
        """Start ``argv``; its ``PYTHONPATH`` starts at ``pythonpath`` unless ``env`` is given."""
        self.proc = subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=subprocess.PIPE,
            env=env if env is not None else child_env(pythonpath),
            pass_fds=tuple(pass_fds),
            cwd=cwd,
        )

    def read_line(self, deadline: float) -> bytes | None:
        """The next stdout line; None at EOF; raises BenchError past ``deadline``."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no output within the time limit")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._out += chunk
        line, _, self._out = self._out.partition(b"\n")
        return line

    def read_json(self, timeout_s: float, what: str) -> Any:
        """The next line as JSON; BenchError if the child exits first."""
        line = self.read_line(time.monotonic() + timeout_s)
        if line is None:
            assert self.proc is not None
            status = self.proc.wait(timeout=timeout_s)
            raise BenchError(f"{self.name} exited (status {status}) before it could {what}")
        return json.loads(line)

    def send_json(self, data: dict[str, Any]) -> None:
        """One JSON line on the child's stdin."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(data).encode() + b"\n")
        self.proc.stdin.flush()

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)

    def stop(self, grace_s: float, *, on_line: Callable[[bytes], None] | None = None) -> None:
        """Close stdin, hand the last lines to ``on_line``, reap; terminate/kill if it hangs.

        Idempotent.
        """
        proc = self.proc
        if proc is None or self.returncode is not None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        deadline = time.monotonic() + grace_s
        if on_line is not None:
            with contextlib.suppress(BenchError, OSError, ValueError):
                for _ in range(8):  # bounded: the child prints at most a few more lines
                    line = self.read_line(deadline)
                    if line is None:
                        break
                    on_line(line)
        try:
            self.returncode = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                self.returncode = proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                self.returncode = proc.wait(timeout=3.0)
        if proc.stdout is not None:
            proc.stdout.close()


# ==================================================================================
# parent side, asyncio
# ==================================================================================
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


class AsyncChild:
    """A child on asyncio pipes: announce line, JSON-line requests, CPU time, stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        pythonpath: str = CHECKOUT,
        limit: int = 1 << 16,
        stderr_path: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self._pythonpath = pythonpath
        self._limit = limit
        #: the child's stderr goes to this file; its tail is quoted when it dies early
        self.stderr_path = stderr_path
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def spawn(self) -> None:
        env = child_env(self._pythonpath)
        with contextlib.ExitStack() as stack:
            err = None
            if self.stderr_path is not None:
                err = stack.enter_context(self.stderr_path.open("wb"))
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env=env,
                limit=self._limit,
            )

    async def start(self, timeout_s: float) -> dict[str, Any]:
        """Spawn and wait for the announce line (its JSON object is ``info``)."""
        await self.spawn()
        self.info = await self.read_json(timeout_s, "announce itself")
        return self.info

    async def read_json(self, limit_s: float, what: str) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), limit_s)
        except TimeoutError:
            raise BenchError(f"{self.name} did not {what} within {limit_s:g} s") from None
        if not line:
            raise BenchError(await self.exit_message(what))
        data: dict[str, Any] = json.loads(line)
        return data

    async def exit_message(self, what: str) -> str:
        """Why the child is gone: its status, and the tail of its stderr file if any."""
        assert self.proc is not None
        code = await self.proc.wait()
        text = f"{self.name} exited (status {code}) before it could {what}"
        if self.stderr_path is not None:
            text += ":\n" + self.stderr_path.read_text(errors="replace")[-2000:]
        return text

    async def send_line(self, data: bytes) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)

    async def stop(self, grace_s: float) -> int | None:
        """Close stdin, wait ``grace_s``, then terminate/kill. Idempotent; the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            await stop_child(proc, grace_s)
        return proc.returncode
