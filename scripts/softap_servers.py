"""bench_softap's server processes: the emulator variants and the bare asyncio baselines.

Both ends are here: the ``--serve ROLE`` side (runs in the child, announces its pid and
ports in one JSON line, serves until its stdin closes) and :class:`ServerProcess`, the
parent's handle on it. Every server is a process of its own so its CPU time is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from benchlib import (
    BenchError,
    CpuSample,
    LineChild,
    announce,
    leave_sigint_to_parent,
    until_stdin_closes,
)
from benchlib.children import CHECKOUT
from softap_wire import HOST, capture_replies

#: the script whose ``--serve ROLE`` runs a server
SCRIPT: Final = str(Path(__file__).resolve().with_name("bench_softap.py"))
#: --serve role -> label in the report
SERVER_LABELS: Final = {
    "ours": "ours",
    "ours-norec": "norec",
    "ours-rev": "rev",
    "bare-tcp": "bare",
    "bare-http": "bare",
}
READY_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0


async def _serve_ours(
    role: str,
    seed: int,
    profile_out: str | None,
    transcript_path: str | None,
    key_pem: bytes | None,
) -> None:
    import cProfile

    import softap_sim
    from firmware_model import DeviceKey
    from softap_sim import DeviceEmulator, SimConfig

    # only pass what the code under test knows: ``ours-rev`` may predate ``record``
    options: dict[str, Any] = {}
    if key_pem is not None:
        options["key"] = DeviceKey.from_pem(key_pem)
    if role == "ours-norec":
        options["record"] = False
    elif transcript_path:
        options["transcript_path"] = Path(transcript_path)
    config = SimConfig(state_dir=None, seed=seed, **options)
    async with DeviceEmulator(config, host=HOST, tcp_port=0, http_port=0) as emu:
        announce(
            {
                "role": role,
                "pid": os.getpid(),
                "tcp_port": emu.tcp_address[1],
                "http_port": emu.http_address[1],
                "http_sockets": emu.device.profile.http_sockets,
                "module": os.path.dirname(softap_sim.__file__),  # noqa: PTH120
                "recording": bool(getattr(getattr(emu, "transcript", None), "enabled", False)),
            }
        )
        profiler = cProfile.Profile() if profile_out else None
        if profiler is not None:
            profiler.enable()
        try:
            await until_stdin_closes()
        finally:
            if profiler is not None and profile_out:
                profiler.disable()
                profiler.dump_stats(profile_out)
        served = dict(emu.dispatcher.served) if emu.dispatcher is not None else {}
        transcript = getattr(emu, "transcript", None)
        recorded = int(getattr(transcript, "seq", 0) or 0)
        emu.check()
    announce({"stopped": True, "served": served, "recorded": recorded})


class _BareTcpProtocol(asyncio.Protocol):
    """Waits for ``\\n\\n`` (and the announced body), writes the reply, closes."""

    __slots__ = ("_buf", "_done", "_replies", "_transport")

    def __init__(self, replies: dict[bytes, bytes]) -> None:
        self._replies = replies
        self._buf = b""
        self._done = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._done or self._transport is None:
            return
        buf = self._buf + data
        end = buf.find(b"\n\n")
        if end < 0:
            self._buf = buf
            return
        name, _, length = buf[:end].partition(b"\n")
        if len(buf) - end - 2 < int(length or b"0"):
            self._buf = buf
            return
        self._done = True
        self._transport.write(self._replies.get(name, b""))
        self._transport.close()


class _BareHttpProtocol(asyncio.Protocol):
    """Finds ``\\r\\n\\r\\n`` (and any ``Content-Length`` body), writes the reply, stays open."""

    __slots__ = ("_buf", "_replies", "_transport")

    def __init__(self, replies: dict[bytes, bytes]) -> None:
        self._replies = replies
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        buf = self._buf + data if self._buf else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self._buf = buf
            return
        need = 0
        at = buf.find(b"Content-Length: ", 0, end)
        if at >= 0:
            need = int(buf[at + 16 : buf.find(b"\r\n", at)])
        stop = end + 4 + need
        if len(buf) < stop:
            self._buf = buf
            return
        self._buf = buf[stop:]
        reply = self._replies.get(buf[buf.find(b" ") + 1 : buf.find(b" HTTP/1.1")])
        if reply is None:
            self._transport.close()
            return
        self._transport.write(reply)


async def _serve_bare(role: str) -> None:
    # the parent sends the replies as the first stdin line: {"replies": {key: hex}}
    config = json.loads(sys.stdin.buffer.readline())
    replies = {k.encode(): bytes.fromhex(v) for k, v in config["replies"].items()}
    loop = asyncio.get_running_loop()
    factory: Callable[[], asyncio.Protocol]
    if role == "bare-tcp":

        def factory() -> asyncio.Protocol:
            return _BareTcpProtocol(replies)
    else:

        def factory() -> asyncio.Protocol:
            return _BareHttpProtocol(replies)

    server = await loop.create_server(factory, HOST, 0, reuse_address=True)
    port = int(server.sockets[0].getsockname()[1])
    announce({"role": role, "pid": os.getpid(), "tcp_port": port, "http_port": port})
    try:
        await until_stdin_closes()
    finally:
        server.close()
        await server.wait_closed()
    announce({"stopped": True})


def serve_main(args: argparse.Namespace) -> int:
    leave_sigint_to_parent()
    if args.serve.startswith("ours"):
        key_pem = Path(args.key_pem).read_bytes() if args.key_pem else None
        asyncio.run(
            _serve_ours(args.serve, args.seed, args.profile_out, args.transcript_out, key_pem)
        )
    else:
        asyncio.run(_serve_bare(args.serve))
    return 0


class ServerProcess(LineChild):
    """One ``--serve`` child: start, read its ports, sample its CPU time, stop it."""

    def __init__(
        self,
        role: str,
        extra_args: Sequence[str] = (),
        config: dict[str, Any] | None = None,
        pythonpath: str | None = None,
    ) -> None:
        super().__init__(f"{role} server")
        self.role = role
        #: where the child imports softap_sim from (default: this checkout)
        self._pythonpath = pythonpath or CHECKOUT
        self._argv = [sys.executable, SCRIPT, "--serve", role, *extra_args]
        self._config = config
        self.info: dict[str, Any] = {}
        self.final: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        self.spawn(self._argv, pythonpath=self._pythonpath)
        if self._config is not None:
            self.send_json(self._config)
        self.info = self.read_json(READY_TIMEOUT_S, "announce its ports")
        return self.info

    def cpu_sample(self) -> CpuSample:
        """CPU time the server process has used so far, read from ``/proc``."""
        return CpuSample.of(self.pid)

    def stop(
        self, grace_s: float = STOP_TIMEOUT_S, *, on_line: Callable[[bytes], None] | None = None
    ) -> None:
        """Close stdin, keep the final ``stopped`` line, reap. Idempotent."""
        super().stop(grace_s, on_line=on_line or self._final_line)

    def _final_line(self, line: bytes) -> None:
        data = json.loads(line)
        if isinstance(data, dict) and data.get("stopped"):
            self.final = data


def write_device_key(into: Path) -> Path:
    """One RSA-1024 device key (PKCS#8 PEM, mode 0600) shared by every emulator process.

    The seed fixes the device id, but a new key is random: with one key all emulator
    variants answer ``public-key`` with the same bytes, and none spends its start-up
    generating one.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = into / "device_key.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return path


def verify_same_replies(
    server: ServerProcess,
    commands: Sequence[str],
    tcp_replies: dict[str, bytes],
    http_replies: dict[str, bytes],
) -> None:
    """The other emulator variants must answer byte for byte like ``ours``."""
    tcp, http = capture_replies(server.info, commands)
    for c in commands:
        for name, got, want in (
            ("TCP", tcp[c], tcp_replies[c]),
            ("HTTP", http[c], http_replies[c]),
        ):
            if got != want:
                raise BenchError(
                    f"{server.role} {name} reply to {c} differs from ours:\n"
                    f"  {server.role} {got[:300]!r}\n  ours {want[:300]!r}"
                )
