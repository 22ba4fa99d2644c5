"""The benchmarks' common ground: errors and exit codes, quantiles, loop lag, CLI types,
the report's last step, the revision extractor and the cloud's customer tokens."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import signal
import statistics
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

#: what :func:`extract_revision` unpacks: the code a server under test imports
PACKAGES: Final = ("firmware_model", "softap_sim")
#: the checkout the benchmarks belong to (what a child process imports by default)
REPO_ROOT: Final = Path(__file__).resolve().parents[2]


class BenchError(Exception):
    """Set-up or verification failed: the benchmark cannot produce numbers (exit 2)."""


def run_main(
    name: str,
    run: Callable[[], int],
    *,
    errors: tuple[type[BaseException], ...] = (BenchError,),
    label: str = "error",
) -> int:
    """Run a benchmark: SIGTERM cleans up like Ctrl-C; set-up errors are one line, exit 2.

    ``errors`` are the exceptions that mean "no numbers" (printed as ``name: label: err``).
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run()
    except errors as err:
        print(f"{name}: {label}: {err}", file=sys.stderr)
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


def extract_revision(rev: str, into: Path) -> Path:
    """``firmware_model`` and ``softap_sim`` of git revision ``rev``, unpacked in ``into``.

    A child process with ``PYTHONPATH`` at the result (:func:`child_env`) runs that
    revision's code, so a benchmark can measure it beside this checkout in one run.
    """
    try:
        tar = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", rev, *PACKAGES],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", b"") or b""
        raise BenchError(
            f"cannot extract revision {rev!r} with git archive: "
            f"{detail.decode(errors='replace').strip() or err}"
        ) from None
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    return into


def show_report(
    report: dict[str, Any],
    missed: list[str],
    *,
    as_json: bool,
    table: Callable[[dict[str, Any], list[str]], None],
) -> None:
    """The last step of a judged benchmark: ``missed`` into the report, then JSON or table."""
    report["missed"] = missed
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        table(report, missed)


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


async def customer_tokens(
    backend: Any, *, product_id: int, client_id: str, emails: Sequence[str]
) -> list[str]:
    """Create a customer per e-mail address and return an access token for each (one
    database transaction, through ``CloudBackend.create_customers_with_tokens``)."""
    created = await backend.create_customers_with_tokens(product_id, client_id, list(emails))
    return [str(body["access_token"]) for _customer, body in created]
