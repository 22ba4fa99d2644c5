"""fuzz_cloud's child process (hidden ``--serve`` mode): the cloud under test.

A process of its own so a crash, a leak or a blocked loop in the cloud shows in *its*
RSS and stderr, not the fuzzer's. Every log record with a traceback is also written to
``errors.jsonl`` with the ``X-Fuzz-Id`` of the request being handled (read from the
traceback's frames), so each internal error is joined to the exact request behind it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import BenchError, announce, leave_sigint_to_parent, read_pipe
from fuzz_http import FUZZ_ID_HEADER, HOST


class _ErrorRecorder(logging.Handler):
    """One JSON line per log record with a traceback: exception, frames, request id."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.ERROR)
        self._file = path.open("a", encoding="utf-8", errors="backslashreplace")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            info: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                info["exc_type"] = type(exc).__name__
                info["exc"] = str(exc)[:300]
                frames = traceback.extract_tb(exc.__traceback__)
                info["frames"] = [
                    {"file": f.filename, "line": f.lineno, "func": f.name, "code": f.line}
                    for f in frames[-6:]
                ]
                info["fuzz_id"] = _fuzz_id(exc.__traceback__)
                info["parser_rejection"] = _parser_rejection(record, exc)
            self._file.write(json.dumps(info, ensure_ascii=True) + "\n")
            self._file.flush()
        except Exception:  # never let the recorder break the server
            self.handleError(record)


def _parser_rejection(record: logging.LogRecord, exc: BaseException) -> bool:
    """aiohttp's HTTP parser refused malformed bytes (it answers 400 and closes, and logs
    the refusal at ERROR): the expected outcome of the raw malformed-HTTP requests."""
    from aiohttp.http_exceptions import HttpProcessingError

    return record.name.startswith("aiohttp.") and isinstance(exc, HttpProcessingError)


def _fuzz_id(tb: Any) -> str | None:
    """The X-Fuzz-Id header of the aiohttp request found in the traceback's frames."""
    from aiohttp import web

    while tb is not None:
        request = tb.tb_frame.f_locals.get("request")
        if isinstance(request, web.BaseRequest):
            with contextlib.suppress(Exception):
                return request.headers.get(FUZZ_ID_HEADER)
        tb = tb.tb_next
    return None


class _MemoryTrace:
    """``--tracemalloc``: the child's allocation growth between two ``mem`` commands."""

    def __init__(self, path: Path) -> None:
        import tracemalloc

        self.path = path
        self._tm = tracemalloc
        tracemalloc.start(8)
        self.baseline: Any = None

    def command(self) -> None:
        snap = self._tm.take_snapshot().filter_traces([self._tm.Filter(False, self._tm.__file__)])
        if self.baseline is None:
            self.baseline = snap
            return
        lines = ["top allocation growth since the warm-up (size, count, where):"]
        for stat in snap.compare_to(self.baseline, "traceback")[:15]:
            lines.append(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+8d}")
            lines.extend(f"      {line}" for line in stat.traceback.format()[-8:])
        self.path.write_text("\n".join(lines) + "\n")


async def _serve(state_dir: Path, setup: dict[str, Any], trace: Path | None = None) -> None:
    from softap_sim.cloud.service import CloudService

    service = CloudService(state_dir)
    await service.open()
    created = service.created_credentials
    if created is None:
        raise BenchError(f"{state_dir} was not a fresh state directory")
    product_id = int(created["product"]["id"])
    try:
        server = await service.serve(HOST, 0)
        dev = await service.serve_devices(HOST, 0)
        for device in setup["devices"]:
            await service.register_device(
                device["id"],
                device["public_key_pem"],
                product_id=product_id if device["product"] else None,
            )
        info = {
            "pid": os.getpid(),
            "url": server.url,
            "device_port": dev.port,
            "credentials": created,
            "server_public_key_pem": service.server_public_key_pem.decode("ascii"),
        }
        announce(info)
        reader = await read_pipe()
        memory = _MemoryTrace(trace) if trace is not None else None
        while line := await reader.readline():
            if memory is not None and line.strip() == b"mem":
                memory.command()
    finally:
        await service.close()


def serve_main(args: argparse.Namespace) -> int:
    leave_sigint_to_parent()
    state_dir = Path(args.state_dir)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger().addHandler(_ErrorRecorder(state_dir.parent / "errors.jsonl"))
    # one line per fuzzed device session would drown the interesting lines
    logging.getLogger("softap_sim.cloud.device_server").setLevel(logging.ERROR)
    setup = json.loads(Path(args.setup).read_text())
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve(state_dir, setup, Path(args.tracemalloc) if args.tracemalloc else None))
    return 0


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
