"""``softap-sim run`` on a real pseudo-terminal: the live view runs and stops cleanly.

A pipe is not a terminal, so only a pty exercises the branch a newcomer's shell takes
(the rich live view); ``--plain`` on the same pty, and a pipe, must still give one line
per change.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: overall budget of one wait for output (the whole test stays well under 10 s)
WAIT_S = 8.0
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
_CONTROL = re.compile(r"control\s+(http://127\.0\.0\.1:\d+)")


class PtyRun:
    """``softap-sim run`` with stdin/stdout/stderr on a pty (or, ``tty=False``, its
    output on a pipe); reads are event driven."""

    def __init__(self, tmp_path: Path, *extra: str, tty: bool = True) -> None:
        if tty:
            master, slave = pty.openpty()
            # a fixed window: the live view sizes its table from it
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        else:
            master, slave = os.pipe()
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "softap_sim",
                "run",
                "--tcp-port",
                "0",
                "--http-port",
                "0",
                "--control-port",
                "0",
                "--no-cloud",
                "--state-dir",
                str(tmp_path / "state"),
                *extra,
            ],
            stdin=slave if tty else subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.raw = b""

    @property
    def text(self) -> str:
        """Everything read so far, without escape sequences."""
        return _ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def read_until(self, pattern: str, timeout: float = WAIT_S) -> re.Match[str]:
        """Read until ``pattern`` appears in the output (regex), or fail at the deadline."""
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.text)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {pattern!r} within {timeout} s; output:\n{self.text}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the child closed the pty
                    chunk = b""
                if not chunk:
                    pytest.fail(f"output ended before {pattern!r}; output:\n{self.text}")
                self.raw += chunk
        return match

    def drain(self, timeout: float = WAIT_S) -> int:
        """Read to the end of the output; the exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.raw += chunk
        return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.fixture
def pty_run(tmp_path: Path) -> Iterator[Callable[..., PtyRun]]:
    runs: list[PtyRun] = []

    def make(*extra: str, tty: bool = True) -> PtyRun:
        run = PtyRun(tmp_path, *extra, tty=tty)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.close()


def _power_off(control_url: str) -> None:
    request = urllib.request.Request(
        f"{control_url}/v1/power",
        data=json.dumps({"action": "off"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _stop(run: PtyRun, stop_signal: int = signal.SIGTERM) -> None:
    run.proc.send_signal(stop_signal)
    assert run.drain() == 0
    text = run.text
    assert "Traceback" not in text
    assert re.search(r"^stopped$", text, re.MULTILINE), text


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT-Ctrl-C"]
)
def test_live_view_shows_a_state_change_on_a_terminal(
    pty_run: Callable[..., PtyRun], stop_signal: int
) -> None:
    run = pty_run()
    control = run.read_until(_CONTROL.pattern).group(1)
    host, port = run.read_until(r"TCP\s+(127\.0\.0\.1):(\d+)").groups()
    run.read_until("Press Ctrl-C to stop.")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"device-id\n0\n\n")
        reply = b""
        while chunk := conn.recv(4096):  # the device closes after its reply
            reply += chunk
    assert reply.startswith(b"\n\n{")
    run.read_until(r"INFO softap_sim\.dispatch: tcp \S+ device-id")
    # the log line is printed above the display, not into the middle of a table row
    raw = run.raw.decode("utf-8", "replace")
    assert re.search(r"(\x1b\[2K|\n)[\d:, -]+ INFO softap_sim\.dispatch: tcp", raw), raw
    _power_off(control)
    # the view's "most recent changes" row for it (state column, then the change)
    run.read_until(r"listening\s+->\s+off\s+on\s+\w+")
    _stop(run, stop_signal)
    raw = run.raw.decode("utf-8", "replace")
    # the live display hid the cursor while drawing and gave it back at the end
    assert raw.rindex("\x1b[?25h") > raw.rindex("\x1b[?25l")


@pytest.mark.parametrize(
    ("extra", "tty"), [(("--plain",), True), ((), False)], ids=["tty-plain", "pipe"]
)
def test_plain_lines_with_plain_or_without_a_terminal(
    pty_run: Callable[..., PtyRun], extra: tuple[str, ...], tty: bool
) -> None:
    run = pty_run(*extra, tty=tty)
    control = run.read_until(_CONTROL.pattern).group(1)
    run.read_until("Press Ctrl-C to stop.")
    _power_off(control)
    run.read_until(r"LED off\s+listening -> off on \w+")
    _stop(run)
    assert "most recent changes" not in run.text  # no live view
