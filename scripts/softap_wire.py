"""bench_softap's wire: the requests it sends and the exact reply bytes it expects.

The baselines are not written by hand: the emulator's replies for each benchmarked
command are captured first (twice, to prove they are stable, with blocking sockets
before any load) and every other server must answer them byte for byte.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any, Final

from benchlib import BenchError

HOST: Final = "127.0.0.1"
COMMANDS: Final = ("version", "device-id", "public-key", "scan-ap", "set")
#: body of the benchmarked ``set`` command (a claim code; nothing is persisted)
SET_BODY: Final = b'{"k":"cc","v":"bench-claim-code"}'
#: end of a chunked reply: the last data chunk's CRLF, the zero chunk, the blank line
HTTP_TERMINATOR: Final = b"\r\n0\r\n\r\n"
IO_TIMEOUT_S: Final = 5.0
MAX_REPLY_BYTES: Final = 1 << 20
RECV_BYTES: Final = 65536


def tcp_request(command: str) -> bytes:
    """``name\\nlength\\n\\nbody`` of the TCP protocol."""
    body = SET_BODY if command == "set" else b""
    return b"%s\n%d\n\n%s" % (command.encode(), len(body), body)


def http_request(command: str) -> bytes:
    """A keep-alive request for ``/<command>`` (``set`` is a POST with a body)."""
    if command == "set":
        return b"POST /set HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
            len(SET_BODY),
            SET_BODY,
        )
    return b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % command.encode()


def fetch_tcp(port: int, request: bytes) -> bytes:
    """One TCP command on a fresh connection, read to EOF."""
    deadline = time.monotonic() + IO_TIMEOUT_S
    chunks: list[bytes] = []
    size = 0
    try:
        with socket.create_connection((HOST, port), timeout=IO_TIMEOUT_S) as sock:
            sock.sendall(request)
            while time.monotonic() < deadline and size <= MAX_REPLY_BYTES:
                data = sock.recv(RECV_BYTES)
                if not data:
                    return b"".join(chunks)
                chunks.append(data)
                size += len(data)
    except OSError as err:
        raise BenchError(
            f"TCP port {port}, request {request!r}: {err or type(err).__name__} "
            f"after {b''.join(chunks)[:200]!r}"
        ) from None
    raise BenchError(f"TCP port {port}: no EOF after {size} reply bytes for {request!r}")


def fetch_http(sock: socket.socket, request: bytes) -> bytes:
    """One request on a keep-alive connection, read to the end of its reply (client codec)."""
    from softap_sim.protocol.client import HttpReplyParser, SoftapClientError

    deadline = time.monotonic() + IO_TIMEOUT_S
    parser = HttpReplyParser()
    buf = b""
    try:
        sock.sendall(request)
        while time.monotonic() < deadline and len(buf) <= MAX_REPLY_BYTES:
            data = sock.recv(RECV_BYTES)
            if not data:
                break
            buf += data
            if (reply := parser.feed(data)) is not None:
                return reply.raw
    except SoftapClientError as err:
        raise BenchError(f"HTTP request {request!r}: {err}") from None
    except OSError as err:
        raise BenchError(
            f"HTTP request {request!r}: {err or type(err).__name__}; no chunked "
            f"reply, got {buf[:300]!r}"
        ) from None
    raise BenchError(f"HTTP: no chunked reply to {request!r} (got {buf[:300]!r})")


def capture_http(port: int, commands: Sequence[str], rounds: int) -> list[dict[str, bytes]]:
    try:
        sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT_S)
    except OSError as err:
        raise BenchError(f"HTTP port {port}: {err}") from None
    with sock:
        return [{c: fetch_http(sock, http_request(c)) for c in commands} for _ in range(rounds)]


def capture_replies(
    ours: dict[str, Any], commands: Sequence[str]
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The emulator's exact reply bytes per command, fetched twice to prove stability."""
    tcp: dict[str, bytes] = {}
    for c in commands:
        first, second = (fetch_tcp(ours["tcp_port"], tcp_request(c)) for _ in range(2))
        if first != second:
            raise BenchError(f"emulator TCP reply to {c} is not stable: {first!r} / {second!r}")
        if not first.startswith(b"\n\n{"):
            raise BenchError(f"emulator TCP reply to {c} is not a JSON reply: {first!r}")
        tcp[c] = first
    first_http, second_http = capture_http(ours["http_port"], commands, 2)
    for c in commands:
        if first_http[c] != second_http[c]:
            raise BenchError(f"emulator HTTP reply to {c} is not stable")
        if not first_http[c].startswith(b"HTTP/1.1 200 OK\r\n"):
            raise BenchError(f"emulator HTTP reply to {c} is not a 200: {first_http[c][:80]!r}")
    return tcp, first_http


def verify_baselines(
    tcp_port: int | None,
    http_port: int | None,
    commands: Sequence[str],
    tcp: dict[str, bytes],
    http: dict[str, bytes],
) -> None:
    """Fail loudly unless the baselines answer byte for byte like the emulator."""
    for c in commands:
        if tcp_port is not None and (got := fetch_tcp(tcp_port, tcp_request(c))) != tcp[c]:
            raise BenchError(
                f"bare TCP reply to {c} differs from ours:\n  bare {got!r}\n  ours {tcp[c]!r}"
            )
    if http_port is not None:
        (bare,) = capture_http(http_port, commands, 1)
        for c in commands:
            if bare[c] != http[c]:
                raise BenchError(
                    f"bare HTTP reply to {c} differs from ours:\n"
                    f"  bare {bare[c]!r}\n  ours {http[c]!r}"
                )
