#!/usr/bin/env python3
"""Hostile-input fuzzing of the embedded cloud: every REST route and the device port.

Issue text: "at least 1,000,000 mutated requests across every REST route, auth header
shapes and the device port ... never a 500, no hang, RSS growth < 20 % after warm-up,
and the server keeps serving valid requests after each batch".

Method
------
The cloud runs in a **child process** started from this script (hidden ``--serve``
mode, as in ``bench_cloud.py``): ``CloudService(<temp dir>)`` (file-backed SQLite in WAL
mode), the REST server and the device server (TCP protocol of cloud-api.md §8) on
127.0.0.1 port 0, and a handful of registered devices (RSA-1024 keys generated here and
handed over in a JSON file). The child prints one JSON line (pid, URL, device port,
credentials, server public key) and serves until its stdin closes. Its stderr goes to a
file; every log record with a traceback is also written, as one JSON line, to
``errors.jsonl`` with the exception, the innermost frames and the ``X-Fuzz-Id`` header
of the request being handled (read from the traceback's frames), so each internal error
is joined to the exact request that caused it.

Set-up through the REST API, by this script: a user token (password grant of the
developer user), product-client tokens (``client_credentials``), customers and their
tokens (``client_credentials`` with ``scope=customer=<email>``), claim codes, extra OAuth
clients and "sacrificial" customers/tokens/clients that destructive routes may delete
(so the fuzzer never deletes what it needs itself), an expired and a revoked token. Two
emulated devices stay **online** the whole run (full handshake, Hello, answering
Describe, function calls, variable reads and pings) and are claimed by a customer and by
the developer, so function/variable routes reach the device link.

Load: ``--connections`` keep-alive connections, each a closed loop of hand-built
HTTP/1.1 requests on asyncio streams (only the status line, Content-Length/chunked body
and Content-Type of each reply are parsed; an SSE reply is counted and the connection
dropped; a server close means reconnect). Each request starts from a *valid* request
for a route (right method, path, token of a suitable kind, body) and gets 0-4 mutations:
path parameters (ASCII and Unicode digits such as U+00B2 and U+0663, integers beyond 64
bits, negative, empty, percent-encoded lone surrogates ``%ED%A0%80``, overlong UTF-8,
NUL, 5 000-character strings, slugs, valid and invalid device ids), the query string
(repeated and odd keys, ``per_page``/``page``/``deviceId``/``format``/``access_token``),
the body (form, JSON with wrong types, nesting, huge numbers, ``1e400``, ``NaN``, lists,
``null``, invalid UTF-8, ``"\\ud800"`` escapes, truncated JSON, 70 KiB bodies, wrong
content types), the headers (``Authorization`` Bearer/Basic/garbage/empty/repeated,
base64 junk, non-ASCII bytes) and the method (GET/POST/PUT/DELETE/PATCH/HEAD/OPTIONS).
A share of the requests is raw malformed HTTP on a fresh connection (bad request lines,
bad header bytes, broken chunked encoding, Content-Length mismatches, bare LF) for
aiohttp's own parser. Requests that reach scrypt (password grants, scrypt client
secrets, customer passwords, Basic user logins) are rate-limited (``--kdf-rate``) so
the single KDF slot of a 2-core machine is not the bottleneck.

The device port gets ``--device-sessions`` sessions per batch: random bytes, truncated
and replayed handshake blocks, unknown device ids, silence, and a good handshake followed
by garbage (random bytes, bad frame lengths, bad padding, malformed CoAP, odd events,
claim-code events, bad descriptions, a second Hello).

After each batch (``--batch`` requests): a **canary** (a fresh customer-token grant,
``GET /v1/devices`` with it, and a good device handshake up to the server's Hello) must
succeed; the child's RSS (``VmRSS``) is read. The warm-up batch (``--warmup``) sets the
RSS baseline.

Goals (exit status 0 when all are met, 1 when one is missed, 2 when set-up failed): no
HTTP 500 and no ERROR/Traceback line in the child's stderr, no hang (a request without
a reply or close within ``--request-timeout``), RSS growth below ``--max-rss-growth``
percent after warm-up, every canary passes, the device server still completes good
handshakes. The report lists status counts, requests/s, every distinct internal error
(route, exception, the line it was raised at, a minimal request) and up to 50 recorded
500 requests (distinct by route and error).

Examples::

    python scripts/fuzz_cloud.py                          # 1,000,000 requests, <= 900 s
    python scripts/fuzz_cloud.py --requests 200000 --seed 7
    python scripts/fuzz_cloud.py --requests 50000 --batch 10000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import re
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

from benchlib import (
    AsyncChild,
    BenchError,
    announce,
    leave_sigint_to_parent,
    memory_mib,
    positive_float,
    positive_int,
    read_pipe,
    run_main,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
SCRIPT: Final = str(Path(__file__).resolve())
HOST: Final = "127.0.0.1"
READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 15.0
SETUP_TIMEOUT_S: Final = 30.0
DEVICE_TIMEOUT_S: Final = 10.0
FUZZ_ID_HEADER: Final = "X-Fuzz-Id"
MAX_RECORDED_500: Final = 2000
MAX_REPORTED: Final = 50
STREAM_LIMIT: Final = 1 << 20

#: (method, path template) of every REST route, copied from softap_sim/cloud/auth.py and
#: softap_sim/cloud/devices.py ``ROUTES`` (those modules are being moved: this is data).
#: ``*`` = any method; ``{prefix:.+}`` is written ``{prefix}``.
ROUTES: Final[tuple[tuple[str, str], ...]] = (
    ("*", "/oauth/token"),
    ("POST", "/v1/clients"),
    ("GET", "/v1/clients"),
    ("PUT", "/v1/clients/{client_id}"),
    ("DELETE", "/v1/clients/{client_id}"),
    ("POST", "/v1/products/{product}/clients"),
    ("GET", "/v1/products/{product}/clients"),
    ("PUT", "/v1/products/{product}/clients/{client_id}"),
    ("DELETE", "/v1/products/{product}/clients/{client_id}"),
    ("POST", "/v1/products/{product}/customers"),
    ("GET", "/v1/products/{product}/customers"),
    ("PUT", "/v1/products/{product}/customers/{email}"),
    ("DELETE", "/v1/products/{product}/customers/{email}"),
    ("GET", "/v1/softap-sim/cloud"),
    ("POST", "/v1/provisioning/{device}"),
    ("GET", "/v1/user"),
    ("GET", "/v1/webhooks"),
    ("GET", "/v1/access_tokens"),
    ("GET", "/v1/access_tokens/current"),
    ("DELETE", "/v1/access_tokens/current"),
    ("DELETE", "/v1/access_tokens/{token}"),
    ("POST", "/v1/device_claims"),
    ("POST", "/v1/products/{product}/device_claims"),
    ("GET", "/v1/devices"),
    ("POST", "/v1/devices"),
    ("POST", "/v1/devices/events"),
    ("GET", "/v1/devices/events"),
    ("GET", "/v1/devices/events/{prefix}"),
    ("GET", "/v1/events/{prefix}"),
    ("GET", "/v1/events"),
    ("GET", "/v1/devices/{device}/events"),
    ("GET", "/v1/devices/{device}/events/{prefix}"),
    ("GET", "/v1/devices/{device}"),
    ("PUT", "/v1/devices/{device}"),
    ("DELETE", "/v1/devices/{device}"),
    ("GET", "/v1/devices/{device}/{name}"),
    ("POST", "/v1/devices/{device}/{name}"),
    ("GET", "/v1/products/{product}/devices"),
    ("GET", "/v1/products/{product}/devices/{device}"),
    ("DELETE", "/v1/products/{product}/devices/{device}/owner"),
    ("GET", "/v1/products/{product}/devices/{device}/{name}"),
    ("POST", "/v1/products/{product}/devices/{device}/{name}"),
)
#: routes whose valid form always costs a scrypt (rate-limited by --kdf-rate)
KDF_ROUTES: Final = frozenset({("GET", "/v1/access_tokens")})
#: SSE routes: a valid request opens a stream that never ends by itself
SSE_TEMPLATES: Final = frozenset(t for _m, t in ROUTES if "events" in t)
METHODS: Final = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")

FUNCTIONS: Final = ("led", "echo")
VARIABLES: Final = {"temp": 9, "count": 2, "label": 4, "on": 1}  # describe type codes
CUSTOMER_PASSWORD: Final = "fuzz-password-1"  # a throwaway value in a temp database

log = logging.getLogger("fuzz_cloud")


# ==================================================================================
# the child: the cloud under test (--serve)
# ==================================================================================
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
        snap = self._tm.take_snapshot().filter_traces(
            [self._tm.Filter(False, self._tm.__file__)]
        )
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
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(state_dir, setup, Path(args.tracemalloc) if args.tracemalloc else None))
    return 0


# ==================================================================================
# raw HTTP/1.1 client
# ==================================================================================
@dataclass(slots=True)
class Reply:
    status: int
    content_type: bytes
    body: bytes
    close: bool
    sse: bool = False


@dataclass(slots=True)
class Request:
    method: str
    target: str  # path + query, already encoded as sent
    headers: list[bytes]  # raw header lines without CRLF
    body: bytes
    template: str
    kdf: bool = False
    raw: bytes | None = None  # a whole raw request (malformed HTTP); sent as is

    def wire(self, fuzz_id: int) -> bytes:
        if self.raw is not None:
            return self.raw
        head = [f"{self.method} {self.target} HTTP/1.1".encode("latin-1", "replace")]
        head.append(b"Host: " + HOST.encode())
        head.append(f"{FUZZ_ID_HEADER}: {fuzz_id}".encode())
        head.extend(self.headers)
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: " + str(len(self.body)).encode())
        return b"\r\n".join(head) + b"\r\n\r\n" + self.body

    def describe(self) -> dict[str, Any]:
        if self.raw is not None:
            return {"template": self.template, "raw": _short(self.raw, 600)}
        return {
            "template": self.template,
            "method": self.method,
            "target": self.target if len(self.target) < 600 else self.target[:600] + "...",
            "headers": [_short(h, 300) for h in self.headers],
            "body": _short(self.body, 600),
        }


def _short(data: bytes, limit: int) -> str:
    text = repr(data[:limit])
    return text + (f"...(+{len(data) - limit} bytes)" if len(data) > limit else "")


class ProtocolFailure(Exception):
    """The reply could not be parsed (or the connection closed without one)."""


async def read_reply(reader: asyncio.StreamReader, head_only: bool) -> Reply:
    """One reply, parsed with the client codec; never reads past it (keep-alive)."""
    from softap_sim.protocol.client import HttpReplyParser, SoftapClientError, parse_reply_head

    while True:
        try:
            raw_head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as err:
            raise ProtocolFailure("closed without a reply" if not err.partial else "cut") from None
        except asyncio.LimitOverrunError:
            raise ProtocolFailure("reply head too long") from None
        try:
            head = parse_reply_head(raw_head[:-4])
        except SoftapClientError as err:
            raise ProtocolFailure(f"bad reply head: {err}") from None
        if head.status != 100:
            break
    ctype = head.get("content-type") or b""
    if ctype.startswith(b"text/event-stream"):
        return Reply(head.status, ctype, b"", True, sse=True)
    parser = HttpReplyParser(head_only=head_only)
    close = head.close
    try:
        reply = parser.feed(raw_head)
        while reply is None:
            if need := parser.bytes_needed:
                reply = parser.feed(await reader.readexactly(need))
            elif head.chunked:
                reply = parser.feed(await reader.readuntil(b"\r\n"))
            else:  # the body runs to the close
                parser.feed(await reader.read())
                reply = parser.feed_eof()
                close = True
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, SoftapClientError) as err:
        raise ProtocolFailure(f"body: {type(err).__name__}") from None
    return Reply(head.status, ctype, reply.body, close)


class Connection:
    """One keep-alive connection; reconnects when the server closed the last one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(
                HOST, self.port, limit=STREAM_LIMIT
            )
            self.connects += 1
        return self.reader, self.writer

    def drop(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


# ==================================================================================
# hostile values
# ==================================================================================
LONG: Final = "a" * 5000
HOSTILE_TEXT: Final[tuple[str, ...]] = (
    "",
    " ",
    "0",
    "1",
    "-1",
    "00000000000000000000000001",
    "\u00b2",  # superscript two: str.isdigit() but not int()-able
    "\u0663",  # Arabic-Indic three: int() accepts it
    "\uff11\uff10\uff10\uff10\uff11",  # fullwidth 10001
    "\u2460",  # circled one
    str(2**63),
    str(2**64),
    str(2**64 + 1),
    str(-(2**63) - 1),
    "9" * 40,
    "9" * 5000,
    "1e400",
    "-1e400",
    "NaN",
    "inf",
    "0x10",
    "1_000",
    "1.5",
    "true",
    "null",
    "[]",
    "{}",
    LONG,
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "\U0001f600",
    "\u202e",
    "caf\u00e9",
    "../../etc/passwd",
    "%00",
    "%",
    "%zz",
    "a b",
    "a+b",
    "a/b",
    "a;b",
    "a=b&c",
    "\r\n",
    "'; DROP TABLE tokens; --",
    "customer=",
    "customer=nobody@example.com",
    "*:*",
    "none",
    "softap-sim",
    "SOFTAP-SIM",
    "10001",
    "010001",
    " 10001 ",
)
#: path segments as they go on the wire (already percent-encoded, or deliberately not)
RAW_SEGMENTS: Final[tuple[str, ...]] = (
    "%ED%A0%80",  # a lone surrogate in UTF-8 (invalid)
    "%ED%BF%BF",
    "%C0%AE",  # overlong "."
    "%C0%AF",
    "%E0%80%AF",
    "%F4%90%80%80",  # beyond U+10FFFF
    "%FF%FE",
    "%80",
    "%00",
    "%2F",
    "%2e%2e",
    "..",
    ".",
    "%25",
    "%",
    "%zz",
    "%C2%B2",  # superscript two
    "%D9%A3",  # Arabic-Indic three
    "%EF%BC%91",  # fullwidth one
    "a%0d%0ab",
    "%20",
    "+",
    "~",
    "@",
    "%40",
    ";x=1",
    "a" * 9000,
)
DEVICE_ID_NOISE: Final[tuple[str, ...]] = (
    "0" * 24,
    "f" * 24,
    "F" * 24,
    "0" * 23,
    "0" * 25,
    "g" * 24,
    "0123456789ABCDEF01234567",
    " 0123456789abcdef01234567",
    "0x0123456789abcdef012345",
    "photon_000001",
    "\uff10" * 24,
)
JSON_WEIRD: Final[tuple[str, ...]] = (
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "-Infinity",
    "9" * 30,
    "9" * 5000,  # beyond int's 4300-digit conversion limit
    "-0",
    "0.1e-400",
    "[]",
    "[1,2,3]",
    "{}",
    '{"a":{"b":{"c":[1,{"d":null}]}}}',
    "null",
    "true",
    "false",
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\u0000"',
    '"\\u00b2"',
    '"a\\nb"',
    "1.5",
    str(2**64),
)
FORM_KEYS: Final[tuple[str, ...]] = (
    "grant_type",
    "username",
    "password",
    "client_id",
    "client_secret",
    "scope",
    "refresh_token",
    "expires_in",
    "expires_at",
    "email",
    "no_password",
    "name",
    "type",
    "redirect_uri",
    "response_type",
    "state",
    "arg",
    "args",
    "format",
    "id",
    "request_transfer",
    "publicKey",
    "deviceID",
    "data",
    "private",
    "ttl",
    "signal",
    "iccid",
    "imei",
    "access_token",
    "activation_code",
    "",
    "\u00e9",
    "a[b]",
)
CONTENT_TYPES: Final[tuple[bytes, ...]] = (
    b"application/x-www-form-urlencoded",
    b"application/json",
    b"application/json; charset=latin-1",
    b"application/x-www-form-urlencoded; charset=utf-16",
    b"text/plain",
    b"multipart/form-data; boundary=xyz",
    b"multipart/form-data",
    b"application/octet-stream",
    b"",
    b"application/",
    b"*/*",
    b"application/json\x00",
    b"\xff\xfe",
    b"APPLICATION/JSON",
)
EXPIRES_VALUES: Final[tuple[str, ...]] = (
    "0",
    "1",
    "3600",
    "-5",
    "315360001",
    "1e10",
    "1e400",
    "nan",
    "inf",
    "1.5",
    "2.0",
    "\u0663",
    "\u00b2",
    "9" * 400,
    "2030-01-01T00:00:00Z",
    "2030-01-01T00:00:00+25:00",
    "9999-12-31T23:59:59",
    "0001-01-01",
    "2020-01-01",
    "+10000-01-01",
    "2030-02-30",
    "T",
)


class TokenBucket:
    """At most ``rate`` events per second (burst ``rate``)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class World:
    """Everything real the fuzzer can aim at (refreshed after each batch)."""

    product_id: int
    product_slug: str
    client_id: str
    client_secret: str
    user_email: str
    user_password: str
    user_tokens: list[str] = field(default_factory=list)
    client_tokens: list[str] = field(default_factory=list)
    customer_tokens: list[str] = field(default_factory=list)
    customer_emails: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)
    bad_tokens: list[str] = field(default_factory=list)  # expired, revoked, garbage
    claim_codes: list[str] = field(default_factory=list)
    device_ids: list[str] = field(default_factory=list)
    device_names: list[str] = field(default_factory=list)
    # sacrificial: destructive routes may delete these
    spare_tokens: list[str] = field(default_factory=list)
    spare_emails: list[str] = field(default_factory=list)
    spare_product_clients: list[str] = field(default_factory=list)
    spare_user_clients: list[str] = field(default_factory=list)


class Mutator:
    """Builds one request: a valid request for a route, then 0-4 mutations."""

    def __init__(self, world: World, rng: random.Random, kdf: TokenBucket, raw_share: float):
        self.w = world
        self.rng = rng
        self.kdf = kdf
        self.raw_share = raw_share

    # -- values -------------------------------------------------------------------------
    def hostile(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.choice(HOSTILE_TEXT)
        if r < 0.8:
            return "".join(chr(self.rng.randrange(0, 0x3000)) for _ in range(self.rng.randrange(8)))
        return self.rng.choice(
            (self.w.product_slug, str(self.w.product_id), self.rng.choice(self.w.device_ids))
        )

    def segment(self, value: str) -> str:
        """A path segment on the wire: encoded, or one of the raw hostile spellings."""
        if self.rng.random() < 0.25:
            return self.rng.choice(RAW_SEGMENTS)
        return quote(value, safe="", errors="surrogatepass")

    def param(self, name: str) -> str:
        """A *valid* value of a path parameter."""
        rng, w = self.rng, self.w
        if name == "product":
            return rng.choice((w.product_slug, str(w.product_id), w.product_slug.upper()))
        if name == "device":
            return rng.choice(w.device_ids + w.device_names[:1])
        if name == "name":
            return rng.choice((*FUNCTIONS, *VARIABLES, "nope"))
        if name == "client_id":
            pool = w.spare_product_clients + w.spare_user_clients
            return rng.choice(pool) if pool else "no-such-client"
        if name == "email":
            # only spare customers: a DELETE of a shared one would revoke its tokens
            return rng.choice(w.spare_emails) if w.spare_emails else "nobody@example.com"
        if name == "token":
            if w.spare_tokens and rng.random() < 0.5:
                return w.spare_tokens.pop()
            return rng.choice(w.bad_tokens)
        if name == "prefix":
            return rng.choice(("spark", "spark/status", "a/b/c", "x"))
        raise AssertionError(name)

    def hostile_param(self, name: str) -> str:
        rng = self.rng
        if name == "device" and rng.random() < 0.5:
            return quote(rng.choice(DEVICE_ID_NOISE), safe="")
        if name == "product" and rng.random() < 0.3:
            return quote(rng.choice(("\u00b2", "\u0663", str(2**64), "-10001", "1" * 30)), safe="")
        return self.segment(self.hostile())

    def token(self, kind: str) -> str:
        w = self.w
        pool = {
            "user": w.user_tokens,
            "client": w.client_tokens,
            "customer": w.customer_tokens,
        }.get(kind) or w.bad_tokens
        return self.rng.choice(pool)

    def auth_kind(self, template: str, method: str) -> str:
        """Which valid token the baseline request carries."""
        if "/customers" in template or "/products/{product}/clients" in template:
            return self.rng.choice(("user", "client", "client", "customer"))
        if template == "/v1/clients" or template.startswith("/v1/clients/"):
            return self.rng.choice(("user", "user", "client"))
        if "device_claims" in template:
            return self.rng.choice(("customer", "customer", "user", "client"))
        return self.rng.choice(("user", "client", "customer", "customer"))

    # -- the baseline ---------------------------------------------------------------------
    def baseline(self, method: str, template: str) -> tuple[Request, dict[str, str], bool]:
        """(request without body, form params, kdf?) for a valid request of the route."""
        rng, w = self.rng, self.w
        kdf = False
        params: dict[str, str] = {}
        headers: list[bytes] = []
        path = template
        for name in ("product", "client_id", "email", "token", "device", "name", "prefix"):
            if "{" + name + "}" in path:
                path = path.replace("{" + name + "}", quote(self.param(name), safe="/"))
        if template == "/oauth/token":
            method = "POST"
            grant = rng.random()
            cid, secret = w.client_id, w.client_secret
            if rng.random() < 0.05:
                cid = secret = rng.choice(("particle", "particle-api"))  # scrypt secrets
                kdf = True
            if grant < 0.03:
                kdf = True
                params.update(grant_type="password", username=w.user_email)
                params["password"] = w.user_password if rng.random() < 0.5 else "wrong"
                cid = secret = "particle"
            elif grant < 0.15:
                params["grant_type"] = "refresh_token"
                params["refresh_token"] = rng.choice(w.refresh_tokens or w.bad_tokens)
            else:
                params["grant_type"] = "client_credentials"
                if rng.random() < 0.7 and w.customer_emails:
                    params["scope"] = "customer=" + rng.choice(w.customer_emails)
            if rng.random() < 0.5:
                headers.append(b"Authorization: Basic " + _b64(f"{cid}:{secret}"))
            else:
                params.update(client_id=cid, client_secret=secret)
            if rng.random() < 0.2:
                params["expires_in"] = rng.choice(EXPIRES_VALUES)
            headers.append(b"Content-Type: application/x-www-form-urlencoded")
            return Request(method, path, headers, b"", template), params, kdf
        if (method, template) in KDF_ROUTES:
            kdf = True
            headers.append(b"Authorization: Basic " + _b64(f"{w.user_email}:{w.user_password}"))
            return Request(method, path, headers, b"", template), params, kdf
        if template == "/v1/products/{product}/customers" and method == "POST":
            # a bounded set: most repeats are "Customer already exists", so the customer
            # table (and the list routes) stay small and the request rate stays flat
            params["email"] = f"fz-{rng.randrange(300)}@example.com"
            if rng.random() < 0.03:
                kdf = True
                params["password"] = CUSTOMER_PASSWORD
            else:
                params["no_password"] = "true"
            if rng.random() < 0.6:
                headers.append(b"Authorization: Basic " + _b64(f"{w.client_id}:{w.client_secret}"))
                return Request(method, path, headers, b"", template), params, kdf
        kind = self.auth_kind(template, method)
        where = rng.random()
        token = self.token(kind)
        if where < 0.85 or method == "GET":
            headers.append(b"Authorization: Bearer " + token.encode())
        else:
            params["access_token"] = token
        if template.endswith("/clients") and method == "POST":
            params.update(name=f"fuzz {rng.getrandbits(16)}", type="installed")
            if rng.random() < 0.2:
                params.update(type="web", redirect_uri="https://example.com/cb")
            if rng.random() < 0.2:
                params["scope"] = rng.choice(("customers:create", "*:*", "none", "create_customer"))
        elif "{client_id}" in template and method == "PUT":
            params["name"] = f"renamed {rng.getrandbits(16)}"
            if rng.random() < 0.3:
                params["scope"] = rng.choice(("customers:create", "*:*", "none"))
        elif "{email}" in template and method == "PUT":
            if rng.random() < 0.1:
                kdf = True
                params["password"] = CUSTOMER_PASSWORD
        elif template == "/v1/devices" and method == "POST":
            params["id"] = rng.choice(w.device_ids)
            if rng.random() < 0.2:
                params["request_transfer"] = rng.choice(("true", "false"))
        elif "{name}" in template and method == "POST":
            key = "arg" if rng.random() < 0.5 else "args"
            params[key] = rng.choice(("on", "off", "", "x" * 63))
            if rng.random() < 0.1:
                params["format"] = "raw"
        query = ""
        if "{name}" in template and method == "GET" and rng.random() < 0.2:
            query = "?format=raw"
        elif template == "/v1/products/{product}/devices" and rng.random() < 0.6:
            query = "?" + urlencode(
                {"page": rng.choice(("1", "2")), "per_page": rng.choice(("1", "25", "100"))}
            )
        return Request(method, path + query, headers, b"", template), params, kdf

    # -- mutations --------------------------------------------------------------------------
    def mutate_path(self, req: Request) -> None:
        names = [n for n in ("product", "client_id", "email", "token", "device", "name", "prefix")
                 if "{" + n + "}" in req.template]
        path, _, query = req.target.partition("?")
        if not names:
            # add, drop or garble a segment of a parameterless route
            choice = self.rng.random()
            if choice < 0.4:
                path = path + "/" + self.segment(self.hostile())
            elif choice < 0.7:
                path = path.upper() if self.rng.random() < 0.5 else path + "/"
            else:
                path = "/" + self.segment(self.hostile()) + path
        else:
            segments = self._rebuild(req.template)
            name = self.rng.choice(names)
            segments[name] = self.hostile_param(name)
            path = req.template
            for n, v in segments.items():
                path = path.replace("{" + n + "}", v)
        req.target = path + ("?" + query if query else "")

    def _rebuild(self, template: str) -> dict[str, str]:
        return {
            n: quote(self.param(n), safe="/")
            for n in ("product", "client_id", "email", "token", "device", "name", "prefix")
            if "{" + n + "}" in template
        }

    def mutate_query(self, req: Request) -> None:
        rng = self.rng
        pairs: list[str] = []
        for _ in range(rng.randrange(1, 5)):
            key = rng.choice(
                ("per_page", "perPage", "page", "deviceId", "deviceName", "format", "access_token",
                 "nonce", "", "a%00", "%ED%A0%80", "page[]", "&", "=")
            )
            if key == "access_token" and rng.random() < 0.5:
                value = quote(self.token(rng.choice(("user", "client", "customer"))))
            elif key == "format" and rng.random() < 0.5:
                value = rng.choice(("raw", "RAW", "json"))
            else:
                value = (
                    rng.choice(RAW_SEGMENTS)
                    if rng.random() < 0.3
                    else quote(self.hostile(), safe="", errors="surrogatepass")
                )
            pairs.append(f"{key}={value}" if rng.random() < 0.9 else key)
        if rng.random() < 0.2:
            pairs = pairs + pairs  # repeated keys
        path, _, query = req.target.partition("?")
        joined = "&".join(([query] if query and rng.random() < 0.5 else []) + pairs)
        req.target = path + "?" + joined

    def mutate_headers(self, req: Request) -> None:
        rng = self.rng
        choice = rng.randrange(13)
        auth = [h for h in req.headers if h.lower().startswith(b"authorization:")]
        others = [h for h in req.headers if not h.lower().startswith(b"authorization:")]
        token = self.token(rng.choice(("user", "client", "customer"))).encode()
        junk: list[bytes] = [
            b"Authorization: Bearer",
            b"Authorization: Bearer ",
            b"Authorization: bearer " + token,
            b"Authorization: BEARER\t" + token,
            b"Authorization: Bearer  " + token + b" ",
            b"Authorization: Bearer " + token + b" extra",
            b"Authorization: Basic",
            b"Authorization: Basic !!!!",
            b"Authorization: Basic " + base64.b64encode(os.urandom(rng.randrange(1, 40))),
            b"Authorization: Basic " + _b64(":"),
            b"Authorization: Basic " + _b64("\udcff:x"),
            b"Authorization: Basic " + base64.b64encode(b"\xff\xfe:\x80"),
            b"Authorization: Basic " + _b64(self.w.client_id + ":"),
            b"Authorization: Basic " + _b64(":" + self.w.client_secret),
            b"Authorization: Basic " + _b64("a" * 300 + ":" + "b" * 300),
            b"Authorization: Basic " + _b64(f"{self.w.client_id}:{self.w.client_secret}")[:-2],
            b"Authorization: Digest x",
            b"Authorization: " + token,
            b"Authorization:",
            b"Authorization: Bearer \xc3\xa9\xff\xfe",
            b"Authorization: Bearer " + b"a" * 8000,
            b"Authorization: Bearer " + rng.choice(self.w.bad_tokens).encode(),
        ]
        if choice < 6:
            req.headers = [*others, rng.choice(junk)]
        elif choice < 8:
            req.headers = [*others, *auth, rng.choice(junk)]  # two Authorization headers
        elif choice < 9:
            req.headers = others  # none at all
        elif choice < 10:
            req.headers = [*req.headers, b"Content-Type: " + rng.choice(CONTENT_TYPES)]
        elif choice < 11:
            req.headers = [*req.headers, rng.choice((
                b"X-Odd: \xff\xfe\x80",
                b"Accept: */*; q=\xff",
                b"Connection: close",
                b"Expect: 100-continue",
                b"Cookie: a=" + b"b" * 4000,
                b"Content-Encoding: gzip",
                b"Transfer-Encoding: identity",
                b"Host: [::1",
                b"Origin: null",
                b"X-Forwarded-For: 10.0.0.1",
            ))]
        elif choice < 12:
            req.headers = [h.lower() if rng.random() < 0.5 else h.upper() for h in req.headers]
        else:
            req.headers = [*others, b"Authorization: Bearer " + token, b"Authorization: Basic "
                           + _b64(f"{self.w.client_id}:{self.w.client_secret}")]

    def body_bytes(self, params: dict[str, str], req: Request) -> None:
        """Serialise the params as form or JSON (the baseline encoding)."""
        if not params:
            return
        has_ct = any(h.lower().startswith(b"content-type:") for h in req.headers)
        if req.template != "/oauth/token" and self.rng.random() < 0.4:
            req.body = json.dumps(params).encode()
            if not has_ct:
                req.headers.append(b"Content-Type: application/json")
        else:
            req.body = urlencode(params, errors="surrogatepass").encode()
            if not has_ct:
                req.headers.append(b"Content-Type: application/x-www-form-urlencoded")

    def mutate_params(self, params: dict[str, str]) -> None:
        rng = self.rng
        for _ in range(rng.randrange(1, 4)):
            r = rng.random()
            if r < 0.4 and params:
                params[rng.choice(list(params))] = self.hostile()
            elif r < 0.6 and params:
                params.pop(rng.choice(list(params)))
            else:
                key = rng.choice(FORM_KEYS)
                if key in ("expires_in", "expires_at"):
                    params[key] = rng.choice(EXPIRES_VALUES)
                elif key == "scope":
                    params[key] = rng.choice(
                        (
                            "customer=" + self.hostile(),
                            "customer=" + rng.choice(self.w.customer_emails),
                            "customers:create",
                            "*:*",
                            self.hostile(),
                        )
                    )
                elif key == "grant_type":
                    params[key] = rng.choice(("password", "client_credentials", "refresh_token",
                                              "urn:custom:mfa-otp", "implicit", self.hostile()))
                elif key == "access_token":
                    params[key] = self.token(rng.choice(("user", "client", "customer")))
                elif key == "response_type":
                    params[key] = "token"
                else:
                    params[key] = self.hostile()

    def mutate_body(self, req: Request, params: dict[str, str]) -> None:
        """Replace the body with a hostile one (JSON or form or bytes)."""
        rng = self.rng
        others = [h for h in req.headers if not h.lower().startswith(b"content-type:")]
        choice = rng.randrange(10)
        key = rng.choice([*params, *FORM_KEYS[:24]]) if params else rng.choice(FORM_KEYS)
        if choice < 4:  # JSON with hostile value types
            fields = {k: json.dumps(v) for k, v in params.items()}
            fields[key] = rng.choice(JSON_WEIRD)
            if rng.random() < 0.2:
                fields[rng.choice(FORM_KEYS)] = rng.choice(JSON_WEIRD)
            text = "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}"
            body = text.encode()
            ctype = b"application/json"
        elif choice < 5:  # not an object / broken JSON
            body = rng.choice((
                b"[]", b"null", b"1", b'"x"', b"{", b'{"a":', b'{"a":1,}', b"{'a':1}",
                b'{"a":"\xff\xfe"}', b"\xef\xbb\xbf{}", b"[" * 100_000 + b"]" * 100_000,
                b'{"a":' * 5000 + b"1" + b"}" * 5000, b"1" * 5000, b"\x00" * 10, b"",
                b'{"a":1,"a":2}', b'{"\\ud800":"x"}',
            ))
            ctype = b"application/json"
        elif choice < 7:  # form with hostile encodings
            parts = [f"{quote(k)}={quote(v, errors='surrogatepass')}" for k, v in params.items()]
            parts.append(rng.choice((
                f"{key}=%ED%A0%80", f"{key}=%FF", f"{key}=%", f"{key}", "=", "&&&", f"{key}=%00",
                f"{key}=a&{key}=b", "%E9=1", f"{key}={'x' * 5000}",
            )))
            body = "&".join(parts).encode()
            if rng.random() < 0.2:
                body += b"\xff\xfe\x80"
            ctype = b"application/x-www-form-urlencoded"
        elif choice < 8:  # wrong content type for the bytes
            body = json.dumps(params or {"a": 1}).encode()
            ctype = rng.choice(CONTENT_TYPES)
        elif choice < 9:  # large bodies (above and just below the 64 KiB limit)
            size = rng.choice((64 * 1024, 64 * 1024 + 1, 70 * 1024))
            body = (key + "=").encode() + b"x" * size
            ctype = b"application/x-www-form-urlencoded"
        else:  # random bytes
            body = os.urandom(rng.randrange(1, 300))
            ctype = rng.choice(CONTENT_TYPES)
        req.body = body
        req.headers = [*others, b"Content-Type: " + ctype] if ctype else others

    # -- one request ----------------------------------------------------------------------
    def next(self) -> Request:
        rng = self.rng
        if rng.random() < self.raw_share:
            return raw_request(rng, self)
        while True:
            method, template = rng.choice(ROUTES)
            if (method, template) in KDF_ROUTES and rng.random() < 0.8:
                continue
            req, params, kdf = self.baseline(method if method != "*" else "POST", template)
            if kdf and not self.kdf.take():
                continue
            break
        if template in SSE_TEMPLATES and rng.random() < 0.5:
            # most SSE requests carry a bad token: a valid one only opens a stream
            req.headers = [b"Authorization: Bearer " + rng.choice(self.w.bad_tokens).encode()]
        mutations = rng.choices((0, 1, 2, 3, 4), weights=(12, 40, 26, 14, 8))[0]
        body_replaced = False
        for _ in range(mutations):
            what = rng.randrange(12)
            if what < 3:
                self.mutate_path(req)
            elif what < 4:
                self.mutate_query(req)
            elif what < 6:
                self.mutate_headers(req)
            elif what < 9:
                self.mutate_params(params)
            elif what < 11:
                body_replaced = True
            else:
                req.method = rng.choice(METHODS)
        self.body_bytes(params, req)
        if body_replaced:
            self.mutate_body(req, params)
        drop_body = req.method in ("GET", "HEAD", "DELETE", "OPTIONS") and rng.random() < 0.7
        if drop_body and not body_replaced:
            req.body = b""
        req.kdf = kdf
        self.protect(req)
        return req

    def protect(self, req: Request) -> None:
        """``DELETE /v1/access_tokens/current`` revokes whatever token it carries: never a
        shared one (the fuzzer's later requests and the canary need them)."""
        path = req.target.partition("?")[0].lower()
        if req.method != "DELETE" or not path.startswith("/v1/access_tokens/current"):
            return
        w = self.w
        for shared in (*w.user_tokens, *w.client_tokens, *w.customer_tokens):
            raw = shared.encode()
            if raw not in req.body and shared not in req.target and not any(
                raw in h for h in req.headers
            ):
                continue
            spare = (w.spare_tokens.pop() if w.spare_tokens else w.bad_tokens[0]).encode()
            req.headers = [h.replace(raw, spare) for h in req.headers]
            req.target = req.target.replace(shared, spare.decode())
            req.body = req.body.replace(raw, spare)


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode("utf-8", "surrogatepass"))


def raw_request(rng: random.Random, m: Mutator) -> Request:
    """Malformed HTTP for aiohttp's parser; sent on its own connection."""
    token = m.token("user").encode()
    auth = b"Authorization: Bearer " + token + b"\r\n"
    path = b"/v1/devices"
    kind = rng.randrange(16)
    raw: bytes
    if kind == 0:
        raw = b"GET\r\n\r\n"
    elif kind == 1:
        raw = b"GET /v1/devices HTTP/9.9\r\nHost: x\r\n\r\n"
    elif kind == 2:
        raw = b"G\x00T /v1/devices HTTP/1.1\r\nHost: x\r\n\r\n"
    elif kind == 3:
        raw = b"GET /v1/dev ices HTTP/1.1\r\nHost: x\r\n\r\n"
    elif kind == 4:
        raw = b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"
    elif kind == 5:
        raw = b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n" + auth + b"\r\n"
    elif kind == 6:
        raw = (b"POST /v1/device_claims HTTP/1.1\r\nHost: x\r\n" + auth
               + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
    elif kind == 7:
        raw = (b"POST /v1/device_claims HTTP/1.1\r\nHost: x\r\n" + auth
               + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    elif kind == 8:
        raw = (b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\n\r\ngrant_type=pass")
    elif kind == 9:
        raw = (b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n"
               b"grant_type=password")
    elif kind == 10:
        raw = (b"POST /v1/devices HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n" + auth + b"\r\n")
    elif kind == 11:
        raw = (b"POST /v1/devices HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n"
               + auth + b"\r\n{}")
    elif kind == 12:
        raw = b"GET " + path + b" HTTP/1.1\nHost: x\n" + auth.replace(b"\r\n", b"\n") + b"\n"
    elif kind == 13:
        raw = b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    elif kind == 14:
        raw = b"GET /v1/devices HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 200 + b"\r\n"
    else:
        raw = (b"POST /v1/device_claims HTTP/1.1\r\nHost: x\r\n" + auth
               + b"Transfer-Encoding: chunked\r\n\r\n" + b"ffffffffffffffffff\r\nab\r\n0\r\n\r\n")
    return Request("RAW", "", [], b"", f"raw#{kind}", raw=raw)


# ==================================================================================
# the device side
# ==================================================================================
def _describe_payload() -> bytes:
    return json.dumps({"f": list(FUNCTIONS), "v": VARIABLES}).encode()


def _variable_payload(name: str) -> bytes | None:
    code = VARIABLES.get(name)
    if code == 9:
        return struct.pack("<d", 21.5)
    if code == 2:
        return struct.pack(">i", 42)
    if code == 4:
        return b"hello"
    if code == 1:
        return b"\x01"
    return None


class DeviceIdentity:
    def __init__(self, device_id: str, key: rsa.RSAPrivateKey, product: bool) -> None:
        self.device_id = device_id
        self.key = key
        self.product = product

    def pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )


async def device_handshake(
    ident: DeviceIdentity, server_key: rsa.RSAPublicKey, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Any, bytes]:
    """Connect and run the RSA exchange: (reader, writer, channel, the 256-byte block sent)."""
    from softap_sim.protocol.lightssl import Channel, DeviceHandshake

    reader, writer = await asyncio.open_connection(HOST, port)
    hs = DeviceHandshake(ident.key, server_key, bytes.fromhex(ident.device_id))
    block = b""
    try:
        async with asyncio.timeout(DEVICE_TIMEOUT_S):
            while hs.session is None:
                data = await reader.read(4096)
                if not data:
                    raise ConnectionError("server closed during the handshake")
                out = hs.receive_data(data)
                if out:
                    block = out
                    writer.write(out)
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer, Channel(hs.session), block


def coap_bytes(msg_type: int, code: int, mid: int, token: bytes = b"",
               options: list[tuple[int, bytes]] | None = None, payload: bytes = b"") -> bytes:
    from softap_sim.protocol import coap

    return coap.encode(coap.CoapMessage(coap.CoapType(msg_type), code, mid, token,
                                        options or [], payload))


def hello_bytes(mid: int) -> bytes:
    return coap_bytes(0, 0x02, mid, b"", [(11, b"h")], struct.pack(">HHBBH", 6, 0, 0, 0, 6))


class FakeDevice:
    """A well-behaved device that stays online: Describe, functions, variables, pings."""

    def __init__(self, ident: DeviceIdentity, server_key: rsa.RSAPublicKey, port: int) -> None:
        self.ident = ident
        self.server_key = server_key
        self.port = port
        self.task: asyncio.Task[None] | None = None
        self.up = asyncio.Event()
        self.sessions = 0
        self.calls = 0

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def start(self) -> None:
        self.up.clear()
        self.task = asyncio.create_task(self._run())
        async with asyncio.timeout(DEVICE_TIMEOUT_S):
            await self.up.wait()

    async def _run(self) -> None:
        from softap_sim.protocol import coap

        reader, writer, channel, _block = await device_handshake(
            self.ident, self.server_key, self.port
        )
        self.sessions += 1
        mid = int.from_bytes(channel.salt[:2], "big")
        writer.write(channel.encrypt(hello_bytes(mid)))
        try:
            while data := await reader.read(65536):
                for plain in channel.receive_data(data):
                    msg = coap.decode(plain)
                    reply = self._answer(msg)
                    if reply is not None:
                        writer.write(channel.encrypt(reply))
        except (OSError, coap.CoapError, ValueError) as err:
            log.debug("fake device %s: %s", self.ident.device_id, err)
        finally:
            self.up.clear()
            writer.transport.abort()

    def _answer(self, msg: Any) -> bytes | None:
        ack = 2
        if msg.type in (2, 3):
            return None
        path = msg.uri_path
        head = path[0] if path else b""
        if msg.code == 0x02 and head == b"h":
            self.up.set()
            return coap_bytes(ack, 0, msg.message_id) if msg.type == 0 else None
        if msg.code == 0:
            return coap_bytes(ack, 0, msg.message_id)
        if msg.code == 0x01 and head == b"d":
            return coap_bytes(ack, 0x45, msg.message_id, msg.token, [], _describe_payload())
        if msg.code == 0x02 and head == b"f" and len(path) >= 2:
            self.calls += 1
            if path[1].decode("utf-8", "replace") not in FUNCTIONS:
                return coap_bytes(ack, 0x84, msg.message_id, msg.token)
            arg = b"".join(msg.uri_query)
            return coap_bytes(ack, 0x44, msg.message_id, msg.token, [], struct.pack(">i", len(arg)))
        if msg.code == 0x01 and head == b"v" and len(path) >= 2:
            self.calls += 1
            value = _variable_payload(path[1].decode("utf-8", "replace"))
            if value is None:
                return coap_bytes(ack, 0x84, msg.message_id, msg.token)
            return coap_bytes(ack, 0x45, msg.message_id, msg.token, [], value)
        if msg.type == 0:
            return coap_bytes(ack, 0, msg.message_id)
        return None

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


@dataclass
class DeviceStats:
    sessions: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    good_handshakes: int = 0
    good_failures: list[str] = field(default_factory=list)


DEVICE_KINDS: Final = (
    "random_bytes",
    "random_block",
    "truncated_block",
    "replayed_block",
    "unknown_device",
    "silent",
    "good_then_random",
    "good_then_bad_length",
    "good_then_bad_padding",
    "good_then_bad_coap",
    "good_then_events",
    "good_then_partial_frame",
    "good_no_hello",
    "good_clean",
)


class DeviceFuzzer:
    def __init__(
        self,
        port: int,
        server_key: rsa.RSAPublicKey,
        fuzz_devices: list[DeviceIdentity],
        unknown: DeviceIdentity,
        rng: random.Random,
        world: World,
    ) -> None:
        self.port = port
        self.server_key = server_key
        self.devices = fuzz_devices
        self.unknown = unknown
        self.rng = rng
        self.world = world
        self.blocks: deque[bytes] = deque(maxlen=16)
        self.stats = DeviceStats()

    async def session(self, kind: str) -> None:
        self.stats.sessions[kind] += 1
        try:
            outcome = await asyncio.wait_for(self._session(kind), DEVICE_TIMEOUT_S * 2)
        except TimeoutError:
            outcome = "timeout (server neither answered nor closed)"
        except (ConnectionError, OSError) as err:
            outcome = f"connection error {type(err).__name__}"
        self.stats.outcomes[f"{kind}: {outcome}"] += 1

    async def _wait_close(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          half_close: bool = True) -> str:
        """After our input: does the server close (it should), within the time limit?"""
        if half_close and writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()
        try:
            async with asyncio.timeout(DEVICE_TIMEOUT_S):
                while await reader.read(65536):
                    pass
            return "server closed"
        except TimeoutError:
            return "server kept the connection open"
        except (ConnectionError, OSError):
            return "server reset"
        finally:
            writer.transport.abort()

    async def _session(self, kind: str) -> str:
        rng = self.rng
        if kind in ("random_bytes", "random_block", "truncated_block", "replayed_block", "silent"):
            reader, writer = await asyncio.open_connection(HOST, self.port)
            try:
                nonce = await asyncio.wait_for(reader.readexactly(40), DEVICE_TIMEOUT_S)
            except BaseException:
                writer.transport.abort()
                raise
            del nonce
            if kind == "random_bytes":
                writer.write(os.urandom(rng.choice((0, 1, 40, 255, 257, 300, 1000, 5000))))
            elif kind == "random_block":
                writer.write(os.urandom(256))
                return await self._wait_close(reader, writer, half_close=False)
            elif kind == "truncated_block":
                source = self.blocks[-1] if self.blocks else os.urandom(256)
                writer.write(source[: rng.randrange(1, 256)])
            elif kind == "replayed_block":
                if not self.blocks:
                    writer.transport.abort()
                    return "no block recorded yet"
                writer.write(rng.choice(self.blocks))
                return await self._wait_close(reader, writer, half_close=False)
            return await self._wait_close(reader, writer)
        if kind == "unknown_device":
            try:
                reader, writer, _c, _b = await device_handshake(
                    self.unknown, self.server_key, self.port
                )
            except ConnectionError:
                return "server closed"
            writer.transport.abort()
            return "handshake completed for an unknown device"
        ident = rng.choice(self.devices)
        reader, writer, channel, block = await device_handshake(ident, self.server_key, self.port)
        self.blocks.append(block)
        mid = int.from_bytes(channel.salt[:2], "big")
        if kind == "good_no_hello":
            writer.write(channel.encrypt(coap_bytes(0, 0x01, mid, b"\x01", [(11, b"t")])))
            return await self._wait_close(reader, writer)
        writer.write(channel.encrypt(hello_bytes(mid)))
        if kind == "good_clean":
            return await self._until_hello(reader, writer, channel)
        if kind == "good_then_random":
            writer.write(os.urandom(rng.randrange(1, 2000)))
        elif kind == "good_then_bad_length":
            writer.write(rng.choice((b"\x00\x00", b"\x00\x0f" + b"x" * 15, b"\xff\xff" + b"x" * 64,
                                     b"\x40\x10" + b"x" * 100)))
        elif kind == "good_then_bad_padding":
            writer.write(b"\x00\x20" + os.urandom(32))
        elif kind == "good_then_bad_coap":
            bad = rng.choice((b"", b"\x00", b"\x80\x01\x00\x00", b"\x4f\x01\x00\x00",
                              b"\x40\x02\x00\x01\xff", b"\x40\x02\x00\x01\xbf", os.urandom(20)))
            writer.write(channel.encrypt(bad))
        elif kind == "good_then_partial_frame":
            frame = channel.encrypt(coap_bytes(0, 0, mid + 1))
            writer.write(frame[: rng.randrange(1, len(frame))])
        else:  # good_then_events: odd but well-formed traffic, then leave
            for i in range(rng.randrange(1, 8)):
                writer.write(channel.encrypt(self._odd_message(mid + 1 + i)))
            await asyncio.sleep(0)
            writer.transport.abort()
            return "client left after events"
        return await self._wait_close(reader, writer)

    def _odd_message(self, mid: int) -> bytes:
        rng = self.rng
        choice = rng.randrange(9)
        name = rng.choice((b"spark/device/claim/code", b"x" * 300, b"\xff\xfe", b"", b"a/b",
                           b"spark/status"))
        if choice == 0:
            code = rng.choice(self.world.claim_codes or ["x"]).encode()
            return coap_bytes(0, 0x02, mid, b"", [(11, b"E"), (11, b"spark/device/claim/code")],
                              rng.choice((code, b"\xff" * 63, b"x" * 5000)))
        if choice == 1:
            return coap_bytes(rng.choice((0, 1)), 0x02, mid, b"", [(11, b"e"), (11, name)],
                              os.urandom(rng.randrange(1, 100)))
        if choice == 2:
            return coap_bytes(0, 0x02, mid, b"", [(11, b"E"), (11, name), (14, b"\xff" * 8)])
        if choice == 3:
            return coap_bytes(0, 0x02, mid, b"", [(11, b"d")],
                              rng.choice((b"{", b"[]", b'{"f":1,"v":[]}', b'{"f":["\\ud800"]}',
                                          b'{"v":{"x":1e400}}', b"\xff")))
        if choice == 4:
            return coap_bytes(0, 0x01, mid, b"\x01", [(11, b"e"), (11, name), (15, b"u")])
        if choice == 5:
            return hello_bytes(mid)
        if choice == 6:
            return coap_bytes(rng.choice((0, 1)), 0x45, mid, bytes([rng.randrange(256)]),
                              [], os.urandom(4))
        if choice == 7:
            return coap_bytes(0, 0x01, mid, b"\x02", [(11, b"t")])
        return coap_bytes(2, 0, rng.randrange(65536))

    async def _until_hello(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           channel: Any) -> str:
        from softap_sim.protocol import coap

        try:
            async with asyncio.timeout(DEVICE_TIMEOUT_S):
                while data := await reader.read(65536):
                    for plain in channel.receive_data(data):
                        msg = coap.decode(plain)
                        if msg.code == 0x02 and msg.uri_path == [b"h"]:
                            return "server Hello received"
            return "server closed before its Hello"
        except TimeoutError:
            return "no server Hello"
        finally:
            writer.transport.abort()

    async def good_handshake(self) -> str | None:
        """The canary: a good handshake reaches the server's Hello; None when it does."""
        try:
            reader, writer, channel, _block = await device_handshake(
                self.devices[0], self.server_key, self.port
            )
            mid = int.from_bytes(channel.salt[:2], "big")
            writer.write(channel.encrypt(hello_bytes(mid)))
            outcome = await self._until_hello(reader, writer, channel)
        except (OSError, ValueError, TimeoutError) as err:
            outcome = f"{type(err).__name__}: {err}"
        if outcome == "server Hello received":
            self.stats.good_handshakes += 1
            return None
        self.stats.good_failures.append(outcome)
        return outcome

    async def batch(self, count: int) -> None:
        sem = asyncio.Semaphore(8)

        async def one(kind: str) -> None:
            async with sem:
                await self.session(kind)

        kinds = [DEVICE_KINDS[i % len(DEVICE_KINDS)] for i in range(count)]
        self.rng.shuffle(kinds)
        await asyncio.gather(*(one(k) for k in kinds))


# ==================================================================================
# the child process and set-up
# ==================================================================================
class Child(AsyncChild):
    """The cloud child: its stderr to a file (read for internal errors afterwards)."""

    def __init__(self, tmp: Path, setup_file: Path, code_dir: str) -> None:
        super().__init__(
            "the cloud child", [], pythonpath=code_dir, stderr_path=tmp / "child-stderr.log"
        )
        self.tmp = tmp
        self.setup_file = setup_file
        self.errors_path = tmp / "errors.jsonl"
        self.tracemalloc: str | None = None

    @property
    def stderr_log(self) -> Path:
        assert self.stderr_path is not None
        return self.stderr_path

    async def start(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        state = self.tmp / "state"
        state.mkdir()
        self.argv = [sys.executable, SCRIPT, "--serve", "--state-dir", str(state),
                     "--setup", str(self.setup_file)]
        if self.tracemalloc:
            self.argv += ["--tracemalloc", self.tracemalloc]
        return await super().start(timeout_s)

    async def memory_mark(self) -> None:
        """``--tracemalloc``: a snapshot in the child (the first is the baseline)."""
        if self.tracemalloc and self.proc is not None:
            await self.send_line(b"mem\n")

    def rss_mib(self) -> float | None:
        return memory_mib(self.proc.pid)["rss_mib"] if self.proc is not None else None

    async def stop(self, grace_s: float = STOP_TIMEOUT_S) -> int | None:
        return await super().stop(grace_s)


class Api:
    """Plain, valid requests for set-up and canaries (same raw client, own connection)."""

    def __init__(self, port: int) -> None:
        self.conn = Connection(port)

    async def call(self, method: str, path: str, *, token: str | None = None,
                   basic: tuple[str, str] | None = None, form: dict[str, str] | None = None
                   ) -> tuple[int, Any]:
        headers: list[bytes] = []
        if token is not None:
            headers.append(b"Authorization: Bearer " + token.encode())
        if basic is not None:
            headers.append(b"Authorization: Basic " + _b64(f"{basic[0]}:{basic[1]}"))
        body = b""
        if form is not None:
            headers.append(b"Content-Type: application/x-www-form-urlencoded")
            body = urlencode(form).encode()
        req = Request(method, path, headers, body, path)
        for attempt in range(2):
            try:
                reader, writer = await self.conn.ensure()
                writer.write(req.wire(0))
                async with asyncio.timeout(SETUP_TIMEOUT_S):
                    reply = await read_reply(reader, method == "HEAD")
                if reply.close or reply.sse:
                    self.conn.drop()
                break
            except (ProtocolFailure, ConnectionError) as err:
                self.conn.drop()
                if attempt:
                    raise BenchError(f"{method} {path}: {err}") from None
        try:
            data = json.loads(reply.body) if reply.body else None
        except ValueError:
            data = reply.body[:200]
        return reply.status, data

    async def ok(self, method: str, path: str, **kw: Any) -> Any:
        status, data = await self.call(method, path, **kw)
        if status // 100 != 2:
            raise BenchError(f"set-up {method} {path}: HTTP {status} {data}")
        return data

    async def client_token(self, w: World, scope: str | None = None,
                           expires_in: str | None = None) -> str:
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        if expires_in:
            form["expires_in"] = expires_in
        data = await self.ok("POST", "/oauth/token", basic=(w.client_id, w.client_secret),
                             form=form)
        if scope is None:
            w.refresh_tokens.append(data["refresh_token"])
        return str(data["access_token"])


async def build_world(api: Api, info: dict[str, Any], devices: list[DeviceIdentity]) -> World:
    creds = info["credentials"]
    w = World(
        product_id=int(creds["product"]["id"]),
        product_slug=creds["product"]["slug"],
        client_id=creds["client"]["id"],
        client_secret=creds["client"]["secret"],
        user_email=creds["user"]["email"],
        user_password=creds["user"]["password"],
    )
    w.device_ids = [d.device_id for d in devices]
    w.device_names = [f"photon_{d.device_id[-6:]}" for d in devices]
    for _ in range(2):
        data = await api.ok("POST", "/oauth/token", basic=("particle", "particle"),
                            form={"grant_type": "password", "username": w.user_email,
                                  "password": w.user_password})
        w.user_tokens.append(data["access_token"])
    for _ in range(3):
        w.client_tokens.append(await api.client_token(w))
    for i in range(3):
        email = f"customer-{i}@example.com"
        form = {"email": email}
        if i == 0:
            form["password"] = CUSTOMER_PASSWORD
        else:
            form["no_password"] = "true"
        data = await api.ok("POST", f"/v1/products/{w.product_id}/customers",
                            basic=(w.client_id, w.client_secret), form=form)
        w.customer_emails.append(email)
        w.customer_tokens.append(data["access_token"])
        w.refresh_tokens.append(data["refresh_token"])
    w.customer_tokens.append(await api.client_token(w, scope=f"customer={w.customer_emails[1]}"))
    expired = await api.client_token(w, expires_in="1")
    revoked = await api.client_token(w)
    await api.ok("DELETE", f"/v1/access_tokens/{revoked}")
    w.bad_tokens = [expired, revoked, "0" * 40, "not-a-token", "a" * 41, "\u00e9" * 10]
    return w


async def prune_world(api: Api, w: World) -> int:
    """Delete the clients and customers the fuzzed requests created (and last batch's
    spares): the data set stays the same size from batch to batch, so RSS growth measures
    leaks, not a database that grows (list replies of 10,000 clients are megabytes)."""
    admin = w.user_tokens[0]
    deleted = 0
    for path in (f"/v1/products/{w.product_id}/clients", "/v1/clients"):
        status, data = await api.call("GET", path, token=admin)
        if status != 200 or not isinstance(data, dict):
            continue
        for client in data.get("clients", []):
            cid = client.get("id")
            if isinstance(cid, str) and cid.lower() != w.client_id.lower():
                await api.call("DELETE", f"{path}/{quote(cid, safe='')}", token=admin)
                deleted += 1
    keep = {e.lower() for e in w.customer_emails}
    status, data = await api.call("GET", f"/v1/products/{w.product_id}/customers", token=admin)
    if status == 200 and isinstance(data, dict):
        for customer in data.get("customers", []):
            email = customer.get("username")
            if isinstance(email, str) and email.lower() not in keep:
                path = f"/v1/products/{w.product_id}/customers/{quote(email, safe='')}"
                await api.call("DELETE", path, token=admin)
                deleted += 1
    return deleted


async def refresh_world(api: Api, w: World, *, online: dict[str, str]) -> None:
    """Spare targets for destructive routes; tokens re-minted; online devices re-claimed."""
    await prune_world(api, w)
    w.spare_tokens = [await api.client_token(w) for _ in range(20)]
    w.spare_emails = []
    for _ in range(8):
        email = f"spare-{os.urandom(6).hex()}@example.com"
        await api.ok("POST", f"/v1/products/{w.product_id}/customers",
                     basic=(w.client_id, w.client_secret),
                     form={"email": email, "no_password": "true"})
        w.spare_emails.append(email)
    admin = w.user_tokens[0]
    w.spare_product_clients = []
    w.spare_user_clients = []
    for _ in range(3):
        data = await api.ok("POST", f"/v1/products/{w.product_id}/clients", token=admin,
                            form={"name": "spare", "type": "installed"})
        w.spare_product_clients.append(data["client"]["id"])
        data = await api.ok("POST", "/v1/clients", token=admin,
                            form={"name": "spare", "type": "installed"})
        w.spare_user_clients.append(data["client"]["id"])
    # tokens the fuzzer may have revoked (it should not: they are never in destructive
    # routes, but a refresh grant can rotate the refresh tokens)
    for pool, mint in ((w.client_tokens, None), (w.customer_tokens, w.customer_emails[1])):
        for i, token in enumerate(pool):
            status, _ = await api.call("GET", "/v1/access_tokens/current", token=token)
            if status != 200:
                pool[i] = await api.client_token(w, scope=f"customer={mint}" if mint else None)
    w.refresh_tokens = w.refresh_tokens[-10:]
    for i, email in enumerate(w.customer_emails[:2]):
        code = await api.ok("POST", f"/v1/products/{w.product_id}/device_claims",
                            token=w.customer_tokens[i if i else -1])
        w.claim_codes = [*w.claim_codes[-6:], code["claim_code"]]
        del email
    code = await api.ok("POST", "/v1/device_claims", token=w.user_tokens[0])
    w.claim_codes.append(code["claim_code"])
    # the online devices: customer 0 owns one, the developer the other
    owners = {"customer": w.customer_tokens[0], "user": w.user_tokens[0]}
    for device_id, who in online.items():
        token = owners[who]
        status, _ = await api.call("GET", f"/v1/devices/{device_id}", token=token)
        if status == 200 and who == "customer":
            continue
        data = await api.call("GET", "/v1/devices", token=token)
        mine = isinstance(data[1], list) and any(d.get("id") == device_id for d in data[1])
        if mine:
            continue
        await api.call("DELETE", f"/v1/products/{w.product_id}/devices/{device_id}/owner",
                       token=admin)
        await api.call("POST", "/v1/devices", token=token, form={"id": device_id})


async def canary(api: Api, w: World) -> str | None:
    """A customer-token grant and GET /v1/devices with it; None when both succeed."""
    try:
        token = await api.client_token(w, scope=f"customer={w.customer_emails[1]}")
        status, data = await api.call("GET", "/v1/devices", token=token)
    except BenchError as err:
        return str(err)
    if status != 200 or not isinstance(data, list):
        return f"GET /v1/devices: HTTP {status} {str(data)[:200]}"
    status, data = await api.call("GET", f"/v1/products/{w.product_id}/devices",
                                  token=w.client_tokens[0])
    if status != 200:
        return f"GET /v1/products/:p/devices: HTTP {status} {str(data)[:200]}"
    return None


# ==================================================================================
# the load
# ==================================================================================
@dataclass
class Stats:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)
    r500: dict[str, dict[str, Any]] = field(default_factory=dict)  # fuzz id → request
    r500_count: int = 0
    r500_by_route: Counter[str] = field(default_factory=Counter)
    hangs: list[dict[str, Any]] = field(default_factory=list)
    hang_count: int = 0
    non_json_4xx: Counter[str] = field(default_factory=Counter)
    parser_400: Counter[str] = field(default_factory=Counter)
    non_json_examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    kdf_requests: int = 0
    sse: int = 0


def _error_body_ok(reply: Reply) -> bool:
    try:
        data = json.loads(reply.body)
    except ValueError:
        return False
    return isinstance(data, dict) and ("error" in data or data.get("ok") is False)


class Load:
    def __init__(self, port: int, world: World, args: argparse.Namespace) -> None:
        self.port = port
        self.world = world
        self.args = args
        self.stats = Stats()
        self.kdf = TokenBucket(args.kdf_rate)
        self.next_id = 1
        self.rngs = [random.Random(args.seed * 1000 + i) for i in range(args.connections)]

    async def run(self, count: int, deadline: float) -> int:
        left = count
        done = 0

        async def worker(index: int) -> None:
            nonlocal left, done
            mut = Mutator(self.world, self.rngs[index], self.kdf, self.args.raw_share)
            conn = Connection(self.port)
            try:
                while left > 0 and time.monotonic() < deadline:
                    left -= 1
                    req = mut.next()
                    await self.one(conn, req)
                    done += 1
            finally:
                conn.drop()
                self.stats.reconnects += conn.connects

        await asyncio.gather(*(worker(i) for i in range(self.args.connections)))
        return done

    async def one(self, conn: Connection, req: Request) -> None:
        st = self.stats
        fuzz_id = self.next_id
        self.next_id += 1
        st.sent += 1
        st.kdf_requests += req.kdf
        raw = req.raw is not None
        if raw:
            conn.drop()  # malformed HTTP on a fresh connection of its own
        try:
            async with asyncio.timeout(self.args.request_timeout):
                reader, writer = await conn.ensure()
                writer.write(req.wire(fuzz_id))
                if raw and writer.can_write_eof():
                    writer.write_eof()
                reply = await read_reply(reader, req.method == "HEAD")
        except TimeoutError:
            conn.drop()
            st.hang_count += 1
            st.statuses["hang"] += 1
            if len(st.hangs) < MAX_REPORTED:
                st.hangs.append({"fuzz_id": fuzz_id, **req.describe()})
            return
        except ProtocolFailure as err:
            conn.drop()
            st.protocol[f"{'raw' if raw else 'route'}: {err}"] += 1
            st.statuses["no reply (closed)"] += 1
            return
        except (ConnectionError, OSError) as err:
            conn.drop()
            st.protocol[f"{'raw' if raw else 'route'}: {type(err).__name__}"] += 1
            st.statuses["no reply (reset)"] += 1
            return
        if reply.close or reply.sse or raw:
            conn.drop()
        st.statuses[str(reply.status)] += 1
        st.by_route[f"{req.template} {reply.status}"] += 1
        if reply.sse:
            st.sse += 1
        if reply.status >= 500:
            st.r500_count += 1
            st.r500_by_route[f"{req.method} {req.template}"] += 1
            if len(st.r500) < MAX_RECORDED_500:
                st.r500[str(fuzz_id)] = {
                    "fuzz_id": fuzz_id, "status": reply.status, **req.describe(),
                    "reply": reply.body[:300].decode("utf-8", "replace"),
                }
        elif reply.status == 400 and reply.content_type.startswith(b"text/plain"):
            st.parser_400[req.template if not raw else "raw"] += 1  # aiohttp's parser
        elif 400 <= reply.status < 500 and not raw and req.method != "HEAD" and not (
            _error_body_ok(reply)
        ):
            key = f"{req.method} {req.template} {reply.status}"
            st.non_json_4xx[key] += 1
            if key not in st.non_json_examples and len(st.non_json_examples) < 20:
                st.non_json_examples[key] = {
                    **req.describe(), "reply": reply.body[:200].decode("utf-8", "replace"),
                    "content_type": reply.content_type.decode("latin-1"),
                }


# ==================================================================================
# the report
# ==================================================================================
RECORD_START: Final = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
PARSER_EXCEPTION: Final = re.compile(r"^aiohttp\.http_exceptions\.\w+: 400")


def stderr_records(text: str) -> list[list[str]]:
    """The child's stderr as log records: the record line and its continuation lines."""
    records: list[list[str]] = []
    for line in text.splitlines():
        if RECORD_START.match(line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    return records


def read_internal_errors(child: Child, stats: Stats) -> dict[str, Any]:
    text = child.stderr_log.read_text(errors="replace") if child.stderr_log.exists() else ""
    tracebacks = parser_tracebacks = 0
    error_lines: list[str] = []
    parser_lines = 0
    for record in stderr_records(text):
        parser = any(PARSER_EXCEPTION.match(ln) for ln in record) and "aiohttp" in record[0]
        n_tb = sum(1 for ln in record if ln.startswith("Traceback"))
        n_err = [ln for ln in record if " ERROR " in ln]
        if parser:
            parser_tracebacks += n_tb
            parser_lines += len(n_err)
        else:
            tracebacks += n_tb
            error_lines.extend(n_err)
    records: list[dict[str, Any]] = []
    if child.errors_path.exists():
        for line in child.errors_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    distinct: dict[str, dict[str, Any]] = {}
    parser_rejections: Counter[str] = Counter()
    exc_by_fuzz_id: dict[str, str] = {}
    for rec in records:
        if rec.get("parser_rejection"):
            parser_rejections[f"{rec.get('exc_type')}: {rec.get('exc', '').splitlines()[:2]}"] += 1
            continue
        exc_by_fuzz_id[str(rec.get("fuzz_id"))] = f"{rec.get('exc_type')}: {rec.get('exc')}"
        frames = rec.get("frames") or []
        ours = [f for f in frames if "softap_sim" in f["file"]] or frames
        where = ours[-1] if ours else {}
        raised = frames[-1] if frames else {}
        request = stats.r500.get(str(rec.get("fuzz_id")))
        route = request["template"] if request else rec.get("message", "")
        # one entry per exception type and the line of our code it came through
        key = f"{rec.get('exc_type')} | {where.get('file')}:{where.get('line')}"
        entry = distinct.get(key)
        if entry is None:
            entry = distinct[key] = {
                "route": route,
                "routes": Counter(),
                "exception": f"{rec.get('exc_type')}: {rec.get('exc')}",
                "log": rec.get("message"),
                "where": f"{_rel(where.get('file'))}:{where.get('line')} in {where.get('func')}: "
                f"{where.get('code')}",
                "raised_at": f"{_rel(raised.get('file'))}:{raised.get('line')} in "
                f"{raised.get('func')}: {raised.get('code')}",
                "count": 0,
                "request": request,
            }
        entry["count"] += 1
        entry["routes"][f"{request['method']} {route}" if request and "method" in request
                        else route] += 1
        if entry["request"] is None and request is not None:
            entry["request"] = request
        elif request is not None and _size(request) < _size(entry["request"]):
            entry["request"] = request  # keep the smallest example
    return {
        "traceback_lines": tracebacks,
        "error_lines": len(error_lines),
        "parser_rejections_logged": {
            "traceback_lines": parser_tracebacks,
            "error_lines": parser_lines,
            "by_exception": dict(parser_rejections.most_common(20)),
        },
        "first_error_lines": error_lines[:5],
        "exception_by_fuzz_id": exc_by_fuzz_id,
        "distinct": [
            {**e, "routes": dict(e["routes"].most_common())}
            for e in sorted(distinct.values(), key=lambda e: -e["count"])[:MAX_REPORTED]
        ],
    }


def _rel(path: str | None) -> str:
    if not path:
        return "?"
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(REPO_ROOT))
    return path


def _size(request: dict[str, Any] | None) -> int:
    return len(json.dumps(request)) if request else 1 << 30


def recorded_500s(stats: Stats, internal: dict[str, Any]) -> list[dict[str, Any]]:
    """The 500 requests, distinct by route + error (up to 50)."""
    exc_by_id: dict[str, str] = internal.pop("exception_by_fuzz_id")
    seen: set[str] = set()
    out = []
    for fuzz_id, req in stats.r500.items():
        key = f"{req.get('method', 'RAW')} {req['template']} " \
              f"{exc_by_id.get(fuzz_id, req.get('reply', ''))[:80]}"
        if key in seen:
            continue
        seen.add(key)
        out.append({**req, "exception": exc_by_id.get(fuzz_id)})
        if len(out) >= MAX_REPORTED:
            break
    return out


def print_report(report: dict[str, Any]) -> None:
    cfg = report["config"]
    res = report["results"]
    print(f"cloud fuzz: {res['requests']} requests in {res['seconds']:.1f} s "
          f"({res['requests_per_s']:.0f}/s), {cfg['connections']} connections, seed "
          f"{cfg['seed']}, batches of {cfg['batch']}; {res['kdf_requests']} reached scrypt, "
          f"{res['sse_streams']} SSE streams opened")
    print("HTTP statuses: " + ", ".join(f"{k}={v}" for k, v in sorted(res["statuses"].items())))
    if res["protocol"]:
        print("no reply: " + ", ".join(f"{k}={v}" for k, v in res["protocol"].items()))
    print(f"500s: {res['http_500']} (by route: {dict(res['http_500_by_route'])})")
    internal = res["internal_errors"]
    print(f"child stderr: {internal['traceback_lines']} Traceback lines, "
          f"{internal['error_lines']} ERROR lines (besides aiohttp's parser refusing malformed "
          f"HTTP: {internal['parser_rejections_logged']['error_lines']} ERROR records, "
          f"{sum(res['parser_400'].values())} parser 400 replies)")
    for entry in internal["distinct"]:
        print(f"  [{entry['count']}x] {entry['exception'][:200]}")
        print(f"       on {len(entry['routes'])} routes: {list(entry['routes'])[:8]}")
        print(f"       at {entry['where']}")
        if entry["raised_at"] != entry["where"]:
            print(f"       raised {entry['raised_at']}")
        if entry["request"]:
            r = entry["request"]
            if "raw" in r:
                print(f"       request: {r['raw']}")
            else:
                print(f"       request: {r['method']} {r['target'][:200]} headers={r['headers']} "
                      f"body={r['body'][:300]}")
    for line in internal["first_error_lines"]:
        print(f"  stderr: {line[:300]}")
    print(f"hangs: {res['hangs']}")
    for hang in res["hang_examples"][:5]:
        print(f"  {json.dumps(hang)[:400]}")
    rss = res["rss"]
    print(f"child RSS: after warm-up {rss['after_warmup_mib']} MiB, end {rss['end_mib']} MiB, "
          f"growth {rss['growth_pct']}%, since the first batch "
          f"{rss['growth_after_first_batch_pct']}% (per batch: {rss['per_batch_mib']})")
    print(f"canaries: {res['canaries']['passed']} passed, {len(res['canaries']['failures'])} "
          f"failed {res['canaries']['failures'][:5]}")
    dev = res["device_port"]
    print(f"device port: {sum(dev['sessions'].values())} sessions; good handshakes after each "
          f"batch {dev['good_handshakes']} ok, failures {dev['good_failures'][:5]}; server "
          f"stayed up: {dev['server_stayed_up']}")
    for outcome, count in sorted(dev["outcomes"].items()):
        print(f"  {count:6d}  {outcome}")
    if res["non_json_4xx"]:
        print("4xx replies without a JSON error body (not a goal; for information):")
        for key, count in res["non_json_4xx"].items():
            print(f"  {count:6d}  {key}")
    for line in report["missed"]:
        print(f"MISSED: {line}")
    if not report["missed"]:
        print("all goals met")


# ==================================================================================
# main
# ==================================================================================
async def run_fuzz(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + args.seconds
    rng = random.Random(args.seed)
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=1024) for _ in range(7)]
    ids = [f"{rng.getrandbits(96):024x}" for _ in keys]
    devices = [DeviceIdentity(i, k, product=True) for i, k in zip(ids[:5], keys[:5], strict=True)]
    devices.append(DeviceIdentity(ids[5], keys[5], product=False))  # a developer device
    unknown = DeviceIdentity(ids[6], keys[6], product=False)  # never registered
    online_ids = {devices[0].device_id: "customer", devices[1].device_id: "user"}
    with tempfile.TemporaryDirectory(prefix="fuzz-cloud-") as tmp_name:
        tmp = Path(tmp_name)
        setup_file = tmp / "setup.json"
        setup_file.write_text(json.dumps({"devices": [
            {"id": d.device_id, "public_key_pem": d.pem(), "product": d.product}
            for d in devices
        ]}))
        child = Child(tmp, setup_file, args.code_dir)
        child.tracemalloc = args.tracemalloc
        fakes: list[FakeDevice] = []
        try:
            info = await child.start()
            server_key = serialization.load_pem_public_key(info["server_public_key_pem"].encode())
            assert isinstance(server_key, rsa.RSAPublicKey)
            api = Api(int(info["url"].rsplit(":", 1)[1]))
            world = await build_world(api, info, devices)
            fakes = [FakeDevice(d, server_key, info["device_port"]) for d in devices[:2]]
            for fake in fakes:
                await fake.start()
            await refresh_world(api, world, online=online_ids)
            dev_fuzz = DeviceFuzzer(info["device_port"], server_key, devices[2:4], unknown,
                                    random.Random(args.seed + 1), world)
            if await dev_fuzz.good_handshake() is not None:
                raise BenchError(f"a good device handshake fails before fuzzing: "
                                 f"{dev_fuzz.stats.good_failures}")
            if (why := await canary(api, world)) is not None:
                raise BenchError(f"the canary fails before fuzzing: {why}")
            load = Load(api.conn.port, world, args)
            t0 = time.monotonic()
            # warm-up: the same mix, so caches, pools and the database reach their size
            warm = min(args.warmup or max(20_000, args.requests // 10), args.requests)
            done = await load.run(warm, deadline)
            await refresh_world(api, world, online=online_ids)
            rss_warm = child.rss_mib()
            await child.memory_mark()
            canaries_passed, canary_failures = 0, []
            per_batch_rss: list[float | None] = []
            total = done
            batches = 0
            while total < args.requests and time.monotonic() < deadline and child.running:
                count = min(args.batch, args.requests - total)
                results = await asyncio.gather(
                    load.run(count, deadline), dev_fuzz.batch(args.device_sessions)
                )
                total += results[0]
                batches += 1
                why = await canary(api, world) if child.running else "the child exited"
                dev_why = await dev_fuzz.good_handshake() if child.running else "child exited"
                if why is None and dev_why is None:
                    canaries_passed += 1
                else:
                    canary_failures.append(f"batch {batches}: {why or ''} {dev_why or ''}".strip())
                per_batch_rss.append(child.rss_mib())
                if child.running:
                    for fake in fakes:
                        if not fake.alive:
                            with contextlib.suppress(OSError, TimeoutError, ValueError):
                                await fake.start()
                    with contextlib.suppress(BenchError):
                        await refresh_world(api, world, online=online_ids)
                if not args.json:
                    st = load.stats
                    print(f"batch {batches}: {total} requests, {time.monotonic() - t0:.0f} s, "
                          f"500s {st.r500_count}, hangs {st.hang_count}, RSS "
                          f"{per_batch_rss[-1]} MiB, canary {'ok' if why is None else 'FAILED'}",
                          file=sys.stderr, flush=True)
            elapsed = time.monotonic() - t0
            rss_end = child.rss_mib()
            await child.memory_mark()
            stayed_up = child.running and await dev_fuzz.good_handshake() is None
            function_calls = sum(f.calls for f in fakes)
        except BenchError as err:
            tail = ""
            if child.errors_path.exists():
                tail = child.errors_path.read_text(errors="replace")[-3000:]
            raise BenchError(f"{err}\nchild errors:\n{tail}") from None
        finally:
            for fake in fakes:
                fake.stop()
            exit_code = await child.stop()
        internal = read_internal_errors(child, load.stats if "load" in locals() else Stats())
    st = load.stats
    growth = (
        (rss_end - rss_warm) / rss_warm * 100 if rss_warm and rss_end is not None else None
    )
    return {
        "config": {
            "requests": args.requests, "seconds_limit": args.seconds, "seed": args.seed,
            "batch": args.batch, "connections": args.connections, "warmup": args.warmup,
            "device_sessions_per_batch": args.device_sessions, "kdf_rate": args.kdf_rate,
            "raw_share": args.raw_share, "request_timeout_s": args.request_timeout,
            "cpus": os.cpu_count(),
        },
        "results": {
            "requests": st.sent,
            "seconds": elapsed,
            "requests_per_s": st.sent / elapsed if elapsed > 0 else 0.0,
            "batches": batches,
            "statuses": dict(st.statuses),
            "protocol": dict(st.protocol),
            "http_500": st.r500_count,
            "http_500_by_route": dict(st.r500_by_route),
            "internal_errors": internal,
            "recorded_500": recorded_500s(st, internal),
            "hangs": st.hang_count,
            "hang_examples": st.hangs,
            "rss": {
                "after_warmup_mib": _round(rss_warm),
                "end_mib": _round(rss_end),
                "growth_pct": _round(growth),
                "growth_after_first_batch_pct": _round(
                    (rss_end - per_batch_rss[0]) / per_batch_rss[0] * 100
                    if per_batch_rss and per_batch_rss[0] and rss_end is not None
                    else None
                ),
                "per_batch_mib": [_round(v) for v in per_batch_rss],
            },
            "canaries": {"passed": canaries_passed, "failures": canary_failures},
            "device_port": {
                "sessions": dict(dev_fuzz.stats.sessions),
                "outcomes": dict(dev_fuzz.stats.outcomes),
                "good_handshakes": dev_fuzz.stats.good_handshakes,
                "good_failures": dev_fuzz.stats.good_failures,
                "server_stayed_up": stayed_up,
                "function_and_variable_calls_answered": function_calls,
            },
            "non_json_4xx": dict(st.non_json_4xx),
            "parser_400": dict(st.parser_400),
            "non_json_4xx_examples": st.non_json_examples,
            "kdf_requests": st.kdf_requests,
            "sse_streams": st.sse,
            "connections_opened": st.reconnects,
            "by_route_status": dict(sorted(st.by_route.items())),
            "child_exit_status": exit_code,
        },
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def judge(report: dict[str, Any], args: argparse.Namespace) -> list[str]:
    res = report["results"]
    missed = []
    if res["http_500"]:
        missed.append(f"{res['http_500']} HTTP 5xx replies")
    internal = res["internal_errors"]
    if internal["traceback_lines"] or internal["error_lines"]:
        missed.append(f"child stderr: {internal['traceback_lines']} Traceback, "
                      f"{internal['error_lines']} ERROR lines")
    if res["hangs"]:
        missed.append(f"{res['hangs']} requests hung (> {args.request_timeout} s)")
    growth = res["rss"]["growth_pct"]
    if growth is None or growth >= args.max_rss_growth:
        missed.append(f"RSS growth {growth}% >= {args.max_rss_growth}%")
    if res["canaries"]["failures"]:
        missed.append(f"{len(res['canaries']['failures'])} canary failures")
    if not res["device_port"]["server_stayed_up"]:
        missed.append("the device server no longer completes a good handshake")
    if res["requests"] < args.requests:
        missed.append(f"only {res['requests']} of {args.requests} requests within "
                      f"{args.seconds} s")
    return missed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Hostile-input fuzzing of the embedded cloud (REST routes and the device "
        "port) against a child process; loopback only, bounded in count and time.",
        epilog="Exit status: 0 all goals met, 1 a goal missed (5xx, ERROR/Traceback in the "
        "child's stderr, hang, RSS growth, canary, device server down, fewer requests than "
        "asked within --seconds), 2 set-up failure.",
    )
    parser.add_argument("--requests", type=positive_int, default=1_000_000,
                        help="mutated requests in total, warm-up included (default 1000000)")
    parser.add_argument("--seconds", type=positive_float, default=900.0,
                        help="wall-time limit of the load (default 900)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--batch", type=positive_int, default=50_000,
                        help="requests between canaries and RSS readings (default 50000)")
    parser.add_argument("--warmup", type=positive_int, default=None,
                        help="warm-up requests before the RSS baseline (default: a tenth of "
                        "--requests, at least 20000; the scrypt and executor threads' malloc "
                        "arenas take ~100k requests to reach their size)")
    parser.add_argument("--connections", type=positive_int, default=32,
                        help="concurrent keep-alive connections (default 32)")
    parser.add_argument("--device-sessions", type=int, default=60,
                        help="device-port fuzz sessions per batch (default 60)")
    parser.add_argument("--kdf-rate", type=positive_float, default=6.0,
                        help="scrypt-reaching requests per second at most (default 6)")
    parser.add_argument("--raw-share", type=float, default=0.02,
                        help="share of raw malformed-HTTP requests (default 0.02)")
    parser.add_argument("--request-timeout", type=positive_float, default=20.0,
                        help="a request without a reply after this many seconds hangs "
                        "(default 20)")
    parser.add_argument("--max-rss-growth", type=float, default=20.0,
                        help="RSS growth goal in percent after warm-up (default 20)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--code-dir",
        default=str(REPO_ROOT),
        help="directory whose softap_sim package is fuzzed (default: this checkout), e.g. "
        "a 'git archive HEAD' snapshot while the working tree is being edited",
    )
    parser.add_argument(
        "--tracemalloc",
        metavar="PATH",
        help="diagnosis: trace the child's allocations (slower) and write the top growth "
        "from the end of the warm-up to the end of the run to PATH",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    return parser


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.code_dir and not args.serve:
        sys.path.insert(0, args.code_dir)  # the device-side codecs of the same code
    if args.serve:
        return serve_main(args)

    def run() -> int:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            report = runner.run(run_fuzz(args))
        missed = judge(report, args)
        report["missed"] = missed
        if args.json:
            print(json.dumps(report, indent=2, default=str))
        else:
            print_report(report)
        return 1 if missed else 0

    return run_main("fuzz_cloud", run)


if __name__ == "__main__":
    sys.exit(main())
